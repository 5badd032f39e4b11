r"""Two-sided bounds of the spectral norm $\|K\|_2$ of a linear operator.

Lower bound: power iteration on $K^\top K$; every iterate $x$ gives the valid lower
bound $\|Kx\| / \|x\|$, so the best one seen is kept. Upper bound: the operator's
certified `norm_bound()` (analytic for derivatives, the symbol for stencils).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_int
from ..operators import AbstractOperator
from .energy import l2_norm


class SpectralNormBounds(eqx.Module):
    """`lower <= ||K||_2 <= upper`, with the input `vector` that attains `lower`."""

    lower: Float[Array, ""]
    upper: Float[Array, ""]
    vector: Float[Array, "*shape"]
    method: str = eqx.field(static=True)

    @property
    def relative_gap(self) -> Float[Array, ""]:
        """$(\\text{upper} - \\text{lower}) / \\text{upper}$."""
        return (self.upper - self.lower) / self.upper


@eqx.filter_jit
def power_iteration(
    op: AbstractOperator, key: PRNGKeyArray, iterations: int, dtype
) -> tuple[Float[Array, ""], Float[Array, "*shape"]]:
    """The best lower bound $\\|Kx\\|/\\|x\\|$ over `iterations` power iterates."""
    x = jax.random.normal(key, op.in_shape, dtype)
    x = x / l2_norm(x)

    def body(carry, _):
        x, best, best_x = carry
        y = op(x)
        value = l2_norm(y)
        better = value > best
        best = jnp.where(better, value, best)
        best_x = jnp.where(better, x, best_x)
        z = op.T(y)
        x = z / jnp.maximum(l2_norm(z), jnp.finfo(dtype).tiny)
        return (x, best, best_x), None

    start = (x, jnp.zeros((), dtype), x)
    (_, best, best_x), _ = jax.lax.scan(body, start, length=iterations)
    return best, best_x


def spectral_norm(
    op: AbstractOperator,
    *,
    iterations: int = 200,
    key: PRNGKeyArray | None = None,
) -> SpectralNormBounds:
    """Two-sided bounds of $\\|K\\|_2$ for a jaxpde operator.

    **Arguments:**

    - `op`: the operator.
    - `iterations`: power iterations for the lower bound.
    - `key`: PRNG key of the random start (default `jax.random.key(0)`).

    **Returns:** a `SpectralNormBounds` with `.lower`, `.upper`, `.vector`, `.method`.
    The lower bound is reduced by its own rounding error, so it stays a valid bound.
    """
    iterations = check_int("iterations", iterations, minimum=1)
    key = jax.random.key(0) if key is None else key
    upper = op.norm_bound()
    dtype = upper.dtype
    lower, vector = power_iteration(op, key, iterations, dtype)
    # ||fl(Kx)|| overestimates ||Kx|| by at most (row_length + size) units of roundoff.
    rounding = (op.row_length + np.prod(op.out_shape) + 2) * jnp.finfo(dtype).eps / 2
    lower = lower - rounding * op.abs_norm_bound()
    return SpectralNormBounds(
        lower=jnp.maximum(lower, 0), upper=upper, vector=vector, method="power iteration / norm_bound"
    )
