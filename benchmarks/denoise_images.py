"""Denoising real photographs: the certified image diffusion network (`DiffusionResNet2D`,
learned filters and influence functions as in Chen and Pock's TNRD, with a stability
certificate) against tuned Perona-Malik, TV, BM3D and DnCNN-style residual CNNs.

Data (scikit-image's bundled photographs, grey values in [0, 1], `jaxpde.images`):

- training: patches of astronaut, chelsea, coffee, rocket, grass, gravel, clock, page,
  hubble_deep_field, immunohistochemistry (random positions, flips and rotations);
- tuning of the classical methods: 128 x 128 centre crops of the same training images;
- test (never seen in training or tuning): the centre 256 x 256 crops of camera, moon,
  coins, brick and text (text is 172 pixels high: 172 x 256).

Noise: white Gaussian, sigma = 25/255 (then 15/255 and 50/255 where `--sigmas` asks), a fixed
key per image. Rows:

- noisy input;
- Perona-Malik (tuned): jaxpde's explicit scheme u - tau grad^T Phi(grad u) (neumann forward
  differences, tau = 2 / (L ||grad||^2)); lambda (12 values log-spaced in [0.005, 0.2]) and the
  number of steps (1 ... 400) maximise the mean PSNR on the tuning crops;
- TV (tuned): `skimage.restoration.denoise_tv_chambolle`, weight (16 values log-spaced in
  [0.01, 0.5]) tuned the same way;
- BM3D: the `bm3d` package at the true sigma (the quality anchor; no training);
- DnCNN (equal / 2x): u - R(u), R five 3 x 3 convolutions with ReLUs (no batch norm), width
  chosen so the parameter count matches the certified network (equal) or doubles it; Adam
  with the learning rate chosen from {1e-3, 3e-3} by validation PSNR (both runs count in the
  training time);
- DiffusionResNet2D (equal / half): 6 stages u - tau K^T Phi(K u), K 1 -> C filters 5 x 5
  (C = 16 / 8, neumann, started from the DCT basis), a RadialBasisFlux per stage (8 centres,
  started from Perona-Malik with lambda = sigma), tau under the certified bound; Adam 1e-2.

All networks train in float32 on 32 x 32 patches (batches of 32, fresh noise every step) for a wall-clock budget each
(`--minutes`, split over the models; the learning rate drops by 10 for the last fifth). Per
test image: PSNR and SSIM (skimage); per method: parameters, training seconds, inference
seconds per image (median of 5, compiled first), the certified gain bound ||f(u)|| <= g ||u||
and Lipschitz bound (`jaxpde.verify.stability_certificate`; none for the CNNs and BM3D), and
the falsifier's largest gain found (`jaxpde.verify.falsify_gain`, 64 restarts x 50 steps on
32 x 32 inputs, norms 1e-6 ... 1e6; a lower bound of the true supremum).

Usage: `python benchmarks/denoise_images.py [--quick] [--sigmas 25 15 50] [--network-sigmas 25]
[--minutes M] [--stop-after M]` (networks are trained only at `--network-sigmas`).
Results: `benchmarks/results/denoise_images-<device>.{md,json}` (`-quick` with `--quick`).
"""

import argparse
import json
import math
import pathlib
import statistics
import sys
import time
import timeit

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import finite_json, machine

from jaxpde import Gradient
from jaxpde.fluxes import PeronaMalik
from jaxpde.images import (
    add_noise,
    load_photograph,
    psnr,
    random_patches,
    require_skimage,
    ssim,
)
from jaxpde.nn import DiffusionResNet2D, DnCNN, parameter_count
from jaxpde.schemes import ExplicitScheme
from jaxpde.verify import falsify_gain, stability_certificate

TRAIN = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "grass",
    "gravel",
    "clock",
    "page",
    "hubble_deep_field",
    "immunohistochemistry",
)
TEST = ("camera", "moon", "coins", "brick", "text")
TEST_CROP = (256, 256)
TUNE_CROP = (128, 128)
PATCH = 32
BATCH = 32
CNN_DEPTH = 5
CNN_RATES = (1e-3, 3e-3)
# The certified network at equal parameter count (to the CNN) and at half of it.
DIFFUSION = {
    "equal": {
        "depth": 6,
        "width": 16,
        "kernel_size": 5,
        "repeats": 1,
        "filters": "dct",
    },
    "half": {"depth": 6, "width": 8, "kernel_size": 5, "repeats": 1, "filters": "dct"},
}
QUICK_DIFFUSION = {
    "equal": {"depth": 2, "width": 4, "kernel_size": 3, "repeats": 1, "filters": "dct"},
    "half": {"depth": 2, "width": 2, "kernel_size": 3, "repeats": 1, "filters": "dct"},
}


