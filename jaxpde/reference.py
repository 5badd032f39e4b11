r"""Reference matrices of stencils and band matrices, built from their definition in plain NumPy.

Independent of jaxpde's operator code (it imports nothing of jaxpde): tests, claims and
benchmarks compare the operators with these matrices. A stencil with taps $a_j$ (a
kernel of shape `(k,)`, `(c_out, c_in, k)` or the 2-D `(k1, k2)`, `(c_out, c_in, k1, k2)`)
is the correlation $(Ku)_i = \sum_j a_j \tilde u_{i + j}$ per axis, $\tilde u$ the boundary
extension of `jaxpde.operators`:

- `"neumann"`: rows $0 \le i \le n - k$, column $i + j$;
- `"periodic"`: rows $0 \le i < n$, column $(i + j + o) \bmod n$ ($o$ the offset);
- `"dirichlet"`: rows $0 \le i < n + k - 1$, column $i + j - (k - 1)$ where it lies in
  $[0, n)$ (zero extension).

Rows and columns are ordered channel-major, then row-major over the grid, as
`op.as_matrix()` orders them. Taps that meet in one entry (a periodic kernel longer
than the grid) are summed in the order of the taps.
"""

import math

import numpy as np

__all__ = [
    "band_entries",
    "band_matrix",
    "band_sparse_matrix",
    "derivative_taps",
    "stencil_entries",
    "stencil_matrix",
    "stencil_sparse_matrix",
]


def derivative_taps(order: int, h: float = 1.0) -> np.ndarray:
    r"""The taps $(-1)^{m-j}\binom{m}{j}/h^m$, $j = 0, \dots, m$, of the forward difference $D_m$."""
    return np.array([(-1) ** (order - j) * math.comb(order, j) / h**order for j in range(order + 1)])


def _rows(n: int, k: int, boundary: str) -> int:
    return {"neumann": n - k + 1, "periodic": n, "dirichlet": n + k - 1}[boundary]


def _columns(i: np.ndarray, j: int, n: int, k: int, boundary: str, offset: int) -> np.ndarray:
    return {"neumann": i + j, "periodic": (i + j + offset) % n, "dirichlet": i + j - (k - 1)}[boundary]


def stencil_entries(
    kernel, shape: int | tuple[int, ...], boundary: str, offset: int | tuple[int, ...] = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """The nonzero pattern of the stencil's matrix: `(values, rows, columns, matrix shape)`,
    one entry per tap and output row (duplicates summed by the caller, in this order).
    `shape` is the grid, `n` or `(n1, n2)`; `offset` the periodic offset per axis."""
    shape = tuple(int(n) for n in np.atleast_1d(shape))
    dims = len(shape)
    offset = tuple(int(o) for o in np.broadcast_to(offset, (dims,)))
    kernel = np.asarray(kernel, np.float64)
    kernel = kernel.reshape((1, 1) + kernel.shape) if kernel.ndim == dims else kernel
    c_out, c_in, *taps = kernel.shape
    out_shape = tuple(_rows(n, k, boundary) for n, k in zip(shape, taps))
    outputs = np.indices(out_shape).reshape(dims, -1)  # every output position, row-major
    rows_per_channel, columns_per_channel = math.prod(out_shape), math.prod(shape)
    values, rows, columns = [], [], []
    for tap in np.ndindex(*taps):
        position = np.stack([
            _columns(outputs[axis], tap[axis], shape[axis], taps[axis], boundary, offset[axis]) for axis in range(dims)
        ])
        inside = np.all((position >= 0) & (position < np.array(shape)[:, None]), axis=0)
        row = np.ravel_multi_index(tuple(outputs[:, inside]), out_shape)
        column = np.ravel_multi_index(tuple(position[:, inside]), shape)
        for o in range(c_out):
            for c in range(c_in):
                values.append(np.full(row.size, kernel[(o, c, *tap)]))
                rows.append(o * rows_per_channel + row)
                columns.append(c * columns_per_channel + column)
    matrix_shape = (c_out * rows_per_channel, c_in * columns_per_channel)
    return np.concatenate(values), np.concatenate(rows), np.concatenate(columns), matrix_shape


def band_entries(diagonals, periodic: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """The nonzero pattern of a band matrix given by its diagonals (`BandedStencil`'s
    layout, `(2b + 1, n)`): entry $(i, i + d)$ holds `diagonals[d + b, i]`, the column
    modulo $n$ when `periodic`, dropped outside $[0, n)$ otherwise."""
    diagonals = np.asarray(diagonals, np.float64)
    width, n = diagonals.shape
    b = width // 2
    i = np.arange(n)
    values, rows, columns = [], [], []
    for d in range(-b, b + 1):
        column = (i + d) % n if periodic else i + d
        inside = (column >= 0) & (column < n)
        values.append(diagonals[d + b][inside])
        rows.append(i[inside])
        columns.append(column[inside])
    return np.concatenate(values), np.concatenate(rows), np.concatenate(columns), (n, n)


def _dense(entries) -> np.ndarray:
    values, rows, columns, shape = entries
    matrix = np.zeros(shape)
    np.add.at(matrix, (rows, columns), values)  # duplicates summed in order
    return matrix


def _sparse(entries):
    import scipy.sparse  # an optional dependency: only these functions need it

    values, rows, columns, shape = entries
    return scipy.sparse.coo_matrix((values, (rows, columns)), shape).tocsr()  # duplicates summed


def stencil_matrix(kernel, shape: int | tuple[int, ...], boundary: str, offset: int | tuple[int, ...] = 0) -> np.ndarray:
    """The dense float64 matrix of the stencil (`stencil_entries`): 1-D for an integer
    `shape`, 2-D for `(n1, n2)`."""
    return _dense(stencil_entries(kernel, shape, boundary, offset))


def stencil_sparse_matrix(kernel, shape: int | tuple[int, ...], boundary: str, offset: int | tuple[int, ...] = 0):
    """The stencil's matrix as a `scipy.sparse.csr_matrix` (needs SciPy), for sizes too
    large to hold densely."""
    return _sparse(stencil_entries(kernel, shape, boundary, offset))


def band_matrix(diagonals, periodic: bool) -> np.ndarray:
    """The dense float64 band matrix of `band_entries`."""
    return _dense(band_entries(diagonals, periodic))


def band_sparse_matrix(diagonals, periodic: bool):
    """The band matrix of `band_entries` as a `scipy.sparse.csr_matrix` (needs SciPy)."""
    return _sparse(band_entries(diagonals, periodic))
