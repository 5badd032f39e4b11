"""Trainable networks built from diffusion blocks, stable for every parameter value.

- `DiffusionResNet`: diffusion blocks with trainable multi-channel stencils, learnable
  sector-bounded fluxes and step sizes tied to the stability bound
  (arXiv:2103.15419, Section 3); `ResNet`, the untied baseline without a guarantee.
- `DiffusionResNet2D`: the same on images, learned 2-D filters (Chen and Pock's trainable
  nonlinear diffusion, arXiv:1508.02848, with a stability certificate); `DnCNN`, the
  unconstrained image baseline (arXiv:1608.03981).
- `ExtrapolationNetwork`: FSI cycles with trainable stencils, fluxes and step sizes;
  the extrapolation is a skip connection over two layers (arXiv:2103.15419, Section 4).
- `RecurrentImplicitBlock`: the implicit step solved by a contracting recurrent block
  with a skip from the input, differentiated implicitly (arXiv:2103.15419, Section 5).
- `MultigridUNet`: a multigrid V-cycle as an encoder-decoder with skip connections, with
  trainable transfers and smoothers, contracting for every parameter value
  (arXiv:2103.15419, Section 6); `MultigridUNet2D`, the same for the black-box image
  multigrid (`jaxpde.schemes.Multigrid2D`).

Their stability certificates (`jaxpde.verify.stability_certificate`) and training with a
certificate after every epoch (`jaxpde.training.train`) build on `jaxpde.verify`, a layer
above this one.
"""

from ._common import BlockStack as BlockStack
from ._common import flux_magnitudes as flux_magnitudes
from ._common import parameter_count as parameter_count
from .extrapolation import ExtrapolationNetwork as ExtrapolationNetwork
from .recurrent import RecurrentImplicitBlock as RecurrentImplicitBlock
from .resnet import DiffusionResNet as DiffusionResNet
from .resnet import ResNet as ResNet
from .resnet2d import DiffusionResNet2D as DiffusionResNet2D
from .resnet2d import DnCNN as DnCNN
from .unet import MultigridUNet as MultigridUNet
from .unet import energy_factor as energy_factor
from .unet import random_systems as random_systems
from .unet2d import MultigridUNet2D as MultigridUNet2D
