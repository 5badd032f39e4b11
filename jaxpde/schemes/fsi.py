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
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._checks import check_int
from ..blocks import DiffusionBlock
from ..fluxes import AbstractFlux
from ..operators import AbstractOperator
from .cycle import AbstractCycleScheme, three_term_cycle


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
    r"""One FSI cycle of `block` from `u` (a pure function; see the module docstring):
    `three_term_cycle` with $\alpha_k = a_k$, $\beta_k = 1$, two steps per loop iteration
    (`FSI_UNROLL`)."""
    weights = fsi_weights(cycle_length)
    return three_term_cycle(block, u, weights, np.ones_like(weights), frozen, unroll=FSI_UNROLL)


class FSIScheme(AbstractCycleScheme):
    r"""FSI cycles of a `DiffusionBlock`: `scheme(u)` runs one cycle, which advances
    `time_step` = $\tau(n^2+n)/3$ (`AbstractCycleScheme`).

    **Arguments:**

    - `op`, `flux`: the operator $K$ and the flux $\Phi$.
    - `tau`: the step size inside a cycle; defaults to `stable_step_size(op, flux)`,
      and a larger one is refused unless `allow_unstable=True`.
    - `cycle_length`: steps per cycle $n$.
    - `frozen`: evaluate the diffusivity once per cycle (the proven-stable mode).
    """

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
        super().__init__(op, flux, tau, cycle_length=cycle_length, allow_unstable=allow_unstable)
        self.frozen = bool(frozen)

    @property
    def tau(self) -> Float[Array, ""]:
        r"""$\tau$, the step size inside a cycle."""
        return self.block.tau

    def step(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """One cycle (`fsi_cycle`)."""
        return fsi_cycle(self.block, u, self.cycle_length, frozen=self.frozen)

    def with_cycle(self, cycle_length: int, tau: Float[ArrayLike, ""]) -> "FSIScheme":
        """The FSI scheme with cycles of `cycle_length` steps of size `tau` (same `frozen`)."""
        block = self.block
        return FSIScheme(
            block.op, block.flux, tau, cycle_length=cycle_length, frozen=self.frozen,
            allow_unstable=block.allow_unstable,
        )
