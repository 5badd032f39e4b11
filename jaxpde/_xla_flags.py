"""XLA:CPU settings for many small programs that each run briefly: `jaxpde certify` and the
test suite compile hundreds of them, and there compilation, not running, takes the time.

Two of XLA:CPU's defaults make compilation slow on these programs:

- its fusion emitters (the default since 2025) generate each fusion through MLIR and
  compile two to four times slower than its loop emitters (a multigrid level of the
  claims: 0.55 s against 0.13 s);
- its backend optimisation level 3 (LLVM's `-O3`) compiles the falsifier's programs two
  to four times slower than level 2 (3.9-9.6 s against 1.4-4.8 s each), and they run as
  fast either way (`benchmarks/results/certify-time-cpu.md` for the whole command).

`prefer_quick_compilation()` selects the loop emitters and level 2 for the process,
through `XLA_FLAGS`, before JAX starts its backends. It does not touch a flag the user
has set, and it sets nothing on jaxlib versions outside those on which it was measured
(XLA aborts the process on an unknown flag in `XLA_FLAGS`). Library code that users call
from their own programs is unaffected: only the `jaxpde` command and the tests call it.

The test suite asks for level 0 (`TEST_OPTIMIZATION_LEVEL`): its programs run for
milliseconds, so LLVM's optimisation costs more than it saves. Measured on 2 cores, the
whole suite against level 2: 653 -> 406 s, 1269 -> 790 CPU seconds. `jaxpde certify`
keeps level 2: at level 0 its falsifier's programs run slower than they compile faster
(the whole command 192 -> 213 s, 340 -> 383 CPU seconds).
"""

import importlib.metadata
import os
from collections.abc import MutableMapping

FLAG = "xla_cpu_use_fusion_emitters"
OPTIMIZATION_FLAG = "xla_backend_optimization_level"
# The flags `prefer_quick_compilation` appends, each unless the user named it.
QUICK_FLAGS = {FLAG: "false", OPTIMIZATION_FLAG: "2"}
# `compiler_options` of a program that asks for the fusion emitters whatever the process
# selects: one whose tolerance assumes their rounding.
FUSION_EMITTERS = {FLAG: True}
# `compiler_options` of a program that runs long enough for XLA's own defaults (fusion
# emitters, optimisation level 3) to pay for their slower compilation.
RUN_OPTIMISED = {**FUSION_EMITTERS, OPTIMIZATION_FLAG: 3}
# The level of the test suite (`tests/conftest.py`), whose programs each run for milliseconds.
TEST_OPTIMIZATION_LEVEL = 0
# `compiler_options` of a program that runs long even at the tests' budgets, whatever level
# the process selects: the claims' shared samples and falsifier searches (restarts x steps
# Adam iterations). In the tests' claim fixtures, level 2 against 0: explicit claims 38 ->
# 32 s, scheme claims 33 -> 28 s (`jaxpde certify` already runs them at level 2).
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


def prefer_quick_compilation(
    environ: MutableMapping[str, str] = os.environ, version=None, *, optimization_level: int | None = None
) -> tuple[str, ...]:
    """Append `--flag=value` to `XLA_FLAGS` in `environ` for each of `QUICK_FLAGS` that
    `XLA_FLAGS` does not already name, unless the jaxlib `version` (default: the installed
    one) is outside `KNOWN_VERSIONS`; `optimization_level` replaces the value of
    `OPTIMIZATION_FLAG` (the tests: `TEST_OPTIMIZATION_LEVEL`). Takes effect only if JAX has
    not started its backends yet (call it before the first computation). Returns the flags
    appended."""
    if optimization_level is not None and optimization_level not in range(4):
        raise ValueError(f"`optimization_level` must be 0, 1, 2 or 3 (LLVM's levels), got {optimization_level!r}.")
    flags = environ.get("XLA_FLAGS", "")
    version = _jaxlib_version() if version is None else version
    low, high = KNOWN_VERSIONS
    if version is None or not low <= tuple(version) <= high:
        return ()
    chosen = dict(QUICK_FLAGS)
    if optimization_level is not None:
        chosen[OPTIMIZATION_FLAG] = str(optimization_level)
    added = tuple(f"--{name}={value}" for name, value in chosen.items() if name not in flags)
    if added:
        environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
    return added
