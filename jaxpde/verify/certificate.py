"""The result of checking a claim: verdict, evidence, tolerance, and its rendering."""

import dataclasses
import math
from typing import Literal

Status = Literal["certified", "violated", "error"]
Basis = Literal["theorem", "empirical"]
BASIS_MEANING = {
    "theorem": "proved in proofs/, hypotheses checked, sampled and searched without a counterexample",
    "empirical": "no theorem applies: searched without a counterexample over the stated region",
}


@dataclasses.dataclass(frozen=True)
class CaseResult:
    """One configuration that a claim was checked on."""

    name: str
    samples: int
    worst: float
    bound: float
    tolerance: float
    passed: bool


@dataclasses.dataclass(frozen=True)
class FalsifierOutcome:
    """What the adversarial search (`verify.falsify`) found for a claim.

    `worst` is the worst value after the search and `sampled` the worst at its random
    starts alone; `found` says whether a violation beyond the tolerance was found
    (for claims that must find one, `relation=">"`, this is the success).
    """

    objective: str
    restarts: int
    steps: int
    worst: float
    sampled: float
    nonfinite: int
    found: bool
    region: str = ""  # where it searched (input norms, seeds), e.g. `SearchRegion.describe()`


@dataclasses.dataclass(frozen=True)
class Certificate:
    """The outcome of checking one claim.

    `worst` is the worst observed value of what the claim bounds, over all `cases`;
    the claim holds when `worst <= bound` within `tolerance` (`relation="<="`), or,
    for sharpness claims that must find a violation, when `worst > bound` by more
    than `tolerance` in every case (`relation=">"`).

    `basis` says what a "certified" status rests on: "theorem" (the claim is proved in
    `proof`, its hypotheses are checked on every sampled configuration, and sampling and
    the falsifier found no counterexample) or "empirical" (no theorem applies: searched
    without a counterexample over the region stated in `hypotheses`). Every registered
    claim has a proof, so its basis is "theorem".
    """

    claim_id: str
    statement: str
    status: Status
    samples: int
    worst: float
    bound: float
    relation: Literal["<=", ">"]
    tolerance: float
    tolerance_derivation: str
    seconds: float
    proof: str
    hypotheses: dict[str, str] = dataclasses.field(default_factory=dict)
    cases: tuple[CaseResult, ...] = ()
    message: str = ""
    falsifier: FalsifierOutcome | None = None
    basis: Basis = "theorem"

    def __post_init__(self):
        if self.basis not in BASIS_MEANING:
            raise ValueError(f"`basis` must be one of {tuple(BASIS_MEANING)}, got {self.basis!r}.")

    @property
    def certified(self) -> bool:
        return self.status == "certified"

    def to_json(self, *, with_cases: bool = False) -> dict:
        data = {
            "id": self.claim_id,
            "statement": self.statement,
            "status": self.status,
            "basis": self.basis,
            "samples": self.samples,
            "worst": _finite_or_none(self.worst),
            "bound": _finite_or_none(self.bound),
            "relation": self.relation,
            "tolerance": self.tolerance,
            "tolerance_derivation": self.tolerance_derivation,
            "seconds": round(self.seconds, 4),
            "proof": self.proof,
            "hypotheses": dict(self.hypotheses),
            "message": self.message,
            "falsifier": None if self.falsifier is None else _json_safe(dataclasses.asdict(self.falsifier)),
        }
        if with_cases:
            data["cases"] = [dataclasses.asdict(case) for case in self.cases]
        return data


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _json_safe(data: dict) -> dict:
    return {k: _finite_or_none(v) if isinstance(v, float) else v for k, v in data.items()}


def _falsifier_cell(f: FalsifierOutcome | None) -> str:
    if f is None:
        return "n/a"
    return f"{f.restarts}x{f.steps}: {_fmt(f.worst)}"


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.12g}"


def markdown_table(certificates: list[Certificate]) -> str:
    """A Markdown table with one row per claim."""
    lines = [
        "| claim | status | samples | worst | relation | bound | tolerance | falsifier | seconds | basis |",
        "| --- | --- | ---: | ---: | :---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in certificates:
        lines.append(
            f"| `{c.claim_id}` | {c.status} | {c.samples} | {_fmt(c.worst)} | {c.relation} "
            f"| {_fmt(c.bound)} | {c.tolerance:.3g} | {_falsifier_cell(c.falsifier)} | {c.seconds:.2f} | {c.basis} |"
        )
    return "\n".join(lines)


def markdown_report(certificates: list[Certificate]) -> str:
    """The full report: the table, then each claim's statement, hypotheses and cases."""
    parts = ["# jaxpde certification report", "", markdown_table(certificates), ""]
    for c in certificates:
        parts += [f"## `{c.claim_id}`: {c.status}", "", c.statement, "", f"Proof: `{c.proof}`.", ""]
        parts += [f"Basis: {c.basis} ({BASIS_MEANING[c.basis]}).", ""]
        if c.message:
            parts += [f"**Message:** {c.message}", ""]
        parts += [f"Tolerance: {c.tolerance:.3g} ({c.tolerance_derivation}).", ""]
        for name, value in c.hypotheses.items():
            parts.append(f"- {name}: {value}")
        if c.falsifier is not None:
            f = c.falsifier
            parts.append(
                f"- falsifier ({f.objective}): {f.restarts} restarts x {f.steps} Adam steps per case; "
                f"worst {_fmt(f.worst)} (random starts alone: {_fmt(f.sampled)}); "
                f"non-finite evaluations: {f.nonfinite}; violation found: {'yes' if f.found else 'no'}"
                + (f"; region: {f.region}" if f.region else "")
            )
        if c.cases:
            parts += ["", "| case | samples | worst | bound | tolerance | ok |", "| --- | ---: | ---: | ---: | ---: | :---: |"]
            for case in c.cases:
                parts.append(
                    f"| {case.name} | {case.samples} | {_fmt(case.worst)} | {_fmt(case.bound)} "
                    f"| {case.tolerance:.3g} | {'yes' if case.passed else 'NO'} |"
                )
        parts.append("")
    return "\n".join(parts)
