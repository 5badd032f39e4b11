"""Time to solution: explicit, FED, FSI, RKC, semi-implicit and diffrax at equal accuracy.

For stopping times T = k tau_lim (k = 10, 100, 1000, 10000 by default), tau_lim =
`stable_step_size(op, flux)` = 2 / (L ||K||^2) the explicit step limit, the script sweeps
the cost knob of each scheme and measures, in float64 on a batch of signals (`jax.vmap`),

- the error: the largest relative L2 error over the batch, ||u - u_ref|| / ||u_ref|| per
  signal, against the reference at T;
- the operator evaluations per signal: applications of u -> K^T Phi(K u) (or of its frozen
  linearisation K^T G K). Explicit: steps. FED and FSI: cycles x cycle length (the one
  product K u per cycle that freezes the diffusivity is not counted). RKC: steps x stages
  (likewise). Semi-implicit with conjugate gradients: CG iterations as reported by lineax,
  summed over the steps, mean over the batch (one product with K^T G K each). Semi-implicit
  with the tridiagonal solver (D_1 neumann): one per step (the solve; assembling the matrix
  takes three products with K^T G K per step, not counted). diffrax: n/a (its statistics
  count steps, not evaluations of the vector field or of its Jacobian-vector products);
  its accepted and rejected steps are reported;
- the wall-clock of the batched solve.

Convention: every scheme runs one program per configuration, `jax.jit(jax.vmap(fn))`
compiled ahead of the runs, with everything that configures it (step size, flux parameter,
stencil, cycle length, CG tolerance, diffrax tolerances) closed over as constants; only the
batch of signals is an argument. (On XLA:CPU a step whose step size, flux parameter and
stencil are runtime arguments can run several times slower.) Explicit, FED and FSI run the
schemes' `solve`, RKC its `for_time(T, steps=M)` (planned before tracing: the step-count rule
needs concrete bounds) and `rollout`, as its `solve` does; semi-implicit runs N steps of
`solve_diffusion_system` with the diffusivity frozen at the current state (the step of
`SemiImplicitScheme`, compared once per problem with `SemiImplicitScheme.solve`), counting
the CG iterations; diffrax runs `diffeqsolve` (below).

Timing: compile first (compile seconds reported separately), run once (the output whose
error is reported), then time the configurations of one problem and T interleaved: round
after round, one run of each configuration, each blocking until ready; each configuration
gets at least 3 timed runs and more (up to `--repeats`) while they fit in `--budget` seconds;
reported is the median and the spread (max - min) / median. Runs longer than `LONG_RUN`
seconds are timed once, by their first run after compilation.

Cost per evaluation (measured first, in the same process, compiled first, interleaved):
at T = 10^4 tau_lim the explicit step, the explicit step with the diffusivity frozen once
per cycle, FED and FSI steps (frozen and unfrozen) in cycles of the length `for_time`
plans for M = 12 cycles, as `FEDScheme`/`FSIScheme` run them and as `three_term_cycle` (the
recurrence both ran before) runs them, and RKC stages (M = 12 steps, stages from the rule),
each as microseconds per evaluation per signal batch. The report also lists explicit's cost
per step in every section of the run: the same step costs several times more while other
processes load the machine (the compiled step splits each fused loop over both cores and
waits for the slower one), which is why ratios are only taken between runs timed in the same
interleaved rounds.

Problems (D_1 forward difference, h = 1/n):

- linear: Phi(s) = s, periodic D_1. Reference: the exact semi-discrete solution,
  exp(-T |A(q)|^2) per Fourier mode, |A(q)| = |2 sin(pi q / n)| / h (numpy FFT).
- perona-malik: Phi(s) = s / (1 + s^2 / lambda^2), neumann D_1, lambda = the median of
  |D_1 u0| over the batch (half of the initial gradients lie where the flux is nonlinear).
  Reference: explicit steps of tau_lim / 16 and tau_lim / 32 (`--reference`),
  Richardson-extrapolated (2 u_{tau/32} - u_{tau/16}); its error is estimated by
  ||u_{tau/32} - u_{tau/16}|| (the first-order error of u_{tau/32}; the extrapolation is more
  accurate), and the same procedure is checked against the exact solution of the linear
  problem.

Initial signals: piecewise constant (16 levels uniform in [-1, 1] at random jumps) plus
Gaussian noise (standard deviation 0.1), from a seed.

Knobs (values 1, 2, 3, 4, 6, 8, 12, ...): explicit: tau = tau_lim / m (also m = 1.1, 1.25,
1.5); FED and FSI (frozen and unfrozen): M cycles, the cycle length and step from
`for_time(T, steps=M)`; RKC (order 2 with the diffusivity frozen per step, the same
unfrozen, order 1 damped and frozen; damping 2/13): M steps, the stages from the step-count
rule (`for_time(T, steps=M)`); semi-implicit: N = 1, 2, 4, 8, ... steps, CG relative tolerance
1e-2 / (100 N) (so the N solves add at most 1e-4 to the error); diffrax: the PID
controller's rtol = atol = 1e-1, 1e-2, 1e-3. A sweep stops once its error is below 2.5e-3,
when it stops being finite, or at its cost cap: 4 k evaluations, 4x the wall-clock of
explicit's cheapest run with error <= 1e-2 at the same T (first runs), or 24 points.

diffrax (`pip install -e .[bench]`): `diffeqsolve` with `Kvaerno5` (an ESDIRK method, seven
stages per step, six of them implicit), `PIDController(rtol, atol)`, initial step tau_lim, the stages'
nonlinear equations by `optimistix.Newton` with the controller's tolerances (at most 10
iterations, diffrax's default) and the Newton systems by matrix-free `lineax.GMRES` (restart
10, at most 300 restarts, tolerance 0.1 x rtol: inexact Newton), at most 16 steps per signal
(`throw=False`: a solve that does not reach T counts as not finished), on the same vmapped
batch. (diffrax's default root finder, `VeryChord`, fails to trace with a matrix-free
linear solver here; `lineax.CG` needs a definiteness tag that diffrax does not pass;
`lineax.BiCGStab` returns NaN for a zero right-hand side.) Once a diffrax run took more than
1000x explicit's best time at the same T, or did not finish, diffrax is not run at the larger
T of that problem: a solve to a larger T takes the same first steps (same controller, same
first step), so it takes at least as long; the verdict at a skipped T compares that time
with explicit's there.

Also reported: the cycle-time identity tau (n^2+n)/3 (cycle_time, FED step-size sums, the
slope at 0 of the FSI recurrence, one FSI cycle against the exact cycle polynomial), the
rounding of long FED cycles (lengths 150 and 300, float64 and float32, the Leja, kappa and
ascending step orders), and the targets: at T = 10^4 tau_lim and error <= 1e-2, >= 10x fewer
operator evaluations and >= 10x less wall-clock than explicit.

Results go to `benchmarks/results/time_to_solution-<device>.{md,json,png}`.

Usage: `python benchmarks/time_to_solution.py [--quick] [--n N] [--batch B]
[--multiples K ...] [--repeats R] [--budget S] [--seed S] [--reference F1 F2] [--out DIR]`.
"""

import argparse
import json
import math
import pathlib
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx
import jax.numpy as jnp
import lineax as lx
import numpy as np
import scipy.fft
from common import finite_json, machine

import jaxpde
from jaxpde import fluxes
from jaxpde.claims.identities import fsi_slope
from jaxpde.fluxes import Frozen
from jaxpde.schemes import (
    ExplicitScheme,
    FEDScheme,
    FSIScheme,
    RKCScheme,
    SemiImplicitScheme,
    cycle_polynomial,
    cycle_time,
    diffusion_system,
    fed_step_sizes,
    fsi_weights,
    rkc_polynomial,
    rkc_stability_bound,
    rounding_amplification,
    solve_diffusion_system,
    three_term_cycle,
)
from jaxpde.schemes.rollout import rollout
from jaxpde.verify.tolerance import block_error, unit_roundoff

try:
    import diffrax
    import optimistix as optx
