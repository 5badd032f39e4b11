"""FED and FSI cycles and their common cycle polynomial.

The references are independent of jaxpde: the closed form
q_n(x) = sin((2n+1) phi) / ((2n+1) sin phi), sin^2 phi = x / 2, exact rational
arithmetic, high-precision (mpmath) products for the Leja order, and dense NumPy
matrices A = K^T diag(g(|K u0|^2)) K with K built from the stencil definition
(`helpers.operator_matrix`).
"""

import itertools
import math
from fractions import Fraction

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

from jaxpde import Derivative, Stencil, fluxes, stable_step_size
from jaxpde.schemes import (
    FEDScheme,
    FSIScheme,
    cycle_length_for,
    cycle_polynomial,
    cycle_time,
    fed_cycle,
    fed_step_sizes,
    fsi_cycle,
    fsi_weights,
    kappa_order,
    leja_order,
    plan_cycles,
    rounding_amplification,
    three_term_cycle,
    unstable_cycle_length,
)
from jaxpde.schemes.fed import LEJA_WEIGHT, ORDERS, amplification_terms, grid_factor

from .helpers import (
    DENSE_DIFFUSIVITY,
    derivatives,
    few_examples,
    flux_kinds,
    operator_matrix,
    parameters,
    signals,
    stencils,
    step_fractions,
    tolerance,
)

TOL = tolerance(np.float64)
GRID_SIZES = st.sampled_from((16, 32))


def _l2(u) -> float:
    return float(np.linalg.norm(np.asarray(u, np.float64)))


