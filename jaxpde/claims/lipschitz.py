"""Claims about the Lipschitz constant of the diffusion block (not its Euclidean gain)."""

import dataclasses

import numpy as np

from ..blocks import DiffusionBlock, stable_step_size
from ..fluxes import FLUXES
from ..verify.certificate import CaseResult, FalsifierOutcome
from ..verify.lipschitz import block_lipschitz_bound
from ..verify.tolerance import block_error, gamma
from . import adversarial, sampling
from .registry import Budget, Claim, Evidence

NONMONOTONE = ("PeronaMalik", "ExponentialPeronaMalik", "Weickert")
# The least search effort for the existence claim `stable-not-nonexpansive`.
MIN_RESTARTS, MIN_STEPS = 32, 50


def _lipschitz_search(key, budget: Budget):
    """Random pairs and the falsifier at tau = fraction * 2 / (L ||K||^2), once with
    fraction 1 and once with fractions drawn from (0.05, 1], for every operator case
    and flux. Returns the cases, fluxes, step sizes, quotients and tolerances."""
    rng = sampling.numpy_rng(key)
    named = sampling.operator_cases(rng, budget.sizes)
    ops = [op for _, op in named]
    fluxes = [sampling.random_fluxes(rng) for _ in ops]
    stable = np.array([[float(stable_step_size(op, f)) for f in fs] for op, fs in zip(ops, fluxes)])
    results = []
    for fractions in (np.ones_like(stable), rng.uniform(0.05, 1.0, stable.shape)):
        found = adversarial.attack_operators(rng, ops, fluxes, stable * fractions, "lipschitz", budget)
        results.append((stable * fractions, found))
    return named, fluxes, results


def _quotient_tolerance(block: DiffusionBlock) -> float:
    """Rounding of $\\|f(u) - f(v)\\| / \\|u - v\\|$: each block evaluation errs by
    $e \\|u\\|$ and $\\|u\\| + \\|v\\| \\le (2/\\rho + 1)\\|u - v\\|$ for $\\|u - v\\| \\ge \\rho\\|u\\|$."""
    rho = adversarial.DISTANCES[0]
    entries = int(np.prod(block.op.in_shape))
    return block_error(block, np.float64) * (2 / rho + 1) + 2 * gamma(entries + 1, np.float64)


def _outcome(budget: Budget, worst: float, sampled: float, nonfinite: int, found: bool, pairs: int) -> FalsifierOutcome:
    return FalsifierOutcome(
        objective=adversarial.OBJECTIVES["lipschitz"], restarts=pairs,
        steps=budget.steps, worst=worst, sampled=sampled, nonfinite=nonfinite, found=found,
    )


def _check_bound(key, budget: Budget) -> Evidence:
    named, fluxes, results = _lipschitz_search(key, budget)
    cases, tolerances, bounds = [], [], {}
    sampled_worst, nonfinite = -np.inf, 0
    for c, (op_name, op) in enumerate(named):
        for f, flux in enumerate(fluxes[c]):
            ratios, tolerance = [], 0.0
            for taus, found in results:
                block = DiffusionBlock(op, flux, taus[c, f])  # re-validates tau
                bound = float(block_lipschitz_bound(block))
                tolerance = max(tolerance, _quotient_tolerance(block) / bound)
                ratios.append(float(found.worst[c, f]) / bound)
                sampled_worst = max(sampled_worst, float(found.sampled[c, f]) / bound)
                nonfinite += int(found.nonfinite[c, f])
                if taus is results[0][0]:
                    bounds.setdefault(type(flux).__name__, []).append(bound)
            worst = max(ratios)
            name = f"{op_name} {type(flux).__name__}"
            pairs = len(results) * budget.restarts
            cases.append(CaseResult(name, pairs, worst, 1.0, tolerance, worst <= 1 + tolerance))
            tolerances.append(tolerance)
    worst = max(case.worst for case in cases)
    summary = "; ".join(f"{k}: {min(v):.4g}..{max(v):.4g}" for k, v in bounds.items())
    hypotheses = {
        "derivative range": "a <= Phi' <= b from flux.derivative_range() (analytic; tested on a fine grid)",
        "bound": "Lip(f) <= max(|1 - tau b nu^2|, 1 - tau min(a, 0) nu^2), nu = op.norm_bound(); worst = quotient / bound",
        "bounds at tau = 2/(L nu^2)": summary + " (monotone fluxes: exactly 1, non-expansive)",
        "pairs": (
            f"{budget.restarts} random pairs per case and step size (radii over three decades around "
            f"lambda/||K||, distances {adversarial.DISTANCES[0]:g}..{adversarial.DISTANCES[1]:g} x radius), "
            f"each followed by {budget.steps} Adam steps"
        ),
    }
    falsifier = _outcome(budget, worst, sampled_worst, nonfinite, worst > 1 + max(tolerances), len(results) * budget.restarts)
    derivation = "e_block * (2/rho + 1) + 2 gamma_(N+1), rho = smallest relative distance of a pair; divided by the bound"
    return Evidence(tuple(cases), 1.0, "<=", derivation, hypotheses, falsifier)


