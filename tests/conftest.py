import os

import hypothesis
import jax

# Numerics tests run in float64 on purpose; float32 paths are tested explicitly.
jax.config.update("jax_enable_x64", True)
# Catch silent broadcasting in stencils.
jax.config.update("jax_numpy_rank_promotion", "raise")

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
