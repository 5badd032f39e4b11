"""Claims about FSI and FED cycles: stability with the diffusivity frozen per cycle,
sharpness of the step-size bound, and what happens without freezing."""

import numpy as np

from ..blocks import DiffusionBlock, stable_step_size
from ..fluxes import Linear, Weickert
from ..schemes.cycle import cycle_polynomial, unstable_cycle_length
from ..schemes.fed import fed_step_sizes, rounding_amplification
from ..schemes.fsi import fsi_rounding_amplification, fsi_weights
from ..verify.certificate import CaseResult, FalsifierOutcome
from ..verify.tolerance import block_error, cycle_ratio_tolerance, unit_roundoff
from . import schemes
from .registry import Budget, Claim, Evidence

CYCLE_LENGTHS = (3, 12)
SHARPNESS_FACTOR = 1.01
# x = tau L sigma^2 >= 2 * SHARPNESS_FACTOR above the bound: the shortest unstable cycle
# there, plus 2. Every cycle claim pads its coefficients to this length (identity steps),
# so that one compiled program serves FSI and FED of every length, frozen or not.
SHARP_LENGTH = unstable_cycle_length(2 * SHARPNESS_FACTOR) + 2


def coefficients(kind: str, cycle_length: int, *, frozen: bool = True):
    """`three_term_cycle` coefficients of an FSI or FED cycle, padded to `SHARP_LENGTH`."""
    if kind == "fsi":
        alphas = fsi_weights(cycle_length)
        betas = np.ones(cycle_length)
    else:
        betas = fed_step_sizes(1.0, cycle_length)
        alphas = np.ones(cycle_length)
    pad = SHARP_LENGTH - cycle_length
    return np.concatenate([alphas, np.ones(pad)]), np.concatenate([betas, np.zeros(pad)]), bool(frozen)


def _tolerance(kind: str, block: DiffusionBlock, cycle_length: int):
    """Rounding tolerance of one cycle (see `cycle_ratio_tolerance`). FSI: a step
    $a_k\\,{\\rm block}(u^k) + (1 - a_k)u^{k-1}$ errs by at most $2e_{\\rm block} + 9\\mathbf{u}$
    ($a_k < 2$, $|1 - a_k| < 1$); FED: step $i$ is a block with $\\tau_i = t_i\\tau_{\\max}$ and
    the product by $t_i$, error at most $\\max(t_i, 1)(e_{\\rm block} + \\mathbf{u})$."""
    error = block_error(block, np.float64)
    if kind == "fed":
        fractions = fed_step_sizes(1.0, cycle_length)
        step = max(fractions.max(), 1) * (error + unit_roundoff(np.float64))
        return cycle_ratio_tolerance(block, np.float64, rounding_amplification(fractions), step)
    step = 2 * error + 9 * unit_roundoff(np.float64)
    return cycle_ratio_tolerance(block, np.float64, fsi_rounding_amplification(cycle_length), step)


