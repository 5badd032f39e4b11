r"""Adversarial search for counterexamples: gradient ascent on a violation.

A stability claim "$V(x) \le 0$ for all $x$" is attacked by maximising $V$ with Adam
from many random starts at once (restarts are vmapped), projecting after every update
onto the set the claim speaks about (here: spheres of fixed radius, because the
behaviour of a nonlinear block depends on the amplitude of its input). Every point
visited is evaluated exactly, so the largest value seen is a true lower bound of
$\sup V$ and its argument is a witness that can be re-checked independently.

Random sampling and the search come from the same program: the value at the random
starts is reported as `sampled`, the best value after optimisation as `worst`.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from .._checks import check_int, check_positive_float
from ..sharding import sharded_vmap
from .energy import l2_norm


class Falsification(eqx.Module):
    """What an adversarial search found.

    - `worst`: the largest violation seen (over restarts and steps);
    - `witness`: the input that attained it (for a pair objective: the pair);
    - `sampled`: the largest violation at the random starts alone;
    - `per_restart`: the largest violation of each restart;
    - `nonfinite`: how many evaluations returned NaN or infinity (counted, and
      reported: a block that returns NaN is not stable).
    """

    worst: Float[Array, ""]
    witness: PyTree
    sampled: Float[Array, ""]
    per_restart: Float[Array, " restarts"]
    nonfinite: Int[Array, ""]

    @property
    def restarts(self) -> int:
        return self.per_restart.shape[0]


def _finite(x: Array) -> Array:
    return jnp.where(jnp.isfinite(x), x, 0.0)


def falsify(
    violation: Callable[[PyTree, Any], Float[Array, ""]],
    starts: PyTree,
    context: PyTree = None,
    *,
    project: Callable[[PyTree, Any], PyTree] | None = None,
    steps: int = 100,
    learning_rate: float = 0.05,
) -> Falsification:
    r"""Maximise `violation(x, c)` with Adam from every start, projecting each iterate.

    **Arguments:**

    - `violation`: $V(x, c)$, the scalar to maximise (larger = worse); `c` is fixed
      per restart (for example the radius of its sphere).
    - `starts`: a pytree whose leaves have a leading axis of length `restarts`.
    - `context`: per-restart constants with the same leading axis, or `None`.
    - `project`: $x \mapsto P(x, c)$ applied to the start and after each update
      (default: none).
    - `steps`: Adam steps per restart (every iterate is evaluated).
    - `learning_rate`: Adam's step size, relative to the scale of `x`.

    **Returns:** a `Falsification`. Reference: Kingma and Ba, Adam, ICLR 2015.
    """
    steps = check_int("steps", steps, minimum=1)
    learning_rate = check_positive_float("learning_rate", learning_rate)
    return _search(violation, starts, context, project, steps, learning_rate)


@eqx.filter_jit
def _search(violation, starts, context, project, steps: int, learning_rate: float) -> Falsification:
    project = (lambda x, c: x) if project is None else project
    optimiser = optax.adam(learning_rate)

    def objective(x, c):
        value = violation(x, c)
        return jnp.where(jnp.isnan(value), -jnp.inf, value)

    def one_restart(x0, c):
        x = project(x0, c)

        def body(carry, _):
            x, state, best, best_x = carry
            value, grad = jax.value_and_grad(objective)(x, c)
            better = value > best
            best = jnp.where(better, value, best)
            best_x = jax.tree.map(lambda new, old: jnp.where(better, new, old), x, best_x)
            # Ascent: Adam minimises, so feed it the negated (finite) gradient.
            updates, state = optimiser.update(jax.tree.map(lambda g: -_finite(g), grad), state, x)
            x = project(optax.apply_updates(x, updates), c)
            return (x, state, best, best_x), (value, ~jnp.isfinite(value))

        start = (x, optimiser.init(x), jnp.array(-jnp.inf, _leaf_dtype(x)), x)
        (_, _, best, best_x), (values, bad) = jax.lax.scan(body, start, length=steps)
        return best, best_x, values[0], jnp.sum(bad)

    if context is None:
        best, best_x, first, bad = sharded_vmap(lambda x: one_restart(x, None))(starts)
    else:
        best, best_x, first, bad = sharded_vmap(one_restart)(starts, context)
    index = jnp.argmax(best)
    witness = jax.tree.map(lambda leaf: leaf[index], best_x)
    return Falsification(best[index], witness, jnp.max(first), best, jnp.sum(bad))


def _leaf_dtype(tree: PyTree):
    return jax.tree.leaves(tree)[0].dtype


def to_sphere(z: Float[Array, "*shape"], radius: Float[Array, ""]) -> Float[Array, "*shape"]:
    """$r z / \\|z\\|$: the point of the sphere of radius `radius` in the direction `z`."""
    return radius * z / jnp.maximum(l2_norm(z), jnp.finfo(z.dtype).tiny)


def _unit_rms(z: Array, c) -> Array:
    # Directions live on the sphere with entries of size ~1, so that Adam's
    # per-coordinate step `learning_rate` is a relative step for every size.
    return to_sphere(z, jnp.sqrt(jnp.asarray(z.size, z.dtype)))


def _log_uniform(key: PRNGKeyArray, count: int, low: float, high: float, dtype) -> Array:
    exponent = jax.random.uniform(key, (count,), dtype, jnp.log(low), jnp.log(high))
    return jnp.exp(exponent)


def _check_radii(name: str, radii: tuple[float, float]) -> tuple[float, float]:
    low, high = (check_positive_float(name, r) for r in radii)
    if low > high:
        raise ValueError(f"`{name}` must be (low, high) with low <= high, got {radii}.")
    return low, high


def random_starts(
    key: PRNGKeyArray,
    in_shape: tuple[int, ...],
    restarts: int,
    radii: tuple[float, float],
    dtype,
) -> tuple[Float[Array, "restarts *shape"], Float[Array, " restarts"]]:
    """Gaussian directions and radii drawn log-uniformly from `radii`."""
    restarts = check_int("restarts", restarts, minimum=1)
    low, high = _check_radii("radii", radii)
    direction_key, radius_key = jax.random.split(key)
    directions = jax.random.normal(direction_key, (restarts, *in_shape), dtype)
    return directions, _log_uniform(radius_key, restarts, low, high, dtype)


def _search_on_spheres(violation_at, in_shape, key, restarts, steps, radii, learning_rate, dtype) -> Falsification:
    """Maximise `violation_at(u)` over inputs on spheres of radii drawn from `radii`;
    the witness is returned as the input $u$ itself."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    directions, radius = random_starts(key, in_shape, restarts, radii, dtype)
    found = _search(lambda z, r: violation_at(to_sphere(z, r)), directions, radius, _unit_rms, steps, learning_rate)
    radius_of_witness = radius[jnp.argmax(found.per_restart)]
    return eqx.tree_at(lambda x: x.witness, found, to_sphere(found.witness, radius_of_witness))


