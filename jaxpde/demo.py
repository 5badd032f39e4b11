"""`jaxpde demo denoise`: train a stable diffusion network on the synthetic 1-D denoising
task, plot what it does, and certify the trained model."""

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .denoising import denoising_task, psnr
from .nn.resnet import DiffusionResNet
from .training import train
from .verify.networks import stability_certificate
from .verify.target import certify_callable

# The demo's model: 6 stages of a learned explicit scheme, 8 steps each, stencils of
# 5 taps from one channel to 4, and a radial-basis flux per stage (180 parameters).
DEMO_MODEL = {"depth": 6, "width": 4, "kernel_size": 5, "repeats": 8, "contrast": 0.05}


def demo_model(n: int, key) -> DiffusionResNet:
    """The untrained model of the demo (`DEMO_MODEL`)."""
    return DiffusionResNet(n, key=key, **DEMO_MODEL)


def _figure(path: pathlib.Path, task, denoised: np.ndarray, records, losses: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 7), layout="constrained")
    grid = fig.add_gridspec(2, 3)
    x = np.arange(task.n)
    for column, index in enumerate((0, 1, 2)):
        ax = fig.add_subplot(grid[0, column])
        ax.plot(x, task.noisy_test[index], color="0.7", lw=1, label="noisy")
        ax.plot(x, task.clean_test[index], "k--", lw=1, label="clean")
        ax.plot(x, denoised[index], color="C0", lw=1.5, label="denoised")
        noisy_db = float(psnr(task.noisy_test[index], task.clean_test[index]))
        denoised_db = float(psnr(denoised[index], task.clean_test[index]))
        ax.set_title(f"test signal {index}: {noisy_db:.1f} dB -> {denoised_db:.1f} dB", fontsize=10)
        if column == 0:
            ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[1, :2])
    ax.semilogy(np.arange(1, len(losses) + 1), losses, color="C0", lw=1)
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (MSE)")
    ax.set_title("training curve")
    ax = fig.add_subplot(grid[1, 2])
    ax.plot([r.epoch for r in records], [r.test_psnr for r in records], "o-", color="C1")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean test PSNR (dB)")
    ax.set_title("test PSNR; every epoch certified stable")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def denoise_demo(out: pathlib.Path, *, epochs: int = 12, seed: int = 0, console=None) -> dict:
    """Train `demo_model` for `epochs` epochs (Adam, learning rate 0.01, batches of 32),
    write `denoise.png` and `denoise.json` to `out`, and return the summary."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console() if console is None else console
    out.mkdir(parents=True, exist_ok=True)
    task = denoising_task(seed)
    key = jax.random.key(seed)
    model = demo_model(task.n, jax.random.fold_in(key, 1))
    batch_size = 32
    total = epochs * (task.clean_train.shape[0] // batch_size)
    losses: list[float] = []
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("loss {task.fields[loss]:.5f}"), TimeElapsedColumn(), console=console, transient=True,
    ) as progress:
        bar = progress.add_task("training (compiling first)", total=total, loss=float("nan"))

        def on_step(step, loss):
            losses.append(loss)
            progress.update(bar, completed=step, loss=loss, description="training")

        def on_epoch(record):
            progress.console.print(
                f"epoch {record.epoch:2d}: train loss {record.train_loss:.5f}, test PSNR {record.test_psnr:.2f} dB, "
                f"certified: {record.certificate.certified}"
            )

        model, records = train(
            model, task, key=jax.random.fold_in(key, 2), epochs=epochs, batch_size=batch_size,
            optimiser=optax.adam(1e-2), on_epoch=on_epoch, on_step=on_step,
        )
    seconds = time.perf_counter() - start
    denoised = np.asarray(jax.jit(jax.vmap(model))(jnp.asarray(task.noisy_test)))
    certificate = stability_certificate(model)
    empirical = certify_callable(
        model, (task.n,), jax.random.fold_in(key, 3), name="trained DiffusionResNet", restarts=32, steps=30
    )
    _figure(out / "denoise.png", task, denoised, records, losses)
    summary = {
        "model": {"class": "DiffusionResNet", **DEMO_MODEL},
        "seed": seed,
        "epochs": epochs,
        "training_seconds": seconds,
        "noisy_test_psnr": float(np.mean(psnr(task.noisy_test, task.clean_test))),
        "test_psnr": records[-1].test_psnr,
        "epochs_certified": sum(r.certificate.certified for r in records),
        "certificate": certificate.to_json(),
        "falsifier": {
            "status": empirical.status,
            "largest_gain_found": empirical.gain,
            "largest_lipschitz_quotient_found": max(empirical.lipschitz, empirical.local_lipschitz),
        },
    }
    (out / "denoise.json").write_text(json.dumps(summary, indent=2))
    console.print(
        f"trained in {seconds:.1f} s: test PSNR {summary['noisy_test_psnr']:.2f} dB (noisy) -> "
        f"{summary['test_psnr']:.2f} dB; all {summary['epochs_certified']}/{epochs} epochs certified"
    )
    colour = "green" if certificate.certified else "red"
    console.print(f"[{colour}]stability certificate: {'certified' if certificate.certified else 'NOT certified'}[/] — {certificate.reason}")
    console.print(
        f"falsifier ({empirical.restarts} restarts x {empirical.steps} steps): largest gain found "
        f"{empirical.gain:.12g} (certified <= 1), largest Lipschitz quotient found "
        f"{summary['falsifier']['largest_lipschitz_quotient_found']:.4g}"
    )
    console.print(f"wrote {out / 'denoise.png'} and {out / 'denoise.json'}")
    return summary
