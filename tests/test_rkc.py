"""Runge-Kutta-Chebyshev steps: coefficients, stability polynomial, step-count rule,
accuracy, stability, and the claim `rkc-stability`.

The references are independent of jaxpde's recurrences: the closed form
R_s(z) = a_s + b_s T_s(w0 + w1 z) with T_s and its derivatives from
`numpy.polynomial.chebyshev`, exact rational arithmetic (`fractions.Fraction`) on the
integer power-basis coefficients of T_s, dense NumPy matrices from the stencil definition
(`helpers.operator_matrix`), and the exact Fourier solution of linear periodic diffusion.
"""

import math
from fractions import Fraction

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import numpy.polynomial.chebyshev as cheb
import pytest

from jaxpde import (
    AbstractOperator,
    Derivative,
    DiffusionBlock,
    Matrix,
    Stencil,
    fluxes,
    stable_step_size,
)
from jaxpde.claims import Budget
from jaxpde.claims import rkc as rkc_claim
from jaxpde.claims.rkc import RKC_STABILITY
from jaxpde.schemes import (
    RKCScheme,
    rkc_coefficients,
    rkc_parameters,
    rkc_polynomial,
    rkc_rounding_amplification,
    rkc_spectral_radius,
    rkc_stability_bound,
    rkc_stages_for,
    rkc_step,
)

from .helpers import (
    DENSE_DIFFUSIVITY,
    assert_certified,
    derivatives,
    few_examples,
    operator_matrix,
    tolerance,
)

TOL = tolerance(np.float64)
EPS = 2 / 13
STAGES = {1: [1, 2, 3, 4, 5, 8, 9, 16, 33], 2: [2, 3, 4, 5, 8, 9, 16, 33]}
CASES = [(order, s) for order in (1, 2) for s in STAGES[order]]
MAX_STAGES = 32  # the hypothesis tests pad to this: one program per operator and flux structure


# --- independent references ------------------------------------------------------


def _reference(s: int, order: int, damping: float = EPS) -> dict:
    """w0, w1, a_s, b_s and R_s(z) = a_s + b_s T_s(w0 + w1 z), with T_s, T_s', T_s'' from
    `numpy.polynomial.chebyshev` (not a recurrence)."""
    t = cheb.Chebyshev.basis(s)
    w0 = 1 + damping / s**2
    value, slope, curvature = t(w0), t.deriv(1)(w0), t.deriv(2)(w0)
    if order == 1:
        w1, b = value / slope, 1 / value
    else:
        w1, b = slope / curvature, curvature / slope**2
    a = 1 - b * value
    return {"w0": w0, "w1": w1, "a": a, "b": b, "R": lambda z: a + b * t(w0 + w1 * np.asarray(z, np.float64))}


def _exact_polynomial(s: int, order: int, z: Fraction, damping: float = EPS) -> Fraction:
    """R_s(z) in exact rational arithmetic, from the integer power-basis coefficients of T_s
    (`cheb2poly`; exact in float64 for s <= 20) and the float damping as an exact rational."""
    coefficients = [Fraction(int(c)) for c in cheb.cheb2poly([0] * s + [1])]

    def t(x, derivative=0):
        return sum(
            c * math.perm(k, derivative) * x ** (k - derivative)
            for k, c in enumerate(coefficients)
            if k >= derivative
        )

    w0 = 1 + Fraction(damping) / s**2
    if order == 1:
        w1, b = t(w0) / t(w0, 1), 1 / t(w0)
    else:
        w1, b = t(w0, 1) / t(w0, 2), t(w0, 2) / t(w0, 1) ** 2
    return 1 - b * t(w0) + b * t(w0 + w1 * z)


def _reference_bound(s: int, order: int) -> float:
    """The left end of the stability interval by bisection on the closed form: the largest
    beta with |R_s| <= 1 on [-beta, 0] lies where |R_s(-beta)| = 1 first, searched from a
    point inside (0.9 times the asymptotic estimate) to one outside."""
    reference = _reference(s, order)
    inside, outside = 0.5 * s**2, 2.2 * s**2 + 1
    grid = -np.linspace(0, outside, 200001)
    values = np.abs(reference["R"](grid))
    first = int(np.argmax(values > 1 + 1e-9))  # first grid point outside
    inside, outside = -grid[first - 1], -grid[first]
    for _ in range(200):
        middle = (inside + outside) / 2
        if abs(reference["R"](-middle)) <= 1:
            inside = middle
        else:
            outside = middle
    return inside