except ImportError:  # the optional `bench` dependencies
    diffrax = optx = None

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
TARGET = 1e-2  # relative L2 error at which the costs are compared
STOP = TARGET / 4  # a sweep stops once it is this accurate
MAX_POINTS = 24  # sweep points per scheme at most
COST_CAP = 4  # ... and evaluations at most COST_CAP * k (k explicit steps of tau_lim)
SPEEDUP = 10  # the target ratio against explicit
MIN_RUNS = 3  # timed runs per configuration, at least
LONG_RUN = 5.0  # seconds: a configuration whose first run takes longer is timed by that run alone
IDENTITY_RTOL = 1e-12  # cycle-time identity tolerance
NUMERIC_RTOL = 1e-11  # a float64 cycle (length <= 150) against its exact polynomial: rounding only
SEGMENTS = 16
NOISE = 0.1
REFERENCE_CHECK_SIGNALS = 2  # signals of the linear problem on which the reference procedure is checked
ROUNDING_LENGTHS = (150, 300)
ROUNDING_ORDERS = ("leja", "kappa", "ascending")
IDENTITY_LENGTHS = (1, 2, 3, 10, 61, 150, 173, 300)
PER_EVALUATION_MULTIPLE = 10_000  # T / tau_lim of the cost-per-evaluation runs
PER_EVALUATION_CYCLES = 12  # cycles (FED, FSI) or steps (RKC) of those runs
PER_EVALUATION_ROUNDS = 15  # interleaved timed rounds of those runs
DIFFRAX_SOLVER = "Kvaerno5"
DIFFRAX_MAX_STEPS = 16  # accepted + rejected steps per signal
# GMRES: restarts of `restart` products each, at most `max_steps` restarts; relative tolerance `rtol` x the
# controller's (inexact Newton: the Newton iteration itself stops at the controller's tolerances).
DIFFRAX_GMRES = {"restart": 10, "max_steps": 300, "rtol": 0.1}
DIFFRAX_SKIP_RATIO = 1000  # diffrax is not run at larger T once a run took this many times explicit's best
DIFFRAX_KNOBS = (1e-1, 1e-2, 1e-3)
SCHEMES = ("explicit", "fed", "fsi-frozen", "fsi-unfrozen", "rkc", "rkc-unfrozen", "rkc1", "semi-implicit", "diffrax")
LABELS = {
    "explicit": "explicit",
    "fed": "FED",
    "fsi-frozen": "FSI (frozen)",
    "fsi-unfrozen": "FSI (unfrozen)",
    "rkc": "RKC (order 2)",
    "rkc-unfrozen": "RKC (order 2, unfrozen)",
    "rkc1": "RKC (order 1, damped)",
    "semi-implicit": "semi-implicit",
    "diffrax": f"diffrax {DIFFRAX_SOLVER}",
}
RKC_VARIANTS = {"rkc": (2, True), "rkc-unfrozen": (2, False), "rkc1": (1, True)}  # (order, frozen)
FROZEN = {"fed", "fsi-frozen", "rkc", "rkc1"}  # schemes that freeze the diffusivity per cycle or step
VERDICT_SCHEMES = ("fed", "fsi-frozen", "fsi-unfrozen", "rkc", "rkc-unfrozen", "rkc1", "diffrax")


# ---------------------------------------------------------------- data and references


def initial_signals(n: int, batch: int, seed: int) -> np.ndarray:
    """`batch` piecewise-constant signals (SEGMENTS levels in [-1, 1]) plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    segments = min(SEGMENTS, n)
    signals = []
    for _ in range(batch):
        jumps = np.sort(rng.choice(np.arange(1, n), segments - 1, replace=False))
        lengths = np.diff(np.concatenate([[0], jumps, [n]]))
        levels = rng.uniform(-1, 1, segments)
        signals.append(np.repeat(levels, lengths) + NOISE * rng.standard_normal(n))
    return np.stack(signals)


def periodic_eigenvalues(n: int, h: float) -> np.ndarray:
    """Eigenvalues |2 sin(pi q / n) / h|^2 of D_1^T D_1 (periodic), by FFT index q."""
    return (2 * np.sin(np.pi * np.arange(n) / n) / h) ** 2


def fourier_apply(u: np.ndarray, multiplier: np.ndarray) -> np.ndarray:
    """The circulant map with eigenvalues `multiplier` (per FFT mode) applied to `u`."""
    return np.fft.ifft(np.fft.fft(u, axis=-1) * multiplier, axis=-1).real


def neumann_linear_solution(u: np.ndarray, t: float, h: float) -> np.ndarray:
    """exp(-t D_1^T D_1) u for neumann D_1: the DCT-II diagonalises the Neumann Laplacian,
    eigenvalues 4 sin^2(pi q / (2n)) / h^2."""
    n = u.shape[-1]
    eig = (2 * np.sin(np.pi * np.arange(n) / (2 * n)) / h) ** 2
    coefficients = scipy.fft.dct(u, type=2, norm="ortho", axis=-1)
    return scipy.fft.idct(coefficients * np.exp(-t * eig), type=2, norm="ortho", axis=-1)


def relative_errors(v: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(largest per-signal, pooled) relative L2 error; infinite when `v` is not finite."""
    if not np.all(np.isfinite(v)):
        return math.inf, math.inf
    per_signal = np.linalg.norm(v - reference, axis=-1) / np.linalg.norm(reference, axis=-1)
    pooled = np.linalg.norm(v - reference) / np.linalg.norm(reference)
    return float(np.max(per_signal)), float(pooled)


# ---------------------------------------------------------------- timing


def compiled(fn, u):
    """`jax.jit(jax.vmap(fn))` compiled for `u`, and the compile seconds."""
    start = time.perf_counter()
    program = jax.jit(jax.vmap(fn)).lower(u).compile()
    return program, time.perf_counter() - start


def first_run(program, u):
    """The output of one run (blocking until ready) and its seconds."""
    start = time.perf_counter()
    out = jax.block_until_ready(program(u))
    return out, time.perf_counter() - start


def interleaved(entries: list[dict], u, repeats: int, budget: float) -> None:
    """Time the compiled `entry["program"]`s on `u`, interleaved: round after round, one run of
    each entry that still needs one. An entry needs max(MIN_RUNS, min(repeats, budget / its
    first run)) runs, none when its first run took LONG_RUN seconds or more (that run is its
    time). Sets `seconds` (median), `times`, `spread` ((max - min) / median) and `timed_runs`."""
    wanted = []
    for entry in entries:
        first = entry["first_seconds"]
        wanted.append(0 if first >= LONG_RUN else max(MIN_RUNS, min(repeats, math.ceil(budget / max(first, 1e-9)))))
    times = [[] for _ in entries]
    for r in range(max(wanted, default=0)):
        for entry, count, record in zip(entries, wanted, times):
            if r < count:
                start = time.perf_counter()
                jax.block_until_ready(entry["program"](u))
                record.append(time.perf_counter() - start)
    for entry, record in zip(entries, times):
        if not record:
            record = [entry["first_seconds"]]
        median = statistics.median(record)
        entry.update(
            seconds=median, times=record, timed_runs=len(record),
            spread=(max(record) - min(record)) / median if len(record) > 1 else None,
        )


# ---------------------------------------------------------------- problems


class Problem:
    """Operator, flux, data and step limit of one problem."""

    def __init__(self, name: str, n: int, signals: np.ndarray):
        self.name = name
        self.n = n
        self.h = 1.0 / n
        self.signals = signals
        self.u0 = jnp.asarray(signals)
        self.boundary = "periodic" if name == "linear" else "neumann"
        if name == "linear":
            self.op = jaxpde.Derivative(1, n, h=self.h, boundary="periodic")
            self.flux = fluxes.Linear(1.0)
            self.lam = None
        else:
            self.op = jaxpde.Derivative(1, n, h=self.h, boundary="neumann")
            self.lam = float(np.median(np.abs(np.diff(signals, axis=-1) / self.h)))
            self.flux = fluxes.PeronaMalik(self.lam)
        self.tau_lim = float(jaxpde.stable_step_size(self.op, self.flux))
        self.tridiagonal = isinstance(
            diffusion_system(
                self.op, Frozen(self.flux, self.op(self.u0[0])), jnp.asarray(1.0),
                jax.ShapeDtypeStruct((n,), jnp.float64),
            ),
            lx.TridiagonalLinearOperator,
        )
        self.semi_implicit_checked = False  # compared with SemiImplicitScheme.solve yet


def explicit_solution(problem: Problem, u: jax.Array, t_end: float, fraction: int) -> np.ndarray:
    scheme = ExplicitScheme(problem.op, problem.flux, problem.tau_lim / fraction)
    program, _ = compiled(lambda v: scheme.solve(v, t_end), u)
    return np.asarray(jax.block_until_ready(program(u)))


