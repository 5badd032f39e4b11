"""Explicit Perona-Malik rollout: jaxpde vs NumPy vs the memory-copy floor.

For each size the script times, in the same run and on the same float32 data,

- jaxpde: `ExplicitScheme(...).rollout(u, steps)` under `jax.jit` (one `lax.scan`);
- NumPy: a straightforward implementation of the same step (`np.diff`, the flux,
  the transposed difference), one Python loop iteration per step;
- the copy floor: the best of `np.copyto` and a jitted streaming update `u * c`
  over the same number of steps, i.e. 8 bytes per point per step (read + write).

Reported: median time per step, points per second, the speed-up over NumPy, and the
fraction of the copy floor that jaxpde reaches (floor time / jaxpde time). Results go to
`benchmarks/results/explicit-<device>.{md,json}`.

Usage: `python benchmarks/explicit.py [--quick] [--repeats R]`.
"""

import argparse
import json
import pathlib
import statistics
import timeit

import jax
import jax.numpy as jnp
import numpy as np
from common import machine

import jaxpde
from jaxpde import fluxes
from jaxpde.schemes import ExplicitScheme

LAM = 0.1
RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def numpy_step(u: np.ndarray, tau: np.float32, lam: np.float32, h: np.float32) -> np.ndarray:
    """u - tau D^T Phi(D u) for D the neumann forward difference, along the last axis."""
    s = np.diff(u, axis=-1) / h
    phi = s / (1 + (s / lam) ** 2)
    pad = [(0, 0)] * (u.ndim - 1) + [(1, 1)]
    padded = np.pad(phi, pad)
    transpose = (padded[..., :-1] - padded[..., 1:]) / h
    return u - tau * transpose


def median_seconds(fn, repeats: int) -> float:
    fn()  # compile / warm up
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeats))


def steps_for(points: int) -> int:
    """Enough steps for ~2^27 point-updates per timing (at least 8)."""
    return int(min(4096, max(8, 2**27 // points)))


def bench_case(shape: tuple[int, ...], repeats: int) -> dict:
    n = shape[-1]
    points = int(np.prod(shape))
    op = jaxpde.Derivative(1, n, h=1.0 / n)
    flux = fluxes.PeronaMalik(LAM)
    scheme = ExplicitScheme(op, flux)
    tau = float(scheme.tau)
    rng = np.random.default_rng(0)
    u_np = (np.cumsum(rng.standard_normal(shape), axis=-1) / np.sqrt(n)).astype(np.float32)
    u = jnp.asarray(u_np)
    steps = steps_for(points)

    def run_one(scheme, v):
        return scheme.rollout(v, steps)

    rollout = jax.jit(jax.vmap(run_one, in_axes=(None, 0)) if len(shape) == 2 else run_one)
    jaxpde_s = median_seconds(lambda: jax.block_until_ready(rollout(scheme, u)), repeats) / steps

    # Same numbers from both implementations (a few steps, float32).
    check_steps = 4
    expected = u_np
    for _ in range(check_steps):
        expected = numpy_step(expected, np.float32(tau), np.float32(LAM), np.float32(1.0 / n))
    got = np.asarray(jax.vmap(lambda v: scheme.rollout(v, check_steps))(u) if len(shape) == 2 else scheme.rollout(u, check_steps))
    max_diff = float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))

    numpy_steps = max(2, steps // 16)

    def numpy_rollout():
        v = u_np
        for _ in range(numpy_steps):
            v = numpy_step(v, np.float32(tau), np.float32(LAM), np.float32(1.0 / n))
        return v

    numpy_s = median_seconds(numpy_rollout, max(3, repeats // 2)) / numpy_steps

    destination = np.empty_like(u_np)
    copy_s = median_seconds(lambda: np.copyto(destination, u_np), repeats * 4)
    stream = jax.jit(lambda v: jax.lax.scan(lambda w, _: (w * jnp.float32(0.999), None), v, length=steps)[0])
    stream_s = median_seconds(lambda: jax.block_until_ready(stream(u)), repeats) / steps
    floor_s = min(copy_s, stream_s)
    return {
        "shape": list(shape),
        "points": points,
        "steps": steps,
        "jaxpde_s_per_step": jaxpde_s,
        "numpy_s_per_step": numpy_s,
        "copy_floor_s_per_step": floor_s,
        "copy_floor_source": "np.copyto" if copy_s <= stream_s else "jit streaming u*c",
        "speedup_vs_numpy": numpy_s / jaxpde_s,
        "fraction_of_copy_floor": floor_s / jaxpde_s,
        "jaxpde_gbytes_per_s": 8 * points / jaxpde_s / 1e9,
        "floor_gbytes_per_s": 8 * points / floor_s / 1e9,
        "max_relative_difference": max_diff,
    }


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        "# Explicit Perona-Malik rollout: jaxpde vs NumPy vs the copy floor",
        "",
        (
            f"Device: {meta['device']} ({meta['processor']}, {meta['cpu_count']} cores); jax {meta['jax']}, "
            f"numpy {meta['numpy']}; float32; D_1 neumann, Perona-Malik (lambda = {LAM}), tau = stable step size."
        ),
        "Medians of repeated timings after compilation; every timing blocks until ready.",
        "Floor: 8 bytes per point per step at the best measured copy bandwidth (np.copyto or a jitted streaming update).",
        "",
        "| shape | steps | jaxpde ns/step | NumPy ns/step | speed-up vs NumPy | copy floor ns/step | fraction of floor | jaxpde GB/s | max rel. diff |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        shape = " x ".join(str(s) for s in r["shape"])
        lines.append(
            f"| {shape} | {r['steps']} | {r['jaxpde_s_per_step'] * 1e9:,.0f} | {r['numpy_s_per_step'] * 1e9:,.0f} "
            f"| {r['speedup_vs_numpy']:.1f}x | {r['copy_floor_s_per_step'] * 1e9:,.0f} | {r['fraction_of_copy_floor']:.2f} "
            f"| {r['jaxpde_gbytes_per_s']:.2f} | {r['max_relative_difference']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 2^10, 2^14 and a small batch only")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS, help="directory of the results table")
    args = parser.parse_args()
    exponents = (10, 14) if args.quick else (10, 12, 14, 16, 18, 20, 22)
    shapes = [(2**e,) for e in exponents] + [(64, 256) if args.quick else (1024, 256)]
    results = []
    for shape in shapes:
        result = bench_case(shape, args.repeats)
        results.append(result)
        print(
            f"{shape!s:>14}: jaxpde {result['jaxpde_s_per_step'] * 1e9:12,.0f} ns/step, "
            f"{result['speedup_vs_numpy']:6.1f}x NumPy, {result['fraction_of_copy_floor']:.2f} of copy floor",
            flush=True,
        )
    meta = {
        **machine(),
        "quick": args.quick,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"explicit-{meta['device']}" + ("-quick" if args.quick else "")
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (args.out / f"{stem}.md").write_text(markdown(results, meta))
    print(f"wrote {args.out / stem}.md")


if __name__ == "__main__":
    main()
