r"""What FED and FSI cycles share: the cycle polynomial and the cycle time.

With the diffusivity frozen, a cycle of length $n$ with step-size limit $\tau$ maps
$u$ to $q_n(\tau A)\,u$, $A = K^\top G K$, for the polynomial

$$q_n(x) = \frac{\sin((2n+1)\varphi)}{(2n+1)\sin\varphi}, \qquad \sin^2\varphi = \frac{x}{2}.$$

FED writes it as a product $\prod_i (1 - \tau_i x)$ over its roots, FSI as the
three-term recurrence $q_{k+1} = a_k (1 - x) q_k + (1 - a_k) q_{k-1}$,
$a_k = (4k+2)/(2k+3)$, $q_0 = q_{-1} = 1$. Since $|\sin(m\varphi)| \le m|\sin\varphi|$,
$|q_n| \le 1$ on $[0, 2]$: a cycle is Euclidean stable whenever the explicit step
is, $\tau \le 2/(L\|K\|^2)$. Its slope at 0 gives the cycle time
$-q_n'(0)\,\tau = \tau (n^2 + n)/3$ (`proofs/fsi-stability.md`,
`proofs/cycle-time-identities.md`).

Reference: Grewenig, Weickert, Bruhn, "From box filtering to fast explicit
diffusion", DAGM 2010; Hafner, Ochs, Weickert, Reißel, Grewenig, "FSI schemes: fast
semi-iterative solvers for PDEs and optimisation methods", GCPR 2016.

`AbstractCycleScheme` is the scheme interface (`AbstractScheme`) for cycles: a step is one
cycle, and `for_time(t_end, steps=M)` picks the cycle length and step-size limit of
`plan_cycles`.
"""

import abc
import fractions
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from .._checks import check_int, check_positive_float, concrete_value
from ..blocks import DiffusionBlock, stable_step_size
from ..fluxes import AbstractFlux, Frozen
from ..operators import AbstractOperator
from ._base import AbstractScheme, concrete_time, renamed_keyword, resolve_steps


def cycle_time(tau: float, cycle_length: int) -> float:
    """Time $\\tau (n^2 + n) / 3$ that one cycle of length $n$ advances."""
    n = check_int("cycle_length", cycle_length, minimum=1)
    return float(tau) * (n * n + n) / 3


def cycle_length_for(duration: float, tau: float) -> int:
    """The shortest cycle length $n$ with $\\tau (n^2 + n)/3 \\ge$ `duration`."""
    duration = check_positive_float("duration", duration)
    tau = check_positive_float("tau", tau)
    n = max(1, math.ceil((math.sqrt(1 + 12 * duration / tau) - 1) / 2))
    while n > 1 and cycle_time(tau, n - 1) >= duration:
        n -= 1
    while cycle_time(tau, n) < duration:
        n += 1
    return n


def plan_cycles(t_end: float, tau: float, cycles: int) -> tuple[int, float]:
    """Cycle length $n$ and step-size limit $\\tau' \\le \\tau$ such that `cycles`
    cycles of length $n$ advance exactly `t_end`: $n$ is the shortest length with
    `cycles` $\\cdot\\, \\tau (n^2+n)/3 \\ge$ `t_end`, and $\\tau' = 3\\,t_{\\rm end} /$
    (`cycles` $(n^2+n)$)."""
    t_end = check_positive_float("t_end", t_end)
    cycles = check_int("cycles", cycles, minimum=1)
    n = cycle_length_for(t_end / cycles, tau)
    return n, min(float(tau), 3 * t_end / (cycles * (n * n + n)))


def cycle_polynomial(x: "float | np.ndarray", cycle_length: int) -> "float | np.ndarray":
    """$q_n(x)$ by the FSI recurrence, in float64 (any real $x$; $|q_n| \\le 1$ on $[0, 2]$)."""
    n = check_int("cycle_length", cycle_length, minimum=0)
    x = np.asarray(x, np.float64)
    previous = current = np.ones_like(x)
    for k in range(n):
        a = (4 * k + 2) / (2 * k + 3)
        previous, current = current, a * (1 - x) * current + (1 - a) * previous
    return current


