"""Claims about multigrid: the cycle contracts the error in the energy norm (with a factor
that does not grow with n), the U-net computes the V-cycle, and the semi-implicit step
solved by multigrid is Euclidean stable."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._xla_flags import FUSION_EMITTERS, QUICK_COMPILE
from ..blocks import stable_step_size
from ..fluxes import Frozen, Linear, frozen_diffusivity
from ..nn.unet import MultigridUNet, random_systems
from ..operators import Derivative, Stencil
from ..schemes.banded import diffusion_stencil
from ..schemes.multigrid import (
    INTERPOLATIONS,
    Multigrid,
    MultigridLevel,
    ascend,
    build_hierarchy,
    coarse_factor,
    coarse_operator,
    coarse_solve,
    default_interpolation,
    descend,
    energy_normalised,
    level_sizes,
    multigrid_cycle,
)
from ..schemes.semi_implicit import (
    condition_bound,
    default_rtol,
    solve_diffusion_system,
)
from ..sharding import sharded_vmap
from ..verify.certificate import CaseResult, FalsifierOutcome
from ..verify.energy import l2_norm
from . import sampling
from .registry import Budget, Claim, Evidence

# The measured bounds of the default V(2,2) red-black cycle (item 3 of the proof): about
# 0.05 for D_1; for D_2 about 0.25 at tau = 1e2 and 0.36 at tau = 1e4 (n >= 256).
FACTOR_BOUNDS = {1: 0.1, 2: 0.4}
TAUS = (1e2, 1e4)
POWER_ITERATIONS = 20
# Step sizes of the stability claim: up to this multiple of the explicit bound.
LARGEST_MULTIPLE = 1e4
# The claims' own programs (hierarchies and cycles): compiled with less optimisation.
_quickly_compiled = functools.partial(eqx.filter_jit, compiler_options=QUICK_COMPILE)


def multigrid_sizes(budget: Budget) -> tuple[int, ...]:
    """Grid sizes of the factor measurement: 2^6 ... 2^12 for `QUICK`, 2^6 ... 2^16 for
    `THOROUGH`, 2^6 for smaller (test) budgets."""
    largest = {"quick": 12, "thorough": 16}.get(budget.name, 6)
    return tuple(2**p for p in range(6, largest + 1, 2))


def _configurations(budget: Budget) -> int:
    """How many of the fixed configurations a budget checks: all four from 16 samples on
    (`QUICK`, `THOROUGH`), the first two for smaller (test) budgets."""
    return 4 if budget.samples >= 16 else 2


@_quickly_compiled
def _systems(op, taus, seeds, count: int):
    r"""For each $\tau$ of `taus`: the constant-coefficient system ($g = 1$) and `count`
    random ones (`random_systems` from the key of the seed of `seeds`), one batch in this
    order; the solver's tolerance of every system, and the default cycle's
    `Multigrid.schedule`."""
    cycle = Multigrid()

    def per_tau(tau, seed):
        constant = diffusion_stencil(op, Linear(1.0), tau)
        random = random_systems(jax.random.key(seed), count, op, tau)
        return jax.tree.map(lambda c, r: jnp.concatenate([c[None], r]), constant, random)

    batches = jax.vmap(per_tau)(jnp.asarray(taus, jnp.float64), seeds)  # (taus, count + 1, ...)
    systems = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), batches)
    tolerances = jax.vmap(lambda A: cycle.default_rtol(A, jnp.float64))(systems)
    return systems, tolerances, cycle.schedule(jax.tree.map(lambda x: x[0], systems))


# The level-wise cycle: one program per level shape (n, bandwidth, periodic, kernel), whatever
# the size of the finest grid, so that the coarse levels shared by the sizes (and orders)
# are compiled once. Each program takes that level's data alone (`MultigridLevel`) and runs
# the library's own per-level functions on the batch of systems.
@_quickly_compiled
def _level(A, prolongation, pre_weights, post_weights, smoother: str, extension: str):
    """The `MultigridLevel`s of the systems `A` (a batch; the transfer and the weights
    broadcast over it) and their next coarser operators (`coarse_operator`)."""
    def one(A):
        level = MultigridLevel(A, prolongation, pre_weights, post_weights, smoother, extension)
        return level, coarse_operator(A, prolongation, extension)

    return jax.vmap(one)(A)


_coarse_factors = _quickly_compiled(jax.vmap(coarse_factor))


@_quickly_compiled
def _descend(level, x, f):
    return sharded_vmap(descend)(level, x, f)


@_quickly_compiled
def _ascend(level, x, f, error):
    return sharded_vmap(ascend)(level, x, f, error)


@_quickly_compiled
def _coarse_solve(factors, f):
    return sharded_vmap(coarse_solve)(factors, f)


@_quickly_compiled
def _normalised(A, e):
    r"""$\|e\|_A$ and $e / \|e\|_A$ for each system of the batch (`energy_normalised`)."""
    return sharded_vmap(energy_normalised)(A, e)


def _level_hierarchy(multigrid: Multigrid, systems, schedule):
    """`multigrid.hierarchy` of each system of the batch `systems`, level by level (its
    `schedule`, `Multigrid.schedule`): the batched `MultigridLevel`s from fine to coarse
    and the Cholesky factors of the coarsest operators."""
    prolongations, pre_weights, post_weights = (np.asarray(x) for x in schedule[:3])
    levels, A = [], systems
    for index in range(prolongations.shape[0]):
        level, A = _level(A, prolongations[index], pre_weights[index], post_weights[index], multigrid.smoother, schedule[3])
        levels.append(level)
    return levels, _coarse_factors(A)


def _level_cycle(levels, factors, x, f):
    """`multigrid_cycle` ($\\gamma = 1$) on a batch of systems, level by level: `descend` to
    the coarsest level from a zero iterate on each coarse level, the coarse solve, `ascend`."""
    way_down = []
    for level in levels:
        smoothed, coarse_f = _descend(level, x, f)
        way_down.append((level, smoothed, f))
        x, f = jax.device_put(np.zeros(coarse_f.shape, coarse_f.dtype)), coarse_f
    x = _coarse_solve(factors, f)
    for level, smoothed, f in reversed(way_down):
        x = _ascend(level, smoothed, f, x)
    return x


def _power_iteration(op, seeds, errors, count: int):
    r"""`POWER_ITERATIONS` power iterations of the default cycle's error propagation
    $e \leftarrow Ee / \|Ee\|_A$ on the systems of `_systems` (the levels built once): the
    iteration of `energy_power_iteration`, run level by level (`_level_cycle`) so that the
    sizes share their per-level programs.
    Returns the ratios $\|Ee\|_A / \|e\|_A$ of the first and of the last iteration,
    `(len(TAUS), count + 1)`, and the solver's tolerance of every system."""
    systems, tolerances, schedule = _systems(op, TAUS, seeds, count)
    levels, factors = _level_hierarchy(Multigrid(), systems, schedule)
    _, e = _normalised(systems, jax.device_put(errors))
    zero = jax.device_put(np.zeros_like(errors))
    ratios = []
    for _ in range(POWER_ITERATIONS):
        ratio, e = _normalised(systems, _level_cycle(levels, factors, e, zero))
        ratios.append(ratio)
    shape = (len(TAUS), count + 1)
    return np.asarray(ratios[0]).reshape(shape), np.asarray(ratios[-1]).reshape(shape), np.asarray(tolerances)


