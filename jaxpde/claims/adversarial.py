"""The falsifier's side of every claim check: one compiled adversarial search per family of
operators, for all the objectives the claims ask of it (`program_objectives`) where
`compile_attack` prepared it for several claims, for one objective where a claim runs alone.

Each operator case is written as its dense matrix, zero-padded to a common shape (per
budget and family, `sampling.padded_shape`), so that a single program per family
attacks every operator, every flux and every restart: vmapped over a chunk of
`sampling.CASE_CHUNK` cases, looped over the fluxes (`sampling.map_fluxes`) and, inside
`verify.falsify`, vmapped over restarts. Padding is exact: padded rows of $K$ are zero ($\\Phi(0) = 0$, $\\Psi(0) = 0$),
padded input entries are held at zero by the projection and stay zero under the block.
The claims re-evaluate the witnesses over `depth` steps with the measurements of the
random samples (`recheck_cases`).
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._xla_flags import SEARCH_OPTIMISED
from ..fluxes import AbstractFlux, Linear
from ..operators import AbstractOperator
from ..sharding import shard_count, sharded_vmap
from ..verify.certificate import FalsifierOutcome
from ..verify.energy import l2_norm
from ..verify.falsify import adam_search, to_sphere
from . import sampling
from .sampling import CONVEX_FUNCTIONS, SelectedFlux, convex_sums, flux_scale

# What is maximised, for one step f(u) = u - tau K^T Phi(K u):
OBJECTIVES = {
    "gain": "norm gain ||f(u)|| / ||u||",
    "lipschitz": "Lipschitz quotient ||f(u) - f(v)|| / ||u - v||",
    "mass": "mean drift |mean(f(u)) - mean(u)| / max|u|",
    "range": "range excess of f(u) over [min u, max u], relative to max|u|",
    "energy": "energy increase (E(f(u)) - E(u)) / (L A^2 ||u||^2)",
    "variance": "variance increase (V(f(u)) - V(u)) / ||u||^2",
    "convex": "largest increase of sum r(u_i) / N over the convex functions r of the case",
    "operator": "operator gain ||K u|| / ||u|| (flux and tau ignored)",
    "update-lipschitz": "Lipschitz quotient of the update ||(f(u) - u) - (f(v) - v)|| / ||u - v||",
}
# The objectives of the claims on signals: one compiled program holds them all (`attack`).
SIGNAL_OBJECTIVES = ("gain", "lipschitz", "energy", "variance", "mass", "convex", "range", "update-lipschitz")
# The objectives that compare a pair (u, v): they evaluate the block at v as well.
PAIR_OBJECTIVES = ("lipschitz", "update-lipschitz")
# Radii of the inputs, relative to flux_scale / ||K||: the linear and the strongly
# nonlinear range of each flux.
RADII = (10**-1.5, 10**1.5)
# Distances of Lipschitz pairs, relative to the radius.
DISTANCES = (1e-3, 1.0)


class Cases(eqx.Module):
    """Operators, fluxes and step sizes stacked along a leading case axis `C`."""

    matrices: Float[Array, "C R N"]  # zero-padded dense matrices
    masks: Float[Array, "C N"]  # 1 on the operator's input entries
    fluxes: tuple[AbstractFlux, ...]  # one per flux kind, parameters of shape (C,)
    taus: Float[Array, "C F"]
    scales: Float[Array, "C F"]  # flux_scale / ||K||: the centre of the radii
    energy_scales: Float[Array, "C F"]  # L A^2, A = op.abs_norm_bound()
    dirichlet: Float[Array, " C"]  # 1: the range includes the boundary value 0
    convex_masks: Float[Array, "C functions"]  # which CONVEX_FUNCTIONS apply


def stack_cases(ops: list[AbstractOperator], fluxes: list[tuple], taus, convex_masks=None, *, shape=None) -> Cases:
    """Pad the dense matrices of `ops` to one shape (`shape`, default the largest of
    them) and stack the fluxes' parameters."""
    padded, masks, _ = sampling.dense_matrices(ops, shape or sampling.padded_shape(ops))
    stacked = jax.tree.map(lambda *leaves: jax.device_put(np.stack([np.asarray(x) for x in leaves])), *fluxes)
    scales = np.array([[flux_scale(f) / float(op.norm_bound()) for f in fs] for op, fs in zip(ops, fluxes)])
    energy_scales = np.array(
        [[float(f.sector_bound()) * float(op.abs_norm_bound()) ** 2 for f in fs] for op, fs in zip(ops, fluxes)]
    )
    dirichlet = np.array([getattr(op, "boundary", None) == "dirichlet" for op in ops], float)
    if convex_masks is None:
        convex_masks = np.ones((len(ops), len(CONVEX_FUNCTIONS)))
    arrays = [padded, masks, np.asarray(taus, np.float64), scales, energy_scales, dirichlet]
    arrays = [jax.device_put(x) for x in [*arrays, np.asarray(convex_masks, np.float64)]]
    return Cases(arrays[0], arrays[1], stacked, *arrays[2:])


