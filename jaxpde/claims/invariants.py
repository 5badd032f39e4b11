"""Claims about quantities the explicit scheme preserves: the mean and the range."""

import math

import numpy as np

from ..blocks import DiffusionBlock
from ..operators import Derivative
from ..verify.certificate import CaseResult
from ..verify.tolerance import entrywise_tolerance, mean_tolerance
from . import sampling
from .registry import Budget, Claim, Evidence

CONSERVATIVE_BOUNDARIES = ("neumann", "periodic")


def _cases(op_name, op, fluxes, measured, values, tolerance_of, budget: Budget):
    """One case per flux: the worst of `values[flux]` against 0, within the tolerance
    `tolerance_of(block, float64, depth)` of the block at the step size used."""
    cases, tolerances = [], []
    for index, flux in enumerate(fluxes):
        block = DiffusionBlock(op, flux, measured.tau[index])  # re-validates tau
        tolerance = tolerance_of(block, np.float64, budget.depth)
        worst = float(np.max(values[index]))
        name = f"{op_name} {type(flux).__name__}"
        cases.append(CaseResult(name, budget.samples, worst, 0.0, tolerance.value, worst <= tolerance.value))
        tolerances.append(tolerance)
    return cases, tolerances


def _check_mass(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    cases, tolerances, kernel_sums = [], [], []
    for op_name, op in sampling.operator_cases(rng, budget.sizes, CONSERVATIVE_BOUNDARIES, zero_sum=True):
        kernel = op.stencil.kernel if isinstance(op, Derivative) else op.kernel
        # Hypothesis: K annihilates constants (each output channel's taps sum to zero).
        # math.fsum is exactly rounded: it returns 0 iff the taps sum to 0 exactly.
        taps = np.asarray(kernel).reshape(-1, np.shape(kernel)[-1])
        kernel_sums.append(max(abs(math.fsum(row)) for row in taps))
        fluxes = sampling.random_fluxes(rng)
        measured = sampling.measure(rng, op, fluxes, budget.samples, budget.depth)
        new_cases, new_tolerances = _cases(op_name, op, fluxes, measured, measured.mean_drift, mean_tolerance, budget)
        cases += new_cases
        tolerances += new_tolerances
    hypotheses = {
        "K annihilates constants": (
            f"max |exact sum of taps| = {max(kernel_sums):.3g} (derivatives; dyadic zero-sum random stencils)"
        ),
        "boundaries": "neumann and periodic (with dirichlet, mass leaves through the boundary)",
        "worst": f"max over {budget.depth} steps of |mean(u^k) - mean(u^0)| / max|u^0|",
    }
    loosest = max(tolerances, key=lambda t: t.value)
    return Evidence(tuple(cases), 0.0, "<=", loosest.derivation, hypotheses)


def _check_max_min(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    cases, tolerances, step_ratios = [], [], []
    for op_name, op in sampling.derivatives(rng, budget.sizes, orders=(1,)):
        fluxes = sampling.random_fluxes(rng)
        h = float(op.h)
        # tau = multiplier * 2 / (L * norm_bound^2) = h^2 / (2 L).
        multiplier = float(op.norm_bound()) ** 2 * h**2 / 4
        measured = sampling.measure(
            rng, op, fluxes, budget.samples, budget.depth, step_multipliers=[multiplier] * len(fluxes)
        )
        step_ratios += [float(t) * 2 * float(f.sector_bound()) / h**2 for t, f in zip(measured.tau, fluxes)]
        new_cases, new_tolerances = _cases(
            op_name, op, fluxes, measured, measured.range_excess, entrywise_tolerance, budget
        )
        cases += new_cases
        tolerances += new_tolerances
    hypotheses = {
        "operator": "D_1 with spacing h, all boundaries (dirichlet: the range includes the boundary value 0)",
        "step size": (
            f"tau = fraction * h^2 / (2 L), fraction in (0.05, 1]; largest tau * 2L / h^2 = {max(step_ratios):.15g}"
        ),
        "worst": f"max over {budget.depth} steps of the excess of u^k over [min u^0, max u^0], relative to max|u^0|",
    }
    loosest = max(tolerances, key=lambda t: t.value)
    return Evidence(tuple(cases), 0.0, "<=", loosest.derivation, hypotheses)


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
