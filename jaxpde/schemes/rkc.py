r"""Runge-Kutta-Chebyshev (RKC): explicit steps far beyond the explicit limit, by a
three-term Chebyshev recursion over $s$ stages.

For $\partial_t u = F(u) = -K^\top\Phi(Ku)$ one step of size $\tau$ is

$$Y_0 = u, \qquad Y_1 = Y_0 + \tilde\mu_1\tau F(Y_0),$$
$$Y_j = \kappa_j Y_0 + \mu_j Y_{j-1} + \nu_j Y_{j-2} + \tilde\mu_j\tau F(Y_{j-1})
+ \tilde\gamma_j\tau F(Y_0), \qquad j = 2, \dots, s,$$

$u^{k+1} = Y_s$, with $\kappa_j = 1 - \mu_j - \nu_j$: $s$ evaluations of $F$ per step. On
$F(u) = \lambda u$ it multiplies by the stability polynomial

$$R_s(z) = a_s + b_s T_s(w_0 + w_1 z), \qquad z = \tau\lambda,$$

$T_s$ the Chebyshev polynomial, damping $\varepsilon$ (default $2/13$),
$w_0 = 1 + \varepsilon/s^2$, and

- order 2 (Sommeijer, Shampine, Verwer 1998; the standard RKC):
  $w_1 = T_s'(w_0)/T_s''(w_0)$, $b_j = T_j''(w_0)/T_j'(w_0)^2$ ($j \ge 2$), $b_0 = b_1 = b_2$;
- order 1 (damped Chebyshev): $w_1 = T_s(w_0)/T_s'(w_0)$, $b_j = 1/T_j(w_0)$;

$a_j = 1 - b_jT_j(w_0)$, $\tilde\mu_1 = b_1w_1$, $\mu_j = 2b_jw_0/b_{j-1}$, $\nu_j = -b_j/b_{j-2}$,
$\tilde\mu_j = 2b_jw_1/b_{j-1}$, $\tilde\gamma_j = -a_{j-1}\tilde\mu_j$. $|R_s| \le 1$ exactly on
$[-\beta(s), 0]$ with $\beta(s) = (w_0 + x_s)/w_1$, where $x_s = w_0$ for even $s$ and
$T_s(x_s) = (1 + a_s)/b_s$ for odd $s$ (`rkc_stability_bound`); $\beta(s) \approx 0.653\,s^2$
(order 2) and $\approx 1.82\,s^2$ (order 1) for $\varepsilon = 2/13$. The intermediate stages
$R_j$, $j < s$, stay in $[-1, 1]$ there too, except for odd $s$ of order 2, whose interval reaches
past $x = -w_0$ (up to $\max_j|R_j| \approx 1.94$; `rkc_rounding_amplification`).

The step-count rule takes the fewest stages with $\beta(s) \ge \tau\rho$, $\rho$ a certified
bound of the spectral radius of the Jacobian (`rkc_spectral_radius`):

- `frozen=True` (default) evaluates the diffusivity once per step,
  $G = \operatorname{diag}(g((Ku)^2))$, so the step is the linear map $R_s(-\tau K^\top GK)$; with
  $\rho = L\|K\|^2$ ($L$ the sector bound, $\rho = 2/\tau_{\rm lim}$ for the explicit limit
  $\tau_{\rm lim}$ = `stable_step_size`) it is Euclidean stable, $\|u^{k+1}\| \le \|u^k\|$
  (`proofs/rkc-stability.md`, claim `rkc-stability`).
- `frozen=False` evaluates $\Phi$ at every stage (RKC as its authors use it) with
  $\rho = \mathrm{Lip}(\Phi)\|K\|^2$, which bounds the Jacobian $-K^\top\operatorname{diag}(\Phi'(Ku))K$.
  This is the linearised rule; no proof covers the nonlinear step.

A step of size $\tau$ at the rule's $s$ advances $\tau = \beta(s)/\rho = \beta(s)\tau_{\rm lim}/2$ with $s$
evaluations: about $0.327\,s\,\tau_{\rm lim}$ per evaluation (order 2) against $\tau_{\rm lim}$ for the
explicit scheme, so reaching time $t$ takes about $\sqrt{3.06\,t/\tau_{\rm lim}}$ evaluations in one step.

Reference: B. P. Sommeijer, L. F. Shampine, J. G. Verwer, "RKC: an explicit solver for
parabolic PDEs", J. Comput. Appl. Math. 88 (1998) 315-326,
doi:10.1016/S0377-0427(97)00219-7; J. G. Verwer, W. Hundsdorfer, B. P. Sommeijer,
"Convergence properties of the Runge-Kutta-Chebyshev method", Numer. Math. 57 (1990).
"""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import mpmath
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from .._checks import check_int, check_positive_float, concrete_value, positive_array
from ..blocks import DiffusionBlock, check_operator_and_flux
from ..fluxes import AbstractFlux, Frozen
from ..operators import AbstractOperator
from ._base import AbstractScheme, concrete_time, resolve_steps

