r"""Linear operators $K$: derivatives and (learnable) convolution stencils.

Every operator maps one sample to one sample, knows its exact adjoint as an operator
of its own (`op.T`), its dense matrix (`op.as_matrix()`, for tests and small sizes)
and a certified upper bound of its spectral norm (`op.norm_bound()`).

Convention: a stencil with kernel $a_0, \dots, a_{k-1}$ is a correlation,
$(K u)_i = \sum_j a_j \tilde u_{i+j+o}$, where $\tilde u$ extends $u$ by the boundary:

- `"neumann"`: no extension, only the interior ("valid") rows, $n - k + 1$ of them.
  For the derivative $D_1$ this makes $D_1^\top D_1$ the Neumann Laplacian.
- `"periodic"`: circular extension, $n$ rows (circulant matrix), offset $o$.
- `"dirichlet"`: zero extension, all $n + k - 1$ rows that touch $u$ ("full").

The adjoint of a neumann stencil is the dirichlet stencil with the reversed kernel
(and vice versa); the adjoint of a periodic stencil is periodic with the reversed
kernel. Reference: Alt, Peter, Weickert, Schrader, SSVM 2021, arXiv:2103.15419.
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._bounds import gram_bound, schur_norm_bound, symbol_norm_bound
from ._bounds.rounding import (
    ceil_constant,
    inflation,  # noqa: F401 (re-exported: it lived here)
    round_up,
    unit_roundoff,
)
from ._checks import (
    BOUNDARIES,
    as_float_array,
    check_int,
    check_positive_float,
    check_signal,
)


class AbstractOperator(eqx.Module):
    """A linear map $K$ with its exact adjoint and a certified bound of $\\|K\\|_2$."""

    @abc.abstractmethod
    def __call__(self, u: Float[Array, "..."]) -> Float[Array, "..."]:
        """Apply $K$ to one sample `u` of shape `in_shape`."""

    @property
    @abc.abstractmethod
    def T(self) -> "AbstractOperator":
        """The exact adjoint $K^\\top$, as an operator of its own."""

    @property
    @abc.abstractmethod
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one input sample."""

    @property
    @abc.abstractmethod
    def out_shape(self) -> tuple[int, ...]:
        """Shape of one output sample."""

    @abc.abstractmethod
    def norm_bound(self) -> Float[Array, ""]:
        """A certified upper bound of the spectral norm $\\|K\\|_2$."""

    @abc.abstractmethod
    def abs_norm_bound(self) -> Float[Array, ""]:
        """An upper bound of $\\||K|\\|_2$, the entrywise absolute value of $K$.

        Used to bound rounding errors (they scale with $|K|$, not with $K$).
        """

    @abc.abstractmethod
    def as_matrix(self) -> Float[Array, "rows cols"]:
        """The dense matrix of $K$ acting on flattened samples."""

    @property
    @abc.abstractmethod
    def row_length(self) -> int:
        """The most products summed into one output entry of $K$ or $K^\\top$."""


@eqx.filter_jit
def matrix_by_columns(op: AbstractOperator, dtype) -> Float[Array, "rows cols"]:
    """The dense matrix of `op`: its own code applied to the unit vectors (vmapped), as columns.
    One compiled program per operator shape (called eagerly, the vmapped stencil would
    compile every primitive of it on its own)."""
    size = math.prod(op.in_shape)
    basis = jnp.eye(size, dtype=dtype).reshape(size, *op.in_shape)
    columns = jax.vmap(op)(basis).reshape(size, -1)
    return columns.T


def _reverse(kernel: Float[Array, "*c k"]) -> Float[Array, "*c_swapped k"]:
    """Kernel of the adjoint: reversed taps, input and output channels swapped."""
    if kernel.ndim == 3:
        kernel = jnp.swapaxes(kernel, 0, 1)
    return kernel[..., ::-1]