def dncnn_width(target: int, depth: int) -> int:
    """The DnCNN width whose parameter count is closest to `target`."""
    counts = {
        w: parameter_count(DnCNN(depth=depth, width=w, key=jax.random.key(0)))
        for w in range(2, 64)
    }
    return min(counts, key=lambda w: abs(counts[w] - target))


def metrics(estimates, cleans) -> dict:
    values = [float(psnr(e, c)) for e, c in zip(estimates, cleans)]
    sims = [ssim(e, c) for e, c in zip(estimates, cleans)]
    return {
        "psnr": values,
        "ssim": sims,
        "mean_psnr": float(np.mean(values)),
        "mean_ssim": float(np.mean(sims)),
    }


def median_seconds(fn, x, repeat=5) -> float:
    jax.block_until_ready(fn(x))
    return statistics.median(
        timeit.repeat(lambda: jax.block_until_ready(fn(x)), number=1, repeat=repeat)
    )


# --- classical methods -------------------------------------------------------------


def tune_perona_malik(cleans, noisies, lams, max_steps):
    """(lambda, steps, tuning PSNR) maximising the mean PSNR over the tuning crops."""
    best = (None, None, -math.inf)
    for lam in lams:
        scheme = ExplicitScheme(Gradient(cleans[0].shape), PeronaMalik(float(lam)))
        run = jax.jit(
            jax.vmap(
                lambda u, scheme=scheme: scheme.rollout(u, max_steps, save_every=1)[1]
            )
        )
        paths = run(jnp.asarray(noisies))  # (images, steps + 1, H, W)
        scores = np.mean(
            np.asarray(
                psnr(paths, jnp.broadcast_to(jnp.asarray(cleans)[:, None], paths.shape))
            ),
            axis=0,
        )
        step = int(np.argmax(scores))
        if scores[step] > best[2]:
            best = (float(lam), step, float(scores[step]))
    return best


def perona_malik(shape, lam, steps):
    """The tuned scheme on images of `shape`, compiled: `u -> u^steps`."""
    scheme = ExplicitScheme(Gradient(shape), PeronaMalik(lam))
    return jax.jit(lambda u: scheme.rollout(u, max(steps, 1)) if steps else u)


def tune_tv(cleans, noisies, weights):
    from skimage.restoration import denoise_tv_chambolle

    scores = [
        np.mean(
            [
                float(psnr(denoise_tv_chambolle(y, weight=w), x))
                for x, y in zip(cleans, noisies)
            ]
        )
        for w in weights
    ]
    best = int(np.argmax(scores))
    return float(weights[best]), float(scores[best])


# --- training ----------------------------------------------------------------------


def make_step(optimiser):
    @eqx.filter_jit
    def step(model, state, noisy, clean, scale):
        def loss_fn(m):
            return jnp.mean((jax.vmap(m)(noisy) - clean) ** 2)

        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        updates, state = optimiser.update(
            grads, state, eqx.filter(model, eqx.is_inexact_array)
        )
        updates = jax.tree.map(lambda u: u * scale, updates)
        return eqx.apply_updates(model, updates), state, loss

    return step


def train_for(model, patches, sigma, seconds, rate, key, log):
    """Adam on fresh noise every step until `seconds` of wall time; the learning rate is
    divided by 10 for the last fifth. Returns (model, steps, seconds, last losses)."""
    optimiser = optax.adam(rate)
    state = optimiser.init(eqx.filter(model, eqx.is_inexact_array))
    step = make_step(optimiser)
    clean_all = jnp.asarray(patches, jnp.float32)
    # Compile first (one step on a batch, discarded): the budget counts training, not compiling.
    compiling = time.perf_counter()
    jax.block_until_ready(
        step(
            model,
            state,
            clean_all[:BATCH],
            clean_all[:BATCH],
            jnp.asarray(0.0, jnp.float32),
        )[2]
    )
    log(f"    compiled in {time.perf_counter() - compiling:.1f} s")
    start, count, losses = time.perf_counter(), 0, []
    while True:
        elapsed = time.perf_counter() - start
        if elapsed > seconds and count > 0:
            break
        key, k1, k2 = jax.random.split(key, 3)
        index = jax.random.randint(k1, (BATCH,), 0, clean_all.shape[0])
        clean = clean_all[index]
        noisy = clean + sigma * jax.random.normal(k2, clean.shape, clean.dtype)
        scale = jnp.asarray(1.0 if elapsed < 0.8 * seconds else 0.1, jnp.float32)
        model, state, loss = step(model, state, noisy, clean, scale)
        losses.append(float(loss))
        count += 1
        if count % 100 == 0:
            log(
                f"    step {count}: loss {np.mean(losses[-100:]):.3e} ({time.perf_counter() - start:.0f} s)"
            )
    return model, count, time.perf_counter() - start, losses


