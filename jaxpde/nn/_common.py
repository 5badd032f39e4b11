"""Parametrisations shared by the trainable networks: checked configuration, kernel
initialisation, and the step size tied to the stability bound."""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_int
from ..blocks import DiffusionBlock, stable_step_size
from ..fluxes import AbstractFlux
from ..operators import BOUNDARIES, Stencil
from ..operators2d import Stencil2D

_FRACTION = "the initial step size as a fraction of the stability bound"


def flux_magnitudes(flux: AbstractFlux) -> AbstractFlux:
    r"""`flux.in_domain()`: the flux with its parameters mapped to where its bounds hold.

    The parameters of the fixed-form fluxes in `jaxpde.fluxes` ($L$, $\lambda$,
    $\varepsilon$) are positive scales, and their sector bounds and Lipschitz constants are
    only valid for positive values: they enter through their magnitudes. A
    `RadialBasisFlux` is sector-bounded for every parameter value and is used as it is.
    The networks evaluate their fluxes through this map, so that a parameter that training
    drives anywhere keeps the flux in its sector.
    """
    return flux.in_domain()


def check_fraction(name: str, value: float, meaning: str) -> float:
    """A float in the open interval (0, 1), else a `ValueError` naming `name`."""
    value = float(value)
    if not 0 < value < 1:
        raise ValueError(f"`{name}` ({meaning}) must lie in the open interval (0, 1), got {value!r}.")
    return value


def kernel_shape(kernel_size: int, channels: int | None) -> tuple[int, ...]:
    """`(k,)` for one channel, `(c, c, k)` for `channels=c`."""
    k = check_int("kernel_size", kernel_size, minimum=1)
    if channels is None:
        return (k,)
    c = check_int("channels", channels, minimum=1)
    return (c, c, k)


def trainable_setup(n, shape: tuple[int, ...], boundary, flux, step_fraction):
    """Checked configuration shared by the networks: the grid size (enough points for a
    kernel of `shape` at `boundary`), the template flux and the initial step fraction."""
    n = check_int("n", n, minimum=1)
    check_boundary(boundary, n, shape[-1])
    if not isinstance(flux, AbstractFlux):
        raise TypeError(f"`flux` must be a jaxpde flux, got {type(flux).__name__}.")
    return n, flux, check_fraction("step_fraction", step_fraction, _FRACTION)


def check_boundary(boundary: str, n: int, k: int) -> None:
    """A known boundary, and enough grid points for a neumann stencil of `k` taps."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"`boundary` must be one of {BOUNDARIES}, got {boundary!r}.")
    if boundary == "neumann" and n < k:
        raise ValueError(
            f"`n` must be at least `kernel_size` = {k} for boundary='neumann', got n = {n}; "
            "pass a smaller kernel_size or another boundary."
        )


@functools.partial(jax.jit, static_argnums=1)
def random_kernel(key: PRNGKeyArray, shape: tuple[int, ...]) -> Float[Array, "*channels k"]:
    """Normal entries with variance 1 / fan-in (fan-in = taps times input channels), minus
    their mean over the taps when there are several: like a derivative, the stencil then
    annihilates constants, and the network starts as a diffusion that keeps the mean of
    each channel."""
    fan_in = shape[-1] * (1 if len(shape) == 1 else shape[1])
    kernel = jax.random.normal(key, shape, jnp.result_type(float)) / math.sqrt(fan_in)
    if shape[-1] == 1:
        return kernel
    return kernel - jnp.mean(kernel, axis=-1, keepdims=True)


def parametrised_block(op: Stencil, flux: AbstractFlux, theta: Float[Array, ""]) -> DiffusionBlock:
    r"""The diffusion block with $\tau = \sigma(\theta) \cdot 2 / (L\|K\|^2)$ (one cycle).

    The block is built with a concrete placeholder step and `allow_unstable=True`, and
    $\tau$ is set with `eqx.tree_at`: the parametrisation, not a runtime check, keeps it
    below the bound. A zero stencil (bound $+\infty$) gets $\tau = 0$: the block is then
    the identity for every $\tau$.
    """
    flux = flux_magnitudes(flux)
    bound = stable_step_size(op, flux)
    fraction = jax.nn.sigmoid(theta).astype(bound.dtype)
    tau = jnp.where(jnp.isfinite(bound), fraction * bound, 0)
    placeholder = DiffusionBlock(op, flux, 1.0, allow_unstable=True)
    return eqx.tree_at(lambda b: b.tau, placeholder, tau)


def stacked_stencils(kernels: Float[Array, "layers *channels k"], n: int, boundary: str) -> Stencil:
    """One `Stencil` per leading index of `kernels`, stacked (a batch of stencils)."""
    return eqx.filter_vmap(lambda kernel: Stencil(kernel, n, boundary=boundary))(kernels)


def initial_stack(kernels, n: int, boundary: str, flux: AbstractFlux, fraction: float):
    """`(operators, fluxes, thetas)` of a `BlockStack`: the stencils of `kernels`, a copy of
    `flux` per layer and $\theta = \\operatorname{logit}$(`fraction`) per layer."""
    layers = kernels.shape[0]
    theta = math.log(fraction / (1 - fraction))
    return stacked_stencils(kernels, n, boundary), stack_copies(flux, layers), full_vector(layers, theta, kernels.dtype)


def stack_copies(tree, count: int):
    """`count` copies of the array leaves of `tree` along a new leading axis."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (count, *x.shape)) if eqx.is_array(x) else x, tree)


