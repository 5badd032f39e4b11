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
from . import adversarial, cycles, rkc, sampling, schemes
from .adversarial import SIGNAL_OBJECTIVES as SIGNAL_OBJECTIVES
from .cycles import (
    FED_ROUNDING,
    FED_STABILITY,
    FSI_STABILITY,
    FSI_STABILITY_SHARP,
    FSI_UNFROZEN,
)
from .energy import ENERGY_DESCENT, LYAPUNOV_FUNCTIONALS
from .explicit import (
    EXPLICIT_STABILITY,
    EXPLICIT_STABILITY_SHARP,
    NONMONOTONE_STABILITY,
)
from .identities import CYCLE_TIME_IDENTITIES
from .images import (
    DIFFUSION_RESNET_STABILITY_2D,
    EXPLICIT_STABILITY_2D,
    GRADIENT_2D_NORM,
    SEMI_IMPLICIT_STABILITY_2D,
)
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
from .multigrid2d import MULTIGRID_2D_CONTRACTION
from .networks import DIFFUSION_RESNET_STABILITY, RADIAL_BASIS_FLUX
from .operators import DERIVATIVE_NORM, SPECTRAL_NORM_BOUNDS
from .registry import QUICK as QUICK
from .registry import THOROUGH as THOROUGH
from .registry import Budget as Budget
from .registry import Claim as Claim
from .registry import Evidence as Evidence
from .rkc import RKC_STABILITY

SCHEME_CLAIMS: tuple[Claim, ...] = (
    CYCLE_TIME_IDENTITIES,
    FSI_STABILITY,
    FSI_STABILITY_SHARP,
    FSI_UNFROZEN,
    FED_STABILITY,
    FED_ROUNDING,
    RKC_STABILITY,
    IMPLICIT_STABILITY,
    SEMI_IMPLICIT_STABILITY,
    FIXED_POINT_CONTRACTION,
)

MULTIGRID_CLAIMS: tuple[Claim, ...] = (
    MULTIGRID_CONTRACTION,
    MULTIGRID_UNET,
    SEMI_IMPLICIT_MULTIGRID_STABILITY,
    MULTIGRID_2D_CONTRACTION,
)

NETWORK_CLAIMS: tuple[Claim, ...] = (
    RADIAL_BASIS_FLUX,
    DIFFUSION_RESNET_STABILITY,
)

IMAGE_CLAIMS: tuple[Claim, ...] = (
    GRADIENT_2D_NORM,
    EXPLICIT_STABILITY_2D,
    SEMI_IMPLICIT_STABILITY_2D,
    DIFFUSION_RESNET_STABILITY_2D,
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
    """Compile the programs that several claims share, in parallel threads, each once:
    for the "explicit" part the padded evaluation of the random samples on signals
    (`sampling.evaluate_cases`) and the falsifier's program, which holds every objective of
    `SIGNAL_OBJECTIVES`; for "images" the same two on images (objective "gain"); for
    "schemes" the scheme programs (cycles, implicit steps), compiled ahead of time without running. XLA
    compiles outside the GIL, so this shortens `jaxpde certify` on several cores, and
    claims that run in parallel afterwards do not compile the same program twice (compile
    with the `devices` the claims will use). Returns the number of programs prepared."""
    chunk = sampling.CASE_CHUNK
    ops = [op for _, op in sampling.operator_cases(np.random.default_rng(0), budget.sizes)]
    images = [op for _, op in sampling.image_operator_cases(np.random.default_rng(0), budget.sizes)]

    def compile_attack(family, objective):
        fluxes = [sampling.random_fluxes(np.random.default_rng(0)) for _ in family[:chunk]]
        adversarial.compile_attack(family[:chunk], fluxes, objective, budget)

    def compile_schemes(kind, coefficients):
        rng = np.random.default_rng(0)
        fluxes = [sampling.random_fluxes(rng) for _ in ops]
        taus = np.array([[float(stable_step_size(op, f)) for f in fs] for op, fs in zip(ops, fluxes)])
        schemes.compile_run(ops, fluxes, taus, kind, budget, coefficients=coefficients, search=kind != "implicit-fixed-point")

    def compile_evaluate(family):
        rng = np.random.default_rng(0)
        fluxes = [sampling.random_fluxes(rng) for _ in family[:chunk]]
        sampling.measure_cases(rng, family[:chunk], fluxes, budget.samples, budget.depth, sizes=budget.sizes)

    def in_float64(task, *args):
        with jax.enable_x64(True), devices_context(devices):  # configuration contexts are per thread
            task(*args)

    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        futures = []
        if "schemes" in parts:  # the longest first
            futures += [pool.submit(in_float64, compile_schemes, kind, None) for kind in SCHEME_KINDS]
            futures += [
                pool.submit(in_float64, compile_schemes, "cycle", cycles.coefficients("fsi", 3, frozen=frozen))
                for frozen in (True, False)
            ]
            futures += [pool.submit(in_float64, compile_schemes, "rkc", rkc.program_coefficients(budget))]
        if "explicit" in parts:
            futures += [pool.submit(in_float64, compile_attack, ops, SIGNAL_OBJECTIVES[0])]  # all of them
            futures += [pool.submit(in_float64, compile_evaluate, ops)]
        if "images" in parts:
            futures += [pool.submit(in_float64, compile_attack, images, "gain")]
            futures += [pool.submit(in_float64, compile_evaluate, images)]
        for future in futures:
            future.result()
    return len(futures)


def check_all(
    claims, key, budget: Budget = QUICK, *, workers: int | None = None, on_start=None, on_done=None, devices=None
) -> list[Certificate]:
    """Check `claims` in parallel threads (XLA compiles and runs outside the GIL);
    claim i uses the key `fold_in(key, i)`, its samples split across `devices` (see
    `Claim.check`). `on_start(claim_id)` is called (in the worker thread) as each claim
    starts, `on_done(certificate)` (in the calling thread) as each finishes. Returns the
    certificates in the order of `claims`."""
    workers = workers or os.cpu_count() or 1

    def check(claim, index):
        if on_start is not None:
            on_start(claim.id)
        return claim.check(jax.random.fold_in(key, index), budget, devices=devices)

    # The longest claims start first, so that the others fill the threads around them.
    order = sorted(range(len(claims)), key=lambda i: (_start_rank(claims[i].id), i))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {i: pool.submit(check, claims[i], i) for i in order}
        if on_done is not None:
            for future in concurrent.futures.as_completed(futures.values()):
                on_done(future.result())
        return [futures[i].result() for i in range(len(claims))]


# Claims that take longest (they compile programs of their own), started first.
LONGEST_FIRST = (
    "multigrid-contraction",
    "implicit-stability",
    "semi-implicit-stability-2d",
    "multigrid-unet",
    "semi-implicit-stability",
    "diffusion-resnet-stability",
    "diffusion-resnet-stability-2d",
    "multigrid-2d-contraction",
    "semi-implicit-multigrid-stability",
    "fixed-point-contraction",
)


def _start_rank(claim_id: str) -> int:
    return LONGEST_FIRST.index(claim_id) if claim_id in LONGEST_FIRST else len(LONGEST_FIRST)


def get_claim(claim_id: str) -> Claim:
    """The registered claim with this id (a `KeyError` lists the known ids)."""
    for claim in CLAIMS:
        if claim.id == claim_id:
            return claim
    raise KeyError(f"unknown claim id {claim_id!r}; known: {[c.id for c in CLAIMS]}")
