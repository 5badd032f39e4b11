r"""The cycle-time identities of FSI and FED, checked symbolically (sympy) and in the
coefficients that the library uses (float64).

1. For general $k$ (symbolic): $q_k(x) = \sin((2k+1)\varphi)/((2k+1)\sin\varphi)$,
   $x = 2\sin^2\varphi$, satisfies the FSI recurrence
   $q_{k+1} = a_k(1 - x)q_k + (1 - a_k)q_{k-1}$, and $d_k = -(k^2+k)/3$ satisfies the
   recurrence of the slopes $d_k = q_k'(0)$; with $q_0 = q_{-1} = 1$, $d_0 = d_{-1} = 0$
   this is an induction proof that an FSI cycle of length $n$ advances $\tau(n^2+n)/3$.
2. For each $n$ up to `LARGEST_LENGTH` (exact rationals): $q_n$ from the recurrence has
   $q_n(0) = 1$ and $q_n'(0) = -(n^2+n)/3$; at 100 digits it vanishes at the $n$ points
   $x_i = 2\cos^2(\pi(2i+1)/(4n+2)) = 1/t_i$, so $q_n = \prod_i(1 - t_i x)$ (degree $n$)
   and $\sum_i t_i = -q_n'(0) = (n^2+n)/3$: FED and FSI cycles are the same polynomial.
3. In float64: `fed_step_sizes(1, n)` sums to $(n^2+n)/3$ and the FSI recurrence's slope
   at 0 equals it, both to a relative $10^{-12}$.
"""

import math

import mpmath
import sympy

from ..schemes.fed import fed_step_sizes
from ..schemes.fsi import fsi_weights
from ..verify.certificate import CaseResult
from .registry import Budget, Claim, Evidence

LARGEST_LENGTH = 40
DIGITS = 100
ROOT_TOLERANCE = 1e-80
FLOAT_LENGTHS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 150, 300)
RELATIVE_TOLERANCE = 1e-12


def _general_identities() -> tuple[sympy.Expr, sympy.Expr]:
    """Both recurrences with symbolic $k$, simplified (each must be 0)."""
    k, phi = sympy.symbols("k phi", positive=True)
    a = (4 * k + 2) / (2 * k + 3)
    # The recurrence for q_k times sin(phi), with 1 - x = cos(2 phi) and theta = (2k+1) phi
    # (the identity holds for every theta, so theta is a free symbol).
    theta = sympy.Symbol("theta")
    trig = (
        sympy.sin(theta + 2 * phi) / (2 * k + 3)
        - a * sympy.cos(2 * phi) * sympy.sin(theta) / (2 * k + 1)
        - (1 - a) * sympy.sin(theta - 2 * phi) / (2 * k - 1)
    )
    trig = sympy.simplify(sympy.expand(sympy.expand_trig(trig)))
    d = -(k**2 + k) / sympy.Integer(3)
    slope = sympy.simplify(d.subs(k, k + 1) - (a * (d - 1) + (1 - a) * d.subs(k, k - 1)))
    return trig, slope


def _exact_polynomial(n: int) -> sympy.Poly:
    x = sympy.Symbol("x")
    previous = current = sympy.Poly(1, x, domain="QQ")
    for j in range(n):
        a = sympy.Rational(4 * j + 2, 2 * j + 3)
        previous, current = current, a * sympy.Poly(1 - x, x) * current + (1 - a) * previous
    return current


def _root_residual(poly: sympy.Poly, n: int) -> float:
    """$\\max_i |q_n(x_i)| / \\sum_j |c_j| x_i^j$ at $x_i = 2\\cos^2(\\pi(2i+1)/(4n+2))$, in
    `DIGITS`-digit arithmetic (mpmath), with the exact rational coefficients $c_j$."""
    with mpmath.workdps(DIGITS):
        coefficients = [mpmath.mpf(c.p) / c.q for c in poly.all_coeffs()]
        worst = mpmath.mpf(0)
        for i in range(n):
            x = 2 * mpmath.cos(mpmath.pi * (2 * i + 1) / (4 * n + 2)) ** 2
            value = scale = mpmath.mpf(0)
            for c in coefficients:  # Horner, highest degree first
                value, scale = value * x + c, scale * x + abs(c)
            worst = max(worst, abs(value) / scale)
        return float(worst)


