r"""The mathematics of certified norm bounds, below every operator.

- `rounding`: unit roundoff $\mathbf{u}$, $\gamma_p$, upward rounding (`inflation`,
  `round_up`, `ceil_constant`);
- `norms`: `l2_norm`;
- `schur`: Schur's bound $\sqrt{R\,C}$ from absolute row and column sums;
- `gram`: Gram iteration, a certified bound of $\|A\|_2$ for dense matrices;
- `symbols`: certified bounds of stencil norms from their DFT / Toeplitz symbols.

Imports nothing of jaxpde but `jaxpde._checks`; the operators' `norm_bound()` and
`jaxpde.verify` build on it (`proofs/spectral-norm-bounds.md`).
"""

from .gram import GRAM_ITERATIONS as GRAM_ITERATIONS
from .gram import gram_bound as gram_bound
from .gram import top_right_vector as top_right_vector
from .norms import l2_norm as l2_norm
from .rounding import ceil_constant as ceil_constant
from .rounding import gamma as gamma
from .rounding import inflation as inflation
from .rounding import round_up as round_up
from .rounding import unit_roundoff as unit_roundoff
from .schur import schur_norm_bound as schur_norm_bound
from .symbols import symbol_norm_bound as symbol_norm_bound
from .symbols import symbol_norm_bound_2d as symbol_norm_bound_2d
