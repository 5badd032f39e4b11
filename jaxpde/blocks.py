r"""The diffusion block: one explicit step and one ResNet block, the same object.

$$u \mapsto u - \tau K^\top \Phi(K u)$$

is the explicit scheme for $\partial_t u = -K^* \Phi(K u)$ and a residual block whose
two convolutions are tied ($K$ and its transpose) around the activation $\Phi$.
It is Euclidean stable, $\|u - \tau K^\top\Phi(Ku)\| \le \|u\|$, for every linear $K$
whenever $0 \le \Phi(s)/s \le L$ and $0 < \tau \le 2/(L\|K\|^2)$; $\Phi$ need not be
monotone (arXiv:2103.15419, Proposition 1; proof in `proofs/explicit-stability.md`).
"""

import equinox as eqx
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._checks import check_signal, concrete_value, positive_array
from .fluxes import AbstractFlux
from .operators import AbstractOperator


def check_operator_and_flux(op, flux) -> None:
    """A `TypeError` naming the argument unless `op` is a jaxpde operator and `flux` a
    jaxpde flux."""
    if not isinstance(op, AbstractOperator):
        raise TypeError(f"`op` must be a jaxpde operator, got {type(op).__name__}.")
    if not isinstance(flux, AbstractFlux):
        raise TypeError(f"`flux` must be a jaxpde flux, got {type(flux).__name__}.")


def stable_step_size(op: AbstractOperator, flux: AbstractFlux) -> Float[Array, ""]:
    r"""The largest step size with a stability guarantee, $2 / (L\,\|K\|^2)$.

    Uses the sector bound $L$ of `flux` and the certified upper bound
    `op.norm_bound()` of $\|K\|$, so the result is a valid (not an estimated) bound.
    """
    norm = op.norm_bound()
    sector = flux.sector_bound().astype(norm.dtype)
    return 2 / (sector * norm**2)


def _step_slack(*dtypes) -> float:
    """Relative slack when comparing `tau` with the bound: a few units of roundoff of
    the less precise dtype (a bound rounded to float32 may exceed itself by half an ulp)."""
    return 64 * max(float(np.finfo(dtype).eps) for dtype in dtypes)


class DiffusionBlock(eqx.Module):
    r"""$u \mapsto u - \tau K^\top \Phi(K u)$: explicit step and ResNet block.

    **Arguments:**

    - `op`: the linear operator $K$ (a `Derivative`, a `Stencil`, ...).
    - `flux`: the flux (activation) $\Phi$.
    - `tau`: the step size; refused with a `ValueError` above `stable_step_size(op,
      flux)` unless `allow_unstable=True`.
    - `allow_unstable`: opt out of the stability check, for experiments that probe
      instability.
    """

    op: AbstractOperator
    flux: AbstractFlux
    tau: Float[Array, ""]
    allow_unstable: bool = eqx.field(static=True)

    def __init__(
        self,
        op: AbstractOperator,
        flux: AbstractFlux,
        tau: ArrayLike,
        *,
        allow_unstable: bool = False,
    ):
        check_operator_and_flux(op, flux)
        tau = positive_array("tau", tau, "the step size must be a finite number > 0.")
        if not allow_unstable:
            bound = stable_step_size(op, flux)
            known_tau, known_bound = concrete_value(tau), concrete_value(bound)
            slack = 1 + _step_slack(tau.dtype, bound.dtype)
            message = (
                "`tau` exceeds the Euclidean stability bound 2 / (L ||K||^2) = {bound}; "
                "pass tau <= stable_step_size(op, flux), or allow_unstable=True to "
                "probe instability on purpose."
            )
            if known_tau is not None and known_bound is not None:
                if known_tau > known_bound * slack:
                    raise ValueError(
                        message.format(bound=f"{float(known_bound):.10g}")
                        + f" Got tau = {float(known_tau):.10g}."
                    )
            else:
                tau = eqx.error_if(tau, tau > bound * slack, message.format(bound="(traced)"))
        self.op = op
        self.flux = flux
        self.tau = tau
        self.allow_unstable = allow_unstable

    def update(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        r"""The residual $-\tau K^\top \Phi(Ku)$ (what the block adds to its input)."""
        check_signal("u", u, self.op.in_shape)
        return -self.tau.astype(u.dtype) * self.op.T(self.flux(self.op(u)))

    def __call__(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        return u + self.update(u)

    def stable_step_size(self) -> Float[Array, ""]:
        """`stable_step_size(self.op, self.flux)`."""
        return stable_step_size(self.op, self.flux)

    def step_fraction(self) -> Float[Array, ""]:
        """$\\tau$ as a fraction of the stability bound (at most 1 unless opted out)."""
        return self.tau / self.stable_step_size()

