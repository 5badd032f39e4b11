r"""Two-sided, certified bounds of the spectral norm $\|K\|_2$ of a linear operator.

`spectral_norm(op)` returns `lower <= ||K||_2 <= upper` for a jaxpde operator or any
linear callable. Upper bounds, by `method` (see `proofs/spectral-norm-bounds.md`):

- `"analytic"`: the closed forms of `Derivative.norm_bound()`;
- `"symbol"` (periodic stencils): $\|K\| = \max_q \|A(\theta_q)\|$ over the $n$ DFT
  frequencies (Sedghi, Gupta, Long, ICLR 2019, arXiv:1805.10408), evaluated with a
  rounding margin and Gram iteration per frequency for several channels;
- `"toeplitz"` (neumann / dirichlet stencils): $\|K\| \le \sup_\theta \|A(\theta)\|$,
  bounded from a grid of $N$ frequencies by the second-order estimate
  $\sup\|A\|^2 \le \max_q \|A(\theta_q)\|^2 + M(\pi/N)^2/2$,
  $M = \sum_{j,l}\|a_j\|\|a_l\|(j - l)^2$;
- `"gram"`: Gram iteration (`jaxpde.verify.gram_bound`) on the dense matrix;
- `"svd"`: a proven bound from LAPACK's SVD of the dense matrix: the computed factors
  $X = \hat U\hat\Sigma\hat V^\top$ (exact numbers) give $\|K\| \le \|X\| + \|K - X\|$, both terms bounded
  with the rounding of their evaluation (`svd_upper_bound`).

2-D stencils (`jaxpde.Stencil2D`) bound their norm with `symbol_norm_bound_2d`, the same
two arguments for the symbol $A(\theta_1, \theta_2)$ on the $H \times W$ DFT frequencies or
an $N \times N$ grid (error $M(\pi/N)^2$); `spectral_norm` uses it through `norm_bound()`.

Lower bound: the best $\|Kx\|/\|x\|$ over power iterates on $K^\top K$ (every iterate is
a valid lower bound), reduced by its own rounding error. For stencils the iteration
starts from the real Fourier mode at the maximising frequency, multiplied by the top
right singular vector of $A(\theta^*)$ (and a sine window for neumann / dirichlet).
"""

import functools
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import as_float_array, check_int
from ..operators import (
    BOUNDARIES,
    AbstractOperator,
    Derivative,
    Stencil,
    ceil_constant,
    inflation,
    round_up,
)
from .energy import l2_norm
from .gram import GRAM_ITERATIONS, gram_bound, top_right_vector
from .tolerance import gamma, unit_roundoff

METHODS = ("auto", "analytic", "symbol", "toeplitz", "gram", "svd", "norm_bound")
# Largest number of rows or columns for which a dense matrix is materialised.
DENSE_LIMIT = 1024
# Gram steps on a dense matrix: overestimation at most rank^(2^-(T+1)) <= 1 + 4e-6 for rank 1024.
DENSE_GRAM_ITERATIONS = 20
# Absolute error of a tabulated root of unity, in units of the unit roundoff of the
# dtype: angle 2 pi r / N (3 roundings, 2 pi <= 6.3), NumPy's cos / sin (< 1 ulp,
# glibc), and the cast to the dtype: 6.3 * 3 + 2 + 2 < 32.
PHASE_ROUNDOFFS = 32
# Absolute error of the product of two tabulated roots of unity (2-D symbols), in units
# of the unit roundoff: 32 + 32 for the factors, sqrt(2) gamma_2 < 3u for the complex
# product, and second-order terms: < 72.
PRODUCT_PHASE_ROUNDOFFS = 72
# Relative error of |z| for a complex z: XLA evaluates max * sqrt(1 + (min / max)^2), within
# 3.3u, i.e. at most the error of 4 roundings (measured: 2.5u); `round_up` covers it.
ABS_ROUNDOFFS = 4
# Stencils' power iteration (from a near-optimal start) stops after PATIENCE iterates
# that each improve the best ratio by less than the relative STALL.
PATIENCE = 8
STALL = 1e-10
_NO_UPPER = "none: no certified upper bound (callable larger than dense_limit)"
_HIGHEST = jax.lax.Precision.HIGHEST


class SpectralNormBounds(eqx.Module):
    """`lower <= ||K||_2 <= upper`, with the input `vector` that attains `lower` and the
    `method` that produced `upper`."""

    lower: Float[Array, ""]
    upper: Float[Array, ""]
    vector: Float[Array, "*shape"]
    method: str = eqx.field(static=True)

    @property
    def relative_gap(self) -> Float[Array, ""]:
        """$(\\text{upper} - \\text{lower}) / \\text{upper}$."""
        return (self.upper - self.lower) / self.upper


# --- power iteration ---------------------------------------------------------------


def _power_iterate(
    apply: Callable, adjoint: Callable, x: Array, iterations: int, stall: float | None = None
) -> tuple[Array, Array]:
    """Best $\\|Kx\\|/\\|x\\|$ over up to `iterations` iterates $x \\leftarrow K^\\top K x$ (from `x`).

    With `stall`, the loop stops once `PATIENCE` consecutive iterates raised the best
    value by less than the relative amount `stall` each (every iterate is a valid lower
    bound, so stopping early only costs tightness).
    """
    tiny = jnp.finfo(x.dtype).tiny

    def step(x, best, best_x):
        y = apply(x)
        value = l2_norm(y) / jnp.maximum(l2_norm(x), tiny)
        better = value > best
        gained = value > best * (1 + (0.0 if stall is None else stall))
        best = jnp.where(better, value, best)
        best_x = jnp.where(better, x, best_x)
        z = adjoint(y)
        return z / jnp.maximum(l2_norm(z), tiny), best, best_x, gained

    best0 = jnp.zeros((), x.dtype)
    if stall is None:

        def body(carry, _):
            x, best, best_x, _ = step(*carry)
            return (x, best, best_x), None

        (_, best, best_x), _ = jax.lax.scan(body, (x, best0, x), length=iterations)
        return best, best_x

    def cond(carry):
        i, _, _, _, quiet = carry
        return (i < iterations) & (quiet < PATIENCE)

    def loop(carry):
        i, x, best, best_x, quiet = carry
        x, best, best_x, gained = step(x, best, best_x)
        return i + 1, x, best, best_x, jnp.where(gained, 0, quiet + 1)

    start = (jnp.zeros((), jnp.int32), x, best0, x, jnp.zeros((), jnp.int32))
    _, _, best, best_x, _ = jax.lax.while_loop(cond, loop, start)
    return best, best_x