@jax.jit
def stencil_schur_bound(kernel: Float[Array, "*c k"]) -> Float[Array, ""]:
    r"""Schur's bound $\sqrt{R\,C}$ of $\||K|\|$ for a stencil, rounded up.

    One channel: $R = C = \sum_j |a_j|$, a sum of $k$ nonnegative terms: in any order the
    computed sum is at least $(1 - \mathbf{u})^{k-1}$ times the exact one. Several channels:
    $R = \max_o\sum_{c,j}|a_{ocj}|$ ($c_{\rm in}k$ terms), $C = \max_c\sum_{o,j}|a_{ocj}|$
    ($c_{\rm out}k$ terms), evaluated as $\sqrt R\cdot\sqrt C$ (no underflow of $RC$): the
    square roots halve the sums' exponents, plus three roundings.
    """
    absolute = jnp.abs(kernel)
    if absolute.ndim == 1:
        return round_up(jnp.sum(absolute), absolute.shape[-1] - 1)
    c_out, c_in, k = absolute.shape
    return schur_norm_bound(jnp.sum(absolute, axis=(1, 2)), jnp.sum(absolute, axis=(0, 2)), c_in * k, c_out * k)


class Stencil(AbstractOperator):
    """A convolution stencil (a learnable kernel) on signals of length `n`.

    **Arguments:**

    - `kernel`: shape `(k,)` for one channel (input `(n,)`), or `(c_out, c_in, k)`
      for several channels (input `(c_in, n)`, output `(c_out, rows)`). Trainable.
    - `n`: number of grid points of the input.
    - `boundary`: `"neumann"` (valid rows, $n - k + 1$), `"periodic"` (circulant,
      $n$ rows) or `"dirichlet"` (zero extension, $n + k - 1$ rows).
    - `offset`: periodic only: $(Ku)_i = \\sum_j a_j u_{(i + j + o) \\bmod n}$.
    """

    kernel: Float[Array, "*channels k"]
    n: int = eqx.field(static=True)
    boundary: str = eqx.field(static=True)
    offset: int = eqx.field(static=True)

    def __init__(
        self, kernel: ArrayLike, n: int, *, boundary: str = "periodic", offset: int = 0
    ):
        kernel = as_float_array(kernel)
        if kernel.ndim not in (1, 3) or kernel.shape[-1] < 1 or kernel.size == 0:
            raise ValueError(
                "`kernel` must have shape (k,) or (c_out, c_in, k) with k >= 1, "
                f"got shape {kernel.shape}."
            )
        n = check_int("n", n, minimum=1)
        if boundary not in BOUNDARIES:
            raise ValueError(f"`boundary` must be one of {BOUNDARIES}, got {boundary!r}.")
        k = kernel.shape[-1]
        if boundary == "neumann" and n < k:
            raise ValueError(
                f"`n` must be at least the kernel length {k} for a neumann stencil "
                f"(it keeps n - k + 1 interior rows), got n = {n}."
            )
        offset = check_int("offset", offset, minimum=-(2**62))
        if offset != 0 and boundary != "periodic":
            raise ValueError("`offset` is only meaningful for boundary='periodic'.")
        self.kernel = kernel
        self.n = n
        self.boundary = boundary
        self.offset = offset

    @property
    def size(self) -> int:
        """Number of taps $k$."""
        return self.kernel.shape[-1]

    @property
    def rows(self) -> int:
        """Number of output grid points."""
        k = self.size
        return {"neumann": self.n - k + 1, "periodic": self.n, "dirichlet": self.n + k - 1}[
            self.boundary
        ]

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.n,) if self.kernel.ndim == 1 else (self.kernel.shape[1], self.n)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.rows,) if self.kernel.ndim == 1 else (self.kernel.shape[0], self.rows)

    def _extend(self, u: Array) -> Array:
        k = self.size
        if self.boundary == "neumann":
            return u
        if self.boundary == "dirichlet":
            pad = [(0, 0)] * (u.ndim - 1) + [(k - 1, k - 1)]
            return jnp.pad(u, pad)
        shift = self.offset % self.n
        rolled = jnp.concatenate([u[..., shift:], u[..., :shift]], axis=-1)
        pad = [(0, 0)] * (u.ndim - 1) + [(0, k - 1)]
        return jnp.pad(rolled, pad, mode="wrap")

    def __call__(self, u: Float[Array, "*c_in n"]) -> Float[Array, "*c_out rows"]:
        check_signal("u", u, self.in_shape)
        kernel = self.kernel.astype(u.dtype)
        extended = self._extend(u)
        rows = self.rows
        if kernel.ndim == 1:
            taps = [kernel[j] * extended[j : j + rows] for j in range(self.size)]
        else:
            taps = [kernel[:, :, j] @ extended[:, j : j + rows] for j in range(self.size)]
        return sum(taps[1:], start=taps[0])

    @property
    def T(self) -> "Stencil":
        reverse = _reverse(self.kernel)
        if self.boundary == "neumann":
            return Stencil(reverse, self.rows, boundary="dirichlet")
        if self.boundary == "dirichlet":
            return Stencil(reverse, self.rows, boundary="neumann")
        return Stencil(reverse, self.n, boundary="periodic", offset=-(self.size - 1) - self.offset)

    def symbol(self, theta: Float[Array, " f"]) -> Array:
        r"""The symbol $A(\theta) = \sum_j a_j e^{i j \theta}$ at the frequencies `theta`.

        Shape `(f,)` for one channel, `(f, c_out, c_in)` for several.
        """
        phases = jnp.exp(1j * jnp.outer(theta, jnp.arange(self.size)))
        if self.kernel.ndim == 1:
            return phases @ self.kernel
        return jnp.einsum("fj,ocj->foc", phases, self.kernel)

    def norm_bound(self) -> Float[Array, ""]:
        r"""Certified upper bound of $\|K\|_2$ from the symbol $A(\theta) = \sum_j a_j e^{ij\theta}$.

        Periodic: the maximum of $\|A\|$ over the $n$ DFT frequencies, which is the
        exact norm of the circulant (Sedghi, Gupta, Long, ICLR 2019). Neumann and
        dirichlet: $K$ is a section of the Laurent operator of the symbol, so
        $\|K\| \le \sup_\theta \|A(\theta)\|$; the supremum is bounded from a grid of
        $N$ frequencies by the second-order estimate
        $\sup\|A\|^2 \le \max_q\|A(\theta_q)\|^2 + M(\pi/N)^2/2$,
        $M = \sum_{j,l}\|a_j\|\|a_l\|(j-l)^2$. Several channels use Gram iteration per
        frequency; rounding margins are included
        (`jaxpde._bounds.symbol_norm_bound`, `proofs/spectral-norm-bounds.md`).
        Capped by the Schur bound `abs_norm_bound()` (itself rounded up, so the cap is
        an upper bound too). Jit-able; called eagerly, it runs one compiled program per
        kernel shape and grid (shared by all neumann and dirichlet sizes).
        """
        bound = symbol_norm_bound(self.kernel, self.n, self.boundary)
        return jnp.minimum(bound, self.abs_norm_bound())

    def abs_norm_bound(self) -> Float[Array, ""]:
        r"""Schur's bound $\sqrt{\max_{\rm row} \sum |K| \cdot \max_{\rm col} \sum |K|}$, rounded up
        (a certified upper bound of $\||K|\|$ and of $\|K\|$; `proofs/spectral-norm-bounds.md`, Step 8)."""
        return stencil_schur_bound(self.kernel)

    def as_matrix(self) -> Float[Array, "rows cols"]:
        return matrix_by_columns(self, self.kernel.dtype)

    @property
    def row_length(self) -> int:
        channels = 1 if self.kernel.ndim == 1 else max(self.kernel.shape[:2])
        return self.size * channels


