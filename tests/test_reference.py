"""The dense references of `jaxpde.reference` (which the operator, scheme and claim tests
compare with): small matrices written out by hand, 2-D stencils against a second
construction from Kronecker products of 1-D shifts, and the sparse forms against the
dense ones. NumPy only: nothing here compiles."""

import numpy as np
import pytest

from jaxpde.reference import (
    band_matrix,
    band_sparse_matrix,
    derivative_taps,
    stencil_matrix,
    stencil_sparse_matrix,
)

BOUNDARIES = ("periodic", "neumann", "dirichlet")


def test_derivative_taps_are_the_binomial_differences():
    np.testing.assert_array_equal(derivative_taps(1, 0.5), [-2.0, 2.0])
    np.testing.assert_array_equal(derivative_taps(2), [1.0, -2.0, 1.0])
    np.testing.assert_array_equal(derivative_taps(3, 2.0), np.array([-1.0, 3.0, -3.0, 1.0]) / 8)


def test_one_dimensional_matrices_by_hand():
    taps = derivative_taps(1, 0.5)
    neumann = [[-2, 2, 0, 0], [0, -2, 2, 0], [0, 0, -2, 2]]
    np.testing.assert_array_equal(stencil_matrix(taps, 4, "neumann"), neumann)
    dirichlet = [[2, 0, 0], [-2, 2, 0], [0, -2, 2], [0, 0, -2]]
    np.testing.assert_array_equal(stencil_matrix(taps, 3, "dirichlet"), dirichlet)
    # (K u)_i = sum_j a_j u_{(i + j + o) mod n}: the offset shifts the columns.
    np.testing.assert_array_equal(stencil_matrix(taps, 3, "periodic"), [[-2, 2, 0], [0, -2, 2], [2, 0, -2]])
    np.testing.assert_array_equal(stencil_matrix(taps, 3, "periodic", -1), [[2, 0, -2], [-2, 2, 0], [0, -2, 2]])


def test_channels_are_blocks_and_wrapped_taps_add_up():
    kernel = np.array([[[1.0, 2.0]], [[3.0, 4.0]]])  # 1 -> 2 channels
    expected = [[1, 2, 0], [0, 1, 2], [3, 4, 0], [0, 3, 4]]
    np.testing.assert_array_equal(stencil_matrix(kernel, 3, "neumann"), expected)
    # A periodic kernel longer than the grid: taps that meet in one entry are summed.
    np.testing.assert_array_equal(stencil_matrix([1.0, 2.0, 3.0, 4.0], 2, "periodic"), [[4, 6], [6, 4]])


def _shifts(k: int, n: int, boundary: str) -> list[np.ndarray]:
    """The 1-D matrices of the unit kernels e_j: tap j's shift."""
    return [stencil_matrix(np.eye(k)[j], n, boundary) for j in range(k)]


def _kronecker_reference(kernel: np.ndarray, shape: tuple[int, int], boundary: str) -> np.ndarray:
    """The 2-D stencil on row-major images as $\\sum_j a_j S^{(H)}_{j_1}\\otimes S^{(W)}_{j_2}$ per
    channel block, from the 1-D shift matrices of the boundary."""
    c_out, c_in, kh, kw = kernel.shape
    rows, cols = _shifts(kh, shape[0], boundary), _shifts(kw, shape[1], boundary)
    block = rows[0].shape[0] * cols[0].shape[0]
    matrix = np.zeros((c_out * block, c_in * shape[0] * shape[1]))
    for o in range(c_out):
        for c in range(c_in):
            part = sum(kernel[o, c, i, j] * np.kron(rows[i], cols[j]) for i in range(kh) for j in range(kw))
            matrix[o * block : (o + 1) * block, c * shape[0] * shape[1] : (c + 1) * shape[0] * shape[1]] = part
    return matrix


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("kernel_shape", [(3, 2), (2, 3, 2, 3)])
def test_two_dimensional_matrix_is_the_kronecker_construction(boundary, kernel_shape):
    kernel = np.random.default_rng(len(kernel_shape)).standard_normal(kernel_shape)
    full = kernel if kernel.ndim == 4 else kernel[None, None]
    expected = _kronecker_reference(full, (5, 4), boundary)
    np.testing.assert_allclose(stencil_matrix(kernel, (5, 4), boundary), expected, rtol=0, atol=1e-15)


def test_two_dimensional_periodic_offset_shifts_each_axis():
    kernel = np.random.default_rng(0).standard_normal((2, 3))
    shifted = stencil_matrix(kernel, (4, 5), "periodic", (1, -2)).reshape(4, 5, 4, 5)
    plain = stencil_matrix(kernel, (4, 5), "periodic").reshape(4, 5, 4, 5)
    np.testing.assert_array_equal(shifted, np.roll(plain, (-1, 2), axis=(0, 1)))  # row i is row i + o


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_sparse_stencil_matrix_is_the_dense_one(boundary):
    kernel = np.random.default_rng(1).standard_normal((3, 2, 4))
    np.testing.assert_array_equal(stencil_sparse_matrix(kernel, 9, boundary).toarray(), stencil_matrix(kernel, 9, boundary))
    image = np.random.default_rng(2).standard_normal((2, 3))
    np.testing.assert_array_equal(
        stencil_sparse_matrix(image, (4, 5), boundary).toarray(), stencil_matrix(image, (4, 5), boundary)
    )


def test_band_matrix_by_hand_and_sparse():
    diagonals = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])  # d = -1, 0, 1; entry (i, i + d)
    np.testing.assert_array_equal(band_matrix(diagonals, False), [[4, 7, 0], [2, 5, 8], [0, 3, 6]])
    np.testing.assert_array_equal(band_matrix(diagonals, True), [[4, 7, 1], [2, 5, 8], [9, 3, 6]])
    for periodic in (False, True):
        np.testing.assert_array_equal(band_sparse_matrix(diagonals, periodic).toarray(), band_matrix(diagonals, periodic))