class Attack(eqx.Module):
    """Per case and flux (shape `(C, F)`): the largest violation after the search
    (`worst`), at the random starts alone (`sampled`), the number of non-finite
    evaluations, and the witness pair `(u, v)`, each `(C, F, N)` (for the objectives
    of one input, `u` is the witness and `v` is unused)."""

    worst: Array
    sampled: Array
    nonfinite: Array
    witness: tuple[Array, Array]


def _objective(name: str, flux, matrix, mask, case):
    """The function `(u, v, f(u), f(v)) -> violation` of objective `name` of `OBJECTIVES`
    (padded entries are zero)."""
    tiny = jnp.finfo(matrix.dtype).tiny
    big = jnp.finfo(matrix.dtype).max

    def scale_of(u):
        return jnp.maximum(jnp.max(jnp.abs(u)), tiny)

    def gain(u, v, fu, fv):
        return l2_norm(fu) / l2_norm(u)

    def lipschitz(u, v, fu, fv):
        return l2_norm(fv - fu) / l2_norm(v - u)

    def mass(u, v, fu, fv):
        return jnp.abs(jnp.sum(fu - u)) / (jnp.sum(mask) * scale_of(u))

    def excess(u, v, fu, fv):
        floor = jnp.where(case["dirichlet"] > 0, 0.0, big)
        high = jnp.maximum(jnp.max(jnp.where(mask > 0, u, -big)), -floor)
        low = jnp.minimum(jnp.min(jnp.where(mask > 0, u, big)), floor)
        w_high, w_low = jnp.max(jnp.where(mask > 0, fu, -big)), jnp.min(jnp.where(mask > 0, fu, big))
        return jnp.maximum(w_high - high, low - w_low) / scale_of(u)

    def energy(u, v, fu, fv):
        def e(x):
            return jnp.sum(flux.potential(matrix @ x))

        return (e(fu) - e(u)) / (case["energy_scale"] * jnp.sum(u * u))

    def variance(u, v, fu, fv):
        # Padded entries are zero in u and f(u): the variance of the N real entries
        # is ||x||^2 - (sum x)^2 / N.
        def real(x):
            return jnp.sum(x * x) - jnp.sum(x) ** 2 / jnp.sum(mask)

        return (real(fu) - real(u)) / jnp.sum(u * u)

    def convex(u, v, fu, fv):
        scale = scale_of(u)
        low = jnp.min(jnp.where(mask > 0, u, big))
        # Padded entries contribute r(0) to both sums, which cancels.
        change = convex_sums(fu, scale, low) - convex_sums(u, scale, low)
        return jnp.max(jnp.where(case["convex_mask"] > 0, change, -jnp.inf)) / jnp.sum(mask)

    def operator(u, v, fu, fv):
        return l2_norm(matrix @ u) / l2_norm(u)

    def update_lipschitz(u, v, fu, fv):
        return l2_norm((fv - v) - (fu - u)) / l2_norm(v - u)

    functions = {
        "gain": gain, "lipschitz": lipschitz, "mass": mass, "range": excess, "energy": energy,
        "variance": variance, "convex": convex, "operator": operator, "update-lipschitz": update_lipschitz,
    }
    return functions[name]


