"""Planted counterexamples: every one must be refuted or refused, never certified.

Each test plants one defect that an earlier version certified (a flux or an operator that
declares a wrong constant, growth outside the searched norms or directions, growth
hidden by float32 tolerances) and checks the verdict; honest classes must still certify,
with the basis of the certificate stated.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpde
from jaxpde import Derivative, DiffusionBlock, Stencil, fluxes, stable_step_size
from jaxpde.nn import DiffusionResNet
from jaxpde.verify import (
    Certificate,
    certify_callable,
    markdown_report,
    markdown_table,
    stability_certificate,
)
from jaxpde.verify.hypotheses import check_flux, check_operator

N = 16
OP = Derivative(1, N, boundary="periodic")
BUDGET = {"restarts": 96, "steps": 30}  # one shape for every search below: compiled once per target
COS_25 = math.cos(math.radians(25.0))


class LateLiar(fluxes.AbstractFlux):
    """Declares the sector bound 1, but Phi(s)/s = 50 for |s| > 1e7: beyond every input
    norm the falsifier searches (||Ku|| <= 2e6), so only checking the declaration finds it."""

    def diffusivity(self, s2):
        return jnp.where(s2 > 1e14, 50.0, 1 / (1 + s2))

    def sector_bound(self):
        return jnp.asarray(1.0)

    def derivative_range(self):
        return jnp.asarray(-50.0), jnp.asarray(50.0)


class IssueLiar(LateLiar):
    """The issue's example: Phi(s)/s = 50 for |s| > 300 (gain 99 at amplitude 400)."""

    def diffusivity(self, s2):
        return jnp.where(s2 > 300.0**2, 50.0, 1 / (1 + s2))


class MonotoneClaim(fluxes.AbstractFlux):
    """Perona-Malik's diffusivity, but declares Phi' in [0, 1] (really [-1/8, 1])."""

    def diffusivity(self, s2):
        return 1 / (1 + s2)

    def sector_bound(self):
        return jnp.asarray(1.0)

    def derivative_range(self):
        return jnp.asarray(0.0), jnp.asarray(1.0)


class MyPeronaMalik(fluxes.PeronaMalik):
    """An honest user subclass: its constants are checked, not proven."""


class HonestStencil(Stencil):
    """An honest user operator subclass."""


class ShortStencil(Stencil):
    """Declares ||K|| <= 0.999 * 2 for the first difference (||K|| = 2)."""

    def norm_bound(self):
        return jnp.asarray(1.998)


def _gain(f, u):
    return float(jnp.linalg.norm(f(u)) / jnp.linalg.norm(u))


# --- hole 1: declared constants are hypotheses, checked ---------------------------------


def test_issue_example_is_violated_with_the_witness_of_gain_99():
    block = DiffusionBlock(OP, IssueLiar(), stable_step_size(OP, IssueLiar()))
    report = certify_callable(block, (N,), jax.random.key(0), **BUDGET)
    assert report.status == "violated" and report.certified_gain_bound is None
    assert report.gain > 90 and _gain(block, jnp.asarray(report.witness)) == pytest.approx(report.gain, rel=1e-9)
    sector = next(c for c in report.constants if c["name"] == "sector bound of IssueLiar")
    assert sector["verdict"] == "violated" and abs(sector["witness"]) > 300


def test_a_lie_beyond_the_searched_norms_is_found_by_checking_the_constant():
    flux = LateLiar()
    block = DiffusionBlock(OP, flux, stable_step_size(OP, flux))
    report = certify_callable(block, (N,), jax.random.key(0), **BUDGET)
    assert report.gain <= 1 + report.tolerance  # the falsifier alone cannot see it
    assert report.status == "violated" and report.basis == "empirical"
    sector = next(c for c in report.constants if c["name"] == "sector bound of LateLiar")
    s = sector["witness"]
    assert sector["verdict"] == "violated" and abs(s) > 1e7
    assert float(flux(jnp.asarray(s)) / s) == pytest.approx(50.0)  # the witness re-checks
    assert "counterexample to a declared constant" in report.basis_detail


