"""Claims about FSI and FED cycles: stability with the diffusivity frozen per cycle,
sharpness of the step-size bound, what happens without freezing, and the rounding
errors of long FED cycles."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..blocks import DiffusionBlock, stable_step_size
from ..fluxes import Linear, PeronaMalik, Weickert
from ..operators import Derivative
from ..schemes.cycle import cycle_polynomial, three_term_cycle, unstable_cycle_length
from ..schemes.fed import (
    amplification_terms,
    fed_step_sizes,
    grid_factor,
    rounding_amplification,
)
from ..schemes.fsi import fsi_rounding_amplification, fsi_weights
from ..verify.certificate import CaseResult, FalsifierOutcome
from ..verify.tolerance import block_error, cycle_ratio_tolerance, gamma, unit_roundoff
from . import sampling, schemes
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


# --- fed-rounding: the rounding errors of long FED cycles ------------------------

ROUNDING_LONGEST = 500
# The lengths whose amplification the check bounds: every n <= 500 with the thorough
# budget; every n <= 100 and every 50th up to 500 otherwise (the cost grows like n^2).
ROUNDING_DENSE_LENGTHS = tuple(range(1, 101)) + tuple(range(150, ROUNDING_LONGEST + 1, 50))
# Lengths of the float32 cycles run against float64 (one program, padded to ROUNDING_LONGEST).
ROUNDING_ERROR_LENGTHS = (12, 100, 300, 500)
ROUNDING_SIZE = 64  # D_1 with neumann boundaries on 64 points, h = 1/64 (exact in binary)
ROUNDING_PER_ROOT = 16
# Relative error of the float64 evaluation of an amplification (a first-order estimate):
# a prefix or suffix is a sum of at most 500 logarithms whose absolute values add up to at
# most 1.2e3 (n = 500), so each exponent carries at most 500 * 1.2e3 * u ~ 6.5e-11.
AMPLIFICATION_EVALUATION = 1e-8
# sup_s |d g(s^2) / ds| of Perona-Malik, g(s^2) = 1 / (1 + s^2 / lambda^2), in units of 1 / lambda
# (attained at s = lambda / sqrt(3)).
PERONA_MALIK_SLOPE = 9 / (8 * math.sqrt(3))


def amplification_bound(cycle_length: int) -> float:
    """$2n^{3/2}$: the bound that `fed-rounding` states for the default order's
    `rounding_amplification` (true maxima, i.e. the grid's times `grid_factor` squared).
    Measured: at most $1.37n^{3/2}$ for every $n \\le 500$ (at $n = 41$), $0.86n^{3/2}$ at $n = 500$."""
    return 2.0 * cycle_length**1.5


def rounding_lengths(budget: Budget) -> tuple[int, ...]:
    """The cycle lengths whose amplification `fed-rounding` bounds under `budget`."""
    return tuple(range(1, ROUNDING_LONGEST + 1)) if budget.name == "thorough" else ROUNDING_DENSE_LENGTHS


@eqx.filter_jit
def fed_rounding_errors(op, u0, fractions, tau, lam):
    """One frozen Perona-Malik FED cycle per row of `u0` (exact float32 values, as
    float64), in float64 and in float32, with the step fractions of that row (padded with
    0: identity steps) and its $\\lambda$; one program for every cycle length up to the
    padded one. Returns both outputs as float64."""

    def both(u, t, lam):
        block = DiffusionBlock(op, PeronaMalik(lam), tau, allow_unstable=True)  # tau <= the bound: checked outside
        ones = jnp.ones_like(t)
        in64 = three_term_cycle(block, u, ones, t, True)
        in32 = three_term_cycle(block, u.astype(jnp.float32), ones, t, True)
        return in64, in32.astype(u.dtype)

    return jax.vmap(both)(u0, fractions, lam)


def _rounding_inputs(rng: np.random.Generator, count: int, matrix: np.ndarray):
    """`count` random inputs (the kinds of `sampling.base_signals`, the last kind replaced by
    the top eigenvector of $D^\\top D$ plus noise), amplitudes $10^{[-2, 2]}$, a random offset
    on every second one, rounded to float32; and $\\lambda$ = the median $|Du|$ times $10^{[-1, 1]}$."""
    n = matrix.shape[1]
    signals = sampling.base_signals(rng, count, n)
    top = np.arange(count) % len(sampling.SIGNAL_KINDS) == len(sampling.SIGNAL_KINDS) - 1
    mode = np.cos(np.pi * (n - 1) * (np.arange(n) + 0.5) / n)
    signals[top] += mode / np.sqrt(np.mean(mode * mode))
    signals *= 10.0 ** rng.uniform(-2, 2, (count, 1))
    offsets = rng.uniform(-3, 3, (count, 1)) * np.abs(signals).max(axis=1, keepdims=True)
    signals += np.where(np.arange(count)[:, None] % 2 == 1, offsets, 0.0)
    signals = signals.astype(np.float32).astype(np.float64)
    gradients = np.abs(signals @ matrix.T)
    scale = np.maximum(np.median(gradients, axis=1), 1e-3 * gradients.max(axis=1))
    return signals, scale * 10.0 ** rng.uniform(-1, 1, count)


def _search_inputs(rng: np.random.Generator, count: int, weighted_terms: np.ndarray, peaks: np.ndarray, tau: float, h: float):
    """The falsifier's inputs for one cycle: eigenvectors of $\\tau D^\\top D$ (neumann:
    $\\cos(\\pi k (j + 1/2)/N)$, eigenvalue $x_k = 4\\tau\\sin^2(\\pi k/(2N))/h^2$) at the points `peaks`
    where $|P_{i-1}|$ is largest, for the steps $i$ with the largest `weighted_terms` of the
    weighted amplification (an input there makes the state that step $i$ rounds as large as it
    can be); when there are fewer distinct modes than `count`, the same modes again plus noise.
    Used with $\\lambda = 100\\max|Du|$, which keeps $g$ within $10^{-4}$ of 1, so $A \\approx D^\\top D$."""
    n = ROUNDING_SIZE
    x = 4 * tau * np.sin(np.pi * np.arange(n) / (2 * n)) ** 2 / h**2
    modes = []
    for i in np.argsort(-weighted_terms):
        k = int(np.argmin(np.abs(x - peaks[i])))
        if k not in modes:
            modes.append(k)
        if len(modes) == count:
            break
    grid = np.arange(n) + 0.5
    signals = [np.cos(np.pi * modes[j % len(modes)] * grid / n) for j in range(count)]
    signals = np.stack(signals) * np.sqrt(2 / n)
    extra = np.arange(count) >= len(modes)
    signals[extra] += 0.1 * rng.standard_normal((int(extra.sum()), n)) / np.sqrt(n)
    return signals.astype(np.float32).astype(np.float64)


def _per_step_error(dtype, block: DiffusionBlock, abs_norm: float, offsets: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Per input: the bound $e_{\\rm block} + \\tau A^2 \\epsilon_G + 6\\mathbf{u}$ of one step's rounding
    error per unit of $\\max(t_i, 1)$ and of the state's norm (`proofs/fed-rounding.md`, Step 2),
    with $\\epsilon_G \\le 0.65\\,\\gamma_r \\max_i(|K||u^0|)_i / \\lambda$ the error of the frozen diffusivity
    from the rounding of $Ku^0$."""
    tau = float(block.tau)
    frozen = PERONA_MALIK_SLOPE * gamma(block.op.row_length, dtype) * offsets / lam
    return block_error(block, dtype) + tau * abs_norm**2 * frozen + 6 * unit_roundoff(dtype)


