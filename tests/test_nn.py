"""The networks of `jaxpde.nn`: stability by construction, agreement with the schemes,
implicit gradients, training."""

import equinox as eqx
import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxpde import Derivative, fluxes, stable_step_size
from jaxpde.nn import ExtrapolationNetwork, RecurrentImplicitBlock, flux_magnitudes
from jaxpde.schemes import FSIScheme, ImplicitScheme, Result

from .helpers import few_examples, signals, tolerance

N = 16
TOL = tolerance(np.float64)
# Gradients: central differences with step 1e-4 are accurate to about 1e-8 here, and the
# unrolled iteration and the implicit solve stop at 1000 units of roundoff.
GRADIENT_RTOL = 1e-6
# (boundary, channels, flux kind): one compiled program per configuration and model.
CONFIGS = {
    ExtrapolationNetwork: [("periodic", None, fluxes.PeronaMalik), ("neumann", 2, fluxes.TotalVariation)],
    RecurrentImplicitBlock: [("periodic", None, fluxes.PeronaMalik), ("dirichlet", None, fluxes.TotalVariation)],
}


def _l2(u) -> float:
    return float(np.linalg.norm(np.asarray(u)))


@eqx.filter_jit
def _apply(model, u):
    return model(u)


def _random_parameters(data, shape, count):
    """Kernels with entries in [-3, 3], flux parameters of either sign (the networks use
    their magnitudes) and step-size parameters theta, `count` of each."""
    kernels = data.draw(hnp.arrays(np.float64, (count, *shape), elements=st.floats(-3.0, 3.0)))
    magnitudes = data.draw(hnp.arrays(np.float64, count, elements=st.floats(0.05, 20.0)))
    signs = data.draw(hnp.arrays(np.float64, count, elements=st.sampled_from((-1.0, 1.0))))
    thetas = data.draw(hnp.arrays(np.float64, count, elements=st.one_of(st.just(40.0), st.floats(-8.0, 8.0))))
    return kernels, magnitudes * signs, thetas


def _with_flux_parameters(flux, values):
    return jax.tree.map(lambda x: jnp.asarray(values, x.dtype).reshape(x.shape), flux)


@pytest.mark.parametrize("boundary, channels, kind", CONFIGS[ExtrapolationNetwork])
@few_examples(6)
@hypothesis.given(data=st.data())
def test_extrapolation_network_is_stable_for_every_parameter(boundary, channels, kind, data):
    """||f(u)|| <= ||u|| for random stencils, flux parameters and step-size parameters."""
    net = ExtrapolationNetwork(
        N, num_cycles=2, cycle_length=3, channels=channels, boundary=boundary, flux=kind(1.0), key=jax.random.key(0)
    )
    kernels, parameters, thetas = _random_parameters(data, net.operators.kernel.shape[1:], 2)
    net = eqx.tree_at(
        lambda m: (m.operators.kernel, m.fluxes, m.thetas),
        net,
        (jnp.asarray(kernels), _with_flux_parameters(net.fluxes, parameters), jnp.asarray(thetas)),
    )
    u = data.draw(signals(net.in_shape))
    assert _l2(_apply(net, u)) <= _l2(u) * (1 + TOL["rtol"])
    assert np.all((np.asarray(net.step_fractions()) > 0) & (np.asarray(net.step_fractions()) <= 1))


@pytest.mark.parametrize("boundary, channels, kind", CONFIGS[RecurrentImplicitBlock])
@few_examples(6)
@hypothesis.given(data=st.data())
def test_recurrent_implicit_block_is_stable_for_every_parameter(boundary, channels, kind, data):
    """||v|| <= ||u|| and q < 1 for random stencils, flux parameters and theta."""
    block = RecurrentImplicitBlock(N, channels=channels, boundary=boundary, flux=kind(1.0), key=jax.random.key(0))
    kernels, parameters, thetas = _random_parameters(data, block.op.kernel.shape, 1)
    block = eqx.tree_at(
        lambda b: (b.op.kernel, b.flux, b.theta),
        block,
        (jnp.asarray(kernels[0]), _with_flux_parameters(block.flux, parameters[0]), jnp.asarray(thetas[0])),
    )
    u = data.draw(signals(block.in_shape))
    assert _l2(_apply(block, u)) <= _l2(u) * (1 + TOL["rtol"])
    assert float(block.contraction_factor()) <= block.rho * (1 + TOL["rtol"])


