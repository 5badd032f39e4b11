r"""`RadialBasisFlux`: a learnable flux, sector-bounded for every value of its parameters
(`proofs/radial-basis-flux.md`)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._checks import check_positive_float
from ._base import AbstractFlux


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