def _linear_periodic(n: int = 16, h: float = 1 / 16):
    op = Derivative(1, n, h=h, boundary="periodic")
    rates = (2 * np.sin(np.pi * np.arange(n) / n)) ** 2 / h**2  # eigenvalues of D^T D
    return op, rates


def _mode(n: int, k: int) -> np.ndarray:
    return np.cos(2 * np.pi * k * np.arange(n) / n)


@eqx.filter_jit
def _norms(scheme: RKCScheme, u, steps: int):
    """||u^k|| for k = 0..steps (one program per operator and flux structure)."""
    _, path = scheme.rollout(u, steps, save_every=1)
    return jnp.sqrt(jnp.sum(path.reshape(steps + 1, -1) ** 2, axis=1))


# --- coefficients and the stability polynomial ------------------------------------


@pytest.mark.parametrize("order", [1, 2])
def test_coefficients_layout_and_padding(order):
    s = 5
    rows = rkc_coefficients(s, order=order)
    assert rows.shape == (5, s) and rows.dtype == np.float64
    p = rkc_parameters(s, order=order)
    np.testing.assert_array_equal(rows[[0, 1, 2, 4], 0], [0.0, 1.0, 0.0, 0.0])  # Y_1 = Y_0 + mu~_1 tau F(Y_0)
    # kappa_j = 1 - mu_j - nu_j, and 0 for the first-order method (no Y_0 term).
    np.testing.assert_allclose(rows[0], 1 - rows[1] - rows[2], atol=4e-16 * (1 + np.abs(rows[1]).max()))
    if order == 1:
        assert np.all(rows[0] == 0) and np.all(rows[4] == 0)
    assert np.all(rows[3] > 0)
    padded = rkc_coefficients(s, order=order, padded_to=9)
    np.testing.assert_array_equal(padded[:, :s], rows)
    np.testing.assert_array_equal(padded[:, s:], np.tile([[0.0], [1.0], [0.0], [0.0], [0.0]], (1, 4)))
    assert p["b"] > 0 and p["a"] >= 0
    # The parameters agree with the independent closed form.
    reference = _reference(s, order)
    for name in ("w0", "w1", "a", "b"):
        assert p[name] == pytest.approx(reference[name], rel=1e-13, abs=1e-15)


@pytest.mark.parametrize(("order", "s"), CASES)
def test_stability_polynomial_is_the_chebyshev_closed_form(order, s):
    """The stage recurrence (the code's coefficients) against a + b T_s(w0 + w1 z) with
    NumPy's Chebyshev series, on [-1.1 beta(s), 0]."""
    beta = rkc_stability_bound(s, order=order)
    z = np.linspace(-1.1 * beta, 0, 4001)
    expected = _reference(s, order)["R"](z)
    # Both sides carry rounding that grows like s^2 (the size of the Chebyshev slopes).
    np.testing.assert_allclose(rkc_polynomial(z, s, order=order), expected, rtol=1e-13 * s**2, atol=1e-13 * s**2)
    internal = rkc_polynomial(z, s, order=order, internal=True)
    assert internal.shape == (s + 1, z.size)
    np.testing.assert_array_equal(internal[-1], rkc_polynomial(z, s, order=order))
    np.testing.assert_array_equal(internal[0], 1.0)


@pytest.mark.parametrize(("order", "s"), [(o, s) for o in (1, 2) for s in (1, 2, 3, 4, 6) if s >= o])
def test_stability_polynomial_in_exact_rationals(order, s):
    beta = rkc_stability_bound(s, order=order)
    for fraction in (0.0, 0.1, 0.37, 0.5, 0.81, 1.0, 1.05):
        z = -beta * fraction
        exact = _exact_polynomial(s, order, Fraction(z))
        assert float(rkc_polynomial(z, s, order=order)) == pytest.approx(float(exact), rel=0, abs=1e-14 * s**2)
    # Consistency and order: R_s(z) = 1 + z + z^2/2 (order 2) + O(z^3), exactly.
    h = Fraction(1, 10**6)
    r0, rp, rm = (_exact_polynomial(s, order, x) for x in (Fraction(0), h, -h))
    assert r0 == 1
    assert abs((rp - rm) / (2 * h) - 1) < Fraction(1, 10**9)
    if order == 2:
        assert abs((rp - 2 * r0 + rm) / h**2 - 1) < Fraction(1, 10**6)


