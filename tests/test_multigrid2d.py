"""Black-box multigrid for the image system (I + tau grad^T G grad) x = f
(`jaxpde.schemes.multigrid2d`): the stencil fields against an independent SciPy assembly,
the Galerkin levels against dense R A P, the smoothers' symmetry, the solve against
`scipy.sparse.linalg.spsolve`, the energy-norm contraction and the convergence factors."""

import functools

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from jaxpde import Derivative, Gradient
from jaxpde._xla_flags import QUICK_COMPILE
from jaxpde.fluxes import Frozen, Linear, PeronaMalik, frozen_diffusivity
from jaxpde.nn.unet2d import MultigridUNet2D
from jaxpde.schemes import (
    BlackBoxInterpolation,
    Multigrid,
    Multigrid2D,
    Result,
    SemiImplicitScheme,
    StencilField,
    diffusion_stencil_2d,
    energy_power_iteration_2d,
    error_propagation_2d,
    full_multigrid_2d,
    galerkin_2d,
    multigrid_cycle_2d,
)
from jaxpde.schemes.multigrid2d import smooth_2d

from .helpers import few_examples, thorough, tolerance

TOL = tolerance(np.float64)
# A small fixed set of image shapes (odd, even and mixed sides), to limit recompilation.
SHAPES = ((9, 9), (8, 11), (12, 7))
jit = functools.partial(eqx.filter_jit, compiler_options=QUICK_COMPILE)


def reference_matrix(g: np.ndarray, tau: float) -> sp.csr_matrix:
    """$I + \\tau (D_y^\\top G_y D_y + D_x^\\top G_x D_x)$ assembled in SciPy from 1-D forward
    differences and Kronecker products (row-major pixels), independently of jaxpde; `g` has
    the gradient's padded shape `(2, H, W)` (the last row of `g[0]`, the last column of
    `g[1]` unused)."""
    _, height, width = g.shape

    def difference(n):
        return sp.diags([-np.ones(n - 1), np.ones(n - 1)], [0, 1], shape=(n - 1, n))

    dy = sp.kron(difference(height), sp.identity(width))
    dx = sp.kron(sp.identity(height), difference(width))
    gy = sp.diags(g[0, :-1, :].ravel())
    gx = sp.diags(g[1, :, :-1].ravel())
    return (
        sp.identity(height * width) + tau * (dy.T @ gy @ dy + dx.T @ gx @ dx)
    ).tocsr()


def random_diffusivity(
    rng: np.random.Generator, shape, decades: float = 4.0
) -> np.ndarray:
    """Edge diffusivities log-uniform over `decades`, constant on random rectangles (jumps),
    with some zeros."""
    height, width = shape
    g = np.ones((2, height, width))
    for _ in range(4):
        r0, c0 = rng.integers(0, height), rng.integers(0, width)
        g[:, r0 : r0 + rng.integers(1, height), c0 : c0 + rng.integers(1, width)] = (
            10 ** -rng.uniform(0, decades)
        )
    g *= 10 ** rng.uniform(-0.5, 0, g.shape)
    g[rng.random(g.shape) < 0.05] = 0
    return g


def _assemble(g, tau):
    return diffusion_stencil_2d(Gradient(g.shape[1:]), frozen_diffusivity(g), tau)


_system = jit(_assemble)


@jit
def _solve(multigrid, A, f):
    return multigrid.solve(A, f, throw=False)


@jit
def _batched_solve(multigrid, gs, tau, fs):
    return jax.vmap(
        lambda g, f: multigrid.solve(_assemble(g, tau), f, throw=False).value
    )(gs, fs)


def system(g, tau):
    """The image system of the edge diffusivities `g` (`tau` a traced value: one program per shape)."""
    return _system(jnp.asarray(g), jnp.asarray(tau, jnp.float64))


@jit
def _hierarchy(multigrid, A):
    return multigrid.hierarchy(A)


