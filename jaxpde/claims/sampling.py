"""What claim checks sample, and the one compiled evaluation they share.

Configurations (operators over orders, boundaries and sizes; fluxes with random
parameters) and input signals are drawn with NumPy from a seed derived from the JAX
key. The claims then call `measure_cases`: every operator is written as its dense
matrix (`op.as_matrix()`, the operator's own code applied to the unit vectors),
zero-padded to one shape per budget and family (signals, images), and
`evaluate_cases`, a single compiled program, runs all fluxes on a chunk of
`CASE_CHUNK` operators, vmapped over the samples, and returns per-sample measurements;
claims differ only in the step sizes they pass and the measurement they read. So the
explicit claims compile this program once per family instead of once per operator
structure (compilation is the dominant cost on CPU). Padding is exact: padded rows of
$K$ are zero ($\\Phi(0) = 0$), padded input entries stay zero, and every measurement
reads only the operator's own entries (masks). `evaluate` and `measure` run the same
measurements on one operator through its own code (one program per operator shape).
"""

import dataclasses
import functools
import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Key, PRNGKeyArray

from .._xla_flags import SEARCH_OPTIMISED
from ..blocks import DiffusionBlock
from ..fluxes import FLUXES, AbstractFlux, Linear, TotalVariation
from ..operators import BOUNDARIES, AbstractOperator, Derivative, Matrix, Stencil
from ..operators2d import Gradient, GradientAdjoint, Stencil2D
from ..sharding import sharded_vmap
from ..verify.energy import l2_norm, variance
from ..verify.spectral import power_iterate, power_iteration

ORDERS = (1, 2, 3)
SIGNAL_KINDS = ("gaussian", "alternating", "random-walk", "piecewise-constant", "top-singular")
STENCIL_SHAPES = ((3,), (3, 1, 4))
IMAGE_ORDERS = (1, 2)
IMAGE_STENCIL_SHAPES = ((3, 3), (2, 1, 2, 2))
POWER_ITERATIONS = 200
# The convex functions r of `Measurements.convex_increase`, with M = max|u^0| and
# a = min u^0: (x/M)^2, |x|/M, exp(x/M), y log y with y = 2 + (x - a)/M.
CONVEX_FUNCTIONS = ("square", "abs", "exp", "entropy")
# Operators per call of the compiled programs over padded cases (`evaluate_cases`, the
# falsifier): a claim with C operators makes ceil(C / CASE_CHUNK) calls of one program.
CASE_CHUNK = 5
IMAGE_OPERATORS = (Gradient, GradientAdjoint, Stencil2D)


