r"""Rounding error analysis: the unit roundoff, Higham's $\gamma_p$ and upward rounding.

With unit roundoff $\mathbf{u} = \varepsilon/2$, a sum, product, quotient or square root
is computed as its exact value times $1 + \delta$, $|\delta| \le \mathbf{u}$, and $p$ such
factors combine to $1 + \theta_p$ with $|\theta_p| \le \gamma_p = p\mathbf{u}/(1 - p\mathbf{u})$
(Higham, *Accuracy and Stability of Numerical Algorithms*, 2002, Ch. 3). A certified
upper bound multiplies a computed nonnegative value by an exact factor $1 + c\mathbf{u}$
(`inflation`, `round_up`); a constant is cast to the dtype upwards (`ceil_constant`).
"""

import math

import numpy as np
from jaxtyping import Array


def unit_roundoff(dtype) -> float:
    """$\\mathbf{u} = \\varepsilon / 2$ of a floating dtype."""
    return float(np.finfo(dtype).eps) / 2


def gamma(p: int | float, dtype) -> float:  # noqa: PYI041 (beartype rejects int for float)
    """$\\gamma_p = p\\mathbf{u} / (1 - p\\mathbf{u})$."""
    pu = p * unit_roundoff(dtype)
    if pu >= 1:
        raise ValueError(f"`p` = {p} is too large for {np.dtype(dtype).name}: p * u >= 1.")
    return pu / (1 - pu)


def inflation(roundings: int, dtype) -> float:
    r"""The factor $1 + c\mathbf{u}$ ($c$ even, so the factor is exact in `dtype`) with
    $1 + c\mathbf{u} \ge (1 - \mathbf{u})^{-(\text{roundings} + 1)}$.

    A nonnegative number computed from exact nonnegative data by at most `roundings`
    correctly rounded sums, products and square roots is at least the exact value times
    $(1 - \mathbf{u})^{\text{roundings}}$; multiplied by this factor (one more rounding) it is an
    upper bound of the exact value. Proof: with $p$ = `roundings` + 1,
    $(1 - \mathbf{u})^{-p} \le 1 / (1 - p\mathbf{u}) = 1 + \gamma_p$ (Bernoulli), and $c = 2\lceil\gamma_{p+1}/(2\mathbf{u})\rceil$
    satisfies $c\mathbf{u} \ge \gamma_p$: either $c \ge \gamma_{p+1}/\mathbf{u} \ge \gamma_p/\mathbf{u}$, or the float64 quotient
    rounded to $p + 1$ exactly, which happens only when $p(p + 1)\mathbf{u} < 1$, and then
    $(p + 1)\mathbf{u} \ge \gamma_p$ (Higham, *Accuracy and Stability of Numerical Algorithms*, 2002, Lemma 3.1).
    """
    u = unit_roundoff(dtype)
    p = roundings + 2
    if p * u >= 0.5:
        raise ValueError(f"{roundings} roundings are too many for {np.dtype(dtype).name}: the bound is void.")
    gamma_p = p * u / (1 - p * u)
    return 1 + 2 * math.ceil(gamma_p / (2 * u)) * u


def round_up(x: Array, roundings: int) -> Array:
    """`x` times `inflation(roundings, x.dtype)`: an upper bound of the exact value of a
    nonnegative `x` computed with at most `roundings` roundings that each lower it by at
    most a factor $1 - \\mathbf{u}$."""
    return x * inflation(roundings, x.dtype)


def ceil_constant(value: float, dtype) -> np.ndarray:
    """The smallest number of `dtype` that is at least the float64 `value` (a constant
    cast upwards, never to nearest)."""
    cast = np.asarray(value, dtype)
    if float(cast) < value:
        cast = np.asarray(np.nextafter(cast, np.asarray(np.inf, dtype)), dtype)
    return cast
