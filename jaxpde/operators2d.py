r"""Linear operators on images: the discrete gradient and (learnable) 2-D stencils.

Samples are images of shape `(H, W)` (or `(c, H, W)` with channels); like the 1-D
operators of `jaxpde.operators`, every operator knows its exact adjoint (`op.T`), its
dense matrix on flattened (row-major) samples and a certified bound of its norm, so the
diffusion block, the schemes and the verification layer use them unchanged.

- `Gradient`: $\nabla_m u = (D_m^{(H)} u,\; u D_m^{(W)\top})$, the 1-D derivative of
  `jaxpde.Derivative` along each axis, stacked (zero-padded to a common shape). Its
  adjoint `GradientAdjoint` is minus the discrete divergence, and
  $\nabla_m^\top\nabla_m = D^\top D \otimes I + I \otimes D^\top D$ (a Kronecker sum), so
  $\|\nabla_m\|^2 = \|D_m^{(H)}\|^2 + \|D_m^{(W)}\|^2$ exactly (`proofs/gradient-2d-norm.md`).
- `Stencil2D`: a 2-D correlation $(Ku)_{i} = \sum_{j} a_{j}\tilde u_{i + j + o}$,
  $i, j \in \mathbb{Z}^2$, with the boundary conventions of `jaxpde.Stencil` on each axis.

Reference: Alt, Peter, Weickert, Schrader, SSVM 2021, arXiv:2103.15419 (Section 2:
the gradient and divergence of the image diffusion PDE; Section 3: the block).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._bounds import round_up, symbol_norm_bound_2d
from ._checks import (
    BOUNDARIES,
    as_float_array,
    check_int,
    check_positive_float,
    check_signal,
)
from .operators import (
    AbstractOperator,
    Derivative,
    matrix_by_columns,
    stencil_schur_bound,
)

_HIGHEST = jax.lax.Precision.HIGHEST

def _check_boundary(boundary: object) -> str:
    if boundary not in BOUNDARIES:
        raise ValueError(f"`boundary` must be one of {BOUNDARIES}, got {boundary!r}.")
    return boundary  # pyright: ignore[reportReturnType]


def _check_shape(shape: object) -> tuple[int, int]:
    """`(H, W)` as two Python ints >= 1, else an error naming `shape`."""
    try:
        items = tuple(shape)  # pyright: ignore[reportArgumentType]
    except TypeError:
        raise TypeError(f"`shape` must be a pair (H, W) of ints, got {shape!r}.") from None
    if len(items) != 2:
        raise ValueError(
            f"`shape` must be the image size (H, W), two ints (one image; channels and batches "
            f"are not part of it), got {shape!r}."
        )
    return check_int("shape[0]", items[0], minimum=1), check_int("shape[1]", items[1], minimum=1)


def _along(op: AbstractOperator, u: Array, axis: int) -> Array:
    """The 1-D operator `op` applied along `axis` (0: columns, 1: rows) of a 2-D array."""
    if axis == 0:
        return jax.vmap(op, in_axes=1, out_axes=1)(u)
    return jax.vmap(op)(u)


def _pad_to(x: Array, shape: tuple[int, int]) -> Array:
    """`x` zero-padded at the end of both axes to `shape`."""
    return jnp.pad(x, [(0, shape[0] - x.shape[0]), (0, shape[1] - x.shape[1])])


class Gradient(AbstractOperator):
    r"""The discrete image gradient $\nabla_m u = (D_m^{(H)} u,\; u\,D_m^{(W)\top})$.

    Component 0 is `Derivative(order, H, h=h, boundary=boundary)` applied along axis 0
    (each column), component 1 is `Derivative(order, W, h=h, boundary=boundary)` along
    axis 1 (each row). The two components are stacked, zero-padded at the end of each
    axis to a common shape `(R, C)`: neumann $(H, W)$ (for $m = 1$ Chambolle's gradient,
    the last difference set to 0, and $\nabla^\top\nabla$ the 5-point Neumann Laplacian),
    periodic $(H, W)$, dirichlet $(H + m, W + m)$.

    Norm: $\nabla_m^\top\nabla_m = D^{(H)\top}D^{(H)} \otimes I_W + I_H \otimes D^{(W)\top}D^{(W)}$, so
    $\|\nabla_m\|^2 = \|D_m^{(H)}\|^2 + \|D_m^{(W)}\|^2$ (exact for $m = 1$ or periodic, where the
    1-D norms are; $< 8/h^2$ for $m = 1$, $= 8/h^2$ periodic with even $H, W$).
    Proof: `proofs/gradient-2d-norm.md`.

    **Arguments:**

    - `shape`: the image size `(H, W)`, each at least `order + 1`.
    - `h`: grid spacing (both axes).
    - `boundary`: `"neumann"`, `"periodic"` or `"dirichlet"` (see `jaxpde.Derivative`).
    - `order`: $m \ge 1$.

    Reference: A. Chambolle, "An algorithm for total variation minimization and
    applications", JMIV 20, 2004 (the discrete gradient and divergence);
    arXiv:2103.15419.
    """

    order: int = eqx.field(static=True)
    shape: tuple[int, int] = eqx.field(static=True)
    dy: Derivative
    dx: Derivative

    def __init__(
        self, shape: tuple[int, int], *, h: float = 1.0, boundary: str = "neumann", order: int = 1
    ):
        order = check_int("order", order, minimum=1)
        shape = _check_shape(shape)
        if min(shape) < order + 1:
            raise ValueError(
                f"`shape` must be at least ({order + 1}, {order + 1}): a derivative of order {order} "
                f"needs order + 1 grid points per axis, got {shape}; use a larger image or a lower order."
            )
        h = check_positive_float("h", h)
        boundary = _check_boundary(boundary)
        self.order = order
        self.shape = shape
        self.dy = Derivative(order, shape[0], h=h, boundary=boundary)
        self.dx = Derivative(order, shape[1], h=h, boundary=boundary)

    @property
    def h(self) -> Float[Array, ""]:
        """The grid spacing."""
        return self.dy.h

    @property
    def boundary(self) -> str:
        return self.dy.boundary

    @property
    def component_shapes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Natural (unpadded) shapes of the y and x differences."""
        (height, width), rows, cols = self.shape, self.dy.out_shape[0], self.dx.out_shape[0]
        return (rows, width), (height, cols)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        (rows, _), (_, cols) = self.component_shapes
        common = (max(rows, self.shape[0]), max(cols, self.shape[1]))
        return (2, *common)

    def __call__(self, u: Float[Array, "height width"]) -> Float[Array, "2 rows cols"]:
        check_signal("u", u, self.in_shape)
        common = self.out_shape[1:]
        gy = _pad_to(_along(self.dy, u, 0), common)
        gx = _pad_to(_along(self.dx, u, 1), common)
        return jnp.stack([gy, gx])

    @property
    def T(self) -> "GradientAdjoint":
        return GradientAdjoint(self)

    def norm_exact(self) -> bool:
        """Whether `norm_bound()` is the exact norm (up to rounding): $m = 1$ or periodic."""
        return self.dy.norm_exact() and self.dx.norm_exact()

    def norm_bound(self) -> Float[Array, ""]:
        r"""$\sqrt{\nu_H^2 + \nu_W^2}$ rounded up, with $\nu$ the 1-D `Derivative.norm_bound()`
        of each axis (capped by the Schur bound `abs_norm_bound()`, which it can only
        exceed by rounding when $\|\nabla_m\| = \sqrt 2 (2/h)^m$)."""
        ny, nx = self.dy.norm_bound(), self.dx.norm_bound()
        # nu_H, nu_W are certified (rounded up in their dtype); the two squares, the sum and
        # the square root are four roundings (`proofs/gradient-2d-norm.md`, Step 6).
        bound = round_up(jnp.sqrt(ny * ny + nx * nx), 4)
        return jnp.minimum(bound, self.abs_norm_bound())

    def abs_norm_bound(self) -> Float[Array, ""]:
        r"""Schur's bound of $|\nabla_m|$: a row holds one difference stencil (row sum at most
        $S = \sum_j |a_j| = (2/h)^m$), a column meets both components (at most $2S$), so
        $\||\nabla_m|\| \le \sqrt{S \cdot 2S}$."""
        sy, sx = self.dy.abs_norm_bound(), self.dx.abs_norm_bound()
        # Each S is certified (rounded up by `Stencil.abs_norm_bound`); the sum, two square
        # roots and the product are four roundings (no underflow of a product of two S).
        return round_up(jnp.sqrt(jnp.maximum(sy, sx)) * jnp.sqrt(sy + sx), 4)

    def as_matrix(self) -> Float[Array, "rows cols"]:
        return matrix_by_columns(self, self.h.dtype)

    @property
    def row_length(self) -> int:
        # An entry of the gradient: one stencil (m + 1 products); of its adjoint: one
        # stencil per component, 2 (m + 1) products.
        return self.dy.row_length + self.dx.row_length


