r"""The explicit scheme $u^{k+1} = u^k - \tau K^\top \Phi(K u^k)$ for
$\partial_t u = -K^*\Phi(Ku)$: a stack of `DiffusionBlock`s in time.

Reference: arXiv:2103.15419, Section 3.
"""

import math

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._checks import check_positive_float, concrete_value
from ..blocks import DiffusionBlock, stable_step_size
from ..fluxes import AbstractFlux
from ..operators import AbstractOperator
from .rollout import rollout


class ExplicitScheme(eqx.Module):
    """Explicit (forward Euler) time stepping with one `DiffusionBlock`.

    **Arguments:**

    - `op`, `flux`: the operator $K$ and the flux $\\Phi$.
    - `tau`: the step size; defaults to `stable_step_size(op, flux)`, and a larger
      one is refused unless `allow_unstable=True`.
    """

    block: DiffusionBlock

    def __init__(
        self,
        op: AbstractOperator,
        flux: AbstractFlux,
        tau: ArrayLike | None = None,
        *,
        allow_unstable: bool = False,
    ):
        if tau is None:
            tau = stable_step_size(op, flux)
        self.block = DiffusionBlock(op, flux, tau, allow_unstable=allow_unstable)

    @property
    def tau(self) -> Float[Array, ""]:
        return self.block.tau

    def __call__(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """One time step."""
        return self.block(u)

    def rollout(self, u0: Float[Array, "*shape"], num_steps: int, *, save_every: int | None = None):
        """`num_steps` steps from `u0` (see `jaxpde.schemes.rollout`)."""
        return rollout(self.block, u0, num_steps, save_every=save_every)

    def num_steps(self, t_end: float) -> int:
        """The fewest steps of size at most `tau` that reach time `t_end`."""
        t_end = check_positive_float("t_end", t_end)
        tau = concrete_value(self.tau)
        if tau is None:
            raise ValueError("`tau` must be concrete (not traced) to choose a number of steps.")
        return max(1, math.ceil(t_end / float(tau) * (1 - 1e-12)))

    def solve(self, u0: Float[Array, "*shape"], t_end: float) -> Float[Array, "*shape"]:
        """The state at time `t_end`, reached with `num_steps(t_end)` equal steps."""
        steps = self.num_steps(t_end)
        block = eqx.tree_at(lambda b: b.tau, self.block, jnp.asarray(t_end / steps, self.tau.dtype))
        return rollout(block, u0, steps)
