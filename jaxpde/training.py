r"""Training a denoising network with optax, certifying its stability after every epoch.

The loss is the mean squared error $\frac{1}{Bn}\sum_b \|f(y_b) - x_b\|^2$ of the network
$f$ on noisy signals $y_b$ against the clean $x_b$ (`jaxpde.denoising`). After every
epoch `jaxpde.verify.stability_certificate` checks the hypotheses of the stability theorem on the
current parameters; with `require_certificate=True` (the default) an uncertified model
stops training with an error instead of being returned.
"""

import dataclasses
import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_int
from .denoising import DenoisingTask, psnr
from .verify.networks import StabilityCertificate, stability_certificate


@dataclasses.dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean training loss over its steps, test loss and mean test PSNR after it,
    the certificate of the parameters after it, and the seconds since training began."""

    epoch: int
    steps: int
    train_loss: float
    test_loss: float
    test_psnr: float
    certificate: StabilityCertificate
    seconds: float


def mse_loss(model, noisy: Float[Array, "batch n"], clean: Float[Array, "batch n"]) -> Float[Array, ""]:
    """Mean squared error of `jax.vmap(model)(noisy)` against `clean`."""
    return jnp.mean((jax.vmap(model)(noisy) - clean) ** 2)


@eqx.filter_jit
def _train_step(model, state, optimiser, noisy, clean):
    loss, grads = eqx.filter_value_and_grad(mse_loss)(model, noisy, clean)
    updates, state = optimiser.update(grads, state, eqx.filter(model, eqx.is_inexact_array))
    return eqx.apply_updates(model, updates), state, loss


@eqx.filter_jit
def evaluate(model, noisy: Float[Array, "batch n"], clean: Float[Array, "batch n"]) -> tuple[Array, Array]:
    """Mean squared error and mean PSNR (dB) of `model` on a set of signals."""
    denoised = jax.vmap(model)(noisy)
    return jnp.mean((denoised - clean) ** 2), jnp.mean(psnr(denoised, clean))


def train(
    model,
    task: DenoisingTask,
    *,
    key: PRNGKeyArray,
    epochs: int = 10,
    batch_size: int = 32,
    optimiser: optax.GradientTransformation | None = None,
    require_certificate: bool = True,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
):
    """Train `model` on `task.noisy_train -> task.clean_train` with minibatches.

    **Arguments:**

    - `model`: a network mapping one signal `(n,)` to one signal (e.g. `DiffusionResNet`).
    - `task`: a `DenoisingTask`.
    - `key`: shuffles the training set every epoch.
    - `epochs`, `batch_size`: each epoch runs `len(train) // batch_size` steps.
    - `optimiser`: default `optax.adam(1e-2)`.
    - `require_certificate`: raise a `RuntimeError` when the certificate after an epoch
      fails (the model is never returned uncertified); `False` for baselines without
      a theorem (their certificate is recorded, with `certified=False`).
    - `on_epoch(record)`, `on_step(step, loss)`: progress callbacks.

    **Returns:** `(model, records)`, the trained model and one `EpochRecord` per epoch.
    """
    epochs = check_int("epochs", epochs, minimum=1)
    count = task.clean_train.shape[0]
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if batch_size > count:
        raise ValueError(f"`batch_size` must be at most the training set size {count}, got {batch_size}.")
    optimiser = optax.adam(1e-2) if optimiser is None else optimiser
    state = optimiser.init(eqx.filter(model, eqx.is_inexact_array))
    dtype = jnp.result_type(float)
    noisy, clean = jnp.asarray(task.noisy_train, dtype), jnp.asarray(task.clean_train, dtype)
    noisy_test, clean_test = jnp.asarray(task.noisy_test, dtype), jnp.asarray(task.clean_test, dtype)
    steps_per_epoch = count // batch_size
    records: list[EpochRecord] = []
    start = time.perf_counter()
    step = 0
    for epoch in range(epochs):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), count))
        losses = []
        for index in range(steps_per_epoch):
            batch = order[index * batch_size : (index + 1) * batch_size]
            model, state, loss = _train_step(model, state, optimiser, noisy[batch], clean[batch])
            step += 1
            losses.append(float(loss))
            if on_step is not None:
                on_step(step, losses[-1])
        test_loss, test_psnr = evaluate(model, noisy_test, clean_test)
        certificate = stability_certificate(model)
        record = EpochRecord(
            epoch + 1, step, float(np.mean(losses)), float(test_loss), float(test_psnr), certificate,
            time.perf_counter() - start,
        )
        records.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if require_certificate and not certificate.certified:
            raise RuntimeError(
                f"after epoch {epoch + 1} the {certificate.model} is not certified stable: "
                f"{certificate.reason}. Pass require_certificate=False to train a model without a theorem."
            )
    return model, records
