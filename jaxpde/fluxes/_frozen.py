r"""Frozen diffusivities $\Phi_0(s) = g(s_0^2)\,s$: the linear fluxes of FED / FSI cycles,
semi-implicit steps and the lagged diffusivity iteration."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._base import AbstractFlux
from ._classic import Linear


class Frozen(AbstractFlux):
    r"""A flux with its diffusivity frozen at $s_0$: $\Phi_0(s) = g(s_0^2)\, s$ (elementwise).

    The linearisation that FED and FSI cycles, the semi-implicit step and the lagged
    diffusivity iteration use: $K^\top \Phi_0(K\,\cdot)$ is the symmetric positive
    semidefinite matrix $K^\top G K$, $G = \operatorname{diag}(g(s_0^2))$. Its sector
    bound is that of `flux`, since $0 \le g \le L$.

    **Arguments:**

    - `flux`: the flux whose diffusivity is frozen.
    - `s0`: where it is frozen (for a scheme: $K u$ at the start of a cycle or step).
    """

    values: Float[Array, "*shape"]
    bound: Float[Array, ""]

    def __init__(self, flux: AbstractFlux, s0: Float[Array, "*shape"]):
        self.values = flux.diffusivity(s0 * s0)
        self.bound = flux.sector_bound()

    def diffusivity(self, s2):
        return jnp.broadcast_to(self.values.astype(s2.dtype), s2.shape)

    def potential(self, s):
        r"""$\Psi_0(s) = g(s_0^2)\, s^2 / 2$."""
        return self.values.astype(s.dtype) * (s * s) / 2

    def sector_bound(self):
        return self.bound

    def derivative_range(self):
        return jnp.zeros_like(self.bound), self.bound


def frozen_diffusivity(values: ArrayLike) -> Frozen:
    r"""A `Frozen` flux with the given diffusivity values $g \ge 0$ (the linear flux
    $\Phi(s) = G s$, $G = \operatorname{diag}(g)$; sector bound $\max g$)."""
    values = jnp.asarray(values)
    template = Frozen(Linear(1.0), jnp.zeros(values.shape, values.dtype))
    return eqx.tree_at(lambda f: (f.values, f.bound), template, (values, jnp.max(values)))
