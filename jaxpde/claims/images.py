"""Claims on images (2-D): the gradient's norm, the explicit and semi-implicit steps
re-certified with the image operators (`jaxpde.Gradient`, `jaxpde.Stencil2D`) by the
same checks as in 1-D, and the image diffusion network (`DiffusionResNet2D`) stable for
every parameter value."""


import jax
import jax.numpy as jnp
import numpy as np

from ..fluxes import FLUXES
from ..nn.resnet2d import DiffusionResNet2D
from ..operators import BOUNDARIES
from ..operators2d import Gradient
from ..verify.certificate import CaseResult
from ..verify.tolerance import gamma
from . import explicit, implicit, networks, sampling
from .registry import Budget, Claim, Evidence

GRADIENT_ORDERS = (1, 2, 3)
# Rounding of the computed bound (proofs/gradient-2d-norm.md, item 5) and of LAPACK's
# largest singular value (backward stable: relative error <= 8 (rows + cols) eps).
BOUND_ROUNDING = 32


def _gradient_norm(key, budget: Budget) -> Evidence:
    """For each order, boundary and image shape: the largest singular value of the dense
    gradient (LAPACK) against `norm_bound()`; equal where `norm_exact()`; and, for order 1,
    $h^2\\|\\nabla\\|^2 \\le 8$."""
    rng = sampling.numpy_rng(key)
    eps = float(np.finfo(np.float64).eps)
    cases, eights = [], []
    for order in GRADIENT_ORDERS:
        for index, boundary in enumerate(BOUNDARIES):
            for offset in range(len(budget.sizes)):
                shape = sampling.image_shape(budget.sizes, index + offset)
                shape = (max(shape[0], order + 1), max(shape[1], order + 1))
                h = float(10 ** rng.uniform(-1.0, 0.3))
                op = Gradient(shape, h=h, boundary=boundary, order=order)
                matrix = np.asarray(op.as_matrix(), np.float64)
                rows, cols = matrix.shape
                sigma = float(np.linalg.svd(matrix, compute_uv=False)[0])
                bound = float(op.norm_bound())
                tolerance = float(gamma(BOUND_ROUNDING, np.float64)) + 8 * (rows + cols) * eps
                # worst: sigma / bound (<= 1); where the bound is exact also bound / sigma.
                worst = sigma / bound
                if op.norm_exact():
                    worst = max(worst, bound / sigma)
                if order == 1:
                    eights.append(bound**2 * h**2 / 8)
                    worst = max(worst, eights[-1])
                name = f"grad{order} {boundary} {shape[0]}x{shape[1]} h={h:.3g}" + (" exact" if op.norm_exact() else "")
                cases.append(CaseResult(name, 1, worst, 1.0, tolerance, bool(worst <= 1 + tolerance)))
    hypotheses = {
        "norm": "sigma_1 of the dense gradient (LAPACK SVD) <= norm_bound(); equal (both ways) where norm_exact()",
        "first order": (
            f"h^2 norm_bound()^2 / 8 <= 1: largest {max(eights):.17g} (1 for periodic and even H, W)"
        ),
        "shapes": "images (s, s + 1) and (s, s + 2), s = min(size, 16) // 2 for the budget's sizes; orders 1-3; all boundaries",
    }
    derivation = f"gamma_{BOUND_ROUNDING} (the bound's rounding) + 8 (rows + cols) eps (the SVD's)"
    return Evidence(tuple(cases), 1.0, "<=", derivation, hypotheses)


def _explicit(key, budget: Budget) -> Evidence:
    return explicit.stability_evidence(key, budget, FLUXES, False, sampling.image_operator_cases)


def _semi_implicit(key, budget: Budget) -> Evidence:
    return implicit.stability_evidence(key, budget, "semi-implicit", sampling.image_operator_cases)


GRADIENT_2D_NORM = Claim(
    "gradient-2d-norm",
    "The image gradient (x and y differences of order m, stacked) has ||grad||^2 = ||D_m^(H)||^2 + "
    "||D_m^(W)||^2, so ||grad||^2 <= 8/h^2 for m = 1, for every boundary; norm_bound() is certified "
    "and exact for m = 1 and periodic boundaries.",
    _gradient_norm,
)

EXPLICIT_STABILITY_2D = Claim(
    "explicit-stability-2d",
    "On images: if 0 <= Phi(s)/s <= L and 0 < tau <= 2/(L ||K||^2), then ||u - tau K^T Phi(K u)|| <= "
    "||u|| for K the image gradient (orders 1, 2) or a random 2-D stencil (1 and 2 channels), every "
    "boundary and every flux.",
    _explicit,
)

