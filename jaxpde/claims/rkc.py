"""The claim about Runge-Kutta-Chebyshev steps: Euclidean stability of the frozen-diffusivity
RKC step when the stage count follows the step-count rule."""

import numpy as np

from .._bounds.rounding import unit_roundoff
from ..blocks import stable_step_size
from ..schemes.rkc import (
    RKCScheme,
    rkc_coefficients,
    rkc_parameters,
    rkc_polynomial,
    rkc_rounding_amplification,
    rkc_spectral_radius,
    rkc_stability_bound,
    rkc_stages_for,
)
from ..verify.certificate import CaseResult, FalsifierOutcome
from ..verify.tolerance import Tolerance, block_error, cycle_ratio_tolerance
from . import schemes
from .registry import Budget, Claim, Evidence

# Stage counts per budget name (default: "quick"): even and odd ones (the two forms of
# beta(s)), each budget's padded to one compiled program (padding stages are the identity).
# The falsifier's cost grows with the padded count: the quick budget keeps it short.
STAGE_COUNTS = {"quick": (4, 5), "thorough": (4, 9, 24)}
# Relative excess of the exact tau * L * nu^2 over beta(s) allowed for: the roundings of
# rho = L * nu^2 (2) and of the product tau * rho (1; `step_sizes` lowers tau until the
# computed product is at most beta(s)), of beta(s) (1, correctly rounded), and stored
# diffusivities above L by rounding (a few); see proofs/rkc-stability.md, Step 7.
BOUNDARY_ROUNDOFFS = 16


def stage_counts(budget: Budget) -> tuple[int, ...]:
    """The stage counts that `budget` checks (`STAGE_COUNTS`)."""
    return STAGE_COUNTS.get(budget.name, STAGE_COUNTS["quick"])


def coefficients(stages: int, padded_to: int, *, frozen: bool = True):
    """`rkc_step` coefficients (second order, damping 2/13) of `stages` stages, padded to
    `padded_to`, and the freezing mode: the `coefficients` argument of `schemes.run`."""
    return rkc_coefficients(stages, padded_to=padded_to), bool(frozen)


def program_coefficients(budget: Budget):
    """The `coefficients` of `budget`'s first stage count, padded as all of its counts: what
    `schemes.compile_run` needs to compile this claim's programs ahead of time (`warm_up`);
    every stage count of the budget then runs the same programs."""
    counts = stage_counts(budget)
    return coefficients(counts[0], max(counts))


def step_sizes(rhos: np.ndarray, stages: int) -> np.ndarray:
    r"""$\tau = \beta(s)/\rho$ for the spectral radius bounds `rhos` ($\rho = L\nu^2$ =
    `rkc_spectral_radius(op, flux)` $= 2/\tau_{\rm lim}$), each lowered by ulps until the computed
    $\tau\rho$ is at most $\beta(s)$, so that the step-count rule `rkc_stages_for(tau * rho)`
    chooses `stages` (it would choose $s + 1$ when the product rounds above $\beta(s)$)."""
    beta = rkc_stability_bound(stages)
    rhos = np.asarray(rhos, np.float64)
    taus = beta / rhos
    while np.any(above := taus * rhos > beta):
        taus = np.where(above, np.nextafter(taus, 0.0), taus)
    return taus


def _tolerance(scheme: RKCScheme, z: float | None = None) -> Tolerance:
    r"""Rounding tolerance of one step (`proofs/rkc-stability.md`, Step 7): with the internal
    bound $G = \max_{j \le s}\max|R_j|$, $z = \tau L\nu^2$ and $e_F$ = `block_error` (the error
    of $\tau F(v)$ relative to $\|v\|$), stage $j$ errs by at most
    $e_j = 6\mathbf{u}S_j + (|\tilde\mu_j|G + |\tilde\gamma_j|)e_F$ in units of $\|u\|$, where
    $S_j = |\kappa_j| + (|\mu_j| + |\nu_j| + |\tilde\mu_j|z)G + |\tilde\gamma_j|z$ bounds its five terms
    (each coefficient correctly rounded, one product, four sums). The amplification $A$ of
    `rkc_rounding_amplification` carries them to the end; the computed $z$ may exceed $\beta(s)$
    by $\delta\beta(s)$, $\delta$ = `BOUNDARY_ROUNDOFFS` $\mathbf{u}$, which moves $|R_s|$ by at most
    $4s^2x_s\delta$. `z` defaults to `scheme.tau * scheme.spectral_radius()`."""
    stages = scheme.stages
    block = scheme.block
    u = unit_roundoff(np.float64)
    amplification, internal = rkc_rounding_amplification(stages, order=scheme.order, damping=scheme.damping)
    rows = np.abs(np.asarray(rkc_coefficients(stages, order=scheme.order, damping=scheme.damping)))
    kappa, mu, nu, mu_t, gamma_t = rows
    if z is None:
        z = float(block.tau) * float(scheme.spectral_radius())
    e_f = block_error(block, np.float64)
    terms = kappa + (mu + nu + mu_t * z) * internal + gamma_t * z
    step = float(np.max(6 * u * terms + (mu_t * internal + gamma_t) * e_f))
    base = cycle_ratio_tolerance(block, np.float64, amplification, step)
    x = rkc_parameters(stages, order=scheme.order, damping=scheme.damping)["x"]
    boundary = 4 * stages**2 * x * BOUNDARY_ROUNDOFFS * u
    derivation = f"{base.derivation} + 4 s^2 x_s delta = {boundary:.3g} (s = {stages}, G = {internal:.4g})"
    return Tolerance(base.value + boundary, derivation)


