"""Claims about multigrid: the cycle contracts the error in the energy norm (with a factor
that does not grow with n), the U-net computes the V-cycle, and the semi-implicit step
solved by multigrid is Euclidean stable."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..blocks import stable_step_size
from ..fluxes import Frozen, Linear, frozen_diffusivity
from ..nn.unet import MultigridUNet, random_systems
from ..operators import Derivative, Stencil
from ..schemes.multigrid import (
    INTERPOLATIONS,
    Multigrid,
    build_hierarchy,
    default_interpolation,
    diffusion_stencil,
    energy_norm,
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
_quickly_compiled = functools.partial(eqx.filter_jit, compiler_options=sampling.QUICK_COMPILE)


def multigrid_sizes(budget: Budget) -> tuple[int, ...]:
    """Grid sizes of the factor measurement: 2^6 ... 2^12 for `QUICK`, 2^6 ... 2^16 for
    `THOROUGH`, 2^6 for smaller (test) budgets."""
    largest = {"quick": 12, "thorough": 16}.get(budget.name, 6)
    return tuple(2**p for p in range(6, largest + 1, 2))


def _configurations(budget: Budget) -> int:
    """How many of the fixed configurations a budget checks: all four from 16 samples on
    (`QUICK`, `THOROUGH`), the first two for smaller (test) budgets."""
    return 4 if budget.samples >= 16 else 2


def _tolerance(A) -> float:
    return float(jnp.max(Multigrid().default_rtol(A, jnp.float64)))


@_quickly_compiled
def _factor_program(op, taus, keys, errors, count: int):
    r"""For each $\tau$ of `taus` (floats): the constant-coefficient system ($g = 1$) and `count`
    random ones (`random_systems` from `keys`); `POWER_ITERATIONS` power iterations of the
    default cycle's error propagation $e \leftarrow Ee / \|Ee\|_A$ on all of them (a `scan`,
    the levels built once). Returns the ratios $\|Ee\|_A / \|e\|_A$ of the first and of the
    last iteration, `(len(taus), count + 1)`, and the solver's tolerance of every system."""
    cycle = Multigrid()

    batches = []
    for index, tau in enumerate(taus):  # a few static step sizes
        constant = diffusion_stencil(op, Linear(1.0), tau)
        batches += [jax.tree.map(lambda x: x[None], constant), random_systems(keys[index], count, op, tau)]
    systems = jax.tree.map(lambda *xs: jnp.concatenate(xs), *batches)
    hierarchies = jax.vmap(cycle.hierarchy)(systems)

    def one(hierarchy, A, e):
        e = e / energy_norm(A, e)
        propagated = multigrid_cycle(hierarchy, e, jnp.zeros_like(e))
        return propagated, energy_norm(A, propagated)

    def iteration(e, _):
        return sharded_vmap(one)(hierarchies, systems, e)

    _, ratios = jax.lax.scan(iteration, errors, length=POWER_ITERATIONS)
    tolerances = jax.vmap(lambda A: cycle.default_rtol(A, jnp.float64))(systems)
    shape = (len(taus), count + 1)
    return ratios[0].reshape(shape), ratios[-1].reshape(shape), tolerances