SEMI_IMPLICIT_STABILITY_2D = Claim(
    "semi-implicit-stability-2d",
    "On images: the semi-implicit step (I + tau K^T G(u) K) v = u is Euclidean stable for every tau > 0 "
    f"(checked up to {implicit.LARGEST_MULTIPLE:g} x 2/(L ||K||^2)), K the image gradient or a 2-D stencil.",
    _semi_implicit,
)


# Image networks: (width, boundary, kernel size, repeats) on images of `_NETWORK_SHAPE`,
# depth budget.depth. neumann runs the `lax.conv` path, periodic the `Stencil2D` taps.
NETWORK_CONFIGS_2D = ((3, "neumann", 3, 2), (2, "periodic", 3, 1))
_NETWORK_SHAPE = (8, 10)
IMAGE_KINDS = ("gaussian", "checkerboard", "random-walk", "piecewise-constant")


def base_images(rng: np.random.Generator, count: int, shape: tuple[int, int]) -> np.ndarray:
    """`count` images of unit root mean square, cycling through `IMAGE_KINDS`: Gaussian
    noise, a noisy checkerboard (the highest frequency), a 2-D random walk (cumulative sums
    along both axes) and piecewise-constant rectangles."""
    noise = rng.standard_normal((count, *shape))
    rows, cols = np.indices(shape)
    cut = rng.integers(1, np.array(shape), (count, 2))
    blocks = (rows[None] < cut[:, 0, None, None]).astype(float) + 2 * (cols[None] < cut[:, 1, None, None])
    kinds = np.stack([
        noise,
        (-1.0) ** (rows + cols)[None] * (1 + 0.1 * noise),
        np.cumsum(np.cumsum(noise, axis=1), axis=2),
        blocks * rng.standard_normal((count, 1, 1)) + 1e-3 * noise,
    ])
    images = kinds[np.arange(count) % len(IMAGE_KINDS), np.arange(count)]
    return images / np.sqrt(np.mean(images * images, axis=(1, 2), keepdims=True))


def random_networks_2d(rng: np.random.Generator, width, boundary, kernel_size, repeats, depth, count: int):
    """`count` image networks of one configuration with random parameters
    (`networks.random_parameters`)."""
    template = DiffusionResNet2D(
        _NETWORK_SHAPE, depth=depth, width=width, kernel_size=kernel_size, boundary=boundary, repeats=repeats,
        key=jax.random.key(int(rng.integers(2**31))),
    )
    return networks.random_parameters(rng, template, count)


def _check_resnet_2d(key, budget: Budget) -> Evidence:
    rng = sampling.numpy_rng(key)
    depth = budget.depth
    results = []
    for index, (width, boundary, kernel_size, repeats) in enumerate(NETWORK_CONFIGS_2D):
        nets = random_networks_2d(rng, width, boundary, kernel_size, repeats, depth, budget.samples)
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *nets)
        images = base_images(rng, budget.samples, _NETWORK_SHAPE)
        amplitudes = 10 ** rng.uniform(-2, 2, (budget.samples, 1, 1))
        name = f"width={width} {boundary} k={kernel_size}x{kernel_size} depth={depth} repeats={repeats}"
        # The search runs the network with its step sizes evaluated once (`steps()`, the
        # same map): it evaluates it many times at fixed parameters.
        results.append(networks.network_case(
            nets, stacked, jnp.asarray(images * amplitudes), name, jax.random.fold_in(key, index), budget,
            search=lambda net: net.steps(),
        ))
    hypotheses = {
        "parameters": (
            "filters N(0, 1) times 10^U(-2, 2) per stage; RadialBasisFlux weights up to sd 30, bias in [-10, 10]; "
            "theta in [-8, 8], 40 (sigma(theta) = 1 in float64) in a quarter of the stages"
        ),
        "inputs": ", ".join(IMAGE_KINDS) + f"; amplitudes 10^U(-2, 2); images {_NETWORK_SHAPE[0]}x{_NETWORK_SHAPE[1]}",
        "measured": "every step's ratio ||u_t|| / ||u_(t-1)||, and the falsifier on the network with the largest one",
    }
    return networks.network_evidence(results, budget, hypotheses, "steps")


DIFFUSION_RESNET_STABILITY_2D = Claim(
    "diffusion-resnet-stability-2d",
    "A DiffusionResNet2D (learned C-channel 2-D filters K, tau = sigma(theta) 2 / (L ||K||^2) with the certified "
    "norm bound, a learnable sector-bounded flux per stage) is Euclidean stable at every depth for every parameter "
    "value and every image: ||u_t|| <= ||u_(t-1)|| after every step.",
    _check_resnet_2d,
)
