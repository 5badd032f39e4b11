r"""The compiled programs that the scheme claims share: sampled inputs and the falsifier
for one application of a scheme map (an FSI or FED cycle, an RKC step, a semi-implicit or an
implicit step) on every operator case at once.

Operators are stacked as zero-padded dense matrices (`adversarial.Cases`) and applied
through `jaxpde.Matrix`, so the schemes run their own library code and one program per
scheme kind serves every operator and flux. Each map returns its output $v$ and the
residual $\|r\|$ of the equation it solves (0 for the explicit cycles); the measured
quantities are $\|v\| / (\|u\| + \|r\|)$, which the proofs bound by 1, and $\|r\|$ against the
solver's stated tolerance $1000\varepsilon(1 + \tau L\||K|\|^2)\|u\|$ (`default_rtol`), so that a
wrong solver (whose $v$ satisfies the first bound whenever $\langle Kv, \Phi(Kv)\rangle \ge 0$) fails
the second.

The semi-implicit and implicit solves are direct or have a fixed iteration count: under
`vmap` a loop that stops on convergence runs until the slowest member of the batch has
converged.
"""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .._xla_flags import RUN_OPTIMISED, SEARCH_OPTIMISED
from ..blocks import DiffusionBlock
from ..operators import Matrix
from ..schemes.cycle import three_term_cycle
from ..schemes.implicit import ImplicitScheme, implicit_residual
from ..schemes.rkc import rkc_step
from ..schemes.semi_implicit import (
    cholesky_solve,
    condition_bound,
    default_rtol,
    inverse_cholesky_factor,
)
from ..sharding import sharded_vmap
from ..verify.energy import l2_norm
from ..verify.falsify import adam_search, to_sphere
from . import adversarial, sampling
from .adversarial import RADII, Attack, Cases, log_uniform
from .sampling import SelectedFlux

KINDS = ("cycle", "rkc", "semi-implicit", "implicit", "implicit-search", "implicit-fixed-point")
# Lagged-diffusivity iterates at which the falsifier evaluates the implicit step's bound.
SEARCH_ITERATIONS = 3
# Iterations of the claims' implicit solver (`newton_or_lagged`), a fixed count, and the
# step lengths of its damped Newton steps.
IMPLICIT_ITERATIONS = 8
STEP_LENGTHS = (1.0, 0.5, 0.25)
# Iterations for the samples that miss the tolerance after `IMPLICIT_ITERATIONS`: `run`
# gathers them on the host and solves them again in small batches, with each count in turn.
STRAGGLER_ITERATIONS = (64, 512)
STRAGGLER_CHUNK = 16
# `case_groups` splits the cases in two where that shrinks their padded size to this fraction or less.
SPLIT_GAIN = 0.7
# `run` pads the groups of `case_groups` apart only for the kinds whose samples and search run
# long enough, and only at budgets with at least `SPLIT_WORK` evaluations per case and flux
# (samples x depth + restarts x steps: `QUICK` 1760, the tests' scheme budgets under 200):
# each group compiles its own programs. Measured at `QUICK` on 2 cores, the scheme claims in
# one process, split against not: their checks 92 s -> 57 s (implicit 44 -> 27 s, the FSI and FED
# cycles 27 -> 15 s, fixed point 12 -> 7 s) for 18 s more compilation (implicit 8.5 s, each
# cycle mode 2 s, fixed point 1 s); the semi-implicit step and RKC gain 1 s or less each, and
# their split would compile 7.5 s and 3 s more.
SPLIT_KINDS = ("cycle", "implicit", "implicit-fixed-point")
SPLIT_WORK = 1000
# The largest contraction factor q = tau Lip ||K||^2 at which the fixed-point claim runs,
# and the iterations that then suffice for the default tolerance rtol = 1000 eps:
# the residual after k iterations is at most q^(k+1) ||u||, so k = ceil(log(rtol) / log(q)).
LARGEST_CONTRACTION = 0.9
FIXED_POINT_ITERATIONS = math.ceil(math.log(1000 * float(np.finfo(np.float64).eps)) / math.log(LARGEST_CONTRACTION))
# The measurements run the implicit solver's column loops, most of `implicit-stability`'s
# time: XLA's own defaults (fusion emitters, optimisation level 3) run them 1.2-1.3x faster
# than the quick settings that `jaxpde certify` selects for the process (`jaxpde._xla_flags`),
# which is worth their slower compilation at budgets of `OPTIMISED_SAMPLES` samples x depth
# per case and flux or more (`QUICK`: 160; the falsifier's programs run as fast either way).
# The tests' budgets (20 or fewer) compile with the process's settings: the scheme-claim
# fixture of the tests compiles its measurements in 4.6 s instead of 16.7 s.
OPTIMISED_SAMPLES = 100


