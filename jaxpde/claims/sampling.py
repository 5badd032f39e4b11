"""What claim checks sample, and the one compiled evaluation they share.

Configurations (operators over orders, boundaries and sizes; fluxes with random
parameters) and input signals are drawn with NumPy from a seed derived from the JAX
key. Every check then calls `evaluate`, one `jax.jit`-compiled program per operator
structure that runs all fluxes, vmapped over the samples, and returns per-sample
measurements; claims differ only in the step sizes they pass and the measurement they
read. This keeps the number of compilations (the dominant cost on CPU) at one per
operator shape, shared by all claims.
"""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..blocks import DiffusionBlock
from ..fluxes import FLUXES, AbstractFlux, Linear, TotalVariation
from ..operators import BOUNDARIES, AbstractOperator, Derivative, Stencil
from ..operators2d import Gradient, Stencil2D
from ..sharding import sharded_vmap
from ..verify.energy import l2_norm, variance
from ..verify.spectral import power_iteration

ORDERS = (1, 2, 3)
SIGNAL_KINDS = ("gaussian", "alternating", "random-walk", "piecewise-constant", "top-singular")
STENCIL_SHAPES = ((3,), (3, 1, 4))
IMAGE_ORDERS = (1, 2)
IMAGE_STENCIL_SHAPES = ((3, 3), (2, 1, 2, 2))
POWER_ITERATIONS = 200
# The convex functions r of `Measurements.convex_increase`, with M = max|u^0| and
# a = min u^0: (x/M)^2, |x|/M, exp(x/M), y log y with y = 2 + (x - a)/M.
CONVEX_FUNCTIONS = ("square", "abs", "exp", "entropy")


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


class _SelectedFlux(AbstractFlux):
    """The flux `fluxes[index]` with a traced `index`: one program serves all flux
    classes (under `vmap` the switch evaluates every branch and selects)."""

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


def _convex_sums(v: Array, scale: Array, low: Array) -> Array:
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
    count = amplitudes.shape[0]
    nu = jnp.where(use_lower_norm > 0, lower, upper)
    sectors = jnp.stack([f.sector_bound() for f in fluxes])
    taus = step_multipliers * 2 / (sectors * nu**2)
    rows = jnp.where(top_rows[None, :, None] > 0, top[None, None, :] + signals, signals) * amplitudes[..., None]
    low_floor = 0.0 if getattr(op, "boundary", None) == "dirichlet" else jnp.inf
    abs_norm = op.abs_norm_bound()

    def run(index, row, fraction):
        flux = _SelectedFlux(fluxes, index)
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
            monitors = (energy(w), variance(w), _convex_sums(w, scale, start))
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
            _largest_increase(_convex_sums(u, scale, start), sums) / u.size,
        )

    batch = amplitudes.shape[1]
    indices = jnp.repeat(jnp.arange(count), batch)
    flat = sharded_vmap(run)(indices, rows.reshape(count * batch, -1), fractions.reshape(-1))
    ratio, drift, excess, share, energy, var, convex = (x.reshape(count, batch, *x.shape[1:]) for x in flat)
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
    measured = [
        measure(rng, op, fs, budget.samples, budget.depth, step_multipliers=m)
        for op, fs, m in zip(ops, fluxes, multipliers)
    ]
    return named, fluxes, multipliers, measured
