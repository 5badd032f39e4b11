import dataclasses
import json
import pathlib

import jax
import numpy as np
import pytest

import jaxpde
import jaxpde.claims
from jaxpde.blocks import stable_step_size
from jaxpde.claims import (
    CLAIMS,
    IMAGE_CLAIMS,
    MULTIGRID_CLAIMS,
    NETWORK_CLAIMS,
    SCHEME_CLAIMS,
    Budget,
    Claim,
    Evidence,
    adversarial,
    check_all,
    get_claim,
    sampling,
    warm_up,
)
from jaxpde.cli import main
from jaxpde.fluxes import Linear
from jaxpde.verify import spectral_norm
from jaxpde.verify.certificate import CaseResult

from .helpers import (
    CLAIM_DEVICES,
    CompilationLog,
    assert_certified,
    claim_budget,
    spectral_norm_svd,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_BUDGET = claim_budget()


EXPLICIT_CLAIMS = tuple(
    claim for claim in CLAIMS if claim not in SCHEME_CLAIMS + MULTIGRID_CLAIMS + NETWORK_CLAIMS + IMAGE_CLAIMS
)


NORM_CLAIMS = ("derivative-norm", "spectral-norm-bounds")
# The programs that the explicit claims share (`warm_up` compiles them once each).
SHARED_PROGRAMS = ("jit(evaluate_cases)", "jit(attack)")
COMPILATIONS = CompilationLog()  # phase -> names of the programs XLA compiled in it
COMPILED = COMPILATIONS.compiled


@pytest.fixture(scope="module")
def certificates() -> dict:
    """The claims about the explicit block checked once, in parallel threads (as
    `jaxpde certify` does); the scheme claims run in `test_scheme_claims.py`, on the
    other test worker. XLA's compilations are recorded per phase (`COMPILED`)."""
    # The two norm claims search their own operator sets (objective "operator"): checked
    # in a phase of their own.
    norm_claims = [c for c in EXPLICIT_CLAIMS if c.id in NORM_CLAIMS]
    others = [c for c in EXPLICIT_CLAIMS if c.id not in NORM_CLAIMS]
    # From a clean slate, so that every compilation is counted: a program that an earlier
    # test file compiled in this worker would hide a second compilation of it.
    jax.clear_caches()
    COMPILATIONS.phase = "warm-up"
    try:
        warm_up(TEST_BUDGET, workers=2, parts=("explicit",), devices=CLAIM_DEVICES)
        COMPILATIONS.phase = "claims"
        checked = check_all(others, jax.random.key(1), TEST_BUDGET, workers=2, devices=CLAIM_DEVICES)
        COMPILATIONS.phase = "norm claims"
        checked += check_all(norm_claims, jax.random.key(2), TEST_BUDGET, workers=2, devices=CLAIM_DEVICES)
    finally:
        COMPILATIONS.phase = None
    return {c.claim_id: c for c in checked}


@pytest.mark.parametrize("claim", EXPLICIT_CLAIMS, ids=[c.id for c in EXPLICIT_CLAIMS])
def test_claim_certified(claim, certificates):
    assert_certified(claim, certificates[claim.id])


@pytest.mark.parametrize("claim", CLAIMS, ids=[c.id for c in CLAIMS])
def test_every_claim_has_a_proof_that_names_its_tests(claim):
    proof = ROOT / claim.proof
    assert proof.is_file(), f"missing {claim.proof}"
    text = proof.read_text()
    for section in ("## Statement", "## Assumptions", "## Proof", "## How it is checked"):
        assert section in text
    assert "tests/" in text


def test_claim_ids_are_unique_and_known():
    ids = [c.id for c in CLAIMS]
    assert len(set(ids)) == len(ids)
    assert get_claim("explicit-stability").id == "explicit-stability"
    with pytest.raises(KeyError, match="known"):
        get_claim("no-such-claim")


def _unstable_run(key, budget):
    """A planted violation: the explicit step at 1.5 x the bound with a linear flux."""
    rng = sampling.numpy_rng(key)
    op = jaxpde.Derivative(1, 16)
    fluxes = sampling.random_fluxes(rng)
    measured = sampling.measure(rng, op, fluxes, budget.samples, budget.depth, step_multipliers=[1.5] * 6)
    linear = [type(f) for f in fluxes].index(Linear)
    worst = float(np.max(measured.ratio[linear]))
    return Evidence((CaseResult("D1 linear 1.5x", budget.samples, worst, 1.0, 1e-13, worst <= 1 + 1e-13),), 1.0, "<=", "planted")


def test_a_planted_violation_is_reported():
    certificate = Claim("planted", "a false claim", _unstable_run).check(jax.random.key(0), TEST_BUDGET)
    assert certificate.status == "violated"
    assert certificate.worst > 1.1
    assert "D1 linear 1.5x" in certificate.message


def test_an_exception_is_reported_as_error():
    def broken(key, budget):
        raise RuntimeError("boom")

    certificate = Claim("broken", "never checked", broken).check(jax.random.key(0), TEST_BUDGET)
    assert certificate.status == "error" and "boom" in certificate.message


def test_budget_validation():
    with pytest.raises(ValueError, match="samples"):
        Budget(samples=1, depth=1, sizes=(8,), name="tiny")


def test_cli_json_and_report(tmp_path, capsys, monkeypatch, certificates):
    monkeypatch.setenv("JAXPDE_CACHE_DIR", "")
    # The programs that `certificates` compiled: its budget, on its devices.
    monkeypatch.setattr(jaxpde.claims, "QUICK", TEST_BUDGET)
    claims = ["--claim", "derivative-norm", "--claim", "max-min-principle"]
    devices = ["--devices", CLAIM_DEVICES] if CLAIM_DEVICES else []
    code = main(["certify", "--json", *claims, *devices, "--out", str(tmp_path)])
    assert code == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in results] == ["derivative-norm", "max-min-principle"]
    for result in results:
        assert {"id", "status", "samples", "worst", "bound", "seconds"} <= set(result)
        assert result["status"] == "certified"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["claims"][0]["cases"]
    assert "| `derivative-norm` | certified |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "norm_decay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_exit_code_is_nonzero_when_a_claim_fails(capsys, monkeypatch):
    monkeypatch.setenv("JAXPDE_CACHE_DIR", "")
    planted = Claim("planted", "a false claim", _unstable_run)
    monkeypatch.setattr(jaxpde.claims, "CLAIMS", (planted,))
    assert main(["certify", "--claim", "planted"]) == 1
    assert "violated" in capsys.readouterr().out
    assert main(["certify", "--claim", "nope"]) == 2