def _distance(a, b) -> float:
    """||a - b||, in NumPy (no eager JAX operations to compile)."""
    return _l2(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def _closed_form(x, n: int) -> np.ndarray:
    """q_n(x) = sin((2n+1) phi) / ((2n+1) sin phi) with sin^2 phi = x / 2, x in [0, 2]."""
    phi = np.arcsin(np.sqrt(np.clip(np.asarray(x, np.float64) / 2, 0, 1)))
    m = 2 * n + 1
    safe = np.where(phi == 0, 1.0, phi)
    return np.where(phi == 0, 1.0, np.sin(m * safe) / (m * np.sin(safe)))


def _dense_cycle(op, kind, parameter, tau, u0, n: int) -> np.ndarray:
    """q_n(tau A) u0 with A = K^T diag(g(|K u0|^2)) K, by the eigendecomposition of A."""
    matrix = operator_matrix(op)
    u = np.asarray(u0, np.float64).reshape(-1)
    s = matrix @ u
    a = matrix.T @ (DENSE_DIFFUSIVITY[kind](s * s, parameter)[:, None] * matrix)
    values, vectors = np.linalg.eigh(tau * (a + a.T) / 2)
    return (vectors @ (_closed_form(values, n) * (vectors.T @ u))).reshape(np.shape(u0))


def _exact_q(x: float, n: int) -> Fraction:
    """q_n(x) in exact rational arithmetic (the FSI recurrence with a_k = (4k+2)/(2k+3))."""
    x = Fraction(x)
    previous = current = Fraction(1)
    for k in range(n):
        a = Fraction(4 * k + 2, 2 * k + 3)
        previous, current = current, a * (1 - x) * current + (1 - a) * previous
    return current


# --- coefficients ----------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7])
def test_fsi_weights(n):
    weights = fsi_weights(n)
    assert weights.dtype == np.float64 and weights.shape == (n,)
    expected = [Fraction(4 * k + 2, 2 * k + 3) for k in range(n)]
    np.testing.assert_array_equal(weights, [float(a) for a in expected])
    assert weights[0] == 2 / 3
    assert np.all(np.diff(weights) > 0) and np.all(weights < 2)


@pytest.mark.parametrize("n", [1, 2, 3, 10, 64, 150])
@pytest.mark.parametrize("tau_max", [1.0, 0.37])
def test_fed_step_sizes(n, tau_max):
    ascending = fed_step_sizes(tau_max, n, reorder=False)
    i = np.arange(n)
    expected = tau_max / (2 * np.cos(np.pi * (2 * i + 1) / (4 * n + 2)) ** 2)
    np.testing.assert_allclose(ascending, expected, rtol=TOL["rtol"])
    assert np.all(np.diff(ascending) > 0)
    np.testing.assert_array_equal(fed_step_sizes(tau_max, n, order="ascending"), ascending)
    np.testing.assert_array_equal(fed_step_sizes(tau_max, n), fed_step_sizes(tau_max, n, order="leja"))
    for order in ORDERS:
        sizes = fed_step_sizes(tau_max, n, order=order)
        assert sizes.dtype == np.float64 and sizes.shape == (n,)
        assert np.all(sizes > 0)
        assert math.fsum(sizes) == pytest.approx(tau_max * (n * n + n) / 3, rel=TOL["rtol"])
        # Every order is a permutation of the ascending one.
        np.testing.assert_array_equal(np.sort(sizes), ascending)
    assert fed_step_sizes(tau_max, n, order="kappa")[0] == ascending[0]  # kappa-cycles start at i = 0
    # The weighted Leja order starts at the root x_i = 1/t_i where x^(1/2) (2 - x)^(1/4) peaks, next to 4/3.
    x = 2 * np.cos(np.pi * (2 * i + 1) / (4 * n + 2)) ** 2
    assert leja_order(n)[0] == int(np.argmin(np.abs(x - 4 / 3)))


@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_cycle_time_is_the_slope_of_the_cycle_polynomial(n):
    tau = 0.3
    assert cycle_time(tau, n) == pytest.approx(tau * (n * n + n) / 3, rel=TOL["rtol"])
    assert cycle_time(tau, n) == pytest.approx(math.fsum(fed_step_sizes(tau, n)), rel=TOL["rtol"])
    # -q_n'(0) tau, by a central difference (q_n is a polynomial of degree n).
    h = 1e-7
    slope = (cycle_polynomial(np.array([h]), n) - cycle_polynomial(np.array([-h]), n))[0] / (2 * h)
    assert -slope * tau == pytest.approx(cycle_time(tau, n), rel=1e-6)


@hypothesis.given(duration=st.floats(1e-3, 1e3), tau=st.floats(1e-3, 10.0))
def test_cycle_length_for_is_the_shortest(duration, tau):
    n = cycle_length_for(duration, tau)
    assert cycle_time(tau, n) >= duration
    assert n == 1 or cycle_time(tau, n - 1) < duration


@pytest.mark.parametrize("n", [1, 2, 9, 100])
def test_cycle_length_for_exact_cycle_times(n):
    tau = 0.125  # a power of two: tau (n^2 + n) / 3 is the exact cycle time up to one rounding
    duration = cycle_time(tau, n)
    assert cycle_length_for(duration, tau) == n
    assert cycle_length_for(duration * (1 + 1e-9), tau) == n + 1


@hypothesis.given(t_end=st.floats(1e-3, 1e3), tau=st.floats(1e-3, 10.0), cycles=st.integers(1, 20))
def test_plan_cycles_advances_exactly_t_end(t_end, tau, cycles):
    n, shrunk = plan_cycles(t_end, tau, cycles)
    assert n == cycle_length_for(t_end / cycles, tau)
    assert 0 < shrunk <= tau
    assert cycles * cycle_time(shrunk, n) == pytest.approx(t_end, rel=TOL["rtol"])
    assert n == 1 or cycles * cycle_time(tau, n - 1) < t_end * (1 + TOL["rtol"])


def test_for_time_plans_the_scheme():
    op = Derivative(1, 16, h=1 / 16)
    flux = fluxes.PeronaMalik(2.0)
    t_end = 0.123
    for scheme in (FSIScheme(op, flux, cycle_length=3), FEDScheme(op, flux, cycle_length=3)):
        planned = scheme.for_time(t_end, steps=4)
        n, tau = plan_cycles(t_end, float(stable_step_size(op, flux)), 4)
        assert planned.cycle_length == n
        assert 4 * planned.cycle_time == pytest.approx(t_end, rel=TOL["rtol"])
        assert planned.cycle_time == planned.time_step
        assert float(planned.block.tau) == pytest.approx(tau, rel=TOL["rtol"])
    fed = FEDScheme(op, flux, 0.5 * stable_step_size(op, flux), cycle_length=6)
    np.testing.assert_allclose(fed.step_sizes, fed_step_sizes(float(fed.tau_max), 6), rtol=TOL["rtol"])
    assert fed.cycle_time == pytest.approx(cycle_time(float(fed.tau_max), 6), rel=TOL["rtol"])
    fsi = FSIScheme(op, flux, 0.5 * stable_step_size(op, flux), cycle_length=6)
    assert fsi.tau is fsi.block.tau and fed.tau_max is fed.block.tau
    assert fsi.cycle_time == fsi.time_step == cycle_time(float(fsi.tau), 6)


@pytest.mark.parametrize("kind", [FSIScheme, FEDScheme])
def test_deprecated_cycle_keywords(kind):
    """For one release, `for_time` and `solve` accept `cycles=` and `rollout` `num_cycles=`: the
    results of `steps=` and `num_steps=`, with a `DeprecationWarning` that names the new keyword
    (at the caller's line), and a `TypeError` when both names are given."""
    op = Derivative(1, 16, h=1 / 16)
    flux = fluxes.PeronaMalik(2.0)
    scheme = kind(op, flux, cycle_length=3)
    u = jnp.asarray(np.random.default_rng(3).standard_normal(16))
    t_end = 0.123
    planned = scheme.for_time(t_end, steps=4)
    with pytest.warns(DeprecationWarning, match="pass `steps` instead") as record:
        old = scheme.for_time(t_end, cycles=4)
    assert [warning.filename for warning in record] == [__file__]
    assert (old.cycle_length, float(old.block.tau)) == (planned.cycle_length, float(planned.block.tau))
    with pytest.warns(DeprecationWarning, match="pass `steps` instead"):
        solved = scheme.solve(u, t_end, cycles=4)
    np.testing.assert_array_equal(solved, scheme.solve(u, t_end, steps=4))
    with pytest.warns(DeprecationWarning, match="pass `num_steps` instead"):
        rolled = planned.rollout(u, num_cycles=4)
    np.testing.assert_array_equal(rolled, planned.rollout(u, 4))
    both = (
        lambda: scheme.for_time(t_end, steps=4, cycles=4),
        lambda: scheme.solve(u, t_end, steps=4, cycles=4),
        lambda: planned.rollout(u, num_steps=4, num_cycles=4),
    )
    for call in both:
        with pytest.raises(TypeError, match="`cycles` is its deprecated name|`num_cycles` is its deprecated name"):
            call()


# --- the cycle polynomial --------------------------------------------------------

CYCLE_LENGTHS = [1, 2, 3, 4, 7, 10, 33, 150]


@pytest.mark.parametrize("n", CYCLE_LENGTHS)
def test_cycle_polynomial_is_bounded_on_the_stable_interval(n):
    x = np.linspace(0, 2, 20001)
    q = cycle_polynomial(x, n)
    assert np.max(np.abs(q)) <= 1 + TOL["rtol"]
    assert q[0] == 1.0
    assert abs(q[-1]) == pytest.approx(1 / (2 * n + 1), rel=1e-10)  # q_n(2) = (-1)^n / (2n + 1)


@pytest.mark.parametrize("n", CYCLE_LENGTHS)
def test_cycle_polynomial_closed_form(n):
    x = np.linspace(0, 2, 4001)
    # The recurrence accumulates rounding about linearly in n.
    np.testing.assert_allclose(cycle_polynomial(x, n), _closed_form(x, n), rtol=0, atol=n * TOL["atol"])
    # Above 2: sin phi = cosh psi > 1 and q_n(x) = (-1)^n cosh((2n+1) psi) / ((2n+1) cosh psi).
    if n <= 10:
        x = np.linspace(2, 2.5, 101)
        psi = np.arccosh(np.sqrt(x / 2))
        expected = (-1) ** n * np.cosh((2 * n + 1) * psi) / ((2 * n + 1) * np.cosh(psi))
        np.testing.assert_allclose(cycle_polynomial(x, n), expected, rtol=1e-10)


@pytest.mark.parametrize("n", [1, 2, 5, 12])
def test_cycle_polynomial_is_the_fed_product(n):
    x = np.linspace(-0.5, 2.5, 3001)
    for order in ORDERS:
        t = fed_step_sizes(1.0, n, order=order)
        product = np.prod(1 - t[:, None] * x[None, :], axis=0)
        np.testing.assert_allclose(cycle_polynomial(x, n), product, rtol=1e-10, atol=n * TOL["atol"])
    assert np.all(cycle_polynomial(np.array([0.0]), 0) == 1)


@pytest.mark.parametrize("x", [0.0, 0.5, 1.0, 2.0])
def test_no_unstable_cycle_length_up_to_two(x):
    assert unstable_cycle_length(x) is None


@pytest.mark.parametrize("x", [-1.0, float("nan")])
def test_unstable_cycle_length_refuses_negative_x(x):
    with pytest.raises(ValueError, match="`x`"):
        unstable_cycle_length(x)


@pytest.mark.parametrize("x", [2.01, 2.1, 2.3, 4.0, 10.0, 1e3])
def test_unstable_cycle_length_is_the_first_growing_cycle(x):
    n = unstable_cycle_length(x)
    assert n is not None and n >= 1
    assert abs(_exact_q(x, n)) > 1
    assert all(abs(_exact_q(x, m)) <= 1 for m in range(1, n))
    assert abs(cycle_polynomial(np.array([x]), n)[0]) > 1


@pytest.mark.parametrize(
    "x",
    [
        # |q_1(3)| = |1 - 2x/3| = 1 exactly: the first growing cycle has length 2.
        3.0,
        # |q_2(5/2)| = |1 - 2x + 4x^2/5| = 1 exactly: the first growing cycle has length 3.
        2.5,
    ],
)
def test_unstable_cycle_length_where_a_cycle_is_exactly_neutral(x):
    n = unstable_cycle_length(x)
    assert abs(_exact_q(x, n - 1)) == 1
    assert abs(_exact_q(x, n)) > 1


# --- cycles against the dense matrix polynomial ----------------------------------


def _dense_cases():
    """(name, operator, flux kind)."""
    rng = np.random.default_rng(3)
    pm, charbonnier = fluxes.PeronaMalik, fluxes.Charbonnier
    return [
        ("D1-neumann", Derivative(1, 32), pm),
        ("D2-periodic", Derivative(2, 16, boundary="periodic"), charbonnier),
        ("stencil-neumann", Stencil(rng.standard_normal(5), 16, boundary="neumann"), charbonnier),
        ("stencil-1to2-periodic", Stencil(rng.standard_normal((2, 1, 3)), 16, boundary="periodic"), pm),
        ("stencil-2to3-dirichlet", Stencil(rng.standard_normal((3, 2, 3)), 16, boundary="dirichlet"), charbonnier),
    ]


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=1)  # one program for all inputs
def _all_cycles(schemes, inputs):
    return [(fsi(u), fed(u)) for (fsi, fed), u in zip(schemes, inputs)]