def _check_rounding(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    factor = grid_factor(ROUNDING_PER_ROOT) ** 2
    cases, ratios, terms, peaks = [], {}, {}, {}
    lengths = rounding_lengths(budget)
    for n in sorted(set(lengths) | set(ROUNDING_ERROR_LENGTHS)):
        terms[n], peaks[n] = amplification_terms(fed_step_sizes(1.0, n), per_root=ROUNDING_PER_ROOT)
    for n in lengths:
        ratios[n] = factor * float(np.sum(terms[n])) / amplification_bound(n)  # = rounding_amplification
    for low, high in ((1, 100), (101, 300), (301, ROUNDING_LONGEST)):
        group = [ratios[n] for n in lengths if low <= n <= high]
        worst = max(group)
        name = f"amplification / (2 n^1.5), n in [{low}, {high}] ({len(group)} lengths)"
        cases.append(CaseResult(name, len(group), worst, 1.0, AMPLIFICATION_EVALUATION, bool(worst <= 1 + AMPLIFICATION_EVALUATION)))

    # Float32 against float64: one program for every length (padded with identity steps).
    h = 1 / ROUNDING_SIZE
    op = Derivative(1, ROUNDING_SIZE, h=h)
    matrix = np.asarray(op.as_matrix(), np.float64)
    abs_norm = float(op.abs_norm_bound())
    tau = float(stable_step_size(op, PeronaMalik(1.0)))  # L = 1 for every lambda
    block = DiffusionBlock(op, PeronaMalik(1.0), tau)  # re-validates tau <= the bound
    samples, restarts = budget.samples, budget.restarts
    inputs, lams, rows, weighted, plain = [], [], [], {}, {}
    for n in ROUNDING_ERROR_LENGTHS:
        fractions = fed_step_sizes(1.0, n)
        weighted_terms = np.maximum(fractions, 1) * terms[n]
        weighted[n] = factor * float(np.sum(weighted_terms))
        plain[n] = factor * float(np.sum(terms[n])) * max(float(fractions.max()), 1.0)
        signals, lam = _rounding_inputs(rng, samples, matrix)
        searched = _search_inputs(rng, restarts, weighted_terms, peaks[n], tau, h)
        search_lam = np.maximum(100 * np.abs(searched @ matrix.T).max(axis=1), 1.0)  # constants: any lambda
        inputs += [signals, searched]
        lams += [lam, search_lam]
        padded = np.concatenate([fractions, np.zeros(ROUNDING_LONGEST - n)])
        rows += [np.broadcast_to(padded, (samples + restarts, ROUNDING_LONGEST))]
    u0, lam, fractions = np.concatenate(inputs), np.concatenate(lams), np.concatenate(rows)
    outputs = fed_rounding_errors(op, jnp.asarray(u0), jnp.asarray(fractions), jnp.asarray(tau), jnp.asarray(lam))
    in64, in32 = (np.asarray(v, np.float64) for v in outputs)
    offsets = (np.abs(u0) @ np.abs(matrix).T).max(axis=1)
    per_step32 = _per_step_error(np.float32, block, abs_norm, offsets, lam)
    per_step = per_step32 + _per_step_error(np.float64, block, abs_norm, offsets, lam)
    errors = np.linalg.norm(in32 - in64, axis=1)
    norms = np.linalg.norm(u0, axis=1)
    finite = np.all(np.isfinite(in32), axis=1) & np.all(np.isfinite(in64), axis=1)
    tolerance = 2 * gamma(ROUNDING_SIZE + 1, np.float64)
    sampled_worst, searched_worst, observed = 0.0, 0.0, {}
    for j, n in enumerate(ROUNDING_ERROR_LENGTHS):
        block_rows = slice(j * (samples + restarts), (j + 1) * (samples + restarts))
        bound = weighted[n] * per_step[block_rows] * norms[block_rows]
        ratio = np.where(finite[block_rows], errors[block_rows] / bound, np.inf)
        sampled_worst = max(sampled_worst, float(ratio[:samples].max()))
        searched_worst = max(searched_worst, float(ratio[samples:].max()))
        worst = float(ratio.max())
        observed[n] = float((errors[block_rows] / norms[block_rows]).max())
        name = f"float32 vs float64 error / (W e_step ||u0||), n={n}"
        cases.append(CaseResult(name, samples + restarts, worst, 1.0, tolerance, bool(worst <= 1 + tolerance)))
    hypotheses = {
        "order": "the default order of `fed_step_sizes` (weighted Leja order of the roots 1/t_i, `leja_order`)",
        "amplification": (
            f"R_pi = rounding_amplification on {ROUNDING_PER_ROOT} grid points per root, times grid_factor^2 = {factor:.6g} "
            f"(Bernstein: true maxima); lengths: {'every n <= 500' if len(lengths) == ROUNDING_LONGEST else 'every n <= 100 and every 50th up to 500'}; "
            + ", ".join(f"n={n}: {ratios[n] * amplification_bound(n):.4g}" for n in (100, 300, 500) if n in ratios)
        ),
        "error bound": (
            "||fl32 - fl64|| <= W_pi (e32 + e64) ||u0||, W_pi = sum_i max(t_i, 1) max|P_(i-1)| max|S_i| (true maxima) "
            "<= max(t_max, 1) R_pi; e = e_block + tau A^2 eps_G + 6u per input (largest float32 e: "
            f"{float(per_step32.max()):.3g}); "
            + ", ".join(f"n={n}: W = {weighted[n]:.4g}, max(t_max,1) R = {plain[n]:.4g}" for n in ROUNDING_ERROR_LENGTHS)
        ),
        "observed": "largest ||fl32 - fl64|| / ||u0||: " + ", ".join(f"n={n}: {observed[n]:.3g}" for n in ROUNDING_ERROR_LENGTHS),
        "setting": (
            f"D_1 neumann, N = {ROUNDING_SIZE}, h = 1/{ROUNDING_SIZE}, Perona-Malik frozen per cycle, tau_max = "
            f"stable_step_size = {tau:.6g}; {samples} random inputs per length (amplitudes 10^[-2, 2], offsets, "
            "lambda = median |Du| x 10^[-1, 1])"
        ),
    }
    falsifier = FalsifierOutcome(
        objective="||fl32 - fl64|| / bound at eigenvectors of A where the partial products peak (no gradient: "
        "the rounding error has none worth following)",
        restarts=restarts, steps=0, worst=searched_worst, sampled=sampled_worst,
        nonfinite=int(np.sum(~finite)), found=searched_worst > 1 + tolerance,
        region=f"eigenvectors of tau D^T D for the {restarts} largest weighted terms, lambda = 100 max|Du| (g within 1e-4 of 1)",
    )
    derivation = (
        f"amplification: {AMPLIFICATION_EVALUATION:g} (float64 sums of logarithms); "
        f"errors: 2*gamma_(N+1) = {tolerance:.3g} (float64 norms), first-order bound"
    )
    return Evidence(tuple(cases), 1.0, "<=", derivation, hypotheses, falsifier)


FED_ROUNDING = Claim(
    "fed-rounding",
    "In the default (weighted Leja) order, the rounding amplification of a FED cycle, sum_i max|P_(i-1)| max|S_i| "
    "on [0, 2], is at most 2 n^1.5 for every cycle length n <= 500, and a frozen Perona-Malik FED cycle in float32 "
    "stays within W (e32 + e64) ||u0|| of the float64 one, W the amplification weighted by max(t_i, 1) and e the "
    "per-step rounding bound: the first-order bound holds on random and adversarial inputs.",
    _check_rounding,
)
