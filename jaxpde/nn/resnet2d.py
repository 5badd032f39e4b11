r"""The diffusion ResNet on images (learned 2-D filters, stable by construction) and a
DnCNN-style baseline without a guarantee.

A layer of `DiffusionResNet2D` is the explicit step of a learned image diffusion,

$$u \mapsto u - \tau_\ell K_\ell^\top \Phi_\ell(K_\ell u), \qquad
\tau_\ell = \sigma(\theta_\ell)\,\frac{2}{L_\ell\,\|K_\ell\|^2},$$

with $K_\ell$ a `Stencil2D` from one image to $C$ filter responses (kernel
`(C, 1, k, k)`), the certified differentiable `K.norm_bound()` and a learnable
sector-bounded `RadialBasisFlux` per stage: the trainable nonlinear diffusion of Chen and
Pock (TNRD, without its reaction term), with a stability certificate. Every layer is
Euclidean stable for every parameter value, so the network is too, at every depth
(`proofs/diffusion-resnet-stability-2d.md`).

`DnCNN` is the unconstrained residual CNN of Zhang et al. (without batch normalisation):
$f(u) = u - R(u)$, $R$ a stack of $3 \times 3$ convolutions with ReLUs.

References: Y. Chen, T. Pock, "Trainable nonlinear reaction diffusion", IEEE TPAMI 39(6),
2017, arXiv:1508.02848; Alt, Peter, Weickert, Schrader, SSVM 2021, arXiv:2103.15419,
Section 3; K. Zhang, W. Zuo, Y. Chen, D. Meng, L. Zhang, "Beyond a Gaussian denoiser",
IEEE TIP 26(7), 2017, arXiv:1608.03981.
"""

import functools
import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._bounds import ceil_constant, gamma, round_up, unit_roundoff
from .._checks import check_int, check_positive_float, check_signal
from ..blocks import DiffusionBlock
from ..fluxes import AbstractFlux, PeronaMalik, RadialBasisFlux
from ..operators2d import Stencil2D
from ._common import (
    BlockStack,
    check_fraction,
    flux_magnitudes,
    full_vector,
    stack_copies,
)

_FRACTION = "the initial step size as a fraction of the stability bound"
_HIGHEST = jax.lax.Precision.HIGHEST
# Frequencies per axis of the grid on which `filter_bank_norm_bound` samples the symbol.
FILTER_BANK_GRID = 64


def _autocorrelation(a: Array) -> Array:
    """$r_m = \\sum_c \\sum_j a_{c,j}\\,a_{c,j+m}$ for `a` of shape `(C, kh, kw)`, offsets
    $m \\in [-(k_h-1), k_h-1] \\times [-(k_w-1), k_w-1]$: shape `(2kh - 1, 2kw - 1)`."""
    kh, kw = a.shape[-2:]
    padded = jnp.pad(a, [(0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1)])
    return jax.lax.conv_general_dilated(
        padded[None], a[None], (1, 1), "VALID", precision=_HIGHEST
    )[0, 0]


@functools.cache
def _cosine_table(kh: int, kw: int) -> tuple[np.ndarray, np.ndarray]:
    """$\\cos(m \\cdot \\theta_q)$ on the `FILTER_BANK_GRID`$^2$ grid (rows) for every offset $m$
    (columns, row-major), and $|m|^2$ per offset."""
    n = FILTER_BANK_GRID
    m1, m2 = np.meshgrid(
        np.arange(-(kh - 1), kh), np.arange(-(kw - 1), kw), indexing="ij"
    )
    q1, q2 = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    # m . theta_q = 2 pi ((m1 q1 + m2 q2) mod N) / N, the integer part exact: |angle| < 2 pi.
    phases = np.mod(
        q1.reshape(-1, 1) * m1.reshape(1, -1) + q2.reshape(-1, 1) * m2.reshape(1, -1), n
    )
    angles = 2 * np.pi * phases / n
    return np.cos(angles), (m1**2 + m2**2).reshape(-1).astype(np.float64)