def program_objectives(objective: str, ops: list[AbstractOperator]) -> tuple[str, ...]:
    """The objectives of the shared program that attacks `ops` with `objective`: all of
    `SIGNAL_OBJECTIVES` for one of them on signals (one program serves the claims on
    signals), the objective alone otherwise (on images the claims ask only for "gain")."""
    images = any(isinstance(op, sampling.IMAGE_OPERATORS) for op in ops)
    return SIGNAL_OBJECTIVES if objective in SIGNAL_OBJECTIVES and not images else (objective,)


# The shared programs that `compile_attack` prepared, by `_program_key`: `attack_operators`
# runs the shared program only where it was prepared (as `jaxpde certify` and `warm_up` do for
# the whole registry), and otherwise the program of its objective alone, so that a claim
# checked on its own compiles only what it asks for (at `QUICK`: "range" alone in 2.6 s, all eight in 6.6 s).
_PREPARED: set = set()


def _program_key(part: Cases, objectives: tuple[str, ...], budget) -> tuple:
    # What selects the compiled program of `attack`: the shapes of the cases, the
    # objectives, the search's size and the devices the restarts are split across.
    leaves, treedef = jax.tree.flatten(part)
    shapes = tuple((leaf.shape, str(leaf.dtype)) for leaf in leaves)
    return treedef, shapes, objectives, budget.restarts, budget.steps, shard_count()


def _objectives_to_run(objective: str, ops: list[AbstractOperator], part: Cases, budget) -> tuple[str, ...]:
    """`program_objectives` where `compile_attack` prepared that program for `part`'s
    shapes, the objective alone otherwise (the same values: one `lax.switch` branch)."""
    shared = program_objectives(objective, ops)
    return shared if _program_key(part, shared, budget) in _PREPARED else (objective,)


def log_uniform(key: PRNGKeyArray, count: int, bounds: tuple[float, float], dtype) -> Array:
    """`count` values drawn log-uniformly from `bounds = (low, high)`."""
    exponents = jax.random.uniform(key, (count,), dtype, np.log(bounds[0]), np.log(bounds[1]))
    return jnp.exp(exponents)


@functools.partial(eqx.filter_jit, compiler_options=SEARCH_OPTIMISED)
def attack(
    cases: Cases,
    key: PRNGKeyArray,
    index: Int[Array, ""],
    objectives: tuple[str, ...],
    restarts: int,
    steps: int,
    learning_rate: float = 0.05,
) -> Attack:
    r"""Maximise objective `objectives[index]` (names of `OBJECTIVES`) for every case, flux
    and restart. One program holds all of `objectives`: a `lax.switch` on `index`, which is
    not batched, so that only the chosen objective runs (the eight objectives on signals
    compile in 6 s together, in 19 s as eight programs); the block at $u$ is shared,
    the pair objectives also evaluate it at $v$. Inputs are pairs $(u, v = u + d)$ with
    $\|u\| = r$ and $\|d\| = \rho r$ fixed per restart ($d$ matters only for the pair
    objectives)."""
    count, flux_count = cases.taus.shape
    size = cases.masks.shape[1]
    keys = jax.random.split(key, (count, flux_count))

    def one(matrix, mask, case_fluxes, case, flux_index, key):
        flux = SelectedFlux(case_fluxes, flux_index)

        def block(u):
            return u - case["tau"] * (matrix.T @ flux(matrix @ u))

        def branch(name):
            function = _objective(name, flux, matrix, mask, case)
            if name in PAIR_OBJECTIVES:
                return lambda u, v, fu: function(u, v, fu, block(v))
            return lambda u, v, fu: function(u, v, fu, None)

        branches = [branch(name) for name in objectives]

        def project(z):
            return to_sphere(z * mask, jnp.sqrt(jnp.sum(mask)))

        def to_pair(pair, c):
            u = to_sphere(pair[0] * mask, c[0])
            return u, u + to_sphere(pair[1] * mask, c[1])

        def violation(pair, c):
            u, v = to_pair(pair, c)
            return jax.lax.switch(index, branches, u, v, block(u))

        keys = jax.random.split(key, 4)
        directions = jax.random.normal(keys[0], (restarts, size), matrix.dtype)
        offsets = jax.random.normal(keys[1], (restarts, size), matrix.dtype)
        radius = case["scale"] * log_uniform(keys[2], restarts, RADII, matrix.dtype)
        distance = radius * log_uniform(keys[3], restarts, DISTANCES, matrix.dtype)
        found = adam_search(
            violation, (directions, offsets), (radius, distance),
            lambda pair, c: (project(pair[0]), project(pair[1])), steps, learning_rate,
        )
        best = jnp.argmax(found.per_restart)
        witness = to_pair(found.witness, (radius[best], distance[best]))
        return found.worst, found.sampled, found.nonfinite, witness

    per_flux_case = {"tau": cases.taus, "scale": cases.scales, "energy_scale": cases.energy_scales}
    per_case = {"dirichlet": cases.dirichlet, "convex_mask": cases.convex_masks}

    # One traced body for every flux kind, run for each in turn (`sampling.map_fluxes`).
    def per_flux(flux_index, flux_values, flux_keys):
        def one_case(matrix, mask, case_fluxes, values, case_values, key):
            return one(matrix, mask, case_fluxes, {**values, **case_values}, flux_index, key)

        return sharded_vmap(one_case)(cases.matrices, cases.masks, cases.fluxes, flux_values, per_case, flux_keys)

    worst, sampled, nonfinite, witness = sampling.map_fluxes(per_flux, per_flux_case, keys)
    return Attack(worst, sampled, nonfinite, witness)


