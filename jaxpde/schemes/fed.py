r"""Fast Explicit Diffusion (FED): cycles of varying explicit step sizes.

$$\tau_i = \frac{\tau_{\max}}{2\cos^2\!\big(\pi\frac{2i+1}{4n+2}\big)}, \quad i = 0, \dots, n-1,
\qquad \sum_i \tau_i = \tau_{\max}\frac{n^2+n}{3}.$$

With the diffusivity frozen once per cycle, a cycle is
$\prod_i (I - \tau_i K^\top G K) = q_n(\tau_{\max} K^\top G K)$, the same polynomial as
an FSI cycle, Euclidean stable for $\tau_{\max} \le 2/(L\|K\|^2)$
(`proofs/fed-stability.md`). Half of the $\tau_i$ exceed the explicit limit, so in floating
point the order of the steps matters: an error made after step $i$ is multiplied by
the remaining factors. `fed_order` picks a $\kappa$-cycle $i \mapsto i\kappa \bmod n$
that keeps this amplification small; the plain ascending order blows up for long
cycles (`benchmarks/time_to_solution.py`).

Reference: Grewenig, Weickert, Bruhn, DAGM 2010; Weickert, Grewenig, Schroers,
Bruhn, "Cyclic schemes for PDE-based image analysis", IJCV 2016.
"""

import functools
import math

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

# Candidate kappas tried by `fed_order` (spread over those coprime to n).
ORDER_CANDIDATES = 24


def _grid(cycle_length: int, per_root: int) -> np.ndarray:
    """Points $x = 2\\sin^2\\varphi$ of $[0, 2]$, uniform in $\\varphi$, `per_root` per root of $q_n$."""
    phi = np.linspace(0, np.pi / 2, per_root * (cycle_length + 4) + 1)
    return 2 * np.sin(phi) ** 2


def rounding_amplification(fractions: np.ndarray, *, per_root: int = 16) -> float:
    r"""How much a cycle with step sizes `fractions` $\cdot\,\tau_{\max}$ (in this order)
    amplifies rounding errors, on the eigenvalues $x \in [0, 2]$ of $\tau_{\max} A$:

    $$\sum_i \max_x |P_{i-1}(x)| \cdot \max_x |S_i(x)|, \quad
    P_{i} = \prod_{j \le i} (1 - t_j x), \quad S_i = \prod_{j > i} (1 - t_j x).$$

    Step $i$ acts on a state of size $|P_{i-1}|\,\|u^0\|$; a relative error $\epsilon$ made
    there reaches the end multiplied by $S_i$. So this sum times the largest per-step
    relative error bounds the first-order rounding error of the cycle, in units of
    $\|u^0\|$ (evaluated on a grid of `per_root` points per root of $q_n$).
    """
    t = np.asarray(fractions, np.float64)
    x = _grid(t.size, per_root)
    with np.errstate(divide="ignore"):
        logs = np.log(np.abs(1 - t[:, None] * x[None, :]))
    prefix = np.concatenate([np.zeros((1, x.size)), np.cumsum(logs, axis=0)[:-1]])
    suffix = np.concatenate([np.cumsum(logs[::-1], axis=0)[::-1][1:], np.zeros((1, x.size))])
    with np.errstate(over="ignore"):
        return float(np.sum(np.exp(prefix.max(axis=1) + suffix.max(axis=1))))


def _ascending(cycle_length: int) -> np.ndarray:
    i = np.arange(cycle_length, dtype=np.float64)
    return 1 / (2 * np.cos(np.pi * (2 * i + 1) / (4 * cycle_length + 2)) ** 2)


