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

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from .._checks import check_int, check_positive_float
from ..sharding import sharded_vmap
from .energy import l2_norm

DEFAULT_RADII = (1e-6, 1e6)
"""Input norms searched by default: twelve decades, log-uniform (stratified)."""
# How many of the best inputs a search keeps (for re-evaluation, e.g. in float64).
CANDIDATES = 8
# Power iterations for the top right singular vectors of the Jacobian (structured seeds).
JACOBIAN_ITERATIONS = 16


@dataclasses.dataclass(frozen=True)
class SearchRegion:
    """Where a search looked: input norms in `radii` (log-stratified over the restarts),
    `restarts` x `steps` Adam steps (of which `refined` restarts start from the best
    inputs of the first round), in `dtype`, from the start directions counted in `seeds`
    ("basis": signed unit vectors, "fourier": cos / sin modes incl. the constant and the
    alternating one, "jacobian": top right singular vectors of the Jacobian at random
    points, "random": Gaussian, "refine": the best inputs found so far, perturbed)."""

    radii: tuple[float, float]
    restarts: int
    steps: int
    dtype: str
    seeds: tuple[tuple[str, int], ...]
    refined: int = 0
    learning_rate: float = 0.05
    distances: tuple[float, float] | None = None

    def describe(self) -> str:
        seeds = ", ".join(f"{count} {kind}" for kind, count in self.seeds if count)
        text = (
            f"||u|| in [{self.radii[0]:.3g}, {self.radii[1]:.3g}] (log-stratified), {self.restarts} restarts x "
            f"{self.steps} Adam steps ({self.refined} refining the best so far), {self.dtype}; seeds: {seeds}"
        )
        if self.distances is not None:
            text += f"; pair distances ||v - u|| / ||u|| in [{self.distances[0]:.3g}, {self.distances[1]:.3g}]"
        return text

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["radii"] = list(self.radii)
        data["seeds"] = dict(self.seeds)
        data["distances"] = None if self.distances is None else list(self.distances)
        return data


class Falsification(eqx.Module):
    """What an adversarial search found.

    - `worst`: the largest violation seen (over restarts and steps);
    - `witness`: the input that attained it (for a pair objective: the pair);
    - `sampled`: the largest violation at the random starts alone;
    - `per_restart`: the largest violation of each restart;
    - `nonfinite`: how many evaluations returned NaN or infinity (counted, and
      reported: a block that returns NaN is not stable);
    - `region`: where the search looked (`SearchRegion`), or `None` for the generic
      `falsify`;
    - `candidates`: the best inputs of the `CANDIDATES` best restarts (leading axis),
      or `None`.
    """

    worst: Float[Array, ""]
    witness: PyTree
    sampled: Float[Array, ""]
    per_restart: Float[Array, " restarts"]
    nonfinite: Int[Array, ""]
    region: SearchRegion | None = eqx.field(static=True, default=None)
    candidates: PyTree = None

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
    return adam_search(violation, starts, context, project, steps, learning_rate)


def _restarts(violation, starts, context, project, steps: int, learning_rate: float):
    """Per restart: the best value, the iterate attaining it, the value at the start and
    the count of non-finite values (traced; the callers jit)."""
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
        return sharded_vmap(lambda x: one_restart(x, None))(starts)
    return sharded_vmap(one_restart)(starts, context)


@eqx.filter_jit
def adam_search(violation, starts, context, project, steps: int, learning_rate: float) -> Falsification:
    """`falsify` without its argument checks (`steps`, `learning_rate` trusted), for callers
    that check them once and search many times."""
    best, best_x, first, bad = _restarts(violation, starts, context, project, steps, learning_rate)
    index = jnp.argmax(best)
    witness = _take(best_x, index)
    return Falsification(best[index], witness, jnp.max(first), best, jnp.sum(bad))


def _take(tree, index):
    return jax.tree.map(lambda leaf: leaf[index], tree)


def _leaf_dtype(tree: PyTree):
    return jax.tree.leaves(tree)[0].dtype


def to_sphere(z: Float[Array, "*shape"], radius: Float[Array, ""]) -> Float[Array, "*shape"]:
    """$r z / \\|z\\|$: the point of the sphere of radius `radius` in the direction `z`."""
    return radius * z / jnp.maximum(l2_norm(z), jnp.finfo(z.dtype).tiny)


def _unit_rms(z: Array, c) -> Array:
    # Directions live on the sphere with entries of size ~1, so that Adam's
    # per-coordinate step `learning_rate` is a relative step for every size.
    return to_sphere(z, jnp.sqrt(jnp.asarray(z.size, z.dtype)))


