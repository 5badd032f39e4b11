"""The denoising demo end to end: its task (`jaxpde.denoising`), certified training
(`jaxpde.training`) and `jaxpde demo denoise` (`jaxpde.demo`). One file: the training test
and the demo run the same compiled programs (`SMALL_MODEL`, n = `N`), which a test worker
then compiles once."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxpde.denoising import denoising_task, psnr
from jaxpde.nn import DiffusionResNet, ResNet
from jaxpde.training import train
from jaxpde.verify import certify_callable

from .helpers import tolerance

N = 32
TOL = tolerance(np.float64)

# --- training --------------------------------------------------------------------------

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


# --- the demo ------------------------------------------------------------------------------


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
