r"""The hypotheses of a stability theorem, checked on the numbers instead of read.

The explicit-step theorem needs a sector bound $0 \le \Phi(s)/s \le L$ and a norm bound
$\nu \ge \|K\|_2$; the Lipschitz bound of a block needs $a \le \Phi' \le b$. A flux or an
operator *declares* these constants (`sector_bound()`, `derivative_range()`,
`norm_bound()`). For jaxpde's own classes (exactly these classes, not subclasses) the
declarations are proven in `proofs/`, and only their parameters are checked (finite,
positive scales). For any other class a declaration is a hypothesis to check:

- a flux: $\Phi(s)/s$ and $\Phi'(s)$ are evaluated in float64 at $\pm 10^{t}$ on a dense
  logarithmic grid of $t \in [\log_{10} s_{\min}, \log_{10} s_{\max}]$ (default
  $[-8, 8]$, widened to cover every $s = (Ku)_i$ that a search over inputs of norm up to
  $R$ can produce), then refined by zooming into the brackets of the worst grid points
  of each condition; a value outside the declared range is a counterexample with its
  witness $s$;
- an operator: linearity and the adjoint identity $\langle Ku, v\rangle = \langle u,
  K^\top v\rangle$ on random probes; the declared norm against the certified lower bound
  of `spectral_norm` (a declared norm below it is a counterexample, with the vector
  attaining it) and, when the dense matrix is small enough to build (by applying the
  operator to the unit vectors), against a certified Gram-iteration upper bound $U$,
  which then replaces the declaration.

Sampling a flux is evidence, not a proof: the report states the region it covered.
"""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import fluxes as _fluxes
from ..operators import AbstractOperator, Derivative, Matrix, Stencil
from ..operators2d import Gradient, GradientAdjoint, Stencil2D
from .gram import gram_bound
from .spectral import spectral_norm

# jaxpde's own flux classes whose constants are proven, with the proof that covers them.
PROVEN_FLUXES: dict[type, str] = {
    _fluxes.Linear: "proofs/explicit-stability.md",
    _fluxes.PeronaMalik: "proofs/nonmonotone-stability.md",
    _fluxes.ExponentialPeronaMalik: "proofs/nonmonotone-stability.md",
    _fluxes.Weickert: "proofs/nonmonotone-stability.md",
    _fluxes.Charbonnier: "proofs/block-lipschitz.md",
    _fluxes.TotalVariation: "proofs/block-lipschitz.md",
    _fluxes.RadialBasisFlux: "proofs/radial-basis-flux.md",
    _fluxes.Frozen: "proofs/fsi-stability.md",
}
# jaxpde's own operator classes whose `norm_bound()` is proven.
PROVEN_OPERATORS: dict[type, str] = {
    Stencil: "proofs/spectral-norm-bounds.md",
    Derivative: "proofs/derivative-norm.md",
    Matrix: "proofs/spectral-norm-bounds.md",
    Gradient: "proofs/gradient-2d-norm.md",
    GradientAdjoint: "proofs/gradient-2d-norm.md",
    Stencil2D: "proofs/spectral-norm-bounds.md",
}

# Flux sampling: grid points per sign, zoom refinements, points per zoom, brackets refined.
FLUX_GRID_POINTS = 4001
FLUX_ZOOMS = 4
FLUX_ZOOM_POINTS = 129
FLUX_ZOOM_BRACKETS = 8
FLUX_S_RANGE = (1e-8, 1e8)
# Operators with at most this many input and output entries get a dense matrix and a
# certified Gram upper bound.
OPERATOR_DENSE_LIMIT = 4096
# Relative slack of a sampled flux value against its declared bound (rounding of the
# evaluation and of forward-mode differentiation), in units of the evaluation dtype's eps.
FLUX_SLACK_EPS = 256

Verdict = str  # "proven" | "checked" | "violated" | "unchecked"