def validation_psnr(model, noisy, clean) -> float:
    return float(jnp.mean(psnr(jax.jit(jax.vmap(model))(noisy), clean)))


def falsified_gain(fn, key, restarts, steps) -> float:
    found = falsify_gain(fn, (PATCH, PATCH), key, restarts=restarts, steps=steps)
    return float(found.worst)


# --- the experiment ----------------------------------------------------------------


def run_sigma(sigma255, args, budget_seconds, log) -> dict:
    sigma = sigma255 / 255
    key = jax.random.key(int(sigma255))
    rng = np.random.default_rng(int(sigma255))
    crop = (64, 64) if args.quick else TEST_CROP
    cleans = [
        load_photograph(name, crop=crop) for name in (TEST[:2] if args.quick else TEST)
    ]
    noisies = [
        np.asarray(add_noise(x, sigma, jax.random.fold_in(key, i)))
        for i, x in enumerate(cleans)
    ]
    train_images = [
        load_photograph(name) for name in (TRAIN[:3] if args.quick else TRAIN)
    ]
    tune_clean = np.stack(
        [
            load_photograph(name, crop=(48, 48) if args.quick else TUNE_CROP)
            for name in (TRAIN[:3] if args.quick else TRAIN)
        ]
    )
    tune_noisy = np.stack(
        [
            np.asarray(add_noise(x, sigma, jax.random.fold_in(key, 100 + i)))
            for i, x in enumerate(tune_clean)
        ]
    )
    rows = []

    def add_row(name, estimates, **extra):
        row = {
            "method": name,
            **metrics([np.asarray(e, np.float64) for e in estimates], cleans),
            **extra,
        }
        rows.append(row)
        log(f"  {name}: {row['mean_psnr']:.2f} dB, SSIM {row['mean_ssim']:.3f}")
        return row

    add_row("noisy", noisies, parameters=0)
    # Perona-Malik.
    lams = np.geomspace(0.005, 0.2, 4 if args.quick else 12)
    lam, steps, tuned = tune_perona_malik(
        tune_clean, tune_noisy, lams, 20 if args.quick else 400
    )
    runs = {
        shape: perona_malik(shape, lam, steps) for shape in {y.shape for y in noisies}
    }
    estimates = [np.asarray(runs[y.shape](jnp.asarray(y))) for y in noisies]
    pm_seconds = median_seconds(runs[noisies[0].shape], jnp.asarray(noisies[0]))
    scheme = ExplicitScheme(Gradient((PATCH, PATCH)), PeronaMalik(lam))
    pm_gain = falsified_gain(
        lambda u: scheme.rollout(u, max(steps, 1)),
        jax.random.key(1),
        args.restarts,
        args.steps,
    )
    add_row(
        "Perona-Malik (tuned)",
        estimates,
        parameters=2,
        settings=f"lambda={lam:.4g}, steps={steps} (tuning PSNR {tuned:.2f})",
        inference_seconds=pm_seconds,
        certified_gain=1.0,
        certified_by="explicit-stability-2d (every step)",
        falsifier_gain=pm_gain,
    )
    # TV.
    from skimage.restoration import denoise_tv_chambolle

    weight, tuned = tune_tv(
        tune_clean, tune_noisy, np.geomspace(0.01, 0.5, 6 if args.quick else 16)
    )
    t0 = time.perf_counter()
    estimates = [denoise_tv_chambolle(y, weight=weight) for y in noisies]
    add_row(
        "TV (tuned, Chambolle)",
        estimates,
        parameters=1,
        settings=f"weight={weight:.4g} (tuning PSNR {tuned:.2f})",
        inference_seconds=(time.perf_counter() - t0) / len(noisies),
    )
    # BM3D.
    try:
        import bm3d

        t0 = time.perf_counter()
        estimates = [np.asarray(bm3d.bm3d(y, sigma_psd=sigma)) for y in noisies]
        add_row(
            "BM3D",
            estimates,
            parameters=0,
            inference_seconds=(time.perf_counter() - t0) / len(noisies),
        )
    except ImportError:
        log(
            "  BM3D: the bm3d package is not installed (pip install -e '.[bench]'); row skipped"
        )
    if sigma255 not in args.network_sigmas:
        return {
            "sigma": sigma255,
            "test_images": [
                f"{n} {c.shape[0]}x{c.shape[1]}" for n, c in zip(TEST, cleans)
            ],
            "rows": rows,
        }
    # Networks.
    patches = random_patches(train_images, PATCH, 256 if args.quick else 4000, rng)
    val_clean = jnp.asarray(
        random_patches(
            train_images, PATCH, 64 if args.quick else 256, np.random.default_rng(999)
        ),
        jnp.float32,
    )
    val_noisy = val_clean + sigma * jax.random.normal(
        jax.random.key(999), val_clean.shape, jnp.float32
    )
    configs = QUICK_DIFFUSION if args.quick else DIFFUSION
    # The default flux fitted to Perona-Malik with contrast lambda = sigma.
    diffusion_nets = {
        tag: DiffusionResNet2D(
            (PATCH, PATCH), **config, contrast=sigma, key=jax.random.fold_in(key, 7)
        )
        for tag, config in configs.items()
    }
    equal = parameter_count(diffusion_nets["equal"])
    widths = {
        "equal": dncnn_width(equal, CNN_DEPTH),
        "2x": dncnn_width(2 * equal, CNN_DEPTH),
    }
    # Seconds per model: the certified networks one share each, each CNN learning rate a
    # half share (the grid costs the CNNs as much as one certified network each).
    share = budget_seconds / 4

    def network_row(name, model, apply, seconds, steps, settings, certificate):
        estimates = [
            np.asarray(apply(jnp.asarray(y, jnp.float32)), np.float64) for y in noisies
        ]
        inference = median_seconds(apply, jnp.asarray(noisies[0], jnp.float32))
        return add_row(
            name,
            estimates,
            parameters=parameter_count(model),
            training_seconds=seconds,
            training_steps=steps,
            settings=settings,
            inference_seconds=inference,
            **certificate,
        )

    for tag in ("equal", "2x"):
        best = None
        total = 0.0
        for rate in CNN_RATES:
            log(f"  training DnCNN ({tag}, width {widths[tag]}, lr {rate:g})")
            model = DnCNN(
                depth=CNN_DEPTH, width=widths[tag], key=jax.random.fold_in(key, 11)
            )
            model, steps, seconds, _ = train_for(
                model,
                patches,
                sigma,
                share / len(CNN_RATES),
                rate,
                jax.random.fold_in(key, 12),
                log,
            )
            total += seconds
            score = validation_psnr(model, val_noisy, val_clean)
            log(f"    validation PSNR {score:.2f} dB after {steps} steps")
            if best is None or score > best[0]:
                best = (score, rate, model, steps)
        score, rate, model, steps = best
        apply = jax.jit(lambda y, model=model: model(y))
        gain = falsified_gain(model, jax.random.key(2), args.restarts, args.steps)
        network_row(
            f"DnCNN ({tag} parameters)",
            model,
            apply,
            total,
            steps,
            f"depth {CNN_DEPTH}, width {widths[tag]}, lr {rate:g} (of {list(CNN_RATES)}; validation {score:.2f} dB)",
            {
                "certified_gain": None,
                "certified_by": "none (no theorem for untied weights)",
                "falsifier_gain": gain,
            },
        )
    for tag in ("equal", "half"):
        log(f"  training DiffusionResNet2D ({tag}: {configs[tag]})")
        model, steps, seconds, _ = train_for(
            diffusion_nets[tag],
            patches,
            sigma,
            share,
            args.diffusion_lr,
            jax.random.fold_in(key, 13),
            log,
        )
        score = validation_psnr(model, val_noisy, val_clean)
        certificate = stability_certificate(model)
        gain = falsified_gain(
            model.steps(), jax.random.key(3), args.restarts, args.steps
        )
        applies = {}

        def apply(y, model=model, applies=applies):
            shape = tuple(y.shape)
            if shape not in applies:
                steps_model = model.with_shape(shape).steps()
                applies[shape] = jax.jit(lambda x: steps_model(x))
            return applies[shape](y)

        network_row(
            f"DiffusionResNet2D ({tag} parameters)",
            model,
            apply,
            seconds,
            steps,
            f"{configs[tag]}, lr {args.diffusion_lr:g}, validation {score:.2f} dB",
            {
                "certified_gain": certificate.gain_bound
                if certificate.certified
                else None,
                "certified_lipschitz": certificate.lipschitz_bound,
                "certified_by": certificate.reason,
                "falsifier_gain": gain,
            },
        )
    return {
        "sigma": sigma255,
        "test_images": [f"{n} {c.shape[0]}x{c.shape[1]}" for n, c in zip(TEST, cleans)],
        "rows": rows,
    }