def _signal(seed: int = 0, shape=(N,)):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


@pytest.mark.parametrize(
    "order, boundary, flux, frozen, num_cycles, cycle_length",
    [(2, "periodic", fluxes.PeronaMalik(0.3), True, 2, 3), (1, "neumann", fluxes.Charbonnier(0.5), False, 1, 5)],
)
def test_cycles_equal_the_fsi_scheme(order, boundary, flux, frozen, num_cycles, cycle_length):
    """A network built from an FSI scheme runs its cycles (float64, to rounding)."""
    op = Derivative(order, N, h=0.5, boundary=boundary)
    bound = float(stable_step_size(op.stencil, flux))  # the stencil's bound, not the derivative's
    tau = 0.7 * bound
    scheme = FSIScheme(op, flux, tau, cycle_length=cycle_length, frozen=frozen)
    net = ExtrapolationNetwork.from_scheme(scheme, num_cycles=num_cycles)
    if frozen:
        taus, bounds, fractions = _step_sizes(net)
        np.testing.assert_allclose(taus, [tau] * num_cycles, **TOL)
        np.testing.assert_allclose(bounds, [bound] * num_cycles, **TOL)
        np.testing.assert_allclose(fractions, [0.7] * num_cycles, **TOL)
        assert float(net.block(-1).tau) == pytest.approx(tau, rel=TOL["rtol"])
    u = expected = _signal()
    for _ in range(num_cycles):
        expected = _apply(scheme, expected)
    np.testing.assert_allclose(_apply(net, u), expected, **TOL)


@eqx.filter_jit
def _step_sizes(net):
    return net.step_sizes(), net.stable_step_sizes(), net.step_fractions()


def test_from_scheme_refuses_a_step_above_the_stencil_bound():
    op = Derivative(1, N)  # neumann: ||D_1|| = 2 cos(pi / 2n) < 2 = the symbol's bound
    scheme = FSIScheme(op, fluxes.PeronaMalik(1.0), cycle_length=3)
    with pytest.raises(ValueError, match="scheme.tau"):
        ExtrapolationNetwork.from_scheme(scheme)


def _recurrent_block(lam: float = 1.0, **kwargs):
    """The configuration shared by the recurrent tests (one compiled program each)."""
    return RecurrentImplicitBlock(N, flux=fluxes.PeronaMalik(lam), **kwargs)


def test_recurrent_block_solves_the_implicit_step():
    block = _recurrent_block(0.5, step_fraction=0.8, key=jax.random.key(2))
    u = _signal()
    solution = eqx.filter_jit(lambda b, u: b.solve(u))(block, u)
    assert solution.result == Result.successful
    assert 0 < int(solution.iterations) < block.max_iterations
    matrix = np.asarray(block.op.as_matrix())
    v, tau = np.asarray(solution.value), float(block.step_size())
    s = matrix @ v
    residual = v - np.asarray(u) + tau * matrix.T @ (s / (1 + s**2 / 0.5**2))
    assert np.linalg.norm(residual) <= TOL["rtol"] * _l2(u)
    assert float(block.contraction_factor()) == pytest.approx(0.9 * 0.8, rel=TOL["rtol"])


