"""The fluxes of `jaxpde.fluxes`: against independent NumPy formulas, their constants
(sector bound, derivative range), their potentials (against quadrature) and special
functions, and the learnable `RadialBasisFlux`."""

import math

import equinox as eqx
import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special

from jaxpde import fluxes
from jaxpde.fluxes._special import gammaincc_three_quarters

from .helpers import (
    ALL_FLUXES,
    NONMONOTONE_FLUXES,
    few_examples,
    radial_basis_flux_reference,
    tolerance,
)

TOL = tolerance(np.float64)

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


# --- potentials and special functions -----------------------------------------------

C = fluxes.WEICKERT_CONSTANT
# Independent NumPy fluxes Phi(s) (float64), parameter p (lam, eps or L).
REFERENCE_FLUX = {
    fluxes.Linear: lambda s, p: p * s,
    fluxes.PeronaMalik: lambda s, p: s / (1 + s**2 / p**2),
    fluxes.ExponentialPeronaMalik: lambda s, p: s * np.exp(-(s**2) / p**2),
    fluxes.Charbonnier: lambda s, p: s / np.sqrt(1 + s**2 / p**2),
    fluxes.Weickert: lambda s, p: s * -np.expm1(-C / np.where(s == 0, np.inf, s / p) ** 8),
    fluxes.TotalVariation: lambda s, p: s / np.sqrt(s**2 + p**2),
}


# One compiled program per flux kind, dtype and shape (run op by op, the potentials of
# Weickert and Perona-Malik compile dozens of small programs per shape).
@eqx.filter_jit
def _potential(flux, s):
    return flux.potential(s)


@eqx.filter_jit
def _slopes(flux, s):
    return jax.vmap(jax.grad(flux.potential))(s)


def _grid(p: float) -> np.ndarray:
    return np.concatenate([np.linspace(-12 * p, 12 * p, 97), p * np.geomspace(1e-6, 1e4, 41), [0.0]])


