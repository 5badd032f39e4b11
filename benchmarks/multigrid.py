"""Geometric multigrid for the semi-implicit system: convergence factors and time to solution.

Systems, float64, in the same run and with the same right-hand side for every solver:

    A x = f,   A = I + tau K^T G K,   f = u,

K = `jaxpde.Derivative(m, n, h=1/n)` for m = 1 and m = 2 (neumann) and m = 1 (periodic), u
a fixed piecewise-smooth signal on [0, 1] (two sines, two steps and a narrow Gaussian,
sampled at the cell centres (i + 1/2)/n), and G = diag(g) with

- perona-malik: g = 1 / (1 + s^2 / lambda^2), s = K u, lambda = median |K u| (stated per n);
- constant: g = 1 (the linear system I + tau K^T K).

tau = S / ||K||^2 (`op.norm_bound()`), S = tau ||K||^2 = 4000 by default (2000 explicit step
limits 2 / ||K||^2) at every n; `--fixed-tau` keeps the tau of the smallest n on the finer
grids instead (the same physical time step, so the condition number grows like n^(2m)).
A is assembled by `jaxpde.schemes.diffusion_stencil(op, Frozen(flux, op(u)), tau)`
(a `BandedStencil`); the references use the same matrix assembled independently in SciPy
(K as a sparse matrix, g from NumPy), and the largest entrywise difference of the two is
reported.

Multigrid: `Multigrid(rtol=1e-8, throw=False)` (V(2,2), red-black Gauss-Seidel, Galerkin
coarse operators, full-multigrid start; at most `max_cycles` = 50 cycles), and for the
tridiagonal systems (m = 1) the same solver with operator-dependent interpolation,
`Multigrid(interpolation="operator", ...)` (its own table and target). Reported:

- the convergence factor per cycle: the geometric mean of the residual reduction over the
  cycles after the full-multigrid start (`solution.history`), and the energy-norm factor
  ||E e||_A / ||e||_A of the V(2,2) error propagation E (`error_propagation`,
  `energy_power_iteration`) after 20 power iterations from a random start (a lower bound of ||E||_A,
  close to it once the iteration has converged);
- the time to relative residual 1e-8: the hierarchy setup (`Multigrid.hierarchy(A)`) and
  the solve (`solve(A, f, hierarchy=h)`), each jitted, compiled first, medians of repeated
  runs blocking until ready; total = setup + solve, and the total per unknown.

References, on the same system and f, to relative residual 1e-8:

- lineax's tridiagonal solver (m = 1 neumann only; the periodic matrix has corner entries),
  jitted, compiled first;
- `scipy.sparse.linalg.spsolve` (SuperLU, CSC);
- `scipy.sparse.linalg.cg` (rtol = 1e-8, at most `--cg-maxiter` iterations; stopped when it
  runs past `--reference-limit` seconds), with its iteration count;
- pyamg: `smoothed_aggregation_solver(A)` then `solve(f, tol=1e-8, accel="cg")` (setup
  included in its time), when `import pyamg` works;
- jaxpde's default semi-implicit solve, `solve_diffusion_system(op, flux, tau, f,
  rtol=1e-8)`: the lineax tridiagonal solver for m = 1 neumann (assembly included), lineax
  conjugate gradients otherwise; jitted, compiled first.

A reference is skipped at a size where its time, extrapolated from the previous size, would
exceed `--reference-limit` (60 s). Every answer x is checked independently:
||f - A x|| / ||f|| with the SciPy matrix. OpenBLAS (NumPy, SciPy) runs single-threaded
unless OPENBLAS_NUM_THREADS is set (recorded in the results).

Targets: the V(2,2) factor (energy-norm and residual-based) <= 0.1 for m = 1 and <= 0.3
for m = 2 at every n (and <= 0.1 with 1e-8 reached for the operator-dependent m = 1 solver); the multigrid time per unknown at the largest n within 2x of that at
the smallest n (and at the smallest n >= 2^14, where the smallest sizes are dominated by
fixed overheads); multigrid faster than spsolve and CG at n >= 2^18.

Results go to `benchmarks/results/multigrid-<device>.{md,json}` (`-quick` appended with
`--quick`).

Usage: `python benchmarks/multigrid.py [--quick] [--max-power P] [--sizes E ...]
[--repeats R] [--budget S] [--reference-limit S] [--stiffness S] [--fixed-tau] [--out DIR]`.
"""

import argparse
import functools
import json
import math
import os
import pathlib
import statistics
import time
import timeit

# OpenBLAS single-threaded unless the caller chose (OPENBLAS_NUM_THREADS=...): on the shared
# 2-core development machine its threads made SciPy CG 10-30x slower at n = 2^14 (level-1
# calls on short vectors). Must be set before NumPy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import lineax as lx
import numpy as np
import scipy
import scipy.sparse
import scipy.sparse.linalg
from common import finite_json, machine

