"""Schur's bound of the spectral norm from absolute row and column sums."""

import jax.numpy as jnp
from jaxtyping import Array, Float

from .rounding import round_up


def schur_norm_bound(
    row_sums: Float[Array, " rows"], column_sums: Float[Array, " cols"], row_terms: int, column_terms: int
) -> Float[Array, ""]:
    r"""Schur's bound $\|A\|_2 \le \||A|\|_2 \le \sqrt{R\,C}$, $R = \max_i \sum_j |a_{ij}|$,
    $C = \max_j \sum_i |a_{ij}|$, from the computed absolute row and column sums (of at most
    `row_terms` and `column_terms` nonnegative terms), rounded up: $\sqrt{\hat R}\cdot\sqrt{\hat C}$
    is at least the exact value times $(1 - \mathbf{u})^{(p_R - 1)/2 + (p_C - 1)/2 + 3}$
    (`proofs/spectral-norm-bounds.md`, Step 8)."""
    value = jnp.sqrt(jnp.max(row_sums)) * jnp.sqrt(jnp.max(column_sums))
    return round_up(value, (row_terms + column_terms) // 2 + 3)