def _stability(key, budget: Budget, kind: str) -> Evidence:
    rng, named, ops, fluxes, taus = schemes.setting(key, budget, stable_step_size)
    cases, searched, started, nonfinite, derivations = [], [], [], 0, []
    for n in CYCLE_LENGTHS:
        measured, found = schemes.run(rng, ops, fluxes, taus, "cycle", budget, coefficients=coefficients(kind, n))
        nonfinite += int(np.sum(found.nonfinite))
        for c, (op_name, op) in enumerate(named):
            for f, flux in enumerate(fluxes[c]):
                block = DiffusionBlock(op, flux, taus[c, f])  # re-validates tau <= the bound
                tolerance = _tolerance(kind, block, n)
                searched.append(float(found.worst[c, f]))
                started.append(float(found.sampled[c, f]))
                worst = max(float(np.max(measured.ratio[c, f])), float(found.worst[c, f]))
                name = f"{op_name} {type(flux).__name__} n={n}"
                samples = budget.samples + budget.restarts
                cases.append(CaseResult(name, samples, worst, 1.0, tolerance.value, bool(worst <= 1 + tolerance.value)))
                derivations.append(tolerance)
    scheme = "FSI (frozen)" if kind == "fsi" else "FED (reordered)"
    hypotheses = {
        "scheme": f"{scheme} cycles of length {CYCLE_LENGTHS}, diffusivity evaluated once per cycle",
        "step size": "tau = fraction * 2 / (L * op.norm_bound()**2), fraction log-uniform in [0.05, 1], 1 in every fourth sample",
        "depth": f"{budget.depth} cycles per sample; worst = largest one-cycle ratio ||u^(m+1)|| / ||u^m||",
        "cycle polynomial": (
            "max |q_n| on [0, 2] (grid of 10^5 points): "
            + ", ".join(f"n={n}: {np.abs(cycle_polynomial(np.linspace(0, 2, 100001), n)).max():.15g}" for n in CYCLE_LENGTHS)
        ),
        "operators": "derivatives of orders 1-3 and random stencils (1 and 3 channels), all boundaries, as dense matrices",
    }
    loosest = max(derivations, key=lambda t: t.value)
    falsifier = FalsifierOutcome(
        objective=f"one-cycle gain ||v|| / ||u|| of the {scheme} cycle", restarts=budget.restarts, steps=budget.steps,
        worst=max(searched), sampled=max(started), nonfinite=nonfinite, found=any(not case.passed for case in cases),
    )
    return Evidence(tuple(cases), 1.0, "<=", loosest.derivation, hypotheses, falsifier)


def _check_fsi(key, budget: Budget) -> Evidence:
    return _stability(key, budget, "fsi")


def _check_fed(key, budget: Budget) -> Evidence:
    return _stability(key, budget, "fed")


def _lower_norm(op) -> float:
    """A lower bound of $\\|K\\|$: $\\|Kv\\|/\\|v\\|$ at the top right singular vector from
    NumPy's SVD, less a margin of $10^{-12}$ (relative) for the evaluation's rounding."""
    matrix = np.asarray(op.as_matrix(), np.float64)
    v = np.linalg.svd(matrix)[2][0]
    return float(np.linalg.norm(matrix @ v) / np.linalg.norm(v)) * (1 - 1e-12)


def _check_sharp(key, budget: Budget) -> Evidence:
    def overshoot(op, flux):
        return SHARPNESS_FACTOR * 2 / (float(flux.sector_bound()) * _lower_norm(op) ** 2)

    rng, named, ops, fluxes, taus = schemes.setting(key, budget, overshoot)
    linear = [type(f) for f in fluxes[0]].index(Linear)
    length = SHARP_LENGTH
    measured, found = schemes.run(rng, ops, fluxes, taus, "cycle", budget, coefficients=coefficients("fsi", length))
    cases, searched, ratios = [], [], []
    for c, (op_name, op) in enumerate(named):
        flux = fluxes[c][linear]
        ratios.append(taus[c, linear] / float(stable_step_size(op, flux)))
        block = DiffusionBlock(op, flux, taus[c, linear], allow_unstable=True)
        tolerance = _tolerance("fsi", block, length)
        searched.append(float(found.worst[c, linear]))
        worst = max(float(np.max(measured.ratio[c, linear])), searched[-1])
        samples = budget.samples + budget.restarts
        cases.append(CaseResult(f"{op_name} Linear n={length}", samples, worst, 1.0, tolerance.value, bool(worst > 1 + tolerance.value)))
    hypotheses = {
        "step size": (
            f"tau = {SHARPNESS_FACTOR} * 2 / (L * lower**2), lower = ||K v|| / ||v|| at NumPy's top singular "
            f"vector v; tau / stable_step_size in [{min(ratios):.4f}, {max(ratios):.4f}]"
        ),
        "cycle length": (
            f"n = {length}: the shortest cycle with |q_n(x)| > 1 at x = {2 * SHARPNESS_FACTOR} is "
            f"{length - 2}; |q_{length}({2 * SHARPNESS_FACTOR})| = {abs(float(cycle_polynomial(2 * SHARPNESS_FACTOR, length))):.6g} "
            "(short cycles stay stable just above the bound: sup_n |q_n(x)| = oo for every x > 2)"
        ),
        "worst": "the smallest, over cases, of the largest one-cycle growth found; must exceed 1",
    }
    falsifier = FalsifierOutcome(
        objective="one-cycle gain above the bound (linear flux)", restarts=budget.restarts, steps=budget.steps,
        worst=min(searched), sampled=float(np.min(found.sampled[:, linear])), nonfinite=int(np.sum(found.nonfinite)),
        found=all(case.passed for case in cases),
    )
    loosest = max(cases, key=lambda case: case.tolerance)
    return Evidence(tuple(cases), 1.0, ">", f"as fsi-stability; largest {loosest.tolerance:.3g}", hypotheses, falsifier)


