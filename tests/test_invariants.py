import hypothesis
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np

from jaxpde import Derivative, DiffusionBlock, Stencil, fluxes, stable_step_size

from .helpers import (
    boundaries,
    flux_kinds,
    orders,
    parameters,
    signals,
    sizes,
    spacings,
    step_fractions,
)


@hypothesis.given(
    order=orders,
    boundary=st.sampled_from(("neumann", "periodic")),
    n=sizes,
    kind=flux_kinds,
    parameter=parameters,
    fraction=step_fractions,
    data=st.data(),
)
def test_mass_conservation_property(order, boundary, n, kind, parameter, fraction, data):
    op = Derivative(order, max(n, order + 1), boundary=boundary)
    flux = kind(parameter)
    block = DiffusionBlock(op, flux, fraction * stable_step_size(op, flux))
    u = data.draw(signals(op.in_shape))
    v = u
    for _ in range(4):
        v = block(v)
    scale = float(jnp.max(jnp.abs(u)))
    assert abs(float(jnp.mean(v) - jnp.mean(u))) <= 1e-13 * scale


@hypothesis.given(kernel=st.lists(st.integers(-8, 8), min_size=1, max_size=4), n=sizes, data=st.data())
def test_zero_sum_stencils_conserve_mass(kernel, n, data):
    taps = np.array(kernel + [-sum(kernel)], float)
    hypothesis.assume(np.any(taps != 0))
    op = Stencil(taps, max(n, len(taps)), boundary="periodic")
    flux = fluxes.PeronaMalik(1.0)
    block = DiffusionBlock(op, flux, stable_step_size(op, flux))
    u = data.draw(signals(op.in_shape))
    assert abs(float(jnp.sum(block(u)) - jnp.sum(u))) <= 1e-12 * float(jnp.sum(jnp.abs(u)))


def test_dirichlet_does_not_conserve_mass():
    op = Derivative(1, 16, boundary="dirichlet")
    block = DiffusionBlock(op, fluxes.Linear(), stable_step_size(op, fluxes.Linear()))
    u = jnp.ones(16)
    assert float(jnp.sum(block(u))) < 16 - 0.1


@hypothesis.given(
    boundary=boundaries, n=sizes, h=spacings, kind=flux_kinds, parameter=parameters,
    fraction=step_fractions, data=st.data(),
)
def test_max_min_principle_property(boundary, n, h, kind, parameter, fraction, data):
    op = Derivative(1, n, h=h, boundary=boundary)
    flux = kind(parameter)
    tau = fraction * h**2 / (2 * float(flux.sector_bound()))
    block = DiffusionBlock(op, flux, tau)
    u = data.draw(signals(op.in_shape))
    low, high = float(jnp.min(u)), float(jnp.max(u))
    if boundary == "dirichlet":
        low, high = min(low, 0.0), max(high, 0.0)
    v = u
    slack = 1e-12 * float(jnp.max(jnp.abs(u)))
    for _ in range(4):
        v = block(v)
        assert float(jnp.max(v)) <= high + slack
        assert float(jnp.min(v)) >= low - slack


def test_max_min_principle_fails_for_fourth_order():
    """The max-min principle is specific to m = 1: D_2 overshoots at an edge."""
    op = Derivative(2, 16)
    block = DiffusionBlock(op, fluxes.Linear(), stable_step_size(op, fluxes.Linear()))
    u = jnp.where(jnp.arange(16) < 8, 0.0, 1.0)
    assert float(jnp.max(block(u))) > 1.0 + 1e-3
