r"""Black-box multigrid for the semi-implicit image system $(I + \tau \nabla^\top G \nabla)\,x = f$.

On an $H \times W$ image every level holds a *stencil field* $A_\ell$ (`StencilField`):
one $3 \times 3$ set of coefficients per pixel,
$(A x)_{ij} = \sum_{a, b \in \{-1, 0, 1\}} c^{ab}_{ij}\, x_{i+a,\, j+b}$, with the entries
that leave the image absent (Neumann: the image system has no boundary rows). The finest
operator, $I + \tau \nabla^\top G \nabla$ with $G$ the diffusivity $g \ge 0$ on the edges, is
a 5-point field (`diffusion_stencil_2d`); the Galerkin coarse operators
$A_{\ell+1} = R_\ell A_\ell P_\ell$ are 9-point fields, recovered exactly from nine coloured
probes (`galerkin_2d`: points $\equiv (r, s) \pmod 3$ never share a row of a 9-point
operator).

Coarse point $(I, J)$ sits at fine point $(2I, 2J)$, and on an axis of even size the last
point is a coarse point too: $(\lfloor H/2 \rfloor + 1) \times (\lfloor W/2 \rfloor + 1)$
coarse points for any $H, W$, every other fine point between two coarse points. The prolongation is operator-dependent
(`BlackBoxInterpolation`, Dendy's black-box multigrid): injection at coarse points, weights
from the stencil collapsed along the line at points between two coarse points, and the
local equation solved at the centres, so that jumps of $g$ over decades are followed,
not smeared. The restriction is $R = P^\top / 4$ (full weighting for bilinear $P$). A cycle
on level $\ell$ is

$$x \leftarrow S_\ell^{\nu_1}(x, f), \quad e \leftarrow \text{cycle}_{\ell+1}^{\gamma}(0, R(f - A_\ell x)),
\quad x \leftarrow x + P e, \quad x \leftarrow \tilde S_\ell^{\nu_2}(x, f),$$

with a direct (Cholesky) solve on the coarsest level; $\gamma = 1$ is the V-cycle,
$\gamma = 2$ the W-cycle. The smoothers: multicolour Gauss-Seidel (red-black on 5-point
fields, four colours $(i \bmod 2, j \bmod 2)$ on 9-point fields; $\omega = 2\theta$), damped
Jacobi ($\omega = 2\theta / \max_i \sum_j |a_{ij}| / a_{ii}$) and alternating zebra-line
Gauss-Seidel (lines of one parity never couple; $\omega = 2\theta$), which stays fast where
the couplings are strongly anisotropic. For every
$\theta \in (0, 1)$ a sweep contracts the error in the energy norm, the post-smoother is
the adjoint of the pre-smoother, and the coarse-grid correction is an $A$-orthogonal
projection, so the cycle contracts: $\|E\|_A < 1$ for every $g \ge 0$, $\tau > 0$
(`proofs/multigrid-2d-contraction.md`).

Reference: Alcouffe, Brandt, Dendy, Painter, "The multi-grid method for the diffusion
equation with strongly discontinuous coefficients", SIAM J. Sci. Stat. Comput. 2, 1981;
Dendy, "Black box multigrid", J. Comput. Phys. 48, 1982; de Zeeuw, "Matrix-dependent
prolongations and restrictions in a blackbox multigrid solver", J. Comput. Appl. Math. 33,
1990; Alt, Peter, Weickert, Schrader, arXiv:2103.15419, Section 6.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._bounds import l2_norm, schur_norm_bound
from .._checks import as_float_array, check_int, check_rtol, check_signal
from ..fluxes import AbstractFlux, Frozen, Linear
from ..operators import AbstractOperator, matrix_by_columns
from ..operators2d import Gradient
from ._solution import Result, Solution
from .multigrid import CYCLES, AbstractMultigrid
from .semi_implicit import inverse_cholesky_factor

# Point smoothers (multicolour Gauss-Seidel, damped Jacobi) and alternating zebra-line Gauss-Seidel.
SMOOTHERS = ("red-black", "jacobi", "line")
# The nine offsets (a, b) of a 3 x 3 stencil, row-major: coefficient k multiplies x[i + a, j + b].
OFFSETS = tuple((a, b) for a in (-1, 0, 1) for b in (-1, 0, 1))
CENTRE = 4
# The offsets of a 5-point field (the others hold zeros).
FIVE_POINT = (1, 3, 4, 5, 7)
# The coarsest level is solved by a dense Cholesky factorisation of at most this many unknowns.
DENSE_LIMIT = 4096
# Relative weights theta: Gauss-Seidel omega = 2 theta = 1; Jacobi omega = 4/5 for the 5-point
# Laplacian (Gershgorin ratio 2), the best Jacobi smoothing factor in 2-D.
DEFAULT_WEIGHTS = {"jacobi": 4 / 5, "red-black": 1 / 2, "line": 1 / 2}


def _grid(shape: tuple[int, int]) -> tuple[Array, Array]:
    """The row and column indices, shapes `(H, 1)` and `(1, W)` (iotas under `jit`, never
    constants: large constants make XLA's compilation slow)."""
    return jnp.arange(shape[0], dtype=jnp.int32)[:, None], jnp.arange(
        shape[1], dtype=jnp.int32
    )[None, :]


def _shift(
    x: Float[Array, "height width"], a: int, b: int
) -> Float[Array, "height width"]:
    """$y_{ij} = x_{i+a,\\, j+b}$, zero where $(i + a, j + b)$ leaves the image."""
    height, width = x.shape
    padded = jnp.pad(x, 1)
    return padded[1 + a : 1 + a + height, 1 + b : 1 + b + width]


class StencilField(AbstractOperator):
    r"""A square operator on $H \times W$ images with one $3 \times 3$ stencil per pixel:

    $$(A x)_{ij} = \sum_{k} c^{k}_{ij}\, x_{(i, j) + o_k},$$

    $o_k = (a, b)$, $a, b \in \{-1, 0, 1\}$ (`OFFSETS`, row-major; $k = 4$ the centre), entries
    whose column $(i + a, j + b)$ leaves the image ignored (Neumann: no ghost points). A
    spatially varying 2-D convolution: the operators of the 2-D multigrid levels. The
    adjoint `A.T` is the field of $A^\top$, $c^{-o}_{(i,j) + o}$.

    **Arguments:**

    - `coefficients`: shape `(9, H, W)`.
    - `five_point`: the corner coefficients are zero (a 5-point field: `__call__` skips them
      and Gauss-Seidel needs two colours, red-black, instead of four).
    """

    coefficients: Float[Array, "stencil height width"]
    five_point: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if self.coefficients.ndim != 3 or self.coefficients.shape[0] != 9:
            raise ValueError(
                f"`coefficients` must have shape (9, H, W) (one 3 x 3 stencil per pixel, offsets row-major), "
                f"got {self.coefficients.shape}."
            )

    @property
    def shape(self) -> tuple[int, int]:
        return self.coefficients.shape[1], self.coefficients.shape[2]

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def row_length(self) -> int:
        return 5 if self.five_point else 9

    @property
    def offsets(self) -> tuple[int, ...]:
        """The indices $k$ of the coefficients that may be nonzero."""
        return FIVE_POINT if self.five_point else tuple(range(9))

    @property
    def diagonal(self) -> Float[Array, "height width"]:
        return self.coefficients[CENTRE]

    def inside(self) -> Float[Array, "9 height width"]:
        """The coefficients with those whose column leaves the image set to zero."""
        height, width = self.shape
        ones = jnp.pad(jnp.ones(self.shape, bool), 1)
        masks = jnp.stack(
            [ones[1 + a : 1 + a + height, 1 + b : 1 + b + width] for a, b in OFFSETS]
        )
        return jnp.where(masks, self.coefficients, 0)

    def __call__(self, x: Float[Array, "height width"]) -> Float[Array, "height width"]:
        check_signal("x", x, self.in_shape)
        c = self.coefficients.astype(x.dtype)
        padded = jnp.pad(x, 1)
        height, width = self.shape
        terms = [
            c[k] * padded[1 + a : 1 + a + height, 1 + b : 1 + b + width]
            for k, (a, b) in enumerate(OFFSETS)
            if k in self.offsets
        ]
        return sum(terms[1:], start=terms[0])

    @property
    def T(self) -> "StencilField":
        c = self.inside()
        transposed = [_shift(c[OFFSETS.index((-a, -b))], a, b) for a, b in OFFSETS]
        return StencilField(jnp.stack(transposed), self.five_point)

    def gershgorin(self) -> Float[Array, ""]:
        r"""$\max_{ij} \sum_k |c^k_{ij}| / c^{(0,0)}_{ij}$: Gershgorin's bound of the spectral radius
        of $D^{-1}A$, $D$ the (positive) centre coefficients."""
        return jnp.max(jnp.sum(jnp.abs(self.inside()), axis=0) / self.diagonal)

    def abs_norm_bound(self) -> Float[Array, ""]:
        r"""Schur's bound $\sqrt{R\,C}$ from the largest absolute row and column sums, rounded up."""
        magnitudes = jnp.abs(self.inside())
        rows = jnp.sum(magnitudes, axis=0)
        columns = sum(_shift(magnitudes[k], -a, -b) for k, (a, b) in enumerate(OFFSETS))
        return schur_norm_bound(rows.reshape(-1), columns.reshape(-1), 9, 9)

    def norm_bound(self) -> Float[Array, ""]:
        """Schur's bound (`abs_norm_bound`), certified."""
        return self.abs_norm_bound()

    def as_matrix(self) -> Float[Array, "n n"]:
        return matrix_by_columns(self, self.coefficients.dtype)

    @classmethod
    def from_matvec(
        cls,
        matvec: Callable[[Array], Array],
        shape: tuple[int, int],
        dtype,
        *,
        five_point: bool = False,
    ) -> "StencilField":
        r"""The field of a linear map known to have a $3 \times 3$ stencil (5-point: its
        corners zero), recovered exactly from the products with coloured probes: nine probes
        $\sum_{i \equiv r,\, j \equiv s \ (\mathrm{mod}\ 3)} e_{ij}$, or five probes
        $\sum_{i + 2j \equiv r \ (\mathrm{mod}\ 5)} e_{ij}$ for a 5-point map (the offsets of a
        stencil have distinct colours, so each entry of a product is one coefficient)."""
        rows, cols = _grid(shape)
        if five_point:
            colour = (rows + 2 * cols) % 5
            count = 5

            def colour_of(a, b):
                return (rows + a + 2 * (cols + b)) % 5
        else:
            colour = 3 * (rows % 3) + cols % 3
            count = 9

            def colour_of(a, b):
                return 3 * ((rows + a) % 3) + (cols + b) % 3

        probes = jnp.stack([colour == r for r in range(count)]).astype(dtype)
        products = jax.vmap(matvec)(probes)
        coefficients = []
        for k, (a, b) in enumerate(OFFSETS):
            if five_point and k not in FIVE_POINT:
                coefficients.append(jnp.zeros(shape, dtype))
                continue
            index = jnp.broadcast_to(colour_of(a, b), shape)
            coefficients.append(jnp.take_along_axis(products, index[None], axis=0)[0])
        return cls(jnp.stack(coefficients), five_point).masked()

    def masked(self) -> "StencilField":
        """The same field with the coefficients outside the image set to zero."""
        return StencilField(self.inside(), self.five_point)


def check_image_gradient(op: AbstractOperator) -> None:
    """`op` must be a first-order `jaxpde.Gradient`, neumann or dirichlet (its system is a
    5-point stencil field)."""
    if not isinstance(op, Gradient):
        raise TypeError(
            f"`op` must be a jaxpde.Gradient (the image gradient), got {type(op).__name__}."
        )
    if op.order != 1 or op.boundary == "periodic":
        raise ValueError(
            f"`op` must be a first-order Gradient with boundary 'neumann' or 'dirichlet' (its system is a 5-point "
            f"stencil field without wrap-around), got order {op.order}, boundary {op.boundary!r}; use "
            "jaxpde.Gradient(shape) (neumann)."
        )


def diffusion_stencil_2d(
    op: AbstractOperator, flux: AbstractFlux, tau: ArrayLike
) -> StencilField:
    r"""$I + \tau \nabla^\top G \nabla$ as a 5-point `StencilField`, for the first-order image
    gradient $\nabla$ = `op` (`jaxpde.Gradient`, neumann or dirichlet) and a linear flux
    $\Phi(s) = G s$: a frozen diffusivity (`jaxpde.fluxes.Frozen(flux, op(u))`, $g$ on the edges
    of each axis) or `jaxpde.fluxes.Linear`. The field is read off the operator itself
    (`StencilField.from_matvec`, five probes)."""
    check_image_gradient(op)
    if not isinstance(flux, (Frozen, Linear)):
        raise TypeError(
            "`flux` must be linear, `jaxpde.fluxes.Frozen(flux, op(u))` (the semi-implicit system) or "
            f"`jaxpde.fluxes.Linear`, got {type(flux).__name__}; freeze a nonlinear flux first."
        )
    tau = as_float_array(tau)
    dtype = jnp.result_type(op.h.dtype, tau.dtype)

    def matvec(v):
        return v + tau.astype(v.dtype) * op.T(flux(op(v)))

    return StencilField.from_matvec(matvec, op.shape, dtype, five_point=True)


def coarse_size(n: int) -> int:
    r"""The coarse points of an axis of $n$ fine points: the even-indexed points and, for even
    $n$, the last point too, $\lfloor n/2 \rfloor + 1$ (so that every other fine point lies
    between two coarse points; 2 points stay 2)."""
    return n // 2 + 1


def coarse_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """The coarse grid of an image (`coarse_size` of each axis)."""
    return coarse_size(shape[0]), coarse_size(shape[1])


def _between(n: int) -> int:
    r"""The fine points of an axis that lie between two coarse points: $1, 3, \dots, 2k - 1$,
    $k = \lfloor (n - 1)/2 \rfloor$."""
    return (n - 1) // 2


def _coarse_part(x: Array, axis: int) -> Array:
    """The entries of `x` at the coarse points of `axis` (`coarse_size`)."""
    n, k = x.shape[axis], _between(x.shape[axis])
    part = jax.lax.slice_in_dim(x, 0, 2 * k + 1, 2, axis)
    if n % 2 == 0 and n > 1:
        part = jnp.concatenate([part, jax.lax.slice_in_dim(x, n - 1, n, 1, axis)], axis)
    return part


def _between_part(x: Array, axis: int) -> Array:
    """The entries of `x` at the points between two coarse points of `axis` (`_between`)."""
    k = _between(x.shape[axis])
    return jax.lax.slice_in_dim(x, min(1, x.shape[axis]), max(2 * k, 1), 2, axis)


def _interleave(coarse: Array, between: Array, axis: int) -> Array:
    """The inverse of `_coarse_part` and `_between_part`: the fine array along `axis`."""
    k = between.shape[axis]
    head = jax.lax.slice_in_dim(coarse, 0, k, 1, axis)
    pairs = jnp.stack([head, between], axis=axis + 1)
    shape = list(head.shape)
    shape[axis] = 2 * k
    rest = jax.lax.slice_in_dim(coarse, k, coarse.shape[axis], 1, axis)
    return jnp.concatenate([pairs.reshape(shape), rest], axis)


def level_shapes(shape: tuple[int, int], coarsest: int) -> tuple[tuple[int, int], ...]:
    """The grid shapes from fine to coarse: halve while the grid has more than `coarsest`
    points. A `ValueError` names the fix when the coarsest grid would be too large to solve
    densely (it cannot happen for `coarsest <= DENSE_LIMIT`)."""
    shapes = [tuple(shape)]
    while shapes[-1][0] * shapes[-1][1] > coarsest:
        smaller = coarse_shape(shapes[-1])
        if smaller == shapes[-1]:
            break
        shapes.append(smaller)
    return tuple(shapes)


def _collapse(c: Float[Array, "9 h w"], along: int) -> tuple[Array, Array, Array]:
    """The stencil summed along axis `along` (0: the columns of each stencil row; 1: the rows
    of each stencil column): the three sums before, at and after the centre line."""
    grid = c.reshape(3, 3, *c.shape[1:])
    sums = grid.sum(axis=1) if along == 0 else grid.sum(axis=0)
    return sums[0], sums[1], sums[2]


def _ratio(numerator: Array, denominator: Array) -> Array:
    r"""$-n / d$, and 0 where $d$ is not positive (a weight stays finite whatever the field;
    any finite weights keep the cycle a contraction)."""
    safe = jnp.where(denominator > 0, denominator, 1)
    return jnp.where(denominator > 0, -numerator / safe, 0)


class BlackBoxInterpolation(AbstractOperator):
    r"""Operator-dependent interpolation from the coarse grid to the $H \times W$ points of a
    stencil field $A$ (Dendy's black-box multigrid). On each axis the coarse points are the
    even-indexed points and, for an even size, the last point (`coarse_size`), so that every
    other point lies between two coarse points; coarse point $(I, J)$ sits at $(2I, 2J)$
    (the last one of an even axis at the end). Then

    - coarse points: $(Px)_{2I, 2J} = x_{IJ}$;
    - between two coarse points on a column, $(2I{+}1, 2J)$: the stencil collapsed along
      the row, $n, m, s$ = the sums of its north, middle and south rows:
      $(Px) = (-n\, x_{IJ} - s\, x_{I+1,J}) / m$; on a row, $(2I, 2J{+}1)$, likewise with
      the column sums;
    - centres $(2I{+}1, 2J{+}1)$: the local equation $(A P x)_{2I+1, 2J+1} = 0$ solved for
      the centre, with its eight neighbours interpolated as above.

    A weight whose denominator is not positive is set to 0. The injection rows make $P$
    injective, so the Galerkin levels $P^\top A P / 4$ stay symmetric positive definite.
    Its adjoint `P.T` is `BlackBoxRestriction`.

    **Arguments:**

    - `vertical`: shape `(2, k_H, H_c)`: the north and south weights of the points
      $(2I + 1, 2J)$ ($k_H = \lfloor (H - 1)/2 \rfloor$, $H_c$ = `coarse_size(H)`).
    - `horizontal`: shape `(2, H_c, k_W)`: west and east weights of $(2I, 2J + 1)$.
    - `centre`: shape `(4, k_H, k_W)`: the NW, NE, SW, SE weights of $(2I + 1, 2J + 1)$.
    - `shape`: the fine image shape $(H, W)$.

    Reference: Dendy, J. Comput. Phys. 48, 1982; de Zeeuw, J. Comput. Appl. Math. 33, 1990.
    """

    vertical: Float[Array, "2 between_rows coarse_cols"]
    horizontal: Float[Array, "2 coarse_rows between_cols"]
    centre: Float[Array, "4 between_rows between_cols"]
    shape: tuple[int, int] = eqx.field(static=True)

    @property
    def coarse_shape(self) -> tuple[int, int]:
        return coarse_shape(self.shape)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.coarse_shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def row_length(self) -> int:
        # A row of P holds at most 4 entries, a column at most 9.
        return 9

    @classmethod
    def from_operator(cls, A: StencilField) -> "BlackBoxInterpolation":
        """The interpolation of the field `A`."""
        c = A.inside()
        oe = _coarse_part(
            _between_part(c, 1), 2
        )  # the stencils of the points (2I + 1, 2J)
        eo = _between_part(_coarse_part(c, 1), 2)  # (2I, 2J + 1)
        oo = _between_part(_between_part(c, 1), 2)  # (2I + 1, 2J + 1)
        north, middle, south = _collapse(oe, 0)
        vertical = jnp.stack([_ratio(north, middle), _ratio(south, middle)])
        west, middle, east = _collapse(eo, 1)
        horizontal = jnp.stack([_ratio(west, middle), _ratio(east, middle)])
        # The interpolated neighbours of each centre: N = (2I, 2J+1), S = (2I+2, 2J+1),
        # W = (2I+1, 2J), E = (2I+1, 2J+2); all four lie between two coarse points.
        rows, cols = oo.shape[1:]
        n_w, n_e = horizontal[0, :rows], horizontal[1, :rows]
        s_w, s_e = horizontal[0, 1 : rows + 1], horizontal[1, 1 : rows + 1]
        w_n, w_s = vertical[0, :, :cols], vertical[1, :, :cols]
        e_n, e_s = vertical[0, :, 1 : cols + 1], vertical[1, :, 1 : cols + 1]
        k = {offset: oo[index] for index, offset in enumerate(OFFSETS)}
        corners = [
            k[(-1, -1)] + k[(-1, 0)] * n_w + k[(0, -1)] * w_n,
            k[(-1, 1)] + k[(-1, 0)] * n_e + k[(0, 1)] * e_n,
            k[(1, -1)] + k[(1, 0)] * s_w + k[(0, -1)] * w_s,
            k[(1, 1)] + k[(1, 0)] * s_e + k[(0, 1)] * e_s,
        ]
        centre = jnp.stack([_ratio(corner, k[(0, 0)]) for corner in corners])
        return cls(vertical, horizontal, centre, A.shape)

    def __call__(
        self, coarse: Float[Array, "coarse_rows coarse_cols"]
    ) -> Float[Array, "height width"]:
        """$P x$."""
        check_signal("coarse", coarse, self.in_shape)
        rows, cols = _between(self.shape[0]), _between(self.shape[1])
        v, h, c = (
            w.astype(coarse.dtype)
            for w in (self.vertical, self.horizontal, self.centre)
        )
        x = coarse
        oe = v[0] * x[:rows] + v[1] * x[1 : rows + 1]
        eo = h[0] * x[:, :cols] + h[1] * x[:, 1 : cols + 1]
        oo = (
            c[0] * x[:rows, :cols]
            + c[1] * x[:rows, 1 : cols + 1]
            + c[2] * x[1 : rows + 1, :cols]
            + c[3] * x[1 : rows + 1, 1 : cols + 1]
        )
        return _interleave(_interleave(x, eo, 1), _interleave(oe, oo, 1), 0)

    @property
    def T(self) -> "BlackBoxRestriction":
        return BlackBoxRestriction(self)

    def abs_norm_bound(self) -> Float[Array, ""]:
        r"""Schur's bound of $|P|$: rows sum at most $R = \max(1, \max |w|\text{-sums})$, columns
        at most $C$ = the largest sum over the nine fine points a coarse point reaches."""
        v, h, c = jnp.abs(self.vertical), jnp.abs(self.horizontal), jnp.abs(self.centre)
        row = jnp.maximum(
            1.0,
            jnp.maximum(
                jnp.max(jnp.sum(v, 0), initial=0), jnp.max(jnp.sum(h, 0), initial=0)
            ),
        )
        row = jnp.maximum(row, jnp.max(jnp.sum(c, 0), initial=0))
        column = (
            1
            + 2 * jnp.max(v, initial=0)
            + 2 * jnp.max(h, initial=0)
            + 4 * jnp.max(c, initial=0)
        )
        return schur_norm_bound(jnp.reshape(row, (1,)), jnp.reshape(column, (1,)), 4, 9)

    def norm_bound(self) -> Float[Array, ""]:
        return self.abs_norm_bound()

    def as_matrix(self) -> Float[Array, "n nc"]:
        return matrix_by_columns(self, self.vertical.dtype)


class BlackBoxRestriction(AbstractOperator):
    r"""$P^\top$ of a `BlackBoxInterpolation` $P$ (the exact adjoint, by `jax.linear_transpose`);
    the multigrid restriction is $R = P^\top / 4$."""

    interpolation: BlackBoxInterpolation

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.interpolation.out_shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.interpolation.in_shape

    @property
    def row_length(self) -> int:
        return self.interpolation.row_length

    def __call__(
        self, fine: Float[Array, "height width"]
    ) -> Float[Array, "coarse_rows coarse_cols"]:
        check_signal("fine", fine, self.in_shape)
        structure = jax.ShapeDtypeStruct(self.out_shape, fine.dtype)
        (coarse,) = jax.linear_transpose(self.interpolation, structure)(fine)
        return coarse

    @property
    def T(self) -> BlackBoxInterpolation:
        return self.interpolation

    def abs_norm_bound(self) -> Float[Array, ""]:
        return self.interpolation.abs_norm_bound()

    def norm_bound(self) -> Float[Array, ""]:
        return self.interpolation.norm_bound()

    def as_matrix(self) -> Float[Array, "nc n"]:
        return self.interpolation.as_matrix().T


def galerkin_2d(A: StencilField, P: BlackBoxInterpolation) -> StencilField:
    r"""The Galerkin coarse operator $R A P$, $R = P^\top / 4$: a 9-point field on the coarse
    grid, read off from nine coloured probes (`StencilField.from_matvec`; row $(I, J)$ of
    $RAP$ reaches coarse points within one of $(I, J)$)."""

    def matvec(x):
        return P.T(A(P(x))) / 4

    return StencilField.from_matvec(matvec, P.coarse_shape, A.coefficients.dtype)


def _colours(A: StencilField, smoother: str) -> tuple[Array, int]:
    """The colour of each point and the number of colours: 1 for Jacobi, red-black
    $(i + j) \\bmod 2$ for a 5-point field, $2 (i \\bmod 2) + (j \\bmod 2)$ for a 9-point one."""
    rows, cols = _grid(A.shape)
    if smoother == "jacobi":
        return jnp.zeros(A.shape, jnp.int32), 1
    if A.five_point:
        return jnp.broadcast_to((rows + cols) % 2, A.shape), 2
    return jnp.broadcast_to(2 * (rows % 2) + cols % 2, A.shape), 4


def tridiagonal_lines(
    lower: Float[Array, "n lines"],
    diagonal: Float[Array, "n lines"],
    upper: Float[Array, "n lines"],
    rhs: Float[Array, "n lines"],
) -> Float[Array, "n lines"]:
    r"""Solve the tridiagonal systems $l_i x_{i-1} + d_i x_i + u_i x_{i+1} = b_i$ along axis 0,
    one per column (the Thomas algorithm, stable without pivoting for the symmetric positive
    definite blocks of the smoother), as two `lax.scan`s vectorised over the columns; written
    with XLA operations only (no LAPACK custom call)."""

    def forward(carry, row):
        upper_prev, rhs_prev = carry
        l, d, u, b = row
        pivot = d - l * upper_prev
        carry = (u / pivot, (b - l * rhs_prev) / pivot)
        return carry, carry

    zero = jnp.zeros_like(rhs[0])
    _, (modified_upper, modified_rhs) = jax.lax.scan(
        forward, (zero, zero), (lower, diagonal, upper, rhs)
    )

    def backward(x_next, row):
        u, b = row
        x = b - u * x_next
        return x, x

    _, x = jax.lax.scan(backward, zero, (modified_upper, modified_rhs), reverse=True)
    return x


def _line_solve(A: StencilField, r: Array, axis: int) -> Array:
    r"""$T^{-1} r$ for the tridiagonal blocks $T$ of `A` along `axis` (1: each row is a line,
    coupled through the west, centre and east coefficients; 0: each column)."""
    c = A.inside().astype(r.dtype)
    if axis == 0:
        return tridiagonal_lines(c[1], c[4], c[7], r)
    return tridiagonal_lines(c[3].T, c[4].T, c[5].T, r.T).T


def smooth_2d(
    A: StencilField,
    x: Float[Array, "height width"],
    f: Float[Array, "height width"],
    scale: Float[Array, "height width"],
    sweeps: int,
    smoother: str,
    *,
    reverse: bool = False,
) -> Float[Array, "height width"]:
    r"""`sweeps` smoothing sweeps $x \leftarrow x + \omega M (f - Ax)$: damped Jacobi
    ($M = D^{-1}$), multicolour Gauss-Seidel ($M = D^{-1}$ on one colour at a time; points of a
    colour never couple) or alternating zebra-line Gauss-Seidel (`"line"`: $M = T^{-1}$ on the
    even rows, then the odd rows, the even columns, the odd columns, $T$ the tridiagonal
    block of a line; lines of one parity never couple). `scale` is the per-point factor of
    $M(f - Ax)$: $\omega D^{-1}$ for the point smoothers, $\omega$ for lines. `reverse` runs the
    colours (lines) backwards: the adjoint sweep in the energy inner product. One
    `fori_loop` over the steps, so that the program holds one product with $A$ whatever the
    sweeps."""
    if sweeps == 0:
        return x
    scale = scale.astype(x.dtype)
    if smoother == "line":
        rows, cols = _grid(A.shape)
        steps = [
            (1, rows % 2 == 0),
            (1, rows % 2 == 1),
            (0, cols % 2 == 0),
            (0, cols % 2 == 1),
        ]
        steps = steps[::-1] if reverse else steps

        def sweep(_, x):
            for axis, lines in steps:
                x = x + jnp.where(lines, scale * _line_solve(A, f - A(x), axis), 0)
            return x

        return jax.lax.fori_loop(0, sweeps, sweep, x)
    colour, count = _colours(A, smoother)

    def step(k, x):
        update = scale * (f - A(x))
        if count == 1:
            return x + update
        c = count - 1 - k % count if reverse else k % count
        return x + jnp.where(colour == c, update, 0)

    return jax.lax.fori_loop(0, sweeps * count, step, x)


class MultigridHierarchy2D(eqx.Module):
    """The levels of a 2-D multigrid solver for one image system: the stencil fields from
    fine to coarse, the interpolation of each transfer, the relaxation $\\omega$ of each
    smoothed level and the per-point factor of its sweeps (`smooth_2d`'s `scale`:
    $\\omega D^{-1}$ for point smoothers, $\\omega$ for lines), and the inverse Cholesky
    factor $L^{-1}$ of the coarsest operator ($A = L L^\\top$)."""

    operators: tuple[StencilField, ...]
    interpolations: tuple[BlackBoxInterpolation, ...]
    relaxations: tuple[Float[Array, ""], ...]
    scalings: tuple[Array, ...]
    coarse_inverse: Float[Array, "nc nc"]
    smoother: str = eqx.field(static=True)
    pre_smoothing: int = eqx.field(static=True)
    post_smoothing: int = eqx.field(static=True)

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        return tuple(A.shape for A in self.operators)

    def coarse_solve(self, f: Float[Array, "rows cols"]) -> Float[Array, "rows cols"]:
        """$A^{-1} f = L^{-\\top} L^{-1} f$ on the coarsest level."""
        inverse = self.coarse_inverse.astype(f.dtype)
        return (inverse.T @ (inverse @ f.reshape(-1))).reshape(f.shape)

    def coarsen(
        self, level: int, fine: Float[Array, "height width"]
    ) -> Float[Array, "rows cols"]:
        r"""$R_\ell$ `fine` $= P_\ell^\top$ `fine` $/ 4$."""
        return self.interpolations[level].T(fine) / 4

    def interpolate(
        self, level: int, coarse: Float[Array, "rows cols"]
    ) -> Float[Array, "height width"]:
        r"""$P_\ell$ `coarse`."""
        return self.interpolations[level](coarse)


def build_hierarchy_2d(
    A: StencilField,
    coarsest: int,
    smoother: str,
    weight: float,
    pre_smoothing: int,
    post_smoothing: int,
) -> MultigridHierarchy2D:
    """Black-box interpolation and Galerkin operator level by level until at most `coarsest`
    points, and the inverse Cholesky factor of the coarsest operator."""
    operators, interpolations = [A], []
    for _ in level_shapes(A.shape, coarsest)[1:]:
        interpolations.append(BlackBoxInterpolation.from_operator(operators[-1]))
        operators.append(galerkin_2d(operators[-1], interpolations[-1]))
    dtype = A.coefficients.dtype
    if smoother == "jacobi":
        relaxations = tuple(2 * weight / B.gershgorin() for B in operators[:-1])
    else:
        relaxations = tuple(jnp.asarray(2 * weight, dtype) for _ in operators[:-1])
    if smoother == "line":
        scalings = tuple(
            jnp.full(B.shape, omega) for omega, B in zip(relaxations, operators)
        )
    else:
        scalings = tuple(omega / B.diagonal for omega, B in zip(relaxations, operators))
    inverse = inverse_cholesky_factor(operators[-1].as_matrix())
    return MultigridHierarchy2D(
        tuple(operators),
        tuple(interpolations),
        relaxations,
        scalings,
        inverse,
        smoother,
        pre_smoothing,
        post_smoothing,
    )


def multigrid_cycle_2d(
    hierarchy: MultigridHierarchy2D,
    x: Float[Array, "height width"],
    f: Float[Array, "height width"],
    *,
    gamma: int = 1,
    level: int = 0,
) -> Float[Array, "height width"]:
    r"""One cycle from `level` down: pre-smoothing, the restricted residual, $\gamma$ cycles on
    the next coarser level from zero (the direct solve on the coarsest), the correction
    and post-smoothing (colours reversed)."""
    if level == len(hierarchy.operators) - 1:
        return hierarchy.coarse_solve(f)
    A, scale = hierarchy.operators[level], hierarchy.scalings[level]
    x = smooth_2d(A, x, f, scale, hierarchy.pre_smoothing, hierarchy.smoother)
    coarse_f = hierarchy.coarsen(level, f - A(x))

    def visit(_, e):
        return multigrid_cycle_2d(hierarchy, e, coarse_f, gamma=gamma, level=level + 1)

    error = jnp.zeros_like(coarse_f)
    error = visit(0, error) if gamma == 1 else jax.lax.fori_loop(0, gamma, visit, error)
    x = x + hierarchy.interpolate(level, error)
    return smooth_2d(
        A, x, f, scale, hierarchy.post_smoothing, hierarchy.smoother, reverse=True
    )


def full_multigrid_2d(
    hierarchy: MultigridHierarchy2D, f: Float[Array, "height width"], *, gamma: int = 1
) -> Float[Array, "height width"]:
    """The full-multigrid start: restrict $f$ to every level, solve on the coarsest, then on
    each finer level interpolate and run one cycle."""
    rhs = [f]
    for level in range(len(hierarchy.operators) - 1):
        rhs.append(hierarchy.coarsen(level, rhs[-1]))
    x = hierarchy.coarse_solve(rhs[-1])
    for level in range(len(hierarchy.operators) - 2, -1, -1):
        x = hierarchy.interpolate(level, x)
        x = multigrid_cycle_2d(hierarchy, x, rhs[level], gamma=gamma, level=level)
    return x


def error_propagation_2d(
    hierarchy: MultigridHierarchy2D, e: Float[Array, "height width"], *, gamma: int = 1
) -> Float[Array, "height width"]:
    """$E e$: one cycle applied to the error $e$ (the cycle with $f = 0$ and $x = e$)."""
    return multigrid_cycle_2d(hierarchy, e, jnp.zeros_like(e), gamma=gamma)


def energy_norm_2d(
    A: StencilField, e: Float[Array, "height width"]
) -> Float[Array, ""]:
    """$\\|e\\|_A = \\sqrt{e^\\top A e}$."""
    return jnp.sqrt(jnp.maximum(jnp.vdot(e, A(e)), 0))


def energy_power_iteration_2d(
    propagate: Callable[[Array], Array],
    A: StencilField,
    e: Float[Array, "height width"],
    iterations: int,
) -> Float[Array, " iterations"]:
    r"""Power iteration for $\|E\|_A$: from $e_0 = e / \|e\|_A$, $e_{k+1} = E e_k / \|E e_k\|_A$.
    Returns the ratios $\|E e_k\|_A$, $k = 0, \dots,$ `iterations` $- 1$: lower bounds of
    $\|E\|_A$ up to rounding, rising to it for a symmetric cycle."""
    iterations = check_int("iterations", iterations, minimum=1)

    def normalised(e):
        norm = energy_norm_2d(A, e)
        return norm, e / norm

    def step(e, _):
        ratio, e = normalised(propagate(e))
        return e, ratio

    _, ratios = jax.lax.scan(step, normalised(e)[1], length=iterations)
    return ratios


class Multigrid2D(AbstractMultigrid):
    """A black-box multigrid solver for image systems (configuration; all fields static).

    **Arguments:**

    - `smoother`: `"red-black"` (multicolour Gauss-Seidel: red-black on 5-point fields, four
      colours on 9-point fields), `"jacobi"` (damped Jacobi) or `"line"` (alternating zebra-line
      Gauss-Seidel: even rows, odd rows, even columns, odd columns, each line solved exactly;
      robust where the couplings are strongly anisotropic, e.g. the per-edge Perona-Malik
      diffusivity of a pre-smoothed image along its edges, at several times the cost of a
      point sweep).
    - `pre_smoothing`, `post_smoothing`: sweeps $\\nu_1, \\nu_2$ (V(2,2) by default).
    - `cycle`: `"V"` or `"W"`.
    - `weight`: the relative damping $\\theta \\in (0, 1)$ (`None`: 1/2 for Gauss-Seidel, point or
      line, $\\omega = 1$; 4/5 for Jacobi, $\\omega = 4/5$ on the 5-point Laplacian).
    - `coarsest`: stop coarsening at this many points or fewer (solved directly; at most
      `DENSE_LIMIT`).
    - `rtol`: stop at $\\|f - Ax\\| \\le$ `rtol` $\\|f\\|$ (`None`: $1000\\varepsilon$ times the
      largest absolute row sum of $A$).
    - `max_cycles`: the most cycles; the result is `Result.max_steps_reached` after them.
    - `full_multigrid`: start from the full-multigrid approximation (when no `x0` is given).
    - `throw`: raise when the tolerance is not reached.
    """

    smoother: str = eqx.field(static=True, default="red-black")
    pre_smoothing: int = eqx.field(static=True, default=2)
    post_smoothing: int = eqx.field(static=True, default=2)
    cycle: str = eqx.field(static=True, default="V")
    weight: float | None = eqx.field(static=True, default=None)
    coarsest: int = eqx.field(static=True, default=64)
    rtol: float | None = eqx.field(static=True, default=None)
    max_cycles: int = eqx.field(static=True, default=50)
    full_multigrid: bool = eqx.field(static=True, default=True)
    throw: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if self.smoother not in SMOOTHERS:
            raise ValueError(
                f"`smoother` must be one of {SMOOTHERS}, got {self.smoother!r}."
            )
        if self.cycle not in CYCLES:
            raise ValueError(f"`cycle` must be 'V' or 'W', got {self.cycle!r}.")
        check_int("pre_smoothing", self.pre_smoothing, minimum=0)
        check_int("post_smoothing", self.post_smoothing, minimum=0)
        if self.pre_smoothing + self.post_smoothing == 0:
            raise ValueError(
                "`pre_smoothing + post_smoothing` must be at least 1 (a cycle needs a smoother)."
            )
        if self.weight is not None and not 0 < self.weight < 1:
            raise ValueError(
                f"`weight` must lie in (0, 1) (relative damping; every sweep then contracts), got {self.weight!r}."
            )
        check_int("coarsest", self.coarsest, minimum=1)
        if self.coarsest > DENSE_LIMIT:
            raise ValueError(
                f"`coarsest` must be at most {DENSE_LIMIT} (the coarsest level is solved densely), got {self.coarsest}."
            )
        check_int("max_cycles", self.max_cycles, minimum=1)
        check_rtol(self.rtol)

    @property
    def relative_weight(self) -> float:
        return DEFAULT_WEIGHTS[self.smoother] if self.weight is None else self.weight

    @property
    def gamma(self) -> int:
        return CYCLES[self.cycle]

    def check_operator(self, op: AbstractOperator) -> None:
        """`op` must be a first-order `jaxpde.Gradient`, neumann or dirichlet."""
        check_image_gradient(op)

    def assemble(self, op: AbstractOperator, flux: AbstractFlux, tau: ArrayLike) -> StencilField:
        """The stencil field $I + \\tau \\nabla^\\top G \\nabla$ (`diffusion_stencil_2d`)."""
        return diffusion_stencil_2d(op, flux, tau)

    def hierarchy(self, A: AbstractOperator) -> MultigridHierarchy2D:
        """The levels for the system `A` (setup once, cycle many times)."""
        if not isinstance(A, StencilField):
            raise TypeError(
                f"`A` must be a StencilField (e.g. `diffusion_stencil_2d(Gradient(shape), flux, tau)`), got "
                f"{type(A).__name__}."
            )
        return build_hierarchy_2d(
            A,
            self.coarsest,
            self.smoother,
            self.relative_weight,
            self.pre_smoothing,
            self.post_smoothing,
        )

    def default_rtol(self, A: StencilField, dtype) -> Array:
        row_sum = jnp.max(jnp.sum(jnp.abs(A.inside()), axis=0)).astype(dtype)
        return 1000 * float(np.finfo(dtype).eps) * row_sum

    @eqx.filter_jit
    def solve(
        self,
        A: StencilField,
        f: Float[Array, "height width"],
        x0: Float[Array, "height width"] | None = None,
        *,
        hierarchy: MultigridHierarchy2D | None = None,
        rtol: float | Float[Array, ""] | None = None,
        throw: bool | None = None,
    ) -> Solution:
        """Cycles from `x0` (`None`: the full-multigrid start, or zero) until the relative
        residual is at most `rtol` or `max_cycles` have run. Returns a `Solution`: the cycles
        as its `iterations`, the final residual $\\|f - Ax\\|$, and the relative residuals
        $\\|f - Ax_k\\| / \\|f\\|$, $k = 0, \\dots,$ `iterations`, as its `history` (NaN
        beyond). `hierarchy` reuses levels built by `self.hierarchy(A)`."""
        check_signal("f", f, A.shape)
        hierarchy = self.hierarchy(A) if hierarchy is None else hierarchy
        if x0 is None:
            x0 = (
                full_multigrid_2d(hierarchy, f, gamma=self.gamma)
                if self.full_multigrid
                else jnp.zeros_like(f)
            )
        else:
            check_signal("x0", x0, A.shape)
        rtol = self.rtol if rtol is None else rtol
        rtol = (
            self.default_rtol(A, f.dtype)
            if rtol is None
            else jnp.asarray(rtol, f.dtype)
        )
        scale = jnp.maximum(l2_norm(f), jnp.finfo(f.dtype).tiny)
        history = jnp.full(self.max_cycles + 1, jnp.nan, f.dtype)
        first = l2_norm(f - A(x0)) / scale
        history = history.at[0].set(first)

        def unfinished(carry):
            _, k, relative, _ = carry
            return (k < self.max_cycles) & (relative > rtol) & jnp.isfinite(relative)

        def step(carry):
            x, k, _, history = carry
            x = multigrid_cycle_2d(hierarchy, x, f, gamma=self.gamma)
            relative = l2_norm(f - A(x)) / scale
            return x, k + 1, relative, history.at[k + 1].set(relative)

        x, cycles, relative, history = jax.lax.while_loop(
            unfinished, step, (x0, jnp.array(0), first, history)
        )
        ok = relative <= rtol
        result = Result.where(ok, Result.successful, Result.max_steps_reached)
        if self.throw if throw is None else throw:
            x = result.error_if(x, ~ok)
        return Solution(x, result, cycles, relative * scale, history)
