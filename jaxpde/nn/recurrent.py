r"""The recurrent implicit block: a fixed-point iteration with a skip from the input.

The block maps $u$ to the solution $v$ of the implicit step

$$v = u - \tau K^\top \Phi(K v),$$

computed by the recurrent block $v \leftarrow u - \tau K^\top\Phi(Kv)$, $v^0 = u$, whose
skip connection feeds the input $u$ into every iteration. The step size is
parametrised so that the iteration contracts for every parameter value,

$$\tau = \sigma(\theta)\,\frac{\rho}{\mathrm{Lip}(\Phi)\,\|K\|^2}, \qquad
q = \tau\,\mathrm{Lip}(\Phi)\,\|K\|^2 = \rho\,\sigma(\theta) < \rho < 1,$$

with the certified norm bound `K.norm_bound()` and a static $\rho \in (0, 1)$. The
solution is unique, and Euclidean stable, $\|v\| \le \|u\|$, as every implicit step
with $\tau > 0$ and a sector-bounded flux (`proofs/implicit-stability.md`). Gradients
use the implicit function theorem (`jaxpde.schemes.ImplicitScheme`), not
backpropagation through the iterations, so memory does not grow with their number.

Reference: Alt, Peter, Weickert, Schrader, SSVM 2021, arXiv:2103.15419, Section 5
(implicit steps as recurrent blocks); Bai, Kolter, Koltun, "Deep equilibrium models",
NeurIPS 2019 (implicit gradients).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_int, check_rtol, check_signal
from ..fluxes import AbstractFlux, PeronaMalik
from ..operators import Derivative, Stencil
from ..schemes import Solution
from ..schemes.implicit import ImplicitScheme, contraction_factor
from ._common import (
    check_fraction,
    flux_magnitudes,
    kernel_shape,
    random_kernel,
    trainable_setup,
)

_RHO = "the largest contraction factor; the fixed-point iteration needs it below 1"
# A concrete step for the scheme's constructor, small enough to contract for every
# stencil and flux met in practice; the parametrised step replaces it (`eqx.tree_at`).
_PLACEHOLDER_TAU = 1e-30


class RecurrentImplicitBlock(eqx.Module):
    r"""$u \mapsto v$ with $v = u - \tau K^\top\Phi(Kv)$, solved by a contracting recurrence.

    $\tau = \sigma(\theta)\,\rho / (\mathrm{Lip}(\Phi)\|K\|^2)$, so the fixed-point
    iteration contracts by $q = \rho\,\sigma(\theta) < 1$ for every value of the
    trainable stencil, flux and $\theta$; it needs about
    $\log(\text{rtol}) / \log q$ iterations. Flux parameters enter through their
    magnitudes (`jaxpde.nn.flux_magnitudes`). `__call__` takes one
    sample; batch with `jax.vmap`.

    **Arguments:**

    - `n`: grid points of a sample.
    - `kernel_size`: taps $k$ of the stencil.
    - `channels`: `None` for one channel (samples `(n,)`), or $c$ for a stencil of
      shape `(c, c, k)` (samples `(c, n)`).
    - `boundary`: `"periodic"`, `"neumann"` or `"dirichlet"` (see `jaxpde.Stencil`).
    - `flux`: the flux at initialisation (default `PeronaMalik(1.0)`); its array
      parameters train.
    - `step_fraction`: $\sigma(\theta)$ at initialisation, in $(0, 1)$.
    - `rho`: the largest contraction factor, in $(0, 1)$ (static).
    - `rtol`, `max_iterations`, `throw`: as in `jaxpde.schemes.ImplicitScheme`.
    - `key`: initialises the kernel (`jaxpde.nn._common.random_kernel`: normal,
      zero sum over the taps).

    Reference: arXiv:2103.15419, Section 5.
    """

    op: Stencil
    flux: AbstractFlux
    theta: Float[Array, ""]
    rho: float = eqx.field(static=True)
    rtol: float | None = eqx.field(static=True)
    max_iterations: int = eqx.field(static=True)
    throw: bool = eqx.field(static=True)

    def __init__(
        self,
        n: int,
        *,
        kernel_size: int = 3,
        channels: int | None = None,
        boundary: str = "periodic",
        flux: AbstractFlux | None = None,
        step_fraction: float = 0.5,
        rho: float = 0.9,
        rtol: float | None = None,
        max_iterations: int = 1000,
        throw: bool = True,
        key: PRNGKeyArray,
    ):
        shape = kernel_shape(kernel_size, channels)
        flux = PeronaMalik(1.0) if flux is None else flux
        n, flux, fraction = trainable_setup(n, shape, boundary, flux, step_fraction)
        check_rtol(rtol)
        self.op = Stencil(random_kernel(key, shape), n, boundary=boundary)
        self.flux = flux
        self.theta = jax.device_put(np.asarray(math.log(fraction / (1 - fraction)), self.op.kernel.dtype))
        self.rho = check_fraction("rho", rho, _RHO)
        self.rtol = rtol
        self.max_iterations = check_int("max_iterations", max_iterations, minimum=1)
        self.throw = bool(throw)

    @classmethod
    def from_scheme(cls, scheme: ImplicitScheme, *, rho: float = 0.9) -> "RecurrentImplicitBlock":
        r"""The block that computes the steps of `scheme` (a `Stencil` or `Derivative`
        operator), with $\theta = \operatorname{logit}(q / \rho)$; needs the scheme's
        contraction factor $q < \rho$."""
        rho = check_fraction("rho", rho, _RHO)
        op = scheme.op.stencil if isinstance(scheme.op, Derivative) else scheme.op
        if not isinstance(op, Stencil):
            raise TypeError(f"`scheme.op` must be a Stencil or a Derivative, got {type(op).__name__}.")
        q = float(contraction_factor(op, flux_magnitudes(scheme.flux), scheme.tau))
        if not 0 < q < rho:
            raise ValueError(
                f"the contraction factor of `scheme` must lie in (0, rho) = (0, {rho:g}), got {q:.6g}; "
                "pass a scheme with a smaller tau or a larger rho."
            )
        fraction = q / rho
        block = cls(
            op.n, kernel_size=op.size, boundary=op.boundary, flux=scheme.flux, rho=rho,
            rtol=scheme.rtol, max_iterations=scheme.max_iterations, throw=scheme.throw,
            key=jax.random.key(0),
        )
        theta = jax.device_put(np.asarray(math.log(fraction) - math.log1p(-fraction), op.kernel.dtype))
        return eqx.tree_at(lambda b: (b.op, b.theta), block, (op, theta))

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one sample: `(n,)` or `(channels, n)`."""
        return self.op.in_shape

    def step_size(self) -> Float[Array, ""]:
        r"""$\tau = \sigma(\theta)\,\rho / (\mathrm{Lip}(\Phi)\|K\|^2)$ (0 for a zero stencil,
        where every $\tau$ gives the identity)."""
        flux = flux_magnitudes(self.flux)
        scale = flux.lipschitz() * self.op.norm_bound() ** 2
        fraction = jax.nn.sigmoid(self.theta).astype(scale.dtype)
        positive = scale > 0
        return jnp.where(positive, fraction * self.rho / jnp.where(positive, scale, 1), 0)

    def contraction_factor(self) -> Float[Array, ""]:
        r"""$q = \tau\,\mathrm{Lip}(\Phi)\,\|K\|^2 = \rho\,\sigma(\theta) < 1$ (to rounding)."""
        return contraction_factor(self.op, flux_magnitudes(self.flux), self.step_size())

    def scheme(self) -> ImplicitScheme:
        """The `ImplicitScheme` (fixed-point solver) that this block evaluates."""
        placeholder = ImplicitScheme(
            self.op, flux_magnitudes(self.flux), _PLACEHOLDER_TAU, solver="fixed-point",
            rtol=self.rtol, max_iterations=self.max_iterations, throw=self.throw,
        )
        return eqx.tree_at(lambda s: s.tau, placeholder, self.step_size())

    def solve(self, u: Float[Array, "*shape"]) -> Solution:
        """The solution with its result code, iteration count and residual (never raises)."""
        check_signal("u", u, self.in_shape)
        return self.scheme().solve_step(u)

    def __call__(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """The solution $v$ for one sample `u` (raises when the solve fails and `throw`)."""
        check_signal("u", u, self.in_shape)
        return self.scheme()(u)