def test_frozen_fsi_and_fed_cycles_are_the_dense_cycle_polynomial():
    """Derivatives and stencils (several channels too), at tau = 2 / (L sigma_max^2), the
    sharp bound from the SVD (allow_unstable skips the certified bound, at most this)."""
    n, parameter = 7, 0.8
    cases = _dense_cases()
    schemes, taus = [], []
    for _, op, kind in cases:
        flux = kind(parameter)
        taus.append(2 / (float(flux.sector_bound()) * np.linalg.norm(operator_matrix(op), 2) ** 2))
        schemes.append(
            (
                FSIScheme(op, flux, taus[-1], cycle_length=n, allow_unstable=True),
                FEDScheme(op, flux, taus[-1], cycle_length=n, allow_unstable=True),
            )
        )
    rng = np.random.default_rng(4)
    for _ in range(2):  # same shapes: the compiled cycles are reused
        inputs = [jnp.asarray(rng.standard_normal(op.in_shape)) for _, op, _ in cases]
        for (name, op, kind), tau, u0, (by_fsi, by_fed) in zip(cases, taus, inputs, _all_cycles(schemes, inputs)):
            expected = _dense_cycle(op, kind, parameter, tau, u0, n)
            np.testing.assert_allclose(by_fsi, expected, **TOL, err_msg=f"FSI, {name}")
            np.testing.assert_allclose(by_fed, expected, **TOL, err_msg=f"FED, {name}")
            np.testing.assert_allclose(by_fsi, by_fed, **TOL, err_msg=f"FSI vs FED, {name}")


