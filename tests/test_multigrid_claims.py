"""The multigrid claims, checked as `jaxpde certify` does (in their own test file, so that
the test workers check them in parallel with the other claims)."""

import jax
import pytest

from jaxpde.claims import MULTIGRID_CLAIMS, Budget, check_all

from .helpers import assert_certified

# The factors on 2^6 points (`multigrid_sizes`; `tests/test_multigrid.py` measures up to 2^10 and
# `jaxpde certify` up to 2^12).
BUDGET = Budget(samples=8, depth=2, sizes=(16,), name="test-multigrid", restarts=8, steps=20)


@pytest.fixture(scope="module")
def certificates() -> dict:
    return {c.claim_id: c for c in check_all(MULTIGRID_CLAIMS, jax.random.key(2), BUDGET, workers=2)}


@pytest.mark.parametrize("claim", MULTIGRID_CLAIMS, ids=[c.id for c in MULTIGRID_CLAIMS])
def test_multigrid_claim_certified(claim, certificates):
    assert_certified(claim, certificates[claim.id])