def richardson(problem: Problem, u: jax.Array, t_end: float, fractions: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(extrapolated reference, the finer solution) for `u` at `t_end` from explicit steps
    tau_lim / fractions[0] and tau_lim / fractions[1] (first order: the error is linear in tau)."""
    coarse, fine = (explicit_solution(problem, u, t_end, f) for f in fractions)
    ratio = fractions[1] / fractions[0]
    return (ratio * fine - coarse) / (ratio - 1), fine


def reference(problem: Problem, linear: Problem, k: int, fractions: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """The reference at T = k tau_lim, and what is known about its accuracy."""
    t_end = k * problem.tau_lim
    start = time.perf_counter()
    if problem.name == "linear":
        exact = fourier_apply(problem.signals, np.exp(-t_end * periodic_eigenvalues(problem.n, problem.h)))
        info = {"kind": "exact (Fourier)", "estimated_error": 0.0}
    else:
        exact, fine = richardson(problem, problem.u0, t_end, fractions)
        estimate, _ = relative_errors(fine, exact)
        # The same procedure on the linear problem, whose exact solution is known.
        few = linear.signals[:REFERENCE_CHECK_SIGNALS]
        check_end = k * linear.tau_lim
        lin_ref, lin_fine = richardson(linear, jnp.asarray(few), check_end, fractions)
        lin_exact = fourier_apply(few, np.exp(-check_end * periodic_eigenvalues(linear.n, linear.h)))
        # How far from linear diffusion the reference is (same data, neumann, exact).
        linear_diffusion = neumann_linear_solution(problem.signals, t_end, problem.h)
        gradients = np.abs(np.diff(exact, axis=-1) / problem.h)
        info = {
            "kind": f"Richardson, explicit tau_lim/{fractions[0]} and tau_lim/{fractions[1]}",
            "estimated_error": estimate,
            "check_linear_estimated_error": relative_errors(lin_fine, lin_ref)[0],
            "check_linear_true_error_extrapolated": relative_errors(lin_ref, lin_exact)[0],
            "check_linear_true_error_fine": relative_errors(lin_fine, lin_exact)[0],
            "distance_to_linear_diffusion": relative_errors(linear_diffusion, exact)[0],
            "fraction_gradients_above_lambda": float(np.mean(gradients > problem.lam)),
        }
    info["seconds"] = time.perf_counter() - start
    return exact, info


# ---------------------------------------------------------------- cost per evaluation


def frozen_explicit_cycle(block, u, length: int):
    """`length` explicit steps of `block` with the diffusivity frozen at `u` (what a FED step
    should cost)."""
    frozen = eqx.tree_at(lambda b: b.flux, block, Frozen(block.flux, block.op(u)))
    return jax.lax.scan(lambda v, _: (frozen(v), None), u, length=length)[0]


def per_evaluation_programs(problem: Problem) -> list[dict]:
    """The runs of the cost-per-evaluation table for `problem` at T = PER_EVALUATION_MULTIPLE
    tau_lim: (name, evaluations per signal, function of one signal)."""
    op, flux = problem.op, problem.flux
    t_end = PER_EVALUATION_MULTIPLE * problem.tau_lim
    cycles = PER_EVALUATION_CYCLES
    fed = FEDScheme(op, flux, cycle_length=1).for_time(t_end, steps=cycles)
    length = fed.cycle_length
    steps = cycles * length
    fractions = fed_step_sizes(1.0, length)
    explicit = ExplicitScheme(op, flux)
    rows = [
        ("explicit step", steps, lambda v: explicit.rollout(v, steps)),
        (
            "explicit step, diffusivity frozen once per cycle", steps,
            lambda v: rollout(lambda w: frozen_explicit_cycle(explicit.block, w, length), v, cycles),
        ),
        ("FED step (`FEDScheme`: `fed_cycle`, two-term loop)", steps, lambda v: fed.rollout(v, cycles)),
        (
            "FED step (`three_term_cycle`, alpha = 1: before)", steps,
            lambda v: rollout(lambda w: three_term_cycle(fed.block, w, np.ones_like(fractions), fractions, True), v, cycles),
        ),
    ]
    for frozen in (True, False):
        fsi = FSIScheme(op, flux, cycle_length=1, frozen=frozen).for_time(t_end, steps=cycles)
        weights = fsi_weights(fsi.cycle_length)
        mode = "frozen" if frozen else "unfrozen"
        rows += [
            (f"FSI step, {mode} (`FSIScheme`: two steps per loop iteration)", cycles * fsi.cycle_length,
             lambda v, s=fsi: s.rollout(v, cycles)),
            (
                f"FSI step, {mode} (`three_term_cycle`, one step per iteration: before)", cycles * fsi.cycle_length,
                lambda v, s=fsi, w=weights, f=frozen: rollout(
                    lambda x: three_term_cycle(s.block, x, w, np.ones_like(w), f), v, cycles
                ),
            ),
        ]
    for scheme, (order, frozen) in RKC_VARIANTS.items():
        rkc = RKCScheme(op, flux, stages=order, order=order, frozen=frozen).for_time(t_end, steps=cycles)
        rows.append((f"{LABELS[scheme]} stage (`RKCScheme`)", cycles * rkc.stages, lambda v, s=rkc: s.rollout(v, cycles)))
    return [{"name": name, "evaluations": evaluations, "fn": fn} for name, evaluations, fn in rows]


def cost_per_evaluation(problems: dict, rounds: int) -> list[dict]:
    """Microseconds per evaluation (per batch of signals) of every run of
    `per_evaluation_programs`, for all problems: compiled first, then `rounds` interleaved
    rounds of one run each."""
    entries = []
    for problem in problems.values():
        for row in per_evaluation_programs(problem):
            program, compile_s = compiled(row.pop("fn"), problem.u0)
            jax.block_until_ready(program(problem.u0))  # the first run is not timed
            entries.append({**row, "problem": problem.name, "program": program, "u": problem.u0,
                            "compile_seconds": compile_s, "times": []})
    for _ in range(rounds):
        for entry in entries:
            start = time.perf_counter()
            jax.block_until_ready(entry["program"](entry["u"]))
            entry["times"].append(time.perf_counter() - start)
    rows = []
    for entry in entries:
        per = [t / entry["evaluations"] * 1e6 for t in entry["times"]]
        median = statistics.median(per)
        rows.append({
            "problem": entry["problem"], "name": entry["name"], "evaluations": entry["evaluations"],
            "us_per_evaluation": median, "spread": (max(per) - min(per)) / median, "us_times": per,
            "compile_seconds": entry["compile_seconds"],
        })
    for row in rows:
        base = next(r for r in rows if r["problem"] == row["problem"] and r["name"] == "explicit step")
        row["ratio_to_explicit"] = row["us_per_evaluation"] / base["us_per_evaluation"]
    return rows


# ---------------------------------------------------------------- the sweeps


def knobs(scheme: str) -> list:
    """The sweep values of the cost knob: 1, 2, 3, 4, 6, 8, 12, ... (steps of about 1.4x);
    for explicit, tau_lim / tau, also 1.1, 1.25 and 1.5 (just below the step limit the
    highest frequencies are damped only slowly); for semi-implicit 1, 2, 4, 8, ... (its
    cost grows slowly with N, and its conjugate-gradient runs are the longest); for diffrax
    the controller's tolerances."""
    if scheme == "semi-implicit":
        return [2**j for j in range(MAX_POINTS)]
    if scheme == "diffrax":
        return list(DIFFRAX_KNOBS)
    grid = sorted({2**j for j in range(MAX_POINTS)} | {3 * 2**j for j in range(MAX_POINTS)})
    if scheme == "explicit":
        return [1, 1.1, 1.25, 1.5] + grid[1:MAX_POINTS - 3]
    return grid[:MAX_POINTS]


def semi_implicit_fn(problem: Problem, tau: float, rtol: float, steps: int):
    """N semi-implicit steps of size tau (the step of `SemiImplicitScheme`:
    `solve_diffusion_system` with the diffusivity frozen at the current state), everything
    closed over; returns the final state and the CG iterations (0 for the tridiagonal solver)."""

    def fn(v):
        def body(_, carry):
            w, count = carry
            solution = solve_diffusion_system(problem.op, Frozen(problem.flux, problem.op(w)), jnp.asarray(tau), w, rtol=rtol)
            return solution.value, count + solution.iterations.astype(count.dtype)

        return jax.lax.fori_loop(0, steps, body, (v, jnp.zeros((), jnp.int64)))

    return fn


def diffrax_fn(problem: Problem, t_end: float, rtol: float):
    """`diffeqsolve` of du/dt = -K^T Phi(K u) to `t_end` (module docstring): the state at
    `t_end`, accepted and rejected steps, and whether it got there."""
    op, flux = problem.op, problem.flux
    term = diffrax.ODETerm(lambda t, y, args: -op.T(flux(op(y))))
    gmres = lx.GMRES(
        rtol=DIFFRAX_GMRES["rtol"] * rtol, atol=1e-3 * DIFFRAX_GMRES["rtol"] * rtol, restart=DIFFRAX_GMRES["restart"],
        stagnation_iters=DIFFRAX_GMRES["restart"], max_steps=DIFFRAX_GMRES["max_steps"],
    )
    solver = getattr(diffrax, DIFFRAX_SOLVER)(root_finder=diffrax.with_stepsize_controller_tols(optx.Newton)(linear_solver=gmres))
    controller = diffrax.PIDController(rtol=rtol, atol=rtol)

    def fn(v):
        solution = diffrax.diffeqsolve(
            term, solver, 0.0, t_end, problem.tau_lim, v, stepsize_controller=controller,
            max_steps=DIFFRAX_MAX_STEPS, saveat=diffrax.SaveAt(t1=True), throw=False,
        )
        finished = solution.result == diffrax.RESULTS.successful
        stats = solution.stats
        return solution.ys[-1], (stats["num_accepted_steps"], stats["num_rejected_steps"], finished)

    return fn


def configure(problem: Problem, scheme: str, knob, t_end: float) -> tuple[dict, object]:
    """The fields of one sweep point and the function of one signal that solves to `t_end`
    (its scheme closed over); semi-implicit and diffrax functions also return counts."""
    op, flux = problem.op, problem.flux
    if scheme == "explicit":
        method = ExplicitScheme(op, flux, problem.tau_lim / knob)
        steps = method.default_steps(t_end)
        return (
            {"knob_name": "tau_lim / tau", "tau": problem.tau_lim / knob, "steps": steps, "evaluations": steps},
            lambda v: method.solve(v, t_end),
        )
    if scheme in ("fed", "fsi-frozen", "fsi-unfrozen"):
        if scheme == "fed":
            base = FEDScheme(op, flux, cycle_length=1)
        else:
            base = FSIScheme(op, flux, cycle_length=1, frozen=scheme == "fsi-frozen")
        planned = base.for_time(t_end, steps=knob)
        tau = float(planned.tau_max if scheme == "fed" else planned.tau)
        length = planned.cycle_length
        reached = knob * cycle_time(tau, length)
        return (
            {
                "knob_name": "cycles M", "cycle_length": length, "tau": tau, "evaluations": knob * length,
                "time_reached_rel_deviation": abs(reached - t_end) / t_end,
            },
            lambda v: base.solve(v, t_end, steps=knob),
        )
    if scheme in RKC_VARIANTS:
        order, frozen = RKC_VARIANTS[scheme]
        base = RKCScheme(op, flux, stages=order, order=order, frozen=frozen)
        planned = base.for_time(t_end, steps=knob)
        return (
            {
                "knob_name": "steps M", "stages": planned.stages, "tau": float(planned.tau),
                "evaluations": knob * planned.stages, "order": order, "frozen": frozen,
            },
            lambda v: planned.rollout(v, knob),  # `solve`'s plan, made outside the trace
        )
    if scheme == "semi-implicit":
        rtol = TARGET / (100 * knob)
        fields = {"knob_name": "steps N", "tau": t_end / knob, "steps": knob}
        if problem.tridiagonal:
            fields.update(evaluations=knob, linear_solver="tridiagonal")
        else:
            fields.update(linear_solver="CG", cg_rtol=rtol)
        return fields, semi_implicit_fn(problem, t_end / knob, rtol, knob)
    return (
        {"knob_name": "rtol = atol", "evaluations": None, "solver": DIFFRAX_SOLVER},
        diffrax_fn(problem, t_end, knob),
    )


def run_point(problem: Problem, scheme: str, knob, t_end: float, k: int, exact: np.ndarray) -> dict:
    """Compile one configuration and run it once: its fields, error, counts and program."""
    u = problem.u0
    fields, fn = configure(problem, scheme, knob, t_end)
    point = {"problem": problem.name, "k": k, "t_end": t_end, "scheme": scheme, "knob": knob, **fields}
    program, compile_s = compiled(fn, u)
    out, first = first_run(program, u)
    point.update(compile_seconds=compile_s, first_seconds=first)
    if scheme == "semi-implicit":
        out, iterations = out
        if not problem.tridiagonal:
            iterations = np.asarray(iterations)
            point.update(evaluations=float(np.mean(iterations)), evaluations_max=int(np.max(iterations)))
        if not problem.semi_implicit_checked:
            # The loop is the scheme's own solve: compare once per problem.
            problem.semi_implicit_checked = True
            method = SemiImplicitScheme(problem.op, problem.flux, t_end / knob, rtol=point.get("cg_rtol"))
            check, _ = compiled(lambda v: method.solve(v, t_end, steps=knob), u)
            point["difference_to_scheme_solve"] = relative_errors(np.asarray(out), np.asarray(check(u)))[0]
    elif scheme == "diffrax":
        out, (accepted, rejected, finished) = out
        point.update(
            accepted_steps=int(np.max(accepted)), rejected_steps=int(np.max(rejected)),
            accepted_steps_mean=float(np.mean(accepted)), rejected_steps_mean=float(np.mean(rejected)),
            finished=bool(np.all(finished)),
        )
    point["error"], point["error_pooled"] = relative_errors(np.asarray(out), exact)
    if scheme == "diffrax" and not point["finished"]:
        point["error"] = point["error_pooled"] = math.inf  # not at t_end
    point["program"] = program
    return point


def sweep(problem: Problem, scheme: str, k: int, exact: np.ndarray, args, time_cap: float | None) -> list[dict]:
    """Run the knobs of `scheme` until one of the stopping rules (module docstring) holds."""
    t_end = k * problem.tau_lim
    points = []
    for knob in knobs(scheme):
        point = run_point(problem, scheme, knob, t_end, k, exact)
        points.append(point)
        evaluations = point["evaluations"]
        counts = (
            f"evals={evaluations:>10.6g}" if evaluations is not None
            else f"steps={point['accepted_steps']}+{point['rejected_steps']}"
        )
        print(
            f"  {problem.name:>12} k={k:<6} {scheme:<14} knob={knob:<6g} {counts} "
            f"error={point['error']:.3e} first run={point['first_seconds'] * 1e3:10.3f} ms "
            f"(compile {point['compile_seconds']:.2f} s)",
            flush=True,
        )
        reasons = {
            "not finite": not math.isfinite(point["error"]) and scheme != "diffrax",
            f"not finished in {DIFFRAX_MAX_STEPS} steps": scheme == "diffrax" and not point["finished"],
            f"error <= {args.stop:g}": point["error"] <= args.stop,
            f"evaluations >= {COST_CAP} k": evaluations is not None and evaluations >= COST_CAP * k,
            f"wall-clock >= {COST_CAP}x explicit's best": time_cap is not None and point["first_seconds"] >= time_cap,
            # From here on FED and FSI would be explicit steps of shrinking size.
            "cycle length 1": point.get("cycle_length") == 1,
        }
        stop = [reason for reason, holds in reasons.items() if holds]
        if stop:
            point["stopped"] = ", ".join(stop)
            break
    return points


def diffrax_skip_reason(found: list[dict], explicit_best: dict | None, k: int) -> dict | None:
    """Why diffrax is not run at the larger T of this problem (module docstring), or None: its
    first run did not finish, or took over DIFFRAX_SKIP_RATIO x explicit's best time at `k`."""
    if not found:
        return None
    first = found[0]
    if not first["finished"]:
        return {
            "k": k, "seconds": first["first_seconds"],
            "reason": (
                f"its run to T = {k} tau_lim stopped after {first['accepted_steps']} accepted and "
                f"{first['rejected_steps']} rejected steps (the cap {DIFFRAX_MAX_STEPS}) short of T, in "
                f"{fmt_seconds(first['first_seconds'])} ms"
            ),
        }
    if explicit_best is not None and first["first_seconds"] > DIFFRAX_SKIP_RATIO * explicit_best["first_seconds"]:
        return {
            "k": k, "seconds": first["first_seconds"],
            "reason": (
                f"its run to T = {k} tau_lim ({knob_text(first)}) took {fmt_seconds(first['first_seconds'])} ms, "
                f"{first['first_seconds'] / explicit_best['first_seconds']:.0f}x explicit's "
                f"{fmt_seconds(explicit_best['first_seconds'])} ms there (first runs)"
            ),
        }
    return None


def best(points: list[dict], key: str) -> dict | None:
    """The cheapest point by `key` among those with error <= TARGET (and a value of `key`)."""
    good = [p for p in points if p["error"] <= TARGET and p.get(key) is not None]
    return min(good, key=lambda p: p[key]) if good else None


# ---------------------------------------------------------------- cycle identities and FED rounding


def cycle_checks(linear: Problem) -> dict:
    """The cycle time tau (n^2+n)/3, several ways, and one FSI and FED cycle against the
    exact cycle polynomial on the linear periodic problem."""
    tau = linear.tau_lim
    rows = []
    for length in IDENTITY_LENGTHS:
        expected = tau * (length * length + length) / 3
        values = {
            "cycle_time": cycle_time(tau, length),
            "FSIScheme.cycle_time": FSIScheme(linear.op, linear.flux, tau, cycle_length=length).cycle_time,
            "FEDScheme.cycle_time": FEDScheme(linear.op, linear.flux, tau, cycle_length=length).cycle_time,
            **{
                f"sum FED steps ({order})": math.fsum(fed_step_sizes(tau, length, order=order))
                for order in ROUNDING_ORDERS
            },
            "FSI slope -q_n'(0) tau": tau * fsi_slope(length),
        }
        deviation = max(abs(v - expected) / expected for v in values.values())
        rows.append({"cycle_length": length, "expected": expected, "values": values, "max_rel_deviation": deviation})
    numeric = []
    u = linear.signals[:1]
    eig = periodic_eigenvalues(linear.n, linear.h)
    for length in (10, 150):
        polynomial = fourier_apply(u, cycle_polynomial(tau * eig, length))
        for name, method in (
            ("FSI", FSIScheme(linear.op, linear.flux, tau, cycle_length=length)),
            ("FED", FEDScheme(linear.op, linear.flux, tau, cycle_length=length)),
        ):
            program, _ = compiled(lambda v, method=method: method(v), jnp.asarray(u))
            out = np.asarray(program(jnp.asarray(u)))
            numeric.append({
                "scheme": name, "cycle_length": length,
                "error_vs_cycle_polynomial": relative_errors(out, polynomial)[0],
            })
    worst = max(r["max_rel_deviation"] for r in rows)
    numeric_worst = max(r["error_vs_cycle_polynomial"] for r in numeric)
    return {
        "identity": rows, "numeric": numeric, "max_rel_deviation": worst,
        "numeric_max_error": numeric_worst,
        "met": worst <= IDENTITY_RTOL and numeric_worst <= NUMERIC_RTOL,
    }


def fed_rounding(linear: Problem) -> list[dict]:
    """One FED cycle (`FEDScheme`) of length 150 and 300 at tau_max = tau_lim, in the Leja,
    kappa and ascending step orders, float64 and float32, against the exact cycle polynomial
    (float64 Fourier) of the same input; the FSI cycle of the same polynomial for comparison."""
    tau = linear.tau_lim
    eig = periodic_eigenvalues(linear.n, linear.h)
    rows = []
    for length in ROUNDING_LENGTHS:
        amplification = {
            order: rounding_amplification(fed_step_sizes(1.0, length, order=order)) for order in ROUNDING_ORDERS
        }
        print(
            f"  FED cycle {length}: rounding_amplification "
            + ", ".join(f"{order} {value:.3e}" for order, value in amplification.items()),
            flush=True,
        )
        for dtype in (np.float64, np.float32):
            u = linear.signals.astype(dtype)
            exact = fourier_apply(u.astype(np.float64), cycle_polynomial(tau * eig, length))
            eps = float(np.finfo(dtype).eps)
            # The first-order bound of claim `fed-rounding`: the amplification weighted by max(t_i, 1), times
            # the rounding error bound of one block (at tau_max) plus a unit roundoff.
            step_error = block_error(FEDScheme(linear.op, linear.flux, tau, cycle_length=1).block, dtype) + unit_roundoff(dtype)
            for order in ROUNDING_ORDERS:
                method = FEDScheme(linear.op, linear.flux, tau, cycle_length=length, order=order)
                program, _ = compiled(lambda v, method=method: method(v), jnp.asarray(u))
                out = np.asarray(program(jnp.asarray(u)))
                if out.dtype != dtype:
                    raise RuntimeError(f"FED cycle returned {out.dtype} for {np.dtype(dtype).name} input.")
                error = relative_errors(out.astype(np.float64), exact)[0]
                fractions = fed_step_sizes(1.0, length, order=order)
                weighted = rounding_amplification(fractions, weights=np.maximum(fractions, 1.0))
                rows.append({
                    "cycle_length": length, "dtype": np.dtype(dtype).name, "order": order, "error": error,
                    "rounding_amplification": amplification[order], "estimate": amplification[order] * eps,
                    "weighted_amplification": weighted, "predicted": weighted * step_error,
                })
                print(f"    {np.dtype(dtype).name} {order:>9}: error {error:.3e}", flush=True)
            method = FSIScheme(linear.op, linear.flux, tau, cycle_length=length)
            program, _ = compiled(lambda v, method=method: method(v), jnp.asarray(u))
            error = relative_errors(np.asarray(program(jnp.asarray(u))).astype(np.float64), exact)[0]
            rows.append({
                "cycle_length": length, "dtype": np.dtype(dtype).name, "order": "FSI (comparison)", "error": error,
                "rounding_amplification": None, "estimate": None, "weighted_amplification": None, "predicted": None,
            })
            print(f"    {np.dtype(dtype).name} FSI cycle: error {error:.3e}", flush=True)
    return rows


def rounding_verdict(rows: list[dict]) -> dict:
    """Leja: finite, within its first-order rounding bound and the target; kappa: within its
    bound; ascending: blows up (not finite, or error >= 1); in float32 at the longest length
    the Leja order at least 100x more accurate than kappa."""
    reordered = [r for r in rows if r["order"] in ("leja", "kappa")]
    ascending = [r for r in rows if r["order"] == "ascending"]

    def accurate(r):
        limit = min(TARGET, r["predicted"]) if r["order"] == "leja" else r["predicted"]
        return math.isfinite(r["error"]) and r["error"] <= limit

    def blown_up(r):
        return not math.isfinite(r["error"]) or r["error"] >= 1

    longest = max(ROUNDING_LENGTHS)
    f32 = {r["order"]: r["error"] for r in rows if r["dtype"] == "float32" and r["cycle_length"] == longest}
    leja_gain = f32["kappa"] / f32["leja"] if f32["leja"] > 0 else math.inf
    failed = [
        f"{r['dtype']} n = {r['cycle_length']} {r['order']} error {fmt_error(r['error'])}"
        for r in reordered if not accurate(r)
    ] + [
        f"{r['dtype']} n = {r['cycle_length']} ascending error {fmt_error(r['error'])}"
        for r in ascending if not blown_up(r)
    ]
    met = all(accurate(r) for r in reordered) and all(blown_up(r) for r in ascending) and leja_gain >= 100
    return {
        "reordered_accurate": all(accurate(r) for r in reordered), "ascending_blows_up": all(blown_up(r) for r in ascending),
        "float32_longest": {"cycle_length": longest, "leja": f32["leja"], "kappa": f32["kappa"], "kappa_over_leja": leja_gain},
        "met": met, "failed": failed,
    }


# ---------------------------------------------------------------- report


def fmt_error(value: float) -> str:
    return "inf/nan" if not math.isfinite(value) else f"{value:.2e}"


def fmt_evals(value) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def fmt_seconds(value: float) -> str:
    return f"{value * 1e3:,.2f}"


def fmt_spread(value) -> str:
    return "once" if value is None else f"{value:.2f}"


def knob_text(point: dict) -> str:
    scheme = point["scheme"]
    if scheme == "explicit":
        return f"tau_lim/{point['knob']:g}"
    if scheme == "semi-implicit":
        return f"N={point['knob']}"
    if scheme == "diffrax":
        return f"rtol={point['knob']:g}, {point['accepted_steps']}+{point['rejected_steps']} steps"
    if scheme in RKC_VARIANTS:
        return f"M={point['knob']} x s={point['stages']}"
    return f"M={point['knob']} x {point['cycle_length']}"


def summaries(points: list[dict], problems, multiples, skipped: dict) -> list[dict]:
    rows = []
    for problem in problems:
        for k in multiples:
            chosen = {s: [p for p in points if p["problem"] == problem and p["k"] == k and p["scheme"] == s] for s in SCHEMES}
            base_e, base_t = best(chosen["explicit"], "evaluations"), best(chosen["explicit"], "seconds")
            for scheme in SCHEMES:
                if scheme == "diffrax" and (problem, k) in skipped:
                    rows.append({
                        "problem": problem, "k": k, "scheme": scheme, "best_error": math.inf,
                        "stopped": f"not run: {skipped[(problem, k)]['reason']}", "skipped": skipped[(problem, k)],
                        "by_evaluations": None, "by_seconds": None, "evaluation_ratio": None, "time_ratio": None,
                        "explicit_by_evaluations": base_e, "explicit_by_seconds": base_t, "points": [],
                    })
                    continue
                if not chosen[scheme]:
                    continue
                by_evals, by_time = best(chosen[scheme], "evaluations"), best(chosen[scheme], "seconds")
                rows.append({
                    "problem": problem, "k": k, "scheme": scheme,
                    "best_error": min((p["error"] for p in chosen[scheme]), default=math.inf),
                    "stopped": next((p["stopped"] for p in chosen[scheme] if "stopped" in p), "end of the knob values"),
                    "by_evaluations": by_evals, "by_seconds": by_time,
                    "evaluation_ratio": base_e["evaluations"] / by_evals["evaluations"] if base_e and by_evals else None,
                    "time_ratio": base_t["seconds"] / by_time["seconds"] if base_t and by_time else None,
                    "explicit_by_evaluations": base_e, "explicit_by_seconds": base_t, "points": chosen[scheme],
                })
    return rows


def reference_verdict(references: list[dict]) -> dict:
    """The Perona-Malik reference is usable when its estimated error is a decade below the
    most accurate points compared (STOP), and the estimate holds on the linear check (it is
    at least the true error of the extrapolated reference there)."""
    chosen = [r for r in references if r["problem"] == "perona-malik"]
    worst = max(r["estimated_error"] for r in chosen)
    holds = all(r["check_linear_estimated_error"] >= r["check_linear_true_error_extrapolated"] for r in chosen)
    return {
        "target": f"Perona-Malik reference error far below the target (estimate <= {STOP / 10:g})",
        "met": worst <= STOP / 10 and holds,
        "detail": (
            f"largest estimated error {worst:.1e}; on the linear problem the estimate "
            f"{'bounds' if holds else 'does NOT bound'} the true error of the extrapolated reference"
        ),
    }


def stiff_damping(point: dict) -> float | None:
    """How little one step (RKC) or cycle (FED, FSI) of `point`'s configuration damps the
    stiff modes: the largest |R_s(z)| on z in [-0.9 beta(s), -0.1 beta(s)] (RKC) or |q_n(x)| on
    x in [0.2, 1.8] (FED and FSI, x = tau lambda; a step of tau_max = tau_lim reaches x = 2),
    on a grid of 20001 points; None for the other schemes."""
    if point["scheme"] in RKC_VARIANTS:
        stages, order = point["stages"], point["order"]
        beta = rkc_stability_bound(stages, order=order)
        z = -np.linspace(0.1 * beta, 0.9 * beta, 20001)
        return float(np.max(np.abs(rkc_polynomial(z, stages, order=order))))
    if point["scheme"] in ("fed", "fsi-frozen", "fsi-unfrozen"):
        x = np.linspace(0.2, 1.8, 20001)
        return float(np.max(np.abs(cycle_polynomial(x, point["cycle_length"]))))
    return None


def per_evaluation_cost(point: dict) -> float:
    return point["seconds"] / point["evaluations"]


def fmt_ratio(value) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}x" if value >= 1 else f"{value:.2g}x"


