"""Black-box multigrid for the image system: convergence factors, cost per unknown, and time to
solution against SciPy and pyamg.

Systems, float64, on n x n images:

    A x = f,   A = I + tau grad^T G grad,   f = u (the noisy image),

grad = `jaxpde.Gradient((n, n))` (neumann), tau = S / 8 (S = tau ||grad||^2 <= 8 tau; S = 1e4 unless
stated), u a photograph of `skimage.data` (camera, moon, coins, astronaut in grey) resized to n x n,
scaled to [0, 1], plus Gaussian noise of standard deviation 0.1 (seeded), and G = diag(g) with

- `constant`: g = 1;
- `pm`: Perona-Malik g = 1 / (1 + |grad u_s|^2 / lambda^2) at the pixels, u_s the noisy image
  smoothed by a Gaussian of standard deviation 2 pixels (Catte et al.), |grad u_s| by central
  differences, averaged onto the edges (the isotropic discretisation of the semi-implicit / AOS
  literature); lambda = the median of |grad u_s| (the range of g is reported);
- `pm-edges`: the library's frozen flux, `Frozen(PeronaMalik(lambda), grad u_s)`: g on each edge
  from that edge's own difference (anisotropic along the edges of u_s).

A is assembled by `jaxpde.schemes.diffusion_stencil_2d` (a 5-point `StencilField`); the
references use the same matrix assembled in SciPy from 1-D differences (Kronecker products), and
every answer x is checked with it: ||f - A x|| / ||f||.

Measured:

1. Convergence factors of the default `Multigrid2D()` (V(2,2), red-black / four-colour
   Gauss-Seidel, black-box interpolation, Galerkin): the energy-norm factor ||E e||_A / ||e||_A after
   20 power iterations of the error propagation from a random start (`energy_power_iteration_2d`;
   a lower bound of ||E||_A, equal to it once converged), for S = 1e2 and 1e4.
2. Cost per unknown, n = 128 ... 2048: setup (`Multigrid2D.hierarchy`) and solve to relative
   residual 1e-8 (full-multigrid start and V-cycles), each jitted, compiled first, medians of
   repeats blocking until ready.
3. Time to relative residual 1e-8 at the largest sizes, all solvers in one run, interleaved (each
   repeat runs every solver once): jaxpde (setup + solve); `scipy.sparse.linalg.spsolve` (SuperLU,
   CSC); SciPy CG (rtol 1e-8); pyamg smoothed aggregation and Ruge-Stueben, each as a solver
   (`solve(f, tol=1e-8)`) and as a preconditioner of CG (`accel="cg"`), setup included. A
   reference whose first run exceeds `--reference-limit` seconds is not repeated; spsolve is run
   only up to `--spsolve-max` (memory and time of the factorisation on this machine).

OpenBLAS runs single-threaded unless OPENBLAS_NUM_THREADS is set.

Results go to `benchmarks/results/multigrid2d-<device>.{md,json}`.

Usage: `python benchmarks/multigrid2d.py [--quick] [--repeats R] [--reference-limit S]
[--spsolve-max N] [--out DIR]`.
"""

import argparse
import functools
import json
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import finite_json, machine

from jaxpde import Gradient
from jaxpde.fluxes import Frozen, PeronaMalik, frozen_diffusivity
from jaxpde.schemes import (
    Multigrid2D,
    diffusion_stencil_2d,
    energy_power_iteration_2d,
    error_propagation_2d,
)

jax.config.update("jax_enable_x64", True)

PHOTOGRAPHS = ("camera", "moon", "coins", "astronaut")
RTOL = 1e-8
POWER_ITERATIONS = 20
POINT = Multigrid2D(rtol=RTOL, throw=False)
LINE = Multigrid2D(rtol=RTOL, throw=False, smoother="line")


# ---------------------------------------------------------------- systems


def photograph(name: str, n: int, seed: int = 0) -> np.ndarray:
    import skimage.color
    import skimage.data
    import skimage.transform

    image = getattr(skimage.data, name)()
    if image.ndim == 3:
        image = skimage.color.rgb2gray(image[..., :3])
    image = image.astype(np.float64)
    image = (image - image.min()) / (image.max() - image.min())
    image = skimage.transform.resize(image, (n, n), anti_aliasing=True)
    return image + 0.1 * np.random.default_rng(seed).standard_normal((n, n))


