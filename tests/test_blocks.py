import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpde
from jaxpde import Derivative, DiffusionBlock, Stencil, fluxes, stable_step_size

from .helpers import (
    ALL_FLUXES,
    few_examples,
    operators,
    parameters,
    signals,
    spectral_norm_svd,
    step_fractions,
    tolerance,
)


def _l2(u):
    return float(jnp.sqrt(jnp.sum(u * u)))


@eqx.filter_jit  # one program per operator shape (op by op, a block compiles dozens)
def _apply(block, u):
    return block(u)


def test_block_matches_dense_formula():
    op = Derivative(2, 12, h=0.5, boundary="dirichlet")
    flux = fluxes.PeronaMalik(0.7)
    tau = 0.9 * float(stable_step_size(op, flux))
    u = jnp.asarray(np.random.default_rng(0).standard_normal(12))
    matrix = np.asarray(op.as_matrix())
    ku = matrix @ np.asarray(u)
    expected = np.asarray(u) - tau * matrix.T @ (ku / (1 + ku**2 / 0.7**2))
    np.testing.assert_allclose(DiffusionBlock(op, flux, tau)(u), expected, **tolerance(np.float64))


@pytest.mark.parametrize("kind", ALL_FLUXES)
def test_stable_step_size_value(kind):
    op = Derivative(1, 20, h=0.1)
    flux = kind(0.5)
    expected = 2 / (float(flux.sector_bound()) * spectral_norm_svd(op.as_matrix()) ** 2)
    assert float(stable_step_size(op, flux)) == pytest.approx(expected, rel=1e-13)
    assert float(stable_step_size(op, flux)) <= expected


@few_examples(8)  # each example runs the block on its own operator shape (compiled anew)
@hypothesis.given(
    op=operators,
    kind=st.sampled_from(ALL_FLUXES),
    parameter=parameters,
    fraction=step_fractions,
    data=st.data(),
)
def test_euclidean_stability_property(op, kind, parameter, fraction, data):
    """||u - tau K^T Phi(K u)|| <= ||u|| for tau <= 2 / (L ||K||^2), over several steps."""
    hypothesis.assume(float(op.norm_bound()) > 0)  # K = 0: every tau is stable
    flux = kind(parameter)
    block = DiffusionBlock(op, flux, fraction * stable_step_size(op, flux))
    u = data.draw(signals(op.in_shape))
    for _ in range(3):
        v = _apply(block, u)
        assert _l2(v) <= _l2(u) * (1 + 1e-12) + 1e-300
        u = v


@few_examples(8)
@hypothesis.given(op=operators, overshoot=st.floats(1.01, 3.0), parameter=st.floats(0.25, 4.0))
def test_growth_above_the_bound_for_the_linear_flux(op, overshoot, parameter):
    """The bound is sharp: the top singular vector grows when tau exceeds it."""
    matrix = np.asarray(op.as_matrix())
    _, singular, vh = np.linalg.svd(matrix)
    hypothesis.assume(singular[0] > 1e-6)
    flux = fluxes.Linear(parameter)
    tau = overshoot * 2 / (parameter * singular[0] ** 2)
    block = DiffusionBlock(op, flux, tau, allow_unstable=True)
    v = jnp.asarray(vh[0].reshape(op.in_shape))
    gain = _l2(_apply(block, v)) / _l2(v)
    assert gain == pytest.approx(abs(1 - tau * parameter * singular[0] ** 2), rel=1e-9)
    assert gain > 1.01


def test_tau_above_the_bound_is_refused_with_the_bound_in_the_message():
    op = Derivative(1, 16)
    flux = fluxes.PeronaMalik(1.0)
    bound = float(stable_step_size(op, flux))
    with pytest.raises(ValueError, match=f"`tau` exceeds .* = {bound:.10g}"):
        DiffusionBlock(op, flux, 1.01 * bound)
    DiffusionBlock(op, flux, bound)  # the bound itself is fine
    DiffusionBlock(op, flux, 1.01 * bound, allow_unstable=True)  # explicit opt-out


@pytest.mark.parametrize("tau", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_tau_is_refused(tau):
    with pytest.raises(ValueError, match="`tau`"):
        DiffusionBlock(Derivative(1, 8), fluxes.Linear(), tau)


def test_traced_tau_above_the_bound_raises_under_jit():
    op = Derivative(1, 8)
    flux = fluxes.Linear(1.0)
    u = jnp.ones(8)

    @jax.jit
    def step(tau):
        return DiffusionBlock(op, flux, tau)(u)

    np.testing.assert_allclose(step(0.1), u)  # constant signals do not change
    with pytest.raises(Exception, match="exceeds the Euclidean stability bound"):
        jax.block_until_ready(step(10.0))


def test_wrong_input_length_names_the_argument():
    block = DiffusionBlock(Derivative(1, 8), fluxes.Linear(), 0.1)
    with pytest.raises(ValueError, match="`u` must have shape \\(8,\\)"):
        block(jnp.ones(7))


def test_type_errors_name_the_argument():
    with pytest.raises(TypeError, match="op"):
        DiffusionBlock(np.eye(3), fluxes.Linear(), 0.1)
    with pytest.raises(TypeError, match="flux"):
        DiffusionBlock(Derivative(1, 8), jnp.tanh, 0.1)


def test_block_is_a_trainable_module():
    """Gradients flow to the kernel, the flux parameter and tau."""
    op = Stencil(jnp.array([-1.0, 1.0]), 16, boundary="periodic")
    block = DiffusionBlock(op, fluxes.PeronaMalik(1.0), 0.1)
    u = jnp.sin(jnp.linspace(0, 6, 16))
    grads = jax.grad(lambda b: jnp.sum(b(u) ** 2))(block)
    assert jnp.all(jnp.isfinite(grads.op.kernel))
    assert jnp.isfinite(grads.flux.lam) and jnp.isfinite(grads.tau)


def test_block_vmaps_and_keeps_float32():
    op = Derivative(1, 32)
    block = DiffusionBlock(op, fluxes.Charbonnier(0.5), stable_step_size(op, fluxes.Charbonnier(0.5)))
    batch = jnp.ones((4, 32), jnp.float32) * jnp.arange(32, dtype=jnp.float32)[None, :]
    out = jax.vmap(block)(batch)
    assert out.shape == (4, 32) and out.dtype == jnp.float32


def test_step_fraction():
    op = Derivative(1, 8)
    flux = fluxes.Linear(2.0)
    block = DiffusionBlock(op, flux, 0.5 * stable_step_size(op, flux))
    assert float(block.step_fraction()) == pytest.approx(0.5)
    assert float(block.stable_step_size()) == float(jaxpde.stable_step_size(op, flux))
