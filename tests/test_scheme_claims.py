"""The claims about FED, FSI and implicit schemes, checked as `jaxpde certify` does (in
their own test file, so that the test workers check them in parallel with the claims
about the explicit block)."""

import functools
import math

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest

from jaxpde import Derivative, stable_step_size
from jaxpde.claims import (
    QUICK,
    SCHEME_CLAIMS,
    THOROUGH,
    Budget,
    check_all,
    cycles,
    get_claim,
    sampling,
    schemes,
    warm_up,
)

from .helpers import CLAIM_DEVICES, CompilationLog, assert_certified, tolerance

# Fewer samples and a shorter search than the explicit claims' test budget: compiling the
# scheme programs dominates, and `jaxpde certify` runs the full budgets.
BUDGET = Budget(samples=5, depth=2, sizes=(16,), name="test-schemes", restarts=8, steps=20)


COMPILATIONS = CompilationLog()  # phase -> names of the programs XLA compiled in it
COMPILED = COMPILATIONS.compiled


@pytest.fixture(scope="module")
def certificates() -> dict:
    budget = BUDGET
    COMPILATIONS.phase = "warm-up"
    try:
        warm_up(budget, workers=2, parts=("schemes",), devices=CLAIM_DEVICES)
        COMPILATIONS.phase = "claims"
        return {c.claim_id: c for c in check_all(SCHEME_CLAIMS, jax.random.key(1), budget, workers=2, devices=CLAIM_DEVICES)}
    finally:
        COMPILATIONS.phase = None


@pytest.mark.parametrize("claim", SCHEME_CLAIMS, ids=[c.id for c in SCHEME_CLAIMS])
def test_scheme_claim_certified(claim, certificates):
    assert_certified(claim, certificates[claim.id])


def test_warm_up_compiles_the_scheme_programs_that_the_claims_then_run(certificates):
    """`warm_up` compiles the scheme programs ahead of time (`schemes.compile_run`: the
    sampled measurement of every scheme kind, the falsifier where it searches) without
    running them, and the claims, checked afterwards in parallel threads, find them compiled."""
    warmed = COMPILED.get("warm-up", [])
    assert "jit(_measure)" in warmed or not COMPILED.get("claims")  # compiled here (unless an earlier test did)
    again = [name for name in COMPILED.get("claims", []) if name == "jit(_measure)"]
    assert again == [], f"the scheme claims compiled `schemes.measure` again: {again}"


def test_fed_rounding_runs_one_program_for_every_cycle_length():
    """`fed-rounding` runs its float32 and float64 cycles of every length in one compiled
    program (step sizes padded with identity steps, passed as data)."""
    claim = get_claim("fed-rounding")
    COMPILATIONS.phase = "fed-rounding"
    try:
        certificate = claim.check(jax.random.key(4), BUDGET)
    finally:
        COMPILATIONS.phase = None
    assert_certified(claim, certificate)
    assert COMPILED.get("fed-rounding", []).count("jit(fed_rounding_errors)") <= 1


@pytest.mark.parametrize("order", ["ascending", "kappa"])
def test_fed_rounding_refutes_other_step_orders(order, monkeypatch):
    """The defect that `fed-rounding` guards against, planted: the FED steps in another
    order, the ascending one or the kappa-cycles (the default before the Leja order). Both
    break the amplification bound; the ascending order also overflows in float32."""
    from jaxpde.claims import cycles
    from jaxpde.schemes import fed

    monkeypatch.setattr(cycles, "fed_step_sizes", functools.partial(fed.fed_step_sizes, order=order))
    certificate = get_claim("fed-rounding").check(jax.random.key(3), BUDGET)
    assert certificate.status == "violated", certificate.message
    assert "amplification / (2 n^1.5), n in [301, 500]" in certificate.message
    if order == "ascending":
        assert certificate.falsifier.nonfinite > 0


