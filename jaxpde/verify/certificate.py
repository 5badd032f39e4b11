"""The result of checking a claim: verdict, evidence, tolerance, and its rendering."""

import dataclasses
import math
from typing import Literal

Status = Literal["certified", "violated", "error"]


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
class Certificate:
    """The outcome of checking one claim.

    `worst` is the worst observed value of what the claim bounds, over all `cases`;
    the claim holds when `worst <= bound` within `tolerance` (`relation="<="`), or,
    for sharpness claims that must find a violation, when `worst > bound` by more
    than `tolerance` in every case (`relation=">"`).
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

    @property
    def certified(self) -> bool:
        return self.status == "certified"

    def to_json(self, *, with_cases: bool = False) -> dict:
        data = {
            "id": self.claim_id,
            "statement": self.statement,
            "status": self.status,
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
        }
        if with_cases:
            data["cases"] = [dataclasses.asdict(case) for case in self.cases]
        return data


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.12g}"


def markdown_table(certificates: list[Certificate]) -> str:
    """A Markdown table with one row per claim."""
    lines = [
        "| claim | status | samples | worst | relation | bound | tolerance | seconds |",
        "| --- | --- | ---: | ---: | :---: | ---: | ---: | ---: |",
    ]
    for c in certificates:
        lines.append(
            f"| `{c.claim_id}` | {c.status} | {c.samples} | {_fmt(c.worst)} | {c.relation} "
            f"| {_fmt(c.bound)} | {c.tolerance:.3g} | {c.seconds:.2f} |"
        )
    return "\n".join(lines)


def markdown_report(certificates: list[Certificate]) -> str:
    """The full report: the table, then each claim's statement, hypotheses and cases."""
    parts = ["# jaxpde certification report", "", markdown_table(certificates), ""]
    for c in certificates:
        parts += [f"## `{c.claim_id}`: {c.status}", "", c.statement, "", f"Proof: `{c.proof}`.", ""]
        if c.message:
            parts += [f"**Message:** {c.message}", ""]
        parts += [f"Tolerance: {c.tolerance:.3g} ({c.tolerance_derivation}).", ""]
        for name, value in c.hypotheses.items():
            parts.append(f"- {name}: {value}")
        if c.cases:
            parts += ["", "| case | samples | worst | bound | tolerance | ok |", "| --- | ---: | ---: | ---: | ---: | :---: |"]
            for case in c.cases:
                parts.append(
                    f"| {case.name} | {case.samples} | {_fmt(case.worst)} | {_fmt(case.bound)} "
                    f"| {case.tolerance:.3g} | {'yes' if case.passed else 'NO'} |"
                )
        parts.append("")
    return "\n".join(parts)
