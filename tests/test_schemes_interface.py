"""Every registered scheme has the interface of `AbstractScheme`: `step`, `rollout`,
`for_time`, `solve` with one set of signatures, `solve` = `for_time` + `rollout`, and
`for_time(t_end, steps=M)` lands on `t_end`; every iterative solver returns one `Solution`."""

import collections.abc
import inspect

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpde
from jaxpde import Derivative, fluxes, stable_step_size
from jaxpde.schemes import (
    SCHEMES,
    AbstractScheme,
    ExplicitScheme,
    ImplicitScheme,
    Multigrid,
    Result,
    SemiImplicitScheme,
    Solution,
    diffusion_stencil,
    plan_cycles,
    solve_diffusion_system,
)
from jaxpde.schemes.cycle import AbstractCycleScheme

from .helpers import ALL_SCHEMES, example_scheme, few_examples, signals, tolerance

# The registered schemes that implement the interface, and those that do not yet (none).
ADOPTED = tuple(name for name, cls in ALL_SCHEMES.items() if issubclass(cls, AbstractScheme))
AWAITING = frozenset()
# The cycle schemes, whose `for_time`, `solve` and `rollout` accept the deprecated `cycles=` and
# `num_cycles=` for one release (`renamed_keyword`) around the implementation of the interface.
CYCLE_SCHEMES = ("fed", "fsi")
# A small fixed set of problems: (operator, flux), so that few programs compile.
PROBLEMS = {
    "D1-neumann-pm": (Derivative(1, 8, h=0.5), fluxes.PeronaMalik(1.0)),
    "D2-periodic-linear": (Derivative(2, 16, boundary="periodic"), fluxes.Linear(1.0)),
}
PARAMETERS = ("self", "u0", "t_end")


