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

from ._checks import as_float_array, check_int, check_positive_float, check_signal

BOUNDARIES = ("neumann", "periodic", "dirichlet")


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


def _dense(op: AbstractOperator, dtype) -> Float[Array, "rows cols"]:
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
def _schur_bound(kernel: Float[Array, "*c k"]) -> Float[Array, ""]:
    absolute = jnp.abs(kernel)
    if absolute.ndim == 1:
        return jnp.sum(absolute)
    row_sum = jnp.max(jnp.sum(absolute, axis=(1, 2)))
    col_sum = jnp.max(jnp.sum(absolute, axis=(0, 2)))
    return jnp.sqrt(row_sum * col_sum)


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
        (`jaxpde.verify.spectral.symbol_norm_bound`, `proofs/spectral-norm-bounds.md`).
        Capped by the Schur bound `abs_norm_bound()`. Jit-able; called eagerly, it runs
        one compiled program per kernel shape and grid (shared by all neumann and
        dirichlet sizes).
        """
        from .verify.spectral import symbol_norm_bound  # verify imports this module

        eps = jnp.finfo(self.kernel.dtype).eps
        bound = symbol_norm_bound(self.kernel, self.n, self.boundary)
        return jnp.minimum(bound, self.abs_norm_bound() * (1 + 4 * eps))

    def abs_norm_bound(self) -> Float[Array, ""]:
        r"""Schur's bound $\sqrt{\max_{\rm row} \sum |K| \cdot \max_{\rm col} \sum |K|}$."""
        return _schur_bound(self.kernel)

    def as_matrix(self) -> Float[Array, "rows cols"]:
        return _dense(self, self.kernel.dtype)

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
        m, n = self.order, self.n
        if self.boundary == "periodic":
            # Largest |2 sin(pi q / n)| over q: q = n/2 (even n) or (n - 1)/2 (odd n).
            per_order = 2.0 if n % 2 == 0 else 2 * math.cos(math.pi / (2 * n))
            value = per_order**m
        elif self.boundary == "neumann":
            # D_m = D_1^(n-m+1) ... D_1^(n); D_1^(p) maps p points to p - 1.
            value = math.prod(_neumann_difference_norm(p) for p in range(n - m + 1, n + 1))
        else:
            # D_m = D_1^(n+m-1) ... D_1^(n); D_1^(p) maps p points to p + 1.
            value = math.prod(_neumann_difference_norm(p + 1) for p in range(n, n + m))
        # Round up: the float64 evaluation above is within a few ulp of the true value.
        value = value * (1 + 16 * np.finfo(np.float64).eps)
        return value / self.h**m

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

    def norm_bound(self) -> Float[Array, ""]:
        """Certified upper bound of $\\|K\\|_2$ by Gram iteration, rounding included
        (`jaxpde.verify.gram_bound`)."""
        from .verify.gram import gram_bound  # verify imports this module

        return gram_bound(self.matrix)

    def abs_norm_bound(self) -> Float[Array, ""]:
        r"""Schur's bound $\sqrt{\max_{\rm row} \sum |K| \cdot \max_{\rm col} \sum |K|}$."""
        absolute = jnp.abs(self.matrix)
        return jnp.sqrt(jnp.max(jnp.sum(absolute, axis=1)) * jnp.max(jnp.sum(absolute, axis=0)))

    def as_matrix(self) -> Float[Array, "rows cols"]:
        return self.matrix

    @property
    def row_length(self) -> int:
        return max(self.matrix.shape)