@eqx.filter_jit
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
    found = adam_search(lambda z, r: violation_at(to_sphere(z, r)), directions, radius, _unit_rms, steps, learning_rate)
    radius_of_witness = radius[jnp.argmax(found.per_restart)]
    return eqx.tree_at(lambda x: x.witness, found, to_sphere(found.witness, radius_of_witness))



# --- structured seeds and the two-round search over a wide range of norms -----------


def stratified_radii(key: PRNGKeyArray, count: int, radii: tuple[float, float], dtype) -> Float[Array, " count"]:
    """`count` norms log-uniform over `radii`, one in each of `count` equal slices of the
    log range (so that every decade is visited), in random order."""
    return _stratified_radii(key, count, _check_radii("radii", radii), dtype)


@eqx.filter_jit
def _stratified_radii(key, count: int, radii: tuple[float, float], dtype):
    # One program (called eagerly, its few operations would compile one by one).
    low, high = radii
    order_key, jitter_key = jax.random.split(key)
    slots = jax.random.permutation(order_key, count).astype(dtype)
    fraction = (slots + jax.random.uniform(jitter_key, (count,), dtype)) / count
    return jnp.exp(math.log(low) + fraction * (math.log(high) - math.log(low)))


def _basis_directions(size: int, count: int) -> np.ndarray:
    """Up to `count` unit vectors: all of them with both signs if they fit, else all (or
    evenly spaced ones) with alternating signs."""
    if 2 * size <= count:
        eye = np.eye(size)
        return np.concatenate([eye, -eye])
    index = np.unique(np.round(np.linspace(0, size - 1, min(size, count))).astype(int))
    eye = np.zeros((index.size, size))
    eye[np.arange(index.size), index] = (-1.0) ** np.arange(index.size)
    return eye


def _fourier_directions(in_shape: tuple[int, ...], count: int) -> np.ndarray:
    r"""Up to `count` Fourier modes $\cos(2\pi k j / N + \varphi_k)$ of the flattened input,
    one per frequency $k$ (a fixed irrational phase in the plane of the cos / sin pair):
    the constant, the alternating (Nyquist) mode, and the frequencies in between (all if
    they fit, else spread log-evenly, filled up evenly); for several axes also the
    checkerboard."""
    size = math.prod(in_shape)
    top = size // 2
    if top + 1 <= count:
        frequencies = np.arange(top + 1)
    else:
        spread = np.geomspace(1, max(top, 1), max(count - 2, 1))
        frequencies = np.unique(np.concatenate([[0, top], np.round(spread).astype(int)]))[:count]
        rest = np.setdiff1d(np.arange(1, top), frequencies)
        need = count - frequencies.size
        if need > 0 and rest.size:  # fill up with evenly spaced frequencies
            fill = rest[np.unique(np.round(np.linspace(0, rest.size - 1, min(need, rest.size))).astype(int))]
            frequencies = np.union1d(frequencies, fill)
    j = np.arange(size)
    modes = []
    if len(in_shape) > 1:
        grids = np.indices(in_shape).reshape(len(in_shape), -1)
        modes.append((-1.0) ** grids.sum(axis=0))
    golden = (math.sqrt(5) - 1) / 2
    for k in frequencies:
        phase = 0.0 if k == 0 or 2 * k == size else 2 * np.pi * ((k * golden) % 1.0)
        modes.append(np.cos(2 * np.pi * k * j / size + phase))
    return np.stack(modes)[:count]


@eqx.filter_jit
def _random_points(keys, count: int, in_shape: tuple[int, ...], radii: tuple[float, float], dtype):
    """`count` points with norms log-stratified over `radii` in Gaussian directions, and
    Gaussian start vectors for their power iterations (from `keys[0]`, `keys[1]`, `keys[2]`)."""
    norms = _stratified_radii(keys[0], count, radii, dtype)
    at = jax.vmap(to_sphere)(jax.random.normal(keys[1], (count, *in_shape), dtype), norms)
    return at, jax.random.normal(keys[2], at.shape, dtype)


@eqx.filter_jit
def _jacobian_directions(f, points, starts, iterations: int):
    """The top right singular vector of $J_f(p)$ at each point $p$ (power iteration on
    $J^\\top J$ with forward and reverse mode)."""

    def one(p, x):
        _, jvp = jax.linearize(f, p)
        vjp = jax.linear_transpose(jvp, p)

        def body(x, _):
            (z,) = vjp(jvp(x))
            z = _finite(z)
            return z / jnp.maximum(l2_norm(z), jnp.finfo(p.dtype).tiny), None

        x, _ = jax.lax.scan(body, x / jnp.maximum(l2_norm(x), jnp.finfo(p.dtype).tiny), length=iterations)
        return x

    return jax.vmap(one)(points, starts)