def _parameters(function) -> list[tuple[str, object, object]]:
    """(name, kind, default) of each parameter of `function`."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_registry_names_every_scheme():
    assert isinstance(SCHEMES, collections.abc.Mapping)
    with pytest.raises(TypeError):
        SCHEMES["other"] = ExplicitScheme  # read-only
    assert set(SCHEMES) == {"explicit", "fed", "fsi", "rkc", "semi-implicit", "implicit"}
    exported = {
        obj for name, obj in vars(jaxpde.schemes).items()
        if isinstance(obj, type) and name.endswith("Scheme") and obj is not AbstractScheme
    }
    assert exported == set(SCHEMES.values()), "a scheme class of jaxpde.schemes is missing from SCHEMES"
    assert set(SCHEMES) - set(ADOPTED) <= AWAITING, "every new scheme implements AbstractScheme"


@pytest.mark.parametrize("name", ADOPTED)
def test_unified_signatures(name):
    cls = SCHEMES[name]
    positional, keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
    empty = inspect.Parameter.empty
    assert _parameters(cls.step) == [("self", positional, empty), ("u", positional, empty)]
    assert _parameters(cls.for_time) == [("self", positional, empty), ("t_end", positional, empty), ("steps", keyword, None)]
    assert _parameters(cls.default_steps) == [("self", positional, empty), ("t_end", positional, empty)]
    # Implemented once, in the base class (the cycle schemes: behind the deprecated names).
    if name in CYCLE_SCHEMES:
        assert issubclass(cls, AbstractCycleScheme)
        for method in ("rollout", "solve"):
            assert getattr(cls, method) is not getattr(AbstractScheme, method)
            assert inspect.unwrap(getattr(cls, method)) is inspect.unwrap(getattr(AbstractScheme, method))
        assert cls.for_time is AbstractCycleScheme.for_time and cls.time_step is AbstractCycleScheme.time_step
    else:
        assert cls.rollout is AbstractScheme.rollout and cls.solve is AbstractScheme.solve
    assert cls.__call__ is AbstractScheme.__call__
    assert _parameters(AbstractScheme.solve) == [
        ("self", positional, empty), ("u0", positional, empty), ("t_end", positional, empty), ("steps", keyword, None)
    ]
    assert _parameters(AbstractScheme.rollout) == [
        ("self", positional, empty), ("u0", positional, empty), ("num_steps", positional, empty),
        ("save_every", keyword, None),
    ]


@pytest.mark.parametrize("name", ADOPTED)
def test_attributes_and_positional_steps_refused(name):
    op, flux = PROBLEMS["D1-neumann-pm"]
    scheme = example_scheme(name, op, flux)
    assert isinstance(scheme.time_step, float) and scheme.time_step > 0
    if name in ("fed", "fsi"):  # a step is a cycle
        assert scheme.time_step == pytest.approx(scheme.cycle_time, rel=1e-15)
        assert scheme.evaluations_per_step == scheme.cycle_length
    else:
        assert scheme.time_step == float(scheme.tau)
        expected = {"explicit": 1, "rkc": getattr(scheme, "stages", None), "semi-implicit": None, "implicit": None}
        assert scheme.evaluations_per_step == expected[name]
    u = jnp.linspace(-1.0, 1.0, 8)
    np.testing.assert_array_equal(scheme(u), scheme.step(u))
    with pytest.raises(TypeError):
        scheme.solve(u, 1.0, 3)  # `steps` is keyword-only
    with pytest.raises(ValueError, match="`steps`"):
        scheme.for_time(1.0, steps=0)
    with pytest.raises(ValueError, match="`t_end`"):
        scheme.solve(u, -1.0)


@hypothesis.given(
    name=st.sampled_from(ADOPTED),
    problem=st.sampled_from(sorted(PROBLEMS)),
    multiple=st.floats(0.3, 6.0),
    steps=st.sampled_from((None, 1, 2, 3)),
    data=st.data(),
)
@few_examples(12)
def test_solve_is_for_time_then_rollout(name, problem, multiple, steps, data):
    """For every registered scheme: `for_time(t_end, steps=M)` is a scheme of the same kind
    whose M steps advance t_end (M = `default_steps(t_end)` for None), and `solve` is its
    rollout."""
    op, flux = PROBLEMS[problem]
    scheme = example_scheme(name, op, flux)
    t_end = multiple * float(stable_step_size(op, flux))
    u0 = data.draw(signals(op.in_shape, decades=(-1.0, 1.0)))
    if name == "explicit" and steps is not None and t_end / steps > scheme.time_step * (1 + 1e-12):
        with pytest.raises(ValueError, match="stability bound"):  # the scheme is at its bound
            scheme.for_time(t_end, steps=steps)
        return
    planned = scheme.for_time(t_end, steps=steps)
    count = scheme.default_steps(t_end) if steps is None else steps
    assert type(planned) is type(scheme)
    assert count * planned.time_step == pytest.approx(t_end, rel=1e-13)
    solved = scheme.solve(u0, t_end, steps=steps)
    np.testing.assert_allclose(solved, planned.rollout(u0, count), **tolerance(np.float64))
    if steps is None:
        # The default: the fewest steps no larger than the scheme's own (explicit), else one.
        if name == "explicit":
            assert planned.time_step <= scheme.time_step * (1 + 1e-12)
            assert (count - 1) * scheme.time_step < t_end
        else:
            assert count == 1


@pytest.mark.parametrize("name", CYCLE_SCHEMES)
def test_cycle_for_time_plans_the_length_and_the_step(name):
    """`for_time(t_end, steps=M)` of a cycle scheme: the cycle length and the step-size limit of
    `plan_cycles`, the same configuration, and M cycle times that land on t_end; a step is a
    cycle, with `cycle_length` evaluations."""
    op, flux = PROBLEMS["D1-neumann-pm"]
    bound = float(stable_step_size(op, flux))
    configuration = {"fed": {"order": "kappa"}, "fsi": {"frozen": False}}[name]
    scheme = SCHEMES[name](op, flux, 0.8 * bound, cycle_length=3, **configuration)
    t_end = 37.3 * bound
    for steps in (1, 3, 7):
        planned = scheme.for_time(t_end, steps=steps)
        length, tau = plan_cycles(t_end, 0.8 * bound, steps)
        assert type(planned) is type(scheme) and length > 3
        assert planned.cycle_length == planned.evaluations_per_step == length
        assert float(planned.block.tau) == tau
        assert planned.time_step == planned.cycle_time == tau * (length**2 + length) / 3
        assert steps * planned.time_step == pytest.approx(t_end, rel=1e-14)
        assert all(getattr(planned, key) == value for key, value in configuration.items())
        assert not planned.block.allow_unstable
    assert scheme.default_steps(t_end) == 1
    assert scheme.for_time(t_end).cycle_length == plan_cycles(t_end, 0.8 * bound, 1)[0]
    # With a traced step-size limit the cycle time is traced too, and `for_time` cannot plan.
    traced = eqx.filter_jit(lambda s: s.time_step)(scheme)
    assert isinstance(traced, jax.Array) and float(traced) == pytest.approx(scheme.time_step, rel=1e-15)
    with pytest.raises(ValueError, match="`block.tau` is traced"):
        eqx.filter_jit(lambda s: s.for_time(t_end))(scheme)


def test_explicit_for_time_checks_larger_steps_again():
    op, flux = PROBLEMS["D1-neumann-pm"]
    scheme = ExplicitScheme(op, flux, 0.5 * stable_step_size(op, flux))
    bound = float(stable_step_size(op, flux))
    assert scheme.for_time(0.9 * bound, steps=1).time_step == pytest.approx(0.9 * bound)
    with pytest.raises(ValueError, match="stability bound"):
        scheme.for_time(3 * bound, steps=1)
    unstable = ExplicitScheme(op, flux, 0.5 * bound, allow_unstable=True)
    assert unstable.for_time(3 * bound, steps=1).time_step == pytest.approx(3 * bound)


def test_implicit_for_time_picks_its_solver_again():
    op, flux = PROBLEMS["D1-neumann-pm"]
    limit = float(1 / (flux.lipschitz() * op.norm_bound() ** 2))
    auto = ImplicitScheme(op, flux, 0.5 * limit)
    assert auto.solver == "fixed-point"
    assert auto.for_time(100 * limit).solver == "lagged-diffusivity"
    assert auto.for_time(0.25 * limit).solver == "fixed-point"
    fixed = ImplicitScheme(op, flux, 0.5 * limit, solver="fixed-point", rtol=1e-8, max_iterations=77)
    planned = fixed.for_time(0.25 * limit, steps=2)
    assert (planned.solver, planned.rtol, planned.max_iterations) == ("fixed-point", 1e-8, 77)
    with pytest.raises(ValueError, match="fixed-point iteration needs"):
        fixed.for_time(100 * limit)


def test_every_solver_returns_one_solution_type():
    op = Derivative(1, 16)
    flux = fluxes.PeronaMalik(1.0)
    u = jnp.sin(jnp.linspace(0.0, 6.0, 16))
    periodic = Derivative(2, 16, boundary="periodic")
    frozen = fluxes.Frozen(flux, periodic(u))
    solutions = {
        "implicit": ImplicitScheme(op, flux, 2.0).solve_step(u),
        "semi-implicit (tridiagonal)": SemiImplicitScheme(op, flux, 2.0).solve_step(u),
        "semi-implicit (CG)": solve_diffusion_system(periodic, frozen, jnp.asarray(2.0), u),
        "multigrid": Multigrid().solve(diffusion_stencil(periodic, frozen, 2.0), u),
    }
    for kind, solution in solutions.items():
        assert isinstance(solution, Solution), kind
        assert solution.result == Result.successful, kind
        assert solution.iterations.shape == () and jnp.issubdtype(solution.iterations.dtype, jnp.integer), kind
        assert float(solution.residual) >= 0, kind
    assert int(solutions["semi-implicit (tridiagonal)"].iterations) == 0  # a direct solve
    assert int(solutions["semi-implicit (CG)"].iterations) > 0
    history = solutions["multigrid"].history
    assert history is not None and history.shape == (Multigrid().max_cycles + 1,)
    assert solutions["implicit"].history is None
    assert Result[Result.max_steps_reached] and not Result[Result.successful]


def test_former_names_warn_and_agree():
    """`ExplicitScheme.num_steps` and `Solution.steps`, the names before the interface, still
    answer for one release, with a `DeprecationWarning` naming the new one."""
    op, flux = PROBLEMS["D1-neumann-pm"]
    scheme = ExplicitScheme(op, flux)
    with pytest.warns(DeprecationWarning, match="default_steps"):
        assert scheme.num_steps(3.0) == scheme.default_steps(3.0)
    solution = Solution(jnp.zeros(3), Result.successful, jnp.asarray(7), jnp.asarray(0.0))
    with pytest.warns(DeprecationWarning, match="iterations"):
        assert int(solution.steps) == 7
