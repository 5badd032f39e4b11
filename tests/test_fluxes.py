import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpde import fluxes

from .helpers import ALL_FLUXES, NONMONOTONE_FLUXES, tolerance

# Independent NumPy formulas of g(s^2) for every flux, parameter p (lam, eps or L).
REFERENCE_DIFFUSIVITY = {
    fluxes.Linear: lambda s, p: np.full_like(s, p),
    fluxes.PeronaMalik: lambda s, p: 1 / (1 + s**2 / p**2),
    fluxes.ExponentialPeronaMalik: lambda s, p: np.exp(-(s**2) / p**2),
    fluxes.Charbonnier: lambda s, p: 1 / np.sqrt(1 + s**2 / p**2),
    fluxes.Weickert: lambda s, p: np.where(
        s == 0, 1.0, -np.expm1(-3.31488 / np.where(s == 0, 1.0, s / p) ** 8)
    ),
    fluxes.TotalVariation: lambda s, p: 1 / np.sqrt(s**2 + p**2),
}

# Analytic constants: (sector bound, min Phi', max Phi') as functions of the parameter.
ANALYTIC = {
    fluxes.Linear: lambda p: (p, p, p),
    fluxes.PeronaMalik: lambda p: (1.0, -1 / 8, 1.0),
    fluxes.ExponentialPeronaMalik: lambda p: (1.0, -2 * math.exp(-1.5), 1.0),
    fluxes.Charbonnier: lambda p: (1.0, 0.0, 1.0),
    fluxes.Weickert: lambda p: (1.0, 1 - 8 * math.exp(-7 / 8), 1.0),
    fluxes.TotalVariation: lambda p: (1 / p, 0.0, 1 / p),
}


@pytest.mark.parametrize("kind", ALL_FLUXES)
@pytest.mark.parametrize("parameter", [0.3, 1.0, 7.0])
def test_flux_matches_reference(kind, parameter):
    s = np.linspace(-10 * parameter, 10 * parameter, 2001)
    flux = kind(parameter)
    expected = REFERENCE_DIFFUSIVITY[kind](s, parameter) * s
    np.testing.assert_allclose(flux(jnp.asarray(s)), expected, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("kind", ALL_FLUXES)
@pytest.mark.parametrize("parameter", [0.3, 2.0])
def test_constants_are_confirmed_numerically(kind, parameter):
    """sector bound = sup g, derivative range = [inf Phi', sup Phi'] on a fine grid."""
    flux = kind(parameter)
    sector, low, high = ANALYTIC[kind](parameter)
    assert float(flux.sector_bound()) == pytest.approx(sector, rel=1e-14)
    analytic_low, analytic_high = (float(x) for x in flux.derivative_range())
    assert analytic_low == pytest.approx(low, rel=1e-12, abs=1e-15)
    assert analytic_high == pytest.approx(high, rel=1e-12)
    assert float(flux.lipschitz()) == pytest.approx(max(abs(low), abs(high)), rel=1e-12)

    s = jnp.concatenate([jnp.linspace(-60, 60, 400_001) * parameter, jnp.array([0.0])])
    g = flux.diffusivity(s * s)
    slopes = jax.vmap(jax.grad(flux))(s)
    assert jnp.all(jnp.isfinite(slopes))
    assert float(jnp.min(g)) >= 0
    assert float(jnp.max(g)) <= sector * (1 + 1e-12)
    assert float(jnp.max(g)) == pytest.approx(sector, rel=1e-9)  # attained at s = 0
    # The bounds hold on the grid and are attained up to the grid resolution.
    assert float(jnp.min(slopes)) >= low - 1e-12
    assert float(jnp.max(slopes)) <= high + 1e-12
    if kind not in (fluxes.Charbonnier, fluxes.TotalVariation):  # infimum 0 only at infinity
        assert float(jnp.min(slopes)) == pytest.approx(low, rel=1e-6, abs=1e-9)
    assert float(jnp.max(slopes)) == pytest.approx(high, rel=1e-9)


def test_weickert_lipschitz_is_about_2_335():
    assert float(fluxes.Weickert(1.0).lipschitz()) == pytest.approx(2.33489, abs=1e-5)


@pytest.mark.parametrize("kind", ALL_FLUXES)
def test_monotone_flags(kind):
    assert kind(1.0).is_monotone() == (kind not in NONMONOTONE_FLUXES)


@hypothesis.given(
    kind=st.sampled_from(ALL_FLUXES),
    parameter=st.floats(0.01, 100.0),
    s=st.floats(-1e6, 1e6, allow_nan=False),
)
def test_sector_condition_property(kind, parameter, s):
    flux = kind(parameter)
    value = float(flux(jnp.asarray(s)))
    sector = float(flux.sector_bound())
    if s == 0:
        assert value == 0
    else:
        assert 0 <= value / s <= sector * (1 + 1e-12)


@pytest.mark.parametrize("kind", ALL_FLUXES)
def test_float32_and_gradients(kind):
    flux = kind(0.5)
    s = jnp.linspace(-3, 3, 101, dtype=jnp.float32)
    assert flux(s).dtype == jnp.float32
    grad = jax.grad(lambda p: jnp.sum(type(flux)(p)(s)))(jnp.asarray(0.5))
    assert jnp.isfinite(grad)


@pytest.mark.parametrize("kind", ALL_FLUXES)
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_parameters_are_refused(kind, bad):
    with pytest.raises(ValueError, match="must be finite and positive"):
        kind(bad)


def test_traced_bad_parameter_raises_under_jit():
    @jax.jit
    def build(lam):
        return fluxes.PeronaMalik(lam)(jnp.ones(3))

    np.testing.assert_allclose(build(1.0), 0.5 * np.ones(3), **tolerance(np.float64))
    with pytest.raises(Exception, match="lam"):
        jax.block_until_ready(build(-1.0))
