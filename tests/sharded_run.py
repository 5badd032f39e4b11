"""Run by `tests/test_sharding.py` in a fresh process with four forced CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=4; the device count is fixed when JAX
starts): prints one JSON object of results. With the argument `registry` it checks the
whole claims registry sharded instead (a separate run: it takes the longest).

Differences are reported as the largest absolute difference between one device and
several: per-entry values agree bit for bit, sums within an entry up to rounding (XLA
picks the order of a reduction per batch shape)."""

import json
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxpde import Derivative, Matrix, Stencil, fluxes
from jaxpde.claims import CLAIMS, Budget, check_all, get_claim, sampling, warm_up
from jaxpde.cli import main
from jaxpde.schemes import ImplicitScheme, Multigrid, SemiImplicitScheme
from jaxpde.sharding import (
    AXIS,
    devices_context,
    sample_mesh,
    shard_count,
    sharded_vmap,
)

jax.config.update("jax_enable_x64", True)
BUDGET = Budget(samples=6, depth=2, sizes=(16,), name="test-sharding", restarts=8, steps=20)
SHARDED_CLAIMS = ("radial-basis-flux",)
# The whole registry at a tiny budget: every claim must run sharded, not certify well. (With
# 5 samples nonmonotone-stability can miss the decreasing branch of its fluxes and reports
# "violated", on one device as well.)
TINY = Budget(samples=16, depth=1, sizes=(8,), name="test-sharding-tiny", restarts=1, steps=1)


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


def registry_case() -> dict:
    """Every registered claim at the tiny budget, sharded over all devices as `jaxpde
    certify --devices all` runs them (the shared programs compiled first): id, status,
    message (the error, if any) and seconds."""
    mesh = sample_mesh("all")
    start = time.perf_counter()
    warm_up(TINY, devices=mesh)
    certificates = check_all(list(CLAIMS), jax.random.key(4), TINY, devices=mesh)
    reports = [c.to_json() for c in certificates]
    return {
        "claims": [[r["id"], r["status"], r["message"][-2000:], r["seconds"]] for r in reports],
        "seconds": time.perf_counter() - start,
    }


if __name__ == "__main__":
    results = {"devices": len(jax.devices())}
    if sys.argv[1:] == ["registry"]:
        results["registry"] = registry_case()
    else:
        results.update(vmap=vmap_cases(), measure=measure_case(), schemes=scheme_cases())
        results["claims"] = claims_case()
        results["cli_bad_devices"] = main(["certify", "--claim", SHARDED_CLAIMS[0], "--devices", "9"])
    json.dump(results, sys.stdout)
