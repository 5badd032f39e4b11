"""What every iterative solver of the schemes returns: one solution type, one result code.

The implicit step (`ImplicitScheme.solve_step`), the semi-implicit system
(`SemiImplicitScheme.solve_step`, `solve_diffusion_system`) and multigrid (`Multigrid.solve`)
all return a `Solution`, whose `result` is a `Result`. As in lineax and Diffrax, the solvers
report instead of raising where asked to (`throw=False`), and `result.error_if(x, pred)`
raises the item's message under `jit`.
"""

import warnings

import equinox as eqx
from jaxtyping import Array, Float, Int


class Result(eqx.Enumeration):
    """Why an iterative solve stopped. Compare with `==` (`solution.result ==
    Result.successful`); `Result[item]` is the message."""

    successful = ""
    max_steps_reached = (
        "An iterative solve did not reach its tolerance within the maximum number of iterations: raise it "
        "(`max_iterations` of `ImplicitScheme`, `max_steps` of `SemiImplicitScheme` and "
        "`solve_diffusion_system`, `max_cycles` of `Multigrid`) or loosen the tolerance; for the "
        "implicit step, solver='lagged-diffusivity' converges for every tau (or use a smaller tau for "
        "the fixed-point iteration)."
    )
    nonfinite = (
        "The implicit step produced non-finite values (the fixed-point iteration diverged, or a "
        "linear solve of the lagged-diffusivity iteration failed)."
    )


class Solution(eqx.Module):
    """The outcome of an iterative solve.

    **Attributes:**

    - `value`: the solution (the last iterate when the solve failed).
    - `result`: a `Result`.
    - `iterations`: the solver's iterations: fixed-point or lagged-diffusivity iterations of
      the implicit step, conjugate-gradient iterations or multigrid cycles of a linear
      system (0 for the direct solvers).
    - `residual`: the final Euclidean residual of the equation solved (`ImplicitScheme`:
      $\\|v - u + \\tau K^\\top\\Phi(Kv)\\|$; linear systems: $\\|b - Ax\\|$, recomputed).
    - `history`: `Multigrid.solve` only (else `None`): the relative residuals
      $\\|f - Ax_k\\| / \\|f\\|$ for $k = 0, \\dots,$ `iterations` (NaN beyond, up to `max_cycles`).
    """

    value: Array
    result: Result
    iterations: Int[Array, ""]
    residual: Float[Array, ""]
    history: Float[Array, " max_cycles_plus_one"] | None = None

    @property
    def steps(self) -> Int[Array, ""]:
        """The former name of `iterations` (read-only), deprecated: read `iterations`."""
        warnings.warn("`Solution.steps` is deprecated: read `Solution.iterations`.", DeprecationWarning, stacklevel=2)
        return self.iterations
