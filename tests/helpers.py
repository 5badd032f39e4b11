"""Shared test helpers: tolerances, comparisons, independent references, strategies."""

import math

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np

import jaxpde
from jaxpde import fluxes

# Registries that generic tests parametrize over.
ALL_BOUNDARIES = jaxpde.BOUNDARIES
ALL_FLUXES = fluxes.FLUXES
NONMONOTONE_FLUXES = (fluxes.PeronaMalik, fluxes.ExponentialPeronaMalik, fluxes.Weickert)
SIZES = (5, 8, 17, 32)  # a small set, to limit recompilation


def tolerance(dtype) -> dict[str, float]:
    """The one place where test tolerances are set, keyed on dtype."""
    if np.dtype(dtype) == np.float64:
        return {"rtol": 1e-12, "atol": 1e-12}
    return {"rtol": 2e-5, "atol": 2e-5}


def stencil_matrix(kernel, n: int, boundary: str, offset: int = 0) -> np.ndarray:
    """Dense matrix of a stencil, built from the definition (independent of jaxpde):
    row i of output channel o holds kernel[o, c, j] at input (c, column) with column
    i + j (neumann), (i + j + offset) mod n (periodic) or i + j - (k - 1) (dirichlet)."""
    kernel = np.asarray(kernel, np.float64)
    single = kernel.ndim == 1
    if single:
        kernel = kernel[None, None]
    c_out, c_in, k = kernel.shape
    rows = {"neumann": n - k + 1, "periodic": n, "dirichlet": n + k - 1}[boundary]
    matrix = np.zeros((c_out, rows, c_in, n))
    for i in range(rows):
        for j in range(k):
            column = {"neumann": i + j, "periodic": (i + j + offset) % n, "dirichlet": i + j - (k - 1)}[boundary]
            if 0 <= column < n:
                matrix[:, i, :, column] += kernel[:, :, j]
    return matrix.reshape(c_out * rows, c_in * n)


def derivative_kernel(order: int, h: float) -> np.ndarray:
    return np.array([(-1) ** (order - j) * math.comb(order, j) / h**order for j in range(order + 1)])


def spectral_norm_svd(matrix) -> float:
    return float(np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False)[0])



# --- hypothesis strategies -------------------------------------------------------

orders = st.sampled_from((1, 2, 3))
boundaries = st.sampled_from(ALL_BOUNDARIES)
sizes = st.sampled_from(SIZES)
flux_kinds = st.sampled_from(ALL_FLUXES)
parameters = st.floats(0.05, 20.0)  # lam, eps or L
spacings = st.sampled_from((1.0, 0.5, 0.1))
step_fractions = st.one_of(st.just(1.0), st.floats(0.01, 1.0))


@st.composite
def derivatives(draw):
    order = draw(orders)
    n = max(draw(sizes), order + 1)
    return jaxpde.Derivative(order, n, h=draw(spacings), boundary=draw(boundaries))


@st.composite
def stencils(draw, channels: bool = True):
    k = draw(st.sampled_from((1, 2, 3, 5)))
    shape = draw(st.sampled_from(((k,), (2, 1, k), (3, 2, k)) if channels else ((k,),)))
    kernel = draw(hnp.arrays(np.float64, shape, elements=st.floats(-3, 3)))
    boundary = draw(boundaries)
    n = max(draw(sizes), k)
    return jaxpde.Stencil(kernel, n, boundary=boundary)


operators = st.one_of(derivatives(), stencils())


@st.composite
def signals(draw, shape: tuple[int, ...]):
    """Signals of several kinds and amplitudes over six decades."""
    size = math.prod(shape)
    kind = draw(st.sampled_from(("random", "alternating", "step", "constant")))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if kind == "random":
        x = rng.standard_normal(size)
    elif kind == "alternating":
        x = (-1.0) ** np.arange(size)
    elif kind == "step":
        x = np.where(np.arange(size) < size // 2, -1.0, 1.0) + 0.01 * rng.standard_normal(size)
    else:
        x = np.full(size, 1.0)
    amplitude = 10 ** draw(st.floats(-3, 3))
    return jnp.asarray(amplitude * x.reshape(shape))
