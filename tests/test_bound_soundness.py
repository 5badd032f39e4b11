"""Soundness of the certified norm bounds: no upper bound of the library falls below an
exact reference.

Exact references: a nonnegative periodic kernel has the norm $\\sum_j a_j$ (the symbol at
frequency 0), compared in rational arithmetic (`fractions.Fraction` of the float taps);
other periodic operators have the norm $\\max_q\\|A(\\theta_q)\\|$, evaluated with mpmath at 40
digits from the exact taps; neumann and dirichlet operators are compared with the
float64 SVD of their matrix built from the definition, with the SVD's own backward
error $8(\\text{rows} + \\text{cols})\\mathbf{u}_{64}$ as the only slack (far below the rounding
allowance of every bound involved). Planted counterexamples reproduce the rounding defects
of `proofs/spectral-norm-bounds.md` (Step 8) and `proofs/derivative-norm.md` (Step 6).
"""

import math
from fractions import Fraction

import hypothesis
import hypothesis.strategies as st
import jax
import mpmath
import numpy as np
import pytest

from jaxpde import Derivative, Gradient, Stencil, Stencil2D, verify
from jaxpde.verify.spectral import (
    svd_upper_bound,
    symbol_norm_bound,
    symbol_norm_bound_2d,
)

from .helpers import few_examples, stencil_matrix, stencil_sparse_matrix, thorough_param

DTYPES = (np.float32, np.float64)
BOUNDARIES = ("periodic", "neumann", "dirichlet")
DIGITS = 40
# Shapes from a small set: every (shape, size, dtype) compiles programs of its own.
SIZE_1D = 8
SHAPE_2D = (6, 6)
KERNEL_SHAPES_1D = ((3,), (2, 3, 3))
KERNEL_SHAPES_2D = ((3, 3), (2, 2, 2, 3))
KINDS = ("gaussian", "nonnegative", "cancelling", "spike")


def _u(dtype) -> float:
    return float(np.finfo(dtype).eps) / 2


def _exact(x) -> Fraction:
    return Fraction(float(x))


def _svd_slack(matrix: np.ndarray) -> float:
    """The backward error of the float64 reference SVD, relative: 8 (rows + cols) u_64."""
    return 8 * sum(matrix.shape) * _u(np.float64)


# --- references built from the definition ------------------------------------------------


def _periodic_norm_mp(kernel: np.ndarray, shape: tuple[int, ...]) -> mpmath.mpf:
    """$\\max_q\\|A(\\theta_q)\\|$ over the DFT frequencies, in mpmath from the exact taps (the
    exact norm of the periodic stencil, up to 40 digits)."""
    kernel = np.asarray(kernel, np.float64)
    dims = len(shape)
    taps = kernel.reshape(*kernel.shape[:-dims], -1) if kernel.ndim > dims else kernel.reshape(1, 1, -1)
    positions = np.stack(np.unravel_index(np.arange(taps.shape[-1]), kernel.shape[-dims:]), axis=1)
    best = mpmath.mpf(0)
    with mpmath.workdps(DIGITS):
        for q in np.ndindex(*shape):
            phases = [
                mpmath.expjpi(2 * sum(mpmath.mpf(int(qi) * int(pi)) / size for qi, pi, size in zip(q, p, shape)))
                for p in positions
            ]
            symbol = mpmath.matrix(taps.shape[0], taps.shape[1])
            for o in range(taps.shape[0]):
                for c in range(taps.shape[1]):
                    symbol[o, c] = mpmath.fsum(mpmath.mpf(float(t)) * e for t, e in zip(taps[o, c], phases))
            if taps.shape[:2] == (1, 1):
                value = abs(symbol[0, 0])
            else:
                values = mpmath.svd_c(symbol, compute_uv=False)
                value = max(values[i] for i in range(values.rows))
            best = max(best, value)
    return best


def _reference(kernel: np.ndarray, shape: tuple[int, ...], boundary: str) -> tuple[str, object]:
    """("fraction", exact norm) for nonnegative periodic kernels with one channel (the sum of
    the taps) or the same sum per channel pair (norm = sum * sqrt(c_out c_in), compared
    squared); ("mp", exact norm) for other periodic kernels; ("svd", (sigma, slack)) else."""
    dims = len(shape)
    if boundary == "periodic":
        if np.all(kernel >= 0) and kernel.ndim == dims:
            return "fraction", sum(map(Fraction, kernel.ravel().tolist()))
        return "mp", _periodic_norm_mp(kernel, shape)
    matrix = stencil_matrix(kernel, shape, boundary)
    sigma = float(np.linalg.svd(matrix, compute_uv=False)[0])
    return "svd", (sigma, _svd_slack(matrix))


