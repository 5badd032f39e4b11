"""Shared test helpers: tolerances, comparisons, independent references, strategies."""

import hypothesis
import jax
import numpy as np
import pytest

import jaxpde
import jaxpde.testing
from jaxpde import fluxes

# The dense reference matrices: one independent construction (NumPy loops over the taps
# and the boundary rule), shared with the claims and the benchmarks.
from jaxpde.reference import (  # noqa: F401
    band_matrix,
    derivative_taps,
    stencil_matrix,
    stencil_sparse_matrix,
)

# Registries that generic tests parametrize over.
ALL_BOUNDARIES = jaxpde.BOUNDARIES
ALL_FLUXES = fluxes.FLUXES
ALL_SCHEMES = jaxpde.schemes.SCHEMES  # short name -> scheme class
NONMONOTONE_FLUXES = (fluxes.PeronaMalik, fluxes.ExponentialPeronaMalik, fluxes.Weickert)
SIZES = jaxpde.testing.SIZES  # a small set, to limit recompilation


def example_scheme(name: str, op, flux):
    """A small instance of the registered scheme `name` (`ALL_SCHEMES`) for `op` and `flux`:
    the explicit schemes at their stability bound, cycles of 3 steps, RKC with 3 stages, the
    (semi-)implicit step at 5 times the explicit bound. A `KeyError` for a scheme registered
    without an example here."""
    bound = float(jaxpde.stable_step_size(op, flux))
    cls = ALL_SCHEMES[name]
    make = {
        "explicit": lambda: cls(op, flux),
        "fed": lambda: cls(op, flux, cycle_length=3),
        "fsi": lambda: cls(op, flux, cycle_length=3),
        "rkc": lambda: cls(op, flux, stages=3),
        "semi-implicit": lambda: cls(op, flux, 5 * bound),
        "implicit": lambda: cls(op, flux, 5 * bound),
    }
    return make[name]()


def tolerance(dtype) -> dict[str, float]:
    """The one place where test tolerances are set, keyed on dtype."""
    if np.dtype(dtype) == np.float64:
        return {"rtol": 1e-12, "atol": 1e-12}
    return {"rtol": 2e-5, "atol": 2e-5}


def operator_matrix(op) -> np.ndarray:
    """The matrix of a `Derivative`, `Stencil`, `Stencil2D` or `Matrix` from its taps (or
    entries) and boundary rule (`jaxpde.reference`), without applying the operator."""
    if isinstance(op, jaxpde.Matrix):
        return np.asarray(op.matrix, np.float64)
    if isinstance(op, jaxpde.Derivative):
        return stencil_matrix(derivative_taps(op.order, float(op.h)), op.n, op.boundary)
    if isinstance(op, jaxpde.Stencil2D):
        return stencil_matrix(np.asarray(op.kernel), op.shape, op.boundary, op.offset)
    if isinstance(op, jaxpde.Stencil):
        return stencil_matrix(np.asarray(op.kernel), op.n, op.boundary, op.offset)
    raise TypeError(f"no reference matrix for {type(op).__name__}")


# NumPy diffusivities g(s^2) of the fluxes that the dense references of the schemes use.
DENSE_DIFFUSIVITY = {
    fluxes.Linear: lambda s2, p: np.full_like(s2, p),
    fluxes.PeronaMalik: lambda s2, p: 1 / (1 + s2 / p**2),
    fluxes.Charbonnier: lambda s2, p: 1 / np.sqrt(1 + s2 / p**2),
}


def radial_basis_flux_reference(flux: fluxes.RadialBasisFlux):
    r"""$\Phi(s) = L\,\sigma(b + \sum_i w_i e^{-(s^2 - c_i)^2 / (2 w^2)})\,s$ in NumPy, from the
    flux's parameters (independent of its code)."""
    centres, width = np.asarray(flux.centres), flux.width
    weights, bias = np.asarray(flux.weights), float(flux.bias)

    def phi(s):
        h = bias + np.exp(-((s[..., None] ** 2 - centres) ** 2) / (2 * width**2)) @ weights
        return flux.L / (1 + np.exp(-h)) * s

    return phi


