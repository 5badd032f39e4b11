"""Claims about implicit steps: unconditional stability of the fully implicit and the
semi-implicit step, and contraction of the fixed-point iteration (the recurrent block)."""

import numpy as np

from ..blocks import DiffusionBlock, stable_step_size
from ..operators import Matrix
from ..schemes.implicit import contraction_factor
from ..verify.certificate import CaseResult, FalsifierOutcome
from ..verify.tolerance import (
    Tolerance,
    block_error,
    gamma,
    norm_ratio_tolerance,
    unit_roundoff,
)
from . import adversarial, sampling, schemes
from .registry import Budget, Claim, Evidence

# Step sizes of the stability claims: up to this multiple of the explicit bound.
LARGEST_MULTIPLE = 1e4


def _tolerance(block: DiffusionBlock) -> Tolerance:
    """The computed residual $v - u + \\tau K^\\top\\Phi(Kv)$ errs like one block evaluation at
    this $\\tau$ plus its two additions: `norm_ratio_tolerance` $+ 4\\mathbf{u}$
    (`proofs/implicit-stability.md`)."""
    base = norm_ratio_tolerance(block, np.float64)
    extra = 4 * unit_roundoff(np.float64)
    return Tolerance(base.value + extra, base.derivation + f" + 4u = {base.value + extra:.3g}")


def stability_evidence(key, budget: Budget, kind: str, cases=sampling.operator_cases) -> Evidence:
    """Implicit or semi-implicit steps (`kind`) at `tau` from 1 to `LARGEST_MULTIPLE` times
    the explicit bound, on the operators `cases(rng, sizes)`: sampled inputs and the falsifier."""
    rng, named, ops, fluxes, taus = schemes.setting(
        key, budget, lambda op, f: LARGEST_MULTIPLE * stable_step_size(op, f), cases
    )
    measured, found = schemes.run(rng, ops, fluxes, taus, kind, budget, smallest_fraction=1 / LARGEST_MULTIPLE)
    cases, derivations = [], []
    for c, (op_name, op) in enumerate(named):
        for f, flux in enumerate(fluxes[c]):
            tolerance = _tolerance(DiffusionBlock(op, flux, taus[c, f], allow_unstable=True))
            worst = max(float(np.max(measured.ratio[c, f])), float(found.worst[c, f]))
            # The solve must reach its stated tolerance on every sample (the falsifier's
            # witness included): the ratio alone holds for any v with <Kv, Phi(Kv)> >= 0.
            excess = float(np.max(measured.excess[c, f]))
            converged = bool(excess <= 1)
            name = f"{op_name} {type(flux).__name__}" + ("" if converged else f" (residual {excess:.3g} x the tolerance)")
            passed = bool(worst <= 1 + tolerance.value and converged)
            cases.append(CaseResult(name, budget.samples + budget.restarts, worst, 1.0, tolerance.value, passed))
            derivations.append(tolerance)
    solver = (
        "a Cholesky solve of the assembled system (dense K; cholesky_solve, blocked)" if kind == "semi-implicit"
        else (
            f"jaxpde.claims.schemes.newton_or_lagged: the semi-implicit step, then {schemes.IMPLICIT_ITERATIONS} "
            "descent iterations on E (the least-energy of a lagged-diffusivity step and damped Newton steps, "
            "ties within rounding broken by the residual; Cholesky solves), the iterate of smallest residual; the "
            f"{measured.resolved} samples that missed the tolerance were solved again, with at most "
            f"{' then '.join(map(str, schemes.STRAGGLER_ITERATIONS))} iterations for those still missing it, "
            "stopping at half the tolerance (jaxpde.claims.schemes.resolve_stragglers)"
        )
    )
    hypotheses = {
        "step size": (
            f"tau = fraction * {LARGEST_MULTIPLE:g} * 2 / (L ||K||^2), fraction log-uniform in "
            f"[{1 / LARGEST_MULTIPLE:g}, 1]: from 1 to {LARGEST_MULTIPLE:g} times the explicit bound"
        ),
        "solver": solver,
        "worst": (
            f"largest ||v|| / (||u|| + ||r||) over {budget.depth} steps, r the computed residual of the "
            "equation solved (the proof gives ||v|| <= ||u|| + ||r||)"
        ),
        "residual": (
            "every sample and the falsifier's witness reach ||r|| <= rtol ||u||, rtol = 1000 eps (1 + tau L |||K|||^2) "
            "at the sample's tau (the solvers' stated tolerance, jaxpde.schemes.semi_implicit.default_rtol): "
            f"largest ||r|| / (rtol ||u||) = {float(np.max(measured.excess)):.3g}, largest ||r|| / ||u|| = "
            f"{float(np.max(measured.residual)):.3g}"
        ),
        "falsifier": (
            "implicit: evaluates the bound at the lagged-diffusivity iterate "
            f"{schemes.SEARCH_ITERATIONS} with its own residual (the bound holds for every v; this "
            "keeps the gradient cheap); semi-implicit: the solve itself, differentiated by the implicit "
            "function theorem (schemes.dense_semi_implicit_solve). The witness is then solved again as one "
            "more sample, so its residual is checked too"
        ),
        "operators": f"{len(named)} cases ({'; '.join(name for name, _ in named)}), as zero-padded dense matrices (schemes.run_groups)",
    }
    loosest = max(derivations, key=lambda t: t.value)
    falsifier = adversarial.outcome(
        "gain", budget, [float(x) for x in found.worst.ravel()], [float(x) for x in found.sampled.ravel()],
        int(np.sum(found.nonfinite)), found=any(not case.passed for case in cases),
    )
    falsifier = FalsifierOutcome(**{**falsifier.__dict__, "objective": "one-step gain ||v|| / (||u|| + ||r||)"})
    return Evidence(tuple(cases), 1.0, "<=", loosest.derivation, hypotheses, falsifier)