def _neumann_difference_norm(p: int) -> float:
    r"""$\|D_1\|$ ($h = 1$) on $p$ points with neumann rows: $D_1^\top D_1$ is the
    Neumann Laplacian, whose largest eigenvalue is $4\cos^2(\pi / (2p))$.

    The dirichlet $D_1$ on $p$ points is the adjoint of the neumann one on $p + 1$.
    """
    return 2 * math.cos(math.pi / (2 * p))


def _unit_norm_bound(order: int, n: int, boundary: str) -> float:
    r"""A float64 upper bound of $\|D_m\|$ at $h = 1$ (exact for $m = 1$ or periodic).

    Each factor $2\cos(\pi/(2p))$, $p \ge 2$, is within $4.6\mathbf{u}$ of its value ($\pi$ and the
    division: a relative argument error $2\mathbf{u}$, i.e. $2\mathbf{u}\,\theta\tan\theta \le 1.6\mathbf{u}$ on the cosine for
    $\theta \le \pi/4$; `cos` within 1 ulp, $2\mathbf{u}$), a product of $m$ factors within $(4.6m + m)\mathbf{u}$;
    the margin $8(m + 1)\mathbf{u}$ covers this and its own rounding ($\mathbf{u}$ of float64).
    """
    if boundary == "periodic":
        # Largest |2 sin(pi q / n)| over q: q = n/2 (even n) or (n - 1)/2 (odd n).
        per_order = 2.0 if n % 2 == 0 else _neumann_difference_norm(n)
        value = per_order**order
    elif boundary == "neumann":
        # D_m = D_1^(n-m+1) ... D_1^(n); D_1^(p) maps p points to p - 1.
        value = math.prod(_neumann_difference_norm(p) for p in range(n - order + 1, n + 1))
    else:
        # D_m = D_1^(n+m-1) ... D_1^(n); D_1^(p) maps p points to p + 1.
        value = math.prod(_neumann_difference_norm(p + 1) for p in range(n, n + order))
    return value * (1 + 8 * (order + 1) * unit_roundoff(np.float64))