def _assert_above(bound, reference: tuple[str, object], name: str) -> None:
    kind, value = reference
    if kind == "fraction":
        assert _exact(bound) >= value, (name, float(bound), float(value))
    elif kind == "mp":
        with mpmath.workdps(DIGITS):
            assert mpmath.mpf(float(bound)) >= value, (name, float(bound), value)
    else:
        sigma, slack = value
        assert float(bound) >= sigma * (1 - slack), (name, float(bound), sigma)


def _assert_below(lower, reference: tuple[str, object], name: str) -> None:
    kind, value = reference
    if kind == "fraction":
        assert _exact(lower) <= value, (name, float(lower), float(value))
    elif kind == "mp":
        with mpmath.workdps(DIGITS):
            assert mpmath.mpf(float(lower)) <= value, (name, float(lower), value)
    else:
        sigma, slack = value
        assert float(lower) <= sigma * (1 + slack), (name, float(lower), sigma)


def _kernel(kind: str, shape: tuple[int, ...], seed: int, dtype) -> np.ndarray:
    """Random and adversarial kernels: Gaussian; nonnegative (norm = a sum, attained at 0);
    nearly cancelling (a difference stencil plus a perturbation of a few units of
    roundoff); a spike of 1 with taps of 0.99 u (each lost in a float sum)."""
    rng = np.random.default_rng(seed)
    u = _u(dtype)
    if kind == "gaussian":
        kernel = rng.standard_normal(shape)
    elif kind == "nonnegative":
        kernel = np.abs(rng.standard_normal(shape)) * 10.0 ** rng.uniform(-3, 3)
    elif kind == "cancelling":
        pattern = np.array([(-1) ** j * math.comb(shape[-1] - 1, j) for j in range(shape[-1])], np.float64)
        kernel = np.broadcast_to(pattern, shape) * (1 + 8 * u * rng.integers(-4, 5, shape))
    else:
        kernel = np.full(shape, 0.99 * u)
        kernel[(0,) * len(shape)] = 1.0
    return np.asarray(kernel, dtype)


# --- planted counterexamples: rounding --------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [17, 64])
def test_schur_cap_rounds_a_long_sum_up(dtype, k):
    """[1] + [0.99 u] * (k - 1): every small tap is lost in a float sum, the exact norm is
    the sum (1 + 15.84 u for k = 17, 1 + 62.37 u for k = 64); the old cap 1 + 8u fell below."""
    u = _u(dtype)
    kernel = np.array([1.0] + [0.99 * u] * (k - 1), dtype)
    op = Stencil(kernel, 128, boundary="periodic")
    exact = sum(map(Fraction, kernel.tolist()))
    assert exact - 1 > Fraction(k - 1) * Fraction(0.98 * u)
    # (`spectral_norm(op).upper` is the symbol bound.)
    for name, bound in (("norm_bound", op.norm_bound()), ("abs_norm_bound", op.abs_norm_bound()),
                        ("symbol", symbol_norm_bound(op.kernel, 128, "periodic"))):
        assert bound.dtype == dtype
        assert _exact(bound) >= exact, (name, float((_exact(bound) - 1) / Fraction(u)), float((exact - 1) / Fraction(u)))
    # Tight: the cap exceeds the exact sum by at most the rounding the proof allows.
    assert _exact(op.norm_bound()) <= exact * (1 + Fraction(2 * (k + 4)) * Fraction(u))


@pytest.mark.parametrize("dtype", DTYPES)
def test_schur_cap_of_a_5x5_stencil2d(dtype):
    u = _u(dtype)
    kernel = np.full((5, 5), 0.99 * u, dtype)
    kernel[0, 0] = 1
    op = Stencil2D(kernel, (8, 8), boundary="periodic")
    exact = sum(map(Fraction, kernel.ravel().tolist()))  # 1 + 23.76 u
    assert _exact(op.norm_bound()) >= exact and _exact(op.abs_norm_bound()) >= exact
    assert _exact(op.norm_bound()) <= exact * (1 + Fraction(2 * 29) * Fraction(u))


@pytest.mark.parametrize("dtype", DTYPES)
def test_schur_cap_with_channels(dtype):
    """Every channel pair holds [1] + [0.99 u] * 16, so the symbol at 0 is s * ones(2, 3) and
    the norm is s sqrt(6) = Schur's bound: the cap is tight, only its rounding decides."""
    u = _u(dtype)
    kernel = np.broadcast_to(np.array([1.0] + [0.99 * u] * 16, dtype), (2, 3, 17)).copy()
    op = Stencil(kernel, 32, boundary="periodic")
    s = sum(map(Fraction, kernel[0, 0].tolist()))
    for bound in (op.norm_bound(), op.abs_norm_bound()):
        assert _exact(bound) ** 2 >= 6 * s * s