def unstable_cycle_length(x: float) -> int | None:
    r"""The shortest cycle length $n$ with $|q_n(x)| > 1$, or `None` when $0 \le x \le 2$
    (where every cycle is stable; $x = \tau\lambda$ is never negative). Above 2, $\sin\varphi = \cosh\psi > 1$ and
    $|q_n(x)| = \cosh((2n+1)\psi) / ((2n+1)\cosh\psi)$ grows without bound in $n$, so
    the explicit bound is sharp for long cycles; just above it, short cycles stay stable."""
    x = float(x)
    if not x >= 0:
        raise ValueError(f"`x` = tau * eigenvalue must be >= 0, got {x!r}.")
    if x <= 2:
        return None
    psi = math.acosh(math.sqrt(x / 2))
    n = 0
    while True:
        ratio = math.cosh((2 * n + 1) * psi) / ((2 * n + 1) * math.cosh(psi))
        if ratio > 1 + 1e-9 or (ratio > 1 - 1e-9 and abs(_exact_cycle_polynomial(x, n)) > 1):
            return n
        n += 1


def _exact_cycle_polynomial(x: float, cycle_length: int) -> fractions.Fraction:
    """$q_n(x)$ in exact rational arithmetic (decides near-ties of `unstable_cycle_length`)."""
    value = fractions.Fraction(x)
    previous = current = fractions.Fraction(1)
    for k in range(cycle_length):
        a = fractions.Fraction(4 * k + 2, 2 * k + 3)
        previous, current = current, a * (1 - value) * current + (1 - a) * previous
    return current


def three_term_cycle(
    block: DiffusionBlock,
    u: Float[Array, "*shape"],
    extrapolation: Float[ArrayLike, " steps"],
    step_fractions: Float[ArrayLike, " steps"],
    frozen: bool | Bool[Array, ""] = True,
    *,
    unroll: int | bool = 1,
) -> Float[Array, "*shape"]:
    r"""One cycle of the recurrence that FSI and FED share:

    $$u^{k+1} = \alpha_k\big(u^k - \beta_k\tau K^\top\Phi(Ku^k)\big) + (1 - \alpha_k)\,u^{k-1},
    \qquad u^{-1} = u^0,$$

    FSI: $\alpha_k = a_k$, $\beta_k = 1$; FED: $\alpha_k = 1$, $\beta_k = \tau_k/\tau_{\max}$. A step with
    $\alpha = 1$, $\beta = 0$ is the identity (padding). `frozen` evaluates the diffusivity
    once, at $u^0$; it may be a traced boolean (both updates are then computed).

    The coefficients are data of the loop, so one program serves FSI and FED cycles of every
    length up to the padded one (the cycle claims rely on this). `fsi_cycle` runs it with
    `unroll=2`; `fed_cycle` runs FED's $\alpha = 1$ steps as a two-term loop that carries only
    $u^k$ (the same values: $1 \cdot x + 0 \cdot u^{k-1} = x$ in floating point for finite
    $u^{k-1}$). `unroll` is `lax.scan`'s: with 1, XLA:CPU copies the carried pair
    $(u^{k+1}, u^k)$ in every step (three state-sized copies in the loop body of a batched D_1
    cycle); with 2 the two states swap roles within the loop body and the copies go. The
    operations are the same; the results agree to rounding (bit for bit for even lengths in
    the tests; the step left over from an odd length may round differently, by an ulp).
    """
    frozen_block = eqx.tree_at(lambda b: b.flux, block, Frozen(block.flux, block.op(u)))

    def update(v):
        if isinstance(frozen, bool):
            return (frozen_block if frozen else block).update(v)
        return jnp.where(frozen, frozen_block.update(v), block.update(v))

    def step(carry, coefficients):
        current, previous = carry
        alpha, beta = coefficients
        return (alpha * (current + beta * update(current)) + (1 - alpha) * previous, current), None

    coefficients = (jnp.asarray(extrapolation, u.dtype), jnp.asarray(step_fractions, u.dtype))
    (final, _), _ = jax.lax.scan(step, (u, u), coefficients, unroll=unroll)
    return final


