r"""The compiled programs that the scheme claims share: sampled inputs and the falsifier
for one application of a scheme map (an FSI or FED cycle, a semi-implicit or an
implicit step) on every operator case at once.

Operators are stacked as zero-padded dense matrices (`adversarial.Cases`) and applied
through `jaxpde.Matrix`, so the schemes run their own library code and one program per
scheme kind serves every operator and flux. Each map returns its output $v$ and the
residual $\|r\|$ of the equation it solves (0 for the explicit cycles); the measured
quantity is $\|v\| / (\|u\| + \|r\|)$, which the proofs bound by 1.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from ..blocks import DiffusionBlock
from ..fluxes import Frozen
from ..operators import Matrix
from ..schemes.cycle import three_term_cycle
from ..schemes.implicit import ImplicitScheme, implicit_residual
from ..schemes.semi_implicit import solve_diffusion_system
from ..sharding import sharded_vmap
from ..verify.energy import l2_norm
from ..verify.falsify import _search, to_sphere
from . import adversarial, sampling
from .adversarial import RADII, Attack, Cases, _log_uniform
from .sampling import _SelectedFlux

KINDS = ("cycle", "semi-implicit", "implicit", "implicit-search", "implicit-fixed-point")
# Lagged-diffusivity iterates at which the falsifier evaluates the implicit step's bound.
SEARCH_ITERATIONS = 3
# The largest contraction factor q = tau Lip ||K||^2 at which the fixed-point claim runs,
# and the iterations that then suffice for the default tolerance rtol = 1000 eps:
# the residual after k iterations is at most q^(k+1) ||u||, so k = ceil(log(rtol) / log(q)).
LARGEST_CONTRACTION = 0.9
FIXED_POINT_ITERATIONS = math.ceil(math.log(1000 * float(np.finfo(np.float64).eps)) / math.log(LARGEST_CONTRACTION))


def scheme_map(kind: str, matrix: Array, flux, tau: Array, coefficients=None):
    """The map $u \\mapsto (v, \\|r\\|)$ of scheme `kind` with $K$ = `matrix`. For "cycle",
    `coefficients` = (extrapolation, step fractions, frozen) of `three_term_cycle`: the
    arrays are traced, so that one program serves FSI and FED cycles of every length
    (padded with identity steps); `frozen` is a Python bool (one program per mode)."""
    op = Matrix(matrix)
    block = eqx.tree_at(lambda b: b.tau, DiffusionBlock(op, flux, 1.0, allow_unstable=True), tau)
    if kind == "cycle":
        extrapolation, fractions, frozen = coefficients
        return lambda u: (three_term_cycle(block, u, extrapolation, fractions, frozen), jnp.zeros((), matrix.dtype))
    if kind == "semi-implicit":

        def semi_implicit(u):
            frozen = Frozen(flux, op(u))
            v = solve_diffusion_system(op, frozen, tau, u, throw=False).value
            return v, l2_norm(u - v - tau * op.T(frozen(op(v))))

        return semi_implicit
    if kind == "implicit-search":

        def lagged_iterates(u):
            # SEARCH_ITERATIONS lagged-diffusivity iterates from u, each a semi-implicit solve,
            # differentiable in u. The bound ||v|| <= ||u|| + ||r|| holds for every v with its
            # own residual r, so the falsifier may evaluate it at any iterate; this keeps its
            # gradient cheap (no while loop of the full solver under vmap).
            v = u
            for _ in range(SEARCH_ITERATIONS):
                v = solve_diffusion_system(op, Frozen(flux, op(v)), tau, u, throw=False).value
            return v, l2_norm(implicit_residual(op, flux, tau, u, v))

        return lagged_iterates
    if kind in ("implicit", "implicit-fixed-point"):
        if kind == "implicit":
            prototype = ImplicitScheme(op, flux, 1.0, solver="lagged-diffusivity", throw=False, max_iterations=500)
        else:
            prototype = ImplicitScheme(
                op, flux, 1.0, solver="fixed-point", throw=False, max_iterations=FIXED_POINT_ITERATIONS,
                allow_nonconvergent=True,
            )
        scheme = eqx.tree_at(lambda s: s.tau, prototype, tau)

        def implicit(u):
            solution = scheme.solve_step(u)
            return solution.value, solution.residual

        return implicit
    raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}.")


class SchemeMeasurements(eqx.Module):
    """Per case, flux and sample `(C, F, B)`: the largest $\\|v\\|/(\\|u\\| + \\|r\\|)$ over
    `depth` applications, and the largest $\\|r\\| / \\|u\\|$."""

    ratio: Array
    residual: Array


@eqx.filter_jit
def measure(cases: Cases, signals: Array, taus: Array, kind: str, coefficients, depth: int) -> SchemeMeasurements:
    """Apply scheme `kind` `depth` times to every signal (`(C, F, B, N)`, zero-padded) at
    the step sizes `taus` (`(C, F, B)`)."""
    flux_count = taus.shape[1]

    def one(matrix, case_fluxes, index, tau, u):
        step = scheme_map(kind, matrix, _SelectedFlux(case_fluxes, index), tau, coefficients)

        def body(v, _):
            w, residual = step(v)
            size = l2_norm(v)
            return w, (l2_norm(w) / (size + residual), residual / size)

        _, (ratios, residuals) = jax.lax.scan(body, u, length=depth)
        return jnp.max(ratios), jnp.max(residuals)

    def per_case(matrix, case_fluxes, case_taus, case_signals):
        def per_flux(index, flux_taus, flux_signals):
            return jax.vmap(lambda t, u: one(matrix, case_fluxes, index, t, u))(flux_taus, flux_signals)

        return jax.vmap(per_flux)(jnp.arange(flux_count), case_taus, case_signals)

    ratio, residual = sharded_vmap(per_case)(cases.matrices, cases.fluxes, taus, signals)
    return SchemeMeasurements(ratio, residual)


@eqx.filter_jit
def attack(
    cases: Cases, key: PRNGKeyArray, kind: str, coefficients, restarts: int, steps: int
) -> Attack:
    """Maximise, per case and flux at the step size `cases.taus`, the gain
    $\\|v\\|/(\\|u\\| + \\|r\\|)$ of one application over inputs on spheres (as in
    `adversarial.attack`); the witness is returned as the pair `(u, u)`. For "implicit"
    the search evaluates "implicit-search" (lagged-diffusivity iterates with their
    residuals), the random samples the converged solver."""
    kind = "implicit-search" if kind == "implicit" else kind
    count, flux_count = cases.taus.shape
    size = cases.masks.shape[1]
    keys = jax.random.split(key, (count, flux_count))

    def one(matrix, mask, case_fluxes, index, tau, scale, key):
        step = scheme_map(kind, matrix, _SelectedFlux(case_fluxes, index), tau, coefficients)

        def violation(z, radius):
            u = to_sphere(z * mask, radius)
            v, residual = step(u)
            return l2_norm(v) / (l2_norm(u) + residual)

        keys = jax.random.split(key, 2)
        directions = jax.random.normal(keys[0], (restarts, size), matrix.dtype)
        radius = scale * _log_uniform(keys[1], restarts, RADII, matrix.dtype)
        found = _search(
            violation, directions, radius, lambda z, r: to_sphere(z * mask, jnp.sqrt(jnp.sum(mask))), steps, 0.05
        )
        witness = to_sphere(found.witness * mask, radius[jnp.argmax(found.per_restart)])
        return found.worst, found.sampled, found.nonfinite, (witness, witness)

    def per_case(matrix, mask, case_fluxes, case_taus, case_scales, case_keys):
        def per_flux(index, tau, scale, k):
            return one(matrix, mask, case_fluxes, index, tau, scale, k)

        return jax.vmap(per_flux)(jnp.arange(flux_count), case_taus, case_scales, case_keys)

    worst, sampled, nonfinite, witness = sharded_vmap(per_case)(
        cases.matrices, cases.masks, cases.fluxes, cases.taus, cases.scales, keys
    )
    return Attack(worst, sampled, nonfinite, witness)


def setting(key, budget, taus_of, cases=sampling.operator_cases):
    """The configurations of a scheme claim, drawn from `key`: a NumPy generator, the named
    operator cases (`cases(rng, sizes)`: signals, or `sampling.image_operator_cases`), the
    operators, one flux of each class per operator, and the step sizes `taus_of(op, flux)`,
    `(C, F)`."""
    rng = sampling.numpy_rng(key)
    named = cases(rng, budget.sizes)
    ops = [op for _, op in named]
    fluxes = [sampling.random_fluxes(rng) for _ in ops]
    taus = np.array([[float(taus_of(op, f)) for f in fs] for op, fs in zip(ops, fluxes)])
    return rng, named, ops, fluxes, taus


def padded_signals(rng: np.random.Generator, ops, fluxes, samples: int):
    """Signals for every case and flux, `(C, F, B, N)` zero-padded: the kinds of
    `sampling.base_signals` at amplitudes around each flux's scale, with the rows of
    kind "top-singular" on the operator's top right singular vector (NumPy SVD)."""
    size = max(int(np.prod(op.in_shape)) for op in ops)
    out = np.zeros((len(ops), len(fluxes[0]), samples, size))
    for c, (op, fs) in enumerate(zip(ops, fluxes)):
        n = int(np.prod(op.in_shape))
        drawn = sampling.draw_samples(rng, op, fs, samples)
        top = np.linalg.svd(np.asarray(op.as_matrix(), np.float64))[2][0]
        top = top / np.sqrt(np.mean(top**2))
        rows = np.where(drawn.top[None, :, None], top[None, None, :] + drawn.signals, drawn.signals)
        out[c, :, :, :n] = rows * drawn.amplitudes[..., None]
    return out