def shortfall(row: dict, rows: list[dict], what: str) -> str:
    """Why `row` misses the target on `what` ("operator evaluations" or "wall-clock"), in one clause."""
    e, t = row["by_evaluations"], row["by_seconds"]
    scheme, problem = row["scheme"], row["problem"]
    if row.get("skipped"):
        skip = row["skipped"]
        return (
            f"not run at this T: {skip['reason']}; a solve to this T takes those steps too, so at least "
            f"{fmt_seconds(skip['seconds'])} ms against explicit's {fmt_seconds(row['explicit_by_seconds']['seconds'])} ms here"
        )
    if e is None and t is None:
        unfinished = [p for p in row.get("points", []) if p["scheme"] == "diffrax" and not p["finished"]]
        if scheme == "diffrax" and unfinished:
            p = unfinished[-1]
            return (
                f"not finished: rtol={p['knob']:g} stopped after {p['accepted_steps']} accepted and "
                f"{p['rejected_steps']} rejected steps (the cap {DIFFRAX_MAX_STEPS}) short of T, in "
                f"{fmt_seconds(p['seconds'])} ms against explicit's {fmt_seconds(row['explicit_by_seconds']['seconds'])} ms"
            )
        return f"error <= 1e-2 not reached (best {fmt_error(row['best_error'])}; stopped: {row['stopped']})"
    base_t = row["explicit_by_seconds"]
    if scheme == "diffrax":
        return (
            f"{knob_text(t)} take {fmt_seconds(t['seconds'])} ms against explicit's {fmt_seconds(base_t['seconds'])} ms "
            f"(each step solves {DIFFRAX_SOLVER}'s implicit stages by Newton-GMRES)"
        )
    base_e = row["explicit_by_evaluations"]
    clauses = []
    if (row["evaluation_ratio"] or 0) < SPEEDUP:
        evaluations = (
            f"needs {fmt_evals(e['evaluations'])} evaluations ({knob_text(e)}) against explicit's "
            f"{fmt_evals(base_e['evaluations'])}"
        )
        linear = next(
            (r for r in rows if r["problem"] == "linear" and r["k"] == row["k"] and r["scheme"] == scheme), None
        )
        if scheme in FROZEN and problem != "linear" and linear and (linear["evaluation_ratio"] or 0) >= SPEEDUP:
            evaluations = (
                f"frozen diffusivity limits accuracy: {evaluations} (on the linear problem "
                f"{fmt_evals(linear['by_evaluations']['evaluations'])})"
            )
        elif scheme in RKC_VARIANTS:
            evaluations += (
                f" (its steps damp the noise's stiff modes weakly: |R_s| up to {stiff_damping(e):.2f} on "
                "[-0.9 beta, -0.1 beta])"
            )
        clauses.append(evaluations)
    if what == "wall-clock":
        relative = per_evaluation_cost(t) / per_evaluation_cost(base_t)
        if not clauses or relative > 1.15:
            clauses.append(
                f"cost per evaluation {relative:.1f}x explicit's ({per_evaluation_cost(t) * 1e6:.0f} us against "
                f"{per_evaluation_cost(base_t) * 1e6:.0f} us)"
            )
    return "; ".join(clauses)