def runs_optimised(budget) -> bool:
    """Whether the measurements at `budget` run the programs compiled with XLA's defaults."""
    return budget.samples * budget.depth >= OPTIMISED_SAMPLES


def _optimised_or_not(fn):
    # `fn` jitted twice: with XLA's defaults (`RUN_OPTIMISED`) and with the process's settings.
    return {True: eqx.filter_jit(fn, compiler_options=RUN_OPTIMISED), False: eqx.filter_jit(fn)}


def newton_or_lagged(
    op: Matrix, flux, tau: Array, u: Array, iterations: int | Array | None = None, target: Array | None = None
):
    r"""A solution of the implicit step $v = u - \tau K^\top\Phi(Kv)$ for a dense `op`, in a
    fixed number of `iterations` (`None`: `IMPLICIT_ITERATIONS`; no loop waits for the
    slowest member of a batch: `run` re-solves the samples that miss the tolerance with
    `STRAGGLER_ITERATIONS`), or fewer: with a `target`, the iterations stop once the smallest
    residual is at most `target` (a batch then runs until its last member gets there: for the
    re-solves of the few stragglers). The solutions are the critical points of the energy
    $E(v) = \frac12\|v - u\|^2 + \tau\sum_i\Psi((Kv)_i)$, whose gradient is the residual
    $r(v) = v - u + \tau K^\top\Phi(Kv)$ (`proofs/implicit-stability.md`, item 2): a descent method on $E$.
    Each iteration computes from $v$, by `cholesky_solve`, the lagged-diffusivity step
    $(I + \tau K^\top G(v) K)^{-1}u$, which never increases $E$ (item 3: the globalisation), and
    Newton steps $v - \alpha J^{-1}r(v)$ with $J = I + \tau K^\top\operatorname{diag}(\Phi'(Kv))K$ (the
    Hessian of $E$; NaN where it is not positive definite, and then not a candidate) for the
    step lengths $\alpha$ of `STEP_LENGTHS`. It moves to the candidate of least energy; candidates whose
    energies agree with the least to within the rounding of $E$ ($64\varepsilon$ relative) count as
    equal, and of those the one of smallest residual is taken (near a solution the energy
    differences, of order $\|r\|^2$, drop below the rounding of $E$, while the residual still
    discriminates: the full Newton step then wins and converges quadratically). Returns the
    iterate of smallest residual and that residual; the claims check it against the solver's
    stated tolerance."""
    matrix = op.matrix.astype(u.dtype)
    eye = jnp.eye(matrix.shape[1], dtype=u.dtype)
    tau = tau.astype(u.dtype)
    lengths = jnp.asarray(STEP_LENGTHS, u.dtype)
    slack = 64 * jnp.finfo(u.dtype).eps

    def system(weights):
        return eye + tau * (matrix.T * weights[None, :]) @ matrix

    def residual(v):
        return implicit_residual(op, flux, tau, u, v)

    def energy(v):
        return 0.5 * jnp.sum((v - u) ** 2) + tau * jnp.sum(flux.potential(op(v)))

    def body(carry, _):
        v, kept, smallest = carry
        s = op(v)
        r = residual(v)
        slope = jax.jvp(flux, (s,), (jnp.ones_like(s),))[1]
        lagged = cholesky_solve(system(flux.diffusivity(s * s)), u)
        newton = -cholesky_solve(system(slope), r)
        candidates = jnp.concatenate([lagged[None, :], v[None, :] + lengths[:, None] * newton[None, :]])
        energies = jax.vmap(energy)(candidates)
        norms = jax.vmap(lambda w: l2_norm(residual(w)))(candidates)
        finite = jnp.isfinite(energies) & jnp.isfinite(norms)
        energies = jnp.where(finite, energies, jnp.inf)
        least = jnp.min(energies)
        tied = energies <= least + slack * (jnp.abs(least) + jnp.abs(energy(v)))
        choice = jnp.argmin(jnp.where(tied, norms, jnp.inf))
        v = candidates[choice]
        norm = norms[choice]
        better = norm < smallest  # False for NaN
        return (v, jnp.where(better, v, kept), jnp.where(better, norm, smallest)), None

    s = op(u)
    start = cholesky_solve(system(flux.diffusivity(s * s)), u)
    length = IMPLICIT_ITERATIONS if iterations is None else iterations  # may be traced (one program for all counts)
    carry = (start, start, l2_norm(residual(start)))
    if target is None:
        _, v, norm = jax.lax.fori_loop(0, length, lambda _, carry: body(carry, None)[0], carry)
        return v, norm

    def unfinished(state):
        k, (_, _, smallest) = state
        return (k < length) & ~(smallest <= target)

    _, (_, v, norm) = jax.lax.while_loop(unfinished, lambda state: (state[0] + 1, body(state[1], None)[0]), (0, carry))
    return v, norm