class Derivative(AbstractOperator):
    r"""The $m$-th forward difference $D_m$ with stencil $(-1)^{m-j}\binom{m}{j} / h^m$.

    A `Stencil` with the binomial kernel, plus analytic norm bounds:

    - neumann, $m = 1$: $\|D_1\|^2 = 4\cos^2(\pi/(2n)) / h^2$ (exact);
    - dirichlet, $m = 1$: $\|D_1\|^2 = 4\cos^2(\pi/(2(n+1))) / h^2$ (exact);
    - periodic: the maximum of $|2\sin(\theta/2)|^m / h^m$ over the DFT frequencies
      (exact; $2^m / h^m$ for even $n$);
    - neumann / dirichlet, $m \ge 2$: $D_m$ is a product of $m$ first differences of
      decreasing / increasing size, so $\|D_m\| \le \prod_i \|D_1^{(i)}\| < (2/h)^m$.

    **Arguments:**

    - `order`: $m \ge 1$.
    - `n`: number of grid points, at least `order + 1`.
    - `h`: grid spacing.
    - `boundary`: `"neumann"` ($(n-m) \times n$), `"periodic"` or `"dirichlet"`.
    """

    order: int = eqx.field(static=True)
    h: Float[Array, ""]
    stencil: Stencil

    def __init__(self, order: int, n: int, *, h: float = 1.0, boundary: str = "neumann"):
        order = check_int("order", order, minimum=1)
        n = check_int("n", n, minimum=1)
        if n < order + 1:
            raise ValueError(
                f"`n` must be at least order + 1 = {order + 1} grid points for a "
                f"derivative of order {order}, got n = {n}."
            )
        h = check_positive_float("h", h)
        if boundary not in BOUNDARIES:
            raise ValueError(f"`boundary` must be one of {BOUNDARIES}, got {boundary!r}.")
        kernel = [(-1) ** (order - j) * math.comb(order, j) / h**order for j in range(order + 1)]
        self.order = order
        self.stencil = Stencil(np.asarray(kernel), n, boundary=boundary)
        self.h = as_float_array(h)

    @property
    def n(self) -> int:
        return self.stencil.n

    @property
    def boundary(self) -> str:
        return self.stencil.boundary

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.stencil.in_shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.stencil.out_shape

    def __call__(self, u: Float[Array, " n"]) -> Float[Array, " rows"]:
        return self.stencil(u)

    @property
    def T(self) -> Stencil:
        return self.stencil.T

    def norm_exact(self) -> bool:
        """Whether `norm_bound()` is the exact norm (up to rounding)."""
        return self.order == 1 or self.boundary == "periodic"

    def norm_bound(self) -> Float[Array, ""]:
        r"""Certified upper bound of $\|D_m\|$, rounded up in the kernel's dtype.

        The operator applies its stored taps $t_j$ (the binomial stencil rounded to the
        dtype, float32 when x64 is off). With $s = |t_0|$ (the stored $1/h^m$) and $\nu_m$ the
        closed-form norm at $h = 1$ (a float64 upper bound, cast upwards),
        $\|K_t\| \le s\,\nu_m + \sum_j|t_j - (-1)^{m-j}\binom mj s|$ (triangle inequality and
        Young's $\|K_\delta\| \le \sum_j|\delta_j|$); the sum is 0 for $m \le 2$, whose binomials are powers
        of two. Every rounding of the evaluation is covered by `round_up`
        (`proofs/derivative-norm.md`, Step 6). Jit-able.
        """
        m = self.order
        kernel = self.stencil.kernel
        dtype = kernel.dtype
        u = unit_roundoff(dtype)
        unit = ceil_constant(_unit_norm_bound(m, self.n, self.boundary), dtype)
        scale = jnp.abs(kernel[0])
        binomial = [(-1) ** (m - j) * math.comb(m, j) for j in range(m + 1)]
        # Products s * C(m, j) are exact for powers of two; the others are off by <= u s C.
        inexact = sum(math.comb(m, j) for j in range(m + 1) if math.comb(m, j) & (math.comb(m, j) - 1))
        deviation = jnp.sum(jnp.abs(kernel - scale * jnp.asarray(np.asarray(binomial, np.float64), dtype)))
        value = scale * unit + deviation
        if inexact:
            value = value + scale * ceil_constant(inexact * u, dtype)
        # Roundings: 1 (s * nu) or m + 2 (deviation: a product, a difference, m sums) and 2 sums.
        return round_up(value, m + 5)

    def abs_norm_bound(self) -> Float[Array, ""]:
        return self.stencil.abs_norm_bound()

    def as_matrix(self) -> Float[Array, "rows cols"]:
        return self.stencil.as_matrix()

    @property
    def row_length(self) -> int:
        return self.stencil.row_length


