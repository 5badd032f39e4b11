"""Claims about the derivative operators: their spectral norms."""

import math

import numpy as np

from ..operators import BOUNDARIES, Derivative
from ..verify.certificate import CaseResult
from .registry import Budget, Claim, Evidence
from .sampling import ORDERS, numpy_rng


def reference_matrix(order: int, n: int, h: float, boundary: str) -> np.ndarray:
    """The matrix of $D_m$ built from its definition in NumPy (independent of jaxpde's
    stencil code): row i holds $(-1)^{m-j}\\binom{m}{j}/h^m$ at column i + j (neumann),
    (i + j) mod n (periodic), or i + j - m where that is inside the grid (dirichlet)."""
    taps = [(-1) ** (order - j) * math.comb(order, j) / h**order for j in range(order + 1)]
    rows = {"neumann": n - order, "periodic": n, "dirichlet": n + order}[boundary]
    matrix = np.zeros((rows, n))
    for i in range(rows):
        for j, tap in enumerate(taps):
            column = {"neumann": i + j, "periodic": (i + j) % n, "dirichlet": i + j - order}[boundary]
            if 0 <= column < n:
                matrix[i, column] += tap
    return matrix


def _check_derivative_norm(key, budget: Budget) -> Evidence:
    rng = numpy_rng(key)
    sizes = sorted(set(budget.sizes) | {4, 7, 64})
    cases, exact_gaps, bound_gaps = [], [], []
    eps = float(np.finfo(np.float64).eps)
    for order in ORDERS:
        for boundary in BOUNDARIES:
            for n in sizes:
                if n < order + 1:
                    continue
                h = float(10 ** rng.uniform(-1.0, 0.5))
                op = Derivative(order, n, h=h, boundary=boundary)
                # Independent reference: LAPACK's SVD of the matrix built from the definition.
                sigma = float(np.linalg.svd(reference_matrix(order, n, h, boundary), compute_uv=False)[0])
                upper = float(op.norm_bound())
                tolerance = 8 * (n + order + 1) * eps
                passed = sigma <= upper * (1 + tolerance) and upper <= (2 / h) ** order * (1 + tolerance)
                gap = (upper - sigma) / sigma
                if op.norm_exact():
                    passed = passed and gap <= tolerance
                    exact_gaps.append(gap)
                else:
                    bound_gaps.append(gap)
                kind = "exact" if op.norm_exact() else "bound"
                name = f"D{order} {boundary} n={n} h={h:.3g} ({kind})"
                cases.append(CaseResult(name, 1, sigma / upper, 1.0, tolerance, passed))
    hypotheses = {
        "reference": "largest singular value (numpy.linalg.svd, float64) of the matrix built from the definition",
        "exact cases": (
            f"order 1 (all boundaries) and periodic (all orders): |upper - sigma| / sigma <= "
            f"{max(exact_gaps):.3g} (must be within the tolerance)"
        ),
        "bound cases": (
            f"neumann and dirichlet, order >= 2 (product of first-difference norms): "
            f"upper / sigma - 1 in [{min(bound_gaps):.3g}, {max(bound_gaps):.3g}]"
        ),
        "ceiling": "upper <= (2/h)^m in every case",
    }
    derivation = "8 * (n + m + 1) * eps: backward error of the SVD and of the bound's float64 evaluation"
    return Evidence(tuple(cases), 1.0, "<=", derivation, hypotheses)


DERIVATIVE_NORM = Claim(
    "derivative-norm",
    "||D_1||^2 = 4 cos^2(pi/(2n)) / h^2 (neumann) and 4 cos^2(pi/(2(n+1))) / h^2 (dirichlet); the periodic "
    "norm is the maximum of |2 sin(theta/2)|^m / h^m over the DFT frequencies; norm_bound() >= ||D_m|| "
    "and ||D_m||^2 <= (4/h^2)^m for every order and boundary.",
    _check_derivative_norm,
)