def test_recurrent_block_from_scheme_computes_its_steps():
    op = Derivative(2, N, boundary="periodic")  # ||D_2||^2 = 16
    scheme = ImplicitScheme(op, fluxes.PeronaMalik(1.0), 0.3 / 16, solver="fixed-point")
    block = RecurrentImplicitBlock.from_scheme(scheme)
    assert float(block.step_size()) == pytest.approx(0.3 / 16, rel=TOL["rtol"])
    assert float(block.contraction_factor()) == pytest.approx(0.3, rel=TOL["rtol"])
    u = _signal()
    assert _l2(_apply(block, u) - _apply(scheme, u)) <= TOL["rtol"] * _l2(u)


@jax.jit
def _add(x, delta):
    return x + delta


def _unrolled(block: RecurrentImplicitBlock, u, iterations: int = 300):
    """The reference: plain fixed-point iterations, differentiated by backpropagation."""
    op, flux, tau = block.op, flux_magnitudes(block.flux), block.step_size()

    def step(v, _):
        return u - tau * op.T(flux(op(v))), None

    return jax.lax.scan(step, u, length=iterations)[0]


def _denoising_data():
    rng = np.random.default_rng(7)
    grid = np.arange(N)
    clean = np.stack([np.where(grid < rng.integers(3, N - 3), -1.0, 1.0) * rng.uniform(0.5, 2) for _ in range(8)])
    noisy = clean + 0.3 * rng.standard_normal(clean.shape)
    return jnp.asarray(noisy), jnp.asarray(clean)


def _loss(model_and_input, clean, apply=None):
    model, noisy = model_and_input
    apply = (lambda m, u: m(u)) if apply is None else apply
    return jnp.mean((jax.vmap(lambda u: apply(model, u))(noisy) - clean) ** 2)


# Shared by the training and the gradient tests: gradients w.r.t. the model and the input.
_loss_and_grad = eqx.filter_jit(eqx.filter_value_and_grad(_loss))


def test_implicit_gradients_match_finite_differences_and_unrolled_backprop():
    """The IFT gradient w.r.t. the input, the kernel, lambda and theta agrees with
    backpropagation through 300 fixed-point iterations and with central differences."""
    block = _recurrent_block(0.7, step_fraction=0.6, key=jax.random.key(3))
    noisy, clean = _denoising_data()
    _, implicit = _loss_and_grad((block, noisy), clean)
    unrolled = eqx.filter_jit(eqx.filter_grad(_loss))((block, noisy), clean, _unrolled)

    def leaves(grads):
        model, x = grads
        return [x, model.op.kernel, model.flux.lam, model.theta]

    def shifted(leaf, delta):
        model, x = eqx.tree_at(lambda t: leaves(t)[leaf], (block, noisy), replace_fn=lambda p: _add(p, delta))
        return float(_loss_and_grad((model, x), clean)[0])

    rng = np.random.default_rng(6)
    h = 1e-4
    for leaf, (a, b) in enumerate(zip(leaves(implicit), leaves(unrolled), strict=True)):
        a, b = np.asarray(a), np.asarray(b)
        scale = np.linalg.norm(b)
        assert scale > 0
        assert np.linalg.norm(a - b) <= GRADIENT_RTOL * scale
        direction = rng.standard_normal(a.shape)
        direction = direction / np.linalg.norm(direction)
        difference = (shifted(leaf, h * direction) - shifted(leaf, -h * direction)) / (2 * h)
        assert difference == pytest.approx(np.sum(a * direction), rel=GRADIENT_RTOL, abs=GRADIENT_RTOL * scale)


_OPTIMISER = optax.adam(5e-2)


@eqx.filter_jit
def _adam_update(grads, state, model):
    updates, state = _OPTIMISER.update(grads, state, model)
    return eqx.apply_updates(model, updates), state