# --- the loops that FEDScheme and FSIScheme run, against the shared recurrence -----


@eqx.filter_jit
def _loops_and_recurrence(block, u, n, order, frozen):
    """FED: `fed_cycle` (two-term loop) and `three_term_cycle` with alpha = 1, beta = the step
    fractions; FSI: `fsi_cycle` (two steps per loop iteration) and `three_term_cycle` with the
    default one step per iteration, frozen as given and with `frozen` traced."""
    fractions = fed_step_sizes(1.0, n, order=order)
    weights = fsi_weights(n)
    return (
        fed_cycle(block, u, n, order=order),
        three_term_cycle(block, u, np.ones_like(fractions), fractions, True),
        fsi_cycle(block, u, n, frozen=frozen),
        three_term_cycle(block, u, weights, np.ones_like(weights), frozen),
        three_term_cycle(block, u, weights, np.ones_like(weights), jnp.asarray(frozen), unroll=2),
    )


@pytest.mark.parametrize("n", [1, 2, 7, 30, 61])  # odd lengths leave a remainder step after the unrolled pairs
@pytest.mark.parametrize("order", ORDERS)
def test_cycle_loops_agree_with_the_three_term_recurrence(n, order):
    """float64, D_1 neumann, Perona-Malik: `fed_cycle` and `fsi_cycle` (frozen and unfrozen)
    agree with `three_term_cycle` to rounding, and the frozen ones with the dense cycle
    polynomial q_n(tau A), A = K^T diag(g(|K u0|^2)) K."""
    if order == "ascending" and n > 30:
        pytest.skip("the ascending order amplifies rounding beyond any fixed tolerance here")
    size = 32
    op = Derivative(1, size, h=1 / size)
    u = jnp.asarray(np.cumsum(np.random.default_rng(n).standard_normal(size)))
    lam = 0.5 * float(np.median(np.abs(np.diff(np.asarray(u)) * size)))
    flux = fluxes.PeronaMalik(lam)
    tau = float(stable_step_size(op, flux))
    block = FEDScheme(op, flux, tau, cycle_length=1).block
    expected = _dense_cycle(op, fluxes.PeronaMalik, lam, tau, u, n)
    norm = _l2(u)
    # First-order rounding of the FED cycle, with a margin (the FSI cycle amplifies less).
    atol = 64 * rounding_amplification(fed_step_sizes(1.0, n, order=order)) * np.finfo(np.float64).eps * norm
    for frozen in (True, False):
        fed, fed_recurrence, fsi, fsi_recurrence, fsi_traced = _loops_and_recurrence(block, u, n, order, frozen)
        np.testing.assert_allclose(fed, fed_recurrence, rtol=0, atol=atol)
        np.testing.assert_allclose(fsi, fsi_recurrence, rtol=0, atol=64 * n * np.finfo(np.float64).eps * norm)
        np.testing.assert_allclose(fsi_traced, fsi_recurrence, rtol=0, atol=64 * n * np.finfo(np.float64).eps * norm)
        np.testing.assert_allclose(fed, expected, rtol=0, atol=atol + TOL["atol"] * norm)
        if frozen:
            np.testing.assert_allclose(fsi, expected, rtol=0, atol=TOL["atol"] * norm)
        elif n > 1:
            assert _distance(fsi, expected) > 1e-6 * norm  # unfrozen is another map


