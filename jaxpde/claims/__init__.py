"""The claims of the paper that jaxpde certifies, each with a proof in `proofs/<id>.md`.

`CLAIMS` is the registry that `jaxpde certify` runs; `get_claim(id)` looks one up.
"""

from .explicit import (
    EXPLICIT_STABILITY,
    EXPLICIT_STABILITY_SHARP,
    NONMONOTONE_STABILITY,
)
from .invariants import MASS_CONSERVATION, MAX_MIN_PRINCIPLE
from .operators import DERIVATIVE_NORM
from .registry import QUICK as QUICK
from .registry import THOROUGH as THOROUGH
from .registry import Budget as Budget
from .registry import Claim as Claim
from .registry import Evidence as Evidence

CLAIMS: tuple[Claim, ...] = (
    DERIVATIVE_NORM,
    EXPLICIT_STABILITY,
    EXPLICIT_STABILITY_SHARP,
    NONMONOTONE_STABILITY,
    MASS_CONSERVATION,
    MAX_MIN_PRINCIPLE,
)


def get_claim(claim_id: str) -> Claim:
    """The registered claim with this id (a `KeyError` lists the known ids)."""
    for claim in CLAIMS:
        if claim.id == claim_id:
            return claim
    raise KeyError(f"unknown claim id {claim_id!r}; known: {[c.id for c in CLAIMS]}")
