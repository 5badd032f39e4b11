r"""Two-sided, certified bounds of the spectral norm $\|K\|_2$ of a linear operator.

`spectral_norm(op)` returns `lower <= ||K||_2 <= upper` for a jaxpde operator or any
linear callable. Upper bounds, by `method` (see `proofs/spectral-norm-bounds.md`):

- `"analytic"`: the closed forms of `Derivative.norm_bound()`;
- `"symbol"` (periodic stencils): $\|K\| = \max_q \|A(\theta_q)\|$ over the $n$ DFT
  frequencies (Sedghi, Gupta, Long, ICLR 2019, arXiv:1805.10408), evaluated with a
  rounding margin and Gram iteration per frequency for several channels;
- `"toeplitz"` (neumann / dirichlet stencils): $\|K\| \le \sup_\theta \|A(\theta)\|$,
  bounded from a grid of $N$ frequencies by the second-order estimate
  $\sup\|A\|^2 \le \max_q \|A(\theta_q)\|^2 + M(\pi/N)^2/2$,
  $M = \sum_{j,l}\|a_j\|\|a_l\|(j - l)^2$;
- `"gram"`: Gram iteration (`jaxpde.verify.gram_bound`) on the dense matrix;
- `"svd"`: a proven bound from LAPACK's SVD of the dense matrix: the computed factors
  $X = \hat U\hat\Sigma\hat V^\top$ (exact numbers) give $\|K\| \le \|X\| + \|K - X\|$, both terms bounded
  with the rounding of their evaluation (`svd_upper_bound`).

2-D stencils (`jaxpde.Stencil2D`) bound their norm with `symbol_norm_bound_2d`, the same
two arguments for the symbol $A(\theta_1, \theta_2)$ on the $H \times W$ DFT frequencies or
an $N \times N$ grid (error $M(\pi/N)^2$); `spectral_norm` uses it through `norm_bound()`.
Both symbol bounds live in `jaxpde._bounds.symbols` (the operators' `norm_bound()` needs
them) and are re-exported here.

Lower bound: the best $\|Kx\|/\|x\|$ over power iterates on $K^\top K$ (every iterate is
a valid lower bound), reduced by its own rounding error. For stencils the iteration
starts from the real Fourier mode at the maximising frequency, multiplied by the top
right singular vector of $A(\theta^*)$ (and a sine window for neumann / dirichlet).

`spectral_norm` dispatches on the type of `op` (`functools.singledispatch`): `Stencil`,
`Derivative`, any other `AbstractOperator`, and any other (callable) object. The
implementations are private modules: `_power` (power iteration, certified lower
bounds), `_stencil_bounds` (symbol bounds and Fourier starts), `_dense_bounds` (Gram
iteration and SVD on the dense matrix), `_callable` (linear callables).
"""

import dataclasses
import functools
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._bounds import GRAM_ITERATIONS, ceil_constant
from .._bounds.symbols import (
    ABS_ROUNDOFFS,
    PHASE_ROUNDOFFS,
    PRODUCT_PHASE_ROUNDOFFS,
    SYMBOL_CHUNK,
    symbol_norm_bound,
    symbol_norm_bound_2d,
    toeplitz_grid,
    toeplitz_grid_2d,
)
from .._checks import check_int
from ..operators import AbstractOperator, Derivative, Stencil
from ._callable import callable_power, linear_callable
from ._dense_bounds import (
    DENSE_GRAM_ITERATIONS,
    best_dense_lower,
    dense_gram,
    dense_matrix,
    matrix_lower,
    svd_upper_bound,
)
from ._power import operator_lower, operator_power, power_iterate, power_iteration
from ._stencil_bounds import stencil_bounds

