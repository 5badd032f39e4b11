"""Shared test helpers: tolerances, comparisons, independent references, strategies."""

import math

import jax
import numpy as np
import pytest

import jaxpde
import jaxpde.testing
from jaxpde import fluxes

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


def stencil_matrix(kernel, n: int, boundary: str, offset: int = 0) -> np.ndarray:
    """Dense matrix of a stencil, built from the definition (independent of jaxpde):
    row i of output channel o holds kernel[o, c, j] at input (c, column) with column
    i + j (neumann), (i + j + offset) mod n (periodic) or i + j - (k - 1) (dirichlet)."""
    kernel = np.asarray(kernel, np.float64)
    single = kernel.ndim == 1
    if single:
        kernel = kernel[None, None]
    c_out, c_in, k = kernel.shape
    rows = {"neumann": n - k + 1, "periodic": n, "dirichlet": n + k - 1}[boundary]
    matrix = np.zeros((c_out, rows, c_in, n))
    for i in range(rows):
        for j in range(k):
            column = {"neumann": i + j, "periodic": (i + j + offset) % n, "dirichlet": i + j - (k - 1)}[boundary]
            if 0 <= column < n:
                matrix[:, i, :, column] += kernel[:, :, j]
    return matrix.reshape(c_out * rows, c_in * n)


def derivative_kernel(order: int, h: float) -> np.ndarray:
    return np.array([(-1) ** (order - j) * math.comb(order, j) / h**order for j in range(order + 1)])


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
