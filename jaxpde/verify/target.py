r"""Certify or refute the Euclidean stability of any callable $u \mapsto u'$.

A verdict has a **basis**. `theorem`: a stability theorem applies (a `DiffusionBlock`, or
a network of `jaxpde.nn` through `jaxpde.verify.stability_certificate`; exactly these classes,
not subclasses, whose `__call__` may differ), its hypotheses were *checked* (the constants
of jaxpde's own fluxes and operators are proven in `proofs/`; those of a user's classes are
sampled and bounded by `jaxpde.verify.hypotheses`, never read on trust), and the falsifier
found no counterexample. `empirical`: no theorem applies; the falsifier searched the stated
region without finding a counterexample ("not refuted"), or found one ("violated", with
the witness). A declared constant with a counterexample is itself a `violated` verdict,
with the witness $s$ (or vector).

The falsifier (`falsify_gain`, `falsify_lipschitz`) searches input norms over
$10^{-6} \dots 10^{6}$ by default from structured and random seeds; the report states the
region. A float32 target is re-evaluated in float64 at the best inputs found (when it
accepts float64 inputs), since float32 tolerances grow like $N\mathbf{u}$ and can hide real
growth; otherwise the report says that the verdict is only as sharp as its tolerance.
This is what `jaxpde certify --target` runs.
"""

import dataclasses
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from ..blocks import DiffusionBlock
from ..nn import ResNet
from .falsify import DEFAULT_RADII, falsify_gain, falsify_lipschitz
from .hypotheses import (
    ConstantCheck,
    check_flux,
    check_operator,
    dense_abs_norm,
    is_proven_flux,
    is_proven_operator,
)
from .lipschitz import block_lipschitz_bound, local_lipschitz
from .networks import PROVEN_NETWORKS, stability_certificate
from .tolerance import (
    FLUX_EVALUATION_ROUNDOFFS,
    Tolerance,
    gamma,
    norm_ratio_tolerance,
    unit_roundoff,
)

# Relative slack of the recomputed step ratio tau L nu^2 / 2 against 1.
_STEP_ROUNDOFFS = 64


def gain_tolerance(f: Callable, size: int, dtype) -> Tolerance:
    """Rounding tolerance of a computed ratio $\\|f(u)\\|/\\|u\\|$: the derived one for a
    `DiffusionBlock`, otherwise $\\gamma_{4(N+1)}$ (a few sums over N entries)."""
    if isinstance(f, DiffusionBlock):
        return norm_ratio_tolerance(f, dtype)
    value = gamma(4 * (size + 1), dtype)
    return Tolerance(value, f"gamma_(4(N+1)) with N = {size} (generic callable: no structure known)")


@dataclasses.dataclass(frozen=True)
class TargetReport:
    """Verdict on one callable.

    - `status`: "certified" (a theorem applies, its hypotheses were checked, no
      counterexample found), "violated" (a witness: an input with gain above 1 + tolerance,
      in `witness`, or a declared constant with a counterexample, in `constants`), or "not
      refuted" (no theorem applies; nothing found in the searched region).
    - `basis`: "theorem" (certified by a proof in `proofs/` with checked hypotheses) or
      "empirical" (searched, `region`); `basis_detail` says which theorem and how each
      constant was checked.
    - `gain`: the largest $\\|f(u)\\|/\\|u\\|$ found in the target's dtype; `gain_float64` the
      largest at the best inputs re-evaluated in float64 (float32 targets), else `None`.
    - `region`: where the falsifier looked (`SearchRegion.to_json()`).
    - `constants`: how each declared constant was checked (`ConstantCheck.to_json()`).
    """

    name: str
    in_shape: tuple[int, ...]
    status: str
    gain: float
    gain_sampled: float
    lipschitz: float
    local_lipschitz: float
    tolerance: float
    tolerance_derivation: str
    restarts: int
    steps: int
    seconds: float
    hypotheses: dict[str, str]
    certified_gain_bound: float | None = None
    certified_lipschitz_bound: float | None = None
    witness: list[float] | None = None
    basis: str = "empirical"
    basis_detail: str = ""
    region: dict | None = None
    constants: list[dict] = dataclasses.field(default_factory=list)
    gain_float64: float | None = None
    precision_note: str = ""

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["in_shape"] = list(self.in_shape)
        return data

    def markdown(self) -> str:
        region = self.region or {}
        lines = [
            f"# `{self.name}`: {self.status} (basis: {self.basis})",
            "",
            f"Basis: {self.basis_detail}",
            "",
            f"Input shape {self.in_shape}; falsifier: {self.restarts} restarts x {self.steps} Adam steps"
            + (f", {_region_text(region)}" if region else "")
            + ".",
            "",
            "| quantity | empirical (lower bound) | certified upper bound |",
            "| --- | ---: | ---: |",
            f"| Euclidean gain max ||f(u)||/||u|| | {self.gain:.12g} | {_or_na(self.certified_gain_bound)} |",
            (
                f"| Lipschitz constant | {max(self.lipschitz, self.local_lipschitz):.12g} "
                f"| {_or_na(self.certified_lipschitz_bound)} |"
            ),
            "",
            f"Tolerance {self.tolerance:.3g}: {self.tolerance_derivation}.",
            "",
        ]
        if self.precision_note:
            lines += [self.precision_note, ""]
        lines += [f"- {k}: {v}" for k, v in self.hypotheses.items()]
        return "\n".join(lines) + "\n"


