import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest

from jaxpde import Derivative, DiffusionBlock, Stencil, fluxes, stable_step_size, verify
from jaxpde.testing import blocks, signals
from jaxpde.verify.lipschitz import nonexpansive_step_size

from .helpers import few_examples


@eqx.filter_jit  # one program per block structure (op by op, forward mode compiles dozens)
def _jacobian(block, u):
    return jax.jacfwd(block)(u)


def dense_jacobian(block, u) -> np.ndarray:
    """Independent reference: the Jacobian by forward mode, as a NumPy matrix."""
    size = int(np.prod(block.op.in_shape))
    jacobian = _jacobian(block, u)
    return np.asarray(jacobian, np.float64).reshape(size, size)


@few_examples(5)
@hypothesis.given(block=blocks(), data=st.data())
def test_jacobian_spectrum_lies_in_the_bound(block, data):
    u = data.draw(signals(block.op.in_shape))
    jacobian = dense_jacobian(block, u)
    # J = I - tau K^T diag(Phi') K is symmetric.
    np.testing.assert_allclose(jacobian, jacobian.T, atol=1e-12 * max(1.0, np.abs(jacobian).max()))
    low, high = (float(x) for x in block.flux.derivative_range())
    nu2 = float(block.op.norm_bound()) ** 2
    tau = float(block.tau)
    eigenvalues = np.linalg.eigvalsh((jacobian + jacobian.T) / 2)
    slack = 1e-9 * (1 + tau * nu2 * max(abs(low), abs(high)))
    assert eigenvalues.min() >= 1 - tau * high * nu2 - slack
    assert eigenvalues.max() <= 1 - tau * min(low, 0.0) * nu2 + slack
    bound = float(verify.block_lipschitz_bound(block))
    assert np.linalg.norm(jacobian, 2) <= bound * (1 + 1e-9)


def test_local_lipschitz_matches_the_jacobian_norm():
    op = Stencil(np.array([[[0.5, -1.0, 0.25]], [[1.0, 0.3, -0.7]]]), 24, boundary="dirichlet")
    flux = fluxes.PeronaMalik(0.7)
    block = DiffusionBlock(op, flux, stable_step_size(op, flux))
    u = jax.random.normal(jax.random.key(2), op.in_shape)
    sigma = np.linalg.norm(dense_jacobian(block, u), 2)
    local = verify.local_lipschitz(block, u, jax.random.key(0), iterations=300)
    assert float(local.lower) <= sigma * (1 + 1e-12)
    assert float(local.lower) >= sigma * (1 - 1e-4)  # converges like (sigma_2 / sigma_1)^(2k)
    assert local.direction.shape == op.in_shape


def test_bounds_for_monotone_and_nonmonotone_fluxes():
    op = Derivative(1, 32, boundary="periodic")
    for flux in (fluxes.Linear(3.0), fluxes.Charbonnier(0.5), fluxes.TotalVariation(0.2)):
        block = DiffusionBlock(op, flux, nonexpansive_step_size(op, flux))
        assert float(verify.block_lipschitz_bound(block)) == pytest.approx(1.0, abs=1e-12)
    pm = fluxes.PeronaMalik(1.0)
    block = DiffusionBlock(op, pm, stable_step_size(op, pm))
    # 1 - tau min(a, 0) ||K||^2 = 1 + 2/8 at tau = 2 / ||K||^2.
    assert float(verify.block_lipschitz_bound(block)) == pytest.approx(1.25, rel=1e-12)
    assert float(nonexpansive_step_size(block)) == pytest.approx(float(stable_step_size(op, pm)))
    two = verify.composition_lipschitz_bound([block, block])
    assert float(two) == pytest.approx(1.25**2, rel=1e-12)
    with pytest.raises(TypeError, match="blocks\\[1\\]"):
        verify.composition_lipschitz_bound([block, lambda u: u])
    with pytest.raises(ValueError, match="`blocks`"):
        verify.composition_lipschitz_bound([])
    with pytest.raises(ValueError, match="`flux`"):
        nonexpansive_step_size(op)
