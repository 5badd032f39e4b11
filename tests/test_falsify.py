import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpde import Derivative, DiffusionBlock, Stencil, fluxes, stable_step_size, verify
from jaxpde.testing import blocks
from jaxpde.verify.falsify import (
    falsify,
    falsify_energy,
    falsify_gain,
    falsify_lipschitz,
    stratified_radii,
    structured_starts,
    to_sphere,
)
from jaxpde.verify.target import gain_tolerance
from jaxpde.verify.tolerance import norm_ratio_tolerance

from .helpers import few_examples

OPERATORS = [
    Derivative(1, 32, boundary="periodic"),
    Derivative(2, 17, boundary="neumann"),
    Stencil(np.array([0.3, -1.2, 0.5]), 32, boundary="dirichlet"),
]


@pytest.mark.parametrize("op", OPERATORS, ids=lambda op: f"{type(op).__name__}-{op.boundary}")
def test_finds_growth_just_above_the_bound_and_none_at_it(op):
    flux = fluxes.Linear(2.0)
    bound = stable_step_size(op, flux)
    above = DiffusionBlock(op, flux, 1.01 * bound, allow_unstable=True)
    at = DiffusionBlock(op, flux, bound)
    key = jax.random.key(3)
    found = falsify_gain(above, op.in_shape, key, restarts=256, steps=100)
    # At 1.01 x the bound the largest possible gain is |1 - 2.02| = 1.02.
    assert 1 + norm_ratio_tolerance(above, np.float64).value < float(found.worst) <= 1.02 + 1e-12
    assert float(verify.euclidean_gain(above, found.witness)) == pytest.approx(float(found.worst), rel=1e-12)
    assert int(found.nonfinite) == 0
    none = falsify_gain(at, op.in_shape, key, restarts=256, steps=100)
    assert none.restarts == 256
    assert float(none.worst) <= 1 + norm_ratio_tolerance(at, np.float64).value
    assert float(none.sampled) <= float(none.worst)


@few_examples(4)
@hypothesis.given(block=blocks(), seed=st.integers(0, 2**31 - 1))
def test_finds_nothing_for_stable_blocks(block, seed):
    found = falsify_gain(block, block.op.in_shape, jax.random.key(seed), restarts=16, steps=30)
    assert float(found.worst) <= 1 + norm_ratio_tolerance(block, np.float64).value


def test_lipschitz_pairs_perona_malik_versus_charbonnier():
    op = Derivative(1, 32, boundary="neumann")
    key = jax.random.key(1)
    for flux, expanding in ((fluxes.PeronaMalik(1.0), True), (fluxes.Charbonnier(1.0), False)):
        block = DiffusionBlock(op, flux, stable_step_size(op, flux))
        found = falsify_lipschitz(block, op.in_shape, key, restarts=128, steps=60, radii=(0.1, 100.0))
        u, v = found.witness
        quotient = float(verify.l2_norm(block(u) - block(v)) / verify.l2_norm(u - v))
        assert quotient == pytest.approx(float(found.worst), rel=1e-9)
        assert float(found.worst) <= float(verify.block_lipschitz_bound(block)) * (1 + 1e-12)
        if expanding:
            assert float(found.worst) > 1.1  # Perona-Malik: the bound is 1.25
        else:
            assert float(found.worst) <= 1 + 1e-9


def test_energy_search_beyond_the_descent_step():
    op = Derivative(1, 16, boundary="periodic")

    def energy(u):
        return 0.5 * jnp.sum(op(u) ** 2)  # E for the linear flux, Phi(s) = s

    flux = fluxes.Linear(1.0)
    key = jax.random.key(0)
    descent = DiffusionBlock(op, flux, stable_step_size(op, flux))
    assert float(falsify_energy(descent, energy, op.in_shape, key, restarts=64, steps=50).worst) <= 1e-12
    beyond = DiffusionBlock(op, flux, 1.1 * stable_step_size(op, flux), allow_unstable=True)
    found = falsify_energy(beyond, energy, op.in_shape, key, restarts=64, steps=50)
    # On the top mode E scales by (1 - 2.2)^2 = 1.44.
    assert 0.3 < float(found.worst) <= 0.44 + 1e-9
    assert float(energy(beyond(found.witness))) > float(energy(found.witness))