def filter_bank_norm_bound(kernel: Float[Array, "c c_in kh kw"]) -> Float[Array, ""]:
    r"""Certified upper bound of $\|K\|$ for a filter bank $K$ from one image to $C$ filter
    responses (a `Stencil2D` with kernel `(C, 1, kh, kw)`), valid for every boundary and
    every image size; cheap and differentiable.

    With the symbols $A_c(\theta)$ of the filters, $\|K\|^2 \le \sup_\theta P(\theta)$,
    $P = \sum_c |A_c|^2 = \sum_m r_m \cos(m\cdot\theta)$, $r$ the summed autocorrelation of the
    filters. At a maximiser $\nabla P = 0$, so with the $N \times N$ grid $\theta_q$
    ($N$ = `FILTER_BANK_GRID`, spacing $h = 2\pi/N$)

    $$\|K\|^2 \le \max_q P(\theta_q) + \frac{h^2}{4}\sum_m |r_m|\,|m|^2,$$

    plus the rounding of $r$ and of $P(\theta_q)$ (`proofs/diffusion-resnet-stability-2d.md`,
    Lemma 1). Costs $N^2 (2k_h - 1)(2k_w - 1)$ multiplications, independent of $C$, where
    `Stencil2D.norm_bound()` evaluates a finer grid with $C$ channels.
    """
    if kernel.ndim != 4 or kernel.shape[1] != 1:
        raise ValueError(
            f"`kernel` must have shape (C, 1, kh, kw) (one input image), got {kernel.shape}."
        )
    dtype = kernel.dtype
    a = kernel[:, 0]
    c, kh, kw = a.shape
    terms = c * kh * kw
    r = _autocorrelation(a)
    s = _autocorrelation(jnp.abs(a))  # bounds the rounding error of r
    cosines, squares = _cosine_table(kh, kw)
    offsets = cosines.shape[1]
    peak = jnp.maximum(jnp.max(jnp.asarray(cosines, dtype) @ r.reshape(-1)), 0)
    u = unit_roundoff(dtype)
    r_error = ceil_constant(
        2 * gamma(terms, dtype), dtype
    )  # |r_computed - r| <= 2 gamma_n s_computed
    magnitudes = jnp.abs(r.reshape(-1)) + r_error * s.reshape(-1)
    spacing = ceil_constant((np.pi / FILTER_BANK_GRID) ** 2, dtype)  # h^2 / 4
    curvature = spacing * jnp.sum(magnitudes * jnp.asarray(squares, dtype))
    evaluation = ceil_constant(gamma(offsets, dtype) + 16 * u, dtype) * jnp.sum(
        magnitudes
    )
    square = round_up(
        peak + curvature + evaluation + r_error * jnp.sum(s), offsets + 16
    )
    return round_up(jnp.sqrt(square), 2)


def filter_bank_block(
    op: Stencil2D, flux: AbstractFlux, theta: Float[Array, ""]
) -> DiffusionBlock:
    r"""The diffusion block with $\tau = \sigma(\theta) \cdot 2 / (L\,\nu^2)$, $\nu$ =
    `filter_bank_norm_bound(op.kernel)` $\ge \|K\|$; a zero bank ($\nu = 0$) gets $\tau = 0$
    (the block is then the identity for every $\tau$)."""
    flux = flux_magnitudes(flux)
    norm = filter_bank_norm_bound(op.kernel)
    bound = 2 / (flux.sector_bound().astype(norm.dtype) * norm**2)
    fraction = jax.nn.sigmoid(theta).astype(bound.dtype)
    tau = jnp.where(jnp.isfinite(bound), fraction * bound, 0)
    placeholder = DiffusionBlock(op, flux, 1.0, allow_unstable=True)
    return eqx.tree_at(lambda b: b.tau, placeholder, tau)


@functools.partial(jax.jit, static_argnums=1)
def random_filters(
    key: PRNGKeyArray, shape: tuple[int, ...]
) -> Float[Array, "*channels kh kw"]:
    """Normal entries with variance 1 / (kh kw), minus their mean over each filter: every
    filter annihilates constants (like a derivative), so the network starts as a diffusion
    that keeps the mean grey value."""
    kernel = jax.random.normal(key, shape, jnp.result_type(float)) / math.sqrt(
        shape[-1] * shape[-2]
    )
    return kernel - jnp.mean(kernel, axis=(-2, -1), keepdims=True)