@jax.custom_vjp
def dense_semi_implicit_solve(matrix: Array, g: Array, tau: Array, u: Array) -> Array:
    r"""$v = (I + \tau K^\top\operatorname{diag}(g)K)^{-1}u$ for a dense $K$ = `matrix`: the Matrix branch
    of `solve_diffusion_system` (the assembled system and its `cholesky_solve`), written out
    without lineax's operator wrappers. Reverse mode by the implicit function theorem at the
    level of $(K, g, \tau, u)$: with $w = (I + \tau A)^{-1}\bar v$, $\bar u = w$,
    $\bar g = -\tau (Kw)\odot(Kv)$, $\bar\tau = -\langle g, (Kw)\odot(Kv)\rangle$ and
    $\bar K = -\tau\operatorname{diag}(g)\big((Kv)w^\top + (Kw)v^\top\big)$: one more solve, no
    differentiation through the assembly or the factorisation."""
    return _dense_semi_implicit_fwd(matrix, g, tau, u)[0]


def _solve_factored(system, inverse, rhs):
    # As `cholesky_solve`, with the inverse factor computed once for both directions.
    x = inverse.T @ (inverse @ rhs)
    return x + inverse.T @ (inverse @ (rhs - system @ x))


def _dense_semi_implicit_fwd(matrix, g, tau, u):
    system = jnp.eye(matrix.shape[1], dtype=u.dtype) + tau * (matrix.T * g[None, :]) @ matrix
    inverse = inverse_cholesky_factor(system)
    v = _solve_factored(system, inverse, u)
    return v, (matrix, g, tau, system, inverse, v)


def _dense_semi_implicit_bwd(saved, cotangent):
    matrix, g, tau, system, inverse, v = saved
    w = _solve_factored(system, inverse, cotangent)
    kv, kw = matrix @ v, matrix @ w
    matrix_bar = -tau * g[:, None] * (jnp.outer(kv, w) + jnp.outer(kw, v))
    return matrix_bar, -tau * kw * kv, -jnp.sum(g * kw * kv), w


dense_semi_implicit_solve.defvjp(_dense_semi_implicit_fwd, _dense_semi_implicit_bwd)


def stated_tolerance(op, flux, tau: Array, dtype) -> Array:
    """The solvers' stated relative residual, $1000\\varepsilon(1 + \\tau L\\||K|\\|^2)$
    (`default_rtol` with `condition_bound`): the stopping tolerance of the iterative solves
    and of `ImplicitScheme`, and what a backward stable direct solve attains."""
    return default_rtol(dtype, condition_bound(op, flux.sector_bound(), tau.astype(dtype)))