@pytest.mark.parametrize(("order", "s"), CASES)
def test_stability_bound_is_sharp(order, s):
    """|R_s| <= 1 on [-beta(s), 0] and > 1 just beyond (so no larger step is stable with s
    stages); beta(s) agrees with a bisection on the closed form."""
    beta = rkc_stability_bound(s, order=order)
    reference = _reference(s, order)
    z = np.linspace(-beta, 0, 20001)
    assert np.max(np.abs(reference["R"](z))) <= 1 + 1e-12 * s**2
    assert np.max(np.abs(rkc_polynomial(z, s, order=order))) <= 1 + 1e-12 * s**2
    beyond = -beta * (1 + 1e-6)
    assert abs(reference["R"](beyond)) > 1 + 1e-7
    assert abs(rkc_polynomial(beyond, s, order=order)) > 1 + 1e-7
    assert beta == pytest.approx(_reference_bound(s, order), rel=1e-10)
    # Even s end where R_s = 1, odd ones where R_s = -1.
    assert reference["R"](-beta) == pytest.approx((-1.0) ** s, abs=1e-10 * s**2)


def test_stability_bound_grows_like_s_squared():
    for order in (1, 2):
        bounds = [rkc_stability_bound(s, order=order) for s in range(order, 301)]
        assert np.all(np.diff(bounds) > 0)  # so the step-count rule is a threshold
    assert rkc_stability_bound(1, order=1) == 2.0  # forward Euler
    assert rkc_stability_bound(2, order=2) == pytest.approx(2.0, rel=1e-15)  # R_2 = 1 + z + z^2/2
    # Second order: SSV's estimate beta ~ (2/3)(s^2 - 1)(1 - 2 eps / 15) ~ 0.653 s^2.
    for s in (20, 21, 100, 101):
        ssv = 2 / 3 * (s * s - 1) * (1 - 2 * EPS / 15)
        assert rkc_stability_bound(s) == pytest.approx(ssv, rel=0.01)
    # First order: beta = 2 w0 / w1 -> 2 s^2 tanh(y) / y with y = sqrt(2 eps) ~ (2 - 4 eps / 3) s^2.
    y = math.sqrt(2 * EPS)
    assert rkc_stability_bound(200, order=1) / 200**2 == pytest.approx(2 * math.tanh(y) / y, rel=1e-4)


@pytest.mark.parametrize(("order", "s"), [(1, 4), (1, 9), (2, 4), (2, 9), (2, 24)])
def test_internal_stages_and_rounding_amplification(order, s):
    amplification, internal = rkc_rounding_amplification(s, order=order)
    z = np.linspace(-rkc_stability_bound(s, order=order), 0, 20001)
    stages = np.abs(rkc_polynomial(z, s, order=order, internal=True))
    assert internal == pytest.approx(stages.max(), rel=1e-3)
    if order == 1 or s % 2 == 0:
        assert internal <= 1 + 1e-12  # every stage polynomial lies in [-1, 1] on [-beta, 0]
    # An error in the last stage reaches the end unchanged; the others at most like s^2.
    assert s <= amplification <= s**3


# --- the step-count rule --------------------------------------------------------


@hypothesis.given(z=st.floats(0.0, 1e5))
def test_stages_for_is_the_fewest_stable_stages(z):
    for order in (1, 2):
        s = rkc_stages_for(z, order=order)
        assert rkc_stability_bound(s, order=order) >= z
        assert s == order or rkc_stability_bound(s - 1, order=order) < z


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("z", [0.5, 2.0, 2.5, 7.0, 60.0, 1000.0])
def test_step_count_rule_is_sharp(order, z):
    """With the rule's s, |R_s| <= 1 on [-z, 0]; one stage fewer has |R_{s-1}(-z)| > 1."""
    s = rkc_stages_for(z, order=order)
    grid = np.linspace(-z, 0, 20001)
    assert np.max(np.abs(_reference(s, order)["R"](grid))) <= 1 + 1e-12 * s**2
    if s > order:
        assert abs(_reference(s - 1, order)["R"](-z)) > 1