__all__ = [
    "ABS_ROUNDOFFS",
    "DENSE_GRAM_ITERATIONS",
    "DENSE_LIMIT",
    "METHODS",
    "PHASE_ROUNDOFFS",
    "PRODUCT_PHASE_ROUNDOFFS",
    "SYMBOL_CHUNK",
    "SpectralNormBounds",
    "power_iterate",
    "power_iteration",
    "spectral_norm",
    "svd_upper_bound",
    "symbol_norm_bound",
    "symbol_norm_bound_2d",
    "toeplitz_grid",
    "toeplitz_grid_2d",
]

METHODS = ("auto", "analytic", "symbol", "toeplitz", "gram", "svd", "norm_bound")
# Largest number of rows or columns for which a dense matrix is materialised.
DENSE_LIMIT = 1024
_NO_UPPER = "none: no certified upper bound (callable larger than dense_limit)"


class SpectralNormBounds(eqx.Module):
    """`lower <= ||K||_2 <= upper`, with the input `vector` that attains `lower` and the
    `method` that produced `upper`."""

    lower: Float[Array, ""]
    upper: Float[Array, ""]
    vector: Float[Array, "*shape"]
    method: str = eqx.field(static=True)

    @property
    def relative_gap(self) -> Float[Array, ""]:
        """$(\\text{upper} - \\text{lower}) / \\text{upper}$."""
        return (self.upper - self.lower) / self.upper


@dataclasses.dataclass(frozen=True)
class _Options:
    """The arguments of `spectral_norm` besides `op` and `method`, checked."""

    iterations: int
    key: PRNGKeyArray
    in_shape: object
    transpose: Callable | None
    dense_limit: int
    gram_iterations: int | None

    @property
    def dense_steps(self) -> int:
        return DENSE_GRAM_ITERATIONS if self.gram_iterations is None else self.gram_iterations


def spectral_norm(
    op: AbstractOperator | Callable,
    *,
    method: str = "auto",
    iterations: int = 200,
    key: PRNGKeyArray | None = None,
    in_shape: tuple[int, ...] | ArrayLike | None = None,
    transpose: Callable | None = None,
    dense_limit: int = DENSE_LIMIT,
    gram_iterations: int | None = None,
) -> SpectralNormBounds:
    r"""Certified two-sided bounds $\text{lower} \le \|K\|_2 \le \text{upper}$.

    Upper bound by `method` (recorded in `.method`):

    - `"analytic"` (`Derivative`): its closed-form `norm_bound()`;
    - `"symbol"` (periodic stencils): $\max_q\|A(2\pi q/n)\|$, the exact norm;
    - `"toeplitz"` (neumann / dirichlet stencils): $\sup_\theta\|A(\theta)\|$ from a
      grid of $N$ frequencies with the second-order grid error $M(\pi/N)^2/2$;
    - `"gram"`: Gram iteration on the dense matrix (any operator or callable);
    - `"svd"`: $\hat s_1\|\hat U\|\|\hat V\| + \|K - \hat U\hat\Sigma\hat V^\top\|$ from LAPACK's SVD (dense),
      each factor bounded rigorously (`svd_upper_bound`);
    - `"norm_bound"` (other jaxpde operators): the operator's own `norm_bound()`;
    - `"auto"`: `Derivative` → the smaller of analytic and symbol / toeplitz;
      `Stencil` → symbol / toeplitz; another operator → `norm_bound`; a callable →
      gram if its size is at most `dense_limit`, else `upper = inf` (no certified
      upper bound exists then).

    Lower bound: the best computed $\|Kx\|/\|x\|$ over `iterations` power iterates on
    $K^\top K$, reduced by its rounding error $\rho\gamma_{N+4} + \gamma_r\||K|\|$. Stencils
    start from the real Fourier mode of the maximising frequency times the top right
    singular vector of $A(\theta^*)$ (sine-windowed for neumann / dirichlet); other
    operators from a random vector. `"svd"` evaluates at LAPACK's top right singular
    vector instead. For a callable the rounding of $\|Kx\|$ is certified through its
    dense matrix when one is built; above `dense_limit` only the norms' rounding is
    accounted for.

    **Arguments:**

    - `op`: a jaxpde `AbstractOperator`, or any linear callable `u -> K u` on one sample.
    - `method`: one of the above (`ValueError` if it does not apply to `op`).
    - `iterations`: power iterations for the lower bound, at least 1.
    - `key`: PRNG key of random starts (default `jax.random.key(0)`).
    - `in_shape`: callables only: the input shape, or an example array (shape and dtype).
    - `transpose`: callables only: the adjoint `v -> K^T v`; default
      `jax.linear_transpose`.
    - `dense_limit`: the most rows or columns for which `"gram"` / `"svd"` build a
      dense matrix.
    - `gram_iterations`: Gram steps (default 40 per symbol frequency, 20 for dense).

    **Returns:** a `SpectralNormBounds` with `.lower`, `.upper`, `.vector` (attaining
    `lower`), `.method`, `.relative_gap`.

    Reference: T. Alt, P. Peter, J. Weickert, K. Schrader, SSVM 2021, arXiv:2103.15419
    (the stable step size needs $\|K\|$); proofs in `proofs/spectral-norm-bounds.md`.
    """
    iterations = check_int("iterations", iterations, minimum=1)
    dense_limit = check_int("dense_limit", dense_limit, minimum=1)
    if gram_iterations is not None:
        gram_iterations = check_int("gram_iterations", gram_iterations, minimum=0)
    key = jax.random.key(0) if key is None else key
    options = _Options(iterations, key, in_shape, transpose, dense_limit, gram_iterations)
    return _spectral_norm(op, method, options)


