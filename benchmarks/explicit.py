"""Explicit Perona-Malik rollout: jaxpde vs NumPy vs the memory-copy floor.

For each size and dtype the script times, in the same run, on the same data and
interleaved (one repeat of every variant, then the next repeat):

- jaxpde, **closed over**: `ExplicitScheme(...).rollout(u, steps)` under `jax.jit` with the
  scheme captured as constants (one `lax.scan`);
- jaxpde, **as an argument**: the same, with the scheme passed to the jitted function,
  so its step size, flux parameter and stencil are runtime values (how a trained network
  or a sweep over parameters runs);
- NumPy: a straightforward implementation of the same step (`np.diff`, the flux, the
  transposed difference), one Python loop iteration per step;
- the **in-cache stream**: a jitted `lax.scan` of `u * c` over the same number of steps
  on the same array (one read and one write per point per step: what a perfectly fused
  step costs at this size, loop overhead included).

The **main-memory copy floor** is measured once per run: a streaming read and write of
an array far larger than the caches (2^26 elements of float32, 512 MiB moved per pass),
as a jitted `v * c` (a device-to-device copy on an accelerator) and, on a CPU, as
`np.copyto` into a preallocated array, whichever is faster. At size n it is
`2 * itemsize * n / bandwidth` per step. The fraction of the floor is floor / time, so a
step that runs in the caches can exceed 1.

Reported: median seconds per step (and the spread of the repeats as min-max relative
to the median), the speed-up over NumPy, the fractions of the main-memory floor and of the
in-cache stream, compile seconds of both jaxpde variants, and the target verdicts
(float32, n >= 2^20: >= 8x NumPy and >= 0.7 of the main-memory floor, closed over and as
an argument). Results: `benchmarks/results/explicit-<device>.{md,json}`.

Usage: `python benchmarks/explicit.py [--quick] [--repeats R]`.
"""

import argparse
import json
import pathlib
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from common import finite_json, machine

import jaxpde
from jaxpde import fluxes
from jaxpde.schemes import ExplicitScheme

LAM = 0.1
RESULTS = pathlib.Path(__file__).resolve().parent / "results"
FLOOR_POINTS = 2**26
TARGET_POINTS = 2**20
TARGET_SPEEDUP = 8.0
TARGET_FRACTION = 0.7
JAXPDE_VARIANTS = ("closed", "argument", "argument_legacy")
# XLA:CPU's older loop emitter, for the `argument_legacy` column (CPU only).
LEGACY_EMITTER = {"xla_cpu_use_fusion_emitters": False}


def numpy_step(u: np.ndarray, tau, lam, h) -> np.ndarray:
    """u - tau D^T Phi(D u) for D the neumann forward difference, along the last axis."""
    s = np.diff(u, axis=-1) / h
    phi = s / (1 + (s / lam) ** 2)
    pad = [(0, 0)] * (u.ndim - 1) + [(1, 1)]
    padded = np.pad(phi, pad)
    transpose = (padded[..., :-1] - padded[..., 1:]) / h
    return u - tau * transpose


