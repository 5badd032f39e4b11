"""The semi-implicit step and the fully implicit step (fixed point, lagged diffusivity).

References are dense NumPy solves of (I + tau K^T G K) x = u with K built from the
stencil definition (`helpers.operator_matrix`) and G from NumPy diffusivities.
"""

import math

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

from jaxpde import Derivative, Matrix, Stencil, fluxes, stable_step_size
from jaxpde.fluxes import Frozen
from jaxpde.schemes import (
    ImplicitScheme,
    Result,
    SemiImplicitScheme,
    contraction_factor,
    diffusion_system,
    implicit_residual,
)
from jaxpde.schemes.semi_implicit import (
    cholesky_solve,
    condition_bound,
    default_rtol,
    solve_diffusion_system,
)

from .helpers import (
    DENSE_DIFFUSIVITY,
    derivatives,
    few_examples,
    flux_kinds,
    operator_matrix,
    parameters,
    signals,
    stencils,
    tolerance,
)

TOL = tolerance(np.float64)
# Explicit solver tolerances (residual / ||u||) where a test compares with a dense solve to
# a fixed accuracy: conjugate gradients 1e-10, the implicit step 1e-9 (its inner solves
# 1e-10). The defaults scale with 1 + tau L |||K|||^2 (tested at the end).
CG_RTOL = 1e-10
IMPLICIT_RTOL = 1e-9
GRID_SIZES = st.sampled_from((16, 32))
# One operator for the implicit-step tests, so that they share compiled programs.
OP = Derivative(1, 32, h=1 / 32)


def _l2(u) -> float:
    return float(np.linalg.norm(np.asarray(u, np.float64)))


