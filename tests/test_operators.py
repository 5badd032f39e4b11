import math

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpde
from jaxpde import Derivative, Stencil

from .helpers import (
    ALL_BOUNDARIES,
    derivative_taps,
    operators,
    spectral_norm_svd,
    stencil_matrix,
    tolerance,
)


@pytest.mark.parametrize("boundary", ALL_BOUNDARIES)
@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [5, 8, 9])
def test_derivative_matches_dense_reference(order, n, boundary):
    h = 0.3
    op = Derivative(order, n, h=h, boundary=boundary)
    reference = stencil_matrix(derivative_taps(order, h), n, boundary)
    np.testing.assert_allclose(op.as_matrix(), reference, **tolerance(np.float64))
    np.testing.assert_allclose(op.T.as_matrix(), reference.T, **tolerance(np.float64))
    rows = {"neumann": n - order, "periodic": n, "dirichlet": n + order}[boundary]
    assert op.out_shape == (rows,)
    u = jnp.asarray(np.random.default_rng(0).standard_normal(n))
    np.testing.assert_allclose(op(u), reference @ np.asarray(u), **tolerance(np.float64))


def test_first_difference_values():
    u = jnp.array([1.0, 4.0, 9.0, 16.0])
    np.testing.assert_allclose(Derivative(1, 4, h=0.5)(u), [6.0, 10.0, 14.0])
    np.testing.assert_allclose(Derivative(2, 4)(u), [2.0, 2.0])
    np.testing.assert_allclose(Derivative(1, 4, boundary="periodic")(u), [3.0, 5.0, 7.0, -15.0])
    np.testing.assert_allclose(Derivative(1, 4, boundary="dirichlet")(u), [1.0, 3.0, 5.0, 7.0, -16.0])


@pytest.mark.parametrize("boundary", ALL_BOUNDARIES)
@pytest.mark.parametrize("shape", [(1,), (3,), (4,), (2, 1, 3), (3, 2, 2)])
@pytest.mark.parametrize("offset", [0, 2, -5])
def test_stencil_matches_dense_reference(shape, boundary, offset):
    if offset and boundary != "periodic":
        pytest.skip("offset is periodic only")
    kernel = np.random.default_rng(1).standard_normal(shape)
    op = Stencil(kernel, 7, boundary=boundary, offset=offset)
    reference = stencil_matrix(kernel, 7, boundary, offset)
    np.testing.assert_allclose(op.as_matrix(), reference, **tolerance(np.float64))
    np.testing.assert_allclose(op.T.as_matrix(), reference.T, **tolerance(np.float64))
    # The adjoint is a stencil again (its own convolution, no dense matrix).
    assert isinstance(op.T, Stencil)
    assert op.T.T.boundary == boundary


@hypothesis.given(op=operators, seed=st.integers(0, 2**31 - 1))
def test_adjoint_identity(op, seed):
    """<K u, v> == <u, K^T v> for random operators and vectors."""
    rng = np.random.default_rng(seed)
    u = jnp.asarray(rng.standard_normal(op.in_shape))
    v = jnp.asarray(rng.standard_normal(op.out_shape))
    left = jnp.vdot(op(u), v)
    right = jnp.vdot(u, op.T(v))
    scale = float(jnp.linalg.norm(op(u)) * jnp.linalg.norm(v) + jnp.linalg.norm(u) * jnp.linalg.norm(op.T(v)))
    assert abs(float(left - right)) <= 1e-12 * max(scale, 1.0)


@hypothesis.given(op=operators)
def test_norm_bound_is_an_upper_bound(op):
    sigma = spectral_norm_svd(op.as_matrix())
    bound = float(op.norm_bound())
    assert sigma <= bound * (1 + 1e-12)
    assert bound <= float(op.abs_norm_bound()) * (1 + 1e-12)


@pytest.mark.parametrize("n", [2, 3, 8, 33, 100])
@pytest.mark.parametrize("h", [1.0, 0.25])
def test_first_difference_norm_is_exact(n, h):
    neumann = Derivative(1, n, h=h)
    assert float(neumann.norm_bound()) ** 2 == pytest.approx(4 * math.cos(math.pi / (2 * n)) ** 2 / h**2, rel=1e-14)
    for boundary in ALL_BOUNDARIES:
        op = Derivative(1, n, h=h, boundary=boundary)
        assert op.norm_exact()
        assert float(op.norm_bound()) == pytest.approx(spectral_norm_svd(op.as_matrix()), rel=1e-13)