class GradientAdjoint(AbstractOperator):
    r"""$\nabla_m^\top = -\operatorname{div}_m$: crop the padding, apply the 1-D adjoints
    $D_m^\top$ along each axis and add. `.T` is the gradient again.

    **Arguments:**

    - `gradient`: the `Gradient` whose adjoint this is.
    """

    gradient: Gradient

    def __init__(self, gradient: Gradient):
        if not isinstance(gradient, Gradient):
            raise TypeError(f"`gradient` must be a jaxpde.Gradient, got {type(gradient).__name__}.")
        self.gradient = gradient

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.gradient.out_shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.gradient.in_shape

    def __call__(self, v: Float[Array, "2 rows cols"]) -> Float[Array, "height width"]:
        check_signal("v", v, self.in_shape)
        grad = self.gradient
        (ry, cy), (rx, cx) = grad.component_shapes
        return _along(grad.dy.T, v[0, :ry, :cy], 0) + _along(grad.dx.T, v[1, :rx, :cx], 1)

    @property
    def T(self) -> Gradient:
        return self.gradient

    def norm_exact(self) -> bool:
        return self.gradient.norm_exact()

    def norm_bound(self) -> Float[Array, ""]:
        """$\\|\\nabla^\\top\\| = \\|\\nabla\\|$: the gradient's bound."""
        return self.gradient.norm_bound()

    def abs_norm_bound(self) -> Float[Array, ""]:
        return self.gradient.abs_norm_bound()

    def as_matrix(self) -> Float[Array, "rows cols"]:
        return matrix_by_columns(self, self.gradient.h.dtype)

    @property
    def row_length(self) -> int:
        return self.gradient.row_length


