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

import math

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_int, check_signal
from ..blocks import stable_step_size
from ..fluxes import AbstractFlux, PeronaMalik
from ..operators import Derivative, Stencil
from ..schemes.fsi import FSIScheme, fsi_cycle
from ._common import (
    BlockStack,
    flux_magnitudes,
    full_vector,
    initial_stack,
    kernel_shape,
    random_kernel,
    stack_copies,
    trainable_setup,
)


class ExtrapolationNetwork(BlockStack):
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
        shape = kernel_shape(kernel_size, channels)
        flux = PeronaMalik(1.0) if flux is None else flux
        n, flux, fraction = trainable_setup(n, shape, boundary, flux, step_fraction)
        num_cycles = check_int("num_cycles", num_cycles, minimum=1)
        cycle_length = check_int("cycle_length", cycle_length, minimum=1)
        kernels = random_kernel(key, (num_cycles, *shape))
        self.operators, self.fluxes, self.thetas = initial_stack(kernels, n, boundary, flux, fraction)
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
        thetas = full_vector(num_cycles, theta, op.kernel.dtype)
        return eqx.tree_at(
            lambda net: (net.operators, net.thetas), network, (stack_copies(op, num_cycles), thetas)
        )

    @property
    def num_cycles(self) -> int:
        """The number of cycles (`layers`: one block per cycle)."""
        return self.layers

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one sample: `(n,)` or `(channels, n)`."""
        kernel = self.operators.kernel
        return (self.operators.n,) if kernel.ndim == 2 else (kernel.shape[2], self.operators.n)

    def __call__(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """All cycles, from one sample `u` of shape `in_shape`."""
        check_signal("u", u, self.in_shape)
        out, _ = self.scan_blocks(lambda block, v: (fsi_cycle(block, v, self.cycle_length, frozen=self.frozen), None), u)
        return out
