r"""The multigrid U-net: a V-cycle written as an encoder-decoder network.

For the system $A x = f$, $A = I + \tau K^\top G K$ (a `BandedStencil` per sample), the
network maps an iterate $x$ to the next one:

- encoder, level $\ell$: smoothing (residual blocks $x \leftarrow x + \omega M D^{-1}(f - A_\ell x)$),
  then the residual restricted by a strided convolution, $f_{\ell+1} = R_\ell(f_\ell - A_\ell x_\ell)$;
- bottleneck: the exact solve on the coarsest grid;
- decoder, level $\ell$: a transposed convolution (prolongation) added to the skip
  connection $x_\ell$ (the coarse-grid correction $x_\ell + P_\ell e$), then smoothing.

Trainable: the prolongation kernels $p_\ell$ at odd offsets (tied: $R_\ell = P_\ell^\top / 2$;
the centre tap is fixed to 1, which loses nothing, because the correction
$P(P^\top A P)^{-1}P^\top$ does not change when $P$ is scaled, and the other even offsets to 0,
so that $(Px)_{2I} = x_I$ keeps $P$ injective), a symmetric smoothing stencil $(s_\ell, 1, s_\ell)$,
$s_\ell = \tanh(\cdot)/2$, per level (Jacobi smoothing), and the relative weights
$\theta = \sigma(\cdot) \in (0, 1)$ of every sweep. The coarse operators are the Galerkin
products of the trained transfers. For every parameter value, every sweep contracts the
error in the energy norm and the coarse-grid correction is an $A$-orthogonal
projection, so the network contracts: $\|E\|_A < 1$ (`proofs/multigrid-contraction.md`).
Initialised from a `Multigrid` configuration, it computes the same V-cycle
(`proofs/multigrid-unet.md`).

Reference: Alt, Peter, Weickert, Schrader, arXiv:2103.15419, Section 6; Ronneberger,
Fischer, Brox, "U-Net", MICCAI 2015; Katrutsa, Daulbaev, Oseledets, "Black-box learning
of multigrid parameters", J. Comput. Appl. Math. 2020.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_int, check_signal
from ..fluxes import frozen_diffusivity
from ..operators import AbstractOperator
from ..schemes.banded import BandedStencil, diffusion_stencil, single_channel_stencil
from ..schemes.multigrid import (
    INTERPOLATIONS,
    Multigrid,
    MultigridHierarchy,
    build_hierarchy,
    default_interpolation,
    energy_norm,
    level_sizes,
    prolong,
    restrict,
    smooth,
)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class MultigridUNet(eqx.Module):
    """A U-net that is a multigrid V-cycle; `__call__(A, x, f)` is one cycle for one sample.

    **Arguments:**

    - `n`: grid points of the finest level.
    - `bandwidth`: half-width $b$ of the systems' band ($k - 1$ for a $k$-tap stencil $K$).
    - `periodic`: whether the systems (and the transfers) wrap around.
    - `multigrid`: the V-cycle at initialisation: smoother, sweeps, weight, interpolation
      and coarsest size (default: damped Jacobi V(2,2)); its `cycle` must be `"V"`.
    """

    prolongation_taps: Float[Array, "transfers taps"]
    smoothing_taps: Float[Array, " transfers"]
    pre_logits: Float[Array, "transfers pre"]
    post_logits: Float[Array, "transfers post"]
    sizes: tuple[int, ...] = eqx.field(static=True)
    bandwidth: int = eqx.field(static=True)
    periodic: bool = eqx.field(static=True)
    smoother: str = eqx.field(static=True)
    extension: str = eqx.field(static=True)

    def __init__(self, n: int, bandwidth: int, *, periodic: bool = False, multigrid: Multigrid | None = None):
        multigrid = Multigrid(smoother="jacobi") if multigrid is None else multigrid
        if not isinstance(multigrid, Multigrid) or multigrid.cycle != "V":
            raise ValueError("`multigrid` must be a `jaxpde.schemes.Multigrid` with cycle='V' (a U-net is a V-cycle).")
        n = check_int("n", n, minimum=2)
        bandwidth = check_int("bandwidth", bandwidth, minimum=1)
        interpolation = multigrid.interpolation or default_interpolation(bandwidth)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"`multigrid.interpolation` = {interpolation!r} depends on the system's entries, so it is not a "
                f"convolution; the U-net's transfers are convolutions: use one of {tuple(INTERPOLATIONS)}."
            )
        kernel, extension = INTERPOLATIONS[interpolation]
        self.sizes = level_sizes(n, bandwidth, bool(periodic), multigrid.coarsest, len(kernel))
        if len(self.sizes) < 2:
            raise ValueError(f"`n` = {n} has no coarse level (coarsest = {multigrid.coarsest}); a U-net needs two levels.")
        transfers = len(self.sizes) - 1
        dtype = jnp.result_type(float)
        logit = _logit(multigrid.relative_weight)
        self.prolongation_taps = jnp.tile(jnp.asarray(kernel, dtype), (transfers, 1))
        self.smoothing_taps = jnp.zeros(transfers, dtype)
        self.pre_logits = jnp.full((transfers, multigrid.pre_smoothing), logit, dtype)
        self.post_logits = jnp.full((transfers, multigrid.post_smoothing), logit, dtype)
        self.bandwidth = bandwidth
        self.periodic = bool(periodic)
        self.smoother = multigrid.smoother
        self.extension = "wrap" if periodic else extension

    @classmethod
    def from_multigrid(cls, multigrid: Multigrid, A: BandedStencil) -> "MultigridUNet":
        """The U-net of `multigrid`'s V-cycle for systems shaped like `A`."""
        return cls(A.n, A.bandwidth, periodic=A.periodic, multigrid=multigrid)

    def prolongations(self) -> Float[Array, "transfers taps"]:
        """The prolongation kernels: trainable taps at odd offsets, the centre tap 1 and the
        other even offsets 0, so that $(Px)_{2I} = x_I$ and $P$ is injective."""
        taps = self.prolongation_taps.shape[1]
        offsets = np.arange(taps) - taps // 2
        fixed = jnp.asarray((offsets == 0).astype(float), self.prolongation_taps.dtype)
        return jnp.where(offsets % 2 == 1, self.prolongation_taps, fixed)

    def smoothing_kernels(self) -> Float[Array, " transfers"]:
        """$s_\\ell \\in (-1/2, 1/2)$ of the smoothing stencils $(s_\\ell, 1, s_\\ell)$."""
        return jnp.tanh(self.smoothing_taps) / 2

    def hierarchy(self, A: BandedStencil) -> MultigridHierarchy:
        """The levels of the network for the system `A` (Galerkin operators of its transfers)."""
        if (A.n, A.periodic) != (self.sizes[0], self.periodic) or A.bandwidth > self.bandwidth:
            raise ValueError(
                f"`A` must have n = {self.sizes[0]}, periodic = {self.periodic} and bandwidth <= {self.bandwidth} "
                f"(the network's configuration), got n = {A.n}, periodic = {A.periodic}, bandwidth = {A.bandwidth}."
            )
        weights = jax.nn.sigmoid(self.pre_logits), jax.nn.sigmoid(self.post_logits)
        return build_hierarchy(A, self.prolongations(), *weights, self.smoother, self.extension)

    def __call__(self, A: BandedStencil, x: Float[Array, " n"], f: Float[Array, " n"]) -> Float[Array, " n"]:
        """One V-cycle for $Ax = f$ from the iterate `x`, as encoder, bottleneck and decoder."""
        check_signal("x", x, (self.sizes[0],))
        check_signal("f", f, (self.sizes[0],))
        levels = self.hierarchy(A)
        kernels = self.smoothing_kernels() if self.smoother == "jacobi" else [None] * len(self.sizes)
        skips = []
        for level, kernel in enumerate(levels.prolongations):  # encoder
            operator = levels.operators[level]
            x = smooth(operator, x, f, levels.pre_weights[level], self.smoother, kernel=kernels[level])
            skips.append((x, f))
            f = restrict(kernel / 2, f - operator(x), self.sizes[level + 1], self.extension)
            x = jnp.zeros_like(f)  # the coarse error starts at zero
        x = levels.coarse_solve(f)  # bottleneck
        for level in range(len(skips) - 1, -1, -1):  # decoder
            skip, f = skips[level]
            operator = levels.operators[level]
            x = skip + prolong(levels.prolongations[level], x, self.sizes[level], self.extension)
            x = smooth(operator, x, f, levels.post_weights[level], self.smoother, reverse=True, kernel=kernels[level])
        return x


