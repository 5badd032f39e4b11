r"""The FSI network: cycles of trainable diffusion blocks with an extrapolation skip.

Cycle $c$ has its own stencil $K_c$, flux $\Phi_c$ and step size $\tau_c$, and runs
the FSI recurrence of static length $n$,

$$u^{k+1} = a_k\big(u^k - \tau_c K_c^\top \Phi_c(K_c u^k)\big) + (1 - a_k)\,u^{k-1},
\qquad a_k = \frac{4k+2}{2k+3},\quad u^{-1} = u^0 .$$

In the network view the term $(1 - a_k)\,u^{k-1}$ is a skip connection over two
layers (momentum). The step size is parametrised below the stability bound,

$$\tau_c = \sigma(\theta_c)\,\frac{2}{L_c\,\|K_c\|^2}, \qquad \sigma(\theta) = \frac{1}{1 + e^{-\theta}},$$

with the sector bound $L_c$ of $\Phi_c$ and the certified, differentiable norm bound
`K_c.norm_bound()`. With the diffusivity frozen per cycle (the default) a cycle is the
linear map $q_n(\tau_c K_c^\top G K_c)$ with $|q_n| \le 1$ on $[0, 2]$, so every cycle,
and the whole network, is Euclidean stable, $\|f(u)\| \le \|u\|$, for every value of
the trainable parameters (`proofs/fsi-stability.md`).

Reference: Alt, Peter, Weickert, Schrader, SSVM 2021, arXiv:2103.15419, Section 4
(FSI schemes as networks with momentum skips).
"""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_int, check_signal
from ..blocks import DiffusionBlock, stable_step_size
from ..fluxes import AbstractFlux, PeronaMalik
from ..operators import BOUNDARIES, Derivative, Stencil
from ..schemes.fsi import FSIScheme, fsi_cycle

_FRACTION = "the initial step size as a fraction of the stability bound"


def flux_magnitudes(flux: AbstractFlux) -> AbstractFlux:
    r"""`flux` with every floating-point parameter replaced by its magnitude.

    The parameters of the fluxes in `jaxpde.fluxes` ($L$, $\lambda$, $\varepsilon$) are
    positive scales, and their sector bounds and Lipschitz constants are only valid for
    positive values. The networks evaluate their fluxes through this map, so that a
    parameter that training drives through zero keeps the flux in its sector.
    """
    return jax.tree.map(lambda x: jnp.abs(x) if eqx.is_inexact_array(x) else x, flux)


def _check_fraction(name: str, value: float, meaning: str) -> float:
    """A float in the open interval (0, 1), else a `ValueError` naming `name`."""
    value = float(value)
    if not 0 < value < 1:
        raise ValueError(f"`{name}` ({meaning}) must lie in the open interval (0, 1), got {value!r}.")
    return value


def _kernel_shape(kernel_size: int, channels: int | None) -> tuple[int, ...]:
    """`(k,)` for one channel, `(c, c, k)` for `channels=c`."""
    k = check_int("kernel_size", kernel_size, minimum=1)
    if channels is None:
        return (k,)
    c = check_int("channels", channels, minimum=1)
    return (c, c, k)


def _trainable_setup(n, kernel_size, channels, boundary, flux, step_fraction):
    """Checked configuration shared by the networks: the grid size, the kernel shape, the
    template flux (Perona-Malik by default) and the initial step fraction."""
    n = check_int("n", n, minimum=1)
    shape = _kernel_shape(kernel_size, channels)
    _check_boundary(boundary, n, shape[-1])
    flux = PeronaMalik(1.0) if flux is None else flux
    if not isinstance(flux, AbstractFlux):
        raise TypeError(f"`flux` must be a jaxpde flux, got {type(flux).__name__}.")
    return n, shape, flux, _check_fraction("step_fraction", step_fraction, _FRACTION)


def _check_boundary(boundary: str, n: int, k: int) -> None:
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


