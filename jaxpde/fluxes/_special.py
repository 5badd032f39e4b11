r"""Special functions of the closed-form potentials: $Q(\frac34, z)$ (Weickert) and
$\sqrt{s^2 + c^2} - c$ (Charbonnier, total variation), accurate and cheap to compile."""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array

_Q_ORDER = 0.75
_Q_SERIES_TERMS = 30
_Q_FRACTION_TERMS = 50


@jax.custom_jvp
def gammaincc_three_quarters(z: Array) -> Array:
    r"""$Q(\frac34, z) = \Gamma(\frac34, z)/\Gamma(\frac34)$ for $z > 0$, with fixed iteration counts.

    The series $P = z^a e^{-z}/\Gamma(a+1)\sum_n z^n/((a+1)\cdots(a+n))$, $Q = 1 - P$, for
    $z < a + 1$, and the continued fraction of $\Gamma(a, z)$ (modified Lentz) above
    (Press et al., *Numerical Recipes*, 3rd ed., 2007, Section 6.2). Compared with
    `jax.scipy.special.gammaincc` on $[10^{-17}, 50]$: relative error below $4 \cdot 10^{-14}$
    in float64 and $3 \cdot 10^{-6}$ in float32 (`tests/test_fluxes.py`). The derivative is
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


@gammaincc_three_quarters.defjvp
def gammaincc_three_quarters_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    slope = -jnp.exp((_Q_ORDER - 1) * jnp.log(z) - z) / math.gamma(_Q_ORDER)
    return gammaincc_three_quarters(z), slope * dz


def hypot_minus(s: Array, c: Array) -> Array:
    r"""$\sqrt{s^2 + c^2} - c \ge 0$ for $c > 0$, without cancellation or overflow:
    $s^2 / (\sqrt{s^2 + c^2} + c)$ for $|s| \le c$, the difference itself above."""
    root = jnp.hypot(s, c)
    small = jnp.abs(s) <= c
    s_small = jnp.where(small, s, 0)
    return jnp.where(small, s_small * s_small / (jnp.hypot(s_small, c) + c), root - c)
