"""Sharded certification and sharded schemes: one device against four.

The test session runs with four CPU devices (`conftest.py`), so the comparisons run here,
in this process: `sharded_vmap` against `jax.vmap`, the explicit claims' shared program,
a claim checked on one device and on all four, and every solver path of the implicit and
semi-implicit schemes inside `jax.shard_map` and under `jax.set_mesh`. (Every registered
claim is also checked sharded by the claim tests in the thorough profile:
`helpers.CLAIM_DEVICES`.)

Differences are reported as the largest absolute difference between one device and
several: per-entry values agree bit for bit, sums within an entry up to rounding (XLA
picks the order of a reduction per batch shape).
"""

import json
import os
import socket
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

import jaxpde.sharding
from jaxpde import Derivative, Matrix, Stencil, fluxes
from jaxpde.claims import QUICK, Budget, check_all, get_claim, sampling
from jaxpde.cli import main
from jaxpde.schemes import ImplicitScheme, Multigrid, SemiImplicitScheme
from jaxpde.sharding import (
    AXIS,
    devices_context,
    sample_mesh,
    shard_count,
    sharded_vmap,
)

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


BUDGET = Budget(samples=6, depth=2, sizes=(16,), name="test-sharding", restarts=8, steps=20)
SHARDED_CLAIMS = ("radial-basis-flux",)


class Scaled(eqx.Module):
    weight: jax.Array
    name: str = eqx.field(static=True)

    def __call__(self, x):
        return self.weight * jnp.sin(x)


def largest_difference(a, b) -> float:
    leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b))
    return max(float(np.max(np.abs(np.asarray(x, float) - np.asarray(y, float)), initial=0.0)) for x, y in leaves)


