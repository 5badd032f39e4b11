"""Monitors along one input or one trajectory: Euclidean gain and norm decay."""

from collections.abc import Callable

import jax.numpy as jnp
from jaxtyping import Array, Float


def l2_norm(u: Float[Array, "*shape"]) -> Float[Array, ""]:
    """The Euclidean norm of one sample (all axes)."""
    return jnp.sqrt(jnp.sum(u * u))


def euclidean_gain(f: Callable[[Array], Array], u: Float[Array, "*shape"]) -> Float[Array, ""]:
    """$\\|f(u)\\| / \\|u\\|$: above 1 means $f$ amplified this input."""
    return l2_norm(f(u)) / l2_norm(u)


def norm_ratios(trajectory: Float[Array, "steps *shape"]) -> Float[Array, " steps-1"]:
    """$\\|u^{k+1}\\| / \\|u^k\\|$ along a trajectory (first axis: time)."""
    norms = jnp.sqrt(jnp.sum(trajectory.reshape(trajectory.shape[0], -1) ** 2, axis=1))
    return norms[1:] / norms[:-1]


def worst_norm_ratio(trajectory: Float[Array, "steps *shape"]) -> Float[Array, ""]:
    """The largest one-step norm ratio; at most 1 (+ rounding) for a stable scheme."""
    return jnp.max(norm_ratios(trajectory))