@pytest.mark.parametrize("kind", ALL_FLUXES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_potential_gradient_is_the_flux(kind, dtype):
    for p in (0.3, 4.0):
        flux = kind(p)
        s = _grid(p).astype(dtype)
        slopes = np.asarray(_slopes(flux, jnp.asarray(s)), np.float64)
        expected = REFERENCE_FLUX[kind](s.astype(np.float64), p)
        if dtype == np.float64:
            np.testing.assert_allclose(slopes, expected, rtol=1e-12, atol=1e-300)
        else:
            np.testing.assert_allclose(slopes, expected, rtol=2e-4, atol=1e-6 * np.max(np.abs(expected)))


@pytest.mark.parametrize("kind", ALL_FLUXES)
def test_potential_matches_quadrature_of_the_flux(kind):
    for p in (0.3, 4.0):
        flux = kind(p)
        s = np.concatenate([np.linspace(-12 * p, 12 * p, 25), p * np.array([1e-3, 0.5, 1.3, 60.0])])
        expected = [
            scipy.integrate.quad(REFERENCE_FLUX[kind], 0, x, args=(p,), epsabs=0, epsrel=2e-14, limit=200)[0] for x in s
        ]
        np.testing.assert_allclose(np.asarray(_potential(flux, jnp.asarray(s))), expected, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("kind", ALL_FLUXES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_potential_is_finite_nonnegative_and_zero_at_zero(kind, dtype):
    flux = kind(1.3)
    big = np.sqrt(np.finfo(dtype).max) / 4
    s = jnp.asarray(np.array([0.0, -1e-30, 1e-3, -2.0, 50.0, 1e6, -1e15, big]), dtype)
    values = _potential(flux, s)
    slopes = _slopes(flux, s)
    assert values.dtype == dtype
    assert bool(jnp.all(jnp.isfinite(values))) and bool(jnp.all(jnp.isfinite(slopes)))
    assert float(values[0]) == 0.0 and bool(jnp.all(values >= 0))
    # Psi(s) = Psi(-s) and Psi <= L s^2 / 2 (sector bound).
    np.testing.assert_array_equal(np.asarray(_potential(flux, -s)), np.asarray(values))
    assert bool(jnp.all(values <= flux.sector_bound().astype(dtype) * s * s / 2 * (1 + 1e-5)))


@pytest.mark.parametrize("kind", ALL_FLUXES)
def test_default_quadrature_potential_agrees_with_closed_forms(kind):
    flux = kind(0.7)
    s = jnp.asarray(np.concatenate([np.linspace(-30, 30, 61), [1e3, 1e4]]))
    default = eqx.filter_jit(fluxes.AbstractFlux.potential)(flux, s)
    np.testing.assert_allclose(np.asarray(default), np.asarray(_potential(flux, s)), rtol=1e-6, atol=1e-300)


def test_incomplete_gamma_matches_scipy():
    z = np.concatenate([np.geomspace(1e-17, 50, 400), [1.7499999, 1.75, 1.7500001]])
    np.testing.assert_allclose(np.asarray(gammaincc_three_quarters(jnp.asarray(z))), scipy.special.gammaincc(0.75, z), rtol=4e-14)
    z32 = z.astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(gammaincc_three_quarters(jnp.asarray(z32)), np.float64), scipy.special.gammaincc(0.75, z32.astype(np.float64)), rtol=3e-6
    )


# --- the learnable flux ------------------------------------------------------------------


def _random_flux_parameters(data, count):
    weights = data.draw(hnp.arrays(np.float64, count, elements=st.floats(-30, 30)))
    return weights, data.draw(st.floats(-10, 10))


@few_examples(10)
@hypothesis.given(data=st.data())
def test_radial_basis_flux_is_in_its_sector_for_every_parameter(data):
    """0 <= Phi(s)/s <= L and a <= Phi' <= b (autodiff) for random weights and biases."""
    weights, bias = _random_flux_parameters(data, 6)
    flux = fluxes.RadialBasisFlux(weights, bias, L=2.0, centres=(0.0, 0.5, 1.0, 2.0, 4.0, 8.0), width=0.7)
    s = jnp.asarray(np.concatenate([-np.logspace(-3, 2, 300), np.logspace(-3, 2, 300)]))
    ratio = np.asarray(flux(s) / s)
    assert np.all(ratio >= 0) and np.all(ratio <= 2.0)
    slope = np.asarray(jax.vmap(jax.grad(flux))(s))
    low, high = (float(x) for x in flux.derivative_range())
    assert low <= slope.min() and slope.max() <= high
    assert float(flux.lipschitz()) == pytest.approx(high)


def test_radial_basis_flux_matches_its_definition():
    flux = fluxes.RadialBasisFlux.fit(fluxes.PeronaMalik(1.0))
    s = np.linspace(-3, 3, 101)
    np.testing.assert_allclose(np.asarray(flux(jnp.asarray(s))), radial_basis_flux_reference(flux)(s), **TOL)


def test_radial_basis_fit_approximates_perona_malik_and_is_nonmonotone():
    flux = fluxes.RadialBasisFlux.fit(fluxes.PeronaMalik(1.0))
    z = np.linspace(0, 6, 200)
    error = np.abs(np.asarray(flux.diffusivity(jnp.asarray(z))) - 1 / (1 + z))
    assert error.max() < 0.12
    assert not flux.is_monotone()  # it falls like Perona-Malik: Phi' < 0 somewhere
    slope = jax.vmap(jax.grad(flux))(jnp.linspace(1.5, 3.0, 50))
    assert float(jnp.min(slope)) < 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weights": np.zeros((2, 2))}, "weights"),
        ({"weights": np.zeros(2), "centres": (0.0,)}, "centres"),
        ({"weights": np.zeros(2), "centres": (0.0, -1.0)}, "centres"),
        ({"weights": np.zeros(2), "L": 0.0}, "L"),
        ({"weights": np.zeros(2), "width": -1.0}, "width"),
        ({"weights": np.zeros(2), "bias": np.zeros(2)}, "bias"),
    ],
)
def test_radial_basis_flux_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fluxes.RadialBasisFlux(**kwargs)
