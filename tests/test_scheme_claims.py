"""The claims about FED, FSI and implicit schemes, checked as `jaxpde certify` does (in
their own test file, so that the test workers check them in parallel with the claims
about the explicit block)."""

import jax
import pytest

from jaxpde.claims import SCHEME_CLAIMS, Budget, check_all, warm_up

from .helpers import assert_certified

# Fewer samples and a shorter search than the explicit claims' test budget: compiling the
# scheme programs dominates, and `jaxpde certify` runs the full budgets.
BUDGET = Budget(samples=5, depth=2, sizes=(16,), name="test-schemes", restarts=8, steps=20)


@pytest.fixture(scope="module")
def certificates() -> dict:
    budget = BUDGET
    warm_up(budget, workers=2, parts=("schemes",))
    return {c.claim_id: c for c in check_all(SCHEME_CLAIMS, jax.random.key(1), budget, workers=2)}


@pytest.mark.parametrize("claim", SCHEME_CLAIMS, ids=[c.id for c in SCHEME_CLAIMS])
def test_scheme_claim_certified(claim, certificates):
    assert_certified(claim, certificates[claim.id])
