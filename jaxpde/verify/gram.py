"""Gram iteration (`gram_bound`): a certified upper bound of the spectral norm of
(batches of) matrices. Implemented in `jaxpde._bounds.gram`, which the operators'
`norm_bound()` uses too; re-exported here."""

from .._bounds.gram import (
    GRAM_ITERATIONS,
    gram_bound,
    gram_iterations_for,
    top_right_vector,
)

__all__ = ["GRAM_ITERATIONS", "gram_bound", "gram_iterations_for", "top_right_vector"]
