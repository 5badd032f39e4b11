r"""A user's linear callable $u \mapsto Ku$, adapted for `spectral_norm`.

`linear_callable` checks the callable on its input shape and dtype and supplies the
adjoint (`jax.linear_transpose` unless given); `callable_power` runs the power iteration.
Only the norms' rounding is certified for a callable: its own rounding is unknown.
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from .._bounds import gamma, l2_norm
from ._power import power_iterate


class LinearCallable(eqx.Module):
    """A user's linear callable with its transpose, input shape and dtype."""

    fn: Callable = eqx.field(static=True)
    transpose: Callable = eqx.field(static=True)
    in_shape: tuple[int, ...] = eqx.field(static=True)
    out_shape: tuple[int, ...] = eqx.field(static=True)
    dtype: np.dtype = eqx.field(static=True)


def linear_callable(fn: Callable, in_shape, transpose: Callable | None) -> LinearCallable:
    """`fn` checked to map one array of `in_shape` (a shape or an example array) to one
    array of the same dtype, with its adjoint (`transpose`, or `jax.linear_transpose`)."""
    if in_shape is None:
        raise ValueError(
            "`in_shape` is required when `op` is a callable: pass the shape of one input "
            "sample (a tuple of ints) or an example array (its shape and dtype are used)."
        )
    if hasattr(in_shape, "shape") and hasattr(in_shape, "dtype"):
        shape, dtype = tuple(in_shape.shape), np.dtype(in_shape.dtype)
    else:
        try:
            shape = tuple(int(s) for s in in_shape)
        except TypeError:
            raise ValueError(f"`in_shape` must be a tuple of ints or an example array, got {in_shape!r}.") from None
        dtype = np.dtype(jnp.result_type(float))
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"`in_shape` must be a non-empty tuple of positive ints, got {shape}.")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"`in_shape`: the example array must be real floating point, got dtype {dtype}.")
    primal = jax.ShapeDtypeStruct(shape, dtype)
    try:
        out = jax.eval_shape(fn, primal)
    except Exception as error:
        raise ValueError(
            f"`op` could not be applied to an input of shape {shape} and dtype {dtype}: {error}"
        ) from error
    if not isinstance(out, jax.ShapeDtypeStruct) or out.dtype != dtype or out.ndim == 0:
        raise ValueError(
            f"`op` must map one array of shape {shape} to one array of the same dtype ({dtype}) "
            f"with at least one axis, as a linear map does; got {out!r}. Wrap it so that it "
            "returns a single array."
        )
    if transpose is None:
        try:
            transposed = jax.linear_transpose(fn, primal)
            jax.eval_shape(transposed, out)
        except Exception as error:
            raise ValueError(
                f"`op` does not look linear: jax.linear_transpose failed ({type(error).__name__}: "
                f"{error}). Pass a linear function of its input, or give its adjoint as `transpose`."
            ) from error

        def transpose(y, transposed=transposed):
            return transposed(y)[0]
    else:
        try:
            back = jax.eval_shape(transpose, out)
        except Exception as error:
            raise ValueError(f"`transpose` could not be applied to an output of shape {out.shape}: {error}") from error
        if not isinstance(back, jax.ShapeDtypeStruct) or back.shape != shape:
            raise ValueError(
                f"`transpose` must map arrays of shape {out.shape} back to shape {shape}, got {back!r}."
            )
    return LinearCallable(fn, transpose, shape, tuple(out.shape), dtype)


@eqx.filter_jit
def callable_power(linear: LinearCallable, key: PRNGKeyArray, iterations: int) -> tuple[Array, Array]:
    """The best $\\|Kx\\|/\\|x\\|$ over power iterates from a random start, reduced by the
    rounding of the norms only."""
    x = jax.random.normal(key, linear.in_shape, linear.dtype)
    ratio, vector = power_iterate(linear.fn, linear.transpose, x / l2_norm(x), iterations)
    # Only the norms' rounding is known: the callable's own rounding is not.
    return ratio * (1 - gamma(math.prod(linear.in_shape) + math.prod(linear.out_shape) + 4, linear.dtype)), vector
