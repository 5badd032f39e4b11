"""jaxpde: numerical schemes for nonlinear diffusion as stable neural-network blocks.

Reference: Alt, Peter, Weickert, Schrader, "Translating Numerical Concepts for PDEs
into Neural Architectures", SSVM 2021, arXiv:2103.15419.
"""

import importlib.metadata

from . import denoising as denoising
from . import fluxes as fluxes
from . import images as images
from . import nn as nn
from . import schemes as schemes
from . import sharding as sharding
from . import training as training
from . import verify as verify
from .blocks import DiffusionBlock as DiffusionBlock
from .blocks import stable_step_size as stable_step_size
from .operators import (
    BOUNDARIES as BOUNDARIES,
)
from .operators import (
    AbstractOperator as AbstractOperator,
)
from .operators import (
    Derivative as Derivative,
)
from .operators import (
    Matrix as Matrix,
)
from .operators import (
    Stencil as Stencil,
)
from .operators2d import (
    Gradient as Gradient,
)
from .operators2d import (
    GradientAdjoint as GradientAdjoint,
)
from .operators2d import (
    Stencil2D as Stencil2D,
)
from .verify.networks import (
    StabilityCertificate as StabilityCertificate,
)
from .verify.networks import (
    stability_certificate as stability_certificate,
)

try:
    __version__ = importlib.metadata.version("jaxpde")
except importlib.metadata.PackageNotFoundError:  # run from a source tree (PYTHONPATH)
    __version__ = "0+source"
