"""XLA:CPU settings for many small programs that each run briefly: `jaxpde certify` and the
test suite compile hundreds of them, and there compilation, not running, takes the time.

XLA:CPU's fusion emitters (its default since 2025) generate each fusion through MLIR and
compile two to four times slower than its loop emitters on these programs (measured on a
multigrid level of the claims: 0.55 s against 0.13 s, `benchmarks/results/certify-time-cpu.md`
for the whole command). `prefer_quick_compilation()` selects the loop emitters for the
process, through `XLA_FLAGS`, before JAX starts its backends. It does not touch a flag
the user has set, and it sets nothing on jaxlib versions outside those known to define the
flag (XLA aborts the process on an unknown flag in `XLA_FLAGS`). Library code that users
call from their own programs is unaffected: only the `jaxpde` command and the tests call it.
"""

import importlib.metadata
import os
from collections.abc import MutableMapping

FLAG = "xla_cpu_use_fusion_emitters"
QUICK_COMPILATION = f"--{FLAG}=false"
# `compiler_options` of a program that asks for the fusion emitters whatever the process
# selects: one that runs long enough for their faster code to pay, or whose tolerance
# assumes their rounding.
FUSION_EMITTERS = {FLAG: True}
# jaxlib versions (major, minor) whose XLA defines `FLAG`: from the lowest that jaxpde
# supports up to the newest on which it was measured.
KNOWN_VERSIONS = ((0, 8), (0, 10))


def _jaxlib_version() -> tuple[int, int] | None:
    try:
        major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def prefer_quick_compilation(environ: MutableMapping[str, str] = os.environ, version=None) -> bool:
    """Append `QUICK_COMPILATION` to `XLA_FLAGS` in `environ`, unless `XLA_FLAGS` already
    names the flag or the jaxlib `version` (default: the installed one) is outside
    `KNOWN_VERSIONS`. Takes effect only if JAX has not started its backends yet (call it
    before the first computation). Returns whether the flag is now set to false."""
    flags = environ.get("XLA_FLAGS", "")
    if FLAG in flags:
        return QUICK_COMPILATION in flags.split()
    version = _jaxlib_version() if version is None else version
    low, high = KNOWN_VERSIONS
    if version is None or not low <= tuple(version) <= high:
        return False
    environ["XLA_FLAGS"] = f"{flags} {QUICK_COMPILATION}".strip()
    return True
