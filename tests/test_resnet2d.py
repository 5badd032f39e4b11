"""The image diffusion network and the DnCNN baseline (`jaxpde.nn.resnet2d`): against
SciPy / dense references, stability for random parameters under hypothesis, the certified
filter-bank norm bound, gradients and certificates."""

import equinox as eqx
import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import convolve2d, correlate2d

from jaxpde import Stencil2D
from jaxpde.claims import IMAGE_CLAIMS, Budget
from jaxpde.nn import BlockStack, DiffusionResNet2D, DnCNN, parameter_count, resnet2d
from jaxpde.nn.resnet2d import fast_block, filter_bank_norm_bound
from jaxpde.verify import stability_certificate

from .helpers import (
    few_examples,
    radial_basis_flux_reference,
    spectral_norm_svd,
    stencil_matrix,
    thorough,
    tolerance,
)

SHAPE = (8, 10)
TOL = tolerance(np.float64)
# (width, boundary, kernel size, repeats): one compiled program each.
CONFIGS = [(2, "neumann", 3, 2), (2, "periodic", 3, 1)]
BANK_SHAPES = ((1, 1, 3, 3), (3, 1, 3, 3), (2, 1, 5, 5), (4, 1, 2, 3))


def _sup_on_fine_grid(kernel: np.ndarray, n: int = 512) -> float:
    """max over an n x n grid of sqrt(sum_c |A_c(theta)|^2): a lower bound of sup ||A||."""
    symbols = np.fft.fft2(kernel[:, 0], (n, n))
    return float(np.sqrt(np.max(np.sum(np.abs(symbols) ** 2, axis=0))))


# --- the certified norm bound of a filter bank ---------------------------------------


@few_examples(6)
@hypothesis.given(
    shape=st.sampled_from(BANK_SHAPES),
    scale=st.sampled_from((1e-3, 1.0, 1e3)),
    seed=st.integers(0, 2**31 - 1),
)
def test_filter_bank_norm_bound_is_an_upper_bound_and_tight(shape, scale, seed):
    kernel = scale * np.random.default_rng(seed).standard_normal(shape)
    bound = float(filter_bank_norm_bound(jnp.asarray(kernel)))
    sup = _sup_on_fine_grid(kernel)
    assert sup <= bound <= 1.03 * sup
    # The dense operators of every boundary (their norms are at most the symbol's sup).
    for boundary in ("neumann", "dirichlet", "periodic"):
        assert (
            spectral_norm_svd(Stencil2D(kernel, (7, 9), boundary=boundary).as_matrix())
            <= bound
        )
    # float32: still above the float64 supremum.
    assert float(filter_bank_norm_bound(jnp.asarray(kernel, jnp.float32))) >= sup


def test_filter_bank_norm_bound_for_the_gradient_pair():
    # Forward differences in x and y: ||K||^2 = sup (4 sin^2 + 4 sin^2) = 8, attained on the
    # grid (theta = (pi, pi)); the bound adds the curvature margin (h^2/4) sum |r_m| |m|^2.
    kernel = np.zeros((2, 1, 2, 2))
    kernel[0, 0, 0, :] = [-1, 1]
    kernel[1, 0, :, 0] = [-1, 1]
    bound = float(filter_bank_norm_bound(jnp.asarray(kernel)))
    assert np.sqrt(8) <= bound <= np.sqrt(8) * (1 + 1e-3)
    assert float(filter_bank_norm_bound(jnp.zeros((3, 1, 3, 3)))) == 0.0
    with pytest.raises(ValueError, match="kernel"):
        filter_bank_norm_bound(jnp.zeros((2, 2, 3, 3)))


# --- the network against independent references ---------------------------------------