def attack_operators(
    rng: np.random.Generator, ops: list[AbstractOperator], fluxes: list[tuple], taus, objective: str, budget,
    *, convex_masks=None,
) -> Attack:
    """`attack` with `budget.restarts` restarts and `budget.steps` Adam steps, a key
    drawn from `rng`, on chunks of `sampling.CASE_CHUNK` cases padded to the budget's
    common shape (`sampling.padded_shape`), so that every claim of the budget with this
    objective runs the same compiled program; results as NumPy arrays, `(C, F)`."""
    if objective not in OBJECTIVES:
        raise ValueError(f"`objective` must be one of {tuple(OBJECTIVES)}, got {objective!r}.")
    key = jax.random.wrap_key_data(rng.integers(2**32, size=2, dtype=np.uint32))
    parts = _chunked_cases(ops, fluxes, taus, budget, convex_masks)
    objectives = _objectives_to_run(objective, ops, parts[0], budget)
    index = np.asarray(objectives.index(objective), np.int32)
    results = []
    for number, part in enumerate(parts):
        found = attack(part, jax.random.fold_in(key, number), index, objectives, budget.restarts, budget.steps)
        results.append(jax.tree.map(np.asarray, found))
    return jax.tree.map(lambda *xs: np.concatenate(xs)[: len(ops)], *results)


def _chunked_cases(ops, fluxes, taus, budget, convex_masks=None) -> list[Cases]:
    shape = sampling.padded_shape(ops, getattr(budget, "sizes", None))
    cases = stack_cases(ops, fluxes, taus, convex_masks, shape=shape)
    return [jax.tree.map(lambda x, chunk=chunk: x[chunk], cases) for chunk in sampling.chunks(len(ops))]


def compile_attack(ops, fluxes, objective: str, budget) -> None:
    """Compile (without running) the shared program that `attack_operators` then runs for
    `objective` and the other objectives of `program_objectives` on operators like `ops`
    (the same family and budget, on the same devices)."""
    part = _chunked_cases(ops, fluxes, np.ones((len(ops), len(fluxes[0]))), budget)[0]
    objectives = program_objectives(objective, ops)
    index = np.asarray(objectives.index(objective), np.int32)
    attack.lower(part, jax.random.key(0), index, objectives, budget.restarts, budget.steps).compile()
    _PREPARED.add(_program_key(part, objectives, budget))


def recheck(
    rng: np.random.Generator, op: AbstractOperator, fluxes: tuple, witnesses: np.ndarray, samples: int, depth: int,
    *, step_multipliers=None, use_lower_norm=None,
):
    """Re-evaluate one witness per flux (rows of `witnesses`, padded) with the
    operator's own code, through `sampling.evaluate` at the full step size (one program
    per operator shape; the claims use `recheck_cases`, one program for all operators)."""
    size = int(np.prod(op.in_shape))
    count = len(fluxes)
    rows = np.broadcast_to(np.asarray(witnesses)[:, None, :size], (count, samples, size))
    multipliers = np.ones(count) if step_multipliers is None else np.asarray(step_multipliers, float)
    lower_flags = np.zeros(count) if use_lower_norm is None else np.asarray(use_lower_norm, float)
    key = jax.random.wrap_key_data(rng.integers(2**32, size=2, dtype=np.uint32))
    ones = np.ones((count, samples))
    result = sampling.evaluate(op, fluxes, multipliers, lower_flags, rows, ones, ones, np.zeros(samples), key, depth)
    return jax.tree.map(np.asarray, result)