def _check(key, budget: Budget) -> Evidence:
    rng, named, ops, fluxes, _ = schemes.setting(key, budget, stable_step_size)
    counts = stage_counts(budget)
    rhos = np.array([[float(rkc_spectral_radius(op, f)) for f in fs] for op, fs in zip(ops, fluxes)])
    cases, searched, started, nonfinite, derivations = [], [], [], 0, []
    for s in counts:
        taus = step_sizes(rhos, s)
        measured, found = schemes.run(rng, ops, fluxes, taus, "rkc", budget, coefficients=coefficients(s, max(counts)))
        nonfinite += int(np.sum(found.nonfinite))
        for c, (op_name, op) in enumerate(named):
            for f, flux in enumerate(fluxes[c]):
                # Re-validates tau * rho <= beta(s); the rule must choose s at this tau.
                scheme = RKCScheme(op, flux, taus[c, f], stages=s)
                z = float(taus[c, f]) * float(rhos[c, f])
                rule = rkc_stages_for(z)
                if rule != s:
                    raise RuntimeError(f"the step-count rule chose {rule} stages, not {s}, for {op_name}.")
                tolerance = _tolerance(scheme, z)
                searched.append(float(found.worst[c, f]))
                started.append(float(found.sampled[c, f]))
                worst = max(float(np.max(measured.ratio[c, f])), float(found.worst[c, f]))
                name = f"{op_name} {type(flux).__name__} s={s}"
                samples = budget.samples + budget.restarts
                cases.append(CaseResult(name, samples, worst, 1.0, tolerance.value, bool(worst <= 1 + tolerance.value)))
                derivations.append(tolerance)

    def largest_on_interval(s):
        z = np.linspace(-rkc_stability_bound(s), 0, 100001)
        return np.abs(rkc_polynomial(z, s)).max()

    hypotheses = {
        "scheme": (
            f"second-order RKC (damping 2/13), s in {counts} stages padded to {max(counts)}, "
            "diffusivity evaluated once per step"
        ),
        "step size": (
            "tau = fraction * beta(s) / (L * op.norm_bound()**2), fraction log-uniform in [0.05, 1], 1 in every "
            "fourth sample; at fraction 1 the step-count rule rkc_stages_for(tau L nu^2) chooses s (checked per case)"
        ),
        "stability bound": ", ".join(
            f"beta({s}) = {rkc_stability_bound(s):.12g} = {rkc_stability_bound(s) / s**2:.4f} s^2" for s in counts
        ),
        "stability polynomial": (
            "max |R_s| on [-beta(s), 0] (grid of 10^5 points): "
            + ", ".join(f"s={s}: {largest_on_interval(s):.15g}" for s in counts)
            + "; internal stages max_j max|R_j|: "
            + ", ".join(f"s={s}: {rkc_rounding_amplification(s)[1]:.4g}" for s in counts)
        ),
        "cost": ", ".join(
            f"s={s}: tau = {rkc_stability_bound(s) / 2:.4g} tau_lim for {s} evaluations "
            f"({rkc_stability_bound(s) / (2 * s):.3g} tau_lim each)"
            for s in counts
        ),
        "depth": f"{budget.depth} steps per sample; worst = largest one-step ratio ||u^(k+1)|| / ||u^k||",
        "operators": "derivatives of orders 1-3 and random stencils (1 and 3 channels), all boundaries, as dense matrices",
    }
    loosest = max(derivations, key=lambda t: t.value)
    falsifier = FalsifierOutcome(
        objective="one-step gain ||v|| / ||u|| of the frozen RKC step at tau = beta(s) / (L nu^2)",
        restarts=budget.restarts, steps=budget.steps, worst=max(searched), sampled=max(started),
        nonfinite=nonfinite, found=any(not case.passed for case in cases),
    )
    return Evidence(tuple(cases), 1.0, "<=", loosest.derivation, hypotheses, falsifier)


RKC_STABILITY = Claim(
    "rkc-stability",
    "With the diffusivity frozen per step, the s-stage Runge-Kutta-Chebyshev step (second order, damping "
    "2/13) is Euclidean stable, ||u^(k+1)|| <= ||u^k||, for 0 < tau <= beta(s)/(L ||K||^2), every linear K and "
    "every sector-bounded flux; so is the step with s chosen by the step-count rule (the fewest stages with "
    "beta(s) >= tau L ||K||^2) for every tau > 0 (the step is R_s(-tau K^T G K) with |R_s| <= 1 on [-beta(s), 0]).",
    _check,
)
