r"""Power iteration on $K^\top K$ and its certified lower bounds of $\|K\|_2$.

Every iterate $x$ gives a lower bound $\|Kx\|/\|x\| \le \|K\|$; the computed ratio is
reduced by its own rounding error, $\rho(1 - \gamma_{N+4}) - \gamma_r\||K|\|$
(`proofs/spectral-norm-bounds.md`, Step 5).
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._bounds import gamma, l2_norm, unit_roundoff
from ..operators import AbstractOperator

# Power iteration from a near-optimal start stops after PATIENCE iterates that each
# improve the best ratio by less than the relative STALL.
PATIENCE = 8
STALL = 1e-10


def power_iterate(
    apply: Callable, adjoint: Callable, x: Array, iterations: int, stall: float | None = None
) -> tuple[Array, Array]:
    """Best $\\|Kx\\|/\\|x\\|$ over up to `iterations` iterates $x \\leftarrow K^\\top K x$ (from `x`).

    With `stall`, the loop stops once `PATIENCE` consecutive iterates raised the best
    value by less than the relative amount `stall` each (every iterate is a valid lower
    bound, so stopping early only costs tightness).
    """
    tiny = jnp.finfo(x.dtype).tiny

    def step(x, best, best_x):
        y = apply(x)
        value = l2_norm(y) / jnp.maximum(l2_norm(x), tiny)
        better = value > best
        gained = value > best * (1 + (0.0 if stall is None else stall))
        best = jnp.where(better, value, best)
        best_x = jnp.where(better, x, best_x)
        z = adjoint(y)
        return z / jnp.maximum(l2_norm(z), tiny), best, best_x, gained

    best0 = jnp.zeros((), x.dtype)
    if stall is None:

        def body(carry, _):
            x, best, best_x, _ = step(*carry)
            return (x, best, best_x), None

        (_, best, best_x), _ = jax.lax.scan(body, (x, best0, x), length=iterations)
        return best, best_x

    def cond(carry):
        i, _, _, _, quiet = carry
        return (i < iterations) & (quiet < PATIENCE)

    def loop(carry):
        i, x, best, best_x, quiet = carry
        x, best, best_x, gained = step(x, best, best_x)
        return i + 1, x, best, best_x, jnp.where(gained, 0, quiet + 1)

    start = (jnp.zeros((), jnp.int32), x, best0, x, jnp.zeros((), jnp.int32))
    _, _, best, best_x, _ = jax.lax.while_loop(cond, loop, start)
    return best, best_x


@eqx.filter_jit
def power_iteration(
    op: AbstractOperator, key: PRNGKeyArray, iterations: int, dtype
) -> tuple[Float[Array, ""], Float[Array, "*shape"]]:
    """The best $\\|Kx\\|/\\|x\\|$ over `iterations` power iterates from a random start.

    Not reduced by rounding (see `spectral_norm` for the certified lower bound).
    """
    x = jax.random.normal(key, op.in_shape, dtype)
    return power_iterate(op, op.T, x / l2_norm(x), iterations)


def certified_lower(ratio: Array, abs_bound: Array, row_length: int, entries: int) -> Array:
    r"""A computed ratio $\mathrm{fl}(\|\mathrm{fl}(Kx)\|)/\mathrm{fl}(\|x\|)$ turned into a
    lower bound of $\|Kx\|/\|x\|$: $\rho(1 - \gamma_{N+4}) - \gamma_r\||K|\|$, rounded down."""
    dtype = ratio.dtype
    u = unit_roundoff(dtype)
    lower = ratio * (1 - gamma(entries + 4, dtype)) - gamma(row_length, dtype) * abs_bound * (1 + 4 * u)
    return jnp.maximum(lower * (1 - 4 * u), 0)


def operator_certified_lower(op: AbstractOperator, ratio: Array) -> Array:
    """`certified_lower` with the operator's $\\||K|\\|$ bound, row length and size."""
    entries = math.prod(op.in_shape) + math.prod(op.out_shape)
    return certified_lower(ratio, op.abs_norm_bound(), op.row_length, entries)


@eqx.filter_jit
def operator_lower(op: AbstractOperator, x: Array) -> Array:
    """Certified $\\|Kx\\|/\\|x\\|$ for a jaxpde operator."""
    return operator_certified_lower(op, l2_norm(op(x)) / l2_norm(x))


@eqx.filter_jit
def operator_power(op: AbstractOperator, key: PRNGKeyArray, iterations: int, dtype) -> tuple[Array, Array]:
    """Certified lower bound and its vector from `power_iteration` (random start)."""
    ratio, vector = power_iteration(op, key, iterations, dtype)
    return operator_certified_lower(op, ratio), vector
