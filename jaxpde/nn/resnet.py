r"""The diffusion ResNet (tied weights, stable by construction) and a plain ResNet baseline.

A layer of the diffusion ResNet is the explicit step, a residual block whose two
convolutions are tied (the stencil $K_\ell$ and its transpose) around a learnable flux,

$$u \mapsto u - \tau_\ell K_\ell^\top \Phi_\ell(K_\ell u), \qquad
\tau_\ell = \sigma(\theta_\ell)\,\frac{2}{L_\ell\,\|K_\ell\|^2},$$

with $K_\ell$ mapping one channel to $C$ (`width`), the certified differentiable norm
bound `K.norm_bound()` and a sector-bounded flux (`RadialBasisFlux` by default). Every
layer is Euclidean stable for every parameter value, so the network is too, at every
depth: $\|f_\ell \circ \dots \circ f_1(u)\| \le \|u\|$ (`proofs/diffusion-resnet-stability.md`).

The baseline `ResNet` has untied weights and a standard activation,
$u \mapsto u + W_{2,\ell}\,\sigma(W_{1,\ell} u + b_{1,\ell}) + b_{2,\ell}$: twice the
convolution parameters for the same width, and no stability guarantee.

Reference: Alt, Peter, Weickert, Schrader, SSVM 2021, arXiv:2103.15419, Section 3
(diffusion as a ResNet with tied weights); He, Zhang, Ren, Sun, "Identity mappings in
deep residual networks", ECCV 2016 (the ResNet block).
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_int, check_positive_float, check_signal
from ..fluxes import AbstractFlux, PeronaMalik, RadialBasisFlux
from ..operators import Stencil
from ._common import (
    BlockStack,
    check_boundary,
    initial_stack,
    random_kernel,
    stacked_stencils,
    trainable_setup,
)


def _lifted_kernel_shape(kernel_size: int, width: int | None) -> tuple[int, ...]:
    """`(k,)` for one channel, `(C, 1, k)` for `width=C` (one input channel, C outputs)."""
    k = check_int("kernel_size", kernel_size, minimum=1)
    if width is None:
        return (k,)
    return (check_int("width", width, minimum=1), 1, k)


class DiffusionResNet(BlockStack):
    r"""`depth` diffusion blocks $u - \tau_\ell K_\ell^\top\Phi_\ell(K_\ell u)$ with trainable
    stencils, fluxes and step sizes; Euclidean stable for every parameter value.

    Samples are signals of shape `(n,)`. With `width=C` each stencil has shape
    `(C, 1, k)`: $K_\ell u$ has $C$ channels, the flux acts on each, and $K_\ell^\top$ sums
    them back into one signal. The parameters are stacked over the layers and the layers
    run under `jax.lax.scan`; `__call__` takes one sample, batch with `jax.vmap`.

    **Arguments:**

    - `n`: grid points of a sample.
    - `depth`: number of blocks.
    - `width`: channels $C$ of $K_\ell u$, or `None` for a single-channel stencil `(k,)`.
    - `kernel_size`: taps $k$ of each stencil.
    - `boundary`: `"neumann"` (default: valid convolution, $K^\top K$ a Neumann-type
      operator), `"periodic"` or `"dirichlet"` (see `jaxpde.Stencil`).
    - `flux`: the flux of every layer at initialisation; each layer trains its own copy.
      Default: the `RadialBasisFlux` fitted to `PeronaMalik(contrast)` on
      $s^2 \in [0, 16\,\text{contrast}^2]$.
    - `contrast`: $\lambda$ of that default flux, the size of $|K u|$ above which
      diffusion falls off (0.05 suits signals with values in $[0, 1]$ and stencils of
      norm about 1, as initialised).
    - `step_fraction`: $\sigma(\theta_\ell)$ at initialisation, in $(0, 1)$.
    - `repeats`: each block is applied this many times in a row (static): the blocks
      are the stages of a learned explicit scheme with `repeats` time steps each, so
      the depth, and the diffusion time, grow without more parameters.
    - `key`: initialises the stencils (normal, zero sum over the taps).

    Reference: arXiv:2103.15419, Section 3.
    """

    width: int | None = eqx.field(static=True)
    repeats: int = eqx.field(static=True)

    def __init__(
        self,
        n: int,
        *,
        depth: int,
        width: int | None = 8,
        kernel_size: int = 3,
        boundary: str = "neumann",
        flux: AbstractFlux | None = None,
        step_fraction: float = 0.5,
        repeats: int = 1,
        contrast: float = 0.05,
        key: PRNGKeyArray,
    ):
        depth = check_int("depth", depth, minimum=1)
        shape = _lifted_kernel_shape(kernel_size, width)
        if flux is None:
            contrast = check_positive_float("contrast", contrast)
            flux = RadialBasisFlux.fit(PeronaMalik(contrast), top=16 * contrast**2)
        n, flux, fraction = trainable_setup(n, shape, boundary, flux, step_fraction)
        kernels = random_kernel(key, (depth, *shape))
        self.operators, self.fluxes, self.thetas = initial_stack(kernels, n, boundary, flux, fraction)
        self.width = None if width is None else int(width)
        self.repeats = check_int("repeats", repeats, minimum=1)

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one sample, `(n,)`."""
        return (self.operators.n,)

    def _lift(self, u: Array) -> Array:
        return u if self.width is None else u[None]

    def _stage(self, block, v):
        """`repeats` applications of `block`, with every intermediate state."""

        def step(w, _):
            w = block(w)
            return w, w

        return jax.lax.scan(step, v, length=self.repeats)

    def states(self, u: Float[Array, " n"]) -> Float[Array, "steps n"]:
        """The input and the state after every block application (`depth * repeats + 1`
        rows): row $t$ is the state after $t$ applications."""
        check_signal("u", u, self.in_shape)
        _, outputs = self.scan_blocks(self._stage, self._lift(u))
        return jnp.concatenate([u[None], outputs.reshape(-1, *u.shape)])

    def __call__(self, u: Float[Array, " n"]) -> Float[Array, " n"]:
        check_signal("u", u, self.in_shape)
        out, _ = self.scan_blocks(lambda block, v: (self._stage(block, v)[0], None), self._lift(u))
        return out.reshape(u.shape)


