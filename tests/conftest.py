import os
import pathlib
import tempfile

import hypothesis
import jax
import pytest

from jaxpde._xla_flags import prefer_quick_compilation

# The suite compiles many small programs: XLA:CPU's loop emitters and LLVM's level 0, as
# `jaxpde certify` uses (`jaxpde._xla_flags`).
prefer_quick_compilation()

# Four CPU devices: the sharding tests run across them, and in the thorough profile the
# claim checks too (`helpers.CLAIM_DEVICES`); everything else runs on the first, as on a
# one-device machine.
jax.config.update("jax_num_cpu_devices", 4)
# Numerics tests run in float64 on purpose; float32 paths are tested explicitly.
jax.config.update("jax_enable_x64", True)
# Catch silent broadcasting in stencils.
jax.config.update("jax_numpy_rank_promotion", "raise")
# The test workers (pytest-xdist) share compiled programs that take a second or more to
# compile, through JAX's persistent cache (keyed by the program, so never stale).
_CACHE = os.environ.get("JAXPDE_TEST_CACHE_DIR", str(pathlib.Path(tempfile.gettempdir()) / "jaxpde-test-xla"))
if _CACHE:
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

hypothesis.settings.register_profile(
    "ci",
    max_examples=15,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
    derandomize=True,
)
hypothesis.settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
hypothesis.settings.load_profile(PROFILE)


# The two workers take one file at a time in collection order (pyproject.toml: --dist
# loadfile, --no-loadscope-reorder). Files with long single tests go first, so that the
# last files to start are short ones and neither worker idles at the end.
LONG_FILES_FIRST = (
    "test_claims.py", "test_scheme_claims.py", "test_readme.py", "test_sharding.py", "test_multigrid_claims.py",
    "test_network_claims.py", "test_image_claims.py", "test_demo.py", "test_multigrid2d.py", "test_resnet2d.py",
    "test_unet.py", "test_multigrid.py",
)


def pytest_collection_modifyitems(config, items):
    """Long files first (stable otherwise); tests and parameters marked `thorough` (heavy,
    compile-bound variants of properties that the default run tests on fewer cases) run
    only in the thorough profile."""
    rank = {name: k for k, name in enumerate(LONG_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
    if PROFILE == "thorough":
        return
    skip = pytest.mark.skip(reason="a heavy variant: runs with HYPOTHESIS_PROFILE=thorough")
    for item in items:
        if item.get_closest_marker("thorough") is not None:
            item.add_marker(skip)