import jaxpde
from jaxpde import fluxes
from jaxpde.reference import band_sparse_matrix, derivative_taps, stencil_sparse_matrix
from jaxpde.schemes import Result, diffusion_stencil, solve_diffusion_system
from jaxpde.schemes.multigrid import (
    Multigrid,
    energy_power_iteration,
    error_propagation,
)

try:
    import pyamg
except ImportError:  # the script runs without it and says so
    pyamg = None

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
RTOL = 1e-8
POWER_ITERATIONS = 20
PYAMG_MAXITER = 500
OPERATORS = {"m1-neumann": (1, "neumann"), "m2-neumann": (2, "neumann"), "m1-periodic": (1, "periodic")}
DIFFUSIVITIES = ("perona-malik", "constant")
FACTOR_BOUND = {1: 0.1, 2: 0.3}
OVERHEAD_FREE = 2**14  # the smallest n of the second time-per-unknown comparison
LARGE = 2**18  # from here on multigrid is to beat spsolve and CG
SCALING = 2.0  # largest / smallest time per unknown, at most
REFERENCES = ("lineax", "spsolve", "cg", "pyamg", "jaxpde")
LABELS = {
    "multigrid": "multigrid",
    "multigrid_operator": "multigrid (operator)",
    "lineax": "lineax tridiagonal",
    "spsolve": "spsolve",
    "cg": "SciPy CG",
    "pyamg": "pyamg SA+CG",
    "jaxpde": "solve_diffusion_system",
}

MULTIGRID = Multigrid(rtol=RTOL, throw=False)
# Operator-dependent interpolation: for the tridiagonal systems (m = 1) only.
MULTIGRID_OPERATOR = Multigrid(rtol=RTOL, throw=False, interpolation="operator")


# ---------------------------------------------------------------- systems


def piecewise_smooth_signal(n: int) -> np.ndarray:
    """The piecewise-smooth signal at the cell centres (i + 1/2) / n of [0, 1]: smooth parts,
    jumps of 1 at x = 0.2, 0.45 and of 0.7 at x = 0.6, 0.8, a Gaussian of width 0.03."""
    x = (np.arange(n) + 0.5) / n
    smooth = np.sin(2 * np.pi * x) + 0.3 * np.cos(7 * np.pi * x) + 0.5 * np.exp(-(((x - 0.9) / 0.03) ** 2))
    steps = np.where((x >= 0.2) & (x < 0.45), 1.0, 0.0) - np.where((x >= 0.6) & (x < 0.8), 0.7, 0.0)
    return smooth + steps


class System:
    """One system: the operator, the data, the jaxpde and SciPy matrices."""

    def __init__(self, operator: str, diffusivity: str, n: int, stiffness: float, tau_n: int):
        m, boundary = OPERATORS[operator]
        self.operator, self.diffusivity, self.n, self.m, self.boundary = operator, diffusivity, n, m, boundary
        self.op = jaxpde.Derivative(m, n, h=1.0 / n, boundary=boundary)
        self.u = piecewise_smooth_signal(n)
        K = stencil_sparse_matrix(derivative_taps(m, 1.0 / n), n, boundary)  # from the definition
        s = K @ self.u
        self.lam = float(np.median(np.abs(s)))
        # tau = S / ||K||^2 at n = tau_n (the current n, or the smallest with --fixed-tau).
        norm = float(jaxpde.Derivative(m, tau_n, h=1.0 / tau_n, boundary=boundary).norm_bound())
        self.tau = stiffness / norm**2
        self.norm_squared = float(self.op.norm_bound()) ** 2
        self.stiffness = self.tau * self.norm_squared  # tau ||K||^2 at this n
        if diffusivity == "perona-malik":
            g = 1 / (1 + s**2 / self.lam**2)
            self.flux = fluxes.Frozen(fluxes.PeronaMalik(self.lam), self.op(jnp.asarray(self.u)))
        else:
            g = np.ones_like(s)
            self.flux = fluxes.Linear(1.0)
        self.g_min = float(g.min())
        identity = scipy.sparse.identity(n, format="csr")
        self.matrix = (identity + self.tau * (K.T @ scipy.sparse.diags(g) @ K)).tocsr()
        self.f = jnp.asarray(self.u)

    @property
    def name(self) -> str:
        return f"{self.operator} {self.diffusivity}"

    def relative_residual(self, x) -> float:
        """||f - A x|| / ||f|| with the SciPy matrix, in NumPy."""
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            return math.inf
        return float(np.linalg.norm(self.u - self.matrix @ x) / np.linalg.norm(self.u))

    def banded_difference(self, diagonals: np.ndarray) -> float:
        """Largest entrywise |diffusion_stencil - SciPy matrix| over the largest |entry|."""
        difference = abs(band_sparse_matrix(diagonals, self.boundary == "periodic") - self.matrix)
        return float(difference.max()) / float(abs(self.matrix).max())


# ---------------------------------------------------------------- timing


