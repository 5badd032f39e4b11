"""The claims of the paper that jaxpde certifies, each with a proof in `proofs/<id>.md`.

`CLAIMS` is the registry that `jaxpde certify` runs; `get_claim(id)` looks one up.
"""

import concurrent.futures
import os

import jax
import numpy as np

from ..blocks import stable_step_size
from ..sharding import devices_context
from ..verify.certificate import Certificate
from . import adversarial, cycles, sampling, schemes
from .cycles import FED_STABILITY, FSI_STABILITY, FSI_STABILITY_SHARP, FSI_UNFROZEN
from .energy import ENERGY_DESCENT, LYAPUNOV_FUNCTIONALS
from .explicit import (
    EXPLICIT_STABILITY,
    EXPLICIT_STABILITY_SHARP,
    NONMONOTONE_STABILITY,
)
from .identities import CYCLE_TIME_IDENTITIES
from .images import EXPLICIT_STABILITY_2D, GRADIENT_2D_NORM, SEMI_IMPLICIT_STABILITY_2D
from .implicit import (
    FIXED_POINT_CONTRACTION,
    IMPLICIT_STABILITY,
    SEMI_IMPLICIT_STABILITY,
)
from .invariants import MASS_CONSERVATION, MAX_MIN_PRINCIPLE
from .lipschitz import BLOCK_LIPSCHITZ, STABLE_NOT_NONEXPANSIVE
from .multigrid import (
    MULTIGRID_CONTRACTION,
    MULTIGRID_UNET,
    SEMI_IMPLICIT_MULTIGRID_STABILITY,
)
from .networks import DIFFUSION_RESNET_STABILITY, RADIAL_BASIS_FLUX
from .operators import DERIVATIVE_NORM, SPECTRAL_NORM_BOUNDS
from .registry import QUICK as QUICK
from .registry import THOROUGH as THOROUGH
from .registry import Budget as Budget
from .registry import Claim as Claim
from .registry import Evidence as Evidence

SCHEME_CLAIMS: tuple[Claim, ...] = (
    CYCLE_TIME_IDENTITIES,
    FSI_STABILITY,
    FSI_STABILITY_SHARP,
    FSI_UNFROZEN,
    FED_STABILITY,
    IMPLICIT_STABILITY,
    SEMI_IMPLICIT_STABILITY,
    FIXED_POINT_CONTRACTION,
)

MULTIGRID_CLAIMS: tuple[Claim, ...] = (
    MULTIGRID_CONTRACTION,
    MULTIGRID_UNET,
    SEMI_IMPLICIT_MULTIGRID_STABILITY,
)

NETWORK_CLAIMS: tuple[Claim, ...] = (
    RADIAL_BASIS_FLUX,
    DIFFUSION_RESNET_STABILITY,
)

IMAGE_CLAIMS: tuple[Claim, ...] = (
    GRADIENT_2D_NORM,
    EXPLICIT_STABILITY_2D,
    SEMI_IMPLICIT_STABILITY_2D,
)

CLAIMS: tuple[Claim, ...] = (
    DERIVATIVE_NORM,
    SPECTRAL_NORM_BOUNDS,
    EXPLICIT_STABILITY,
    EXPLICIT_STABILITY_SHARP,
    NONMONOTONE_STABILITY,
    MASS_CONSERVATION,
    MAX_MIN_PRINCIPLE,
    BLOCK_LIPSCHITZ,
    STABLE_NOT_NONEXPANSIVE,
    ENERGY_DESCENT,
    LYAPUNOV_FUNCTIONALS,
    *SCHEME_CLAIMS,
    *MULTIGRID_CLAIMS,
    *NETWORK_CLAIMS,
    *IMAGE_CLAIMS,
)


SCHEME_KINDS = ("implicit", "semi-implicit", "implicit-fixed-point")


def warm_up(
    budget: Budget = QUICK, workers: int | None = None, *, parts=("explicit", "schemes", "images"), devices=None
) -> int:
    """Compile the programs that the claims share, in parallel threads: `evaluate`
    for every operator shape, the adversarial search over all of them (the longest,
    so it starts first) for the "explicit" part, the scheme programs (cycles, implicit
    steps; each is also run once) for the "schemes" part, and `evaluate` for every image
    operator for the "images" part. XLA compiles outside the GIL, so this shortens
    `jaxpde certify` on several cores, and claims that run in parallel afterwards do
    not compile the same program twice (compile with the `devices` the claims will use).
    Returns the number of programs prepared."""
    ops = [op for _, op in sampling.operator_cases(np.random.default_rng(0), budget.sizes)]
    images = [op for _, op in sampling.image_operator_cases(np.random.default_rng(0), budget.sizes)]

    def compile_search():
        rng = np.random.default_rng(0)
        fluxes = [sampling.random_fluxes(rng) for _ in ops]
        adversarial.attack_operators(rng, ops, fluxes, np.ones((len(ops), len(fluxes[0]))), "gain", budget)

    def compile_schemes(kind, coefficients):
        rng = np.random.default_rng(0)
        fluxes = [sampling.random_fluxes(rng) for _ in ops]
        taus = np.array([[float(stable_step_size(op, f)) for f in fs] for op, fs in zip(ops, fluxes)])
        schemes.run(rng, ops, fluxes, taus, kind, budget, coefficients=coefficients, search=kind != "implicit-fixed-point")

    def compile_evaluate(op):
        rng = np.random.default_rng(0)
        sampling.measure(rng, op, sampling.random_fluxes(rng), budget.samples, budget.depth)

    def in_float64(task, *args):
        with jax.enable_x64(True), devices_context(devices):  # configuration contexts are per thread
            task(*args)

    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        futures = []
        if "explicit" in parts:
            futures += [pool.submit(in_float64, compile_search)]
            futures += [pool.submit(in_float64, compile_evaluate, op) for op in ops]
        if "images" in parts:
            futures += [pool.submit(in_float64, compile_evaluate, op) for op in images]
        if "schemes" in parts:
            futures += [
                pool.submit(in_float64, compile_schemes, "cycle", cycles.coefficients("fsi", 3, frozen=frozen))
                for frozen in (True, False)
            ]
            futures += [pool.submit(in_float64, compile_schemes, kind, None) for kind in SCHEME_KINDS]
        for future in futures:
            future.result()
    return len(futures)


def check_all(
    claims, key, budget: Budget = QUICK, *, workers: int | None = None, on_done=None, devices=None
) -> list[Certificate]:
    """Check `claims` in parallel threads (XLA compiles and runs outside the GIL);
    claim i uses the key `fold_in(key, i)`, its samples split across `devices` (see
    `Claim.check`). `on_done(certificate)` is called as each finishes. Returns the
    certificates in the order of `claims`."""
    workers = workers or os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(claim.check, jax.random.fold_in(key, i), budget, devices=devices) for i, claim in enumerate(claims)]
        if on_done is not None:
            for future in concurrent.futures.as_completed(futures):
                on_done(future.result())
        return [future.result() for future in futures]


def get_claim(claim_id: str) -> Claim:
    """The registered claim with this id (a `KeyError` lists the known ids)."""
    for claim in CLAIMS:
        if claim.id == claim_id:
            return claim
    raise KeyError(f"unknown claim id {claim_id!r}; known: {[c.id for c in CLAIMS]}")
