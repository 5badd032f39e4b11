"""Two-sided spectral-norm bounds: jaxpde vs SciPy's sparse eigensolvers, at a stated tolerance.

For each operator (a random neumann stencil with k = 5 taps at n = 2^8 ... 2^14, and
2 -> 3 channel stencils, periodic and dirichlet) the script times, in the same run and
in float64,

- jaxpde: `verify.spectral_norm(op)` (method "auto": symbol / toeplitz upper bound,
  power iteration from a Fourier start for the certified lower bound). The function is
  eager with jitted parts, so its first call (tracing, XLA compilation and the run, after
  `jax.clear_caches()`, without a persistent cache) is reported separately from the warm
  calls; the XLA compile seconds inside the first call are also recorded. Every call
  blocks until the whole result is ready.
- SciPy estimates (not bounds) on the same operator as a CSR matrix, all with the
  accuracy target `TOL` = 1e-6 on sigma and the start vector jaxpde's power iteration
  uses (built here in NumPy: the real Fourier mode at the symbol's maximising
  frequency times the top right singular vector of the symbol there, sine-windowed for
  neumann / dirichlet):
  `svds(K, k=1, tol=TOL, solver="arpack")` (SciPy hands tol^2 to ARPACK on the Gram
  matrix of the smaller side), `svds(..., solver="lobpcg", maxiter=200)`, and
  `eigsh(K^T K, k=1, tol=TOL)` on a `LinearOperator` (ARPACK's residual test
  ||K^T K x - theta x|| <= TOL theta, so sigma to about TOL / 2).
- NumPy: power iteration on K^T K with the CSR matrix, the same start and jaxpde's
  stopping rule (at most 200 iterates, stop after 8 that each raise the best
  ||K x|| / ||x|| by less than 1e-10 relative).
- The dense `numpy.linalg.svd` (where the smaller side is at most 2048): the reference sigma,
  timed once.

Timing: per case, the first call of every variant, then `--repeats` rounds in which each
variant runs once in turn (interleaved); reported are the first call, the median of the
rounds and their spread (min and max relative to the median). A variant whose first call
takes over `SLOW_CALL` seconds is repeated once; one whose time predicted from the
previous size of the same operator exceeds `MAX_CALL` seconds is skipped (time ~ n^p, p the
largest growth exponent the variant has shown between successive sizes so far, at least 2).
Accuracy: each estimate's relative error against the dense SVD, or (larger n) whether it
lies in jaxpde's certified [lower, upper]. NumPy / SciPy run with `OPENBLAS_NUM_THREADS=1`
unless the environment sets it (on 2 shared cores one thread was faster and steadier for
every baseline); XLA keeps its default threads.

Results go to `benchmarks/results/spectral-<device>.{md,json}` (`-quick` appended with
`--quick`).

Usage: `python benchmarks/spectral.py [--quick] [--repeats R] [--out DIR]`.
"""

import argparse
import gc
import json
import math
import os
import pathlib
import statistics
import time
import warnings

# One OpenBLAS thread for NumPy / SciPy, set before NumPy loads it (override from the environment):
# on 2 shared cores its default spinning worker threads made every baseline slower and erratic.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_enable_compilation_cache", False)

import numpy as np
import scipy
import scipy.sparse
import scipy.sparse.linalg
from common import finite_json, machine

from jaxpde import Stencil, verify
from jaxpde.reference import stencil_sparse_matrix
from jaxpde.verify.spectral import toeplitz_grid

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
TOL = 1e-6  # accuracy target on sigma of every SciPy baseline
DENSE_MAX = 2048  # dense SVD reference where the smaller side of K is at most this
SLOW_CALL = 10.0  # s: a variant whose first call is slower gets one warm repeat only
MAX_CALL = 20.0  # s: a baseline predicted (time ~ n^p from the previous size) to be slower is skipped
MIN_EXPONENT = 2.0  # p of that prediction at least; larger where a variant has grown faster
GROWTH_FLOOR = 0.5  # s: growth exponents are measured only between timings above this (noise)
LOBPCG_MAXITER = 200  # SciPy's default (20) stops far from TOL; 200 = jaxpde's iteration cap
# jaxpde's power-iteration rule (`spectral_norm(iterations=200)`, `verify._power.PATIENCE / STALL`).
POWER_ITERATIONS, POWER_PATIENCE, POWER_STALL = 200, 8, 1e-10
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
JAXPDE = "jaxpde spectral_norm"
DENSE = "dense SVD (reference)"
VARIANTS = (JAXPDE, "svds arpack", "svds lobpcg", "eigsh K^T K", "NumPy power")
SCIPY_VARIANTS = ("svds arpack", "svds lobpcg", "eigsh K^T K")

