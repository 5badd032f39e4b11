"""Image operators: the gradient, its adjoint and 2-D stencils, against references built
from the definitions in NumPy, and the library's blocks and schemes on images."""

import math

import equinox as eqx
import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpde
from jaxpde import Gradient, GradientAdjoint, Stencil2D, fluxes, schemes, verify
from jaxpde.verify.spectral import symbol_norm_bound_2d

from .helpers import (
    ALL_BOUNDARIES,
    derivative_taps,
    few_examples,
    spectral_norm_svd,
    stencil_matrix,
    tolerance,
)

# A small set of image sizes (odd, even, square, wide, tall), to limit recompilation.
SHAPES = ((5, 6), (8, 8), (7, 4))


# --- independent references -------------------------------------------------------------


def _embedding(rows: int, cols: int, common: tuple[int, int]) -> np.ndarray:
    """The matrix that places a (rows, cols) image at the top left of a zero `common` image."""
    out = np.zeros((common[0] * common[1], rows * cols))
    for i in range(rows):
        for j in range(cols):
            out[i * common[1] + j, i * cols + j] = 1
    return out


def gradient_matrix(shape, order: int, h: float, boundary: str) -> np.ndarray:
    """The stacked gradient from Kronecker products of 1-D difference matrices
    (row-major images: along axis 0 is D (x) I, along axis 1 is I (x) D)."""
    height, width = shape
    kernel = derivative_taps(order, h)
    dy, dx = stencil_matrix(kernel, height, boundary), stencil_matrix(kernel, width, boundary)
    common = (max(dy.shape[0], height), max(dx.shape[0], width))
    top = _embedding(dy.shape[0], width, common) @ np.kron(dy, np.eye(width))
    bottom = _embedding(height, dx.shape[0], common) @ np.kron(np.eye(height), dx)
    return np.vstack([top, bottom])


def symbol_supremum(kernel) -> float:
    """The largest norm of the symbol found in NumPy by a 128 x 128 grid search refined four
    times around the best point (a lower bound of the supremum, close to it)."""
    kernel = np.asarray(kernel, np.float64)
    kernel = kernel[None, None] if kernel.ndim == 2 else kernel
    taps1, taps2 = np.arange(kernel.shape[2]), np.arange(kernel.shape[3])

    def norms(theta1, theta2):
        symbol = np.einsum("pa,qb,ocab->pqoc", np.exp(1j * np.outer(theta1, taps1)), np.exp(1j * np.outer(theta2, taps2)), kernel)
        return np.linalg.svd(symbol, compute_uv=False)[..., 0]

    theta1 = theta2 = 2 * np.pi * np.arange(128) / 128
    best, width = 0.0, 2 * np.pi / 128
    for _ in range(5):
        values = norms(theta1, theta2)
        i, j = np.unravel_index(np.argmax(values), values.shape)
        best, center = max(best, float(values[i, j])), (theta1[i], theta2[j])
        theta1, theta2 = (center[0] + np.linspace(-width, width, 33)), (center[1] + np.linspace(-width, width, 33))
        width /= 8
    return best


def perona_malik_reference(u: np.ndarray, lam: float, tau: float, h: float, steps: int) -> np.ndarray:
    """The classic 4-neighbour Perona-Malik scheme with reflecting boundaries:
    $u_{ij} \\mathrel{+}= \\tau\\sum_{\\rm nb} g(|u_{\\rm nb} - u_{ij}|^2/h^2)(u_{\\rm nb} - u_{ij})/h^2$,
    a neighbour outside the image being the pixel itself (no flux across the border)."""
    u = np.array(u, np.float64)
    height, width = u.shape
    for _ in range(steps):
        padded = np.pad(u, 1, mode="edge")
        update = np.zeros_like(u)
        for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            difference = padded[1 + di : 1 + di + height, 1 + dj : 1 + dj + width] - u
            update += difference / (1 + difference**2 / (h**2 * lam**2)) / h**2
        u = u + tau * update
    return u


# --- strategies -------------------------------------------------------------------------

shapes = st.sampled_from(SHAPES)


