r"""Flux functions $\Phi(s) = g(s^2)\, s$: the activation functions of diffusion blocks.

Each flux knows two different constants:

- the sector bound $L = \sup_{s \ne 0} \Phi(s)/s = \sup g$, which governs Euclidean
  stability of the explicit step ($\tau \le 2 / (L \|K\|^2)$);
- the range $[a, b]$ of $\Phi'$ and the Lipschitz constant $\max(|a|, |b|)$, which
  governs non-expansiveness and the descent of the energy $\sum \Psi(Ku)$.

$\Phi$ is monotone iff $a \ge 0$. Perona-Malik, its exponential variant and Weickert's
flux are not monotone, yet sector-bounded. Reference: arXiv:2103.15419, Section 2.
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._checks import positive_array

# Weickert's constant C_8: makes the flux Phi(s) = s g(s^2) peak at s = lambda.
WEICKERT_CONSTANT = 3.31488


class AbstractFlux(eqx.Module):
    """A flux $\\Phi(s) = g(s^2)\\,s$ with $g \\ge 0$, applied elementwise."""

    @abc.abstractmethod
    def diffusivity(self, s2: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """The diffusivity $g$ evaluated at $s^2$."""

    @abc.abstractmethod
    def sector_bound(self) -> Float[Array, ""]:
        """$L = \\sup_{s \\ne 0} \\Phi(s)/s$ (the sector $0 \\le \\Phi(s)/s \\le L$)."""

    @abc.abstractmethod
    def derivative_range(self) -> tuple[Float[Array, ""], Float[Array, ""]]:
        """Bounds $a \\le \\Phi'(s) \\le b$ for all $s$ (the tightest known)."""

    def __call__(self, s: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        return self.diffusivity(s * s) * s

    def lipschitz(self) -> Float[Array, ""]:
        """$\\mathrm{Lip}(\\Phi) = \\sup_s |\\Phi'(s)| = \\max(|a|, |b|)$."""
        low, high = self.derivative_range()
        return jnp.maximum(jnp.abs(low), jnp.abs(high))

    def is_monotone(self) -> bool:
        """Whether $\\Phi' \\ge 0$ everywhere (needs concrete parameters)."""
        low, _ = self.derivative_range()
        return bool(low >= 0)


def _param(name: str, value: ArrayLike) -> Array:
    return positive_array(name, value, f"pass a positive `{name}`.")


class Linear(AbstractFlux):
    """Linear diffusion $\\Phi(s) = L s$, $g = L$."""

    L: Float[Array, ""]

    def __init__(self, L: ArrayLike = 1.0):
        self.L = _param("L", L)

    def diffusivity(self, s2):
        return jnp.broadcast_to(self.L.astype(s2.dtype), s2.shape)

    def sector_bound(self):
        return self.L

    def derivative_range(self):
        return self.L, self.L


class PeronaMalik(AbstractFlux):
    """Perona-Malik: $g = 1/(1 + s^2/\\lambda^2)$; $\\Phi' \\in [-1/8, 1]$."""

    lam: Float[Array, ""]

    def __init__(self, lam: ArrayLike = 1.0):
        self.lam = _param("lam", lam)

    def diffusivity(self, s2):
        return 1 / (1 + s2 / self.lam.astype(s2.dtype) ** 2)

    def sector_bound(self):
        return jnp.ones_like(self.lam)

    def derivative_range(self):
        # Phi' = (1 - x) / (1 + x)^2 with x = s^2 / lam^2; minimum -1/8 at x = 3.
        return jnp.full_like(self.lam, -1 / 8), jnp.ones_like(self.lam)


class ExponentialPeronaMalik(AbstractFlux):
    """Exponential Perona-Malik: $g = \\exp(-s^2/\\lambda^2)$; $\\Phi' \\in [-2e^{-3/2}, 1]$."""

    lam: Float[Array, ""]

    def __init__(self, lam: ArrayLike = 1.0):
        self.lam = _param("lam", lam)

    def diffusivity(self, s2):
        return jnp.exp(-s2 / self.lam.astype(s2.dtype) ** 2)

    def sector_bound(self):
        return jnp.ones_like(self.lam)

    def derivative_range(self):
        # Phi' = (1 - 2x) e^{-x}; minimum -2 e^{-3/2} at x = 3/2.
        return jnp.full_like(self.lam, -2 * math.exp(-1.5)), jnp.ones_like(self.lam)


class Charbonnier(AbstractFlux):
    """Charbonnier: $g = 1/\\sqrt{1 + s^2/\\lambda^2}$; monotone, $\\Phi' \\in (0, 1]$."""

    lam: Float[Array, ""]

    def __init__(self, lam: ArrayLike = 1.0):
        self.lam = _param("lam", lam)

    def diffusivity(self, s2):
        return jax.lax.rsqrt(1 + s2 / self.lam.astype(s2.dtype) ** 2)

    def sector_bound(self):
        return jnp.ones_like(self.lam)

    def derivative_range(self):
        # Phi' = (1 + x)^{-3/2}.
        return jnp.zeros_like(self.lam), jnp.ones_like(self.lam)


class Weickert(AbstractFlux):
    """Weickert: $g = 1 - \\exp(-C/(s/\\lambda)^8)$, $g(0) = 1$, $C = 3.31488$.

    $\\Phi' = 1 - e^{-y}(1 + 8y)$ with $y = C (\\lambda/s)^8$, so
    $\\Phi' \\in [1 - 8e^{-7/8}, 1]$ and $\\mathrm{Lip} = 8e^{-7/8} - 1 \\approx 2.335$.
    """

    lam: Float[Array, ""]

    def __init__(self, lam: ArrayLike = 1.0):
        self.lam = _param("lam", lam)

    def diffusivity(self, s2):
        x = s2 / self.lam.astype(s2.dtype) ** 2
        # For C / x^4 >= 50, g = 1 - e^{-50} = 1 to double precision; branching there
        # keeps values and gradients finite near s = 0 (also in float32).
        active = x**4 > WEICKERT_CONSTANT / 50
        safe_x = jnp.where(active, x, 1)
        return jnp.where(active, -jnp.expm1(-WEICKERT_CONSTANT / safe_x**4), 1)

    def sector_bound(self):
        return jnp.ones_like(self.lam)

    def derivative_range(self):
        return jnp.full_like(self.lam, 1 - 8 * math.exp(-7 / 8)), jnp.ones_like(self.lam)


class TotalVariation(AbstractFlux):
    """Regularised total variation: $g = 1/\\sqrt{s^2 + \\varepsilon^2}$; monotone.

    $\\Phi' = \\varepsilon^2 / (s^2 + \\varepsilon^2)^{3/2} \\in (0, 1/\\varepsilon]$.
    """

    eps: Float[Array, ""]

    def __init__(self, eps: ArrayLike = 1.0):
        self.eps = _param("eps", eps)

    def diffusivity(self, s2):
        return jax.lax.rsqrt(s2 + self.eps.astype(s2.dtype) ** 2)

    def sector_bound(self):
        return 1 / self.eps

    def derivative_range(self):
        return jnp.zeros_like(self.eps), 1 / self.eps


FLUXES: tuple[type[AbstractFlux], ...] = (
    Linear,
    PeronaMalik,
    ExponentialPeronaMalik,
    Charbonnier,
    Weickert,
    TotalVariation,
)
