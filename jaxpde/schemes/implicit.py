r"""The fully implicit step $v = u - \tau K^\top \Phi(K v)$, a recurrent block.

Every solution is Euclidean stable for every $\tau > 0$: with
$\langle Kv, \Phi(Kv)\rangle \ge 0$ (sector condition),
$\|v\|^2 = \langle v, u\rangle - \tau\langle Kv, \Phi(Kv)\rangle \le \|v\|\,\|u\|$
(`proofs/implicit-stability.md`). Two solvers:

- `"fixed-point"`: the recurrent block $v \leftarrow u - \tau K^\top\Phi(Kv)$ with a skip
  from the input $u$. A contraction with factor $q = \tau\,\mathrm{Lip}(\Phi)\|K\|^2$;
  refused for $q \ge 1$ unless `allow_nonconvergent=True`
  (`proofs/fixed-point-contraction.md`).
- `"lagged-diffusivity"`: $v \leftarrow (I + \tau K^\top G(v) K)^{-1} u$, a semi-implicit
  step per iteration. When $g$ does not increase in $s^2$ (all fluxes of
  `jaxpde.fluxes`), each iteration minimises a quadratic majoriser of
  $\frac12\|v - u\|^2 + \tau\sum\Psi(Kv)$, so it descends for every $\tau$.

Both stop when the residual $\|v - u + \tau K^\top\Phi(Kv)\|$ is at most
`atol + rtol * ||u||` and report a `Result` code (`solve_step` returns a `Solution`). Gradients use the implicit function
theorem: one linear solve with $I + \tau K^\top \operatorname{diag}(\Phi'(Kv)) K$ instead
of backpropagation through the iterations.

Reference: arXiv:2103.15419, Section 5; Bai, Kolter, Koltun, "Deep equilibrium
models", NeurIPS 2019 (implicit gradients).
"""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, ArrayLike, Float

from .._bounds import l2_norm
from .._checks import (
    check_int,
    check_positive_float,
    check_rtol,
    check_signal,
    concrete_value,
    positive_array,
)
from ..blocks import check_operator_and_flux
from ..fluxes import AbstractFlux, Frozen
from ..operators import AbstractOperator
from ._base import AbstractScheme, concrete_time, resolve_steps
from ._solution import Result, Solution
from .semi_implicit import (
    condition_bound,
    default_rtol,
    euclidean_cg,
    solve_diffusion_system,
    vector_structure,
)

SOLVERS = ("auto", "fixed-point", "lagged-diffusivity")


def implicit_residual(op: AbstractOperator, flux: AbstractFlux, tau: Array, u: Array, v: Array) -> Array:
    """$v - u + \\tau K^\\top \\Phi(K v)$: zero exactly at a solution of the implicit step."""
    return v - u + tau.astype(v.dtype) * op.T(flux(op(v)))


def contraction_factor(op: AbstractOperator, flux: AbstractFlux, tau: ArrayLike) -> Array:
    """$q = \\tau\\,\\mathrm{Lip}(\\Phi)\\,\\|K\\|^2$ (with the certified `op.norm_bound()`): the
    fixed-point iteration contracts by $q$ per iteration when $q < 1$."""
    return tau * flux.lipschitz() * op.norm_bound() ** 2