def dct_filters(count: int, size: int) -> np.ndarray:
    r"""The first `count` 2-D DCT-II basis filters of `size x size` without the constant one,
    ordered by frequency $p + q$ (then $p$), unit norm, shape `(count, size, size)`; cycled with
    alternating signs when `count` exceeds $k^2 - 1$. Chen and Pock start their filters from
    this basis (arXiv:1508.02848, Section 4.1)."""
    x = np.arange(size)
    basis = {
        (p, q): np.outer(
            np.cos(np.pi * (x + 0.5) * p / size), np.cos(np.pi * (x + 0.5) * q / size)
        )
        for p in range(size)
        for q in range(size)
        if p + q > 0
    }
    order = sorted(basis, key=lambda pq: (pq[0] + pq[1], pq[0]))
    filters = [
        basis[order[i % len(order)]] * (-1) ** (i // len(order)) for i in range(count)
    ]
    return np.stack([f / np.linalg.norm(f) for f in filters])


def _stacked_stencils(
    kernels: Array, shape: tuple[int, int], boundary: str
) -> Stencil2D:
    return eqx.filter_vmap(lambda kernel: Stencil2D(kernel, shape, boundary=boundary))(
        kernels
    )


def _correlate(v: Array, kernel: Array, padding: int) -> Array:
    """`lax.conv` correlation of `v` (c_in, H, W) with `kernel` (c_out, c_in, k, k), zero
    padding `padding` on every side."""
    pad = [(padding, padding)] * 2
    return jax.lax.conv_general_dilated(
        v[None], kernel, (1, 1), pad, precision=_HIGHEST
    )[0]


def fast_block(
    block: DiffusionBlock, v: Float[Array, "1 height width"]
) -> Float[Array, "1 height width"]:
    r"""`block(v)` for a neumann or dirichlet `Stencil2D` block, with $K$ and $K^\top$ as
    `lax.conv` correlations (valid and full): the same map, faster to compile and run than
    the tap loop of `Stencil2D` (tests compare the two). Other blocks: `block(v)`."""
    op = block.op
    if (
        not isinstance(op, Stencil2D)
        or op.kernel.ndim != 4
        or op.boundary == "periodic"
    ):
        return block(v)
    check_signal("v", v, op.in_shape)
    kernel = op.kernel.astype(v.dtype)
    k = kernel.shape[-1] - 1
    adjoint = jnp.swapaxes(kernel[..., ::-1, ::-1], 0, 1)
    forward, backward = (0, k) if op.boundary == "neumann" else (k, 0)
    response = _correlate(v, kernel, forward)
    return v - block.tau.astype(v.dtype) * _correlate(
        block.flux(response), adjoint, backward
    )


class DiffusionResNet2D(BlockStack):
    r"""`depth` image diffusion blocks $u - \tau_\ell K_\ell^\top\Phi_\ell(K_\ell u)$ with
    trainable filters, fluxes and step sizes; Euclidean stable for every parameter value.

    Samples are images of shape `(H, W)`. Each stencil has kernel `(C, 1, k, k)`: $K_\ell u$
    is $C$ filter responses, the stage's flux acts on each, and $K_\ell^\top$ sums them back
    into one image. The parameters are stacked over the stages and the stages run under
    `jax.lax.scan`; `__call__` takes one image, batch with `jax.vmap`. The boundary
    `"neumann"` (valid filtering, $K^\top K$ a Neumann-type operator) suits patches; the
    norm bound of a neumann or dirichlet stencil holds for every image size, so
    `with_shape` moves a trained network to other images without changing $\tau_\ell$.

    **Arguments:**

    - `shape`: the image size `(H, W)`.
    - `depth`: number of stages.
    - `width`: filters $C$ per stage.
    - `kernel_size`: $k$, the filters are $k \times k$.
    - `boundary`: `"neumann"` (default), `"periodic"` or `"dirichlet"` (see `jaxpde.Stencil2D`).
    - `flux`: the flux of every stage at initialisation; each trains its own copy. Default:
      the `RadialBasisFlux` with `flux_centres` centres fitted to `PeronaMalik(contrast)`
      on $s^2 \in [0, 16\,\text{contrast}^2]$.
    - `contrast`: $\lambda$ of that default flux (0.05 suits images in $[0, 1]$).
    - `flux_centres`: radial basis functions of the default flux.
    - `step_fraction`: $\sigma(\theta_\ell)$ at initialisation, in $(0, 1)$.
    - `repeats`: each stage is applied this many times in a row (static).
    - `filters`: initial filters, `"random"` (normal, zero mean per filter) or `"dct"`
      (`dct_filters`, the same in every stage, plus 1% noise).
    - `key`: initialises the filters.

    Reference: Chen and Pock, arXiv:1508.02848; arXiv:2103.15419, Section 3.
    """

    width: int = eqx.field(static=True)
    repeats: int = eqx.field(static=True)

    def __init__(
        self,
        shape: tuple[int, int],
        *,
        depth: int,
        width: int = 8,
        kernel_size: int = 3,
        boundary: str = "neumann",
        flux: AbstractFlux | None = None,
        step_fraction: float = 0.5,
        repeats: int = 1,
        contrast: float = 0.05,
        flux_centres: int = 8,
        filters: str = "random",
        key: PRNGKeyArray,
    ):
        depth = check_int("depth", depth, minimum=1)
        width = check_int("width", width, minimum=1)
        k = check_int("kernel_size", kernel_size, minimum=1)
        if flux is None:
            contrast = check_positive_float("contrast", contrast)
            count = check_int("flux_centres", flux_centres, minimum=1)
            flux = RadialBasisFlux.fit(
                PeronaMalik(contrast), count=count, top=16 * contrast**2
            )
        if not isinstance(flux, AbstractFlux):
            raise TypeError(f"`flux` must be a jaxpde flux, got {type(flux).__name__}.")
        fraction = check_fraction("step_fraction", step_fraction, _FRACTION)
        if filters not in ("random", "dct"):
            raise ValueError(f"`filters` must be 'random' or 'dct', got {filters!r}.")
        kernels = random_filters(key, (depth, width, 1, k, k))
        if filters == "dct":
            if k < 2:
                raise ValueError(
                    "`filters='dct'` needs `kernel_size` >= 2 (a 1 x 1 basis has no nonconstant filter)."
                )
            kernels = (
                jnp.asarray(dct_filters(width, k)[None, :, None], kernels.dtype)
                + 0.01 * kernels
            )
        probe = Stencil2D(
            np.zeros((width, 1, k, k)), shape, boundary=boundary
        )  # checks shape and boundary
        self.operators = _stacked_stencils(kernels, probe.shape, boundary)
        self.fluxes = stack_copies(flux, depth)
        self.thetas = full_vector(
            depth, math.log(fraction / (1 - fraction)), kernels.dtype
        )
        self.width = width
        self.repeats = check_int("repeats", repeats, minimum=1)

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one sample, `(H, W)`."""
        return self.operators.shape

    @property
    def boundary(self) -> str:
        return self.operators.boundary

    def with_shape(self, shape: tuple[int, int]) -> "DiffusionResNet2D":
        """The same network (filters, fluxes, step parameters) on images of size `shape`.
        For neumann and dirichlet stencils the step sizes do not change (their norm bound
        is the supremum of the symbol, independent of the size)."""
        probe = Stencil2D(
            np.zeros(self.operators.kernel.shape[1:]), shape, boundary=self.boundary
        )
        operators = _stacked_stencils(self.operators.kernel, probe.shape, self.boundary)
        return eqx.tree_at(lambda m: m.operators, self, operators)

    def block(self, index: int) -> DiffusionBlock:
        """The diffusion block of stage `index` (for `jaxpde.verify` and for inspection)."""
        index = check_int("index", index, minimum=-self.layers)
        if index >= self.layers:
            raise ValueError(
                f"`index` must be below {self.layers} (the number of stages), got {index}."
            )
        return filter_bank_block(
            *jax.tree.map(
                lambda x: x[index], (self.operators, self.fluxes, self.thetas)
            )
        )

    def stable_step_sizes(self) -> Float[Array, " layers"]:
        r"""The bounds $2/(L_\ell\nu_\ell^2)$ of the stages, $\nu_\ell$ = `filter_bank_norm_bound`."""
        norms = jax.vmap(filter_bank_norm_bound)(self.operators.kernel)
        sectors = jax.vmap(lambda f: flux_magnitudes(f).sector_bound())(self.fluxes)
        return 2 / (sectors.astype(norms.dtype) * norms**2)

    def step_sizes(self) -> Float[Array, " layers"]:
        r"""The step sizes $\tau_\ell$ of the stages."""
        return self.stacked_blocks().tau

    def stacked_blocks(self) -> DiffusionBlock:
        r"""Every stage's `DiffusionBlock`, stacked along a leading axis (the step sizes
        $\tau_\ell$ evaluated once, differentiably)."""
        return eqx.filter_vmap(filter_bank_block)(
            self.operators, self.fluxes, self.thetas
        )

    def steps(self) -> "DiffusionSteps2D":
        """The same map with the step sizes evaluated: cheaper to evaluate many times at
        fixed parameters (inference on many images, the falsifier)."""
        return DiffusionSteps2D(self.stacked_blocks(), self.repeats)

    def states(
        self, u: Float[Array, "height width"]
    ) -> Float[Array, "steps height width"]:
        """The input and the state after every block application (`depth * repeats + 1`
        images): image $t$ is the state after $t$ applications."""
        check_signal("u", u, self.in_shape)
        return self.steps().states(u)

    def __call__(self, u: Float[Array, "height width"]) -> Float[Array, "height width"]:
        check_signal("u", u, self.in_shape)
        return self.steps()(u)


class DiffusionSteps2D(eqx.Module):
    r"""The blocks of a `DiffusionResNet2D` with their step sizes evaluated
    (`DiffusionResNet2D.steps()`): block $\ell$ applied `repeats` times, for
    $\ell = 1, \dots$, under `jax.lax.scan`. The same map as the network.

    **Arguments:**

    - `blocks`: `DiffusionBlock`s stacked along a leading axis.
    - `repeats`: applications of each block in a row (static).
    """

    blocks: DiffusionBlock
    repeats: int = eqx.field(static=True)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.blocks.op.shape

    def _run(self, u: Array) -> Array:
        params, static = eqx.partition(self.blocks, eqx.is_array)

        def stage(v, p):
            block = eqx.combine(p, static)

            def step(w, _):
                w = fast_block(block, w)
                return w, w

            return jax.lax.scan(step, v, length=self.repeats)

        _, outputs = jax.lax.scan(stage, u[None], params)
        return outputs.reshape(-1, *u.shape)

    def states(
        self, u: Float[Array, "height width"]
    ) -> Float[Array, "steps height width"]:
        """The input and the state after every block application."""
        check_signal("u", u, self.in_shape)
        return jnp.concatenate([u[None], self._run(u)])

    def __call__(self, u: Float[Array, "height width"]) -> Float[Array, "height width"]:
        check_signal("u", u, self.in_shape)
        return self._run(u)[-1]


class DnCNN(eqx.Module):
    r"""A DnCNN-style residual denoiser without a stability guarantee:
    $f(u) = u - R(u)$, $R = W_d \circ \mathrm{relu} \circ W_{d-1} \circ \dots \circ
    \mathrm{relu} \circ W_1$ with $k \times k$ convolutions (zero padding, biases), one input
    channel, `width` hidden channels, one output channel (batch normalisation omitted).

    **Arguments:**

    - `depth`: convolutions $d \ge 2$.
    - `width`: hidden channels.
    - `kernel_size`: $k$ (odd).
    - `key`: He-normal weights; the last layer scaled by 0.1 (the network starts near the
      identity); biases 0.

    Reference: Zhang et al., arXiv:1608.03981.
    """

    weights: tuple[Float[Array, "out in kh kw"], ...]
    biases: tuple[Float[Array, "out 1 1"], ...]

    def __init__(
        self,
        *,
        depth: int = 5,
        width: int = 16,
        kernel_size: int = 3,
        key: PRNGKeyArray,
    ):
        depth = check_int("depth", depth, minimum=2)
        width = check_int("width", width, minimum=1)
        k = check_int("kernel_size", kernel_size, minimum=1)
        if k % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd (same-size output), got {k}.")
        channels = [1] + [width] * (depth - 1) + [1]
        dtype = jnp.result_type(float)
        weights, biases = [], []
        for index, (c_in, c_out) in enumerate(itertools.pairwise(channels)):
            scale = math.sqrt(2 / (c_in * k * k)) * (0.1 if index == depth - 1 else 1.0)
            weights.append(
                jax.random.normal(
                    jax.random.fold_in(key, index), (c_out, c_in, k, k), dtype
                )
                * scale
            )
            biases.append(jnp.zeros((c_out, 1, 1), dtype))
        self.weights = tuple(weights)
        self.biases = tuple(biases)

    def __call__(self, u: Float[Array, "height width"]) -> Float[Array, "height width"]:
        if u.ndim != 2:
            raise ValueError(
                f"`u` must be one image (H, W), got shape {u.shape}; batch with jax.vmap."
            )
        v = u[None]
        pad = self.weights[0].shape[-1] // 2
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            v = _correlate(v, weight.astype(u.dtype), pad) + bias.astype(u.dtype)
            if index < len(self.weights) - 1:
                v = jax.nn.relu(v)
        return u - v[0]