def _reference(net: DiffusionResNet2D, u: np.ndarray) -> np.ndarray:
    """The network in NumPy / SciPy: valid correlation and its adjoint (full convolution)
    for neumann, the dense stencil matrix otherwise; the flux from its parameters."""
    taus = np.asarray(net.step_sizes())
    v = u.copy()
    for layer in range(net.layers):
        kernel = np.asarray(net.operators.kernel[layer])[:, 0]
        phi = radial_basis_flux_reference(
            jax.tree.map(lambda x, i=layer: x[i], net.fluxes)
        )
        matrix = (
            None
            if net.boundary == "neumann"
            else stencil_matrix(kernel[:, None], v.shape, net.boundary)
        )
        for _ in range(net.repeats):
            if matrix is None:
                responses = [correlate2d(v, a, mode="valid") for a in kernel]
                back = sum(
                    convolve2d(phi(r), a, mode="full")
                    for r, a in zip(responses, kernel)
                )
            else:
                back = (matrix.T @ phi(matrix @ v.reshape(-1))).reshape(v.shape)
            v = v - taus[layer] * back
    return v


@pytest.mark.parametrize("width, boundary, kernel_size, repeats", CONFIGS)
def test_network_matches_a_scipy_reference(width, boundary, kernel_size, repeats):
    net = DiffusionResNet2D(
        SHAPE,
        depth=3,
        width=width,
        kernel_size=kernel_size,
        boundary=boundary,
        repeats=repeats,
        key=jax.random.key(1),
    )
    rows, cols = np.indices(SHAPE)
    u = np.sin(rows / 2.0) * np.cos(cols / 3.0) + (cols > 5)
    out = np.asarray(eqx.filter_jit(net)(jnp.asarray(u)))
    np.testing.assert_allclose(out, _reference(net, u), **TOL)
    # Batching is jax.vmap; the map is odd (the flux is).
    batch = jnp.stack([jnp.asarray(u), jnp.asarray(-u)])
    np.testing.assert_allclose(
        np.asarray(jax.vmap(net)(batch)), np.stack([out, -out]), **TOL
    )
    # The steps are below the bound with the exact norm (SVD), not just the certified one.
    for layer, tau in enumerate(np.asarray(net.step_sizes())):
        exact = spectral_norm_svd(net.block(layer).op.as_matrix())
        assert tau <= 2 / (net.fluxes.L * exact**2)


@pytest.mark.parametrize("boundary", ["neumann", "dirichlet"])
def test_fast_block_is_the_stencil_block(boundary):
    net = DiffusionResNet2D(
        SHAPE, depth=1, width=3, kernel_size=3, boundary=boundary, key=jax.random.key(2)
    )
    block = net.block(0)
    u = jax.random.normal(jax.random.key(3), (1, *SHAPE))
    np.testing.assert_allclose(
        np.asarray(fast_block(block, u)), np.asarray(block(u)), **TOL
    )


def test_steps_and_other_image_sizes_are_the_same_map():
    net = DiffusionResNet2D(SHAPE, depth=2, width=2, repeats=2, key=jax.random.key(4))
    u = jax.random.normal(jax.random.key(5), SHAPE)
    np.testing.assert_allclose(np.asarray(net.steps()(u)), np.asarray(net(u)), **TOL)
    states = np.asarray(net.states(u))
    assert states.shape == (5, *SHAPE)
    np.testing.assert_allclose(states[-1], np.asarray(net(u)), **TOL)
    larger = net.with_shape((12, 9))
    assert larger.in_shape == (12, 9)
    np.testing.assert_allclose(
        np.asarray(larger.step_sizes()), np.asarray(net.step_sizes()), **TOL
    )
    assert larger(jnp.ones((12, 9))).shape == (12, 9)


# --- stability for every parameter value ------------------------------------------------


