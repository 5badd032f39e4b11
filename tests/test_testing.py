"""The strategies and assertions jaxpde ships for users' own suites."""

import hypothesis
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpde
from jaxpde import testing

from .helpers import few_examples


@hypothesis.given(block=testing.blocks(), data=st.data())
def test_blocks_from_the_strategy_are_stable(block, data):
    assert float(block.step_fraction()) <= 1 + 1e-12
    u = data.draw(testing.signals(block.op.in_shape))
    assert u.shape == block.op.in_shape
    assert testing.assert_euclidean_stable(block, u) <= 1 + 1e-9


@few_examples(5)
@hypothesis.given(op=testing.derivatives(), flux=testing.fluxes(), data=st.data())
def test_unstable_step_sizes_exceed_the_bound(op, flux, data):
    tau = data.draw(testing.unstable_step_sizes(op, flux))
    assert tau > float(jaxpde.stable_step_size(op, flux))
    with pytest.raises(ValueError, match="stability bound"):
        jaxpde.DiffusionBlock(op, flux, tau)


def test_assertions_show_the_witness():
    op = jaxpde.Derivative(1, 16, boundary="periodic")
    block = jaxpde.DiffusionBlock(op, jaxpde.fluxes.Linear(1.0), 0.6, allow_unstable=True)
    alternating = (-1.0) ** jnp.arange(16)
    with pytest.raises(AssertionError, match=r"(?s)1\.4000.*u: shape \(16,\), norm 4"):
        testing.assert_euclidean_stable(block, alternating)
    with pytest.raises(AssertionError, match="not non-expansive"):
        testing.assert_nonexpansive(block, alternating, 0 * alternating)
    with pytest.raises(ValueError, match="must differ"):
        testing.assert_nonexpansive(block, alternating, alternating)

    def energy(u):
        return 0.5 * jnp.sum(op(u) ** 2)

    with pytest.raises(AssertionError, match="energy increased"):
        testing.assert_energy_decays(block, energy, alternating)
    stable = jaxpde.DiffusionBlock(op, jaxpde.fluxes.Linear(1.0), 0.5)
    assert testing.assert_energy_decays(stable, energy, alternating) <= 0
    assert testing.assert_nonexpansive(stable, alternating, jnp.zeros(16)) <= 1


def test_norm_bound_assertion_catches_a_wrong_bound():
    class Overconfident(jaxpde.Stencil):
        def norm_bound(self):
            return jnp.asarray(1.0)

    lower, upper = testing.assert_norm_bounds(jaxpde.Stencil(np.array([1.0, -2.0, 1.0]), 16))
    assert lower <= upper
    with pytest.raises(AssertionError, match="norm_bound\\(\\) = 1 is below"):
        testing.assert_norm_bounds(Overconfident(np.array([1.0, -2.0, 1.0]), 16))
