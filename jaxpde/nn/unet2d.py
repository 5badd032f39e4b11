r"""The 2-D multigrid U-net: the black-box V-cycle of an image system as an encoder-decoder.

For $A x = f$, $A = I + \tau \nabla^\top G \nabla$ on an $H \times W$ image (a `StencilField`),
the network maps an iterate $x$ to the next one:

- encoder, level $\ell$: smoothing sweeps (residual blocks $x \leftarrow x + \omega_k M(f - A_\ell x)$),
  then the restricted residual $f_{\ell+1} = P_\ell^\top (f_\ell - A_\ell x_\ell) / 4$;
- bottleneck: the exact solve on the coarsest grid;
- decoder, level $\ell$: the prolongation added to the skip connection, $x_\ell + P_\ell e$, then
  the smoothing sweeps in reverse.

Trainable: the relative weight $\theta = \sigma(\cdot) \in (0, 1)$ of every sweep, and per level
three offsets added to the black-box interpolation weights (between two coarse points on a
column, on a row, and at the centres; zero at initialisation). The injection rows of $P_\ell$
are fixed, so $P_\ell$ stays injective; with $R_\ell = P_\ell^\top/4$ and Galerkin levels every
parameter value gives an energy-norm contraction, $\|E\|_A < 1$
(`proofs/multigrid-2d-contraction.md`). Initialised from a `Multigrid2D` V-cycle it computes
that cycle.

Reference: Alt, Peter, Weickert, Schrader, arXiv:2103.15419, Section 6; Ronneberger,
Fischer, Brox, "U-Net", MICCAI 2015; Dendy, J. Comput. Phys. 48, 1982.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import check_signal
from ..schemes.multigrid2d import (
    BlackBoxInterpolation,
    Multigrid2D,
    StencilField,
    galerkin_2d,
    level_shapes,
    smooth_2d,
)
from ..schemes.semi_implicit import inverse_cholesky_factor


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class MultigridUNet2D(eqx.Module):
    """A U-net that is a 2-D black-box multigrid V-cycle; `__call__(A, x, f)` is one cycle.

    **Arguments:**

    - `shape`: the image shape $(H, W)$.
    - `multigrid`: the V-cycle at initialisation: smoother, sweeps, weight and coarsest
      size (default: `Multigrid2D()`); its `cycle` must be `"V"`.
    """

    pre_logits: Float[Array, "transfers pre"]
    post_logits: Float[Array, "transfers post"]
    transfer_offsets: Float[Array, "transfers 3"]
    shapes: tuple[tuple[int, int], ...] = eqx.field(static=True)
    smoother: str = eqx.field(static=True)

    def __init__(self, shape: tuple[int, int], *, multigrid: Multigrid2D | None = None):
        multigrid = Multigrid2D() if multigrid is None else multigrid
        if not isinstance(multigrid, Multigrid2D) or multigrid.cycle != "V":
            raise ValueError(
                "`multigrid` must be a `jaxpde.schemes.Multigrid2D` with cycle='V' (a U-net is a V-cycle)."
            )
        self.shapes = level_shapes(tuple(shape), multigrid.coarsest)
        if len(self.shapes) < 2:
            raise ValueError(
                f"`shape` = {tuple(shape)} has no coarse level (coarsest = {multigrid.coarsest}); "
                "a U-net needs two levels: use a larger image or a smaller `coarsest`."
            )
        transfers = len(self.shapes) - 1
        dtype = jnp.result_type(float)
        logit = _logit(multigrid.relative_weight)
        self.pre_logits = jnp.full((transfers, multigrid.pre_smoothing), logit, dtype)
        self.post_logits = jnp.full((transfers, multigrid.post_smoothing), logit, dtype)
        self.transfer_offsets = jnp.zeros((transfers, 3), dtype)
        self.smoother = multigrid.smoother

    @classmethod
    def from_multigrid(
        cls, multigrid: Multigrid2D, A: StencilField
    ) -> "MultigridUNet2D":
        """The U-net of `multigrid`'s V-cycle for systems shaped like `A`."""
        return cls(A.shape, multigrid=multigrid)

    def levels(self, A: StencilField) -> tuple[list, list, Array]:
        """The operators, the interpolations (black-box weights plus the trained offsets) and
        the inverse Cholesky factor of the coarsest operator, for the system `A`."""
        if A.shape != self.shapes[0]:
            raise ValueError(
                f"`A` must have shape {self.shapes[0]} (the network's), got {A.shape}."
            )
        operators, interpolations = [A], []
        for offsets in self.transfer_offsets:
            P = BlackBoxInterpolation.from_operator(operators[-1])
            P = eqx.tree_at(
                lambda p: (p.vertical, p.horizontal, p.centre),
                P,
                (
                    P.vertical + offsets[0],
                    P.horizontal + offsets[1],
                    P.centre + offsets[2],
                ),
            )
            interpolations.append(P)
            operators.append(galerkin_2d(operators[-1], P))
        return (
            operators,
            interpolations,
            inverse_cholesky_factor(operators[-1].as_matrix()),
        )

    def _scales(self, A: StencilField, logits: Array) -> list[Array]:
        r"""The per-point factor of each sweep: $2\theta D^{-1}$ (Gauss-Seidel),
        $2\theta D^{-1} / \beta$ (Jacobi, $\beta$ Gershgorin's bound), $2\theta$ (lines)."""
        omegas = 2 * jax.nn.sigmoid(logits)
        if self.smoother == "jacobi":
            omegas = omegas / A.gershgorin()
        if self.smoother == "line":
            return [jnp.full(A.shape, omega) for omega in omegas]
        return [omega / A.diagonal for omega in omegas]

    def __call__(
        self,
        A: StencilField,
        x: Float[Array, "height width"],
        f: Float[Array, "height width"],
    ) -> Float[Array, "height width"]:
        """One V-cycle for $Ax = f$ from the iterate `x`: encoder, bottleneck, decoder."""
        check_signal("x", x, self.shapes[0])
        check_signal("f", f, self.shapes[0])
        operators, interpolations, inverse = self.levels(A)
        skips = []
        for level, P in enumerate(interpolations):  # encoder
            operator = operators[level]
            for scale in self._scales(operator, self.pre_logits[level]):
                x = smooth_2d(operator, x, f, scale, 1, self.smoother)
            skips.append((x, f))
            f = P.T(f - operator(x)) / 4
            x = jnp.zeros_like(f)  # the coarse error starts at zero
        inverse = inverse.astype(f.dtype)
        x = (inverse.T @ (inverse @ f.reshape(-1))).reshape(f.shape)  # bottleneck
        for level in range(len(skips) - 1, -1, -1):  # decoder
            skip, f = skips[level]
            operator = operators[level]
            x = skip + interpolations[level](x)
            for scale in reversed(self._scales(operator, self.post_logits[level])):
                x = smooth_2d(operator, x, f, scale, 1, self.smoother, reverse=True)
        return x