def markdown(meta, results) -> str:
    lines = [
        f"# Denoising photographs: certified diffusion network vs PM, TV, BM3D, DnCNN ({meta['device']})",
        "",
        (
            f"Train: patches of {', '.join(TRAIN)}. Test: centre crops of {', '.join(TEST)} (never seen in training "
            "or tuning). Networks in float32, each trained for its share of the wall-clock budget on a shared "
            f"{meta['cpu_count']}-core CPU ({meta['processor']}); `benchmarks/denoise_images.py` for the protocol."
        ),
        "",
    ]
    for result in results:
        lines += [
            f"## sigma = {result['sigma']}/255",
            "",
            "| method | mean PSNR (dB) | mean SSIM | "
            + " | ".join(f"{n.split()[0]} PSNR" for n in result["test_images"])
            + " | parameters | training (s) | inference (s/image) | certified gain | falsifier's largest gain | settings |",
            "| --- " * (9 + len(result["test_images"])) + "|",
        ]
        for row in result["rows"]:
            certified = row.get("certified_gain")
            cert = (
                "-"
                if "certified_by" not in row
                else ("none" if certified is None else f"{certified:g}")
            )
            if row.get("certified_lipschitz") is not None:
                cert += f" (Lipschitz <= {row['certified_lipschitz']:.3g})"
            cells = [
                row["method"],
                f"{row['mean_psnr']:.2f}",
                f"{row['mean_ssim']:.4f}",
                *(f"{v:.2f}" for v in row["psnr"]),
                str(row.get("parameters", "-")),
                f"{row['training_seconds']:.0f}" if "training_seconds" in row else "-",
                f"{row['inference_seconds']:.3f}"
                if "inference_seconds" in row
                else "-",
                cert,
                f"{row['falsifier_gain']:.6f}"
                if row.get("falsifier_gain") is not None
                else "-",
                row.get("settings", ""),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny settings (a smoke test)"
    )
    parser.add_argument(
        "--sigmas",
        type=int,
        nargs="+",
        default=[25],
        help="noise levels x 255 (default 25)",
    )
    parser.add_argument(
        "--network-sigmas",
        type=int,
        nargs="*",
        default=[25],
        help="noise levels at which the networks are trained",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=24.0,
        help="training wall-clock budget of all networks, per sigma",
    )
    parser.add_argument(
        "--stop-after",
        type=float,
        default=None,
        help="skip the remaining sigmas after this many minutes",
    )
    parser.add_argument("--diffusion-lr", type=float, default=1e-2)
    parser.add_argument("--restarts", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    require_skimage()
    if args.quick:
        args.restarts, args.steps = 4, 5

    def log(message):
        print(message, flush=True)

    meta = {
        **machine(),
        "dtype": "float32 (JAX: networks, Perona-Malik), float64 (NumPy: TV, BM3D, metrics)",
        "minutes_per_sigma": args.minutes,
    }
    results = []
    started = time.perf_counter()
    for sigma255 in args.sigmas:
        if (
            args.stop_after is not None
            and time.perf_counter() - started > 60 * args.stop_after
        ):
            log(f"sigma = {sigma255}/255 skipped (past --stop-after)")
            continue
        log(f"sigma = {sigma255}/255")
        results.append(run_sigma(sigma255, args, args.minutes * 60, log))
        meta["wall_seconds"] = time.perf_counter() - started
        name = (
            f"denoise_images-{meta['device']}"
            + ("-quick" if args.quick else "")
            + (f"-{args.tag}" if args.tag else "")
        )
        out = pathlib.Path(__file__).resolve().parent / "results"
        (out / f"{name}.json").write_text(
            json.dumps(finite_json({"meta": meta, "results": results}), indent=2)
        )
        (out / f"{name}.md").write_text(markdown(meta, results))
        log(f"wrote {out / name}.md")


if __name__ == "__main__":
    main()
