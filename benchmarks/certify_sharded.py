"""`jaxpde certify` on one device against `--devices all` on several: time and verdicts.

Runs the whole command twice in fresh processes with an empty compile cache
(`JAXPDE_CACHE_DIR=`), default seed and budget: once on one device, once split across
every visible device (on a CPU, `--xla_force_host_platform_device_count` forces
`--devices` devices). Compares the two JSON outputs claim by claim: status, basis, samples,
bound, relation, tolerance and its derivation must be identical; `worst` and the
falsifier's values may differ in the last bits (XLA picks the order of a reduction per
batch shape), and the report gives the largest relative difference.

Usage: `python benchmarks/certify_sharded.py [--devices 4]`.
Results: `benchmarks/results/certify-sharded-<device>.{md,json}`.
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import time

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
IDENTICAL = ("status", "basis", "samples", "bound", "relation", "tolerance", "tolerance_derivation")


def _certify(devices: int) -> dict:
    env = {**os.environ, "JAXPDE_CACHE_DIR": ""}
    command = [sys.executable, "-m", "jaxpde", "certify", "--json"]
    if devices > 1:
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
        command += ["--devices", "all"]
    start = time.perf_counter()
    run = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    reported = re.search(r"certified in ([0-9.]+) s wall-clock, peak memory ([0-9.]+) GB", run.stderr)
    return {
        "devices": devices, "exit_code": run.returncode, "elapsed_seconds": elapsed,
        "reported_seconds": float(reported.group(1)) if reported else float("nan"),
        "peak_gb": float(reported.group(2)) if reported else float("nan"),
        "claims": json.loads(run.stdout) if run.stdout.strip() else [],
    }


def _relative(a, b) -> float:
    if not all(isinstance(x, (int, float)) for x in (a, b)):
        return 0.0 if a == b else float("inf")
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def compare(one: list[dict], several: list[dict]) -> list[dict]:
    """Per claim: the fields of `IDENTICAL` that differ, and the relative differences of
    `worst` and of the falsifier's worst and sampled values."""
    by_id = {c["id"]: c for c in several}
    rows = []
    for a in one:
        b = by_id.get(a["id"])
        if b is None:
            rows.append({"id": a["id"], "missing": True})
            continue
        fa, fb = a.get("falsifier") or {}, b.get("falsifier") or {}
        rows.append({
            "id": a["id"], "missing": False, "status": (a["status"], b["status"]),
            "differing": [k for k in IDENTICAL if a.get(k) != b.get(k)],
            "worst": _relative(a["worst"], b["worst"]),
            "falsifier_worst": _relative(fa.get("worst"), fb.get("worst")) if fa else 0.0,
            "falsifier_worst_absolute": abs(fa["worst"] - fb["worst"]) if fa else 0.0,
            "falsifier_found": (fa.get("found"), fb.get("found")),
        })
    return rows


def _markdown(payload: dict) -> str:
    one, several = payload["one"], payload["several"]
    rows = payload["rows"]
    same = all(not r["missing"] and not r["differing"] and r["falsifier_found"][0] == r["falsifier_found"][1] for r in rows)
    lines = [
        "# `jaxpde certify` on one device against `--devices all`",
        "",
        (
            f"Machine: {payload['machine']}. Empty compile cache, default seed and budget, each run in a fresh "
            f"process; {several['devices']} forced CPU devices for the sharded run."
        ),
        "",
        "| run | exit code | certified | reported s | elapsed s | peak GB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, run in (("one device", one), (f"--devices all ({several['devices']})", several)):
        certified = sum(c["status"] == "certified" for c in run["claims"])
        lines.append(
            f"| {name} | {run['exit_code']} | {certified}/{len(run['claims'])} | {run['reported_seconds']:.1f} | "
            f"{run['elapsed_seconds']:.1f} | {run['peak_gb']:.2f} |"
        )
    lines += [
        "",
        (
            "Status, basis, samples, bound, relation, tolerance and its derivation identical for every claim, and "
            f"the falsifier's verdict the same: **{'yes' if same else 'no'}**."
        ),
        "",
        "| claim | status (1 / several) | differing fields | worst: relative difference | falsifier worst: relative difference | falsifier worst: absolute difference |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r["missing"]:
            lines.append(f"| {r['id']} | missing in the sharded run | | | | |")
            continue
        differing = ", ".join(r["differing"]) or "none"
        lines.append(
            f"| {r['id']} | {r['status'][0]} / {r['status'][1]} | {differing} | {r['worst']:.1e} | {r['falsifier_worst']:.1e} | "
            f"{r['falsifier_worst_absolute']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=4, help="forced CPU devices of the sharded run")
    args = parser.parse_args()
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from common import machine

    meta = machine()
    one = _certify(1)
    several = _certify(args.devices)
    payload = {
        "machine": f"{meta['device']}; {meta['processor']}, {meta['cpu_count']} cores; jax {meta['jax']}",
        "one": one, "several": several, "rows": compare(one["claims"], several["claims"]),
    }
    RESULTS.mkdir(exist_ok=True)
    name = f"certify-sharded-{meta['device']}"
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1))
    (RESULTS / f"{name}.md").write_text(_markdown(payload))
    print(_markdown(payload))


if __name__ == "__main__":
    main()