class AbstractCycleScheme(AbstractScheme):
    r"""Cycles of a `DiffusionBlock` with step-size limit $\tau$ = `block.tau`: a step of the
    scheme interface is one cycle of $n$ = `cycle_length` explicit steps, which advances the
    cycle time $\tau(n^2+n)/3$ with $n$ evaluations of the flux (FED: `FEDScheme`, FSI:
    `FSIScheme`).

    **Abstract (each cycle scheme implements):**

    - `step(u)`: one cycle from `u`.
    - `with_cycle(cycle_length, tau)`: the scheme of the same kind and configuration with
      this cycle length and step-size limit (built, and checked, by its constructor).

    **Implemented here:** `time_step` ($\tau(n^2+n)/3$),
    `evaluations_per_step` ($n$), `default_steps` (one cycle) and `for_time`, which takes the
    shortest cycle length that reaches `t_end` in `steps` cycles with steps of at most
    $\tau$ and shrinks $\tau$ to land on `t_end` (`plan_cycles`). For one release,
    `for_time` and `solve` accept `cycles=` and `rollout` accepts `num_cycles=`, deprecated
    names of `steps` and `num_steps`.
    """

    block: DiffusionBlock
    cycle_length: int = eqx.field(static=True)

    def __init__(
        self,
        op: AbstractOperator,
        flux: AbstractFlux,
        tau: ArrayLike | None,
        *,
        cycle_length: int,
        allow_unstable: bool,
    ):
        """The block with step-size limit `tau` (default `stable_step_size(op, flux)`; a larger
        one is refused unless `allow_unstable=True`) and the checked `cycle_length` >= 1."""
        if tau is None:
            tau = stable_step_size(op, flux)
        self.block = DiffusionBlock(op, flux, tau, allow_unstable=allow_unstable)
        self.cycle_length = check_int("cycle_length", cycle_length, minimum=1)

    @abc.abstractmethod
    def with_cycle(self, cycle_length: int, tau: Float[ArrayLike, ""]) -> "AbstractCycleScheme":
        """The scheme of the same kind and configuration with cycles of `cycle_length` steps
        and the step-size limit `tau`."""

    @property
    def time_step(self) -> float | Float[Array, ""]:
        r"""The cycle time $\tau(n^2+n)/3$ (a Python float when $\tau$ is concrete)."""
        n = self.cycle_length
        return concrete_time(self.block.tau) * (n * n + n) / 3

    @property
    def cycle_time(self) -> float | Float[Array, ""]:
        r"""$\tau(n^2+n)/3$, the time one cycle advances: `time_step`."""
        return self.time_step

    @property
    def evaluations_per_step(self) -> int:
        """$n$ = `cycle_length`, one evaluation of the flux per step of the cycle."""
        return self.cycle_length

    def default_steps(self, t_end: float) -> int:
        """One cycle: its length follows from `plan_cycles` (`for_time`)."""
        check_positive_float("t_end", t_end)
        return 1

    @renamed_keyword("cycles", "steps")
    def for_time(self, t_end: float, *, steps: int | None = None) -> "AbstractCycleScheme":
        r"""The scheme whose `steps` cycles advance exactly `t_end` (`None`: one): the shortest
        cycle length that gets there with steps of at most $\tau$, and $\tau$ shrunk to match
        (`plan_cycles`); same kind and configuration (`with_cycle`)."""
        t_end, steps = resolve_steps(self, t_end, steps)
        tau = concrete_value(self.block.tau)
        if tau is None:
            raise ValueError(
                "The step-size limit `block.tau` is traced: `for_time` needs a concrete one to choose "
                "the cycle length. Plan outside `jit` and pass the planned scheme in."
            )
        length, shrunk = plan_cycles(t_end, float(tau), steps)
        return self.with_cycle(length, jnp.asarray(shrunk, self.block.tau.dtype))

    solve = renamed_keyword("cycles", "steps")(AbstractScheme.solve)
    rollout = renamed_keyword("num_cycles", "num_steps")(AbstractScheme.rollout)
