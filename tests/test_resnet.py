"""The diffusion ResNet and the ResNet baseline (`jaxpde.nn.resnet`) and their stability
certificates: against dense NumPy references, under hypothesis. The learnable flux is
tested in `test_fluxes.py`, training and the denoising demo in `test_demo.py`."""

import equinox as eqx
import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpde.nn import (
    DiffusionResNet,
    ExtrapolationNetwork,
    RecurrentImplicitBlock,
    ResNet,
    parameter_count,
)
from jaxpde.verify import stability_certificate

from .helpers import (
    few_examples,
    radial_basis_flux_reference,
    spectral_norm_svd,
    stencil_matrix,
    tolerance,
)

N = 32
TOL = tolerance(np.float64)
# (width, boundary, kernel size, repeats): one compiled program each.
CONFIGS = [(None, "periodic", 3, 1), (3, "neumann", 5, 2)]


# --- the diffusion ResNet ------------------------------------------------------------


def _randomised(net, data):
    """The network with random kernels (scaled over four decades), flux parameters and thetas."""
    shape = net.operators.kernel.shape
    depth = shape[0]
    kernels = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-3, 3)))
    scales = data.draw(hnp.arrays(np.float64, (depth,) + (1,) * (len(shape) - 1), elements=st.sampled_from((0.01, 1.0, 100.0))))
    weights = data.draw(hnp.arrays(np.float64, net.fluxes.weights.shape, elements=st.floats(-30, 30)))
    biases = data.draw(hnp.arrays(np.float64, depth, elements=st.floats(-10, 10)))
    thetas = data.draw(hnp.arrays(np.float64, depth, elements=st.one_of(st.just(40.0), st.floats(-8, 8))))
    return eqx.tree_at(
        lambda m: (m.operators.kernel, m.fluxes.weights, m.fluxes.bias, m.thetas), net,
        tuple(jnp.asarray(x) for x in (kernels * scales, weights, biases, thetas)),
    )


@eqx.filter_jit
def _states(net, u):
    return net.states(u)


@pytest.mark.parametrize("width, boundary, kernel_size, repeats", CONFIGS)
@few_examples(6)
@hypothesis.given(data=st.data())
def test_diffusion_resnet_is_stable_at_every_depth_for_every_parameter(width, boundary, kernel_size, repeats, data):
    net = DiffusionResNet(N, depth=3, width=width, kernel_size=kernel_size, boundary=boundary, repeats=repeats, key=jax.random.key(0))
    net = _randomised(net, data)
    amplitude = data.draw(st.sampled_from((1e-2, 1.0, 1e2)))
    u = amplitude * data.draw(hnp.arrays(np.float64, N, elements=st.floats(-1, 1)))
    hypothesis.assume(np.linalg.norm(u) > 0)
    norms = np.linalg.norm(np.asarray(_states(net, jnp.asarray(u))), axis=1)
    assert norms.shape == (3 * repeats + 1,)
    assert np.all(norms[1:] <= norms[:-1] * (1 + 1e-12))


