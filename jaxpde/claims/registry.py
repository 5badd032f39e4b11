"""The registry of the paper's claims: id, statement, proof file and a check."""

import dataclasses
import time
import traceback
from collections.abc import Callable
from typing import Literal

import jax
from jaxtyping import PRNGKeyArray

from ..sharding import devices_context
from ..verify.certificate import CaseResult, Certificate, FalsifierOutcome


@dataclasses.dataclass(frozen=True)
class Budget:
    """How hard a check tries: random samples per case, depth (steps) per sample,
    the grid sizes drawn from, and the falsifier's restarts and Adam steps per case."""

    samples: int
    depth: int
    sizes: tuple[int, ...]
    name: str
    restarts: int = 32
    steps: int = 50

    def __post_init__(self):
        if self.samples < 5 or self.depth < 1 or not self.sizes or self.restarts < 1 or self.steps < 1:
            raise ValueError(
                "`Budget` needs samples >= 5, depth >= 1, restarts >= 1, steps >= 1 and at least one size."
            )


QUICK = Budget(samples=40, depth=4, sizes=(16, 33), name="quick", restarts=32, steps=50)
THOROUGH = Budget(samples=400, depth=24, sizes=(16, 33, 64, 129), name="thorough", restarts=64, steps=50)


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What a check found: one `CaseResult` per configuration, plus the hypotheses
    it verified (with their numbers)."""

    cases: tuple[CaseResult, ...]
    bound: float
    relation: Literal["<=", ">"]
    tolerance_derivation: str
    hypotheses: dict[str, str] = dataclasses.field(default_factory=dict)
    falsifier: FalsifierOutcome | None = None


@dataclasses.dataclass(frozen=True)
class Claim:
    """A mathematical claim of the paper that jaxpde certifies.

    `check(key, budget, devices=...)` samples inputs and configurations and returns a
    `Certificate`; exceptions become the status `"error"`. With `devices` (`"all"`, a
    count, or a `jax.sharding.Mesh`; see `jaxpde.sharding`) the sampled inputs and
    configurations are split across the devices.
    """

    id: str
    statement: str
    run: Callable[[PRNGKeyArray, Budget], Evidence]

    @property
    def proof(self) -> str:
        return f"proofs/{self.id}.md"

    def check(self, key: PRNGKeyArray | None = None, budget: Budget = QUICK, *, devices=None) -> Certificate:
        key = jax.random.key(0) if key is None else key
        start = time.perf_counter()
        try:
            with jax.enable_x64(True), devices_context(devices):  # claims are certified in float64
                evidence = self.run(key, budget)
        except Exception as error:  # noqa: BLE001 (reported, never swallowed: status "error")
            return Certificate(
                claim_id=self.id, statement=self.statement, status="error", samples=0,
                worst=float("nan"), bound=float("nan"), relation="<=", tolerance=0.0,
                tolerance_derivation="", seconds=time.perf_counter() - start,
                proof=self.proof, message="".join(traceback.format_exception_only(error)).strip(),
            )
        cases = evidence.cases
        if not cases:
            raise RuntimeError(f"claim {self.id!r} checked no case.")
        worsts = [case.worst for case in cases]
        worst = max(worsts) if evidence.relation == "<=" else min(worsts)
        failed = [case.name for case in cases if not case.passed]
        return Certificate(
            claim_id=self.id,
            statement=self.statement,
            status="violated" if failed else "certified",
            samples=sum(case.samples for case in cases),
            worst=float(worst),
            bound=evidence.bound,
            relation=evidence.relation,
            tolerance=max(case.tolerance for case in cases),
            tolerance_derivation=evidence.tolerance_derivation,
            seconds=time.perf_counter() - start,
            proof=self.proof,
            hypotheses=evidence.hypotheses,
            cases=cases,
            falsifier=evidence.falsifier,
            message=f"failed cases: {', '.join(failed[:5])}" if failed else "",
        )