_compile_seconds = [0.0]


def _on_event(event: str, seconds: float, **_) -> None:
    if event == BACKEND_COMPILE_EVENT:
        _compile_seconds[0] += seconds


jax.monitoring.register_event_duration_secs_listener(_on_event)


def fourier_start(kernel: np.ndarray, n: int, boundary: str) -> tuple[np.ndarray, bool]:
    """jaxpde's power-iteration start, in NumPy: Re (or Im) of v e^{i theta* t}, theta* the
    maximiser of ||A(theta)|| over the n DFT frequencies (periodic) or jaxpde's Toeplitz grid,
    A(theta) = sum_j a_j e^{i j theta}, v its top right singular vector (phase: largest entry
    real and positive, as jaxpde's Gram-based vector); sine-windowed for
    neumann / dirichlet. Unit norm, flattened like the CSR matrix's columns; and whether Re and
    Im tie (equal norms up to rounding: the pick may then differ from jaxpde's)."""
    kernel = kernel[None, None] if kernel.ndim == 1 else kernel
    period = n if boundary == "periodic" else toeplitz_grid(kernel.shape[-1])
    theta = 2 * np.pi * np.arange(period // 2 + 1) / period
    symbol = np.einsum("qj,ocj->qoc", np.exp(1j * np.outer(theta, np.arange(kernel.shape[-1]))), kernel)
    _, s, vh = np.linalg.svd(symbol)
    q = int(np.argmax(s[:, 0]))
    v = vh[q, 0].conj()
    v = v * np.exp(-1j * np.angle(v[np.argmax(np.abs(v))]))  # jaxpde's phase: largest entry real, > 0
    angle = 2 * np.pi * ((q * np.arange(n)) % period) / period  # jaxpde's phase table
    mode = v[:, None] * (np.cos(angle) + 1j * np.sin(angle))[None, :]
    real, imag = np.linalg.norm(mode.real), np.linalg.norm(mode.imag)
    x = mode.real if real >= imag else mode.imag
    tie = abs(real - imag) <= 1e-12 * max(real, imag)  # e.g. exact when 2 n q / period is an integer
    if boundary != "periodic":
        x = x * np.sin(np.pi * (np.arange(n) + 1) / (n + 1))
    x = x.ravel()
    return x / np.linalg.norm(x), tie


def numpy_power(matrix: scipy.sparse.csr_matrix, x: np.ndarray) -> tuple[float, bool]:
    """Best ||K x|| / ||x|| over power iterates on K^T K from `x`, with jaxpde's stopping rule;
    and whether the stall rule (rather than the iteration cap) stopped it."""
    transpose = matrix.T.tocsr()
    best, quiet = 0.0, 0
    for _ in range(POWER_ITERATIONS):
        y = matrix @ x
        value = np.linalg.norm(y) / np.linalg.norm(x)
        quiet = 0 if value > best * (1 + POWER_STALL) else quiet + 1
        best = max(best, value)
        if quiet >= POWER_PATIENCE:
            return best, True
        z = transpose @ y
        x = z / np.linalg.norm(z)
    return best, False


def baselines(matrix: scipy.sparse.csr_matrix, x: np.ndarray) -> dict:
    """The SciPy / NumPy variants: name -> () -> (sigma estimate, converged)."""
    rows, cols = matrix.shape
    # svds works on the Gram matrix of the smaller side: its start is K x there when K is wide.
    v0 = x if rows >= cols else (matrix @ x) / np.linalg.norm(matrix @ x)
    transpose = matrix.T.tocsr()
    gram = scipy.sparse.linalg.LinearOperator((cols, cols), matvec=lambda z: transpose @ (matrix @ z), dtype=matrix.dtype)

    def svds(solver: str, **options):
        def run():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                sigma = scipy.sparse.linalg.svds(
                    matrix, k=1, tol=TOL, v0=v0, solver=solver, return_singular_vectors=False, **options
                )[0]
            return float(sigma), not any("not reaching the requested" in str(w.message) for w in caught)

        return run

    def eigsh():
        value = scipy.sparse.linalg.eigsh(gram, k=1, which="LA", tol=TOL, v0=x, return_eigenvectors=False)[0]
        return math.sqrt(value), True  # ARPACK raises ArpackNoConvergence otherwise

    return {
        "svds arpack": svds("arpack"),
        "svds lobpcg": svds("lobpcg", maxiter=LOBPCG_MAXITER),
        "eigsh K^T K": eigsh,
        "NumPy power": lambda: numpy_power(matrix, x),
    }


def timed(fn):
    """(seconds, value) of one call, garbage collection off (as `timeit`)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - start
    finally:
        if collecting:
            gc.enable()
    return seconds, value


def family(kernel: np.ndarray, boundary: str) -> str:
    return f"{'1ch' if kernel.ndim == 1 else f'{kernel.shape[1]}->{kernel.shape[0]}ch'} k={kernel.shape[-1]} {boundary}"


def bench_case(kernel: np.ndarray, n: int, boundary: str, repeats: int, history: dict, growth: dict) -> dict:
    """One operator: first calls, then interleaved warm rounds of every variant that runs.

    For the skip rule, `history` maps (family, variant) to the (n, seconds) of its last run
    (seconds None: skipped) and `growth` maps a variant to the largest exponent p of
    seconds ~ n^p seen between successive sizes; both updated here."""
    operator = family(kernel, boundary)
    op = Stencil(kernel, n, boundary=boundary)
    matrix = stencil_sparse_matrix(kernel, n, boundary)
    start_s, (x, tie) = timed(lambda: fourier_start(kernel, n, boundary))

    jax.clear_caches()
    _compile_seconds[0] = 0.0
    first, bounds = timed(lambda: jax.block_until_ready(verify.spectral_norm(op)))
    lower, upper = float(bounds.lower), float(bounds.upper)
    rows = {JAXPDE: {"first_s": first, "compile_s": _compile_seconds[0], "sigma": lower, "converged": True}}
    calls = {JAXPDE: lambda: (jax.block_until_ready(verify.spectral_norm(op)), True)}
    for name, fn in baselines(matrix, x).items():
        last = history.get((operator, name))
        exponent = max(MIN_EXPONENT, growth.get(name, MIN_EXPONENT))
        if last is not None and last[1] is None:
            rows[name] = {"skipped": f"skipped at a smaller n ({last[0]})"}
            history[(operator, name)] = (n, None)
            continue
        predicted = None if last is None else last[1] * (n / last[0]) ** exponent
        if predicted is not None and predicted > MAX_CALL:
            rows[name] = {
                "skipped": f"predicted {predicted:.0f} s > {MAX_CALL:.0f} s (n^{exponent:.1f} from {last[1]:.1f} s at n = {last[0]})"
            }
            history[(operator, name)] = (n, None)
            continue
        seconds, (sigma, converged) = timed(fn)
        rows[name] = {"first_s": seconds, "sigma": sigma, "converged": converged}
        calls[name] = fn

    counts = {name: (1 if name != JAXPDE and rows[name]["first_s"] > SLOW_CALL else repeats) for name in calls}
    samples = {name: [] for name in calls}
    for round_ in range(repeats):
        for name, fn in calls.items():
            if round_ < counts[name]:
                samples[name].append(timed(fn)[0])
    for name, times in samples.items():
        median = statistics.median(times)
        rows[name].update(warm_s=median, repeats=len(times), spread=(min(times) / median - 1, max(times) / median - 1))
        if name != JAXPDE:
            last = history.get((operator, name))
            if last is not None and last[1] is not None and min(last[1], median) > GROWTH_FLOOR:
                growth[name] = max(growth.get(name, MIN_EXPONENT), math.log(median / last[1]) / math.log(n / last[0]))
            history[(operator, name)] = (n, median)

    dense_sigma = None
    if min(matrix.shape) <= DENSE_MAX:
        dense = matrix.toarray()
        seconds, values = timed(lambda: np.linalg.svd(dense, compute_uv=False))
        dense_sigma = float(values[0])
        rows[DENSE] = {"first_s": seconds, "sigma": dense_sigma, "converged": True}
    for name, row in rows.items():
        if "sigma" not in row:
            continue
        row["relative_error"] = None if dense_sigma is None else abs(row["sigma"] - dense_sigma) / dense_sigma
        row["inside_interval"] = lower <= row["sigma"] <= upper
    return {
        "operator": operator,
        "n": n,
        "shape": list(matrix.shape),
        "method": bounds.method,
        "lower": lower,
        "upper": upper,
        "relative_gap": (upper - lower) / upper,
        "start_vector_s": start_s,
        "start_tie": tie,
        "variants": rows,
    }


def meets_target(row: dict) -> bool:
    """A baseline that converged and reached TOL (against the dense SVD) or lies in jaxpde's interval."""
    if "warm_s" not in row or not row["converged"]:
        return False
    return row["relative_error"] <= TOL if row["relative_error"] is not None else row["inside_interval"]


def _ms(value) -> str:
    return "-" if value is None else f"{value * 1e3:,.2f}"


def _spread(row: dict) -> str:
    if "spread" not in row or row["repeats"] < 2:
        return "-"
    low, high = row["spread"]
    return f"{low * 100:+.0f}% / {high * 100:+.0f}%"


def _accuracy(row: dict) -> str:
    if row.get("relative_error") is not None:
        return f"{row['relative_error']:.1e}"
    return "-"


def markdown(results: list[dict], meta: dict) -> str:
    tied = [f"{r['operator']} n = {r['n']}" for r in results if r["start_tie"]]
    untied = [f"{r['operator']} n = {r['n']}" for r in results if not r["start_tie"]]
    ties = (", ".join(tied) or "no case here") if len(tied) <= len(untied) else f"every case here but {', '.join(untied) or 'none'}"
    lines = [
        "# Spectral-norm bounds: jaxpde vs SciPy sparse eigensolvers at a stated tolerance",
        "",
        (
            f"{meta['device']} ({meta['processor']}, {meta['cpu_count']} cores shared with other work), float64; "
            f"jax {meta['jax']}, numpy {meta['numpy']}, scipy {meta['scipy']}. "
            "jaxpde `verify.spectral_norm(op)` returns certified bounds l <= sigma <= u; the baselines return "
            f"estimates on the CSR matrix, all with accuracy target {TOL:g} on sigma and jaxpde's own start vector "
            "(the real Fourier mode at the symbol's maximising frequency times the symbol's top right singular "
            f"vector, sine-windowed for neumann / dirichlet; built in NumPy in at most {meta['start_vector_ms_max']:.1f} "
            f"ms, not counted): `svds(K, k=1, tol={TOL:g}, v0)` with `solver='arpack'` (SciPy hands tol^2 to "
            f"ARPACK) and `solver='lobpcg'` (`maxiter={LOBPCG_MAXITER}`), `eigsh(K^T K, k=1, tol={TOL:g}, v0)` on a "
            "`LinearOperator`, and a NumPy power iteration on K^T K with jaxpde's stopping rule "
            f"({POWER_ITERATIONS} iterates at most; stop after {POWER_PATIENCE} that each gain < {POWER_STALL:g}). "
            f"Reference: dense `numpy.linalg.svd` where min(K.shape) <= {DENSE_MAX} (one call). "
            f"NumPy / SciPy use OPENBLAS_NUM_THREADS={meta['openblas_threads']} (one thread was faster and steadier "
            "for every baseline than the default on these shared cores), XLA its default threads. "
            f"Timing: per case one first call of each variant (jaxpde's after `jax.clear_caches()`: tracing, "
            f"compilation and run, XLA compile seconds in brackets), then {meta['repeats']} interleaved rounds, each "
            "variant once per round, every jaxpde call blocked until ready; *warm* = median of the rounds, *spread* = "
            f"their min / max relative to it. A first call over {SLOW_CALL:.0f} s gets one round; a baseline "
            f"predicted (from its time at the previous n) to exceed {MAX_CALL:.0f} s is skipped, to keep the run "
            f"short (this one: {meta['wall_s'] / 60:.1f} min)."
        ),
        "",
        (
            "Columns: *rel. err.* = |sigma - sigma_dense| / sigma_dense (for jaxpde, of its lower bound l); "
            "*in [l, u]* = estimate inside jaxpde's certified interval; *conv.* = 'no' where lobpcg stopped short "
            "of its tolerance (svds hands it tol^2 as an absolute residual) or the power iteration hit its cap; "
            "*x jaxpde* = warm median over jaxpde's warm median. Where Re and Im of the Fourier mode have equal "
            f"norms ({ties}) rounding picks one, possibly not jaxpde's pick, so the baselines' start may differ "
            "from jaxpde's there."
        ),
        "",
        "| operator | n | variant | first call ms | warm ms | spread | rounds | rel. err. | in [l, u] | conv. | x jaxpde | note |",
        "| --- | ---: | --- | ---: | ---: | --- | ---: | ---: | --- | --- | ---: | --- |",
    ]
    for r in results:
        jaxpde_warm = r["variants"][JAXPDE]["warm_s"]
        for name, row in r["variants"].items():
            label = f"{r['operator']} | {r['n']} | {name}"
            if "skipped" in row:
                lines.append(f"| {label} | - | - | - | - | - | - | - | - | {row['skipped']} |")
                continue
            first = _ms(row["first_s"])
            note = ""
            if name == JAXPDE:
                first += f" ({_ms(row['compile_s'])})"
                note = f"{r['method']}; gap (u - l) / u = {r['relative_gap']:.1e}"
            elif name == DENSE:
                note = "one call"
            elif row.get("repeats") == 1 and row["first_s"] > SLOW_CALL:
                note = f"first call > {SLOW_CALL:.0f} s: one round"
            ratio = "-" if name in (JAXPDE, DENSE) else f"{row['warm_s'] / jaxpde_warm:,.1f}x"
            lines.append(
                f"| {label} | {first} | {_ms(row.get('warm_s'))} | {_spread(row)} | {row.get('repeats', 1)} "
                f"| {_accuracy(row)} | {'yes' if row['inside_interval'] else 'NO'} | {'yes' if row['converged'] else 'no'} "
                f"| {ratio} | {note} |"
            )
    lines += [
        "",
        (
            "Summary: warm median of the best SciPy baseline (the fastest that converged and met the target: "
            f"rel. err. <= {TOL:g}, or inside [l, u] without a dense reference) over jaxpde's warm median, > 1 = "
            "jaxpde faster; then the same ratio for the NumPy power iteration (an estimate with jaxpde's start and "
            "stopping rule, no upper bound)."
        ),
        "",
    ]
    for label, low, high in (("n <= 1024", 0, 1024), ("n = 2048 ... 4096", 2048, 4096), ("n >= 8192", 8192, math.inf)):
        cases = [r for r in results if low <= r["n"] <= high]
        if not cases:
            continue
        parts = []
        for r in cases:
            jaxpde_warm = r["variants"][JAXPDE]["warm_s"]
            eligible = [(r["variants"][v]["warm_s"], v) for v in SCIPY_VARIANTS if meets_target(r["variants"][v])]
            if eligible:
                seconds, best = min(eligible)
                best = f"{seconds / jaxpde_warm:,.1f}x ({best})"
            else:
                best = "no SciPy baseline ran to the target"
            power = r["variants"]["NumPy power"]
            power = f"{power['warm_s'] / jaxpde_warm:,.1f}x" if "warm_s" in power else "skipped"
            parts.append(f"{r['operator']} n={r['n']}: {best}, NumPy power {power}")
        firsts = [r["variants"][JAXPDE]["first_s"] for r in cases]
        lines.append(
            f"- {label}: best SciPy warm / jaxpde warm = " + "; ".join(parts)
            + f". jaxpde's first call: {min(firsts):.2f} ... {max(firsts):.2f} s."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved warm rounds per case")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS, help="directory of the results table")
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal(5)
    channels = rng.standard_normal((3, 2, 5))
    if args.quick:
        cases = [(kernel, 2**e, "neumann") for e in (8, 9, 10)]
        cases += [(channels, 256, "periodic"), (channels, 256, "dirichlet")]
    else:
        cases = [(kernel, 2**e, "neumann") for e in range(8, 15)]
        cases += [(channels, n, boundary) for boundary in ("periodic", "dirichlet") for n in (1024, 4096)]
    began = time.perf_counter()
    results, history, growth = [], {}, {}
    for kernel_, n, boundary in cases:
        result = bench_case(kernel_, n, boundary, args.repeats, history, growth)
        results.append(result)
        summary = ", ".join(
            f"{name} {row['warm_s'] * 1e3:.2f} ms" if "warm_s" in row else f"{name} {'skipped' if 'skipped' in row else 'once'}"
            for name, row in result["variants"].items()
        )
        print(f"{result['operator']:>22} n={n:6d}: {summary}", flush=True)
    meta = {
        **machine(),
        "scipy": scipy.__version__,
        "dtype": "float64",
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "repeats": args.repeats,
        "quick": args.quick,
        "tol": TOL,
        "start_vector_ms_max": max(r["start_vector_s"] for r in results) * 1e3,
        "timed": "first call (cold, after jax.clear_caches()) and median of interleaved warm rounds",
        "wall_s": time.perf_counter() - began,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"spectral-{meta['device']}" + ("-quick" if args.quick else "")
    (args.out / f"{stem}.json").write_text(json.dumps(finite_json({"meta": meta, "results": results}), indent=2))
    (args.out / f"{stem}.md").write_text(markdown(results, meta))
    print(f"wrote {args.out / stem}.md")


if __name__ == "__main__":
    main()
