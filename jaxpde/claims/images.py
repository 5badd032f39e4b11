"""Claims on images (2-D): the gradient's norm, and the explicit and semi-implicit steps
re-certified with the image operators (`jaxpde.Gradient`, `jaxpde.Stencil2D`) by the
same checks as in 1-D."""

import numpy as np

from ..fluxes import FLUXES
from ..operators import BOUNDARIES
from ..operators2d import Gradient
from ..verify.certificate import CaseResult
from ..verify.tolerance import gamma
from . import explicit, implicit, sampling
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
