"""Time loops on `lax.scan`: apply a one-sample step map repeatedly."""

from collections.abc import Callable

import jax
from jaxtyping import Array, Float

from .._checks import check_int


def rollout(
    step: Callable[[Array], Array],
    u0: Float[Array, "*shape"],
    num_steps: int,
    *,
    save_every: int | None = None,
) -> Float[Array, "*shape"] | tuple[Float[Array, "*shape"], Float[Array, "saves *shape"]]:
    """Apply `step` `num_steps` times to `u0` with `jax.lax.scan`.

    **Arguments:**

    - `step`: a map from one sample to one sample of the same shape (a block, a
      scheme step, a network).
    - `u0`: the initial sample.
    - `num_steps`: number of applications (static).
    - `save_every`: if given, also return the trajectory every `save_every` steps,
      starting with `u0`; `num_steps` must be a multiple of it.

    **Returns:** the final state, or `(final, trajectory)` with trajectory shape
    `(num_steps // save_every + 1, *u0.shape)`.
    """
    num_steps = check_int("num_steps", num_steps, minimum=0)

    def repeat(u, count):
        return jax.lax.scan(lambda v, _: (step(v), None), u, length=count)[0]

    if save_every is None:
        return repeat(u0, num_steps)
    save_every = check_int("save_every", save_every, minimum=1)
    if num_steps % save_every:
        raise ValueError(
            f"`num_steps` ({num_steps}) must be a multiple of `save_every` ({save_every})."
        )

    def chunk(u, _):
        u = repeat(u, save_every)
        return u, u

    final, saved = jax.lax.scan(chunk, u0, length=num_steps // save_every)
    trajectory = jax.numpy.concatenate([u0[None], saved], axis=0)
    return final, trajectory
