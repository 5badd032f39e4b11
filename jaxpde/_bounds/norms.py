"""The Euclidean norm of one sample."""

import jax.numpy as jnp
from jaxtyping import Array, Float


def l2_norm(u: Float[Array, "*shape"]) -> Float[Array, ""]:
    """The Euclidean norm of one sample (all axes)."""
    return jnp.sqrt(jnp.sum(u * u))
