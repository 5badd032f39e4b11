r"""Gram iteration: a certified upper bound of the spectral norm of (batches of) matrices.

With $G_0 = A$, $r_t = \|G_t\|_F$ and $G_{t+1} = (G_t/r_t)^H (G_t/r_t)$, the singular
values obey $\sigma_1(G_{t+1}) = \sigma_1(G_t)^2 / r_t^2$, so

$$\|A\|_2 = \|G_T\|_2^{2^{-T}} \prod_{t=0}^{T-1} r_t^{2^{-t}}
\le \|G_T\|_F^{2^{-T}} \prod_{t=0}^{T-1} r_t^{2^{-t}},$$

and the right-hand side exceeds $\|A\|_2$ by at most the factor
$\operatorname{rank}(A)^{2^{-(T+1)}}$ (Delattre, Barthelemy, Araujo, Allauzen, ICML 2023,
arXiv:2305.16173). In floating point the computed $\hat G_t$, $H_t = \mathrm{fl}(\hat G_t/d_t)$
and $\hat r_t$ differ from the exact ones; the bound is made rigorous by the backward
recursion (derived in `proofs/spectral-norm-bounds.md`, Step 4)

$$U_T = c_F \hat r_T, \qquad
U_t = \Big(d_t\sqrt{U_{t+1} + \gamma'_L\, c_F^2 \hat h_t^2 + \alpha}
+ \mathbf{u}\, c_F \hat r_t + \beta d_t\Big)(1 + 8\mathbf{u}),$$

which satisfies $U_t \ge \|\hat G_t\|_2$ for every $t$, hence $U_0 \ge \|A\|_2$. Here
$\hat h_t$ is the computed $\|H_t\|_F$, $c_F = 1/((1-\mathbf{u})\sqrt{1-\gamma_{N+2}})$ turns a
computed Frobenius norm of $N$ entries into an upper bound of the exact one, $\gamma'_L$ is
Higham's $\gamma_L$ (real) or $\gamma_{L+2}$ (complex) for inner products of length $L$,
and $\alpha$, $\beta$ cover underflow (results below the smallest normal number).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Inexact

from .._checks import check_int
from .rounding import ceil_constant, gamma, unit_roundoff

# Default number of Gram iterations; the overestimation factor is at most
# rank^(2^-(T+1)), i.e. 1 + 9e-13 for rank 6 and T = 40.
GRAM_ITERATIONS = 40

_HIGHEST = jax.lax.Precision.HIGHEST
_SMALL = 512  # m * n * p below which a^H b is a broadcast sum


def _frobenius(x: Array) -> Array:
    """Computed Frobenius norm over the last two axes (no scaling: entries are <= 1
    after the first normalisation)."""
    squares = jnp.real(x) ** 2 + jnp.imag(x) ** 2 if jnp.iscomplexobj(x) else x * x
    return jnp.sqrt(jnp.sum(squares, axis=(-2, -1)))


def _adjoint(x: Array) -> Array:
    return jnp.swapaxes(jnp.conj(x) if jnp.iscomplexobj(x) else x, -1, -2)


def _adjoint_product(a: Array, b: Array) -> Array:
    """$a^H b$ over the last two axes; broadcast sums for small matrices (batched tiny
    matmuls are slow on CPU), a matmul otherwise. Either is an inner product of
    length `a.shape[-2]` per entry, in some order."""
    if a.shape[-2] * a.shape[-1] * b.shape[-1] <= _SMALL:
        a = jnp.conj(a) if jnp.iscomplexobj(a) else a
        return jnp.sum(a[..., :, :, None] * b[..., :, None, :], axis=-3)
    return jnp.matmul(_adjoint(a), b, precision=_HIGHEST)


def _normalised_square(g: Array, left: bool) -> tuple[Array, Array, Array, Array]:
    """One Gram step: $(H^H H$ or $H H^H$, $\\hat r$, $d$, $\\hat h)$ with $H = g/d$."""
    r = _frobenius(g)
    d = jnp.where(r > 0, r, jnp.ones_like(r))
    h = g / d[..., None, None]
    square = _adjoint_product(_adjoint(h), _adjoint(h)) if left else _adjoint_product(h, h)
    return square, r, d, _frobenius(h)


@functools.partial(jax.jit, static_argnames="iterations")
def _gram_bound(matrix: Array, iterations: int) -> Array:
    real = jnp.finfo(matrix.dtype).dtype
    complex_ = jnp.iscomplexobj(matrix)
    m, n = matrix.shape[-2:]
    u = unit_roundoff(real)
    tiny = float(jnp.finfo(real).tiny)
    inner = max(m, n)
    entries = m * n
    # Cast upwards; the float64 evaluation is within a few units of float64 (8 u_64 covers it).
    c_f = 1 / ((1 - u) * math.sqrt(1 - gamma(entries + 2, real))) * (1 + 8 * unit_roundoff(np.float64))
    c_f = float(ceil_constant(c_f, real))
    product = gamma(inner + 2 if complex_ else inner, real) * c_f**2 * (1 + 4 * u)
    # Underflow: each product/sum may lose up to `tiny` (flush to zero included);
    # entries of H are <= 1, so an entry of H^H H loses at most 4 * inner * tiny.
    alpha = 4 * inner * min(m, n) * tiny
    beta = 2 * math.sqrt(entries) * tiny
    # Scale each matrix by the power of two of its largest |entry| (exact), so that
    # squares do not underflow; the remaining underflow of a sum of squares is at most
    # `entries * tiny`, i.e. `sqrt(entries * tiny)` on a Frobenius norm.
    largest = jnp.max(jnp.abs(matrix), axis=(-2, -1))
    _, exponent = jnp.frexp(jnp.where(largest > 0, largest, jnp.ones_like(largest)))
    scale = jnp.ldexp(jnp.ones_like(largest), exponent)
    matrix = matrix / scale[..., None, None].astype(matrix.dtype)
    floor = math.sqrt(entries * tiny)
    if iterations == 0:
        return (c_f * _frobenius(matrix) + floor) * (1 + 4 * u) * scale

    g, r0, d0, h0 = _normalised_square(matrix, left=m < n)

    def forward(g, _):
        nxt, r, d, h = _normalised_square(g, left=False)
        return nxt, (r, d, h)

    g_last, (rs, ds, hs) = jax.lax.scan(forward, g, length=iterations - 1)
    rs = jnp.concatenate([r0[None], rs])
    ds = jnp.concatenate([d0[None], ds])
    hs = jnp.concatenate([h0[None], hs])
    top = (c_f * _frobenius(g_last) + floor) * (1 + 4 * u)

    def backward(upper, step):
        r, d, h = step
        inner_bound = upper + product * (h + floor) ** 2 + alpha
        upper = (d * jnp.sqrt(inner_bound) + u * (c_f * r + floor) + beta * d) * (1 + 8 * u)
        return upper, None

    upper, _ = jax.lax.scan(backward, top, (rs, ds, hs), reverse=True)
    return upper * scale


def gram_bound(matrix: Inexact[Array, "*batch m n"], iterations: int = GRAM_ITERATIONS) -> Float[Array, "*batch"]:
    r"""Certified upper bound of $\|A\|_2$ by Gram iteration, rounding errors included.

    $$\|A\|_2 \le U_0, \qquad U_0 \le \|A\|_2\,\operatorname{rank}(A)^{2^{-(T+1)}}\,(1 + O(\mathbf{u})),$$

    with the backward recursion of the module docstring. The first step uses
    $H H^H$ instead of $H^H H$ when $A$ has fewer rows than columns (same nonzero
    spectrum, smaller matrix).

    **Arguments:**

    - `matrix`: real or complex, shape `(*batch, m, n)`; the bound is computed for
      every matrix of the batch.
    - `iterations`: $T \ge 0$ Gram steps ($T = 0$ gives the Frobenius norm).

    **Returns:** the bounds, shape `batch`, in the real dtype of `matrix`.

    Reference: B. Delattre, Q. Barthélemy, A. Araujo, A. Allauzen, "Efficient bound of
    Lipschitz constant for convolutional layers by Gram iteration", ICML 2023,
    arXiv:2305.16173; N. J. Higham, *Accuracy and Stability of Numerical Algorithms*,
    2002, §3.1 and §3.6 (real and complex inner products).
    """
    iterations = check_int("iterations", iterations, minimum=0)
    matrix = jnp.asarray(matrix)
    if matrix.ndim < 2 or 0 in matrix.shape[-2:]:
        raise ValueError(f"`matrix` must have shape (*batch, m, n) with m, n >= 1, got {matrix.shape}.")
    if not jnp.issubdtype(matrix.dtype, jnp.inexact):
        raise TypeError(f"`matrix` must be a floating or complex array, got dtype {matrix.dtype}.")
    return _gram_bound(matrix, iterations)


def top_right_vector(matrix: Inexact[Array, "m n"], iterations: int = GRAM_ITERATIONS) -> Inexact[Array, " n"]:
    r"""A unit vector close to the top right singular vector of `matrix`.

    Repeated normalised squaring of $A^H A$ gives a multiple of
    $\sum_i \sigma_i^{2^{T+1}} v_i v_i^H$; its column of largest norm lies (up to
    $(\sigma_2/\sigma_1)^{2^{T+1}}$) in the top right singular space. Not certified: it
    only seeds lower bounds, which are certified by evaluation.
    """
    g = jnp.matmul(_adjoint(matrix), matrix, precision=_HIGHEST)

    def body(g, _):
        r = _frobenius(g)
        h = g / jnp.where(r > 0, r, jnp.ones_like(r))
        return jnp.matmul(_adjoint(h), h, precision=_HIGHEST), None

    g, _ = jax.lax.scan(body, g, length=iterations)
    norms = jnp.sqrt(jnp.sum(jnp.abs(g) ** 2, axis=0))
    column = g[:, jnp.argmax(norms)]
    scale = jnp.sqrt(jnp.sum(jnp.abs(column) ** 2))
    fallback = jnp.zeros_like(column).at[0].set(1)
    return jnp.where(scale > 0, column / jnp.where(scale > 0, scale, 1), fallback)


def gram_iterations_for(rank: int, relative: float) -> int:
    """The smallest $T$ with $\\operatorname{rank}^{2^{-(T+1)}} \\le 1 + $ `relative`."""
    if rank <= 1:
        return 1
    return max(1, math.ceil(np.log2(math.log(rank) / math.log1p(relative))) - 1)
