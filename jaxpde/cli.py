"""The `jaxpde` command line: `jaxpde certify` checks every registered claim."""

import argparse
import json
import os
import pathlib
import sys
import time

import jax


def _enable_compilation_cache() -> None:
    """Keep compiled programs between runs (set JAXPDE_CACHE_DIR= to disable)."""
    default = pathlib.Path.home() / ".cache" / "jaxpde" / "xla"
    directory = os.environ.get("JAXPDE_CACHE_DIR", str(default))
    if directory:
        jax.config.update("jax_compilation_cache_dir", directory)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxpde", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    certify = commands.add_parser("certify", help="check every claim and report the verdicts")
    effort = certify.add_mutually_exclusive_group()
    effort.add_argument("--quick", action="store_true", help="small budget (default)")
    effort.add_argument("--thorough", action="store_true", help="10x samples, deeper, more sizes")
    certify.add_argument("--json", action="store_true", help="print a JSON list, one object per claim")
    certify.add_argument("--out", type=pathlib.Path, help="write report.json, report.md and norm_decay.png here")
    certify.add_argument("--seed", type=int, default=0, help="PRNG seed of the sampled inputs (default 0)")
    certify.add_argument("--claim", action="append", metavar="ID", help="check only this claim (repeatable)")
    return parser


def certify(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .claims import CLAIMS, QUICK, THOROUGH, get_claim, sampling

    budget = THOROUGH if args.thorough else QUICK
    try:
        claims = [get_claim(c) for c in args.claim] if args.claim else list(CLAIMS)
    except KeyError as error:
        print(f"jaxpde certify: {error.args[0]}", file=sys.stderr)
        return 2
    progress_console = Console(stderr=True)
    certificates = []
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=progress_console, transient=True,
    ) as progress:
        if not args.claim:  # the full registry: compile its programs in parallel first
            compiling = progress.add_task("compiling", total=None)
            sampling.warm_up(budget.samples, budget.depth, budget.sizes)
            progress.remove_task(compiling)
        task = progress.add_task(f"certifying ({budget.name})", total=len(claims))
        for index, claim in enumerate(claims):
            progress.update(task, description=f"{claim.id}")
            key = jax.random.fold_in(jax.random.key(args.seed), index)
            certificates.append(claim.check(key, budget))
            progress.advance(task)
    elapsed = time.perf_counter() - start

    if args.json:
        print(json.dumps([c.to_json() for c in certificates], indent=2))
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=120)
        _print_table(console, certificates, budget.name, elapsed)
    if args.out is not None:
        _write_report(args.out, certificates, budget, args.seed)
    return 0 if all(c.certified for c in certificates) else 1


def _print_table(console, certificates, budget_name: str, elapsed: float) -> None:
    from rich.table import Table

    table = Table(title=f"jaxpde certify ({budget_name}, float64)")
    for column in ("claim", "status", "samples", "worst", "", "bound", "tolerance", "seconds"):
        table.add_column(column, justify="left" if column in ("claim", "status") else "right", no_wrap=True)
    colours = {"certified": "green", "violated": "red", "error": "red"}
    for c in certificates:
        table.add_row(
            c.claim_id, f"[{colours[c.status]}]{c.status}[/]", str(c.samples), f"{c.worst:.12g}",
            c.relation, f"{c.bound:.6g}", f"{c.tolerance:.2g}", f"{c.seconds:.2f}",
        )
    console.print(table)
    for c in certificates:
        if c.message:
            console.print(f"[red]{c.claim_id}[/]: {c.message}")
    certified = sum(c.certified for c in certificates)
    console.print(f"{certified}/{len(certificates)} claims certified in {elapsed:.1f} s")


def _write_report(directory: pathlib.Path, certificates, budget, seed: int) -> None:
    from .report import norm_decay_figure
    from .verify.certificate import markdown_report

    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "budget": budget.name,
        "seed": seed,
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "claims": [c.to_json(with_cases=True) for c in certificates],
    }
    (directory / "report.json").write_text(json.dumps(payload, indent=2))
    (directory / "report.md").write_text(markdown_report(certificates))
    norm_decay_figure(directory / "norm_decay.png")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _enable_compilation_cache()
    jax.config.update("jax_enable_x64", True)
    return certify(args)


if __name__ == "__main__":
    sys.exit(main())