def scheme_map(kind: str, matrix: Array, flux, tau: Array, coefficients=None, iterations: int | Array | None = None):
    """The map $u \\mapsto (v, \\|r\\|)$ of scheme `kind` with $K$ = `matrix`. For "cycle",
    `coefficients` = (extrapolation, step fractions, frozen) of `three_term_cycle`: the
    arrays are traced, so that one program serves FSI and FED cycles of every length
    (padded with identity steps); `frozen` is a Python bool (one program per mode). For
    "rkc", `coefficients` = (stage coefficients, frozen) of `rkc_step`, the array padded
    to one stage count likewise."""
    op = Matrix(matrix)
    block = eqx.tree_at(lambda b: b.tau, DiffusionBlock(op, flux, 1.0, allow_unstable=True), tau)
    if kind == "cycle":
        extrapolation, fractions, frozen = coefficients
        return lambda u: (three_term_cycle(block, u, extrapolation, fractions, frozen), jnp.zeros((), matrix.dtype))
    if kind == "rkc":
        stage_coefficients, frozen = coefficients
        # Unrolled stages: a few small stages run faster without the loop (the padded count is fixed).
        return lambda u: (rkc_step(block, u, stage_coefficients, frozen, unroll=True), jnp.zeros((), matrix.dtype))
    if kind == "semi-implicit":

        def semi_implicit(u):
            g = flux.diffusivity(op(u) ** 2)
            v = dense_semi_implicit_solve(matrix, g, tau.astype(u.dtype), u)
            return v, l2_norm(u - v - tau * op.T(g * op(v)))

        return semi_implicit
    if kind == "implicit-search":

        def lagged_iterates(u):
            # SEARCH_ITERATIONS lagged-diffusivity iterates from u, each a semi-implicit solve,
            # differentiable in u. The bound ||v|| <= ||u|| + ||r|| holds for every v with its
            # own residual r, so the falsifier may evaluate it at any iterate; this keeps its
            # gradient cheap (no while loop of the full solver under vmap).
            v = u
            for _ in range(SEARCH_ITERATIONS):
                v = dense_semi_implicit_solve(matrix, flux.diffusivity(op(v) ** 2), tau.astype(u.dtype), u)
            return v, l2_norm(implicit_residual(op, flux, tau, u, v))

        return lagged_iterates
    if kind == "implicit":

        def implicit_step(u):
            # A count of iterations given: a re-solve, which stops at half the tolerance of the
            # claims' check (`stated_tolerance`), a margin for the residual's recomputation.
            target = None if iterations is None else 0.5 * stated_tolerance(op, flux, tau, u.dtype) * l2_norm(u)
            v, _ = newton_or_lagged(op, flux, tau, u, iterations, target)
            # Recomputed here: the verdict never takes a solver's word for its residual.
            return v, l2_norm(implicit_residual(op, flux, tau, u, v))

        return implicit_step
    if kind == "implicit-fixed-point":
        prototype = ImplicitScheme(
            op, flux, 1.0, solver="fixed-point", throw=False, max_iterations=FIXED_POINT_ITERATIONS,
            allow_nonconvergent=True,
        )
        scheme = eqx.tree_at(lambda s: s.tau, prototype, tau)

        def implicit(u):
            solution = scheme.solve_step(u)
            return solution.value, solution.residual

        return implicit
    raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}.")


class SchemeMeasurements(eqx.Module):
    """Per case, flux and sample `(C, F, B)`: the largest $\\|v\\|/(\\|u\\| + \\|r\\|)$ over
    `depth` applications, the largest $\\|r\\| / \\|u\\|$, and the largest
    $\\|r\\| / (\\mathrm{rtol}\\,\\|u\\|)$ with rtol the `stated_tolerance` at the step's $\\tau$
    (at most 1: the solve reached its tolerance), and how many samples `resolve_stragglers`
    solved again."""

    ratio: Array
    residual: Array
    excess: Array
    resolved: int = eqx.field(static=True, default=0)  # samples solved again (`resolve_stragglers`)


