"""The registry of time-stepping schemes, by short name: what tests, claims and benchmarks
iterate over instead of lists of their own."""

import types
from collections.abc import Mapping

import equinox as eqx

from .explicit import ExplicitScheme
from .fed import FEDScheme
from .fsi import FSIScheme
from .implicit import ImplicitScheme
from .rkc import RKCScheme
from .semi_implicit import SemiImplicitScheme

# Read-only. `Multigrid` is not here: it solves the linear system of a semi-implicit step
# (`SemiImplicitScheme(..., multigrid=Multigrid())`), it does not step in time.
SCHEMES: Mapping[str, type[eqx.Module]] = types.MappingProxyType(
    {
        "explicit": ExplicitScheme,
        "fed": FEDScheme,
        "fsi": FSIScheme,
        "rkc": RKCScheme,
        "semi-implicit": SemiImplicitScheme,
        "implicit": ImplicitScheme,
    }
)
