"""The 2-D multigrid claim: the black-box cycle for the image system, and the multigrid U-net
with any parameters, contract the error in the energy norm for every diffusivity g >= 0 and
step size tau > 0."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._xla_flags import QUICK_COMPILE
from ..fluxes import frozen_diffusivity
from ..nn.unet2d import MultigridUNet2D
from ..operators2d import Gradient
from ..schemes.multigrid2d import (
    Multigrid2D,
    diffusion_stencil_2d,
    error_propagation_2d,
)
from ..verify.certificate import CaseResult, FalsifierOutcome
from . import sampling
from .registry import Budget, Claim, Evidence

# (image shape, smoother, cycle, sweeps): small images with levels down to 2 x 2 points,
# odd, even and mixed sides, V- and W-cycles, both smoothers, and the U-net of a V-cycle
# with random parameters (`_random_unets`).
CONFIGURATIONS = (
    ((9, 9), "red-black", "V", 2),
    ((8, 11), "jacobi", "W", 1),
    ((9, 9), "red-black", "U-net", 2),
)
# The U-net's random parameters: logits of the sweep weights theta = sigmoid(logit) and
# offsets on the interpolation weights, normal with these standard deviations.
LOGIT_SCALE, OFFSET_SCALE = 3.0, 2.0
# Rounds of the search (each evaluates one batch of perturbed diffusivities).
SEARCH_ROUNDS = 3
_quickly_compiled = functools.partial(
    eqx.filter_jit, compiler_options=QUICK_COMPILE
)


def _multigrid(smoother: str, cycle: str, sweeps: int) -> Multigrid2D:
    return Multigrid2D(
        smoother=smoother,
        cycle="V" if cycle == "U-net" else cycle,
        pre_smoothing=sweeps,
        post_smoothing=sweeps,
        coarsest=4,
    )


@_quickly_compiled
def _matrices(multigrid: Multigrid2D, g, tau):
    r"""For each diffusivity of the batch `g` (edges, `(count, 2, H, W)`) and step size of
    `tau`: the dense system $A = I + \tau\nabla^\top G\nabla$ and the dense error propagation
    $E$ of one cycle, and the solver's tolerance $1000\varepsilon \max_i \sum_j |a_{ij}|$."""
    shape = g.shape[2:]
    size = shape[0] * shape[1]
    basis = jnp.eye(size, dtype=g.dtype).reshape(size, *shape)

    def one(g, tau):
        A = diffusion_stencil_2d(Gradient(shape), frozen_diffusivity(g), tau)
        hierarchy = multigrid.hierarchy(A)
        E = jax.vmap(
            lambda e: error_propagation_2d(hierarchy, e, gamma=multigrid.gamma).reshape(
                -1
            )
        )(basis).T
        return A.as_matrix(), E, multigrid.default_rtol(A, g.dtype)

    return jax.vmap(one)(g, tau)


def _random_unets(
    rng: np.random.Generator, count: int, shape, multigrid: Multigrid2D
) -> MultigridUNet2D:
    """`count` U-nets of `multigrid`'s V-cycle, stacked on a leading axis: every sweep's
    logit the V-cycle's plus a normal draw with deviation `LOGIT_SCALE` (theta from about
    1e-4 to 1 - 1e-4), every interpolation offset normal with deviation `OFFSET_SCALE`."""
    net = MultigridUNet2D(shape, multigrid=multigrid)

    def draw(leaf, scale):
        return np.asarray(leaf) + rng.normal(0, scale, (count, *leaf.shape))

    return eqx.tree_at(
        lambda n: (n.pre_logits, n.post_logits, n.transfer_offsets),
        net,
        (
            draw(net.pre_logits, LOGIT_SCALE),
            draw(net.post_logits, LOGIT_SCALE),
            draw(net.transfer_offsets, OFFSET_SCALE),
        ),
    )