def _check_unfrozen(key, budget: Budget) -> Evidence:
    rng, named, ops, fluxes, taus = schemes.setting(key, budget, stable_step_size)
    length = CYCLE_LENGTHS[-1]
    measured, found = schemes.run(
        rng, ops, fluxes, taus, "cycle", budget, coefficients=coefficients("fsi", length, frozen=False)
    )
    best = np.maximum(measured.ratio.max(axis=2), found.worst)  # (C, F)
    kinds = [type(f) for f in fluxes[0]]
    weickert = kinds.index(Weickert)
    c = int(np.argmax(best[:, weickert]))
    block = DiffusionBlock(ops[c], fluxes[c][weickert], taus[c, weickert])
    tolerance = _tolerance("fsi", block, length)
    worst = float(best[c, weickert])
    case = CaseResult(
        f"Weickert, best of {len(ops)} operators ({named[c][0]}) n={length}", len(ops) * (budget.samples + budget.restarts),
        worst, 1.0, tolerance.value, bool(worst > 1 + tolerance.value),
    )
    verdicts = {}
    for f, kind in enumerate(kinds):
        top = float(best[:, f].max())
        verdicts[kind.__name__] = f"{top:.6g} ({'counterexample' if top > 1 + tolerance.value else 'not refuted'})"
    hypotheses = {
        "scheme": f"FSI cycles of length {length} re-evaluating Phi at every step, tau = fraction * 2 / (L ||K||^2) <= the bound",
        "largest one-cycle gain found per flux (all operators)": "; ".join(f"{k}: {v}" for k, v in verdicts.items()),
        "verdict": "no proof covers unfrozen cycles; the falsifier refutes stability where it finds growth",
    }
    falsifier = FalsifierOutcome(
        objective="one-cycle gain of unfrozen FSI", restarts=budget.restarts, steps=budget.steps,
        worst=float(found.worst[:, weickert].max()), sampled=float(found.sampled[:, weickert].max()),
        nonfinite=int(np.sum(found.nonfinite)), found=case.passed,
    )
    return Evidence((case,), 1.0, ">", tolerance.derivation, hypotheses, falsifier)


FSI_STABILITY = Claim(
    "fsi-stability",
    "With the diffusivity frozen per cycle, an FSI cycle of any length n is Euclidean stable, "
    "||u^n|| <= ||u^0||, for 0 < tau <= 2/(L ||K||^2), every linear K and every sector-bounded flux "
    "(the cycle is q_n(tau K^T G K) with |q_n| <= 1 on [0, 2]).",
    _check_fsi,
)

FSI_STABILITY_SHARP = Claim(
    "fsi-stability-sharp",
    "The bound is sharp for FSI cycles: for tau = 1.01 x 2/(L ||K||^2) and the linear flux, a cycle "
    "long enough (|q_n(2.02)| > 1) makes some input grow.",
    _check_sharp,
)

FSI_UNFROZEN = Claim(
    "fsi-unfrozen",
    "Re-evaluating the flux at every step of an FSI cycle loses the guarantee: for Weickert's flux "
    "at tau <= 2/(L ||K||^2) there are inputs whose norm grows over one cycle (the falsifier's "
    "verdict for every flux is reported).",
    _check_unfrozen,
)

FED_STABILITY = Claim(
    "fed-stability",
    "With the diffusivity frozen per cycle, a FED cycle (reordered steps tau_i, half of them above the "
    "explicit limit) is Euclidean stable for tau_max <= 2/(L ||K||^2): prod (I - tau_i A) = q_n(tau_max A).",
    _check_fed,
)