class Stencil2D(AbstractOperator):
    r"""A 2-D convolution stencil (a learnable kernel) on images of shape `(H, W)`.

    A correlation $(Ku)_{i_1 i_2} = \sum_{j_1, j_2} a_{j_1 j_2}\,\tilde u_{i_1 + j_1 + o_1,\, i_2 + j_2 + o_2}$
    with, on each axis, the conventions of `jaxpde.Stencil`: `"neumann"` keeps the valid
    rows, $(H - k_h + 1) \times (W - k_w + 1)$; `"periodic"` wraps around ($H \times W$,
    offset $o$); `"dirichlet"` extends by zeros and keeps all $(H + k_h - 1) \times (W + k_w - 1)$
    outputs that touch $u$. The adjoint is the stencil with the kernel reversed along both
    axes and the channels swapped (neumann and dirichlet exchanged).

    **Arguments:**

    - `kernel`: shape `(kh, kw)` for one channel (input `(H, W)`), or
      `(c_out, c_in, kh, kw)` (input `(c_in, H, W)`, output `(c_out, R, C)`). Trainable.
    - `shape`: the image size `(H, W)`.
    - `boundary`: `"periodic"` (default), `"neumann"` or `"dirichlet"`.
    - `offset`: periodic only, $(o_1, o_2)$.

    Reference: H. Sedghi, V. Gupta, P. M. Long, "The singular values of convolutional
    layers", ICLR 2019, arXiv:1805.10408; arXiv:2103.15419.
    """

    kernel: Float[Array, "*channels kh kw"]
    shape: tuple[int, int] = eqx.field(static=True)
    boundary: str = eqx.field(static=True)
    offset: tuple[int, int] = eqx.field(static=True)

    def __init__(
        self,
        kernel: ArrayLike,
        shape: tuple[int, int],
        *,
        boundary: str = "periodic",
        offset: tuple[int, int] = (0, 0),
    ):
        kernel = as_float_array(kernel)
        if kernel.ndim not in (2, 4) or kernel.size == 0:
            raise ValueError(
                "`kernel` must have shape (kh, kw) or (c_out, c_in, kh, kw) with nonzero sizes, "
                f"got shape {kernel.shape}; a 1-D kernel belongs to jaxpde.Stencil."
            )
        shape = _check_shape(shape)
        boundary = _check_boundary(boundary)
        kh, kw = kernel.shape[-2:]
        if boundary == "neumann" and (shape[0] < kh or shape[1] < kw):
            raise ValueError(
                f"`shape` must be at least the kernel size ({kh}, {kw}) for a neumann stencil "
                f"(it keeps the (H - kh + 1) x (W - kw + 1) valid outputs), got {shape}."
            )
        try:
            offset = tuple(offset)
        except TypeError:
            raise TypeError(f"`offset` must be a pair of ints (o_1, o_2), got {offset!r}.") from None
        if len(offset) != 2:
            raise ValueError(f"`offset` must be a pair of ints (o_1, o_2), got {offset!r}.")
        offset = tuple(check_int(f"offset[{i}]", o, minimum=-(2**62)) for i, o in enumerate(offset))
        if offset != (0, 0) and boundary != "periodic":
            raise ValueError("`offset` is only meaningful for boundary='periodic'; leave it (0, 0).")
        self.kernel = kernel
        self.shape = shape
        self.boundary = boundary
        self.offset = offset  # pyright: ignore[reportAttributeAccessIssue]

    @property
    def kernel_shape(self) -> tuple[int, int]:
        """$(k_h, k_w)$."""
        return self.kernel.shape[-2], self.kernel.shape[-1]

    @property
    def rows(self) -> tuple[int, int]:
        """The output image size `(R, C)`."""
        (height, width), (kh, kw) = self.shape, self.kernel_shape
        if self.boundary == "neumann":
            return height - kh + 1, width - kw + 1
        if self.boundary == "dirichlet":
            return height + kh - 1, width + kw - 1
        return height, width

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.shape if self.kernel.ndim == 2 else (self.kernel.shape[1], *self.shape)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.rows if self.kernel.ndim == 2 else (self.kernel.shape[0], *self.rows)

    def _extend(self, u: Array) -> Array:
        """The extension $\\tilde u$ of `u` (last two axes) by the boundary convention."""
        kh, kw = self.kernel_shape
        lead = [(0, 0)] * (u.ndim - 2)
        if self.boundary == "neumann":
            return u
        if self.boundary == "dirichlet":
            return jnp.pad(u, [*lead, (kh - 1, kh - 1), (kw - 1, kw - 1)])
        s1, s2 = self.offset[0] % self.shape[0], self.offset[1] % self.shape[1]
        rolled = jnp.concatenate([u[..., s1:, :], u[..., :s1, :]], axis=-2)
        rolled = jnp.concatenate([rolled[..., s2:], rolled[..., :s2]], axis=-1)
        return jnp.pad(rolled, [*lead, (0, kh - 1), (0, kw - 1)], mode="wrap")

    def __call__(self, u: Float[Array, "*c_in height width"]) -> Float[Array, "*c_out rows cols"]:
        check_signal("u", u, self.in_shape)
        kernel = self.kernel.astype(u.dtype)
        extended = self._extend(u)
        (rows, cols), (kh, kw) = self.rows, self.kernel_shape
        taps = []
        for j1 in range(kh):
            for j2 in range(kw):
                window = extended[..., j1 : j1 + rows, j2 : j2 + cols]
                if kernel.ndim == 2:
                    taps.append(kernel[j1, j2] * window)
                else:
                    taps.append(jnp.einsum("oc,crs->ors", kernel[:, :, j1, j2], window, precision=_HIGHEST))
        return sum(taps[1:], start=taps[0])

    @property
    def T(self) -> "Stencil2D":
        reverse = self.kernel[..., ::-1, ::-1]
        if self.kernel.ndim == 4:
            reverse = jnp.swapaxes(reverse, 0, 1)
        if self.boundary == "neumann":
            return Stencil2D(reverse, self.rows, boundary="dirichlet")
        if self.boundary == "dirichlet":
            return Stencil2D(reverse, self.rows, boundary="neumann")
        (kh, kw), (o1, o2) = self.kernel_shape, self.offset
        return Stencil2D(reverse, self.shape, boundary="periodic", offset=(-(kh - 1) - o1, -(kw - 1) - o2))

    def symbol(self, theta: Float[Array, "f 2"]) -> Array:
        r"""The symbol $A(\theta) = \sum_j a_j e^{i(j_1\theta_1 + j_2\theta_2)}$ at the frequencies
        `theta` (rows $(\theta_1, \theta_2)$). Shape `(f,)` for one channel, `(f, c_out, c_in)` for several."""
        kh, kw = self.kernel_shape
        rows, cols = jnp.meshgrid(jnp.arange(kh), jnp.arange(kw), indexing="ij")
        angles = jnp.outer(theta[:, 0], rows.reshape(-1)) + jnp.outer(theta[:, 1], cols.reshape(-1))
        phases = jnp.exp(1j * angles)
        flat = self.kernel.reshape(*self.kernel.shape[:-2], kh * kw)
        if self.kernel.ndim == 2:
            return phases @ flat
        return jnp.einsum("fj,ocj->foc", phases, flat)

    def norm_bound(self) -> Float[Array, ""]:
        r"""Certified upper bound of $\|K\|_2$ from the 2-D symbol.

        Periodic: the maximum of $\|A\|$ over the $H \times W$ DFT frequencies, the exact
        norm. Neumann and dirichlet: $K$ is a section of the Laurent operator of the
        symbol, so $\|K\| \le \sup_\theta\|A(\theta)\|$, bounded from an $N \times N$ grid by
        $\sup\|A\|^2 \le \max_q\|A(\theta_q)\|^2 + M(\pi/N)^2$,
        $M = \sum_{j,l}\|a_j\|\|a_l\||j - l|^2$. Rounding margins included
        (`jaxpde._bounds.symbol_norm_bound_2d`, `proofs/spectral-norm-bounds.md`,
        Step 7); capped by the Schur bound `abs_norm_bound()`. Jit-able.
        """
        bound = symbol_norm_bound_2d(self.kernel, self.shape, self.boundary)
        return jnp.minimum(bound, self.abs_norm_bound())

    def abs_norm_bound(self) -> Float[Array, ""]:
        r"""Schur's bound $\sqrt{\max_{\rm row} \sum |K| \cdot \max_{\rm col} \sum |K|}$, rounded up
        (`proofs/spectral-norm-bounds.md`, Step 8)."""
        kh, kw = self.kernel_shape
        return stencil_schur_bound(self.kernel.reshape(*self.kernel.shape[:-2], kh * kw))

    def as_matrix(self) -> Float[Array, "rows cols"]:
        return matrix_by_columns(self, self.kernel.dtype)

    @property
    def row_length(self) -> int:
        channels = 1 if self.kernel.ndim == 2 else max(self.kernel.shape[:2])
        return math.prod(self.kernel_shape) * channels