def numpy_rng(key: PRNGKeyArray) -> np.random.Generator:
    """A NumPy generator seeded by a JAX key (sampling on the host compiles nothing)."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def _size(budget_sizes: tuple[int, ...], index: int, minimum: int) -> int:
    return max(budget_sizes[index % len(budget_sizes)], minimum)


def derivatives(rng: np.random.Generator, sizes: tuple[int, ...], boundaries=BOUNDARIES, orders=ORDERS):
    """`Derivative`s of each order and boundary; the size cycles through `sizes` (so
    claims share compiled programs) and the spacing h is drawn log-uniformly."""
    for order in orders:
        for index, boundary in enumerate(boundaries):
            n = _size(sizes, order + BOUNDARIES.index(boundary), order + 1)
            h = float(10 ** rng.uniform(-1.0, 0.3))
            yield f"D{order} {boundary} n={n} h={h:.3g}", Derivative(order, n, h=h, boundary=boundary)


def stencils(rng: np.random.Generator, sizes: tuple[int, ...], boundaries=BOUNDARIES, *, zero_sum=False):
    """Random stencils (Gaussian taps), one channel and 1 -> 3 channels."""
    for index, boundary in enumerate(boundaries):
        for shape in STENCIL_SHAPES:
            if zero_sum:
                # Dyadic taps, the last one minus the sum of the others: the taps of
                # each output channel sum to exactly zero in floating point.
                kernel = rng.integers(-512, 512, shape) / 256
                kernel[..., -1] = -kernel[..., :-1].sum(axis=-1)
            else:
                kernel = rng.standard_normal(shape)
            n = _size(sizes, len(shape) + BOUNDARIES.index(boundary), shape[-1])
            channels = "1ch" if len(shape) == 1 else f"{shape[1]}->{shape[0]}ch"
            yield f"stencil k={shape[-1]} {channels} {boundary} n={n}", Stencil(kernel, n, boundary=boundary)


def operator_cases(rng: np.random.Generator, sizes: tuple[int, ...], boundaries=BOUNDARIES, *, zero_sum=False):
    """Derivatives of orders 1-3 and random stencils (one and several channels)."""
    return [*derivatives(rng, sizes, boundaries), *stencils(rng, sizes, boundaries, zero_sum=zero_sum)]


def image_shape(sizes: tuple[int, ...], index: int) -> tuple[int, int]:
    """An image `(s, s + 1 + index % 2)` with `s = min(size, 16) // 2` for the budget's size
    `index` (non-square, odd and even widths; at most 8 x 10 = 80 pixels, so that the
    dense matrices of the falsifier and the Cholesky solves of the semi-implicit check
    stay small)."""
    side = min(sizes[index % len(sizes)], 16) // 2
    return side, side + 1 + index % 2


def image_operator_cases(rng: np.random.Generator, sizes: tuple[int, ...], boundaries=BOUNDARIES):
    """Operators on images: the gradient of orders 1 and 2 (spacing h log-uniform) and
    random 2-D stencils (3 x 3 taps, one channel; 2 x 2 taps, 1 -> 2 channels), every
    boundary, shapes from `image_shape`."""
    cases = []
    for order in IMAGE_ORDERS:
        for index, boundary in enumerate(boundaries):
            shape = image_shape(sizes, order + index)
            h = float(10 ** rng.uniform(-1.0, 0.3))
            name = f"grad{order} {boundary} {shape[0]}x{shape[1]} h={h:.3g}"
            cases.append((name, Gradient(shape, h=h, boundary=boundary, order=order)))
    for index, boundary in enumerate(boundaries):
        for kernel_shape in IMAGE_STENCIL_SHAPES:
            shape = image_shape(sizes, len(kernel_shape) + index)
            channels = "1ch" if len(kernel_shape) == 2 else f"{kernel_shape[1]}->{kernel_shape[0]}ch"
            taps = "x".join(map(str, kernel_shape[-2:]))
            name = f"stencil2d {taps} {channels} {boundary} {shape[0]}x{shape[1]}"
            cases.append((name, Stencil2D(rng.standard_normal(kernel_shape), shape, boundary=boundary)))
    return cases


def random_fluxes(rng: np.random.Generator) -> tuple[AbstractFlux, ...]:
    """One flux of each class in `FLUXES`, parameters log-uniform: L in [1/4, 4],
    eps in [0.05, 2], lambda in [0.1, 10]."""
    fluxes = []
    for kind in FLUXES:
        if kind is Linear:
            fluxes.append(Linear(10 ** rng.uniform(-0.6, 0.6)))
        elif kind is TotalVariation:
            fluxes.append(TotalVariation(10 ** rng.uniform(-1.3, 0.3)))
        else:
            fluxes.append(kind(10 ** rng.uniform(-1.0, 1.0)))
    return tuple(fluxes)


def flux_scale(flux: AbstractFlux) -> float:
    """The size of $s$ at which `flux` is most nonlinear ($\\lambda$, $\\varepsilon$, or 1)."""
    for name in ("lam", "eps"):
        if hasattr(flux, name):
            return float(getattr(flux, name))
    return 1.0


def base_signals(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """`count` signals of unit root mean square, cycling through `SIGNAL_KINDS`; rows
    of kind "top-singular" hold small noise that `evaluate` adds to the operator's
    top right-singular vector."""
    noise = rng.standard_normal((count, size))
    jumps = rng.random((count, size)) < 0.1
    kinds = np.stack([
        noise,
        (-1.0) ** np.arange(size) * (1 + 0.1 * noise),
        np.cumsum(noise, axis=1),
        np.cumsum(np.where(jumps, noise, 0.0), axis=1) + 1e-3 * noise,
        1e-3 * noise / math.sqrt(size),
    ])
    rows = kinds[np.arange(count) % len(SIGNAL_KINDS), np.arange(count)]
    top = np.arange(count) % len(SIGNAL_KINDS) == len(SIGNAL_KINDS) - 1
    scale = np.where(top[:, None], 1.0, 1 / np.sqrt(np.mean(rows * rows, axis=1, keepdims=True)))
    return rows * scale


@dataclasses.dataclass(frozen=True)
class Samples:
    """Inputs of one `evaluate` call: per flux f and sample b."""

    signals: np.ndarray  # (F, B, size), unit RMS (or noise for top-singular rows)
    amplitudes: np.ndarray  # (F, B)
    fractions: np.ndarray  # (F, B), multiplies the step size
    top: np.ndarray  # (B,), rows built on the top singular vector


def draw_samples(rng: np.random.Generator, op: AbstractOperator, fluxes, count: int, *, fraction_one_every: int = 4) -> Samples:
    """Signals with amplitudes `flux_scale / ||K|| * 10**U(-1.5, 1.5)` (so both the
    linear and the strongly nonlinear range of each flux are hit) and step fractions
    in (0.05, 1], exactly 1 for every `fraction_one_every`-th sample."""
    size = math.prod(op.in_shape)
    norm = float(op.norm_bound())
    signals = np.stack([base_signals(rng, count, size) for _ in fluxes])
    scales = np.array([flux_scale(f) / norm for f in fluxes])[:, None]
    amplitudes = scales * 10 ** rng.uniform(-1.5, 1.5, (len(fluxes), count))
    fractions = rng.uniform(0.05, 1.0, (len(fluxes), count))
    fractions[:, ::fraction_one_every] = 1.0
    top = np.arange(count) % len(SIGNAL_KINDS) == len(SIGNAL_KINDS) - 1
    return Samples(signals, amplitudes, fractions, top)


class Measurements(eqx.Module):
    """Per flux and sample (shape `(F, B)`), over `depth` steps from $u^0$:

    - `ratio`: $\\max_k \\|u^{k+1}\\| / \\|u^k\\|$;
    - `mean_drift`: $\\max_k |\\bar u^k - \\bar u^0| / \\max|u^0|$;
    - `range_excess`: $\\max_k$ of how far $u^k$ leaves $[\\min u^0, \\max u^0]$ (with 0
      included for dirichlet boundaries), relative to $\\max|u^0|$;
    - `decreasing_share`: share of the entries of $K u^k$ where $\\Phi' < 0$;
    - `lower`: the power-iteration lower bound of $\\|K\\|$ (scalar);
    - `tau`: the step size used, per flux (shape `(F,)`);
    - `energy_increase`: $\\max_k (E(u^{k+1}) - E(u^k)) / (L A^2 \\|u^0\\|^2)$ for the flux
      energy $E(u) = \\sum \\Psi(Ku)$, $A$ = `op.abs_norm_bound()`;
    - `variance_increase`: $\\max_k (V(u^{k+1}) - V(u^k)) / \\|u^0\\|^2$ for the variance
      $V(u) = \\|u - \\bar u\\|^2$;
    - `convex_increase`: shape `(F, B, R)`, $\\max_k \\sum_i (r(u^{k+1}_i) - r(u^k_i)) / N$
      for the convex functions `CONVEX_FUNCTIONS` ($N$ entries).
    """

    ratio: Array
    mean_drift: Array
    range_excess: Array
    decreasing_share: Array
    lower: Array
    tau: Array
    energy_increase: Array
    variance_increase: Array
    convex_increase: Array


class SelectedFlux(AbstractFlux):
    """The flux `fluxes[index]` with a traced `index`: one program serves all flux
    classes (under `vmap` the switch evaluates every branch and selects: `map_fluxes`
    runs them in turn with an unbatched index instead)."""

    fluxes: tuple[AbstractFlux, ...]
    index: Array

    def diffusivity(self, s2):
        branches = [lambda x, f=f: f.diffusivity(x) for f in self.fluxes]
        return jax.lax.switch(self.index, branches, s2)

    def sector_bound(self):
        return jnp.stack([f.sector_bound() for f in self.fluxes])[self.index]

    def derivative_range(self):
        lows, highs = zip(*(f.derivative_range() for f in self.fluxes))
        return jnp.stack(lows)[self.index], jnp.stack(highs)[self.index]

    def potential(self, s):
        branches = [lambda x, f=f: f.potential(x) for f in self.fluxes]
        return jax.lax.switch(self.index, branches, s)


def map_fluxes(per_flux, *args, axis: int = 1):
    """`per_flux(index, *args_f)` for each flux index f in turn (`lax.map`), `args_f` being
    `args` at index f of their flux axis `axis` (`(C, F, ...)`, case and flux, by default);
    the results stacked along that axis. The index is not batched, so a `SelectedFlux`
    built from it evaluates its own flux alone (under `vmap` a switch evaluates every
    branch: the falsifier's energy objective ran 3.5 times slower that way, with
    Weickert's potential among the fluxes)."""
    moved = jax.tree.map(lambda x: jnp.moveaxis(x, axis, 0), args)
    count = jax.tree.leaves(moved)[0].shape[0]
    results = jax.lax.map(lambda a: per_flux(a[0], *a[1]), (jnp.arange(count), moved))
    return jax.tree.map(lambda x: jnp.moveaxis(x, 0, axis), results)


def _each_flux(run, rows, fractions):
    """`run(index, row, fraction)` on the samples `rows` `(F, B, N)` and `fractions` `(F, B)`
    of each flux in turn (`map_fluxes`); `(F, B, ...)` results."""

    def per_flux(index, flux_rows, flux_fractions):
        return sharded_vmap(lambda u, fraction: run(index, u, fraction))(flux_rows, flux_fractions)

    return map_fluxes(per_flux, rows, fractions, axis=0)


def convex_sums(v: Array, scale: Array, low: Array) -> Array:
    """$\\sum_i r(v_i)$ for the functions `CONVEX_FUNCTIONS` (shape `(R,)`)."""
    x = v / scale
    y = 2 + (v - low) / scale
    return jnp.stack([jnp.sum(x * x), jnp.sum(jnp.abs(x)), jnp.sum(jnp.exp(x)), jnp.sum(y * jnp.log(y))])


def _largest_increase(initial: Array, values: Array) -> Array:
    """$\\max_k (v_{k+1} - v_k)$ over `initial` followed by `values` (time first)."""
    stacked = jnp.concatenate([initial[None], values])
    return jnp.max(stacked[1:] - stacked[:-1], axis=0)


@eqx.filter_jit
def evaluate(
    op: AbstractOperator,
    fluxes: tuple[AbstractFlux, ...],
    step_multipliers: Float[Array, " F"],
    use_lower_norm: Float[Array, " F"],
    signals: Float[Array, "F B size"],
    amplitudes: Float[Array, "F B"],
    fractions: Float[Array, "F B"],
    top_rows: Float[Array, " B"],
    key: PRNGKeyArray,
    depth: int,
) -> Measurements:
    """Run `depth` explicit steps for every flux and sample; see `Measurements`.

    The step size for flux f is `multiplier_f * 2 / (L_f * nu^2) * fraction`, with nu the
    certified upper bound `op.norm_bound()`, or the power-iteration lower bound where
    `use_lower_norm_f` is 1 (to place tau just above the sharp bound). Callers check the
    stability hypotheses; blocks here are built with `allow_unstable=True`.
    """
    upper = op.norm_bound()
    lower, vector = power_iteration(op, key, POWER_ITERATIONS, upper.dtype)
    top = vector.reshape(-1) / jnp.sqrt(jnp.mean(vector**2))
    nu = jnp.where(use_lower_norm > 0, lower, upper)
    sectors = jnp.stack([f.sector_bound() for f in fluxes])
    taus = step_multipliers * 2 / (sectors * nu**2)
    rows = jnp.where(top_rows[None, :, None] > 0, top[None, None, :] + signals, signals) * amplitudes[..., None]
    low_floor = 0.0 if getattr(op, "boundary", None) == "dirichlet" else jnp.inf
    abs_norm = op.abs_norm_bound()

    def run(index, row, fraction):
        flux = SelectedFlux(fluxes, index)
        # Set tau with tree_at: a traced tau in __init__ would add a runtime check
        # (a host callback), which costs compile time and blocks the compilation cache.
        placeholder = DiffusionBlock(op, flux, 1.0, allow_unstable=True)
        block = eqx.tree_at(lambda b: b.tau, placeholder, fraction * taus[index])
        u = row.reshape(op.in_shape)
        scale = jnp.max(jnp.abs(u))
        start = jnp.min(u)

        def energy(v):
            return jnp.sum(flux.potential(op(v)))

        def body(v, _):
            w = block(v)
            slopes = jax.vmap(jax.grad(flux))(op(w).reshape(-1))
            monitors = (energy(w), variance(w), convex_sums(w, scale, start))
            return w, (l2_norm(w), jnp.mean(w), jnp.max(w), jnp.min(w), jnp.mean(slopes < 0), *monitors)

        _, (norms, means, highs, lows, shares, energies, variances, sums) = jax.lax.scan(body, u, length=depth)
        norm2 = jnp.sum(u * u)
        all_norms = jnp.concatenate([l2_norm(u)[None], norms])
        # Dirichlet: the boundary value 0 belongs to the range.
        low, high = jnp.minimum(jnp.min(u), low_floor), jnp.maximum(jnp.max(u), -low_floor)
        excess = jnp.maximum(jnp.max(highs) - high, low - jnp.min(lows))
        return (
            jnp.max(all_norms[1:] / all_norms[:-1]),
            jnp.max(jnp.abs(means - jnp.mean(u))) / scale,
            excess / scale,
            jnp.mean(shares),
            _largest_increase(energy(u), energies) / (sectors[index] * abs_norm**2 * norm2),
            _largest_increase(variance(u), variances) / norm2,
            _largest_increase(convex_sums(u, scale, start), sums) / u.size,
        )

    ratio, drift, excess, share, energy, var, convex = _each_flux(run, rows, fractions)
    return Measurements(
        ratio=ratio, mean_drift=drift, range_excess=excess, decreasing_share=share, lower=lower, tau=taus,
        energy_increase=energy, variance_increase=var, convex_increase=convex,
    )


def measure(
    rng: np.random.Generator,
    op: AbstractOperator,
    fluxes: tuple[AbstractFlux, ...],
    samples: int,
    depth: int,
    *,
    step_multipliers=None,
    use_lower_norm=None,
    fraction_one_every: int = 4,
) -> Measurements:
    """Draw samples for `op` and every flux (see `draw_samples`), and `evaluate` them."""
    drawn = draw_samples(rng, op, fluxes, samples, fraction_one_every=fraction_one_every)
    count = len(fluxes)
    multipliers = np.ones(count) if step_multipliers is None else np.asarray(step_multipliers, float)
    lower_flags = np.zeros(count) if use_lower_norm is None else np.asarray(use_lower_norm, float)
    key = jax.random.wrap_key_data(rng.integers(2**32, size=2, dtype=np.uint32))
    result = evaluate(
        op, fluxes, multipliers, lower_flags, drawn.signals, drawn.amplitudes, drawn.fractions,
        drawn.top.astype(float), key, depth,
    )
    return jax.tree.map(np.asarray, result)


def first_differences_at_the_convex_step(rng: np.random.Generator, budget):
    r"""The setting of the claims about convex combinations: `Derivative(1, n, h)` for
    each boundary, one flux of each class, and $\tau$ = fraction $\cdot h^2/(2L)$.
    Returns the named operators, the fluxes, the step multipliers (of $2/(L\nu^2)$) and
    the measurements, one per operator."""
    named = list(derivatives(rng, budget.sizes, orders=(1,)))
    ops = [op for _, op in named]
    fluxes = [random_fluxes(rng) for _ in ops]
    # tau = multiplier * 2 / (L * norm_bound^2) = h^2 / (2 L).
    multipliers = [[float(op.norm_bound()) ** 2 * float(op.h) ** 2 / 4] * len(fs) for op, fs in zip(ops, fluxes)]
    measured = measure_cases(rng, ops, fluxes, budget.samples, budget.depth, sizes=budget.sizes, step_multipliers=multipliers)
    return named, fluxes, multipliers, measured


# --- every operator as a padded dense matrix: one program for all operator cases -----


@functools.cache
def _family_shape(sizes: tuple[int, ...], images: bool) -> tuple[int, int]:
    rng = np.random.default_rng(0)
    named = image_operator_cases(rng, sizes) if images else operator_cases(rng, sizes)
    return max(math.prod(op.out_shape) for _, op in named), max(math.prod(op.in_shape) for _, op in named)


def padded_shape(ops, sizes: Sequence[int] | None = None) -> tuple[int, int]:
    """`(rows, cols)` that the dense matrices of `ops` are padded to. With the budget's
    `sizes`: at least the largest matrix among the claims' operators of the same family
    (`operator_cases` on signals, `image_operator_cases` on images), so that the claims
    of a budget share their compiled programs."""
    rows = max(math.prod(op.out_shape) for op in ops)
    cols = max(math.prod(op.in_shape) for op in ops)
    if sizes is not None:
        family = _family_shape(tuple(sizes), any(isinstance(op, IMAGE_OPERATORS) for op in ops))
        rows, cols = max(rows, family[0]), max(cols, family[1])
    return rows, cols


def dense_matrices(ops, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The matrices of `ops` (`op.as_matrix()`) zero-padded to `shape`, `(C, rows, cols)`,
    with masks of the operators' own input entries `(C, cols)` and output entries `(C, rows)`."""
    matrices = np.zeros((len(ops), *shape))
    masks = np.zeros((len(ops), shape[1]))
    row_masks = np.zeros((len(ops), shape[0]))
    for index, op in enumerate(ops):
        matrix = np.asarray(op.as_matrix(), np.float64)
        matrices[index, : matrix.shape[0], : matrix.shape[1]] = matrix
        masks[index, : matrix.shape[1]] = 1.0
        row_masks[index, : matrix.shape[0]] = 1.0
    return matrices, masks, row_masks


def stack_fluxes(fluxes: list[tuple[AbstractFlux, ...]]):
    """One flux per kind, its parameters stacked along a leading case axis."""
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]), *fluxes)


