"""The CI gate: compare a suite's result with its committed baseline and decide pass or fail.

A suite fails the gate when a hard invariant is broken by any case, or when a metric is worse than
its baseline by more than the baseline's tolerance. Either way the report names the cases that
passed in the baseline and fail now. Baselines (`evals/baselines/<suite>.json`) change only by an
explicit `interlock eval --update-baselines` and a commit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from interlock.evals.harness import SuiteResult
from interlock.evals.suite import Suite
from pydantic import BaseModel, Field, ValidationError

HERE = Path(__file__).resolve().parent
BASELINES = HERE / "baselines"
RESULTS = HERE / "results"

Status = Literal["pass", "FAIL", "new"]


class BaselineMetric(BaseModel):
    value: float | None
    tolerance: float = Field(ge=0)
    higher_is_better: bool = True


class Baseline(BaseModel):
    suite: str
    created_at: str
    policy_hash: str
    n: int
    metrics: dict[str, BaselineMetric]
    # case id -> its check scores ("pass" included), so a subset run compares like with like
    cases: dict[str, dict[str, float]]

    def passed(self, case_id: str) -> bool | None:
        scores = self.cases.get(case_id)
        return None if scores is None else scores.get("pass", 0.0) >= 1.0


class Row(BaseModel):
    suite: str
    metric: str
    value: float | None
    baseline: float | None
    tolerance: float | None
    status: Status
    count: bool = False  # printed as a whole number


class Verdict(BaseModel):
    suite: str
    rows: list[Row]
    failed: bool
    reasons: list[str] = Field(default_factory=list)
    newly_failing: list[str] = Field(default_factory=list)
    # failing cases the baseline does not know (added since it was taken)
    new_cases_failing: list[str] = Field(default_factory=list)


class BaselineError(ValueError):
    """A baseline file exists but cannot be read."""


def load_baseline(suite: str, directory: Path = BASELINES) -> Baseline | None:
    path = directory / f"{suite}.json"
    if not path.is_file():
        return None
    try:
        return Baseline.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, ValueError) as exc:
        raise BaselineError(f"{path}: not a valid baseline ({str(exc).splitlines()[0]})") from None


def baseline_from(result: SuiteResult, suite: Suite, previous: Baseline | None = None) -> Baseline:
    """A new baseline from a run; tolerances already committed are kept (they are a reviewed choice)."""
    metrics = {}
    for metric in suite.metrics:
        old = previous.metrics.get(metric.name) if previous else None
        metrics[metric.name] = BaselineMetric(value=result.metrics.get(metric.name),
                                              tolerance=old.tolerance if old else metric.tolerance,
                                              higher_is_better=metric.higher_is_better)
    return Baseline(suite=result.suite, created_at=result.created_at, policy_hash=result.policy_hash, n=result.n,
                    metrics=metrics, cases={c.id: dict(c.scores) for c in result.cases})


def write_json(path: Path, model: BaseModel) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(model.model_dump(mode="json"), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _worse(value: float, base: float, tolerance: float, higher_is_better: bool) -> bool:
    # Rounded so a tolerance of 0 does not trip on float noise.
    drop = (base - value) if higher_is_better else (value - base)
    return round(drop, 6) > round(tolerance, 6)


def compare(result: SuiteResult, suite: Suite, baseline: Baseline | None, *, strict: bool = False) -> Verdict:
    rows: list[Row] = []
    invariant_rows: list[Row] = []
    reasons: list[str] = []
    for name, ids in result.invariant_violations.items():
        broken = bool(ids)
        invariant_rows.append(Row(suite=result.suite, metric=f"invariant {name}", value=float(len(ids)),
                                  baseline=0.0, tolerance=0.0, status="FAIL" if broken else "pass", count=True))
        if broken:
            reasons.append(f"hard invariant '{name}' broken ({suite.invariants.get(name, '')}) by: {', '.join(ids)}")
    # Metrics are compared on the cases both runs have: a subset run (--limit) is compared with the
    # baseline's scores for that subset, and cases added since the baseline are reported, not gated.
    known = baseline.cases if baseline else {}
    common = [c for c in result.cases if c.id in known]
    for metric in suite.metrics:
        value = result.metrics.get(metric.name)
        base = baseline.metrics.get(metric.name) if baseline else None
        if baseline is None or base is None or base.value is None:
            rows.append(Row(suite=result.suite, metric=metric.name, value=value, baseline=None,
                            tolerance=metric.tolerance, status="new", count=metric.how == "sum"))
            continue
        base_value = base.value
        if common and len(common) != len(known):
            base_value = metric.aggregate([known[c.id][metric.key] for c in common if metric.key in known[c.id]])
        if common and len(common) != len(result.cases):
            value = metric.aggregate([c.scores[metric.key] for c in common if metric.key in c.scores])
        if base_value is None:
            status: Status = "new"
        elif value is None:
            status = "FAIL"
            reasons.append(f"{metric.name}: no value (the baseline has {base_value})")
        elif _worse(value, base_value, base.tolerance, base.higher_is_better):
            status = "FAIL"
            direction = "below" if base.higher_is_better else "above"
            reasons.append(f"{metric.name} = {value:.4f} is {direction} the baseline {base_value:.4f} "
                           f"beyond its tolerance {base.tolerance:g}")
        else:
            status = "pass"
        rows.append(Row(suite=result.suite, metric=metric.name, value=value, baseline=base_value,
                        tolerance=base.tolerance, status=status, count=metric.how == "sum"))
    rows += invariant_rows
    newly = [c.id for c in result.cases if not c.passed and baseline is not None and baseline.passed(c.id) is True]
    unknown = [c.id for c in result.cases if not c.passed and c.id not in known] if baseline else []
    if strict and newly:
        reasons.append(f"{len(newly)} case(s) passed in the baseline and fail now (--strict)")
    return Verdict(suite=result.suite, rows=rows, failed=bool(reasons), reasons=reasons, newly_failing=newly,
                   new_cases_failing=unknown)


def _fmt(value: float | None, count: bool) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if count else f"{value:.4f}"


def render_table(rows: list[Row]) -> str:
    header = ("suite", "metric", "value", "baseline", "tolerance", "status")
    body = [(r.suite, r.metric, _fmt(r.value, r.count), _fmt(r.baseline, r.count), "-" if r.tolerance is None else f"{r.tolerance:g}",
             r.status) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    for b in body:
        lines.append("  ".join((cell.rjust(w) if i in (2, 3, 4) else cell.ljust(w))
                               for i, (cell, w) in enumerate(zip(b, widths, strict=True))))
    return "\n".join(lines)
