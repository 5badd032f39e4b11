"""Claims about Lyapunov functionals of the explicit step: the flux energy, the
variance and convex sums."""

import dataclasses
import math

import numpy as np

from ..blocks import DiffusionBlock
from ..fluxes import ExponentialPeronaMalik, PeronaMalik, Weickert
from ..operators import Derivative
from ..verify.certificate import CaseResult
from ..verify.tolerance import (
    convex_sum_increase_tolerance,
    energy_increase_tolerance,
    variance_increase_tolerance,
)
from . import adversarial, sampling
from .registry import Budget, Claim, Evidence

CONSERVATIVE_BOUNDARIES = ("neumann", "periodic")
NONMONOTONE_FLUXES = (PeronaMalik, ExponentialPeronaMalik, Weickert)
# Convex functions checked per boundary: with dirichlet boundaries only those minimal at 0.
CONVEX_FUNCTIONS_BY_BOUNDARY = {
    "neumann": sampling.CONVEX_FUNCTIONS,
    "periodic": sampling.CONVEX_FUNCTIONS,
    "dirichlet": ("square", "abs"),
}


def _case(name, budget: Budget, values, tolerance) -> CaseResult:
    worst = float(np.max(values))
    samples = budget.samples + budget.restarts
    return CaseResult(name, samples, worst, 0.0, tolerance.value, worst <= tolerance.value)


def _adversarial(found, rechecked, c, index, field: str, column=None):
    """The falsifier's value for case `c` and flux `index`, and its witness
    re-evaluated with the operator's own code (largest increase over the depth)."""
    again = getattr(rechecked[c], field)[index]
    if column is not None:
        again = again[..., column]
    return max(float(found.worst[c, index]), float(np.max(again)))


def _falsifier(objective: str, budget: Budget, found, searched, cases):
    return adversarial.outcome(
        objective, budget, searched, [float(np.max(found.sampled))], int(np.sum(found.nonfinite)),
        found=any(not case.passed for case in cases),
    )