def verdicts(rows: list[dict], checks: dict, rounding: dict, references: list[dict], multiples) -> list[dict]:
    k = max(multiples)
    out = [
        reference_verdict(references),
        {
            "target": f"one cycle of length n advances tau (n^2+n)/3 (to {IDENTITY_RTOL:g})",
            "met": checks["met"],
            "detail": (
                f"largest relative deviation {checks['max_rel_deviation']:.1e} over n in {list(IDENTITY_LENGTHS)}; "
                f"M cycles from for_time reach T to {checks['for_time_max_rel_deviation']:.1e}; "
                f"FSI and FED cycles vs the exact cycle polynomial: largest error {checks['numeric_max_error']:.1e} "
                f"(rounding tolerance {NUMERIC_RTOL:g})"
            ),
        },
        {
            "target": (
                f"FED rounding, n = {' and '.join(map(str, ROUNDING_LENGTHS))}, float64 and float32: Leja (default) "
                "within its rounding bound and 1e-2, kappa within its bound, ascending blows up, Leja >= 100x more "
                f"accurate than kappa in float32 at n = {max(ROUNDING_LENGTHS)}"
            ),
            "met": rounding["met"],
            "detail": (
                f"Leja and kappa accurate: {rounding['reordered_accurate']}; ascending blows up: "
                f"{rounding['ascending_blows_up']}; float32, n = {rounding['float32_longest']['cycle_length']}: Leja "
                f"{fmt_error(rounding['float32_longest']['leja'])}, kappa {fmt_error(rounding['float32_longest']['kappa'])}"
                + (f" (failing: {'; '.join(rounding['failed'])})" if rounding["failed"] else "")
            ),
        },
    ]
    for row in rows:
        if row["k"] != k or row["scheme"] not in VERDICT_SCHEMES:
            continue
        measures = (("wall-clock", row["time_ratio"]),)
        if row["scheme"] != "diffrax":
            measures = (("operator evaluations", row["evaluation_ratio"]),) + measures
        for what, ratio in measures:
            met = ratio is not None and ratio >= SPEEDUP
            if row["by_evaluations"] is None and row["by_seconds"] is None:
                detail = shortfall(row, rows, what)
            elif ratio is None:
                detail = "explicit did not reach error <= 1e-2"
            else:
                detail = fmt_ratio(ratio) if met else f"{fmt_ratio(ratio)}: {shortfall(row, rows, what)}"
            out.append({
                "target": (
                    f"{row['problem']}, T = {k} tau_lim, error <= 1e-2: {LABELS[row['scheme']]} needs {what} "
                    f">= {SPEEDUP}x below explicit"
                ),
                "met": met, "detail": detail,
            })
    return out