@jit
def _dense_error(hierarchy, gamma: int):
    """The dense matrix of the error propagation $E$ (columns: $E e_k$)."""
    shape = hierarchy.operators[0].shape
    n = shape[0] * shape[1]
    basis = jnp.eye(n).reshape(n, *shape)
    return jax.vmap(
        lambda e: error_propagation_2d(hierarchy, e, gamma=gamma).reshape(-1)
    )(basis).T


def coarse_points(n: int) -> list[int]:
    """The fine indices of the coarse points of an axis: the even ones, and the last one."""
    return sorted(set(range(0, n, 2)) | {n - 1})


@jit
def _sweep_matrices(A, scale, smoother: str):
    """The dense matrices of two pre-smoothing and two post-smoothing sweeps (error
    propagation: $f = 0$)."""
    shape = A.shape
    n = shape[0] * shape[1]
    basis = jnp.eye(n).reshape(n, *shape)
    zero = jnp.zeros(shape)

    def sweeps(reverse):
        def one(e):
            return smooth_2d(A, e, zero, scale, 2, smoother, reverse=reverse).reshape(
                -1
            )

        return jax.vmap(one)(basis).T

    return sweeps(False), sweeps(True)


def energy_norm_of(E: np.ndarray, A: np.ndarray) -> float:
    """$\\|E\\|_A = \\|L^\\top E L^{-\\top}\\|_2$, $A = L L^\\top$."""
    L = np.linalg.cholesky(A)
    return float(np.linalg.norm(L.T @ E @ np.linalg.inv(L.T), 2))


# --- the stencil field ------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES[:2])
def test_stencil_field_matches_scipy_assembly(shape):
    """`diffusion_stencil_2d` applied to a random image, and its adjoint, equal the SciPy
    assembly of the same system (g over four decades, with zeros); the dense matrix too."""
    rng = np.random.default_rng(1)
    g, tau = random_diffusivity(rng, shape), 37.0
    A = system(g, tau)
    S = reference_matrix(g, tau)
    x = rng.standard_normal(shape)
    scale = float(abs(S).sum(axis=1).max()) * np.abs(x).max()
    np.testing.assert_allclose(
        np.asarray(A(jnp.asarray(x))).ravel(),
        S @ x.ravel(),
        rtol=0,
        atol=TOL["atol"] * scale,
    )
    np.testing.assert_allclose(
        np.asarray(A.T(jnp.asarray(x))).ravel(),
        S.T @ x.ravel(),
        rtol=0,
        atol=TOL["atol"] * scale,
    )
    np.testing.assert_allclose(
        np.asarray(A.as_matrix()), S.toarray(), rtol=0, atol=TOL["atol"] * scale
    )
    assert A.five_point and float(A.norm_bound()) >= np.linalg.norm(S.toarray(), 2) * (
        1 - 1e-12
    )


def test_stencil_field_from_matvec_recovers_a_nine_point_field():
    """Nine coloured probes recover a random 9-point field exactly (entries outside the
    image are zero in the recovered field); its Schur bound is that of its dense matrix
    (rows and columns differ: the field is not symmetric)."""
    rng = np.random.default_rng(2)
    B = StencilField(jnp.asarray(rng.standard_normal((9, *SHAPES[1])))).masked()
    C = StencilField.from_matvec(B, B.shape, jnp.float64)
    np.testing.assert_array_equal(
        np.asarray(C.coefficients), np.asarray(B.coefficients)
    )
    dense = np.abs(np.asarray(B.as_matrix()))
    schur = np.sqrt(dense.sum(axis=1).max() * dense.sum(axis=0).max())
    assert schur <= float(B.abs_norm_bound()) <= schur * (1 + 1e-13)