DEFAULT_DAMPING = 2 / 13
ORDERS = (1, 2)
# Rows of `rkc_coefficients`, in the order of the stage formula.
COEFFICIENT_ROWS = ("kappa", "mu", "nu", "mu_tilde", "gamma_tilde")


def _check_method(order: object, damping: object) -> tuple[int, float]:
    if isinstance(order, bool) or order not in ORDERS:
        raise ValueError(f"`order` must be 1 (damped first order) or 2 (standard RKC), got {order!r}.")
    try:
        value = float(damping)  # pyright: ignore[reportArgumentType]
    except (TypeError, ValueError):
        raise TypeError(f"`damping` must be a real number, got {damping!r}.") from None
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"`damping` must lie in [0, 1] (the standard value is 2/13), got {damping!r}.")
    return int(order), value  # pyright: ignore[reportArgumentType]


def _check_stages(stages: object, order: int) -> int:
    # Second order needs T_s'' != 0, i.e. s >= 2.
    return check_int("stages", stages, minimum=order)


def _precision(stages: int) -> int:
    # The recurrences near x = 1 lose about 2 log10(s) digits: keep 30 beyond float64.
    return 46 + 2 * len(str(stages))


@functools.lru_cache(maxsize=256)
def _exact(stages: int, order: int, damping: float) -> dict:
    """$w_0, w_1$, $(a_j)$, $(b_j)$, $T_s(w_0)$, $x_s$ and $\\beta(s)$ as `mpmath` numbers (the
    recurrences for $T_j, T_j', T_j''$ at $w_0$, in about 50 significant digits), so that every
    float64 value derived from them is correctly rounded."""
    with mpmath.workdps(_precision(stages)):
        w0 = 1 + mpmath.mpf(damping) / stages**2
        t, dt, ddt = [mpmath.mpf(1), w0], [mpmath.mpf(0), mpmath.mpf(1)], [mpmath.mpf(0), mpmath.mpf(0)]
        for j in range(2, stages + 1):
            t.append(2 * w0 * t[j - 1] - t[j - 2])
            dt.append(2 * t[j - 1] + 2 * w0 * dt[j - 1] - dt[j - 2])
            ddt.append(4 * dt[j - 1] + 2 * w0 * ddt[j - 1] - ddt[j - 2])
        t, dt, ddt = t[: stages + 1], dt[: stages + 1], ddt[: stages + 1]
        if order == 1:
            w1 = t[stages] / dt[stages]
            b = [1 / value for value in t]
            a = [mpmath.mpf(0)] * (stages + 1)  # exactly: R_j = T_j(w0 + w1 z) / T_j(w0)
        else:
            w1 = dt[stages] / ddt[stages]
            b = [ddt[2] / dt[2] ** 2] * 3 + [ddt[j] / dt[j] ** 2 for j in range(3, stages + 1)]
            a = [1 - bj * tj for bj, tj in zip(b, t)]
        if stages % 2 == 0 or order == 1:
            x = w0  # R_s(-beta) = 1
        else:
            x = mpmath.cosh(mpmath.acosh((1 + a[stages]) / b[stages]) / stages)  # R_s(-beta) = -1
        return {"w0": w0, "w1": w1, "a": a, "b": b, "T": t[stages], "x": x, "beta": (w0 + x) / w1}