def vmap_cases() -> dict:
    """sharded_vmap against jax.vmap: odd batch (padding), a module with a static field,
    PRNG keys, and a nested call (the inner one must not shard again)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((7, 5)))
    modules = Scaled(jnp.asarray(rng.standard_normal((7, 5))), "scaled")
    keys = jax.random.split(jax.random.key(1), 7)

    def one(m, row, k):
        inner = sharded_vmap(lambda r: jnp.sum(m(r) * r))(jnp.stack([row, 2 * row]))
        return inner + jax.random.normal(k), shard_count()

    program = eqx.filter_jit(lambda m, r, k: sharded_vmap(one)(m, r, k))
    plain, inner_shards = program(modules, x, keys)
    results = {"outer_shards": {}}
    for devices in (2, "all"):
        with devices_context(devices):
            results["outer_shards"][str(devices)] = shard_count()
            sharded, inner = program(modules, x, keys)
        results[f"difference_{devices}"] = largest_difference(plain, sharded)
        results[f"inner_shards_{devices}"] = int(np.max(inner))
        results[f"replicated_{devices}"] = sharded.sharding.is_fully_replicated
    results["plain_shards"] = int(np.max(inner_shards))
    return results


def measure_case() -> dict:
    """The shared evaluation program of the explicit claims: per-sample differences."""
    op = Derivative(2, 16, h=0.5, boundary="dirichlet")
    out = []
    for devices in (None, "all"):
        rng = np.random.default_rng(5)
        flux_set = (fluxes.PeronaMalik(0.7), fluxes.Charbonnier(0.3))
        with jax.enable_x64(True), devices_context(devices):
            out.append(sampling.measure(rng, op, flux_set, 9, 2))
    ratio_identical = bool(np.array_equal(out[0].ratio, out[1].ratio))
    return {"difference": largest_difference(out[0], out[1]), "ratio_identical": ratio_identical}


def claims_case() -> dict:
    claims = [get_claim(c) for c in SHARDED_CLAIMS]
    reports = {}
    for devices in (None, "all"):
        certificates = check_all(claims, jax.random.key(2), BUDGET, workers=2, devices=devices)
        reports[str(devices)] = [{k: v for k, v in c.to_json().items() if k != "seconds"} for c in certificates]
    one, several = reports["None"], reports["all"]
    return {
        "statuses": [[a["status"], b["status"]] for a, b in zip(one, several)],
        "worst": [[a["worst"], b["worst"]] for a, b in zip(one, several)],
        "other_differences": [sorted(k for k in a if k != "worst" and a[k] != b[k]) for a, b in zip(one, several)],
    }


def scheme_cases() -> dict:
    """The implicit and semi-implicit schemes on every solver path, `jax.vmap` on one device
    against `sharded_vmap` inside `jax.shard_map` (odd batch, padded) and `jax.vmap` under
    `jax.set_mesh` with a batch sharded over the devices: the step and the gradient of
    `sum(step(u)^3)`. Each case reports the largest difference relative to the largest
    unsharded value, or the error it raised."""
    n = 32
    rng = np.random.default_rng(3)
    pm, charbonnier = fluxes.PeronaMalik(0.5), fluxes.Charbonnier(0.5)
    d1 = Derivative(1, n, boundary="neumann")
    schemes = {
        "tridiagonal": SemiImplicitScheme(d1, pm, 5.0),
        "cholesky": SemiImplicitScheme(Matrix(rng.standard_normal((n + 3, n))), charbonnier, 0.5),
        "cg": SemiImplicitScheme(Stencil(np.array([1.0, -2.0, 1.0]), n, boundary="periodic"), pm, 5.0),
        "multigrid": SemiImplicitScheme(d1, pm, 5.0, multigrid=Multigrid()),
        "lagged-diffusivity": ImplicitScheme(d1, pm, 5.0, solver="lagged-diffusivity"),
        "lagged-diffusivity-cg": ImplicitScheme(Derivative(2, n), charbonnier, 5.0, solver="lagged-diffusivity"),
        "fixed-point": ImplicitScheme(d1, pm, 0.1, solver="fixed-point"),
    }
    x = jnp.asarray(rng.standard_normal((7, n)))
    mesh = sample_mesh("all")
    batch = jax.device_put(jnp.concatenate([x, x[:1]]), NamedSharding(mesh, PartitionSpec(AXIS)))
    results = {}
    for name, scheme in schemes.items():

        def step_and_gradient(u, scheme=scheme):
            return scheme(u), jax.grad(lambda v: jnp.sum(scheme(v) ** 3))(u)

        program = jax.jit(sharded_vmap(step_and_gradient))
        plain = program(x)
        scale = max(float(jnp.max(jnp.abs(y))) for y in plain)
        result = {}
        try:
            with devices_context("all"):
                result["shard_map"] = largest_difference(plain, program(x)) / scale
        except Exception as error:  # noqa: BLE001 (reported to the test)
            result["shard_map_error"] = f"{type(error).__name__}: {error}"[:2000]
        try:
            with jax.set_mesh(mesh):
                out = jax.jit(jax.vmap(step_and_gradient))(batch)
            result["set_mesh"] = largest_difference(plain, jax.tree.map(lambda y: y[:7], out)) / scale
            result["set_mesh_spec"] = [str(y.sharding.spec) for y in out]
        except Exception as error:  # noqa: BLE001
            result["set_mesh_error"] = f"{type(error).__name__}: {error}"[:2000]
        results[name] = result
    return results


@pytest.fixture(scope="module")
def four_devices() -> dict:
    results = {"devices": len(jax.devices())}
    results.update(vmap=vmap_cases(), measure=measure_case(), schemes=scheme_cases(), claims=claims_case())
    return results


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


def test_operations_outside_the_sharded_programs_stay_on_one_device():
    """Inside `devices_context` only the programs of `sharded_vmap` run across the devices
    (their results replicated on every one); an eager operation runs on the default device,
    not replicated across the mesh as under `jax.set_mesh`."""
    x = jnp.arange(10.0)
    program = jax.jit(sharded_vmap(lambda v: 2 * v))
    with devices_context("all"):
        eager = jnp.sin(x) + 1
        sharded = program(x)
    assert eager.sharding.device_set == {jax.devices()[0]}
    assert sharded.sharding.device_set == set(jax.devices()) and sharded.sharding.is_fully_replicated
    np.testing.assert_array_equal(sharded, 2 * x)


def test_devices_context_refuses_other_devices_of_a_size_already_used(monkeypatch):
    """`jax.jit` reuses a sharded program for every mesh of its size: one process shards
    across one set of devices per size, and `devices_context` says so for another."""
    monkeypatch.setattr(jaxpde.sharding, "_FIRST_MESHES", {})
    program = jax.jit(sharded_vmap(lambda v: v + 1))  # traced here only
    first, other = jax.devices()[:2], jax.devices()[2:]
    with devices_context(first):
        program(jnp.arange(4.0))
    with pytest.raises(ValueError, match=r"`devices` names 2 devices \[2, 3\].*\[0, 1\] before"):
        devices_context(other)
    with devices_context(2):  # the first two again
        np.testing.assert_array_equal(program(jnp.arange(4.0)), jnp.arange(1.0, 5.0))


def test_a_program_traced_under_the_users_set_mesh_runs_in_devices_context(monkeypatch):
    """`sharded_vmap` shards inside the user's own `jax.set_mesh` too; a program traced
    there runs afterwards in `devices_context` of the same mesh (entered with
    `jax.set_mesh` then), with the same values."""
    monkeypatch.setattr(jaxpde.sharding, "_SET_MESHES", set())
    program = jax.jit(sharded_vmap(lambda v: jnp.cos(v) * v))
    x = jnp.linspace(0.0, 1.0, 7)
    with jax.set_mesh(sample_mesh("all")):
        under_set_mesh = program(x)
    with devices_context("all"):
        in_context = program(x)
    np.testing.assert_array_equal(under_set_mesh, in_context)
    assert in_context.sharding.device_set == set(jax.devices())


def test_cli_refuses_more_devices_than_visible(monkeypatch, capsys):
    monkeypatch.setenv("JAXPDE_CACHE_DIR", "")
    assert main(["certify", "--claim", SHARDED_CLAIMS[0], "--devices", "9"]) == 2
    assert "`devices` = 9 must be between 1 and the 4 visible devices" in capsys.readouterr().err


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