def spectral_norm_svd(matrix) -> float:
    return float(np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False)[0])



# The hypothesis strategies are the ones jaxpde ships for users' own suites.
from jaxpde.testing import (  # noqa: F401
    boundaries,
    derivatives,
    flux_kinds,
    operators,
    orders,
    parameters,
    signals,
    sizes,
    spacings,
    stencils,
    step_fractions,
)

# The devices of the claim checks in the tests. In the thorough profile every device: the
# suite runs with four CPU devices (conftest.py), so that every registered claim is
# certified with its samples split across devices, as `jaxpde certify --devices all` does
# (a claim added later cannot break `--devices` unnoticed). The default profile checks
# the claims on one device, as `jaxpde certify` does, and the sharded path on one claim, the
# explicit claims' shared program and every solver path of the schemes
# (tests/test_sharding.py): sharding every claim's programs as well compiled them again for
# four devices (the five claim test files in one process: 180 s instead of 148 s).
CLAIM_DEVICES = "all" if hypothesis.settings.get_current_profile_name() == "thorough" else None


def claim_budget():
    """The budget of the claim checks in the tests (shared, so that the compiled
    claim programs are shared between test files)."""
    from jaxpde.claims import Budget

    return Budget(samples=10, depth=2, sizes=(16,), name="test", restarts=32, steps=50)


# A heavy, compile-bound variant (a large size, one more configuration compiled as a
# program of its own): skipped in the default `ci` profile, run with
# HYPOTHESIS_PROFILE=thorough (tests/conftest.py). Use on a test or as
# `pytest.param(..., marks=thorough)`.
thorough = pytest.mark.thorough


def thorough_param(*values, id=None):
    """A parametrization that runs only in the thorough profile."""
    return pytest.param(*values, marks=thorough, id=id)


def few_examples(n: int):
    """At most `n` hypothesis examples in the small `ci` profile (each example of the
    decorated test compiles programs of its own shapes); the profile's count otherwise."""
    import hypothesis

    current = hypothesis.settings.default.max_examples
    return hypothesis.settings(max_examples=min(n, current) if current <= 15 else current)


# Claims checked symbolically and exactly: there is nothing for a falsifier to search.
# Claims checked without a search: identities (symbolic and exact), and the U-net, which
# is compared with the V-cycle it computes (an identity of two computations).
DETERMINISTIC = ("cycle-time-identities", "multigrid-unet", "gradient-2d-norm")


def assert_certified(claim, certificate):
    """What every certificate of a registered claim must show."""
    assert certificate.status == "certified", certificate.message
    assert certificate.samples > 0 and certificate.cases
    assert certificate.tolerance > 0 and certificate.tolerance_derivation
    if certificate.relation == "<=":
        assert certificate.worst <= certificate.bound + certificate.tolerance
    else:
        assert certificate.worst > certificate.bound + certificate.tolerance
    # Every claim about inputs is attacked by the falsifier as well as sampled (the
    # identities are checked symbolically and exactly: there is nothing to search).
    if claim.id in DETERMINISTIC:
        return
    assert certificate.falsifier is not None and certificate.falsifier.restarts > 0
    assert certificate.falsifier.nonfinite == 0

class CompilationLog:
    """The names of the programs XLA compiles (`jax.monitoring` events), per phase:
    `log.phase = "warm-up"` files every later compilation under that name until the phase
    changes (`None`: not recorded)."""

    def __init__(self) -> None:
        self.compiled: dict[str, list[str]] = {}
        self.phase: str | None = None
        jax.monitoring.register_event_duration_secs_listener(self._record)

    def _record(self, event: str, duration: float, *, fun_name: str = "", **kwargs) -> None:
        del duration, kwargs
        if event == "/jax/core/compile/backend_compile_duration" and self.phase is not None:
            self.compiled.setdefault(self.phase, []).append(fun_name)
