r"""Geometric multigrid for the semi-implicit system $(I + \tau K^\top G K)\,x = f$.

Every level $\ell$ holds a banded stencil $A_\ell$ (`BandedStencil`); $A_0$ is the system
itself and $A_{\ell+1} = R_\ell A_\ell P_\ell$ its Galerkin coarse operator. The transfers
are convolutions with stride 2: the prolongation $P$ is a transposed convolution with the
kernel $p = (\tfrac12, 1, \tfrac12)$ (linear interpolation), the restriction
$R = P^\top / 2$ a strided convolution with $(\tfrac14, \tfrac12, \tfrac14)$ (full
weighting). For tridiagonal systems the transfers can instead follow the operator
(`interpolation="operator"`, `OperatorInterpolation`: black-box multigrid), which keeps the
cycle fast when the diffusivity jumps over decades. A cycle on level $\ell$ is

$$x \leftarrow S_\ell^{\nu_1}(x, f), \quad
e \leftarrow \text{cycle}_{\ell+1}^{\gamma}(0, R(f - A_\ell x)), \quad
x \leftarrow x + P e, \quad x \leftarrow \tilde S_\ell^{\nu_2}(x, f),$$

with a dense Cholesky solve on the coarsest level; $\gamma = 1$ is the V-cycle,
$\gamma = 2$ the W-cycle. The two halves of a level are `descend` (pre-smoothing, residual,
restriction) and `ascend` (correction, post-smoothing), on that level's data alone
(`MultigridLevel`); the hierarchy is built by `coarse_operator` level by level and
`coarse_factor` on the coarsest, so a cycle or a build can also run level by level (one
program per level shape). The smoothers are residual blocks
$x \leftarrow x + \omega M D^{-1}(f - A x)$: damped Jacobi ($M = I$,
$\omega = 2\theta / \max_i \sum_j |a_{ij}| / a_{ii}$) and red-black Gauss-Seidel ($M$
selects one colour at a time, $\omega = 2\theta$; a band of half-width $b$ takes
$b + 1$ colours or more, so that points of one colour never couple). For every
$\theta \in (0, 1)$ a sweep contracts the error in the energy norm
$\|e\|_A = \sqrt{e^\top A e}$, and with $R \propto P^\top$ the coarse-grid correction is
the $A$-orthogonal projection onto the complement of $\operatorname{range} P$, so a cycle
contracts: $\|E\|_A < 1$ (`proofs/multigrid-contraction.md`). The post-smoother runs the
colours and the weights in reverse, which makes $E$ self-adjoint in the energy inner
product.

Reference: Alt, Peter, Weickert, Schrader, arXiv:2103.15419, Section 6; Briggs, Henson,
McCormick, "A Multigrid Tutorial", SIAM 2000; Hackbusch, "Multi-Grid Methods and
Applications", Springer 1985; Dendy, "Black box multigrid", J. Comput. Phys. 48, 1982;
de Zeeuw, "Matrix-dependent prolongations and restrictions in a blackbox multigrid
solver", J. Comput. Appl. Math. 33, 1990.
"""

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jaxtyping import Array, Float

from .._bounds import l2_norm
from .._checks import check_int, check_rtol, check_signal
from ..operators import AbstractOperator
from ._solution import Result, Solution
from .banded import (
    BandedStencil,
    diffusion_stencil,
    schur_norm_bound,
    single_channel_stencil,
)

# Prolongation kernels (transposed convolutions with stride 2): interpolation of order 2
# and 4. Fourth-order problems need the cubic one (the orders of the transfers must
# exceed the order 2m of the equation; linear interpolation gives a factor near 0.75).
# Each comes with the extension of a non-periodic coarse signal beyond its ends that keeps
# the kernel of the neumann derivative interpolated exactly: constants for linear
# interpolation ("edge"), linear functions for cubic ("odd" reflection, x_{-k} = 2x_0 - x_k).
INTERPOLATIONS = {
    "linear": ((0.5, 1.0, 0.5), "edge"),
    "cubic": ((-1 / 16, 0.0, 9 / 16, 1.0, 9 / 16, 0.0, -1 / 16), "odd"),
}
# Operator-dependent interpolation (`OperatorInterpolation`), for tridiagonal systems only.
OPERATOR_INTERPOLATION = "operator"
EXTENSIONS = ("wrap", "edge", "odd")
SMOOTHERS = ("jacobi", "red-black")
CYCLES = {"V": 1, "W": 2}
# The coarsest level is solved by a dense Cholesky factorisation of at most this size.
DENSE_LIMIT = 1024
DEFAULT_WEIGHTS = {"jacobi": 2 / 3, "red-black": 1 / 2}


def default_interpolation(bandwidth: int) -> str:
    """Linear interpolation for second-order systems (bandwidth 1), cubic otherwise."""
    return "linear" if bandwidth <= 1 else "cubic"


def coarse_size(n: int, periodic: bool) -> int | None:
    """The points of the next coarser grid (the even-indexed fine points), or `None` when a
    periodic grid of odd size cannot be halved."""
    if periodic:
        return n // 2 if n % 2 == 0 else None
    return (n + 1) // 2


