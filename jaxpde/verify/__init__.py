"""Verification: norm bounds, gains, monitors, tolerances and certificates."""

from .certificate import (
    CaseResult as CaseResult,
)
from .certificate import (
    Certificate as Certificate,
)
from .certificate import (
    markdown_report as markdown_report,
)
from .certificate import (
    markdown_table as markdown_table,
)
from .energy import (
    convex_sum as convex_sum,
)
from .energy import (
    euclidean_gain as euclidean_gain,
)
from .energy import (
    flux_energy as flux_energy,
)
from .energy import (
    l2_norm as l2_norm,
)
from .energy import (
    largest_increase as largest_increase,
)
from .energy import (
    mass as mass,
)
from .energy import (
    norm_ratios as norm_ratios,
)
from .energy import (
    trajectory_values as trajectory_values,
)
from .energy import (
    variance as variance,
)
from .energy import (
    worst_norm_ratio as worst_norm_ratio,
)
from .falsify import (
    Falsification as Falsification,
)
from .falsify import (
    SearchRegion as SearchRegion,
)
from .falsify import (
    falsify as falsify,
)
from .falsify import (
    falsify_energy as falsify_energy,
)
from .falsify import (
    falsify_gain as falsify_gain,
)
from .falsify import (
    falsify_lipschitz as falsify_lipschitz,
)
from .gram import (
    gram_bound as gram_bound,
)
from .hypotheses import (
    ConstantCheck as ConstantCheck,
)
from .hypotheses import (
    check_flux as check_flux,
)
from .hypotheses import (
    check_operator as check_operator,
)
from .lipschitz import (
    LocalLipschitz as LocalLipschitz,
)
from .lipschitz import (
    block_lipschitz_bound as block_lipschitz_bound,
)
from .lipschitz import (
    composition_lipschitz_bound as composition_lipschitz_bound,
)
from .lipschitz import (
    local_lipschitz as local_lipschitz,
)
from .lipschitz import (
    nonexpansive_step_size as nonexpansive_step_size,
)
from .networks import (
    PROVEN_NETWORKS as PROVEN_NETWORKS,
)
from .networks import (
    StabilityCertificate as StabilityCertificate,
)
from .networks import (
    stability_certificate as stability_certificate,
)
from .spectral import (
    SpectralNormBounds as SpectralNormBounds,
)
from .spectral import (
    power_iteration as power_iteration,
)
from .spectral import (
    spectral_norm as spectral_norm,
)
from .spectral import (
    symbol_norm_bound as symbol_norm_bound,
)
from .spectral import (
    symbol_norm_bound_2d as symbol_norm_bound_2d,
)
from .target import (
    TargetReport as TargetReport,
)
from .target import (
    certify_callable as certify_callable,
)
from .tolerance import (
    Tolerance as Tolerance,
)
from .tolerance import (
    block_error as block_error,
)
from .tolerance import (
    convex_sum_increase_tolerance as convex_sum_increase_tolerance,
)
from .tolerance import (
    energy_increase_tolerance as energy_increase_tolerance,
)
from .tolerance import (
    entrywise_tolerance as entrywise_tolerance,
)
from .tolerance import (
    mean_tolerance as mean_tolerance,
)
from .tolerance import (
    norm_ratio_tolerance as norm_ratio_tolerance,
)
from .tolerance import (
    variance_increase_tolerance as variance_increase_tolerance,
)