@functools.lru_cache(maxsize=64)
def fed_order(cycle_length: int) -> tuple[int, ...]:
    """The $\\kappa$-cycle order $(0, \\kappa, 2\\kappa, \\dots) \\bmod n$ of the ascending
    step sizes with the smallest `rounding_amplification`, over up to
    `ORDER_CANDIDATES` values $\\kappa \\le n/2$ coprime to $n$ ($O(n^2)$ work each, on
    4 grid points per root)."""
    n = check_int("cycle_length", cycle_length, minimum=1)
    ascending = _ascending(n)
    # kappa and n - kappa give mirrored orders: search kappa <= n / 2.
    coprime = [k for k in range(1, n // 2 + 1) if math.gcd(k, n) == 1] or [1]
    picks = np.unique(np.linspace(0, len(coprime) - 1, min(ORDER_CANDIDATES, len(coprime))).round().astype(int))
    orders = [tuple(int(i * coprime[p] % n) for i in range(n)) for p in picks]
    return min(orders, key=lambda order: rounding_amplification(ascending[list(order)], per_root=4))


@functools.lru_cache(maxsize=64)
def _checked_fractions(cycle_length: int, reorder: bool) -> tuple[float, ...]:
    n = cycle_length
    ascending = _ascending(n)
    total = math.fsum(ascending)
    expected = (n * n + n) / 3
    eps = float(np.finfo(np.float64).eps)
    # Each tau_i carries a few ulp from cos and the division; fsum adds no more.
    if not (np.all(ascending > 0) and abs(total - expected) <= 8 * n * eps * expected):
        raise RuntimeError(
            f"FED step sizes for n = {n} fail their identity: sum = {total!r}, expected (n^2+n)/3 = {expected!r}."
        )
    order = fed_order(n) if reorder else tuple(range(n))
    if sorted(order) != list(range(n)):
        raise RuntimeError(f"FED order for n = {n} is not a permutation: {order}.")
    return tuple(float(v) for v in ascending[list(order)])


def fed_step_sizes(tau_max: float, cycle_length: int, *, reorder: bool = True) -> np.ndarray:
    """The FED step sizes of one cycle (float64), checked when created: all positive and
    summing to $\\tau_{\\max}(n^2+n)/3$ within rounding (`RuntimeError` otherwise).

    **Arguments:**

    - `tau_max`: the explicit step-size limit.
    - `cycle_length`: $n$.
    - `reorder`: order the steps by `fed_order` (recommended); `False` keeps the
      ascending order, whose rounding errors blow up for long cycles.
    """
    n = check_int("cycle_length", cycle_length, minimum=1)
    return float(tau_max) * np.asarray(_checked_fractions(n, bool(reorder)))


def fed_cycle(block: DiffusionBlock, u: Float[Array, "*shape"], cycle_length: int, *, reorder: bool = True):
    """One FED cycle with $\\tau_{\\max}$ = `block.tau`, the diffusivity frozen at $u$."""
    fractions = fed_step_sizes(1.0, cycle_length, reorder=reorder)
    return three_term_cycle(block, u, np.ones_like(fractions), fractions, True)


class FEDScheme(eqx.Module):
    """FED cycles of a `DiffusionBlock`: `scheme(u)` runs one cycle.

    **Arguments:**

    - `op`, `flux`: the operator $K$ and the flux $\\Phi$ (frozen once per cycle).
    - `tau_max`: the explicit step-size limit of the cycle; defaults to
      `stable_step_size(op, flux)`, and a larger one is refused unless
      `allow_unstable=True`.
    - `cycle_length`: steps per cycle $n$.
    - `reorder`: the step order (see `fed_step_sizes`).
    """

    block: DiffusionBlock
    cycle_length: int = eqx.field(static=True)
    reorder: bool = eqx.field(static=True)

    def __init__(
        self,
        op: AbstractOperator,
        flux: AbstractFlux,
        tau_max: ArrayLike | None = None,
        *,
        cycle_length: int,
        reorder: bool = True,
        allow_unstable: bool = False,
    ):
        if tau_max is None:
            tau_max = stable_step_size(op, flux)
        self.block = DiffusionBlock(op, flux, tau_max, allow_unstable=allow_unstable)
        self.cycle_length = check_int("cycle_length", cycle_length, minimum=1)
        self.reorder = bool(reorder)
        fed_step_sizes(1.0, self.cycle_length, reorder=self.reorder)  # the identity checks

    @property
    def tau_max(self) -> Float[Array, ""]:
        return self.block.tau

    @property
    def step_sizes(self) -> np.ndarray:
        """The step sizes of one cycle, in the order used (needs a concrete `tau_max`)."""
        return fed_step_sizes(float(self.tau_max), self.cycle_length, reorder=self.reorder)

    @property
    def cycle_time(self) -> float:
        """$\\tau_{\\max}(n^2+n)/3$."""
        return cycle_time(float(self.tau_max), self.cycle_length)

    def __call__(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """One cycle."""
        return fed_cycle(self.block, u, self.cycle_length, reorder=self.reorder)

    def rollout(self, u0: Float[Array, "*shape"], num_cycles: int, *, save_every: int | None = None):
        """`num_cycles` cycles from `u0` (see `jaxpde.schemes.rollout`)."""
        return rollout(self, u0, num_cycles, save_every=save_every)

    def for_time(self, t_end: float, *, cycles: int = 1) -> "FEDScheme":
        """The scheme whose `cycles` cycles advance exactly `t_end` (`plan_cycles`)."""
        length, tau = plan_cycles(t_end, float(self.tau_max), cycles)
        block = self.block
        return FEDScheme(
            block.op, block.flux, jnp.asarray(tau, self.tau_max.dtype), cycle_length=length,
            reorder=self.reorder, allow_unstable=block.allow_unstable,
        )

    def solve(self, u0: Float[Array, "*shape"], t_end: float, *, cycles: int = 1) -> Float[Array, "*shape"]:
        """The state at time `t_end`, reached with `cycles` cycles (`for_time`)."""
        return self.for_time(t_end, cycles=cycles).rollout(u0, cycles)