def timed(fn, repeats: int, budget: float, compiled: bool) -> dict:
    """Run `fn` once (for jitted functions: compilation and the first run, `first_s`), then
    the median of timed runs: up to `repeats` while they fit in `budget` seconds, at least
    one. A scipy call (`compiled=False`) longer than `budget` is timed once: that first run."""
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    if not compiled and first >= budget:
        return {"out": out, "seconds": first, "times": [first], "first_s": first}
    probe_start = time.perf_counter()
    out = fn()
    probe = time.perf_counter() - probe_start
    times = [probe]
    if probe < budget:
        count = max(0, min(repeats, math.ceil(budget / max(probe, 1e-9))) - 1)
        times += timeit.repeat(fn, number=1, repeat=count) if count else []
    return {"out": out, "seconds": statistics.median(times), "times": times, "first_s": first}


# ---------------------------------------------------------------- multigrid


@jax.jit
def assemble(op, flux, tau):
    return diffusion_stencil(op, flux, tau)


@functools.partial(jax.jit, static_argnums=0)
def setup(config, A):
    return config.hierarchy(A)


@functools.partial(jax.jit, static_argnums=0)
def mg_solve(config, A, f, hierarchy):
    return config.solve(A, f, hierarchy=hierarchy)


@jax.jit
def energy_norm_estimate(A, hierarchy, e):
    """||E e_k||_A, ||e_k||_A = 1, after POWER_ITERATIONS normalised power iterations with E
    (`energy_power_iteration`): a lower bound of ||E||_A."""
    return energy_power_iteration(lambda e: error_propagation(hierarchy, e), A, e, POWER_ITERATIONS)[-1]


def run_multigrid(system: System, args, config: Multigrid = MULTIGRID) -> dict:
    tau = jnp.asarray(system.tau)
    assembly = timed(lambda: jax.block_until_ready(assemble(system.op, system.flux, tau)), args.repeats, args.budget, True)
    A = assembly["out"]
    hierarchy_run = timed(lambda: jax.block_until_ready(setup(config, A)), args.repeats, args.budget, True)
    hierarchy = hierarchy_run["out"]
    solve_run = timed(lambda: jax.block_until_ready(mg_solve(config, A, system.f, hierarchy)), args.repeats, args.budget, True)
    solution = solve_run["out"]
    cycles = int(solution.iterations)
    history = np.asarray(solution.history)[: cycles + 1]
    residual_factor = float((history[-1] / history[0]) ** (1 / cycles)) if cycles > 0 and history[0] > 0 else None
    start = jax.random.normal(jax.random.key(0), (system.n,), jnp.float64)
    power_start = time.perf_counter()
    energy = float(energy_norm_estimate(A, hierarchy, start))
    total = hierarchy_run["seconds"] + solve_run["seconds"]
    return {
        "levels": len(hierarchy.sizes),
        "coarsest": hierarchy.sizes[-1],
        "bandwidths": sorted({level.bandwidth for level in hierarchy.operators}),
        "assembly_s": assembly["seconds"],
        "setup_s": hierarchy_run["seconds"],
        "solve_s": solve_run["seconds"],
        "total_s": total,
        "s_per_unknown": total / system.n,
        "setup_first_s": hierarchy_run["first_s"],
        "solve_first_s": solve_run["first_s"],
        "power_iteration_first_s": time.perf_counter() - power_start,  # compilation included
        "cycles": cycles,
        "converged": bool(solution.result == Result.successful),
        "fmg_relative_residual": float(history[0]),
        "history": history.tolist(),
        "residual_factor": residual_factor,
        "energy_factor": energy,
        "relative_residual": system.relative_residual(solution.value),
        "assembly_difference": system.banded_difference(np.asarray(A.diagonals)),
    }


# ---------------------------------------------------------------- references


class TimeLimit(Exception):
    """Raised from SciPy CG's callback once it has run past the reference limit."""


@jax.jit
def tridiagonal_solve(diagonal, lower, upper, f):
    operator = lx.TridiagonalLinearOperator(diagonal, lower, upper)
    return lx.linear_solve(operator, f, lx.Tridiagonal()).value


@jax.jit
def default_solve(op, flux, tau, f):
    solution = solve_diffusion_system(op, flux, tau, f, rtol=RTOL, throw=False)
    return solution.value, solution.iterations, solution.result == Result.successful