def _randomised(net, data):
    """The network with random filters (scaled over four decades), flux parameters and thetas."""
    shape = net.operators.kernel.shape
    depth = shape[0]
    kernels = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-3, 3)))
    scales = data.draw(
        hnp.arrays(
            np.float64,
            (depth, 1, 1, 1, 1),
            elements=st.sampled_from((0.01, 1.0, 100.0)),
        )
    )
    weights = data.draw(
        hnp.arrays(np.float64, net.fluxes.weights.shape, elements=st.floats(-30, 30))
    )
    biases = data.draw(hnp.arrays(np.float64, depth, elements=st.floats(-10, 10)))
    thetas = data.draw(
        hnp.arrays(
            np.float64, depth, elements=st.one_of(st.just(40.0), st.floats(-8, 8))
        )
    )
    return eqx.tree_at(
        lambda m: (m.operators.kernel, m.fluxes.weights, m.fluxes.bias, m.thetas),
        net,
        tuple(jnp.asarray(x) for x in (kernels * scales, weights, biases, thetas)),
    )


@eqx.filter_jit
def _states(net, u):
    return net.states(u)


@pytest.mark.parametrize("width, boundary, kernel_size, repeats", CONFIGS)
@few_examples(6)
@hypothesis.given(data=st.data())
def test_network_is_stable_at_every_depth_for_every_parameter(
    width, boundary, kernel_size, repeats, data
):
    net = DiffusionResNet2D(
        SHAPE,
        depth=3,
        width=width,
        kernel_size=kernel_size,
        boundary=boundary,
        repeats=repeats,
        key=jax.random.key(0),
    )
    net = _randomised(net, data)
    amplitude = data.draw(st.sampled_from((1e-2, 1.0, 1e2)))
    u = amplitude * data.draw(hnp.arrays(np.float64, SHAPE, elements=st.floats(-1, 1)))
    hypothesis.assume(np.linalg.norm(u) > 0)
    norms = np.linalg.norm(
        np.asarray(_states(net, jnp.asarray(u))).reshape(3 * repeats + 1, -1), axis=1
    )
    assert np.all(norms[1:] <= norms[:-1] * (1 + 1e-12))


# --- gradients, certificates, configuration ---------------------------------------------


def test_gradients_reach_every_parameter():
    net = DiffusionResNet2D(SHAPE, depth=2, width=2, key=jax.random.key(6))
    clean = jnp.asarray(np.indices(SHAPE)[1] > 4, jnp.float64)
    noisy = clean + 0.1 * jax.random.normal(jax.random.key(7), SHAPE)
    grads = eqx.filter_grad(lambda m: jnp.mean((m(noisy) - clean) ** 2))(net)
    for leaf in (
        grads.operators.kernel,
        grads.fluxes.weights,
        grads.fluxes.bias,
        grads.thetas,
    ):
        assert np.all(np.isfinite(np.asarray(leaf))) and np.any(np.asarray(leaf) != 0)


def test_certificate_and_a_planted_bound_that_is_too_small(monkeypatch):
    net = DiffusionResNet2D(
        SHAPE, depth=2, width=3, step_fraction=0.9, key=jax.random.key(8)
    )
    certificate = stability_certificate(net)
    assert certificate.certified and certificate.gain_bound == 1.0
    assert all(0.85 < r <= 0.9 for r in certificate.step_ratios)
    assert "proofs/diffusion-resnet-stability-2d.md" in certificate.reason

    class Amplified(DiffusionResNet2D):  # a user's subclass may compute anything
        def __call__(self, u):
            return 2 * super().__call__(u)

    amplified = eqx.tree_at(lambda m: m.thetas, Amplified(SHAPE, depth=2, width=3, key=jax.random.key(8)), net.thetas)
    refused = stability_certificate(amplified)
    assert not refused.certified and "subclasses a jaxpde network" in refused.reason

    class Stack(BlockStack):  # the same stable blocks, composed by a user's own __call__
        def __init__(self, net):
            self.operators, self.fluxes, self.thetas = net.operators, net.fluxes, net.thetas

        def __call__(self, u):
            return 2 * u

    refused = stability_certificate(Stack(net))
    assert not refused.certified and "subclasses a jaxpde network" in refused.reason
    # A bound halved on purpose makes tau 4x too large: the certificate (own norm bounds) refuses it.
    honest = filter_bank_norm_bound
    monkeypatch.setattr(
        resnet2d, "filter_bank_norm_bound", lambda kernel: honest(kernel) / 2
    )
    certificate = stability_certificate(net)
    assert not certificate.certified and min(certificate.step_ratios) > 3.5


