import json
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from jaxpde import Derivative, DiffusionBlock, cli, fluxes, stable_step_size
from jaxpde.verify import certify_callable

OP = Derivative(1, 16, boundary="periodic")
BUDGET = {"restarts": 32, "steps": 40}


def test_statuses_for_a_block_a_refuted_map_and_a_generic_map():
    flux = fluxes.PeronaMalik(0.5)
    block = DiffusionBlock(OP, flux, stable_step_size(OP, flux))
    report = certify_callable(block, (16,), jax.random.key(0), **BUDGET)
    assert report.status == "certified"
    assert report.gain <= 1 + report.tolerance and report.certified_gain_bound == 1.0
    assert 1 < max(report.lipschitz, report.local_lipschitz) <= report.certified_lipschitz_bound * (1 + 1e-12)

    def unstable(u):  # u - 0.6 D^T D u: gain 1.4 on the alternating signal
        return u - 0.6 * OP.T(OP(u))

    refuted = certify_callable(unstable, (16,), jax.random.key(0), **BUDGET)
    assert refuted.status == "violated" and refuted.gain > 1.3
    witness = jnp.asarray(refuted.witness)
    assert float(jnp.linalg.norm(unstable(witness)) / jnp.linalg.norm(witness)) == pytest.approx(refuted.gain)

    generic = certify_callable(lambda u: 0.5 * (u + jnp.roll(u, 1)), (16,), jax.random.key(0), **BUDGET)
    assert generic.status == "not refuted" and generic.certified_gain_bound is None
    assert "# `callable`: not refuted" in generic.markdown()


def test_wrong_output_shape_is_refused():
    with pytest.raises(ValueError, match="same shape"):
        certify_callable(lambda u: u[:-1], (16,), **BUDGET)


def test_cli_target(tmp_path, monkeypatch, capsys):
    module = tmp_path / "user_blocks.py"
    module.write_text(textwrap.dedent("""
        import jaxpde
        op = jaxpde.Derivative(1, 16, boundary="periodic")
        block = jaxpde.DiffusionBlock(op, jaxpde.fluxes.Linear(1.0), 0.6, allow_unstable=True)
        not_callable = 3
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    code = cli.main(["certify", "--target", "user_blocks:block", "--json", "--restarts", "16", "--steps", "30",
                     "--out", str(tmp_path / "out")])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["status"] == "violated" and report["in_shape"] == [16]
    assert (tmp_path / "out" / "target.md").exists()
    assert cli.main(["certify", "--target", "user_blocks:not_callable", "--n", "16"]) == 2
    assert "not a callable" in capsys.readouterr().err
    assert cli.main(["certify", "--target", "user_blocks"]) == 2
    assert "package.module:callable" in capsys.readouterr().err