@st.composite
def gradients(draw):
    order = draw(st.sampled_from((1, 2)))
    h = draw(st.sampled_from((1.0, 0.5, 0.3)))
    return Gradient(draw(shapes), h=h, boundary=draw(st.sampled_from(ALL_BOUNDARIES)), order=order)


@st.composite
def stencils2d(draw):
    # Several channels with one input channel: the symbol's norm is a vector norm (the
    # Gram path is covered by the parametrized tests, which compile fewer programs).
    kernel_shape = draw(st.sampled_from(((2, 2), (3, 2), (1, 3), (2, 1, 2, 2))))
    kernel = draw(hnp.arrays(np.float64, kernel_shape, elements=st.floats(-3, 3)))
    boundary = draw(st.sampled_from(ALL_BOUNDARIES))
    offset = draw(st.tuples(st.integers(-4, 4), st.integers(-4, 4))) if boundary == "periodic" else (0, 0)
    return Stencil2D(kernel, draw(shapes), boundary=boundary, offset=offset)


image_operators = st.one_of(gradients(), stencils2d(), gradients().map(lambda g: g.T))


def _random_image(shape, seed: int = 0, dtype=np.float64):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


# --- the gradient -----------------------------------------------------------------------


@pytest.mark.parametrize("boundary", ALL_BOUNDARIES)
@pytest.mark.parametrize("shape, order", [((5, 6), 1), ((7, 4), 2)])
def test_gradient_matches_kronecker_reference(shape, order, boundary):
    h = 0.5
    op = Gradient(shape, h=h, boundary=boundary, order=order)
    reference = gradient_matrix(shape, order, h, boundary)
    height, width = shape
    expected = {"neumann": shape, "periodic": shape, "dirichlet": (height + order, width + order)}[boundary]
    assert op.in_shape == shape and op.out_shape == (2, *expected)
    assert op.T.in_shape == op.out_shape and op.T.out_shape == shape
    # as_matrix applies the operator to every basis image: it checks the application.
    matrix, adjoint = np.asarray(op.as_matrix()), np.asarray(op.T.as_matrix())
    np.testing.assert_allclose(matrix, reference, **tolerance(np.float64))
    np.testing.assert_array_equal(adjoint, matrix.T)


def test_first_order_neumann_gradient_is_chambolles():
    """Forward differences, the last one set to 0; grad^T grad is the 5-point Neumann Laplacian."""
    u = jnp.asarray(np.arange(20.0).reshape(4, 5) ** 2)
    op = Gradient((4, 5), h=0.5)
    gy, gx = np.asarray(op(u))
    expected_y = np.zeros((4, 5))
    expected_y[:-1] = (np.asarray(u)[1:] - np.asarray(u)[:-1]) / 0.5
    expected_x = np.zeros((4, 5))
    expected_x[:, :-1] = (np.asarray(u)[:, 1:] - np.asarray(u)[:, :-1]) / 0.5
    np.testing.assert_array_equal(gy, expected_y)
    np.testing.assert_array_equal(gx, expected_x)

    def neumann_laplacian(n):
        matrix = 2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)
        matrix[0, 0] = matrix[-1, -1] = 1
        return matrix

    matrix = np.asarray(op.as_matrix())
    five_point = (np.kron(neumann_laplacian(4), np.eye(5)) + np.kron(np.eye(4), neumann_laplacian(5))) / 0.25
    np.testing.assert_allclose(matrix.T @ matrix, five_point, **tolerance(np.float64))


@pytest.mark.parametrize("boundary", ALL_BOUNDARIES)
@pytest.mark.parametrize("order", [1, 2, 3])
def test_gradient_norm_is_the_kronecker_sum(order, boundary):
    """||grad||^2 = ||D^(H)||^2 + ||D^(W)||^2, checked with SVDs of the reference matrices."""
    shape, h = (7, 4), 0.5
    kernel = derivative_taps(order, h)
    sigma = spectral_norm_svd(gradient_matrix(shape, order, h, boundary))
    per_axis = [spectral_norm_svd(stencil_matrix(kernel, n, boundary)) for n in shape]
    assert sigma**2 == pytest.approx(per_axis[0] ** 2 + per_axis[1] ** 2, rel=1e-12)
    op = Gradient(shape, h=h, boundary=boundary, order=order)
    bound = float(op.norm_bound())
    assert sigma <= bound * (1 + 1e-12)
    assert bound <= float(op.abs_norm_bound()) * (1 + 1e-12)
    nu = [float(derivative.norm_bound()) for derivative in (op.dy, op.dx)]
    assert bound == pytest.approx(math.sqrt(nu[0] ** 2 + nu[1] ** 2), rel=1e-14)
    assert op.norm_exact() == (order == 1 or boundary == "periodic")
    if op.norm_exact():
        assert bound == pytest.approx(sigma, rel=1e-12)
    else:
        assert bound <= sigma * 1.05