def test_spectral_radius_bounds():
    op = Derivative(1, 16, h=0.5, boundary="neumann")
    weickert = fluxes.Weickert(1.0)
    limit = float(stable_step_size(op, weickert))
    assert float(rkc_spectral_radius(op, weickert)) == pytest.approx(2 / limit, rel=1e-15)
    # Unfrozen: the Jacobian -K^T diag(Phi') K, bounded by Lip(Phi) ||K||^2 > L ||K||^2 here.
    unfrozen = float(rkc_spectral_radius(op, weickert, frozen=False))
    assert unfrozen == pytest.approx(float(weickert.lipschitz()) * float(op.norm_bound()) ** 2, rel=1e-15)
    assert unfrozen > 2 / limit * 2
    dense = op.as_matrix()
    eigenvalues = np.linalg.eigvalsh(np.asarray(dense.T @ dense))
    assert eigenvalues.max() <= float(rkc_spectral_radius(op, fluxes.Linear(1.0))) * (1 + 1e-12)


# --- the scheme -----------------------------------------------------------------


@pytest.mark.parametrize(("order", "s"), [(1, 1), (1, 6), (2, 2), (2, 3), (2, 9)])
def test_one_step_on_a_fourier_mode_is_the_stability_polynomial(order, s):
    n = 16
    op, rates = _linear_periodic(n)
    scheme = RKCScheme(op, fluxes.Linear(1.0), stages=s, order=order)
    reference = _reference(s, order)
    for k in (1, 3, n // 2):
        u = _mode(n, k)
        z = -float(scheme.tau) * rates[k]
        np.testing.assert_allclose(scheme(jnp.asarray(u)), reference["R"](z) * u, rtol=0, atol=1e-13 * s**2)


@pytest.mark.parametrize("kind", list(DENSE_DIFFUSIVITY))
@pytest.mark.parametrize("op", [Derivative(2, 12, h=0.5, boundary="dirichlet"), Stencil(np.array([[[1.0, -2.0]], [[0.5, 0.5]]]), 12, boundary="neumann")])
def test_frozen_step_is_the_matrix_polynomial(op, kind):
    """The frozen step is R_s(-tau A) u with A = K^T diag(g((K u)^2)) K (dense, by its
    eigendecomposition and the closed form of R_s), on several channels too."""
    parameter = 0.7
    flux = kind(parameter)
    matrix = operator_matrix(op)
    u = np.random.default_rng(3).standard_normal(op.in_shape)
    s_values = matrix @ u.reshape(-1)
    a = matrix.T @ (DENSE_DIFFUSIVITY[kind](s_values**2, parameter)[:, None] * matrix)
    for s in (2, 7):
        scheme = RKCScheme(op, flux, stages=s)
        values, vectors = np.linalg.eigh(float(scheme.tau) * (a + a.T) / 2)
        expected = vectors @ (_reference(s, 2)["R"](-values) * (vectors.T @ u.reshape(-1)))
        np.testing.assert_allclose(np.asarray(scheme(jnp.asarray(u))).reshape(-1), expected, rtol=0, atol=1e-12 * s**2)


class _CountingMatrix(AbstractOperator):
    """A dense operator that counts, on the host, every application of its adjoint K^T
    (one per evaluation of the right-hand side -K^T Phi(K u))."""

    matrix: jax.Array
    transposed: bool = eqx.field(static=True)

    @property
    def in_shape(self):
        return (self.matrix.shape[1],)

    @property
    def out_shape(self):
        return (self.matrix.shape[0],)

    def __call__(self, u):
        if self.transposed:
            jax.debug.callback(_COUNTER.append, 1)
        return self.matrix @ u

    @property
    def T(self):
        return _CountingMatrix(self.matrix.T, not self.transposed)

    def norm_bound(self):
        return Matrix(self.matrix).norm_bound()

    def abs_norm_bound(self):
        return Matrix(self.matrix).abs_norm_bound()

    def as_matrix(self):
        return self.matrix

    @property
    def row_length(self):
        return max(self.matrix.shape)


_COUNTER: list[int] = []


@pytest.mark.parametrize("frozen", [True, False])
def test_a_step_evaluates_the_right_hand_side_s_times(frozen):
    """s evaluations per step, also when the coefficients are padded (padding stages skip F)."""
    op = _CountingMatrix(jnp.asarray(np.asarray(Derivative(1, 8, boundary="neumann").as_matrix())), False)
    u = jnp.asarray(np.random.default_rng(0).standard_normal(8))
    for s, padded in ((3, None), (3, 8), (8, 8)):
        scheme = RKCScheme(op, fluxes.PeronaMalik(1.0), stages=s, frozen=frozen, max_stages=padded)
        _COUNTER.clear()
        jax.block_until_ready(jax.jit(lambda v, scheme=scheme: scheme(v))(u))
        jax.effects_barrier()
        assert sum(_COUNTER) == s == scheme.stages


def test_padding_gives_the_same_step_and_one_program():
    op, _ = _linear_periodic(16)
    flux = fluxes.PeronaMalik(3.0)
    u = jnp.asarray(np.random.default_rng(1).standard_normal(16))
    traces = []

    @eqx.filter_jit
    def step(scheme, v):
        traces.append(1)
        return scheme(v)

    for s in (2, 5, 11):
        padded = RKCScheme(op, flux, stages=s, max_stages=12)
        plain = RKCScheme(op, flux, stages=s)
        np.testing.assert_allclose(step(padded, u), plain(u), rtol=0, atol=1e-15 * float(jnp.max(jnp.abs(u))))
        assert padded.stages == plain.stages == s
    assert len(traces) == 1


@pytest.mark.parametrize(("order", "expected"), [(1, 1.0), (2, 2.0)])
def test_order_of_accuracy_on_linear_periodic_diffusion(order, expected):
    """Fixed s, halving tau: the error against the exact Fourier solution exp(-t A) u0 falls
    by 2^order (log-log slope, Diffrax style)."""
    n = 16
    op, rates = _linear_periodic(n)
    modes = {1: 1.0, 2: -0.5, 3: 0.25}
    u0 = sum(c * _mode(n, k) for k, c in modes.items())
    t_end = 0.01
    exact = sum(c * math.exp(-t_end * rates[k]) * _mode(n, k) for k, c in modes.items())
    counts, errors = (8, 16, 32, 64), []
    for count in counts:
        scheme = RKCScheme(op, fluxes.Linear(1.0), t_end / count, stages=5, order=order)
        errors.append(float(np.max(np.abs(np.asarray(scheme.rollout(jnp.asarray(u0), count)) - exact))))
    slope = np.polyfit(np.log(counts), np.log(errors), 1)[0]
    assert -slope == pytest.approx(expected, abs=0.1)
    assert errors[-2] / errors[-1] == pytest.approx(2**expected, rel=0.1)


def test_for_time_and_solve_follow_the_step_count_rule():
    op, rates = _linear_periodic(16)
    flux = fluxes.Linear(1.0)
    base = RKCScheme(op, flux, stages=2)
    rho = float(base.spectral_radius())
    t_end = 0.05
    for steps in (1, 2, 5):
        planned = base.for_time(t_end, steps=steps)
        assert float(planned.tau) == pytest.approx(t_end / steps, rel=1e-15)
        assert planned.stages == rkc_stages_for(t_end / steps * rho)
        assert planned.stability_bound >= float(planned.tau) * rho
    u0 = _mode(16, 2)
    exact = math.exp(-t_end * rates[2]) * u0
    solved = np.asarray(base.solve(jnp.asarray(u0), t_end, steps=8))
    assert np.max(np.abs(solved - exact)) < 1e-3
    # One step of many stages reaches the end time too (stable, not accurate for stiff modes).
    one = np.asarray(base.solve(jnp.asarray(u0), t_end))
    assert np.linalg.norm(one) <= np.linalg.norm(u0)
    padded = RKCScheme(op, flux, stages=2, max_stages=4)
    with pytest.raises(ValueError, match="`max_stages`"):
        padded.for_time(t_end, steps=1)


def test_linear_flux_frozen_and_unfrozen_agree_and_batch():
    op, _ = _linear_periodic(16)
    flux = fluxes.Linear(2.0)
    frozen = RKCScheme(op, flux, 0.02)
    unfrozen = RKCScheme(op, flux, 0.02, frozen=False)
    assert frozen.stages == unfrozen.stages  # Lip = L for the linear flux
    batch = jnp.asarray(np.random.default_rng(2).standard_normal((3, 16)))
    np.testing.assert_allclose(jax.vmap(frozen)(batch), jax.vmap(unfrozen)(batch), **TOL)
    np.testing.assert_allclose(jax.vmap(frozen)(batch)[1], frozen(batch[1]), **TOL)
    # Traced `frozen` flag, and a gradient through the stages.
    block = frozen.block
    np.testing.assert_allclose(rkc_step(block, batch[0], frozen.coefficients, jnp.asarray(True)), frozen(batch[0]), **TOL)
    gradient = jax.grad(lambda v: jnp.sum(frozen(v) ** 2))(batch[0])
    assert gradient.shape == (16,) and bool(jnp.all(jnp.isfinite(gradient)))


def test_float32_step_is_stable():
    op, _ = _linear_periodic(32, 1 / 32)
    flux = fluxes.PeronaMalik(5.0)
    scheme = RKCScheme(op, flux, stages=9)
    u = jnp.asarray(np.random.default_rng(5).standard_normal(32), jnp.float32)
    norms = np.asarray(_norms(scheme, u, 4), np.float64)
    assert norms.dtype == np.float64 and np.all(np.isfinite(norms))
    assert np.all(norms[1:] <= norms[:-1] * (1 + 1e-4))


# --- Euclidean stability --------------------------------------------------------


GRID_SIZES = st.sampled_from((16, 32))


@few_examples(8)
@hypothesis.given(
    op=derivatives(sizes=GRID_SIZES),
    seed=st.integers(0, 2**31 - 1),
    multiple=st.floats(0.1, 300.0),
    order=st.sampled_from((1, 2)),
)
def test_linear_diffusion_is_euclidean_stable_at_the_rules_stage_count(op, seed, multiple, order):
    """||u^(k+1)|| <= ||u^k|| for the linear flux at tau = multiple * tau_lim with the rule's s,
    random inputs (the derived rounding tolerance of the claim)."""
    flux = fluxes.Linear(1.0)
    tau = multiple * float(stable_step_size(op, flux))
    scheme = RKCScheme(op, flux, tau, order=order, max_stages=MAX_STAGES)
    assert scheme.stability_bound >= tau * float(scheme.spectral_radius())
    u = jnp.asarray(np.random.default_rng(seed).standard_normal(op.in_shape))
    norms = np.asarray(_norms(scheme, u, 3))
    slack = rkc_claim._tolerance(scheme).value if order == 2 else 1e-10
    assert np.all(norms[1:] <= norms[:-1] * (1 + slack)), norms


@few_examples(10)
@hypothesis.given(
    op=derivatives(sizes=GRID_SIZES),
    kind=st.sampled_from(fluxes.FLUXES),
    parameter=st.floats(0.1, 10.0),
    seed=st.integers(0, 2**31 - 1),
    amplitude=st.floats(-2.0, 2.0),
    fraction=st.one_of(st.just(1.0), st.floats(0.05, 1.0)),
    stages=st.sampled_from((2, 3, 8, 13)),
)
def test_frozen_step_is_euclidean_stable_for_every_flux(op, kind, parameter, seed, amplitude, fraction, stages):
    """The claim's statement on random operators, fluxes and inputs: tau = fraction * beta(s)
    / (L nu^2), diffusivity frozen per step, three steps."""
    flux = kind(parameter)
    rho = float(rkc_spectral_radius(op, flux))
    tau = fraction * rkc_stability_bound(stages) / rho
    scheme = RKCScheme(op, flux, tau * (1 - 1e-15), stages=stages, max_stages=MAX_STAGES)
    u = 10**amplitude * jnp.asarray(np.random.default_rng(seed).standard_normal(op.in_shape))
    norms = np.asarray(_norms(scheme, u, 3))
    assert np.all(norms[1:] <= norms[:-1] * (1 + rkc_claim._tolerance(scheme).value)), norms


def test_one_stage_too_few_is_unstable():
    """The defect the rule guards against: s - 1 stages at a step that needs s grow the
    slowest-decaying unstable mode (the top eigenvector of K^T K)."""
    op, rates = _linear_periodic(16)
    flux = fluxes.Linear(1.0)
    s = 6
    tau = rkc_stability_bound(s) / float(rkc_spectral_radius(op, flux))
    too_few = RKCScheme(op, flux, tau, stages=s - 1, allow_unstable=True)
    u = jnp.asarray(_mode(16, 8))  # the eigenvector of the largest eigenvalue 4 / h^2
    assert rates[8] == pytest.approx(float(rkc_spectral_radius(op, flux)), rel=1e-12)
    assert float(jnp.linalg.norm(too_few(u))) > 1.5 * float(jnp.linalg.norm(u))
    assert float(jnp.linalg.norm(RKCScheme(op, flux, tau, stages=s)(u))) <= float(jnp.linalg.norm(u))


# --- errors ---------------------------------------------------------------------


def test_bad_arguments_name_the_argument():
    op = Derivative(1, 8)
    flux = fluxes.PeronaMalik(1.0)
    with pytest.raises(ValueError, match="`tau`.*`stages`"):
        RKCScheme(op, flux)
    with pytest.raises(ValueError, match="`stages` = 3 is too few.*stages >= "):
        RKCScheme(op, flux, 100.0, stages=3)
    with pytest.raises(ValueError, match="`stages` must be at least 2"):
        RKCScheme(op, flux, stages=1)  # second order needs two stages
    with pytest.raises(ValueError, match="`order`"):
        RKCScheme(op, flux, 0.1, order=3)
    with pytest.raises(ValueError, match="`damping`"):
        RKCScheme(op, flux, 0.1, damping=-0.1)
    with pytest.raises(ValueError, match="`max_stages`"):
        RKCScheme(op, flux, stages=5, max_stages=4)
    with pytest.raises(ValueError, match="`tau`"):
        RKCScheme(op, flux, -1.0)
    with pytest.raises(TypeError, match="`op`|'op'"):  # ours, or the test-time type checker's
        RKCScheme(np.eye(8), flux, 0.1)
    with pytest.raises(ValueError, match="`z`"):
        rkc_stages_for(-1.0)
    with pytest.raises(ValueError, match="`padded_to`"):
        rkc_coefficients(5, padded_to=3)
    with pytest.raises((ValueError, TypeError), match="coefficients"):  # ours, or the type checker's
        rkc_step(DiffusionBlock(op, flux, 0.1), jnp.ones(8), np.ones((4, 3)))
    # Too few stages is allowed on purpose, to probe instability.
    assert RKCScheme(op, flux, 100.0, stages=3, allow_unstable=True).stages == 3


# --- the claim ------------------------------------------------------------------

BUDGET = Budget(samples=5, depth=2, sizes=(16,), name="test-rkc", restarts=8, steps=20)


def test_claim_certified():
    certificate = RKC_STABILITY.check(jax.random.key(1), BUDGET)
    assert_certified(RKC_STABILITY, certificate)
    assert certificate.proof == "proofs/rkc-stability.md"
    assert {case.name.rsplit(" ", 1)[-1] for case in certificate.cases} == {"s=4", "s=5"}


def test_claim_refutes_one_stage_too_few(monkeypatch):
    """The planted defect: the step runs s - 1 stages where the rule asks for s."""
    original = rkc_claim.rkc_coefficients
    monkeypatch.setattr(
        rkc_claim, "coefficients", lambda s, padded_to, frozen=True: (original(s - 1, padded_to=padded_to), frozen)
    )
    certificate = RKC_STABILITY.check(jax.random.key(1), BUDGET)
    assert certificate.status == "violated", certificate.message
    assert certificate.worst > 1.5
