r"""Certified upper bounds of the norm of a stencil from its symbol.

A stencil with taps $a_j$ (channel matrices for several channels) has the symbol
$A(\theta) = \sum_j a_j e^{ij\theta}$ (2-D: $e^{i(j_1\theta_1 + j_2\theta_2)}$). Periodic stencils are
block circulant, so $\|K\| = \max_q\|A(\theta_q)\|$ over the DFT frequencies (Sedghi, Gupta, Long,
ICLR 2019, arXiv:1805.10408); neumann and dirichlet stencils are sections of the Laurent
operator of $A$, so $\|K\| \le \sup_\theta\|A(\theta)\|$, bounded from a grid of $N$
frequencies by the second-order estimate

$$\sup_\theta\|A\|^2 \le \max_q\|A(\theta_q)\|^2 + \frac{M}{2}\Big(\frac{\pi}{N}\Big)^2,
\qquad M = \sum_{j,l}\|a_j\|\,\|a_l\|\,|j - l|^2$$

($M(\pi/N)^2$ on an $N \times N$ grid in 2-D). Every frequency's norm is a certified bound of
the computed symbol (its modulus for one channel, `gram_bound` for several) plus the
evaluation margin of the phases and sums (`proofs/spectral-norm-bounds.md`, Steps 1, 3 and 7).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import BOUNDARIES, as_float_array, check_int
from .gram import GRAM_ITERATIONS, gram_bound
from .rounding import gamma, round_up, unit_roundoff

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
_HIGHEST = jax.lax.Precision.HIGHEST


def _kernel3(kernel: Array) -> Array:
    return kernel[None, None] if kernel.ndim == 1 else kernel


def phase_table(period: int, dtype) -> Array:
    r"""$e^{2\pi i r/N}$, $r = 0, \dots, N-1$, in float64 NumPy (then cast)."""
    angle = 2 * np.pi * np.arange(period) / period
    table = np.cos(angle) + 1j * np.sin(angle)
    return jnp.asarray(table.astype(jnp.result_type(dtype, jnp.complex64)))


def check_index_range(a: int, b: int) -> None:
    """`ValueError` unless products of indices below `a` and `b` fit in int32."""
    if (a - 1) * (b - 1) >= 2**31 - 1:
        raise ValueError(
            f"symbol evaluation needs products of indices up to {a} x {b}, which overflow "
            "int32; use a smaller operator or `method='gram'` / `'svd'` on a small one."
        )


def _symbol_samples(kernel3: Array, period: int, count: int) -> Array:
    r"""$A(2\pi q/N) = \sum_j a_j e^{2\pi i qj/N}$ for $q < $ `count`: shape (count, c_out, c_in)."""
    k = kernel3.shape[-1]
    check_index_range(count, k)
    table = phase_table(period, kernel3.dtype)
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
def symbol_peak(kernel: Array, period: int, periodic: bool, iterations: int) -> tuple[Array, Array, Array]:
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


def symbol_period(kernel: Array, n: int, boundary: str) -> int:
    """The number of frequencies sampled: `n` (periodic) or the Toeplitz grid."""
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
    upper, _, _ = symbol_peak(kernel, symbol_period(kernel, n, boundary), boundary == "periodic", iterations)
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
    # Scaled by a power of two (exact), as in `symbol_peak`.
    kernel3, scale = _power_of_two_scaled(_kernel3_2d(kernel))
    dtype = kernel3.dtype
    u = unit_roundoff(dtype)
    k = kernel3.shape[-1]
    p1, p2 = periods
    positions = _tap_positions(kernel_shape)
    check_index_range(p1 // 2 + 1, kernel_shape[0])
    first_table, second_table = phase_table(p1, dtype), phase_table(p2, dtype)
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
