r"""The stability certificate of a trained network of `jaxpde.nn`: its hypotheses checked
on the numbers.

For a network of diffusion blocks $u - \tau_\ell K_\ell^\top\Phi_\ell(K_\ell u)$
(`DiffusionResNet`, `DiffusionResNet2D`, and `ExtrapolationNetwork` with frozen diffusivities) the theorem
needs, per block, a sector bound $0 \le \Phi_\ell(s)/s \le L_\ell$ and
$\tau_\ell \le 2/(L_\ell\|K_\ell\|^2)$. The certificate recomputes
$\tau_\ell L_\ell \nu_\ell^2 / 2$ with the verification layer's certified upper bound
$\nu_\ell \ge \|K_\ell\|$ (`jaxpde.verify.spectral_norm`) and certifies the Euclidean gain
$\|f(u)\| \le \|u\|$ only when every ratio is at most 1 (up to rounding of the ratio).
A `RecurrentImplicitBlock` is certified when its fixed-point iteration contracts
($q < 1$): the implicit step is then unique and Euclidean stable. Other models (the
`ResNet` baseline) get no certificate.

Reference: arXiv:2103.15419, Proposition 1 (`proofs/explicit-stability.md`,
`proofs/fsi-stability.md`, `proofs/implicit-stability.md`,
`proofs/diffusion-resnet-stability.md`, `proofs/diffusion-resnet-stability-2d.md`).
"""

import dataclasses
import math

import numpy as np

from ..blocks import DiffusionBlock
from ..nn import (
    BlockStack,
    DiffusionResNet,
    DiffusionResNet2D,
    ExtrapolationNetwork,
    RecurrentImplicitBlock,
    flux_magnitudes,
)
from .hypotheses import FLUX_S_RANGE, ConstantCheck, check_flux, check_operator
from .lipschitz import block_lipschitz_bound
from .spectral import spectral_norm

# Relative rounding allowance of a recomputed step ratio tau L nu^2 / 2 (a few products).
_RATIO_ROUNDOFFS = 64
# The network classes whose stability theorem is proven (exact types: a subclass may
# change `__call__`, and then no theorem applies).
PROVEN_NETWORKS = (DiffusionResNet, DiffusionResNet2D, ExtrapolationNetwork, RecurrentImplicitBlock)
# The proof of each network of diffusion blocks.
_PROOFS = {DiffusionResNet: "proofs/diffusion-resnet-stability.md", DiffusionResNet2D: "proofs/diffusion-resnet-stability-2d.md"}


@dataclasses.dataclass(frozen=True)
class StabilityCertificate:
    """What was checked and what follows from it.

    - `certified`: the hypotheses of a stability theorem hold for these parameter values.
    - `gain_bound`: the certified bound of $\\|f(u)\\|/\\|u\\|$ (1, or `inf` without one).
    - `lipschitz_bound`: a certified Lipschitz bound (product of the block bounds), or `None`.
    - `step_ratios`: $\\tau_\\ell L_\\ell \\nu_\\ell^2/2$ per block (each must be $\\le 1$),
      with $\\nu_\\ell$ the certified upper bound of $\\|K_\\ell\\|$.
    - `tightness`: the same ratios with the certified lower bound of $\\|K_\\ell\\|$ (how
      close each step is to the bound).
    - `reason`: the theorem used, or why none applies.
    - `basis`: "theorem" when certified (a proof in `proofs/`, its hypotheses checked),
      else "none".
    - `constants`: how each flux and operator constant the theorem uses was checked
      (`jaxpde.verify.hypotheses`): "proven" for jaxpde's own classes, "checked" (sampled
      or bounded) for a user's, "violated" with a witness, or "unchecked".
    """

    model: str
    certified: bool
    gain_bound: float
    lipschitz_bound: float | None
    step_ratios: tuple[float, ...]
    tightness: tuple[float, ...]
    reason: str
    basis: str = "none"
    constants: tuple[ConstantCheck, ...] = ()

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["gain_bound"] = None if math.isinf(self.gain_bound) else self.gain_bound
        data["constants"] = [c.to_json() for c in self.constants]
        return data

    @property
    def violated_constants(self) -> tuple[ConstantCheck, ...]:
        """The declared constants with a counterexample."""
        return tuple(c for c in self.constants if c.verdict == "violated")


def _unique_checks(checks: list[ConstantCheck]) -> tuple[ConstantCheck, ...]:
    """Identical checks (e.g. the same proven flux in every layer) once."""
    seen, unique = set(), []
    for check in checks:
        key = (check.name, check.verdict, check.declared, check.observed, check.method)
        if key not in seen:
            seen.add(key)
            unique.append(check)
    return tuple(unique)


def _constant_problem(checks) -> str | None:
    """Why the checked constants do not support a theorem, or `None`."""
    bad = [c for c in checks if c.verdict in ("violated", "unchecked")]
    if not bad:
        return None
    return "; ".join(f"{c.name} {c.describe()}" for c in bad)