def energy_factor(cycle, A: BandedStencil, e: Float[Array, " n"], cycles: int) -> Float[Array, ""]:
    """$(\\|E^k e\\|_A / \\|e\\|_A)^{1/k}$ for $k$ = `cycles` applications of `cycle(A, x, f)` to
    the error `e` (with $f = 0$): the average energy-norm convergence factor, which tends
    to $\\rho(E)$ as $k$ grows (the power iteration for $\\|E\\|_A$ is
    `jaxpde.schemes.energy_power_iteration`)."""
    cycles = check_int("cycles", cycles, minimum=1)
    zero = jnp.zeros_like(e)
    final = jax.lax.fori_loop(0, cycles, lambda _, x: cycle(A, x, zero), e)
    return (energy_norm(A, final) / energy_norm(A, e)) ** (1 / cycles)


def random_systems(
    key: PRNGKeyArray, count: int, op: AbstractOperator, tau: float | Float[Array, ""], *, contrast: float = 100.0,
    correlation: int = 8,
) -> BandedStencil:
    r"""`count` systems $I + \tau K^\top G K$ with random diffusivities: $\log g$ is a random
    walk smoothed over `correlation` points and scaled to the range $[\log(1/\text{contrast}), 0]$,
    so $g \in [1/\text{contrast}, 1]$ varies smoothly with jumps of every size. Returns one
    `BandedStencil` with a leading batch axis on its diagonals (`jax.vmap` over it)."""
    count = check_int("count", count, minimum=1)
    single_channel_stencil(op)
    rows = op.out_shape[0]

    def one(k):
        walk = jnp.cumsum(jax.random.normal(k, (rows + correlation,)))
        smooth_walk = jnp.convolve(walk, jnp.ones(correlation) / correlation, mode="valid")[:rows]
        unit = (smooth_walk - smooth_walk.min()) / jnp.maximum(smooth_walk.max() - smooth_walk.min(), 1e-30)
        g = jnp.exp(-unit * np.log(contrast))
        return diffusion_stencil(op, frozen_diffusivity(g), tau)

    return jax.vmap(one)(jax.random.split(key, count))

