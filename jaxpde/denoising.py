r"""The synthetic 1-D denoising task that ships with jaxpde, and its quality measure.

Clean signals on $n$ cells, with values in $[0, 1]$, half of each kind:

- piecewise constant: 2 to 8 pieces with boundaries drawn uniformly (pieces at least
  $n/32$ cells long) and levels uniform in $[0.1, 0.9]$;
- piecewise smooth: 2 to 5 pieces, each $a + b\,x + c\sin(2\pi f x + \varphi)$ on
  $x \in [0, 1]$ with $a \in [0.2, 0.8]$, $b \in [-0.3, 0.3]$, $c \in [0, 0.15]$,
  $f \in [0.5, 3]$, clipped to $[0, 1]$;

and noisy observations $y = x + \sigma\,\xi$ with Gaussian $\xi$ (default $\sigma = 0.1$,
an input PSNR near 20 dB). The split into training and test signals is fixed by the seed
(NumPy's PCG64), so results are reproducible across machines and JAX versions.
"""

import dataclasses
import itertools
import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._checks import check_int, check_positive_float


@dataclasses.dataclass(frozen=True)
class DenoisingTask:
    """Clean and noisy signals, `(count, n)` float64 NumPy arrays, split into a training
    and a test set; `noise` is the standard deviation $\\sigma$ and `seed` the seed."""

    clean_train: np.ndarray
    noisy_train: np.ndarray
    clean_test: np.ndarray
    noisy_test: np.ndarray
    noise: float
    seed: int

    @property
    def n(self) -> int:
        return self.clean_train.shape[1]


def piecewise_constant(rng: np.random.Generator, count: int, n: int) -> np.ndarray:
    """`count` piecewise-constant signals of length `n` (see the module docstring)."""
    signals = np.empty((count, n))
    shortest = max(1, n // 32)
    for row in signals:
        pieces = int(rng.integers(2, 9))
        cuts = _cuts(rng, pieces, n, shortest)
        for start, stop in itertools.pairwise(cuts):
            row[start:stop] = rng.uniform(0.1, 0.9)
    return signals


def piecewise_smooth(rng: np.random.Generator, count: int, n: int) -> np.ndarray:
    """`count` piecewise-smooth signals of length `n` (see the module docstring)."""
    signals = np.empty((count, n))
    x = (np.arange(n) + 0.5) / n
    shortest = max(1, n // 16)
    for row in signals:
        pieces = int(rng.integers(2, 6))
        cuts = _cuts(rng, pieces, n, shortest)
        for start, stop in itertools.pairwise(cuts):
            a, b = rng.uniform(0.2, 0.8), rng.uniform(-0.3, 0.3)
            c, f, phase = rng.uniform(0, 0.15), rng.uniform(0.5, 3), rng.uniform(0, 2 * math.pi)
            t = x[start:stop]
            row[start:stop] = a + b * (t - t[0]) + c * np.sin(2 * math.pi * f * t + phase)
    return np.clip(signals, 0.0, 1.0)


def _cuts(rng: np.random.Generator, pieces: int, n: int, shortest: int) -> np.ndarray:
    """Piece boundaries `0 = c_0 < ... < c_pieces = n`, pieces at least `shortest` long
    (fewer pieces when `n` is too short for them)."""
    pieces = max(1, min(pieces, n // shortest))
    slack = n - pieces * shortest
    inner = np.sort(rng.integers(0, slack + 1, size=pieces - 1))
    return np.concatenate([[0], inner + shortest * np.arange(1, pieces), [n]])


def denoising_task(
    seed: int = 0, *, n: int = 128, train: int = 512, test: int = 256, noise: float = 0.1
) -> DenoisingTask:
    """The task with `train` training and `test` test signals of length `n`, half piecewise
    constant and half piecewise smooth in each set, noise of standard deviation `noise`.

    **Arguments:**

    - `seed`: fixes the signals, the noise and the split.
    - `n`: cells per signal (at least 32).
    - `train`, `test`: number of signals in each set (at least 2 each).
    - `noise`: $\\sigma > 0$.
    """
    seed = check_int("seed", seed, minimum=0)
    n = check_int("n", n, minimum=32)
    train = check_int("train", train, minimum=2)
    test = check_int("test", test, minimum=2)
    noise = check_positive_float("noise", noise)
    rng = np.random.default_rng(seed)
    total = train + test
    constant = piecewise_constant(rng, (total + 1) // 2, n)
    smooth = piecewise_smooth(rng, total // 2, n)
    clean = np.empty((total, n))
    clean[0::2], clean[1::2] = constant, smooth
    noisy = clean + noise * rng.standard_normal(clean.shape)
    return DenoisingTask(clean[:train], noisy[:train], clean[train:], noisy[train:], noise, seed)


def psnr(estimate: ArrayLike, clean: ArrayLike, peak: float = 1.0) -> Float[Array, "*batch"]:
    r"""Peak signal-to-noise ratio per signal, $10\log_{10}(\text{peak}^2/\text{MSE})$ in dB
    (the mean over the last axis); `estimate` and `clean` of one shape `(*batch, n)`."""
    estimate, clean = jnp.asarray(estimate), jnp.asarray(clean)
    if estimate.shape != clean.shape:
        raise ValueError(f"`estimate` and `clean` must have the same shape, got {estimate.shape} and {clean.shape}.")
    mse = jnp.mean((estimate - clean) ** 2, axis=-1)
    return 10 * jnp.log10(peak**2 / mse)