@eqx.filter_jit
def falsify_gain(
    f: Callable[[Array], Array],
    in_shape: tuple[int, ...],
    key: PRNGKeyArray,
    *,
    restarts: int = 256,
    steps: int = 100,
    radii: tuple[float, float] = (1e-2, 1e2),
    learning_rate: float = 0.05,
    dtype=None,
) -> Falsification:
    r"""Search for $u$ with $\|f(u)\| / \|u\| > 1$ (Euclidean stability says no).

    Each restart keeps $\|u\| = r$ fixed, with $r$ log-uniform in `radii`; the
    witness is the input $u$ itself.
    """

    def gain(u):
        return l2_norm(f(u)) / l2_norm(u)

    return _search_on_spheres(gain, in_shape, key, restarts, steps, radii, learning_rate, dtype)


@eqx.filter_jit
def falsify_lipschitz(
    f: Callable[[Array], Array],
    in_shape: tuple[int, ...],
    key: PRNGKeyArray,
    *,
    restarts: int = 256,
    steps: int = 100,
    radii: tuple[float, float] = (1e-2, 1e2),
    distances: tuple[float, float] = (1e-3, 1.0),
    learning_rate: float = 0.05,
    dtype=None,
) -> Falsification:
    r"""Search for $u \ne v$ with $\|f(u) - f(v)\| / \|u - v\| > 1$ (non-expansiveness
    says no). $\|u\| = r$ with $r$ log-uniform in `radii`; $\|v - u\| = \rho r$ with
    $\rho$ log-uniform in `distances`. The witness is the pair `(u, v)`.
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    keys = jax.random.split(key)
    directions, radius = random_starts(keys[0], in_shape, restarts, radii, dtype)
    offsets, relative = random_starts(keys[1], in_shape, restarts, distances, dtype)
    context = (radius, radius * relative)

    def quotient(pair, c):
        u, d = to_sphere(pair[0], c[0]), to_sphere(pair[1], c[1])
        return l2_norm(f(u + d) - f(u)) / c[1]

    def project(pair, c):
        return _unit_rms(pair[0], c), _unit_rms(pair[1], c)

    found = _search(quotient, (directions, offsets), context, project, steps, learning_rate)
    best = jnp.argmax(found.per_restart)
    u = to_sphere(found.witness[0], radius[best])
    v = u + to_sphere(found.witness[1], context[1][best])
    return eqx.tree_at(lambda x: x.witness, found, (u, v))


@eqx.filter_jit
def falsify_energy(
    f: Callable[[Array], Array],
    energy: Callable[[Array], Float[Array, ""]],
    in_shape: tuple[int, ...],
    key: PRNGKeyArray,
    *,
    restarts: int = 256,
    steps: int = 100,
    radii: tuple[float, float] = (1e-2, 1e2),
    learning_rate: float = 0.05,
    dtype=None,
) -> Falsification:
    r"""Search for $u$ with $E(f(u)) > E(u)$; the violation is the relative increase
    $(E(f(u)) - E(u)) / |E(u)|$. The witness is the input $u$."""

    def increase(u):
        before = energy(u)
        return (energy(f(u)) - before) / jnp.maximum(jnp.abs(before), jnp.finfo(u.dtype).tiny)

    return _search_on_spheres(increase, in_shape, key, restarts, steps, radii, learning_rate, dtype)