@dataclasses.dataclass(frozen=True)
class ConstantCheck:
    """How one declared constant was checked.

    - `name`: what it is, e.g. "sector bound of MyFlux".
    - `verdict`: "proven" (jaxpde's own class, proof in `proof`), "checked" (a user class:
      sampled / bounded without a counterexample; `method` says how), "violated" (a
      counterexample: `witness`), or "unchecked" (it could not be checked: no theorem
      may rely on it).
    - `declared`, `observed`: the declared value(s) and the extreme value(s) found.
    - `used`: the value a certificate may use (a certified replacement, e.g. a Gram upper
      bound of the norm), or `None`.
    """

    name: str
    verdict: Verdict
    declared: tuple[float, ...]
    observed: tuple[float, ...] = ()
    used: float | None = None
    witness: list[float] | float | None = None
    method: str = ""
    proof: str = ""

    def describe(self) -> str:
        declared = ", ".join(f"{x:.6g}" for x in self.declared)
        text = f"{self.verdict}: declared {declared}"
        if self.observed:
            text += "; observed " + ", ".join(f"{x:.6g}" for x in self.observed)
        if self.proof:
            text += f" ({self.proof})"
        if self.method:
            text += f"; {self.method}"
        if self.verdict == "violated" and isinstance(self.witness, float):
            text += f"; witness s = {self.witness:.17g}"
        return text

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["declared"] = [_json_float(x) for x in self.declared]
        data["observed"] = [_json_float(x) for x in self.observed]
        data["used"] = None if self.used is None else _json_float(self.used)
        return data


def _json_float(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _floats(x) -> tuple[float, ...]:
    return tuple(float(v) for v in np.atleast_1d(np.asarray(x, dtype=np.float64)))


def _positive_parameters(tree) -> bool:
    leaves = [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))]
    return all(np.all(np.isfinite(x)) and np.all(x > 0) for x in leaves)


def _finite_parameters(tree) -> bool:
    leaves = [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))]
    return all(np.all(np.isfinite(x)) for x in leaves)


def is_proven_flux(flux) -> bool:
    """`type(flux)` is one of jaxpde's own fluxes (not a subclass)."""
    return type(flux) in PROVEN_FLUXES


def is_proven_operator(op) -> bool:
    """`type(op)` is one of jaxpde's own operators (not a subclass)."""
    return type(op) in PROVEN_OPERATORS


# --- fluxes -----------------------------------------------------------------------


@eqx.filter_jit
def _flux_values(flux, s):
    """$(\\Phi(s)/s, \\Phi'(s))$ elementwise (forward mode: one pass)."""
    phi, dphi = jax.jvp(flux, (s,), (jnp.ones_like(s),))
    return phi / s, dphi


def _flux_conditions(ratio, dphi, low, high, sector):
    """Violation margins of the four conditions, each > 0 where violated:
    Phi/s <= L, Phi/s >= 0, Phi' <= b, Phi' >= a; non-finite values count as violations."""
    margins = np.stack([ratio - sector, -ratio, dphi - high, low - dphi])
    return np.where(np.isfinite(margins), margins, np.inf)