def _measure_one(kind, coefficients, depth, iterations, matrix, case_fluxes, index, tau, u):
    # One sample: `depth` applications of the scheme from `u`; (largest ratio, largest
    # ||r|| / ||u||, largest ||r|| / (rtol ||u||)).
    flux = SelectedFlux(case_fluxes, index)
    step = scheme_map(kind, matrix, flux, tau, coefficients, iterations)
    rtol = stated_tolerance(Matrix(matrix), flux, tau, u.dtype)

    def body(v, _):
        w, residual = step(v)
        size = l2_norm(v)
        return w, (l2_norm(w) / (size + residual), residual / size)

    _, (ratios, residuals) = jax.lax.scan(body, u, length=depth)
    return jnp.max(ratios), jnp.max(residuals), jnp.max(residuals) / rtol


def _measure_samples(matrices, fluxes, indices, taus, signals, kind: str, depth: int, iterations: Array):
    # `_measure_one` over a flat batch of samples (leading axis S of every argument);
    # `iterations` is traced, so that every count of `STRAGGLER_ITERATIONS` runs one program.
    return jax.vmap(lambda *a: _measure_one(kind, None, depth, iterations, *a))(matrices, fluxes, indices, taus, signals)


_MEASURE_SAMPLES = _optimised_or_not(_measure_samples)


def resolve_stragglers(cases: Cases, signals, taus, sampled: SchemeMeasurements, depth: int, optimised: bool = True):
    """Solve again the "implicit" samples whose residual missed the tolerance (`excess`
    not at most 1, NaN included) in the fixed-count batch, with each iteration count of
    `STRAGGLER_ITERATIONS` in turn for those still missing it: they are gathered on the
    host into batches of `STRAGGLER_CHUNK` (one program for every count and batch), so the
    large batch never waits for its slowest member. A re-solve replaces the sample's residuals; its ratio is the
    larger of the solves' (item 1 holds for every iterate). Returns the updated
    measurements (NumPy, `resolved` = the samples solved again) and that number.
    `optimised`: the program compiled with XLA's defaults (`runs_optimised`)."""
    ratios, residuals, excesses = (np.array(x) for x in (sampled.ratio, sampled.residual, sampled.excess))
    resolved = 0
    for iterations in STRAGGLER_ITERATIONS:
        c, f, b = np.nonzero(~(excesses <= 1))
        count = len(c)
        if count == 0:
            break
        resolved = resolved or count
        parts = []
        for pick in sampling.chunks(count, STRAGGLER_CHUNK):
            rows = c[pick]
            fluxes = jax.tree.map(lambda x, rows=rows: np.asarray(x)[rows], cases.fluxes)
            parts.append(jax.tree.map(np.asarray, _MEASURE_SAMPLES[optimised](
                np.asarray(cases.matrices)[rows], fluxes, f[pick], np.asarray(taus)[c, f, b][pick],
                np.asarray(signals)[c, f, b][pick], "implicit", depth, np.int32(iterations),
            )))
        ratio, residual, excess = (np.concatenate(x) for x in zip(*parts))
        at = (c, f, b)
        ratios[at] = np.fmax(ratios[at], ratio[:count])
        residuals[at], excesses[at] = residual[:count], excess[:count]
    updated = SchemeMeasurements(jnp.asarray(ratios), jnp.asarray(residuals), jnp.asarray(excesses), resolved)
    return jax.tree.map(np.asarray, updated), resolved


def _measure(cases: Cases, signals: Array, taus: Array, kind: str, coefficients, depth: int) -> SchemeMeasurements:
    def per_flux(index, flux_taus, flux_signals):
        def per_case(matrix, case_fluxes, case_taus, case_signals):
            def one(tau, u):
                return _measure_one(kind, coefficients, depth, None, matrix, case_fluxes, index, tau, u)

            return jax.vmap(one)(case_taus, case_signals)

        return sharded_vmap(per_case)(cases.matrices, cases.fluxes, flux_taus, flux_signals)

    ratio, residual, excess = sampling.map_fluxes(per_flux, taus, signals)
    return SchemeMeasurements(ratio, residual, excess)