def test_fed_and_fsi_schemes_compile_once_per_cycle_length():
    """`FEDScheme` and `FSIScheme` trace one program per cycle length (a static field), as
    before the two-term FED loop: new step sizes and inputs of the same length reuse it."""
    traces = []

    @eqx.filter_jit
    def run(scheme, u):
        traces.append(type(scheme).__name__)
        return scheme(u)

    op = Derivative(1, 16)
    flux = fluxes.PeronaMalik(0.7)
    bound = float(stable_step_size(op, flux))
    rng = np.random.default_rng(8)
    for kind in (FEDScheme, FSIScheme):
        for n in (3, 8):
            for fraction in (1.0, 0.5, 0.25):
                run(kind(op, flux, fraction * bound, cycle_length=n), jnp.asarray(rng.standard_normal(16)))
    assert traces == ["FEDScheme"] * 2 + ["FSIScheme"] * 2


# --- stability -------------------------------------------------------------------

_operators = st.one_of(derivatives(sizes=GRID_SIZES), stencils(sizes=GRID_SIZES)).filter(
    lambda op: float(op.norm_bound()) > 1e-100  # a zero stencil has no finite step bound
)


@eqx.filter_jit
def _cycle_trajectories(fsi, fed, u):
    return fsi.rollout(u, 3, save_every=1)[1], fed.rollout(u, 3, save_every=1)[1]


@few_examples(3)  # each example compiles the cycles for its operator shape
@hypothesis.given(
    op=_operators,
    kind=flux_kinds,
    parameter=parameters,
    fraction=step_fractions,
    n=st.sampled_from((4, 9)),
    data=st.data(),
)
def test_frozen_cycles_are_euclidean_stable_property(op, kind, parameter, fraction, n, data):
    flux = kind(parameter)
    tau = fraction * stable_step_size(op, flux)
    u = data.draw(signals(op.in_shape))
    fsi = FSIScheme(op, flux, tau, cycle_length=n)
    fed = FEDScheme(op, flux, tau, cycle_length=n)
    for path in _cycle_trajectories(fsi, fed, u):
        norms = [_l2(v) for v in path]
        for before, after in itertools.pairwise(norms):
            assert after <= before * (1 + TOL["rtol"])