def chunks(count: int, chunk: int = CASE_CHUNK) -> list[np.ndarray]:
    """Indices of `count` cases in chunks of `chunk`, the last one filled up with case 0
    (so that every call of a compiled program has the same shapes)."""
    padded = np.concatenate([np.arange(count), np.zeros(-count % chunk, int)])
    return list(padded.reshape(-1, chunk))


def _masked_convex_sums(v: Array, mask: Array, scale: Array, low: Array) -> Array:
    """`convex_sums` over the entries where `mask` is 1."""
    x = v / scale
    y = 2 + (v - low) / scale
    terms = jnp.stack([x * x, jnp.abs(x), jnp.exp(x), y * jnp.log(jnp.where(mask > 0, y, 1.0))])
    return jnp.sum(jnp.where(mask[None] > 0, terms, 0.0), axis=1)


@functools.partial(eqx.filter_jit, compiler_options=SEARCH_OPTIMISED)
def evaluate_cases(
    matrices: Float[Array, "C R N"],
    masks: Float[Array, "C N"],
    row_masks: Float[Array, "C R"],
    fluxes: tuple[AbstractFlux, ...],
    uppers: Float[Array, " C"],
    abs_norms: Float[Array, " C"],
    dirichlet: Float[Array, " C"],
    step_multipliers: Float[Array, "C F"],
    use_lower_norm: Float[Array, "C F"],
    signals: Float[Array, "C F B N"],
    amplitudes: Float[Array, "C F B"],
    fractions: Float[Array, "C F B"],
    top_rows: Float[Array, " B"],
    keys: Key[Array, " C"],
    depth: int,
) -> Measurements:
    """`evaluate` for `C` operators given as zero-padded dense matrices (`dense_matrices`),
    with their certified bounds `uppers` (`op.norm_bound()`) and `abs_norms`
    (`op.abs_norm_bound()`), and `fluxes` stacked along the case axis (`stack_fluxes`).
    Every measurement reads the operator's own entries only; results have a leading
    case axis."""

    def one_case(matrix, mask, row_mask, case_fluxes, upper, abs_norm, is_dirichlet, multipliers, flags, rows, amps, fracs, key):
        op = Matrix(matrix)
        size = jnp.sum(mask)
        start = jax.random.normal(key, mask.shape, matrix.dtype) * mask
        lower, vector = power_iterate(op, op.T, start / l2_norm(start), POWER_ITERATIONS)
        top = vector / jnp.sqrt(jnp.sum(vector**2) / size)
        nu = jnp.where(flags > 0, lower, upper)
        sectors = jnp.stack([f.sector_bound() for f in case_fluxes])
        taus = multipliers * 2 / (sectors * nu**2)
        rows = jnp.where(top_rows[None, :, None] > 0, top[None, None, :] + rows, rows) * amps[..., None] * mask[None, None]
        low_floor = jnp.where(is_dirichlet > 0, 0.0, jnp.inf)
        big = jnp.inf

        def run(index, u, fraction):
            flux = SelectedFlux(case_fluxes, index)
            placeholder = DiffusionBlock(op, flux, 1.0, allow_unstable=True)
            block = eqx.tree_at(lambda b: b.tau, placeholder, fraction * taus[index])
            scale = jnp.max(jnp.abs(u))
            low0 = jnp.min(jnp.where(mask > 0, u, big))

            def energy(v):
                return jnp.sum(jnp.where(row_mask > 0, flux.potential(op(v)), 0.0))

            def spread(v):
                return jnp.sum(jnp.where(mask > 0, (v - jnp.sum(v) / size) ** 2, 0.0))

            def body(v, _):
                w = block(v)
                slopes = jax.vmap(jax.grad(flux))(op(w))
                share = jnp.sum(jnp.where(row_mask > 0, slopes < 0, False)) / jnp.sum(row_mask)
                monitors = (energy(w), spread(w), _masked_convex_sums(w, mask, scale, low0))
                high, low = jnp.max(jnp.where(mask > 0, w, -big)), jnp.min(jnp.where(mask > 0, w, big))
                return w, (l2_norm(w), jnp.sum(w) / size, high, low, share, *monitors)

            _, (norms, means, highs, lows, shares, energies, spreads, sums) = jax.lax.scan(body, u, length=depth)
            norm2 = jnp.sum(u * u)
            all_norms = jnp.concatenate([l2_norm(u)[None], norms])
            high0 = jnp.max(jnp.where(mask > 0, u, -big))
            low, high = jnp.minimum(low0, low_floor), jnp.maximum(high0, -low_floor)
            excess = jnp.maximum(jnp.max(highs) - high, low - jnp.min(lows))
            return (
                jnp.max(all_norms[1:] / all_norms[:-1]),
                jnp.max(jnp.abs(means - jnp.sum(u) / size)) / scale,
                excess / scale,
                jnp.mean(shares),
                _largest_increase(energy(u), energies) / (sectors[index] * abs_norm**2 * norm2),
                _largest_increase(spread(u), spreads) / norm2,
                _largest_increase(_masked_convex_sums(u, mask, scale, low0), sums) / size,
            )

        ratio, drift, excess, share, energy, var, convex = _each_flux(run, rows, fracs)
        return Measurements(
            ratio=ratio, mean_drift=drift, range_excess=excess, decreasing_share=share, lower=lower, tau=taus,
            energy_increase=energy, variance_increase=var, convex_increase=convex,
        )

    return jax.vmap(one_case)(
        matrices, masks, row_masks, fluxes, uppers, abs_norms, dirichlet, step_multipliers, use_lower_norm,
        signals, amplitudes, fractions, keys,
    )


