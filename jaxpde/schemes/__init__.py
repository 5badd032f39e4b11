"""Time-stepping schemes built from diffusion blocks."""

from .explicit import ExplicitScheme as ExplicitScheme
from .rollout import rollout as rollout
