"""Claims about trainable networks: the learnable flux stays in its sector, and the
diffusion ResNet is Euclidean stable at every depth for every parameter value."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..fluxes import RadialBasisFlux, default_centres
from ..nn.resnet import DiffusionResNet
from ..sharding import sharded_vmap
from ..verify.certificate import CaseResult
from ..verify.energy import l2_norm
from ..verify.falsify import falsify, falsify_gain
from ..verify.tolerance import gamma, norm_ratio_tolerance
from . import adversarial, sampling
from .registry import Budget, Claim, Evidence

# Radial-basis flux configurations (count of centres, largest centre, width, L); per
# sample the weights have a log-uniform standard deviation in [0.1, 30] and the bias is
# uniform in [-10, 10].
FLUX_CONFIGS = ((2, 1.0, 0.5, 1.0), (8, 4.0, 0.5, 0.25), (8, 10.0, 3.0, 4.0), (4, 0.1, 0.02, 2.0))
# The falsifier searches (s, weights, bias) on this configuration (one compiled search).
SEARCHED_CONFIG = 1
FLUX_OBJECTIVE = "sector and slope ratios Phi(s) / (s L), Phi'(s) / derivative_range"
# Evaluation points: s = +-10^t, t on a grid over [-4, 3], and s = +-sqrt(c_j + k delta).
_LOG_S_RANGE = (-4.0, 3.0)
_LOG_S_POINTS = 1401
# Networks: (width, boundary, kernel size), depths 2 x budget.depth.
NETWORK_CONFIGS = ((None, "periodic", 3), (4, "neumann", 5), (3, "dirichlet", 3))
_NETWORK_SIZE = 32


def _evaluation_points(flux: RadialBasisFlux) -> np.ndarray:
    grid = 10 ** np.linspace(*_LOG_S_RANGE, _LOG_S_POINTS)
    near = np.asarray(flux.centres)[:, None] + flux.width * np.linspace(-3, 3, 25)[None, :]
    points = np.concatenate([grid, np.sqrt(np.clip(near.ravel(), 0, None))])
    return np.concatenate([points, -points])


@jax.jit
def _flux_extremes(fluxes: RadialBasisFlux, s):
    """Per flux (vmapped): largest Phi(s)/s / L, largest -Phi(s)/s / L, largest Phi'/b and
    largest Phi'/a over the points where Phi' < 0 (a < 0 the lower end of the range)."""

    def one(flux):
        ratio = flux(s) / s / flux.L
        slope = jax.vmap(jax.grad(flux))(s)
        low, high = flux.derivative_range()
        below = jnp.max(jnp.where(slope < 0, slope / low, 0))
        return jnp.max(ratio), jnp.max(-ratio), jnp.maximum(jnp.max(slope / high), below)

    return sharded_vmap(one)(fluxes)


def _flux_violation(x, template: RadialBasisFlux):
    """max(Phi(s)/(s L), -Phi(s)/(s L), Phi'(s)/b, Phi'(s)/a if Phi' < 0) at x = (s, w, bias)."""
    s, weights, bias = x
    flux = eqx.tree_at(lambda f: (f.weights, f.bias), template, (weights, bias))
    ratio = flux(s) / s / flux.L
    slope = jax.grad(flux)(s)
    low, high = flux.derivative_range()
    return jnp.maximum(jnp.maximum(ratio, -ratio), jnp.maximum(slope / high, jnp.where(slope < 0, slope / low, 0)))


def _search_flux(key, template: RadialBasisFlux, budget: Budget):
    """The falsifier over the input s and the trainable parameters (w, b)."""
    s_key, w_key, b_key = jax.random.split(key, 3)
    count = len(template.centres)
    starts = (
        jnp.exp(jax.random.uniform(s_key, (budget.restarts,), minval=-4, maxval=2)),
        10 * jax.random.normal(w_key, (budget.restarts, count)),
        jax.random.uniform(b_key, (budget.restarts,), minval=-10, maxval=10),
    )
    return falsify(lambda x, _: _flux_violation(x, template), starts, steps=budget.steps, learning_rate=0.1)


def _check_radial_flux(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    # Phi(s)/s = L sigma(x) is computed as a product, a sigmoid and a division: a few
    # roundings; Phi' by automatic differentiation, a few more.
    tolerance = gamma(64, np.float64)
    cases, sector_worst, slope_worst, below_worst, searched, started, nonfinite = [], [], [], [], [], [], 0
    for index, (count, top, width, L) in enumerate(FLUX_CONFIGS):
        template = RadialBasisFlux(np.zeros(count), L=L, centres=default_centres(count, top), width=width)
        found = None
        if index == SEARCHED_CONFIG:
            found = _search_flux(jax.random.fold_in(key, index), template, budget)
            searched.append(float(found.worst))
            started.append(float(found.sampled))
            nonfinite += int(found.nonfinite)
        spread = 10 ** rng.uniform(-1, math.log10(30), (budget.samples, 1))
        fluxes = eqx.tree_at(
            lambda f: (f.weights, f.bias), jax.tree.map(lambda x: jnp.stack([x] * budget.samples), template),
            (jnp.asarray(spread * rng.standard_normal((budget.samples, count))), jnp.asarray(rng.uniform(-10, 10, budget.samples))),
        )
        sector, below, slope = (float(np.max(x)) for x in _flux_extremes(fluxes, jnp.asarray(_evaluation_points(template))))
        sector_worst.append(sector)
        below_worst.append(below)
        slope_worst.append(slope)
        name = f"J={count} centres in [0, {top:g}] width={width:g} L={L:g}"
        cases.append(CaseResult(name + ": Phi(s)/s / L", budget.samples, sector, 1.0, tolerance, sector <= 1 + tolerance and below <= 0))
        searched_ok = found is None or float(found.worst) <= 1 + tolerance
        slope = slope if found is None else max(slope, float(found.worst))
        samples = budget.samples + (0 if found is None else budget.restarts)
        cases.append(CaseResult(name + ": Phi' / derivative_range", samples, slope, 1.0, tolerance, slope <= 1 + tolerance and searched_ok))
    hypotheses = {
        "fluxes": (
            f"{budget.samples} random weights and biases per configuration: weights N(0, sd^2), sd log-uniform in "
            "[0.1, 30]; bias in [-10, 10]"
        ),
        "evaluation points": f"s = +-10^t, {_LOG_S_POINTS} t in {list(_LOG_S_RANGE)}, and s = +-sqrt(c_j + k delta), |k| <= 3",
        "sector": f"largest Phi(s)/s / L: {max(sector_worst):.6g} (<= 1); smallest Phi(s)/s / L: {-max(below_worst):.6g} (>= 0)",
        "derivative": f"largest Phi'/b and Phi'/a (where Phi' < 0), samples and falsifier: {max(slope_worst):.6g} (<= 1)",
        "falsifier": (
            f"Adam over (s, weights, bias) on max(Phi(s)/(sL), -Phi(s)/(sL), Phi'/b, Phi'/a), configuration "
            f"{FLUX_CONFIGS[SEARCHED_CONFIG]}"
        ),
    }
    falsifier = adversarial.outcome(FLUX_OBJECTIVE, budget, searched, started, nonfinite, found=any(not c.passed for c in cases))
    return Evidence(
        tuple(cases), 1.0, "<=", "gamma_64: a few roundings of L sigma(x) and of its derivative", hypotheses, falsifier
    )


def _random_networks(rng: np.random.Generator, width, boundary, kernel_size, depth, count: int) -> list[DiffusionResNet]:
    """`count` networks of one configuration with random parameters. The constructor runs
    once (its fitted flux and operators are the same for every sample); each network
    replaces every trainable parameter (kernels, flux weights and bias, thetas)."""
    template = DiffusionResNet(
        _NETWORK_SIZE, depth=depth, width=width, kernel_size=kernel_size, boundary=boundary,
        key=jax.random.key(int(rng.integers(2**31))),
    )
    return random_parameters(rng, template, count)


def random_parameters(rng: np.random.Generator, template, count: int) -> list:
    """`count` copies of `template` (a network of diffusion blocks, `jaxpde.nn.BlockStack`)
    with every trainable parameter replaced: kernels N(0, 1) times 10^U(-2, 2) per stage, flux
    weights up to sd 30, bias in [-10, 10], theta in [-8, 8] or 40 (sigma(theta) = 1 in
    float64) in a quarter of the stages. The fitted flux and the operators' structure are the
    template's."""
    shape = template.operators.kernel.shape
    depth = shape[0]
    nets = []
    for _ in range(count):
        scales = 10 ** rng.uniform(-2, 2, (depth,) + (1,) * (len(shape) - 1))
        kernels = rng.standard_normal(shape) * scales
        weights = rng.standard_normal(template.fluxes.weights.shape) * 10 ** rng.uniform(-1, math.log10(30), (depth, 1))
        biases = rng.uniform(-10, 10, depth)
        thetas = np.where(rng.uniform(size=depth) < 0.25, 40.0, rng.uniform(-8, 8, depth))
        nets.append(eqx.tree_at(
            lambda m: (m.operators.kernel, m.fluxes.weights, m.fluxes.bias, m.thetas), template,
            tuple(jnp.asarray(x) for x in (kernels, weights, biases, thetas)),
        ))
    return nets


def network_case(nets, stacked, inputs, name: str, key, budget: Budget, search=lambda net: net):
    """One configuration of a network claim: every step's ratio $\\|u_t\\| / \\|u_{t-1}\\|$ of
    the networks `nets` (`stacked` along a leading axis) on `inputs` (one per network), and
    the falsifier on `search(net)` of the network with the largest ratio. The tolerance is
    `norm_ratio_tolerance` of that network's worst block per step, compounded over its steps
    for the falsifier (it maximises the whole network's gain, a product of the step
    ratios). Returns the `CaseResult` and the falsifier's `Falsification`."""
    ratios = np.asarray(layer_ratios(stacked, inputs))
    net = nets[int(np.argmax(ratios))]
    found = falsify_gain(search(net), tuple(inputs.shape[1:]), key, restarts=budget.restarts, steps=budget.steps)
    tolerance = max(norm_ratio_tolerance(block, np.float64).value for block in net.blocks())
    network_tolerance = (1 + tolerance) ** (net.layers * net.repeats) - 1
    worst = max(float(np.max(ratios)), float(found.worst))
    passed = (
        float(np.max(ratios)) <= 1 + tolerance and float(found.worst) <= 1 + network_tolerance
        and bool(np.all(np.isfinite(ratios)))
    )
    return CaseResult(name, budget.samples + budget.restarts, worst, 1.0, network_tolerance, passed), found


@eqx.filter_jit
def layer_ratios(nets, inputs):
    """Largest ||u_t|| / ||u_(t-1)|| over the block applications (`net.states`), per
    (network, input) pair."""

    def one(net, u):
        norms = jax.vmap(l2_norm)(net.states(u))
        return jnp.max(norms[1:] / norms[:-1])

    return sharded_vmap(one)(nets, inputs)


def network_evidence(results, budget: Budget, hypotheses: dict, steps: str) -> Evidence:
    """The `Evidence` of a network stability claim from its `network_case` results, one
    `(case, search)` per configuration: the bound 1 on every step's ratio, with the tolerance
    compounded over the network's `steps` ("depth", "steps"), and the falsifier's outcome."""
    cases = tuple(case for case, _ in results)
    falsifier = adversarial.outcome(
        "gain", budget, [float(found.worst) for _, found in results], [float(found.sampled) for _, found in results],
        sum(int(found.nonfinite) for _, found in results), found=any(not case.passed for case in cases),
    )
    derivation = f"norm_ratio_tolerance of the worst block, compounded over the {steps} for the whole network"
    return Evidence(cases, 1.0, "<=", derivation, hypotheses, falsifier)


def _check_resnet(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    depth = 2 * budget.depth
    results = []
    for index, (width, boundary, kernel_size) in enumerate(NETWORK_CONFIGS):
        nets = _random_networks(rng, width, boundary, kernel_size, depth, budget.samples)
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *nets)
        signals = sampling.base_signals(rng, budget.samples, _NETWORK_SIZE)
        amplitudes = 10 ** rng.uniform(-2, 2, (budget.samples, 1))
        name = f"width={width} {boundary} k={kernel_size} depth={depth}"
        results.append(network_case(
            nets, stacked, jnp.asarray(signals * amplitudes), name, jax.random.fold_in(key, index), budget
        ))
    hypotheses = {
        "parameters": (
            "kernels N(0, 1) times 10^U(-2, 2) per layer; RadialBasisFlux weights up to sd 30, bias in [-10, 10]; "
            "theta in [-8, 8], 40 (sigma(theta) = 1 in float64) in a quarter of the layers"
        ),
        "inputs": ", ".join(sampling.SIGNAL_KINDS) + f"; amplitudes 10^U(-2, 2); n = {_NETWORK_SIZE}",
        "measured": "every layer's ratio ||u_l|| / ||u_(l-1)||, and the falsifier on the network with the largest one",
    }
    return network_evidence(results, budget, hypotheses, "depth")


RADIAL_BASIS_FLUX = Claim(
    "radial-basis-flux",
    "The learnable RadialBasisFlux satisfies 0 <= Phi(s)/s <= L and a <= Phi' <= b (its derivative_range) "
    "for every value of its weights and bias.",
    _check_radial_flux,
)
DIFFUSION_RESNET_STABILITY = Claim(
    "diffusion-resnet-stability",
    "A DiffusionResNet (tau = sigma(theta) 2 / (L ||K||^2), sector-bounded learnable flux) is Euclidean stable "
    "at every depth for every parameter value: ||u_l|| <= ||u_(l-1)||.",
    _check_resnet,
)
