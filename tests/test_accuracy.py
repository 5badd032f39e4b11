"""Convergence of every scheme to the solution of the semi-discrete PDE du/dt = -K^T Phi(K u).

Linear flux, periodic D_1: each Fourier mode decays exactly as exp(-t |symbol|^2),
|symbol|^2 = 4 sin^2(theta / 2) / h^2. Perona-Malik: a fine explicit solution.

All schemes of one problem run in one compiled program, with step sizes and step
counts as inputs, so that refining the steps compiles nothing new.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from jaxpde import Derivative, fluxes, stable_step_size

from .helpers import ALL_SCHEMES, derivative_taps, stencil_matrix

N = 64
H = 1 / N
# The variants that `_run` evolves, in this order, and the registered scheme of each. RKC,
# the one registered scheme not here, has its convergence orders in tests/test_rkc.py.
VARIANTS = {
    "explicit": "explicit",
    "fed": "fed",
    "fsi-frozen": "fsi",
    "fsi-unfrozen": "fsi",
    "semi-implicit": "semi-implicit",
    "implicit": "implicit",
}
NAMES = tuple(VARIANTS)
ELSEWHERE = {"rkc"}


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=2)  # one per problem: refining recompiles nothing
def _evolve(schemes, u0, counts):
    """Apply each scheme counts[i] times to u0 (dynamic counts: one compilation)."""
    return [jax.lax.fori_loop(0, count, lambda _, u, s=scheme: s(u), u0) for scheme, count in zip(schemes, counts)]


def _run(op, flux, u0, *, steps, tau, cycles, cycle_tau, cycle_length, implicit_steps, implicit_tau, solver):
    """Explicit steps, FED and FSI cycles (frozen and unfrozen), semi-implicit and
    implicit steps, each with its own count and step size, in one compiled program."""
    scheme = {name: ALL_SCHEMES[VARIANTS[name]] for name in NAMES}
    schemes = (
        scheme["explicit"](op, flux, tau),
        scheme["fed"](op, flux, cycle_tau, cycle_length=cycle_length),
        scheme["fsi-frozen"](op, flux, cycle_tau, cycle_length=cycle_length),
        scheme["fsi-unfrozen"](op, flux, cycle_tau, cycle_length=cycle_length, frozen=False),
        scheme["semi-implicit"](op, flux, implicit_tau),
        scheme["implicit"](op, flux, implicit_tau, solver=solver),
    )
    counts = jnp.asarray([steps, cycles, cycles, cycles, implicit_steps, implicit_steps])
    return dict(zip(NAMES, (np.asarray(u) for u in _evolve(schemes, u0, counts))))


def _to_time(t_end, *, steps, cycles, cycle_length, implicit_steps, **options):
    """Step sizes that reach t_end with these counts (a cycle advances tau (n^2 + n) / 3)."""
    return dict(
        steps=steps, tau=t_end / steps, cycles=cycles, cycle_length=cycle_length,
        cycle_tau=3 * t_end / (cycles * (cycle_length**2 + cycle_length)),
        implicit_steps=implicit_steps, implicit_tau=t_end / implicit_steps, **options,
    )


def test_every_registered_scheme_is_covered():
    assert set(VARIANTS.values()) | ELSEWHERE == set(ALL_SCHEMES)
    assert not set(VARIANTS.values()) & ELSEWHERE


def _observed_order(steps, errors) -> float:
    """Minus the slope of log(error) against log(number of steps)."""
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


def test_linear_diffusion_of_fourier_modes():
    op = Derivative(1, N, h=H, boundary="periodic")
    flux = fluxes.Linear(1.0)
    bound = float(stable_step_size(op, flux))  # h^2 / 2
    x = np.arange(N) * H
    modes = [(3, 1.0, np.cos), (5, 0.5, np.sin)]
    t_end = 2e-3
    u0 = sum(amplitude * f(2 * np.pi * q * x) for q, amplitude, f in modes)
    rates = [(2 * np.sin(np.pi * q / N)) ** 2 / H**2 for q, _, _ in modes]
    exact = sum(a * f(2 * np.pi * q * x) * np.exp(-t_end * r) for (q, a, f), r in zip(modes, rates))
    matrix = stencil_matrix(derivative_taps(1, H), N, "periodic")
    np.testing.assert_allclose(scipy.linalg.expm(-t_end * matrix.T @ matrix) @ u0, exact, atol=1e-12)
    scale = np.max(np.abs(exact))

    # Step counts for explicit and (semi-)implicit steps; cycles of length 7 (at one
    # cycle the step-size limit is below the bound).
    steps, cycles, length = [40, 80, 160, 320], [1, 2, 4, 8], 7
    assert t_end / steps[0] <= bound and 3 * t_end / (cycles[0] * (length**2 + length)) <= bound
    errors = {name: [] for name in NAMES}
    for count, cycle_count in zip(steps, cycles):
        # Fixed-point iteration: tau ||K||^2 <= 0.82 < 1 for all these steps.
        plan = _to_time(t_end, steps=count, cycles=cycle_count, cycle_length=length, implicit_steps=count,
                        solver="fixed-point")
        states = _run(op, flux, jnp.asarray(u0), **plan)
        for name, state in states.items():
            errors[name].append(np.max(np.abs(state - exact)) / scale)
        np.testing.assert_allclose(states["fsi-frozen"], states["fsi-unfrozen"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(states["fsi-frozen"], states["fed"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(states["implicit"], states["semi-implicit"], rtol=0, atol=1e-9)
    for name in ("explicit", "semi-implicit", "implicit"):
        assert 0.9 <= _observed_order(steps, errors[name]) <= 1.1, (name, errors[name])
        assert errors[name][-1] < 1e-2, (name, errors[name])
    for name in ("fed", "fsi-frozen", "fsi-unfrozen"):
        # At least first order in the cycle time t_end / cycles.
        assert _observed_order(cycles, errors[name]) >= 0.9, (name, errors[name])
        assert errors[name][-1] < 3e-2, (name, errors[name])
    for name in NAMES:
        assert all(np.diff(errors[name]) < 0), (name, errors[name])


def test_perona_malik_converges_to_a_fine_explicit_solution():
    op = Derivative(1, N, h=H)
    flux = fluxes.PeronaMalik(20.0)
    bound = float(stable_step_size(op, flux))
    x = (np.arange(N) + 0.5) * H
    # An edge with slopes up to about lambda = 20, where the flux peaks (g between 1/2 and
    # 1), and a ripple. (Much steeper edges diffuse backwards and form staircases, whose
    # positions depend on the scheme: no convergence to measure.)
    u0 = jnp.asarray(np.tanh((x - 0.5) / 0.05) + 0.1 * np.sin(2 * np.pi * 7 * x))
    t_end = 40 * bound
    length = 8
    # The reference: 64 x finer explicit steps (the other schemes idle: zero counts).
    fine = _to_time(t_end, steps=40 * 64, cycles=1, cycle_length=length, implicit_steps=1,
                    solver="lagged-diffusivity")
    reference = _run(op, flux, u0, **(fine | {"cycles": 0, "cycle_tau": bound, "implicit_steps": 0}))["explicit"]
    scale = np.max(np.abs(reference))

    # Explicit steps of 1, 1/2, 1/4, 1/8 of the bound; (semi-)implicit steps from 8 x the
    # bound; 2 to 16 cycles of length 8 (step-size limit below the bound).
    errors = {name: [] for name in NAMES}
    for k in range(4):
        plan = _to_time(t_end, steps=40 * 2**k, cycles=2 * 2**k, cycle_length=length, implicit_steps=5 * 2**k,
                        solver="lagged-diffusivity")
        assert plan["cycle_tau"] <= bound
        states = _run(op, flux, u0, **plan)
        for name, state in states.items():
            errors[name].append(np.max(np.abs(state - reference)) / scale)
    for name in NAMES:
        assert all(np.diff(errors[name]) < 0), (name, errors[name])
        assert errors[name][-1] < 1e-2, (name, errors[name])
