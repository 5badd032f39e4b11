r"""Hypothesis strategies and assertions for your own property-based stability suites.

Strategies draw jaxpde objects (signals, derivative operators, stencils, fluxes, step
sizes below and above the stability bound, diffusion blocks) from small fixed sets of
shapes, so that JAX compiles a handful of programs however many examples run.
Assertions check one property on one input and, when it fails, show the witness:

    @hypothesis.given(block=jaxpde.testing.blocks(), data=st.data())
    def test_my_block(block, data):
        u = data.draw(jaxpde.testing.signals(block.op.in_shape))
        jaxpde.testing.assert_euclidean_stable(block, u)

Requires `hypothesis` (`pip install 'jaxpde[test]'`).
"""

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

try:
    import hypothesis.extra.numpy as hnp
    import hypothesis.strategies as st
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "jaxpde.testing needs hypothesis: pip install 'jaxpde[test]' (or pip install hypothesis)."
    ) from error

from .blocks import DiffusionBlock, stable_step_size
from .fluxes import FLUXES, AbstractFlux
from .operators import BOUNDARIES, AbstractOperator, Derivative, Stencil
from .verify.energy import l2_norm
from .verify.spectral import spectral_norm
from .verify.target import gain_tolerance
from .verify.tolerance import gamma, unit_roundoff

SIZES = (5, 8, 17, 32)
SIGNAL_KINDS = ("random", "alternating", "step", "smooth", "constant")

# --- strategies ----------------------------------------------------------------

orders = st.sampled_from((1, 2, 3))
boundaries = st.sampled_from(BOUNDARIES)
sizes = st.sampled_from(SIZES)
flux_kinds = st.sampled_from(FLUXES)
parameters = st.floats(0.05, 20.0)  # lambda, eps or L
spacings = st.sampled_from((1.0, 0.5, 0.1))
step_fractions = st.one_of(st.just(1.0), st.floats(0.01, 1.0))


