r"""Flux functions $\Phi(s) = g(s^2)\, s$: the activation functions of diffusion blocks.

Each flux knows two different constants:

- the sector bound $L = \sup_{s \ne 0} \Phi(s)/s = \sup g$, which governs Euclidean
  stability of the explicit step ($\tau \le 2 / (L \|K\|^2)$);
- the range $[a, b]$ of $\Phi'$ and the Lipschitz constant $\max(|a|, |b|)$, which
  governs non-expansiveness and the descent of the energy $\sum \Psi(Ku)$.

Each flux also knows its potential (energy density) $\Psi(s) = \int_0^s \Phi(t)\,dt$,
in closed form for the fluxes here, so that the explicit step is gradient descent on
$E(u) = \sum_i \Psi((Ku)_i)$ (see `jaxpde.verify.flux_energy`).

$\Phi$ is monotone iff $a \ge 0$. Perona-Malik, its exponential variant and Weickert's
flux are not monotone, yet sector-bounded. Reference: arXiv:2103.15419, Section 2.
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._checks import check_positive_float, positive_array

# Weickert's constant C_8: makes the flux Phi(s) = s g(s^2) peak at s = lambda.
WEICKERT_CONSTANT = 3.31488
# Psi(s) -> WEICKERT_POTENTIAL_LIMIT * lam^2 as |s| -> oo: C^(1/4) Gamma(3/4) / 2.
WEICKERT_POTENTIAL_LIMIT = WEICKERT_CONSTANT**0.25 * math.gamma(0.75) / 2
# The default (quadrature) potential of a user flux: Gauss-Legendre with this many nodes
# on each of this many dyadic panels [0, 2^-(P-1)], ..., [1/4, 1/2], [1/2, 1] of [0, 1].
POTENTIAL_QUADRATURE_NODES = 12
POTENTIAL_QUADRATURE_PANELS = 16


def _dyadic_gauss_legendre() -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the composite Gauss-Legendre rule on dyadic panels of $[0, 1]$."""
    x, w = np.polynomial.legendre.leggauss(POTENTIAL_QUADRATURE_NODES)
    edges = np.concatenate([[0.0], 2.0 ** -np.arange(POTENTIAL_QUADRATURE_PANELS - 1, -1, -1)])
    low, high = edges[:-1, None], edges[1:, None]
    return ((high - low) * (x + 1) / 2 + low).ravel(), ((high - low) * w / 2).ravel()


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

    def potential(self, s: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        r"""The potential (energy density) $\Psi$ with $\Psi' = \Phi$, $\Psi(0) = 0$:

        $$\Psi(s) = \int_0^s \Phi(t)\,dt = s^2 \int_0^1 t\, g(t^2 s^2)\,dt \ge 0.$$

        $E(u) = \sum_i \Psi((Ku)_i)$ has the gradient $K^\top \Phi(Ku)$, so the explicit
        step $u - \tau K^\top\Phi(Ku)$ is a gradient step on $E$. The fluxes of this
        module override this method with closed forms. This default, for user fluxes,
        is a quadrature of the integral over $t \in [0, 1]$: Gauss-Legendre with
        `POTENTIAL_QUADRATURE_NODES` nodes on each of `POTENTIAL_QUADRATURE_PANELS` dyadic
        panels $[0, 2^{-15}], \dots, [\frac14, \frac12], [\frac12, 1]$, so that a change of $g$
        at any scale between $|s|/2^{15}$ and $|s|$ is resolved (on the fluxes of this
        module: relative error below $10^{-14}$, and $4 \cdot 10^{-7}$ for Weickert's steep
        $g$). It is an approximation, and its derivative is the quadrature of $\Phi$,
        not `self(s)` exactly: override it with a closed form where one is known.

        **Arguments:**

        - `s`: values $s$ (any shape), e.g. $Ku$.

        **Returns:**

        $\Psi(s)$, elementwise, of the shape and dtype of `s`.

        Reference: arXiv:2103.15419, Section 2 (the energy of the diffusion flux).
        """
        nodes, weights = _dyadic_gauss_legendre()
        shape = (1,) * s.ndim + (nodes.size,)
        t = jnp.asarray(nodes.reshape(shape), s.dtype)
        w = jnp.asarray(weights.reshape(shape), s.dtype)
        s2 = s * s
        return s2 * jnp.sum(w * t * self.diffusivity(t * t * s2[..., None]), axis=-1)

    def lipschitz(self) -> Float[Array, ""]:
        """$\\mathrm{Lip}(\\Phi) = \\sup_s |\\Phi'(s)| = \\max(|a|, |b|)$."""
        low, high = self.derivative_range()
        return jnp.maximum(jnp.abs(low), jnp.abs(high))

    def is_monotone(self) -> bool:
        """Whether $\\Phi' \\ge 0$ everywhere (needs concrete parameters)."""
        low, _ = self.derivative_range()
        return bool(low >= 0)

    def in_domain(self) -> "AbstractFlux":
        r"""This flux with every parameter mapped into the domain where `sector_bound()` and
        `derivative_range()` hold: here the magnitudes of the floating-point parameters
        (positive scales $L$, $\lambda$, $\varepsilon$). Trainable networks evaluate their
        fluxes through this map, so that training cannot leave the sector. Fluxes whose
        bounds hold for every parameter value (`RadialBasisFlux`) return themselves."""
        return jax.tree.map(lambda x: jnp.abs(x) if eqx.is_inexact_array(x) else x, self)


def _param(name: str, value: ArrayLike) -> Array:
    return positive_array(name, value, f"pass a positive `{name}`.")


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
        return 1 / (1 + s2 / self.lam.astype(s2.dtype) ** 2)

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
        return jnp.exp(-s2 / self.lam.astype(s2.dtype) ** 2)

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
        return jax.lax.rsqrt(1 + s2 / self.lam.astype(s2.dtype) ** 2)

    def potential(self, s):
        r"""$\Psi(s) = \lambda^2(\sqrt{1 + s^2/\lambda^2} - 1) = \lambda(\sqrt{s^2 + \lambda^2} - \lambda)$."""
        lam = self.lam.astype(s.dtype)
        return lam * _hypot_minus(s, lam)

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

    def potential(self, s):
        r"""$\Psi(s) = \frac{s^2}{2} - \frac{a^{1/4}}{8}\,\Gamma\big(-\tfrac14, \frac{a}{s^8}\big)$, $a = C\lambda^8$.

        With $z = C(\lambda/s)^8$ and $\Gamma(-\frac14, z) = 4(z^{-1/4}e^{-z} - \Gamma(\frac34, z))$
        this is the sum of two nonnegative terms,
        $$\Psi(s) = \frac{s^2}{2}(1 - e^{-z}) + \frac{C^{1/4}\Gamma(3/4)}{2}\lambda^2 Q(\tfrac34, z),$$
        $Q$ the regularised upper incomplete gamma function (`_gammaincc_three_quarters`,
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
        middle = WEICKERT_CONSTANT / 2 * r6 * exprel + WEICKERT_POTENTIAL_LIMIT * _gammaincc_three_quarters(safe_z)
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
        return _hypot_minus(s, self.eps.astype(s.dtype))

    def sector_bound(self):
        return 1 / self.eps

    def derivative_range(self):
        return jnp.zeros_like(self.eps), 1 / self.eps


class Frozen(AbstractFlux):
    r"""A flux with its diffusivity frozen at $s_0$: $\Phi_0(s) = g(s_0^2)\, s$ (elementwise).

    The linearisation that FED and FSI cycles, the semi-implicit step and the lagged
    diffusivity iteration use: $K^\top \Phi_0(K\,\cdot)$ is the symmetric positive
    semidefinite matrix $K^\top G K$, $G = \operatorname{diag}(g(s_0^2))$. Its sector
    bound is that of `flux`, since $0 \le g \le L$.

    **Arguments:**

    - `flux`: the flux whose diffusivity is frozen.
    - `s0`: where it is frozen (for a scheme: $K u$ at the start of a cycle or step).
    """

    values: Float[Array, "*shape"]
    bound: Float[Array, ""]

    def __init__(self, flux: AbstractFlux, s0: Float[Array, "*shape"]):
        self.values = flux.diffusivity(s0 * s0)
        self.bound = flux.sector_bound()

    def diffusivity(self, s2):
        return jnp.broadcast_to(self.values.astype(s2.dtype), s2.shape)

    def potential(self, s):
        r"""$\Psi_0(s) = g(s_0^2)\, s^2 / 2$."""
        return self.values.astype(s.dtype) * (s * s) / 2

    def sector_bound(self):
        return self.bound

    def derivative_range(self):
        return jnp.zeros_like(self.bound), self.bound


_Q_ORDER = 0.75
_Q_SERIES_TERMS = 30
_Q_FRACTION_TERMS = 50


def frozen_diffusivity(values: ArrayLike) -> Frozen:
    r"""A `Frozen` flux with the given diffusivity values $g \ge 0$ (the linear flux
    $\Phi(s) = G s$, $G = \operatorname{diag}(g)$; sector bound $\max g$)."""
    values = jnp.asarray(values)
    template = Frozen(Linear(1.0), jnp.zeros(values.shape, values.dtype))
    return eqx.tree_at(lambda f: (f.values, f.bound), template, (values, jnp.max(values)))


@jax.custom_jvp
def _gammaincc_three_quarters(z: Array) -> Array:
    r"""$Q(\frac34, z) = \Gamma(\frac34, z)/\Gamma(\frac34)$ for $z > 0$, with fixed iteration counts.

    The series $P = z^a e^{-z}/\Gamma(a+1)\sum_n z^n/((a+1)\cdots(a+n))$, $Q = 1 - P$, for
    $z < a + 1$, and the continued fraction of $\Gamma(a, z)$ (modified Lentz) above
    (Press et al., *Numerical Recipes*, 3rd ed., 2007, Section 6.2). Compared with
    `jax.scipy.special.gammaincc` on $[10^{-17}, 50]$: relative error below $4 \cdot 10^{-14}$
    in float64 and $3 \cdot 10^{-6}$ in float32 (`tests/test_energy.py`). The derivative is
    the exact $-z^{a-1}e^{-z}/\Gamma(a)$ (custom JVP).
    """
    a = _Q_ORDER
    finfo = jnp.finfo(z.dtype)
    tiny = finfo.tiny / finfo.eps
    small = z < a + 1
    zs = jnp.where(small, z, 1)

    def series(n, carry):
        term, total = carry
        term = term * zs / (a + n)
        return term, total + term

    _, total = jax.lax.fori_loop(1, _Q_SERIES_TERMS, series, (jnp.ones_like(zs), jnp.ones_like(zs)))
    series_q = 1 - jnp.exp(a * jnp.log(zs) - zs) / math.gamma(a + 1) * total

    zl = jnp.where(small, a + 1, z)

    def fraction(i, carry):
        b, c, d, h = carry
        an = -i * (i - a)
        b = b + 2
        d = an * d + b
        d = 1 / jnp.where(jnp.abs(d) < tiny, tiny, d)
        c = b + an / c
        c = jnp.where(jnp.abs(c) < tiny, tiny, c)
        return b, c, d, h * d * c

    b0 = zl + 1 - a
    init = (b0, jnp.full_like(zl, 1 / tiny), 1 / b0, 1 / b0)
    _, _, _, h = jax.lax.fori_loop(1, _Q_FRACTION_TERMS, fraction, init)
    fraction_q = jnp.exp(a * jnp.log(zl) - zl) / math.gamma(a) * h
    return jnp.where(small, series_q, fraction_q)


@_gammaincc_three_quarters.defjvp
def _gammaincc_three_quarters_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    slope = -jnp.exp((_Q_ORDER - 1) * jnp.log(z) - z) / math.gamma(_Q_ORDER)
    return _gammaincc_three_quarters(z), slope * dz


def _hypot_minus(s: Array, c: Array) -> Array:
    r"""$\sqrt{s^2 + c^2} - c \ge 0$ for $c > 0$, without cancellation or overflow:
    $s^2 / (\sqrt{s^2 + c^2} + c)$ for $|s| \le c$, the difference itself above."""
    root = jnp.hypot(s, c)
    small = jnp.abs(s) <= c
    s_small = jnp.where(small, s, 0)
    return jnp.where(small, s_small * s_small / (jnp.hypot(s_small, c) + c), root - c)


class RadialBasisFlux(AbstractFlux):
    r"""A learnable flux, sector-bounded for every parameter value and possibly nonmonotone:

    $$g(z) = L\,\sigma\Big(b + \sum_{j=1}^{J} w_j\, e^{-(z - c_j)^2 / (2\delta^2)}\Big),
    \qquad z = s^2, \qquad \sigma(x) = \frac{1}{1 + e^{-x}} .$$

    Since $0 < \sigma < 1$, $0 < \Phi(s)/s = g(s^2) < L$ whatever the weights $w$ and the
    bias $b$ (the trainable parameters): a network trained with this activation keeps the
    hypothesis of the stability theorem. With $\Phi' = g + 2 z g'(z)$,
    $0 < \sigma' \le \frac14$ and $\sup_{z \ge 0} z\,|z - c|\,e^{-(z-c)^2/(2\delta^2)}/\delta^2
    \le c\,e^{-1/2}/\delta + 2/e$ for $c \ge 0$,

    $$-\tfrac{L}{2} M \le \Phi'(s) \le L + \tfrac{L}{2} M, \qquad
    M = \sum_j |w_j| \Big(\frac{c_j}{\delta\sqrt e} + \frac{2}{e}\Big)$$

    (`proofs/radial-basis-flux.md`). Falling $g$ (negative weights at large $z$) makes
    $\Phi$ nonmonotone, like Perona-Malik: edge-enhancing where $\Phi' < 0$.

    **Arguments:**

    - `weights`: $w$, shape `(J,)`; trainable.
    - `bias`: $b$; trainable.
    - `L`: the sector bound (static, > 0): the step size of a network is scaled by
      $1/L$, so a trainable $L$ would duplicate the trainable step.
    - `centres`: $c_j \ge 0$ (static), one per weight.
    - `width`: $\delta > 0$ (static).

    `RadialBasisFlux.fit(flux)` starts from the least-squares fit of another flux.
    Reference: arXiv:2103.15419, Sections 2-3 (learned nonmonotone activations).
    """

    weights: Float[Array, " J"]
    bias: Float[Array, ""]
    L: float = eqx.field(static=True)
    centres: tuple[float, ...] = eqx.field(static=True)
    width: float = eqx.field(static=True)

    def __init__(
        self,
        weights: ArrayLike,
        bias: ArrayLike = 0.0,
        *,
        L: float = 1.0,
        centres: tuple[float, ...] | None = None,
        width: float | None = None,
    ):
        weights = jnp.asarray(weights, dtype=jnp.result_type(float))
        if weights.ndim != 1 or weights.shape[0] < 1:
            raise ValueError(f"`weights` must have shape (J,) with J >= 1, got shape {weights.shape}.")
        count = weights.shape[0]
        centres = default_centres(count) if centres is None else tuple(float(c) for c in centres)
        if len(centres) != count:
            raise ValueError(f"`centres` must have one entry per weight ({count}), got {len(centres)}.")
        if not all(math.isfinite(c) and c >= 0 for c in centres):
            raise ValueError(f"`centres` must be finite and >= 0 (values of s^2), got {centres}.")
        width = _default_width(centres) if width is None else width
        self.weights = weights
        self.bias = jnp.asarray(bias, dtype=weights.dtype)
        if self.bias.shape != ():
            raise ValueError(f"`bias` must be a scalar, got shape {self.bias.shape}.")
        self.L = check_positive_float("L", L)
        self.centres = centres
        self.width = check_positive_float("width", width)

    @classmethod
    def fit(
        cls,
        flux: AbstractFlux,
        *,
        count: int = 8,
        top: float = 4.0,
        L: float | None = None,
        ridge: float = 1e-3,
    ) -> "RadialBasisFlux":
        r"""The radial-basis flux closest to `flux` in logit space: $w, b$ minimise
        $\frac1N\sum_z (\operatorname{logit}(g_{\text{flux}}(z)/L) - b - \sum_j w_j\varphi_j(z))^2
        + \text{ridge}\,\|w\|^2$ over $N = 256$ points $z \in [0, \frac32\,\text{top}]$,
        with $g/L$ clipped to $[0.01, 0.99]$; `count` centres spread evenly over
        $[0, \text{top}]$, and $L$ the sector bound of `flux` by default (NumPy, at
        construction time). The ridge term keeps the weights, and with them the
        derivative range, small (Perona-Malik: largest error of $g$ 0.1, $\Phi' \le 6.7$
        certified)."""
        if not isinstance(flux, AbstractFlux):
            raise TypeError(f"`flux` must be a jaxpde flux, got {type(flux).__name__}.")
        count = int(count)
        if count < 1:
            raise ValueError(f"`count` must be at least 1, got {count}.")
        top = check_positive_float("top", top)
        L = float(flux.sector_bound()) if L is None else check_positive_float("L", L)
        centres = default_centres(count, top)
        width = _default_width(centres)
        z = np.linspace(0.0, 1.5 * top, 256)
        target = np.clip(np.asarray(flux.diffusivity(jnp.asarray(z))) / L, 0.01, 0.99)
        basis = np.exp(-((z[:, None] - np.asarray(centres)[None, :]) ** 2) / (2 * width**2))
        design = np.concatenate([np.ones((z.size, 1)), basis], axis=1)
        penalty = math.sqrt(ridge * z.size) * np.eye(count + 1)[1:]
        rhs = np.concatenate([np.log(target / (1 - target)), np.zeros(count)])
        solution, *_ = np.linalg.lstsq(np.concatenate([design, penalty]), rhs, rcond=None)
        return cls(solution[1:], solution[0], L=L, centres=centres, width=width)

    def logit(self, s2: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        r"""$b + \sum_j w_j e^{-(z - c_j)^2/(2\delta^2)}$ at $z = s^2$."""
        weights = self.weights.astype(s2.dtype)
        scale = -1 / (2 * self.width**2)
        total = self.bias.astype(s2.dtype)
        for j, centre in enumerate(self.centres):  # J is small: unrolled, no (..., J) array
            total = total + weights[j] * jnp.exp(scale * (s2 - centre) ** 2)
        return total

    def diffusivity(self, s2):
        return self.L * jax.nn.sigmoid(self.logit(s2))

    def sector_bound(self):
        return jnp.asarray(self.L, self.weights.dtype)

    def derivative_range(self):
        centres = jnp.asarray(self.centres, self.weights.dtype)
        spread = jnp.sum(jnp.abs(self.weights) * (centres / (self.width * math.sqrt(math.e)) + 2 / math.e))
        return -self.L / 2 * spread, self.L + self.L / 2 * spread

    def in_domain(self) -> "RadialBasisFlux":
        """Itself: the sector bound and the derivative range hold for every parameter value."""
        return self


def default_centres(count: int, top: float = 4.0) -> tuple[float, ...]:
    r"""`count` centres $c_j = j\,\text{top}/(J-1)$ spread evenly over $[0, \text{top}]$
    (values of $s^2$); one centre sits at 0."""
    if count == 1:
        return (0.0,)
    return tuple(float(top * j / (count - 1)) for j in range(count))


def _default_width(centres: tuple[float, ...]) -> float:
    """The spacing of the centres (1 for a single centre)."""
    return float(centres[1] - centres[0]) if len(centres) > 1 and centres[1] > centres[0] else 1.0


FLUXES: tuple[type[AbstractFlux], ...] = (
    Linear,
    PeronaMalik,
    ExponentialPeronaMalik,
    Charbonnier,
    Weickert,
    TotalVariation,
)