def _check_energy_descent(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    cases, tolerances, step_ratios, reached, searched = [], [], [], {}, []
    constants = {}
    named = sampling.operator_cases(rng, budget.sizes)
    ops = [op for _, op in named]
    fluxes = [sampling.random_fluxes(rng) for _ in ops]
    # tau = fraction * 2 / (b * nu^2), b = sup Phi' (>= L, so the multiplier L / b <= 1).
    highs = [[float(f.derivative_range()[1]) for f in fs] for fs in fluxes]
    multipliers = [[float(f.sector_bound()) / b for f, b in zip(fs, hs)] for fs, hs in zip(fluxes, highs)]
    measured = sampling.measure_cases(
        rng, ops, fluxes, budget.samples, budget.depth, sizes=budget.sizes, step_multipliers=multipliers
    )
    found, rechecked = adversarial.falsify_and_recheck(
        rng, ops, fluxes, measured, "energy", budget, step_multipliers=multipliers
    )
    for c, (op_name, op) in enumerate(named):
        nu2 = float(op.norm_bound()) ** 2
        for index, flux in enumerate(fluxes[c]):
            block = DiffusionBlock(op, flux, measured[c].tau[index])  # re-validates tau <= 2/(L nu^2)
            step_ratios.append(float(measured[c].tau[index]) * highs[c][index] * nu2 / 2)
            tolerance = energy_increase_tolerance(block, np.float64)
            name = f"{op_name} {type(flux).__name__}"
            searched.append(_adversarial(found, rechecked, c, index, "energy_increase"))
            cases.append(_case(name, budget, [*measured[c].energy_increase[index].ravel(), searched[-1]], tolerance))
            tolerances.append(tolerance)
            kind = type(flux).__name__
            constants.setdefault(kind, (highs[c][index], float(flux.lipschitz())))
            if type(flux) in NONMONOTONE_FLUXES:
                reached.setdefault(kind, []).append(float(np.mean(measured[c].decreasing_share[index] > 0)))
    hypotheses = {
        "step size": (
            "tau = fraction * 2 / (b * op.norm_bound()**2), b = sup Phi' = derivative_range()[1] <= Lip(Phi), "
            f"fraction in (0.05, 1], 1 in every fourth sample; largest tau * b * nu^2 / 2 = {max(step_ratios):.15g}"
        ),
        "constants (b = sup Phi', Lip)": "; ".join(f"{k}: b = {b:.4g}, Lip = {lip:.4g}" for k, (b, lip) in constants.items()),
        "decreasing branch reached": "; ".join(
            f"{k}: {min(v):.2f}-{max(v):.2f} of samples per case reach Phi' < 0" for k, v in reached.items()
        ),
        "energy": "E(u) = sum Psi(K u), Psi = flux.potential (closed forms)",
        "worst": f"max over {budget.depth} steps of (E(u^(k+1)) - E(u^k)) / (L * A^2 * ||u^0||^2), A = op.abs_norm_bound()",
    }
    loosest = max(tolerances, key=lambda t: t.value)
    falsifier = _falsifier("energy", budget, found, searched, cases)
    return Evidence(tuple(cases), 0.0, "<=", loosest.derivation, hypotheses, falsifier)


def _check_lyapunov(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    cases, tolerances, kernel_sums, step_ratios = [], [], [], []
    # (i) The variance, for K annihilating constants, at tau <= 2 / (L ||K||^2).
    named = sampling.operator_cases(rng, budget.sizes, CONSERVATIVE_BOUNDARIES, zero_sum=True)
    ops = [op for _, op in named]
    for op in ops:
        kernel = op.stencil.kernel if isinstance(op, Derivative) else op.kernel
        taps = np.asarray(kernel).reshape(-1, np.shape(kernel)[-1])
        kernel_sums.append(max(abs(math.fsum(row)) for row in taps))
    fluxes = [sampling.random_fluxes(rng) for _ in ops]
    measured = sampling.measure_cases(rng, ops, fluxes, budget.samples, budget.depth, sizes=budget.sizes)
    found, rechecked = adversarial.falsify_and_recheck(rng, ops, fluxes, measured, "variance", budget)
    searched = []
    for c, (op_name, op) in enumerate(named):
        for index, flux in enumerate(fluxes[c]):
            block = DiffusionBlock(op, flux, measured[c].tau[index])
            tolerance = variance_increase_tolerance(block, np.float64)
            name = f"variance {op_name} {type(flux).__name__}"
            searched.append(_adversarial(found, rechecked, c, index, "variance_increase"))
            cases.append(_case(name, budget, [*measured[c].variance_increase[index].ravel(), searched[-1]], tolerance))
            tolerances.append(tolerance)
    variance_falsifier = _falsifier("variance", budget, found, searched, cases)
    # (ii) Convex sums, for D_1 at tau <= h^2 / (2L).
    named, fluxes, multipliers, measured = sampling.first_differences_at_the_convex_step(rng, budget)
    ops = [op for _, op in named]
    convex_masks = [
        [r in CONVEX_FUNCTIONS_BY_BOUNDARY[op.boundary] for r in sampling.CONVEX_FUNCTIONS] for op in ops
    ]
    found, rechecked = adversarial.falsify_and_recheck(
        rng, ops, fluxes, measured, "convex", budget, step_multipliers=multipliers, convex_masks=convex_masks
    )
    convex_cases, searched = [], []
    for c, (op_name, op) in enumerate(named):
        h = float(op.h)
        step_ratios += [float(t) * 2 * float(f.sector_bound()) / h**2 for t, f in zip(measured[c].tau, fluxes[c])]
        for index, flux in enumerate(fluxes[c]):
            block = DiffusionBlock(op, flux, measured[c].tau[index])
            tolerance = convex_sum_increase_tolerance(block, np.float64)
            for r_name in CONVEX_FUNCTIONS_BY_BOUNDARY[op.boundary]:
                column = sampling.CONVEX_FUNCTIONS.index(r_name)
                name = f"sum {r_name} {op_name} {type(flux).__name__}"
                again = _adversarial(found, rechecked, c, index, "convex_increase", column)
                searched.append(again)
                values = [*measured[c].convex_increase[index, :, column].ravel(), again]
                convex_cases.append(_case(name, budget, values, tolerance))
            tolerances.append(tolerance)
    cases += convex_cases
    convex_falsifier = _falsifier("convex", budget, found, searched, convex_cases)
    falsifier = dataclasses.replace(
        variance_falsifier,
        objective=f"{variance_falsifier.objective}; {convex_falsifier.objective}",
        worst=max(variance_falsifier.worst, convex_falsifier.worst),
        sampled=max(variance_falsifier.sampled, convex_falsifier.sampled),
        nonfinite=variance_falsifier.nonfinite + convex_falsifier.nonfinite,
        found=variance_falsifier.found or convex_falsifier.found,
    )
    hypotheses = {
        "variance: K annihilates constants": (
            f"derivatives of orders 1-3 and dyadic zero-sum stencils, neumann and periodic; "
            f"max |exact sum of taps| = {max(kernel_sums):.3g}; tau = fraction * 2 / (L * op.norm_bound()**2)"
        ),
        "convex sums: operator and step": (
            "D_1 with spacing h, all boundaries; tau = fraction * h^2 / (2L), "
            f"largest tau * 2L / h^2 = {max(step_ratios):.15g}"
        ),
        "convex functions": (
            "M = max|u^0|, a = min u^0: (x/M)^2, |x|/M, exp(x/M), y log y with y = 2 + (x - a)/M; "
            "dirichlet: only (x/M)^2 and |x|/M (convex with minimum at the boundary value 0)"
        ),
        "worst": (
            f"max over {budget.depth} steps of the one-step increase: variance / ||u^0||^2, "
            "sum r(u_i) / N (N entries)"
        ),
        "falsifier by part": (
            f"variance: worst {variance_falsifier.worst:.3g}; convex sums: worst {convex_falsifier.worst:.3g}"
        ),
    }
    loosest = max(tolerances, key=lambda t: t.value)
    return Evidence(tuple(cases), 0.0, "<=", loosest.derivation, hypotheses, falsifier)


ENERGY_DESCENT = Claim(
    "energy-descent",
    "The explicit step is gradient descent on E(u) = sum Psi(K u), Psi' = Phi: for every linear K "
    "(derivatives of order 1-3, all boundaries, random stencils), every flux and "
    "0 < tau <= 2/(b ||K||^2), b = sup Phi' <= Lip(Phi) (so in particular for tau <= 2/(Lip ||K||^2)), "
    "E(u^(k+1)) <= E(u^k) at every step, also for non-convex E (non-monotone fluxes).",
    _check_energy_descent,
)

LYAPUNOV_FUNCTIONALS = Claim(
    "lyapunov-functionals",
    "(i) If K annihilates constants and 0 < tau <= 2/(L ||K||^2), the variance ||u - mean(u)||^2 is "
    "non-increasing; (ii) for K = D_1 with spacing h and 0 < tau <= h^2/(2L), sum r(u_i) is non-increasing "
    "for every convex r (neumann, periodic), and for every convex r with minimum at 0 (dirichlet).",
    _check_lyapunov,
)