# A wrong solver must make each stability claim "violated": the ratio
# ||v|| / (||u|| + ||r||) <= 1 holds for any v with <Kv, Phi(Kv)> >= 0, so only the residual
# check (against the solver's stated tolerance) can catch it.
PLANTED_BUDGET = Budget(samples=5, depth=1, sizes=(8,), name="test-planted", restarts=2, steps=2)


@pytest.mark.parametrize(
    "claim_id", ["implicit-stability", "semi-implicit-stability", "semi-implicit-stability-2d", "semi-implicit-multigrid-stability"]
)
def test_stability_claims_refute_a_wrong_solver(claim_id, monkeypatch):
    from jaxpde.claims import get_claim, multigrid, schemes
    from jaxpde.schemes import Result, Solution

    # Each solver returns 0.9 u: not a solution (its residual is 0.1 u - 0.9 tau A u), but
    # ||v|| <= ||u|| + ||r|| holds for it.
    def scaled_implicit(op, flux, tau, u, iterations=None, target=None):
        return 0.9 * u, jax.numpy.zeros((), u.dtype)  # and claims a zero residual

    def scaled_dense_solve(matrix, g, tau, u):
        return 0.9 * u

    def scaled_system_solve(op, flux, tau, rhs, **kwargs):
        zero = jax.numpy.zeros((), rhs.dtype)
        return Solution(0.9 * rhs, Result.successful, jax.numpy.array(0), zero)

    monkeypatch.setattr(schemes, "newton_or_lagged", scaled_implicit)
    monkeypatch.setattr(schemes, "dense_semi_implicit_solve", scaled_dense_solve)
    monkeypatch.setattr(multigrid, "solve_diffusion_system", scaled_system_solve)
    jax.clear_caches()  # retrace the programs with the planted solver
    try:
        certificate = get_claim(claim_id).check(jax.random.key(3), PLANTED_BUDGET)
    finally:
        monkeypatch.undo()
        jax.clear_caches()  # no program with the planted solver survives this test
    assert certificate.status == "violated", certificate.message
    assert "tolerance" in certificate.message or "not converged" in certificate.message


def test_dense_semi_implicit_solve_and_its_gradient():
    # The claims' dense semi-implicit solve against NumPy, and its implicit-function
    # gradient (custom VJP) against central differences, in every argument.
    import jax.numpy as jnp
    import numpy as np

    from jaxpde.claims.schemes import dense_semi_implicit_solve

    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        matrix, g = rng.standard_normal((9, 7)), rng.uniform(0.1, 2.0, 9)
        tau, u, weights = 3.0, rng.standard_normal(7), rng.standard_normal(7)
        args = [jnp.asarray(matrix), jnp.asarray(g), jnp.asarray(tau), jnp.asarray(u)]
        v = dense_semi_implicit_solve(*args)
        np.testing.assert_allclose(v, np.linalg.solve(np.eye(7) + tau * matrix.T @ (g[:, None] * matrix), u), rtol=1e-12)

        def loss(*xs):
            return jnp.sum(jnp.asarray(weights) * dense_semi_implicit_solve(*xs))

        grads = jax.grad(loss, argnums=(0, 1, 2, 3))(*args)
        for index, grad in enumerate(grads):
            direction = rng.standard_normal(np.shape(args[index]))
            step = 1e-6
            plus = [a + step * direction if i == index else a for i, a in enumerate(args)]
            minus = [a - step * direction if i == index else a for i, a in enumerate(args)]
            numeric = (loss(*plus) - loss(*minus)) / (2 * step)
            np.testing.assert_allclose(np.sum(np.asarray(grad) * direction), numeric, rtol=1e-6)


class _Shaped:
    """An operator stand-in for `case_groups`, which reads only the shapes."""

    def __init__(self, rows: int, cols: int):
        self.out_shape, self.in_shape = (rows,), (cols,)


def _padded_size(shapes, group) -> int:
    return len(group) * max(shapes[i][0] for i in group) * max(shapes[i][1] for i in group)