def test_a_false_derivative_range_is_violated_and_no_lipschitz_bound_is_certified():
    flux = MonotoneClaim()
    sector, derivative = check_flux(flux)
    assert sector.verdict == "checked" and derivative.verdict == "violated"
    assert float(jax.grad(flux)(jnp.asarray(derivative.witness))) < -0.1  # Phi' < 0 = declared minimum
    block = DiffusionBlock(OP, flux, stable_step_size(OP, flux))
    report = certify_callable(block, (N,), jax.random.key(0), **BUDGET)
    assert report.status == "violated" and report.certified_lipschitz_bound is None
    assert max(report.lipschitz, report.local_lipschitz) > 1.05  # what the false range "certified" as 1


def test_an_operator_declaring_too_small_a_norm_is_violated():
    op = ShortStencil(jnp.array([-1.0, 1.0]), N, boundary="periodic")
    (check,) = check_operator(op)
    assert check.verdict == "violated" and check.observed[0] > 1.999
    witness = jnp.asarray(check.witness)
    assert float(jnp.linalg.norm(op(witness)) / jnp.linalg.norm(witness)) > 1.998  # re-checks
    flux = fluxes.Linear(1.0)
    block = DiffusionBlock(op, flux, stable_step_size(op, flux))
    report = certify_callable(block, (N,), jax.random.key(0), **BUDGET)
    assert report.status == "violated"
    assert any(c["verdict"] == "violated" and c["name"] == "norm bound of ShortStencil" for c in report.constants)


def test_honest_user_classes_certify_with_checked_constants():
    op = HonestStencil(jnp.array([-1.0, 1.0]), N, boundary="periodic")
    flux = MyPeronaMalik(0.5)
    # A user operator's norm is replaced by the certified Gram bound (2 + 1e-14 here), so
    # a step at exactly the declared bound is not certified: step a little below it.
    block = DiffusionBlock(op, flux, 0.999 * stable_step_size(op, flux))
    report = certify_callable(block, (N,), jax.random.key(0), **BUDGET)
    assert report.status == "certified" and report.basis == "theorem" and report.certified_gain_bound == 1.0
    verdicts = {c["name"]: c["verdict"] for c in report.constants}
    assert verdicts == {
        "norm bound of HonestStencil": "checked",
        "sector bound of MyPeronaMalik": "checked",
        "derivative range of MyPeronaMalik": "checked",
    }
    assert "checked" in report.basis_detail and "sampled" in report.hypotheses["sector bound of MyPeronaMalik"]
    assert 1 < max(report.lipschitz, report.local_lipschitz) <= report.certified_lipschitz_bound * (1 + 1e-12)


def test_own_classes_certify_on_proven_constants_and_subclassed_blocks_do_not():
    flux = fluxes.PeronaMalik(0.5)
    block = DiffusionBlock(OP, flux, stable_step_size(OP, flux))
    report = certify_callable(block, (N,), jax.random.key(0), **BUDGET)
    assert report.status == "certified" and report.basis == "theorem"
    assert {c["verdict"] for c in report.constants} == {"proven"}
    assert "(basis: theorem)" in report.markdown() and json.loads(json.dumps(report.to_json()))["basis"] == "theorem"

    class Doubled(DiffusionBlock):  # a user's block may compute anything: here 2x beyond ||u|| = 1e7
        def __call__(self, u):
            return jnp.where(jnp.linalg.norm(u) > 1e7, 2.0, 1.0) * super().__call__(u)

    doubled = Doubled(OP, flux, block.tau)
    refused = certify_callable(doubled, (N,), jax.random.key(0), **BUDGET)
    assert refused.status == "not refuted" and refused.basis == "empirical" and refused.certified_gain_bound is None
    assert "subclasses DiffusionBlock" in refused.hypotheses["theorem"]


def test_networks_check_the_constants_of_their_fluxes():
    key = jax.random.key(0)
    honest = DiffusionResNet(N, depth=2, width=None, boundary="periodic", key=key)
    certificate = stability_certificate(honest)
    assert certificate.certified and certificate.basis == "theorem"
    assert {c.verdict for c in certificate.constants} == {"proven"}
    lying = DiffusionResNet(N, depth=2, width=None, boundary="periodic", flux=LateLiar(), key=key)
    certificate = stability_certificate(lying)
    assert not certificate.certified and certificate.basis == "none"
    assert certificate.violated_constants and "sector bound of LateLiar" in certificate.reason


# --- hole 5: growth outside the old search region ------------------------------------------


def _beyond_1e3(u):
    r = jnp.linalg.norm(u)
    return u * (1 + 0.5 * jax.nn.relu(r - 1e3) / r)


