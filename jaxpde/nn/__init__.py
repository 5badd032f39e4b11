"""Trainable networks built from diffusion blocks, stable for every parameter value.

- `ExtrapolationNetwork`: FSI cycles with trainable stencils, fluxes and step sizes;
  the extrapolation is a skip connection over two layers (arXiv:2103.15419, Section 4).
- `RecurrentImplicitBlock`: the implicit step solved by a contracting recurrent block
  with a skip from the input, differentiated implicitly (arXiv:2103.15419, Section 5).
- `MultigridUNet`: a multigrid V-cycle as an encoder-decoder with skip connections, with
  trainable transfers and smoothers, contracting for every parameter value
  (arXiv:2103.15419, Section 6).
"""

from .extrapolation import ExtrapolationNetwork as ExtrapolationNetwork
from .extrapolation import flux_magnitudes as flux_magnitudes
from .recurrent import RecurrentImplicitBlock as RecurrentImplicitBlock
from .unet import MultigridUNet as MultigridUNet
from .unet import energy_factor as energy_factor
from .unet import random_systems as random_systems