@pytest.mark.parametrize("boundary", ALL_BOUNDARIES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("h", [1.0, 0.3])
def test_first_order_gradient_norm_below_8_over_h2(shape, boundary, h):
    op = Gradient(shape, h=h, boundary=boundary)
    sigma = spectral_norm_svd(gradient_matrix(shape, 1, h, boundary))
    bound = float(op.norm_bound())
    assert sigma <= bound * (1 + 1e-12)
    assert bound == pytest.approx(sigma, rel=1e-12)
    assert sigma**2 <= 8 / h**2 * (1 + 1e-12)
    assert bound**2 <= 8 / h**2 * (1 + 1e-13)
    if boundary == "periodic" and shape[0] % 2 == 0 and shape[1] % 2 == 0:
        assert sigma**2 == pytest.approx(8 / h**2, rel=1e-12)
    else:
        assert sigma**2 < 8 / h**2


def test_gradient_adjoint_is_minus_the_divergence():
    """For order 1 neumann, grad^T p = -div p with Chambolle's divergence."""
    p = np.array(_random_image((2, 5, 6), seed=3))
    p[0, -1, :] = 0  # the padded entries are not read; zero them for the formula below
    p[1, :, -1] = 0
    divergence = np.zeros((5, 6))
    divergence += p[0] - np.concatenate([np.zeros((1, 6)), p[0, :-1]])
    divergence += p[1] - np.concatenate([np.zeros((5, 1)), p[1, :, :-1]], axis=1)
    op = Gradient((5, 6))
    np.testing.assert_allclose(op.T(jnp.asarray(p)), -divergence, **tolerance(np.float64))
    assert isinstance(op.T, GradientAdjoint) and op.T.T is op
    assert op.T.in_shape == op.out_shape and op.T.out_shape == op.in_shape


# --- 2-D stencils -----------------------------------------------------------------------


@pytest.mark.parametrize("boundary", ALL_BOUNDARIES)
@pytest.mark.parametrize("kernel_shape", [(2, 3), (3, 2, 3, 1)])
def test_stencil2d_matches_loop_reference(kernel_shape, boundary):
    kernel = np.random.default_rng(1).standard_normal(kernel_shape)
    offset = (2, -3) if boundary == "periodic" else (0, 0)
    op = Stencil2D(kernel, (5, 6), boundary=boundary, offset=offset)
    reference = stencil_matrix(kernel, (5, 6), boundary, offset)
    matrix, adjoint = np.asarray(op.as_matrix()), np.asarray(op.T.as_matrix())
    np.testing.assert_allclose(matrix, reference, **tolerance(np.float64))
    np.testing.assert_array_equal(adjoint, matrix.T)
    assert isinstance(op.T, Stencil2D) and op.T.T.boundary == boundary and op.T.T.offset == op.offset
    np.testing.assert_array_equal(op.T.T.kernel, op.kernel)


def test_periodic_stencil2d_larger_than_the_image():
    kernel = np.random.default_rng(2).standard_normal((5, 7))
    op = Stencil2D(kernel, (3, 4), offset=(1, 5))
    reference = stencil_matrix(kernel, (3, 4), "periodic", (1, 5))
    np.testing.assert_allclose(op.as_matrix(), reference, **tolerance(np.float64))
    np.testing.assert_allclose(op.T.as_matrix(), reference.T, **tolerance(np.float64))
    assert float(op.norm_bound()) == pytest.approx(spectral_norm_svd(reference), rel=1e-12)


def test_stencil2d_shapes():
    op = Stencil2D(jnp.ones((3, 2, 3, 2)), (7, 5), boundary="neumann")
    assert op.in_shape == (2, 7, 5) and op.out_shape == (3, 5, 4)
    assert op.T.in_shape == (3, 5, 4) and op.T.out_shape == (2, 7, 5) and op.T.boundary == "dirichlet"
    assert op.row_length == 3 * 3 * 2
    periodic = Stencil2D(jnp.ones((2, 3)), (7, 5), offset=(1, 2))
    assert periodic.out_shape == (7, 5) and periodic.T.offset == (-2, -4)


@pytest.mark.parametrize(
    "kernel_shape, boundary",
    [((3, 3), "periodic"), ((3, 3), "neumann"), ((3, 3), "dirichlet"), ((3, 2, 2, 2), "periodic"), ((3, 2, 2, 2), "neumann")],
)
def test_stencil2d_norm_bound(kernel_shape, boundary):
    """Periodic: the exact norm. Neumann / dirichlet: above the norm and above the
    symbol's supremum (searched in NumPy), and within 0.1% of that supremum."""
    kernel = np.random.default_rng(4).standard_normal(kernel_shape)
    op = Stencil2D(kernel, (8, 8), boundary=boundary)
    sigma = spectral_norm_svd(stencil_matrix(kernel, (8, 8), boundary))
    bound = float(op.norm_bound())
    assert sigma <= bound * (1 + 1e-12)
    assert bound <= float(op.abs_norm_bound()) * (1 + 1e-12)
    if boundary == "periodic":
        assert bound == pytest.approx(sigma, rel=1e-12)
    else:
        supremum = symbol_supremum(kernel)
        assert sigma <= supremum <= bound <= supremum * (1 + 1e-3)


def test_stencil2d_symbol_matches_numpy():
    kernel = np.random.default_rng(5).standard_normal((2, 3, 2, 3))
    op = Stencil2D(kernel, (6, 6))
    theta = np.random.default_rng(6).uniform(-np.pi, np.pi, (4, 2))
    expected = np.einsum("fab,ocab->foc", np.exp(1j * (theta[:, :1, None] * np.arange(2)[None, :, None]
                                                        + theta[:, 1:, None] * np.arange(3)[None, None, :])), kernel)
    np.testing.assert_allclose(op.symbol(jnp.asarray(theta)), expected, **tolerance(np.float64))


# One compiled program for both sides of the adjoint identity.
_adjoint_pair = eqx.filter_jit(lambda op, u, v: (jnp.vdot(op(u), v), jnp.vdot(u, op.T(v)), op(u), op.T(v)))


@few_examples(5)
@hypothesis.given(op=image_operators, seed=st.integers(0, 2**31 - 1))
def test_adjoint_identity(op, seed):
    """<K u, v> == <u, K^T v>; the adjoint's matrix is exactly the transpose; K^T^T = K;
    the norm bound is above the SVD (equal where exact); `row_length` and Schur's bound
    hold for the matrix."""
    rng = np.random.default_rng(seed)
    u = jnp.asarray(rng.standard_normal(op.in_shape))
    v = jnp.asarray(rng.standard_normal(op.out_shape))
    left, right, ku, ktv = _adjoint_pair(op, u, v)
    scale = float(jnp.linalg.norm(ku) * jnp.linalg.norm(v) + jnp.linalg.norm(u) * jnp.linalg.norm(ktv))
    assert abs(float(left - right)) <= 1e-12 * max(scale, 1.0)
    matrix = np.asarray(op.as_matrix())
    np.testing.assert_allclose(np.asarray(ku).reshape(-1), matrix @ np.asarray(u).reshape(-1), **tolerance(np.float64))
    np.testing.assert_array_equal(np.asarray(op.T.as_matrix()), matrix.T)
    np.testing.assert_array_equal(np.asarray(op.T.T.as_matrix()), matrix)

    sigma = spectral_norm_svd(matrix)
    bound, schur = float(op.norm_bound()), float(op.abs_norm_bound())
    assert sigma <= bound * (1 + 1e-12) and bound <= schur * (1 + 1e-12)
    assert spectral_norm_svd(np.abs(matrix)) <= schur * (1 + 1e-12)
    if isinstance(op, (Gradient, GradientAdjoint)) and op.norm_exact():
        assert bound == pytest.approx(sigma, rel=1e-12)
    if isinstance(op, Stencil2D) and op.boundary == "periodic":
        assert bound == pytest.approx(sigma, rel=1e-12)
    assert np.max(np.count_nonzero(matrix, axis=1)) <= op.row_length
    assert np.max(np.count_nonzero(matrix, axis=0)) <= op.row_length


def test_spectral_norm_of_image_operators():
    """The generic branch of `spectral_norm` (the operator's own bound and power
    iteration), and the dense methods."""
    gradient = Gradient((5, 6), boundary="dirichlet", order=2)
    stencil = Stencil2D(np.random.default_rng(8).standard_normal((2, 1, 2, 2)), (5, 6), offset=(1, 1))
    cases = [(gradient, ("auto", "gram", "svd")), (gradient.T, ("svd",)), (stencil, ("auto",))]
    for op, methods in cases:
        sigma = spectral_norm_svd(op.as_matrix())
        for method in methods:
            bounds = verify.spectral_norm(op, method=method, iterations=50)
            assert float(bounds.lower) <= sigma * (1 + 1e-12) <= float(bounds.upper) * (1 + 2e-12), method
            assert bounds.vector.shape == op.in_shape
            assert bounds.method == ("norm_bound" if method == "auto" else method)
            assert float(bounds.lower) >= 0.9 * sigma


def test_symbol_norm_bound_2d_is_jittable_and_differentiable():
    kernel = jnp.asarray(np.random.default_rng(9).standard_normal((3, 3)))
    grad = jax.jit(jax.grad(lambda k: Stencil2D(k, (8, 8), boundary="dirichlet").norm_bound()))(kernel)
    assert grad.shape == (3, 3) and bool(jnp.all(jnp.isfinite(grad))) and bool(jnp.any(grad != 0))
    bound = symbol_norm_bound_2d(kernel, (8, 8), "periodic")
    assert float(bound) == pytest.approx(float(Stencil2D(kernel, (8, 8)).norm_bound()), rel=1e-15)
    gradient = Gradient((8, 8), h=0.5)
    assert float(eqx.filter_jit(lambda op: op.norm_bound())(gradient)) == pytest.approx(float(gradient.norm_bound()), rel=1e-15)


# --- dtypes, transformations and errors -------------------------------------------------


def test_float32_paths():
    u = _random_image((8, 8), dtype=np.float32)
    apply = eqx.filter_jit(lambda op, x: (op(x), op.T(op(x))))
    gradient = Gradient((8, 8), boundary="dirichlet")
    out, back = apply(gradient, u)
    assert out.dtype == back.dtype == jnp.float32
    np.testing.assert_allclose(out, apply(gradient, u.astype(jnp.float64))[0], **tolerance(np.float32))
    kernel = np.random.default_rng(10).standard_normal((3, 3)).astype(np.float32)
    out, back = apply(Stencil2D(kernel, (8, 8), boundary="neumann"), u)
    assert out.dtype == back.dtype == jnp.float32
    for boundary in ("periodic", "neumann"):
        bound = Stencil2D(kernel, (8, 8), boundary=boundary).norm_bound()
        assert bound.dtype == jnp.float32
        sigma = spectral_norm_svd(stencil_matrix(kernel, (8, 8), boundary))
        assert sigma <= float(bound)
        if boundary == "periodic":
            assert float(bound) == pytest.approx(sigma, rel=2e-5)


def test_jit_vmap_and_grad():
    op = Stencil2D(np.random.default_rng(11).standard_normal((2, 2, 3, 3)), (7, 4), boundary="dirichlet")
    batch = jnp.asarray(np.random.default_rng(12).standard_normal((3, 2, 7, 4)))
    expected = batch.reshape(3, -1) @ np.asarray(op.as_matrix()).T
    np.testing.assert_allclose(jax.vmap(op)(batch).reshape(3, -1), expected, **tolerance(np.float64))
    grad = jax.jit(jax.grad(lambda k: jnp.sum(Stencil2D(k, (7, 4), boundary="dirichlet")(batch[0]) ** 2)))(op.kernel)
    assert grad.shape == op.kernel.shape and bool(jnp.all(jnp.isfinite(grad)))
    gradient = Gradient((7, 4), boundary="periodic")
    images = batch[:, 0]
    np.testing.assert_allclose(
        jax.jit(jax.vmap(gradient))(images).reshape(3, -1), images.reshape(3, -1) @ np.asarray(gradient.as_matrix()).T,
        **tolerance(np.float64),
    )


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: Gradient((5,)), "`shape`|parameter 'shape'"),
        (lambda: Gradient((5, 6, 7)), "`shape`|parameter 'shape'"),
        (lambda: Gradient((1, 6)), "`shape` must be at least \\(2, 2\\)"),
        (lambda: Gradient((3, 6), order=3), "`shape` must be at least \\(4, 4\\)"),
        (lambda: Gradient((5, 6), order=0), "`order`"),
        (lambda: Gradient((5, 6), h=0.0), "`h`"),
        (lambda: Gradient((5, 6), h=float("inf")), "`h`"),
        (lambda: Gradient((5, 6), boundary="reflecting"), "`boundary`"),
        (lambda: Gradient((5.0, 6)), "shape"),
        (lambda: GradientAdjoint(jaxpde.Derivative(1, 5)), "gradient"),
        (lambda: Stencil2D(jnp.ones(3), (5, 6)), "`kernel`"),
        (lambda: Stencil2D(jnp.ones((2, 3, 3)), (5, 6)), "`kernel`"),
        (lambda: Stencil2D(jnp.ones((3, 3)), (2, 6), boundary="neumann"), "`shape` must be at least the kernel size"),
        (lambda: Stencil2D(jnp.ones((3, 3)), (5, 6), boundary="dirichlet", offset=(1, 0)), "`offset`"),
        (lambda: Stencil2D(jnp.ones((3, 3)), (5, 6), offset=(1, 0, 0)), "`offset`|parameter 'offset'"),
        (lambda: Stencil2D(jnp.ones((3, 3)), (5, 6), boundary="circular"), "`boundary`"),
        (lambda: symbol_norm_bound_2d(jnp.ones(3), (5, 6), "periodic"), "`kernel`|parameter 'kernel'"),
        (lambda: symbol_norm_bound_2d(jnp.ones((2, 2)), (5, 6), "circular"), "`boundary`"),
    ],
)
def test_configuration_errors(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_wrong_input_shape_names_the_argument():
    op = Gradient((5, 6))
    with pytest.raises(ValueError, match="`u` must have shape \\(5, 6\\)"):
        op(jnp.ones((6, 5)))
    with pytest.raises(ValueError, match="`v` must have shape \\(2, 5, 6\\)"):
        op.T(jnp.ones((2, 6, 5)))
    with pytest.raises((ValueError, TypeError), match="`v`|parameter 'v'"):
        op.T(jnp.ones((5, 6)))
    with pytest.raises((ValueError, TypeError), match="`u`|parameter 'u'"):
        Stencil2D(jnp.ones((2, 3, 2, 2)), (5, 6))(jnp.ones((2, 5, 6)))
    with pytest.raises(TypeError, match="floating|parameter 'u'"):
        op(jnp.ones((5, 6), jnp.int32))


# --- the library on images --------------------------------------------------------------


def _test_image(seed: int = 0) -> jnp.ndarray:
    """16 x 16: four constant regions plus noise."""
    rng = np.random.default_rng(seed)
    image = np.zeros((16, 16))
    image[:8, 8:] = 1.0
    image[8:, :8] = 0.5
    image[5:12, 5:12] = -0.5
    return jnp.asarray(image + 0.1 * rng.standard_normal((16, 16)))


def test_perona_malik_matches_the_classic_four_neighbour_scheme():
    u0 = _test_image()
    lam, tau, h = 0.3, 0.2, 1.0
    op = Gradient((16, 16), h=h)
    flux = fluxes.PeronaMalik(lam)
    reference = perona_malik_reference(np.asarray(u0), lam, tau, h, 20)
    scheme = schemes.ExplicitScheme(op, flux, tau)
    np.testing.assert_allclose(scheme.rollout(u0, 20), reference, rtol=0, atol=1e-12)
    block = jaxpde.DiffusionBlock(op, flux, tau)
    np.testing.assert_allclose(schemes.rollout(block, u0, 20), reference, rtol=0, atol=1e-12)
    # No flux across the border: the mass is kept.
    assert float(jnp.sum(scheme.rollout(u0, 20))) == pytest.approx(float(jnp.sum(u0)), rel=1e-12)


def test_step_size_bound_of_the_gradient_is_sharp():
    """At 2 / (L ||grad||^2) a linear flux keeps the checkerboard's norm; 1% above, it grows."""
    op = Gradient((8, 8), boundary="periodic")
    flux = fluxes.Linear(1.0)
    tau = jaxpde.stable_step_size(op, flux)
    assert float(tau) == pytest.approx(2 / 8, rel=1e-12)
    checkerboard = jnp.asarray((-1.0) ** np.add.outer(np.arange(8), np.arange(8)))
    ratio = verify.euclidean_gain(jaxpde.DiffusionBlock(op, flux, tau), checkerboard)
    assert float(ratio) <= 1 + 1e-12
    with pytest.raises(ValueError, match="`tau` exceeds"):
        jaxpde.DiffusionBlock(op, flux, 1.01 * tau)
    unstable = jaxpde.DiffusionBlock(op, flux, 1.01 * tau, allow_unstable=True)
    assert float(verify.euclidean_gain(unstable, checkerboard)) == pytest.approx(1.02, rel=1e-12)


def test_schemes_on_images_are_euclidean_stable():
    """Explicit steps, FSI and FED cycles at the stable step size and semi-implicit steps
    at a larger one, with the non-monotone Weickert flux, on a neumann image gradient."""
    op = Gradient((8, 8), h=0.5)
    flux = fluxes.Weickert(0.5)
    u0 = _test_image()[:8, :8] * 4
    tau = jaxpde.stable_step_size(op, flux)
    block = jaxpde.DiffusionBlock(op, flux, tau)
    tolerance_ = verify.norm_ratio_tolerance(block, np.float64).value
    _, trajectory = schemes.ExplicitScheme(op, flux).rollout(u0, 10, save_every=1)
    assert float(verify.worst_norm_ratio(trajectory)) <= 1 + tolerance_
    for scheme in (schemes.FSIScheme(op, flux, cycle_length=6), schemes.FEDScheme(op, flux, cycle_length=6)):
        _, cycles = scheme.rollout(u0, 2, save_every=1)
        assert float(verify.worst_norm_ratio(cycles)) <= 1 + 1e-12
    # Conjugate gradients on the image system; a failed solve raises (throw=True).
    _, steps = schemes.SemiImplicitScheme(op, flux, 10 * tau).rollout(u0, 3, save_every=1)
    assert float(verify.worst_norm_ratio(steps)) <= 1 + 1e-10
    assert float(jnp.sum(steps[-1])) == pytest.approx(float(jnp.sum(u0)), rel=1e-9)


def test_verification_helpers_on_images():
    op = Gradient((8, 8), boundary="periodic")
    flux = fluxes.PeronaMalik(0.5)
    block = jaxpde.DiffusionBlock(op, flux, jaxpde.stable_step_size(op, flux))
    u = _test_image()[8:, 8:]

    @eqx.filter_jit
    def monitors(block, u):
        after = block(u)
        energies = verify.flux_energy(block.op, block.flux, u), verify.flux_energy(block.op, block.flux, after)
        return energies, (verify.mass(u), verify.mass(after)), verify.euclidean_gain(block, u)

    (before, after), (mass_before, mass_after), gain = monitors(block, u)
    assert float(after) <= float(before) and float(gain) <= 1
    assert float(mass_after) == pytest.approx(float(mass_before), rel=1e-12)
    # Perona-Malik has Phi' in [-1/8, 1]: at the stable step 1 + tau ||K||^2 / 8 = 1.25.
    assert float(verify.block_lipschitz_bound(block)) == pytest.approx(1.25, rel=1e-12)