def test_warm_up_compiles_every_shared_program_once(certificates):
    """`warm_up` compiles the padded evaluation once and the falsifier once for all its
    objectives (counted by XLA's compilations from cleared caches, `certificates`), and the claims,
    checked afterwards in parallel, compile neither again: every operator of every claim
    runs in the programs that `warm_up` prepared."""
    warmed = COMPILED.get("warm-up", [])
    assert warmed.count("jit(evaluate_cases)") == 1, warmed
    assert warmed.count("jit(attack)") == 1, warmed
    again = [name for name in COMPILED.get("claims", []) if name in SHARED_PROGRAMS]
    assert again == [], f"the claims compiled shared programs again: {again}"
    # The registry's claims use only the objectives that `warm_up` compiles (images: "gain").
    assert {"gain", "mass", "range", "energy", "variance", "convex", "lipschitz"} <= set(jaxpde.claims.SIGNAL_OBJECTIVES)


# --- the falsifier side of the checks: one padded program for every operator ---




def _cases(factor: float):
    """Step sizes factor * 2 / (L lower^2) with the power-iteration lower bound of ||K||:
    for factor > 1 above the sharp bound, whatever the slack of norm_bound()."""
    rng = np.random.default_rng(0)
    ops = [op for _, op in sampling.operator_cases(rng, TEST_BUDGET.sizes)]
    fluxes = [sampling.random_fluxes(rng) for _ in ops]
    lowers = [float(spectral_norm(op).lower) if factor > 1 else float(op.norm_bound()) for op in ops]
    taus = np.array([[factor * 2 / (float(f.sector_bound()) * low**2) for f in fs] for low, fs in zip(lowers, fluxes)])
    return rng, ops, fluxes, taus


def test_padding_is_exact_for_the_operator_objective():
    rng, ops, fluxes, taus = _cases(1.0)
    found = adversarial.attack_operators(rng, ops, fluxes, taus, "operator", TEST_BUDGET)
    for c, op in enumerate(ops):
        sigma = spectral_norm_svd(op.as_matrix())
        assert np.all(found.worst[c] <= sigma * (1 + 1e-12))
        assert np.all(found.worst[c] >= 0.95 * sigma)  # Adam gets close, power iteration closer
        # Padded input entries stay zero.
        assert np.all(found.witness[0][c][:, int(np.prod(op.in_shape)):] == 0)