def fsi_slope(length: int) -> float:
    """$-q_n'(0)$ in float64 from the FSI recurrence with the library's weights
    (`fsi_weights`), $q_{k+1}'(0) = a_k(q_k'(0) - q_k(0)) + (1 - a_k)q_{k-1}'(0)$ with $q_k(0)$
    carried along (1 up to rounding): $(n^2+n)/3$ by the identity."""
    previous_slope = current_slope = 0.0
    previous_value = current_value = 1.0
    for a in fsi_weights(length):
        previous_slope, current_slope = current_slope, a * (current_slope - current_value) + (1 - a) * previous_slope
        previous_value, current_value = current_value, a * current_value + (1 - a) * previous_value
    return -current_slope


def _check(key, budget: Budget) -> Evidence:
    del key, budget  # deterministic: identities, not samples
    trig, slope = _general_identities()
    cases = [
        CaseResult("q_k = sin((2k+1)phi)/((2k+1) sin phi) solves the FSI recurrence (symbolic k)", 1, float(abs(trig != 0)), 0.0, 0.0, bool(trig == 0)),
        CaseResult("slopes d_k = -(k^2+k)/3 solve the slope recurrence (symbolic k)", 1, float(abs(slope != 0)), 0.0, 0.0, bool(slope == 0)),
    ]
    worst_root = 0.0
    for n in range(1, LARGEST_LENGTH + 1):
        poly = _exact_polynomial(n)
        x = poly.gens[0]
        value, derivative = poly.eval(0), poly.diff(x).eval(0)
        exact = value == 1 and derivative == -sympy.Rational(n * n + n, 3) and poly.degree() == n
        residual = _root_residual(poly, n)
        worst_root = max(worst_root, residual)
        ok = exact and residual <= ROOT_TOLERANCE
        name = f"n={n}: q_n(0) = 1, q_n'(0) = -(n^2+n)/3 (exact), q_n(1/t_i) = 0 ({DIGITS} digits)"
        cases.append(CaseResult(name, 1, residual, 0.0, ROOT_TOLERANCE, bool(ok)))
    for n in FLOAT_LENGTHS:
        expected = (n * n + n) / 3
        fed = math.fsum(fed_step_sizes(1.0, n)) / expected - 1
        fsi = fsi_slope(n) / expected - 1
        worst = max(abs(fed), abs(fsi))
        cases.append(CaseResult(f"n={n}: float64 FED sum and FSI slope vs (n^2+n)/3", 2, worst, 0.0, RELATIVE_TOLERANCE, bool(worst <= RELATIVE_TOLERANCE)))
    hypotheses = {
        "symbolic": "sympy: trig identity and slope recurrence simplify to 0 for symbolic k (induction step)",
        "exact": f"rational recurrence for n = 1..{LARGEST_LENGTH}; roots in {DIGITS}-digit arithmetic, largest relative |q_n(1/t_i)| = {worst_root:.3g}",
        "float64": f"n in {FLOAT_LENGTHS}: relative deviation <= {RELATIVE_TOLERANCE:g}",
    }
    derivation = f"relative {RELATIVE_TOLERANCE:g} in float64; exact rationals; {ROOT_TOLERANCE:g} relative at {DIGITS} digits"
    return Evidence(tuple(cases), 0.0, "<=", derivation, hypotheses)


CYCLE_TIME_IDENTITIES = Claim(
    "cycle-time-identities",
    "An FSI cycle and a FED cycle of length n are the same polynomial q_n(tau A), and both advance "
    "the time tau (n^2+n)/3: sum_i tau_max / (2 cos^2(pi (2i+1)/(4n+2))) = tau_max (n^2+n)/3.",
    _check,
)
