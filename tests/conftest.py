import os
import pathlib
import tempfile

import hypothesis
import jax

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
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
