r"""Flux functions $\Phi(s) = g(s^2)\, s$: the activation functions of diffusion blocks.

Each flux knows two different constants:

- the sector bound $L = \sup_{s \ne 0} \Phi(s)/s = \sup g$, which governs Euclidean
  stability of the explicit step ($\tau \le 2 / (L \|K\|^2)$);
- the range $[a, b]$ of $\Phi'$ and the Lipschitz constant $\max(|a|, |b|)$, which
  governs non-expansiveness and the descent of the energy $\sum \Psi(Ku)$.

Each flux also knows its potential (energy density) $\Psi(s) = \int_0^s \Phi(t)\,dt$,
in closed form for the fluxes here, so that the explicit step is gradient descent on
$E(u) = \sum_i \Psi((Ku)_i)$ (see `jaxpde.verify.flux_energy`).

$\Phi$ is monotone iff $a \ge 0$. Perona-Malik, its exponential variant and Weickert's
flux are not monotone, yet sector-bounded. Reference: arXiv:2103.15419, Section 2.

Private modules: `_base` (`AbstractFlux`), `_classic` (the fluxes of `FLUXES`),
`_frozen` (`Frozen`, `frozen_diffusivity`), `_radial_basis` (`RadialBasisFlux`) and
`_special` (the special functions of the closed-form potentials).
"""

from ._base import POTENTIAL_QUADRATURE_NODES as POTENTIAL_QUADRATURE_NODES
from ._base import POTENTIAL_QUADRATURE_PANELS as POTENTIAL_QUADRATURE_PANELS
from ._base import AbstractFlux as AbstractFlux
from ._classic import FLUXES as FLUXES
from ._classic import WEICKERT_CONSTANT as WEICKERT_CONSTANT
from ._classic import WEICKERT_POTENTIAL_LIMIT as WEICKERT_POTENTIAL_LIMIT
from ._classic import Charbonnier as Charbonnier
from ._classic import ExponentialPeronaMalik as ExponentialPeronaMalik
from ._classic import Linear as Linear
from ._classic import PeronaMalik as PeronaMalik
from ._classic import TotalVariation as TotalVariation
from ._classic import Weickert as Weickert
from ._frozen import Frozen as Frozen
from ._frozen import frozen_diffusivity as frozen_diffusivity
from ._radial_basis import RadialBasisFlux as RadialBasisFlux
from ._radial_basis import default_centres as default_centres

# The public path in error messages and reprs (jaxtyping's "Expected type: ..."), where
# users import the classes from.
for _cls in (AbstractFlux, Charbonnier, ExponentialPeronaMalik, Frozen, Linear, PeronaMalik, RadialBasisFlux,
             TotalVariation, Weickert):
    _cls.__module__ = __name__
del _cls
