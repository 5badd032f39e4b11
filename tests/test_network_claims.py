"""The network claims, checked as `jaxpde certify` does (in their own test file, so that
the test workers check them in parallel with the other claims)."""

import jax
import pytest

from jaxpde.claims import NETWORK_CLAIMS, Budget, check_all

from .helpers import CLAIM_DEVICES, assert_certified

BUDGET = Budget(samples=6, depth=2, sizes=(16,), name="test-networks", restarts=8, steps=20)


@pytest.fixture(scope="module")
def certificates() -> dict:
    return {c.claim_id: c for c in check_all(NETWORK_CLAIMS, jax.random.key(3), BUDGET, workers=2, devices=CLAIM_DEVICES)}


@pytest.mark.parametrize("claim", NETWORK_CLAIMS, ids=[c.id for c in NETWORK_CLAIMS])
def test_network_claim_certified(claim, certificates):
    assert_certified(claim, certificates[claim.id])