def rkc_parameters(stages: int, *, order: int = 2, damping: float = DEFAULT_DAMPING) -> dict[str, float]:
    r"""$w_0$, $w_1$, $a_s$, $b_s$, $T_s(w_0)$ and $x_s$ (`rkc_stability_bound`) of the $s$-stage
    RKC method, each correctly rounded to float64: $R_s(z) = a_s + b_sT_s(w_0 + w_1z)$ (see the
    module docstring)."""
    order, damping = _check_method(order, damping)
    stages = _check_stages(stages, order)
    p = _exact(stages, order, damping)
    values = {"w0": p["w0"], "w1": p["w1"], "a": p["a"][stages], "b": p["b"][stages], "T": p["T"], "x": p["x"]}
    return {name: float(value) for name, value in values.items()}


def _unpadded(stages: int, order: int, damping: float) -> np.ndarray:
    p = _exact(stages, order, damping)
    w0, w1, a, b = p["w0"], p["w1"], p["a"], p["b"]
    with mpmath.workdps(_precision(stages)):
        columns = [(0, 1, 0, b[1] * w1, 0)]  # Y_1 = Y_0 + mu~_1 tau F(Y_0)
        for j in range(2, stages + 1):
            mu, nu, mu_tilde = 2 * b[j] * w0 / b[j - 1], -b[j] / b[j - 2], 2 * b[j] * w1 / b[j - 1]
            # kappa_j = 1 - mu_j - nu_j, written without the cancellation (0 exactly for order 1).
            kappa = a[j] - mu * a[j - 1] - nu * a[j - 2]
            columns.append((kappa, mu, nu, mu_tilde, -a[j - 1] * mu_tilde))
    return np.array([[float(value) for value in column] for column in columns]).T


def _check_identities(rows: np.ndarray, stages: int, order: int, damping: float) -> None:
    """$R_s(0) = 1$, $R_s'(0) = 1$ (consistency), $R_s''(0) = 1$ for order 2, propagated
    through the stage recurrence; and $a_s \\ge 0$, $b_s > 0$, $\\tilde\\mu_j > 0$ (the
    hypotheses of the stability proof and of the padding)."""
    values = np.array([1.0, 0.0, 0.0])  # (R_j(0), R_j'(0), R_j''(0)) for j = -1 (= Y_0)
    initial = previous = values
    current = values
    for j in range(stages):
        kappa, mu, nu, mu_t, gamma_t = rows[:, j]
        nxt = np.array([
            kappa + mu * current[0] + nu * previous[0],
            mu * current[1] + nu * previous[1] + mu_t * current[0] + gamma_t * initial[0],
            mu * current[2] + nu * previous[2] + 2 * mu_t * current[1],
        ])
        previous, current = current, nxt
    expected = [1.0, 1.0] + ([1.0] if order == 2 else [])
    tolerance = 1e-9 * stages**2
    parameters = rkc_parameters(stages, order=order, damping=damping)
    failures = [
        name for name, ok in (
            ("R_s(0) = 1, R_s'(0) = 1" + (", R_s''(0) = 1" if order == 2 else ""),
             np.allclose(current[: len(expected)], expected, rtol=0, atol=tolerance)),
            ("a_s >= 0", parameters["a"] >= -1e-15),
            ("b_s > 0", parameters["b"] > 0),
            ("mu~_j > 0", bool(np.all(rows[3] > 0))),
        ) if not ok
    ]
    if failures:
        raise RuntimeError(
            f"RKC coefficients for s = {stages}, order {order}, damping {damping!r} fail: {', '.join(failures)}."
        )


@functools.lru_cache(maxsize=256)
def _checked_coefficients(stages: int, order: int, damping: float) -> np.ndarray:
    rows = _unpadded(stages, order, damping)
    _check_identities(rows, stages, order, damping)
    rows.setflags(write=False)
    return rows