class ExtrapolationNetwork(eqx.Module):
    r"""A network of `num_cycles` FSI cycles with trainable stencils, fluxes and step sizes.

    $$f = C_{m-1} \circ \dots \circ C_0, \qquad
    C_c = \text{FSI cycle of length } n \text{ of } u \mapsto u - \tau_c K_c^\top\Phi_c(K_c u),
    \qquad \tau_c = \sigma(\theta_c)\,\frac{2}{L_c\|K_c\|^2}.$$

    Euclidean stable for every parameter value when `frozen=True`: $\|f(u)\| \le \|u\|$.
    The per-cycle parameters are stacked along a leading axis of length `num_cycles`
    (`operators.kernel`, the array parameters of `fluxes`, `thetas`) and the cycles run
    under `jax.lax.scan`. Flux parameters enter through their magnitudes
    (`flux_magnitudes`). `__call__` takes one sample; batch with `jax.vmap`.

    **Arguments:**

    - `n`: grid points of a sample.
    - `num_cycles`: number of cycles $m \ge 1$ (the depth is $m \cdot$ `cycle_length` blocks).
    - `cycle_length`: steps per cycle $n \ge 1$ (static).
    - `kernel_size`: taps $k$ of each stencil.
    - `channels`: `None` for one channel (samples of shape `(n,)`), or $c$ for stencils
      of shape `(c, c, k)` (samples of shape `(c, n)`).
    - `boundary`: `"periodic"`, `"neumann"` or `"dirichlet"` (see `jaxpde.Stencil`).
    - `flux`: the flux of every cycle at initialisation (default `PeronaMalik(1.0)`);
      each cycle trains its own copy of its array parameters.
    - `step_fraction`: $\sigma(\theta_c)$ at initialisation, in $(0, 1)$.
    - `frozen`: evaluate the diffusivity once per cycle (the proven-stable mode);
      `False` re-evaluates it at every step and has no stability guarantee.
    - `key`: initialises the kernels (`random_kernel`: normal, zero sum over the taps).

    Reference: arXiv:2103.15419, Section 4.
    """

    operators: Stencil
    fluxes: AbstractFlux
    thetas: Float[Array, " cycles"]
    cycle_length: int = eqx.field(static=True)
    frozen: bool = eqx.field(static=True)

    def __init__(
        self,
        n: int,
        *,
        num_cycles: int,
        cycle_length: int,
        kernel_size: int = 3,
        channels: int | None = None,
        boundary: str = "periodic",
        flux: AbstractFlux | None = None,
        step_fraction: float = 0.5,
        frozen: bool = True,
        key: PRNGKeyArray,
    ):
        n, shape, flux, fraction = _trainable_setup(n, kernel_size, channels, boundary, flux, step_fraction)
        num_cycles = check_int("num_cycles", num_cycles, minimum=1)
        cycle_length = check_int("cycle_length", cycle_length, minimum=1)
        kernels = random_kernel(key, (num_cycles, *shape))
        self.operators = eqx.filter_vmap(lambda kernel: Stencil(kernel, n, boundary=boundary))(kernels)
        self.fluxes = _stack(flux, num_cycles)
        self.thetas = _full(num_cycles, math.log(fraction / (1 - fraction)), kernels.dtype)
        self.cycle_length = cycle_length
        self.frozen = bool(frozen)

    @classmethod
    def from_scheme(cls, scheme: FSIScheme, *, num_cycles: int = 1) -> "ExtrapolationNetwork":
        r"""The network whose `num_cycles` cycles are each one cycle of `scheme`.

        The scheme's operator must be a `Stencil` or a `Derivative` (its stencil), and its
        step size must not exceed the network's bound $2/(L\|K\|^2)$ computed from the
        stencil's symbol; then $\theta = \operatorname{logit}(\tau / \text{bound})$
        reproduces $\tau$ (to rounding).
        """
        num_cycles = check_int("num_cycles", num_cycles, minimum=1)
        op = scheme.block.op
        if isinstance(op, Derivative):
            op = op.stencil
        if not isinstance(op, Stencil):
            raise TypeError(
                f"`scheme.block.op` must be a Stencil or a Derivative, got {type(op).__name__}."
            )
        flux = scheme.block.flux
        fraction = float(scheme.tau / stable_step_size(op, flux_magnitudes(flux)))
        if not 0 < fraction <= 1:
            raise ValueError(
                "`scheme.tau` must lie in (0, 2 / (L ||K||^2)] with the stencil's norm bound, "
                f"got {fraction:.6g} times the bound; pass a scheme with a smaller tau."
            )
        theta = math.log(fraction) - math.log1p(-fraction) if fraction < 1 else math.inf
        network = cls(
            op.n, num_cycles=num_cycles, cycle_length=scheme.cycle_length, kernel_size=op.size,
            boundary=op.boundary, flux=flux, frozen=scheme.frozen, key=jax.random.key(0),
        )
        thetas = _full(num_cycles, theta, op.kernel.dtype)
        return eqx.tree_at(
            lambda net: (net.operators, net.thetas), network, (_stack(op, num_cycles), thetas)
        )

    @property
    def num_cycles(self) -> int:
        return self.thetas.shape[0]

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one sample: `(n,)` or `(channels, n)`."""
        kernel = self.operators.kernel
        return (self.operators.n,) if kernel.ndim == 2 else (kernel.shape[2], self.operators.n)

    def block(self, index: int) -> DiffusionBlock:
        """The diffusion block of cycle `index` (for `jaxpde.verify` and for inspection)."""
        index = check_int("index", index, minimum=-self.num_cycles)
        if index >= self.num_cycles:
            raise ValueError(f"`index` must be below num_cycles = {self.num_cycles}, got {index}.")
        op, flux, theta = jax.tree.map(lambda x: x[index], self._cycle_params())
        return parametrised_block(op, flux, theta)

    def step_fractions(self) -> Float[Array, " cycles"]:
        r"""$\tau_c / (2/(L_c\|K_c\|^2)) = \sigma(\theta_c)$, in $(0, 1)$ (1 only where
        $\sigma$ rounds up)."""
        return jax.nn.sigmoid(self.thetas)

    def stable_step_sizes(self) -> Float[Array, " cycles"]:
        r"""The bounds $2/(L_c\|K_c\|^2)$ of the cycles."""
        return jax.vmap(lambda op, flux: stable_step_size(op, flux_magnitudes(flux)))(self.operators, self.fluxes)

    def step_sizes(self) -> Float[Array, " cycles"]:
        r"""The step sizes $\tau_c$ of the cycles."""
        return jax.vmap(lambda *params: parametrised_block(*params).tau)(*self._cycle_params())

    def _cycle_params(self):
        return self.operators, self.fluxes, self.thetas

    def __call__(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """All cycles, from one sample `u` of shape `in_shape`."""
        check_signal("u", u, self.in_shape)
        params, static = eqx.partition(self._cycle_params(), eqx.is_array)

        def cycle(v, p):
            block = parametrised_block(*eqx.combine(p, static))
            return fsi_cycle(block, v, self.cycle_length, frozen=self.frozen), None

        out, _ = jax.lax.scan(cycle, u, params)
        return out


def _stack(tree, count: int):
    """`count` copies of the array leaves of `tree` along a new leading axis."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (count, *x.shape)) if eqx.is_array(x) else x, tree)


def _full(count: int, value: float, dtype) -> Array:
    """`count` copies of `value` (moved to the device, no compiled program)."""
    return jax.device_put(np.full((count,), value, dtype))