_MEASURE = _optimised_or_not(_measure)


def measure(
    cases: Cases, signals: ArrayLike, taus: ArrayLike, kind: str, coefficients, depth: int, optimised: bool = True
) -> SchemeMeasurements:
    """Apply scheme `kind` `depth` times to every signal (`(C, F, B, N)`, zero-padded) at
    the step sizes `taus` (`(C, F, B)`); `optimised`: the program compiled with XLA's
    defaults (`runs_optimised`)."""
    return _MEASURE[optimised](cases, signals, taus, kind, coefficients, depth)


@functools.partial(eqx.filter_jit, compiler_options=SEARCH_OPTIMISED)
def attack(
    cases: Cases, key: PRNGKeyArray, kind: str, coefficients, restarts: int, steps: int
) -> Attack:
    """Maximise, per case and flux at the step size `cases.taus`, the gain
    $\\|v\\|/(\\|u\\| + \\|r\\|)$ of one application over inputs on spheres (as in
    `adversarial.attack`); the witness is returned as the pair `(u, u)`. For "implicit"
    the search evaluates "implicit-search" (lagged-diffusivity iterates with their
    residuals); `run` then solves at the witness with the claims' solver, as a sample."""
    kind = "implicit-search" if kind == "implicit" else kind
    count, flux_count = cases.taus.shape
    size = cases.masks.shape[1]
    keys = jax.random.split(key, (count, flux_count))

    def one(matrix, mask, case_fluxes, index, tau, scale, key):
        step = scheme_map(kind, matrix, SelectedFlux(case_fluxes, index), tau, coefficients)

        def violation(z, radius):
            u = to_sphere(z * mask, radius)
            v, residual = step(u)
            return l2_norm(v) / (l2_norm(u) + residual)

        keys = jax.random.split(key, 2)
        directions = jax.random.normal(keys[0], (restarts, size), matrix.dtype)
        radius = scale * log_uniform(keys[1], restarts, RADII, matrix.dtype)
        found = adam_search(
            violation, directions, radius, lambda z, r: to_sphere(z * mask, jnp.sqrt(jnp.sum(mask))), steps, 0.05
        )
        witness = to_sphere(found.witness * mask, radius[jnp.argmax(found.per_restart)])
        return found.worst, found.sampled, found.nonfinite, (witness, witness)

    def per_flux(index, flux_taus, flux_scales, flux_keys):
        def per_case(matrix, mask, case_fluxes, tau, scale, key):
            return one(matrix, mask, case_fluxes, index, tau, scale, key)

        return sharded_vmap(per_case)(cases.matrices, cases.masks, cases.fluxes, flux_taus, flux_scales, flux_keys)

    worst, sampled, nonfinite, witness = sampling.map_fluxes(per_flux, cases.taus, cases.scales, keys)
    return Attack(worst, sampled, nonfinite, witness)


def setting(key, budget, taus_of, cases=sampling.operator_cases):
    """The configurations of a scheme claim, drawn from `key`: a NumPy generator, the named
    operator cases (`cases(rng, sizes)`: signals, or `sampling.image_operator_cases`), the
    operators, one flux of each class per operator, and the step sizes `taus_of(op, flux)`,
    `(C, F)`."""
    rng = sampling.numpy_rng(key)
    named = cases(rng, budget.sizes)
    ops = [op for _, op in named]
    fluxes = [sampling.random_fluxes(rng) for _ in ops]
    taus = np.array([[float(taus_of(op, f)) for f in fs] for op, fs in zip(ops, fluxes)])
    return rng, named, ops, fluxes, taus


