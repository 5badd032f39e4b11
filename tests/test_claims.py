import json
import pathlib

import jax
import numpy as np
import pytest

import jaxpde
import jaxpde.claims
from jaxpde.claims import CLAIMS, Budget, Claim, Evidence, get_claim, sampling
from jaxpde.cli import main
from jaxpde.fluxes import Linear
from jaxpde.verify.certificate import CaseResult

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_BUDGET = Budget(samples=10, depth=2, sizes=(16,), name="test")


@pytest.mark.parametrize("claim", CLAIMS, ids=[c.id for c in CLAIMS])
def test_claim_certified(claim):
    certificate = claim.check(jax.random.key(1), TEST_BUDGET)
    assert certificate.status == "certified", certificate.message
    assert certificate.samples > 0 and certificate.cases
    assert certificate.tolerance > 0 and certificate.tolerance_derivation
    if certificate.relation == "<=":
        assert certificate.worst <= certificate.bound + certificate.tolerance
    else:
        assert certificate.worst > certificate.bound + certificate.tolerance


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


def test_cli_json_and_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JAXPDE_CACHE_DIR", "")
    code = main(["certify", "--json", "--claim", "derivative-norm", "--claim", "max-min-principle", "--out", str(tmp_path)])
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


def test_warm_up_compiles_every_operator_shape_once():
    count = sampling.warm_up(TEST_BUDGET.samples, TEST_BUDGET.depth, TEST_BUDGET.sizes, workers=2)
    assert count == len(sampling.operator_cases(np.random.default_rng(1), TEST_BUDGET.sizes))
