"""Sharded certification: one device against four forced CPU devices.

The device count is fixed when JAX starts, so the comparison runs in a fresh process
(`tests/sharded_run.py` with XLA_FLAGS=--xla_force_host_platform_device_count=4); the
checks on one device run here.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpde.claims import CLAIMS, QUICK, get_claim
from jaxpde.cli import main
from jaxpde.sharding import (
    AXIS,
    devices_context,
    sample_mesh,
    shard_count,
    sharded_vmap,
)

from .helpers import thorough

# Rounding: sums inside an entry may be reduced in another order for another batch shape.
ROUNDING = 64 * float(np.finfo(np.float64).eps)
# The iterative solves of the schemes stop at a relative residual of about 1e-11 here; a
# batch split otherwise may stop an entry's solve at another iterate within that tolerance.
SOLVES = 1e-9
SCHEME_CASES = {  # solver path: tolerance relative to the largest value
    "tridiagonal": ROUNDING,
    "cholesky": ROUNDING,
    "cg": SOLVES,
    "multigrid": SOLVES,
    "lagged-diffusivity": SOLVES,
    "lagged-diffusivity-cg": SOLVES,
    "fixed-point": SOLVES,
}


def _run_with_four_devices(*args: str) -> dict:
    """`tests/sharded_run.py` with `args` in a fresh process with four forced CPU devices."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
    env = {**os.environ, "XLA_FLAGS": flags}
    cache = jax.config.jax_compilation_cache_dir
    if cache:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
    script = pathlib.Path(__file__).with_name("sharded_run.py")
    run = subprocess.run(
        [sys.executable, str(script), *args], check=False, capture_output=True, text=True, env=env, timeout=1800
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def four_devices() -> dict:
    return _run_with_four_devices()


def test_four_devices_visible(four_devices):
    assert four_devices["devices"] == 4


def test_sharded_vmap_matches_vmap(four_devices):
    result = four_devices["vmap"]
    assert result["outer_shards"] == {"2": 2, "all": 4}
    for devices in ("2", "all"):
        # Odd batch (padded), a module with a static field, PRNG keys, a nested call.
        assert result[f"difference_{devices}"] <= ROUNDING * 10
        assert result[f"inner_shards_{devices}"] == 1  # the inner call does not shard again
        assert result[f"replicated_{devices}"]  # gathered on every device
    assert result["plain_shards"] == 1


def test_shared_evaluation_sharded(four_devices):
    # Every measurement of the explicit claims' program; the norm ratios bit for bit.
    assert four_devices["measure"]["ratio_identical"]
    assert four_devices["measure"]["difference"] <= ROUNDING


def test_claims_sharded_same_verdicts(four_devices):
    claims = four_devices["claims"]
    for (one, several), (worst_one, worst_several) in zip(claims["statuses"], claims["worst"]):
        assert one == several == "certified"
        assert abs(worst_one - worst_several) <= ROUNDING * max(1.0, abs(worst_one))
    # Besides the worst value (and the falsifier's, whose ascent amplifies rounding), the
    # reports agree: samples, tolerances, cases, hypotheses.
    for differences in claims["other_differences"]:
        assert set(differences) <= {"seconds", "falsifier"}


@pytest.mark.parametrize("case", SCHEME_CASES)
def test_schemes_sharded(four_devices, case):
    """Each solver path of the implicit and semi-implicit schemes (step and gradient) inside
    `jax.shard_map` and under `jax.set_mesh` with a sharded batch, against one device."""
    result = four_devices["schemes"][case]
    for context in ("shard_map", "set_mesh"):
        assert f"{context}_error" not in result, result.get(f"{context}_error")
        assert result[context] <= SCHEME_CASES[case], context
    assert all(AXIS in spec for spec in result["set_mesh_spec"])  # the batch stayed split


@thorough
def test_whole_registry_sharded():
    """Every registered claim runs sharded over four devices (at the smallest budget: the
    verdicts at a real budget are compared in `test_claims_sharded_same_verdicts`), so a
    claim added later cannot break `jaxpde certify --devices` unnoticed. Thorough only:
    it compiles every claim's programs for four devices (about ten minutes on two cores)."""
    registry = _run_with_four_devices("registry")
    assert registry["devices"] == 4
    claims = registry["registry"]["claims"]
    assert [claim_id for claim_id, *_ in claims] == [claim.id for claim in CLAIMS]
    failed = {claim_id: f"{status}: {message}" for claim_id, status, message, _ in claims if status != "certified"}
    assert not failed, failed


def test_cli_refuses_more_devices_than_visible(four_devices):
    assert four_devices["cli_bad_devices"] == 2


def test_one_device_is_plain_vmap():
    assert shard_count() == 1
    x = jnp.arange(12.0).reshape(4, 3)
    with devices_context(1):
        assert shard_count() == 1
        np.testing.assert_array_equal(sharded_vmap(jnp.sum)(x), jax.vmap(jnp.sum)(x))
    with devices_context(None):
        assert shard_count() == 1


def test_sample_mesh():
    mesh = sample_mesh("all")
    assert mesh.axis_names == (AXIS,) and mesh.size == len(jax.devices())
    assert sample_mesh(1).size == 1
    assert sample_mesh(jax.devices()[:1]).size == 1


@pytest.mark.parametrize("devices", ["most", 0, len(jax.devices()) + 1, []])
def test_sample_mesh_errors(devices):
    with pytest.raises(ValueError, match="devices"):
        sample_mesh(devices)


def test_sharded_vmap_needs_one_batch_size():
    # Two shards of an abstract mesh suffice to trace (nothing runs).
    mesh = jax.sharding.AbstractMesh((2,), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,))
    with jax.sharding.use_abstract_mesh(mesh), pytest.raises(ValueError, match="batch"):
        jax.eval_shape(sharded_vmap(lambda a, b: a + b[0]), jnp.zeros(3), jnp.zeros((4, 2)))


def test_cli_distributed_options_need_the_flag(capsys):
    assert main(["certify", "--claim", "derivative-norm", "--num-processes", "2"]) == 2
    assert "--distributed" in capsys.readouterr().err


def test_two_processes_certify_like_one():
    """`--distributed` on one machine: two processes with two CPU devices each (the mesh
    spans four devices of two processes); process 0 reports what one device finds."""
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "JAXPDE_CACHE_DIR": ""}
    command = [sys.executable, "-m", "jaxpde.cli", "certify", "--claim", "radial-basis-flux", "--json", "--devices", "all"]
    command += ["--distributed", "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id"]
    processes = [
        subprocess.Popen([*command, str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][1][-3000:]
    # The collectives library logs connections to stdout; the report is the JSON list.
    reported = "\n".join(line for line in outputs[0][0].splitlines() if not line.startswith("[Gloo]"))
    (report,) = json.loads(reported)
    assert "radial-basis-flux" not in outputs[1][0]  # only process 0 reports
    single = get_claim("radial-basis-flux").check(jax.random.fold_in(jax.random.key(0), 0), QUICK)
    expected = single.to_json()
    assert report["status"] == "certified"
    assert {k: v for k, v in report.items() if k != "seconds"} == {k: v for k, v in expected.items() if k != "seconds"}