def _region_text(region: dict) -> str:
    seeds = ", ".join(f"{n} {k}" for k, n in region.get("seeds", {}).items() if n)
    return (
        f"||u|| in [{region['radii'][0]:.3g}, {region['radii'][1]:.3g}] (log-stratified), {region['dtype']}, "
        f"seeds: {seeds}"
    )


def _network_certificate(f):
    """The `stability_certificate` of a jaxpde network (exact class), else `None`."""
    return stability_certificate(f) if type(f) in (*PROVEN_NETWORKS, ResNet) else None


def _or_na(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.12g}"


@dataclasses.dataclass(frozen=True)
class _BlockHypotheses:
    checks: list[ConstantCheck]
    sector: float
    norm: float | None  # certified upper bound of ||K|| (proven or computed), or None
    derivative_range: tuple[float, float] | None

    def tolerance(self, block: DiffusionBlock, dtype) -> Tolerance:
        """The rounding tolerance of the block's gain in `dtype`, from checked numbers."""
        if is_proven_flux(block.flux) and is_proven_operator(block.op):
            return norm_ratio_tolerance(block, dtype)
        op_check, sector_check, range_check = self.checks
        return _checked_tolerance(block, sector_check, range_check, op_check, dtype)


def _check_block(block: DiffusionBlock, radii) -> _BlockHypotheses:
    """Check the constants the explicit-step theorem and the Lipschitz bound use."""
    op_checks = check_operator(block.op)
    norm = op_checks[0].used
    declared_norm = float(np.asarray(block.op.norm_bound(), np.float64))
    reach = max(x for x in (norm, declared_norm, 1.0) if x is not None and math.isfinite(x))
    # Every s = (Ku)_i of a searched input has |s| <= ||K|| ||u|| <= reach * radii[1].
    s_high = max(1e8, 10 * reach * radii[1])
    flux_checks = check_flux(block.flux, s_range=(1e-8, s_high))
    range_check = flux_checks[1]
    sector = float(np.asarray(block.flux.sector_bound(), np.float64))
    ranges = None
    if range_check.verdict in ("proven", "checked"):
        ranges = tuple(float(np.asarray(x, np.float64)) for x in block.flux.derivative_range())
    return _BlockHypotheses(op_checks + flux_checks, sector, norm, ranges)


def _checked_tolerance(block, sector_check, range_check, op_check, dtype) -> Tolerance:
    """`norm_ratio_tolerance`'s formula with checked numbers instead of a user class's
    declarations: L and Lip(Phi) from the sampled extremes (a user's declared bound could
    inflate the tolerance), A = Schur's bound of |K| from the dense matrix."""
    u = unit_roundoff(dtype)
    entries = int(np.prod(block.op.in_shape))
    if is_proven_flux(block.flux):
        sector, lipschitz = float(block.flux.sector_bound()), float(block.flux.lipschitz())
        flux_source = "proven"
    else:
        ratio, slope = sector_check.observed, range_check.observed
        sector = max(abs(x) for x in ratio) if ratio else float(block.flux.sector_bound())
        lipschitz = max(abs(x) for x in slope) if slope else float(block.flux.lipschitz())
        flux_source = "sampled extremes"
    if is_proven_operator(block.op):
        abs_norm, op_source = float(block.op.abs_norm_bound()), "proven"
    elif op_check.verdict == "checked":
        abs_norm, op_source = dense_abs_norm(block.op), "from the dense matrix"
    else:
        abs_norm, op_source = float(block.op.abs_norm_bound()), "declared (unchecked)"
    r = block.op.row_length
    step = float(block.tau) * abs_norm**2 * (gamma(r, dtype) * (sector + lipschitz) + FLUX_EVALUATION_ROUNDOFFS * u * sector) + 5 * u
    norms = 2 * gamma(entries + 1, dtype)
    derivation = (
        f"tau*A^2*(gamma_r*(L+Lip) + {FLUX_EVALUATION_ROUNDOFFS}u*L) + 5u + 2*gamma_(N+1) = {step:.3g} + {norms:.3g} "
        f"with L, Lip {flux_source}, A {op_source}, u = {u:.3g} ({np.dtype(dtype).name}), r = {r}, N = {entries}"
    )
    return Tolerance(step + norms, derivation)