def markdown(meta: dict, settings: dict, problems: dict, references: list[dict], rows: list[dict],
             checks: dict, rounding_rows: list[dict], verdict_rows: list[dict], per_evaluation: list[dict],
             stem: str) -> str:
    f1, f2 = settings["reference"]
    lines = [
        "# Time to solution: explicit, FED, FSI, RKC, semi-implicit and diffrax",
        "",
        (
            f"Device: {meta['device']} ({meta['processor']}, {meta['cpu_count']} cores); jax {meta['jax']}, "
            f"numpy {meta['numpy']}, diffrax {meta.get('diffrax', 'not installed')}; float64; n = {settings['n']}, "
            f"batch of {settings['batch']} signals (jax.vmap), seed {settings['seed']}; T = k tau_lim, "
            f"tau_lim = 2 / (L ||K||^2). Run time {meta['seconds']:.0f} s."
        ),
        (
            "Error: the largest relative L2 error over the batch. Evaluations per signal: explicit steps; FED and FSI "
            "cycles x cycle length, RKC steps x stages (the freezing K u once per cycle or step not counted); "
            "semi-implicit: CG iterations (lineax, mean over the batch; relative tolerance 1e-2 / (100 N)) or, with the "
            "tridiagonal solver, one per step (plus three products per step to assemble the matrix, not counted); "
            "diffrax: n/a (its statistics count steps: accepted + rejected, the largest over the batch)."
        ),
        (
            "Compiled: one program per configuration, `jax.jit(jax.vmap(fn))` with the scheme closed over (step size, "
            "flux parameter, stencil, cycle length, tolerances are constants; only the batch is an argument), the same "
            "convention for every scheme. Explicit, FED and FSI run the schemes' `solve`, RKC `for_time(T, steps=M)` "
            "(planned before tracing) and `rollout`, as its `solve` does; semi-implicit N steps "
            "of `solve_diffusion_system` with the diffusivity frozen at the current state (checked against "
            f"`SemiImplicitScheme.solve`); diffrax `diffeqsolve` with `{DIFFRAX_SOLVER}`, `PIDController(rtol, atol = "
            "rtol)`, first step tau_lim, `optimistix.Newton` with the controller's tolerances (at most 10 iterations) "
            f"and matrix-free `lineax.GMRES` (restart {DIFFRAX_GMRES['restart']}, at most {DIFFRAX_GMRES['max_steps']} "
            f"restarts, rtol {DIFFRAX_GMRES['rtol']:g} x rtol), at most {DIFFRAX_MAX_STEPS} steps per signal, "
            "`throw=False` (a solve that "
            f"does not reach T is not finished); once a diffrax run took over {DIFFRAX_SKIP_RATIO}x explicit's best "
            "time at its T, or did not finish, diffrax is not run at the larger T of that problem (a solve to a larger "
            "T takes the same first steps, so at least as long)."
        ),
        (
            f"Timed: compile first (seconds in the JSON), one run for the output, then the configurations of one "
            f"problem and T interleaved (round after round, one run each, blocking until ready), at least {MIN_RUNS} "
            f"runs per configuration and up to {settings['repeats']} while they fit in {settings['budget']:g} s; "
            f"reported: the median, and the spread (max - min) / median; runs over {LONG_RUN:g} s are timed once (the "
            "first run). Knobs 1, 2, 3, 4, 6, 8, ... (explicit: tau_lim / m, also m = 1.1, 1.25, 1.5; FED, FSI: "
            "cycles M; RKC: steps M, stages by the step-count rule; semi-implicit: N = 1, 2, 4, ...; diffrax: "
            f"rtol = {', '.join(f'{v:g}' for v in DIFFRAX_KNOBS)}); sweeps stop below error {settings['stop']:g}, or "
            f"at a cost cap ({COST_CAP} k evaluations, {COST_CAP}x the first-run wall-clock of explicit's cheapest run "
            "with error <= 1e-2)."
        ),
        "",
        "Problems (D_1 forward difference, h = 1/n; initial signals: 16 levels in [-1, 1] plus noise 0.1):",
        "",
    ]
    for name, p in problems.items():
        if name == "linear":
            lines.append(f"- linear: Phi(s) = s, periodic D_1, tau_lim = {p['tau_lim']:.6e}; reference: exact Fourier solution.")
        else:
            lines.append(
                f"- perona-malik: lambda = {p['lam']:.6g} (median |D_1 u0|), neumann D_1, tau_lim = {p['tau_lim']:.6e}; "
                f"semi-implicit solver: {'tridiagonal' if p['tridiagonal'] else 'CG'}; reference: explicit tau_lim/"
                f"{settings['reference'][0]} and tau_lim/{settings['reference'][1]}, Richardson-extrapolated."
            )
    lines += ["", "## Targets", ""]
    if max(settings["multiples"]) != 10_000:
        lines += [f"The speed-up targets are stated for T = 10^4 tau_lim; this run stops at {max(settings['multiples'])} tau_lim.", ""]
    lines += ["| target | verdict | detail |", "| --- | --- | --- |"]
    for v in verdict_rows:
        lines.append(f"| {v['target']} | {'met' if v['met'] else 'MISSED'} | {v['detail']} |")

    k_max = max(settings["multiples"])
    damping = [
        (row, stiff_damping(row["by_evaluations"])) for row in rows
        if row["k"] == k_max and row["by_evaluations"] is not None and stiff_damping(row["by_evaluations"]) is not None
    ]
    if damping:
        lines += [
            "",
            (
                f"Damping of the stiff modes by one step (RKC: largest |R_s(z)| on [-0.9 beta(s), -0.1 beta(s)]) or "
                f"cycle (FED, FSI: largest |q_n(x)| on [0.2, 1.8]) of the cheapest configuration at T = {k_max} tau_lim: "
                + "; ".join(
                    f"{row['problem']} {LABELS[row['scheme']]} ({knob_text(row['by_evaluations'])}) {value:.2g}"
                    for row, value in damping
                )
                + ". Most of the initial noise lives in these modes, which the exact solution at T removes; a "
                "polynomial that keeps them near 1 needs many steps."
            ),
        ]

    spans = []
    for problem in problems:
        costs = [r["us_per_evaluation"] for r in per_evaluation if r["problem"] == problem and r["name"] == "explicit step"]
        sweeps = [
            (row["k"], per_evaluation_cost(row["by_seconds"]) * 1e6) for row in rows
            if row["problem"] == problem and row["scheme"] == "explicit" and row["by_seconds"] is not None
        ]
        spans.append(
            f"{problem}: {costs[0]:.0f} us in the cost-per-evaluation rounds, "
            + ", ".join(f"{value:.0f} us at k = {k}" for k, value in sweeps)
        )
    lines += [
        "",
        (
            "Explicit's cost per step in this run (medians; every configuration runs the same step): "
            + "; ".join(spans) + ". "
            "It follows the machine's load more than the configuration: other processes share the two cores, and the "
            "compiled step splits each of its fused loops over both (XLA:CPU `outer_dimension_partitions`), so it "
            "waits whenever either core is busy. The ratios compare runs timed in the same interleaved rounds."
        ),
    ]

    names = list(dict.fromkeys(r["name"] for r in per_evaluation))
    problem_names = list(dict.fromkeys(r["problem"] for r in per_evaluation))
    lines += [
        "",
        "## Cost per evaluation",
        "",
        (
            f"At T = {PER_EVALUATION_MULTIPLE} tau_lim, {PER_EVALUATION_CYCLES} cycles (FED, FSI: the length `for_time` "
            f"plans) or steps (RKC: the stages of the step-count rule); the explicit runs take as many steps as FED "
            f"evaluates. Microseconds per evaluation for the batch of {settings['batch']} signals: median of "
            f"{PER_EVALUATION_ROUNDS} runs, interleaved over all rows and both problems in one process, compiled first "
            "(spread (max - min) / median in parentheses); ratio to the explicit step. Rows marked `before` run the "
            "recurrence that `FEDScheme` and `FSIScheme` ran before they got their own loops (`three_term_cycle`, "
            "one step per loop iteration)."
        ),
        "",
        "| step | " + " | ".join(f"{p}: us/eval | {p}: x explicit" for p in problem_names) + " |",
        "| --- | " + " | ".join("---: | ---:" for _ in problem_names) + " |",
    ]
    for name in names:
        cells = []
        for problem in problem_names:
            r = next(r for r in per_evaluation if r["name"] == name and r["problem"] == problem)
            cells.append(f"{r['us_per_evaluation']:.1f} ({r['spread']:.2f}) | {r['ratio_to_explicit']:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    lines += [
        "",
        "## Perona-Malik reference",
        "",
        (
            f"Estimated error: ||u_fine - u_coarse|| / ||u_ref||, steps tau_lim/{f2} and tau_lim/{f1} (the error of the "
            "finer solution; the "
            "extrapolation is more accurate). Check: the same procedure on the linear problem "
            f"({REFERENCE_CHECK_SIGNALS} signals) against its exact solution. Distance to linear diffusion and the "
            "share of gradients above lambda at T show how nonlinear the problem is."
        ),
        "",
        (
            "| k | estimated error | linear check: estimate | true error (extrapolated) | true error (finer) "
            "| distance to linear diffusion | gradients > lambda | seconds |"
        ),
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in references:
        if r["problem"] != "perona-malik":
            continue
        lines.append(
            f"| {r['k']} | {r['estimated_error']:.1e} | {r['check_linear_estimated_error']:.1e} "
            f"| {r['check_linear_true_error_extrapolated']:.1e} | {r['check_linear_true_error_fine']:.1e} "
            f"| {r['distance_to_linear_diffusion']:.2f} | {r['fraction_gradients_above_lambda']:.3f} | {r['seconds']:.1f} |"
        )

    for problem in problems:
        lines += [
            "",
            f"## {problem}: cheapest configuration with error <= 1e-2",
            "",
            (
                "Ratio = explicit's cost / the scheme's cost (each scheme's cheapest configuration by that measure); "
                "spread = (max - min) / median of the timed runs ('once': one run over "
                f"{LONG_RUN:g} s)."
            ),
            "",
            (
                "| k | scheme | config (by evals) | evaluations | error | ratio evals | config (by time) | ms | spread "
                "| error | ratio time |"
            ),
            "| ---: | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        for row in rows:
            if row["problem"] != problem:
                continue
            e, t = row["by_evaluations"], row["by_seconds"]
            if e is None and t is None:
                lines.append(
                    f"| {row['k']} | {LABELS[row['scheme']]} | not reached: best error {fmt_error(row['best_error'])}, "
                    f"stopped at {row['stopped']} | | | | | | | | |"
                )
                continue
            ratio_e, ratio_t = fmt_ratio(row["evaluation_ratio"]), fmt_ratio(row["time_ratio"])
            by_evals = (
                f"{knob_text(e)} | {fmt_evals(e['evaluations'])} | {fmt_error(e['error'])} | {ratio_e}"
                if e is not None else "- | n/a | - | -"
            )
            lines.append(
                f"| {row['k']} | {LABELS[row['scheme']]} | {by_evals} | {knob_text(t)} | {fmt_seconds(t['seconds'])} "
                f"| {fmt_spread(t['spread'])} | {fmt_error(t['error'])} | {ratio_t} |"
            )

    lines += [
        "",
        "## FED rounding: one cycle at tau_max = tau_lim, linear periodic problem",
        "",
        (
            "Error against the exact cycle polynomial q_n(tau_lim A) applied (float64 Fourier) to the same input; "
            "estimate = rounding_amplification x machine epsilon; bound = the amplification weighted by max(t_i, 1) "
            "x (the rounding bound of one block, `block_error`, + unit roundoff): the first-order bound of claim "
            "`fed-rounding`. Orders: `leja` (the default, "
            "a weighted Leja order), `kappa` (the kappa-cycles, the default before), `ascending`. Leja counts as "
            "accurate when its error is within that bound and <= 1e-2, kappa when within its bound; ascending as blown "
            "up when its error is >= 1 or not finite. The FSI cycle (same polynomial) is shown for comparison."
        ),
        "",
        "| cycle length | dtype | order | error | rounding_amplification | estimate | bound |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rounding_rows:
        amplification = "-" if r["rounding_amplification"] is None else f"{r['rounding_amplification']:.2e}"
        estimate = "-" if r["estimate"] is None else f"{r['estimate']:.1e}"
        bound = "-" if r["predicted"] is None else f"{r['predicted']:.1e}"
        lines.append(
            f"| {r['cycle_length']} | {r['dtype']} | {r['order']} | {fmt_error(r['error'])} | {amplification} "
            f"| {estimate} | {bound} |"
        )

    lines += [
        "",
        "## Cycle time tau (n^2+n)/3",
        "",
        "| n | largest relative deviation (cycle_time, FSIScheme/FEDScheme.cycle_time, FED step sums in each order, FSI slope) |",
        "| ---: | ---: |",
    ]
    for r in checks["identity"]:
        lines.append(f"| {r['cycle_length']} | {r['max_rel_deviation']:.1e} |")
    lines += [
        "",
        (
            "One cycle at tau = tau_lim on the linear periodic problem (first signal) against the exact cycle "
            "polynomial q_n(tau_lim A) applied in Fourier space:"
        ),
        "",
        "| scheme | n | relative error |",
        "| --- | ---: | ---: |",
    ]
    for r in checks["numeric"]:
        lines.append(f"| {r['scheme']} | {r['cycle_length']} | {r['error_vs_cycle_polynomial']:.1e} |")
    lines += ["", f"Raw points: `{stem}.json`; plot: `{stem}.png`.", ""]
    return "\n".join(lines)


def plot(points: list[dict], problems, multiples, path: pathlib.Path, reference_errors: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    rows = [(p, m) for p in problems for m in ("evaluations", "seconds")]
    fig, axes = plt.subplots(len(rows), len(multiples), figsize=(3.6 * len(multiples), 2.9 * len(rows)), squeeze=False)
    markers = dict(zip(SCHEMES, "osD^v<>PX"))
    styles = {"fed": "--", "fsi-frozen": ":"}  # FED and frozen FSI share their cycle polynomial
    for i, (problem, measure) in enumerate(rows):
        for j, k in enumerate(multiples):
            ax = axes[i][j]
            for scheme in SCHEMES:
                chosen = [p for p in points if p["problem"] == problem and p["k"] == k and p["scheme"] == scheme]
                chosen = [p for p in chosen if math.isfinite(p["error"]) and p["error"] > 0 and p.get(measure) is not None]
                if chosen:
                    ax.loglog(
                        [p[measure] for p in chosen], [p["error"] for p in chosen],
                        marker=markers[scheme], markersize=4, label=LABELS[scheme],
                        linestyle=styles.get(scheme, "-"),
                    )
            ax.axhline(TARGET, color="gray", linestyle="--", linewidth=0.8)
            estimate = reference_errors.get((problem, k))
            if estimate:
                ax.axhline(estimate, color="gray", linestyle=":", linewidth=0.8)
            ax.set_title(f"{problem}, T = {k} tau_lim", fontsize=9)
            ax.set_xlabel("operator evaluations" if measure == "evaluations" else "wall-clock [s]", fontsize=8)
            if j == 0:
                ax.set_ylabel("relative L2 error", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
    axes[1][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 256, batch 4, T = 100 tau_lim, sweeps stop at the target (smoke test)")
    parser.add_argument("--n", type=int, default=None, help="grid points (default 4096)")
    parser.add_argument("--batch", type=int, default=None, help="signals per batch (default 16)")
    parser.add_argument("--multiples", type=int, nargs="+", default=None, help="T / tau_lim (default 10 100 1000 10000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per configuration, at most")
    parser.add_argument(
        "--budget", type=float, default=1.0,
        help=f"seconds per configuration: more than {MIN_RUNS} timed runs (up to --repeats) only while they fit",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial signals")
    parser.add_argument(
        "--reference", type=int, nargs=2, default=[16, 32], metavar=("F1", "F2"),
        help="Perona-Malik reference: explicit steps tau_lim / F1 and tau_lim / F2, Richardson-extrapolated",
    )
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS, help="directory of the results")
    args = parser.parse_args()
    args.stop = TARGET if args.quick else STOP
    n = args.n or (256 if args.quick else 4096)
    batch = args.batch or (4 if args.quick else 16)
    multiples = tuple(args.multiples or ((100,) if args.quick else (10, 100, 1000, 10_000)))
    settings = {"n": n, "batch": batch, "multiples": list(multiples), "repeats": args.repeats,
                "budget": args.budget, "seed": args.seed, "quick": args.quick, "stop": args.stop,
                "reference": list(args.reference)}
    schemes = SCHEMES if diffrax is not None else tuple(s for s in SCHEMES if s != "diffrax")
    if diffrax is None:
        print("diffrax is not installed (pip install -e .[bench]): its sweeps are skipped", flush=True)
    start = time.perf_counter()

    signals = initial_signals(n, batch, args.seed)
    linear = Problem("linear", n, signals)
    perona_malik = Problem("perona-malik", n, signals)
    problems = {"linear": linear, "perona-malik": perona_malik}
    print(f"n = {n}, batch = {batch}, T / tau_lim = {multiples}; lambda = {perona_malik.lam:.6g}", flush=True)

    print("cost per evaluation", flush=True)
    per_evaluation = cost_per_evaluation(problems, PER_EVALUATION_ROUNDS)
    for r in per_evaluation:
        print(
            f"  {r['problem']:>12} {r['name']:<72} {r['us_per_evaluation']:8.1f} us/eval "
            f"(spread {r['spread']:.2f}, {r['ratio_to_explicit']:.2f}x explicit)",
            flush=True,
        )
    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)

    print("cycle time checks", flush=True)
    checks = cycle_checks(linear)
    print(
        f"  largest relative deviation {checks['max_rel_deviation']:.1e}, cycles vs polynomial "
        f"{checks['numeric_max_error']:.1e} ({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    print("FED rounding", flush=True)
    rounding_rows = fed_rounding(linear)
    rounding = rounding_verdict(rounding_rows)
    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)

    points, references = [], []
    diffrax_skip, skipped = {}, {}  # per problem: why diffrax is not run at larger T; per (problem, k): that
    for k in multiples:
        for problem in problems.values():
            exact, info = reference(problem, linear, k, tuple(args.reference))
            references.append({"problem": problem.name, "k": k, **info})
            if problem.name != "linear":
                print(
                    f"  reference k={k}: estimated error {info['estimated_error']:.1e} "
                    f"(linear check: estimate {info['check_linear_estimated_error']:.1e}, "
                    f"true {info['check_linear_true_error_extrapolated']:.1e}), {info['seconds']:.1f} s",
                    flush=True,
                )
            time_cap, new = None, []
            for scheme in schemes:
                if scheme == "diffrax" and problem.name in diffrax_skip:
                    skipped[(problem.name, k)] = diffrax_skip[problem.name]
                    print(f"  {problem.name:>12} k={k:<6} diffrax skipped: {diffrax_skip[problem.name]['reason']}", flush=True)
                    continue
                found = sweep(problem, scheme, k, exact, args, time_cap)
                if scheme == "explicit" and best(found, "first_seconds"):
                    time_cap = COST_CAP * best(found, "first_seconds")["first_seconds"]
                if scheme == "diffrax":
                    reason = diffrax_skip_reason(found, best([p for p in new if p["scheme"] == "explicit"], "first_seconds"), k)
                    if reason:
                        diffrax_skip[problem.name] = reason
                new += found
            interleaved(new, problem.u0, args.repeats, args.budget)
            for point in new:
                del point["program"]
            points += new
            print(f"  {problem.name} k={k} done ({time.perf_counter() - start:.0f} s)", flush=True)

    rows = summaries(points, problems, multiples, skipped)
    for row in rows:
        for key in ("by_evaluations", "by_seconds", "explicit_by_evaluations", "explicit_by_seconds"):
            if row[key] is not None:
                row[key] = {**row[key]}  # a copy: the JSON holds each point once more per summary
    plan_deviation = max((p.get("time_reached_rel_deviation", 0.0) for p in points), default=0.0)
    checks["for_time_max_rel_deviation"] = plan_deviation
    checks["met"] = checks["met"] and plan_deviation <= IDENTITY_RTOL
    verdict_rows = verdicts(rows, checks, rounding, references, multiples)
    for row in rows:
        del row["points"]

    meta = {**machine(), "seconds": time.perf_counter() - start}
    if diffrax is not None:
        meta["diffrax"] = diffrax.__version__
    stem = f"time_to_solution-{meta['device']}" + ("-quick" if args.quick else "")
    problem_info = {
        name: {"tau_lim": p.tau_lim, "lam": p.lam, "boundary": p.boundary, "tridiagonal": p.tridiagonal}
        for name, p in problems.items()
    }
    args.out.mkdir(parents=True, exist_ok=True)
    reference_errors = {(r["problem"], r["k"]): r["estimated_error"] for r in references}
    plot(points, list(problems), multiples, args.out / f"{stem}.png", reference_errors)
    meta["seconds"] = time.perf_counter() - start
    payload = {
        "meta": meta, "settings": settings, "problems": problem_info, "references": references,
        "per_evaluation": per_evaluation, "checks": checks, "fed_rounding": rounding_rows,
        "fed_rounding_verdict": rounding, "summary": rows, "verdicts": verdict_rows, "points": points,
    }
    (args.out / f"{stem}.json").write_text(json.dumps(finite_json(payload), indent=2))
    (args.out / f"{stem}.md").write_text(
        markdown(meta, settings, problem_info, references, rows, checks, rounding_rows, verdict_rows, per_evaluation, stem)
    )
    for v in verdict_rows:
        print(f"{'met   ' if v['met'] else 'MISSED'} {v['target']}: {v['detail']}")
    print(f"wrote {args.out / stem}.md ({meta['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