def padded_signals(rng: np.random.Generator, ops, fluxes, samples: int):
    """Signals for every case and flux, `(C, F, B, N)` zero-padded: the kinds of
    `sampling.base_signals` at amplitudes around each flux's scale, with the rows of
    kind "top-singular" on the operator's top right singular vector (NumPy SVD)."""
    size = max(int(np.prod(op.in_shape)) for op in ops)
    out = np.zeros((len(ops), len(fluxes[0]), samples, size))
    for c, (op, fs) in enumerate(zip(ops, fluxes)):
        n = int(np.prod(op.in_shape))
        drawn = sampling.draw_samples(rng, op, fs, samples)
        top = np.linalg.svd(np.asarray(op.as_matrix(), np.float64))[2][0]
        top = top / np.sqrt(np.mean(top**2))
        rows = np.where(drawn.top[None, :, None], top[None, None, :] + drawn.signals, drawn.signals)
        out[c, :, :, :n] = rows * drawn.amplitudes[..., None]
    return out


def _inputs(rng: np.random.Generator, ops, fluxes, taus, budget, coefficients, smallest_fraction: float):
    # The arrays of `run`: stacked cases, padded signals, step fractions, the cycle's
    # coefficients as device arrays, and the falsifier's key.
    signals = padded_signals(rng, ops, fluxes, budget.samples)
    fractions = smallest_fraction ** rng.uniform(0.0, 1.0, signals.shape[:3])
    fractions[..., ::4] = 1.0
    cases = adversarial.stack_cases(ops, fluxes, taus)
    if coefficients is not None:  # (arrays..., frozen): the arrays traced, `frozen` static
        *arrays, frozen = coefficients
        coefficients = (*jax.device_put(tuple(np.asarray(a) for a in arrays)), bool(frozen))
    key = jax.random.wrap_key_data(rng.integers(2**32, size=2, dtype=np.uint32))
    return cases, signals, fractions, coefficients, key


def case_groups(ops) -> list[list[int]]:
    r"""The indices of `ops` in the groups that `run` pads to one shape each: sorted by
    their dense matrix's rows (or columns), split in two where that makes the padded
    matrices' total size $\sum_g |g|\,\mathrm{rows}_g\,\mathrm{cols}_g$ least, if that is at
    most `SPLIT_GAIN` times the size unsplit (the samples' work is proportional to it:
    products with $K$, $K^\top$ and, for the implicit steps, the assembly of
    $K^\top G K$). A few large operators (the multi-channel
    stencils, 108 x 33 among 36 x 33) then no longer set the shape of every case; one
    more group means one more compilation of each program, so never more than two."""
    shapes = [(math.prod(op.out_shape), math.prod(op.in_shape)) for op in ops]

    def size(group):
        return len(group) * max(shapes[i][0] for i in group) * max(shapes[i][1] for i in group)

    whole = size(range(len(ops)))
    best, smallest = [list(range(len(ops)))], whole
    for key in ((0, 1), (1, 0)):  # by rows, by columns
        order = sorted(range(len(ops)), key=lambda i, key=key: tuple(shapes[i][k] for k in key))
        for k in range(1, len(order)):
            split = size(order[:k]) + size(order[k:])
            if split < smallest:
                best, smallest = [order[:k], order[k:]], split
    if smallest > SPLIT_GAIN * whole:
        return [list(range(len(ops)))]
    return [sorted(group) for group in best]


def run_groups(ops, kind: str, budget) -> list[list[int]]:
    """The groups of cases that `run` pads apart: `case_groups` for the kinds of
    `SPLIT_KINDS` at budgets of `SPLIT_WORK` or more, otherwise one group."""
    if kind in SPLIT_KINDS and budget.samples * budget.depth + budget.restarts * budget.steps >= SPLIT_WORK:
        return case_groups(ops)
    return [list(range(len(ops)))]


def _merged(parts, groups, count: int):
    # The per-group results of `run` (NumPy pytrees, cases along axis 0) in the order of the
    # cases; the padded signal axis (last) is zero-padded to the widest group's.
    def merge(*leaves):
        width = max(leaf.shape[-1] for leaf in leaves)
        out = np.zeros((count, *leaves[0].shape[1:-1], width), leaves[0].dtype)
        for leaf, group in zip(leaves, groups):
            out[group, ..., : leaf.shape[-1]] = leaf
        return out

    return jax.tree.map(merge, *parts)