# --- transfers and Galerkin levels -----------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_galerkin_levels_equal_dense_rap(shape):
    """Every coarse field equals $P^\\top A P / 4$ of dense matrices; `P.T` is the adjoint of
    `P`; $P$ injects at the coarse points; the coarse fields are symmetric."""
    rng = np.random.default_rng(3)
    hierarchy = _hierarchy(
        Multigrid2D(coarsest=16), system(random_diffusivity(rng, shape), 100.0)
    )
    assert len(hierarchy.operators) >= 3
    for level, P in enumerate(hierarchy.interpolations):
        fine = np.asarray(hierarchy.operators[level].as_matrix())
        coarse = np.asarray(hierarchy.operators[level + 1].as_matrix())
        matrix = np.asarray(P.as_matrix())
        scale = np.abs(fine).max()
        np.testing.assert_allclose(
            coarse, matrix.T @ fine @ matrix / 4, rtol=0, atol=TOL["atol"] * scale
        )
        np.testing.assert_allclose(coarse, coarse.T, rtol=0, atol=TOL["atol"] * scale)
        np.testing.assert_array_equal(np.asarray(P.T.as_matrix()), matrix.T)
        rows = (
            np.arange(P.shape[0] * P.shape[1])
            .reshape(P.shape)[np.ix_(*map(coarse_points, P.shape))]
            .ravel()
        )
        np.testing.assert_array_equal(matrix[rows], np.eye(matrix.shape[1]))


def test_galerkin_2d_matches_dense_for_a_nine_point_field():
    """`galerkin_2d` of a random symmetric 9-point field equals dense $P^\\top A P / 4$."""
    rng = np.random.default_rng(4)
    B = StencilField(jnp.asarray(rng.standard_normal((9, *SHAPES[2])))).masked()
    A = StencilField((B.coefficients + B.T.coefficients) / 2)
    P = BlackBoxInterpolation.from_operator(
        system(random_diffusivity(rng, SHAPES[2]), 10.0)
    )
    matrix, dense = np.asarray(P.as_matrix()), np.asarray(A.as_matrix())
    np.testing.assert_allclose(
        np.asarray(galerkin_2d(A, P).as_matrix()),
        matrix.T @ dense @ matrix / 4,
        rtol=0,
        atol=TOL["atol"] * 10,
    )


def test_interpolation_is_bilinear_for_the_laplacian():
    """For a constant diffusivity and $\\tau \\to \\infty$ (the Laplacian dominates) the
    black-box weights tend to bilinear interpolation (1/2 between two coarse points, 1/4 at
    centres): the collapsed stencils are those of the 1-D second difference."""
    A = system(np.ones((2, 9, 9)), 1e12)
    P = BlackBoxInterpolation.from_operator(A)
    np.testing.assert_allclose(np.asarray(P.vertical), 0.5, atol=1e-9)
    np.testing.assert_allclose(np.asarray(P.horizontal), 0.5, atol=1e-9)
    np.testing.assert_allclose(np.asarray(P.centre), 0.25, atol=1e-9)


# --- smoothers and the cycle -----------------------------------------------------------------


@pytest.mark.parametrize("smoother", ["red-black", "jacobi", "line"])
def test_post_smoother_is_the_energy_adjoint_and_the_cycle_is_symmetric(smoother):
    """On the 5-point fine level and a 9-point coarse level the post-sweep $\\tilde S$ is the
    energy adjoint of the pre-sweep $S$ ($A \\tilde S = S^\\top A$), and the V-cycle's error
    propagation (red-black) is self-adjoint in the energy inner product ($AE$ symmetric)."""
    rng = np.random.default_rng(5)
    hierarchy = _hierarchy(
        Multigrid2D(smoother=smoother, coarsest=16),
        system(random_diffusivity(rng, SHAPES[0]), 50.0),
    )
    for level in (0, 1):
        A = hierarchy.operators[level]
        dense = np.asarray(A.as_matrix())
        pre, post = (
            np.asarray(m)
            for m in _sweep_matrices(A, hierarchy.scalings[level], smoother)
        )
        np.testing.assert_allclose(
            dense @ post, pre.T @ dense, rtol=0, atol=TOL["atol"] * np.abs(dense).max()
        )
    if smoother != "red-black":
        return  # one cycle program suffices: the cycle's symmetry follows from the sweeps'
    E = np.asarray(_dense_error(hierarchy, 1))
    dense = np.asarray(hierarchy.operators[0].as_matrix())
    np.testing.assert_allclose(
        dense @ E, (dense @ E).T, rtol=0, atol=TOL["atol"] * np.abs(dense).max()
    )


