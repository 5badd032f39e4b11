"""Run by `tests/test_sharding.py` in a fresh process with four forced CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=4; the device count is fixed when JAX
starts): prints one JSON object of results.

Differences are reported as the largest absolute difference between one device and
several: per-entry values agree bit for bit, sums within an entry up to rounding (XLA
picks the order of a reduction per batch shape)."""

import json
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxpde import Derivative, fluxes
from jaxpde.claims import Budget, check_all, get_claim, sampling
from jaxpde.cli import main
from jaxpde.sharding import devices_context, shard_count, sharded_vmap

jax.config.update("jax_enable_x64", True)
BUDGET = Budget(samples=6, depth=2, sizes=(16,), name="test-sharding", restarts=8, steps=20)
CLAIMS = ("radial-basis-flux",)


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
    claims = [get_claim(c) for c in CLAIMS]
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


if __name__ == "__main__":
    results = {"devices": len(jax.devices()), "vmap": vmap_cases(), "measure": measure_case()}
    results["claims"] = claims_case()
    results["cli_bad_devices"] = main(["certify", "--claim", CLAIMS[0], "--devices", "9"])
    json.dump(results, sys.stdout)