@_quickly_compiled
def _unet_matrices(nets: MultigridUNet2D, g, tau):
    r"""For each U-net of the batch `nets`, diffusivity of `g` and step size of `tau`: the
    dense $A$, the dense error propagation $E e = \mathrm{net}(A, e, 0)$ and the solver's
    tolerance (as `_matrices`)."""
    shape = g.shape[2:]
    size = shape[0] * shape[1]
    basis = jnp.eye(size, dtype=g.dtype).reshape(size, *shape)

    def one(net, g, tau):
        A = diffusion_stencil_2d(Gradient(shape), frozen_diffusivity(g), tau)
        zero = jnp.zeros(shape, g.dtype)
        E = jax.vmap(lambda e: net(A, e, zero).reshape(-1))(basis).T
        return A.as_matrix(), E, Multigrid2D().default_rtol(A, g.dtype)

    return jax.vmap(one)(nets, g, tau)


def _evaluate(multigrid: Multigrid2D, nets, g, tau, members):
    """`_matrices` of the cycle, or with U-nets (`nets` not None) `_unet_matrices` of the
    U-nets `members` of `nets`."""
    g, tau = jax.device_put(g), jax.device_put(tau)
    if nets is None:
        return _matrices(multigrid, g, tau)
    return _unet_matrices(jax.tree.map(lambda leaf: leaf[members], nets), g, tau)


def _energy_norms(matrices, errors) -> np.ndarray:
    r"""$\|E\|_A = \|L^\top E L^{-\top}\|_2$, $A = LL^\top$, for each pair."""
    norms = []
    for A, E in zip(np.asarray(matrices), np.asarray(errors)):
        L = np.linalg.cholesky(A)
        norms.append(np.linalg.norm(L.T @ E @ np.linalg.inv(L.T), 2))
    return np.asarray(norms)


def random_diffusivities(rng: np.random.Generator, count: int, shape) -> np.ndarray:
    """Edge diffusivities `(count, 2, H, W)`: a log-uniform level over [1e-4, 1] times
    log-uniform noise over half a decade, constant jumps on random rectangles down to
    1e-6, about 5% zeros, and in every fourth sample a constant g = 1."""
    height, width = shape
    g = 10 ** rng.uniform(-4, 0, (count, 1, 1, 1)) * 10 ** rng.uniform(
        -0.5, 0, (count, 2, height, width)
    )
    for sample in g:
        for _ in range(3):
            r, c = rng.integers(0, height), rng.integers(0, width)
            sample[
                :, r : r + rng.integers(1, height), c : c + rng.integers(1, width)
            ] *= 10 ** -rng.uniform(0, 6)
    g[rng.random(g.shape) < 0.05] = 0
    g[::4] = 1
    return g


def _perturb(rng: np.random.Generator, g: np.ndarray) -> np.ndarray:
    """`g` with a random rectangle scaled by up to three decades either way, and a few
    edges set to zero (a search step)."""
    g = g.copy()
    height, width = g.shape[1:]
    r, c = rng.integers(0, height), rng.integers(0, width)
    g[:, r : r + rng.integers(1, height), c : c + rng.integers(1, width)] *= (
        10 ** rng.uniform(-3, 3)
    )
    g[rng.random(g.shape) < 0.02] = 0
    return np.minimum(g, 1e4)


