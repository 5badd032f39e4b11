"""Time to solution: explicit, FED, FSI and semi-implicit schemes at equal accuracy.

For stopping times T = k tau_lim (k = 10, 100, 1000, 10000 by default), tau_lim =
`stable_step_size(op, flux)` = 2 / (L ||K||^2) the explicit step limit, the script sweeps
the cost knob of each scheme and measures, in float64 on a batch of signals (`jax.vmap`),

- the error: the largest relative L2 error over the batch, ||u - u_ref|| / ||u_ref|| per
  signal, against the reference at T;
- the operator evaluations per signal: applications of u -> K^T Phi(K u) (or of its frozen
  linearisation K^T G K). Explicit: steps. FED and FSI: cycles x cycle length (the one
  product K u per cycle that freezes the diffusivity is not counted). Semi-implicit with
  conjugate gradients: CG iterations as reported by lineax, summed over the steps, mean over
  the batch (one product with K^T G K each). Semi-implicit with the tridiagonal solver
  (D_1 neumann): one per step (the solve; assembling the matrix takes three products
  with K^T G K per step, not counted);
- the wall-clock of the batched solve: compiled first, then the median of repeated runs,
  each blocking until ready. Explicit, FED and FSI: the schemes' `solve` under
  `jax.jit(jax.vmap(...))`, one program per configuration. Semi-implicit: the scheme's step
  (`solve_diffusion_system` with the diffusivity frozen at the current state) in a loop
  with tau, N and the CG tolerance as runtime arguments, one program per problem; it is
  compared once per problem with `SemiImplicitScheme.solve`.

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
`for_time(T, cycles=M)`; semi-implicit: N = 1, 2, 4, 8, ... steps, CG relative tolerance
1e-2 / (100 N) (so the N solves add at most 1e-4 to the error). A sweep stops once its error is below 2.5e-3, when
it stops being finite, or at its cost cap: 4 k evaluations, 4x the wall-clock of explicit's
cheapest run with error <= 1e-2 at the same T, or 24 points.

Also reported: the cycle-time identity tau (n^2+n)/3 (cycle_time, FED step-size sums, the
slope at 0 of the FSI recurrence, one FSI cycle against the exact cycle polynomial), the
rounding of long FED cycles (lengths 150 and 300, float64 and float32, the reordered and
the ascending step order), and the targets: at T = 10^4 tau_lim and error <= 1e-2, FED
and FSI need >= 10x fewer operator evaluations and >= 10x less wall-clock than explicit.

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
import timeit

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import lineax as lx
import numpy as np
import scipy.fft
from common import finite_json, machine

import jaxpde
from jaxpde import fluxes
from jaxpde.fluxes import Frozen
from jaxpde.schemes import (
    ExplicitScheme,
    FEDScheme,
    FSIScheme,
    SemiImplicitScheme,
    cycle_polynomial,
    cycle_time,
    diffusion_system,
    fed_step_sizes,
    fsi_weights,
    rounding_amplification,
    solve_diffusion_system,
)

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
TARGET = 1e-2  # relative L2 error at which the costs are compared
STOP = TARGET / 4  # a sweep stops once it is this accurate
MAX_POINTS = 24  # sweep points per scheme at most
COST_CAP = 4  # ... and evaluations at most COST_CAP * k (k explicit steps of tau_lim)
SPEEDUP = 10  # the target ratio against explicit
IDENTITY_RTOL = 1e-12  # cycle-time identity tolerance
NUMERIC_RTOL = 1e-11  # a float64 cycle (length <= 150) against its exact polynomial: rounding only
SEGMENTS = 16
NOISE = 0.1
REFERENCE_CHECK_SIGNALS = 2  # signals of the linear problem on which the reference procedure is checked
ROUNDING_LENGTHS = (150, 300)
IDENTITY_LENGTHS = (1, 2, 3, 10, 61, 150, 173, 300)
SCHEMES = ("explicit", "fed", "fsi-frozen", "fsi-unfrozen", "semi-implicit")
LABELS = {
    "explicit": "explicit",
    "fed": "FED",
    "fsi-frozen": "FSI (frozen)",
    "fsi-unfrozen": "FSI (unfrozen)",
    "semi-implicit": "semi-implicit",
}


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


def timed(program, u, repeats: int, budget: float):
    """Output of the first run after compilation and the median of at least 3 timed runs:
    up to `repeats` while they fit in `budget` seconds; a first run longer than `budget`
    counts as one of 3."""
    start = time.perf_counter()
    out = jax.block_until_ready(program(u))
    first = time.perf_counter() - start
    if first >= budget:
        times = [first] + timeit.repeat(lambda: jax.block_until_ready(program(u)), number=1, repeat=2)
    else:
        count = max(3, min(repeats, math.ceil(budget / max(first, 1e-9))))
        times = timeit.repeat(lambda: jax.block_until_ready(program(u)), number=1, repeat=count)
    return out, statistics.median(times), times


# ---------------------------------------------------------------- the sweeps


class Problem:
    """Operator, flux, data and step limit of one problem (and its compiled semi-implicit sweep)."""

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
        self.semi_implicit = None  # the compiled semi-implicit sweep program, built on first use
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


def knobs(scheme: str) -> list:
    """The sweep values of the cost knob: 1, 2, 3, 4, 6, 8, 12, ... (steps of about 1.4x);
    for explicit, tau_lim / tau, also 1.1, 1.25 and 1.5 (just below the step limit the
    highest frequencies are damped only slowly); for semi-implicit 1, 2, 4, 8, ... (its
    cost grows slowly with N, and its conjugate-gradient runs are the longest)."""
    if scheme == "semi-implicit":
        return [2**j for j in range(MAX_POINTS)]
    grid = sorted({2**j for j in range(MAX_POINTS)} | {3 * 2**j for j in range(MAX_POINTS)})
    if scheme == "explicit":
        return [1, 1.1, 1.25, 1.5] + grid[1:MAX_POINTS - 3]
    return grid[:MAX_POINTS]


def run_point(problem: Problem, scheme: str, knob: int, t_end: float, k: int, args) -> tuple[dict, np.ndarray]:
    """Solve the batch to `t_end` with one configuration; evaluations, timings, output."""
    u = problem.u0
    point = {"problem": problem.name, "k": k, "t_end": t_end, "scheme": scheme, "knob": knob}
    if scheme == "explicit":
        method = ExplicitScheme(problem.op, problem.flux, problem.tau_lim / knob)
        steps = method.num_steps(t_end)
        point.update(knob_name="tau_lim / tau", tau=problem.tau_lim / knob, steps=steps, evaluations=steps)
        fn = lambda v: method.solve(v, t_end)
    elif scheme in ("fed", "fsi-frozen", "fsi-unfrozen"):
        if scheme == "fed":
            base = FEDScheme(problem.op, problem.flux, cycle_length=1)
        else:
            base = FSIScheme(problem.op, problem.flux, cycle_length=1, frozen=scheme == "fsi-frozen")
        planned = base.for_time(t_end, cycles=knob)
        tau = float(planned.tau_max if scheme == "fed" else planned.tau)
        length = planned.cycle_length
        reached = knob * cycle_time(tau, length)
        point.update(
            knob_name="cycles M", cycle_length=length, tau=tau, evaluations=knob * length,
            time_reached_rel_deviation=abs(reached - t_end) / t_end,
        )
        fn = lambda v: base.solve(v, t_end, cycles=knob)
    else:
        return semi_implicit_point(problem, knob, t_end, point, args)
    program, compile_s = compiled(fn, u)
    out, seconds, times = timed(program, u, args.repeats, args.budget)
    point.update(seconds=seconds, times=times, compile_seconds=compile_s)
    return point, np.asarray(out)


def semi_implicit_program(problem: Problem):
    """N semi-implicit steps of size tau (the step of `SemiImplicitScheme`:
    `solve_diffusion_system` with the diffusivity frozen at the current state), with tau,
    the CG tolerance and N as runtime arguments: one compiled program for the whole sweep.
    Returns the final states and the CG iterations per signal (0 for the tridiagonal solver)."""

    def fn(v, tau, rtol, steps):
        def body(_, carry):
            w, count = carry
            solution = solve_diffusion_system(problem.op, Frozen(problem.flux, problem.op(w)), tau, w, rtol=rtol)
            return solution.value, count + solution.steps.astype(count.dtype)

        return jax.lax.fori_loop(0, steps, body, (v, jnp.zeros((), jnp.int64)))

    start = time.perf_counter()
    scalar = jax.ShapeDtypeStruct((), jnp.float64)
    program = jax.jit(jax.vmap(fn, in_axes=(0, None, None, None))).lower(
        problem.u0, scalar, scalar, jax.ShapeDtypeStruct((), jnp.int64)
    ).compile()
    return program, time.perf_counter() - start


def semi_implicit_point(problem: Problem, knob: int, t_end: float, point: dict, args) -> tuple[dict, np.ndarray]:
    u = problem.u0
    rtol = TARGET / (100 * knob)
    tau = t_end / knob
    compile_s = 0.0
    if problem.semi_implicit is None:
        problem.semi_implicit, compile_s = semi_implicit_program(problem)
    if not (args.quick or problem.semi_implicit_checked):
        # The runtime-argument loop is the scheme's own solve: compare once per problem.
        problem.semi_implicit_checked = True
        scheme = SemiImplicitScheme(problem.op, problem.flux, tau, rtol=rtol)
        check, _ = compiled(lambda v: scheme.solve(v, t_end, knob), u)
        out = problem.semi_implicit(u, jnp.float64(tau), jnp.float64(rtol), jnp.int64(knob))[0]
        point["difference_to_scheme_solve"] = relative_errors(np.asarray(out), np.asarray(check(u)))[0]
    program = problem.semi_implicit
    (out, iterations), seconds, times = timed(
        lambda v: program(v, jnp.float64(tau), jnp.float64(rtol), jnp.int64(knob)), u, args.repeats, args.budget
    )
    point.update(knob_name="steps N", tau=tau, steps=knob, seconds=seconds, times=times, compile_seconds=compile_s)
    if problem.tridiagonal:
        point.update(evaluations=knob, linear_solver="tridiagonal")
    else:
        iterations = np.asarray(iterations)
        point.update(
            evaluations=float(np.mean(iterations)), evaluations_max=int(np.max(iterations)),
            linear_solver="CG", cg_rtol=rtol,
        )
    return point, np.asarray(out)


def sweep(problem: Problem, scheme: str, k: int, exact: np.ndarray, args, time_cap: float | None) -> list[dict]:
    """Run the knobs of `scheme` until one of the stopping rules (module docstring) holds."""
    t_end = k * problem.tau_lim
    points = []
    for knob in knobs(scheme):
        point, out = run_point(problem, scheme, knob, t_end, k, args)
        point["error"], point["error_pooled"] = relative_errors(out, exact)
        points.append(point)
        print(
            f"  {problem.name:>12} k={k:<6} {scheme:<14} knob={knob:<5} evals={point['evaluations']:>10.6g} "
            f"error={point['error']:.3e} time={point['seconds'] * 1e3:10.3f} ms",
            flush=True,
        )
        reasons = {
            "not finite": not math.isfinite(point["error"]),
            f"error <= {args.stop:g}": point["error"] <= args.stop,
            f"evaluations >= {COST_CAP} k": point["evaluations"] >= COST_CAP * k,
            f"wall-clock >= {COST_CAP}x explicit's best": time_cap is not None and point["seconds"] >= time_cap,
            # From here on FED and FSI would be explicit steps of shrinking size.
            "cycle length 1": point.get("cycle_length") == 1,
        }
        stop = [reason for reason, holds in reasons.items() if holds]
        if stop:
            point["stopped"] = ", ".join(stop)
            break
    return points


def best(points: list[dict], key: str) -> dict | None:
    """The cheapest point by `key` among those with error <= TARGET."""
    good = [p for p in points if p["error"] <= TARGET]
    return min(good, key=lambda p: p[key]) if good else None


# ---------------------------------------------------------------- cycle identities and FED rounding


def fsi_slope(length: int) -> float:
    """-q_n'(0) from the FSI recurrence q_{k+1} = a_k (1 - x) q_k + (1 - a_k) q_{k-1} with
    the package's weights (q = 1 at x = 0, so q'_{k+1} = a_k (q'_k - 1) + (1 - a_k) q'_{k-1})."""
    previous = current = 0.0
    for a in fsi_weights(length):
        previous, current = current, a * (current - 1) + (1 - a) * previous
    return -current


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
            "sum FED steps (reordered)": math.fsum(fed_step_sizes(tau, length, reorder=True)),
            "sum FED steps (ascending)": math.fsum(fed_step_sizes(tau, length, reorder=False)),
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
    """One FED cycle of length 150 and 300 at tau_max = tau_lim, both step orders, float64
    and float32, against the exact cycle polynomial (float64 Fourier) of the same input."""
    tau = linear.tau_lim
    eig = periodic_eigenvalues(linear.n, linear.h)
    rows = []
    for length in ROUNDING_LENGTHS:
        amplification = {
            order: rounding_amplification(fed_step_sizes(1.0, length, reorder=order == "reordered"))
            for order in ("reordered", "ascending")
        }
        print(
            f"  FED cycle {length}: rounding_amplification reordered {amplification['reordered']:.3e}, "
            f"ascending {amplification['ascending']:.3e}",
            flush=True,
        )
        for dtype in (np.float64, np.float32):
            u = linear.signals.astype(dtype)
            exact = fourier_apply(u.astype(np.float64), cycle_polynomial(tau * eig, length))
            eps = float(np.finfo(dtype).eps)
            for order in ("reordered", "ascending"):
                method = FEDScheme(linear.op, linear.flux, tau, cycle_length=length, reorder=order == "reordered")
                program, _ = compiled(lambda v, method=method: method(v), jnp.asarray(u))
                out = np.asarray(program(jnp.asarray(u)))
                if out.dtype != dtype:
                    raise RuntimeError(f"FED cycle returned {out.dtype} for {np.dtype(dtype).name} input.")
                error = relative_errors(out.astype(np.float64), exact)[0]
                rows.append({
                    "cycle_length": length, "dtype": np.dtype(dtype).name, "order": order, "error": error,
                    "rounding_amplification": amplification[order], "predicted": amplification[order] * eps,
                })
                print(f"    {np.dtype(dtype).name} {order:>9}: error {error:.3e}", flush=True)
            # For comparison: the FSI cycle of the same polynomial (no step sizes above the limit).
            method = FSIScheme(linear.op, linear.flux, tau, cycle_length=length)
            program, _ = compiled(lambda v, method=method: method(v), jnp.asarray(u))
            error = relative_errors(np.asarray(program(jnp.asarray(u))).astype(np.float64), exact)[0]
            rows.append({
                "cycle_length": length, "dtype": np.dtype(dtype).name, "order": "FSI (comparison)", "error": error,
                "rounding_amplification": None, "predicted": None,
            })
            print(f"    {np.dtype(dtype).name} FSI cycle: error {error:.3e}", flush=True)
    return rows


def rounding_verdict(rows: list[dict]) -> dict:
    """Reordered: finite, within its first-order rounding bound and the target;
    ascending: blows up (not finite, or error >= 1)."""
    reordered = [r for r in rows if r["order"] == "reordered"]
    ascending = [r for r in rows if r["order"] == "ascending"]
    accurate = all(math.isfinite(r["error"]) and r["error"] <= min(TARGET, r["predicted"]) for r in reordered)
    blows_up = all(not math.isfinite(r["error"]) or r["error"] >= 1 for r in ascending)
    failed = [
        f"{r['dtype']} n = {r['cycle_length']} reordered error {fmt_error(r['error'])}"
        for r in reordered if not (math.isfinite(r["error"]) and r["error"] <= min(TARGET, r["predicted"]))
    ] + [
        f"{r['dtype']} n = {r['cycle_length']} ascending error {fmt_error(r['error'])}"
        for r in ascending if not (not math.isfinite(r["error"]) or r["error"] >= 1)
    ]
    return {
        "reordered_accurate": accurate, "ascending_blows_up": blows_up, "met": accurate and blows_up,
        "failed": failed,
    }


# ---------------------------------------------------------------- report


def fmt_error(value: float) -> str:
    return "inf/nan" if not math.isfinite(value) else f"{value:.2e}"


def fmt_evals(value: float) -> str:
    return f"{value:,.0f}"


def fmt_seconds(value: float) -> str:
    return f"{value * 1e3:,.2f}"


def knob_text(point: dict) -> str:
    if point["scheme"] == "explicit":
        return f"tau_lim/{point['knob']:g}"
    if point["scheme"] == "semi-implicit":
        return f"N={point['knob']}"
    return f"M={point['knob']} x {point['cycle_length']}"


def summaries(points: list[dict], problems, multiples) -> list[dict]:
    rows = []
    for problem in problems:
        for k in multiples:
            chosen = {s: [p for p in points if p["problem"] == problem and p["k"] == k and p["scheme"] == s] for s in SCHEMES}
            base_e, base_t = best(chosen["explicit"], "evaluations"), best(chosen["explicit"], "seconds")
            for scheme in SCHEMES:
                by_evals, by_time = best(chosen[scheme], "evaluations"), best(chosen[scheme], "seconds")
                row = {
                    "problem": problem, "k": k, "scheme": scheme,
                    "best_error": min((p["error"] for p in chosen[scheme]), default=math.inf),
                "stopped": next((p["stopped"] for p in chosen[scheme] if "stopped" in p), "end of the knob values"),
                    "by_evaluations": by_evals, "by_seconds": by_time,
                    "evaluation_ratio": base_e["evaluations"] / by_evals["evaluations"] if base_e and by_evals else None,
                    "time_ratio": base_t["seconds"] / by_time["seconds"] if base_t and by_time else None,
                }
                rows.append(row)
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
            "target": "FED rounding, n = 150 and 300, float64 and float32: reordered accurate, ascending blows up",
            "met": rounding["met"],
            "detail": (
                f"reordered accurate: {rounding['reordered_accurate']}; ascending blows up: {rounding['ascending_blows_up']}"
                + (f" (failing: {'; '.join(rounding['failed'])})" if rounding["failed"] else "")
            ),
        },
    ]
    for row in rows:
        if row["k"] != k or row["scheme"] not in ("fed", "fsi-frozen", "fsi-unfrozen"):
            continue
        for what, ratio in (("operator evaluations", row["evaluation_ratio"]), ("wall-clock", row["time_ratio"])):
            met = ratio is not None and ratio >= SPEEDUP
            detail = "error <= 1e-2 not reached" if row["by_evaluations"] is None else (
                "explicit did not reach error <= 1e-2" if ratio is None else f"{ratio:.1f}x"
            )
            out.append({
                "target": f"{row['problem']}, T = {k} tau_lim, error <= 1e-2: {LABELS[row['scheme']]} needs {what} >= {SPEEDUP}x below explicit",
                "met": met, "detail": detail,
            })
    return out


def markdown(meta: dict, settings: dict, problems: dict, references: list[dict], rows: list[dict],
             checks: dict, rounding_rows: list[dict], verdict_rows: list[dict], stem: str) -> str:
    f1, f2 = settings["reference"]
    lines = [
        "# Time to solution: explicit, FED, FSI and semi-implicit schemes",
        "",
        (
            f"Device: {meta['device']} ({meta['processor']}, {meta['cpu_count']} cores); jax {meta['jax']}, "
            f"numpy {meta['numpy']}; float64; n = {settings['n']}, batch of {settings['batch']} signals (jax.vmap), "
            f"seed {settings['seed']}; T = k tau_lim, tau_lim = 2 / (L ||K||^2)."
        ),
        (
            "Error: the largest relative L2 error over the batch. Evaluations per signal: explicit steps; FED and FSI "
            "cycles x cycle length (the freezing K u once per cycle not counted); semi-implicit: CG iterations "
            "(lineax, mean over the batch; relative tolerance 1e-2 / (100 N)) or, with the tridiagonal solver, "
            "one per step (plus three products per step to assemble the matrix, not counted)."
        ),
        (
            f"Wall-clock: the batched solve, compiled first, median of at least 3 runs (at most {settings['repeats']}), "
            f"each blocking until ready. Knobs 1, 2, 3, 4, 6, 8, ... (explicit: tau_lim / m, also m = 1.1, 1.25, 1.5; "
            f"semi-implicit: N = 1, 2, 4, 8, ...); sweeps stop below error {settings['stop']:g}, or at a cost cap "
            f"({COST_CAP} k evaluations, {COST_CAP}x the wall-clock of explicit's cheapest run with error <= 1e-2). "
            "Explicit, FED and FSI run the schemes' `solve`, one compiled program per configuration; semi-implicit "
            "runs the scheme's step with tau, N and the CG tolerance as runtime arguments (one program per problem, "
            "checked against `SemiImplicitScheme.solve`)."
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
            "Ratio = explicit's cost / the scheme's cost (each scheme's cheapest configuration by that measure).",
            "",
            "| k | scheme | config (by evals) | evaluations | error | ratio evals | config (by time) | ms | error | ratio time |",
            "| ---: | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
        ]
        for row in rows:
            if row["problem"] != problem:
                continue
            e, t = row["by_evaluations"], row["by_seconds"]
            if e is None:
                lines.append(
                    f"| {row['k']} | {LABELS[row['scheme']]} | not reached: best error {fmt_error(row['best_error'])}, "
                    f"stopped at {row['stopped']} | | | | | | | |"
                )
                continue
            ratio_e = f"{row['evaluation_ratio']:.1f}x" if row["evaluation_ratio"] else "-"
            ratio_t = f"{row['time_ratio']:.1f}x" if row["time_ratio"] else "-"
            lines.append(
                f"| {row['k']} | {LABELS[row['scheme']]} | {knob_text(e)} | {fmt_evals(e['evaluations'])} | {fmt_error(e['error'])} "
                f"| {ratio_e} | {knob_text(t)} | {fmt_seconds(t['seconds'])} | {fmt_error(t['error'])} | {ratio_t} |"
            )

    lines += [
        "",
        "## FED rounding: one cycle at tau_max = tau_lim, linear periodic problem",
        "",
        (
            "Error against the exact cycle polynomial q_n(tau_lim A) applied (float64 Fourier) to the same input; "
            "predicted = rounding_amplification x machine epsilon (first-order bound). Reordered counts as accurate "
            "when its error is within that bound and <= 1e-2; ascending as blown up when its error is >= 1 or not "
            "finite. The FSI cycle (same polynomial) is shown for comparison."
        ),
        "",
        "| cycle length | dtype | order | error | rounding_amplification | predicted |",
        "| ---: | --- | --- | ---: | ---: | ---: |",
    ]
    for r in rounding_rows:
        amplification = "-" if r["rounding_amplification"] is None else f"{r['rounding_amplification']:.2e}"
        predicted = "-" if r["predicted"] is None else f"{r['predicted']:.1e}"
        lines.append(
            f"| {r['cycle_length']} | {r['dtype']} | {r['order']} | {fmt_error(r['error'])} | {amplification} | {predicted} |"
        )

    lines += [
        "",
        "## Cycle time tau (n^2+n)/3",
        "",
        "| n | largest relative deviation (cycle_time, FSIScheme/FEDScheme.cycle_time, FED step sums, FSI slope) |",
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
    markers = dict(zip(SCHEMES, "osD^v"))
    styles = {"fed": "--", "fsi-frozen": ":"}  # FED and frozen FSI share their cycle polynomial
    for i, (problem, measure) in enumerate(rows):
        for j, k in enumerate(multiples):
            ax = axes[i][j]
            for scheme in SCHEMES:
                chosen = [p for p in points if p["problem"] == problem and p["k"] == k and p["scheme"] == scheme]
                chosen = [p for p in chosen if math.isfinite(p["error"]) and p["error"] > 0]
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
    axes[0][0].legend(fontsize=7)
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
        help="seconds per configuration: more than 3 timed runs (up to --repeats) only while they fit",
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
    start = time.perf_counter()

    signals = initial_signals(n, batch, args.seed)
    linear = Problem("linear", n, signals)
    perona_malik = Problem("perona-malik", n, signals)
    problems = {"linear": linear, "perona-malik": perona_malik}
    print(f"n = {n}, batch = {batch}, T / tau_lim = {multiples}; lambda = {perona_malik.lam:.6g}", flush=True)

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
            time_cap = None
            for scheme in SCHEMES:
                new = sweep(problem, scheme, k, exact, args, time_cap)
                if scheme == "explicit" and best(new, "seconds"):
                    time_cap = COST_CAP * best(new, "seconds")["seconds"]
                points += new
            print(f"  {problem.name} k={k} done ({time.perf_counter() - start:.0f} s)", flush=True)

    rows = summaries(points, problems, multiples)
    plan_deviation = max((p.get("time_reached_rel_deviation", 0.0) for p in points), default=0.0)
    checks["for_time_max_rel_deviation"] = plan_deviation
    checks["met"] = checks["met"] and plan_deviation <= IDENTITY_RTOL
    verdict_rows = verdicts(rows, checks, rounding, references, multiples)

    meta = {**machine(), "seconds": time.perf_counter() - start}
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
        "checks": checks, "fed_rounding": rounding_rows, "fed_rounding_verdict": rounding,
        "summary": rows, "verdicts": verdict_rows, "points": points,
    }
    (args.out / f"{stem}.json").write_text(json.dumps(finite_json(payload), indent=2))
    (args.out / f"{stem}.md").write_text(
        markdown(meta, settings, problem_info, references, rows, checks, rounding_rows, verdict_rows, stem)
    )
    for v in verdict_rows:
        print(f"{'met   ' if v['met'] else 'MISSED'} {v['target']}: {v['detail']}")
    print(f"wrote {args.out / stem}.md ({meta['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