@few_examples(6)
@hypothesis.given(
    shape=st.sampled_from(SHAPES),
    seed=st.integers(0, 2**31 - 1),
    log_tau=st.floats(-2, 4),
    cycle=st.sampled_from([("red-black", "V"), ("jacobi", "W"), ("line", "V")]),
)
def test_cycle_is_an_energy_contraction_property(shape, seed, log_tau, cycle):
    """$\\|E\\|_A < 1$ exactly (dense) for random diffusivities over four decades with jumps
    and zeros, every $\\tau$: V-cycles with point and line Gauss-Seidel, W-cycles with Jacobi."""
    smoother, kind = cycle
    rng = np.random.default_rng(seed)
    multigrid = Multigrid2D(smoother=smoother, cycle=kind, coarsest=16)
    A = system(random_diffusivity(rng, shape), 10.0**log_tau)
    E = np.asarray(_dense_error(_hierarchy(multigrid, A), multigrid.gamma))
    assert energy_norm_of(E, np.asarray(A.as_matrix())) < 1


# --- solves and convergence factors ----------------------------------------------------


@pytest.mark.parametrize("shape", [SHAPES[1], pytest.param(SHAPES[2], marks=thorough)])
def test_solve_matches_spsolve(shape):
    """The V(2,2) solve reaches its tolerance and agrees with SciPy's direct solve."""
    rng = np.random.default_rng(6)
    g, tau = random_diffusivity(rng, shape), 1e3
    f = rng.standard_normal(shape)
    solution = _solve(
        Multigrid2D(rtol=1e-12, coarsest=16), system(g, tau), jnp.asarray(f)
    )
    assert solution.result == Result.successful and 0 < int(solution.iterations) <= 20
    expected = spla.spsolve(reference_matrix(g, tau).tocsc(), f.ravel()).reshape(shape)
    np.testing.assert_allclose(
        np.asarray(solution.value),
        expected,
        rtol=0,
        atol=1e-10 * np.abs(expected).max(),
    )
    history = np.asarray(solution.history)[: int(solution.iterations) + 1]
    assert history[-1] <= 1e-12 and np.all(np.diff(history) < 0)


def test_solve_is_batched_by_vmap():
    """`jax.vmap` over images (systems and right-hand sides) gives the one-image solves."""
    rng = np.random.default_rng(7)
    shape = SHAPES[0]
    gs = np.stack([random_diffusivity(rng, shape) for _ in range(3)])
    fs = rng.standard_normal((3, *shape))
    multigrid = Multigrid2D(rtol=1e-10, coarsest=16)
    batched = _batched_solve(
        multigrid, jnp.asarray(gs), jnp.asarray(100.0), jnp.asarray(fs)
    )
    for g, f, x in zip(gs, fs, np.asarray(batched)):
        expected = spla.spsolve(reference_matrix(g, 100.0).tocsc(), f.ravel()).reshape(
            shape
        )
        np.testing.assert_allclose(
            x, expected, rtol=0, atol=1e-8 * np.abs(expected).max()
        )


def _unreachable():
    rng = np.random.default_rng(8)
    A = system(random_diffusivity(rng, SHAPES[0]), 100.0)
    f = jnp.asarray(rng.standard_normal(SHAPES[0]))
    return (
        Multigrid2D(rtol=1e-15, max_cycles=1, full_multigrid=False, coarsest=16),
        A,
        f,
    )


def test_solve_reports_max_steps_reached():
    """A tolerance out of reach in one cycle: `max_steps_reached` with `throw=False`."""
    multigrid, A, f = _unreachable()
    solution = _solve(multigrid, A, f)
    assert solution.result == Result.max_steps_reached and int(solution.iterations) == 1


@thorough
def test_solve_raises_when_the_tolerance_is_missed():
    """The same solve with `throw=True` (the default) raises the result's message."""
    multigrid, A, f = _unreachable()
    with pytest.raises(Exception, match="did not reach its tolerance"):
        jax.block_until_ready(multigrid.solve(A, f).value)


