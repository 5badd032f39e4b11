r"""Bounds of $\|K\|_2$ from the dense matrix of an operator or linear callable.

- `dense_gram`: Gram iteration (`gram_bound`) on the materialised matrix;
- `svd_upper_bound`: a proven bound from LAPACK's SVD, $\|K\| \le \|X\| + \|K - X\|$
  for the exact matrix $X = \hat U\hat\Sigma\hat V^\top$ of the computed factors;
- `matrix_lower`, `best_dense_lower`: certified $\|Mx\|/\|x\|$ with $\||M|\| \le \|M\|_F$.

Proofs: `proofs/spectral-norm-bounds.md`, Steps 4 to 6.
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .._bounds import (
    gamma,
    gram_bound,
    inflation,
    l2_norm,
    top_right_vector,
    unit_roundoff,
)
from ._power import certified_lower

# Gram steps on a dense matrix: overestimation at most rank^(2^-(T+1)) <= 1 + 4e-6 for rank 1024.
DENSE_GRAM_ITERATIONS = 20
_HIGHEST = jax.lax.Precision.HIGHEST


def _dense_matrix(apply: Callable, in_shape: tuple[int, ...], dtype) -> Array:
    size = math.prod(in_shape)
    basis = jnp.eye(size, dtype=dtype).reshape(size, *in_shape)
    return jax.vmap(apply)(basis).reshape(size, -1).T


@eqx.filter_jit
def dense_matrix(apply: Callable, in_shape: tuple[int, ...], dtype) -> Array:
    """The dense matrix of the linear map `apply` on inputs of shape `in_shape`: one
    column per standard basis vector."""
    return _dense_matrix(apply, in_shape, dtype)


@eqx.filter_jit
def dense_gram(apply: Callable, in_shape: tuple[int, ...], dtype, iterations: int) -> tuple[Array, Array]:
    """(Gram iteration bound of $\\|K\\|$, dense matrix of $K$) for the linear map `apply`."""
    matrix = _dense_matrix(apply, in_shape, dtype)
    return gram_bound(matrix, iterations), matrix


def _frobenius_bound(matrix: Array) -> Array:
    u = unit_roundoff(matrix.dtype)
    return jnp.sqrt(jnp.sum(matrix * matrix)) * (1 + gamma(matrix.size + 2, matrix.dtype)) * (1 + 2 * u)


def frobenius64(x: np.ndarray) -> float:
    """Certified upper bound of $\\|x\\|_F$ for a float64 NumPy array: a sum of $N$ squares
    (relative error $\\gamma_N$ in any order), a square root, an underflow allowance of
    `tiny` per square; rounded up by `inflation`."""
    tiny = float(np.finfo(np.float64).tiny)
    return (math.sqrt(float(np.sum(x * x)) + x.size * tiny)) * inflation(x.size // 2 + 3, np.float64)


def svd_upper_bound(matrix: ArrayLike) -> tuple[float, float, np.ndarray]:
    r"""A proven upper bound of $\|A\|_2$ from a computed SVD: `(upper, estimate, vector)`.

    LAPACK (NumPy's `svd`, float64 on the host) returns $\hat U, \hat s, \hat V^\top$; whatever their
    accuracy, $X = \hat U\operatorname{diag}(\hat s)\hat V^\top$ is a matrix of exact numbers, and by the triangle
    inequality (Weyl)
    $$\|A\| \le \|X\| + \|A - X\| \le \hat s_1\sqrt{1 + \eta_U}\sqrt{1 + \eta_V} + \|A - X\|,
    \qquad \eta_Q \ge \|Q^\top Q - I\|_2 ,$$
    with $\eta_Q = \|\mathrm{fl}(Q^\top Q) - I\|_F + \gamma_k\|Q\|_F^2$ ($k$ the inner length) and
    $\|A - X\| \le \|\hat R\|_F/(1 - \mathbf{u}) + (\mathbf{u} + \gamma_r(1 + \mathbf{u}))\hat s_1\|\hat U\|_F\|\hat V\|_F$ for the computed
    residual $\hat R$ (`proofs/spectral-norm-bounds.md`, Step 6). Every norm is a certified
    upper bound (`frobenius64`) and every combination is rounded up. The bound exceeds
    $\|A\|$ by about $r^2\mathbf{u}_{64}\hat s_1$ at most ($r = \min(m, n)$); the estimate is LAPACK's $\hat s_1$
    (not a bound), the vector its right singular vector.

    **Arguments:**

    - `matrix`: real, shape `(m, n)`, any float dtype (copied exactly to float64).

    **Returns:** `(upper, estimate, vector)`: Python floats (float64, in the matrix's scale)
    and the top right singular vector, shape `(n,)`, float64.
    """
    a = np.asarray(matrix)
    if a.ndim != 2 or 0 in a.shape or not np.issubdtype(a.dtype, np.floating):
        raise ValueError(
            f"`matrix` must be a real floating array of shape (m, n) with m, n >= 1, got {a.dtype} {a.shape}."
        )
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        return math.inf, math.nan, np.zeros(a.shape[1])
    largest = float(np.max(np.abs(a)))
    if largest == 0:
        vector = np.zeros(a.shape[1])
        vector[0] = 1
        return 0.0, 0.0, vector
    # Scaling by a power of two is exact and keeps the squares away from underflow.
    scale = 2.0 ** math.frexp(largest)[1]
    a = a / scale
    u = unit_roundoff(np.float64)
    left, values, right = np.linalg.svd(a, full_matrices=False)
    r = values.size
    top = float(values[0])

    def defect(q: np.ndarray) -> float:
        # ||q^T q - I||_2 <= ||fl(q^T q) - I||_F / (1 - u) + gamma_k || |q| ||_F^2 (one rounding in the
        # difference; the product's error is entrywise <= gamma_k |q|^T |q|); six roundings after.
        gram = q.T @ q
        frob = frobenius64(q)
        off = frobenius64(gram - np.eye(gram.shape[0])) * (1 + 4 * u)
        return (off + gamma(q.shape[0] + 1, np.float64) * frob * frob) * inflation(6, np.float64)

    norm_u = math.sqrt(1 + defect(left)) * inflation(2, np.float64)
    norm_v = math.sqrt(1 + defect(right.T)) * inflation(2, np.float64)
    residual = a - (left * values) @ right
    slack = (u + gamma(r + 1, np.float64) * (1 + u)) * top * frobenius64(left) * frobenius64(right)
    upper = (top * norm_u * norm_v + frobenius64(residual) * (1 + 4 * u) + slack) * inflation(10, np.float64)
    return upper * scale, top * scale, right[0]


@eqx.filter_jit
def matrix_lower(matrix: Array, x: Array) -> Array:
    """Certified $\\|Mx\\|/\\|x\\|$ for a dense matrix ($\\||M|\\| \\le \\|M\\|_F$, $r$ = columns)."""
    y = jnp.matmul(matrix, x.reshape(-1), precision=_HIGHEST)
    ratio = l2_norm(y) / l2_norm(x)
    return certified_lower(ratio, _frobenius_bound(matrix), matrix.shape[1], sum(matrix.shape))


@eqx.filter_jit
def best_dense_lower(matrix: Array, vector: Array, iterations: int) -> tuple[Array, Array]:
    """The better certified lower bound of the power iterate `vector` and of the Gram
    iteration's top right singular vector of `matrix`."""
    top = jnp.real(top_right_vector(matrix, iterations)).reshape(vector.shape)
    from_power, from_gram = matrix_lower(matrix, vector), matrix_lower(matrix, top)
    better = from_gram > from_power
    return jnp.where(better, from_gram, from_power), jnp.where(better, top, vector)