def rkc_coefficients(
    stages: int, *, order: int = 2, damping: float = DEFAULT_DAMPING, padded_to: int | None = None
) -> np.ndarray:
    r"""The stage coefficients of one RKC step, float64 of shape `(5, padded_to or stages)`:
    rows $\kappa_j, \mu_j, \nu_j, \tilde\mu_j, \tilde\gamma_j$ (`COEFFICIENT_ROWS`), column $j - 1$ for
    stage $j$; stage 1 is $(0, 1, 0, \tilde\mu_1, 0)$. Padding columns $(0, 1, 0, 0, 0)$ are the
    identity ($Y_j = Y_{j-1}$, exactly in floating point) and skip their evaluation of $F$, so
    that one compiled program serves every $s \le$ `padded_to`. Checked when created:
    $R_s(0) = R_s'(0) = 1$ (and $R_s''(0) = 1$ for order 2), $a_s \ge 0$, $b_s > 0$
    (`RuntimeError` otherwise)."""
    order, damping = _check_method(order, damping)
    stages = _check_stages(stages, order)
    rows = _checked_coefficients(stages, order, damping)
    if padded_to is None:
        return rows.copy()
    padded_to = check_int("padded_to", padded_to, minimum=stages)
    pad = np.zeros((len(COEFFICIENT_ROWS), padded_to - stages))
    pad[1] = 1.0
    return np.concatenate([rows, pad], axis=1)


def rkc_polynomial(
    z: "float | np.ndarray", stages: int, *, order: int = 2, damping: float = DEFAULT_DAMPING, internal: bool = False
) -> "float | np.ndarray":
    r"""$R_s(z)$ by the stage recurrence with the coefficients of `rkc_coefficients`, in
    float64 (what one step does to $F(u) = \lambda u$, $z = \tau\lambda$). With `internal=True`,
    all $R_j(z)$, $j = 0, \dots, s$, stacked along a leading axis."""
    z = np.asarray(z, np.float64)
    rows = rkc_coefficients(stages, order=order, damping=damping)
    one = np.ones_like(z)
    values = [one]
    previous, current = one, one
    for j in range(rows.shape[1]):
        kappa, mu, nu, mu_t, gamma_t = rows[:, j]
        previous, current = current, kappa + mu * current + nu * previous + mu_t * z * current + gamma_t * z
        values.append(current)
    return np.stack(values) if internal else current


def rkc_stability_bound(stages: int, *, order: int = 2, damping: float = DEFAULT_DAMPING) -> float:
    r"""$\beta(s)$, correctly rounded: $|R_s(z)| \le 1$ exactly for $z \in [-\beta(s), 0]$, and
    $|R_s| > 1$ just beyond. $\beta(s) = (w_0 + x_s)/w_1$, where $x_s = w_0$ for even $s$
    ($R_s(-\beta) = 1$) and $x_s = \cosh(\operatorname{arccosh}((1 + a_s)/b_s)/s)$ for odd $s$
    ($R_s(-\beta) = -1$); for order 1, $a_s = 0$ and $x_s = w_0$ for every $s$
    (`proofs/rkc-stability.md`)."""
    order, damping = _check_method(order, damping)
    stages = _check_stages(stages, order)
    return float(_exact(stages, order, damping)["beta"])


def rkc_stages_for(z: float, *, order: int = 2, damping: float = DEFAULT_DAMPING) -> int:
    r"""The step-count rule: the fewest stages $s$ with $\beta(s) \ge z$, for $z = \tau\rho$
    ($\rho$ a bound of the spectral radius, `rkc_spectral_radius`)."""
    order, damping = _check_method(order, damping)
    try:
        z = float(z)
    except (TypeError, ValueError):
        raise TypeError(f"`z` = tau * rho must be a real number, got {z!r}.") from None
    if not (math.isfinite(z) and z >= 0):
        raise ValueError(f"`z` = tau * rho must be finite and >= 0, got {z!r}.")
    minimum = order

    def beta(s):
        return rkc_stability_bound(s, order=order, damping=damping)

    # beta(s) grows like c s^2; start near the root and walk to the first s that reaches z.
    c = beta(64) / 64**2
    s = max(minimum, math.ceil(math.sqrt(z / c)))
    while s > minimum and beta(s - 1) >= z:
        s -= 1
    while beta(s) < z:
        s += 1
    return s


