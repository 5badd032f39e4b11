r"""Fast Semi-Iterative (FSI) cycles: explicit steps with an extrapolation skip.

$$u^{k+1} = a_k\big(u^k - \tau K^\top \Phi(K u^k)\big) + (1 - a_k)\, u^{k-1},
\qquad a_k = \frac{4k+2}{2k+3},\quad u^{-1} = u^0,$$

for $k = 0, \dots, n-1$, restarted after every cycle. The skip over two layers is the
momentum of the network view. A cycle advances the time $\tau(n^2+n)/3$ instead of
$n\tau$.

- `frozen=True` evaluates the diffusivity once per cycle, $G = g(|Ku^0|^2)$: the cycle
  is then the linear map $q_n(\tau K^\top G K)$, Euclidean stable for
  $\tau \le 2/(L\|K\|^2)$ (`proofs/fsi-stability.md`).
- `frozen=False` re-evaluates $\Phi$ at every step. No proof covers it;
  `jaxpde certify` reports what its falsifier finds (claim `fsi-unfrozen`).

Reference: Hafner, Ochs, Weickert, Reißel, Grewenig, GCPR 2016;
arXiv:2103.15419, Section 4.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._checks import check_int
from ..blocks import DiffusionBlock, stable_step_size
from ..fluxes import AbstractFlux
from ..operators import AbstractOperator
from .cycle import cycle_time, plan_cycles, three_term_cycle
from .rollout import rollout


def fsi_weights(cycle_length: int) -> np.ndarray:
    """The extrapolation weights $a_k = (4k+2)/(2k+3)$, $k = 0, \\dots, n-1$ (float64)."""
    k = np.arange(check_int("cycle_length", cycle_length, minimum=1), dtype=np.float64)
    return (4 * k + 2) / (2 * k + 3)


def fsi_rounding_amplification(cycle_length: int, *, per_root: int = 16) -> float:
    r"""How much an FSI cycle amplifies rounding errors: $\sum_k \max_x |E_{k,n}(x)|$, where
    $E_{k,n}$ is the recurrence $e_{j+1} = a_j(1 - x)e_j + (1 - a_j)e_{j-1}$ started from
    $e_k = 0$, $e_{k+1} = 1$ (an error made in step $k$), evaluated at $j = n$ on a grid
    of $x \in [0, 2]$ with `per_root` points per root of $q_n$. Every state of a stable
    frozen cycle has norm at most $\|u^0\|$ ($|q_k| \le 1$), so this sum times the
    largest per-step error bounds the cycle's first-order rounding error."""
    n = check_int("cycle_length", cycle_length, minimum=1)
    phi = np.linspace(0, np.pi / 2, per_root * (n + 4) + 1)
    x = 2 * np.sin(phi) ** 2
    weights = fsi_weights(n)
    total = 0.0
    for k in range(n):
        previous, current = np.zeros_like(x), np.ones_like(x)
        for j in range(k + 1, n):
            a = weights[j]
            previous, current = current, a * (1 - x) * current + (1 - a) * previous
        total += float(np.max(np.abs(current)))
    return total


# `lax.scan` unrolling of an FSI cycle: two steps per loop iteration let XLA keep the carried
# pair (u^k, u^{k-1}) in place instead of copying it at every step (`three_term_cycle`).
FSI_UNROLL = 2


def fsi_cycle(block: DiffusionBlock, u: Float[Array, "*shape"], cycle_length: int, *, frozen: bool = True):
    """One FSI cycle of `block` from `u` (a pure function; see the module docstring):
    `three_term_cycle` with $\alpha_k = a_k$, $\beta_k = 1$, two steps per loop iteration
    (`FSI_UNROLL`)."""
    weights = fsi_weights(cycle_length)
    return three_term_cycle(block, u, weights, np.ones_like(weights), frozen, unroll=FSI_UNROLL)


class FSIScheme(eqx.Module):
    """FSI cycles of a `DiffusionBlock`: `scheme(u)` runs one cycle.

    **Arguments:**

    - `op`, `flux`: the operator $K$ and the flux $\\Phi$.
    - `tau`: the step size inside a cycle; defaults to `stable_step_size(op, flux)`,
      and a larger one is refused unless `allow_unstable=True`.
    - `cycle_length`: steps per cycle $n$.
    - `frozen`: evaluate the diffusivity once per cycle (the proven-stable mode).
    """

    block: DiffusionBlock
    cycle_length: int = eqx.field(static=True)
    frozen: bool = eqx.field(static=True)

    def __init__(
        self,
        op: AbstractOperator,
        flux: AbstractFlux,
        tau: ArrayLike | None = None,
        *,
        cycle_length: int,
        frozen: bool = True,
        allow_unstable: bool = False,
    ):
        if tau is None:
            tau = stable_step_size(op, flux)
        self.block = DiffusionBlock(op, flux, tau, allow_unstable=allow_unstable)
        self.cycle_length = check_int("cycle_length", cycle_length, minimum=1)
        self.frozen = bool(frozen)

    @property
    def tau(self) -> Float[Array, ""]:
        return self.block.tau

    @property
    def cycle_time(self) -> float:
        """$\\tau (n^2 + n)/3$, the time one cycle advances (needs a concrete `tau`)."""
        return cycle_time(float(self.tau), self.cycle_length)

    def __call__(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """One cycle."""
        return fsi_cycle(self.block, u, self.cycle_length, frozen=self.frozen)

    def rollout(self, u0: Float[Array, "*shape"], num_cycles: int, *, save_every: int | None = None):
        """`num_cycles` cycles from `u0` (see `jaxpde.schemes.rollout`)."""
        return rollout(self, u0, num_cycles, save_every=save_every)

    def for_time(self, t_end: float, *, cycles: int = 1) -> "FSIScheme":
        """The scheme whose `cycles` cycles advance exactly `t_end`: the shortest cycle
        length that gets there with steps of at most `tau`, and the step shrunk to match
        (`jaxpde.schemes.plan_cycles`)."""
        length, tau = plan_cycles(t_end, float(self.tau), cycles)
        block = self.block
        return FSIScheme(
            block.op, block.flux, jnp.asarray(tau, self.tau.dtype), cycle_length=length,
            frozen=self.frozen, allow_unstable=block.allow_unstable,
        )

    def solve(self, u0: Float[Array, "*shape"], t_end: float, *, cycles: int = 1) -> Float[Array, "*shape"]:
        """The state at time `t_end`, reached with `cycles` cycles (`for_time`)."""
        return self.for_time(t_end, cycles=cycles).rollout(u0, cycles)
