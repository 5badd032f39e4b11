r"""Rounding tolerances derived from the unit roundoff, not guessed.

A check such as "$\|f(u)\| \le \|u\|$" is evaluated in floating point, so the computed
ratio may exceed the exact one by the rounding error of the computation. With unit
roundoff $\mathbf{u} = \varepsilon/2$ and $\gamma_p = p\mathbf{u}/(1 - p\mathbf{u})$
(Higham, *Accuracy and Stability of Numerical Algorithms*, 2002, Ch. 3), a first-order
bound for one block $u - \tau K^\top\Phi(Ku)$ with $r$ products per entry of $K$ and
$K^\top$, $\||K|\| \le A$, sector bound $L$ and Lipschitz constant $\ell$ is

$$\frac{\|\mathrm{fl}(f(u)) - f(u)\|}{\|u\|}
\le \tau A^2 \big(\gamma_r (L + \ell) + c_\Phi \mathbf{u} L\big) + 5\mathbf{u},$$

where $c_\Phi = 32$ bounds the relative error of one flux evaluation ($g$ costs at most
a division, a square root or exponential, and a few products). The two norms of a
ratio add $2\gamma_{N}$ for $N$ entries. See `proofs/explicit-stability.md`.
"""

import dataclasses

import numpy as np

from ..blocks import DiffusionBlock

FLUX_EVALUATION_ROUNDOFFS = 32


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """A tolerance `value` and the formula (with its numbers) that produced it."""

    value: float
    derivation: str


def unit_roundoff(dtype) -> float:
    """$\\mathbf{u} = \\varepsilon / 2$ of a floating dtype."""
    return float(np.finfo(dtype).eps) / 2


def gamma(p: int | float, dtype) -> float:
    """$\\gamma_p = p\\mathbf{u} / (1 - p\\mathbf{u})$."""
    pu = p * unit_roundoff(dtype)
    if pu >= 1:
        raise ValueError(f"`p` = {p} is too large for {np.dtype(dtype).name}: p * u >= 1.")
    return pu / (1 - pu)


def block_error(block: DiffusionBlock, dtype) -> float:
    """Bound of $\\|\\mathrm{fl}(f(u)) - f(u)\\| / \\|u\\|$ for one block (formula above)."""
    u = unit_roundoff(dtype)
    tau = float(block.tau)
    abs_norm = float(block.op.abs_norm_bound())
    sector = float(block.flux.sector_bound())
    lipschitz = float(block.flux.lipschitz())
    r = block.op.row_length
    nonlinear = gamma(r, dtype) * (sector + lipschitz) + FLUX_EVALUATION_ROUNDOFFS * u * sector
    return tau * abs_norm**2 * nonlinear + 5 * u


def norm_ratio_tolerance(block: DiffusionBlock, dtype) -> Tolerance:
    """Tolerance of a computed one-step ratio $\\|f(u)\\| / \\|u\\|$ against 1."""
    entries = int(np.prod(block.op.in_shape))
    step = block_error(block, dtype)
    norms = 2 * gamma(entries + 1, dtype)
    value = step + norms
    derivation = (
        f"tau*A^2*(gamma_r*(L+Lip) + {FLUX_EVALUATION_ROUNDOFFS}u*L) + 5u + 2*gamma_(N+1) "
        f"= {step:.3g} + {norms:.3g} with u = {unit_roundoff(dtype):.3g} "
        f"({np.dtype(dtype).name}), r = {block.op.row_length}, N = {entries}"
    )
    return Tolerance(value, derivation)


def mean_tolerance(block: DiffusionBlock, dtype, depth: int) -> Tolerance:
    """Tolerance of the computed change of the mean over `depth` steps, relative to
    $\\max|u^0|$: $d \\cdot e_{\\rm block} + 2\\gamma_N$."""
    entries = int(np.prod(block.op.in_shape))
    step = block_error(block, dtype)
    value = depth * step + 2 * gamma(entries, dtype)
    derivation = f"d*e_block + 2*gamma_N = {depth}*{step:.3g} + 2*gamma_{entries}"
    return Tolerance(value, derivation)


def entrywise_tolerance(block: DiffusionBlock, dtype, depth: int) -> Tolerance:
    """Tolerance of an entry of $u^d$ relative to $\\max|u^0|$:
    $d \\cdot e_{\\rm block}\\sqrt{N}$ (an entry is at most the Euclidean norm)."""
    entries = int(np.prod(block.op.in_shape))
    step = block_error(block, dtype)
    value = depth * step * float(np.sqrt(entries))
    derivation = f"d*e_block*sqrt(N) = {depth}*{step:.3g}*sqrt({entries})"
    return Tolerance(value, derivation)