def rkc_spectral_radius(op: AbstractOperator, flux: AbstractFlux, *, frozen: bool = True) -> Float[Array, ""]:
    r"""A certified bound $\rho$ of the spectral radius of the right-hand side's linear part:
    $L\nu^2$ with the sector bound $L$ for the frozen step (the matrix $K^\top GK$,
    $0 \le G \le L$), $\mathrm{Lip}(\Phi)\nu^2$ for the Jacobian $K^\top\operatorname{diag}(\Phi'(Ku))K$ of
    the unfrozen one; $\nu$ = `op.norm_bound()` $\ge \|K\|$. For the frozen step
    $\rho = 2/$`stable_step_size(op, flux)`."""
    check_operator_and_flux(op, flux)
    norm = op.norm_bound()
    bound = flux.sector_bound() if frozen else flux.lipschitz()
    return bound.astype(norm.dtype) * norm**2


def rkc_rounding_amplification(
    stages: int, *, order: int = 2, damping: float = DEFAULT_DAMPING, per_root: int = 16
) -> tuple[float, float]:
    r"""`(amplification, internal)` on a grid of $z \in [-\beta(s), 0]$ with `per_root` points
    per root of $R_s$: the amplification $\sum_{k=1}^{s}\max_z|P_{k,s}(z)|$, where $P_{k,j}$ carries
    an error made in stage $k$ to stage $j$ ($P_{k,k} = 1$, $P_{k,k-1} = 0$,
    $P_{k,j} = (\mu_j + \tilde\mu_jz)P_{k,j-1} + \nu_jP_{k,j-2}$), and the internal bound
    $\max_{j \le s}\max_z|R_j(z)|$ of the stages. Their product with the largest per-stage
    error bounds the step's first-order rounding error in units of $\|u\|$."""
    order, damping = _check_method(order, damping)
    stages = _check_stages(stages, order)
    return _amplification(stages, order, damping, check_int("per_root", per_root, minimum=1))


@functools.lru_cache(maxsize=64)
def _amplification(stages: int, order: int, damping: float, per_root: int) -> tuple[float, float]:
    p = rkc_parameters(stages, order=order, damping=damping)
    beta = rkc_stability_bound(stages, order=order, damping=damping)
    # x = w0 + w1 z runs over [w0 - w1 beta, w0] = [-x_s, w0]: uniform in arccos on [-1, 1]
    # (where the roots and extrema cluster), uniform on the two short ends.
    inner = np.cos(np.linspace(0, np.pi, per_root * (stages + 4) + 1))
    low = p["w0"] - p["w1"] * beta
    x = np.concatenate([np.linspace(low, -1, 2 * per_root), inner, np.linspace(1, p["w0"], 2 * per_root)])
    z = np.clip((x - p["w0"]) / p["w1"], -beta, 0.0)
    rows = rkc_coefficients(stages, order=order, damping=damping)
    internal = float(np.max(np.abs(rkc_polynomial(z, stages, order=order, damping=damping, internal=True))))
    total = 0.0
    for k in range(1, stages + 1):
        previous, current = np.zeros_like(z), np.ones_like(z)
        for j in range(k + 1, stages + 1):
            _, mu, nu, mu_t, _ = rows[:, j - 1]
            previous, current = current, (mu + mu_t * z) * current + nu * previous
        total += float(np.max(np.abs(current)))
    return total, internal


def rkc_step(
    block: DiffusionBlock,
    u: Float[Array, "*shape"],
    coefficients: Float[ArrayLike, "5 stages"],
    frozen: bool | Bool[Array, ""] = True,
    *,
    unroll: int | bool = 1,
) -> Float[Array, "*shape"]:
    r"""One RKC step of size $\tau$ = `block.tau` from `u` (a pure function; the module
    docstring has the recurrence). `block.update(v)` is $\tau F(v)$; `coefficients` as
    `rkc_coefficients` (padded columns are skipped, with `lax.cond`). `frozen` evaluates the
    diffusivity once, at `u`; it may be a traced boolean (both updates are then computed).
    Stages run in `lax.scan` with the coefficients as data: one program serves every stage
    count of the same padded length. `unroll` is `lax.scan`'s (`True` unrolls the stages in
    the compiled program: faster for a few stages on small problems, slower to compile)."""
    if frozen is False:
        frozen_block = block
    else:
        frozen_block = eqx.tree_at(lambda b: b.flux, block, Frozen(block.flux, block.op(u)))

    def update(v):
        if isinstance(frozen, bool):
            return frozen_block.update(v)
        return jnp.where(frozen, frozen_block.update(v), block.update(v))

    rows = jnp.asarray(coefficients, u.dtype)
    if rows.ndim != 2 or rows.shape[0] != len(COEFFICIENT_ROWS) or rows.shape[1] < 1:
        raise ValueError(
            f"`coefficients` must have shape (5, stages) (rows {COEFFICIENT_ROWS}; see `rkc_coefficients`), "
            f"got {rows.shape}."
        )
    f0 = update(u)
    first = u + rows[3, 0] * f0

    def stage(carry, column):
        current, previous = carry
        kappa, mu, nu, mu_t, gamma_t = column
        # Padding (mu~ = 0) skips F; under vmap both branches run and one is selected.
        slope = jax.lax.cond(mu_t != 0, update, jnp.zeros_like, current)
        value = kappa * u + mu * current + nu * previous + mu_t * slope + gamma_t * f0
        return (value, current), None

    (final, _), _ = jax.lax.scan(stage, (first, u), rows[:, 1:].T, unroll=unroll)
    return final


