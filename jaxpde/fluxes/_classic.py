r"""The built-in fluxes: linear, Perona-Malik (and its exponential variant), Charbonnier,
Weickert and total variation, each with its sector bound, derivative range and closed-form
potential (`FLUXES`). Reference: arXiv:2103.15419, Section 2."""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._checks import positive_array
from ._base import AbstractFlux
from ._special import gammaincc_three_quarters, hypot_minus

# Weickert's constant C_8: makes the flux Phi(s) = s g(s^2) peak at s = lambda.
WEICKERT_CONSTANT = 3.31488
# Psi(s) -> WEICKERT_POTENTIAL_LIMIT * lam^2 as |s| -> oo: C^(1/4) Gamma(3/4) / 2.
WEICKERT_POTENTIAL_LIMIT = WEICKERT_CONSTANT**0.25 * math.gamma(0.75) / 2


def _param(name: str, value: ArrayLike) -> Array:
    return positive_array(name, value, f"pass a positive `{name}`.")


def _scaled(s2: Array, lam: Array) -> Array:
    """$s^2/\\lambda^2$ as $s^2 \\cdot (1/\\lambda^2)$: one scalar division per call instead of one
    per point (a per-point division by a runtime scalar halves the explicit step's speed on CPU)."""
    lam = lam.astype(s2.dtype)
    return s2 * (1 / (lam * lam))


class Linear(AbstractFlux):
    """Linear diffusion $\\Phi(s) = L s$, $g = L$."""

    L: Float[Array, ""]

    def __init__(self, L: ArrayLike = 1.0):
        self.L = _param("L", L)

    def diffusivity(self, s2):
        return jnp.broadcast_to(self.L.astype(s2.dtype), s2.shape)

    def potential(self, s):
        r"""$\Psi(s) = L s^2 / 2$."""
        return self.L.astype(s.dtype) * (s * s) / 2

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
        return 1 / (1 + _scaled(s2, self.lam))

    def potential(self, s):
        r"""$\Psi(s) = (\lambda^2/2)\log(1 + s^2/\lambda^2)$.

        Evaluated as `log1p` for $|s| \le \lambda$ and as $2\log y + \log(1 + y^{-2})$,
        $y = |s|/\lambda$, above (no overflow of $s^2$ for large $|s|$).
        """
        lam = self.lam.astype(s.dtype)
        y = jnp.abs(s) / lam
        large = y > 1
        y_small = jnp.where(large, 1, y)
        y_large = jnp.where(large, y, 2)
        value = jnp.where(large, 2 * jnp.log(y_large) + jnp.log1p(1 / (y_large * y_large)), jnp.log1p(y_small * y_small))
        return lam * lam / 2 * value

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
        return jnp.exp(-_scaled(s2, self.lam))

    def potential(self, s):
        r"""$\Psi(s) = (\lambda^2/2)(1 - e^{-s^2/\lambda^2})$.

        `-expm1(-x)` for $x = s^2/\lambda^2 \le 1$, `1 - exp(-x)` above: the derivative
        of `expm1` is evaluated as `expm1 + 1`, which would cancel for large $x$.
        """
        lam = self.lam.astype(s.dtype)
        y = s / lam
        x = y * y
        small = x <= 1
        x_small = jnp.where(small, x, 0)
        return lam * lam / 2 * jnp.where(small, -jnp.expm1(-x_small), 1 - jnp.exp(-x))

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
        return jax.lax.rsqrt(1 + _scaled(s2, self.lam))

    def potential(self, s):
        r"""$\Psi(s) = \lambda^2(\sqrt{1 + s^2/\lambda^2} - 1) = \lambda(\sqrt{s^2 + \lambda^2} - \lambda)$."""
        lam = self.lam.astype(s.dtype)
        return lam * hypot_minus(s, lam)

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
        x = _scaled(s2, self.lam)
        # For C / x^4 >= 50, g = 1 - e^{-50} = 1 to double precision; branching there
        # keeps values and gradients finite near s = 0 (also in float32).
        active = x**4 > WEICKERT_CONSTANT / 50
        safe_x = jnp.where(active, x, 1)
        return jnp.where(active, -jnp.expm1(-WEICKERT_CONSTANT / safe_x**4), 1)

    def sector_bound(self):
        return jnp.ones_like(self.lam)

    def potential(self, s):
        r"""$\Psi(s) = \frac{s^2}{2} - \frac{a^{1/4}}{8}\,\Gamma\big(-\tfrac14, \frac{a}{s^8}\big)$, $a = C\lambda^8$.

        With $z = C(\lambda/s)^8$ and $\Gamma(-\frac14, z) = 4(z^{-1/4}e^{-z} - \Gamma(\frac34, z))$
        this is the sum of two nonnegative terms,
        $$\Psi(s) = \frac{s^2}{2}(1 - e^{-z}) + \frac{C^{1/4}\Gamma(3/4)}{2}\lambda^2 Q(\tfrac34, z),$$
        $Q$ the regularised upper incomplete gamma function (`gammaincc_three_quarters`,
        equal to `jax.scipy.special.gammaincc(0.75, z)` to a few ulps but compiled
        several times faster). Branches:
        $\Psi = s^2/2$ where $z \ge 50$ (as in `diffusivity`; the rest is below
        $10^{-21}$ relative), and $\Psi = \lambda^2(C^{1/4}\Gamma(3/4)/2 - C r^6/6)$,
        $r = \lambda/s$, where $z$ is below the machine epsilon (the first terms of the
        expansions of $Q$ and $1 - e^{-z}$; no $0 \cdot \infty$ in the gradient).
        $\Psi$ increases to $C^{1/4}\Gamma(3/4)\lambda^2/2 \approx 0.827\lambda^2$.
        """
        lam = self.lam.astype(s.dtype)
        x = (s / lam) ** 2
        active = x**4 > WEICKERT_CONSTANT / 50
        r = lam / jnp.where(active, s, lam)
        r2 = r * r
        r6 = r2 * r2 * r2
        z = WEICKERT_CONSTANT * r6 * r2
        tail = z < jnp.finfo(s.dtype).eps
        safe_z = jnp.where(tail, 1, z)
        exprel = -jnp.expm1(-safe_z) / safe_z  # (1 - e^{-z}) / z
        middle = WEICKERT_CONSTANT / 2 * r6 * exprel + WEICKERT_POTENTIAL_LIMIT * gammaincc_three_quarters(safe_z)
        far = WEICKERT_POTENTIAL_LIMIT - WEICKERT_CONSTANT / 6 * r6
        return jnp.where(active, lam * lam * jnp.where(tail, far, middle), s * s / 2)

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

    def potential(self, s):
        r"""$\Psi(s) = \sqrt{s^2 + \varepsilon^2} - \varepsilon$."""
        return hypot_minus(s, self.eps.astype(s.dtype))

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