def coarse_bandwidth(bandwidth: int, kernel_size: int) -> int:
    r"""The half-width of $RAP$: $\lfloor (b + 2w) / 2 \rfloor$ for kernels of $2w + 1$ taps
    (row $I$ of $R$ and column $J$ of $P$ meet fine points within $w$ of $2I$ and $2J$)."""
    return (bandwidth + kernel_size - 1) // 2


def level_sizes(n: int, bandwidth: int, periodic: bool, coarsest: int, kernel_size: int = 3) -> tuple[int, ...]:
    """The grid sizes from fine to coarse: halve while the grid has more than `coarsest`
    points and the coarse grid can be formed (a periodic grid must be even and keep at
    least $2b + 1$ points for its band). A `ValueError` names the fix when the coarsest grid
    would be too large to solve densely."""
    sizes = [n]
    while sizes[-1] > coarsest:
        smaller = coarse_size(sizes[-1], periodic)
        bandwidth = coarse_bandwidth(bandwidth, kernel_size)
        if smaller is None or smaller < 2 or (periodic and smaller < 2 * bandwidth + 1):
            break
        sizes.append(smaller)
    if sizes[-1] > DENSE_LIMIT:
        raise ValueError(
            f"cannot form the coarse levels of a periodic grid of n = {n} points: halving stops at "
            f"{sizes[-1]} > {DENSE_LIMIT} points, too many for the coarsest (dense) solve. Use "
            f"n = 2^k q with an odd q <= {DENSE_LIMIT}, or boundary='neumann'."
        )
    return tuple(sizes)


def prolong(kernel: Float[Array, " taps"], coarse: Float[Array, " nc"], n: int, extension: str) -> Float[Array, " n"]:
    r"""The transposed convolution with stride 2 and kernel $p_{-w}, \dots, p_w$:
    $y_i = \sum_I p_{i - 2I}\, x_I$, where the coarse signal is extended beyond its ends
    by `extension`: `"wrap"` (periodic), `"edge"` (constant) or `"odd"` (odd reflection,
    $x_{-k} = 2x_0 - x_k$); `n` is $2n_c$ or $2n_c - 1$."""
    w = (kernel.shape[0] - 1) // 2
    ghosts = (w + 1) // 2
    if extension == "odd":
        extended = jnp.pad(coarse, (ghosts, ghosts), mode="reflect", reflect_type="odd")
    else:
        extended = jnp.pad(coarse, (ghosts, ghosts), mode=extension)
    upsampled = jnp.stack([extended, jnp.zeros_like(extended)], axis=-1).reshape(-1)  # x_I at 2(I + ghosts)
    kernel = kernel.astype(coarse.dtype)
    start = 2 * ghosts
    taps = [kernel[j + w] * upsampled[start - j : start - j + n] for j in range(-w, w + 1)]
    return sum(taps[1:], start=taps[0])


def restrict(kernel: Float[Array, " taps"], fine: Float[Array, " n"], coarse_n: int, extension: str) -> Float[Array, " nc"]:
    r"""The strided convolution that is the exact adjoint of `prolong` with the same kernel
    (boundary extension included). With $r = p / 2$ it is $P^\top / 2$: full weighting
    $(\tfrac14, \tfrac12, \tfrac14)$ for linear interpolation."""
    structure = jax.ShapeDtypeStruct((coarse_n,), fine.dtype)
    (coarse,) = jax.linear_transpose(lambda x: prolong(kernel, x, fine.shape[0], extension), structure)(fine)
    return coarse


def galerkin(A: BandedStencil, prolongation: Float[Array, " taps"], coarse_n: int, extension: str) -> BandedStencil:
    r"""The Galerkin coarse operator $R A P$ with $R = P^\top / 2$, as a banded stencil
    (`coarse_bandwidth` wide; symmetric positive definite when $A$ is and $P$ is injective)."""
    def matvec(x):
        return restrict(prolongation / 2, A(prolong(prolongation, x, A.n, extension)), coarse_n, extension)

    bandwidth = coarse_bandwidth(A.bandwidth, prolongation.shape[0])
    return BandedStencil.from_matvec(matvec, coarse_n, bandwidth, A.periodic, A.diagonals.dtype)