class ResNet(eqx.Module):
    r"""The plain ResNet baseline: `depth` blocks
    $u \mapsto u + W_{2,\ell}\,\sigma(W_{1,\ell} u + b_{1,\ell}) + b_{2,\ell}$ with untied
    convolutions.

    $W_1$ is a convolution from one channel to `width` channels and $W_2$ a transposed-shape
    convolution back (the shapes of $K$ and $K^\top$ in `DiffusionResNet`, but independent
    weights): per layer $2Ck + C + 1$ parameters against $Ck$ plus the flux for the tied
    block. No stability guarantee: its Euclidean gain and Lipschitz constant are whatever
    training makes them.

    **Arguments:**

    - `n`, `depth`, `width`, `kernel_size`, `boundary`: as in `DiffusionResNet`.
    - `activation`: $\sigma$ (static; default `jax.nn.relu`).
    - `residual_scale`: standard deviation of $W_2$ relative to $1/\sqrt{Ck}$ at
      initialisation (small: the network starts near the identity).
    - `key`: initialises $W_1$ (normal, variance $1/k$) and $W_2$; biases start at 0.

    Reference: He, Zhang, Ren, Sun, ECCV 2016.
    """

    first: Stencil
    second: Stencil
    first_bias: Float[Array, "depth width 1"]
    second_bias: Float[Array, "depth 1 1"]
    activation: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(
        self,
        n: int,
        *,
        depth: int,
        width: int = 8,
        kernel_size: int = 3,
        boundary: str = "neumann",
        activation: Callable[[Array], Array] = jax.nn.relu,
        residual_scale: float = 0.1,
        key: PRNGKeyArray,
    ):
        n = check_int("n", n, minimum=1)
        depth = check_int("depth", depth, minimum=1)
        width = check_int("width", width, minimum=1)
        shape = _lifted_kernel_shape(kernel_size, width)
        check_boundary(boundary, n, shape[-1])
        if not callable(activation):
            raise TypeError(f"`activation` must be callable, got {type(activation).__name__}.")
        first_key, second_key = jax.random.split(key)
        dtype = jnp.result_type(float)
        k = shape[-1]
        first = jax.random.normal(first_key, (depth, *shape), dtype) / math.sqrt(k)
        second = jax.random.normal(second_key, (depth, *shape), dtype) * (residual_scale / math.sqrt(width * k))
        self.first = stacked_stencils(first, n, boundary)
        self.second = stacked_stencils(second, n, boundary)
        self.first_bias = jax.device_put(np.zeros((depth, width, 1), dtype))
        self.second_bias = jax.device_put(np.zeros((depth, 1, 1), dtype))
        self.activation = activation

    @property
    def depth(self) -> int:
        return self.first_bias.shape[0]

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one sample, `(n,)`."""
        return (self.first.n,)

    def __call__(self, u: Float[Array, " n"]) -> Float[Array, " n"]:
        check_signal("u", u, self.in_shape)
        params, static = eqx.partition((self.first, self.second, self.first_bias, self.second_bias), eqx.is_array)

        def layer(v, p):
            first, second, first_bias, second_bias = eqx.combine(p, static)
            hidden = self.activation(first(v) + first_bias.astype(v.dtype))
            return v + second.T(hidden) + second_bias.astype(v.dtype), None

        out, _ = jax.lax.scan(layer, u[None], params)
        return out.reshape(u.shape)