def full_vector(count: int, value: float, dtype) -> Array:
    """`count` copies of `value` (moved to the device, no compiled program)."""
    return jax.device_put(np.full((count,), value, dtype))


class BlockStack(eqx.Module):
    r"""Diffusion blocks with their parameters stacked along a leading axis of length
    `layers`: stencils $K_\ell$ (`operators`), fluxes $\Phi_\ell$ (`fluxes`) and step-size
    parameters $\theta_\ell$ (`thetas`), with $\tau_\ell = \sigma(\theta_\ell)\,
    2/(L_\ell\|K_\ell\|^2)$ (`parametrised_block`). The networks that compose diffusion
    blocks (`DiffusionResNet`, `ExtrapolationNetwork`, `DiffusionResNet2D`) share these
    accessors."""

    operators: Stencil | Stencil2D
    fluxes: AbstractFlux
    thetas: Float[Array, " layers"]

    @property
    def layers(self) -> int:
        """The number of stacked blocks."""
        return self.thetas.shape[0]

    def block(self, index: int) -> DiffusionBlock:
        """The diffusion block of layer `index` (for `jaxpde.verify` and for inspection)."""
        index = check_int("index", index, minimum=-self.layers)
        if index >= self.layers:
            raise ValueError(f"`index` must be below {self.layers} (the number of blocks), got {index}.")
        op, flux, theta = jax.tree.map(lambda x: x[index], (self.operators, self.fluxes, self.thetas))
        return parametrised_block(op, flux, theta)

    def blocks(self) -> tuple[DiffusionBlock, ...]:
        """Every block, in order."""
        return tuple(self.block(index) for index in range(self.layers))

    def step_fractions(self) -> Float[Array, " layers"]:
        r"""$\tau_\ell / (2/(L_\ell\|K_\ell\|^2)) = \sigma(\theta_\ell)$, in $(0, 1)$ (1 only
        where $\sigma$ rounds up)."""
        return jax.nn.sigmoid(self.thetas)

    def stable_step_sizes(self) -> Float[Array, " layers"]:
        r"""The bounds $2/(L_\ell\|K_\ell\|^2)$ of the blocks."""
        return jax.vmap(lambda op, flux: stable_step_size(op, flux_magnitudes(flux)))(self.operators, self.fluxes)

    def step_sizes(self) -> Float[Array, " layers"]:
        r"""The step sizes $\tau_\ell$ of the blocks."""
        return jax.vmap(lambda *params: parametrised_block(*params).tau)(self.operators, self.fluxes, self.thetas)

    def scan_blocks(self, layer, u: Array):
        """`jax.lax.scan` of `layer(block, v) -> (v_next, output)` over the blocks from `u`."""
        params, static = eqx.partition((self.operators, self.fluxes, self.thetas), eqx.is_array)
        return jax.lax.scan(lambda v, p: layer(parametrised_block(*eqx.combine(p, static)), v), u, params)


def parameter_count(model) -> int:
    """The number of trainable scalars: the entries of the floating-point array leaves."""
    return sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
