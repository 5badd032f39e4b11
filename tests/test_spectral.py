import time

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpde import Derivative, Stencil, verify
from jaxpde.verify.gram import gram_bound

from .helpers import SIZES, few_examples, operators, spectral_norm_svd, stencil_matrix

# Rounding slack of the comparison with numpy's SVD (its own backward error).
SLACK = 1e-12


def _brackets(bounds, sigma):
    assert float(bounds.lower) <= sigma * (1 + SLACK), (bounds.method, float(bounds.lower), sigma)
    assert sigma <= float(bounds.upper) * (1 + SLACK), (bounds.method, float(bounds.upper), sigma)


@few_examples(6)
@hypothesis.given(op=operators, seed=st.integers(0, 2**31 - 1))
def test_spectral_norm_brackets_the_svd(op, seed):
    bounds = verify.spectral_norm(op, key=jax.random.key(seed))
    sigma = spectral_norm_svd(op.as_matrix())
    _brackets(bounds, sigma)
    assert bounds.vector.shape == op.in_shape


def test_power_iteration_converges_for_a_periodic_derivative():
    op = Derivative(1, 16, boundary="periodic")
    bounds = verify.spectral_norm(op, iterations=500)
    assert float(bounds.upper) == pytest.approx(2.0, rel=1e-12)
    assert float(bounds.relative_gap) < 1e-6
    with pytest.raises(ValueError, match="`iterations`"):
        verify.spectral_norm(op, iterations=0)


@st.composite
def random_stencils(draw):
    shape = draw(st.sampled_from(((3,), (5,), (3, 2, 3))))
    kernel = draw(hnp.arrays(np.float64, shape, elements=st.floats(-3, 3)))
    boundary = draw(st.sampled_from(("periodic", "neumann", "dirichlet")))
    n = max(draw(st.sampled_from(SIZES)), shape[-1])
    return kernel, n, boundary


@few_examples(4)
@hypothesis.given(case=random_stencils())
def test_every_method_brackets_the_reference(case):
    kernel, n, boundary = case
    op = Stencil(kernel, n, boundary=boundary)
    sigma = spectral_norm_svd(stencil_matrix(kernel, n, boundary))
    own = "symbol" if boundary == "periodic" else "toeplitz"
    for method in ("auto", own, "gram", "svd"):
        bounds = verify.spectral_norm(op, method=method, iterations=20)
        _brackets(bounds, sigma)
        assert bounds.method == own if method == "auto" else bounds.method == method
    assert float(op.norm_bound()) >= sigma * (1 - SLACK)


@pytest.mark.parametrize("boundary", ["periodic", "neumann", "dirichlet"])
def test_derivative_auto_takes_the_smaller_certified_bound(boundary):
    op = Derivative(2, 32, h=0.5, boundary=boundary)
    sigma = spectral_norm_svd(op.as_matrix())
    auto = verify.spectral_norm(op)
    analytic = verify.spectral_norm(op, method="analytic")
    _brackets(auto, sigma)
    _brackets(analytic, sigma)
    assert auto.method.startswith("min(analytic")
    assert float(auto.upper) <= float(analytic.upper)


@hypothesis.given(
    shape=st.sampled_from(((3, 3), (5, 2), (2, 7), (16, 16), (1, 4))),
    complex_=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_gram_bound_is_certified_and_tight(shape, complex_, seed):
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((3, *shape))
    if complex_:
        matrix = matrix + 1j * rng.standard_normal((3, *shape))
    sigma = np.linalg.svd(matrix, compute_uv=False)[:, 0]
    bound = np.asarray(gram_bound(jnp.asarray(matrix)))
    assert np.all(sigma <= bound)
    # Overestimation at most rank^(2^-(T+1)) with T = 40, plus rounding.
    assert np.all(bound <= sigma * (1 + 1e-8))
    # Few iterations: still certified, within the stated factor rank^(1/2^(T+1)).
    rough = np.asarray(gram_bound(jnp.asarray(matrix), 2))
    assert np.all(sigma <= rough) and np.all(rough <= sigma * min(shape) ** (1 / 8) * (1 + 1e-12))


def test_gram_bound_equal_singular_values():
    q = np.linalg.qr(np.random.default_rng(0).standard_normal((4, 4)))[0] * 3.0
    bound = float(gram_bound(jnp.asarray(q)))
    assert 3.0 <= bound <= 3.0 * 4 ** (2.0**-41) * (1 + 1e-13)


def test_generic_callable_with_linear_transpose():
    kernel = jnp.array([1.0, -3.0, 2.0])

    def conv(u):
        return jnp.convolve(u, kernel, mode="valid")

    sigma = spectral_norm_svd(stencil_matrix(np.array(kernel[::-1]), 32, "neumann"))
    bounds = verify.spectral_norm(conv, in_shape=(32,))
    assert bounds.method == "gram"
    _brackets(bounds, sigma)
    assert float(bounds.relative_gap) < 1e-6
    svd = verify.spectral_norm(conv, in_shape=jnp.zeros(32), method="svd")
    _brackets(svd, sigma)
    # Above the dense limit: a lower bound only, and the method says so.
    big = verify.spectral_norm(conv, in_shape=(32,), dense_limit=16, transpose=lambda v: jnp.convolve(v, kernel[::-1], mode="full"))
    assert np.isinf(float(big.upper)) and "no certified upper bound" in big.method
    assert float(big.lower) <= sigma * (1 + SLACK)


def test_gap_targets_at_4096():
    rng = np.random.default_rng(7)
    for shape in ((7,), (3, 2, 5)):
        kernel = rng.standard_normal(shape)
        for boundary, target in (("periodic", 1e-6), ("neumann", 1e-3), ("dirichlet", 1e-3)):
            op = Stencil(kernel, 4096, boundary=boundary)
            verify.spectral_norm(op)  # compile
            start = time.perf_counter()
            bounds = verify.spectral_norm(op)
            gap = float(bounds.relative_gap)
            elapsed = time.perf_counter() - start
            assert 0 <= gap <= target, (shape, boundary, gap)
            assert elapsed < 1.0  # target 0.1 s; loose on a shared machine


def test_errors_name_the_argument():
    op = Stencil(np.array([1.0, -1.0]), 8, boundary="periodic")
    with pytest.raises(ValueError, match="`method`.*'toeplitz'.*symbol"):
        verify.spectral_norm(op, method="toeplitz")
    with pytest.raises(ValueError, match="`method`"):
        verify.spectral_norm(op, method="analytic")
    with pytest.raises(ValueError, match="`in_shape` is required"):
        verify.spectral_norm(lambda u: 2 * u)
    with pytest.raises(ValueError, match="does not look linear"):
        verify.spectral_norm(jnp.sin, in_shape=(4,))
    with pytest.raises(ValueError, match="one array"):
        verify.spectral_norm(lambda u: (u, u), in_shape=(4,))
    with pytest.raises(ValueError, match="`transpose`"):
        verify.spectral_norm(lambda u: 2 * u, in_shape=(4,), transpose=lambda v: v[:2])
    with pytest.raises(ValueError, match="`dense_limit`"):
        verify.spectral_norm(op, method="gram", dense_limit=4)
    with pytest.raises(ValueError, match="`iterations`"):
        verify.spectral_norm(op, iterations=0)
