"""Geometric multigrid (`jaxpde.schemes.multigrid`) and banded stencils (`jaxpde.schemes.banded`).

References are dense NumPy matrices built from the definitions, never from the code under
test: the prolongation P from its kernel and its boundary extension, the Galerkin operators
(P^T / 2) A P, a recursive dense V- and W-cycle with the documented smoothers, and the
system I + tau K^T G K from `stencil_matrix`.

Compilation dominates: every jitted function below is shared by several tests (the cycle
program by the dense comparison and the energy-norm property, the solve program by the
dense solves and the batched solve), the sizes come from a small fixed set, small cases
are compiled together, and the solves run with `throw=False` with their result checked:
a program with a runtime-error callback never hits the persistent compilation cache (its
key holds the callback's address), one that compiles in under a second is not stored.
"""

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpde import AbstractOperator, Derivative, Matrix, Stencil, fluxes
from jaxpde.fluxes import Frozen
from jaxpde.schemes import (
    BandedStencil,
    Multigrid,
    Result,
    SemiImplicitScheme,
    diffusion_stencil,
    energy_norm,
    energy_power_iteration,
    error_propagation,
    multigrid_cycle,
    prolong,
    restrict,
)
from jaxpde.schemes.multigrid import INTERPOLATIONS, OperatorInterpolation, galerkin
from jaxpde.schemes.semi_implicit import solve_diffusion_system

from .helpers import (
    band_matrix,
    derivative_taps,
    few_examples,
    signals,
    stencil_matrix,
    thorough_param,
    tolerance,
)

TOL = tolerance(np.float64)
EPS = float(np.finfo(np.float64).eps)
# The kernels by their definition: linear interpolation, and the four-point cubic
# (-1, 9, 9, -1) / 16 between coarse points; the extension each comes with.
LINEAR = (0.5, 1.0, 0.5)
CUBIC = (-1 / 16, 0.0, 9 / 16, 1.0, 9 / 16, 0.0, -1 / 16)
KERNELS = {"linear": (LINEAR, "edge"), "cubic": (CUBIC, "odd")}


def _l2(x) -> float:
    return float(np.linalg.norm(np.asarray(x, np.float64)))


# --- dense references ----------------------------------------------------------------


def _prolongation_matrix(kernel, nc: int, n: int, extension: str) -> np.ndarray:
    """P (n x nc): coarse point I (real or ghost) puts tap p_{j+w} at fine row 2I + j; a
    ghost stands for a combination of real points ("wrap": x_{I mod nc}; "edge": the end
    point; "odd": 2 x_0 - x_k and 2 x_{nc-1} - x_{nc-1-k}), which gets its weights."""
    kernel = np.asarray(kernel, np.float64)
    w = (kernel.size - 1) // 2
    matrix = np.zeros((n, nc))
    for point in range(-w, nc + w + 1):  # every coarse point whose taps reach a fine row
        combination = np.zeros(nc)
        if 0 <= point < nc:
            combination[point] = 1
        elif extension == "wrap":
            combination[point % nc] = 1
        elif extension == "edge":
            combination[0 if point < 0 else nc - 1] = 1
        else:  # odd reflection about the end point
            end, mirror = (0, -point) if point < 0 else (nc - 1, 2 * (nc - 1) - point)
            combination[end] += 2
            combination[mirror] -= 1
        for j in range(-w, w + 1):
            if 0 <= 2 * point + j < n:
                matrix[2 * point + j] += kernel[j + w] * combination
    return matrix


