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

from .._bounds.rounding import gamma, unit_roundoff
from ..blocks import DiffusionBlock

FLUX_EVALUATION_ROUNDOFFS = 32


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """A tolerance `value` and the formula (with its numbers) that produced it."""

    value: float
    derivation: str


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


# --- Lyapunov functionals (proofs/energy-descent.md, proofs/lyapunov-functionals.md) --

# Relative error of one evaluation of a flux potential Psi (log1p, expm1, hypot, or the
# incomplete gamma function of Weickert's potential, measured at about 17u in float64).
POTENTIAL_EVALUATION_ROUNDOFFS = 64
# The convex functions r of the convex-sum check, on the range [-M, M] of the data:
# |r| <= CONVEX_SUM_VALUE_BOUND (4 log 4 for y log y, y in [1, 4]) and
# M |r'| <= CONVEX_SUM_SLOPE_BOUND (e, for exp(x / M)); each costs at most
# CONVEX_EVALUATION_ROUNDOFFS * u * CONVEX_SUM_VALUE_BOUND absolute error per entry.
CONVEX_SUM_VALUE_BOUND = 4 * float(np.log(4.0))
CONVEX_SUM_SLOPE_BOUND = float(np.e)
CONVEX_EVALUATION_ROUNDOFFS = 8


def _sizes(block: DiffusionBlock) -> tuple[int, int]:
    return int(np.prod(block.op.in_shape)), int(np.prod(block.op.out_shape))


def energy_increase_tolerance(block: DiffusionBlock, dtype) -> Tolerance:
    """Tolerance of a computed one-step increase $E(u^{k+1}) - E(u^k)$ of the flux energy
    $E(u) = \\sum \\Psi(Ku)$, relative to $L A^2 \\|u^0\\|^2$ ($A$ = `abs_norm_bound()`):
    $2\\gamma_r + c_\\Psi\\mathbf{u} + \\gamma_{N'} + e_{\\rm block}$, with $N'$ the entries of $Ku$
    (the rows of $K$ in $\\Psi(\\hat s) - \\Psi(s)$, the evaluation of $\\Psi$, the sum, and
    the rounding of the step; `proofs/energy-descent.md`)."""
    _, rows = _sizes(block)
    u = unit_roundoff(dtype)
    step = block_error(block, dtype)
    r = block.op.row_length
    evaluation = 2 * gamma(r, dtype) + POTENTIAL_EVALUATION_ROUNDOFFS * u + gamma(rows, dtype)
    value = evaluation + step
    derivation = (
        f"2*gamma_r + {POTENTIAL_EVALUATION_ROUNDOFFS}u + gamma_N' + e_block = {evaluation:.3g} + {step:.3g} "
        f"relative to L*A^2*||u^0||^2, u = {u:.3g} ({np.dtype(dtype).name}), r = {r}, N' = {rows}"
    )
    return Tolerance(value, derivation)


def variance_increase_tolerance(block: DiffusionBlock, dtype) -> Tolerance:
    """Tolerance of a computed one-step increase of the variance $\\|u - \\bar u\\|^2$,
    relative to $\\|u^0\\|^2$: $8\\gamma_{N+1} + 2e_{\\rm block}$ (two evaluations of
    at most $(3\\gamma_{N+1} + 3\\mathbf{u})\\|u\\|^2 \\le 4\\gamma_{N+1}\\|u\\|^2$ each, and
    $2\\|u - \\bar u\\|\\,\\|e\\|$ for the rounding $e$ of the step;
    `proofs/lyapunov-functionals.md`)."""
    entries, _ = _sizes(block)
    step = block_error(block, dtype)
    evaluation = 8 * gamma(entries + 1, dtype)
    value = evaluation + 2 * step
    derivation = (
        f"8*gamma_(N+1) + 2*e_block = {evaluation:.3g} + 2*{step:.3g} relative to ||u^0||^2, "
        f"u = {unit_roundoff(dtype):.3g} ({np.dtype(dtype).name}), N = {entries}"
    )
    return Tolerance(value, derivation)


def convex_sum_increase_tolerance(block: DiffusionBlock, dtype) -> Tolerance:
    """Tolerance of a computed one-step increase of $\\sum_i r(u_i)$, relative to the
    number $N$ of entries, for the convex functions of the check (bounded by $R$ with
    slopes at most $R'/M$ on $[-M, M]$, $M = \\max|u^0|$):
    $2R(c_r\\mathbf{u} + \\gamma_N) + R' e_{\\rm block}$ (`proofs/lyapunov-functionals.md`)."""
    entries, _ = _sizes(block)
    u = unit_roundoff(dtype)
    step = block_error(block, dtype)
    evaluation = 2 * CONVEX_SUM_VALUE_BOUND * (CONVEX_EVALUATION_ROUNDOFFS * u + gamma(entries, dtype))
    value = evaluation + CONVEX_SUM_SLOPE_BOUND * step
    derivation = (
        f"2R*({CONVEX_EVALUATION_ROUNDOFFS}u + gamma_N) + R'*e_block = {evaluation:.3g} + "
        f"{CONVEX_SUM_SLOPE_BOUND:.4g}*{step:.3g} relative to N, R = 4 log 4, R' = e, "
        f"u = {u:.3g} ({np.dtype(dtype).name}), N = {entries}"
    )
    return Tolerance(value, derivation)


def cycle_ratio_tolerance(block: DiffusionBlock, dtype, amplification: float, step_error: float) -> Tolerance:
    """Tolerance of a computed one-cycle ratio $\\|u^n\\| / \\|u^0\\|$ of an FSI or FED cycle:
    $A \\cdot e_{\\rm step} + 2\\gamma_{N+1}$, with $A$ the cycle's rounding amplification
    (`jaxpde.schemes.fsi_rounding_amplification`, `rounding_amplification`) and
    $e_{\\rm step}$ a bound of one step's rounding error relative to the largest state so
    far (`proofs/fsi-stability.md`)."""
    entries = int(np.prod(block.op.in_shape))
    norms = 2 * gamma(entries + 1, dtype)
    value = amplification * step_error + norms
    derivation = (
        f"A*e_step + 2*gamma_(N+1) = {amplification:.4g}*{step_error:.3g} + {norms:.3g}, "
        f"u = {unit_roundoff(dtype):.3g} ({np.dtype(dtype).name}), N = {entries}"
    )
    return Tolerance(value, derivation)
