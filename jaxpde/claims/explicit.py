"""Claims about the explicit step / diffusion block $u - \\tau K^\\top \\Phi(Ku)$."""

import numpy as np

from ..blocks import DiffusionBlock, stable_step_size
from ..fluxes import FLUXES, ExponentialPeronaMalik, Linear, PeronaMalik, Weickert
from ..verify.certificate import CaseResult, FalsifierOutcome
from ..verify.tolerance import norm_ratio_tolerance
from . import adversarial, sampling
from .registry import Budget, Claim, Evidence

NONMONOTONE_FLUXES = (PeronaMalik, ExponentialPeronaMalik, Weickert)
SHARPNESS_FACTOR = 1.01


def stability_evidence(key, budget: Budget, flux_kinds, decreasing_branch: bool, cases=sampling.operator_cases) -> Evidence:
    """Explicit steps at `tau` up to the stable step size, on the operators `cases(rng,
    sizes)`, for the fluxes of `flux_kinds`: sampled inputs and the falsifier."""
    rng = sampling.numpy_rng(key)
    named = cases(rng, budget.sizes)
    ops = [op for _, op in named]
    fluxes = [sampling.random_fluxes(rng) for _ in ops]
    measured = sampling.measure_cases(rng, ops, fluxes, budget.samples, budget.depth, sizes=budget.sizes)
    found, rechecked = adversarial.falsify_and_recheck(rng, ops, fluxes, measured, "gain", budget)
    cases, tolerances, shares, searched, started = [], [], [], [], []
    for c, (op_name, op) in enumerate(named):
        for index, flux in enumerate(fluxes[c]):
            if type(flux) not in flux_kinds:
                continue
            # Re-validated outside the compiled program: tau <= 2 / (L * norm_bound^2).
            block = DiffusionBlock(op, flux, measured[c].tau[index])
            tolerance = norm_ratio_tolerance(block, np.float64)
            adversarial_worst = max(float(found.worst[c, index]), float(np.max(rechecked[c].ratio[index])))
            searched.append(adversarial_worst)
            started.append(float(found.sampled[c, index]))
            worst = max(float(np.max(measured[c].ratio[index])), adversarial_worst)
            passed = worst <= 1 + tolerance.value
            name = f"{op_name} {type(flux).__name__}"
            if decreasing_branch:
                # Random samples and the falsifier's witnesses both count.
                share = float(np.mean(np.concatenate([
                    measured[c].decreasing_share[index], rechecked[c].decreasing_share[index]
                ])))
                shares.append(share)
                if share == 0:  # the claim would not have been exercised
                    passed, name = False, name + " (decreasing branch not reached)"
            cases.append(CaseResult(name, budget.samples + budget.restarts, worst, 1.0, tolerance.value, passed))
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
    falsifier = adversarial.outcome(
        "gain", budget, searched, started, int(np.sum(found.nonfinite)),
        found=any(not case.passed for case in cases),
    )
    return Evidence(tuple(cases), 1.0, "<=", loosest.derivation, hypotheses, falsifier)


def _check_stability(key, budget: Budget) -> Evidence:
    return stability_evidence(key, budget, FLUXES, decreasing_branch=False)


def _check_nonmonotone(key, budget: Budget) -> Evidence:
    return stability_evidence(key, budget, NONMONOTONE_FLUXES, decreasing_branch=True)


def _check_sharp(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    named = sampling.operator_cases(rng, budget.sizes)
    ops = [op for _, op in named]
    fluxes = [sampling.random_fluxes(rng) for _ in ops]
    linear = [type(f) for f in fluxes[0]].index(Linear)
    # tau = 1.01 x 2 / (L lower^2) >= 1.01 x the sharp bound, as lower <= ||K||.
    multipliers = np.where(np.arange(len(fluxes[0])) == linear, SHARPNESS_FACTOR, 1.0)
    lower_flags = np.arange(len(fluxes[0])) == linear
    measured = sampling.measure_cases(
        rng, ops, fluxes, budget.samples, budget.depth, sizes=budget.sizes,
        step_multipliers=[multipliers] * len(ops), use_lower_norm=[lower_flags] * len(ops), fraction_one_every=1,
    )
    found, rechecked = adversarial.falsify_and_recheck(
        rng, ops, fluxes, measured, "gain", budget,
        step_multipliers=[multipliers] * len(ops), use_lower_norm=[lower_flags] * len(ops),
    )
    cases, tolerances, overshoots, gaps, searched = [], [], [], [], []
    for c, (op_name, op) in enumerate(named):
        flux = fluxes[c][linear]
        tau = float(measured[c].tau[linear])
        overshoots.append(tau / float(stable_step_size(op, flux)))
        gaps.append(1 - float(measured[c].lower) / float(op.norm_bound()))
        block = DiffusionBlock(op, flux, tau, allow_unstable=True)
        tolerance = norm_ratio_tolerance(block, np.float64)
        rechecked_growth = float(np.max(rechecked[c].ratio[linear]))
        searched.append(rechecked_growth)
        worst = max(float(np.max(measured[c].ratio[linear])), rechecked_growth)
        passed = worst > 1 + tolerance.value
        cases.append(CaseResult(f"{op_name} Linear", budget.samples + budget.restarts, worst, 1.0, tolerance.value, passed))
        tolerances.append(tolerance)
    hypotheses = {
        "step size": (
            f"tau = {SHARPNESS_FACTOR} * 2 / (L * lower**2), lower = power-iteration bound of ||K|| "
            f"(relative gap to norm_bound() at most {max(gaps):.3g}); tau / stable_step_size in "
            f"[{min(overshoots):.4f}, {max(overshoots):.4f}]"
        ),
        "flux": "Linear(L), L log-uniform in [1/4, 4]",
        "worst": "the smallest, over cases, of the largest growth ||u^(k+1)|| / ||u^k|| found; must exceed 1",
        "falsifier alone": (
            f"growth of the search's witnesses (re-evaluated with the operators' code) in "
            f"[{min(searched):.6f}, {max(searched):.6f}] (growth in every case without the top-singular "
            "samples: see the falsifier line)"
        ),
    }
    loosest = max(tolerances, key=lambda t: t.value)
    every_case = all(g > 1 + t.value for g, t in zip(searched, tolerances))
    falsifier = FalsifierOutcome(
        objective="norm gain ||f(u)|| / ||u|| above the bound", restarts=budget.restarts, steps=budget.steps,
        worst=min(searched), sampled=float(np.min(found.sampled[:, linear])),
        nonfinite=int(np.sum(found.nonfinite)), found=every_case,
    )
    return Evidence(tuple(cases), 1.0, ">", loosest.derivation, hypotheses, falsifier)


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