def piecewise_image(size: int, seed: int) -> np.ndarray:
    """A synthetic photograph: discs and rectangles of random grey values on a smooth ramp,
    with Gaussian noise (standard deviation 0.1)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size] / size
    u = 0.3 * rows + 0.2 * cols
    for _ in range(6):
        r, c, radius = rng.uniform(0, 1, 3) * (1, 1, 0.3)
        u = np.where(
            (rows - r) ** 2 + (cols - c) ** 2 < radius**2, rng.uniform(0, 1), u
        )
    return u + 0.1 * rng.standard_normal((size, size))


def isotropic_diffusivity(u: np.ndarray, lam: float) -> np.ndarray:
    """Perona-Malik $g = 1/(1 + |\\nabla u|^2/\\lambda^2)$ at the pixels (central differences),
    averaged onto the edges (the padded `(2, H, W)` layout)."""
    gy, gx = np.gradient(u)
    pixel = 1 / (1 + (gy**2 + gx**2) / lam**2)
    g = np.zeros((2, *u.shape))
    g[0, :-1] = (pixel[:-1] + pixel[1:]) / 2
    g[1, :, :-1] = (pixel[:, :-1] + pixel[:, 1:]) / 2
    return g


@jit
def _factor(multigrid, g, tau, e):
    """The energy-norm factor of `multigrid`'s cycle after 15 power iterations
    (`energy_power_iteration_2d`)."""
    A = _assemble(g, tau)
    hierarchy = multigrid.hierarchy(A)
    return energy_power_iteration_2d(
        lambda e: error_propagation_2d(hierarchy, e), A, e, 15
    )[-1]


FACTOR_SIZES = (48, pytest.param(256, marks=thorough))


@pytest.mark.parametrize("size", FACTOR_SIZES)
def test_convergence_factors(size):
    """V(2,2) energy-norm factors at tau ||grad||^2 = 1e4 for a noisy piecewise-smooth image
    (pre-smoothed by 3 x 3 box averages, lambda the 30% quantile of |grad u|, so g spans
    decades): point Gauss-Seidel <= 0.1 for a constant diffusivity and <= 0.2 for the
    isotropic Perona-Malik diffusivity (pixel g averaged onto the edges); for the per-edge
    diffusivity `Frozen(PeronaMalik, grad u)`, anisotropic along the edges, line Gauss-Seidel
    <= 0.3 and point Gauss-Seidel at least twice that (the reason for lines)."""
    rng = np.random.default_rng(9)
    e = jnp.asarray(rng.standard_normal((size, size)))
    tau = 1e4 / 8
    point, line = Multigrid2D(), Multigrid2D(smoother="line")
    assert float(_factor(point, jnp.ones((2, size, size)), tau, e)) <= 0.1
    u = piecewise_image(size, 0)
    smoothed = (
        sum(np.roll(np.roll(u, a, 0), b, 1) for a in (-1, 0, 1) for b in (-1, 0, 1)) / 9
    )
    lam = float(np.quantile(np.hypot(*np.gradient(smoothed)), 0.3))
    g = isotropic_diffusivity(smoothed, lam)
    assert g.max() / g[g > 0].min() > 100
    assert float(_factor(point, jnp.asarray(g), tau, e)) <= 0.2
    op = Gradient((size, size))
    edges = np.asarray(Frozen(PeronaMalik(lam), op(jnp.asarray(smoothed))).values)
    by_lines = float(_factor(line, jnp.asarray(edges), tau, e))
    assert by_lines <= 0.3
    assert float(_factor(point, jnp.asarray(edges), tau, e)) >= 2 * by_lines


def test_full_multigrid_start_is_close():
    """The full-multigrid start of a constant-coefficient system is within a few percent
    of the solution (relative residual), and a cycle from it reduces the residual."""
    rng = np.random.default_rng(10)
    A = system(np.ones((2, *SHAPES[1])), 100.0)
    hierarchy = _hierarchy(Multigrid2D(coarsest=16), A)
    f = jnp.asarray(rng.standard_normal(SHAPES[1]))
    x = jit(full_multigrid_2d)(hierarchy, f)
    first = float(jnp.linalg.norm(f - A(x)) / jnp.linalg.norm(f))
    second = float(
        jnp.linalg.norm(f - A(jit(multigrid_cycle_2d)(hierarchy, x, f)))
        / jnp.linalg.norm(f)
    )
    assert first < 0.05 and second < 0.2 * first


def test_semi_implicit_flux_system():
    """The system of `Frozen(PeronaMalik, grad u)` (the semi-implicit step) is assembled
    from the operator itself: it equals the SciPy matrix of the same frozen diffusivities."""
    rng = np.random.default_rng(11)
    op = Gradient(SHAPES[1])
    u = jnp.asarray(rng.standard_normal(SHAPES[1]))
    flux = Frozen(PeronaMalik(0.5), op(u))
    A = diffusion_stencil_2d(op, flux, 3.0)
    S = reference_matrix(np.asarray(flux.values), 3.0)
    np.testing.assert_allclose(
        np.asarray(A.as_matrix()), S.toarray(), rtol=0, atol=TOL["atol"] * 100
    )
    linear = diffusion_stencil_2d(op, Linear(2.0), 3.0)
    S = reference_matrix(np.full((2, *SHAPES[1]), 2.0), 3.0)
    np.testing.assert_allclose(
        np.asarray(linear.as_matrix()), S.toarray(), rtol=0, atol=TOL["atol"] * 100
    )


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"smoother": "sor"}, "`smoother` must be one of"),
        ({"cycle": "F"}, "`cycle` must be 'V' or 'W'"),
        ({"weight": 1.0}, "`weight` must lie in"),
        ({"pre_smoothing": 0, "post_smoothing": 0}, "at least 1"),
        ({"coarsest": 10**5}, "`coarsest` must be at most"),
        ({"coarsest": 0}, "`coarsest` must be at least 1"),
        ({"rtol": 2.0}, "`rtol` must lie in"),
    ],
)
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Multigrid2D(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="`coefficients` must have shape"):
        StencilField(jnp.zeros((5, 4, 4)))
    with pytest.raises(ValueError, match="first-order Gradient"):
        diffusion_stencil_2d(Gradient((8, 8), boundary="periodic"), Linear(1.0), 1.0)
    with pytest.raises(ValueError, match="first-order Gradient"):
        diffusion_stencil_2d(Gradient((8, 8), order=2), Linear(1.0), 1.0)
    with pytest.raises(TypeError, match="freeze a nonlinear flux"):
        diffusion_stencil_2d(Gradient((8, 8)), PeronaMalik(1.0), 1.0)
    with pytest.raises(TypeError, match="jaxpde.Gradient"):
        diffusion_stencil_2d(Derivative(1, 4), Linear(1.0), 1.0)
    A = system(np.ones((2, *SHAPES[0])), 1.0)
    with pytest.raises(ValueError, match="`f` must have shape"):
        Multigrid2D().solve(A, jnp.zeros((4, 4)))
    with pytest.raises(TypeError, match="`A` must be a StencilField"):
        Multigrid2D().hierarchy(Derivative(1, 4))


# --- the 2-D multigrid U-net -----------------------------------------------------------


@jit
def _unet_difference(multigrid, A, x, f):
    """The relative difference of the U-net initialised from `multigrid` and its V-cycle."""
    net = MultigridUNet2D.from_multigrid(multigrid, A)
    reference = multigrid_cycle_2d(multigrid.hierarchy(A), x, f)
    return jnp.linalg.norm(net(A, x, f) - reference) / jnp.linalg.norm(reference)


@pytest.mark.parametrize(
    "smoother", ["red-black", pytest.param("jacobi", marks=thorough)]
)
def test_unet_reproduces_the_v_cycle(smoother):
    """`MultigridUNet2D.from_multigrid` computes the V-cycle (relative difference <= 1e-12)."""
    rng = np.random.default_rng(12)
    A = system(random_diffusivity(rng, SHAPES[1]), 300.0)
    x, f = (jnp.asarray(rng.standard_normal(SHAPES[1])) for _ in range(2))
    multigrid = Multigrid2D(smoother=smoother, coarsest=16)
    assert float(_unet_difference(multigrid, A, x, f)) <= 1e-12


@jit
def _unet_error(net, A):
    shape = A.shape
    n = shape[0] * shape[1]
    basis = jnp.eye(n).reshape(n, *shape)
    zero = jnp.zeros(shape)
    return jax.vmap(lambda e: net(A, e, zero).reshape(-1))(basis).T


def test_unet_with_random_parameters_contracts():
    """Random sweep weights and interpolation offsets: still $\\|E\\|_A < 1$ (dense)."""
    rng = np.random.default_rng(13)
    A = system(random_diffusivity(rng, SHAPES[1]), 300.0)
    net = MultigridUNet2D(SHAPES[1], multigrid=Multigrid2D(coarsest=16))
    leaves, treedef = jax.tree.flatten(net)
    net = jax.tree.unflatten(
        treedef, [leaf + rng.normal(0, 2, leaf.shape) for leaf in leaves]
    )
    assert (
        energy_norm_of(np.asarray(_unet_error(net, A)), np.asarray(A.as_matrix())) < 1
    )


def _perona_malik_system(rng: np.random.Generator, shape, tau: float):
    r"""The frozen Perona-Malik system of a noisy two-region image: $g = 1/(1 + |\partial u|^2/
    \lambda^2)$ on every edge, $\lambda$ a tenth of the contrast (small across the region boundary)."""
    height, width = shape
    rows, cols = np.mgrid[:height, :width]
    u = (rows + 0.5 * cols > 0.6 * height).astype(float) + 0.05 * rng.standard_normal(
        shape
    )
    differences = np.zeros((2, height, width))
    differences[0, :-1] = np.diff(u, axis=0)
    differences[1, :, :-1] = np.diff(u, axis=1)
    return system(1 / (1 + (differences / 0.1) ** 2), tau)


# Adam with a smaller rate on the interpolation offsets: across the weak couplings of a
# Perona-Malik system the energy error is far more sensitive to them than to the logits.
_OPTIMISER = optax.multi_transform(
    {"weights": optax.adam(5e-2), "offsets": optax.adam(1e-3)},
    lambda net: eqx.tree_at(
        lambda n: (n.pre_logits, n.post_logits, n.transfer_offsets),
        net,
        ("weights", "weights", "offsets"),
    ),
)
STEPS = 15


@jit
def _training_step(net, state, A, dense, f):
    r"""One Adam step on the mean squared relative energy error after one cycle from $x = 0$,
    $\|x_1 - x^*\|_A^2 / \|x^*\|_A^2$ over the right-hand sides `f`; returns the loss before it."""

    def loss(net):
        def one(f):
            solution = jnp.linalg.solve(dense, f.reshape(-1))
            error = net(A, jnp.zeros_like(f), f).reshape(-1) - solution
            return (error @ dense @ error) / (solution @ dense @ solution)

        return jnp.mean(jax.vmap(one)(f))

    value, grads = eqx.filter_value_and_grad(loss)(net)
    updates, state = _OPTIMISER.update(grads, state, net)
    return eqx.apply_updates(net, updates), state, value


def test_trained_unet_contracts_within_the_certified_parameters():
    r"""Adam on the energy error of one cycle for a fixed Perona-Malik system lowers the
    loss; the trained net still contracts ($\|E\|_A < 1$, dense), and its parameters stay
    where `multigrid-2d-contraction` samples them (logits within three of the claim's
    deviations of the V-cycle's, offsets within three of theirs, $\theta$ strictly inside
    $(0, 1)$ in float64)."""
    from jaxpde.claims.multigrid2d import LOGIT_SCALE, OFFSET_SCALE

    rng = np.random.default_rng(14)
    A = _perona_malik_system(rng, SHAPES[1], 300.0)
    dense = A.as_matrix()
    f = jnp.asarray(rng.standard_normal((8, *SHAPES[1])))
    start = MultigridUNet2D(SHAPES[1], multigrid=Multigrid2D(coarsest=16))
    net, state, losses = start, _OPTIMISER.init(eqx.filter(start, eqx.is_array)), []
    for _ in range(STEPS):
        net, state, value = _training_step(net, state, A, dense, f)
        losses.append(float(value))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0]
    before, after = (
        energy_norm_of(np.asarray(_unet_error(n, A)), np.asarray(dense))
        for n in (start, net)
    )
    assert after < min(before, 1)
    logits = np.concatenate([np.ravel(net.pre_logits), np.ravel(net.post_logits)])
    initial = np.concatenate([np.ravel(start.pre_logits), np.ravel(start.post_logits)])
    assert np.max(np.abs(logits - initial)) <= 3 * LOGIT_SCALE
    assert np.max(np.abs(logits)) < 30  # sigmoid(30) = 1 - 1e-13: theta < 1 in float64
    assert np.max(np.abs(np.asarray(net.transfer_offsets))) <= 3 * OFFSET_SCALE


def test_unet_bad_inputs():
    with pytest.raises(ValueError, match="cycle='V'"):
        MultigridUNet2D(SHAPES[0], multigrid=Multigrid2D(cycle="W"))
    with pytest.raises(ValueError, match="no coarse level"):
        MultigridUNet2D((4, 4), multigrid=Multigrid2D(coarsest=64))


# --- the semi-implicit scheme solved by 2-D multigrid -------------------------------------


def test_semi_implicit_scheme_with_image_multigrid():
    """`SemiImplicitScheme(Gradient, flux, tau, multigrid=Multigrid2D())` solves the step
    $(I + \\tau\\nabla^\\top G(u)\\nabla)v = u$: the dense NumPy solve of the same system, Euclidean
    stable, and differentiable like the conjugate-gradient scheme."""
    rng = np.random.default_rng(5)
    op, flux, tau = Gradient(SHAPES[2]), PeronaMalik(0.3), 50.0
    u = jnp.asarray(rng.standard_normal(SHAPES[2]))
    scheme = SemiImplicitScheme(op, flux, tau, multigrid=Multigrid2D(coarsest=16))
    solution = scheme.solve_step(u)
    assert solution.result == Result.successful and int(solution.iterations) >= 1
    matrix = np.asarray(op.as_matrix())
    g = np.asarray(flux.diffusivity(op(u) ** 2)).ravel()
    system = np.eye(u.size) + tau * matrix.T @ (g[:, None] * matrix)
    expected = np.linalg.solve(system, np.asarray(u).ravel()).reshape(u.shape)
    np.testing.assert_allclose(np.asarray(solution.value), expected, rtol=0, atol=1e-9 * np.abs(expected).max())
    assert float(jnp.linalg.norm(solution.value)) <= float(jnp.linalg.norm(u))
    conjugate_gradients = SemiImplicitScheme(op, flux, tau)
    grads = [jax.grad(lambda w, s=s: jnp.sum(s.step(w) ** 3))(u) for s in (scheme, conjugate_gradients)]
    np.testing.assert_allclose(np.asarray(grads[0]), np.asarray(grads[1]), rtol=0, atol=1e-7 * float(jnp.abs(grads[1]).max()))


def test_semi_implicit_scheme_refuses_an_operator_its_multigrid_cannot_take():
    pm = PeronaMalik(1.0)
    with pytest.raises(ValueError, match="first-order Gradient"):
        SemiImplicitScheme(Gradient(SHAPES[0], boundary="periodic"), pm, 1.0, multigrid=Multigrid2D())
    with pytest.raises(TypeError, match="jaxpde.Gradient"):
        SemiImplicitScheme(Derivative(1, 16), pm, 1.0, multigrid=Multigrid2D())
    with pytest.raises(TypeError, match="single-channel"):
        SemiImplicitScheme(Gradient(SHAPES[0]), pm, 1.0, multigrid=Multigrid())
