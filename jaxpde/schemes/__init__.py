"""Time-stepping schemes built from diffusion blocks: explicit, FED and FSI cycles,
the fully implicit and the semi-implicit step."""

from .cycle import cycle_length_for as cycle_length_for
from .cycle import cycle_polynomial as cycle_polynomial
from .cycle import cycle_time as cycle_time
from .cycle import plan_cycles as plan_cycles
from .cycle import three_term_cycle as three_term_cycle
from .cycle import unstable_cycle_length as unstable_cycle_length
from .explicit import ExplicitScheme as ExplicitScheme
from .fed import FEDScheme as FEDScheme
from .fed import fed_cycle as fed_cycle
from .fed import fed_order as fed_order
from .fed import fed_step_sizes as fed_step_sizes
from .fed import rounding_amplification as rounding_amplification
from .fsi import FSIScheme as FSIScheme
from .fsi import fsi_cycle as fsi_cycle
from .fsi import fsi_rounding_amplification as fsi_rounding_amplification
from .fsi import fsi_weights as fsi_weights
from .implicit import ImplicitResult as ImplicitResult
from .implicit import ImplicitScheme as ImplicitScheme
from .implicit import ImplicitSolution as ImplicitSolution
from .implicit import contraction_factor as contraction_factor
from .implicit import implicit_residual as implicit_residual
from .rollout import rollout as rollout
from .semi_implicit import SemiImplicitScheme as SemiImplicitScheme
from .semi_implicit import diffusion_system as diffusion_system
from .semi_implicit import solve_diffusion_system as solve_diffusion_system