def test_case_groups_pad_the_multichannel_stencils_apart():
    ops = [op for _, op in sampling.operator_cases(np.random.default_rng(0), (16, 33))]
    groups = schemes.case_groups(ops)
    assert sorted(i for group in groups for i in group) == list(range(len(ops)))
    shapes = [(math.prod(op.out_shape), math.prod(op.in_shape)) for op in ops]
    assert [max(shapes[i][0] for i in group) for group in groups] == [36, 108]
    named = sampling.operator_cases(np.random.default_rng(0), (16, 33))
    assert {i for i, (name, _) in enumerate(named) if "->" in name} == set(groups[1])  # the 1 -> 3 channel stencils
    assert schemes.case_groups([Derivative(1, 16), Derivative(1, 17), Derivative(2, 16)]) == [[0, 1, 2]]  # too little gain


@hypothesis.given(st.lists(st.tuples(st.integers(1, 120), st.integers(1, 90)), min_size=1, max_size=9))
def test_case_groups_partition_and_split_only_for_the_stated_gain(shapes):
    groups = schemes.case_groups([_Shaped(*shape) for shape in shapes])
    assert 1 <= len(groups) <= 2 and all(groups)
    assert sorted(i for group in groups for i in group) == list(range(len(shapes)))
    whole = _padded_size(shapes, range(len(shapes)))
    split = sum(_padded_size(shapes, group) for group in groups)
    if len(groups) == 2:
        assert split <= schemes.SPLIT_GAIN * whole
    else:  # no split by rows or by columns reaches the gain (an independent search)
        for key in (0, 1):
            order = sorted(range(len(shapes)), key=lambda i: shapes[i][key])
            for k in range(1, len(order)):
                assert _padded_size(shapes, order[:k]) + _padded_size(shapes, order[k:]) > schemes.SPLIT_GAIN * whole


def test_run_reports_every_case_at_its_own_index():
    """The groups' results are put back in the order of the cases: an unstable step size
    planted on one case of the second group shows at that case alone."""
    rng = np.random.default_rng(3)
    ops = [op for _, op in sampling.operator_cases(rng, (16,))]
    budget = Budget(samples=5, depth=2, sizes=(16,), name="test-split", restarts=50, steps=20)  # no search: cheap
    groups = schemes.run_groups(ops, "cycle", budget)
    assert len(groups) == 2 and schemes.run_groups(ops, "cycle", BUDGET) == [list(range(len(ops)))]
    planted = groups[1][0]
    fluxes = [sampling.random_fluxes(rng) for _ in ops]
    taus = np.array([[float(stable_step_size(op, f)) for f in fs] for op, fs in zip(ops, fluxes)])
    taus[planted] *= 8  # explicit steps beyond the bound: the linear flux grows
    measured, _ = schemes.run(rng, ops, fluxes, taus, "cycle", budget, coefficients=cycles.coefficients("fed", 1), search=False)
    ratios = np.max(measured.ratio, axis=(1, 2))
    assert ratios[planted] > 1.5
    assert np.all(np.delete(ratios, planted) <= 1 + 1e-12)


def test_implicit_samples_that_miss_the_tolerance_are_solved_again(monkeypatch):
    """`run` solves again the "implicit" samples whose residual missed the tolerance
    (`resolve_stragglers`): one sample's excess planted as infinite in the batch is solved
    again and then meets the tolerance; without stragglers, nothing is solved again."""
    from jaxpde.claims import sampling, schemes

    rng = np.random.default_rng(4)
    ops = [op for _, op in sampling.operator_cases(rng, PLANTED_BUDGET.sizes)][:2]
    fluxes = [sampling.random_fluxes(rng) for _ in ops]
    taus = np.array([[float(stable_step_size(op, f)) for f in fs] for op, fs in zip(ops, fluxes)])
    calm, _ = schemes.run(np.random.default_rng(5), ops, fluxes, taus, "implicit", PLANTED_BUDGET, search=False)
    assert calm.resolved == 0 and np.all(calm.excess <= 1)
    measure = schemes.measure

    def one_missed(*args):
        sampled = measure(*args)
        return schemes.SchemeMeasurements(sampled.ratio, sampled.residual, sampled.excess.at[0, 0, 0].set(np.inf))

    monkeypatch.setattr(schemes, "measure", one_missed)
    sampled, _ = schemes.run(np.random.default_rng(5), ops, fluxes, taus, "implicit", PLANTED_BUDGET, search=False)
    assert sampled.resolved == 1 and np.all(sampled.excess <= 1)