def _operator_prolongation_matrix(A: np.ndarray, periodic: bool) -> np.ndarray:
    """Operator-dependent P (n x nc) of a tridiagonal A: P[2I, I] = 1 and, for the odd row
    i = 2I + 1, P[i, I] = -a_{i,i-1} / a_ii and P[i, I + 1] = -a_{i,i+1} / a_ii (coarse
    index modulo nc when periodic; no right neighbour beyond the last fine point otherwise)."""
    n = A.shape[0]
    nc = n // 2 if periodic else (n + 1) // 2
    P = np.zeros((n, nc))
    for coarse in range(nc):
        P[2 * coarse, coarse] = 1
    for i in range(1, n, 2):
        P[i, i // 2] += -A[i, i - 1] / A[i, i]
        if periodic:
            P[i, (i // 2 + 1) % nc] += -A[i, (i + 1) % n] / A[i, i]
        elif i + 1 < n:
            P[i, i // 2 + 1] += -A[i, i + 1] / A[i, i]
    return P


def _dense_system(m: int, n: int, boundary: str, g, tau: float) -> np.ndarray:
    """I + tau K^T diag(g) K with K the m-th difference (h = 1) from its definition."""
    K = stencil_matrix(derivative_taps(m, 1.0), n, boundary)
    return np.eye(n) + tau * K.T @ (np.asarray(g, np.float64)[:, None] * K)


def _colour_count(n: int, bandwidth: int, periodic: bool) -> int:
    """b + 1 colours; for a periodic band the smallest divisor of n that is at least b + 1."""
    count = bandwidth + 1
    while periodic and n % count:
        count += 1
    return count


def _band(matrix: np.ndarray, periodic: bool) -> int:
    """The half-width of a dense matrix (wrapped distance for a periodic one)."""
    rows, columns = np.nonzero(matrix)
    distance = np.abs(rows - columns)
    if periodic:
        distance = np.minimum(distance, matrix.shape[0] - distance)
    return int(distance.max(initial=0))


def _dense_smooth(A, x, f, weights, smoother: str, reverse: bool, periodic: bool, bandwidth: int):
    """Sweeps x <- x + omega M D^{-1} (f - A x): Jacobi with omega = 2 theta / max_i
    sum_j |a_ij| / a_ii, or one colour i = c (mod colours) at a time with omega = 2 theta;
    `reverse` runs the sweeps (and their weights) and the colours backwards."""
    diagonal = np.diag(A)
    if smoother == "jacobi":
        scale = 2 / np.max(np.abs(A).sum(axis=1) / diagonal)
        groups = [np.ones(A.shape[0], bool)]
    else:
        scale = 2.0
        count = _colour_count(A.shape[0], bandwidth, periodic)
        groups = [np.arange(A.shape[0]) % count == c for c in range(count)]
    order = [(s, group) for s in range(len(weights)) for group in groups]
    for s, group in reversed(order) if reverse else order:
        x = x + np.where(group, scale * weights[s] * (f - A @ x) / diagonal, 0)
    return x


def _dense_cycle(levels, x, f, smoother: str, gamma: int, level: int = 0):
    """The recursive cycle on dense matrices; `levels` holds (A, P, pre, post, bandwidth,
    periodic) per level, the coarsest solved exactly."""
    A, P, pre, post, bandwidth, periodic = levels[level]
    if P is None:
        return np.linalg.solve(A, f)
    x = _dense_smooth(A, x, f, pre, smoother, False, periodic, bandwidth)
    coarse_f = P.T @ (f - A @ x) / 2
    error = np.zeros(P.shape[1])
    for _ in range(gamma):
        error = _dense_cycle(levels, error, coarse_f, smoother, gamma, level + 1)
    x = x + P @ error
    return _dense_smooth(A, x, f, post, smoother, True, periodic, bandwidth)


# --- jitted programs, shared by the tests ---------------------------------------------


def _frozen(g):
    """A frozen flux with the diffusivities `g` (any g >= 0, exact zeros included)."""
    return eqx.tree_at(lambda flux: flux.values, Frozen(fluxes.Linear(1.0), jnp.zeros_like(g)), g)


# The small programs of several cases are compiled as one: a program that compiles in over a
# second is kept in the persistent compilation cache (tests/conftest.py), a small one is not.


@eqx.filter_jit
def _from_dense_all(cases):
    """For each (matrix, x, bandwidth, periodic): the diagonals read by `from_matvec`, the
    product with x and the dense matrix."""
    results = []
    for matrix, x, bandwidth, periodic in cases:
        banded = BandedStencil.from_matvec(lambda v, matrix=matrix: matrix @ v, matrix.shape[0], bandwidth, periodic,
                                           matrix.dtype)
        results.append((banded.diagonals, banded(x), banded.as_matrix()))
    return results


@eqx.filter_jit
def _transfers_all(cases):
    """For each (kernel, n, nc, extension): the matrices of `prolong` (n x nc) and of
    `restrict` (nc x n), column by column."""
    results = []
    for kernel, n, nc, extension in cases:
        P = jax.vmap(lambda x, kernel=kernel, n=n, extension=extension: prolong(kernel, x, n, extension),
                     out_axes=1)(jnp.eye(nc))
        R = jax.vmap(lambda y, kernel=kernel, nc=nc, extension=extension: restrict(kernel, y, nc, extension),
                     out_axes=1)(jnp.eye(n))
        results.append((P, R))
    return results


@eqx.filter_jit
def _galerkin_all(cases):
    """For each (diagonals, kernel, coarse n, extension, periodic): the half-width and the
    dense matrix of `galerkin`."""
    results = []
    for diagonals, kernel, coarse_n, extension, periodic in cases:
        coarse = galerkin(BandedStencil(diagonals, periodic), kernel, coarse_n, extension)
        results.append((coarse.diagonals.shape[0] // 2, coarse.as_matrix()))
    return results


@eqx.filter_jit
def _cycle(config, op, g, tau, pre, post, x, f, gamma):
    """One cycle with the hierarchy of `config` for I + tau K^T diag(g) K and the relative
    weights `pre`, `post` (per level and sweep); the level matrices, the cycle, and the
    energy norms ||x||_A, ||cycle||_A."""
    A = diffusion_stencil(op, _frozen(g), tau)
    hierarchy = config.hierarchy(A)
    hierarchy = eqx.tree_at(lambda h: (h.pre_weights, h.post_weights), hierarchy, (pre, post))
    y = multigrid_cycle(hierarchy, x, f, gamma=gamma)
    return [level.as_matrix() for level in hierarchy.operators], y, energy_norm(A, x), energy_norm(A, y)


def _solve_impl(config, op, lam, u, tau, f, throw=None):
    A = diffusion_stencil(op, Frozen(fluxes.PeronaMalik(lam), op(u)), tau)
    return config.solve(A, f, throw=throw)


_solve = eqx.filter_jit(_solve_impl)


@eqx.filter_jit
def _solve_batch(config, op, lam, u, tau, f):
    return jax.vmap(lambda u, f: _solve_impl(config, op, lam, u, tau, f))(u, f)


@eqx.filter_jit
def _power_iteration(op, tau, e, iterations):
    """The last two estimates ||E e_k||_A, ||e_k||_A = 1, of the energy-norm convergence
    factor of the default cycle for I + tau K^T K (`energy_power_iteration`: one copy of
    the cycle in the program)."""
    A = diffusion_stencil(op, fluxes.Linear(1.0), tau)
    hierarchy = Multigrid().hierarchy(A)
    ratios = energy_power_iteration(lambda e: error_propagation(hierarchy, e), A, e, iterations)
    return ratios[-2], ratios[-1]


# --- banded stencils -------------------------------------------------------------------


def _random_band(rng, n: int, bandwidth: int, periodic: bool) -> np.ndarray:
    matrix = np.zeros((n, n))
    for i in range(n):
        for d in range(-bandwidth, bandwidth + 1):
            if periodic or 0 <= i + d < n:
                matrix[i, (i + d) % n] += rng.standard_normal()
    return matrix


BAND_CASES = [(n, b, p) for n in (17, 100) for b in (1, 2, 3) for p in (False, True)] + [(5, 3, False), (7, 3, True)]


def _band_case(n: int, bandwidth: int, periodic: bool):
    rng = np.random.default_rng(n * 10 + bandwidth)
    return _random_band(rng, n, bandwidth, periodic), rng.standard_normal(n)


@pytest.fixture(scope="module")
def band_results():
    cases = [(n, b, p, *_band_case(n, b, p)) for n, b, p in BAND_CASES]
    results = _from_dense_all([(jnp.asarray(matrix), jnp.asarray(x), b, p) for n, b, p, matrix, x in cases])
    return {case[:3]: (case[3], case[4], *map(np.asarray, result)) for case, result in zip(cases, results)}


@pytest.mark.parametrize("n, bandwidth, periodic", BAND_CASES)
def test_from_matvec_recovers_the_band_exactly(band_results, n, bandwidth, periodic):
    """Every probe meets one column of each row's band, so the diagonals are read exactly:
    periodic and not, prime n (17: one probe per column when periodic), n below the band."""
    matrix, x, diagonals, product, dense = band_results[n, bandwidth, periodic]
    # diagonals[d + b, i] = A[i, i + d], zero where i + d is outside the signal.
    expected = np.zeros((2 * bandwidth + 1, n))
    for d in range(-bandwidth, bandwidth + 1):
        for i in range(n):
            if periodic or 0 <= i + d < n:
                expected[d + bandwidth, i] = matrix[i, (i + d) % n]
    np.testing.assert_array_equal(diagonals, expected)
    np.testing.assert_array_equal(dense, matrix)
    np.testing.assert_allclose(product, matrix @ x, rtol=0, atol=TOL["atol"] * np.abs(matrix).sum(1).max() * _l2(x))


def test_banded_stencil_errors():
    with pytest.raises(ValueError, match="odd number"):
        BandedStencil(jnp.ones((2, 8)), False)
    with pytest.raises(ValueError, match="needs n >= 5"):
        BandedStencil(jnp.ones((5, 4)), True)
    with pytest.raises(ValueError, match="needs n >= 7"):
        BandedStencil.from_matvec(lambda v: v, 6, 3, True, jnp.float64)
    with pytest.raises(ValueError, match="`x` must have shape"):
        BandedStencil(jnp.ones((3, 8)), False)(jnp.ones(7))


# --- the operator protocol: adjoint, dense matrix, certified norm bound ------------------

# Shapes from a small fixed set (each compiles programs of its own): (n, b, periodic) of a
# band, (n, periodic) of an operator-dependent interpolation (even and odd n, wrapped).
PROTOCOL_BANDS = [(7, 1, False), (12, 2, False), (7, 1, True), (12, 2, True), (5, 2, True)]
PROTOCOL_INTERPOLATIONS = [(8, False), (9, False), (8, True), (12, True)]
DTYPES = (np.float64, np.float32)


def _interpolation_matrix(weights: np.ndarray, n: int, periodic: bool) -> np.ndarray:
    """P (n x nc): P[2I, I] = 1, P[2I + 1, I] = w^-_I, P[2I + 1, I + 1] = w^+_I (I + 1 modulo
    nc when periodic; the last fine point of an odd n is coarse point nc - 1)."""
    nc = n // 2 if periodic else (n + 1) // 2
    P = np.zeros((n, nc))
    for coarse in range(nc):
        P[2 * coarse, coarse] = 1
    for I in range(n // 2):
        P[2 * I + 1, I] += weights[0, I]
        P[2 * I + 1, (I + 1) % nc] += weights[1, I]
    return P


def _columns(op) -> np.ndarray:
    """The dense matrix of `op`, column by column: op(e_j)."""
    size = op.in_shape[0]
    return np.stack([np.asarray(op(jnp.eye(size, dtype=jnp.float64)[j]), np.float64) for j in range(size)], axis=1)


def _random_entries(data, shape, dtype) -> np.ndarray:
    """Gaussian entries, or nonnegative ones (for which Schur's bound is nearly the norm), cast to
    `dtype` (the reference is the float64 matrix of the cast values)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    entries = rng.standard_normal(shape)
    if data.draw(st.booleans(), label="nonnegative"):
        entries = np.abs(entries)
    return entries.astype(dtype)


def _check_protocol(op, expected: np.ndarray, data, norm_bound=None):
    """`op` against its dense matrix `expected` (float64): `as_matrix()` and the columns op(e_j)
    equal it, `op.T` is its adjoint (<Ax, y> = <x, A^T y>, and the matrix of `op.T` is its
    transpose), and `norm_bound()` (or `norm_bound(op)`) and `abs_norm_bound()` are at least the
    largest singular values of A and |A|, up to the SVD's backward error only."""
    rows, cols = expected.shape
    assert op.in_shape == (cols,) and op.out_shape == (rows,)
    assert op.T.in_shape == (rows,) and op.T.out_shape == (cols,)
    np.testing.assert_array_equal(np.asarray(op.as_matrix(), np.float64), expected)
    np.testing.assert_array_equal(_columns(op), expected)
    np.testing.assert_array_equal(np.asarray(op.T.as_matrix(), np.float64), expected.T)
    np.testing.assert_array_equal(_columns(op.T), expected.T)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="vectors"))
    x, y = rng.standard_normal(cols), rng.standard_normal(rows)
    left = float(np.dot(np.asarray(op(jnp.asarray(x))), y))
    right = float(np.dot(x, np.asarray(op.T(jnp.asarray(y)))))
    scale = np.abs(expected).sum() * np.abs(x).max() * np.abs(y).max()
    assert abs(left - right) <= TOL["atol"] * scale
    slack = 1 + 8 * (rows + cols) * EPS / 2  # the backward error of the float64 SVD
    sigma = np.linalg.svd(expected, compute_uv=False)[0]
    sigma_abs = np.linalg.svd(np.abs(expected), compute_uv=False)[0]
    bound = float(op.norm_bound() if norm_bound is None else norm_bound(op))
    assert sigma <= bound * slack, (sigma, bound)
    assert sigma_abs <= float(op.abs_norm_bound()) * slack
    assert sigma <= float(op.T.norm_bound()) * slack


@few_examples(10)
@hypothesis.given(case=st.sampled_from(PROTOCOL_BANDS), dtype=st.sampled_from(DTYPES), data=st.data())
def test_banded_stencil_is_an_operator_property(case, dtype, data):
    """A random band (entries outside the signal included: the operator drops them) against its
    dense matrix: `as_matrix()`, the adjoint `T` and the certified `norm_bound()`."""
    n, b, periodic = case
    diagonals = _random_entries(data, (2 * b + 1, n), dtype)
    A = BandedStencil(jnp.asarray(diagonals), periodic)
    assert isinstance(A, AbstractOperator) and A.row_length == 2 * b + 1
    expected = band_matrix(diagonals.astype(np.float64), periodic)
    _check_protocol(A, expected, data)
    # The adjoint's diagonals keep the band's conventions: zero outside when not periodic.
    adjoint = np.asarray(A.T.diagonals, np.float64)
    np.testing.assert_array_equal(adjoint, _diagonals(expected.T, b, periodic))


@few_examples(10)
@hypothesis.given(case=st.sampled_from(PROTOCOL_INTERPOLATIONS), dtype=st.sampled_from(DTYPES), data=st.data())
def test_operator_interpolation_is_an_operator_property(case, dtype, data):
    """Random weights (w^+ = 0 at the last fine point of an even non-periodic grid, as
    `from_operator` gives) against the dense P: `as_matrix()`, the adjoint `T` (the
    restriction P^T, whose adjoint is P again) and the certified `norm_bound()`."""
    n, periodic = case
    weights = _random_entries(data, (2, n // 2), dtype)
    if not periodic and n % 2 == 0:
        weights[1, -1] = 0
    P = OperatorInterpolation(jnp.asarray(weights), n, periodic)
    assert isinstance(P, AbstractOperator) and isinstance(P.T, AbstractOperator) and P.T.T is P
    _check_protocol(P, _interpolation_matrix(weights.astype(np.float64), n, periodic), data)


def _half_bound(op):
    return op.norm_bound() / 2


def test_protocol_check_catches_a_bound_too_small():
    """A planted defect: half of the bound is below the norm of a nonnegative periodic band
    (Schur's bound is its norm, the row sum) and of linear interpolation (norm sqrt 2, Schur's
    sqrt(1 * 2)), and the property check fails on it; the true bounds are tight up to rounding."""
    data = _FixedData()
    A = BandedStencil(jnp.ones((5, 12)), True)
    P = OperatorInterpolation(jnp.full((2, 6), 0.5), 12, True)
    for op, expected, norm in [(A, band_matrix(np.ones((5, 12)), True), 5.0),
                               (P, _interpolation_matrix(np.full((2, 6), 0.5), 12, True), np.sqrt(2))]:
        _check_protocol(op, expected, data)
        assert float(op.norm_bound()) <= norm * (1 + 64 * EPS)
        with pytest.raises(AssertionError):
            _check_protocol(op, expected, data, norm_bound=_half_bound)


class _FixedData:
    """A stand-in for hypothesis' `data` outside `given`: always draws 0."""

    def draw(self, strategy, label=None):
        return 0


# --- transfers ---------------------------------------------------------------------------


def test_interpolation_kernels_are_the_documented_ones():
    assert set(INTERPOLATIONS) == set(KERNELS)
    for name, (kernel, extension) in KERNELS.items():
        np.testing.assert_array_equal(np.asarray(INTERPOLATIONS[name][0]), np.asarray(kernel))
        assert INTERPOLATIONS[name][1] == extension


TRANSFER_CASES = [
    (name, extension, n)
    for name in KERNELS
    for extension, sizes in (("wrap", (16, 100)), ("edge", (16, 33)), ("odd", (16, 33)))
    for n in sizes
]


def _coarse_n(n: int, extension: str) -> int:
    return n // 2 if extension == "wrap" else (n + 1) // 2


@pytest.fixture(scope="module")
def transfer_results():
    cases = [(jnp.asarray(KERNELS[name][0]), n, _coarse_n(n, extension), extension) for name, extension, n in TRANSFER_CASES]
    results = _transfers_all(cases)
    return {case: tuple(map(np.asarray, result)) for case, result in zip(TRANSFER_CASES, results)}


@pytest.mark.parametrize("name, extension, n", TRANSFER_CASES)
def test_prolong_and_restrict_are_the_dense_transfers(transfer_results, name, extension, n):
    """prolong = P from its definition; restrict(k, .) = P_k^T exactly (the adjoint,
    boundary extension included); polynomials reproduced where the definition says."""
    kernel = KERNELS[name][0]
    nc = _coarse_n(n, extension)
    P, R = transfer_results[name, extension, n]
    dense = _prolongation_matrix(kernel, nc, n, extension)
    np.testing.assert_allclose(P, dense, rtol=0, atol=TOL["atol"])
    np.testing.assert_allclose(R, dense.T, rtol=0, atol=TOL["atol"])

    # Coarse point I sits at fine point 2I; rows whose taps reach only real coarse points:
    w = (len(kernel) - 1) // 2
    interior = slice(w, 2 * nc - 1 - w)
    fine, coarse = np.arange(n) / n, 2 * np.arange(nc) / n
    degree = 1 if name == "linear" else 3
    for power in range(degree + 1):
        expected, interpolated = fine**power, P @ coarse**power
        np.testing.assert_allclose(interpolated[interior], expected[interior], rtol=0, atol=TOL["atol"])
        if power == 0 or (power == 1 and extension == "odd"):  # everywhere
            np.testing.assert_allclose(interpolated, expected, rtol=0, atol=TOL["atol"])


# b = 2 with linear and b = 1 with cubic interpolation: the floor in the coarse half-width
# floor((b + 2w) / 2) matters for the second.
GALERKIN_CASES = [
    (name, extension, n)
    for name, sizes in (("linear", ((32, "wrap"), (33, "edge"), (32, "odd"))), ("cubic", ((32, "wrap"), (32, "edge"), (33, "odd"))))
    for n, extension in sizes
]


def _galerkin_case(name: str, extension: str, n: int):
    bandwidth, periodic = (2 if name == "linear" else 1), extension == "wrap"
    A = _random_band(np.random.default_rng(n), n, bandwidth, periodic)
    diagonals = np.stack([[A[i, (i + d) % n] if periodic or 0 <= i + d < n else 0 for i in range(n)]
                          for d in range(-bandwidth, bandwidth + 1)])
    return A, diagonals, bandwidth, periodic


@pytest.fixture(scope="module")
def galerkin_results():
    cases = []
    for name, extension, n in GALERKIN_CASES:
        _, diagonals, _, periodic = _galerkin_case(name, extension, n)
        cases.append((jnp.asarray(diagonals), jnp.asarray(KERNELS[name][0]), _coarse_n(n, extension), extension, periodic))
    results = _galerkin_all(cases)
    return {case: (int(half_width), np.asarray(coarse)) for case, (half_width, coarse) in zip(GALERKIN_CASES, results)}


@pytest.mark.parametrize("name, extension, n", GALERKIN_CASES)
def test_galerkin_is_the_dense_triple_product(galerkin_results, name, extension, n):
    """galerkin = (P^T / 2) A P for a random band, with the documented half-width
    floor((b + 2w) / 2) (and no entry outside it)."""
    kernel = KERNELS[name][0]
    A, _, bandwidth, periodic = _galerkin_case(name, extension, n)
    coarse_bandwidth, coarse = galerkin_results[name, extension, n]
    P = _prolongation_matrix(kernel, _coarse_n(n, extension), n, extension)
    expected = P.T @ A @ P / 2
    assert coarse_bandwidth == (bandwidth + len(kernel) - 1) // 2
    assert _band(expected, periodic) <= coarse_bandwidth
    np.testing.assert_allclose(coarse, expected, rtol=0, atol=TOL["atol"] * np.abs(expected).max())


# --- operator-dependent interpolation --------------------------------------------------------

OPERATOR_CASES = [(64, False), (63, False), (64, True)]  # (n, periodic): even and odd n, wrapped


def _operator_case(n: int, periodic: bool) -> np.ndarray:
    """I + tau K^T G K for K = D_1, tau = 100, diffusivities log-uniform over four decades."""
    rng = np.random.default_rng(n + 7 * periodic)
    g = 10 ** rng.uniform(-4, 0, n if periodic else n - 1)
    return _dense_system(1, n, "periodic" if periodic else "neumann", g, 100.0)


def _diagonals(A: np.ndarray, bandwidth: int, periodic: bool) -> np.ndarray:
    """diagonals[d + b, i] = A[i, i + d] (modulo n when periodic, zero outside otherwise)."""
    n = A.shape[0]
    return np.stack([[A[i, (i + d) % n] if periodic or 0 <= i + d < n else 0 for i in range(n)]
                     for d in range(-bandwidth, bandwidth + 1)])


@eqx.filter_jit
def _operator_transfers_all(cases):
    """For each (diagonals, periodic): the matrices of the operator-dependent P, of its
    transpose and of its Galerkin operator."""
    results = []
    for diagonals, periodic in cases:
        A = BandedStencil(diagonals, periodic)
        P = OperatorInterpolation.from_operator(A)
        R = jax.vmap(P.T, out_axes=1)(jnp.eye(A.n))
        results.append((P.as_matrix(), R, P.galerkin(A).as_matrix()))
    return results


@pytest.fixture(scope="module")
def operator_results():
    cases = [(jnp.asarray(_diagonals(_operator_case(n, p), 1, p)), p) for n, p in OPERATOR_CASES]
    results = _operator_transfers_all(cases)
    return {case: tuple(map(np.asarray, result)) for case, result in zip(OPERATOR_CASES, results)}


@pytest.mark.parametrize("n, periodic", OPERATOR_CASES)
def test_operator_interpolation_is_the_dense_construction(operator_results, n, periodic):
    """P from its definition (Dendy's weights), `P.T` = P^T exactly, the Galerkin
    operator (P^T / 2) A P (tridiagonal); the odd rows of A P vanish (P extends coarse values
    A-harmonically), so P^T A P is the Schur complement of A on the even points."""
    A = _operator_case(n, periodic)
    P, R, coarse = operator_results[n, periodic]
    expected = _operator_prolongation_matrix(A, periodic)
    np.testing.assert_allclose(P, expected, rtol=0, atol=TOL["atol"])
    np.testing.assert_allclose(R, expected.T, rtol=0, atol=TOL["atol"])
    triple = expected.T @ A @ expected / 2
    assert _band(triple, periodic) <= 1
    np.testing.assert_allclose(coarse, triple, rtol=0, atol=TOL["atol"] * np.abs(triple).max())
    assert np.abs((A @ expected)[1::2]).max() <= TOL["atol"] * np.abs(A).max()
    even, odd = np.arange(0, n, 2), np.arange(1, n, 2)
    schur = A[np.ix_(even, even)] - A[np.ix_(even, odd)] @ np.linalg.solve(A[np.ix_(odd, odd)], A[np.ix_(odd, even)])
    np.testing.assert_allclose(2 * coarse, schur, rtol=0, atol=TOL["atol"] * np.abs(schur).max())


FACTOR_CONFIGS = {  # V(2,2) cycles with 16 coarsest points
    "geometric": Multigrid(),
    "operator": Multigrid(interpolation="operator"),
    "operator, jacobi": Multigrid(interpolation="operator", smoother="jacobi"),
}


@eqx.filter_jit
def _error_matrices(configs, op, g, tau):
    """The dense error propagation E of one cycle of each of `configs` (names in
    FACTOR_CONFIGS) for I + tau K^T diag(g) K, for every row of `g`."""

    def one(g):
        A = diffusion_stencil(op, _frozen(g), tau)
        matrices = {}
        for name in configs:
            config = FACTOR_CONFIGS[name]
            hierarchy = config.hierarchy(A)
            matrices[name] = jax.vmap(lambda e, hierarchy=hierarchy: error_propagation(hierarchy, e), out_axes=1)(jnp.eye(A.n))
        return matrices

    return jax.vmap(one)(g)


@pytest.mark.parametrize("boundary", ["neumann", "periodic"])
def test_operator_interpolation_follows_diffusivity_jumps(boundary):
    """||E||_A = ||L^T E L^{-T}||_2 (A = L L^T) of V(2,2) for D_1, n = 64, tau = 100, with
    diffusivities over four decades: Perona-Malik-like edges (g = 1, and 1e-4 at every
    seventh cell), and g log-uniform in [1e-4, 1] per cell. Measured: the geometric cycle
    0.78-0.91; with operator-dependent interpolation 0.079-0.082 with Jacobi, and with
    red-black Gauss-Seidel exact up to rounding (cyclic reduction: below 1.2e-14). Every
    cycle contracts. (Jacobi on the neumann grid only: each cycle is a program to compile.)"""
    n = 64
    op = Derivative(1, n, boundary=boundary)
    rows = op.out_shape[0]
    edges = np.where(np.arange(rows) % 7 == 3, 1e-4, 1.0)
    random = 10 ** np.random.default_rng(5).uniform(-4, 0, rows)
    configs = tuple(FACTOR_CONFIGS)[: 3 if boundary == "neumann" else 2]
    matrices = _error_matrices(configs, op, jnp.asarray(np.stack([edges, random])), 100.0)
    for k, g in enumerate((edges, random)):
        A = _dense_system(1, n, boundary, g, 100.0)
        L = np.linalg.cholesky(A)
        factors = {name: float(np.linalg.norm(L.T @ np.asarray(E[k]) @ np.linalg.inv(L.T), 2))
                   for name, E in matrices.items()}
        assert factors["geometric"] >= 0.5, factors
        assert factors.get("operator, jacobi", 0.0) <= 0.15, factors
        assert factors["operator"] <= 1e-12, factors
        assert all(factor < 1 for factor in factors.values()), factors


# --- one cycle against the dense cycle ------------------------------------------------------

# (m, boundary, n, smoother, gamma, (pre, post), interpolation, expected level sizes)
CYCLE_CASES = [
    (1, "neumann", 100, "red-black", 1, (2, 2), None, (100, 50, 25, 13)),
    (1, "periodic", 64, "jacobi", 2, (1, 3), "cubic", (64, 32, 16)),
    (2, "dirichlet", 33, "red-black", 2, (2, 2), None, (33, 17, 9)),
    (2, "periodic", 100, "red-black", 1, (0, 2), None, (100, 50, 25)),
    (2, "neumann", 64, "jacobi", 1, (2, 2), "linear", (64, 32, 16)),
    (1, "neumann", 63, "jacobi", 1, (2, 2), "operator", (63, 32, 16)),
]


def _cycle_inputs(case, g, tau, pre, post, x, f):
    m, boundary, n, smoother, gamma, (nu1, nu2), interpolation, _ = case
    config = Multigrid(smoother=smoother, pre_smoothing=nu1, post_smoothing=nu2, interpolation=interpolation)
    op = Derivative(m, n, boundary=boundary)
    return _cycle(config, op, jnp.asarray(g), jnp.asarray(tau), jnp.asarray(pre), jnp.asarray(post),
                  jnp.asarray(x), jnp.asarray(f), gamma)


def _dense_levels(case, g, tau, pre, post):
    """The dense hierarchy: A from `stencil_matrix`, P from the definition, Galerkin; the
    half-width b = m of the system, floor((b + 2w) / 2) on the next level (the colours)."""
    m, boundary, n, _, _, _, interpolation, sizes = case
    periodic = boundary == "periodic"
    kernel, extension = KERNELS["linear" if interpolation == "operator" else interpolation or ("linear" if m == 1 else "cubic")]
    extension = "wrap" if periodic else extension
    A, levels, bandwidth = _dense_system(m, n, boundary, g, tau), [], m
    for level, coarse_n in enumerate(sizes[1:]):
        if interpolation == "operator":
            P = _operator_prolongation_matrix(A, periodic)
        else:
            P = _prolongation_matrix(kernel, coarse_n, A.shape[0], extension)
        assert _band(A, periodic) <= bandwidth
        levels.append((A, P, pre[level], post[level], bandwidth, periodic))
        A, bandwidth = P.T @ A @ P / 2, (bandwidth + len(kernel) - 1) // 2
    levels.append((A, None, None, None, None, periodic))
    return levels


@pytest.mark.parametrize("case", CYCLE_CASES, ids=lambda case: "-".join(map(str, case[:6])))
def test_cycle_is_the_dense_cycle(case):
    """Level sizes, Galerkin operators and one V- or W-cycle (random diffusivities with
    zeros, random relative weights per level and sweep) against the dense recursion."""
    m, boundary, n, smoother, gamma, (nu1, nu2), _, sizes = case
    rng = np.random.default_rng(n + m)
    rows = Derivative(m, n, boundary=boundary).out_shape[0]
    g = rng.uniform(0, 2, rows) * (rng.random(rows) > 0.2)
    tau = 10.0
    pre, post = rng.uniform(0.05, 0.95, (len(sizes) - 1, nu1)), rng.uniform(0.05, 0.95, (len(sizes) - 1, nu2))
    x, f = rng.standard_normal(n), rng.standard_normal(n)
    matrices, y, _, _ = _cycle_inputs(case, g, tau, pre, post, x, f)

    levels = _dense_levels(case, g, tau, pre, post)
    assert tuple(matrix.shape[0] for matrix in matrices) == sizes
    for matrix, (A, *_) in zip(matrices, levels):
        np.testing.assert_allclose(np.asarray(matrix), A, rtol=0, atol=TOL["atol"] * np.abs(A).max())
    expected = _dense_cycle(levels, x, f, smoother, gamma)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=0, atol=TOL["atol"] * np.abs(expected).max())


_diffusivity = st.one_of(st.just(0.0), st.floats(-3.0, 0.0).map(lambda e: 10.0**e))  # contrast 1e3
_theta = st.floats(0.0, 1.0, exclude_min=True, exclude_max=True)


@hypothesis.given(case=st.sampled_from(CYCLE_CASES), symmetric=st.booleans(), data=st.data())
def test_cycle_contracts_in_the_energy_norm_property(case, symmetric, data):
    """||E e||_A <= ||e||_A for diffusivities g >= 0 (zeros, contrast 1e3), tau in
    [1e-2, 1e4], both smoothers, V and W, any relative weights in (0, 1); with the same
    weights before and after (the default V(2,2) pattern), E is self-adjoint in the energy
    inner product: <E x, A y> = <x, A E y>."""
    m, boundary, n, _, _, (nu1, nu2), _, sizes = case
    rows = Derivative(m, n, boundary=boundary).out_shape[0]
    g = np.asarray(data.draw(st.lists(_diffusivity, min_size=rows, max_size=rows)))
    tau = 10 ** data.draw(st.floats(-2.0, 4.0))
    pre = np.asarray(data.draw(st.lists(_theta, min_size=(len(sizes) - 1) * nu1, max_size=(len(sizes) - 1) * nu1)))
    pre = pre.reshape(len(sizes) - 1, nu1)
    symmetric = symmetric and nu1 == nu2
    if symmetric:
        post = pre
    else:
        post = np.asarray(data.draw(st.lists(_theta, min_size=(len(sizes) - 1) * nu2, max_size=(len(sizes) - 1) * nu2)))
        post = post.reshape(len(sizes) - 1, nu2)
    x, y = np.asarray(data.draw(signals((n,)))), np.asarray(data.draw(signals((n,))))
    zero = np.zeros(n)

    _, image_x, norm_x, norm_image_x = _cycle_inputs(case, g, tau, pre, post, x, zero)  # E x
    assert float(norm_image_x) <= float(norm_x) * (1 + 1e-12)
    if symmetric:
        _, image_y, norm_y, norm_image_y = _cycle_inputs(case, g, tau, pre, post, y, zero)
        assert float(norm_image_y) <= float(norm_y) * (1 + 1e-12)
        A = _dense_system(m, n, boundary, g, tau)
        image_x, image_y = np.asarray(image_x), np.asarray(image_y)
        left, right = image_x @ (A @ y), x @ (A @ image_y)
        # The rounding of the two cycles, amplified by A: relative to the products' sizes.
        scale = _l2(image_x) * _l2(A @ y) + _l2(x) * _l2(A @ image_y)
        assert abs(left - right) <= TOL["rtol"] * scale  # measured: below 1e-15


# --- the solver ---------------------------------------------------------------------------------

# (m, boundary, n, cycle, smoother, full multigrid): every option with every other value.
# Each case compiles a solver of its own; the default run keeps four that still take every
# value of every option, the thorough profile runs all six.
SOLVE_CASES = [
    (1, "neumann", 128, "V", "red-black", True),
    (1, "periodic", 100, "W", "jacobi", False),
    (1, "dirichlet", 33, "V", "jacobi", True),
    (2, "neumann", 100, "W", "red-black", False),
    (2, "periodic", 64, "V", "red-black", True),
    (2, "dirichlet", 64, "W", "jacobi", True),
]
SOLVE_CASES_THOROUGH = (SOLVE_CASES[3], SOLVE_CASES[5])
SOLVE_SIZES = {  # the levels: halve (n + 1) // 2, or n / 2 while even when periodic, down to 16
    (1, "neumann", 128): (128, 64, 32, 16),
    (1, "periodic", 100): (100, 50, 25),
    (1, "dirichlet", 33): (33, 17, 9),
    (2, "neumann", 100): (100, 50, 25, 13),
    (2, "periodic", 64): (64, 32, 16),
    (2, "dirichlet", 64): (64, 32, 16),
}
DEFAULT_THETA = {"jacobi": 2 / 3, "red-black": 1 / 2}  # the documented default weights
LAMBDA, SOLVE_TAU = 1.0, 100.0


def _solve_signal(n: int, seed: int) -> np.ndarray:
    """A smooth wave with a step and noise: Perona-Malik diffusivities from about 0.1 to 1."""
    rng = np.random.default_rng(seed)
    grid = np.arange(n) / n
    return np.sin(2 * np.pi * grid) + np.where(grid < 0.5, 0.0, 2.0) + 0.1 * rng.standard_normal(n)


def _perona_malik_diffusivity(m: int, n: int, boundary: str, u) -> np.ndarray:
    s = stencil_matrix(derivative_taps(m, 1.0), n, boundary) @ u
    return 1 / (1 + s**2 / LAMBDA**2)


def _dense_full_multigrid(levels, f, smoother: str, gamma: int):
    """Restrict f to every level, solve on the coarsest, then on each finer level
    interpolate and run one cycle."""
    rhs = [f]
    for _, P, *_ in levels[:-1]:
        rhs.append(P.T @ rhs[-1] / 2)
    x = np.linalg.solve(levels[-1][0], rhs[-1])
    for level in range(len(levels) - 2, -1, -1):
        x = _dense_cycle(levels, levels[level][1] @ x, rhs[level], smoother, gamma, level)
    return x


@pytest.mark.parametrize(
    "case",
    [thorough_param(case) if case in SOLVE_CASES_THOROUGH else case for case in SOLVE_CASES],
    ids=lambda case: "-".join(map(str, case)),
)
def test_solve_is_the_dense_solve(case):
    """The default tolerance is reached and the answer is the dense solve; the history
    starts at the relative residual of the start (zero, or the dense full-multigrid start
    with the default weights), is finite through the cycles run, NaN after."""
    m, boundary, n, cycle, smoother, full = case
    config = Multigrid(smoother=smoother, cycle=cycle, full_multigrid=full, throw=False)
    op = Derivative(m, n, boundary=boundary)
    rng = np.random.default_rng(n)
    u, f = _solve_signal(n, n), rng.standard_normal(n)
    g = _perona_malik_diffusivity(m, n, boundary, u)
    A = _dense_system(m, n, boundary, g, SOLVE_TAU)
    solution = _solve(config, op, LAMBDA, jnp.asarray(u), SOLVE_TAU, jnp.asarray(f))
    x = np.asarray(solution.value)
    expected = np.linalg.solve(A, f)

    assert solution.result == Result.successful
    cycles, history = int(solution.iterations), np.asarray(solution.history)
    assert 1 <= cycles <= config.max_cycles
    assert history.shape == (config.max_cycles + 1,)
    assert np.all(np.isfinite(history[: cycles + 1])) and np.all(np.isnan(history[cycles + 1 :]))
    rtol = 1000 * EPS * np.abs(A).sum(axis=1).max()  # the documented default
    residual = _l2(f - A @ x)
    # Evaluating f - A x rounds by at most (2m + 2) eps |A| |x| per entry (here and in jaxpde).
    rounding = 2 * (2 * m + 2) * EPS * _l2(np.abs(A) @ np.abs(x))
    assert history[cycles] <= rtol * (1 + TOL["rtol"])
    assert float(solution.residual) == pytest.approx(residual, rel=TOL["rtol"], abs=rounding)
    assert history[cycles] == pytest.approx(residual / _l2(f), rel=TOL["rtol"], abs=rounding / _l2(f))
    if full:
        sizes, gamma = SOLVE_SIZES[m, boundary, n], {"V": 1, "W": 2}[cycle]
        weights = np.full((len(sizes) - 1, 2), DEFAULT_THETA[smoother])
        levels = _dense_levels((m, boundary, n, smoother, gamma, (2, 2), None, sizes), g, SOLVE_TAU, weights, weights)
        start = _dense_full_multigrid(levels, f, smoother, gamma)
        assert history[0] == pytest.approx(_l2(f - A @ start) / _l2(f), rel=1e-9)
        assert history[0] < 0.5  # already a fair approximation
    else:
        assert history[0] == 1.0  # from x0 = 0
    # A >= I: ||x - x*|| <= ||A x - f||, plus the rounding of the dense solve.
    condition = np.linalg.cond(A)
    assert _l2(x - expected) <= residual + rounding + 10 * condition * EPS * _l2(expected)

    zero = _solve(config, op, LAMBDA, jnp.asarray(u), SOLVE_TAU, jnp.zeros(n))  # f = 0: x = 0 at once
    assert zero.result == Result.successful and int(zero.iterations) == 0
    assert np.all(np.asarray(zero.value) == 0) and float(zero.history[0]) == 0


def test_solve_batched_is_solving_one_by_one():
    """jit + vmap over diffusivities and right-hand sides: each answer, cycle count and
    history as when solved alone (the batched loop runs until the slowest is done)."""
    m, boundary, n, cycle, smoother, full = SOLVE_CASES[0]  # the program of the dense test
    config = Multigrid(smoother=smoother, cycle=cycle, full_multigrid=full, throw=False)
    op = Derivative(m, n, boundary=boundary)
    rng = np.random.default_rng(8)
    u = np.stack([_solve_signal(n, seed) * scale for seed, scale in ((1, 0.5), (2, 1.0), (3, 3.0))])
    f = rng.standard_normal((3, n))
    batch = _solve_batch(config, op, LAMBDA, jnp.asarray(u), SOLVE_TAU, jnp.asarray(f))
    for k in range(3):
        alone = _solve(config, op, LAMBDA, jnp.asarray(u[k]), SOLVE_TAU, jnp.asarray(f[k]))
        batched = jax.tree.map(lambda leaf, k=k: np.asarray(leaf)[k], batch)  # the k-th solution
        value = np.asarray(alone.value)
        np.testing.assert_allclose(batched.value, value, rtol=0, atol=TOL["atol"] * np.abs(value).max())
        assert int(batched.iterations) == int(alone.iterations)
        # Relative residuals near the solver's floor (1e-11 here) are rounding-level: they
        # agree to 1e-9 relative or to the suite's absolute tolerance.
        np.testing.assert_allclose(batched.history, np.asarray(alone.history), rtol=1e-9, atol=TOL["atol"], equal_nan=True)
        assert batched.result == alone.result == Result.successful


# --- convergence factor independent of n ------------------------------------------------------


@pytest.mark.parametrize(
    "m, bound, boundary",
    [(1, 0.1, "neumann"), thorough_param(1, 0.1, "periodic"), thorough_param(2, 0.3, "neumann"), (2, 0.3, "periodic")],
)
def test_convergence_factor_is_independent_of_n(m, bound, boundary):
    """The energy-norm factor ||E||_A of the default V(2,2) red-black cycle for constant
    g = 1, tau = 100, by power iteration (E is self-adjoint and positive semidefinite in
    the energy inner product, so the estimates rise to ||E||_A and settle). Each case
    compiles two cycles (n = 64, 256): both orders and both boundaries by default, every
    combination in the thorough profile."""
    factors = []
    for n in (64, 256):  # `jaxpde certify` measures 2^6 ... 2^12 (claim multigrid-contraction)
        e = jnp.asarray(np.random.default_rng(n).standard_normal(n))
        previous, factor = _power_iteration(Derivative(m, n, boundary=boundary), 100.0, e, 30)
        previous, factor = float(previous), float(factor)
        assert 0 < factor <= bound, (n, factor)
        assert factor == pytest.approx(previous, rel=0.02), (n, previous, factor)  # settled
        factors.append(factor)


# --- errors -----------------------------------------------------------------------------------------


def test_configuration_errors():
    for kwargs, match in (
        ({"smoother": "sor"}, "`smoother`"),
        ({"cycle": "F"}, "`cycle`"),
        ({"weight": 0.0}, "`weight`"),
        ({"weight": 1.0}, "`weight`"),
        ({"weight": 1.5}, "`weight`"),
        ({"interpolation": "quintic"}, "`interpolation`"),
        ({"pre_smoothing": 0, "post_smoothing": 0}, "at least 1"),
        ({"max_cycles": 0}, "`max_cycles`"),
        ({"coarsest": 1}, "`coarsest`"),
        ({"rtol": 0.0}, "`rtol`"),
    ):
        with pytest.raises(ValueError, match=match):
            Multigrid(**kwargs)


def test_operator_interpolation_needs_a_tridiagonal_system():
    """Operator-dependent interpolation is for bandwidth 1 (D_1); D_2 is refused at trace time."""
    A = diffusion_stencil(Derivative(2, 64), fluxes.Linear(1.0), 1.0)
    with pytest.raises(ValueError, match="tridiagonal systems.*interpolation='cubic'"):
        eqx.filter_eval_shape(Multigrid(interpolation="operator").hierarchy, A)
    with pytest.raises(ValueError, match="tridiagonal system.*interpolation='cubic'"):
        eqx.filter_eval_shape(OperatorInterpolation.from_operator, A)


def test_coarse_levels_that_cannot_be_formed():
    """A periodic grid halves while even: n = 2 * 1031 stops at 1031 points, too many for
    the dense coarsest solve (traced only, nothing compiled)."""
    op = Derivative(1, 2 * 1031, boundary="periodic")

    def hierarchy():
        return Multigrid().hierarchy(diffusion_stencil(op, fluxes.Linear(1.0), 1.0))

    with pytest.raises(ValueError, match="cannot form the coarse"):
        eqx.filter_eval_shape(hierarchy)
    scheme = SemiImplicitScheme(op, fluxes.PeronaMalik(1.0), 1.0, multigrid=Multigrid())
    with pytest.raises(ValueError, match="cannot form the coarse"):
        eqx.filter_eval_shape(scheme, jax.ShapeDtypeStruct((2 * 1031,), jnp.float64))
    # 2^k q with an odd q <= 1024 is fine: 2 * 509 stops at 509 points.
    op = Derivative(1, 2 * 509, boundary="periodic")
    sizes = eqx.filter_eval_shape(hierarchy).sizes
    assert sizes == (2 * 509, 509)


def test_operator_and_flux_errors():
    multichannel = Stencil(np.ones((2, 1, 3)), 16)
    for op in (multichannel, Matrix(np.eye(16))):
        with pytest.raises(TypeError, match="single-channel"):
            diffusion_stencil(op, fluxes.Linear(1.0), 1.0)
        with pytest.raises(TypeError, match="single-channel"):
            SemiImplicitScheme(op, fluxes.PeronaMalik(1.0), 1.0, multigrid=Multigrid())
    # (Under the tests' runtime type checking, the annotation `Frozen | Linear` refuses it first.)
    with pytest.raises(TypeError, match=r"freeze a nonlinear flux|Expected type: jaxpde\.fluxes\.Frozen"):
        diffusion_stencil(Derivative(1, 16), fluxes.PeronaMalik(1.0), 1.0)
    with pytest.raises(TypeError, match="`multigrid`|parameter 'multigrid'"):
        SemiImplicitScheme(Derivative(1, 16), fluxes.PeronaMalik(1.0), 1.0, multigrid="V")
    with pytest.raises(ValueError, match="`f` must have shape"):
        eqx.filter_eval_shape(lambda: Multigrid().solve(diffusion_stencil(Derivative(1, 16), fluxes.Linear(1.0), 1.0),
                                                        jnp.zeros(15)))


def test_unreached_tolerance():
    """One cycle cannot reach rtol = 1e-14: `throw=True` raises at run time, `throw=False`
    reports `max_steps_reached` with one cycle in the history."""
    config = Multigrid(max_cycles=1, rtol=1e-14, full_multigrid=False, coarsest=8)
    op = Derivative(1, 16)  # two levels: 16 and 8 points
    u, f = jnp.asarray(_solve_signal(16, 0)), jnp.asarray(np.random.default_rng(0).standard_normal(16))
    with pytest.raises(eqx.EquinoxRuntimeError, match="maximum number"):
        _solve(config, op, LAMBDA, u, SOLVE_TAU, f).value.block_until_ready()
    solution = _solve(config, op, LAMBDA, u, SOLVE_TAU, f, throw=False)
    assert solution.result != Result.successful
    assert solution.result == Result.max_steps_reached
    assert int(solution.iterations) == 1
    history = np.asarray(solution.history)
    assert history.shape == (2,) and np.all(np.isfinite(history))
    assert 1e-14 < history[1] < history[0] == 1.0


# --- the semi-implicit step ----------------------------------------------------------------------


@eqx.filter_jit
def _semi_step_and_gradient(scheme, u, w):
    """The step, its residual, and the gradient of <w, step> in (tau, u)."""

    def objective(tau, u):
        solution = eqx.tree_at(lambda s: s.tau, scheme, tau).solve_step(u)
        return jnp.vdot(w, solution.value), solution

    (_, solution), gradient = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(scheme.tau, u)
    return solution, gradient


@pytest.mark.parametrize(
    "op", [Derivative(1, 64), Derivative(2, 64, boundary="periodic")], ids=["D1-neumann", "D2-periodic"]
)
def test_semi_implicit_with_multigrid_is_the_lineax_step(op):
    """Perona-Malik on a random signal: the multigrid step equals lineax's (the tridiagonal
    solver for D1 neumann, conjugate gradients for D2), is stable, and its gradient in tau
    and u (implicit, through `custom_linear_solve`) equals lineax's."""
    flux = fluxes.PeronaMalik(1.0)
    rng = np.random.default_rng(op.order)
    u, w = jnp.asarray(rng.standard_normal(64)), jnp.asarray(rng.standard_normal(64))
    tau = 20.0
    # throw=False (the result is checked below): a program with the runtime-error callback
    # is not kept in the persistent compilation cache.
    scheme = SemiImplicitScheme(op, flux, tau, multigrid=Multigrid(), throw=False)
    by_multigrid, gradient = _semi_step_and_gradient(scheme, u, w)
    by_lineax, expected_gradient = _semi_step_and_gradient(SemiImplicitScheme(op, flux, tau, throw=False), u, w)
    assert by_lineax.result == Result.successful
    assert by_multigrid.result == Result.successful
    assert int(by_multigrid.iterations) >= 1  # cycles run
    v = np.asarray(by_multigrid.value)
    assert _l2(v - np.asarray(by_lineax.value)) <= 1e-8 * _l2(u)
    # ||(I + tau A)^{-1}|| <= 1: ||v|| <= ||u|| + ||residual||.
    assert _l2(v) <= (_l2(u) + float(by_multigrid.residual)) * (1 + TOL["rtol"])
    for got, want in zip(gradient, expected_gradient):
        assert _l2(np.asarray(got) - np.asarray(want)) <= 1e-7 * _l2(want)


def test_solve_diffusion_system_with_multigrid_and_max_steps():
    """`max_steps` limits the cycles: one cycle misses the default tolerance (reported,
    not raised, with throw=False)."""
    op = Derivative(1, 16)
    u = jnp.asarray(_solve_signal(16, 1))

    @eqx.filter_jit
    def solve(max_steps):
        frozen = Frozen(fluxes.PeronaMalik(LAMBDA), op(u))
        return solve_diffusion_system(op, frozen, jnp.asarray(SOLVE_TAU), u, max_steps=max_steps, throw=False,
                                      multigrid=Multigrid(full_multigrid=False, coarsest=8))

    solution = solve(1)
    assert int(solution.iterations) == 1 and solution.result == Result.max_steps_reached