@pytest.mark.parametrize("width, boundary, kernel_size, repeats", CONFIGS)
def test_diffusion_resnet_matches_a_dense_numpy_composition(width, boundary, kernel_size, repeats):
    net = DiffusionResNet(N, depth=3, width=width, kernel_size=kernel_size, boundary=boundary, repeats=repeats, key=jax.random.key(1))
    u = np.sin(np.linspace(0, 6, N)) + (np.arange(N) > N // 2)
    taus = np.asarray(net.step_sizes())
    v = u.copy()
    for layer in range(3):
        K = stencil_matrix(np.asarray(net.operators.kernel[layer]), N, boundary)
        flux = jax.tree.map(lambda x, i=layer: x[i], net.fluxes)
        # The step sizes are below the bound with the exact norm (SVD), not just the certified one.
        assert taus[layer] <= 2 / (flux.L * spectral_norm_svd(K) ** 2) * (1 + 1e-12)
        for _ in range(repeats):
            v = v - taus[layer] * K.T @ radial_basis_flux_reference(flux)(K @ v)
    np.testing.assert_allclose(np.asarray(eqx.filter_jit(net)(jnp.asarray(u))), v, **TOL)
    batch = jnp.stack([jnp.asarray(u), jnp.asarray(-u)])
    np.testing.assert_allclose(np.asarray(jax.vmap(net)(batch))[1], -np.asarray(net(batch[1] * -1)), **TOL)


def test_parameter_counts():
    depth, width, k = 4, 6, 5
    net = DiffusionResNet(64, depth=depth, width=width, kernel_size=k, key=jax.random.key(0))
    centres = len(net.fluxes.centres)
    assert parameter_count(net) == depth * (width * k + centres + 1 + 1)
    baseline = ResNet(64, depth=depth, width=width, kernel_size=k, key=jax.random.key(0))
    assert parameter_count(baseline) == depth * (2 * width * k + width + 1)


def test_resnet_matches_a_dense_numpy_reference():
    net = ResNet(N, depth=2, width=3, kernel_size=3, key=jax.random.key(2))
    net = eqx.tree_at(lambda m: (m.first_bias, m.second_bias), net, (jnp.full((2, 3, 1), 0.1), jnp.full((2, 1, 1), -0.05)))
    u = np.cos(np.linspace(0, 5, N))
    v = u.copy()
    for layer in range(2):
        A = stencil_matrix(np.asarray(net.first.kernel[layer]), N, "neumann")
        B = stencil_matrix(np.asarray(net.second.kernel[layer]), N, "neumann")
        v = v + B.T @ np.maximum(A @ v + 0.1, 0) - 0.05
    np.testing.assert_allclose(np.asarray(net(jnp.asarray(u))), v, **TOL)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: DiffusionResNet(N, depth=0, key=jax.random.key(0)), "depth"),
        (lambda: DiffusionResNet(N, depth=2, width=0, key=jax.random.key(0)), "width"),
        (lambda: DiffusionResNet(4, depth=2, kernel_size=5, key=jax.random.key(0)), "kernel_size"),
        (lambda: DiffusionResNet(N, depth=2, repeats=0, key=jax.random.key(0)), "repeats"),
        (lambda: DiffusionResNet(N, depth=2, step_fraction=1.0, key=jax.random.key(0)), "step_fraction"),
        (lambda: ResNet(N, depth=2, boundary="reflect", key=jax.random.key(0)), "boundary"),
    ],
)
def test_network_configuration_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_input_shape_is_refused():
    net = DiffusionResNet(N, depth=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="u"):
        net(jnp.zeros(N + 1))


# --- certificates ----------------------------------------------------------------------


def test_certificates_of_every_network_kind():
    net = DiffusionResNet(N, depth=2, width=2, key=jax.random.key(0))
    certificate = stability_certificate(net)
    assert certificate.certified and certificate.gain_bound == 1.0
    assert all(0 < r <= 1 for r in certificate.step_ratios)
    assert all(t <= r for t, r in zip(certificate.tightness, certificate.step_ratios))
    assert certificate.lipschitz_bound >= 1.0
    assert not stability_certificate(ResNet(N, depth=1, key=jax.random.key(0))).certified
    fsi = ExtrapolationNetwork(N, num_cycles=1, cycle_length=2, key=jax.random.key(0))
    assert stability_certificate(fsi).certified
    unfrozen = ExtrapolationNetwork(N, num_cycles=1, cycle_length=2, frozen=False, key=jax.random.key(0))
    assert not stability_certificate(unfrozen).certified
    assert stability_certificate(RecurrentImplicitBlock(N, key=jax.random.key(0))).certified


def test_a_step_above_the_bound_is_not_certified(monkeypatch):
    """The certificate reads the numbers with its own norm bounds: if the bound that the
    parametrisation uses were too small (here: halved on purpose), tau would be 4x too
    large, and the certificate refuses the network."""
    from jaxpde.operators import Stencil

    net = DiffusionResNet(N, depth=2, width=2, step_fraction=0.9, key=jax.random.key(0))
    honest = Stencil.norm_bound
    monkeypatch.setattr(Stencil, "norm_bound", lambda self: honest(self) / 2)
    certificate = stability_certificate(net)
    assert not certificate.certified and certificate.gain_bound == float("inf")
    assert min(certificate.step_ratios) > 3.5 and "exceeds" in certificate.reason