def _per_case(values, count: int, default) -> np.ndarray:
    return np.stack([np.asarray(default if values is None else values[c], float) for c in range(count)])


def evaluate_operators(
    ops, fluxes, signals, amplitudes, fractions, top, keys, depth: int, *, sizes=None, step_multipliers=None,
    use_lower_norm=None,
) -> list[Measurements]:
    """Run `evaluate_cases` on `ops` (`fluxes[c]`, `signals[c]` of shape `(F, B, op size)`,
    `amplitudes[c]`, `fractions[c]` `(F, B)`, `keys[c]` for case c), in chunks of
    `CASE_CHUNK` cases, padded to `padded_shape(ops, sizes)`. Returns one `Measurements`
    (NumPy) per operator, as `measure` would."""
    count, flux_count = len(ops), len(fluxes[0])
    shape = padded_shape(ops, sizes)
    matrices, masks, row_masks = dense_matrices(ops, shape)
    padded = np.zeros((count, *np.shape(signals[0])[:2], shape[1]))
    for c in range(count):
        padded[c, ..., : np.shape(signals[c])[-1]] = signals[c]
    arrays = {
        "matrices": matrices, "masks": masks, "row_masks": row_masks, "fluxes": stack_fluxes(fluxes),
        "uppers": np.array([float(op.norm_bound()) for op in ops]),
        "abs_norms": np.array([float(op.abs_norm_bound()) for op in ops]),
        "dirichlet": np.array([getattr(op, "boundary", None) == "dirichlet" for op in ops], float),
        "step_multipliers": _per_case(step_multipliers, count, np.ones(flux_count)),
        "use_lower_norm": _per_case(use_lower_norm, count, np.zeros(flux_count)),
        "signals": padded, "amplitudes": np.asarray(amplitudes, float), "fractions": np.asarray(fractions, float),
        "keys": np.stack([np.asarray(k, np.uint32) for k in keys]),
    }
    results = []
    for chunk in chunks(count):
        part = jax.tree.map(lambda x, chunk=chunk: x[chunk], arrays)
        part["keys"] = jax.random.wrap_key_data(part["keys"])
        out = evaluate_cases(**part, top_rows=np.asarray(top, float), depth=depth)
        results.append(jax.tree.map(np.asarray, out))
    joined = jax.tree.map(lambda *xs: np.concatenate(xs)[:count], *results)
    return [jax.tree.map(lambda x, c=c: x[c], joined) for c in range(count)]


def measure_cases(
    rng: np.random.Generator,
    ops,
    fluxes,
    samples: int,
    depth: int,
    *,
    sizes: Sequence[int] | None = None,
    step_multipliers=None,
    use_lower_norm=None,
    fraction_one_every: int = 4,
) -> list[Measurements]:
    """`measure` for every operator in `ops` (fluxes `fluxes[c]`, step multipliers and
    lower-norm flags per case), through one compiled program for all of them
    (`evaluate_operators`; `sizes`: the budget's, for the common padded shape). Samples
    are drawn as `measure` draws them, case after case."""
    drawn, keys = [], []  # the signal kinds cycle the same way in every case (`top`)
    for op, fs in zip(ops, fluxes):
        drawn.append(draw_samples(rng, op, fs, samples, fraction_one_every=fraction_one_every))
        keys.append(rng.integers(2**32, size=2, dtype=np.uint32))
    return evaluate_operators(
        ops, fluxes, [d.signals for d in drawn], [d.amplitudes for d in drawn], [d.fractions for d in drawn],
        drawn[0].top.astype(float), keys, depth, sizes=sizes, step_multipliers=step_multipliers,
        use_lower_norm=use_lower_norm,
    )