@eqx.filter_jit
def power_iteration(
    op: AbstractOperator, key: PRNGKeyArray, iterations: int, dtype
) -> tuple[Float[Array, ""], Float[Array, "*shape"]]:
    """The best $\\|Kx\\|/\\|x\\|$ over `iterations` power iterates from a random start.

    Not reduced by rounding (see `spectral_norm` for the certified lower bound).
    """
    x = jax.random.normal(key, op.in_shape, dtype)
    return _power_iterate(op, op.T, x / l2_norm(x), iterations)


def _certified_lower(ratio: Array, abs_bound: Array, row_length: int, entries: int) -> Array:
    r"""A computed ratio $\mathrm{fl}(\|\mathrm{fl}(Kx)\|)/\mathrm{fl}(\|x\|)$ turned into a
    lower bound of $\|Kx\|/\|x\|$: $\rho(1 - \gamma_{N+4}) - \gamma_r\||K|\|$, rounded down."""
    dtype = ratio.dtype
    u = unit_roundoff(dtype)
    lower = ratio * (1 - gamma(entries + 4, dtype)) - gamma(row_length, dtype) * abs_bound * (1 + 4 * u)
    return jnp.maximum(lower * (1 - 4 * u), 0)


# --- symbols of stencils -------------------------------------------------------------


def _kernel3(kernel: Array) -> Array:
    return kernel[None, None] if kernel.ndim == 1 else kernel


def _phase_table(period: int, dtype) -> Array:
    r"""$e^{2\pi i r/N}$, $r = 0, \dots, N-1$, in float64 NumPy (then cast)."""
    angle = 2 * np.pi * np.arange(period) / period
    table = np.cos(angle) + 1j * np.sin(angle)
    return jnp.asarray(table.astype(jnp.result_type(dtype, jnp.complex64)))


def _check_index_range(a: int, b: int) -> None:
    if (a - 1) * (b - 1) >= 2**31 - 1:
        raise ValueError(
            f"symbol evaluation needs products of indices up to {a} x {b}, which overflow "
            "int32; use a smaller operator or `method='gram'` / `'svd'` on a small one."
        )


def _symbol_samples(kernel3: Array, period: int, count: int) -> Array:
    r"""$A(2\pi q/N) = \sum_j a_j e^{2\pi i qj/N}$ for $q < $ `count`: shape (count, c_out, c_in)."""
    k = kernel3.shape[-1]
    _check_index_range(count, k)
    table = _phase_table(period, kernel3.dtype)
    index = (jnp.arange(count, dtype=jnp.int32)[:, None] * jnp.arange(k, dtype=jnp.int32)[None, :]) % period
    phases = table[index]
    return jnp.einsum("qj,ocj->qoc", phases, kernel3.astype(table.dtype), precision=_HIGHEST)


def _matrix_bounds(symbol: Array, iterations: int) -> Array:
    """Certified upper bounds of the computed symbol's norm at each frequency."""
    real = jnp.finfo(symbol.dtype).dtype
    if symbol.shape[-2:] == (1, 1):
        return round_up(jnp.abs(symbol[:, 0, 0]), ABS_ROUNDOFFS)
    if 1 in symbol.shape[-2:]:
        # One column or one row: the norm is the Euclidean norm of the entries, a sum of
        # 2c squares (relative error gamma_(2c)) and a square root (one more rounding).
        # The double `where` keeps the gradient finite where the symbol vanishes.
        squares = jnp.sum(jnp.real(symbol) ** 2 + jnp.imag(symbol) ** 2, axis=(-2, -1))
        positive = squares > 0
        root = jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1)), 0)
        return root * (1 + gamma(2 * symbol.shape[-2] * symbol.shape[-1] + 2, real))
    # The real embedding [[C, -S], [S, C]] of C + iS has the singular values of C + iS,
    # each twice; real arithmetic compiles faster than complex on CPU (no rounding:
    # the entries are copies of the computed real and imaginary parts).
    c, s = jnp.real(symbol), jnp.imag(symbol)
    embedded = jnp.concatenate([jnp.concatenate([c, -s], -1), jnp.concatenate([s, c], -1)], -2)
    return gram_bound(embedded, iterations)


def _evaluation_margin(kernel3: Array, taps: int, phase_roundoffs: int = PHASE_ROUNDOFFS) -> Array:
    r"""Bound of $\|\hat A(\theta_q) - A(\theta_q)\|_2$: $\|\sum_j|a_j|\|_F(c\mathbf{u} + 2\gamma_{k+1})$,
    with $c\mathbf{u}$ the absolute error of one computed phase ($c = 32$: a tabulated root of
    unity; $c = 72$: the product of two, `PRODUCT_PHASE_ROUNDOFFS`)."""
    dtype = kernel3.dtype
    u = unit_roundoff(dtype)
    absolute = jnp.sum(jnp.abs(kernel3), axis=-1)
    # Rounded up: k - 1 roundings in each tap sum, then the squares, their sum and the root.
    frobenius = round_up(jnp.sqrt(jnp.sum(absolute * absolute)), taps + absolute.size)
    return frobenius * (phase_roundoffs * u + 2 * gamma(taps + 1, dtype))


