"""The diffusion ResNet, its learnable flux, the ResNet baseline, the stability certificate,
training and the denoising task: against dense NumPy references, under hypothesis."""

import equinox as eqx
import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxpde import fluxes
from jaxpde.denoising import denoising_task, psnr
from jaxpde.nn import (
    DiffusionResNet,
    ExtrapolationNetwork,
    RecurrentImplicitBlock,
    ResNet,
    flux_magnitudes,
    parameter_count,
)
from jaxpde.training import train
from jaxpde.verify import certify_callable, stability_certificate

from .helpers import few_examples, spectral_norm_svd, stencil_matrix, tolerance

N = 32
TOL = tolerance(np.float64)
# (width, boundary, kernel size, repeats): one compiled program each.
CONFIGS = [(None, "periodic", 3, 1), (3, "neumann", 5, 2)]


def _numpy_flux(flux: fluxes.RadialBasisFlux):
    centres, width = np.asarray(flux.centres), flux.width
    weights, bias = np.asarray(flux.weights), float(flux.bias)

    def phi(s):
        h = bias + np.exp(-((s[..., None] ** 2 - centres) ** 2) / (2 * width**2)) @ weights
        return flux.L / (1 + np.exp(-h)) * s

    return phi


def _random_flux_parameters(data, count):
    weights = data.draw(hnp.arrays(np.float64, count, elements=st.floats(-30, 30)))
    return weights, data.draw(st.floats(-10, 10))


# --- the learnable flux --------------------------------------------------------------


@few_examples(10)
@hypothesis.given(data=st.data())
def test_radial_basis_flux_is_in_its_sector_for_every_parameter(data):
    """0 <= Phi(s)/s <= L and a <= Phi' <= b (autodiff) for random weights and biases."""
    weights, bias = _random_flux_parameters(data, 6)
    flux = fluxes.RadialBasisFlux(weights, bias, L=2.0, centres=(0.0, 0.5, 1.0, 2.0, 4.0, 8.0), width=0.7)
    s = jnp.asarray(np.concatenate([-np.logspace(-3, 2, 300), np.logspace(-3, 2, 300)]))
    ratio = np.asarray(flux(s) / s)
    assert np.all(ratio >= 0) and np.all(ratio <= 2.0)
    slope = np.asarray(jax.vmap(jax.grad(flux))(s))
    low, high = (float(x) for x in flux.derivative_range())
    assert low <= slope.min() and slope.max() <= high
    assert float(flux.lipschitz()) == pytest.approx(high)


def test_radial_basis_flux_matches_its_definition():
    flux = fluxes.RadialBasisFlux.fit(fluxes.PeronaMalik(1.0))
    s = np.linspace(-3, 3, 101)
    np.testing.assert_allclose(np.asarray(flux(jnp.asarray(s))), _numpy_flux(flux)(s), **TOL)


def test_radial_basis_fit_approximates_perona_malik_and_is_nonmonotone():
    flux = fluxes.RadialBasisFlux.fit(fluxes.PeronaMalik(1.0))
    z = np.linspace(0, 6, 200)
    error = np.abs(np.asarray(flux.diffusivity(jnp.asarray(z))) - 1 / (1 + z))
    assert error.max() < 0.12
    assert not flux.is_monotone()  # it falls like Perona-Malik: Phi' < 0 somewhere
    slope = jax.vmap(jax.grad(flux))(jnp.linspace(1.5, 3.0, 50))
    assert float(jnp.min(slope)) < 0


def test_radial_basis_flux_is_used_with_its_signed_parameters():
    flux = fluxes.RadialBasisFlux(jnp.array([-3.0, 2.0]), -1.0)
    assert flux_magnitudes(flux) is flux
    negative = eqx.tree_at(lambda f: f.lam, fluxes.PeronaMalik(2.0), jnp.asarray(-2.0))
    assert float(flux_magnitudes(negative).lam) == 2.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weights": np.zeros((2, 2))}, "weights"),
        ({"weights": np.zeros(2), "centres": (0.0,)}, "centres"),
        ({"weights": np.zeros(2), "centres": (0.0, -1.0)}, "centres"),
        ({"weights": np.zeros(2), "L": 0.0}, "L"),
        ({"weights": np.zeros(2), "width": -1.0}, "width"),
        ({"weights": np.zeros(2), "bias": np.zeros(2)}, "bias"),
    ],
)
def test_radial_basis_flux_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fluxes.RadialBasisFlux(**kwargs)


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
            v = v - taus[layer] * K.T @ _numpy_flux(flux)(K @ v)
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