class OperatorInterpolation(AbstractOperator):
    r"""Operator-dependent interpolation (black-box multigrid) from the coarse grid to the
    $n$ points of a tridiagonal system $A$: coarse point $I$ sits at fine point $2I$ and

    $$(Px)_{2I} = x_I, \qquad (Px)_{2I+1} = w^-_I\, x_I + w^+_I\, x_{I+1}, \qquad
    w^-_I = -\frac{a_{2I+1,\,2I}}{a_{2I+1,\,2I+1}}, \quad w^+_I = -\frac{a_{2I+1,\,2I+2}}{a_{2I+1,\,2I+1}},$$

    with $I + 1$ taken modulo $n_c$ when periodic; on a non-periodic grid of even $n$ the
    last fine point has no right coarse neighbour ($w^+ = 0$). The odd rows solve
    $(APx)_{2I+1} = 0$: $P$ extends coarse values $A$-harmonically, $P^\top A P$ is the Schur
    complement of $A$ on the even points, and the cycle follows jumps of the diffusivity
    that fixed kernels smear out (with red-black Gauss-Seidel, $\theta = 1/2$, a V-cycle is
    cyclic reduction: exact up to rounding). The even rows are the identity, so $P$ is
    injective and the Galerkin levels stay symmetric positive definite. An
    `AbstractOperator` from $n_c$ to $n$ points; its adjoint `P.T` is the
    `OperatorRestriction` $P^\top$.

    **Arguments:**

    - `weights`: shape `(2, n // 2)`: $w^-_I$ and $w^+_I$ of the odd fine points $2I + 1$.
    - `n`: fine points.
    - `periodic`: whether the grid wraps around.

    Reference: Dendy, J. Comput. Phys. 48, 1982; de Zeeuw, J. Comput. Appl. Math. 33, 1990.
    """

    weights: Float[Array, "2 odd"]
    n: int = eqx.field(static=True)
    periodic: bool = eqx.field(static=True)

    @property
    def coarse_n(self) -> int:
        return coarse_size(self.n, self.periodic)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.coarse_n,)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.n,)

    @property
    def row_length(self) -> int:
        # A row of P holds at most 2 entries, a row of P^T (a column of P) at most 3.
        return 3

    @classmethod
    def from_operator(cls, A: BandedStencil) -> "OperatorInterpolation":
        """The interpolation of the tridiagonal `A` (a `ValueError` for a wider band)."""
        if A.bandwidth != 1:
            raise ValueError(
                f"operator-dependent interpolation needs a tridiagonal system (bandwidth 1, a 2-tap `K` such as D_1), "
                f"got bandwidth {A.bandwidth}; use interpolation='cubic' (the default for wider bands)."
            )
        if coarse_size(A.n, A.periodic) is None:
            raise ValueError(f"a periodic grid of odd size n = {A.n} cannot be coarsened.")
        odd = A.diagonals[:, 1 : 2 * (A.n // 2) : 2]  # rows 2I + 1: a_{i,i-1}, a_{i,i}, a_{i,i+1}
        return cls(-jnp.stack([odd[0], odd[2]]) / odd[1][None], A.n, A.periodic)

    def __call__(self, coarse: Float[Array, " nc"]) -> Float[Array, " n"]:
        """$P x$."""
        check_signal("coarse", coarse, self.in_shape)
        odd = self.n // 2
        weights = self.weights.astype(coarse.dtype)
        values = weights[0] * coarse[:odd] + weights[1] * jnp.roll(coarse, -1)[:odd]
        fine = jnp.stack([coarse[:odd], values], axis=-1).reshape(-1)
        return jnp.concatenate([fine, coarse[odd:]]) if self.n % 2 else fine

    @property
    def T(self) -> "OperatorRestriction":
        r"""$P^\top$, as an operator of its own."""
        return OperatorRestriction(self)

    def norm_bound(self) -> Float[Array, ""]:
        r"""Schur's bound $\sqrt{R\,C}$ of $\|P\|_2$ (`abs_norm_bound`), rounded up."""
        return self.abs_norm_bound()

    def abs_norm_bound(self) -> Float[Array, ""]:
        r"""$\sqrt{R\,C}$ with the row sums $R = \max(1, \max_I |w^-_I| + |w^+_I|)$ (2 terms) and
        the column sums $C = \max_I 1 + |w^-_I| + |w^+_{I-1}|$ (3 terms), rounded up
        (`jaxpde.schemes.banded.schur_norm_bound`)."""
        magnitudes = jnp.abs(self.weights)
        pad = (0, self.coarse_n - self.n // 2)  # as in `OperatorRestriction.__call__`
        row_sums = jnp.concatenate([jnp.ones(1, magnitudes.dtype), magnitudes[0] + magnitudes[1]])
        column_sums = 1 + jnp.pad(magnitudes[0], pad) + jnp.roll(jnp.pad(magnitudes[1], pad), 1)
        return schur_norm_bound(row_sums, column_sums, 2, 3)

    def as_matrix(self) -> Float[Array, "n nc"]:
        """The dense matrix of $P$ (for tests and small sizes)."""
        return jax.vmap(self, out_axes=1)(jnp.eye(self.coarse_n, dtype=self.weights.dtype))

    def galerkin(self, A: BandedStencil) -> BandedStencil:
        r"""$R A P$ with $R = P^\top / 2$ (the convention of `galerkin`), tridiagonal."""
        def matvec(x):
            return self.T(A(self(x))) / 2

        return BandedStencil.from_matvec(matvec, self.coarse_n, 1, A.periodic, A.diagonals.dtype)


class OperatorRestriction(AbstractOperator):
    r"""$P^\top$ for the `OperatorInterpolation` $P$ (`P.T`): from the $n$ fine points to the
    $n_c$ coarse ones, $(P^\top y)_I = y_{2I} + w^-_I\, y_{2I+1} + w^+_{I-1}\, y_{2I-1}$ (the
    restriction of the cycle is $P^\top / 2$).

    **Arguments:**

    - `interpolation`: the `OperatorInterpolation` $P$.
    """

    interpolation: OperatorInterpolation

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.interpolation.out_shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.interpolation.in_shape

    @property
    def row_length(self) -> int:
        return self.interpolation.row_length

    def __call__(self, fine: Float[Array, " n"]) -> Float[Array, " nc"]:
        r"""$P^\top y$ (the exact adjoint of `OperatorInterpolation.__call__`)."""
        P = self.interpolation
        check_signal("fine", fine, self.in_shape)
        weights = P.weights.astype(fine.dtype)
        values, pad = fine[1::2], (0, P.coarse_n - P.n // 2)
        left, right = jnp.pad(weights[0] * values, pad), jnp.pad(weights[1] * values, pad)
        return fine[0::2] + left + jnp.roll(right, 1)

    @property
    def T(self) -> OperatorInterpolation:
        return self.interpolation

    def norm_bound(self) -> Float[Array, ""]:
        r"""$\|P^\top\| = \|P\|$: the bound of $P$ (Schur's bound is symmetric in rows and columns)."""
        return self.interpolation.norm_bound()

    def abs_norm_bound(self) -> Float[Array, ""]:
        return self.interpolation.abs_norm_bound()

    def as_matrix(self) -> Float[Array, "nc n"]:
        return self.interpolation.as_matrix().T


def colours(n: int, bandwidth: int, periodic: bool) -> int:
    """The number of colours $c$ of the multicolour Gauss-Seidel sweep: points $i \\equiv j
    \\pmod c$ share a colour, and no two of them couple: $c = b + 1$ (red-black for a
    tridiagonal band), for a periodic band the smallest divisor of $n$ that is at least
    $b + 1$."""
    if not periodic:
        return bandwidth + 1
    return next(c for c in range(bandwidth + 1, n + 1) if n % c == 0)


def smooth(
    A: BandedStencil, x: Float[Array, " n"], f: Float[Array, " n"], weights: Float[Array, " sweeps"],
    smoother: str, *, reverse: bool = False, kernel: Float[Array, ""] | None = None,
) -> Float[Array, " n"]:
    r"""`len(weights)` smoothing sweeps $x \leftarrow x + \omega M D^{-1}(f - Ax)$, with
    relative weights $\theta \in (0, 1)$ (see the module docstring); `reverse` runs the
    weights and the colours backwards (the adjoint sweep in the energy inner product).

    Jacobi only: `kernel` $= s$, $|s| < 1/2$, smooths the scaled residual with the
    symmetric positive definite stencil $S = (s, 1, s)$, $M = D^{-1/2} S D^{-1/2}$, and
    $\omega = 2\theta / ((1 + 2|s|) \max_i \sum_j |a_{ij}| / a_{ii})$, so that the sweep still
    contracts in the energy norm ($\|S\| \le 1 + 2|s|$)."""
    sweeps = weights.shape[0]
    if sweeps == 0:
        return x
    inverse_diagonal = 1 / A.diagonal.astype(x.dtype)
    if smoother == "jacobi":
        scale, count = 2 / A.gershgorin().astype(x.dtype), 1
    else:
        scale, count = jnp.asarray(2, x.dtype), colours(A.n, A.bandwidth, A.periodic)
    if kernel is not None:
        if smoother != "jacobi":
            raise ValueError("a smoothing `kernel` needs smoother='jacobi'.")
        tap = kernel.astype(x.dtype)
        scale = scale / (1 + 2 * jnp.abs(tap))
        root = jnp.sqrt(inverse_diagonal)
        mode = "wrap" if A.periodic else "constant"

        def precondition(r):
            scaled = jnp.pad(root * r, (1, 1), mode=mode)
            return root * (scaled[1:-1] + tap * (scaled[:-2] + scaled[2:]))
    else:

        def precondition(r):
            return inverse_diagonal * r

    points = jnp.arange(A.n) % count

    def sweep(k, x):
        index, c = k // count, k % count
        if reverse:
            index, c = sweeps - 1 - index, count - 1 - c
        update = scale * weights[index].astype(x.dtype) * precondition(f - A(x))
        return x + jnp.where(points == c, update, 0)

    return jax.lax.fori_loop(0, sweeps * count, sweep, x)


class MultigridLevel(eqx.Module):
    r"""Level $\ell$ of a hierarchy, all that `descend` and `ascend` read and nothing of the
    other levels: the operator $A_\ell$, the prolongation $P_\ell$ from level $\ell + 1$ (a row
    of kernel taps, or an `OperatorInterpolation`), the relative smoothing weights (pre and
    post), the smoother and the boundary extension of the kernel."""

    operator: BandedStencil
    prolongation: Float[Array, " taps"] | OperatorInterpolation
    pre_weights: Float[Array, " pre"]
    post_weights: Float[Array, " post"]
    smoother: str = eqx.field(static=True)
    extension: str = eqx.field(static=True)

    @property
    def coarse_n(self) -> int:
        return coarse_size(self.operator.n, self.operator.periodic)

    def interpolate(self, coarse: Float[Array, " nc"]) -> Float[Array, " n"]:
        r"""$P_\ell$ `coarse`: from level $\ell + 1$ to level $\ell$."""
        if isinstance(self.prolongation, OperatorInterpolation):
            return self.prolongation(coarse)
        return prolong(self.prolongation, coarse, self.operator.n, self.extension)

    def coarsen(self, fine: Float[Array, " n"]) -> Float[Array, " nc"]:
        r"""$R_\ell$ `fine` $= P_\ell^\top$ `fine` $/ 2$: from level $\ell$ to level $\ell + 1$."""
        if isinstance(self.prolongation, OperatorInterpolation):
            return self.prolongation.T(fine) / 2
        return restrict(self.prolongation / 2, fine, self.coarse_n, self.extension)


def coarse_operator(
    A: BandedStencil, prolongation: Float[Array, " taps"] | OperatorInterpolation, extension: str
) -> BandedStencil:
    r"""One level of the hierarchy build: the Galerkin operator $R A P$ of the next coarser
    level, for a kernel row (`galerkin`, extension `"wrap"` for a periodic `A`) or an
    `OperatorInterpolation` $P$."""
    if isinstance(prolongation, OperatorInterpolation):
        return prolongation.galerkin(A)
    extension = "wrap" if A.periodic else extension
    return galerkin(A, prolongation, coarse_size(A.n, A.periodic), extension)


def coarse_factor(A: BandedStencil) -> Float[Array, "nc nc"]:
    """The Cholesky factor $L$ of the coarsest operator, $A = L L^\\top$ (dense)."""
    return jnp.linalg.cholesky(A.as_matrix())


def coarse_solve(factor: Float[Array, "nc nc"], f: Float[Array, " nc"]) -> Float[Array, " nc"]:
    """$A^{-1} f = L^{-\\top} L^{-1} f$ on the coarsest level, from its Cholesky `factor`."""
    return jsl.cho_solve((factor.astype(f.dtype), True), f)


class MultigridHierarchy(eqx.Module):
    """The levels of a multigrid solver for one system: the banded operators from fine to
    coarse, the prolongation of each transfer (a row of kernel taps, or one
    `OperatorInterpolation` per transfer), the relative smoothing weights (pre and post,
    one row per smoothed level) and the Cholesky factor of the coarsest operator.
    `extension` is the boundary extension of the kernels (unused by operator-dependent
    transfers). `level` gives one level's data (`MultigridLevel`)."""

    operators: tuple[BandedStencil, ...]
    prolongations: Float[Array, "transfers taps"] | tuple[OperatorInterpolation, ...]
    pre_weights: Float[Array, "transfers pre"]
    post_weights: Float[Array, "transfers post"]
    coarse_factor: Float[Array, "nc nc"]
    smoother: str = eqx.field(static=True)
    extension: str = eqx.field(static=True)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(A.n for A in self.operators)

    def level(self, level: int) -> MultigridLevel:
        """The data of the smoothed level `level` (not the coarsest)."""
        return MultigridLevel(
            self.operators[level], self.prolongations[level], self.pre_weights[level], self.post_weights[level],
            self.smoother, self.extension,
        )

    def coarse_solve(self, f: Float[Array, " nc"]) -> Float[Array, " nc"]:
        return coarse_solve(self.coarse_factor, f)

    def interpolate(self, level: int, coarse: Float[Array, " nc"]) -> Float[Array, " n"]:
        r"""$P_\ell$ `coarse`: from level `level + 1` to level `level`."""
        return self.level(level).interpolate(coarse)

    def coarsen(self, level: int, fine: Float[Array, " n"]) -> Float[Array, " nc"]:
        r"""$R_\ell$ `fine` $= P_\ell^\top$ `fine` $/ 2$: from level `level` to level `level + 1`."""
        return self.level(level).coarsen(fine)


def build_hierarchy(
    A: BandedStencil,
    prolongations: Float[Array, "transfers taps"],
    pre_weights: Float[Array, "transfers pre"],
    post_weights: Float[Array, "transfers post"],
    smoother: str,
    extension: str,
) -> MultigridHierarchy:
    """Galerkin operators for the given transfers (one level more than `prolongations`
    has rows; `extension` is forced to `"wrap"` for a periodic `A`), and the Cholesky
    factor of the coarsest one: `coarse_operator` level by level, then `coarse_factor`."""
    extension = "wrap" if A.periodic else extension
    operators = [A]
    for kernel in prolongations:
        operators.append(coarse_operator(operators[-1], kernel, extension))
    factor = coarse_factor(operators[-1])
    return MultigridHierarchy(tuple(operators), prolongations, pre_weights, post_weights, factor, smoother, extension)


def operator_hierarchy(
    A: BandedStencil,
    pre_weights: Float[Array, "transfers pre"],
    post_weights: Float[Array, "transfers post"],
    smoother: str,
) -> MultigridHierarchy:
    """Operator-dependent levels for the tridiagonal `A`: on every level the
    `OperatorInterpolation` of that level's operator and its Galerkin operator (one level
    more than `pre_weights` has rows), and the Cholesky factor of the coarsest one."""
    operators, transfers = [A], []
    extension = "wrap" if A.periodic else "edge"
    for _ in range(pre_weights.shape[0]):
        transfers.append(OperatorInterpolation.from_operator(operators[-1]))
        operators.append(coarse_operator(operators[-1], transfers[-1], extension))
    factor = coarse_factor(operators[-1])
    return MultigridHierarchy(tuple(operators), tuple(transfers), pre_weights, post_weights, factor, smoother, extension)


def descend(level: MultigridLevel, x: Float[Array, " n"], f: Float[Array, " n"]) -> tuple[Float[Array, " n"], Float[Array, " nc"]]:
    r"""The way down of a cycle on one level: $x \leftarrow S_\ell^{\nu_1}(x, f)$ and the
    coarse right-hand side $R_\ell (f - A_\ell x)$. Returns both."""
    A = level.operator
    x = smooth(A, x, f, level.pre_weights, level.smoother)
    return x, level.coarsen(f - A(x))


def ascend(
    level: MultigridLevel, x: Float[Array, " n"], f: Float[Array, " n"], error: Float[Array, " nc"]
) -> Float[Array, " n"]:
    r"""The way up of a cycle on one level: the correction $x \leftarrow x + P_\ell e$ by the
    coarse `error` $e$, then $x \leftarrow \tilde S_\ell^{\nu_2}(x, f)$ (`descend`'s `x` in)."""
    x = x + level.interpolate(error)
    return smooth(level.operator, x, f, level.post_weights, level.smoother, reverse=True)


def multigrid_cycle(
    hierarchy: MultigridHierarchy, x: Float[Array, " n"], f: Float[Array, " n"], *, gamma: int = 1, level: int = 0
) -> Float[Array, " n"]:
    """One cycle from `level` down: `descend`, $\\gamma$ cycles on the next coarser level
    (the coarse solve on the coarsest), `ascend`. $\\gamma = 1$ is the V-cycle, $\\gamma = 2$
    the W-cycle (the $\\gamma$ coarse visits run in a `fori_loop`, so the trace stays
    linear in the levels)."""
    if level == len(hierarchy.operators) - 1:
        return hierarchy.coarse_solve(f)
    current = hierarchy.level(level)
    x, coarse_f = descend(current, x, f)

    def visit(_, e):
        return multigrid_cycle(hierarchy, e, coarse_f, gamma=gamma, level=level + 1)

    error = jnp.zeros_like(coarse_f)
    error = visit(0, error) if gamma == 1 else jax.lax.fori_loop(0, gamma, visit, error)
    return ascend(current, x, f, error)


def full_multigrid(hierarchy: MultigridHierarchy, f: Float[Array, " n"], *, gamma: int = 1) -> Float[Array, " n"]:
    """The full-multigrid start: restrict $f$ to every level, solve on the coarsest, then on
    each finer level interpolate and run one cycle."""
    rhs = [f]
    for level in range(len(hierarchy.operators) - 1):
        rhs.append(hierarchy.coarsen(level, rhs[-1]))
    x = hierarchy.coarse_solve(rhs[-1])
    for level in range(len(hierarchy.operators) - 2, -1, -1):
        x = hierarchy.interpolate(level, x)
        x = multigrid_cycle(hierarchy, x, rhs[level], gamma=gamma, level=level)
    return x


class AbstractMultigrid(eqx.Module):
    r"""A multigrid solver of the semi-implicit system $(I + \tau K^\top G K)x = f$: the
    interface that `solve_diffusion_system` and `SemiImplicitScheme(multigrid=...)` use.
    `assemble` builds the finest operator from $(K, \Phi, \tau)$, `hierarchy` its levels
    once, and `solve` cycles; `max_cycles` bounds the cycles of a solve."""

    max_cycles: eqx.AbstractVar[int]

    @abc.abstractmethod
    def check_operator(self, op: AbstractOperator) -> None:
        """Raise a `TypeError` or `ValueError` (at trace time) when the solver cannot take
        the system of `op`."""

    @abc.abstractmethod
    def assemble(self, op: AbstractOperator, flux, tau) -> AbstractOperator:
        """$I + \tau K^\top G K$ for $K$ = `op` and a linear `flux` (`Frozen` or `Linear`), as
        this solver's operator."""

    @abc.abstractmethod
    def hierarchy(self, A: AbstractOperator):
        """The levels of `A` (set up once, cycled many times)."""

    @abc.abstractmethod
    def solve(self, A: AbstractOperator, f: Array, x0: Array | None = None, *, hierarchy=None, rtol=None, throw=None) -> Solution:
        """Cycles from `x0` (or the full-multigrid start) to `rtol`, or `max_cycles`."""


class Multigrid(AbstractMultigrid):
    """A geometric multigrid solver of banded systems (configuration; all fields static).

    **Arguments:**

    - `smoother`: `"jacobi"` (damped Jacobi) or `"red-black"` (multicolour Gauss-Seidel).
    - `pre_smoothing`, `post_smoothing`: sweeps $\\nu_1, \\nu_2$ before and after the
      coarse-grid correction (V(2,2) by default).
    - `cycle`: `"V"` or `"W"`.
    - `weight`: the relative damping $\\theta \\in (0, 1)$ of every sweep (`None`: 2/3 for
      Jacobi, which is $\\omega = 2/3$ for the Laplacian, and 1/2 for Gauss-Seidel, $\\omega = 1$).
    - `interpolation`: `"linear"` or `"cubic"` prolongation (`None`: linear for $m = 1$,
      cubic for wider systems such as $m = 2$), or `"operator"`: operator-dependent
      interpolation (`OperatorInterpolation`), for tridiagonal systems ($m = 1$) whose
      diffusivity jumps over decades; the restriction is the adjoint over 2.
    - `coarsest`: stop coarsening at this many points or fewer.
    - `rtol`: stop at $\\|f - Ax\\| \\le$ `rtol` $\\|f\\|$ (`None`: $1000\\varepsilon$ times the largest
      absolute row sum of $A$, what rounding lets the cycles reach).
    - `max_cycles`: the most cycles; the result is `Result.max_steps_reached` after them.
    - `full_multigrid`: start from the full-multigrid approximation (when no `x0` is given).
    - `throw`: raise when the tolerance is not reached.
    """

    smoother: str = eqx.field(static=True, default="red-black")
    pre_smoothing: int = eqx.field(static=True, default=2)
    post_smoothing: int = eqx.field(static=True, default=2)
    cycle: str = eqx.field(static=True, default="V")
    weight: float | None = eqx.field(static=True, default=None)
    interpolation: str | None = eqx.field(static=True, default=None)
    coarsest: int = eqx.field(static=True, default=16)
    rtol: float | None = eqx.field(static=True, default=None)
    max_cycles: int = eqx.field(static=True, default=50)
    full_multigrid: bool = eqx.field(static=True, default=True)
    throw: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if self.smoother not in SMOOTHERS:
            raise ValueError(f"`smoother` must be one of {SMOOTHERS}, got {self.smoother!r}.")
        if self.cycle not in CYCLES:
            raise ValueError(f"`cycle` must be 'V' or 'W', got {self.cycle!r}.")
        check_int("pre_smoothing", self.pre_smoothing, minimum=0)
        check_int("post_smoothing", self.post_smoothing, minimum=0)
        if self.pre_smoothing + self.post_smoothing == 0:
            raise ValueError("`pre_smoothing + post_smoothing` must be at least 1 (a cycle needs a smoother).")
        if self.weight is not None and not 0 < self.weight < 1:
            raise ValueError(
                f"`weight` must lie in (0, 1) (relative damping; every sweep then contracts), got {self.weight!r}."
            )
        choices = (*INTERPOLATIONS, OPERATOR_INTERPOLATION)
        if self.interpolation is not None and self.interpolation not in choices:
            raise ValueError(f"`interpolation` must be one of {choices} or None, got {self.interpolation!r}.")
        check_int("coarsest", self.coarsest, minimum=2)
        check_int("max_cycles", self.max_cycles, minimum=1)
        check_rtol(self.rtol)

    @property
    def relative_weight(self) -> float:
        return DEFAULT_WEIGHTS[self.smoother] if self.weight is None else self.weight

    def check_operator(self, op: AbstractOperator) -> None:
        """`op` must be a single-channel `Stencil` or `Derivative` (its system is banded)."""
        single_channel_stencil(op)

    def assemble(self, op: AbstractOperator, flux, tau) -> BandedStencil:
        """The banded stencil $I + \\tau K^\\top G K$ (`diffusion_stencil`)."""
        return diffusion_stencil(op, flux, tau)

    def hierarchy(self, A: BandedStencil) -> MultigridHierarchy:
        """The levels for the system `A`: the interpolation, Galerkin operators."""
        operator = self.interpolation == OPERATOR_INTERPOLATION
        if operator and A.bandwidth != 1:
            raise ValueError(
                f"interpolation='operator' is for tridiagonal systems (bandwidth 1: a 2-tap `K` such as D_1), got "
                f"bandwidth {A.bandwidth}; for wider bands use interpolation='cubic' (the default), or a direct or "
                "Krylov solver where the diffusivity jumps over decades (see proofs/multigrid-contraction.md)."
            )
        prolongations, pre, post, extension = self.schedule(A)
        if operator:
            return operator_hierarchy(A, pre, post, self.smoother)
        return build_hierarchy(A, prolongations, pre, post, self.smoother, extension)

    def schedule(
        self, A: BandedStencil
    ) -> tuple[Float[Array, "transfers taps"], Float[Array, "transfers pre"], Float[Array, "transfers post"], str]:
        """What `hierarchy(A)` takes from the configuration and the shape of `A` alone: the
        kernel rows of the transfers, the relative weights (pre and post) and the boundary
        extension (`"wrap"` when periodic). The operator-dependent transfers have the linear
        kernel's reach (its rows count their levels)."""
        operator = self.interpolation == OPERATOR_INTERPOLATION
        kernel, extension = INTERPOLATIONS[
            "linear" if operator else self.interpolation or default_interpolation(A.bandwidth)
        ]
        sizes = level_sizes(A.n, A.bandwidth, A.periodic, self.coarsest, len(kernel))
        transfers = len(sizes) - 1
        dtype = A.diagonals.dtype
        pre = jnp.full((transfers, self.pre_smoothing), self.relative_weight, dtype)
        post = jnp.full((transfers, self.post_smoothing), self.relative_weight, dtype)
        prolongations = jnp.tile(jnp.asarray(kernel, dtype), (transfers, 1))
        return prolongations, pre, post, "wrap" if A.periodic else extension

    def default_rtol(self, A: BandedStencil, dtype) -> Array:
        row_sum = jnp.max(jnp.sum(jnp.abs(A.diagonals), axis=0)).astype(dtype)
        return 1000 * float(np.finfo(dtype).eps) * row_sum

    @eqx.filter_jit
    def solve(
        self, A: BandedStencil, f: Float[Array, " n"], x0: Float[Array, " n"] | None = None,
        *, hierarchy: MultigridHierarchy | None = None, rtol: float | Float[Array, ""] | None = None,
        throw: bool | None = None,
    ) -> Solution:
        """Cycles from `x0` (`None`: the full-multigrid start, or zero) until the relative
        residual is at most `rtol` or `max_cycles` have run. Returns a `Solution`: the cycles
        run as its `iterations`, the final Euclidean residual $\\|f - Ax\\|$ and the relative
        residuals $\\|f - Ax_k\\| / \\|f\\|$, $k = 0, \\dots,$ `iterations`, as its `history`
        (NaN beyond). `hierarchy` reuses levels
        built by `self.hierarchy(A)`; `rtol` and `throw` override the configuration. One
        compiled program per system shape (called eagerly, the hierarchy and the start would
        compile op by op)."""
        check_signal("f", f, (A.n,))
        hierarchy = self.hierarchy(A) if hierarchy is None else hierarchy
        gamma = CYCLES[self.cycle]
        if x0 is None:
            x0 = full_multigrid(hierarchy, f, gamma=gamma) if self.full_multigrid else jnp.zeros_like(f)
        else:
            check_signal("x0", x0, (A.n,))
        rtol = self.rtol if rtol is None else rtol
        rtol = self.default_rtol(A, f.dtype) if rtol is None else jnp.asarray(rtol, f.dtype)
        scale = jnp.maximum(l2_norm(f), jnp.finfo(f.dtype).tiny)
        history = jnp.full(self.max_cycles + 1, jnp.nan, f.dtype)
        first = l2_norm(f - A(x0)) / scale
        history = history.at[0].set(first)

        def unfinished(carry):
            _, k, relative, _ = carry
            return (k < self.max_cycles) & (relative > rtol) & jnp.isfinite(relative)

        def step(carry):
            x, k, _, history = carry
            x = multigrid_cycle(hierarchy, x, f, gamma=gamma)
            relative = l2_norm(f - A(x)) / scale
            return x, k + 1, relative, history.at[k + 1].set(relative)

        x, cycles, relative, history = jax.lax.while_loop(unfinished, step, (x0, jnp.array(0), first, history))
        ok = relative <= rtol
        result = Result.where(ok, Result.successful, Result.max_steps_reached)
        if self.throw if throw is None else throw:
            x = result.error_if(x, ~ok)
        return Solution(x, result, cycles, relative * scale, history)


def energy_norm(A: BandedStencil, e: Float[Array, " n"]) -> Float[Array, ""]:
    """$\\|e\\|_A = \\sqrt{e^\\top A e}$."""
    return jnp.sqrt(jnp.maximum(jnp.vdot(e, A(e)), 0))


def energy_normalised(A: BandedStencil, e: Float[Array, " n"]) -> tuple[Float[Array, ""], Float[Array, " n"]]:
    """$\\|e\\|_A$ and $e / \\|e\\|_A$."""
    norm = energy_norm(A, e)
    return norm, e / norm


def energy_power_iteration(
    propagate: Callable[[Float[Array, " n"]], Float[Array, " n"]], A: BandedStencil, e: Float[Array, " n"], iterations: int
) -> Float[Array, " iterations"]:
    r"""Power iteration for $\|E\|_A$, $E$ = `propagate` (e.g. `error_propagation`): from
    $e_0 = e / \|e\|_A$, $e_{k+1} = E e_k / \|E e_k\|_A$. Returns the ratios $\|E e_k\|_A$,
    $k = 0, \dots,$ `iterations` $- 1$: each a lower bound of $\|E\|_A$ up to rounding, rising
    to it when $E$ is self-adjoint and positive semidefinite in the energy inner product
    (a symmetric cycle). Not `jaxpde.nn.energy_factor`, the average factor
    $(\|E^k e\|_A / \|e\|_A)^{1/k}$ of one start vector."""
    iterations = check_int("iterations", iterations, minimum=1)

    def step(e, _):
        ratio, e = energy_normalised(A, propagate(e))
        return e, ratio

    _, ratios = jax.lax.scan(step, energy_normalised(A, e)[1], length=iterations)
    return ratios


def error_propagation(hierarchy: MultigridHierarchy, e: Float[Array, " n"], *, gamma: int = 1) -> Float[Array, " n"]:
    """$E e$: one cycle applied to the error $e$ (the cycle with $f = 0$ and $x = e$)."""
    return multigrid_cycle(hierarchy, e, jnp.zeros_like(e), gamma=gamma)
