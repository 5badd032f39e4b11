"""The multigrid U-net: it computes the V-cycle, contracts for every parameter value, and
training lowers its convergence factor on held-out problems."""

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxpde
from jaxpde.nn import MultigridUNet, energy_factor, random_systems
from jaxpde.schemes import Multigrid, multigrid_cycle

from .helpers import few_examples, thorough_param, tolerance

N = 32
# Coarsen to 4 points, so that 32 points give four levels.
CONFIGURATIONS = [(1, "neumann", "jacobi"), (1, "periodic", "red-black"), (2, "neumann", "red-black"), (2, "periodic", "jacobi")]


def _systems(order, boundary, count, key=0, tau=100.0):
    op = jaxpde.Derivative(order, N, boundary=boundary)
    return random_systems(jax.random.key(key), count, op, tau)


def _first(systems):
    return jax.tree.map(lambda x: x[0], systems)


@eqx.filter_jit
def _both(net, multigrid, A, x, f):
    return net(A, x, f), multigrid_cycle(multigrid.hierarchy(A), x, f)


# Each configuration compiles a U-net and a V-cycle of its own: three of them take every
# order, boundary and smoother; the thorough profile adds the fourth.
@pytest.mark.parametrize(
    "order, boundary, smoother",
    [thorough_param(*c) if c == (2, "neumann", "red-black") else c for c in CONFIGURATIONS],
)
def test_unet_computes_the_v_cycle(order, boundary, smoother):
    multigrid = Multigrid(smoother=smoother, coarsest=4)
    A = _first(_systems(order, boundary, 1))
    net = MultigridUNet.from_multigrid(multigrid, A)
    assert len(net.sizes) >= 2
    rng = np.random.default_rng(order)
    x, f = (jnp.asarray(rng.standard_normal(N)) for _ in range(2))
    ours, reference = _both(net, multigrid, A, x, f)
    np.testing.assert_allclose(ours, reference, **tolerance(np.float64))


_dense_energy_norm_jit = eqx.filter_jit(lambda net, A: jax.vmap(lambda e: net(A, e, jnp.zeros(N)))(jnp.eye(N)))


@few_examples(4)
@hypothesis.given(
    configuration=st.sampled_from(CONFIGURATIONS),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([0.1, 1.0, 5.0]),
)
def test_unet_contracts_in_energy_norm_for_every_parameter_value_property(configuration, seed, scale):
    order, boundary, smoother = configuration
    multigrid = Multigrid(smoother=smoother, coarsest=4)
    A = _first(_systems(order, boundary, 1, key=seed % 97, tau=float(10 ** (seed % 5 - 1))))
    net = MultigridUNet.from_multigrid(multigrid, A)
    leaves, treedef = jax.tree.flatten(net)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [leaf + scale * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)]
    net = jax.tree.unflatten(treedef, leaves)
    E = np.asarray(_dense_energy_norm_jit(net, A)).T
    L = np.linalg.cholesky(np.asarray(A.as_matrix()))
    assert np.linalg.norm(L.T @ E @ np.linalg.inv(L.T), 2) < 1


def test_even_rows_of_the_trained_prolongation_are_the_identity():
    A = _first(_systems(2, "neumann", 1))
    net = MultigridUNet.from_multigrid(Multigrid(coarsest=4), A)
    net = eqx.tree_at(lambda m: m.prolongation_taps, net, net.prolongation_taps + 0.3)
    kernels = np.asarray(net.prolongations())
    offsets = np.arange(kernels.shape[1]) - kernels.shape[1] // 2
    np.testing.assert_array_equal(kernels[:, offsets == 0], 1.0)
    np.testing.assert_array_equal(kernels[:, (offsets % 2 == 0) & (offsets != 0)], 0.0)
    assert np.all(kernels[:, offsets % 2 == 1] != np.asarray(jaxpde.schemes.multigrid.INTERPOLATIONS["cubic"][0])[offsets % 2 == 1])


# The training step differentiates the whole U-net, and its compilation dominates the
# test: three levels by default, four as well in the thorough profile.
@pytest.mark.parametrize("coarsest", [8, thorough_param(4)])
def test_training_lowers_the_factor_on_held_out_problems(coarsest):
    """Adam on the mean log energy factor over random diffusivities (m = 1, damped Jacobi
    V(2,2)); evaluated on held-out systems against the V-cycle it started from."""
    multigrid = Multigrid(smoother="jacobi", coarsest=coarsest)
    train, test = _systems(1, "neumann", 16, key=1), _systems(1, "neumann", 16, key=2)
    net = MultigridUNet.from_multigrid(multigrid, _first(train))

    def factors(net, systems, errors, cycles):
        return jax.vmap(lambda A, e: energy_factor(net, A, e, cycles))(systems, errors)

    def loss(net, errors):
        return jnp.mean(jnp.log(factors(net, train, errors, 3)))

    optimiser = optax.adam(3e-2)
    state = optimiser.init(eqx.filter(net, eqx.is_array))

    @eqx.filter_jit
    def step(net, state, key):
        value, grads = eqx.filter_value_and_grad(loss)(net, jax.random.normal(key, (16, N)))
        updates, state = optimiser.update(grads, state, net)
        return eqx.apply_updates(net, updates), state, value

    start = net
    for i in range(60):
        net, state, value = step(net, state, jax.random.key(100 + i))
        assert jnp.isfinite(value)
    errors = jax.random.normal(jax.random.key(7), (16, N))
    evaluate = eqx.filter_jit(factors)
    before = evaluate(start, test, errors, 10)
    after = evaluate(net, test, errors, 10)
    assert float(jnp.mean(after)) < 0.9 * float(jnp.mean(before))
    assert float(jnp.max(after)) < 1


def test_unet_configuration_errors():
    A = _first(_systems(1, "neumann", 1))
    with pytest.raises(ValueError, match="cycle='V'"):
        MultigridUNet.from_multigrid(Multigrid(cycle="W"), A)
    with pytest.raises(ValueError, match="two levels"):
        MultigridUNet(8, 1, multigrid=Multigrid(coarsest=16))
    with pytest.raises(ValueError, match="not a convolution"):
        MultigridUNet.from_multigrid(Multigrid(interpolation="operator"), A)
    net = MultigridUNet.from_multigrid(Multigrid(coarsest=4), A)
    other = _first(_systems(1, "periodic", 1))
    with pytest.raises(ValueError, match="network's configuration"):
        net(other, jnp.zeros(N), jnp.zeros(N))