# --- certificate and training ----------------------------------------------------------


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


# The model, batches, optimiser and falsifier budget of the demo test below (which runs
# `jaxpde demo` on this model and n = N): both tests run the same compiled programs.
SMALL_MODEL = {"depth": 2, "width": 2, "kernel_size": 3, "repeats": 2, "contrast": 0.05}


def test_training_certifies_every_epoch_and_improves():
    task = denoising_task(0, n=N, train=128, test=256)
    net = DiffusionResNet(N, **SMALL_MODEL, key=jax.random.key(0))
    before = float(jnp.mean((jax.vmap(net)(jnp.asarray(task.noisy_test)) - task.clean_test) ** 2))
    net, records = train(net, task, key=jax.random.key(1), epochs=3, batch_size=32, optimiser=optax.adam(1e-2))
    assert [r.epoch for r in records] == [1, 2, 3] and records[-1].steps == 12
    assert all(r.certificate.certified for r in records)
    assert records[-1].test_loss < before
    report = certify_callable(net, (N,), jax.random.key(2), restarts=32, steps=30)
    assert report.status == "certified" and report.certified_gain_bound == 1.0
    assert report.gain <= 1 + report.tolerance
    assert max(report.lipschitz, report.local_lipschitz) <= report.certified_lipschitz_bound * (1 + 1e-9)


def test_training_refuses_an_uncertifiable_model_unless_told():
    task = denoising_task(0, n=N, train=16, test=4)
    baseline = ResNet(N, depth=1, width=2, key=jax.random.key(0))
    with pytest.raises(RuntimeError, match="not certified"):
        train(baseline, task, key=jax.random.key(1), epochs=1, batch_size=8)
    _, records = train(baseline, task, key=jax.random.key(1), epochs=1, batch_size=8, require_certificate=False)
    assert not records[0].certificate.certified
    with pytest.raises(ValueError, match="batch_size"):
        train(baseline, task, key=jax.random.key(1), batch_size=17, require_certificate=False)


# --- the denoising task ----------------------------------------------------------------


def test_denoising_task_is_reproducible_and_well_formed():
    a, b = denoising_task(3, n=64, train=10, test=6), denoising_task(3, n=64, train=10, test=6)
    np.testing.assert_array_equal(a.noisy_train, b.noisy_train)
    assert a.clean_train.shape == (10, 64) and a.clean_test.shape == (6, 64)
    assert a.clean_train.min() >= 0 and a.clean_train.max() <= 1
    assert not np.array_equal(denoising_task(4, n=64, train=10, test=6).clean_train, a.clean_train)
    big = denoising_task(0, n=256, train=64, test=2, noise=0.2)
    assert np.std(big.noisy_train - big.clean_train) == pytest.approx(0.2, rel=0.05)
    # piecewise constant rows (even) have few distinct values
    assert len(np.unique(a.clean_train[0])) <= 8


def test_psnr_matches_its_formula():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(3, 20)), rng.uniform(size=(3, 20))
    expected = 10 * np.log10(1 / np.mean((x - y) ** 2, axis=1))
    np.testing.assert_allclose(np.asarray(psnr(x, y)), expected, **TOL)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, y[:2])


@pytest.mark.parametrize("kwargs, match", [({"n": 16}, "n"), ({"noise": 0.0}, "noise"), ({"train": 1}, "train")])
def test_denoising_task_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        denoising_task(0, **kwargs)


def test_demo_trains_plots_and_certifies(tmp_path, monkeypatch, capsys):
    """`jaxpde demo denoise` end to end, on a smaller model and shorter signals (the same
    code path; the programs of the training test above)."""
    import functools
    import json

    import jaxpde.demo
    from jaxpde.cli import main

    monkeypatch.setenv("JAXPDE_CACHE_DIR", "")
    monkeypatch.setattr(jaxpde.demo, "DEMO_MODEL", SMALL_MODEL)
    monkeypatch.setattr(jaxpde.demo, "denoising_task", functools.partial(denoising_task, n=N))
    assert main(["demo", "denoise", "--epochs", "1", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "denoise.json").read_text())
    assert summary["certificate"]["certified"] and summary["epochs_certified"] == 1
    assert summary["test_psnr"] > summary["noisy_test_psnr"]
    assert summary["falsifier"]["largest_gain_found"] <= 1 + 1e-9
    assert (tmp_path / "denoise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "certified" in capsys.readouterr().out
    assert main(["demo", "denoise", "--epochs", "0"]) == 2