# --- checks shared by every type of `op` -------------------------------------------------


def _check_method(op: object, method: str, applicable: tuple[str, ...]) -> None:
    if method not in applicable:
        raise ValueError(
            f"`method` = {method!r} does not apply to {type(op).__name__}"
            + (f" with boundary {op.boundary!r}" if hasattr(op, "boundary") else "")
            + f"; use one of {applicable}."
        )


def _check_dense(method: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...], dense_limit: int) -> None:
    if method in ("gram", "svd") and max(math.prod(in_shape), math.prod(out_shape)) > dense_limit:
        raise ValueError(
            f"`method` = {method!r} builds a dense {math.prod(out_shape)} x {math.prod(in_shape)} matrix, "
            f"above `dense_limit` = {dense_limit}; raise `dense_limit` or use method='auto'."
        )


def _check_operator(op: AbstractOperator, method: str, options: _Options, applicable: tuple[str, ...]) -> None:
    if options.in_shape is not None or options.transpose is not None:
        raise ValueError("`in_shape` and `transpose` are only for callables; a jaxpde operator knows both.")
    _check_method(op, method, applicable)
    _check_dense(method, op.in_shape, op.out_shape, options.dense_limit)


def _svd_bounds(apply: Callable, in_shape: tuple[int, ...], dtype, lower_at: Callable) -> SpectralNormBounds:
    """`"svd"`: the upper bound from LAPACK's SVD, the lower bound `lower_at(matrix, vector)` at
    its top right singular vector."""
    matrix = dense_matrix(apply, in_shape, dtype)
    upper, _, vector = svd_upper_bound(matrix)
    vector = jnp.asarray(vector.reshape(in_shape), dtype)
    upper = jnp.asarray(ceil_constant(upper, dtype))
    return SpectralNormBounds(lower=lower_at(matrix, vector), upper=upper, vector=vector, method="svd")


# --- one implementation per type of `op` ---------------------------------------------------


