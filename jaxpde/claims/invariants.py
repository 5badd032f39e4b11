"""Claims about quantities the explicit scheme preserves: the mean and the range."""

import math

import numpy as np

from ..blocks import DiffusionBlock
from ..operators import Derivative
from ..verify.certificate import CaseResult
from ..verify.tolerance import entrywise_tolerance, mean_tolerance
from . import adversarial, sampling
from .registry import Budget, Claim, Evidence

CONSERVATIVE_BOUNDARIES = ("neumann", "periodic")


def _cases(named, fluxes, measured, found, rechecked, field: str, tolerance_of, budget: Budget):
    """One case per operator and flux: the worst of the random samples' `field`, the
    falsifier's value and its witness re-evaluated, against 0 within the tolerance
    `tolerance_of(block, float64, depth)` of the block at the step size used."""
    cases, tolerances, searched, started = [], [], [], []
    for c, (op_name, op) in enumerate(named):
        for index, flux in enumerate(fluxes[c]):
            block = DiffusionBlock(op, flux, measured[c].tau[index])  # re-validates tau
            tolerance = tolerance_of(block, np.float64, budget.depth)
            adversarial_worst = max(
                float(found.worst[c, index]), float(np.max(getattr(rechecked[c], field)[index]))
            )
            searched.append(adversarial_worst)
            started.append(float(found.sampled[c, index]))
            worst = max(float(np.max(getattr(measured[c], field)[index])), adversarial_worst)
            name = f"{op_name} {type(flux).__name__}"
            samples = budget.samples + budget.restarts
            cases.append(CaseResult(name, samples, worst, 0.0, tolerance.value, worst <= tolerance.value))
            tolerances.append(tolerance)
    return cases, tolerances, searched, started


def _falsifier(objective: str, budget: Budget, found, cases, searched, started):
    return adversarial.outcome(
        objective, budget, searched, started, int(np.sum(found.nonfinite)),
        found=any(not case.passed for case in cases),
    )


def _check_mass(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    named = sampling.operator_cases(rng, budget.sizes, CONSERVATIVE_BOUNDARIES, zero_sum=True)
    kernel_sums = []
    for _, op in named:
        kernel = op.stencil.kernel if isinstance(op, Derivative) else op.kernel
        # Hypothesis: K annihilates constants (each output channel's taps sum to zero).
        # math.fsum is exactly rounded: it returns 0 iff the taps sum to 0 exactly.
        taps = np.asarray(kernel).reshape(-1, np.shape(kernel)[-1])
        kernel_sums.append(max(abs(math.fsum(row)) for row in taps))
    ops = [op for _, op in named]
    fluxes = [sampling.random_fluxes(rng) for _ in ops]
    measured = sampling.measure_cases(rng, ops, fluxes, budget.samples, budget.depth, sizes=budget.sizes)
    found, rechecked = adversarial.falsify_and_recheck(rng, ops, fluxes, measured, "mass", budget)
    cases, tolerances, searched, started = _cases(
        named, fluxes, measured, found, rechecked, "mean_drift", mean_tolerance, budget
    )
    hypotheses = {
        "K annihilates constants": (
            f"max |exact sum of taps| = {max(kernel_sums):.3g} (derivatives; dyadic zero-sum random stencils)"
        ),
        "boundaries": "neumann and periodic (with dirichlet, mass leaves through the boundary)",
        "worst": f"max over {budget.depth} steps of |mean(u^k) - mean(u^0)| / max|u^0|",
    }
    loosest = max(tolerances, key=lambda t: t.value)
    falsifier = _falsifier("mass", budget, found, cases, searched, started)
    return Evidence(tuple(cases), 0.0, "<=", loosest.derivation, hypotheses, falsifier)


def _check_max_min(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    named, fluxes, multipliers, measured = sampling.first_differences_at_the_convex_step(rng, budget)
    ops = [op for _, op in named]
    step_ratios = [
        float(t) * 2 * float(f.sector_bound()) / float(op.h) ** 2
        for op, fs, m in zip(ops, fluxes, measured)
        for t, f in zip(m.tau, fs)
    ]
    found, rechecked = adversarial.falsify_and_recheck(
        rng, ops, fluxes, measured, "range", budget, step_multipliers=multipliers
    )
    cases, tolerances, searched, started = _cases(
        named, fluxes, measured, found, rechecked, "range_excess", entrywise_tolerance, budget
    )
    hypotheses = {
        "operator": "D_1 with spacing h, all boundaries (dirichlet: the range includes the boundary value 0)",
        "step size": (
            f"tau = fraction * h^2 / (2 L), fraction in (0.05, 1]; largest tau * 2L / h^2 = {max(step_ratios):.15g}"
        ),
        "worst": f"max over {budget.depth} steps of the excess of u^k over [min u^0, max u^0], relative to max|u^0|",
    }
    loosest = max(tolerances, key=lambda t: t.value)
    falsifier = _falsifier("range", budget, found, cases, searched, started)
    return Evidence(tuple(cases), 0.0, "<=", loosest.derivation, hypotheses, falsifier)


MASS_CONSERVATION = Claim(
    "mass-conservation",
    "For neumann and periodic boundaries (K annihilates constants) the explicit scheme preserves "
    "the mean: mean(u - tau K^T Phi(K u)) = mean(u), for every flux, step size and depth.",
    _check_mass,
)

MAX_MIN_PRINCIPLE = Claim(
    "max-min-principle",
    "For m = 1 and 0 < tau <= h^2/(2L) each explicit step is a convex combination of neighbouring "
    "values: min u^0 <= u^k <= max u^0 for every sector-bounded flux (monotone or not) and depth.",
    _check_max_min,
)