def run_reference(name: str, system: System, args) -> dict:
    """Time one reference solver on `system`; `{"skipped": reason}` where it does not apply."""
    matrix, u = system.matrix, system.u
    if name == "lineax":
        if system.boundary != "neumann" or system.m != 1:
            return {"skipped": "not tridiagonal"}
        diagonal = jnp.asarray(matrix.diagonal(0))
        lower = jnp.asarray(matrix.diagonal(-1))
        upper = jnp.asarray(matrix.diagonal(1))
        run = timed(lambda: jax.block_until_ready(tridiagonal_solve(diagonal, lower, upper, system.f)), args.repeats, args.budget, True)
        return {"seconds": run["seconds"], "first_s": run["first_s"], "x": run["out"], "converged": True}
    if name == "spsolve":
        csc = matrix.tocsc()
        run = timed(lambda: scipy.sparse.linalg.spsolve(csc, u), args.repeats, args.budget, False)
        return {"seconds": run["seconds"], "x": run["out"], "converged": True}
    if name == "cg":
        return run_cg(system, args)
    if name == "pyamg":
        if pyamg is None:
            return {"skipped": "pyamg not installed"}

        def pyamg_solve():
            residuals = []
            solver = pyamg.smoothed_aggregation_solver(matrix)
            x = solver.solve(u, tol=RTOL, accel="cg", maxiter=PYAMG_MAXITER, residuals=residuals)
            return x, len(residuals) - 1, solver

        run = timed(pyamg_solve, args.repeats, args.budget, False)
        x, iterations, solver = run["out"]
        start = time.perf_counter()
        pyamg.smoothed_aggregation_solver(matrix)
        setup_s = time.perf_counter() - start
        return {
            "seconds": run["seconds"], "setup_s": setup_s, "x": x, "iterations": iterations,
            "levels": len(solver.levels), "converged": None,
        }
    if name == "jaxpde":
        tau = jnp.asarray(system.tau)
        run = timed(lambda: jax.block_until_ready(default_solve(system.op, system.flux, tau, system.f)), args.repeats, args.budget, True)
        x, steps, ok = run["out"]
        method = "tridiagonal" if system.m == 1 and system.boundary == "neumann" else "lineax CG"
        return {
            "seconds": run["seconds"], "first_s": run["first_s"], "x": x,
            "iterations": None if method == "tridiagonal" else int(steps), "method": method, "converged": bool(ok),
        }
    raise ValueError(name)


def run_cg(system: System, args) -> dict:
    """SciPy CG to rtol 1e-8 from zero, with its iteration count; stopped past the limit."""
    matrix, u = system.matrix, system.u

    def cg():
        state = {"iterations": 0, "x": None}
        start = time.perf_counter()

        def callback(xk):
            state["iterations"] += 1
            if time.perf_counter() - start > args.reference_limit:
                state["x"] = xk.copy()
                raise TimeLimit

        try:
            x, info = scipy.sparse.linalg.cg(matrix, u, rtol=RTOL, atol=0.0, maxiter=args.cg_maxiter, callback=callback)
        except TimeLimit:
            return state["x"], state["iterations"], "time limit"
        return x, state["iterations"], "converged" if info == 0 else f"maxiter {args.cg_maxiter}"

    run = timed(cg, args.repeats, args.budget, False)
    x, iterations, status = run["out"]
    return {"seconds": run["seconds"], "x": x, "iterations": iterations, "status": status, "converged": status == "converged"}


# ---------------------------------------------------------------- one case


def growth(name: str, system: System, args) -> float:
    """Exponent of the extrapolated time in n: 1, or 1 + m for conjugate gradients with a
    fixed tau (the condition number grows like n^(2m), the iterations like n^m)."""
    iterative = name == "cg" or (name == "jaxpde" and not (system.m == 1 and system.boundary == "neumann"))
    return 1.0 + system.m if args.fixed_tau and iterative else 1.0


def bench_case(system: System, args, history: dict) -> dict:
    mg = run_multigrid(system, args)
    if system.m == 1:
        mg_operator = run_multigrid(system, args, MULTIGRID_OPERATOR)
        mg_operator["speedup"] = mg["total_s"] / mg_operator["total_s"]  # over the geometric solver
    else:
        mg_operator = {"skipped": "bandwidth 2: operator-dependent interpolation is for tridiagonal systems"}
    case = {
        "operator": system.operator, "diffusivity": system.diffusivity, "m": system.m, "boundary": system.boundary,
        "n": system.n, "lambda": system.lam if system.diffusivity == "perona-malik" else None,
        "g_min": system.g_min, "tau": system.tau, "tau_norm_squared": system.stiffness,
        "multigrid": mg, "multigrid_operator": mg_operator, "references": {},
    }
    for name in REFERENCES:
        key = (name, system.operator, system.diffusivity)
        previous = history.get(key)
        predicted = None
        if previous is not None:
            n0, seconds0 = previous
            predicted = seconds0 * (system.n / n0) ** growth(name, system, args)
        if predicted is not None and predicted > args.reference_limit:
            ref = {"skipped": f"predicted {predicted:.0f} s > {args.reference_limit:g} s"}
        else:
            ref = run_reference(name, system, args)
        if "x" in ref:
            ref["relative_residual"] = system.relative_residual(ref.pop("x"))
            ref["reached_rtol"] = ref["relative_residual"] <= RTOL * (1 + 1e-6) if ref.get("converged") is None else ref["converged"]
            ref["speedup"] = ref["seconds"] / mg["total_s"]
            history[key] = (system.n, ref["seconds"])
        case["references"][name] = ref
    return case


# ---------------------------------------------------------------- targets