def run(
    rng: np.random.Generator, ops, fluxes, taus, kind: str, budget, *, coefficients=None, smallest_fraction: float = 0.05,
    search: bool = True,
):
    """Sampled measurements at `taus * fractions` (fractions log-uniform in
    [`smallest_fraction`, 1], 1 for every fourth sample) and the falsifier at `taus`,
    `(C, F)`, for scheme `kind` (`search=False`: no falsifier, `None` in its place).
    Returns `(SchemeMeasurements, Attack)` as NumPy arrays."""
    signals = padded_signals(rng, ops, fluxes, budget.samples)
    fractions = smallest_fraction ** rng.uniform(0.0, 1.0, signals.shape[:3])
    fractions[..., ::4] = 1.0
    cases = adversarial.stack_cases(ops, fluxes, taus)
    if coefficients is not None:
        extrapolation, step_fractions, frozen = coefficients
        coefficients = (*jax.device_put((np.asarray(extrapolation), np.asarray(step_fractions))), bool(frozen))
    sampled = measure(cases, signals, np.asarray(taus)[..., None] * fractions, kind, coefficients, budget.depth)
    if not search:
        return jax.tree.map(np.asarray, sampled), None
    key = jax.random.wrap_key_data(rng.integers(2**32, size=2, dtype=np.uint32))
    found = attack(cases, key, kind, coefficients, budget.restarts, budget.steps)
    return jax.tree.map(np.asarray, sampled), jax.tree.map(np.asarray, found)