class RKCScheme(AbstractScheme):
    r"""Runge-Kutta-Chebyshev steps of $\partial_t u = -K^\top\Phi(Ku)$: `scheme(u)` is one step of
    size `tau` with $s$ = `stages` evaluations of the right-hand side.

    **Arguments:**

    - `op`, `flux`: the operator $K$ and the flux $\Phi$.
    - `tau`: the step size. Defaults to the largest that `stages` allows,
      $\beta(s)/\rho$. Pass `tau` or `stages` (or both).
    - `stages`: $s$; defaults to the step-count rule `rkc_stages_for(tau * rho)`. Fewer
      stages than the rule needs are refused unless `allow_unstable=True`.
    - `order`: 2 (Sommeijer-Shampine-Verwer RKC, default) or 1 (damped Chebyshev).
    - `damping`: $\varepsilon$, default $2/13$.
    - `frozen`: evaluate the diffusivity once per step (the proven-stable mode,
      `proofs/rkc-stability.md`; $\rho = L\|K\|^2$). `False`: $\Phi$ at every stage,
      $\rho = \mathrm{Lip}(\Phi)\|K\|^2$, no proof.
    - `max_stages`: pad the coefficients to this many stages (identity stages that skip
      their evaluation, except under `vmap`, where `lax.cond` computes both branches), so that
      schemes with different $s \le$ `max_stages` share one compiled program; default $s$.
    - `allow_unstable`: skip the stage check, to probe instability on purpose.

    $\rho$ is `rkc_spectral_radius(op, flux, frozen=frozen)`. Reference: Sommeijer, Shampine,
    Verwer 1998, doi:10.1016/S0377-0427(97)00219-7.
    """

    block: DiffusionBlock  # tau = the RKC step; block.update(v) = tau F(v)
    coefficients: Float[Array, "5 padded"]
    order: int = eqx.field(static=True)
    damping: float = eqx.field(static=True)
    frozen: bool = eqx.field(static=True)
    max_stages: int | None = eqx.field(static=True)
    allow_unstable: bool = eqx.field(static=True)

    def __init__(
        self,
        op: AbstractOperator,
        flux: AbstractFlux,
        tau: ArrayLike | None = None,
        *,
        stages: int | None = None,
        order: int = 2,
        damping: float = DEFAULT_DAMPING,
        frozen: bool = True,
        max_stages: int | None = None,
        allow_unstable: bool = False,
    ):
        check_operator_and_flux(op, flux)
        order, damping = _check_method(order, damping)
        frozen = bool(frozen)
        rho = rkc_spectral_radius(op, flux, frozen=frozen)
        known_rho = concrete_value(rho)
        if stages is not None:
            stages = _check_stages(stages, order)
        if tau is None:
            if stages is None:
                raise ValueError(
                    "Pass `tau` (the stage count then follows from the step-count rule) or `stages` "
                    "(tau is then the largest stable step beta(s) / rho), or both."
                )
            tau = rkc_stability_bound(stages, order=order, damping=damping) / rho
        tau = positive_array("tau", tau, "the step size must be a finite number > 0.")
        known_tau = concrete_value(tau)
        if stages is None:
            if known_tau is None or known_rho is None:
                raise ValueError("`tau` is traced: pass `stages` (the step-count rule needs a concrete tau).")
            stages = rkc_stages_for(float(known_tau) * float(known_rho), order=order, damping=damping)
        elif not allow_unstable:
            beta = rkc_stability_bound(stages, order=order, damping=damping)
            # As DiffusionBlock: a few units of roundoff of the less precise dtype.
            slack = 1 + 64 * max(float(np.finfo(dtype).eps) for dtype in (tau.dtype, rho.dtype))
            if known_tau is not None and known_rho is not None:
                z = float(known_tau) * float(known_rho)
                if z > beta * slack:
                    needed = rkc_stages_for(z, order=order, damping=damping)
                    raise ValueError(
                        f"`stages` = {stages} is too few for tau = {float(known_tau):.10g}: tau * rho = {z:.10g} "
                        f"exceeds beta({stages}) = {beta:.10g}. Pass stages >= {needed} (or omit `stages` to "
                        "apply the step-count rule), a smaller tau, or allow_unstable=True to probe instability."
                    )
            else:
                message = "`tau` * rho exceeds beta(stages): pass more `stages` or a smaller `tau`."
                tau = eqx.error_if(tau, tau * rho > beta * slack, message)
        if max_stages is not None:
            max_stages = check_int("max_stages", max_stages, minimum=1)
            if max_stages < stages:
                raise ValueError(
                    f"`max_stages` = {max_stages} is below the {stages} stages this step needs; raise it or omit it."
                )
        self.block = DiffusionBlock(op, flux, tau, allow_unstable=True)  # the stage rule replaces its check
        self.coefficients = jnp.asarray(rkc_coefficients(stages, order=order, damping=damping, padded_to=max_stages))
        self.order = order
        self.damping = damping
        self.frozen = frozen
        self.max_stages = max_stages
        self.allow_unstable = bool(allow_unstable)

    @property
    def tau(self) -> Float[Array, ""]:
        return self.block.tau

    @property
    def stages(self) -> int:
        """$s$, the evaluations of the right-hand side per step (needs concrete coefficients)."""
        return int(np.count_nonzero(np.asarray(self.coefficients)[3]))

    @property
    def stability_bound(self) -> float:
        """$\\beta(s)$."""
        return rkc_stability_bound(self.stages, order=self.order, damping=self.damping)

    def spectral_radius(self) -> Float[Array, ""]:
        """$\\rho$ of the step-count rule (`rkc_spectral_radius`)."""
        return rkc_spectral_radius(self.block.op, self.block.flux, frozen=self.frozen)

    @property
    def time_step(self) -> float | Float[Array, ""]:
        """$\\tau$ (a Python float when concrete)."""
        return concrete_time(self.tau)

    @property
    def evaluations_per_step(self) -> int:
        """$s$, the stages (evaluations of the right-hand side) of a step."""
        return self.stages

    def step(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """One step."""
        return rkc_step(self.block, u, self.coefficients, self.frozen)

    def default_steps(self, t_end: float) -> int:
        """One step: its stages follow from the step-count rule (`for_time`)."""
        check_positive_float("t_end", t_end)
        return 1

    def for_time(self, t_end: float, *, steps: int | None = None) -> "RKCScheme":
        """The scheme whose `steps` equal steps advance exactly `t_end` (`None`: one): $\\tau$ =
        `t_end / steps` and $s$ by the step-count rule (same order, damping, freezing and padding)."""
        t_end, steps = resolve_steps(self, t_end, steps)
        tau = t_end / steps
        rho = concrete_value(self.spectral_radius())
        if rho is None:
            raise ValueError("The operator or flux is traced: `for_time` needs a concrete spectral radius bound.")
        stages = rkc_stages_for(tau * float(rho), order=self.order, damping=self.damping)
        if self.max_stages is not None and stages > self.max_stages:
            raise ValueError(
                f"t_end / steps = {tau:.6g} needs {stages} stages, more than `max_stages` = {self.max_stages}; "
                "raise `steps` or `max_stages`."
            )
        block = self.block
        return RKCScheme(
            block.op, block.flux, jnp.asarray(tau, self.tau.dtype), stages=stages, order=self.order,
            damping=self.damping, frozen=self.frozen, max_stages=self.max_stages, allow_unstable=self.allow_unstable,
        )