def _factor_cases(rng: np.random.Generator, budget: Budget):
    """Item 3 for constant diffusivities, normalised by the bound; the factors of random
    diffusivities are measured on the same programs and checked against item 1's bound."""
    cases, first, measured, variable = [], [], {}, {}
    count = max(2, min(budget.samples // 2, 8))
    for order in (1, 2):
        for boundary in ("neumann", "periodic"):
            for n in multigrid_sizes(budget):
                op = Derivative(order, n, boundary=boundary)
                seeds = np.array([int(rng.integers(2**31)) for _ in TAUS])
                errors = rng.standard_normal((len(TAUS) * (count + 1), n))
                started, ratios, tolerances = _power_iteration(op, seeds, errors, count)
                first.append(float(np.max(started)) / FACTOR_BOUNDS[order])
                worst = float(np.max(ratios[:, 0]))
                measured[(order, boundary, n)] = worst
                variable[(order, boundary, n)] = float(np.max(ratios[:, 1:]))
                name = f"V(2,2) D{order} {boundary} n={n} g=1: factor {worst:.3f} / {FACTOR_BOUNDS[order]}"
                cases.append(CaseResult(name, len(TAUS), worst / FACTOR_BOUNDS[order], 1.0, 0.0, bool(worst <= FACTOR_BOUNDS[order])))
                tolerance = float(np.max(tolerances))
                ratio = variable[(order, boundary, n)]
                name = f"V(2,2) D{order} {boundary} n={n} random g: factor {ratio:.3f} < 1"
                cases.append(CaseResult(name, len(TAUS) * count, ratio, 1.0, tolerance, bool(ratio <= 1 + tolerance)))
    return cases, first, measured, variable


def _random_parameters(rng: np.random.Generator, A, smoother: str, kind: str) -> list[np.ndarray]:
    """The random parameters of a cycle for systems shaped like `A` (a shape suffices): the
    offsets added to every leaf of the U-net (item 1 holds for all of them), or the
    W-cycle's prolongations (odd-offset taps) and relative weights in (0, 1), drawn in
    this order (`_random_cycle`)."""
    if kind == "U-net":
        net = jax.eval_shape(lambda: MultigridUNet.from_multigrid(Multigrid(smoother=smoother, coarsest=4), A))
        return [rng.normal(0, 2, leaf.shape) for leaf in jax.tree.leaves(net)]
    kernel, _ = INTERPOLATIONS[default_interpolation(A.bandwidth)]
    transfers = len(level_sizes(A.n, A.bandwidth, A.periodic, 4, len(kernel))) - 1
    taps = np.tile(np.asarray(kernel), (transfers, 1))
    odd = (np.arange(len(kernel)) - len(kernel) // 2) % 2 == 1
    taps[:, odd] += rng.uniform(-0.5, 0.5, (transfers, int(odd.sum())))
    weights = rng.uniform(0.02, 0.98, (2, transfers, 2))
    return [taps, weights[0], weights[1]]


def _random_cycle(A, smoother: str, kind: str, parameters):
    """The cycle `cycle(A, x, f)` of `_random_parameters`: a U-net with random parameters,
    or a W-cycle on levels with random prolongations (odd-offset taps) and relative
    weights in (0, 1)."""
    if kind == "U-net":
        net = MultigridUNet.from_multigrid(Multigrid(smoother=smoother, coarsest=4), A)
        leaves, treedef = jax.tree.flatten(net)
        return jax.tree.unflatten(treedef, [leaf + offset for leaf, offset in zip(leaves, parameters)])
    _, extension = INTERPOLATIONS[default_interpolation(A.bandwidth)]
    return eqx.Partial(_w_cycle, build_hierarchy(A, *parameters, smoother, extension))


def _w_cycle(hierarchy, A, x, f):
    del A  # the hierarchy holds the levels of A
    return multigrid_cycle(hierarchy, x, f, gamma=2)


def _diffusion_system(op, g, tau):
    return diffusion_stencil(op, frozen_diffusivity(g), tau)


@_quickly_compiled
def _bound_system(op, g, tau):
    """$A = I + \\tau K^\\top G K$, its dense matrix and the solver's tolerance."""
    A = _diffusion_system(op, g, tau)
    return A, A.as_matrix(), jnp.max(Multigrid().default_rtol(A, jnp.float64))


@_quickly_compiled
def _error_matrix(A, smoother: str, kind: str, parameters):
    r"""The dense matrix of the error propagation $e \mapsto$ `cycle(A, e, 0)` of the random
    cycle (`_random_cycle`)."""
    cycle = _random_cycle(A, smoother, kind, parameters)
    return jax.vmap(lambda e: cycle(A, e, jnp.zeros_like(e)))(jnp.eye(A.n)).T


# Item 1 on small grids: U-nets with random parameters (V-cycles, Jacobi with smoothing
# stencils and Gauss-Seidel) and W-cycles with random transfers and weights.
BOUND_CONFIGURATIONS = (
    (1, "neumann", "jacobi", "U-net"),
    (2, "periodic", "red-black", "U-net"),
    (2, "dirichlet", "jacobi", "W-cycle"),
    (1, "periodic", "red-black", "W-cycle"),
)


def _bound_cases(rng: np.random.Generator, budget: Budget):
    r"""Item 1: $\|E\|_A = \|L^\top E L^{-\top}\|_2$ ($A = LL^\top$) exactly from dense matrices."""
    cases = []
    samples = max(2, budget.samples // 4)
    for order, boundary, smoother, kind in BOUND_CONFIGURATIONS[: _configurations(budget)]:
        op = Derivative(order, 32 + (boundary == "neumann"), boundary=boundary)
        worst, tolerance = 0.0, 0.0
        shape = eqx.filter_eval_shape(_diffusion_system, op, np.zeros(op.out_shape), 1.0)
        for _ in range(samples):
            g = rng.uniform(0, 1, op.out_shape[0]) * (rng.random(op.out_shape[0]) > 0.2)
            tau = np.float64(10 ** rng.uniform(-2, 4))
            parameters = _random_parameters(rng, shape, smoother, kind)
            A, matrix, rtol = _bound_system(op, g, tau)
            E = np.asarray(_error_matrix(A, smoother, kind, parameters))
            L = np.linalg.cholesky(np.asarray(matrix))
            worst = max(worst, float(np.linalg.norm(L.T @ E @ np.linalg.inv(L.T), 2)))
            tolerance = max(tolerance, float(rtol))
        name = f"{kind} {smoother} D{order} {boundary}, random parameters and g >= 0 with zeros: ||E||_A = {worst:.3f}"
        cases.append(CaseResult(name, samples, worst, 1.0, tolerance, bool(worst <= 1 + tolerance)))
    return cases


def _check_contraction(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    factor_cases, first, measured, variable = _factor_cases(rng, budget)
    bound_cases = _bound_cases(rng, budget)
    sizes = multigrid_sizes(budget)

    def by_size(values, order):
        return ", ".join(
            f"n={n}: {max(v for (o, _, size), v in values.items() if o == order and size == n):.3f}" for n in sizes
        )

    hypotheses = {
        "problems": (
            "A = I + tau D_m^T G D_m, h = 1, tau in {1e2, 1e4}, neumann and periodic; g = 1 (bounded by rho_m) and "
            "jaxpde.nn.random_systems (log g a smoothed random walk over [log 1e-2, 0]; checked against 1)"
        ),
        "cycle": "default Multigrid(): V(2,2), red-black Gauss-Seidel, linear (m = 1) / cubic (m = 2) interpolation",
        "factor, g = 1": "; ".join(f"m = {o} (bound {FACTOR_BOUNDS[o]}): {by_size(measured, o)}" for o in (1, 2)),
        "factor, random g": "; ".join(f"m = {o}: {by_size(variable, o)}" for o in (1, 2)),
        "rigorous bound": "||E||_A < 1 for U-nets with random parameters and W-cycles with random transfers and weights (exact, dense)",
    }
    cases = tuple(factor_cases + bound_cases)
    falsifier = FalsifierOutcome(
        objective="||E e||_A / ||e||_A / bound under power iteration (the worst error of a linear map)",
        restarts=len(factor_cases), steps=POWER_ITERATIONS, worst=max(c.worst for c in factor_cases),
        sampled=max(first), nonfinite=0, found=any(not c.passed for c in cases),
    )
    derivation = "g = 1: none (far from the bounds); bound 1: 1000 eps (1 + tau |||K|||^2 max g), the solver's floor"
    return Evidence(cases, 1.0, "<=", derivation, hypotheses, falsifier)


@_quickly_compiled
def _random_systems(op, seed, tau, count: int):
    """`random_systems` from the key of `seed` (one program per configuration)."""
    return random_systems(jax.random.key(seed), count, op, tau)


# The U-net and the V-cycle are compared under XLA:CPU's fusion emitters, whatever the
# process selects (`jaxpde._xla_flags`): the 1e-12 tolerance assumes the two programs round
# alike, and the loop emitters round the two differently enough to reach 3e-13 on one device
# and 1e-12 on four (4.8e-14 under the fusion emitters).
@functools.partial(eqx.filter_jit, compiler_options={**QUICK_COMPILE, **FUSION_EMITTERS})
def _unet_difference(multigrid, systems, iterates, rhs):
    """The largest relative difference of the U-net of `multigrid` (for systems shaped like
    `systems`) from the V-cycle, over the systems, iterates and right-hand sides."""
    net = MultigridUNet.from_multigrid(multigrid, jax.tree.map(lambda x: x[0], systems))

    def one(net, A, x, f):
        reference = multigrid_cycle(multigrid.hierarchy(A), x, f)
        return l2_norm(net(A, x, f) - reference) / l2_norm(reference)

    # The network's arrays enter every entry as arguments, not closed over: inside
    # `jax.shard_map` a closed-over traced value keeps the type of the outer mesh, and
    # mixing it with the shard's values fails.
    nets = jax.tree.map(lambda a: jnp.broadcast_to(a, (rhs.shape[0], *a.shape)), net)
    return jnp.max(sharded_vmap(one)(nets, systems, iterates, rhs)), len(net.sizes)


UNET_CONFIGURATIONS = (
    (1, "neumann", "jacobi"),
    (1, "periodic", "red-black"),
    (2, "neumann", "red-black"),
    (2, "periodic", "jacobi"),
)


def _check_unet(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    cases = []
    tolerance = 1e-12
    count = max(2, min(budget.samples // 2, 8))
    for order, boundary, smoother in UNET_CONFIGURATIONS[: _configurations(budget)]:
        n = 64
        op = Derivative(order, n, boundary=boundary)
        multigrid = Multigrid(smoother=smoother, coarsest=4)
        seed, tau = np.int64(rng.integers(2**31)), float(10 ** rng.uniform(0, 4))  # tau: static, as before
        iterates = rng.standard_normal((count, n))
        rhs = rng.standard_normal((count, n))
        systems = _random_systems(op, seed, tau, count)
        worst, levels = _unet_difference(multigrid, systems, iterates, rhs)
        worst = float(worst)
        name = f"{smoother} V(2,2) D{order} {boundary} n={n}, {levels} levels: relative difference {worst:.2g}"
        cases.append(CaseResult(name, count, worst, 0.0, tolerance, bool(worst <= tolerance)))
    hypotheses = {
        "networks": "MultigridUNet.from_multigrid(Multigrid(smoother=...), A): encoder, bottleneck, decoder",
        "reference": "multigrid_cycle (the recursive V-cycle) with Multigrid().hierarchy(A)",
        "inputs": "random systems (jaxpde.nn.random_systems), iterates and right-hand sides",
    }
    derivation = "1e-12 relative: the same operations up to sigmoid(logit(theta)) = theta within an ulp"
    return Evidence(tuple(cases), 0.0, "<=", derivation, hypotheses)


def _stability_operators(rng: np.random.Generator):
    n = 64
    kernel = rng.standard_normal(3)
    yield "D1 neumann", Derivative(1, n, boundary="neumann")
    yield "D2 periodic", Derivative(2, n, boundary="periodic")
    yield "D2 neumann", Derivative(2, n, boundary="neumann")
    yield "random 3-tap dirichlet", Stencil(kernel - kernel.mean(), n, boundary="dirichlet")


# Cycles for a solve that misses the success test within `Multigrid().max_cycles`: it is
# solved again, from the start, with this many at most (the same solver, a larger budget).
STRAGGLER_CYCLES = 20000


def _multigrid_solve(op, frozen, tau, u, cycles):
    solution = solve_diffusion_system(op, frozen, tau, u, multigrid=Multigrid(), throw=False, max_steps=cycles)
    v = solution.value
    # The residual is recomputed with the operator, not taken from the solver's report.
    return v, l2_norm(u - v - tau * op.T(frozen(op(v)))), solution.iterations


def _multigrid_step(op, frozen, tau, u, cycles):
    r"""The step solved with `Multigrid()` from the start, with at most `cycles` (`None`:
    `Multigrid().max_cycles`). Returns the iterate, its gain $\|v\| / (\|u\| + \|r\|)$,
    $\|r\| / \|u\|$, the cycles used and whether the solve met the solver's success test."""
    rtol = default_rtol(u.dtype, condition_bound(op, frozen.sector_bound(), tau))
    norm = l2_norm(u)
    v, residual, used = _multigrid_solve(op, frozen, tau, u, cycles)
    return v, l2_norm(v) / (norm + residual), residual / norm, used, residual <= 2 * rtol * norm


# The first solve of every step, and the solve again of a straggler (one that misses the
# success test): two programs, the second compiled only when a straggler occurs.
_first_solve = _quickly_compiled(functools.partial(_multigrid_step, cycles=None))
_straggler_solve = _quickly_compiled(functools.partial(_multigrid_step, cycles=STRAGGLER_CYCLES))


@_quickly_compiled
def _frozen(flux, op, u):
    r"""The frozen flux $\Phi(K u)$ of the step from `u` (one program per flux class)."""
    return Frozen(flux, op(u))


def _check_semi_implicit_multigrid(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    cases, first, residuals = [], [], []
    samples = max(2, budget.samples // 4)
    tolerance = 8 * float(np.finfo(np.float64).eps)
    unconverged = total = resolved = 0
    slowest = 0
    for name, op in list(_stability_operators(rng))[: _configurations(budget)]:
        n = op.in_shape[0]
        norm_bound = float(op.norm_bound())
        for flux in sampling.random_fluxes(rng):
            worst, missed = 0.0, 0
            step_size = float(stable_step_size(op, flux))
            signals = sampling.base_signals(rng, samples, n) * sampling.flux_scale(flux) / norm_bound
            for u in signals:
                u = jax.device_put(u * 10 ** rng.uniform(-1, 1))
                fraction = 1.0 if rng.random() < 0.25 else float(10 ** rng.uniform(-4, 0))
                tau = jax.device_put(np.float64(fraction * LARGEST_MULTIPLE * step_size))
                for depth in range(budget.depth):
                    frozen = _frozen(flux, op, u)
                    v, gain, residual, cycles, converged = _first_solve(op, frozen, tau, u)
                    if not converged:
                        # A straggler, solved again alone with `STRAGGLER_CYCLES` (no batch waits for it).
                        worst = max(worst, float(gain))  # item 1 holds for both iterates
                        resolved += 1
                        v, gain, residual, cycles, converged = _straggler_solve(op, frozen, tau, u)
                    slowest = max(slowest, int(cycles))
                    gain = float(gain)
                    # The solver's own success test (`solve_diffusion_system`): the gain
                    # alone holds for any v, so a case also needs every solve converged.
                    missed += int(not converged)
                    total += 1
                    residuals.append(float(residual))
                    worst = max(worst, gain)
                    if depth == 0:
                        first.append(gain)
                    u = v
            unconverged += missed
            label = f"{name} {type(flux).__name__}" + (f" ({missed} solves not converged)" if missed else "")
            passed = bool(worst <= 1 + tolerance and missed == 0)
            cases.append(CaseResult(label, samples * budget.depth, worst, 1.0, tolerance, passed))
    hypotheses = {
        "step size": f"tau = fraction * {LARGEST_MULTIPLE:g} * 2/(L ||K||^2), fraction log-uniform in [1e-4, 1] (1 in a quarter)",
        "solver": (
            "Multigrid() V(2,2) red-black cycles from the full-multigrid start, to residual <= 1000 eps (1 + tau L |||K|||^2) "
            f"||u|| or 50 cycles; a solve that misses the success test is solved again with up to {STRAGGLER_CYCLES} cycles "
            f"({resolved} of {total} solves; the most cycles any solve used: {slowest})"
        ),
        "worst": f"largest ||v|| / (||u|| + ||r||) over {budget.depth} steps, for the iterate the solver returns",
        "convergence": (
            f"{total - unconverged} of {total} solves reached ||r|| <= 2 rtol ||u|| (the solver's success test) within "
            f"{Multigrid().max_cycles} cycles, or {STRAGGLER_CYCLES} for the {resolved} solved again, required of every "
            f"solve; largest ||r|| / ||u|| = {max(residuals):.3g}"
        ),
    }
    falsifier = FalsifierOutcome(
        objective="gain along repeated steps (each step is a power iteration of the solve towards its largest gain)",
        restarts=len(first), steps=budget.depth, worst=max(c.worst for c in cases), sampled=max(first),
        nonfinite=0, found=any(not c.passed for c in cases),
    )
    derivation = "8 eps: the rounding of ||v|| / (||u|| + ||r||) with r recomputed in float64"
    return Evidence(tuple(cases), 1.0, "<=", derivation, hypotheses, falsifier)


MULTIGRID_CONTRACTION = Claim(
    "multigrid-contraction",
    "A multigrid cycle with Galerkin coarse operators and smoothers with weights in (0, 1) contracts the "
    "error in the energy norm, ||E||_A < 1, for every n, G >= 0 and tau > 0; the default V(2,2) factor "
    "stays below 0.1 (m = 1) and 0.4 (m = 2) as n grows (constant coefficients).",
    _check_contraction,
)

MULTIGRID_UNET = Claim(
    "multigrid-unet",
    "A multigrid V-cycle is a U-net: the MultigridUNet (smoothing + strided-convolution encoder, coarse "
    "solve, transposed-convolution decoder with skip connections) initialised from a V-cycle computes it.",
    _check_unet,
)

SEMI_IMPLICIT_MULTIGRID_STABILITY = Claim(
    "semi-implicit-multigrid-stability",
    "The semi-implicit step solved by multigrid is Euclidean stable: every iterate v with residual r has "
    f"||v|| <= ||u|| + ||r||, for every tau > 0 (checked up to {LARGEST_MULTIPLE:g} x 2/(L ||K||^2)).",
    _check_semi_implicit_multigrid,
)
