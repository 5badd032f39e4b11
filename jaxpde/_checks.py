"""Argument checks shared by the modules: errors that name the argument and the fix.

Configuration errors are raised as `ValueError`/`TypeError` when the value is known
at construction or trace time; values only known under `jax.jit` are checked with
`eqx.error_if`.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

# The boundary conditions of every operator (see `jaxpde.operators`).
BOUNDARIES = ("neumann", "periodic", "dirichlet")


def as_float_array(x: ArrayLike) -> Array:
    """`x` as a floating JAX array (default float dtype for integers and Python
    numbers), moved with `jax.device_put` so that no conversion program is compiled."""
    if isinstance(x, jax.Array):
        return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))
    array = np.asarray(x)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    return jax.device_put(array.astype(jax.dtypes.canonicalize_dtype(array.dtype)))


def concrete_value(x: ArrayLike) -> np.ndarray | None:
    """The value of `x` as a NumPy array, or `None` when `x` is traced."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def check_int(name: str, value: object, *, minimum: int) -> int:
    """A Python integer `>= minimum`, else a `ValueError`/`TypeError` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be a Python integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}, got {value}.")
    return int(value)


def check_positive_float(name: str, value: object) -> float:
    """A finite Python float `> 0` (static configuration such as a grid spacing)."""
    try:
        result = float(value)  # pyright: ignore[reportArgumentType]
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.") from None
    if not math.isfinite(result) or result <= 0:
        raise ValueError(f"`{name}` must be finite and positive, got {value!r}.")
    return result


def positive_array(name: str, value: ArrayLike, fix: str) -> Array:
    """`value` as a scalar array, checked finite and positive.

    A concrete value is checked now (`ValueError`); a traced one with `eqx.error_if`.
    """
    array = as_float_array(value)
    if array.ndim != 0:
        raise ValueError(f"`{name}` must be a scalar, got shape {array.shape}.")
    known = concrete_value(value)
    if known is not None:
        if not np.isfinite(known) or known <= 0:
            raise ValueError(f"`{name}` must be finite and positive, got {value!r}; {fix}")
        return array
    bad = ~(jnp.isfinite(array) & (array > 0))
    return eqx.error_if(array, bad, f"`{name}` must be finite and positive; {fix}")


def check_signal(name: str, u: Array, shape: tuple[int, ...]) -> None:
    """Trace-time check that `u` is a floating array of the operator's input shape."""
    if tuple(u.shape) != tuple(shape):
        raise ValueError(
            f"`{name}` must have shape {shape} (one sample; batch with `jax.vmap`), "
            f"got {tuple(u.shape)}."
        )
    if not jnp.issubdtype(u.dtype, jnp.floating):
        raise TypeError(f"`{name}` must be a floating-point array, got dtype {u.dtype}.")


def check_rtol(rtol: float | None) -> float | None:
    """A relative tolerance in (0, 1), or `None` for the solver's default."""
    if rtol is not None and not 0 < rtol < 1:
        raise ValueError(f"`rtol` must lie in (0, 1) or be None (the default), got {rtol!r}.")
    return rtol
