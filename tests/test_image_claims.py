"""The claims on images, checked as `jaxpde certify` does (in their own test file, so that
the test workers check them in parallel with the other claims)."""

import jax
import numpy as np
import pytest

from jaxpde import Gradient, Stencil2D
from jaxpde.claims import IMAGE_CLAIMS, Budget, check_all, sampling

from .helpers import CLAIM_DEVICES, assert_certified

# Images of 4 x 5 and 4 x 6 and a short search: compiling the programs of twelve image operators
# dominates; `jaxpde certify` runs the full budgets.
BUDGET = Budget(samples=6, depth=2, sizes=(8,), name="test-images", restarts=8, steps=20)


@pytest.fixture(scope="module")
def certificates() -> dict:
    return {c.claim_id: c for c in check_all(IMAGE_CLAIMS, jax.random.key(5), BUDGET, workers=2, devices=CLAIM_DEVICES)}


@pytest.mark.parametrize("claim", IMAGE_CLAIMS, ids=[c.id for c in IMAGE_CLAIMS])
def test_image_claim_certified(claim, certificates):
    assert_certified(claim, certificates[claim.id])


def test_image_cases_cover_every_boundary_and_operator_kind():
    named = sampling.image_operator_cases(np.random.default_rng(0), (16, 33, 64, 129))
    kinds = {(type(op).__name__, op.boundary) for _, op in named}
    assert kinds == {(k, b) for k in ("Gradient", "Stencil2D") for b in ("neumann", "periodic", "dirichlet")}
    assert any(isinstance(op, Stencil2D) and op.kernel.ndim == 4 for _, op in named)  # channels
    assert {op.order for _, op in named if isinstance(op, Gradient)} == set(sampling.IMAGE_ORDERS)
    # At most 8 x 10 images, whatever the budget's sizes (dense matrices in the search).
    assert max(np.prod(op.in_shape[-2:]) for _, op in named) <= 80


def test_gradient_norm_claim_catches_a_wrong_bound(monkeypatch):
    # A norm bound 1% too small must be reported as violated (the check is not vacuous).
    claim = next(c for c in IMAGE_CLAIMS if c.id == "gradient-2d-norm")
    original = Gradient.norm_bound
    monkeypatch.setattr(Gradient, "norm_bound", lambda self: 0.99 * original(self))
    assert claim.check(jax.random.key(0), BUDGET).status == "violated"