def verdicts(cases: list[dict], sizes: list[int]) -> list[dict]:
    rows = []
    for m in sorted({c["m"] for c in cases}):
        bound = FACTOR_BOUND[m]
        chosen = [c for c in cases if c["m"] == m]
        worst_energy = max(chosen, key=lambda c: c["multigrid"]["energy_factor"])
        defined = [c for c in chosen if c["multigrid"]["residual_factor"] is not None]
        worst_residual = max(defined, key=lambda c: c["multigrid"]["residual_factor"]) if defined else None
        failing = [c for c in chosen if c["multigrid"]["energy_factor"] > bound
                   or (c["multigrid"]["residual_factor"] or 0) > bound]
        detail = (
            f"worst energy-norm factor {worst_energy['multigrid']['energy_factor']:.3f} ({case_name(worst_energy)})"
            + ("" if worst_residual is None else
               f"; worst residual-based {worst_residual['multigrid']['residual_factor']:.3f} ({case_name(worst_residual)})")
            + f"; {len(failing)} of {len(chosen)} cases above {bound}"
        )
        by_diffusivity = []
        for d in DIFFUSIVITIES:
            values = [c["multigrid"]["energy_factor"] for c in chosen if c["diffusivity"] == d]
            if values:
                by_diffusivity.append(f"{d}: energy {min(values):.3f}-{max(values):.3f}")
        rows.append({
            "target": f"V(2,2) factor <= {bound} at every n, m = {m}",
            "verdict": "met" if not failing else "MISSED",
            "detail": detail + " (" + ", ".join(by_diffusivity) + ")",
            "value": max(worst_energy["multigrid"]["energy_factor"],
                         worst_residual["multigrid"]["residual_factor"] if worst_residual else 0.0),
        })

    chosen = [c for c in cases if "skipped" not in c.get("multigrid_operator", {"skipped": ""})]
    if chosen:
        bound = FACTOR_BOUND[1]
        worst = max(chosen, key=lambda c: c["multigrid_operator"]["energy_factor"])
        failing = [c for c in chosen if c["multigrid_operator"]["energy_factor"] > bound
                   or (c["multigrid_operator"]["residual_factor"] or 0) > bound or not c["multigrid_operator"]["converged"]]
        cycles = [c["multigrid_operator"]["cycles"] for c in chosen]
        rows.append({
            "target": f"operator-dependent V(2,2) factor <= {bound} and 1e-8 reached at every n, m = 1",
            "verdict": "met" if not failing else "MISSED",
            "detail": (
                f"worst energy-norm factor {worst['multigrid_operator']['energy_factor']:.2g} ({case_name(worst)}); "
                f"{min(cycles)}-{max(cycles)} cycles after the FMG start; {len(failing)} of {len(chosen)} cases failing"
            ),
            "value": worst["multigrid_operator"]["energy_factor"],
        })

    systems = sorted({(c["operator"], c["diffusivity"]) for c in cases})
    for label, smallest_allowed in (("smallest n", 0), (f"smallest n >= 2^{int(math.log2(OVERHEAD_FREE))}", OVERHEAD_FREE)):
        ratios, notes, failing = [], [], []
        for operator, diffusivity in systems:
            chosen = sorted((c for c in cases if (c["operator"], c["diffusivity"]) == (operator, diffusivity)), key=lambda c: c["n"])
            eligible = [c for c in chosen if c["n"] >= smallest_allowed]
            if len(eligible) < 2:
                continue
            small, large = eligible[0], eligible[-1]
            ratio = large["multigrid"]["s_per_unknown"] / small["multigrid"]["s_per_unknown"]
            ratios.append(ratio)
            unconverged = [c["n"] for c in eligible if not c["multigrid"]["converged"]]
            note = f"{operator} {diffusivity}: {ratio:.2f}"
            if unconverged:
                note += f" (1e-8 not reached at n = {', '.join(str(n) for n in unconverged)})"
            if ratio < 1 / SCALING:
                note += " (cheaper per unknown at the larger n: fixed overheads at the smaller)"
            notes.append(note)
            if not 1 / SCALING <= ratio <= SCALING or unconverged:
                failing.append(note)
        if not ratios:
            rows.append({"target": f"MG time per unknown, largest n / {label}, within {SCALING:g}x",
                         "verdict": "not evaluated", "detail": "fewer than two sizes in range", "value": None})
            continue
        n_small = min(n for n in sizes if n >= smallest_allowed)
        rows.append({
            "target": f"MG time per unknown, n = {max(sizes)} / n = {n_small} ({label}), within {SCALING:g}x",
            "verdict": "met" if not failing else "MISSED",
            "detail": "; ".join(notes),
            "value": max(ratios, key=lambda r: max(r, 1 / r)),
        })

    large = [c for c in cases if c["n"] >= LARGE]
    if not large:
        rows.append({"target": f"MG faster than spsolve and CG at n >= 2^{int(math.log2(LARGE))}",
                     "verdict": "not evaluated", "detail": f"largest n = {max(sizes)}", "value": None})
    else:
        failing, notes = [], []
        for c in large:
            for name in ("spsolve", "cg"):
                ref = c["references"][name]
                mg = c["multigrid"]
                if "skipped" in ref:
                    faster = mg["converged"] and mg["total_s"] < ref_skip_time(ref)
                    text = f"{case_name(c)} vs {name}: skipped ({ref['skipped']})"
                else:
                    faster = mg["converged"] and mg["total_s"] < ref["seconds"]
                    text = f"{case_name(c)} vs {name}: {ref['seconds'] / mg['total_s']:.2f}x"
                    if not mg["converged"]:
                        text += " (MG did not reach 1e-8)"
                notes.append(text)
                if not faster:
                    failing.append(text)
        speedups = [c["references"][name]["speedup"] for c in large for name in ("spsolve", "cg") if "speedup" in c["references"][name]]
        rows.append({
            "target": f"MG faster than spsolve and CG at n >= 2^{int(math.log2(LARGE))}",
            "verdict": "met" if not failing else "MISSED",
            "detail": (f"{len(failing)} of {len(notes)} comparisons not faster: " + "; ".join(failing)) if failing
            else f"speed-ups {min(speedups):.2f}x-{max(speedups):.2f}x" if speedups else "all references skipped",
            "value": min(speedups) if speedups else None,
        })
    return rows


