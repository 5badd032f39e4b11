"""The `jaxpde` command line: `jaxpde certify` checks every registered claim;
`jaxpde demo denoise` trains and certifies a stable denoising network."""

import argparse
import json
import os
import pathlib
import sys
import time

import jax

from ._xla_flags import prefer_quick_compilation


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
    scale = certify.add_argument_group("devices")
    scale.add_argument(
        "--devices", default="1", metavar="all|N",
        help="split the sampled inputs and configurations across all (or the first N) devices (default 1); "
        "more CPU devices: JAX_NUM_CPU_DEVICES=N",
    )
    scale.add_argument(
        "--distributed", action="store_true",
        help="several hosts: call jax.distributed.initialize() first (cluster settings from the environment, "
        "or --coordinator, --num-processes, --process-id); every process runs the same command",
    )
    scale.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (with --distributed)")
    scale.add_argument("--num-processes", type=int, help="number of processes (with --distributed)")
    scale.add_argument("--process-id", type=int, help="this process's index (with --distributed)")
    target = certify.add_argument_group("your own block (instead of the claims)")
    target.add_argument(
        "--target", metavar="MODULE:NAME",
        help="certify or refute a callable u -> u' (a DiffusionBlock, a network, any function)",
    )
    target.add_argument("--n", type=int, help="input length for --target (default: the block's own)")
    target.add_argument("--restarts", type=int, default=256, help="falsifier restarts for --target (default 256)")
    target.add_argument("--steps", type=int, default=100, help="Adam steps per restart for --target (default 100)")
    target.add_argument(
        "--radii", type=float, nargs=2, default=(1e-6, 1e6), metavar=("LOW", "HIGH"),
        help="input norms searched for --target, log-stratified (default 1e-6 1e6; widen freely)",
    )
    demo = commands.add_parser("demo", help="runnable demonstrations")
    demos = demo.add_subparsers(dest="demo", required=True)
    denoise = demos.add_parser(
        "denoise", help="train a stable diffusion network on 1-D denoising (about a minute on a CPU)"
    )
    denoise.add_argument("--out", type=pathlib.Path, default=pathlib.Path("jaxpde-demo"), help="output folder (default jaxpde-demo)")
    denoise.add_argument("--epochs", type=int, default=12, help="training epochs of 16 steps (default 12)")
    denoise.add_argument("--seed", type=int, default=0, help="seed of the data split, the initialisation and the batches")
    image = demos.add_parser(
        "denoise-image",
        help="train a certified image diffusion network and denoise a photograph (about two minutes on a CPU; "
        "needs pip install 'jaxpde[images]')",
    )
    image.add_argument("--out", type=pathlib.Path, default=pathlib.Path("jaxpde-demo"), help="output folder (default jaxpde-demo)")
    image.add_argument("--photograph", default="camera", help="a scikit-image photograph (default camera)")
    image.add_argument("--sigma", type=float, default=25.0, help="noise standard deviation in grey levels of 255 (default 25)")
    image.add_argument("--crop", type=int, default=256, help="size of the centre crop denoised (default 256)")
    image.add_argument("--seconds", type=float, default=120.0, help="training wall time in seconds (default 120)")
    image.add_argument("--seed", type=int, default=0, help="seed of the noise, the initialisation and the batches")
    return parser


def run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    if args.demo == "denoise-image":
        return run_image_demo(args)
    from .demo import denoise_demo

    if args.epochs < 1:
        print(f"jaxpde demo denoise: `--epochs` must be at least 1, got {args.epochs}.", file=sys.stderr)
        return 2
    if args.seed < 0:
        print(f"jaxpde demo denoise: `--seed` must be >= 0, got {args.seed}.", file=sys.stderr)
        return 2
    summary = denoise_demo(args.out, epochs=args.epochs, seed=args.seed, console=Console())
    return 0 if summary["certificate"]["certified"] else 1


def run_image_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .demo import denoise_image_demo
    from .images import PHOTOGRAPHS

    problems = []
    if args.photograph not in PHOTOGRAPHS:
        problems.append(f"`--photograph` must be one of {', '.join(PHOTOGRAPHS)}, got {args.photograph!r}.")
    if not args.sigma > 0:
        problems.append(f"`--sigma` must be > 0, got {args.sigma}.")
    if args.crop < 8:
        problems.append(f"`--crop` must be at least 8, got {args.crop}.")
    if not args.seconds > 0:
        problems.append(f"`--seconds` must be > 0, got {args.seconds}.")
    if args.seed < 0:
        problems.append(f"`--seed` must be >= 0, got {args.seed}.")
    if problems:
        for problem in problems:
            print(f"jaxpde demo denoise-image: {problem}", file=sys.stderr)
        return 2
    try:
        summary = denoise_image_demo(
            args.out, photograph=args.photograph, sigma=args.sigma, crop=args.crop, seconds=args.seconds,
            seed=args.seed, console=Console(),
        )
    except ImportError as error:
        print(f"jaxpde demo denoise-image: {error}", file=sys.stderr)
        return 2
    return 0 if summary["certificate"]["certified"] else 1


