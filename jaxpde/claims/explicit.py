"""Claims about the explicit step / diffusion block $u - \\tau K^\\top \\Phi(Ku)$."""

import numpy as np

from ..blocks import DiffusionBlock, stable_step_size
from ..fluxes import FLUXES, ExponentialPeronaMalik, Linear, PeronaMalik, Weickert
from ..verify.certificate import CaseResult
from ..verify.tolerance import norm_ratio_tolerance
from . import sampling
from .registry import Budget, Claim, Evidence

NONMONOTONE_FLUXES = (PeronaMalik, ExponentialPeronaMalik, Weickert)
SHARPNESS_FACTOR = 1.01


def _stability_evidence(key, budget: Budget, flux_kinds, decreasing_branch: bool) -> Evidence:
    rng = sampling.numpy_rng(key)
    cases, tolerances, shares = [], [], []
    for op_name, op in sampling.operator_cases(rng, budget.sizes):
        fluxes = sampling.random_fluxes(rng)
        measured = sampling.measure(rng, op, fluxes, budget.samples, budget.depth)
        for index, flux in enumerate(fluxes):
            if type(flux) not in flux_kinds:
                continue
            # Re-validated outside the compiled program: tau <= 2 / (L * norm_bound^2).
            block = DiffusionBlock(op, flux, measured.tau[index])
            tolerance = norm_ratio_tolerance(block, np.float64)
            worst = float(np.max(measured.ratio[index]))
            passed = worst <= 1 + tolerance.value
            name = f"{op_name} {type(flux).__name__}"
            if decreasing_branch:
                share = float(np.mean(measured.decreasing_share[index]))
                shares.append(share)
                if share == 0:  # the claim would not have been exercised
                    passed, name = False, name + " (decreasing branch not reached)"
            cases.append(CaseResult(name, budget.samples, worst, 1.0, tolerance.value, passed))
            tolerances.append(tolerance)
    hypotheses = {
        "sector condition": "0 <= Phi(s)/s <= L, L = flux.sector_bound() (analytic; tested numerically)",
        "step size": "tau = fraction * 2 / (L * op.norm_bound()**2), fraction in (0.05, 1], 1 in every fourth sample",
        "depth": f"{budget.depth} steps per sample; worst = largest one-step ratio ||u^(k+1)|| / ||u^k||",
        "inputs": ", ".join(sampling.SIGNAL_KINDS) + "; amplitudes over three decades around lambda / ||K||",
    }
    if decreasing_branch:
        minima = "; ".join(f"{k.__name__}: {float(k().derivative_range()[0]):.4g}" for k in flux_kinds)
        hypotheses["non-monotone"] = f"min Phi' < 0: {minima}"
        hypotheses["decreasing branch reached"] = (
            f"mean share of entries of K u^k with Phi'(K u^k) < 0 per case: min {min(shares):.3g}, max {max(shares):.3g}"
        )
    loosest = max(tolerances, key=lambda t: t.value)
    return Evidence(tuple(cases), 1.0, "<=", loosest.derivation, hypotheses)


def _check_stability(key, budget: Budget) -> Evidence:
    return _stability_evidence(key, budget, FLUXES, decreasing_branch=False)


def _check_nonmonotone(key, budget: Budget) -> Evidence:
    return _stability_evidence(key, budget, NONMONOTONE_FLUXES, decreasing_branch=True)


def _check_sharp(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    cases, tolerances, overshoots, gaps = [], [], [], []
    for op_name, op in sampling.operator_cases(rng, budget.sizes):
        fluxes = sampling.random_fluxes(rng)
        linear = [type(f) for f in fluxes].index(Linear)
        # tau = 1.01 x 2 / (L lower^2) >= 1.01 x the sharp bound, as lower <= ||K||.
        multipliers = np.where(np.arange(len(fluxes)) == linear, SHARPNESS_FACTOR, 1.0)
        measured = sampling.measure(
            rng, op, fluxes, budget.samples, budget.depth,
            step_multipliers=multipliers, use_lower_norm=np.arange(len(fluxes)) == linear,
            fraction_one_every=1,
        )
        flux = fluxes[linear]
        tau = float(measured.tau[linear])
        overshoots.append(tau / float(stable_step_size(op, flux)))
        gaps.append(1 - float(measured.lower) / float(op.norm_bound()))
        block = DiffusionBlock(op, flux, tau, allow_unstable=True)
        tolerance = norm_ratio_tolerance(block, np.float64)
        worst = float(np.max(measured.ratio[linear]))
        cases.append(CaseResult(f"{op_name} Linear", budget.samples, worst, 1.0, tolerance.value, worst > 1 + tolerance.value))
        tolerances.append(tolerance)
    hypotheses = {
        "step size": (
            f"tau = {SHARPNESS_FACTOR} * 2 / (L * lower**2), lower = power-iteration bound of ||K|| "
            f"(relative gap to norm_bound() at most {max(gaps):.3g}); tau / stable_step_size in "
            f"[{min(overshoots):.4f}, {max(overshoots):.4f}]"
        ),
        "flux": "Linear(L), L log-uniform in [1/4, 4]",
        "worst": "the smallest, over cases, of the largest growth ||u^(k+1)|| / ||u^k|| found; must exceed 1",
    }
    loosest = max(tolerances, key=lambda t: t.value)
    return Evidence(tuple(cases), 1.0, ">", loosest.derivation, hypotheses)


EXPLICIT_STABILITY = Claim(
    "explicit-stability",
    "If 0 <= Phi(s)/s <= L and 0 < tau <= 2/(L ||K||^2), then ||u - tau K^T Phi(K u)|| <= ||u|| "
    "for every linear K (derivatives of order 1-3, all boundaries, random stencils), every flux "
    "and every depth.",
    _check_stability,
)

EXPLICIT_STABILITY_SHARP = Claim(
    "explicit-stability-sharp",
    "The step-size bound is sharp: for tau = 1.01 x 2/(L ||K||^2) and the linear flux Phi(s) = L s "
    "some input grows, ||u - tau K^T Phi(K u)|| > ||u||.",
    _check_sharp,
)

NONMONOTONE_STABILITY = Claim(
    "nonmonotone-stability",
    "Euclidean stability does not need a monotone flux: the non-monotone Perona-Malik, exponential "
    "Perona-Malik and Weickert fluxes are stable for tau <= 2/(L ||K||^2), also on inputs that reach "
    "the decreasing branch Phi' < 0.",
    _check_nonmonotone,
)