def test_each_objective_of_the_shared_program_is_its_own_program():
    """The signal objectives share one program (`adversarial.attack` switches on the
    objective's index): for one-input and pair objectives, the shared program evaluates
    what a program that holds the objective alone evaluates, at the same random starts
    (one Adam step: the search itself follows gradients whose entries near zero differ in
    sign with the rounding, and Adam's first step is the sign of the gradient; nor are the
    witnesses compared, restarts that tie are told apart by the rounding)."""
    budget = Budget(samples=5, depth=1, sizes=(8,), name="test-objectives", restarts=3, steps=1)
    rng = np.random.default_rng(5)
    ops = [op for _, op in sampling.operator_cases(rng, budget.sizes)][:2]
    fluxes = [sampling.random_fluxes(rng) for _ in ops]
    taus = np.array([[float(stable_step_size(op, f)) for f in fs] for op, fs in zip(ops, fluxes)])
    cases = adversarial.stack_cases(ops, fluxes, taus)
    assert adversarial.program_objectives("range", ops) == adversarial.SIGNAL_OBJECTIVES
    for objective in ("range", "mass", "lipschitz"):
        key = jax.random.key(7)
        shared = adversarial.attack(
            cases, key, np.asarray(adversarial.SIGNAL_OBJECTIVES.index(objective), np.int32),
            adversarial.SIGNAL_OBJECTIVES, budget.restarts, budget.steps,
        )
        alone = adversarial.attack(cases, key, np.asarray(0, np.int32), (objective,), budget.restarts, budget.steps)
        np.testing.assert_allclose(np.asarray(shared.worst), np.asarray(alone.worst), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(np.asarray(shared.sampled), np.asarray(alone.sampled), rtol=1e-12, atol=1e-15)


def test_the_shared_program_runs_where_it_was_prepared_and_one_objective_elsewhere(monkeypatch):
    """`attack_operators` runs the program of all the signal objectives only where
    `compile_attack` prepared it (as `warm_up` does for `jaxpde certify`), so that a claim
    checked alone compiles the program of its own objective; images keep "gain" alone."""
    budget = Budget(samples=5, depth=1, sizes=(8,), name="test-objectives", restarts=3, steps=1)
    rng = np.random.default_rng(5)
    ops = [op for _, op in sampling.operator_cases(rng, budget.sizes)][:2]
    fluxes = [sampling.random_fluxes(rng) for _ in ops]
    taus = np.array([[float(stable_step_size(op, f)) for f in fs] for op, fs in zip(ops, fluxes)])
    monkeypatch.setattr(adversarial, "_PREPARED", set())
    ran = []
    attack = adversarial.attack

    def recorded(cases, key, index, objectives, *args):
        ran.append(objectives)
        return attack(cases, key, index, objectives, *args)

    monkeypatch.setattr(adversarial, "attack", recorded)
    adversarial.attack_operators(rng, ops, fluxes, taus, "range", budget)
    assert ran == [("range",)]
    monkeypatch.setattr(adversarial, "attack", attack)
    adversarial.compile_attack(ops, fluxes, "mass", budget)
    monkeypatch.setattr(adversarial, "attack", recorded)
    adversarial.attack_operators(rng, ops, fluxes, taus, "range", budget)
    assert ran[-1] == adversarial.SIGNAL_OBJECTIVES
    # Another search size was not prepared: its own objective again.
    adversarial.attack_operators(rng, ops, fluxes, taus, "range", dataclasses.replace(budget, steps=2))
    assert ran[-1] == ("range",)


def test_witnesses_are_rechecked_in_the_program_of_the_random_samples():
    """`recheck_cases` pads to the budget's common shape, as `measure_cases` does, so
    that it runs the program the samples compiled: with two sizes (the operators' own
    sizes give another padded shape) no second `evaluate_cases` is compiled."""
    sizes = (8, 12)
    rng = np.random.default_rng(3)
    ops = [op for _, op in sampling.operator_cases(rng, sizes)][:2]
    fluxes = [sampling.random_fluxes(rng) for _ in ops]
    log = CompilationLog()
    log.phase = "samples"
    sampling.measure_cases(rng, ops, fluxes, 2, 1, sizes=sizes)
    log.phase = "recheck"
    witnesses = rng.standard_normal((len(ops), len(fluxes[0]), sampling.padded_shape(ops, sizes)[1]))
    adversarial.recheck_cases(rng, ops, fluxes, witnesses, 2, 1, sizes=sizes)
    log.phase = None
    assert "jit(evaluate_cases)" not in log.compiled.get("recheck", [])


def test_planted_instability_is_found_and_rechecked_with_the_operators_code():
    rng, ops, fluxes, taus = _cases(1.05)
    found = adversarial.attack_operators(rng, ops, fluxes, taus, "gain", TEST_BUDGET)
    linear = [type(f).__name__ for f in fluxes[0]].index("Linear")
    assert np.all(found.worst[:, linear] > 1.01)
    for c in (0, len(ops) - 1):
        rechecked = adversarial.recheck(
            rng, ops[c], fluxes[c], found.witness[0][c], TEST_BUDGET.samples, TEST_BUDGET.depth,
            step_multipliers=[1.05] * 6, use_lower_norm=[1.0] * 6,
        )
        assert np.max(rechecked.ratio[linear]) > 1.01
    rng, ops, fluxes, taus = _cases(1.0)
    calm = adversarial.attack_operators(rng, ops, fluxes, taus, "gain", TEST_BUDGET)
    assert np.all(calm.worst <= 1 + 1e-12) and np.all(calm.sampled <= calm.worst)
    with pytest.raises(ValueError, match="`objective`"):
        adversarial.attack_operators(rng, ops, fluxes, taus, "nope", TEST_BUDGET)
