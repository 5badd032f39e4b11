r"""Spatially varying stencils: the operators of the multigrid levels.

A banded matrix stored by its diagonals is a convolution whose kernel varies along the
signal, $(A x)_i = \sum_{d=-b}^{b} a_{d,i}\, x_{i+d}$, with indices taken modulo $n$ for
`periodic=True` and entries outside $[0, n)$ absent otherwise. The semi-implicit system
$I + \tau K^\top G K$ of an $m$-tap stencil $K$ has bandwidth $b = m - 1$, and so do its
Galerkin coarse operators (`jaxpde.schemes.multigrid`): every level is a convolution.

`BandedStencil` is an `AbstractOperator`: its adjoint `A.T` is the banded stencil of
$A^\top$, and `norm_bound()` is Schur's bound $\sqrt{R\,C}$ from the largest absolute
row and column sums (`schur_norm_bound`). `diffusion_stencil` assembles the semi-implicit
system of a single-channel stencil as one.

Reference: arXiv:2103.15419, Section 6 (multigrid as a U-net).
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._bounds import schur_norm_bound
from .._checks import as_float_array, check_signal
from ..fluxes import Frozen, Linear
from ..operators import AbstractOperator, Derivative, Stencil


def probe_count(n: int, bandwidth: int, periodic: bool) -> int:
    """The number $p$ of probe vectors $\\sum_{J \\equiv r \\pmod p} e_J$ that separate the
    columns of every row of a band of half-width `bandwidth`: $2b + 1$, and for a periodic
    band the smallest divisor of $n$ that is at least $2b + 1$ (so that the residues
    modulo $p$ of the wrapped columns stay distinct)."""
    width = 2 * bandwidth + 1
    if not periodic:
        return min(width, n)
    return next(p for p in range(width, n + 1) if n % p == 0) if n >= width else n


class BandedStencil(AbstractOperator):
    r"""A square banded matrix by diagonals: `diagonals[d + b, i]` $= A_{i,\, i + d}$.

    **Arguments:**

    - `diagonals`: shape `(2b + 1, n)`.
    - `periodic`: wrap the band around (a circulant pattern); otherwise entries whose
      column falls outside $[0, n)$ must be zero (`from_matvec` ensures it).
    """

    diagonals: Float[Array, "width n"]
    periodic: bool = eqx.field(static=True)

    def __check_init__(self):
        width, n = self.diagonals.shape
        if width % 2 != 1:
            raise ValueError(f"`diagonals` must have an odd number 2b + 1 of rows, got {width}.")
        if self.periodic and n < width:
            raise ValueError(
                f"a periodic band of width {width} needs n >= {width} points (else the wrapped "
                f"diagonals overlap), got n = {n}."
            )

    @property
    def bandwidth(self) -> int:
        return self.diagonals.shape[0] // 2

    @property
    def n(self) -> int:
        return self.diagonals.shape[1]

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.n,)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.n,)

    @property
    def row_length(self) -> int:
        return 2 * self.bandwidth + 1

    @property
    def diagonal(self) -> Float[Array, " n"]:
        """The main diagonal $a_{0,i}$."""
        return self.diagonals[self.bandwidth]

    def shifted(self, x: Float[Array, " n"]) -> list[Float[Array, " n"]]:
        """`x` shifted by every offset of the band: entry $d + b$ holds $x_{i+d}$ (zero or
        wrapped outside the signal)."""
        b = self.bandwidth
        padded = jnp.pad(x, (b, b), mode="wrap" if self.periodic else "constant")
        return [padded[d : d + self.n] for d in range(2 * b + 1)]

    def __call__(self, x: Float[Array, " n"]) -> Float[Array, " n"]:
        check_signal("x", x, (self.n,))
        diagonals = self.diagonals.astype(x.dtype)
        # An explicit sum of products: XLA's CPU reduction over the short leading axis of a
        # stacked (2b + 1, n) array is an order of magnitude slower.
        products = [diagonals[j] * shifted for j, shifted in enumerate(self.shifted(x))]
        return sum(products[1:], start=products[0])

    def _inside(self) -> Float[Array, "width n"]:
        """`diagonals` with the entries whose column falls outside $[0, n)$ set to zero
        (none when periodic): the entries that `__call__` applies."""
        if self.periodic:
            return self.diagonals
        b, n = self.bandwidth, self.n
        columns = jnp.arange(n)[None, :] + jnp.arange(-b, b + 1)[:, None]
        return jnp.where((columns >= 0) & (columns < n), self.diagonals, 0)

    @property
    def T(self) -> "BandedStencil":
        r"""The adjoint $A^\top$: $(A^\top)_{i,\, i+d} = A_{i+d,\, i}$, i.e. diagonal $d$ of
        $A^\top$ is diagonal $-d$ of $A$ shifted by $d$ (exact: the entries only move)."""
        b = self.bandwidth
        inside = self._inside()
        # Row d + b of the adjoint at i reads row b - d at i + d (modulo n); on a band that
        # does not wrap, the entries rolled around are the ones outside, zero in `inside`.
        return BandedStencil(jnp.stack([jnp.roll(inside[b - d], -d) for d in range(-b, b + 1)]), self.periodic)

    def norm_bound(self) -> Float[Array, ""]:
        r"""Schur's bound $\sqrt{R\,C}$ of $\|A\|_2$ (`abs_norm_bound`): $R$, $C$ the largest
        absolute row and column sums, $2b + 1$ terms each; rounded up, so certified."""
        return self.abs_norm_bound()

    def abs_norm_bound(self) -> Float[Array, ""]:
        r"""$\sqrt{R\,C}$ with $R = \max_i \sum_d |a_{d,i}|$ and $C = \max_j \sum_d |a_{d,j-d}|$,
        rounded up (`schur_norm_bound`): an upper bound of $\||A|\|_2$ and of $\|A\|_2$."""
        b = self.bandwidth
        magnitudes = jnp.abs(self._inside())
        # Column j of diagonal d holds entry (j - d, j): roll row d + b by d (the entries rolled
        # around a band that does not wrap are zero).
        rows = [magnitudes[d + b] for d in range(-b, b + 1)]
        columns = [jnp.roll(magnitudes[d + b], d) for d in range(-b, b + 1)]
        row_sums = sum(rows[1:], start=rows[0])
        column_sums = sum(columns[1:], start=columns[0])
        return schur_norm_bound(row_sums, column_sums, 2 * b + 1, 2 * b + 1)

    def as_matrix(self) -> Float[Array, "n n"]:
        """The dense matrix (for tests, small sizes and the coarsest level)."""
        b, n = self.bandwidth, self.n
        rows = jnp.arange(n)
        matrix = jnp.zeros((n, n), self.diagonals.dtype)
        for d in range(-b, b + 1):
            columns = rows + d
            inside = (columns >= 0) & (columns < n)
            values = self.diagonals[d + b]
            if self.periodic:
                matrix = matrix.at[rows, columns % n].add(values)
            else:
                matrix = matrix.at[rows, jnp.clip(columns, 0, n - 1)].add(jnp.where(inside, values, 0))
        return matrix

    def gershgorin(self) -> Float[Array, ""]:
        r"""$\max_i \sum_d |a_{d,i}| / a_{0,i}$: Gershgorin's bound of the spectral radius of
        $D^{-1}A$, $D$ the (positive) main diagonal."""
        magnitudes = [jnp.abs(row) for row in self.diagonals]
        return jnp.max(sum(magnitudes[1:], start=magnitudes[0]) / self.diagonal)

    @classmethod
    def from_matvec(
        cls, matvec: Callable[[Array], Array], n: int, bandwidth: int, periodic: bool, dtype
    ) -> "BandedStencil":
        """The banded matrix of a linear map known to have this band, recovered exactly
        from `probe_count` products with the probes $\\sum_{J \\equiv r \\pmod p} e_J$ (each
        row meets one column of each residue class). Jit-able and differentiable."""
        p = probe_count(n, bandwidth, periodic)
        if periodic and n < 2 * bandwidth + 1:
            raise ValueError(f"a periodic band of half-width {bandwidth} needs n >= {2 * bandwidth + 1}, got n = {n}.")
        index = jnp.arange(n)
        probes = (index[None, :] % p == jnp.arange(p)[:, None]).astype(dtype)  # one array op, not p
        responses = jax.vmap(matvec)(probes)  # (p, n): response r holds the columns J = r (mod p)
        # Entry (i, i + d) is responses[(i + d) % p, i]: one gather per diagonal. (Reading it
        # with p strided slices per diagonal made the trace O(b p) operations: compiling the
        # hierarchy of a periodic grid whose smallest divisor >= 2b + 1 is large took minutes.)
        rows = []
        for d in range(-bandwidth, bandwidth + 1):
            columns = index + d
            value = jnp.take_along_axis(responses, (columns % p)[None], axis=0)[0]
            if not periodic:
                value = jnp.where((columns >= 0) & (columns < n), value, 0)
            rows.append(value)
        return cls(jnp.stack(rows), periodic)


def single_channel_stencil(op: AbstractOperator) -> Stencil:
    """The stencil of `op`, or a `TypeError` when multigrid cannot use it."""
    stencil = op.stencil if isinstance(op, Derivative) else op
    if not isinstance(stencil, Stencil) or stencil.kernel.ndim != 1:
        raise TypeError(
            "multigrid needs `op` to be a single-channel `jaxpde.Stencil` or `jaxpde.Derivative` "
            f"(its system is a banded stencil), got {type(op).__name__}"
            + ("" if not isinstance(stencil, Stencil) else f" with kernel shape {stencil.kernel.shape}") + "."
        )
    return stencil


def diffusion_stencil(op: AbstractOperator, flux: Frozen | Linear, tau: ArrayLike) -> BandedStencil:
    r"""$I + \tau K^\top G K$ as a banded stencil, for a single-channel stencil $K$ with $k$
    taps (bandwidth $k - 1$; periodic when $K$ is) and a linear flux $\Phi(s) = G s$: a
    frozen diffusivity (`jaxpde.fluxes.Frozen`) or `jaxpde.fluxes.Linear`."""
    if not isinstance(flux, (Frozen, Linear)):
        raise TypeError(
            "`flux` must be linear, `jaxpde.fluxes.Frozen(flux, K u)` (the semi-implicit system) or "
            f"`jaxpde.fluxes.Linear`, got {type(flux).__name__}; freeze a nonlinear flux first."
        )
    stencil = single_channel_stencil(op)
    tau = as_float_array(tau)
    dtype = jnp.result_type(stencil.kernel.dtype, tau.dtype)

    def matvec(v):
        return v + tau.astype(v.dtype) * op.T(flux(op(v)))

    return BandedStencil.from_matvec(matvec, op.in_shape[0], stencil.size - 1, stencil.boundary == "periodic", dtype)
