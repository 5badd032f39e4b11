"""Figures for certification reports: norm decay under the explicit scheme."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from .blocks import stable_step_size
from .fluxes import Charbonnier, Linear, PeronaMalik, Weickert
from .operators import Derivative
from .schemes.explicit import ExplicitScheme
from .verify.energy import l2_norm


def _test_signal(n: int) -> jax.Array:
    """A noisy step: the classic input of edge-preserving diffusion."""
    x = jnp.linspace(0.0, 1.0, n)
    noise = jax.random.normal(jax.random.key(0), (n,))
    return jnp.where(x < 0.5, 0.0, 1.0) + 0.1 * noise


def norm_decay_curves(n: int = 256, steps: int = 400, lam: float = 0.1) -> dict[str, np.ndarray]:
    """$\\|u^k\\| / \\|u^0\\|$ for $k = 0..$`steps` under the explicit scheme at the
    stability bound, for several operators and fluxes, plus the linear flux at
    1.01 x the bound (which grows)."""
    u0 = _test_signal(n)
    configurations = {
        "D1, linear": (Derivative(1, n), Linear(1.0), 1.0),
        "D1, Charbonnier": (Derivative(1, n), Charbonnier(lam), 1.0),
        "D1, Perona-Malik": (Derivative(1, n), PeronaMalik(lam), 1.0),
        "D1, Weickert": (Derivative(1, n), Weickert(lam), 1.0),
        "D2, Perona-Malik": (Derivative(2, n), PeronaMalik(lam), 1.0),
        "D1, linear, tau = 1.01 x bound": (Derivative(1, n), Linear(1.0), 1.01),
    }
    curves = {}
    for name, (op, flux, factor) in configurations.items():
        tau = factor * stable_step_size(op, flux)
        scheme = ExplicitScheme(op, flux, tau, allow_unstable=factor > 1)
        _, path = scheme.rollout(u0, steps, save_every=1)
        norms = np.asarray(jax.vmap(l2_norm)(path))
        curves[name] = norms / norms[0]
    return curves


def norm_decay_figure(path: pathlib.Path | str, **kwargs) -> None:
    """Write a PNG of `norm_decay_curves(**kwargs)` (log scale) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = norm_decay_curves(**kwargs)
    figure, axis = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for name, values in curves.items():
        style = "--" if "1.01" in name else "-"
        axis.plot(values, style, label=name)
    axis.axhline(1.0, color="grey", linewidth=0.8)
    axis.set_ylim(0.95 * min(float(np.min(v)) for v in curves.values()), 2.0)
    axis.set_xlabel("step k")
    axis.set_ylabel("||u^k|| / ||u^0||")
    axis.set_title("Euclidean norm under the explicit scheme at tau = 2 / (L ||K||^2)")
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=120)
    plt.close(figure)