@pytest.mark.parametrize(
    "op", [Derivative(1, 16), Derivative(2, 32, boundary="periodic")], ids=["D1-neumann", "D2-periodic"]
)
def test_stability_bound_is_sharp_for_long_cycles(op):
    """tau = 1.01 x bound, linear flux: the top singular vector grows in a cycle of
    length `unstable_cycle_length(tau L sigma^2)`, and not in the cycle one shorter."""
    L = 1.5
    flux = fluxes.Linear(L)
    tau = 1.01 * float(stable_step_size(op, flux))
    _, singular, vt = np.linalg.svd(operator_matrix(op))
    x = tau * L * singular[0] ** 2
    n = unstable_cycle_length(x)
    assert n is not None and n > 1
    v = jnp.asarray(vt[0])

    @eqx.filter_jit
    def gains(block, v):
        outs = (fsi_cycle(block, v, n), fed_cycle(block, v, n), fsi_cycle(block, v, n - 1))
        return [jnp.sqrt(jnp.sum(w * w)) for w in outs]

    block = FSIScheme(op, flux, tau, cycle_length=1, allow_unstable=True).block
    fsi_gain, fed_gain, shorter_gain = (float(g) for g in gains(block, v))
    expected = abs(cycle_polynomial(np.array([x]), n)[0])
    assert expected > 1
    assert fsi_gain == pytest.approx(expected, rel=1e-9)
    assert fed_gain == pytest.approx(expected, rel=1e-9)
    assert fsi_gain > 1 and fed_gain > 1
    assert shorter_gain == pytest.approx(abs(cycle_polynomial(np.array([x]), n - 1)[0]), rel=1e-9)
    assert shorter_gain <= 1


def test_frozen_and_unfrozen_fsi():
    """They coincide for the linear flux (constant diffusivity) and differ for Perona-Malik."""
    op = Derivative(1, 32, h=1 / 32)
    u = jnp.asarray(np.cumsum(np.random.default_rng(5).standard_normal(32)))
    lam = 0.3 * float(np.max(np.abs(operator_matrix(op) @ np.asarray(u))))
    schemes = [
        FSIScheme(op, flux, cycle_length=9, frozen=frozen)
        for flux in (fluxes.Linear(2.0), fluxes.PeronaMalik(lam))
        for frozen in (True, False)
    ]
    linear_frozen, linear_unfrozen, pm_frozen, pm_unfrozen = eqx.filter_jit(
        lambda schemes, u: [scheme(u) for scheme in schemes]
    )(schemes, u)
    np.testing.assert_allclose(linear_frozen, linear_unfrozen, **TOL)
    assert _distance(pm_frozen, pm_unfrozen) > 1e-3 * _l2(u)
    # Frozen: the dense polynomial of the diffusivity at u; unfrozen: something else.
    np.testing.assert_allclose(
        pm_frozen, _dense_cycle(op, fluxes.PeronaMalik, lam, float(schemes[2].tau), u, 9), **TOL
    )


# --- rounding in long FED cycles -------------------------------------------------


def test_reordering_reduces_rounding_amplification():
    n = 150
    reordered = rounding_amplification(fed_step_sizes(1.0, n))
    kappa = rounding_amplification(fed_step_sizes(1.0, n, order="kappa"))
    ascending = rounding_amplification(fed_step_sizes(1.0, n, reorder=False))
    assert reordered < 2e3 < kappa < 1e6
    assert ascending > 1e30
    assert reordered < 1e-20 * ascending
    # At n = 300 the best kappa-cycle is three orders of magnitude worse than the Leja order.
    assert rounding_amplification(fed_step_sizes(1.0, 300)) < 5e3
    assert rounding_amplification(fed_step_sizes(1.0, 300, order="kappa")) > 1e6