@st.composite
def signals(draw, shape: tuple[int, ...], *, decades: tuple[float, float] = (-3.0, 3.0), dtype=np.float64):
    """Signals of shape `shape`: random, alternating (the highest frequency), a
    noisy step, a smooth wave, or constant; amplitude $10^{U(\\text{decades})}$."""
    size = math.prod(shape)
    kind = draw(st.sampled_from(SIGNAL_KINDS))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    grid = np.arange(size)
    x = {
        "random": lambda: rng.standard_normal(size),
        "alternating": lambda: (-1.0) ** grid,
        "step": lambda: np.where(grid < size // 2, -1.0, 1.0) + 0.01 * rng.standard_normal(size),
        "smooth": lambda: np.sin(2 * np.pi * (grid + rng.random()) / size),
        "constant": lambda: np.ones(size),
    }[kind]()
    amplitude = 10 ** draw(st.floats(*decades))
    # device_put, not jnp.asarray: no compilation inside a strategy.
    return jax.device_put(np.asarray((amplitude * x).reshape(shape), dtype))


@st.composite
def derivatives(draw, *, orders=orders, sizes=sizes, boundaries=boundaries, spacings=spacings):
    """`Derivative(order, n, h=h, boundary=boundary)` with n >= order + 1."""
    order = draw(orders)
    n = max(draw(sizes), order + 1)
    return Derivative(order, n, h=draw(spacings), boundary=draw(boundaries))


@st.composite
def stencils(draw, *, channels: bool = True, sizes=sizes, boundaries=boundaries, taps: float = 3.0):
    """`Stencil`s with taps in [-taps, taps], kernel sizes 1, 2, 3, 5, one channel or
    1 -> 2 and 2 -> 3 channels."""
    k = draw(st.sampled_from((1, 2, 3, 5)))
    shape = draw(st.sampled_from(((k,), (2, 1, k), (3, 2, k)) if channels else ((k,),)))
    kernel = draw(hnp.arrays(np.float64, shape, elements=st.floats(-taps, taps)))
    n = max(draw(sizes), k)
    return Stencil(kernel, n, boundary=draw(boundaries))


operators = st.one_of(derivatives(), stencils())


@st.composite
def fluxes(draw, *, kinds: Sequence[type] = FLUXES, parameters=parameters):
    """A flux of one of `kinds` with its parameter (L, lambda or eps) from `parameters`."""
    kind = draw(st.sampled_from(tuple(kinds)))
    return kind(draw(parameters))


any_flux = fluxes()


@st.composite
def stable_step_sizes(draw, op: AbstractOperator, flux: AbstractFlux, fractions=step_fractions):
    """$\\tau = \\text{fraction} \\cdot 2 / (L\\|K\\|^2)$ with fraction in (0, 1], often 1."""
    return float(draw(fractions) * stable_step_size(op, flux))


@st.composite
def unstable_step_sizes(draw, op: AbstractOperator, flux: AbstractFlux, factors=None):
    """Step sizes above the bound, $\\tau = \\text{factor} \\cdot 2 / (L\\|K\\|_{\\rm lower}^2)$
    with the power-iteration lower bound, so they exceed the sharp bound too."""
    factors = st.floats(1.01, 4.0) if factors is None else factors
    lower = float(spectral_norm(op).lower)
    return float(draw(factors) * 2 / (float(flux.sector_bound()) * lower**2))


@st.composite
def blocks(draw, *, operators=operators, fluxes=any_flux, fractions=step_fractions):
    """Stable `DiffusionBlock`s: tau is a fraction of the stability bound (operators
    with a norm bound below 1e-100, such as a zero kernel, are skipped: no finite
    step size is stable-bounded for them)."""
    op = draw(operators.filter(lambda op: float(op.norm_bound()) > 1e-100))
    flux = draw(fluxes)
    return DiffusionBlock(op, flux, draw(stable_step_sizes(op, flux, fractions)))


# --- assertions ----------------------------------------------------------------


def _describe(name: str, x) -> str:
    x = np.asarray(x)
    head = np.array2string(x.reshape(-1)[:8], precision=4, separator=", ")
    return f"{name}: shape {x.shape}, norm {np.linalg.norm(x):.6g}, first entries {head}"


def _default_rtol(f: Callable, u) -> float:
    """The derived rounding tolerance of a `DiffusionBlock`; for other callables
    $\\gamma_{4(N+1)}$, the rounding of a few sums over the input's N entries."""
    return gain_tolerance(f, int(np.size(u)), jnp.result_type(u)).value


def assert_euclidean_stable(f: Callable, u, *, rtol: float | None = None) -> float:
    """Assert $\\|f(u)\\| \\le (1 + \\text{rtol})\\|u\\|$; returns the ratio.

    `rtol` defaults to the derived rounding tolerance (see `_default_rtol`).
    """
    rtol = _default_rtol(f, u) if rtol is None else rtol
    out = f(u)
    ratio = float(l2_norm(out) / l2_norm(u))
    if not ratio <= 1 + rtol:
        raise AssertionError(
            f"not Euclidean stable: ||f(u)|| / ||u|| = {ratio:.17g} > 1 + {rtol:.3g}\n"
            f"  {_describe('u', u)}\n  {_describe('f(u)', out)}"
        )
    return ratio


def assert_nonexpansive(f: Callable, u, v, *, rtol: float | None = None) -> float:
    """Assert $\\|f(u) - f(v)\\| \\le (1 + \\text{rtol})\\|u - v\\|$; returns the quotient.

    The default tolerance scales the rounding of one evaluation by $(\\|u\\| + \\|v\\|) /
    \\|u - v\\|$ (a difference of nearby outputs loses relative accuracy)."""
    distance = float(l2_norm(u - v))
    if distance == 0:
        raise ValueError("`u` and `v` must differ: the Lipschitz quotient is undefined for u == v.")
    if rtol is None:
        spread = (float(l2_norm(u)) + float(l2_norm(v))) / distance
        rtol = _default_rtol(f, u) * max(spread, 1.0)
    fu, fv = f(u), f(v)
    quotient = float(l2_norm(fu - fv)) / distance
    if not quotient <= 1 + rtol:
        raise AssertionError(
            f"not non-expansive: ||f(u) - f(v)|| / ||u - v|| = {quotient:.17g} > 1 + {rtol:.3g}\n"
            f"  {_describe('u', u)}\n  {_describe('v', v)}\n  {_describe('f(u) - f(v)', fu - fv)}"
        )
    return quotient


def assert_energy_decays(f: Callable, energy: Callable, u, *, rtol: float | None = None) -> float:
    """Assert $E(f(u)) \\le E(u) + \\text{rtol}\\,(|E(u)| + |E(f(u))|)$; returns the change
    $E(f(u)) - E(u)$. Default `rtol`: $\\gamma_{4N}$ of the input's dtype."""
    rtol = gamma(4 * (np.size(u) + 1), jnp.result_type(u)) if rtol is None else rtol
    out = f(u)
    before, after = float(energy(u)), float(energy(out))
    if not after - before <= rtol * (abs(before) + abs(after)):
        raise AssertionError(
            f"energy increased: E(f(u)) - E(u) = {after - before:.6g} (E(u) = {before:.17g}, "
            f"E(f(u)) = {after:.17g}, tolerance {rtol:.3g} x (|E(u)| + |E(f(u))|))\n  {_describe('u', u)}"
        )
    return after - before


def assert_norm_bounds(op: AbstractOperator, *, rtol: float | None = None, dense_limit: int = 2048) -> tuple[float, float]:
    """Assert that `op.norm_bound()` is a valid upper bound of $\\|K\\|_2$: above the
    power-iteration lower bound and, for at most `dense_limit` entries, above the
    largest singular value of the dense matrix (NumPy's SVD). Returns (lower, upper)."""
    upper = float(op.norm_bound())
    dtype = jnp.result_type(op.norm_bound())
    rtol = 8 * (max(math.prod(op.in_shape), math.prod(op.out_shape)) + 1) * unit_roundoff(dtype) if rtol is None else rtol
    bounds = spectral_norm(op)
    lower = float(bounds.lower)
    checks = [("power-iteration lower bound", lower, bounds.vector)]
    if math.prod(op.in_shape) * math.prod(op.out_shape) <= dense_limit**2:
        matrix = np.asarray(op.as_matrix(), np.float64)
        _, singular, vt = np.linalg.svd(matrix)
        checks.append(("largest singular value (numpy SVD)", float(singular[0]), vt[0].reshape(op.in_shape)))
    for name, value, vector in checks:
        if not value <= upper * (1 + rtol):
            raise AssertionError(
                f"norm_bound() = {upper:.17g} is below the {name} {value:.17g} of {type(op).__name__} "
                f"(rtol {rtol:.3g})\n  {_describe('witness x', vector)}"
            )
    return lower, upper
