"""XLA:CPU settings for many small programs that each run briefly: `jaxpde certify` and the
test suite compile hundreds of them, and there compilation, not running, takes the time.

Two of XLA:CPU's defaults make compilation slow on these programs:

- its fusion emitters (the default since 2025) generate each fusion through MLIR and
  compile two to four times slower than its loop emitters (a multigrid level of the
  claims: 0.55 s against 0.13 s);
- its backend optimisation level 3 (LLVM's `-O3`) compiles the falsifier's programs two
  to four times slower than level 2 (3.9-9.6 s against 1.4-4.8 s each), and they run as
  fast either way; level 0 compiles faster still, and most programs run too briefly for
  the difference to matter.

`prefer_quick_compilation()` selects the loop emitters and level 0 for the process,
through `XLA_FLAGS`, before JAX starts its backends. The programs that run long ask for
more with `compiler_options`: the claims' shared samples and falsifier searches for level
2 (`SEARCH_OPTIMISED`), the scheme claims' measurements at full budgets for XLA's
defaults (`RUN_OPTIMISED`). Measured on 2 cores against level 2 for the process: the
whole test suite, every program at level 0, 653 -> 406 s (1269 -> 790 CPU seconds);
`jaxpde certify`, two interleaved pairs, 213.9 / 237.6 -> 202.3 / 202.7 s (380 / 405 ->
353 / 342 CPU seconds).
`prefer_quick_compilation()` does not touch a flag the user has set, and it sets nothing
on jaxlib versions outside those on which it was measured (XLA aborts the process on an
unknown flag in `XLA_FLAGS`). Library code that users call from their own programs is
unaffected: only the `jaxpde` command and the tests call it.
"""

import importlib.metadata
import os
from collections.abc import MutableMapping

FLAG = "xla_cpu_use_fusion_emitters"
OPTIMIZATION_FLAG = "xla_backend_optimization_level"
# The flags `prefer_quick_compilation` appends, each unless the user named it.
QUICK_FLAGS = {FLAG: "false", OPTIMIZATION_FLAG: "0"}
# `compiler_options` of a program that asks for the fusion emitters whatever the process
# selects: one whose tolerance assumes their rounding.
FUSION_EMITTERS = {FLAG: True}
# `compiler_options` of a program that runs long enough for XLA's own defaults (fusion
# emitters, optimisation level 3) to pay for their slower compilation.
RUN_OPTIMISED = {**FUSION_EMITTERS, OPTIMIZATION_FLAG: 3}
# `compiler_options` of a program whose compilation costs far more than its run (the
# multigrid claims' hierarchies and cycles): level 0 whatever the process selects (the
# command and the tests select it too), about a third less time to compile than level 2, a
# fraction of a second more to run.
QUICK_COMPILE = {OPTIMIZATION_FLAG: 0}
# `compiler_options` of a program that runs long even at the tests' budgets: the claims'
# shared samples and falsifier searches (restarts x steps Adam iterations), at level 2
# whatever the process selects. In the tests' claim fixtures, against level 0: explicit
# claims 38 -> 32 s, scheme claims 33 -> 28 s.
SEARCH_OPTIMISED = {OPTIMIZATION_FLAG: 2}
# jaxlib versions (major, minor) whose XLA defines `FLAG`: from the lowest that jaxpde
# supports up to the newest on which it was measured.
KNOWN_VERSIONS = ((0, 8), (0, 10))


def _jaxlib_version() -> tuple[int, int] | None:
    try:
        major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def prefer_quick_compilation(environ: MutableMapping[str, str] = os.environ, version=None) -> tuple[str, ...]:
    """Append `--flag=value` to `XLA_FLAGS` in `environ` for each of `QUICK_FLAGS` that
    `XLA_FLAGS` does not already name, unless the jaxlib `version` (default: the installed
    one) is outside `KNOWN_VERSIONS`. Takes effect only if JAX has not started its backends
    yet (call it before the first computation). Returns the flags appended."""
    flags = environ.get("XLA_FLAGS", "")
    version = _jaxlib_version() if version is None else version
    low, high = KNOWN_VERSIONS
    if version is None or not low <= tuple(version) <= high:
        return ()
    added = tuple(f"--{name}={value}" for name, value in QUICK_FLAGS.items() if name not in flags)
    if added:
        environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
    return added