def _factor_cases(rng: np.random.Generator, budget: Budget):
    """Item 3 for constant diffusivities, normalised by the bound; the factors of random
    diffusivities are measured on the same programs and checked against item 1's bound."""
    cases, first, measured, variable = [], [], {}, {}
    count = max(2, min(budget.samples // 2, 8))
    for order in (1, 2):
        for boundary in ("neumann", "periodic"):
            for n in multigrid_sizes(budget):
                op = Derivative(order, n, boundary=boundary)
                keys = jax.random.wrap_key_data(
                    np.stack([jax.random.key_data(jax.random.key(int(rng.integers(2**31)))) for _ in TAUS])
                )
                errors = rng.standard_normal((len(TAUS) * (count + 1), n))
                measured_now = _factor_program(op, TAUS, keys, errors, count)
                started, ratios, tolerances = (np.asarray(x) for x in measured_now)
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


def _random_unet(rng: np.random.Generator, A, smoother: str) -> MultigridUNet:
    """A U-net with random parameters (item 1 holds for all of them)."""
    net = MultigridUNet.from_multigrid(Multigrid(smoother=smoother, coarsest=4), A)
    leaves, treedef = jax.tree.flatten(net)
    leaves = [leaf + jnp.asarray(rng.normal(0, 2, leaf.shape)) for leaf in leaves]
    return jax.tree.unflatten(treedef, leaves)


def _random_hierarchy(rng: np.random.Generator, A, smoother: str):
    """Levels with random prolongations (odd-offset taps) and relative weights in (0, 1)."""
    kernel, extension = INTERPOLATIONS[default_interpolation(A.bandwidth)]
    transfers = len(level_sizes(A.n, A.bandwidth, A.periodic, 4, len(kernel))) - 1
    taps = np.tile(np.asarray(kernel), (transfers, 1))
    odd = (np.arange(len(kernel)) - len(kernel) // 2) % 2 == 1
    taps[:, odd] += rng.uniform(-0.5, 0.5, (transfers, int(odd.sum())))
    weights = rng.uniform(0.02, 0.98, (2, transfers, 2))
    return build_hierarchy(A, jnp.asarray(taps), jnp.asarray(weights[0]), jnp.asarray(weights[1]), smoother, extension)


@_quickly_compiled
def _error_matrix(cycle, A):
    r"""The dense matrix of the error propagation $e \mapsto$ `cycle(A, e, 0)`."""
    return jax.vmap(lambda e: cycle(A, e, jnp.zeros_like(e)))(jnp.eye(A.n)).T


def _w_cycle(hierarchy, A, x, f):
    del A  # the hierarchy holds the levels of A
    return multigrid_cycle(hierarchy, x, f, gamma=2)


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
        for _ in range(samples):
            g = rng.uniform(0, 1, op.out_shape[0]) * (rng.random(op.out_shape[0]) > 0.2)
            A = diffusion_stencil(op, frozen_diffusivity(g), float(10 ** rng.uniform(-2, 4)))
            if kind == "U-net":
                cycle = _random_unet(rng, A, smoother)
            else:
                cycle = eqx.Partial(_w_cycle, _random_hierarchy(rng, A, smoother))
            E = np.asarray(_error_matrix(cycle, A))
            L = np.linalg.cholesky(np.asarray(A.as_matrix()))
            worst = max(worst, float(np.linalg.norm(L.T @ E @ np.linalg.inv(L.T), 2)))
            tolerance = max(tolerance, _tolerance(A))
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
def _unet_difference(net, multigrid, systems, iterates, rhs):
    def one(net, A, x, f):
        reference = multigrid_cycle(multigrid.hierarchy(A), x, f)
        return l2_norm(net(A, x, f) - reference) / l2_norm(reference)

    # The network's arrays enter every entry as arguments, not closed over: inside
    # `jax.shard_map` a closed-over traced value keeps the type of the outer mesh, and
    # mixing it with the shard's values fails.
    nets = jax.tree.map(lambda a: jnp.broadcast_to(a, (rhs.shape[0], *a.shape)), net)
    return sharded_vmap(one)(nets, systems, iterates, rhs)


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
        systems = random_systems(jax.random.key(int(rng.integers(2**31))), count, op, float(10 ** rng.uniform(0, 4)))
        net = MultigridUNet.from_multigrid(multigrid, jax.tree.map(lambda x: x[0], systems))
        iterates = jnp.asarray(rng.standard_normal((count, n)))
        rhs = jnp.asarray(rng.standard_normal((count, n)))
        worst = float(jnp.max(_unet_difference(net, multigrid, systems, iterates, rhs)))
        name = f"{smoother} V(2,2) D{order} {boundary} n={n}, {len(net.sizes)} levels: relative difference {worst:.2g}"
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
    return v, l2_norm(u - v - tau * op.T(frozen(op(v)))), solution.steps


@eqx.filter_jit
def _multigrid_step(op, frozen, tau, u):
    """The step solved with `Multigrid()` and, where that misses the solver's success test
    (a straggler), solved again from the start with up to `STRAGGLER_CYCLES` (a `cond` in
    the same program: no second compilation). Returns both iterates with their residuals,
    the tolerance rtol, the cycles of the last solve and whether the first one succeeded."""
    rtol = default_rtol(u.dtype, condition_bound(op, frozen.sector_bound(), tau))
    v, residual, cycles = _multigrid_solve(op, frozen, tau, u, None)
    succeeded = residual <= 2 * rtol * l2_norm(u)
    again = jax.lax.cond(
        succeeded, lambda: (v, residual, cycles), lambda: _multigrid_solve(op, frozen, tau, u, STRAGGLER_CYCLES)
    )
    return (v, residual), again, rtol, succeeded


def _check_semi_implicit_multigrid(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    cases, first, residuals = [], [], []
    samples = max(2, budget.samples // 4)
    tolerance = 8 * float(np.finfo(np.float64).eps)
    unconverged = total = resolved = 0
    slowest = 0
    for name, op in list(_stability_operators(rng))[: _configurations(budget)]:
        n = op.in_shape[0]
        for flux in sampling.random_fluxes(rng):
            worst, missed = 0.0, 0
            signals = sampling.base_signals(rng, samples, n) * sampling.flux_scale(flux) / float(op.norm_bound())
            for u in signals:
                u = jnp.asarray(u * 10 ** rng.uniform(-1, 1))
                fraction = 1.0 if rng.random() < 0.25 else float(10 ** rng.uniform(-4, 0))
                tau = jnp.asarray(fraction * LARGEST_MULTIPLE * float(stable_step_size(op, flux)))
                for depth in range(budget.depth):
                    frozen = Frozen(flux, op(u))
                    (v, residual), (v_again, residual_again, cycles), rtol, succeeded = _multigrid_step(op, frozen, tau, u)
                    if not succeeded:
                        # A straggler, solved again alone with `STRAGGLER_CYCLES` (no batch waits for it).
                        worst = max(worst, float(l2_norm(v) / (l2_norm(u) + residual)))  # item 1 holds for both iterates
                        v, residual = v_again, residual_again
                        resolved += 1
                    slowest = max(slowest, int(cycles))
                    ratio = float(l2_norm(v) / (l2_norm(u) + residual))
                    # The solver's own success test (`solve_diffusion_system`): the ratio
                    # alone holds for any v, so a case also needs every solve converged.
                    missed += int(not residual <= 2 * rtol * l2_norm(u))
                    total += 1
                    residuals.append(float(residual / l2_norm(u)))
                    worst = max(worst, ratio)
                    if depth == 0:
                        first.append(ratio)
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