def steps_for(points: int) -> int:
    """Enough steps for ~2^27 point-updates per timing (at least 8)."""
    return int(min(4096, max(8, 2**27 // points)))


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(variants: dict, repeats: int) -> dict:
    """Median and relative spread (max - min) / median of each variant's seconds, the
    variants run in turn within each repeat (each called once before, to warm up)."""
    for fn in variants.values():
        fn()
    samples = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            samples[name].append(seconds(fn))
    return {
        name: {"median": statistics.median(v), "spread": (max(v) - min(v)) / statistics.median(v)}
        for name, v in samples.items()
    }


def main_memory_bandwidth(repeats: int) -> dict:
    """Bytes per second of a streaming read + write far larger than the caches."""
    big = np.ones(FLOOR_POINTS, np.float32)
    destination = np.empty_like(big)
    device_big = jnp.asarray(big)
    scale = jax.jit(lambda v: v * jnp.float32(0.999))
    variants = {"jit v * c": lambda: jax.block_until_ready(scale(device_big))}
    if jax.devices()[0].platform == "cpu":  # on an accelerator the floor is its own memory's
        variants["np.copyto"] = lambda: np.copyto(destination, big)
    timings = interleaved(variants, repeats)
    moved = 2 * big.nbytes
    best = min(timings, key=lambda name: timings[name]["median"])
    return {
        "bytes_per_second": moved / timings[best]["median"],
        "source": best,
        "points": FLOOR_POINTS,
        "per_source": {name: moved / t["median"] for name, t in timings.items()},
    }


def bench_case(shape: tuple[int, ...], dtype, repeats: int, bandwidth: float) -> dict:
    n = shape[-1]
    points = int(np.prod(shape))
    op = jaxpde.Derivative(1, n, h=1.0 / n)
    flux = fluxes.PeronaMalik(LAM)
    scheme = ExplicitScheme(op, flux)
    # Parameters in the dtype of the data (as a network trained in that dtype holds them).
    scheme = jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, scheme)
    tau = float(scheme.tau)
    rng = np.random.default_rng(0)
    u_np = (np.cumsum(rng.standard_normal(shape), axis=-1) / np.sqrt(n)).astype(dtype)
    u = jnp.asarray(u_np)
    steps = steps_for(points)

    def run_one(scheme, v):
        return scheme.rollout(v, steps)

    batched = jax.vmap(run_one, in_axes=(None, 0)) if len(shape) == 2 else run_one
    argument = jax.jit(batched)
    closed = jax.jit(lambda v: batched(scheme, v))
    compile_s = {
        "closed": seconds(lambda: closed.lower(u).compile()),
        "argument": seconds(lambda: argument.lower(scheme, u).compile()),
    }
    variants = {
        "closed": lambda: jax.block_until_ready(closed(u)),
        "argument": lambda: jax.block_until_ready(argument(scheme, u)),
    }
    if jax.devices()[0].platform == "cpu":
        legacy = jax.jit(batched, compiler_options=LEGACY_EMITTER)
        compile_s["argument_legacy"] = seconds(lambda: legacy.lower(scheme, u).compile())
        variants["argument_legacy"] = lambda: jax.block_until_ready(legacy(scheme, u))

    # Same numbers from both implementations (a few steps).
    check_steps = 4
    expected = u_np
    for _ in range(check_steps):
        expected = numpy_step(expected, dtype(tau), dtype(LAM), dtype(1.0 / n))
    got = np.asarray(jax.jit(jax.vmap(lambda v: scheme.rollout(v, check_steps)) if len(shape) == 2 else (lambda v: scheme.rollout(v, check_steps)))(u))
    max_diff = float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))

    numpy_steps = max(2, steps // 16)

    def numpy_rollout():
        v = u_np
        for _ in range(numpy_steps):
            v = numpy_step(v, dtype(tau), dtype(LAM), dtype(1.0 / n))
        return v

    c = jnp.asarray(0.999, dtype)
    stream = jax.jit(lambda v: jax.lax.scan(lambda w, _: (w * c, None), v, length=steps)[0])
    variants["stream"] = lambda: jax.block_until_ready(stream(u))
    variants["numpy"] = numpy_rollout
    timings = interleaved(variants, repeats)
    per_step = {
        name: timing["median"] / (numpy_steps if name == "numpy" else steps) for name, timing in timings.items()
    }
    floor_s = 2 * np.dtype(dtype).itemsize * points / bandwidth
    result = {
        "shape": list(shape),
        "dtype": np.dtype(dtype).name,
        "points": points,
        "steps": steps,
        "numpy_steps": numpy_steps,
        "s_per_step": per_step,
        "spread": {name: timing["spread"] for name, timing in timings.items()},
        "compile_s": compile_s,
        "main_memory_floor_s_per_step": floor_s,
        "max_relative_difference": max_diff,
    }
    for name in JAXPDE_VARIANTS:
        if name not in per_step:
            continue
        result[f"{name}_speedup_vs_numpy"] = per_step["numpy"] / per_step[name]
        result[f"{name}_fraction_of_main_floor"] = floor_s / per_step[name]
        result[f"{name}_fraction_of_stream"] = per_step["stream"] / per_step[name]
    return result


def verdicts(results: list[dict]) -> list[dict]:
    rows = []
    targeted = [r for r in results if r["dtype"] == "float32" and r["points"] >= TARGET_POINTS]
    if not targeted:
        return rows
    for name in ("closed", "argument"):
        speedup = min(r[f"{name}_speedup_vs_numpy"] for r in targeted)
        fraction = min(r[f"{name}_fraction_of_main_floor"] for r in targeted)
        rows.append({
            "variant": name,
            "worst_speedup": speedup,
            "worst_fraction": fraction,
            "met": speedup >= TARGET_SPEEDUP and fraction >= TARGET_FRACTION,
        })
    return rows


def markdown(results: list[dict], meta: dict, floor: dict, rows: list[dict]) -> str:
    gbs = floor["bytes_per_second"] / 1e9
    lines = [
        "# Explicit Perona-Malik rollout: jaxpde vs NumPy vs the copy floor",
        "",
        (
            f"Device: {meta['device']} ({meta['processor']}, {meta['cpu_count']} cores); jax {meta['jax']}, "
            f"numpy {meta['numpy']}. D_1 neumann, Perona-Malik (lambda = {LAM}), tau = the stable step size, "
            "h = 1/n, one `lax.scan` of `steps` steps per timing."
        ),
        (
            f"Timings: compiled first (compile seconds reported separately), every timing blocks until ready, "
            f"variants interleaved within each of {meta['repeats']} repeats; median per step, spread = "
            "(max - min) / median of the repeats."
        ),
        (
            f"Main-memory floor: a streaming read + write of 2^26 float32 ({FLOOR_POINTS * 8 / 2**20:.0f} MiB moved "
            f"per pass) by {floor['source']}: {gbs:.1f} GB/s "
            f"(" + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in floor["per_source"].items()) + " GB/s); "
            "the floor at n is 2 x itemsize x n bytes at that rate. In-cache stream: a jitted scan of `u * c` "
            "on the same array, same steps."
        ),
        (
            "closed: the scheme captured as constants; argument: the scheme passed to the jitted function "
            "(runtime step size, flux parameter and stencil); argument, legacy emitter: the same program "
            "compiled with `compiler_options={'xla_cpu_use_fusion_emitters': False}` (CPU only)."
        ),
        "",
        ("| shape | dtype | steps | closed ns/step | argument ns/step | argument, legacy emitter ns/step | NumPy ns/step "
        "| stream ns/step | vs NumPy closed / argument / legacy | main floor ns/step "
        "| of main floor closed / argument / legacy | of in-cache stream closed / argument "
        "| spread closed / argument | compile s closed / argument | max rel. diff |"),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def legacy(r, key, fmt):
        return fmt.format(r[key]) if key in r else "-"

    for r in results:
        shape = " x ".join(str(s) for s in r["shape"])
        ns = {k: v * 1e9 for k, v in r["s_per_step"].items()}
        lines.append(
            f"| {shape} | {r['dtype']} | {r['steps']} | {ns['closed']:,.0f} | {ns['argument']:,.0f} "
            f"| {legacy(ns, 'argument_legacy', '{:,.0f}')} | {ns['numpy']:,.0f} | {ns['stream']:,.0f} "
            f"| {r['closed_speedup_vs_numpy']:.1f}x / {r['argument_speedup_vs_numpy']:.1f}x / "
            f"{legacy(r, 'argument_legacy_speedup_vs_numpy', '{:.1f}x')} "
            f"| {r['main_memory_floor_s_per_step'] * 1e9:,.0f} "
            f"| {r['closed_fraction_of_main_floor']:.2f} / {r['argument_fraction_of_main_floor']:.2f} / "
            f"{legacy(r, 'argument_legacy_fraction_of_main_floor', '{:.2f}')} "
            f"| {r['closed_fraction_of_stream']:.2f} / {r['argument_fraction_of_stream']:.2f} "
            f"| {r['spread']['closed']:.0%} / {r['spread']['argument']:.0%} "
            f"| {r['compile_s']['closed']:.2f} / {r['compile_s']['argument']:.2f} | {r['max_relative_difference']:.1e} |"
        )
    lines += [
        "",
        f"## Targets (float32, n >= 2^20: >= {TARGET_SPEEDUP:.0f}x NumPy and >= {TARGET_FRACTION} of the main-memory floor)",
        "",
        "| variant | worst speed-up vs NumPy | worst fraction of the main-memory floor | verdict |",
        "| --- | ---: | ---: | --- |",
    ]
    if not rows:
        lines.append("| (no float32 size >= 2^20 in this run) | | | not measured |")
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['worst_speedup']:.1f}x | {row['worst_fraction']:.2f} | "
            f"{'met' if row['met'] else 'missed'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 2^10, 2^14 and a small batch only")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS, help="directory of the results table")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)  # float64 rows; float32 data stays float32
    exponents = (10, 14) if args.quick else (10, 12, 14, 16, 18, 20, 22)
    shapes = [(2**e,) for e in exponents] + [(64, 256) if args.quick else (1024, 256)]
    cases = [(shape, np.float32) for shape in shapes]
    cases += [((2**e,), np.float64) for e in ((14,) if args.quick else (16, 20))]
    floor = main_memory_bandwidth(args.repeats)
    print(f"main-memory floor: {floor['bytes_per_second'] / 1e9:.1f} GB/s ({floor['source']})", flush=True)
    results = []
    for shape, dtype in cases:
        result = bench_case(shape, dtype, args.repeats, floor["bytes_per_second"])
        results.append(result)
        print(
            f"{shape!s:>14} {result['dtype']}: closed {result['s_per_step']['closed'] * 1e9:10,.0f} ns/step "
            f"({result['closed_speedup_vs_numpy']:5.1f}x NumPy, {result['closed_fraction_of_main_floor']:.2f} of floor), "
            f"argument {result['s_per_step']['argument'] * 1e9:10,.0f} ns/step "
            f"({result['argument_speedup_vs_numpy']:5.1f}x, {result['argument_fraction_of_main_floor']:.2f})",
            flush=True,
        )
    meta = {**machine(), "quick": args.quick, "repeats": args.repeats}
    rows = verdicts(results)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"explicit-{meta['device']}" + ("-quick" if args.quick else "")
    payload = {"meta": meta, "main_memory_floor": floor, "results": results, "verdicts": rows}
    (args.out / f"{stem}.json").write_text(json.dumps(finite_json(payload), indent=2))
    (args.out / f"{stem}.md").write_text(markdown(results, meta, floor, rows))
    print(f"wrote {args.out / stem}.md")


if __name__ == "__main__":
    main()
