import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpde import Derivative, DiffusionBlock, fluxes, stable_step_size, verify
from jaxpde.verify.certificate import CaseResult, Certificate
from jaxpde.verify.tolerance import (
    block_error,
    gamma,
    norm_ratio_tolerance,
    unit_roundoff,
)


def test_euclidean_gain_and_norm_ratios():
    op = Derivative(1, 8)
    flux = fluxes.Linear(1.0)
    block = DiffusionBlock(op, flux, stable_step_size(op, flux))
    u = jnp.arange(8.0)
    assert float(verify.euclidean_gain(block, u)) == pytest.approx(
        float(jnp.linalg.norm(block(u)) / jnp.linalg.norm(u))
    )
    path = jnp.stack([u, 0.5 * u, 0.5 * u, 2 * u])
    np.testing.assert_allclose(verify.norm_ratios(path), [0.5, 1.0, 4.0])
    assert float(verify.worst_norm_ratio(path)) == 4.0


def test_tolerances_are_derived_from_the_unit_roundoff():
    assert unit_roundoff(np.float64) == 2.0**-53
    assert unit_roundoff(np.float32) == 2.0**-24
    assert gamma(10, np.float64) == pytest.approx(10 * 2.0**-53, rel=1e-12)
    with pytest.raises(ValueError, match="`p`"):
        gamma(2**24, np.float32)
    op = Derivative(2, 64)
    flux = fluxes.Weickert(1.0)
    block = DiffusionBlock(op, flux, stable_step_size(op, flux))
    tol64 = norm_ratio_tolerance(block, np.float64)
    tol32 = norm_ratio_tolerance(block, np.float32)
    assert tol32.value / tol64.value == pytest.approx(2.0**29, rel=1e-3)
    assert "u = " in tol64.derivation and "float64" in tol64.derivation
    # Larger steps can only raise the bound.
    half = DiffusionBlock(op, flux, 0.5 * stable_step_size(op, flux))
    assert block_error(half, np.float64) < block_error(block, np.float64)


def test_float32_block_stays_within_its_derived_tolerance():
    """The derived float32 tolerance covers the observed rounding excess."""
    op = Derivative(1, 256)
    flux = fluxes.Linear(1.0)
    block32 = DiffusionBlock(op, flux, jnp.asarray(stable_step_size(op, flux), jnp.float32))
    tol = norm_ratio_tolerance(block32, np.float32).value
    top = verify.spectral_norm(op).vector.astype(jnp.float32)
    rng = np.random.default_rng(0)
    batch = jnp.concatenate([top[None], jnp.asarray(rng.standard_normal((63, 256)), jnp.float32)])
    gains = jax.vmap(lambda u: verify.euclidean_gain(block32, u))(batch)
    assert float(jnp.max(gains)) <= 1 + tol


def _certificate(status="certified"):
    case = CaseResult("D1 neumann n=8", 10, 0.99, 1.0, 1e-14, True)
    return Certificate(
        claim_id="example", statement="s", status=status, samples=10, worst=0.99, bound=1.0,
        relation="<=", tolerance=1e-14, tolerance_derivation="d", seconds=0.5, proof="proofs/example.md",
        hypotheses={"h": "v"}, cases=(case,),
    )


def test_certificate_rendering():
    certificate = _certificate()
    data = certificate.to_json()
    assert {"id", "status", "samples", "worst", "bound", "seconds"} <= set(data)
    assert "cases" not in data and len(certificate.to_json(with_cases=True)["cases"]) == 1
    json.dumps(data)
    table = verify.markdown_table([certificate])
    assert "| `example` | certified | 10 |" in table
    report = verify.markdown_report([certificate])
    assert "D1 neumann n=8" in report and "proofs/example.md" in report
    nan = Certificate(**{**certificate.__dict__, "worst": float("nan"), "status": "error"})
    assert nan.to_json()["worst"] is None and not nan.certified