@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [6, 7, 32])
def test_periodic_derivative_norm_is_exact(order, n):
    op = Derivative(order, n, boundary="periodic")
    assert float(op.norm_bound()) == pytest.approx(spectral_norm_svd(op.as_matrix()), rel=1e-13)


@pytest.mark.parametrize("boundary", ["neumann", "dirichlet"])
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("n", [6, 16, 64])
def test_higher_order_norm_bounds(order, n, boundary):
    op = Derivative(order, n, h=0.5, boundary=boundary)
    sigma = spectral_norm_svd(op.as_matrix())
    bound = float(op.norm_bound())
    assert sigma <= bound <= (2 / 0.5) ** order
    assert bound <= sigma * 1.03  # the product bound is tight to a few percent


@pytest.mark.parametrize("boundary", ALL_BOUNDARIES)
def test_stencil_periodic_norm_is_the_symbol_maximum(boundary):
    kernel = np.random.default_rng(3).standard_normal((3, 2, 4))
    op = Stencil(kernel, 64, boundary=boundary)
    sigma = spectral_norm_svd(op.as_matrix())
    bound = float(op.norm_bound())
    assert sigma <= bound
    if boundary == "periodic":
        assert bound == pytest.approx(sigma, rel=1e-12)
    else:  # the symbol supremum bounds every finite section, and is close for n = 64
        assert bound <= sigma * 1.05


def test_norm_bound_is_differentiable():
    kernel = jnp.array([0.5, -2.0, 1.0])
    for boundary in ALL_BOUNDARIES:
        grad = jax.grad(lambda k, b=boundary: Stencil(k, 16, boundary=b).norm_bound())(kernel)
        assert jnp.all(jnp.isfinite(grad))


def test_float32_operators():
    op = Derivative(2, 16, boundary="periodic")
    u = jnp.arange(16, dtype=jnp.float32)
    assert op(u).dtype == jnp.float32
    assert op.T(op(u)).dtype == jnp.float32


def test_multichannel_shapes():
    op = Stencil(jnp.ones((3, 2, 5)), 10, boundary="neumann")
    assert op.in_shape == (2, 10)
    assert op.out_shape == (3, 6)
    assert op.T.in_shape == (3, 6) and op.T.out_shape == (2, 10)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: Derivative(0, 8), "`order`"),
        (lambda: Derivative(2, 2), "`n` must be at least order \\+ 1"),
        (lambda: Derivative(1, 1, boundary="periodic"), "`n`"),
        (lambda: Derivative(1, 8, boundary="reflecting"), "`boundary`"),
        (lambda: Derivative(1, 8, h=0.0), "`h`"),
        (lambda: Derivative(1, 8, h=float("nan")), "`h`"),
        (lambda: Stencil(jnp.ones(4), 3, boundary="neumann"), "`n` must be at least the kernel length"),
        (lambda: Stencil(jnp.ones((2, 4)), 8), "`kernel`"),
        (lambda: Stencil(jnp.ones(3), 8, boundary="neumann", offset=1), "`offset`"),
    ],
)
def test_configuration_errors(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_order_must_be_an_integer():
    with pytest.raises(TypeError, match="order"):
        Derivative(1.5, 8)


def test_wrong_input_shape_names_the_argument():
    op = Derivative(1, 8)
    with pytest.raises(ValueError, match="`u` must have shape \\(8,\\)"):
        op(jnp.ones(9))
    # Under the test suite's runtime type checking, jaxtyping names `u` first.
    with pytest.raises((ValueError, TypeError), match="`u`|parameter 'u'"):
        eqx.filter_jit(op)(jnp.ones((2, 8)))
    with pytest.raises(TypeError, match="floating|parameter 'u'"):
        op(jnp.arange(8))


def test_vmap_over_a_batch():
    op = Derivative(2, 16, boundary="dirichlet")
    batch = jnp.asarray(np.random.default_rng(0).standard_normal((5, 16)))
    np.testing.assert_allclose(jax.vmap(op)(batch), batch @ np.asarray(op.as_matrix()).T, **tolerance(np.float64))


def test_boundaries_registry():
    assert jaxpde.BOUNDARIES == ("neumann", "periodic", "dirichlet")