def check_flux(flux, *, s_range: tuple[float, float] = FLUX_S_RANGE, points: int = FLUX_GRID_POINTS) -> list[ConstantCheck]:
    r"""Check `flux.sector_bound()` and `flux.derivative_range()`.

    jaxpde's own flux classes (exact type) with finite positive scale parameters:
    "proven". `Frozen`: the frozen values themselves are checked ($0 \le g_i \le L$, then
    exact). Any other flux: $\Phi(s)/s$ and $\Phi'(s)$ sampled in float64 at $\pm s$ for
    `points` values of $s$ log-spaced over `s_range`, then `FLUX_ZOOMS` zoom refinements
    of `FLUX_ZOOM_POINTS` points around the `FLUX_ZOOM_BRACKETS` worst grid points of each
    condition; a value outside the declared ranges (beyond `FLUX_SLACK_EPS` eps of
    rounding) is "violated" with the witness $s$.

    **Returns:** two `ConstantCheck`s: the sector bound and the derivative range.
    """
    low_s, high_s = (float(x) for x in s_range)
    if not (0 < low_s < high_s and math.isfinite(high_s)):
        raise ValueError(f"`s_range` must be (low, high) with 0 < low < high < inf, got {s_range}.")
    points = int(points)
    if points < 2:
        raise ValueError(f"`points` must be at least 2, got {points}.")
    name = type(flux).__name__
    sector = float(np.asarray(flux.sector_bound(), np.float64))
    low, high = (float(np.asarray(x, np.float64)) for x in flux.derivative_range())
    if type(flux) is _fluxes.Frozen:
        values = np.asarray(flux.values, np.float64)
        bound = float(np.asarray(flux.bound, np.float64))
        ok = bool(np.all(np.isfinite(values)) and math.isfinite(bound) and np.all(values >= 0) and np.all(values <= bound))
        verdict = "proven" if ok else "violated"
        method = "the frozen values g_i checked: 0 <= g_i <= L (then Phi(s)/s = g_i, Phi' = g_i exactly)"
        observed = (float(np.min(values)), float(np.max(values))) if values.size else ()
        proof = PROVEN_FLUXES[_fluxes.Frozen]
        return [
            ConstantCheck(f"sector bound of {name}", verdict, (sector,), observed, sector if ok else None, None, method, proof),
            ConstantCheck(f"derivative range of {name}", verdict, (low, high), observed, None, None, method, proof),
        ]
    if is_proven_flux(flux):
        parameters_ok = _finite_parameters(flux) if type(flux) is _fluxes.RadialBasisFlux else _positive_parameters(flux)
        if parameters_ok and all(math.isfinite(x) for x in (sector, low, high)):
            proof = PROVEN_FLUXES[type(flux)]
            method = "jaxpde's own class; parameters checked (finite" + (
                ")" if type(flux) is _fluxes.RadialBasisFlux else ", positive)"
            )
            return [
                ConstantCheck(f"sector bound of {name}", "proven", (sector,), (), sector, None, method, proof),
                ConstantCheck(f"derivative range of {name}", "proven", (low, high), (), None, None, method, proof),
            ]
        # Parameters outside the proof's domain: check the numbers like a user flux.
    return _sample_flux(flux, name, sector, low, high, low_s, high_s, points)