def test_only_long_budgets_measure_with_the_programs_compiled_with_xlas_defaults(monkeypatch):
    """`runs_optimised`: `QUICK` and `THOROUGH` measure with the programs compiled with XLA's
    defaults, the tests' budgets with the process's settings (`run` passes the choice to
    `measure`), and the two programs measure the same."""
    long = Budget(samples=50, depth=2, sizes=(8,), name="test-long", restarts=2, steps=2)
    assert all(schemes.runs_optimised(b) for b in (QUICK, THOROUGH, long))
    assert not any(schemes.runs_optimised(b) for b in (BUDGET, PLANTED_BUDGET))
    rng = np.random.default_rng(6)
    ops = [op for _, op in sampling.operator_cases(rng, PLANTED_BUDGET.sizes)][:2]
    fluxes = [sampling.random_fluxes(rng) for _ in ops]
    taus = np.array([[5 * float(stable_step_size(op, f)) for f in fs] for op, fs in zip(ops, fluxes)])
    measure, calls = schemes.measure, []

    def recording(*args):
        calls.append(args)
        return measure(*args)

    monkeypatch.setattr(schemes, "measure", recording)
    for budget in (PLANTED_BUDGET, long):
        schemes.run(np.random.default_rng(7), ops, fluxes, taus, "semi-implicit", budget, search=False)
    assert [args[-1] for args in calls] == [False, True]
    *arguments, _ = calls[1]
    optimised, quick = (jax.tree.map(np.asarray, measure(*arguments, flag)) for flag in (True, False))
    tol = tolerance(np.float64)
    np.testing.assert_allclose(optimised.ratio, quick.ratio, rtol=tol["rtol"], atol=0)
    np.testing.assert_allclose(optimised.residual, quick.residual, rtol=0, atol=tol["atol"])
    assert np.all(optimised.excess <= 1) and np.all(quick.excess <= 1)


def test_a_re_solve_stops_once_its_residual_meets_the_target():
    """`newton_or_lagged` with a `target` (the stragglers' re-solves) returns the iterate of
    the fixed count at which the smallest residual first meets the target, for each member
    of a batch on its own; without a target it runs the fixed count."""
    import jax.numpy as jnp

    from jaxpde import Matrix, fluxes
    from jaxpde.claims import schemes

    with jax.enable_x64(True):
        rng = np.random.default_rng(8)
        op = Matrix(rng.standard_normal((12, 8)))
        flux = fluxes.PeronaMalik(0.3)
        tau = jnp.asarray(50.0)
        us = jnp.asarray(rng.standard_normal((2, 8)) * np.array([[1.0], [4.0]]))
        solve = eqx.filter_jit(schemes.newton_or_lagged)
        counts = range(13)
        fixed = [[solve(op, flux, tau, u, jnp.asarray(k)) for k in counts] for u in us]  # one program
        targets, expected = [], []
        for runs in fixed:
            norms = [float(norm) for _, norm in runs]
            assert norms[0] > norms[-1]  # the iterations make progress from the start
            target = 2 * norms[3]
            first = next(k for k, norm in enumerate(norms) if norm <= target)
            targets.append(target)
            expected.append(runs[first][0])
        stopped = eqx.filter_jit(jax.vmap(lambda u, t: schemes.newton_or_lagged(op, flux, tau, u, 64, t)))(us, jnp.asarray(targets))
        for v, norm, target, want in zip(*stopped, targets, expected):
            assert float(norm) <= target
            np.testing.assert_allclose(np.asarray(v), np.asarray(want), rtol=0, atol=1e-13 * float(jnp.max(jnp.abs(want))))
