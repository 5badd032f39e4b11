r"""The stability certificate of a trained network: its hypotheses checked on the numbers.

For a network of diffusion blocks $u - \tau_\ell K_\ell^\top\Phi_\ell(K_\ell u)$
(`DiffusionResNet`, and `ExtrapolationNetwork` with frozen diffusivities) the theorem
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
`proofs/diffusion-resnet-stability.md`).
"""

import dataclasses
import math

import numpy as np

from ..blocks import DiffusionBlock
from ..verify.lipschitz import block_lipschitz_bound
from ..verify.spectral import spectral_norm
from ._common import BlockStack
from .extrapolation import ExtrapolationNetwork
from .recurrent import RecurrentImplicitBlock

# Relative rounding allowance of a recomputed step ratio tau L nu^2 / 2 (a few products).
_RATIO_ROUNDOFFS = 64


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
    """

    model: str
    certified: bool
    gain_bound: float
    lipschitz_bound: float | None
    step_ratios: tuple[float, ...]
    tightness: tuple[float, ...]
    reason: str

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["gain_bound"] = None if math.isinf(self.gain_bound) else self.gain_bound
        return data


def _block_ratios(blocks: tuple[DiffusionBlock, ...]) -> tuple[list[float], list[float]]:
    ratios, tightness = [], []
    for block in blocks:
        bounds = spectral_norm(block.op)
        scale = float(block.tau) * float(block.flux.sector_bound()) / 2
        ratios.append(scale * float(bounds.upper) ** 2)
        tightness.append(scale * float(bounds.lower) ** 2)
    return ratios, tightness


def stability_certificate(model) -> StabilityCertificate:
    """Check the stability hypotheses of `model` on its current parameter values.

    Returns a `StabilityCertificate` for any model; only `DiffusionResNet`,
    `ExtrapolationNetwork` (frozen) and `RecurrentImplicitBlock` can be certified.
    """
    name = type(model).__name__
    if isinstance(model, BlockStack):
        blocks = model.blocks()
        ratios, tightness = _block_ratios(blocks)
        dtype = np.asarray(model.thetas).dtype
        slack = 1 + _RATIO_ROUNDOFFS * float(np.finfo(dtype).eps)
        steps_hold = all(math.isfinite(r) and r <= slack for r in ratios)
        frozen = getattr(model, "frozen", True)
        certified = steps_hold and frozen
        if isinstance(model, ExtrapolationNetwork):
            lipschitz = None
            theorem = "FSI cycles with frozen diffusivity (proofs/fsi-stability.md)"
        else:
            # Each stage's block is applied `repeats` times in a row.
            repeats = getattr(model, "repeats", 1)
            lipschitz = float(np.prod([float(block_lipschitz_bound(b)) ** repeats for b in blocks]))
            theorem = "composition of stable explicit blocks (proofs/diffusion-resnet-stability.md)"
        if certified:
            reason = f"{theorem}: every tau L ||K||^2 / 2 <= 1 (largest {max(ratios):.6g})"
        elif not frozen:
            reason = "unfrozen FSI cycles: no theorem applies (see the fsi-unfrozen claim)"
        else:
            reason = f"a step exceeds the bound: largest tau L ||K||^2 / 2 = {max(ratios):.6g}"
        return StabilityCertificate(
            name, certified, 1.0 if certified else math.inf, lipschitz, tuple(ratios), tuple(tightness), reason
        )
    if isinstance(model, RecurrentImplicitBlock):
        q = float(model.contraction_factor())
        certified = math.isfinite(q) and q < 1
        reason = (
            f"implicit step, fixed-point iteration contracting with q = {q:.6g} < 1 "
            "(proofs/implicit-stability.md, proofs/fixed-point-contraction.md); the bound holds "
            "for the exact step, the computed one is within the solver's tolerance"
            if certified
            else f"the fixed-point iteration does not contract (q = {q:.6g})"
        )
        return StabilityCertificate(name, certified, 1.0 if certified else math.inf, None, (q,), (q,), reason)
    return StabilityCertificate(
        name, False, math.inf, None, (), (), f"no stability theorem applies to a {name} (untied weights)"
    )