def test_parameter_counts():
    depth, width, k = 3, 5, 3
    net = DiffusionResNet2D(
        SHAPE,
        depth=depth,
        width=width,
        kernel_size=k,
        flux_centres=6,
        key=jax.random.key(0),
    )
    assert parameter_count(net) == depth * (width * k * k + 6 + 1 + 1)
    cnn = DnCNN(depth=4, width=6, key=jax.random.key(0))
    assert parameter_count(cnn) == (9 * 6 + 6) + 2 * (9 * 36 + 6) + (9 * 6 + 1)


def test_dncnn_matches_a_scipy_reference():
    cnn = DnCNN(depth=3, width=2, key=jax.random.key(9))
    cnn = eqx.tree_at(
        lambda m: m.biases, cnn, tuple(jnp.full(b.shape, 0.05) for b in cnn.biases)
    )
    u = np.cos(np.arange(np.prod(SHAPE)).reshape(SHAPE) / 3.0)
    v = u[None]
    for index, weight in enumerate(cnn.weights):
        weight = np.asarray(weight)
        v = np.stack(
            [
                sum(
                    correlate2d(v[i], weight[o, i], mode="same")
                    for i in range(v.shape[0])
                )
                + 0.05
                for o in range(weight.shape[0])
            ]
        )
        if index < 2:
            v = np.maximum(v, 0)
    np.testing.assert_allclose(np.asarray(cnn(jnp.asarray(u))), u - v[0], **TOL)
    assert not stability_certificate(cnn).certified


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: DiffusionResNet2D(SHAPE, depth=0, key=jax.random.key(0)), "depth"),
        (
            lambda: DiffusionResNet2D(SHAPE, depth=1, width=0, key=jax.random.key(0)),
            "width",
        ),
        (
            lambda: DiffusionResNet2D(
                (4, 4), depth=1, kernel_size=5, key=jax.random.key(0)
            ),
            "shape",
        ),
        (
            lambda: DiffusionResNet2D(
                SHAPE, depth=1, boundary="reflect", key=jax.random.key(0)
            ),
            "boundary",
        ),
        (
            lambda: DiffusionResNet2D(
                SHAPE, depth=1, step_fraction=1.0, key=jax.random.key(0)
            ),
            "step_fraction",
        ),
        (
            lambda: DiffusionResNet2D(SHAPE, depth=1, repeats=0, key=jax.random.key(0)),
            "repeats",
        ),
        (lambda: DnCNN(depth=1, key=jax.random.key(0)), "depth"),
        (lambda: DnCNN(kernel_size=4, key=jax.random.key(0)), "kernel_size"),
    ],
)
def test_configuration_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_input_shape_is_refused():
    net = DiffusionResNet2D(SHAPE, depth=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="u"):
        net(jnp.zeros((SHAPE[0] + 1, SHAPE[1])))


@thorough
def test_the_claim_catches_a_bound_that_is_too_small(monkeypatch):
    # A filter-bank bound halved on purpose (tau 4x too large) must make the claim violated.
    claim = next(c for c in IMAGE_CLAIMS if c.id == "diffusion-resnet-stability-2d")
    honest = filter_bank_norm_bound
    monkeypatch.setattr(
        resnet2d, "filter_bank_norm_bound", lambda kernel: honest(kernel) / 2
    )
    budget = Budget(
        samples=6, depth=2, sizes=(8,), name="test-images", restarts=8, steps=20
    )
    assert claim.check(jax.random.key(0), budget).status == "violated"