def _block_ratios(blocks: tuple[DiffusionBlock, ...], s_range) -> tuple[list[float], list[float], list[ConstantCheck]]:
    ratios, tightness, checks = [], [], []
    for block in blocks:
        flux_checks = check_flux(block.flux, s_range=s_range)
        op_checks = check_operator(block.op)
        checks += flux_checks + op_checks
        bounds = spectral_norm(block.op)
        # jaxpde's own operators: spectral_norm's own upper bound (computed independently of
        # `norm_bound()`); a user's operator: the certified Gram bound of its dense matrix.
        upper = float(bounds.upper) if op_checks[0].verdict == "proven" else op_checks[0].used
        upper = math.inf if upper is None else upper
        scale = float(block.tau) * float(block.flux.sector_bound()) / 2
        ratios.append(scale * float(upper) ** 2)
        tightness.append(scale * float(bounds.lower) ** 2)
    return ratios, tightness, checks


def stability_certificate(model, *, s_range: tuple[float, float] = FLUX_S_RANGE) -> StabilityCertificate:
    """Check the stability hypotheses of `model` on its current parameter values.

    Returns a `StabilityCertificate` for any model; only `DiffusionResNet`,
    `DiffusionResNet2D`, `ExtrapolationNetwork` (frozen) and `RecurrentImplicitBlock` (these classes exactly, not
    subclasses) can be certified. The constants of their fluxes and operators are checked
    with `jaxpde.verify.hypotheses` (a user's flux: sampled over `s_range`), never read on
    trust.
    """
    name = type(model).__name__
    if isinstance(model, (*PROVEN_NETWORKS, BlockStack)) and type(model) not in PROVEN_NETWORKS:
        return StabilityCertificate(
            name, False, math.inf, None, (), (),
            f"{name} subclasses a jaxpde network and may change what it computes: no stability theorem applies",
        )
    if isinstance(model, BlockStack):
        blocks = model.blocks()
        ratios, tightness, checks = _block_ratios(blocks, s_range)
        constants = _unique_checks(checks)
        problem = _constant_problem(constants)
        dtype = np.asarray(model.thetas).dtype
        slack = 1 + _RATIO_ROUNDOFFS * float(np.finfo(dtype).eps)
        steps_hold = all(math.isfinite(r) and r <= slack for r in ratios)
        frozen = getattr(model, "frozen", True)
        certified = steps_hold and frozen and problem is None
        if isinstance(model, ExtrapolationNetwork):
            lipschitz = None
            theorem = "FSI cycles with frozen diffusivity (proofs/fsi-stability.md)"
        else:
            # Each stage's block is applied `repeats` times in a row.
            repeats = getattr(model, "repeats", 1)
            ranges_hold = all(c.verdict in ("proven", "checked") for c in checks if c.name.startswith("derivative range"))
            lipschitz = (
                float(np.prod([float(block_lipschitz_bound(b)) ** repeats for b in blocks])) if ranges_hold and problem is None else None
            )
            theorem = f"composition of stable explicit blocks ({_PROOFS[type(model)]})"
        if certified:
            reason = f"{theorem}: every tau L ||K||^2 / 2 <= 1 (largest {max(ratios):.6g})"
        elif problem is not None:
            reason = f"a hypothesis fails or cannot be checked: {problem}"
        elif not frozen:
            reason = "unfrozen FSI cycles: no theorem applies (see the fsi-unfrozen claim)"
        else:
            reason = f"a step exceeds the bound: largest tau L ||K||^2 / 2 = {max(ratios):.6g}"
        return StabilityCertificate(
            name, certified, 1.0 if certified else math.inf, lipschitz, tuple(ratios), tuple(tightness), reason,
            "theorem" if certified else "none", constants,
        )
    if isinstance(model, RecurrentImplicitBlock):
        constants = _unique_checks(check_flux(flux_magnitudes(model.flux), s_range=s_range) + check_operator(model.op))
        problem = _constant_problem(constants)
        q = float(model.contraction_factor())
        certified = math.isfinite(q) and q < 1 and problem is None
        if certified:
            reason = (
                f"implicit step, fixed-point iteration contracting with q = {q:.6g} < 1 "
                "(proofs/implicit-stability.md, proofs/fixed-point-contraction.md); the bound holds "
                "for the exact step, the computed one is within the solver's tolerance"
            )
        elif problem is not None:
            reason = f"a hypothesis fails or cannot be checked: {problem}"
        else:
            reason = f"the fixed-point iteration does not contract (q = {q:.6g})"
        return StabilityCertificate(
            name, certified, 1.0 if certified else math.inf, None, (q,), (q,), reason,
            "theorem" if certified else "none", constants,
        )
    return StabilityCertificate(
        name, False, math.inf, None, (), (), f"no stability theorem applies to a {name} (untied weights)"
    )