def _check_contraction(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    cases, sampled_worst, searched_worst = [], [], []
    count = max(4, budget.samples // 4)
    for shape, smoother, cycle, sweeps in CONFIGURATIONS:
        multigrid = _multigrid(smoother, cycle, sweeps)
        g = random_diffusivities(rng, count, shape)
        tau = 10 ** rng.uniform(-2, 4, count)
        # U-net: one random parameter set per sample (`members` indexes them; the search's
        # candidates keep their parent's).
        nets = _random_unets(rng, count, shape, multigrid) if cycle == "U-net" else None
        members = np.arange(count)
        A, E, rtol = _evaluate(multigrid, nets, g, tau, members)
        norms = _energy_norms(A, E)
        sampled_worst.append(float(norms.max()))
        tolerance = float(np.max(rtol))
        # The search: perturb the two worst diffusivities so far (half of the batch from each)
        # and keep the worst `count` of the old and the new batch.
        for _ in range(SEARCH_ROUNDS):
            parents = np.argsort(norms)[::-1][np.arange(count) % 2]
            candidates = np.stack([_perturb(rng, g[p]) for p in parents])
            steps = tau[parents] * 10 ** rng.uniform(-0.5, 0.5, count)
            A, E, rtol = _evaluate(multigrid, nets, candidates, steps, members[parents])
            tolerance = max(tolerance, float(np.max(rtol)))
            norms = np.concatenate([norms, _energy_norms(A, E)])
            keep = np.argsort(norms)[::-1][:count]
            g, tau, members, norms = (
                np.concatenate([g, candidates])[keep],
                np.concatenate([tau, steps])[keep],
                np.concatenate([members, members[parents]])[keep],
                norms[keep],
            )
        worst = float(norms.max())
        searched_worst.append(worst)
        name = (
            f"{cycle}({sweeps},{sweeps}) {smoother} {shape[0]}x{shape[1]}, g >= 0 over 10 decades with jumps and "
            f"zeros, tau in [1e-2, 1e4]: ||E||_A = {worst:.3f}"
        )
        if cycle == "U-net":
            name = (
                f"U-net of V({sweeps},{sweeps}) {smoother} {shape[0]}x{shape[1]}, random sweep weights and "
                f"interpolation offsets, g >= 0 with jumps and zeros, tau in [1e-2, 1e4]: ||E||_A = {worst:.3f}"
            )
        samples = count * (1 + SEARCH_ROUNDS)
        cases.append(
            CaseResult(
                name, samples, worst, 1.0, tolerance, bool(worst <= 1 + tolerance)
            )
        )
    hypotheses = {
        "problems": (
            "A = I + tau grad^T G grad (jaxpde.Gradient, neumann), g on the edges: log-uniform levels in [1e-4, 1], "
            "rectangles scaled down by up to 1e-6, 5% zeros, every fourth g = 1; tau log-uniform in [1e-2, 1e4]"
        ),
        "cycles": "; ".join(
            f"{c}({s},{s}) {m} on {h}x{w}, black-box interpolation, R = P^T / 4, Galerkin, coarsest <= 4 points"
            for (h, w), m, c, s in CONFIGURATIONS
            if c != "U-net"
        ),
        "networks": "; ".join(
            f"MultigridUNet2D of V({s},{s}) {m} on {h}x{w} (coarsest <= 4 points), one random parameter set per "
            f"sample (kept by the search): every sweep's logit + N(0, {LOGIT_SCALE:g}^2), so theta = sigmoid(logit) "
            f"in (0, 1) down to ~1e-4 from either end; the three interpolation offsets per level ~ N(0, "
            f"{OFFSET_SCALE:g}^2); E e = net(A, e, 0) on the unit vectors"
            for (h, w), m, c, s in CONFIGURATIONS
            if c == "U-net"
        ),
        "norm": "||E||_A = ||L^T E L^-T||_2 from the dense A = L L^T and the dense E (LAPACK SVD), exact up to rounding",
    }
    falsifier = FalsifierOutcome(
        objective="||E||_A over the diffusivities (random rectangles rescaled by up to 1e3 either way, edges zeroed; each U-net sample keeps its random parameters)",
        restarts=2 * len(CONFIGURATIONS),
        steps=SEARCH_ROUNDS,
        worst=max(searched_worst),
        sampled=max(sampled_worst),
        nonfinite=0,
        found=any(not c.passed for c in cases),
    )
    derivation = "1000 eps max_i sum_j |a_ij| (the solver's floor; rounding of E and of its energy norm)"
    return Evidence(tuple(cases), 1.0, "<=", derivation, hypotheses, falsifier)


MULTIGRID_2D_CONTRACTION = Claim(
    "multigrid-2d-contraction",
    "The 2-D black-box multigrid cycle for the image system I + tau grad^T G grad (operator-dependent "
    "interpolation, restriction P^T / 4, Galerkin coarse operators, symmetric Gauss-Seidel or damped Jacobi "
    "smoothing with weights in (0, 1), exact coarsest solve) contracts the error in the energy norm, "
    "||E||_A < 1, for every image shape, every g >= 0 and every tau > 0; so does the MultigridUNet2D for "
    "every value of its parameters (a weight theta = sigmoid(.) in (0, 1) per sweep, offsets on the "
    "interpolation weights).",
    _check_contraction,
)
