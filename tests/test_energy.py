"""Energies and Lyapunov monitors (`jaxpde.verify.energy`): the monitors by hand and
against NumPy, energy descent and Lyapunov sums of the explicit block, and their failure
above the bounds. The fluxes' potentials are tested in `test_fluxes.py`."""

import functools
import math

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpde import Derivative, DiffusionBlock, fluxes, stable_step_size
from jaxpde.claims import sampling
from jaxpde.verify import (
    convex_sum,
    energy_increase_tolerance,
    flux_energy,
    largest_increase,
    mass,
    trajectory_values,
    variance,
)

from .helpers import (
    ALL_BOUNDARIES,
    few_examples,
    flux_kinds,
    operators,
    parameters,
    signals,
    sizes,
    spacings,
    step_fractions,
)

# --- monitors -----------------------------------------------------------------------


def test_monitors_by_hand():
    u = jnp.asarray([1.0, 2.0, 4.0, 5.0])
    assert float(mass(u)) == 12.0
    assert float(variance(u)) == 10.0  # mean 3: 4 + 1 + 1 + 4
    assert float(convex_sum(u, jnp.square)) == 46.0
    assert float(convex_sum(u, jnp.abs)) == 12.0
    op = Derivative(1, 4, h=0.5)  # K u = (2, 4, 2)
    assert float(flux_energy(op, fluxes.Linear(3.0), u)) == pytest.approx(1.5 * (4 + 16 + 4), rel=1e-15)
    assert float(flux_energy(op, fluxes.TotalVariation(1.0), u)) == pytest.approx(2 * math.sqrt(5) + math.sqrt(17) - 3, rel=1e-15)
    values = jnp.asarray([3.0, 2.5, 2.75, 1.0])
    assert float(largest_increase(values)) == 0.25
    trajectory = jnp.stack([u, 2 * u, u - 1])
    np.testing.assert_allclose(np.asarray(trajectory_values(variance, trajectory)), [10.0, 40.0, 10.0])


def test_monitors_against_numpy():
    rng = np.random.default_rng(3)
    u = rng.standard_normal((2, 9))  # several axes: all entries count
    assert float(mass(jnp.asarray(u))) == pytest.approx(u.sum(), rel=1e-14)
    assert float(variance(jnp.asarray(u))) == pytest.approx(u.size * u.var(), rel=1e-14)
    assert float(convex_sum(jnp.asarray(u), jnp.exp)) == pytest.approx(np.exp(u).sum(), rel=1e-14)
    op = Derivative(2, 9, h=0.3, boundary="periodic")
    flux = fluxes.PeronaMalik(0.8)
    v = jnp.asarray(u[0])
    s = np.asarray(op.as_matrix()) @ u[0]
    assert float(flux_energy(op, flux, v)) == pytest.approx(np.sum(0.32 * np.log1p(s**2 / 0.64)), rel=1e-13)
    # grad E = K^T Phi(K u): the explicit step is gradient descent on E.
    grad = jax.grad(functools.partial(flux_energy, op, flux))(v)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(op.T(flux(op(v)))), rtol=1e-12, atol=1e-12)


def test_monitor_errors_name_the_argument():
    op = Derivative(1, 8)
    with pytest.raises(ValueError, match="`u`"):
        flux_energy(op, fluxes.Linear(), jnp.ones(7))
    with pytest.raises(TypeError, match="flux"):
        flux_energy(op, jnp.abs, jnp.ones(8))  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="`values`"):
        largest_increase(jnp.ones(1))
    with pytest.raises(ValueError, match="`r`"):
        convex_sum(jnp.ones(4), jnp.sum)
    with pytest.raises(ValueError, match="`trajectory`"):
        trajectory_values(variance, jnp.ones((0, 3)))


# --- property tests of the claims ---------------------------------------------------


@eqx.filter_jit
def _run(block, u, depth=4):
    states = [u]
    for _ in range(depth):
        states.append(block(states[-1]))
    return jnp.stack(states)


@few_examples(5)  # each example compiles its own operator shape
@hypothesis.given(op=operators, kind=flux_kinds, parameter=parameters, fraction=step_fractions, data=st.data())
def test_energy_descent_property(op, kind, parameter, fraction, data):
    hypothesis.assume(float(op.norm_bound()) > 0)  # a zero stencil has no step bound
    flux = kind(parameter)
    b = float(flux.derivative_range()[1])
    tau = fraction * 2 / (b * float(op.norm_bound()) ** 2)
    block = DiffusionBlock(op, flux, tau)
    u = data.draw(signals(op.in_shape))
    energies = trajectory_values(functools.partial(flux_energy, op, flux), _run(block, u))
    scale = float(flux.sector_bound()) * float(op.abs_norm_bound()) ** 2 * float(jnp.sum(u * u))
    assert float(largest_increase(energies)) <= energy_increase_tolerance(block, np.float64).value * scale


@few_examples(8)  # each example compiles its own operator shape and flux kind
@hypothesis.given(order=st.sampled_from((1, 2, 3)), boundary=st.sampled_from(("neumann", "periodic")), n=sizes,
                  kind=flux_kinds, parameter=parameters, fraction=step_fractions, data=st.data())