def _float64_gains(f, candidates, in_shape) -> tuple[np.ndarray | None, str]:
    """$\\|f(u)\\|/\\|u\\|$ in float64 at each candidate (cast up), or `None` and why not."""
    with jax.enable_x64(True):
        points = jnp.asarray(np.asarray(candidates, np.float64).reshape(-1, *in_shape), jnp.float64)
        try:
            outputs = jax.jit(jax.vmap(f))(points)
        except Exception as error:  # noqa: BLE001 (any failure: the target does not take float64)
            return None, f"the target failed on float64 inputs ({type(error).__name__})"
        if outputs.dtype != jnp.float64:
            return None, f"the target returns {outputs.dtype} for float64 inputs"
        axes = tuple(range(1, points.ndim))
        gains = jnp.sqrt(jnp.sum(outputs**2, axis=axes)) / jnp.sqrt(jnp.sum(points**2, axis=axes))
        return np.asarray(gains, np.float64), ""


def certify_callable(
    f: Callable,
    in_shape: tuple[int, ...],
    key: PRNGKeyArray | None = None,
    *,
    name: str = "callable",
    restarts: int = 256,
    steps: int = 100,
    radii: tuple[float, float] = DEFAULT_RADII,
    dtype=None,
) -> TargetReport:
    """Check the hypotheses of a stability theorem where one applies, and run the falsifier
    on the norm gain and the Lipschitz quotient of `f`.

    **Arguments:**

    - `f`: any callable mapping an array of shape `in_shape` to one of the same shape.
    - `in_shape`: shape of one input sample.
    - `key`: PRNG key (default `jax.random.key(0)`).
    - `restarts`, `steps`: the falsifier's budget.
    - `radii`: input norms searched, log-stratified (default $10^{-6} \\dots 10^{6}$).
    - `dtype`: the dtype the target is searched in (default: JAX's float); for a dtype
      below float64 the best inputs are re-evaluated in float64.

    **Returns:** a `TargetReport`.
    """
    start = time.perf_counter()
    key = jax.random.key(0) if key is None else key
    dtype = jnp.result_type(float) if dtype is None else dtype
    in_shape = tuple(int(s) for s in in_shape)
    probe = jax.eval_shape(f, jax.ShapeDtypeStruct(in_shape, dtype))
    if not hasattr(probe, "shape") or tuple(probe.shape) != in_shape:
        raise ValueError(
            f"`f` must map arrays of shape {in_shape} to the same shape (a stability "
            f"certificate compares ||f(u)|| with ||u||); it returns {probe}."
        )
    gain_key, lipschitz_key, local_key = jax.random.split(key, 3)
    gain = falsify_gain(f, in_shape, gain_key, restarts=restarts, steps=steps, radii=radii, dtype=dtype)
    pairs = falsify_lipschitz(f, in_shape, lipschitz_key, restarts=restarts, steps=steps, radii=radii, dtype=dtype)
    local = local_lipschitz(f, pairs.witness[0], local_key)
    size = math.prod(in_shape)
    hypotheses: dict[str, str] = {}
    checks: list[ConstantCheck] = []
    certified_gain = certified_lipschitz = None
    theorem: str | None = None  # the theorem whose hypotheses hold, if any
    block = type(f) is DiffusionBlock
    if block:
        checked = _check_block(f, radii)
        checks, tolerance = checked.checks, checked.tolerance(f, dtype)
        for check in checks:
            hypotheses[check.name] = check.describe()
        if all(c.verdict in ("proven", "checked") for c in checks if not c.name.startswith("derivative range")):
            fraction = float(f.tau) * checked.sector * checked.norm**2 / 2
            hypotheses["step size"] = f"tau L nu^2 / 2 = {fraction:.6g} (must be <= 1; nu the certified norm bound)"
            if fraction <= 1 + _STEP_ROUNDOFFS * float(np.finfo(dtype).eps):
                theorem = "explicit-step stability (proofs/explicit-stability.md, proofs/nonmonotone-stability.md)"
                certified_gain = 1.0
        if checked.derivative_range is not None and checked.norm is not None:
            certified_lipschitz = float(block_lipschitz_bound(f, derivative_range=checked.derivative_range, norm=checked.norm))
    else:
        tolerance = gain_tolerance(f, size, dtype)
        if isinstance(f, DiffusionBlock):
            hypotheses["theorem"] = (
                f"{type(f).__name__} subclasses DiffusionBlock and may change what it computes: no theorem applies"
            )
        elif (network := _network_certificate(f)) is not None:
            checks = list(network.constants)
            for check in checks:
                hypotheses[check.name] = check.describe()
            hypotheses["theorem"] = network.reason
            if network.certified:
                theorem, certified_gain = network.reason, network.gain_bound
                certified_lipschitz = network.lipschitz_bound
        else:
            hypotheses["theorem"] = "none applies to a generic callable: the verdict is empirical"

    worst = float(gain.worst)
    witness_u = gain.witness
    violated = not worst <= 1 + tolerance.value or int(gain.nonfinite) > 0
    # float32 (or lower) targets: re-evaluate the best inputs in float64.
    gain64, precision_note = None, ""
    if np.dtype(dtype) != np.float64:
        candidates = jnp.concatenate([gain.witness[None], gain.candidates])
        gains64, why = _float64_gains(f, candidates, in_shape)
        tolerance64 = checked.tolerance(f, np.float64) if block else gain_tolerance(f, size, np.float64)
        if gains64 is not None:
            best = int(np.argmax(np.where(np.isfinite(gains64), gains64, np.inf)))
            gain64 = float(gains64[best])
            precision_note = (
                f"Re-evaluated in float64 at the {len(gains64)} best inputs: largest gain {gain64:.12g} "
                f"(float64 tolerance {tolerance64.value:.3g})."
            )
            if not gain64 <= 1 + tolerance64.value:
                violated, witness_u = True, candidates[best]
        else:
            precision_note = (
                f"The {np.dtype(dtype).name} verdict is only as sharp as its stated tolerance "
                f"{tolerance.value:.3g}: growth below it cannot be told from rounding ({why})."
            )
    constant_violations = [c for c in checks if c.verdict == "violated"]
    if violated or constant_violations:
        status, basis = "violated", "empirical"
        certified_gain = certified_lipschitz = None
    elif theorem is not None:
        status, basis = "certified", "theorem"
    else:
        status, basis = "not refuted", "empirical"
        certified_gain = None if block else certified_gain
    basis_detail = _basis_detail(status, theorem, checks, gain.region, constant_violations)
    hypotheses["non-finite evaluations"] = str(int(gain.nonfinite) + int(pairs.nonfinite))
    hypotheses["searched region"] = gain.region.describe()
    witness = np.asarray(witness_u, np.float64).reshape(-1).tolist() if violated else None
    return TargetReport(
        name=name, in_shape=in_shape, status=status, gain=worst, gain_sampled=float(gain.sampled),
        lipschitz=float(pairs.worst), local_lipschitz=float(local.lower), tolerance=tolerance.value,
        tolerance_derivation=tolerance.derivation, restarts=restarts, steps=steps,
        seconds=time.perf_counter() - start, hypotheses=hypotheses,
        certified_gain_bound=certified_gain, certified_lipschitz_bound=certified_lipschitz, witness=witness,
        basis=basis, basis_detail=basis_detail, region=gain.region.to_json(),
        constants=[c.to_json() for c in checks], gain_float64=gain64, precision_note=precision_note,
    )


def _basis_detail(status, theorem, checks, region, violations) -> str:
    if status == "violated":
        if violations:
            return "counterexample to a declared constant: " + "; ".join(f"{c.name} {c.describe()}" for c in violations)
        return f"counterexample found by the falsifier ({region.describe()})"
    searched = f"falsifier found no counterexample ({region.describe()})"
    if status == "certified":
        how = "; ".join(f"{c.name}: {c.verdict}" for c in checks) or "hypotheses checked"
        return f"theorem: {theorem}; constants {how}; {searched}"
    unchecked = [c.name for c in checks if c.verdict == "unchecked"]
    reason = f"constants that could not be checked: {', '.join(unchecked)}; " if unchecked else "no theorem applies; "
    return f"empirical: {reason}{searched}"