def _check_implicit(key, budget: Budget) -> Evidence:
    return stability_evidence(key, budget, "implicit")


def _check_semi_implicit(key, budget: Budget) -> Evidence:
    return stability_evidence(key, budget, "semi-implicit")


def _check_contraction(key, budget: Budget) -> Evidence:
    """The update $v \\mapsto -\\tau K^\\top\\Phi(Kv)$ is Lipschitz with constant at most
    $q = \\tau\\,\\mathrm{Lip}(\\Phi)\\|K\\|^2$ (pairs: random and the falsifier's), and the
    iteration reaches its tolerance within the predicted number of iterations."""

    def contracting(op, flux):
        return schemes.LARGEST_CONTRACTION / float(contraction_factor(op, flux, 1.0))

    rng, named, ops, fluxes, taus = schemes.setting(key, budget, contracting)
    quotients = adversarial.attack_operators(rng, ops, fluxes, taus, "update-lipschitz", budget)
    measured, _ = schemes.run(rng, ops, fluxes, taus, "implicit-fixed-point", budget, search=False)
    rtol = 1000 * float(np.finfo(np.float64).eps)
    cases, margins, started, conditions = [], [], [], []
    for c, (op_name, op) in enumerate(named):
        for f, flux in enumerate(fluxes[c]):
            block = DiffusionBlock(op, flux, taus[c, f], allow_unstable=True)
            q = float(contraction_factor(op, flux, taus[c, f]))
            # Rounding of a quotient of differences at distance >= rho ||u|| (as block-lipschitz).
            tolerance = block_error(block, np.float64) * (2 / adversarial.DISTANCES[0] + 1) / q + 2 * gamma(
                int(np.prod(op.in_shape)) + 1, np.float64
            )
            quotient = float(quotients.worst[c, f]) / q
            started.append(float(quotients.sampled[c, f]) / q)
            residual = float(np.max(measured.residual[c, f]))
            # The solver's stopping tolerance at this tau (an upper bound for the samples'
            # smaller steps): 1000 eps (1 + tau L |||K|||^2), with |||K||| of the dense matrix.
            condition = 1 + taus[c, f] * float(flux.sector_bound()) * float(Matrix(op.as_matrix()).abs_norm_bound()) ** 2
            converged = residual <= rtol * condition
            conditions.append(condition)
            margins.append(tolerance)
            name = f"{op_name} {type(flux).__name__}" + ("" if converged else " (not converged)")
            cases.append(CaseResult(name, budget.samples + budget.restarts, quotient, 1.0, tolerance, bool(quotient <= 1 + tolerance and converged)))
    hypotheses = {
        "step size": (
            f"tau = fraction * {schemes.LARGEST_CONTRACTION} / (Lip(Phi) ||K||^2), fraction log-uniform in [0.05, 1] "
            "(1 for the falsifier): q = tau Lip ||K||^2 <= " + f"{schemes.LARGEST_CONTRACTION}"
        ),
        "worst": "largest ||T(u) - T(w)|| / (q ||u - w||) over the falsifier's pairs, T(v) = u - tau K^T Phi(K v)",
        "convergence": (
            f"every sample reaches residual <= 1000 eps (1 + tau L |||K|||^2) ||u|| (the solver's default, "
            f"at most {rtol * max(conditions):.3g} ||u||) within "
            f"{schemes.FIXED_POINT_ITERATIONS} = ceil(log(1000 eps) / log({schemes.LARGEST_CONTRACTION})) iterations: "
            f"largest residual {float(np.max(measured.residual)):.3g} ||u||"
        ),
    }
    falsifier = FalsifierOutcome(
        objective="Lipschitz quotient of the fixed-point update / q", restarts=budget.restarts, steps=budget.steps,
        worst=max(case.worst for case in cases), sampled=max(started),
        nonfinite=int(np.sum(quotients.nonfinite)), found=any(not case.passed for case in cases),
    )
    derivation = "e_block * (2/rho + 1) / q + 2 gamma_(N+1) (rounding of a difference quotient, rho = 1e-3)"
    return Evidence(tuple(cases), 1.0, "<=", derivation + f"; largest {max(margins):.3g}", hypotheses, falsifier)


IMPLICIT_STABILITY = Claim(
    "implicit-stability",
    "Every solution of the implicit step v = u - tau K^T Phi(K v) satisfies ||v|| <= ||u|| for every "
    f"tau > 0 (checked up to {LARGEST_MULTIPLE:g} x 2/(L ||K||^2)) and every flux with Phi(s) s >= 0.",
    _check_implicit,
)

SEMI_IMPLICIT_STABILITY = Claim(
    "semi-implicit-stability",
    "The semi-implicit step (I + tau K^T G(u) K) v = u is Euclidean stable, ||v|| <= ||u||, for every "
    f"tau > 0 (checked up to {LARGEST_MULTIPLE:g} x 2/(L ||K||^2)).",
    _check_semi_implicit,
)

FIXED_POINT_CONTRACTION = Claim(
    "fixed-point-contraction",
    "If q = tau Lip(Phi) ||K||^2 < 1, the fixed-point iteration v <- u - tau K^T Phi(K v) (the recurrent "
    "block) is a contraction with factor q and converges to the implicit step.",
    _check_contraction,
)
