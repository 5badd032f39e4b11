"""Certification throughput against the number of devices.

Times the program that the explicit claims share (`jaxpde.claims.sampling.evaluate`:
every flux class, `depth` explicit steps per sampled signal, with the per-step
measurements) on a batch split across 1, 2 and 4 devices with `jaxpde.sharding`. On a
CPU the devices are forced (`JAX_NUM_CPU_DEVICES`, the same count in every run, so that
only the split differs); on an accelerator they are the visible ones (counts above
that are skipped). Each device count
runs in its own process: compile first, then the median of repeated timings, every
one blocked until ready. Reported: signal-steps per second (signals x steps / time), the
speed-up over one device, and the largest difference of the measurements from one device.

Usage: `python benchmarks/certify_devices.py [--quick] [--devices 1 2 4] [--repeats R]`.
Results: `benchmarks/results/certify-devices-<device>.{md,json}`.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def child(devices: int, size: int, samples: int, depth: int, repeats: int) -> dict:
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from common import device_name, machine

    from jaxpde import Derivative
    from jaxpde.claims import sampling
    from jaxpde.sharding import devices_context

    if devices > len(jax.devices()):
        return {"devices": devices, "skipped": f"{len(jax.devices())} visible {device_name()} devices"}
    op = Derivative(1, size, h=1.0, boundary="neumann")
    fluxes = sampling.random_fluxes(np.random.default_rng(0))

    def run():
        out = sampling.measure(np.random.default_rng(1), op, fluxes, samples, depth)
        return jax.block_until_ready(out)

    with devices_context(devices):
        start = time.perf_counter()
        first = run()  # compile
        compile_seconds = time.perf_counter() - start
        seconds = statistics.median(_timed(run) for _ in range(repeats))
    signal_steps = len(fluxes) * samples * depth
    return {
        **machine(),
        "device": device_name(),
        "visible_devices": len(jax.devices()),
        "devices": devices,
        "seconds": seconds,
        "first_call_seconds": compile_seconds,
        "signal_steps": signal_steps,
        "throughput": signal_steps / seconds,
        "ratio": np.asarray(first.ratio).tolist(),
    }


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller batch")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    size, samples, depth = (128, 64, 16) if args.quick else (256, 256, 64)
    if args.child is not None:
        print(json.dumps(child(args.child, size, samples, depth, args.repeats)))
        return

    import numpy as np

    env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(max(args.devices))}
    rows = []
    for devices in args.devices:
        command = [sys.executable, __file__, "--child", str(devices), "--repeats", str(args.repeats)]
        command += ["--quick"] if args.quick else []
        run = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
        row = json.loads(run.stdout.strip().splitlines()[-1])
        if "skipped" in row:  # an accelerator host with fewer devices
            print(f"{devices} devices: skipped, {row['skipped']}", flush=True)
            continue
        rows.append(row)
        print(f"{devices} devices: {row['throughput']:.4g} signal-steps/s", flush=True)
    base = rows[0]
    reference = np.asarray(base["ratio"])
    for row in rows:
        row["speedup"] = base["seconds"] / row["seconds"]
        row["difference"] = float(np.max(np.abs(np.asarray(row.pop("ratio")) - reference)))
    base.pop("ratio", None)
    device = base["device"]
    name = f"certify-devices-{device}" + ("-quick" if args.quick else "")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"size": size, "samples": samples, "depth": depth, "rows": rows}, indent=2))
    forced = " (forced CPU devices: JAX_NUM_CPU_DEVICES)" if device == "cpu" else ""
    lines = [
        "# Certification throughput against the number of devices",
        "",
        (
            f"Device: {device}{forced}, {base['visible_devices']} visible; {base['processor']}, "
            f"{base['cpu_count']} cores; jax {base['jax']}. The explicit claims' shared program "
            f"(`jaxpde.claims.sampling.evaluate`): D_1 neumann on n = {size}, 6 flux classes x {samples} "
            f"signals, {depth} steps each, float64, split with `jaxpde.sharding`. Medians of "
            f"{args.repeats} timings after compilation, each blocked until ready."
        ),
        "",
        "| devices | signal-steps | median seconds | signal-steps per second | speed-up | first call (compile) s | max difference of the norm ratios |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['devices']} | {row['signal_steps']:,} | {row['seconds']:.3f} | {row['throughput']:,.0f} | "
            f"{row['speedup']:.2f}x | {row['first_call_seconds']:.1f} | {row['difference']:.1e} |"
        )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
