"""What an eval suite is: a JSONL dataset of cases, a target that runs one case, and its checks.

A suite scores each case with named checks (numbers in [0, 1], or None when a check does not apply
to that case). `pass` is the case's verdict; keys starting with `invariant:` are hard invariants
that must hold for every case whatever the baseline says. Metrics aggregate checks over the cases.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DATASETS = Path(__file__).resolve().parent / "datasets"
INVARIANT = "invariant:"

Scores = dict[str, float | None]


class DatasetError(ValueError):
    """A dataset file is missing or a line does not validate; the message names file and line."""


class Case(BaseModel):
    """One JSONL line. Subclasses add the suite's fields; unknown fields are kept (e.g. `source`)."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(default="", max_length=200)
    note: str | None = None

    def key_text(self) -> str:
        """What identifies the case when the line has no explicit id."""
        return json.dumps(self.model_dump(exclude={"id", "note", "source"}), sort_keys=True, default=str)


@dataclass(frozen=True)
class Metric:
    name: str
    key: str  # the check it aggregates
    higher_is_better: bool = True
    tolerance: float = 0.02
    how: Literal["mean", "sum"] = "mean"
    description: str = ""

    def aggregate(self, values: Sequence[float]) -> float | None:
        if not values:
            return None
        total = float(sum(values))
        return round(total if self.how == "sum" else total / len(values), 4)


class Suite:
    """Base class. Subclasses set the class attributes and implement `run` and `score`."""

    name: ClassVar[str]
    description: ClassVar[str]
    dataset: ClassVar[Path]
    case_model: ClassVar[type[Case]] = Case
    metrics: ClassVar[tuple[Metric, ...]] = ()
    # invariant check name (without the prefix) -> what it protects
    invariants: ClassVar[dict[str, str]] = {}
    # the case field that holds the user's words, filled by add-from-trace
    text_field: ClassVar[str] = "text"

    def __init__(self, dataset: Path | None = None) -> None:
        self.path = dataset or self.dataset

    # -- data ---------------------------------------------------------------------------------------

    def load(self) -> list[Case]:
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: dataset not found")
        cases: list[Case] = []
        seen: dict[str, int] = {}
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                case = self.case_model.model_validate_json(line)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "<line>"
                raise DatasetError(f"{self.path}:{n}: {where}: {first['msg']}") from None
            if not case.id:
                digest = hashlib.sha1(case.key_text().encode()).hexdigest()[:10]
                case.id = f"{self.name}-{digest}"
            if case.id in seen:
                raise DatasetError(f"{self.path}:{n}: duplicate id {case.id!r} (first on line {seen[case.id]})")
            seen[case.id] = n
            cases.append(case)
        if not cases:
            raise DatasetError(f"{self.path}: no cases")
        return cases

    def validate_row(self, row: dict[str, Any]) -> Case:
        row = dict(row)
        for name, field in self.case_model.model_fields.items():
            # `--expect sources=a.md` means a one-item list when the field is a list.
            if isinstance(row.get(name), str) and "list[" in str(field.annotation):
                row[name] = [row[name]]
        try:
            return self.case_model.model_validate(row)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<case>'}: {e['msg']}" for e in exc.errors())
            raise DatasetError(f"not a valid {self.name} case: {problems}") from None

    # -- running ------------------------------------------------------------------------------------

    async def prepare(self, env: Any, cases: list[Case]) -> None:
        """Once per run, before the first case (start what the suite needs, sanity-check the data)."""

    async def run(self, env: Any, case: Case) -> dict[str, Any]:
        raise NotImplementedError

    def score(self, outputs: dict[str, Any], case: Case) -> Scores:
        raise NotImplementedError

    def describe(self, case: Case) -> str:
        """A short human label for reports: the case's words and what was expected."""
        text = " ".join(str(getattr(case, self.text_field, "") or "").split())
        text = text if len(text) <= 70 else text[:67] + "..."
        expected = {k: v for k, v in case.model_dump(include={"intent", "expect", "attack", "kind"}).items()
                    if v is not None}
        return f"{text!r}" + (f" expected {expected}" if expected else "")

    # -- production traces ----------------------------------------------------------------------------

    def case_from_trace(self, text: str, trace: Any, expect: dict[str, Any]) -> dict[str, Any]:
        """A dataset row for a production trace: the user's words plus the expected behaviour."""
        return {self.text_field: text, **expect}


def flag(value: bool) -> float:
    return 1.0 if value else 0.0