def diffusivity(u: np.ndarray, kind: str) -> tuple[np.ndarray, float]:
    """The edge diffusivities `(2, n, n)` (gradient layout) and lambda."""
    import skimage.filters

    n = u.shape[0]
    if kind == "constant":
        return np.ones((2, n, n)), float("nan")
    smoothed = skimage.filters.gaussian(u, 2.0)
    gy, gx = np.gradient(smoothed)
    lam = float(np.median(np.hypot(gy, gx)))
    if kind == "pm-edges":
        op = Gradient((n, n))
        return np.asarray(
            Frozen(PeronaMalik(lam), op(jnp.asarray(smoothed))).values
        ), lam
    pixel = 1 / (1 + (gy**2 + gx**2) / lam**2)
    g = np.zeros((2, n, n))
    g[0, :-1] = (pixel[:-1] + pixel[1:]) / 2
    g[1, :, :-1] = (pixel[:, :-1] + pixel[:, 1:]) / 2
    return g, lam


def scipy_matrix(g: np.ndarray, tau: float) -> sp.csr_matrix:
    _, h, w = g.shape

    def difference(m):
        return sp.diags([-np.ones(m - 1), np.ones(m - 1)], [0, 1], shape=(m - 1, m))

    dy = sp.kron(difference(h), sp.identity(w))
    dx = sp.kron(sp.identity(h), difference(w))
    lap = (
        dy.T @ sp.diags(g[0, :-1].ravel()) @ dy
        + dx.T @ sp.diags(g[1, :, :-1].ravel()) @ dx
    )
    return (sp.identity(h * w) + tau * lap).tocsr()


@jax.jit
def assemble(g, tau):
    return diffusion_stencil_2d(Gradient(g.shape[1:]), frozen_diffusivity(g), tau)


@functools.partial(jax.jit, static_argnums=0)
def setup(config, A):
    return config.hierarchy(A)


@functools.partial(jax.jit, static_argnums=0)
def solve(config, A, f, hierarchy):
    return config.solve(A, f, hierarchy=hierarchy)


@functools.partial(jax.jit, static_argnums=0)
def factor(smoother, g, tau, e):
    A = diffusion_stencil_2d(Gradient(g.shape[1:]), frozen_diffusivity(g), tau)
    hierarchy = Multigrid2D(smoother=smoother).hierarchy(A)
    return energy_power_iteration_2d(
        lambda e: error_propagation_2d(hierarchy, e), A, e, POWER_ITERATIONS
    )[-1]