@functools.singledispatch
def _spectral_norm(op: object, method: str, options: _Options) -> SpectralNormBounds:
    """A user's linear callable: `"gram"` (dense) or no upper bound (`"none"`), or `"svd"`."""
    if not callable(op):
        raise TypeError(f"`op` must be a jaxpde operator or a linear callable, got {type(op).__name__}.")
    linear = linear_callable(op, options.in_shape, options.transpose)
    _check_method(op, method, ("auto", "gram", "svd"))
    if method == "auto":
        dense_size = max(math.prod(linear.in_shape), math.prod(linear.out_shape))
        method = "gram" if dense_size <= options.dense_limit else "none"
    _check_dense(method, linear.in_shape, linear.out_shape, options.dense_limit)
    if method == "svd":
        return _svd_bounds(linear.fn, linear.in_shape, linear.dtype, matrix_lower)
    ratio, vector = callable_power(linear, options.key, options.iterations)
    if method == "none":
        return SpectralNormBounds(
            lower=jnp.maximum(ratio, 0), upper=jnp.asarray(jnp.inf, linear.dtype), vector=vector, method=_NO_UPPER
        )
    upper, matrix = dense_gram(linear.fn, linear.in_shape, linear.dtype, options.dense_steps)
    lower, vector = best_dense_lower(matrix, vector, options.dense_steps)
    return SpectralNormBounds(lower=lower, upper=upper, vector=vector, method="gram")


@_spectral_norm.register(AbstractOperator)
def _operator_norm(op: AbstractOperator, method: str, options: _Options) -> SpectralNormBounds:
    """Any jaxpde operator: its own `norm_bound()`, or `"gram"` / `"svd"`; lower bound by
    power iteration from a random start."""
    _check_operator(op, method, options, ("auto", "norm_bound", "gram", "svd"))
    dtype = jnp.asarray(op.norm_bound()).dtype
    if method == "svd":
        return _svd_bounds(op, op.in_shape, dtype, lambda _, vector: operator_lower(op, vector))
    lower, vector = operator_power(op, options.key, options.iterations, dtype)
    if method == "gram":
        upper, _ = dense_gram(op, op.in_shape, dtype, options.dense_steps)
        return SpectralNormBounds(lower=lower, upper=upper, vector=vector, method="gram")
    return SpectralNormBounds(lower=lower, upper=op.norm_bound(), vector=vector, method="norm_bound")


def _symbol_norm(
    op: Stencil | Derivative, stencil: Stencil, method: str, options: _Options, analytic: bool
) -> SpectralNormBounds:
    """A 1-D stencil (`op` itself) or derivative (`op`, with its `stencil`): symbol /
    toeplitz, `"gram"` / `"svd"`, and for a derivative `"analytic"` (alone or, for
    `"auto"`, the smaller with the symbol's bound); lower bound from the Fourier start."""
    own = "symbol" if stencil.boundary == "periodic" else "toeplitz"
    _check_operator(op, method, options, ("auto", *(("analytic",) if analytic else ()), own, "gram", "svd"))
    dtype = stencil.kernel.dtype
    if method == "svd":
        return _svd_bounds(op, op.in_shape, dtype, lambda _, vector: operator_lower(op, vector))
    symbol_steps = GRAM_ITERATIONS if options.gram_iterations is None else options.gram_iterations
    symbol_upper, lower, vector = stencil_bounds(op, stencil, options.iterations, symbol_steps)
    if method == "gram":
        upper, _ = dense_gram(op, op.in_shape, dtype, options.dense_steps)
    elif method == "analytic":
        upper = jnp.asarray(op.norm_bound(), dtype)
    elif method == "auto" and analytic:
        upper = jnp.minimum(jnp.asarray(op.norm_bound(), dtype), symbol_upper)
        own = f"min(analytic, {own})"
    else:
        upper = symbol_upper
    return SpectralNormBounds(lower=lower, upper=upper, vector=vector, method=method if method in ("gram", "analytic") else own)


@_spectral_norm.register(Stencil)
def _stencil_norm(op: Stencil, method: str, options: _Options) -> SpectralNormBounds:
    return _symbol_norm(op, op, method, options, analytic=False)


@_spectral_norm.register(Derivative)
def _derivative_norm(op: Derivative, method: str, options: _Options) -> SpectralNormBounds:
    return _symbol_norm(op, op.stencil, method, options, analytic=True)
