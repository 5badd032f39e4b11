"""Where the time of `jaxpde certify` goes: compilation and running, per claim.

Each claim is checked alone in a fresh process, as `jaxpde certify --claim ID` does,
twice: cold (an empty persistent compilation cache, so every program is traced, lowered
and compiled; the run fills the cache) and warm (a fresh process with the cache that
the cold run filled). The compile seconds are the sums of JAX's monitoring events
for tracing, lowering and XLA compilation (`jax.monitoring`); the run seconds are the
rest of the claim's wall-clock (sampling, running the programs, NumPy on the host).
Each process also reports its peak resident memory. Claims in one process share
programs, so the whole `jaxpde certify` takes less than the sum of the rows: its own
cold and warm wall-clock and peak memory are measured the same way, in fresh processes.

Usage: `python benchmarks/certify_time.py [--thorough] [--claim ID ...] [--no-total]`.
Results: `benchmarks/results/certify-time-<device>[-thorough].{md,json}`.
"""

import argparse
import json
import os
import pathlib
import re
import resource
import subprocess
import sys
import tempfile
import time

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
}


def child(claim_id: str, thorough: bool, cache: str) -> dict:
    from jaxpde._xla_flags import prefer_quick_compilation

    prefer_quick_compilation()  # as `jaxpde certify` does, before JAX starts
    import jax

    jax.config.update("jax_enable_x64", True)
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    from common import machine

    from jaxpde.claims import CLAIMS, QUICK, THOROUGH, get_claim

    seconds = dict.fromkeys(COMPILE_EVENTS.values(), 0.0)
    programs = [0]

    def listener(event: str, duration: float, **_) -> None:
        if event in COMPILE_EVENTS:
            seconds[COMPILE_EVENTS[event]] += duration
            programs[0] += event == "/jax/core/compile/backend_compile_duration"

    jax.monitoring.register_event_duration_secs_listener(listener)
    index = [c.id for c in CLAIMS].index(claim_id)
    start = time.perf_counter()
    # The key of `jaxpde certify --seed 0` for this claim.
    certificate = get_claim(claim_id).check(jax.random.fold_in(jax.random.key(0), index), THOROUGH if thorough else QUICK)
    total = time.perf_counter() - start
    compile_seconds = sum(seconds.values())
    return {
        **machine(),
        "claim": claim_id,
        "status": certificate.status,
        "message": certificate.message,
        "seconds": total,
        "compile_seconds": compile_seconds,
        "run_seconds": total - compile_seconds,
        "compile_parts": seconds,
        "programs": programs[0],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "load_average": os.getloadavg()[0],  # other work on the machine slows every row
        "dtype": "float64",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def _child_run(claim_id: str, thorough: bool, cache: str) -> dict:
    command = [sys.executable, __file__, "--child", claim_id, "--cache", cache] + (["--thorough"] if thorough else [])
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parent)}
    run = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise RuntimeError(f"{claim_id}: {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def _certify_run(thorough: bool, cache: str) -> dict:
    """The whole `jaxpde certify` in a fresh process: wall-clock and peak memory (as the
    command reports it on stderr)."""
    command = [sys.executable, "-m", "jaxpde.cli", "certify", "--json"] + (["--thorough"] if thorough else [])
    start = time.perf_counter()
    run = subprocess.run(command, check=False, capture_output=True, text=True, env={**os.environ, "JAXPDE_CACHE_DIR": cache})
    seconds = time.perf_counter() - start
    certificates = json.loads(run.stdout) if run.stdout.strip() else []
    match = re.search(r"peak memory ([0-9.]+) GB", run.stderr)
    peak = float(match.group(1)) if match else float("nan")
    return {
        "seconds": seconds, "exit_code": run.returncode, "peak_rss_gb": peak,
        "certified": sum(c["status"] == "certified" for c in certificates), "claims": len(certificates),
    }


def _load_note(rows: list) -> str:
    loads = [r[w]["load_average"] for r in rows for w in ("cold", "warm") if "load_average" in r[w]]
    if not loads:
        return ""
    return (
        f" One-minute load average at the end of the runs: {min(loads):.1f} to {max(loads):.1f} on "
        f"{rows[0]['cold']['cpu_count']} cores (above the core count, other work slowed the rows down)."
    )


def _markdown(payload: dict) -> str:
    meta, rows = payload["machine"], payload["rows"]
    lines = [
        f"# Time of `jaxpde certify` per claim ({payload['budget']} budget)",
        "",
        (
            f"Device: {meta['device']}; {meta['processor']}, {meta['cpu_count']} cores; jax {meta['jax']}; "
            "float64. Each claim alone in a fresh process (`Claim.check` with the key of `jaxpde certify "
            "--seed 0`): cold = an empty compilation cache (filled by that run), warm = a fresh process with "
            "that cache. Compile = tracing + lowering + XLA compilation (`jax.monitoring` events); "
            "run = the rest of the claim's wall-clock. Claims in one process share programs, so the whole "
            "command takes less than the sum of the rows. XLA_FLAGS of the claims' processes, as `jaxpde certify` "
            f"sets them (`jaxpde._xla_flags`): `{rows[0]['cold'].get('xla_flags') or '(none)'}`."
        ),
        "",
        f"{payload['claims_measured']} of the {payload['claims_registered']} registered claims measured."
        + _load_note(rows),
        "",
        "| claim | status | cold s | cold compile s | cold run s | programs | warm s | warm compile s | warm run s | peak RSS GB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        cold, warm = row["cold"], row["warm"]
        lines.append(
            f"| {row['claim']} | {cold['status']} | {cold['seconds']:.1f} | {cold['compile_seconds']:.1f} | "
            f"{cold['run_seconds']:.1f} | {cold['programs']} | {warm['seconds']:.1f} | {warm['compile_seconds']:.1f} | "
            f"{warm['run_seconds']:.1f} | {max(cold['peak_rss_gb'], warm['peak_rss_gb']):.2f} |"
        )
    lines.append(
        f"| sum | | {sum(r['cold']['seconds'] for r in rows):.1f} | {sum(r['cold']['compile_seconds'] for r in rows):.1f} | "
        f"{sum(r['cold']['run_seconds'] for r in rows):.1f} | {sum(r['cold']['programs'] for r in rows)} | "
        f"{sum(r['warm']['seconds'] for r in rows):.1f} | {sum(r['warm']['compile_seconds'] for r in rows):.1f} | "
        f"{sum(r['warm']['run_seconds'] for r in rows):.1f} | |"
    )
    total = payload.get("certify")
    if total:
        lines += [
            "",
            (f"The whole `jaxpde certify{' --thorough' if payload['budget'] == 'thorough' else ''}` in a fresh process "
            "(cold: `JAXPDE_CACHE_DIR=`, no persistent cache; warm: a cache filled by an earlier run; peak memory "
            "as the command reports it):"),
            "",
            "| cache | wall-clock s | peak RSS GB | certified | exit code |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name in ("cold", "warm"):
            t = total[name]
            lines.append(f"| {name} | {t['seconds']:.1f} | {t['peak_rss_gb']:.2f} | {t['certified']}/{t['claims']} | {t['exit_code']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thorough", action="store_true", help="the thorough budget (long: tens of minutes)")
    parser.add_argument("--claim", nargs="+", metavar="ID", help="only these claims (the results say how many)")
    parser.add_argument("--no-total", action="store_true", help="skip the whole `jaxpde certify` runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.thorough, args.cache)))
        return

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    from jaxpde.claims import CLAIMS

    ids = args.claim or [c.id for c in CLAIMS]
    RESULTS.mkdir(exist_ok=True)
    rows, payload, name = [], {}, ""
    for claim_id in ids:
        with tempfile.TemporaryDirectory() as cache:
            cold = _child_run(claim_id, args.thorough, cache)  # an empty cache: fills it
            warm = _child_run(claim_id, args.thorough, cache)
        rows.append({"claim": claim_id, "cold": cold, "warm": warm})
        print(
            f"{claim_id}: {cold['status']}, cold {cold['seconds']:.1f} s (compile {cold['compile_seconds']:.1f}, "
            f"{cold['programs']} programs), warm {warm['seconds']:.1f} s, peak {cold['peak_rss_gb']:.2f} GB",
            flush=True,
        )
        machine = {k: rows[0]["cold"][k] for k in ("device", "processor", "cpu_count", "jax", "numpy", "dtype")}
        payload = {"budget": "thorough" if args.thorough else "quick", "machine": machine, "rows": rows}
        name = f"certify-time-{machine['device']}" + ("-thorough" if args.thorough else "")
        _write(name, payload, len(CLAIMS))  # after every claim: a long run leaves its results so far
    if not args.no_total and not args.claim:
        cold = _certify_run(args.thorough, "")  # as a new user runs it: no cache at all
        with tempfile.TemporaryDirectory() as cache:
            _certify_run(args.thorough, cache)  # fills the cache
            warm = _certify_run(args.thorough, cache)
        payload["certify"] = {"cold": cold, "warm": warm}
        print(f"jaxpde certify: cold {cold['seconds']:.1f} s, warm {warm['seconds']:.1f} s", flush=True)
        _write(name, payload, len(CLAIMS))
    print(f"wrote {RESULTS / name}.md", flush=True)


def _write(name: str, payload: dict, registered: int) -> None:
    payload = {**payload, "claims_measured": len(payload["rows"]), "claims_registered": registered}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    (RESULTS / f"{name}.md").write_text(_markdown(payload))


if __name__ == "__main__":
    main()