class Matrix(AbstractOperator):
    r"""Any linear map $K$ given by its dense matrix, on flat samples.

    For operators without a stencil structure (and for checks that stack many
    operators as zero-padded matrices of one shape, so that one compiled program
    serves them all).

    **Arguments:**

    - `matrix`: shape `(rows, n)`; input shape `(n,)`, output shape `(rows,)`.
    """

    matrix: Float[Array, "rows n"]

    def __init__(self, matrix: ArrayLike):
        matrix = as_float_array(matrix)
        if matrix.ndim != 2 or 0 in matrix.shape:
            raise ValueError(f"`matrix` must have shape (rows, n) with rows, n >= 1, got {matrix.shape}.")
        self.matrix = matrix

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.matrix.shape[1],)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.matrix.shape[0],)

    def __call__(self, u: Float[Array, " n"]) -> Float[Array, " rows"]:
        check_signal("u", u, self.in_shape)
        return self.matrix.astype(u.dtype) @ u

    @property
    def T(self) -> "Matrix":
        return Matrix(self.matrix.T)

    @eqx.filter_jit
    def norm_bound(self) -> Float[Array, ""]:
        """Certified upper bound of $\\|K\\|_2$ by Gram iteration, rounding included
        (`jaxpde._bounds.gram_bound`, also `jaxpde.verify.gram_bound`)."""
        return gram_bound(self.matrix)

    @eqx.filter_jit
    def abs_norm_bound(self) -> Float[Array, ""]:
        r"""Schur's bound $\sqrt{\max_{\rm row} \sum |K| \cdot \max_{\rm col} \sum |K|}$, rounded up."""
        absolute = jnp.abs(self.matrix)
        rows, cols = absolute.shape
        row_sum, col_sum = jnp.max(jnp.sum(absolute, axis=1)), jnp.max(jnp.sum(absolute, axis=0))
        # Sums of `cols` and `rows` terms, two square roots and a product (as in `stencil_schur_bound`).
        return round_up(jnp.sqrt(row_sum) * jnp.sqrt(col_sum), (rows + cols) // 2 + 3)

    def as_matrix(self) -> Float[Array, "rows cols"]:
        return self.matrix

    @property
    def row_length(self) -> int:
        return max(self.matrix.shape)