def _power_of_two_scaled(x: Array) -> tuple[Array, Array]:
    """`(x / s, s)` with `s` the power of two of the largest |entry| (1 for zero)."""
    largest = jnp.max(jnp.abs(x))
    _, exponent = jnp.frexp(jnp.where(largest > 0, largest, jnp.ones_like(largest)))
    scale = jnp.ldexp(jnp.ones_like(largest), exponent)
    return x / scale, scale


def _fold(kernel3: Array, n: int) -> Array:
    k = kernel3.shape[-1]
    if k <= n:
        return kernel3
    folded = jnp.zeros(kernel3.shape[:-1] + (n,), kernel3.dtype)
    return folded.at[..., np.arange(k) % n].add(kernel3)


def toeplitz_grid(taps: int) -> int:
    """Frequencies $N$ of the grid for neumann / dirichlet stencils: $\\ge 4096$ and
    $\\ge 512k$, a power of two."""
    return max(4096, 2 ** math.ceil(math.log2(512 * taps)))


def _curvature(kernel3: Array, positions: np.ndarray | None = None) -> Array:
    r"""$M = \sum_{j,l}\|a_j\|_F\|a_l\|_F |p_j - p_l|^2$, rounded up, with $p_j$ the integer
    position of tap $j$ (`positions`, shape `(k, d)`; default $p_j = j$, one axis). The
    squared distances are small integers, exact in floating point."""
    dtype = kernel3.dtype
    k = kernel3.shape[-1]
    weights = jnp.sqrt(jnp.sum(kernel3 * kernel3, axis=(0, 1)))
    offsets = np.arange(k)[:, None] if positions is None else np.asarray(positions)
    distances = jnp.asarray(np.sum((offsets[:, None, :] - offsets[None, :, :]) ** 2, axis=-1), dtype)
    value = weights @ distances @ weights
    return value * (1 + 2 * gamma(k * k + kernel3.shape[0] * kernel3.shape[1] + 4, dtype))


def _grid_supremum(peak: Array, curvature: Array, spacing: float, u: float) -> Array:
    r"""$\sqrt{\text{peak}^2 + M \cdot \text{spacing}}$ rounded up: the supremum of $\|A\|$ from its
    grid maximum `peak` and the second-order grid error (`spacing` already rounded up)."""
    return jnp.sqrt(peak * peak + curvature * spacing) * (1 + 8 * u)


