"""Trainable networks built from diffusion blocks, stable for every parameter value.

- `ExtrapolationNetwork`: FSI cycles with trainable stencils, fluxes and step sizes;
  the extrapolation is a skip connection over two layers (arXiv:2103.15419, Section 4).
- `RecurrentImplicitBlock`: the implicit step solved by a contracting recurrent block
  with a skip from the input, differentiated implicitly (arXiv:2103.15419, Section 5).
"""

from .extrapolation import ExtrapolationNetwork as ExtrapolationNetwork
from .extrapolation import flux_magnitudes as flux_magnitudes
from .recurrent import RecurrentImplicitBlock as RecurrentImplicitBlock