def median_time(fn, repeats: int) -> tuple[float, list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, out


# ---------------------------------------------------------------- 1. factors


def measure_factors(plan) -> list[dict]:
    """`plan`: (n, photographs, kinds, stiffnesses) rows; both smoothers on each system."""
    rows = []
    for n, photographs, kinds, stiffnesses in plan:
        e = jnp.asarray(np.random.default_rng(1).standard_normal((n, n)))
        for name in photographs:
            u = photograph(name, n)
            for kind in kinds:
                if kind == "constant" and name != photographs[0]:
                    continue
                g, lam = diffusivity(u, kind)
                positive = g[0, :-1][g[0, :-1] > 0]
                for stiffness in stiffnesses:
                    row = {
                        "n": n,
                        "image": name if kind != "constant" else "-",
                        "g": kind,
                        "S": stiffness,
                        "lambda": lam,
                        "g_min": float(positive.min()),
                        "g_max": float(positive.max()),
                    }
                    for smoother in ("red-black", "line"):
                        row[smoother] = float(
                            factor(
                                smoother, jnp.asarray(g), jnp.asarray(stiffness / 8), e
                            )
                        )
                    rows.append(row)
                    print(f"factor {row}", flush=True)
    return rows


# ---------------------------------------------------------------- 2. cost per unknown


def multigrid_run(
    config: Multigrid2D, g: np.ndarray, tau: float, f: np.ndarray, repeats: int
) -> dict:
    gj, tj, fj = jnp.asarray(g), jnp.asarray(tau), jnp.asarray(f)
    A = jax.block_until_ready(assemble(gj, tj))
    compile_start = time.perf_counter()
    hierarchy = jax.block_until_ready(setup(config, A))
    solution = jax.block_until_ready(solve(config, A, fj, hierarchy))
    compile_s = time.perf_counter() - compile_start
    setup_s, setup_times, hierarchy = median_time(
        lambda: jax.block_until_ready(setup(config, A)), repeats
    )
    solve_s, solve_times, solution = median_time(
        lambda: jax.block_until_ready(solve(config, A, fj, hierarchy)), repeats
    )
    return {
        "A": A,
        "x": np.asarray(solution.value),
        "cycles": int(solution.iterations),
        "levels": len(hierarchy.operators),
        "setup_s": setup_s,
        "solve_s": solve_s,
        "total_s": setup_s + solve_s,
        "setup_times": setup_times,
        "solve_times": solve_times,
        "first_run_s": compile_s,
    }


def relative_residual(S: sp.csr_matrix, x: np.ndarray, f: np.ndarray) -> float:
    return float(np.linalg.norm(f.ravel() - S @ x.ravel()) / np.linalg.norm(f))


def measure_cost(sizes, repeats: int) -> list[dict]:
    rows = []
    for n in sizes:
        u = photograph("camera", n)
        for kind, config in (("constant", POINT), ("pm", POINT), ("pm-edges", LINE)):
            g, _ = diffusivity(u, kind)
            run = multigrid_run(config, g, 1e4 / 8, u, repeats)
            residual = relative_residual(scipy_matrix(g, 1e4 / 8), run["x"], u)
            row = {key: value for key, value in run.items() if key not in ("A", "x")}
            row.update(
                n=n,
                g=kind,
                smoother=config.smoother,
                unknowns=n * n,
                residual=residual,
                ns_per_unknown=1e9 * run["total_s"] / n**2,
                setup_ns_per_unknown=1e9 * run["setup_s"] / n**2,
                cycle_ns_per_unknown=1e9
                * run["solve_s"]
                / max(run["cycles"], 1)
                / n**2,
            )
            rows.append(row)
            print(
                f"cost n={n} {kind}: setup {run['setup_s']:.3f} s, solve {run['solve_s']:.3f} s "
                f"({run['cycles']} cycles), {row['ns_per_unknown']:.0f} ns/unknown, residual {residual:.1e}",
                flush=True,
            )
    return rows


# ---------------------------------------------------------------- 3. references


def references(S: sp.csr_matrix, f: np.ndarray, n: int, args) -> dict:
    """name -> callable returning x (setup included)."""
    b = f.ravel()
    solvers = {}
    if n <= args.spsolve_max:
        solvers["scipy spsolve (SuperLU)"] = lambda: spla.spsolve(S.tocsc(), b)
    solvers["scipy CG"] = lambda: spla.cg(S, b, rtol=RTOL, maxiter=args.cg_maxiter)[0]
    try:
        import pyamg
    except ImportError:
        return solvers
    solvers["pyamg SA"] = lambda: pyamg.smoothed_aggregation_solver(S).solve(
        b, tol=RTOL, maxiter=200
    )
    solvers["pyamg SA + CG"] = lambda: pyamg.smoothed_aggregation_solver(S).solve(
        b, tol=RTOL, accel="cg", maxiter=200
    )
    solvers["pyamg RS"] = lambda: pyamg.ruge_stuben_solver(S).solve(
        b, tol=RTOL, maxiter=200
    )
    solvers["pyamg RS + CG"] = lambda: pyamg.ruge_stuben_solver(S).solve(
        b, tol=RTOL, accel="cg", maxiter=200
    )
    return solvers


def measure_comparison(sizes, args) -> list[dict]:
    rows = []
    for n in sizes:
        u = photograph("camera", n)
        g, _ = diffusivity(u, "pm")
        tau = 1e4 / 8
        S = scipy_matrix(g, tau)
        gj, tj, fj = jnp.asarray(g), jnp.asarray(tau), jnp.asarray(u)
        A = jax.block_until_ready(assemble(gj, tj))

        def jaxpde_solve(config, A=A, fj=fj):
            hierarchy = jax.block_until_ready(setup(config, A))
            return np.asarray(
                jax.block_until_ready(solve(config, A, fj, hierarchy)).value
            )

        for config in (POINT, LINE):
            jaxpde_solve(config)  # compile
        solvers = {
            "jaxpde Multigrid2D": functools.partial(jaxpde_solve, POINT),
            "jaxpde Multigrid2D (line)": functools.partial(jaxpde_solve, LINE),
            **references(S, u, n, args),
        }
        times = {name: [] for name in solvers}
        answers = {}
        skipped = set()
        for repeat in range(args.repeats):
            for (
                name,
                fn,
            ) in solvers.items():  # interleaved: every solver once per repeat
                if name in skipped:
                    continue
                start = time.perf_counter()
                answers[name] = fn()
                times[name].append(time.perf_counter() - start)
                print(
                    f"compare n={n} repeat {repeat}: {name} {times[name][-1]:.2f} s",
                    flush=True,
                )
                if times[name][-1] > args.reference_limit and not name.startswith(
                    "jaxpde"
                ):
                    skipped.add(name)
        base = statistics.median(times["jaxpde Multigrid2D"])
        for name in solvers:
            seconds = statistics.median(times[name])
            rows.append(
                {
                    "n": n,
                    "solver": name,
                    "seconds": seconds,
                    "times": times[name],
                    "repeats": len(times[name]),
                    "residual": relative_residual(S, answers[name], u),
                    "vs_jaxpde": seconds / base,
                }
            )
        if n > args.spsolve_max:
            rows.append(
                {
                    "n": n,
                    "solver": "scipy spsolve (SuperLU)",
                    "seconds": None,
                    "times": [],
                    "repeats": 0,
                    "residual": None,
                    "vs_jaxpde": None,
                    "note": f"not run above n = {args.spsolve_max}",
                }
            )
    return rows


# ---------------------------------------------------------------- report


def markdown(results: dict) -> str:
    meta = results["machine"]
    lines = [
        "# Black-box multigrid for the image system (2-D)",
        "",
        (
            f"Device `{meta['device']}`, {meta['processor']}, {meta['cpu_count']} cores (shared), jax {meta['jax']}, "
            f"float64, OPENBLAS_NUM_THREADS={results['openblas_threads']}. Generated by `benchmarks/multigrid2d.py` "
            f"({results['seconds']:.0f} s)."
        ),
        "",
        (
            "System: (I + tau grad^T G grad) x = f on n x n photographs (skimage.data, grey, [0, 1], noise 0.1), "
            "f = the noisy image, tau = S / 8. `pm`: Perona-Malik g at the pixels from the Gaussian-smoothed "
            "(sigma 2) image, lambda = median |grad u_s|, averaged onto the edges; `pm-edges`: "
            "`Frozen(PeronaMalik(lambda), grad u_s)`, one g per edge from its own difference (anisotropic); "
            "`constant`: g = 1."
        ),
        "",
        "## 1. Energy-norm factor per V(2,2)",
        "",
        (
            f"`Multigrid2D(smoother=...)`, {POWER_ITERATIONS} power iterations of the error propagation (a lower bound of "
            "||E||_A): `red-black` = point Gauss-Seidel (the default), `line` = alternating zebra-line Gauss-Seidel."
        ),
        "",
        "| n | image | g | S | lambda | g min .. max | red-black | line |",
        "| ---: | --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in results["factors"]:
        lines.append(
            f"| {r['n']} | {r['image']} | {r['g']} | {r['S']:g} | {r['lambda']:.3g} | {r['g_min']:.1e} .. {r['g_max']:.2g} | "
            f"{r['red-black']:.3f} | {r['line']:.3f} |"
        )
    lines += [
        "",
        "## 2. Cost per unknown (camera, S = 1e4, relative residual 1e-8)",
        "",
        (
            "| n | g | smoother | levels | cycles | setup s | solve s | total ns/unknown | setup ns/unknown | "
            "ns/unknown per cycle | residual |"
        ),
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["cost"]:
        lines.append(
            f"| {r['n']} | {r['g']} | {r['smoother']} | {r['levels']} | {r['cycles']} | {r['setup_s']:.3f} | {r['solve_s']:.3f} | "
            f"{r['ns_per_unknown']:.0f} | {r['setup_ns_per_unknown']:.0f} | {r['cycle_ns_per_unknown']:.0f} | {r['residual']:.1e} |"
        )
    lines += [
        "",
        "## 3. Time to relative residual 1e-8 (camera, `pm`, S = 1e4; setup included; interleaved)",
        "",
        "| n | solver | median s | repeats | relative residual | time / jaxpde |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results["comparison"]:
        if r["seconds"] is None:
            lines.append(
                f"| {r['n']} | {r['solver']} | - | 0 | - | {r.get('note', '')} |"
            )
            continue
        lines.append(
            f"| {r['n']} | {r['solver']} | {r['seconds']:.2f} | {r['repeats']} | {r['residual']:.1e} | {r['vs_jaxpde']:.1f}x |"
        )
    lines += ["", "## Notes", "", *results.get("notes", [])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes only (a smoke run)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-limit", type=float, default=30.0)
    parser.add_argument("--spsolve-max", type=int, default=1024)
    parser.add_argument("--cg-maxiter", type=int, default=5000)
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.quick:
        factor_plan = [(64, PHOTOGRAPHS[:2], ("constant", "pm", "pm-edges"), (1e4,))]
    else:
        factor_plan = [
            (256, PHOTOGRAPHS, ("constant", "pm", "pm-edges"), (1e2, 1e4)),
            (1024, PHOTOGRAPHS[:1], ("constant", "pm", "pm-edges"), (1e4,)),
        ]
    cost_sizes = (64, 128) if args.quick else (128, 256, 512, 1024, 2048)
    compare_sizes = (128,) if args.quick else (1024, 2048)
    results = {
        "machine": machine(),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    }
    results["factors"] = measure_factors(factor_plan)
    results["cost"] = measure_cost(cost_sizes, args.repeats)
    results["comparison"] = measure_comparison(compare_sizes, args)
    results["seconds"] = time.perf_counter() - start
    results["notes"] = [
        f"spsolve is run up to n = {args.spsolve_max} only (SuperLU's fill and time at 2048^2 on this shared 2-core machine).",
        f"A reference whose first run exceeded {args.reference_limit:g} s was not repeated (its `repeats` column).",
    ]
    suffix = "-quick" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"multigrid2d-{results['machine']['device']}{suffix}"
    stem.with_suffix(".json").write_text(json.dumps(finite_json(results), indent=1))
    stem.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