def ref_skip_time(ref: dict) -> float:
    """The predicted seconds of a skipped reference (a lower bound of its time, up to the
    extrapolation), or 0 where it was skipped for another reason."""
    text = ref["skipped"]
    if text.startswith("predicted "):
        return float(text.split()[1])
    return 0.0


def case_name(c: dict) -> str:
    return f"{c['operator']} {c['diffusivity']} n={c['n']}"


# ---------------------------------------------------------------- output


def ms(value) -> str:
    return "-" if value is None else f"{value * 1e3:,.2f}"


def sci(value) -> str:
    return "-" if value is None else f"{value:.1e}"


def reference_cell(ref: dict) -> str:
    if "skipped" in ref:
        return f"skipped: {ref['skipped']}"
    text = f"{ms(ref['seconds'])}"
    if ref.get("iterations") is not None:
        text += f" ({ref['iterations']} it)"
    if not ref["reached_rtol"]:
        text += f" NOT CONVERGED ({ref.get('status', 'rtol not reached')})"
    return text + f" / {ref['speedup']:.2f}x"


def markdown(cases: list[dict], rows: list[dict], meta: dict, settings: dict) -> str:
    tau_text = (
        f"tau = S / ||K||^2 with S = {settings['stiffness']:g} at n = {settings['tau_n']} held fixed on finer grids"
        if settings["fixed_tau"] else
        f"tau = S / ||K||^2 with S = tau ||K||^2 = {settings['stiffness']:g} ({settings['stiffness'] / 2:g} explicit step limits) at every n"
    )
    lines = [
        "# Geometric multigrid for I + tau K^T G K: convergence factor and time to solution",
        "",
        (
            f"Device: {meta['device']} ({meta['processor']}, {meta['cpu_count']} cores); jax {meta['jax']}, "
            f"numpy {meta['numpy']}, scipy {meta['scipy']}, lineax {meta['lineax']}, pyamg {meta['pyamg']}; float64; "
            f"OPENBLAS_NUM_THREADS={meta['openblas_threads']}."
        ),
        (
            f"Systems: A = I + tau K^T G K, f = u, K = D_m (h = 1/n; {', '.join(settings['operators'])}), u a "
            "piecewise-smooth signal on [0, 1] (sines, jumps of 1 and 0.7, a Gaussian); G = diag(g): perona-malik "
            "g = 1/(1 + s^2/lambda^2) at s = K u, lambda = median |K u| (per row below), or constant g = 1; "
            f"{tau_text}."
        ),
        (
            "Multigrid: `Multigrid(rtol=1e-8)`: V(2,2), red-black Gauss-Seidel, Galerkin coarse operators, "
            "full-multigrid start, at most 50 cycles. Residual factor: geometric mean of the residual reduction per "
            "cycle after the FMG start; energy factor: ||E e||_A / ||e||_A after 20 power iterations of the V(2,2) "
            "error propagation (a lower bound of ||E||_A). Times: jitted, compiled first, medians of repeated runs "
            "blocking until ready; total = setup (`hierarchy`) + solve (`solve(..., hierarchy=h)`); "
            "the assembly of A (`diffusion_stencil`) is not included (column `assembly`)."
        ),
        (
            "References to relative residual 1e-8, each reported as `ms / speed-up of multigrid` (reference time / MG "
            "total): lineax tridiagonal (m = 1 neumann only), spsolve (SuperLU, CSC), SciPy CG (iterations, at most "
            f"{settings['cg_maxiter']}), pyamg smoothed aggregation + CG (setup included), and jaxpde's "
            "`solve_diffusion_system(..., rtol=1e-8)` (tridiagonal solver with assembly for m = 1 neumann, lineax CG "
            f"otherwise). A reference is skipped where its extrapolated time exceeds {settings['reference_limit']:g} s. "
            "Relative residuals ||f - A x|| / ||f|| are recomputed with the SciPy matrix (assembled independently of "
            "jaxpde; `assembly diff.` = largest entrywise difference to `diffusion_stencil`, relative)."
        ),
        "",
        "## Targets",
        "",
        "| target | verdict | detail |",
        "| --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['target']} | {r['verdict']} | {r['detail']} |")
    lines += [
        "",
        "## Multigrid",
        "",
        (
            "| system | n | lambda | tau \\|\\|K\\|\\|^2 | levels | FMG res. | cycles | residual factor | energy factor "
            "| assembly ms | setup ms | solve ms | total ms | ns / unknown | rel. residual | assembly diff. |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cases:
        g = c["multigrid"]
        cycles = f"{g['cycles']}" + ("" if g["converged"] else " (not converged)")
        factor = "- (FMG alone)" if g["residual_factor"] is None else f"{g['residual_factor']:.3f}"
        lam = "-" if c["lambda"] is None else f"{c['lambda']:.4g}"
        lines.append(
            f"| {c['operator']} {c['diffusivity']} | {c['n']} | {lam} | {c['tau_norm_squared']:.3g} | {g['levels']} "
            f"| {sci(g['fmg_relative_residual'])} | {cycles} | {factor} | {g['energy_factor']:.3f} "
            f"| {ms(g['assembly_s'])} | {ms(g['setup_s'])} | {ms(g['solve_s'])} | {ms(g['total_s'])} "
            f"| {g['s_per_unknown'] * 1e9:,.1f} | {sci(g['relative_residual'])} | {sci(g['assembly_difference'])} |"
        )
    lines += [
        "",
        "## Multigrid with operator-dependent interpolation (m = 1)",
        "",
        (
            "`Multigrid(interpolation=\"operator\", rtol=1e-8)`: the same cycle with Dendy's interpolation "
            "P[2I+1, I] = -a_{2I+1,2I} / a_{2I+1,2I+1}, P[2I+1, I+1] = -a_{2I+1,2I+2} / a_{2I+1,2I+1} on every level "
            "(with red-black Gauss-Seidel a V-cycle is cyclic reduction, exact up to rounding: the energy factor "
            "measures rounding, and the FMG start alone can reach 1e-8). Speed-up = geometric MG total / this total."
        ),
        "",
        (
            "| system | n | levels | FMG res. | cycles | residual factor | energy factor | setup ms | solve ms "
            "| total ms | ns / unknown | speed-up over geometric | rel. residual |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cases:
        g = c.get("multigrid_operator", {"skipped": "not run"})
        if "skipped" in g:
            continue
        cycles = f"{g['cycles']}" + ("" if g["converged"] else " (not converged)")
        factor = "- (FMG alone)" if g["residual_factor"] is None else f"{g['residual_factor']:.3f}"
        lines.append(
            f"| {c['operator']} {c['diffusivity']} | {c['n']} | {g['levels']} | {sci(g['fmg_relative_residual'])} "
            f"| {cycles} | {factor} | {g['energy_factor']:.2g} | {ms(g['setup_s'])} | {ms(g['solve_s'])} "
            f"| {ms(g['total_s'])} | {g['s_per_unknown'] * 1e9:,.1f} | {g['speedup']:.2f}x | {sci(g['relative_residual'])} |"
        )
    lines += [
        "",
        "## References (ms / speed-up of multigrid)",
        "",
        (
            "Speed-up of multigrid = reference time / MG total (above 1: multigrid is faster). Where multigrid did not "
            "reach 1e-8, its time is that of its 50 cycles and the speed-ups are not times to the same accuracy."
        ),
        "",
        "| system | n | MG total ms | MG (operator) total ms | " + " | ".join(LABELS[r] for r in REFERENCES) + " |",
        "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in REFERENCES) + " |",
    ]
    for c in cases:
        cells = [reference_cell(c["references"][r]) for r in REFERENCES]
        g = c["multigrid"]
        total = ms(g["total_s"]) + ("" if g["converged"] else f" (NOT converged: {g['cycles']} cycles, {sci(g['relative_residual'])})")
        operator = c.get("multigrid_operator", {"skipped": "not run"})
        operator_total = "-" if "skipped" in operator else ms(operator["total_s"]) + (
            "" if operator["converged"] else f" (NOT converged: {operator['cycles']} cycles)")
        lines.append(f"| {c['operator']} {c['diffusivity']} | {c['n']} | {total} | {operator_total} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Relative residuals ||f - A x|| / ||f|| (SciPy matrix)",
        "",
        "| system | n | multigrid | multigrid (operator) | " + " | ".join(LABELS[r] for r in REFERENCES) + " |",
        "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in REFERENCES) + " |",
    ]
    for c in cases:
        cells = [sci(c["references"][r].get("relative_residual")) for r in REFERENCES]
        operator = sci(c.get("multigrid_operator", {}).get("relative_residual"))
        lines.append(f"| {c['operator']} {c['diffusivity']} | {c['n']} | {sci(c['multigrid']['relative_residual'])} | {operator} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Raw results: `{settings['stem']}.json`.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 2^10, 2^12, 2^14 (a smoke run)")
    parser.add_argument("--max-power", type=int, default=None, help="largest n = 2^P (default 22; 14 with --quick)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, metavar="E", help="exponents: n = 2^E for each E")
    parser.add_argument("--operators", nargs="+", choices=tuple(OPERATORS), default=list(OPERATORS))
    parser.add_argument("--diffusivities", nargs="+", choices=DIFFUSIVITIES, default=list(DIFFUSIVITIES))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement, at most")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per measurement: more timed runs only while they fit")
    parser.add_argument("--reference-limit", type=float, default=60.0, help="skip a reference predicted to take longer (s)")
    parser.add_argument("--cg-maxiter", type=int, default=20_000, help="SciPy CG iteration cap")
    parser.add_argument("--stiffness", type=float, default=4000.0, help="tau ||K||^2 (at every n, or at the smallest with --fixed-tau)")
    parser.add_argument("--fixed-tau", action="store_true", help="keep the tau of the smallest n on finer grids")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS, help="directory of the results")
    args = parser.parse_args()
    if args.sizes:
        exponents = sorted(set(args.sizes))
    else:
        top = args.max_power if args.max_power is not None else (14 if args.quick else 22)
        exponents = sorted(set(range(10, top + 1, 2)) | {top})
    sizes = [2**e for e in exponents]
    meta = {
        **machine(),
        "scipy": scipy.__version__,
        "lineax": getattr(lx, "__version__", "unknown"),
        "pyamg": pyamg.__version__ if pyamg is not None else "not installed",
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    }
    stem = f"multigrid-{meta['device']}" + ("-quick" if args.quick else "")
    settings = {
        "sizes": sizes, "operators": args.operators, "diffusivities": args.diffusivities, "repeats": args.repeats,
        "budget": args.budget, "reference_limit": args.reference_limit, "cg_maxiter": args.cg_maxiter,
        "stiffness": args.stiffness, "fixed_tau": args.fixed_tau, "tau_n": sizes[0] if args.fixed_tau else None,
        "rtol": RTOL, "power_iterations": POWER_ITERATIONS, "quick": args.quick, "stem": stem,
        "multigrid": {"smoother": MULTIGRID.smoother, "pre": MULTIGRID.pre_smoothing, "post": MULTIGRID.post_smoothing,
                      "cycle": MULTIGRID.cycle, "coarsest": MULTIGRID.coarsest, "max_cycles": MULTIGRID.max_cycles,
                      "full_multigrid": MULTIGRID.full_multigrid},
        "multigrid_operator": {"interpolation": MULTIGRID_OPERATOR.interpolation, "applies_to": "m = 1 (tridiagonal)"},
    }
    print(f"n = {sizes}; pyamg: {meta['pyamg']}; device {meta['device']}", flush=True)
    start = time.perf_counter()
    cases, history = [], {}
    for operator in args.operators:
        for n in sizes:
            for diffusivity in args.diffusivities:
                system = System(operator, diffusivity, n, args.stiffness, sizes[0] if args.fixed_tau else n)
                case = bench_case(system, args, history)
                cases.append(case)
                g = case["multigrid"]
                refs = ", ".join(
                    f"{r} skipped" if "skipped" in v else f"{r} {v['seconds'] * 1e3:.1f} ms" for r, v in case["references"].items()
                )
                factor = "-" if g["residual_factor"] is None else f"{g['residual_factor']:.3f}"
                operator_mg = case["multigrid_operator"]
                if "skipped" not in operator_mg:
                    print(
                        f"{'(operator interpolation)':>25} n={n:8d}: energy {operator_mg['energy_factor']:.2g}, "
                        f"{operator_mg['cycles']} cycles{'' if operator_mg['converged'] else ' (NOT converged)'}, "
                        f"MG {operator_mg['total_s'] * 1e3:.1f} ms (setup {operator_mg['setup_s'] * 1e3:.1f}), "
                        f"res {operator_mg['relative_residual']:.1e}",
                        flush=True,
                    )
                print(
                    f"{system.name:>25} n={n:8d}: factor {factor} / energy {g['energy_factor']:.3f}, "
                    f"{g['cycles']} cycles{'' if g['converged'] else ' (NOT converged)'}, MG {g['total_s'] * 1e3:.1f} ms "
                    f"(setup {g['setup_s'] * 1e3:.1f}; first calls incl. compile {g['setup_first_s'] + g['solve_first_s']:.0f} s), "
                    f"res {g['relative_residual']:.1e}; {refs} "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
    rows = verdicts(cases, sizes)
    meta["seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "settings": settings, "verdicts": rows, "cases": cases}
    (args.out / f"{stem}.json").write_text(json.dumps(finite_json(payload), indent=2))
    (args.out / f"{stem}.md").write_text(markdown(cases, rows, meta, settings))
    for r in rows:
        print(f"{r['verdict']:>13} {r['target']}: {r['detail']}")
    print(f"wrote {args.out / stem}.md ({meta['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