def _load_target(spec: str):
    """Import `package.module:attribute` (dots after the colon walk attributes)."""
    import importlib

    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"`--target` must look like package.module:callable, got {spec!r}.")
    obj = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"`--target` {spec!r} is a {type(obj).__name__}, not a callable u -> u'.")
    return obj


def certify_target(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .verify.target import certify_callable

    sys.path.insert(0, os.getcwd())  # targets in the current directory, like `python -m`
    try:
        f = _load_target(args.target)
        own_shape = getattr(getattr(f, "op", None), "in_shape", None)
        if args.n is None and own_shape is None:
            raise ValueError("`--n` is required: the target does not say its input length.")
        in_shape = (args.n,) if args.n is not None else own_shape
        report = certify_callable(
            f, in_shape, jax.random.key(args.seed), name=args.target, restarts=args.restarts,
            steps=args.steps, radii=tuple(args.radii),
        )
    except (ValueError, TypeError, ImportError, AttributeError) as error:
        print(f"jaxpde certify --target: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        console = Console() if Console().is_terminal else Console(width=LOG_WIDTH)
        colour = {"certified": "green", "violated": "red"}.get(report.status, "yellow")
        console.print(f"[bold]{report.name}[/]: [{colour}]{report.status}[/] (basis: {report.basis})")
        console.print(f"  basis: {report.basis_detail}")
        console.print(
            f"  Euclidean gain (largest found): {report.gain:.12g}"
            + (f"  (certified <= {report.certified_gain_bound:g})" if report.certified_gain_bound is not None else "")
        )
        lipschitz = max(report.lipschitz, report.local_lipschitz)
        console.print(
            f"  Lipschitz constant (largest found): {lipschitz:.12g}"
            + (f"  (certified <= {report.certified_lipschitz_bound:.6g})" if report.certified_lipschitz_bound is not None else "")
        )
        console.print(f"  tolerance {report.tolerance:.3g}; {report.restarts} restarts x {report.steps} steps")
        for name, value in report.hypotheses.items():
            console.print(f"  {name}: {value}")
        if report.precision_note:
            console.print(f"  {report.precision_note}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "target.json").write_text(json.dumps(report.to_json(), indent=2))
        (args.out / "target.md").write_text(report.markdown())
    return 1 if report.status == "violated" else 0


def _start_distributed(args: argparse.Namespace) -> None:
    """`jax.distributed.initialize` before anything touches a device (`--distributed`)."""
    manual = (args.coordinator, args.num_processes, args.process_id)
    if args.distributed:
        jax.distributed.initialize(*manual)
    elif any(x is not None for x in manual):
        raise ValueError("`--coordinator`, `--num-processes` and `--process-id` need `--distributed`.")


def certify(args: argparse.Namespace) -> int:
    from .sharding import devices_context, sample_mesh

    try:
        _start_distributed(args)
        mesh = sample_mesh(args.devices)
    except ValueError as error:
        print(f"jaxpde certify: {error}", file=sys.stderr)
        return 2
    if args.target is not None:
        with devices_context(mesh):
            return certify_target(args)
    from rich.console import Console

    from .claims import CLAIMS, QUICK, THOROUGH, check_all, get_claim, warm_up

    budget = THOROUGH if args.thorough else QUICK
    try:
        claims = [get_claim(c) for c in args.claim] if args.claim else list(CLAIMS)
    except KeyError as error:
        print(f"jaxpde certify: {error.args[0]}", file=sys.stderr)
        return 2
    # Every process computes (the mesh spans all of them); process 0 reports.
    reporting = jax.process_index() == 0
    start = time.perf_counter()
    with _Progress(len(claims), f"{budget.name}, {mesh.size} devices", reporting) as progress:
        if not args.claim:  # the full registry: compile its programs in parallel first
            progress.phase("compiling the shared programs")
            warm_up(budget, devices=mesh)
            progress.phase(f"compiled the shared programs in {time.perf_counter() - start:.1f} s")
        certificates = check_all(
            claims, jax.random.key(args.seed), budget, devices=mesh, on_start=progress.started, on_done=progress.done,
        )
    elapsed = time.perf_counter() - start
    if not reporting:
        return 0 if all(c.certified for c in certificates) else 1

    summary = _summary(certificates, elapsed)
    if args.json:
        print(json.dumps([c.to_json() for c in certificates], indent=2))
        print(summary, file=sys.stderr)
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=LOG_WIDTH)  # a log: never cut a column
        _print_table(console, certificates, f"{budget.name}, {_device_summary(mesh)}", summary)
    if args.out is not None:
        _write_report(args.out, certificates, budget, args.seed, mesh)
    return 0 if all(c.certified for c in certificates) else 1


# Width of the output when it is not a terminal (a log file, CI): wide enough that no
# column of the table is cut.
LOG_WIDTH = 240


def _interactive() -> bool:
    """Whether a person watches both stdout and stderr (then: a live progress bar)."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def peak_memory_gb() -> float:
    """The peak resident memory of this process or of any finished child process, in GB
    (`resource.getrusage`; Linux reports KiB, macOS bytes)."""
    import resource

    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def _summary(certificates, elapsed: float) -> str:
    certified = sum(c.certified for c in certificates)
    return (
        f"{certified}/{len(certificates)} claims certified in {elapsed:.1f} s wall-clock, "
        f"peak memory {peak_memory_gb():.2f} GB"
    )


class _Progress:
    """What `jaxpde certify` shows while it runs, on stderr. In a terminal: a live bar
    with the claims that are running; otherwise (a log file, CI): one line per phase and
    per finished claim (id, verdict, seconds), flushed at once."""

    def __init__(self, total: int, description: str, enabled: bool):
        import threading

        self.total, self.description, self.enabled = total, description, enabled
        self.finished, self.running = 0, []
        self.lock = threading.Lock()
        self.bar = None
        if enabled and _interactive():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(), TextColumn("{task.fields[running]}"), console=Console(stderr=True), transient=True,
            )
            self.task = self.bar.add_task(f"certifying ({description})", total=total, running="")

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        elif self.enabled:
            self._line(f"jaxpde certify: {self.total} claims ({self.description})")
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def _line(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def _refresh(self) -> None:
        running = ", ".join(self.running[:4]) + (f" +{len(self.running) - 4}" if len(self.running) > 4 else "")
        self.bar.update(self.task, completed=self.finished, running=f"running: {running}" if running else "")

    def phase(self, text: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, running=text)
        elif self.enabled:
            self._line(text)

    def started(self, claim_id: str) -> None:
        with self.lock:
            self.running.append(claim_id)
            if self.bar is not None:
                self._refresh()

    def done(self, certificate) -> None:
        with self.lock:
            self.finished += 1
            if certificate.claim_id in self.running:
                self.running.remove(certificate.claim_id)
            if self.bar is not None:
                self._refresh()
            elif self.enabled:
                basis = getattr(certificate, "basis", None)
                self._line(
                    f"[{self.finished:>{len(str(self.total))}}/{self.total}] {certificate.claim_id:<34} "
                    f"{certificate.status:<10} {certificate.seconds:7.1f} s" + (f"  ({basis})" if basis else "")
                )


def _print_table(console, certificates, budget_name: str, summary: str) -> None:
    from rich.table import Table

    table = Table(title=f"jaxpde certify ({budget_name}, float64)")
    for column in ("claim", "status", "basis", "samples", "worst", "", "bound", "tolerance", "falsifier", "seconds"):
        table.add_column(column, justify="left" if column in ("claim", "status", "basis") else "right", no_wrap=True)
    colours = {"certified": "green", "violated": "red", "error": "red"}
    for c in certificates:
        table.add_row(
            c.claim_id, f"[{colours[c.status]}]{c.status}[/]", getattr(c, "basis", None) or "", str(c.samples), f"{c.worst:.12g}",
            c.relation, f"{c.bound:.6g}", f"{c.tolerance:.2g}",
            "n/a" if c.falsifier is None else f"{c.falsifier.worst:.6g}", f"{c.seconds:.2f}",
        )
    console.print(table)
    for c in certificates:
        if c.message:
            console.print(f"[red]{c.claim_id}[/]: {c.message}")
    console.print(summary)


def _device_summary(mesh) -> str:
    kinds = sorted({device.device_kind for device in mesh.devices.flat})
    return f"{mesh.size} x {'/'.join(kinds)}" + (f" on {jax.process_count()} hosts" if jax.process_count() > 1 else "")


def _write_report(directory: pathlib.Path, certificates, budget, seed: int, mesh) -> None:
    from .report import norm_decay_figure
    from .verify.certificate import markdown_report

    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "budget": budget.name,
        "seed": seed,
        "jax": jax.__version__,
        "device": str(mesh.devices.flat[0]),
        "devices": _device_summary(mesh),
        "claims": [c.to_json(with_cases=True) for c in certificates],
    }
    (directory / "report.json").write_text(json.dumps(payload, indent=2))
    (directory / "report.md").write_text(markdown_report(certificates))
    norm_decay_figure(directory / "norm_decay.png")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    prefer_quick_compilation()  # before the first computation starts JAX's backends
    _enable_compilation_cache()
    jax.config.update("jax_enable_x64", True)
    return run_demo(args) if args.command == "demo" else certify(args)


if __name__ == "__main__":
    sys.exit(main())
