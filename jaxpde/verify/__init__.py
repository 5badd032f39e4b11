"""Verification: norm bounds, gains, monitors, tolerances and certificates."""

from .certificate import (
    CaseResult as CaseResult,
    Certificate as Certificate,
    markdown_report as markdown_report,
    markdown_table as markdown_table,
)
from .energy import (
    euclidean_gain as euclidean_gain,
    l2_norm as l2_norm,
    norm_ratios as norm_ratios,
    worst_norm_ratio as worst_norm_ratio,
)
from .spectral import (
    power_iteration as power_iteration,
    spectral_norm as spectral_norm,
    SpectralNormBounds as SpectralNormBounds,
)
from .tolerance import (
    block_error as block_error,
    entrywise_tolerance as entrywise_tolerance,
    mean_tolerance as mean_tolerance,
    norm_ratio_tolerance as norm_ratio_tolerance,
    Tolerance as Tolerance,
)