def _mp_leja_order(n: int, weight: tuple[float, float], digits: int = 60) -> tuple[int, ...]:
    """The weighted Leja order by its definition, with the products themselves (no
    logarithms) at `digits` digits: start where x^a (2 - x)^b is largest, then each next root
    maximises that weight times the product of its distances to the roots taken (ties, equal
    to 40 digits, go to the smaller index: for n = 2 the two weights are equal exactly)."""
    with mpmath.workdps(digits):
        x = [2 * mpmath.cos(mpmath.pi * (2 * i + 1) / (4 * n + 2)) ** 2 for i in range(n)]
        a, b = (mpmath.mpf(e) for e in weight)
        value = [xi**a * (2 - xi) ** b for xi in x]
        free, order = list(range(n)), []
        while free:
            largest = max(value[i] for i in free)
            k = next(i for i in free if value[i] >= largest * (1 - mpmath.mpf(10) ** -40))
            order.append(k)
            free.remove(k)
            value = [v * abs(x[i] - x[k]) for i, v in enumerate(value)]
    return tuple(order)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 41, 100])
@pytest.mark.parametrize("weight", [(0.0, 0.0), LEJA_WEIGHT], ids=["classical", "weighted"])
def test_leja_order_is_its_definition_in_high_precision(n, weight):
    assert leja_order(n, weight) == _mp_leja_order(n, weight)


@hypothesis.given(n=st.integers(1, 160), points=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=4))
def test_fed_orders_property(n, points):
    """For every order: a permutation of the ascending steps. In the default (Leja) order: the
    product prod_i (1 - t_i x), evaluated step by step in float64, is the exact rational
    product of the same t_i within the first-order rounding bound 6 u W (W the amplification
    weighted by max(t_i, 1), true maxima: the grid's times grid_factor^2), and the amplification
    is at most that of the kappa-cycle order and within the bound of `fed-rounding`."""
    from jaxpde.claims.cycles import amplification_bound

    ascending = fed_step_sizes(1.0, n, order="ascending")
    leja = fed_step_sizes(1.0, n)
    for order, sizes in (("leja", leja), ("kappa", fed_step_sizes(1.0, n, order="kappa"))):
        assert sorted(leja_order(n) if order == "leja" else kappa_order(n)) == list(range(n))
        np.testing.assert_array_equal(np.sort(sizes), ascending)
    terms, _ = amplification_terms(leja)
    factor = grid_factor(16) ** 2
    weighted = factor * float(np.sum(np.maximum(leja, 1) * terms))
    u = float(np.finfo(np.float64).eps) / 2
    for x in points:
        computed = 1.0
        for t in leja:
            computed *= 1 - t * x
        exact = math.prod((1 - Fraction(t) * Fraction(x) for t in leja), start=Fraction(1))
        assert abs(computed - float(exact)) <= 6 * u * weighted + 2 * u
    amplification = rounding_amplification(leja)
    assert amplification <= rounding_amplification(fed_step_sizes(1.0, n, order="kappa"))
    assert factor * amplification <= amplification_bound(n)


@eqx.filter_jit
def _three_cycles(scheme, u):
    return scheme.rollout(u, 3)