def test_float32_derivative_norm_is_rounded_up():
    """x64 off: the float64 closed form rounded to nearest fell below the exact norm in 217
    of 396 first-difference cases (n = 2: 1.41421354 < sqrt 2)."""
    with jax.enable_x64(False):
        bound = Derivative(1, 2).norm_bound()
        assert bound.dtype == np.float32
        assert _exact(bound) ** 2 >= 2
        with mpmath.workdps(DIGITS):
            for boundary in ("neumann", "dirichlet"):
                for n in range(2, 200):
                    p = n if boundary == "neumann" else n + 1
                    bound = Derivative(1, n, boundary=boundary).norm_bound()
                    assert mpmath.mpf(float(bound)) >= 2 * mpmath.cos(mpmath.pi / (2 * p)), (boundary, n)
                    assert float(bound) <= 2 * math.cos(math.pi / (2 * p)) * (1 + 16 * _u(np.float32))


def _shrunk_svd(svd):
    def shrunk(a, full_matrices=True, compute_uv=True, hermitian=False):
        if not compute_uv:
            return svd(a, compute_uv=False) * (1 - 1e-6)
        left, values, right = svd(a, full_matrices=full_matrices)
        return left, values * (1 - 1e-6), right

    return shrunk


@pytest.mark.parametrize("dtype", DTYPES)
def test_svd_upper_bound_does_not_trust_lapack(dtype, monkeypatch):
    """`method="svd"` proves its bound from the residual of the computed factors: a
    factorisation whose singular values are 1e-6 too small still gives a valid bound
    (LAPACK's value alone would be a false certificate)."""
    u = _u(dtype)
    kernel = np.array([1.0] + [0.99 * u] * 16, dtype)
    op = Stencil(kernel, 24, boundary="periodic")
    exact = sum(map(Fraction, kernel.tolist()))
    upper = verify.spectral_norm(op, method="svd").upper
    assert upper.dtype == dtype and _exact(upper) >= exact
    assert _exact(upper) <= exact * (1 + Fraction(4) * Fraction(u) + Fraction(1, 10**10))
    matrix = stencil_matrix(kernel, 24, "periodic")
    monkeypatch.setattr(np.linalg, "svd", _shrunk_svd(np.linalg.svd))
    bound, estimate, _ = svd_upper_bound(matrix)
    assert _exact(estimate) < exact <= _exact(bound)
    assert _exact(verify.spectral_norm(op, method="svd").upper) >= exact


# --- properties: no bound below an exact reference ----------------------------------------


@few_examples(10)
@hypothesis.given(
    dims=st.sampled_from((1, 2)),
    channels=st.booleans(),
    boundary=st.sampled_from(BOUNDARIES),
    dtype=st.sampled_from(DTYPES),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**31 - 1),
)
def test_stencil_bounds_above_exact_norm(dims, channels, boundary, dtype, kind, seed):
    shape = (SIZE_1D,) if dims == 1 else SHAPE_2D
    kernel_shape = (KERNEL_SHAPES_1D if dims == 1 else KERNEL_SHAPES_2D)[channels]
    kernel = _kernel(kind, kernel_shape, seed, dtype)
    if dims == 1:
        op = Stencil(kernel, SIZE_1D, boundary=boundary)
        symbol = symbol_norm_bound(op.kernel, SIZE_1D, boundary)
    else:
        op = Stencil2D(kernel, SHAPE_2D, boundary=boundary)
        symbol = symbol_norm_bound_2d(op.kernel, SHAPE_2D, boundary)
    reference = _reference(kernel, shape, boundary)
    uppers = {"norm_bound": op.norm_bound(), "abs_norm_bound": op.abs_norm_bound(), "symbol": symbol}
    if dims == 1:  # (for images, spectral_norm's upper is norm_bound(); its lower is in test_operators2d)
        bounds = verify.spectral_norm(op)
        uppers[f"spectral_norm {bounds.method}"] = bounds.upper
        _assert_below(bounds.lower, reference, f"lower {kind} {kernel_shape} {boundary}")
    for name, bound in uppers.items():
        assert bound.dtype == dtype, name
        _assert_above(bound, reference, f"{name} {kind} {kernel_shape} {boundary} {np.dtype(dtype).name}")


@few_examples(6)
@hypothesis.given(
    boundary=st.sampled_from(BOUNDARIES),
    dtype=st.sampled_from(DTYPES),
    kind=st.sampled_from(KINDS),
    method=st.sampled_from(("gram", "svd")),
    seed=st.integers(0, 2**31 - 1),
)
def test_dense_methods_above_exact_norm(boundary, dtype, kind, method, seed):
    kernel = _kernel(kind, (3,), seed, dtype)
    op = Stencil(kernel, SIZE_1D, boundary=boundary)
    reference = _reference(kernel, (SIZE_1D,), boundary)
    bounds = verify.spectral_norm(op, method=method)
    assert bounds.upper.dtype == dtype
    _assert_above(bounds.upper, reference, f"{method} {kind} {boundary}")
    _assert_below(bounds.lower, reference, f"{method} lower {kind} {boundary}")