def recheck_cases(
    rng: np.random.Generator, ops, fluxes, witnesses: np.ndarray, samples: int, depth: int, *, sizes=None,
    step_multipliers=None, use_lower_norm=None,
):
    """`recheck` for every case at once: the witnesses `(C, F, N)` (padded) through
    `sampling.evaluate_operators` (the program of the random samples, so no new program
    is compiled), `depth` steps at the full step size. One `Measurements` per case."""
    count = len(fluxes[0])
    lengths = [int(np.prod(op.in_shape)) for op in ops]
    rows = [np.broadcast_to(np.asarray(w)[:, None, :n], (count, samples, n)) for n, w in zip(lengths, witnesses)]
    keys = [rng.integers(2**32, size=2, dtype=np.uint32) for _ in ops]
    ones = np.ones((len(ops), count, samples))
    return sampling.evaluate_operators(
        ops, fluxes, rows, ones, ones, np.zeros(samples), keys, depth, sizes=sizes,
        step_multipliers=step_multipliers, use_lower_norm=use_lower_norm,
    )


def falsify_and_recheck(
    rng, ops, fluxes, measured, objective: str, budget, *, step_multipliers=None, use_lower_norm=None, convex_masks=None
):
    """Attack every operator case at the step sizes of its random measurements
    (`measured[c].tau`, the full step) and re-evaluate the witnesses over `budget.depth`
    steps with the measurements of the random samples. Returns the `Attack` and one
    `Measurements` per case."""
    taus = np.stack([np.asarray(m.tau) for m in measured])
    found = attack_operators(rng, ops, fluxes, taus, objective, budget, convex_masks=convex_masks)
    rechecked = recheck_cases(
        rng, ops, fluxes, found.witness[0], budget.samples, budget.depth, sizes=budget.sizes,
        step_multipliers=step_multipliers, use_lower_norm=use_lower_norm,
    )
    return found, rechecked


def outcome(objective: str, budget, values: list[float], sampled: list[float], nonfinite: int, found: bool):
    """The `FalsifierOutcome` of a claim that bounds from above: the largest value
    over its cases after the search, and at the random starts alone."""
    return FalsifierOutcome(
        objective=OBJECTIVES.get(objective, objective), restarts=budget.restarts, steps=budget.steps,
        worst=max(values), sampled=max(sampled), nonfinite=nonfinite, found=found,
    )


def attack_norms(rng: np.random.Generator, ops: list[AbstractOperator], budget) -> Attack:
    """The "operator" objective, $\\max \\|Ku\\| / \\|u\\|$, for every operator in `ops`
    (one flux slot, unused); results of shape `(C, 1)`."""
    fluxes = [(Linear(1.0),)] * len(ops)
    return attack_operators(rng, ops, fluxes, np.ones((len(ops), 1)), "operator", budget)


def norm_outcome(budget, found: Attack, uppers: list[float], tolerance: float) -> tuple[list[bool], FalsifierOutcome]:
    """Per case, whether the searched $\\|Ku\\|/\\|u\\|$ stays below `uppers` within
    `tolerance`; and the outcome, with values reported as the ratio to the upper bound."""
    ratios = [float(found.worst[c, 0]) / upper for c, upper in enumerate(uppers)]
    started = [float(found.sampled[c, 0]) / upper for c, upper in enumerate(uppers)]
    within = [ratio <= 1 + tolerance for ratio in ratios]
    result = FalsifierOutcome(
        objective=OBJECTIVES["operator"] + " / upper bound", restarts=budget.restarts, steps=budget.steps,
        worst=max(ratios), sampled=max(started), nonfinite=int(np.sum(found.nonfinite)), found=not all(within),
    )
    return within, result