def _cone(u):  # grows by up to 1.1 only within 25 degrees of +-e_11
    c = jnp.abs(u[11]) / jnp.linalg.norm(u)
    return u * (1 + 0.1 * jax.nn.relu(c - COS_25) / (1 - COS_25))


_J = np.arange(N)
_MODE = np.stack([np.cos(2 * np.pi * 5 * _J / N), np.sin(2 * np.pi * 5 * _J / N)]) / math.sqrt(N / 2)


def _fourier(u):  # grows by up to 1.1 only within 25 degrees of the frequency-5 plane
    c = jnp.linalg.norm(jnp.asarray(_MODE) @ u) / jnp.linalg.norm(u)
    return u * (1 + 0.1 * jax.nn.relu(c - COS_25) / (1 - COS_25))


@pytest.mark.parametrize(
    ("target", "least_gain"), [(_beyond_1e3, 1.2), (_cone, 1.09), (_fourier, 1.09)], ids=["beyond-1e3", "cone", "fourier"]
)
def test_growth_outside_the_old_region_is_found(target, least_gain):
    report = certify_callable(target, (N,), jax.random.key(0), **BUDGET)
    assert report.status == "violated" and report.gain >= least_gain
    witness = jnp.asarray(report.witness)
    assert _gain(target, witness) == pytest.approx(report.gain, rel=1e-9)
    if target is _beyond_1e3:
        assert float(jnp.linalg.norm(witness)) > 1e3
    region = report.region
    assert region["radii"][0] <= 1e-6 and region["radii"][1] >= 1e6 and region["restarts"] == BUDGET["restarts"]
    assert region["dtype"] == "float64" and region["seeds"]["basis"] > 0 and region["seeds"]["fourier"] > 0
    assert "||u|| in [1e-06, 1e+06]" in report.hypotheses["searched region"]


def test_a_narrow_search_region_is_stated_and_can_be_widened():
    report = certify_callable(_beyond_1e3, (N,), jax.random.key(0), radii=(1e-2, 1e2), **BUDGET)
    assert report.status == "not refuted" and report.basis == "empirical"
    assert "[0.01, 100]" in report.basis_detail  # the verdict says where it looked
    wider = certify_callable(_beyond_1e3, (N,), jax.random.key(0), radii=(1e-2, 1e9), **BUDGET)
    assert wider.status == "violated" and wider.region["radii"] == [1e-2, 1e9]


# --- hole 6: float32 tolerances -------------------------------------------------------------

F32_SIZE = 2**14  # gamma_(4(N+1)) in float32 is 0.0039 here: growth by 1.003 hides in it


def test_float32_growth_inside_the_float32_tolerance_is_found_in_float64():
    report = certify_callable(lambda u: 1.003 * u, (F32_SIZE,), jax.random.key(0), restarts=8, steps=4,
                              dtype=jnp.float32)
    assert report.tolerance > 0.003  # the float32 verdict alone cannot see it
    assert report.status == "violated" and report.gain_float64 == pytest.approx(1.003, rel=1e-12)
    assert "float64" in report.precision_note


def test_a_float32_only_target_says_its_verdict_is_only_as_sharp_as_the_tolerance():
    report = certify_callable(lambda u: (1.003 * u).astype(jnp.float32), (F32_SIZE,), jax.random.key(0), restarts=8,
                              steps=4, dtype=jnp.float32)
    assert report.status == "not refuted" and report.gain_float64 is None
    assert "only as sharp as its stated tolerance" in report.precision_note


# --- hole 7: every certificate states its basis ---------------------------------------------


def test_claim_certificates_carry_their_basis():
    certificate = Certificate(
        claim_id="example", statement="s", status="certified", samples=1, worst=0.5, bound=1.0, relation="<=",
        tolerance=1e-14, tolerance_derivation="d", seconds=0.1, proof="proofs/example.md",
    )
    assert certificate.to_json()["basis"] == "theorem"
    assert markdown_table([certificate]).splitlines()[0].endswith("| basis |")
    assert markdown_table([certificate]).splitlines()[2].endswith("| theorem |")
    assert "Basis: theorem (proved in proofs/" in markdown_report([certificate])
    with pytest.raises((ValueError, TypeError), match="basis"):  # TypeError: runtime type checking
        Certificate(**{**certificate.__dict__, "basis": "hope"})
    assert jaxpde.verify.certificate.BASIS_MEANING["empirical"].startswith("no theorem applies")