def _derivative_reference(op: Derivative) -> tuple[str, object]:
    """The exact norm of the operator as stored (its float taps t_j): order 1, $|t_0|\\,2\\cos(\\pi/(2p))$;
    periodic, the max over the DFT frequencies (mpmath); else the float64 SVD."""
    taps = np.asarray(op.stencil.kernel, np.float64)
    if op.boundary == "periodic":
        return "mp", _periodic_norm_mp(taps, (op.n,))
    if op.order == 1:
        p = op.n if op.boundary == "neumann" else op.n + 1
        with mpmath.workdps(DIGITS):
            return "mp", abs(mpmath.mpf(float(taps[0]))) * 2 * mpmath.cos(mpmath.pi / (2 * p))
    matrix = stencil_matrix(taps, op.n, op.boundary)
    return "svd", (float(np.linalg.svd(matrix, compute_uv=False)[0]), _svd_slack(matrix))


@few_examples(15)
@hypothesis.given(
    order=st.integers(1, 4),
    n=st.sampled_from((2, 3, 5, 8, 16, 33)),
    boundary=st.sampled_from(BOUNDARIES),
    h=st.sampled_from((1.0, 0.1, 0.3, 2.5, 7.0)),
    x64=st.booleans(),
)
def test_derivative_and_gradient_bounds_above_exact_norm(order, n, boundary, h, x64):
    hypothesis.assume(n >= order + 1)
    with jax.enable_x64(x64):
        op = Derivative(order, n, h=h, boundary=boundary)
        bound = op.norm_bound()
        assert bound.dtype == (np.float64 if x64 else np.float32)
        reference = _derivative_reference(op)
        _assert_above(bound, reference, f"D{order} n={n} {boundary} h={h} x64={x64}")
        if reference[0] == "mp":  # tight: within the rounding the proof allows
            u = _u(bound.dtype)
            assert float(bound) <= float(reference[1]) * (1 + 4 * (order + 6) * u + 8 * (order + 1) * _u(np.float64))
        gradient = Gradient((n, n + 1), h=h, boundary=boundary, order=order)
        if reference[0] == "mp":
            other = _derivative_reference(gradient.dx)
            with mpmath.workdps(DIGITS):
                exact = mpmath.sqrt(reference[1] ** 2 + other[1] ** 2)
            _assert_above(gradient.norm_bound(), ("mp", exact), f"gradient {order} {boundary}")


# --- the tight regime of the Toeplitz bound: an independent Lanczos value at n = 4096 ----


# Several channels run only in the 'thorough' profile (ARPACK needs tens of seconds there:
# the top singular values of a 2 -> 3 channel section cluster).
LANCZOS_CASES = (
    ("neumann", (5,)),
    ("dirichlet", (3,)),
    thorough_param("neumann", (3, 2, 4), id="neumann-2to3"),
    thorough_param("dirichlet", (3, 2, 4), id="dirichlet-2to3"),
    thorough_param("periodic", (3, 2, 4), id="periodic-2to3"),
)
LANCZOS_GAP = {"periodic": 1e-6, "neumann": 1e-3, "dirichlet": 1e-3}


@pytest.mark.parametrize(("boundary", "kernel_shape"), LANCZOS_CASES)
def test_toeplitz_bound_against_lanczos_at_4096(boundary, kernel_shape):
    """At n = 4096 the neumann / dirichlet norm is within ~1e-7 of sup|A|, where the
    Toeplitz bound must still hold: compared with ARPACK's Lanczos value (a Ritz value of
    K^T K, so at most sigma_1 up to rounding), which is independent of jaxpde's code."""
    from scipy.sparse.linalg import svds

    n = 4096
    rng = np.random.default_rng(len(kernel_shape) * 10 + BOUNDARIES.index(boundary))
    kernel = rng.standard_normal(kernel_shape)
    op = Stencil(kernel, n, boundary=boundary)
    matrix = stencil_sparse_matrix(kernel, n, boundary)
    sigma = float(svds(matrix, k=1, tol=1e-6, ncv=64, return_singular_vectors=False, random_state=0)[0])
    slack = 8 * sum(matrix.shape) * _u(np.float64)  # the Lanczos value's rounding
    for name, bound in (("norm_bound", op.norm_bound()), ("symbol", symbol_norm_bound(op.kernel, n, boundary))):
        assert float(bound) >= sigma * (1 - slack), (name, float(bound), sigma)
        assert (float(bound) - sigma) / sigma <= LANCZOS_GAP[boundary], (name, float(bound), sigma)