def _distance(a, b) -> float:
    """||a - b||, in NumPy (no eager JAX operations to compile)."""
    return _l2(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def _sharp_step(op, flux) -> float:
    """2 / (L sigma_max^2), the explicit bound with the exact norm (SVD)."""
    return 2 / (float(flux.sector_bound()) * np.linalg.norm(operator_matrix(op), 2) ** 2)


def _dense_semi_implicit(op, kind, parameter, tau, u) -> np.ndarray:
    """(I + tau K^T G K)^{-1} u with G = diag(g(|K u|^2)), dense."""
    matrix = operator_matrix(op)
    flat = np.asarray(u, np.float64).reshape(-1)
    s = matrix @ flat
    diffusivity = DENSE_DIFFUSIVITY[kind](s * s, parameter)
    system = np.eye(flat.size) + tau * matrix.T @ (diffusivity[:, None] * matrix)
    return np.linalg.solve(system, flat).reshape(np.shape(u))


def _dense_residual(op, kind, parameter, tau, u, v) -> np.ndarray:
    """v - u + tau K^T Phi(K v), dense."""
    matrix = operator_matrix(op)
    v = np.asarray(v, np.float64).reshape(-1)
    s = matrix @ v
    flux = DENSE_DIFFUSIVITY[kind](s * s, parameter) * s
    return v - np.asarray(u, np.float64).reshape(-1) + tau * matrix.T @ flux


@eqx.filter_jit
def _semi_step(scheme, u):
    return scheme(u)


@eqx.filter_jit
def _implicit_step(scheme, u):
    return scheme.solve_step(u)


@eqx.filter_jit
def _implicit_call(scheme, u):
    return scheme(u)


@eqx.filter_jit
def _both_steps(semi, implicit, u):
    return semi(u), implicit.solve_step(u)


def _signal(n: int, seed: int) -> jax.Array:
    """A noisy ramp with a jump: slopes on both sides of the flux parameters used here."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, n)
    return jnp.asarray(np.where(x < 0.5, 0.0, 1.0) + 0.5 * x + 0.05 * rng.standard_normal(n))


# --- semi-implicit -----------------------------------------------------------------


def _semi_cases():
    """(name, operator, flux, tridiagonal path, conserves mass)."""
    rng = np.random.default_rng(0)
    pm, charbonnier = fluxes.PeronaMalik(0.7), fluxes.Charbonnier(0.7)
    return [
        ("D1-neumann", Derivative(1, 16), pm, True, True),
        ("D1-dirichlet", Derivative(1, 16, boundary="dirichlet"), charbonnier, True, False),
        ("D1-periodic", Derivative(1, 16, boundary="periodic"), pm, False, True),
        ("D2-neumann", Derivative(2, 16), charbonnier, False, True),
        ("stencil-1to2-periodic", Stencil(rng.standard_normal((2, 1, 3)), 16), pm, False, False),
        ("matrix", Matrix(rng.standard_normal((20, 16))), charbonnier, False, False),
    ]


def _system(op, flux, tau, u):
    """The linear system of a semi-implicit step from u."""
    return diffusion_system(op, Frozen(flux, op(u)), tau, jax.ShapeDtypeStruct(u.shape, u.dtype))


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=1)  # one program for all step sizes
def _semi_steps(schemes, inputs):
    return [scheme(u) for scheme, u in zip(schemes, inputs)]


def test_semi_implicit_step_is_the_dense_solve():
    """Tridiagonal solves (two-tap stencils that are not periodic) and conjugate gradients
    (all others) against dense solves, for tau from 0.3 to 1e4 x the explicit bound."""
    cases = _semi_cases()
    rng = np.random.default_rng(1)
    inputs = [jnp.asarray(rng.standard_normal(op.in_shape)) for _, op, *_ in cases]
    bounds = [_sharp_step(op, flux) for _, op, flux, *_ in cases]
    for (name, op, flux, tridiagonal, _), u, bound in zip(cases, inputs, bounds):
        # The solver path, traced only (no compilation).
        system = eqx.filter_eval_shape(_system, op, flux, jnp.asarray(bound), u)
        assert isinstance(system, lx.TridiagonalLinearOperator) == tridiagonal, name
    for factor in (0.3, 30.0, 1e4):  # one compiled program: tau is an array
        schemes = [
            SemiImplicitScheme(op, flux, factor * bound, rtol=CG_RTOL) for (_, op, flux, *_), bound in zip(cases, bounds)
        ]
        outputs = _semi_steps(schemes, inputs)
        # ||x - x*|| <= ||(I + tau A)^{-1}|| ||residual|| <= CG_RTOL ||u||, plus the rounding
        # of the dense solve, ~cond * eps with cond <= 1 + 2 * factor.
        error_bound = CG_RTOL + 10 * (1 + 2 * factor) * np.finfo(np.float64).eps
        for (name, op, flux, _, conserves_mass), u, bound, x in zip(cases, inputs, bounds, outputs):
            expected = _dense_semi_implicit(op, type(flux), 0.7, factor * bound, u)
            assert _distance(x, expected) <= error_bound * _l2(u), (name, factor)
            assert _l2(x) <= _l2(u) * (1 + CG_RTOL + TOL["rtol"]), (name, factor)
            if conserves_mass:  # 1^T K^T = 0: the sum of the values is kept
                mass_change = abs(np.sum(np.asarray(x)) - np.sum(np.asarray(u)))
                assert mass_change <= error_bound * math.sqrt(u.size) * _l2(u), (name, factor)


_operators = st.one_of(derivatives(sizes=GRID_SIZES), stencils(sizes=GRID_SIZES)).filter(
    lambda op: float(op.norm_bound()) > 1e-100  # a zero stencil has no finite step bound
)
# tau / (explicit bound), log-uniform in [1e-2, 1e4], often the largest.
_step_factors = st.one_of(st.just(1e4), st.floats(-2.0, 4.0).map(lambda e: 10.0**e))


@few_examples(2)  # each example compiles two solvers for its operator shape
@hypothesis.given(op=_operators, kind=flux_kinds, parameter=parameters, factor=_step_factors, data=st.data())
def test_semi_implicit_and_implicit_steps_are_euclidean_stable_property(op, kind, parameter, factor, data):
    """Any tau up to 1e4 x the explicit bound. Semi-implicit: ||(I + tau A)^{-1} u|| <= ||u||
    up to the solver's residual CG_RTOL ||u||. Implicit: ||v|| <= ||u|| + ||v - u + tau
    K^T Phi(K v)|| for any v, from the sector condition; at a solution ||v|| <= ||u||."""
    flux = kind(parameter)
    u = data.draw(signals(op.in_shape))
    tau = factor * stable_step_size(op, flux)
    semi = SemiImplicitScheme(op, flux, tau, rtol=CG_RTOL)
    x, solution = _both_steps(semi, ImplicitScheme(op, flux, tau, rtol=IMPLICIT_RTOL), u)
    assert np.all(np.isfinite(np.asarray(x)))
    assert _l2(x) <= _l2(u) * (1 + CG_RTOL + TOL["rtol"])
    assert solution.result == Result.successful
    assert _l2(solution.value) <= (_l2(u) + float(solution.residual)) * (1 + TOL["rtol"])


# --- fully implicit ----------------------------------------------------------------


def test_contraction_factor_value():
    op = Derivative(1, 16, h=0.5, boundary="periodic")  # ||K|| = 2 / h = 4 exactly
    for flux, lipschitz in ((fluxes.Linear(3.0), 3.0), (fluxes.PeronaMalik(0.7), 1.0)):
        assert float(flux.lipschitz()) == pytest.approx(lipschitz, rel=TOL["rtol"])
        q = float(contraction_factor(op, flux, 0.01))
        assert q == pytest.approx(0.01 * lipschitz * 16, rel=TOL["rtol"])
        assert q >= 0.01 * lipschitz * 16  # certified: never below the true factor
        scheme = ImplicitScheme(op, flux, 0.01, solver="lagged-diffusivity")
        assert float(scheme.contraction_factor()) == q


@pytest.mark.parametrize("q", [0.5, 0.9])
def test_fixed_point_and_lagged_diffusivity_agree(q):
    lam = 30.0  # slopes of the signal below and above lam: Phi' changes sign
    flux = fluxes.PeronaMalik(lam)
    tau = q / (float(flux.lipschitz()) * float(OP.norm_bound()) ** 2)
    u = _signal(32, 2)
    fixed = ImplicitScheme(OP, flux, tau, solver="fixed-point")
    lagged = ImplicitScheme(OP, flux, tau, solver="lagged-diffusivity")
    assert float(fixed.contraction_factor()) == pytest.approx(q, rel=TOL["rtol"])
    by_fixed, by_lagged = _implicit_step(fixed, u), _implicit_step(lagged, u)
    tolerance_u = float(fixed.tolerance(u))
    for solution in (by_fixed, by_lagged):
        assert solution.result == Result.successful
        assert float(solution.residual) <= tolerance_u
        # The residual of the implicit equation, recomputed densely.
        recomputed = _l2(_dense_residual(OP, fluxes.PeronaMalik, lam, tau, u, solution.value))
        assert recomputed <= tolerance_u + TOL["atol"] * _l2(u)
        assert recomputed == pytest.approx(float(solution.residual), rel=1e-3, abs=TOL["atol"] * _l2(u))
    # F(v) = v - u + tau K^T Phi(K v) is strongly monotone with constant 1 - q, so
    # ||v1 - v2|| <= (||F(v1)|| + ||F(v2)||) / (1 - q).
    slack = (float(by_fixed.residual) + float(by_lagged.residual)) / (1 - q)
    assert _distance(by_fixed.value, by_lagged.value) <= slack + TOL["atol"] * _l2(u)
    # The contraction bound on the iteration count: residual_k <= q^k residual_0.
    initial = _l2(_dense_residual(OP, fluxes.PeronaMalik, lam, tau, u, u))
    assert int(by_fixed.iterations) <= math.ceil(math.log(tolerance_u / initial) / math.log(q)) + 1
    assert int(by_fixed.iterations) >= 1


def test_fixed_point_beyond_contraction():
    """q >= 1: refused, or run with a warning when allowed; the result code tells what
    happened, `solve_step` does not raise, `scheme(u)` does (throw=True)."""
    flux = fluxes.Linear(1.0)
    limit = 1 / float(OP.norm_bound()) ** 2  # q = 1: the top mode of K^T K oscillates
    u = _signal(32, 3)
    for factor in (1.0, 4.0):
        with pytest.raises(ValueError, match="fixed-point iteration needs"):
            ImplicitScheme(OP, flux, factor * limit, solver="fixed-point")
    with pytest.warns(UserWarning, match="fixed-point iteration needs"):
        neutral = ImplicitScheme(OP, flux, limit, solver="fixed-point", allow_nonconvergent=True)
    with pytest.warns(UserWarning, match="fixed-point iteration needs"):
        diverging = ImplicitScheme(OP, flux, 4 * limit, solver="fixed-point", allow_nonconvergent=True)
    assert neutral.solver == diverging.solver == "fixed-point"

    solution = _implicit_step(neutral, u)
    assert solution.result == Result.max_steps_reached
    assert int(solution.iterations) == neutral.max_iterations
    assert np.all(np.isfinite(np.asarray(solution.value)))
    assert float(solution.residual) > float(neutral.tolerance(u))

    solution = _implicit_step(diverging, u)
    assert solution.result == Result.nonfinite
    assert int(solution.iterations) < diverging.max_iterations

    with pytest.raises(eqx.EquinoxRuntimeError, match="did not reach its tolerance"):
        _implicit_call(neutral, u)
    with pytest.raises(eqx.EquinoxRuntimeError, match="non-finite"):
        _implicit_call(diverging, u)


def test_auto_solver_choice():
    flux = fluxes.PeronaMalik(0.5)
    limit = 1 / (float(flux.lipschitz()) * float(OP.norm_bound()) ** 2)
    assert ImplicitScheme(OP, flux, 0.99 * limit).solver == "fixed-point"
    assert ImplicitScheme(OP, flux, limit).solver == "lagged-diffusivity"  # q = 1 (rounded up): no contraction
    assert ImplicitScheme(OP, flux, 1e4 * limit).solver == "lagged-diffusivity"
    with pytest.raises(ValueError, match="concrete tau"):
        jax.jit(lambda tau: ImplicitScheme(OP, flux, tau).tau)(0.5 * limit)
    with pytest.raises(ValueError, match="`solver`"):
        ImplicitScheme(OP, flux, limit, solver="newton")
    with pytest.raises(ValueError, match="`tau`"):
        ImplicitScheme(OP, flux, -1.0)


def test_gradients_by_the_implicit_function_theorem():
    """d<w, v>/du and d<w, v>/dtau against central differences, for the fixed point at
    q = 0.5 and lagged diffusivity at q = 5. Perona-Malik has Phi' >= -1/8, so
    I + tau K^T diag(Phi') K stays positive definite for q < 8."""
    flux = fluxes.PeronaMalik(30.0)  # the flux of `test_fixed_point_and_lagged_diffusivity_agree`
    unit = 1 / (float(flux.lipschitz()) * float(OP.norm_bound()) ** 2)
    schemes = [
        ImplicitScheme(OP, flux, 0.5 * unit, solver="fixed-point"),
        ImplicitScheme(OP, flux, 5.0 * unit, solver="lagged-diffusivity"),
    ]
    rng = np.random.default_rng(4)
    u = np.asarray(_signal(32, 4))
    w, d = rng.standard_normal(32), rng.standard_normal(32)

    def objectives(taus, inputs):  # the sum of <w, v> over the two solvers
        values = [
            _implicit_step(eqx.tree_at(lambda s: s.tau, scheme, tau), x).value
            for scheme, tau, x in zip(schemes, taus, inputs)
        ]
        return sum(jnp.sum(jnp.asarray(w) * v) for v in values)

    taus = [scheme.tau for scheme in schemes]
    grad_taus, grad_inputs = eqx.filter_jit(jax.grad(objectives, argnums=(0, 1)))(taus, [jnp.asarray(u)] * 2)

    for scheme, grad_tau, grad_u in zip(schemes, grad_taus, grad_inputs):

        def value(tau, u, scheme=scheme):  # the compiled solves of the other tests
            solution = _implicit_step(eqx.tree_at(lambda s: s.tau, scheme, jnp.asarray(tau)), jnp.asarray(u))
            return float(np.dot(w, np.asarray(solution.value)))

        # Central differences: truncation O(h^2) and solver error (residual <= 1000 eps
        # ||u||) over h, both far below the tolerance.
        h, tau = 1e-5, float(scheme.tau)
        by_differences = (value(tau, u + h * d) - value(tau, u - h * d)) / (2 * h)
        assert float(np.dot(np.asarray(grad_u), d)) == pytest.approx(by_differences, rel=1e-6), scheme.solver
        by_differences = (value(tau * (1 + h), u) - value(tau * (1 - h), u)) / (2 * h * tau)
        assert float(grad_tau) == pytest.approx(by_differences, rel=1e-6), scheme.solver


def test_linear_flux_implicit_equals_semi_implicit_equals_dense_solve():
    L = 2.0
    flux = fluxes.Linear(L)
    limit = 1 / (L * float(OP.norm_bound()) ** 2)
    u = _signal(32, 5)
    cases = ((0.5 * limit, ("fixed-point", "lagged-diffusivity")), (1e4 * limit, ("lagged-diffusivity",)))
    for tau, solvers in cases:
        expected = _dense_semi_implicit(OP, fluxes.Linear, L, tau, u)
        semi = _semi_step(SemiImplicitScheme(OP, flux, tau), u)  # tridiagonal: a direct solve
        assert _distance(semi, expected) <= TOL["atol"] * _l2(u)
        for solver in solvers:
            scheme = ImplicitScheme(OP, flux, tau, solver=solver)
            solution = _implicit_step(scheme, u)
            assert solution.result == Result.successful
            # ||v - v*|| <= ||(I + tau L K^T K)^{-1}|| ||residual|| <= ||residual||.
            assert _distance(solution.value, expected) <= float(scheme.tolerance(u)) + TOL["atol"] * _l2(u)
            assert _distance(solution.value, semi) <= float(scheme.tolerance(u)) + TOL["atol"] * _l2(u)


def test_wrong_input_shape():
    flux = fluxes.Charbonnier(1.0)
    for scheme in (SemiImplicitScheme(OP, flux, 0.1), ImplicitScheme(OP, flux, 0.1)):
        with pytest.raises(ValueError, match="`u` must have shape \\(32,\\)"):
            scheme(jnp.ones(31))


# --- large steps: default tolerances below the rounding floor ------------------------


def _rounded_residual(residual, exact) -> float:
    """||residual(exact)|| as jaxpde evaluates it (one compiled program), at the exact
    solution rounded to float64."""
    return _l2(jax.jit(residual)(jnp.asarray(exact)))


def test_semi_implicit_default_tolerance_is_attainable_for_large_steps():
    """At tau = 1e4 x the explicit bound (condition number 2e4), the residual of the
    rounded exact solution is below the default CG tolerance 1000 eps (1 + tau L A^2) ||u||,
    and the default solve succeeds and matches the dense solution."""
    op = Derivative(2, 16, boundary="periodic")  # the conjugate-gradient path
    flux = fluxes.Linear(1.0)
    tau = jnp.asarray(1e4 * float(stable_step_size(op, flux)))
    u = _signal(16, 7)
    exact = _dense_semi_implicit(op, fluxes.Linear, 1.0, float(tau), u)

    def residual(x):
        return _system(op, flux, tau, u).mv(x) - u

    condition = condition_bound(op, flux.sector_bound(), tau)
    assert _rounded_residual(residual, exact) <= float(default_rtol(np.float64, condition)) * _l2(u)
    x = SemiImplicitScheme(op, flux, tau)(u)
    assert _l2(np.asarray(x) - exact) <= 1e-8 * _l2(exact)


def test_implicit_default_tolerance_is_attainable_for_large_steps():
    """At tau = 1e6 x the explicit bound, the residual of the rounded exact solution
    (linear flux) is below the default stopping tolerance."""
    flux = fluxes.Linear(1.0)
    tau = jnp.asarray(1e6 * float(stable_step_size(OP, flux)))
    u = _signal(32, 6)
    exact = _dense_semi_implicit(OP, fluxes.Linear, 1.0, float(tau), u)

    def residual(v):
        return implicit_residual(OP, flux, tau, u, v)

    assert _rounded_residual(residual, exact) <= float(ImplicitScheme(OP, flux, tau).tolerance(u))


@jax.jit
def _solve_and_jacobian(matrix, rhs):
    jacobian = jax.vmap(jax.grad(lambda b, i: cholesky_solve(matrix, b)[i]), in_axes=(None, 0))
    return cholesky_solve(matrix, rhs), jacobian(rhs, jnp.arange(rhs.size)), cholesky_solve(-matrix, rhs)


@few_examples(10)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([1, 4, 17]))
def test_cholesky_solve_matches_numpy(seed, n):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    matrix = a @ a.T + 10.0 ** rng.uniform(-3, 1) * np.eye(n)
    rhs = rng.standard_normal(n)
    x, jacobian, indefinite = _solve_and_jacobian(jnp.asarray(matrix), jnp.asarray(rhs))
    condition = np.linalg.cond(matrix)
    np.testing.assert_allclose(matrix @ np.asarray(x), rhs, rtol=0, atol=1e-10 * condition)
    # Differentiable in the right-hand side (and batched): d x / d b = A^{-1}.
    np.testing.assert_allclose(jacobian, np.linalg.inv(matrix), rtol=1e-8, atol=1e-8 * condition)
    # Not positive definite: NaN, never a finite wrong answer.
    assert not np.all(np.isfinite(indefinite))


def test_dense_operator_systems_are_solved_directly():
    # A `Matrix` K: the assembled system, no iteration (steps 0), same answer as NumPy.
    rng = np.random.default_rng(0)
    K = rng.standard_normal((9, 7))
    op, flux = Matrix(K), Frozen(fluxes.PeronaMalik(0.5), jnp.asarray(rng.standard_normal(9)))
    u = jnp.asarray(rng.standard_normal(7))
    solution = solve_diffusion_system(op, flux, jnp.asarray(3.0), u)
    g = np.asarray(flux.values)
    expected = np.linalg.solve(np.eye(7) + 3.0 * K.T @ (g[:, None] * K), np.asarray(u))
    assert int(solution.iterations) == 0 and solution.result == Result.successful
    np.testing.assert_allclose(solution.value, expected, **tolerance(np.float64))