class ImplicitScheme(AbstractScheme):
    """Implicit steps $u \\mapsto v$ with $v = u - \\tau K^\\top\\Phi(Kv)$.

    **Arguments:**

    - `op`, `flux`: the operator $K$ and the flux $\\Phi$.
    - `tau`: any step size $> 0$.
    - `solver`: `"fixed-point"`, `"lagged-diffusivity"` or `"auto"` (the fixed point
      when it contracts, $q < 1$, else lagged diffusivity).
    - `rtol`, `atol`: stop when the residual is at most `atol + rtol * ||u||`;
      `rtol=None` means $1000\\varepsilon(1 + \\tau L\\||K|\\|^2)$, what rounding lets the residual
      reach ($\\varepsilon$ of the input's dtype).
    - `max_iterations`: the iteration limit (result `Result.max_steps_reached` beyond).
    - `throw`: `scheme(u)` raises when the solve fails; `solve_step` never does.
    - `allow_nonconvergent`: accept `"fixed-point"` with $q \\ge 1$ (with a warning), to
      study the iteration where it has no guarantee.

    `for_time` builds the scheme for another $\\tau$ with the same arguments: `"auto"` picks
    again, and `"fixed-point"` is checked again.
    """

    op: AbstractOperator
    flux: AbstractFlux
    tau: Float[Array, ""]
    solver: str = eqx.field(static=True)
    rtol: float | None = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_iterations: int = eqx.field(static=True)
    throw: bool = eqx.field(static=True)
    requested_solver: str = eqx.field(static=True)  # `solver` as passed ("auto" kept)
    allow_nonconvergent: bool = eqx.field(static=True)

    def __init__(
        self,
        op: AbstractOperator,
        flux: AbstractFlux,
        tau: ArrayLike,
        *,
        solver: str = "auto",
        rtol: float | None = None,
        atol: float = 0.0,
        max_iterations: int = 1000,
        throw: bool = True,
        allow_nonconvergent: bool = False,
    ):
        check_operator_and_flux(op, flux)
        if solver not in SOLVERS:
            raise ValueError(f"`solver` must be one of {SOLVERS}, got {solver!r}.")
        requested_solver = solver
        tau = positive_array("tau", tau, "the implicit step is stable for every tau > 0.")
        check_rtol(rtol)
        if atol < 0:
            raise ValueError(f"`atol` must be >= 0, got {atol!r}.")
        needs_q = solver != "lagged-diffusivity"
        q = concrete_value(contraction_factor(op, flux, tau)) if needs_q else None
        if solver == "auto":
            if q is None:
                raise ValueError("solver='auto' needs a concrete tau; pass solver= explicitly under jit.")
            solver = "fixed-point" if q < 1 else "lagged-diffusivity"
        if solver == "fixed-point" and q is not None and q >= 1:
            message = (
                f"the fixed-point iteration needs tau * Lip(Phi) * ||K||^2 < 1, got {float(q):.6g}; "
                "pass a smaller tau, solver='lagged-diffusivity' (any tau), or "
                "allow_nonconvergent=True to run it anyway."
            )
            if not allow_nonconvergent:
                raise ValueError(message)
            warnings.warn(message, stacklevel=2)
        self.op = op
        self.flux = flux
        self.tau = tau
        self.solver = solver
        self.rtol = rtol
        self.atol = float(atol)
        self.max_iterations = check_int("max_iterations", max_iterations, minimum=1)
        self.throw = bool(throw)
        self.requested_solver = requested_solver
        self.allow_nonconvergent = bool(allow_nonconvergent)

    def contraction_factor(self) -> Float[Array, ""]:
        """$q = \\tau\\,\\mathrm{Lip}(\\Phi)\\,\\|K\\|^2$ (see `contraction_factor`)."""
        return contraction_factor(self.op, self.flux, self.tau)

    def tolerance(self, u: Array) -> Array:
        """The residual at which the iteration stops: `atol + rtol * ||u||`."""
        if self.rtol is None:
            condition = condition_bound(self.op, self.flux.sector_bound(), self.tau.astype(u.dtype))
            return self.atol + default_rtol(u.dtype, condition) * l2_norm(u)
        return self.atol + self.rtol * l2_norm(u)

    def solve_step(self, u: Float[Array, "*shape"]) -> Solution:
        """One step as a `Solution` (`value` $v$, `result`, `iterations`, `residual`
        $\\|v - u + \\tau K^\\top\\Phi(Kv)\\|$); differentiable by the implicit function theorem."""
        check_signal("u", u, self.op.in_shape)
        value, (iterations, residual, finite) = _solve((self, u))
        tolerance = self.tolerance(u)
        result = Result.where(
            finite,
            Result.where(residual <= tolerance, Result.successful, Result.max_steps_reached),
            Result.nonfinite,
        )
        return Solution(value, result, iterations, residual)

    @property
    def time_step(self) -> float | Float[Array, ""]:
        """$\\tau$ (a Python float when concrete)."""
        return concrete_time(self.tau)

    @property
    def evaluations_per_step(self) -> None:
        """`None`: the iterations vary (`solve_step(u).iterations`)."""
        return None

    def step(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """One step (raises when the solve fails and `throw=True`)."""
        solution = self.solve_step(u)
        if self.throw:
            return solution.result.error_if(solution.value, solution.result != Result.successful)
        return solution.value

    def default_steps(self, t_end: float) -> int:
        """One step: the step is stable for every $\\tau$."""
        check_positive_float("t_end", t_end)
        return 1

    def for_time(self, t_end: float, *, steps: int | None = None) -> "ImplicitScheme":
        """The scheme whose `steps` equal steps of size `t_end / steps` reach `t_end` (`None`: one
        step), built with the arguments of this one (`"auto"` picks the solver again; a
        `ValueError` when `"fixed-point"` does not contract at the new step size, unless
        `allow_nonconvergent=True`)."""
        t_end, steps = resolve_steps(self, t_end, steps)
        return ImplicitScheme(
            self.op, self.flux, jnp.asarray(t_end / steps, self.tau.dtype), solver=self.requested_solver,
            rtol=self.rtol, atol=self.atol, max_iterations=self.max_iterations, throw=self.throw,
            allow_nonconvergent=self.allow_nonconvergent,
        )


def _iterate(scheme: ImplicitScheme, u: Array) -> tuple[Array, Array, Array]:
    """The solver loop: returns $v$, the iteration count and the residual norm."""
    op, flux, tau = scheme.op, scheme.flux, scheme.tau.astype(u.dtype)
    tolerance = scheme.tolerance(u)

    def residual_norm(v):
        return l2_norm(implicit_residual(op, flux, tau, u, v))

    if scheme.solver == "fixed-point":

        def update(v):
            return u - tau * op.T(flux(op(v)))

    else:
        # The inner solves ten times tighter than the outer tolerance, and never below what
        # rounding allows; a failed inner solve ends the iteration (result `nonfinite`).
        attainable = default_rtol(u.dtype, condition_bound(op, flux.sector_bound(), tau)) / 100
        inner_rtol = jnp.maximum(10 * attainable, tolerance / (10 * l2_norm(u)))

        def update(v):
            frozen = Frozen(flux, op(v))
            solution = solve_diffusion_system(op, frozen, tau, u, rtol=inner_rtol, throw=False)
            return jnp.where(solution.result == Result.successful, solution.value, jnp.nan)

    def keep_going(carry):
        _, residual, iterations = carry
        return (residual > tolerance) & (iterations < scheme.max_iterations) & jnp.isfinite(residual)

    def body(carry):
        v, _, iterations = carry
        v = update(v)
        return v, residual_norm(v), iterations + 1

    start = (u, residual_norm(u), jnp.array(0))
    v, residual, iterations = jax.lax.while_loop(keep_going, body, start)
    return v, iterations, residual


@eqx.filter_custom_vjp
def _solve(scheme_and_input, /):
    scheme, u = scheme_and_input
    v, iterations, residual = _iterate(scheme, u)
    finite = jnp.all(jnp.isfinite(v)) & jnp.isfinite(residual)
    return v, (iterations, residual, finite)


@_solve.def_fwd
def _solve_fwd(perturbed, scheme_and_input, /):
    del perturbed
    out = _solve(scheme_and_input)  # the primal computation, not differentiated
    return out, out[0]


@_solve.def_bwd
def _solve_bwd(v, grad_obj, perturbed, scheme_and_input, /):
    r"""Implicit function theorem: with $F(v; \theta, u) = v - u + \tau K^\top\Phi(Kv) = 0$,
    solve $(\partial_v F)^\top w = \bar v$ ($\partial_v F = I + \tau K^\top \operatorname{diag}(\Phi'(Kv))K$
    is symmetric) and return $-(\partial_{(\theta, u)} F)^\top w$."""
    del perturbed
    scheme, u = scheme_and_input
    cotangent = grad_obj[0]
    cotangent = jnp.zeros_like(v) if cotangent is None else cotangent

    def jacobian_vector(x):
        return jax.jvp(lambda y: implicit_residual(scheme.op, scheme.flux, scheme.tau, u, y), (v,), (x,))[1]

    # The structure of the operator's own product: sharding included, as lineax compares
    # it with the cotangent's (see `diffusion_system`).
    structure = jax.eval_shape(jacobian_vector, vector_structure(cotangent))
    # Symmetric; positive definite when the iteration contracts (q < 1) or the flux is
    # monotone, positive semidefinite at a local minimum of the step's energy (what lagged
    # diffusivity converges to). A failed solve raises instead of returning a wrong gradient.
    tags = (lx.symmetric_tag, lx.positive_semidefinite_tag)
    system = lx.FunctionLinearOperator(jacobian_vector, structure, tags)
    rtol = default_rtol(v.dtype, condition_bound(scheme.op, scheme.flux.lipschitz(), scheme.tau.astype(v.dtype)))
    w = lx.linear_solve(system, cotangent, euclidean_cg(rtol, cotangent, 10 * v.size)).value

    def residual_of(params):
        s, x = params
        return implicit_residual(s.op, s.flux, s.tau, x, v)

    _, pullback = eqx.filter_vjp(residual_of, (scheme, u))
    (grad,) = pullback(-w)
    return grad