def test_generic_search_counts_nonfinite_values_and_keeps_the_sphere():
    target = jnp.array([3.0, 4.0])

    def violation(x, radius):
        return jnp.where(x[0] < -0.99 * radius, jnp.nan, -jnp.sum((x - target) ** 2))

    starts = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    found = falsify(violation, starts, jnp.full(3, 5.0), project=lambda x, r: to_sphere(x, r), steps=200)
    np.testing.assert_allclose(np.asarray(found.witness), [3.0, 4.0], atol=1e-2)
    assert int(found.nonfinite) >= 1  # the start at (-5, 0) is NaN
    assert found.per_restart.shape == (3,)


def test_bad_arguments_are_refused():
    block = DiffusionBlock(OPERATORS[0], fluxes.Linear(1.0), 0.1)
    with pytest.raises(ValueError, match="`restarts`"):
        falsify_gain(block, (32,), jax.random.key(0), restarts=0)
    with pytest.raises(ValueError, match="`radii`"):
        falsify_gain(block, (32,), jax.random.key(0), radii=(2.0, 1.0))
    with pytest.raises(ValueError, match="`steps`"):
        falsify(lambda x, c: jnp.sum(x), jnp.ones((2, 3)), steps=0)


def test_gain_tolerance_of_generic_callables():
    tolerance = gain_tolerance(lambda u: u, 100, np.float64)
    assert 0 < tolerance.value < 1e-12 and "generic" in tolerance.derivation


def test_search_region_is_recorded_and_covers_every_decade():
    block = DiffusionBlock(OPERATORS[0], fluxes.PeronaMalik(1.0), 0.1)
    found = falsify_gain(block, (32,), jax.random.key(0), restarts=24, steps=5)
    region = found.region
    assert region.radii == (1e-6, 1e6) and region.restarts == 24 == found.restarts and region.steps == 5
    assert region.dtype == "float64" and dict(region.seeds)["refine"] == region.refined == 12
    assert sum(count for kind, count in region.seeds if kind != "refine") == 12
    assert "||u|| in [1e-06, 1e+06]" in region.describe() and region.to_json()["seeds"]["basis"] == 4
    assert found.candidates.shape == (8, 32)
    radii = np.log10(np.asarray(stratified_radii(jax.random.key(1), 12, (1e-6, 1e6), jnp.float64)))
    assert sorted(np.floor((radii + 6) / 1.0).astype(int).tolist()) == list(range(12))  # one per decade


def test_structured_starts_hold_unit_vectors_the_alternating_mode_and_the_top_singular_vector():
    alternating = (-1.0) ** np.arange(32)

    def linear(u):  # singular values 3 (the alternating mode) and 1
        return u + 2 * (u @ alternating) * alternating / 32

    directions, radius, seeds, points = structured_starts(jax.random.key(0), (32,), 64, (1e-6, 1e6), jnp.float64, linear)
    kinds = dict(seeds)
    assert kinds == {"basis": 21, "fourier": 16, "jacobian": 8, "random": 19} and radius.shape == (64,)
    d = np.asarray(directions)
    assert np.all(np.count_nonzero(d[:21], axis=1) == 1)  # unit vectors
    assert any(abs(abs(row @ alternating) / np.linalg.norm(row) - math.sqrt(32)) < 1e-9 for row in d[21:37])
    top = d[37:45] / np.linalg.norm(d[37:45], axis=1, keepdims=True)
    assert np.all(np.abs(top @ alternating) / math.sqrt(32) > 0.99)  # the Jacobian's top singular vector
    assert np.all(np.linalg.norm(np.asarray(points)[37:45], axis=1) > 0)