def structured_starts(
    key: PRNGKeyArray,
    in_shape: tuple[int, ...],
    count: int,
    radii: tuple[float, float],
    dtype,
    f: Callable | None = None,
) -> tuple[Float[Array, "count *shape"], Float[Array, " count"], tuple[tuple[str, int], ...], Array]:
    r"""Start directions and norms for `count` restarts: up to a third unit vectors, a
    quarter Fourier modes, an eighth top right singular vectors of the Jacobian of `f`
    at random points of norms spread over `radii` (when `f` is given and differentiable),
    the rest Gaussian; norms log-stratified over `radii`.

    **Returns:** `(directions, norms, seeds, points)`: `seeds` counts each kind, `points`
    are the points where Jacobian directions were taken (for pair searches), else zeros.
    """
    count = check_int("restarts", count, minimum=1)
    radii = _check_radii("radii", radii)
    size = math.prod(in_shape)
    keys = jax.random.split(key, 5)
    basis = _basis_directions(size, count // 3) if count // 3 else np.zeros((0, size))
    fourier = _fourier_directions(in_shape, count // 4) if count // 4 else np.zeros((0, size))
    jacobian_count = count // 8 if f is not None else 0
    jacobian = np.zeros((0, size))
    points = np.zeros((0, size))
    if jacobian_count:
        at, start = _random_points(keys[:3], jacobian_count, in_shape, radii, dtype)
        try:
            vectors = _jacobian_directions(f, at, start, JACOBIAN_ITERATIONS)
            jacobian = np.asarray(vectors, np.float64).reshape(jacobian_count, size)
            points = np.asarray(at, np.float64).reshape(jacobian_count, size)
            if not np.all(np.isfinite(jacobian)):
                jacobian, points = np.zeros((0, size)), np.zeros((0, size))
        except (TypeError, ValueError, NotImplementedError):
            jacobian, points = np.zeros((0, size)), np.zeros((0, size))  # not differentiable: no such seeds
    fixed = np.concatenate([basis, fourier, jacobian]).astype(np.dtype(dtype))
    random = np.asarray(jax.random.normal(keys[3], (count - fixed.shape[0], size), dtype))
    directions = jnp.asarray(np.concatenate([fixed, random]).reshape(count, *in_shape), dtype)
    seeds = (("basis", basis.shape[0]), ("fourier", fourier.shape[0]), ("jacobian", jacobian.shape[0]),
             ("random", random.shape[0]))
    padded = np.zeros((count, size))
    padded[basis.shape[0] + fourier.shape[0]:basis.shape[0] + fourier.shape[0] + points.shape[0]] = points
    return directions, stratified_radii(keys[4], count, radii, dtype), seeds, jnp.asarray(padded.reshape(count, *in_shape), dtype)


def _violation(kind: str, fns, x, c):
    if kind == "gain":
        (f,) = fns
        u = to_sphere(x, c)
        return l2_norm(f(u)) / l2_norm(u)
    if kind == "energy":
        f, energy = fns
        u = to_sphere(x, c)
        before = energy(u)
        return (energy(f(u)) - before) / jnp.maximum(jnp.abs(before), jnp.finfo(u.dtype).tiny)
    (f,) = fns  # "lipschitz": x = (direction of u, direction of v - u), c = (||u||, ||v - u||)
    u, d = to_sphere(x[0], c[0]), to_sphere(x[1], c[1])
    return l2_norm(f(u + d) - f(u)) / c[1]


def _project(kind: str, x, c):
    if kind == "lipschitz":
        return _unit_rms(x[0], c), _unit_rms(x[1], c)
    return _unit_rms(x, c)


@eqx.filter_jit
def _round(fns, kind: str, starts, context, steps: int, learning_rate: float):
    return _restarts(
        lambda x, c: _violation(kind, fns, x, c), starts, context, lambda x, c: _project(kind, x, c), steps, learning_rate
    )


def _inputs(kind: str, x, c):
    """The search variables of a restart mapped back to inputs (u, or the pair (u, v))."""
    if kind == "lipschitz":
        u = to_sphere(x[0], c[0])
        return u, u + to_sphere(x[1], c[1])
    return to_sphere(x, c)


def _split(restarts: int) -> tuple[int, int]:
    """Restarts of the first round and of the refining second round (half, from 4 on)."""
    refined = restarts // 2 if restarts >= 4 else 0
    return restarts - refined, refined


def _two_round_search(fns, kind, starts, context, seeds, key, restarts, steps, radii, learning_rate, dtype, distances=None):
    """Round 1 from `starts`; round 2 (half the restarts) from the best inputs of round 1
    (`_refined_starts`)."""
    _, refined = _split(restarts)
    best, best_x, start_values, bad = _round(fns, kind, starts, context, steps, learning_rate)
    rounds, contexts = [(best, best_x, bad)], [context]
    if refined:
        seeds_x, context2 = _refined_starts(kind, best, best_x, context, key, refined, radii, dtype)
        best2, best_x2, _, bad2 = _round(fns, kind, seeds_x, context2, steps, learning_rate)
        rounds.append((best2, best_x2, bad2))
        contexts.append(context2)
    worst, witness, per_restart, nonfinite, candidates = _best_of_rounds(kind, rounds, contexts)
    region = SearchRegion(
        radii=(float(radii[0]), float(radii[1])), restarts=restarts, steps=steps, dtype=np.dtype(dtype).name,
        seeds=(*seeds, ("refine", refined)), refined=refined, learning_rate=float(learning_rate), distances=distances,
    )
    return Falsification(worst, witness, jnp.max(start_values), per_restart, nonfinite, region, candidates)


@eqx.filter_jit
def _refined_starts(kind: str, best, best_x, context, key, refined: int, radii: tuple[float, float], dtype):
    """The starts of round 2: the `refined` best inputs of round 1 perturbed by 10 %, their
    norms jittered by up to a factor sqrt(10) (a quarter kept) within `radii`."""
    order = jnp.argsort(-jnp.where(jnp.isfinite(best), best, -jnp.inf))[:refined]
    noise_key, radius_key = jax.random.split(key)
    leaves, treedef = jax.tree.flatten(_take(best_x, order))
    noise_keys = jax.random.split(noise_key, len(leaves))
    leaves = [leaf + 0.1 * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, noise_keys)]
    jitter = jnp.exp(jax.random.uniform(radius_key, (refined,), dtype, -0.5, 0.5) * math.log(10.0))
    jitter = jnp.where(jnp.arange(refined) < refined // 4, 1.0, jitter).astype(dtype)
    low, high = radii
    base = _take(context, order)
    if kind == "lipschitz":
        context2 = (jnp.clip(base[0] * jitter, low, high), base[1] * jitter)
    else:
        context2 = jnp.clip(base * jitter, low, high)
    return jax.tree.unflatten(treedef, leaves), context2


@eqx.filter_jit
def _best_of_rounds(kind: str, rounds, contexts):
    """Over the restarts of all `rounds` (`(best, best_x, bad)` each, with their
    `contexts`): the largest value, its input, every restart's best, the non-finite count
    and the inputs of the `CANDIDATES` best restarts."""
    best, best_x, bad = (jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts) for parts in zip(*rounds))
    context = jax.tree.map(lambda *xs: jnp.concatenate(xs), *contexts)
    index = jnp.argmax(best)
    top = jnp.argsort(-jnp.where(jnp.isnan(best), -jnp.inf, best))[:CANDIDATES]
    witness = _inputs(kind, _take(best_x, index), _take(context, index))
    candidates = jax.vmap(lambda x, c: _inputs(kind, x, c))(_take(best_x, top), _take(context, top))
    return best[index], witness, best, jnp.sum(bad), candidates


def _sphere_search(fns, kind, in_shape, key, restarts, steps, radii, learning_rate, dtype, structured) -> Falsification:
    restarts = check_int("restarts", restarts, minimum=1)
    steps = check_int("steps", steps, minimum=1)
    learning_rate = check_positive_float("learning_rate", learning_rate)
    radii = _check_radii("radii", radii)
    dtype = jnp.result_type(float) if dtype is None else dtype
    in_shape = tuple(int(s) for s in in_shape)
    start_key, refine_key = jax.random.split(key)
    first, _ = _split(restarts)
    if structured:
        directions, radius, seeds, _ = structured_starts(start_key, in_shape, first, radii, dtype, fns[0])
    else:
        directions, _ = random_starts(start_key, in_shape, first, radii, dtype)
        radius = stratified_radii(jax.random.fold_in(start_key, 1), first, radii, dtype)
        seeds = (("random", first),)
    return _two_round_search(fns, kind, directions, radius, seeds, refine_key, restarts, steps, radii, learning_rate, dtype)


def falsify_gain(
    f: Callable[[Array], Array],
    in_shape: tuple[int, ...],
    key: PRNGKeyArray,
    *,
    restarts: int = 256,
    steps: int = 100,
    radii: tuple[float, float] = DEFAULT_RADII,
    learning_rate: float = 0.05,
    dtype=None,
    structured: bool = True,
) -> Falsification:
    r"""Search for $u$ with $\|f(u)\| / \|u\| > 1$ (Euclidean stability says no).

    Each restart keeps $\|u\| = r$ fixed, with the norms $r$ log-stratified over `radii`
    (default $10^{-6} \dots 10^{6}$). With `structured=True` the restarts start from signed
    unit vectors, Fourier modes (incl. the alternating one), top right singular vectors of
    the Jacobian of `f` at random points and Gaussian directions (`structured_starts`);
    half of them then restart from the best inputs of the first half. The witness is the
    input $u$ itself; `found.region` records where the search looked.
    """
    return _sphere_search((f,), "gain", in_shape, key, restarts, steps, radii, learning_rate, dtype, structured)


def falsify_lipschitz(
    f: Callable[[Array], Array],
    in_shape: tuple[int, ...],
    key: PRNGKeyArray,
    *,
    restarts: int = 256,
    steps: int = 100,
    radii: tuple[float, float] = DEFAULT_RADII,
    distances: tuple[float, float] = (1e-3, 1.0),
    learning_rate: float = 0.05,
    dtype=None,
    structured: bool = True,
) -> Falsification:
    r"""Search for $u \ne v$ with $\|f(u) - f(v)\| / \|u - v\| > 1$ (non-expansiveness
    says no). $\|u\| = r$ with $r$ log-stratified over `radii`; $\|v - u\| = \rho r$ with
    $\rho$ log-uniform in `distances`. Structured seeds as in `falsify_gain` for $u$; for
    the Jacobian seeds $u$ is the point and $v - u$ its top right singular vector. The
    witness is the pair `(u, v)`; `found.region` records where the search looked.
    """
    restarts = check_int("restarts", restarts, minimum=1)
    steps = check_int("steps", steps, minimum=1)
    learning_rate = check_positive_float("learning_rate", learning_rate)
    radii = _check_radii("radii", radii)
    distances = _check_radii("distances", distances)
    dtype = jnp.result_type(float) if dtype is None else dtype
    in_shape = tuple(int(s) for s in in_shape)
    keys = jax.random.split(key, 4)
    first, _ = _split(restarts)
    if structured:
        directions, radius, seeds, points = structured_starts(keys[0], in_shape, first, radii, dtype, f)
        directions, offsets, radius = _pair_starts(directions, radius, points, keys[1])
    else:
        directions, _ = random_starts(keys[0], in_shape, first, radii, dtype)
        offsets = jax.random.normal(keys[1], (first, *in_shape), dtype)
        radius = stratified_radii(keys[3], first, radii, dtype)
        seeds = (("random", first),)
    relative = _log_uniform(keys[2], first, *distances, dtype)
    return _two_round_search(
        (f,), "lipschitz", (directions, offsets), (radius, radius * relative), seeds, keys[3], restarts, steps, radii,
        learning_rate, dtype, distances=distances,
    )


@eqx.filter_jit
def _pair_starts(directions, radius, points, key):
    """The pairs' starts: Gaussian offsets $v - u$ from `key`, except for the Jacobian seeds
    (the nonzero rows of `points`): $u$ at the point, $v - u$ along the top singular vector
    there (its row of `directions`)."""
    offsets = jax.random.normal(key, directions.shape, directions.dtype)
    at_point = jnp.any(points != 0, axis=tuple(range(1, points.ndim)))
    shape = at_point.shape + (1,) * (points.ndim - 1)
    offsets = jnp.where(at_point.reshape(shape), directions, offsets)
    directions = jnp.where(at_point.reshape(shape), points, directions)
    point_norms = jnp.sqrt(jnp.sum(points.reshape(points.shape[0], -1) ** 2, axis=1))
    return directions, offsets, jnp.where(at_point, point_norms, radius)


def falsify_energy(
    f: Callable[[Array], Array],
    energy: Callable[[Array], Float[Array, ""]],
    in_shape: tuple[int, ...],
    key: PRNGKeyArray,
    *,
    restarts: int = 256,
    steps: int = 100,
    radii: tuple[float, float] = DEFAULT_RADII,
    learning_rate: float = 0.05,
    dtype=None,
    structured: bool = True,
) -> Falsification:
    r"""Search for $u$ with $E(f(u)) > E(u)$; the violation is the relative increase
    $(E(f(u)) - E(u)) / |E(u)|$. Seeds and norms as in `falsify_gain`. The witness is the
    input $u$."""
    return _sphere_search((f, energy), "energy", in_shape, key, restarts, steps, radii, learning_rate, dtype, structured)
