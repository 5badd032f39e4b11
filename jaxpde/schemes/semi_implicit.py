r"""The semi-implicit step: the diffusivity explicit, the flux implicit.

$$(I + \tau K^\top G(u) K)\, u^{k+1} = u^k, \qquad G(u) = \operatorname{diag}\big(g(|Ku|^2)\big).$$

$A = K^\top G K$ is symmetric positive semidefinite ($g \ge 0$), so
$\|(I + \tau A)^{-1}\| \le 1$: the step is Euclidean stable for every $\tau > 0$
(`proofs/semi-implicit-stability.md`). The linear system is solved by a tridiagonal
solve (the kernel of lineax's `Tridiagonal`) when $K$ is a two-tap single-channel stencil
that is not periodic (so $A$ is tridiagonal, e.g. $D_1$ with neumann boundary), a
Cholesky factorisation for a dense `Matrix` $K$, lineax's conjugate gradients (or
multigrid) otherwise. The system is assembled here as a lineax operator (`diffusion_system`);
a multigrid solver assembles its own (`AbstractMultigrid.assemble`: the banded stencil of
`diffusion_stencil` for `Multigrid`, the stencil field of `diffusion_stencil_2d` for
`Multigrid2D` on images).

Reference: Weickert, Romeny, Viergever, "Efficient and reliable schemes for nonlinear
diffusion filtering", IEEE TIP 1998; arXiv:2103.15419, Section 5.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._bounds import l2_norm
from .._checks import (
    check_int,
    check_positive_float,
    check_rtol,
    check_signal,
    positive_array,
)
from ..blocks import check_operator_and_flux
from ..fluxes import AbstractFlux, Frozen
from ..operators import AbstractOperator, Derivative, Matrix, Stencil
from ._base import AbstractScheme, concrete_time, resolve_steps
from ._solution import Result, Solution
from .banded import BandedStencil
from .multigrid import AbstractMultigrid


def default_rtol(dtype, condition: ArrayLike = 1.0) -> Array:
    """The default relative tolerance of the solves, $1000\\,\\varepsilon\\,c$: a residual
    that rounding lets a solver reach when the operator has norm (up to rounding) at most
    $c$, e.g. $c = 1 + \\tau L \\||K|\\|^2$ for $I + \\tau K^\\top G K$ (`condition_bound`)."""
    return 1000 * float(np.finfo(dtype).eps) * jnp.asarray(condition, dtype)


def condition_bound(op: AbstractOperator, slope: Array, tau: Array) -> Array:
    """$1 + \\tau\\, b\\, \\||K|\\|^2$ (Schur's bound of $|K|$, `op.abs_norm_bound()`): bounds the
    norm of $I + \\tau K^\\top D K$ for $0 \\le D \\le b$, and the rounding of its products."""
    return 1 + tau * slope * op.abs_norm_bound() ** 2


def _is_tridiagonal(op: AbstractOperator) -> bool:
    stencil = op.stencil if isinstance(op, Derivative) else op
    return (
        isinstance(stencil, Stencil) and stencil.kernel.ndim == 1 and stencil.size == 2
        and stencil.boundary != "periodic"
    )


def _tridiagonal_solve(system: lx.TridiagonalLinearOperator, rhs: Float[Array, " n"]) -> Float[Array, " n"]:
    """Solve the tridiagonal `system` for `rhs` with `jax.lax.linalg.tridiagonal_solve`, the
    kernel of lineax's `Tridiagonal` solver (differentiable, batched by `vmap`). Not through
    `lineax.linear_solve`: that compares the structure of `rhs`, which inside `jax.shard_map`
    carries the mesh's sharding, with the operator's, which a `TridiagonalLinearOperator`
    builds from shape and dtype alone, and refuses every sharded solve."""
    zero = jnp.zeros((1,), rhs.dtype)
    lower = jnp.concatenate([zero, system.lower_diagonal.astype(rhs.dtype)])
    upper = jnp.concatenate([system.upper_diagonal.astype(rhs.dtype), zero])
    diagonal = system.diagonal.astype(rhs.dtype)
    return jax.lax.linalg.tridiagonal_solve(lower, diagonal, upper, rhs[:, None])[:, 0]


def vector_structure(x: Array) -> jax.ShapeDtypeStruct:
    """The structure of `x` as lineax compares it: shape, dtype and sharding. Inside
    `jax.shard_map` every traced value carries the mesh's sharding, so a structure built
    from shape and dtype alone differs from that of a right-hand side."""
    return jax.eval_shape(lambda: x)


def diffusion_system(
    op: AbstractOperator, flux: Frozen, tau: Array, structure: jax.ShapeDtypeStruct
) -> lx.AbstractLinearOperator:
    r"""$I + \tau K^\top G K$ as a lineax operator, with $G$ the frozen diffusivity of `flux`
    (tridiagonal where `_is_tridiagonal(op)`, a symmetric positive definite function
    operator otherwise; `structure`: the shape and dtype of $u$).

    The function operator's input structure is that of its own product,
    `jax.eval_shape(matvec, structure)`: input, output and a right-hand side traced in the
    same context then agree, sharding included (inside `jax.shard_map` lineax refuses a
    symmetric operator whose structures differ, and a right-hand side that differs)."""

    def matvec(v):
        return v + tau.astype(v.dtype) * op.T(flux(op(v)))

    if _is_tridiagonal(op):
        # Three products with the probes sum_{j = r (mod 3)} e_j read the band exactly.
        band = BandedStencil.from_matvec(matvec, structure.shape[0], 1, False, structure.dtype)
        lower, diagonal, upper = band.diagonals  # A[j, j - 1], A[j, j], A[j, j + 1]
        return lx.TridiagonalLinearOperator(diagonal, lower[1:], upper[:-1])
    tags = (lx.symmetric_tag, lx.positive_semidefinite_tag)
    return lx.FunctionLinearOperator(matvec, jax.eval_shape(matvec, structure), tags)


def solve_diffusion_system(
    op: AbstractOperator,
    flux: Frozen,
    tau: Array,
    rhs: Float[Array, "*shape"],
    *,
    rtol: float | Float[Array, ""] | None = None,
    max_steps: int | None = None,
    throw: bool = True,
    multigrid: AbstractMultigrid | None = None,
) -> Solution:
    r"""Solve $(I + \tau K^\top G K)\,x = $ `rhs` (see `diffusion_system`): with a
    tridiagonal solve for two-tap stencils that are not periodic, by a Cholesky
    factorisation of the assembled matrix for a dense `Matrix` $K$, iteratively otherwise. The
    iterative solvers, conjugate gradients or `multigrid` cycles (`Multigrid` for single-channel
    stencils, `Multigrid2D` for the image gradient), stop at
    a Euclidean residual of `rtol * ||rhs||` (`None`: `default_rtol` with `condition_bound`)
    or after `max_steps` (`None`: 10 times the unknowns for CG, the configuration's
    `max_cycles` for multigrid); the result is `successful` when the recomputed residual is
    within twice that (else `max_steps_reached`). Returns a `Solution` whose `iterations` are
    the conjugate-gradient iterations or multigrid cycles (0 for the direct solvers) and whose
    `residual` is the Euclidean $\|b - (I + \tau K^\top G K)x\|$, recomputed.
    Differentiable: the iterative solve is a `jax.lax.custom_linear_solve`, so tangents and
    cotangents are solved with the same rule for their own right-hand sides."""
    system = diffusion_system(op, flux, tau, vector_structure(rhs)) if multigrid is None else None
    if multigrid is None and isinstance(op, Matrix):
        # A dense K: Cholesky of the assembled matrix, no iteration (under vmap an
        # iterative solve runs until the slowest system of the batch has converged).
        matrix = op.matrix.astype(rhs.dtype)
        g = flux.diffusivity(jnp.zeros(op.out_shape, rhs.dtype))
        assembled = jnp.eye(matrix.shape[1], dtype=rhs.dtype) + tau.astype(rhs.dtype) * (matrix.T * g[None, :]) @ matrix
        x = cholesky_solve(assembled, rhs)
        residual = l2_norm(rhs - system.mv(x))
        ok = jnp.all(jnp.isfinite(x))
        steps = jnp.array(0)
    elif isinstance(system, lx.TridiagonalLinearOperator):
        x = _tridiagonal_solve(system, rhs)
        residual = l2_norm(rhs - system.mv(x))
        ok = jnp.all(jnp.isfinite(x))
        steps = jnp.array(0)
    else:
        if rtol is None:
            rtol = default_rtol(rhs.dtype, condition_bound(op, flux.sector_bound(), tau))

        def matvec(v):
            return v + tau.astype(v.dtype) * op.T(flux(op(v)))

        if multigrid is None:
            max_steps = 10 * rhs.size if max_steps is None else max_steps

            def solve(matvec, b):
                operator = lx.FunctionLinearOperator(matvec, vector_structure(b), system.tags)
                solution = lx.linear_solve(operator, b, euclidean_cg(rtol, b, max_steps), throw=False)
                return solution.value, solution.stats["num_steps"]
        else:
            if max_steps is not None:
                multigrid = dataclasses.replace(multigrid, max_cycles=max_steps)
            A = multigrid.assemble(op, flux, tau)
            hierarchy = multigrid.hierarchy(A)

            def solve(matvec, b):
                del matvec  # the cycles use the levels of the same matrix
                solution = multigrid.solve(A, b, hierarchy=hierarchy, rtol=jax.lax.stop_gradient(rtol), throw=False)
                return solution.value, solution.iterations

        x, steps = jax.lax.custom_linear_solve(matvec, rhs, solve, symmetric=True, has_aux=True)
        residual = l2_norm(rhs - matvec(x))
        ok = residual <= 2 * jax.lax.stop_gradient(rtol) * l2_norm(rhs)
    result = Result.where(ok, Result.successful, Result.max_steps_reached)
    if throw:
        x = result.error_if(x, ~ok)
    return Solution(x, result, steps, residual)


# Blocks of at most this size are factorised column by column; larger ones recursively.
_CHOLESKY_BLOCK = 16


def inverse_cholesky_factor(matrix: Float[Array, "n n"]) -> Float[Array, "n n"]:
    r"""$L^{-1}$ for the Cholesky factor $L$ of $A$ = `matrix`, recursively by halves:
    $L_{21} = A_{21}L_{11}^{-\top}$, $L_{22} = \mathrm{chol}(A_{22} - L_{21}L_{21}^\top)$ and
    $(L^{-1})_{21} = -L_{22}^{-1}L_{21}L_{11}^{-1}$, so that most of the work is matrix products;
    blocks of at most `_CHOLESKY_BLOCK` columns by a `lax.fori_loop` over the columns (then
    over the rows of $L^{-1}$). A non-positive pivot gives NaN."""
    n = matrix.shape[0]
    if n > _CHOLESKY_BLOCK:
        k = (n + 1) // 2
        inverse11 = inverse_cholesky_factor(matrix[:k, :k])
        lower21 = matrix[k:, :k] @ inverse11.T
        inverse22 = inverse_cholesky_factor(matrix[k:, k:] - lower21 @ lower21.T)
        zero = jnp.zeros((k, n - k), matrix.dtype)
        return jnp.block([[inverse11, zero], [-(inverse22 @ lower21) @ inverse11, inverse22]])
    index = jnp.arange(n)

    def column(j, lower):
        row = jnp.where(index < j, lower[j], 0)
        pivot = jnp.sqrt(matrix[j, j] - jnp.sum(row * row))
        below = (matrix[:, j] - lower @ row) / pivot
        return lower.at[:, j].set(jnp.where(index > j, below, jnp.where(index == j, pivot, 0)))

    lower = jax.lax.fori_loop(0, n, column, jnp.zeros_like(matrix))

    def row(i, inverse):  # L X = I, one row of X at a time
        return inverse.at[i].set(((index == i).astype(matrix.dtype) - lower[i] @ inverse) / lower[i, i])

    return jax.lax.fori_loop(0, n, row, jnp.zeros_like(matrix))


def cholesky_solve(matrix: Float[Array, "n n"], rhs: Float[Array, " n"]) -> Float[Array, " n"]:
    r"""Solve $A x = b$ for symmetric positive definite $A$: a recursive (blocked) Cholesky
    factorisation with the inverse factor, $L^{-1}$ (`inverse_cholesky_factor`: mostly
    matrix products, the $O(n)$ column loop only within blocks of 16 columns),
    $x = L^{-\top}L^{-1}b$ and one step of iterative refinement with the residual $b - Ax$
    (products with a triangular inverse err by a factor of the condition number; the
    refinement brings the residual back to rounding level). Batched by `vmap`. Derivatives
    by the implicit function theorem (`jax.lax.custom_linear_solve`: tangents and cotangents
    are solved with the same factor, the factorisation loop is not differentiated).
    Written with XLA operations only, without LAPACK custom calls: programs with those
    were seen to hang on XLA:CPU when several threads ran them from the persistent
    compilation cache (as `jaxpde certify` does). A non-positive pivot gives NaN, never a
    wrong finite answer."""
    matrix, rhs = jnp.asarray(matrix), jnp.asarray(rhs)
    fixed = jax.lax.stop_gradient(matrix)
    inverse = inverse_cholesky_factor(fixed)

    def solve(_, b):
        x = inverse.T @ (inverse @ b)
        return x + inverse.T @ (inverse @ (b - fixed @ x))

    return jax.lax.custom_linear_solve(lambda x: matrix @ x, rhs, solve, symmetric=True)


def euclidean_cg(rtol: float | Float[Array, ""], rhs: Array, max_steps: int) -> lx.CG:
    """Conjugate gradients that stop at $\\|r\\|_2 \\le$ `rtol` $\\|b\\|_2$. (lineax scales the
    residual entrywise by `atol + rtol * |b_i|`, which is stricter than a relative
    Euclidean residual and never met where $b_i = 0$; an absolute tolerance in the
    Euclidean norm is the relative one.)"""
    # A stopping rule is not differentiated (lineax refuses tangents in the solver).
    atol = jax.lax.stop_gradient(jnp.maximum(rtol * l2_norm(rhs), jnp.finfo(rhs.dtype).tiny))
    return lx.CG(rtol=0.0, atol=atol, norm=l2_norm, max_steps=max_steps)


class SemiImplicitScheme(AbstractScheme):
    """Semi-implicit steps $u \\mapsto (I + \\tau K^\\top G(u) K)^{-1} u$.

    **Arguments:**

    - `op`, `flux`: the operator $K$ and the flux $\\Phi$.
    - `tau`: any step size $> 0$ (the step is stable for all of them).
    - `rtol`, `max_steps`: the conjugate-gradient tolerance (Euclidean norm of the
      residual relative to the right-hand side; `None`: $1000\\varepsilon(1 + \\tau L\\||K|\\|^2)$,
      what rounding lets the solver reach) and step limit (`None`: 10 times the unknowns);
      unused when the system is tridiagonal.
    - `multigrid`: solve with these multigrid cycles (`jaxpde.schemes.Multigrid` for
      single-channel stencils, `jaxpde.schemes.Multigrid2D` for the image gradient) instead of
      lineax; `max_steps` then limits the cycles.
    - `throw`: raise when the linear solve fails (otherwise return its iterate).
    """

    op: AbstractOperator
    flux: AbstractFlux
    tau: Float[Array, ""]
    rtol: float | None = eqx.field(static=True)
    max_steps: int | None = eqx.field(static=True)
    throw: bool = eqx.field(static=True)
    multigrid: AbstractMultigrid | None

    def __init__(
        self,
        op: AbstractOperator,
        flux: AbstractFlux,
        tau: ArrayLike,
        *,
        rtol: float | None = None,
        max_steps: int | None = None,
        throw: bool = True,
        multigrid: AbstractMultigrid | None = None,
    ):
        check_operator_and_flux(op, flux)
        if multigrid is not None:
            if not isinstance(multigrid, AbstractMultigrid):
                raise TypeError(
                    "`multigrid` must be a `jaxpde.schemes.Multigrid` or `Multigrid2D` or None, "
                    f"got {type(multigrid).__name__}."
                )
            multigrid.check_operator(op)
        self.op = op
        self.flux = flux
        self.tau = positive_array("tau", tau, "the semi-implicit step is stable for every tau > 0.")
        check_rtol(rtol)
        self.rtol = rtol
        self.max_steps = None if max_steps is None else check_int("max_steps", max_steps, minimum=1)
        self.throw = bool(throw)
        self.multigrid = multigrid

    @eqx.filter_jit
    def solve_step(self, u: Float[Array, "*shape"]) -> Solution:
        """One step as a `Solution`: with its result code, solver iterations and residual (one
        compiled program per shape, also when called eagerly)."""
        check_signal("u", u, self.op.in_shape)
        frozen = Frozen(self.flux, self.op(u))
        return solve_diffusion_system(
            self.op, frozen, self.tau, u, rtol=self.rtol, max_steps=self.max_steps, throw=self.throw,
            multigrid=self.multigrid,
        )

    @property
    def time_step(self) -> float | Float[Array, ""]:
        """$\\tau$ (a Python float when concrete)."""
        return concrete_time(self.tau)

    @property
    def evaluations_per_step(self) -> None:
        """`None`: the linear solver's iterations vary (`solve_step(u).iterations`)."""
        return None

    def step(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """One step (raises when the linear solve fails and `throw=True`)."""
        return self.solve_step(u).value

    def default_steps(self, t_end: float) -> int:
        """One step: the step is stable for every $\\tau$."""
        check_positive_float("t_end", t_end)
        return 1

    def for_time(self, t_end: float, *, steps: int | None = None) -> "SemiImplicitScheme":
        """The scheme whose `steps` equal steps of size `t_end / steps` reach `t_end` (`None`: one
        step); the solver configuration is kept."""
        t_end, steps = resolve_steps(self, t_end, steps)
        return eqx.tree_at(lambda s: s.tau, self, jnp.asarray(t_end / steps, self.tau.dtype))