def test_long_perona_malik_cycles_in_float32():
    """Three frozen Perona-Malik FED cycles of length 300 in float32 against float64, from the
    same start (D_1 neumann, h = 1/n, a noisy piecewise-constant signal, lambda the median
    gradient): the default (Leja) order stays within 1e-4; the kappa-cycle order, the default
    before, misses it."""
    size, n = 256, 300
    rng = np.random.default_rng(7)
    signal = np.repeat(rng.uniform(0, 1, 8), size // 8) + 0.05 * rng.standard_normal(size)
    u32 = jnp.asarray(signal, jnp.float32)
    u64 = u32.astype(jnp.float64)
    op = Derivative(1, size, h=1 / size)
    flux = fluxes.PeronaMalik(float(np.median(np.abs(np.diff(np.asarray(u64)) * size))))
    errors = {}
    for order in ("leja", "kappa"):
        scheme = FEDScheme(op, flux, cycle_length=n, order=order)
        in32, in64 = _three_cycles(scheme, u32), _three_cycles(scheme, u64)
        assert in32.dtype == jnp.float32 and in64.dtype == jnp.float64
        errors[order] = _distance(in32, in64) / _l2(in64)
    assert errors["leja"] <= 1e-4, errors
    assert errors["kappa"] > 1e-4, errors


def test_reordered_long_cycle_survives_float32():
    """A 150-step cycle in float32: the reordered one stays near the exact result (within
    its rounding amplification, and in fact within 1000 ulps); the ascending one loses
    every digit."""
    n, size = 150, 64
    op = Derivative(1, size, boundary="periodic")
    flux = fluxes.Linear(1.0)
    tau = 0.5 - 2.0**-21  # below the bound 2 / ||K||^2 = 1/2, exact in float32
    reordered = FEDScheme(op, flux, tau, cycle_length=n)
    ascending = FEDScheme(op, flux, tau, cycle_length=n, reorder=False)
    u32 = jnp.asarray(np.random.default_rng(6).standard_normal(size), jnp.float32)
    u64 = u32.astype(jnp.float64)
    in64, in32, asc32 = eqx.filter_jit(lambda a, b, u, v: (a(u), a(v), b(v)))(reordered, ascending, u64, u32)
    assert in32.dtype == asc32.dtype == jnp.float32
    reference = _dense_cycle(op, fluxes.Linear, 1.0, tau, u64, n)
    norm = _l2(u64)
    amplification = rounding_amplification(fed_step_sizes(1.0, n))
    np.testing.assert_allclose(in64, reference, rtol=0, atol=4 * amplification * np.finfo(np.float64).eps * norm)
    error = _distance(in32, reference)
    assert error <= 4 * amplification * np.finfo(np.float32).eps * norm
    assert error <= 1000 * np.finfo(np.float32).eps * norm
    asc32 = np.asarray(asc32, np.float64)
    assert not np.all(np.isfinite(asc32)) or _distance(asc32, reference) > norm


# --- errors ----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", [FSIScheme, FEDScheme])
def test_configuration_errors(scheme):
    op = Derivative(1, 16)
    flux = fluxes.Charbonnier(0.5)
    bound = float(stable_step_size(op, flux))
    with pytest.raises(ValueError, match="`tau`"):
        scheme(op, flux, 1.5 * bound, cycle_length=4)
    unstable = scheme(op, flux, 1.5 * bound, cycle_length=4, allow_unstable=True)
    assert float(unstable.block.tau) == pytest.approx(1.5 * bound)
    assert unstable.for_time(1.0).block.allow_unstable
    with pytest.raises(ValueError, match="`cycle_length`"):
        scheme(op, flux, cycle_length=0)
    with pytest.raises(TypeError, match="cycle_length"):
        scheme(op, flux, cycle_length=2.5)
    if scheme is FEDScheme:
        with pytest.raises(ValueError, match="`order` must be one of"):
            scheme(op, flux, cycle_length=4, order="random")
        with pytest.raises(ValueError, match="`reorder=False`"):
            scheme(op, flux, cycle_length=4, order="kappa", reorder=False)
        assert scheme(op, flux, cycle_length=4, reorder=False).order == "ascending"
        assert scheme(op, flux, cycle_length=4).order == "leja" and scheme(op, flux, cycle_length=4).reorder
        assert scheme(op, flux, cycle_length=4, order="kappa").for_time(1.0).order == "kappa"
    stable = scheme(op, flux, cycle_length=4)
    with pytest.raises(ValueError, match="`u` must have shape \\(16,\\)"):
        stable(jnp.ones(15))
    # A batch is refused too (by the shape check, or first by the jaxtyping annotations
    # when the tests run with runtime type checking).
    with pytest.raises((ValueError, TypeError), match="`u` must have shape|parameter 'u'"):
        stable(jnp.ones((2, 16)))


def test_function_argument_errors():
    with pytest.raises(ValueError, match="`cycle_length`"):
        fsi_weights(0)
    with pytest.raises(ValueError, match="`cycle_length`"):
        fed_step_sizes(1.0, 0)
    with pytest.raises(ValueError, match="`order` must be one of"):
        fed_step_sizes(1.0, 4, order="Leja")
    with pytest.raises(ValueError, match="`weight`"):
        leja_order(4, (-1.0, 0.0))
    with pytest.raises(ValueError, match="`weights`"):
        rounding_amplification(np.ones(3), weights=np.ones(2))
    with pytest.raises(ValueError, match="`cycle_length`"):
        cycle_time(1.0, 0)
    with pytest.raises(ValueError, match="`cycle_length`"):
        cycle_polynomial(np.zeros(3), -1)
    with pytest.raises(ValueError, match="`duration`"):
        cycle_length_for(0.0, 1.0)
    with pytest.raises(ValueError, match="`tau`"):
        cycle_length_for(1.0, -1.0)
    with pytest.raises(ValueError, match="`cycles`"):
        plan_cycles(1.0, 0.5, 0)
    with pytest.raises(ValueError, match="`t_end`"):
        plan_cycles(-1.0, 0.5, 1)
