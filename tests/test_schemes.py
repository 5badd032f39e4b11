import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpde import Derivative, DiffusionBlock, fluxes, stable_step_size
from jaxpde.schemes import ExplicitScheme, rollout

from .helpers import tolerance


def test_rollout_matches_a_python_loop():
    op = Derivative(2, 24, boundary="periodic")
    block = DiffusionBlock(op, fluxes.PeronaMalik(0.3), stable_step_size(op, fluxes.PeronaMalik(0.3)))
    u = jnp.asarray(np.random.default_rng(0).standard_normal(24))
    expected = u
    for _ in range(10):
        expected = block(expected)
    np.testing.assert_allclose(rollout(block, u, 10), expected, **tolerance(np.float64))
    final, path = rollout(block, u, 10, save_every=5)
    assert path.shape == (3, 24)
    np.testing.assert_allclose(path[0], u)
    np.testing.assert_allclose(path[-1], final)


def test_rollout_errors():
    block = DiffusionBlock(Derivative(1, 8), fluxes.Linear(), 0.1)
    with pytest.raises(ValueError, match="`num_steps` \\(10\\) must be a multiple of `save_every` \\(3\\)"):
        rollout(block, jnp.ones(8), 10, save_every=3)
    with pytest.raises(ValueError, match="`num_steps`"):
        rollout(block, jnp.ones(8), -1)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_exact_fourier_solution_for_linear_periodic_diffusion(dtype):
    """Linear flux, periodic D_1: the semi-discrete solution of du/dt = -D^T D u for a
    Fourier mode is exp(-t |2 sin(theta/2)|^2 / h^2) times the mode; the explicit scheme
    converges to it with order 1 in time."""
    n, h, t_end, q = 64, 1 / 64, 2e-3, 3
    op = Derivative(1, n, h=h, boundary="periodic")
    x = jnp.arange(n, dtype=dtype) * h
    u0 = jnp.cos(2 * jnp.pi * q * x)
    rate = (2 * np.sin(np.pi * q / n)) ** 2 / h**2
    exact = np.exp(-t_end * rate) * np.asarray(u0, np.float64)
    errors = []
    steps = [40, 80, 160]
    for count in steps:
        scheme = ExplicitScheme(op, fluxes.Linear(1.0), jnp.asarray(t_end / count, dtype))
        u = scheme.rollout(u0, count)
        assert u.dtype == dtype
        errors.append(float(np.max(np.abs(np.asarray(u, np.float64) - exact))))
    order = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert order == pytest.approx(-1.0, abs=0.1)


def test_solve_reaches_the_end_time_with_stable_steps():
    op = Derivative(1, 32, h=1 / 32)
    flux = fluxes.PeronaMalik(0.5)
    scheme = ExplicitScheme(op, flux)
    assert float(scheme.tau) == float(stable_step_size(op, flux))
    t_end = 7.3 * float(scheme.tau)
    assert scheme.default_steps(t_end) == 8
    u0 = jnp.asarray(np.random.default_rng(1).standard_normal(32))
    reference = rollout(DiffusionBlock(op, flux, t_end / 8), u0, 8)
    np.testing.assert_allclose(scheme.solve(u0, t_end), reference, **tolerance(np.float64))


def test_converges_to_a_fine_reference_for_perona_malik():
    op = Derivative(1, 48, h=1 / 48)
    flux = fluxes.PeronaMalik(2.0)
    u0 = jnp.where(jnp.arange(48) < 24, 0.0, 1.0) + 0.05 * jnp.sin(jnp.arange(48.0))
    t_end = 1e-3
    fine = ExplicitScheme(op, flux, 2 * float(stable_step_size(op, flux)) / 1000, allow_unstable=False)
    reference = fine.solve(u0, t_end)
    errors = []
    for fraction in (1.0, 0.5, 0.25):
        scheme = ExplicitScheme(op, flux, fraction * stable_step_size(op, flux))
        errors.append(float(jnp.max(jnp.abs(scheme.solve(u0, t_end) - reference))))
    assert errors[2] < errors[1] < errors[0]


def test_batched_rollout_with_vmap_and_no_retracing():
    op = Derivative(1, 16)
    scheme = ExplicitScheme(op, fluxes.Charbonnier(0.2))

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def run(scheme, batch):
        return jax.vmap(lambda u: scheme.rollout(u, 20))(batch)

    batch = jnp.asarray(np.random.default_rng(2).standard_normal((8, 16)))
    out = run(scheme, batch)
    run(scheme, batch + 1.0)  # same shapes: no second trace
    for row, u in zip(out, batch):
        np.testing.assert_allclose(row, scheme.rollout(u, 20), **tolerance(np.float64))


def test_unstable_scheme_is_refused():
    op = Derivative(1, 16)
    with pytest.raises(ValueError, match="stability bound"):
        ExplicitScheme(op, fluxes.Linear(), 1.5 * stable_step_size(op, fluxes.Linear()))