def _sample_flux(flux, name, sector, low, high, low_s, high_s, points) -> list[ConstantCheck]:
    with jax.enable_x64(True):
        exponents = np.linspace(math.log10(low_s), math.log10(high_s), points)
        grid = 10.0**exponents
        s = np.concatenate([-grid[::-1], grid])
        ratio, dphi = (np.asarray(x, np.float64) for x in _flux_values(flux, jnp.asarray(s, jnp.float64)))
        dtype = np.asarray(_flux_values(flux, jnp.ones((1,), jnp.float64))[0]).dtype
        eps = float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else float(np.finfo(np.float64).eps)
        margins = _flux_conditions(ratio, dphi, low, high, sector)
        samples = s.size
        # Zoom: around the worst grid points of each condition, resample the bracket
        # between the neighbouring grid points (in log |s|), then the neighbours of the
        # best new point, FLUX_ZOOMS times.
        log_s, sign = np.log10(np.abs(s)), np.sign(s)
        step = exponents[1] - exponents[0]
        extra_s, extra_ratio, extra_dphi = [], [], []
        for condition in range(4):
            order = np.argsort(-margins[condition], kind="stable")[:FLUX_ZOOM_BRACKETS]
            centres, signs, width = log_s[order], sign[order], np.full(order.size, step)
            for _ in range(FLUX_ZOOMS):
                offsets = np.linspace(-1.0, 1.0, FLUX_ZOOM_POINTS)
                trial_log = centres[:, None] + width[:, None] * offsets[None, :]
                trial = (signs[:, None] * 10.0**trial_log).ravel()
                r, d = (np.asarray(x, np.float64) for x in _flux_values(flux, jnp.asarray(trial, jnp.float64)))
                m = _flux_conditions(r, d, low, high, sector)
                extra_s.append(trial)
                extra_ratio.append(r)
                extra_dphi.append(d)
                samples += trial.size
                best = np.argmax(m[condition].reshape(order.size, -1), axis=1)
                centres = trial_log[np.arange(order.size), best]
                width = width * 2 / (FLUX_ZOOM_POINTS - 1)
        all_s = np.concatenate([s, *extra_s])
        ratio_all, dphi_all = np.concatenate([ratio, *extra_ratio]), np.concatenate([dphi, *extra_dphi])
        all_margins = _flux_conditions(ratio_all, dphi_all, low, high, sector)
    scale_sector = max(abs(sector), 1.0) if math.isfinite(sector) else 1.0
    scale_range = max(abs(low), abs(high), 1.0) if math.isfinite(low) and math.isfinite(high) else 1.0
    slack = FLUX_SLACK_EPS * eps
    method = (
        f"sampled in float64: Phi(s)/s and Phi'(s) at s = +-10^[{math.log10(low_s):.3g}, {math.log10(high_s):.3g}] "
        f"({2 * points} log-spaced points) and {FLUX_ZOOMS} zoom refinements of {FLUX_ZOOM_POINTS} points around "
        f"the {FLUX_ZOOM_BRACKETS} worst points of each condition ({samples} evaluations); evidence, not a proof"
    )
    finite = np.isfinite(ratio_all) & np.isfinite(dphi_all)
    observed_sector = (float(np.min(ratio_all[finite])), float(np.max(ratio_all[finite]))) if finite.any() else ()
    observed_range = (float(np.min(dphi_all[finite])), float(np.max(dphi_all[finite]))) if finite.any() else ()
    checks = []
    for label, declared, conditions, scale, observed in (
        (f"sector bound of {name}", (sector,), (0, 1), scale_sector, observed_sector),
        (f"derivative range of {name}", (low, high), (2, 3), scale_range, observed_range),
    ):
        if not all(math.isfinite(x) for x in declared) or (conditions == (0, 1) and not sector > 0):
            checks.append(ConstantCheck(label, "unchecked", declared, observed, None, None, "declared value not finite (or L <= 0)"))
            continue
        worst = all_margins[list(conditions)]
        index = np.unravel_index(np.argmax(worst), worst.shape)
        if worst[index] > slack * scale:
            witness = float(all_s[index[1]])
            checks.append(ConstantCheck(label, "violated", declared, observed, None, witness, method))
        else:
            used = sector if conditions == (0, 1) else None
            checks.append(ConstantCheck(label, "checked", declared, observed, used, None, method))
    return checks


# --- operators ---------------------------------------------------------------------


def _dense_of(apply, in_shape, size, dtype) -> np.ndarray:
    basis = jnp.eye(size, dtype=dtype).reshape(size, *in_shape)
    return np.asarray(jax.vmap(apply)(basis), np.float64).reshape(size, -1).T