def test_variance_is_lyapunov_property(order, boundary, n, kind, parameter, fraction, data):
    op = Derivative(order, max(n, order + 1), boundary=boundary)
    flux = kind(parameter)
    block = DiffusionBlock(op, flux, fraction * stable_step_size(op, flux))
    u = data.draw(signals(op.in_shape))
    values = trajectory_values(variance, _run(block, u))
    assert float(largest_increase(values)) <= 1e-13 * float(jnp.sum(u * u))


CONVEX = {"square": jnp.square, "abs": jnp.abs, "cosh": jnp.cosh, "exp": jnp.exp, "entropy": lambda y: y * jnp.log(y)}


@few_examples(8)  # each example compiles its own operator shape, flux kind and r
@hypothesis.given(boundary=st.sampled_from(ALL_BOUNDARIES), n=sizes, h=spacings, kind=flux_kinds, parameter=parameters,
                  fraction=step_fractions, r_name=st.sampled_from(sorted(CONVEX)), data=st.data())
def test_convex_sums_are_lyapunov_property(boundary, n, h, kind, parameter, fraction, r_name, data):
    hypothesis.assume(boundary != "dirichlet" or r_name in ("square", "abs", "cosh"))  # minimum at 0
    op = Derivative(1, n, h=h, boundary=boundary)
    flux = kind(parameter)
    block = DiffusionBlock(op, flux, fraction * h**2 / (2 * float(flux.sector_bound())))
    u = data.draw(signals(op.in_shape))
    scale = float(jnp.max(jnp.abs(u)))
    u = u / scale  # values in [-1, 1]; entropy: positive data in [1, 3]
    if r_name == "entropy":
        u = u + 2
    values = trajectory_values(functools.partial(convex_sum, r=CONVEX[r_name]), _run(block, u))
    assert float(largest_increase(values)) <= 1e-12 * n


# --- planted violations: the hypotheses matter ------------------------------------


def test_energy_increases_above_the_step_bound():
    """tau = 1.01 * 2 / (b ||K||^2) on the top singular vector: the linear flux and the
    Perona-Malik flux in its linear range (small amplitude) both gain energy."""
    op = Derivative(1, 16, h=0.5, boundary="periodic")  # ||K||^2 = 16 exactly (n even)
    u = jnp.asarray((-1.0) ** np.arange(16))  # the top singular vector
    for flux, amplitude in ((fluxes.Linear(2.0), 1.0), (fluxes.PeronaMalik(1.0), 1e-3)):
        tau = 1.01 * 2 / (float(flux.derivative_range()[1]) * 16)
        block = DiffusionBlock(op, flux, tau, allow_unstable=True)
        energies = trajectory_values(functools.partial(flux_energy, op, flux), _run(block, amplitude * u, 2))
        assert float(largest_increase(energies)) > 0.03 * float(energies[0])


def test_claim_measurement_detects_a_planted_energy_increase():
    """The measurement behind `energy-descent` sees the increase at 1.01 x the bound."""
    rng = np.random.default_rng(0)
    op = Derivative(1, 16)
    fs = sampling.random_fluxes(rng)
    linear = [type(f) for f in fs].index(fluxes.Linear)
    flags = np.arange(len(fs)) == linear
    measured = sampling.measure(rng, op, fs, 10, 2, step_multipliers=np.where(flags, 1.01, 1.0), use_lower_norm=flags, fraction_one_every=1)
    block = DiffusionBlock(op, fs[linear], measured.tau[linear], allow_unstable=True)
    assert float(np.max(measured.energy_increase[linear])) > 100 * energy_increase_tolerance(block, np.float64).value


def test_convex_sum_increases_above_h2_over_2L():
    """tau = 1.01 h^2/(2L), a spike: sum |u_i| grows (the diagonal weight is negative)."""
    op = Derivative(1, 9, h=1.0, boundary="neumann")
    flux = fluxes.Linear(1.0)
    block = DiffusionBlock(op, flux, 1.01 / 2)  # below the Euclidean bound 2 / ||D_1||^2 > 1/2
    u = jnp.zeros(9).at[4].set(1.0)
    assert float(convex_sum(block(u), jnp.abs)) > float(convex_sum(u, jnp.abs)) + 0.015  # 1 + 2 * 0.01


def test_non_convex_r_and_dirichlet_exp_are_not_lyapunov():
    op = Derivative(1, 9, h=1.0, boundary="neumann")
    block = DiffusionBlock(op, fluxes.PeronaMalik(1.0), 0.5)
    u = jnp.asarray(np.linspace(-1, 1, 9) ** 3)
    concave = functools.partial(convex_sum, r=lambda x: -(x * x))
    assert float(concave(block(u))) > float(concave(u))
    # dirichlet: the boundary value 0 enters the averages; exp is convex but not minimal at 0.
    op = Derivative(1, 9, h=1.0, boundary="dirichlet")
    block = DiffusionBlock(op, fluxes.Linear(1.0), 0.5)
    u = -jnp.ones(9)
    assert float(convex_sum(block(u), jnp.exp)) > float(convex_sum(u, jnp.exp))