@pytest.mark.parametrize(
    "make",
    [
        lambda: ExtrapolationNetwork(N, num_cycles=2, cycle_length=3, flux=fluxes.PeronaMalik(1.0), key=jax.random.key(8)),
        lambda: _recurrent_block(key=jax.random.key(9)),
    ],
    ids=["extrapolation", "recurrent"],
)
def test_training_lowers_the_loss_and_keeps_stability(make):
    """30 Adam steps on a small denoising batch; afterwards the step-size
    parametrisation still holds and every sample is Euclidean stable."""
    model = make()
    noisy, clean = _denoising_data()
    state = _OPTIMISER.init(eqx.filter(model, eqx.is_inexact_array))
    values = []
    for _ in range(30):
        value, (grads, _) = _loss_and_grad((model, noisy), clean)
        model, state = _adam_update(grads, state, model)
        values.append(float(value))
    final = float(_loss_and_grad((model, noisy), clean)[0])
    assert final < 0.85 * values[0]
    if isinstance(model, ExtrapolationNetwork):
        assert np.all(np.asarray(model.step_fractions()) < 1)
    else:
        assert float(model.contraction_factor()) < 1
    outputs = np.stack([np.asarray(_apply(model, u)) for u in noisy])  # one sample at a time
    assert np.mean((outputs - np.asarray(clean)) ** 2) == pytest.approx(final, rel=TOL["rtol"])  # = the vmapped loss
    for u, v in zip(noisy, outputs, strict=True):
        assert _l2(v) <= _l2(u) * (1 + TOL["rtol"])


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ExtrapolationNetwork(N, num_cycles=1, cycle_length=0, key=jax.random.key(0)), "cycle_length"),
        (lambda: ExtrapolationNetwork(N, num_cycles=0, cycle_length=2, key=jax.random.key(0)), "num_cycles"),
        (lambda: ExtrapolationNetwork(N, num_cycles=1, cycle_length=2, step_fraction=1.0, key=jax.random.key(0)), "step_fraction"),
        (lambda: ExtrapolationNetwork(N, num_cycles=1, cycle_length=2, boundary="reflect", key=jax.random.key(0)), "boundary"),
        (lambda: ExtrapolationNetwork(2, num_cycles=1, cycle_length=2, boundary="neumann", key=jax.random.key(0)), "kernel_size"),
        (lambda: ExtrapolationNetwork(N, num_cycles=1, cycle_length=2, channels=0, key=jax.random.key(0)), "channels"),
        (lambda: RecurrentImplicitBlock(N, rho=1.0, key=jax.random.key(0)), "rho"),
        (lambda: RecurrentImplicitBlock(N, rho=0.0, key=jax.random.key(0)), "rho"),
        (lambda: RecurrentImplicitBlock(N, kernel_size=0, key=jax.random.key(0)), "kernel_size"),
        (lambda: RecurrentImplicitBlock(N, rtol=2.0, key=jax.random.key(0)), "rtol"),
        (
            lambda: RecurrentImplicitBlock.from_scheme(ImplicitScheme(Derivative(1, N), fluxes.PeronaMalik(1.0), 0.24)),
            "contraction factor",
        ),
    ],
)
def test_bad_configuration_is_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_flux_must_be_a_flux_and_inputs_must_have_the_sample_shape():
    with pytest.raises(TypeError, match="flux"):
        ExtrapolationNetwork(N, num_cycles=1, cycle_length=2, flux=jnp.tanh, key=jax.random.key(0))
    net = ExtrapolationNetwork(N, num_cycles=2, cycle_length=3, key=jax.random.key(0))
    block = _recurrent_block(key=jax.random.key(0))
    for model in (net, block):
        with pytest.raises(ValueError, match=r"batch with `jax.vmap`"):
            model(jnp.ones((2, N)))
        with pytest.raises(ValueError, match=r"\(16,\)"):
            jax.vmap(model)(jnp.ones((2, N + 1)))


def test_radial_basis_flux_is_used_with_its_signed_parameters():
    flux = fluxes.RadialBasisFlux(jnp.array([-3.0, 2.0]), -1.0)
    assert flux_magnitudes(flux) is flux
    negative = eqx.tree_at(lambda f: f.lam, fluxes.PeronaMalik(2.0), jnp.asarray(-2.0))
    assert float(flux_magnitudes(negative).lam) == 2.0