def _with_witness(signals, fractions, witness):
    # The falsifier's witness `(C, F, N)` as one more sample, last along `B`, at the full step.
    signals = np.concatenate([signals, np.asarray(witness)[:, :, None, :]], axis=2)
    return signals, np.concatenate([fractions, np.ones(fractions.shape[:2] + (1,))], axis=2)


def _run_group(rng, ops, fluxes, taus, kind, budget, coefficients, smallest_fraction, search):
    # `run` on one group of cases (one padded shape), without the stragglers' re-solves;
    # also returns the signals and step sizes of the samples.
    cases, signals, fractions, coefficients, key = _inputs(rng, ops, fluxes, taus, budget, coefficients, smallest_fraction)
    found = None
    if search:
        found = jax.tree.map(np.asarray, attack(cases, key, kind, coefficients, budget.restarts, budget.steps))
        signals, fractions = _with_witness(signals, fractions, found.witness[0])
    steps = np.asarray(taus)[..., None] * fractions
    sampled = jax.tree.map(
        np.asarray, measure(cases, signals, steps, kind, coefficients, budget.depth, runs_optimised(budget))
    )
    return (sampled.ratio, sampled.residual, sampled.excess), found, signals, steps


def run(
    rng: np.random.Generator, ops, fluxes, taus, kind: str, budget, *, coefficients=None, smallest_fraction: float = 0.05,
    search: bool = True,
):
    """Sampled measurements at `taus * fractions` (fractions log-uniform in
    [`smallest_fraction`, 1], 1 for every fourth sample) and the falsifier at `taus`,
    `(C, F)`, for scheme `kind` (`search=False`: no falsifier, `None` in its place). The
    falsifier's witness is measured as one more sample (last along `B`, at `taus`), so
    that its ratio and its residual are those of the scheme's own solve. The cases run in
    the groups of `run_groups`, each padded to its own shape; the stragglers of
    "implicit" are solved again together (`resolve_stragglers`, one program).
    Returns `(SchemeMeasurements, Attack)` as NumPy arrays, cases in the order of `ops`."""
    groups = run_groups(ops, kind, budget)
    taus = np.asarray(taus)
    parts = [
        _run_group(
            rng, [ops[i] for i in group], [fluxes[i] for i in group], taus[group], kind, budget, coefficients,
            smallest_fraction, search,
        )
        for group in groups
    ]
    (ratio, residual, excess), found, signals, steps = (
        _merged(part, groups, len(ops)) if part[0] is not None else None for part in zip(*parts)
    )
    sampled = jax.tree.map(np.asarray, SchemeMeasurements(jnp.asarray(ratio), jnp.asarray(residual), jnp.asarray(excess)))
    if kind == "implicit" and not np.all(excess <= 1):  # stragglers (NaN included)
        sampled, _ = resolve_stragglers(
            adversarial.stack_cases(ops, fluxes, taus), signals, steps, sampled, budget.depth, runs_optimised(budget)
        )
    return sampled, found


def compile_run(ops, fluxes, taus, kind: str, budget, *, coefficients=None, search: bool = True) -> None:
    """Compile, without running them, the programs that `run` calls with these arguments
    (AOT: `lower(...).compile()` fills the same cache as a call), for each group of
    `run_groups`, so that claims sharing them in other threads find them compiled. The
    stragglers' re-solves of "implicit" compile on first use."""
    for group in run_groups(ops, kind, budget):
        rng = np.random.default_rng(0)
        cases, signals, fractions, device_coefficients, key = _inputs(
            rng, [ops[i] for i in group], [fluxes[i] for i in group], np.asarray(taus)[group], budget, coefficients, 0.05
        )
        if search:
            attack.lower(cases, key, kind, device_coefficients, budget.restarts, budget.steps).compile()
            signals, fractions = _with_witness(signals, fractions, signals[:, :, 0])
        steps = np.asarray(taus)[group][..., None] * fractions
        program = _MEASURE[runs_optimised(budget)]
        program.lower(cases, signals, steps, kind, device_coefficients, budget.depth).compile()