def check_operator(op: AbstractOperator, *, dense_limit: int = OPERATOR_DENSE_LIMIT, key=None) -> list[ConstantCheck]:
    r"""Check `op.norm_bound()` (and that `op` is linear with adjoint `op.T`).

    jaxpde's own operator classes (exact type) with finite parameters: "proven". Any other
    operator: linearity and the adjoint identity on random probes (a failure is
    "violated"); `spectral_norm`'s certified lower bound $\ell$ (a declared norm below $\ell$
    is "violated", witness the vector attaining $\ell$); when the input and output have at
    most `dense_limit` entries, the dense matrix (the operator applied to the unit vectors)
    and its certified Gram upper bound $U$, which a certificate then uses instead of the
    declaration ("checked", `used` = $U$). Above `dense_limit` no upper bound can be
    certified: "unchecked".

    **Returns:** one `ConstantCheck` ("norm bound of <class>").
    """
    name = f"norm bound of {type(op).__name__}"
    declared = float(np.asarray(op.norm_bound(), np.float64))
    if is_proven_operator(op) and _finite_parameters(op) and math.isfinite(declared):
        return [ConstantCheck(name, "proven", (declared,), (), declared, None, "jaxpde's own class", PROVEN_OPERATORS[type(op)])]
    key = jax.random.key(0) if key is None else key
    in_shape, out_shape = tuple(op.in_shape), tuple(op.out_shape)
    size_in, size_out = math.prod(in_shape), math.prod(out_shape)
    dtype = jnp.result_type(float)
    eps = float(np.finfo(dtype).eps)
    u = jax.random.normal(jax.random.fold_in(key, 1), (4, *in_shape), dtype)
    v = jax.random.normal(jax.random.fold_in(key, 2), (4, *out_shape), dtype)
    ku, ktv = jax.vmap(op)(u), jax.vmap(op.T)(v)
    # Linearity: K(a u + b u') = a K u + b K u' (scaled far apart) and the adjoint identity.
    combo = 1e3 * u[0] - 1e-3 * u[1]
    linear_gap = float(jnp.linalg.norm(op(combo) - (1e3 * ku[0] - 1e-3 * ku[1])))
    scale = declared if math.isfinite(declared) else 1.0
    reference = float(1e3 * jnp.linalg.norm(u[0])) * max(scale, float(jnp.max(jnp.linalg.norm(ku.reshape(4, -1), axis=1))))
    inner_left = jnp.sum((ku * v).reshape(4, -1), axis=1)
    inner_right = jnp.sum((u * ktv).reshape(4, -1), axis=1)
    adjoint_gap = float(jnp.max(jnp.abs(inner_left - inner_right)))
    adjoint_scale = float(jnp.max(jnp.linalg.norm(ku.reshape(4, -1), axis=1) * jnp.linalg.norm(v.reshape(4, -1), axis=1)))
    adjoint_scale = max(adjoint_scale, float(jnp.max(jnp.linalg.norm(u.reshape(4, -1), axis=1) * jnp.linalg.norm(ktv.reshape(4, -1), axis=1))))
    tolerance = 1e3 * eps * max(size_in, size_out)
    if not (linear_gap <= tolerance * max(reference, 1e-300) and adjoint_gap <= tolerance * max(adjoint_scale, 1e-300)):
        what = "not linear" if linear_gap > tolerance * max(reference, 1e-300) else "op.T is not the adjoint of op"
        return [ConstantCheck(name, "violated", (declared,), (), None, np.asarray(u[0]).ravel().tolist(), f"{what} (random probes)")]
    dense = max(size_in, size_out) <= dense_limit
    bounds = spectral_norm(op, method="gram", dense_limit=max(dense_limit, 1)) if dense else spectral_norm(op, method="auto")
    lower = float(bounds.lower)
    if not math.isfinite(declared) or declared < lower:
        witness = np.asarray(bounds.vector).ravel().tolist()
        return [
            ConstantCheck(name, "violated", (declared,), (lower,), None, witness,
                          f"declared norm below spectral_norm's certified lower bound {lower:.17g} (witness: the vector attaining it)")
        ]
    if not dense:
        return [
            ConstantCheck(name, "unchecked", (declared,), (lower,), None, None,
                          f"{size_in} inputs / {size_out} outputs exceed the dense limit {dense_limit}: no certified upper bound "
                          "(only the lower bound was checked)")
        ]
    matrix = _dense_of(op, in_shape, size_in, dtype)
    upper = float(gram_bound(jnp.asarray(matrix)))
    return [
        ConstantCheck(name, "checked", (declared,), (lower, upper), upper, None,
                      f"dense {size_out} x {size_in} matrix (op applied to the unit vectors): certified Gram upper bound "
                      f"{upper:.17g}, lower bound {lower:.17g}; the certificate uses the Gram bound")
    ]


def dense_abs_norm(op: AbstractOperator) -> float:
    """Schur's bound of $\\||K|\\|_2$ from the dense matrix of `op` (applied to unit vectors)."""
    size = math.prod(op.in_shape)
    matrix = np.abs(_dense_of(op, tuple(op.in_shape), size, jnp.result_type(float)))
    return float(np.sqrt(np.max(matrix.sum(axis=1)) * np.max(matrix.sum(axis=0))))
