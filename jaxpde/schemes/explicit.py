r"""The explicit scheme $u^{k+1} = u^k - \tau K^\top \Phi(K u^k)$ for
$\partial_t u = -K^*\Phi(Ku)$: a stack of `DiffusionBlock`s in time.

Reference: arXiv:2103.15419, Section 3.
"""

import math
import warnings

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._checks import check_positive_float, concrete_value
from ..blocks import DiffusionBlock, stable_step_size
from ..fluxes import AbstractFlux
from ..operators import AbstractOperator
from ._base import AbstractScheme, concrete_time, resolve_steps

# `default_steps` counts t_end / tau up to this relative slack, so that a t_end that is a
# multiple of tau up to rounding takes that many steps (and not one more).
STEP_COUNT_SLACK = 1e-12


class ExplicitScheme(AbstractScheme):
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

    @property
    def time_step(self) -> float | Float[Array, ""]:
        """$\\tau$ (a Python float when concrete)."""
        return concrete_time(self.tau)

    @property
    def evaluations_per_step(self) -> int:
        """One evaluation of the flux per step."""
        return 1

    def step(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """One time step."""
        return self.block(u)

    def default_steps(self, t_end: float) -> int:
        """The fewest steps of size at most `tau` that reach time `t_end`."""
        t_end = check_positive_float("t_end", t_end)
        tau = concrete_value(self.tau)
        if tau is None:
            raise ValueError("`tau` must be concrete (not traced) to choose a number of steps.")
        return max(1, math.ceil(t_end / float(tau) * (1 - STEP_COUNT_SLACK)))

    def num_steps(self, t_end: float) -> int:
        """The former name of `default_steps`, deprecated: call `default_steps`."""
        warnings.warn("`num_steps` is deprecated: call `default_steps`.", DeprecationWarning, stacklevel=2)
        return self.default_steps(t_end)

    def for_time(self, t_end: float, *, steps: int | None = None) -> "ExplicitScheme":
        """The scheme whose `steps` equal steps of size `t_end / steps` reach `t_end`
        (`None`: `default_steps(t_end)`, the fewest steps of size at most `tau`). A step
        no larger than `tau` (up to the slack of `default_steps`) keeps the stability check
        of this scheme; a larger one is checked again (a `ValueError` above the stability
        bound unless the scheme was built with `allow_unstable=True`)."""
        t_end, steps = resolve_steps(self, t_end, steps)
        tau = jnp.asarray(t_end / steps, self.tau.dtype)
        known = concrete_value(self.tau)
        if known is not None and t_end / steps <= float(known) * (1 + STEP_COUNT_SLACK):
            return eqx.tree_at(lambda s: s.block.tau, self, tau)
        block = self.block
        return ExplicitScheme(block.op, block.flux, tau, allow_unstable=block.allow_unstable)