@functools.partial(jax.jit, static_argnames=("period", "periodic", "iterations"))
def _symbol_peak(kernel: Array, period: int, periodic: bool, iterations: int) -> tuple[Array, Array, Array]:
    """(certified upper bound, argmax index q, computed symbol at q) on the grid of
    `period` frequencies. Compiled once per kernel shape and grid: neumann and dirichlet
    stencils of every size share the program."""
    # Scale by a power of two (exact) so that the largest tap is in [1/2, 1): no
    # underflow of squares; taps far below the largest one may lose at most `tiny` each,
    # far below the evaluation margin (>= 32 u times the largest tap).
    kernel3, scale = _power_of_two_scaled(_kernel3(kernel))
    dtype = kernel3.dtype
    u = unit_roundoff(dtype)
    k = kernel3.shape[-1]
    source = _fold(kernel3, period) if periodic else kernel3
    symbol = _symbol_samples(source, period, period // 2 + 1)
    values = _matrix_bounds(symbol, iterations)
    q = jnp.argmax(values)
    peak = values[q] + _evaluation_margin(kernel3, k)
    if periodic:
        upper = round_up(peak, 1)  # the sum above and this product
    else:
        spacing = (math.pi / period) ** 2 / 2 * (1 + 8 * u)
        upper = _grid_supremum(peak, _curvature(kernel3), spacing, u)
    return upper * scale, q, symbol[q]


def _period(kernel: Array, n: int, boundary: str) -> int:
    return n if boundary == "periodic" else toeplitz_grid(kernel.shape[-1])


def symbol_norm_bound(
    kernel: Float[Array, "*channels k"], n: int, boundary: str, iterations: int = GRAM_ITERATIONS
) -> Float[Array, ""]:
    r"""Certified upper bound of the norm of a stencil from its symbol $A(\theta) = \sum_j a_j e^{ij\theta}$.

    Periodic (`"symbol"`): $\|K\| = \max_{q} \|A(2\pi q/n)\|$ (folded taps), exact up to
    the Gram iteration's factor and rounding. Neumann / dirichlet (`"toeplitz"`):

    $$\|K\|^2 \le \sup_\theta\|A(\theta)\|^2 \le \max_{q < N}\|A(2\pi q/N)\|^2 + \frac{M}{2}\Big(\frac{\pi}{N}\Big)^2,
    \qquad M = \sum_{j,l}\|a_j\|\,\|a_l\|\,(j-l)^2 .$$

    Every frequency's norm is a certified bound of the computed symbol (modulus for one
    channel, `gram_bound` for several) plus the evaluation margin
    $\|\sum_j |a_j|\|_F(32\mathbf{u} + 2\gamma_{k+1})$. Jit-able and differentiable.

    **Arguments:**

    - `kernel`: shape `(k,)` or `(c_out, c_in, k)`.
    - `n`: grid points of the input.
    - `boundary`: `"periodic"`, `"neumann"` or `"dirichlet"`.
    - `iterations`: Gram steps per frequency (several channels).

    **Returns:** the bound, a scalar of the kernel's dtype.

    References: H. Sedghi, V. Gupta, P. M. Long, "The singular values of convolutional
    layers", ICLR 2019, arXiv:1805.10408; A. Böttcher, B. Silbermann, *Introduction to
    Large Truncated Toeplitz Matrices*, Springer, 1999 (sections of Laurent operators).
    """
    upper, _, _ = _symbol_peak(kernel, _period(kernel, n, boundary), boundary == "periodic", iterations)
    return upper


# --- symbols of 2-D stencils -----------------------------------------------------------

# Largest number of (frequency, tap) phases formed at once by the 2-D symbol evaluation.
SYMBOL_CHUNK = 2**20


def toeplitz_grid_2d(kernel_shape: tuple[int, int]) -> int:
    """Frequencies $N$ per axis of the $N \\times N$ grid for neumann / dirichlet 2-D
    stencils of kernel shape $(k_h, k_w)$: $\\ge 512$ and $\\ge 128\\max(k_h, k_w)$, a power of two."""
    return max(512, 2 ** math.ceil(math.log2(128 * max(kernel_shape))))


def _kernel3_2d(kernel: Array) -> Array:
    """`(kh, kw)` or `(c_out, c_in, kh, kw)` as `(c_out, c_in, kh * kw)` (taps row-major)."""
    kernel4 = kernel[None, None] if kernel.ndim == 2 else kernel
    return kernel4.reshape(*kernel4.shape[:2], -1)


def _tap_positions(kernel_shape: tuple[int, int]) -> np.ndarray:
    """Integer positions $(j_1, j_2)$ of the taps, row-major: shape `(kh * kw, 2)`."""
    rows, cols = np.divmod(np.arange(kernel_shape[0] * kernel_shape[1]), kernel_shape[1])
    return np.stack([rows, cols], axis=1)


@functools.partial(jax.jit, static_argnames=("periods", "periodic", "iterations"))
def _symbol_peak_2d(kernel: Array, periods: tuple[int, int], periodic: bool, iterations: int) -> Array:
    r"""Certified upper bound of $\max_q\|A(\theta_q)\|$ over the grid
    $\theta_q = (2\pi q_1/P_1, 2\pi q_2/P_2)$ (periodic), or of $\sup_\theta\|A(\theta)\|$ from the
    $N \times N$ grid (neumann / dirichlet). Compiled once per kernel shape and grid."""
    kernel_shape = kernel.shape[-2:]
    # Scaled by a power of two (exact), as in `_symbol_peak`.
    kernel3, scale = _power_of_two_scaled(_kernel3_2d(kernel))
    dtype = kernel3.dtype
    u = unit_roundoff(dtype)
    k = kernel3.shape[-1]
    p1, p2 = periods
    positions = _tap_positions(kernel_shape)
    _check_index_range(p1 // 2 + 1, kernel_shape[0])
    first_table, second_table = _phase_table(p1, dtype), _phase_table(p2, dtype)
    # Exponents reduced exactly in integers: (q_2 j_2) mod P_2 for every column frequency.
    columns = (np.arange(p2)[:, None] * positions[None, :, 1]) % p2
    second = second_table[jnp.asarray(columns, jnp.int32)]  # (P_2, k)
    row_taps = jnp.asarray(positions[:, 0], jnp.int32)
    weights = kernel3.astype(first_table.dtype)

    def row(q1):
        # One row q_1 of frequencies: e^{i(j_1 theta_1 + j_2 theta_2)} as a product of two
        # tabulated roots of unity (absolute error < 72 u, `PRODUCT_PHASE_ROUNDOFFS`).
        phases = first_table[(q1 * row_taps) % p1][None, :] * second
        symbol = jnp.einsum("qj,ocj->qoc", phases, weights, precision=_HIGHEST)
        return jnp.max(_matrix_bounds(symbol, iterations))

    # A(-theta) is the conjugate of A(theta): the rows q_1 <= P_1 / 2 cover the grid.
    rows = jnp.arange(p1 // 2 + 1, dtype=jnp.int32)
    values = jax.lax.map(row, rows, batch_size=max(1, SYMBOL_CHUNK // (p2 * k)))
    peak = jnp.max(values) + _evaluation_margin(kernel3, k, PRODUCT_PHASE_ROUNDOFFS)
    if periodic:
        upper = round_up(peak, 1)  # the sum above and this product
    else:
        # The nearest grid point is within sqrt(2) pi / N: error (M / 2) * 2 (pi / N)^2.
        spacing = (math.pi / p1) ** 2 * (1 + 8 * u)
        upper = _grid_supremum(peak, _curvature(kernel3, positions), spacing, u)
    return upper * scale


def symbol_norm_bound_2d(
    kernel: Float[Array, "*channels kh kw"],
    shape: tuple[int, int],
    boundary: str,
    iterations: int = GRAM_ITERATIONS,
) -> Float[Array, ""]:
    r"""Certified upper bound of the norm of a 2-D stencil from its symbol
    $A(\theta) = \sum_{j} a_j e^{i(j_1\theta_1 + j_2\theta_2)}$.

    Periodic: $\|K\| = \max_{q} \|A(2\pi q_1/H, 2\pi q_2/W)\|$ over the $H \times W$ DFT
    frequencies, exact up to the Gram iteration's factor and rounding. Neumann /
    dirichlet: with $\theta_q$ the $N \times N$ grid ($N$ = `toeplitz_grid_2d`),

    $$\|K\|^2 \le \sup_\theta\|A(\theta)\|^2 \le \max_q\|A(\theta_q)\|^2 + M\Big(\frac{\pi}{N}\Big)^2,
    \qquad M = \sum_{j,l}\|a_j\|\,\|a_l\|\,|j-l|^2$$

    ($|j - l|$ the Euclidean distance of the tap positions). Every frequency's norm is a
    certified bound of the computed symbol (modulus for one channel, `gram_bound` for
    several) plus the evaluation margin $\|\sum_j |a_j|\|_F(72\mathbf{u} + 2\gamma_{k+1})$,
    $k = k_h k_w$ (`proofs/spectral-norm-bounds.md`, Step 7). Jit-able and differentiable.

    **Arguments:**

    - `kernel`: shape `(kh, kw)` or `(c_out, c_in, kh, kw)`.
    - `shape`: `(H, W)`, the input image size (used by periodic stencils only).
    - `boundary`: `"periodic"`, `"neumann"` or `"dirichlet"`.
    - `iterations`: Gram steps per frequency (several channels).

    **Returns:** the bound, a scalar of the kernel's dtype.

    References: H. Sedghi, V. Gupta, P. M. Long, ICLR 2019, arXiv:1805.10408 (2-D
    circulant convolutions); A. Böttcher, B. Silbermann, 1999 (sections of Laurent operators).
    """
    kernel = as_float_array(kernel)
    if kernel.ndim not in (2, 4) or 0 in kernel.shape:
        raise ValueError(
            f"`kernel` must have shape (kh, kw) or (c_out, c_in, kh, kw) with nonzero sizes, got {kernel.shape}."
        )
    if boundary not in BOUNDARIES:
        raise ValueError(f"`boundary` must be one of {BOUNDARIES}, got {boundary!r}.")
    if len(shape) != 2:
        raise ValueError(f"`shape` must be (H, W), got {shape!r}.")
    shape = (check_int("shape[0]", shape[0], minimum=1), check_int("shape[1]", shape[1], minimum=1))
    periodic = boundary == "periodic"
    grid = toeplitz_grid_2d(kernel.shape[-2:])
    periods = shape if periodic else (grid, grid)
    return _symbol_peak_2d(kernel, periods, periodic, iterations)


def _fourier_start(stencil: Stencil, q: Array, symbol_at_q: Array, period: int, iterations: int) -> Array:
    """Real Fourier mode $\\mathrm{Re}(v e^{i\\theta^* t})$ (or its imaginary part), with a
    sine window for neumann / dirichlet."""
    n = stencil.n
    _check_index_range(period // 2 + 1, n)
    v = top_right_vector(symbol_at_q, iterations)
    table = _phase_table(period, stencil.kernel.dtype)
    phases = table[(q.astype(jnp.int32) * jnp.arange(n, dtype=jnp.int32)) % period]
    mode = v[:, None] * phases[None, :]
    real, imag = jnp.real(mode), jnp.imag(mode)
    x = jnp.where(l2_norm(real) >= l2_norm(imag), real, imag)
    if stencil.boundary != "periodic":
        window = np.sin(np.pi * (np.arange(n) + 1) / (n + 1))
        x = x * jnp.asarray(window, x.dtype)[None, :]
    x = x.reshape(stencil.in_shape)
    return x / l2_norm(x)


@eqx.filter_jit
def _stencil_lower(op: AbstractOperator, stencil: Stencil, q: Array, symbol_at_q: Array, period: int, iterations: int, gram_iterations: int):
    """Certified lower bound and its vector: power iteration from the Fourier start."""
    start = _fourier_start(stencil, q, symbol_at_q, period, gram_iterations)
    ratio, vector = _power_iterate(op, op.T, start, iterations, STALL)
    entries = math.prod(op.in_shape) + math.prod(op.out_shape)
    lower = _certified_lower(ratio, op.abs_norm_bound(), op.row_length, entries)
    return lower, vector


def _stencil_bounds(op: AbstractOperator, stencil: Stencil, iterations: int, gram_iterations: int):
    """(symbol upper bound, certified lower bound, its vector) for a stencil or derivative."""
    period = _period(stencil.kernel, stencil.n, stencil.boundary)
    upper, q, symbol_at_q = _symbol_peak(stencil.kernel, period, stencil.boundary == "periodic", gram_iterations)
    lower, vector = _stencil_lower(op, stencil, q, symbol_at_q, period, iterations, gram_iterations)
    return upper, lower, vector


# --- dense matrices -----------------------------------------------------------------


def _dense_matrix(apply: Callable, in_shape: tuple[int, ...], dtype) -> Array:
    size = math.prod(in_shape)
    basis = jnp.eye(size, dtype=dtype).reshape(size, *in_shape)
    return jax.vmap(apply)(basis).reshape(size, -1).T


@eqx.filter_jit
def _dense_gram(apply: Callable, in_shape: tuple[int, ...], dtype, iterations: int) -> tuple[Array, Array]:
    matrix = _dense_matrix(apply, in_shape, dtype)
    return gram_bound(matrix, iterations), matrix


def _frobenius_bound(matrix: Array) -> Array:
    u = unit_roundoff(matrix.dtype)
    return jnp.sqrt(jnp.sum(matrix * matrix)) * (1 + gamma(matrix.size + 2, matrix.dtype)) * (1 + 2 * u)


_dense_matrix_jit = eqx.filter_jit(_dense_matrix)


def _frobenius64(x: np.ndarray) -> float:
    """Certified upper bound of $\\|x\\|_F$ for a float64 NumPy array: a sum of $N$ squares
    (relative error $\\gamma_N$ in any order), a square root, an underflow allowance of
    `tiny` per square; rounded up by `inflation`."""
    tiny = float(np.finfo(np.float64).tiny)
    return (math.sqrt(float(np.sum(x * x)) + x.size * tiny)) * inflation(x.size // 2 + 3, np.float64)


def svd_upper_bound(matrix: ArrayLike) -> tuple[float, float, np.ndarray]:
    r"""A proven upper bound of $\|A\|_2$ from a computed SVD: `(upper, estimate, vector)`.

    LAPACK (NumPy's `svd`, float64 on the host) returns $\hat U, \hat s, \hat V^\top$; whatever their
    accuracy, $X = \hat U\operatorname{diag}(\hat s)\hat V^\top$ is a matrix of exact numbers, and by the triangle
    inequality (Weyl)
    $$\|A\| \le \|X\| + \|A - X\| \le \hat s_1\sqrt{1 + \eta_U}\sqrt{1 + \eta_V} + \|A - X\|,
    \qquad \eta_Q \ge \|Q^\top Q - I\|_2 ,$$
    with $\eta_Q = \|\mathrm{fl}(Q^\top Q) - I\|_F + \gamma_k\|Q\|_F^2$ ($k$ the inner length) and
    $\|A - X\| \le \|\hat R\|_F/(1 - \mathbf{u}) + (\mathbf{u} + \gamma_r(1 + \mathbf{u}))\hat s_1\|\hat U\|_F\|\hat V\|_F$ for the computed
    residual $\hat R$ (`proofs/spectral-norm-bounds.md`, Step 6). Every norm is a certified
    upper bound (`_frobenius64`) and every combination is rounded up. The bound exceeds
    $\|A\|$ by about $r^2\mathbf{u}_{64}\hat s_1$ at most ($r = \min(m, n)$); the estimate is LAPACK's $\hat s_1$
    (not a bound), the vector its right singular vector.

    **Arguments:**

    - `matrix`: real, shape `(m, n)`, any float dtype (copied exactly to float64).

    **Returns:** `(upper, estimate, vector)`: Python floats (float64, in the matrix's scale)
    and the top right singular vector, shape `(n,)`, float64.
    """
    a = np.asarray(matrix)
    if a.ndim != 2 or 0 in a.shape or not np.issubdtype(a.dtype, np.floating):
        raise ValueError(
            f"`matrix` must be a real floating array of shape (m, n) with m, n >= 1, got {a.dtype} {a.shape}."
        )
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        return math.inf, math.nan, np.zeros(a.shape[1])
    largest = float(np.max(np.abs(a)))
    if largest == 0:
        vector = np.zeros(a.shape[1])
        vector[0] = 1
        return 0.0, 0.0, vector
    # Scaling by a power of two is exact and keeps the squares away from underflow.
    scale = 2.0 ** math.frexp(largest)[1]
    a = a / scale
    u = unit_roundoff(np.float64)
    left, values, right = np.linalg.svd(a, full_matrices=False)
    r = values.size
    top = float(values[0])

    def defect(q: np.ndarray) -> float:
        # ||q^T q - I||_2 <= ||fl(q^T q) - I||_F / (1 - u) + gamma_k || |q| ||_F^2 (one rounding in the
        # difference; the product's error is entrywise <= gamma_k |q|^T |q|); six roundings after.
        gram = q.T @ q
        frob = _frobenius64(q)
        off = _frobenius64(gram - np.eye(gram.shape[0])) * (1 + 4 * u)
        return (off + gamma(q.shape[0] + 1, np.float64) * frob * frob) * inflation(6, np.float64)

    norm_u = math.sqrt(1 + defect(left)) * inflation(2, np.float64)
    norm_v = math.sqrt(1 + defect(right.T)) * inflation(2, np.float64)
    residual = a - (left * values) @ right
    slack = (u + gamma(r + 1, np.float64) * (1 + u)) * top * _frobenius64(left) * _frobenius64(right)
    upper = (top * norm_u * norm_v + _frobenius64(residual) * (1 + 4 * u) + slack) * inflation(10, np.float64)
    return upper * scale, top * scale, right[0]


@eqx.filter_jit
def _matrix_lower(matrix: Array, x: Array) -> Array:
    """Certified $\\|Mx\\|/\\|x\\|$ for a dense matrix ($\\||M|\\| \\le \\|M\\|_F$, $r$ = columns)."""
    y = jnp.matmul(matrix, x.reshape(-1), precision=_HIGHEST)
    ratio = l2_norm(y) / l2_norm(x)
    return _certified_lower(ratio, _frobenius_bound(matrix), matrix.shape[1], sum(matrix.shape))


@eqx.filter_jit
def _best_dense_lower(matrix: Array, vector: Array, iterations: int) -> tuple[Array, Array]:
    """The better certified lower bound of the power iterate `vector` and of the Gram
    iteration's top right singular vector of `matrix`."""
    top = jnp.real(top_right_vector(matrix, iterations)).reshape(vector.shape)
    from_power, from_gram = _matrix_lower(matrix, vector), _matrix_lower(matrix, top)
    better = from_gram > from_power
    return jnp.where(better, from_gram, from_power), jnp.where(better, top, vector)


@eqx.filter_jit
def _operator_lower(op: AbstractOperator, x: Array) -> Array:
    ratio = l2_norm(op(x)) / l2_norm(x)
    entries = math.prod(op.in_shape) + math.prod(op.out_shape)
    return _certified_lower(ratio, op.abs_norm_bound(), op.row_length, entries)


@eqx.filter_jit
def _operator_power(op: AbstractOperator, key: PRNGKeyArray, iterations: int, dtype):
    ratio, vector = power_iteration(op, key, iterations, dtype)
    entries = math.prod(op.in_shape) + math.prod(op.out_shape)
    return _certified_lower(ratio, op.abs_norm_bound(), op.row_length, entries), vector


# --- generic linear callables ---------------------------------------------------------


class _Linear(eqx.Module):
    """A user's linear callable with its transpose, input shape and dtype."""

    fn: Callable = eqx.field(static=True)
    transpose: Callable = eqx.field(static=True)
    in_shape: tuple[int, ...] = eqx.field(static=True)
    out_shape: tuple[int, ...] = eqx.field(static=True)
    dtype: np.dtype = eqx.field(static=True)


def _linear_callable(fn: Callable, in_shape, transpose: Callable | None) -> _Linear:
    if in_shape is None:
        raise ValueError(
            "`in_shape` is required when `op` is a callable: pass the shape of one input "
            "sample (a tuple of ints) or an example array (its shape and dtype are used)."
        )
    if hasattr(in_shape, "shape") and hasattr(in_shape, "dtype"):
        shape, dtype = tuple(in_shape.shape), np.dtype(in_shape.dtype)
    else:
        try:
            shape = tuple(int(s) for s in in_shape)
        except TypeError:
            raise ValueError(f"`in_shape` must be a tuple of ints or an example array, got {in_shape!r}.") from None
        dtype = np.dtype(jnp.result_type(float))
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"`in_shape` must be a non-empty tuple of positive ints, got {shape}.")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"`in_shape`: the example array must be real floating point, got dtype {dtype}.")
    primal = jax.ShapeDtypeStruct(shape, dtype)
    try:
        out = jax.eval_shape(fn, primal)
    except Exception as error:
        raise ValueError(
            f"`op` could not be applied to an input of shape {shape} and dtype {dtype}: {error}"
        ) from error
    if not isinstance(out, jax.ShapeDtypeStruct) or out.dtype != dtype or out.ndim == 0:
        raise ValueError(
            f"`op` must map one array of shape {shape} to one array of the same dtype ({dtype}) "
            f"with at least one axis, as a linear map does; got {out!r}. Wrap it so that it "
            "returns a single array."
        )
    if transpose is None:
        try:
            transposed = jax.linear_transpose(fn, primal)
            jax.eval_shape(transposed, out)
        except Exception as error:
            raise ValueError(
                f"`op` does not look linear: jax.linear_transpose failed ({type(error).__name__}: "
                f"{error}). Pass a linear function of its input, or give its adjoint as `transpose`."
            ) from error

        def transpose(y, transposed=transposed):
            return transposed(y)[0]
    else:
        try:
            back = jax.eval_shape(transpose, out)
        except Exception as error:
            raise ValueError(f"`transpose` could not be applied to an output of shape {out.shape}: {error}") from error
        if not isinstance(back, jax.ShapeDtypeStruct) or back.shape != shape:
            raise ValueError(
                f"`transpose` must map arrays of shape {out.shape} back to shape {shape}, got {back!r}."
            )
    return _Linear(fn, transpose, shape, tuple(out.shape), dtype)


@eqx.filter_jit
def _callable_power(linear: _Linear, key: PRNGKeyArray, iterations: int):
    x = jax.random.normal(key, linear.in_shape, linear.dtype)
    ratio, vector = _power_iterate(linear.fn, linear.transpose, x / l2_norm(x), iterations)
    # Only the norms' rounding is known: the callable's own rounding is not.
    return ratio * (1 - gamma(math.prod(linear.in_shape) + math.prod(linear.out_shape) + 4, linear.dtype)), vector


# --- the public entry point -------------------------------------------------------------


def _applicable(op: object) -> tuple[str, ...]:
    if isinstance(op, (Stencil, Derivative)):
        own = "symbol" if op.boundary == "periodic" else "toeplitz"
        return ("auto", *(("analytic",) if isinstance(op, Derivative) else ()), own, "gram", "svd")
    if isinstance(op, AbstractOperator):
        return ("auto", "norm_bound", "gram", "svd")
    return ("auto", "gram", "svd")


def spectral_norm(
    op: AbstractOperator | Callable,
    *,
    method: str = "auto",
    iterations: int = 200,
    key: PRNGKeyArray | None = None,
    in_shape: tuple[int, ...] | ArrayLike | None = None,
    transpose: Callable | None = None,
    dense_limit: int = DENSE_LIMIT,
    gram_iterations: int | None = None,
) -> SpectralNormBounds:
    r"""Certified two-sided bounds $\text{lower} \le \|K\|_2 \le \text{upper}$.

    Upper bound by `method` (recorded in `.method`):

    - `"analytic"` (`Derivative`): its closed-form `norm_bound()`;
    - `"symbol"` (periodic stencils): $\max_q\|A(2\pi q/n)\|$, the exact norm;
    - `"toeplitz"` (neumann / dirichlet stencils): $\sup_\theta\|A(\theta)\|$ from a
      grid of $N$ frequencies with the second-order grid error $M(\pi/N)^2/2$;
    - `"gram"`: Gram iteration on the dense matrix (any operator or callable);
    - `"svd"`: $\hat s_1\|\hat U\|\|\hat V\| + \|K - \hat U\hat\Sigma\hat V^\top\|$ from LAPACK's SVD (dense),
      each factor bounded rigorously (`svd_upper_bound`);
    - `"norm_bound"` (other jaxpde operators): the operator's own `norm_bound()`;
    - `"auto"`: `Derivative` → the smaller of analytic and symbol / toeplitz;
      `Stencil` → symbol / toeplitz; another operator → `norm_bound`; a callable →
      gram if its size is at most `dense_limit`, else `upper = inf` (no certified
      upper bound exists then).

    Lower bound: the best computed $\|Kx\|/\|x\|$ over `iterations` power iterates on
    $K^\top K$, reduced by its rounding error $\rho\gamma_{N+4} + \gamma_r\||K|\|$. Stencils
    start from the real Fourier mode of the maximising frequency times the top right
    singular vector of $A(\theta^*)$ (sine-windowed for neumann / dirichlet); other
    operators from a random vector. `"svd"` evaluates at LAPACK's top right singular
    vector instead. For a callable the rounding of $\|Kx\|$ is certified through its
    dense matrix when one is built; above `dense_limit` only the norms' rounding is
    accounted for.

    **Arguments:**

    - `op`: a jaxpde `AbstractOperator`, or any linear callable `u -> K u` on one sample.
    - `method`: one of the above (`ValueError` if it does not apply to `op`).
    - `iterations`: power iterations for the lower bound, at least 1.
    - `key`: PRNG key of random starts (default `jax.random.key(0)`).
    - `in_shape`: callables only: the input shape, or an example array (shape and dtype).
    - `transpose`: callables only: the adjoint `v -> K^T v`; default
      `jax.linear_transpose`.
    - `dense_limit`: the most rows or columns for which `"gram"` / `"svd"` build a
      dense matrix.
    - `gram_iterations`: Gram steps (default 40 per symbol frequency, 20 for dense).

    **Returns:** a `SpectralNormBounds` with `.lower`, `.upper`, `.vector` (attaining
    `lower`), `.method`, `.relative_gap`.

    Reference: T. Alt, P. Peter, J. Weickert, K. Schrader, SSVM 2021, arXiv:2103.15419
    (the stable step size needs $\|K\|$); proofs in `proofs/spectral-norm-bounds.md`.
    """
    iterations = check_int("iterations", iterations, minimum=1)
    dense_limit = check_int("dense_limit", dense_limit, minimum=1)
    if gram_iterations is not None:
        gram_iterations = check_int("gram_iterations", gram_iterations, minimum=0)
    key = jax.random.key(0) if key is None else key
    if isinstance(op, AbstractOperator):
        if in_shape is not None or transpose is not None:
            raise ValueError("`in_shape` and `transpose` are only for callables; a jaxpde operator knows both.")
        target = op
        apply, in_shape_, out_shape = op, op.in_shape, op.out_shape
    elif callable(op):
        target = _linear_callable(op, in_shape, transpose)
        apply, in_shape_, out_shape = target.fn, target.in_shape, target.out_shape
    else:
        raise TypeError(f"`op` must be a jaxpde operator or a linear callable, got {type(op).__name__}.")
    applicable = _applicable(op)
    if method not in applicable:
        raise ValueError(
            f"`method` = {method!r} does not apply to {type(op).__name__}"
            + (f" with boundary {op.boundary!r}" if hasattr(op, "boundary") else "")
            + f"; use one of {applicable}."
        )
    dense_size = max(math.prod(in_shape_), math.prod(out_shape))
    if method == "auto" and not isinstance(op, AbstractOperator):
        method = "gram" if dense_size <= dense_limit else "none"
    if method in ("gram", "svd") and dense_size > dense_limit:
        raise ValueError(
            f"`method` = {method!r} builds a dense {math.prod(out_shape)} x {math.prod(in_shape_)} matrix, "
            f"above `dense_limit` = {dense_limit}; raise `dense_limit` or use method='auto'."
        )
    if isinstance(op, (Stencil, Derivative)):
        dtype = (op if isinstance(op, Stencil) else op.stencil).kernel.dtype
    elif isinstance(op, AbstractOperator):
        dtype = jnp.asarray(op.norm_bound()).dtype
    else:
        dtype = target.dtype

    if method == "svd":
        matrix = _dense_matrix_jit(apply, in_shape_, dtype)
        upper, _, vector = svd_upper_bound(matrix)
        vector = jnp.asarray(vector.reshape(in_shape_), dtype)
        upper = jnp.asarray(ceil_constant(upper, dtype))
        lower = _operator_lower(op, vector) if isinstance(op, AbstractOperator) else _matrix_lower(matrix, vector)
        return SpectralNormBounds(lower=lower, upper=upper, vector=vector, method="svd")

    if isinstance(op, (Stencil, Derivative)):
        stencil = op if isinstance(op, Stencil) else op.stencil
        symbol_steps = GRAM_ITERATIONS if gram_iterations is None else gram_iterations
        symbol_upper, lower, vector = _stencil_bounds(op, stencil, iterations, symbol_steps)
        own = "symbol" if stencil.boundary == "periodic" else "toeplitz"
        if method == "gram":
            steps = DENSE_GRAM_ITERATIONS if gram_iterations is None else gram_iterations
            upper, _ = _dense_gram(apply, in_shape_, dtype, steps)
        elif method == "analytic":
            upper = jnp.asarray(op.norm_bound(), dtype)
        elif method == "auto" and isinstance(op, Derivative):
            upper = jnp.minimum(jnp.asarray(op.norm_bound(), dtype), symbol_upper)
            own = f"min(analytic, {own})"
        else:
            upper = symbol_upper
        return SpectralNormBounds(lower=lower, upper=upper, vector=vector, method=method if method in ("gram", "analytic") else own)

    if isinstance(op, AbstractOperator):
        lower, vector = _operator_power(op, key, iterations, dtype)
        if method == "gram":
            steps = DENSE_GRAM_ITERATIONS if gram_iterations is None else gram_iterations
            upper, _ = _dense_gram(apply, in_shape_, dtype, steps)
            return SpectralNormBounds(lower=lower, upper=upper, vector=vector, method="gram")
        return SpectralNormBounds(lower=lower, upper=op.norm_bound(), vector=vector, method="norm_bound")

    # A user's callable: "gram" or "none".
    ratio, vector = _callable_power(target, key, iterations)
    if method == "none":
        return SpectralNormBounds(lower=jnp.maximum(ratio, 0), upper=jnp.asarray(jnp.inf, dtype), vector=vector, method=_NO_UPPER)
    steps = DENSE_GRAM_ITERATIONS if gram_iterations is None else gram_iterations
    upper, matrix = _dense_gram(target.fn, in_shape_, dtype, steps)
    lower, vector = _best_dense_lower(matrix, vector, steps)
    return SpectralNormBounds(lower=lower, upper=upper, vector=vector, method="gram")

