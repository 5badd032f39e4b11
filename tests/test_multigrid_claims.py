"""The multigrid claims, checked as `jaxpde certify` does (in their own test file, so that
the test workers check them in parallel with the other claims)."""

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest

from jaxpde import Derivative
from jaxpde.claims import MULTIGRID_CLAIMS, Budget, check_all
from jaxpde.claims import multigrid as claims
from jaxpde.schemes import Multigrid, multigrid_cycle

from .helpers import (
    CLAIM_DEVICES,
    CompilationLog,
    assert_certified,
    few_examples,
    tolerance,
)

TOL = tolerance(np.float64)

# The factors on 2^6 points (`multigrid_sizes`; `tests/test_multigrid.py` measures up to 2^10 and
# `jaxpde certify` up to 2^12).
BUDGET = Budget(samples=8, depth=2, sizes=(16,), name="test-multigrid", restarts=8, steps=20)


@pytest.fixture(scope="module")
def certificates() -> dict:
    return {c.claim_id: c for c in check_all(MULTIGRID_CLAIMS, jax.random.key(2), BUDGET, workers=2, devices=CLAIM_DEVICES)}


@pytest.mark.parametrize("claim", MULTIGRID_CLAIMS, ids=[c.id for c in MULTIGRID_CLAIMS])
def test_multigrid_claim_certified(claim, certificates):
    assert_certified(claim, certificates[claim.id])


# --- the level-wise measurement of `multigrid-contraction` -----------------------------------

# (m, boundary, n): the level shapes of `_factor_cases` on small grids.
LEVEL_CASES = ((1, "neumann", 64), (1, "periodic", 64), (2, "neumann", 64), (2, "periodic", 128))


@eqx.filter_jit
def _reference(systems, x, f):
    """`Multigrid().hierarchy` and one `multigrid_cycle` of each system, as a whole."""
    def one(A, x, f):
        hierarchy = Multigrid().hierarchy(A)
        return hierarchy.operators, hierarchy.coarse_factor, multigrid_cycle(hierarchy, x, f)

    return jax.vmap(one)(systems, x, f)


def _close(actual, expected, scale=None):
    expected = np.asarray(expected)
    scale = np.abs(expected).max() if scale is None else scale
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=0, atol=TOL["atol"] * scale)


@few_examples(4)
@hypothesis.given(case=st.sampled_from(LEVEL_CASES), seed=st.integers(0, 2**31 - 1))
def test_level_wise_hierarchy_and_cycle_are_the_library_ones_property(case, seed):
    """The claim's hierarchies built level by level (`coarse_operator` per level, then
    `coarse_factor`) and its cycle run level by level (`descend`, coarse solve, `ascend`,
    each a program of its own) equal `Multigrid().hierarchy` and `multigrid_cycle`, for
    random systems, iterates and right-hand sides."""
    order, boundary, n = case
    rng = np.random.default_rng(seed)
    op = Derivative(order, n, boundary=boundary)
    systems, _, schedule = claims._systems(op, claims.TAUS, rng.integers(2**31, size=len(claims.TAUS)), 2)
    levels, factors = claims._level_hierarchy(Multigrid(), systems, schedule)
    x, f = rng.standard_normal((2, systems.diagonals.shape[0], n))
    operators, factor, expected = _reference(systems, x, f)
    assert len(levels) == len(operators) - 1
    for level, A in zip(levels, operators):
        _close(level.operator.diagonals, A.diagonals)
    _close(factors, factor)
    # The two programs round the residual f - Ax apart by eps ||A|| ||x|| (||A|| up to 1e5).
    norm = float(np.abs(np.asarray(systems.diagonals)).sum(axis=1).max())
    _close(claims._level_cycle(levels, factors, x, f), expected, norm * max(np.abs(x).max(), np.abs(f).max()))


def test_level_programs_are_shared_between_sizes():
    """Measuring n = 64 and then n = 256 (D_1, periodic) compiles the per-level programs of
    the two finer levels of n = 256 only: its coarser levels have the shapes of n = 64's
    (each program takes one level's data, not the whole hierarchy)."""
    log = CompilationLog()
    for n in (64, 256):
        log.phase = n
        op = Derivative(1, n, boundary="periodic")
        errors = np.random.default_rng(n).standard_normal((len(claims.TAUS) * 3, n))
        claims._power_iteration(op, np.arange(len(claims.TAUS)), errors, 2)
    log.phase = None
    for program in ("_level", "_descend", "_ascend"):
        compiled = [name for name in log.compiled.get(256, []) if name == f"jit({program})"]
        assert len(compiled) <= 2, (program, log.compiled)  # levels 256 and 128; 64 and 32 are shared


# --- the stragglers of `semi-implicit-multigrid-stability` ------------------------------------

STRAGGLER_BUDGET = Budget(samples=8, depth=1, sizes=(16,), name="test-stragglers", restarts=2, steps=2)


def _missing_first_solves(monkeypatch, straggler_solve=claims._straggler_solve):
    """Every first solve reported as a straggler (the solve again then decides)."""
    first = claims._first_solve

    def missed(*args):
        v, gain, residual, cycles, _ = first(*args)
        return v, gain, residual, cycles, np.bool_(False)

    monkeypatch.setattr(claims, "_first_solve", missed)
    monkeypatch.setattr(claims, "_straggler_solve", straggler_solve)


def test_stragglers_are_solved_again_and_counted(monkeypatch):
    _missing_first_solves(monkeypatch)
    certificate = claims.SEMI_IMPLICIT_MULTIGRID_STABILITY.check(jax.random.key(3), STRAGGLER_BUDGET)
    assert certificate.status == "certified", certificate.message
    total = certificate.samples
    assert f"({total} of {total} solves" in certificate.hypotheses["solver"]


def test_a_straggler_that_stays_unconverged_is_a_violation(monkeypatch):
    again = claims._straggler_solve

    def unconverged(*args):
        v, gain, residual, cycles, _ = again(*args)
        return v, gain, residual, cycles, np.bool_(False)

    _missing_first_solves(monkeypatch, unconverged)
    certificate = claims.SEMI_IMPLICIT_MULTIGRID_STABILITY.check(jax.random.key(3), STRAGGLER_BUDGET)
    assert certificate.status == "violated"
    assert "solves not converged" in certificate.message
