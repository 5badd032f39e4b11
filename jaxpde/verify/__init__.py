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
    euclidean_gain as euclidean_gain,
)
from .energy import (
    l2_norm as l2_norm,
)
from .energy import (
    norm_ratios as norm_ratios,
)
from .energy import (
    worst_norm_ratio as worst_norm_ratio,
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
from .tolerance import (
    Tolerance as Tolerance,
)
from .tolerance import (
    block_error as block_error,
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
