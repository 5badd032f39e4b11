"""`jaxpde demo denoise`: train a stable diffusion network on the synthetic 1-D denoising
task, plot what it does, and certify the trained model. `jaxpde demo denoise-image`: the
same on a photograph, with the image diffusion network (`DiffusionResNet2D`)."""

import json
import pathlib
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .denoising import denoising_task, psnr
from .images import PHOTOGRAPHS, add_noise, load_photograph, random_patches, ssim
from .images import psnr as image_psnr
from .nn import parameter_count
from .nn.resnet import DiffusionResNet
from .nn.resnet2d import DiffusionResNet2D
from .training import train
from .verify.falsify import falsify_gain
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


# The image demo's model: 4 stages of 8 filters 5 x 5 (DCT start), a radial-basis flux per
# stage started from Perona-Malik with lambda = sigma (840 parameters); patches of 32 x 32.
IMAGE_DEMO_MODEL = {"depth": 4, "width": 8, "kernel_size": 5, "repeats": 1, "filters": "dct"}
IMAGE_DEMO_PATCH = 32
# Training photographs of the image demo (the one denoised is left out).
IMAGE_DEMO_TRAIN = ("astronaut", "chelsea", "coffee", "rocket", "grass", "gravel", "clock", "page", "camera", "coins")


def _image_figure(path: pathlib.Path, clean, noisy, denoised, titles) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 4.6), layout="constrained")
    panels = (clean, noisy, denoised, np.abs(denoised - clean))
    for ax, image, title, scale in zip(axes, panels, titles, (1, 1, 1, 0.25), strict=True):
        ax.imshow(image, cmap="gray", vmin=0, vmax=scale)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def denoise_image_demo(
    out: pathlib.Path,
    *,
    photograph: str = "camera",
    sigma: float = 25.0,
    crop: int = 256,
    seconds: float = 120.0,
    seed: int = 0,
    model: dict | None = None,
    patches: int = 2000,
    console=None,
) -> dict:
    """Train a `DiffusionResNet2D` (`IMAGE_DEMO_MODEL`, or `model`) for `seconds` of wall
    time (Adam 1e-2, batches of 32 patches of the `IMAGE_DEMO_TRAIN` photographs other than
    `photograph`, fresh noise every step), denoise the centre `crop x crop` of `photograph`
    with Gaussian noise of standard deviation `sigma`/255, write `denoise-image.png` (clean,
    noisy, denoised, absolute difference) and `denoise-image.json` (PSNR, SSIM, the
    stability certificate, the falsifier's largest gain) to `out`, and return the summary."""
    from rich.console import Console

    console = Console() if console is None else console
    if photograph not in PHOTOGRAPHS:
        raise ValueError(f"`photograph` must be one of {PHOTOGRAPHS}, got {photograph!r}.")
    out.mkdir(parents=True, exist_ok=True)
    noise = float(sigma) / 255
    config = IMAGE_DEMO_MODEL if model is None else model
    key = jax.random.key(seed)
    clean = load_photograph(photograph, crop=(crop, crop))
    noisy = np.asarray(add_noise(clean, noise, jax.random.fold_in(key, 0)))
    sources = [load_photograph(name) for name in IMAGE_DEMO_TRAIN if name != photograph]
    size = min(IMAGE_DEMO_PATCH, *clean.shape)
    train_clean = jnp.asarray(random_patches(sources, size, patches, np.random.default_rng(seed)))
    net = DiffusionResNet2D((size, size), contrast=noise, **config, key=jax.random.fold_in(key, 1))
    optimiser = optax.adam(1e-2)
    state = optimiser.init(eqx.filter(net, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(net, state, key):
        pick, draw = jax.random.split(key)
        batch = train_clean[jax.random.randint(pick, (32,), 0, train_clean.shape[0])]
        noisy_batch = batch + noise * jax.random.normal(draw, batch.shape, batch.dtype)
        loss, grads = eqx.filter_value_and_grad(lambda m: jnp.mean((jax.vmap(m)(noisy_batch) - batch) ** 2))(net)
        updates, state = optimiser.update(grads, state, eqx.filter(net, eqx.is_inexact_array))
        return eqx.apply_updates(net, updates), state, loss

    console.print(f"training a {parameter_count(net)}-parameter DiffusionResNet2D for {seconds:g} s (compiling first)")
    jax.block_until_ready(step(net, state, key)[2])
    start, steps, losses = time.perf_counter(), 0, []
    while steps == 0 or time.perf_counter() - start < seconds:
        net, state, loss = step(net, state, jax.random.fold_in(key, 100 + steps))
        losses.append(float(loss))
        steps += 1
    training = time.perf_counter() - start
    denoised = np.asarray(jax.jit(lambda u: net.with_shape(clean.shape).steps()(u))(jnp.asarray(noisy)))
    noisy_db, denoised_db = float(image_psnr(noisy, clean)), float(image_psnr(denoised, clean))
    certificate = stability_certificate(net)
    found = falsify_gain(net.steps(), net.in_shape, jax.random.fold_in(key, 2), restarts=32, steps=30)
    titles = (
        f"clean: {photograph} {clean.shape[0]}x{clean.shape[1]}",
        f"noisy, sigma = {sigma:g}/255: {noisy_db:.2f} dB",
        f"certified diffusion network: {denoised_db:.2f} dB",
        "|denoised - clean| (0 ... 0.25)",
    )
    _image_figure(out / "denoise-image.png", clean, noisy, denoised, titles)
    summary = {
        "photograph": photograph,
        "crop": list(clean.shape),
        "sigma": sigma,
        "seed": seed,
        "model": {"class": "DiffusionResNet2D", "patch": size, **config, "parameters": parameter_count(net)},
        "training_seconds": training,
        "training_steps": steps,
        "final_training_loss": float(np.mean(losses[-20:])),
        "noisy_psnr": noisy_db,
        "denoised_psnr": denoised_db,
        "noisy_ssim": ssim(noisy, clean),
        "denoised_ssim": ssim(denoised, clean),
        "certificate": certificate.to_json(),
        "certificate_note": "the step sizes do not depend on the image size (neumann filter banks), so the certificate of "
        "the trained network holds on the photograph as on the patches",
        "falsifier": {"restarts": 32, "steps": 30, "largest_gain_found": float(found.worst)},
    }
    (out / "denoise-image.json").write_text(json.dumps(summary, indent=2))
    console.print(
        f"trained {steps} steps in {training:.0f} s; {photograph}: {noisy_db:.2f} dB (noisy) -> {denoised_db:.2f} dB"
    )
    colour = "green" if certificate.certified else "red"
    console.print(f"[{colour}]stability certificate: {'certified' if certificate.certified else 'NOT certified'}[/] — {certificate.reason}")
    console.print(f"falsifier (32 restarts x 30 steps): largest gain found {float(found.worst):.12g} (certified <= 1)")
    console.print(f"wrote {out / 'denoise-image.png'} and {out / 'denoise-image.json'}")
    return summary