def _check_not_nonexpansive(key, budget: Budget) -> Evidence:
    # An existence claim: the search needs enough effort to find the witness in every
    # case, whatever the budget (a smaller search could only fail to find it).
    budget = dataclasses.replace(
        budget, restarts=max(budget.restarts, MIN_RESTARTS), steps=max(budget.steps, MIN_STEPS)
    )
    named, fluxes, results = _lipschitz_search(key, budget)
    taus, found = results[0]  # tau = 2 / (L nu^2): the Euclidean-stable step
    cases, tolerances, sampled = [], [], []
    for c, (op_name, op) in enumerate(named):
        for f, flux in enumerate(fluxes[c]):
            if type(flux).__name__ not in NONMONOTONE:
                continue
            sampled.append(float(found.sampled[c, f]))
            block = DiffusionBlock(op, flux, taus[c, f])  # Euclidean stable by construction
            tolerance = _quotient_tolerance(block)
            worst = float(found.worst[c, f])
            name = f"{op_name} {type(flux).__name__}"
            cases.append(CaseResult(name, budget.restarts, worst, 1.0, tolerance, worst > 1 + tolerance))
            tolerances.append(tolerance)
    lows = {k.__name__: float(k().derivative_range()[0]) for k in FLUXES if k.__name__ in NONMONOTONE}
    hypotheses = {
        "step size": "tau = 2 / (L nu^2), the Euclidean stability bound (explicit-stability holds there)",
        "non-monotone": "min Phi' < 0: " + ", ".join(f"{k}: {v:.4g}" for k, v in lows.items()),
        "witness": "a pair (u, v) found by the falsifier with ||f(u) - f(v)|| > ||u - v||, in every case",
    }
    worst = min(case.worst for case in cases)
    every_case = all(case.passed for case in cases)
    falsifier = _outcome(budget, worst, min(sampled), int(np.sum(found.nonfinite)), every_case, budget.restarts)
    derivation = "e_block * (2/rho + 1) + 2 gamma_(N+1), rho = smallest relative distance of a pair"
    return Evidence(tuple(cases), 1.0, ">", derivation, hypotheses, falsifier)


BLOCK_LIPSCHITZ = Claim(
    "block-lipschitz",
    "If a <= Phi' <= b then Lip(u - tau K^T Phi(K u)) <= max(|1 - tau b ||K||^2|, 1 - tau min(a, 0) ||K||^2); "
    "for a monotone flux (a >= 0) and tau <= 2/(Lip(Phi) ||K||^2) the block is non-expansive.",
    _check_bound,
)

STABLE_NOT_NONEXPANSIVE = Claim(
    "stable-not-nonexpansive",
    "Euclidean stability is not non-expansiveness: for the non-monotone fluxes at the Euclidean-stable step "
    "tau = 2/(L ||K||^2) there are inputs u, v with ||f(u) - f(v)|| > ||u - v||.",
    _check_not_nonexpansive,
)
