"""Run a suite through `langsmith.aevaluate` with an offline client, and collect per-case results.

`Client(api_key="offline", auto_batch_tracing=False)` with `upload_runs=False` makes zero network
attempts (the default client would call `GET /info` in a background thread), so the eval needs no
key and no network. The target never raises: a case that crashes is recorded with its error and
counts as failed, so one broken case cannot hide the others.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import uuid
import warnings
from datetime import UTC, datetime
from typing import Any

from interlock.evals.suite import INVARIANT, Case, Suite
from pydantic import BaseModel, Field

log = logging.getLogger("interlock.evals")

NAMESPACE = uuid.UUID("5d0c7a34-4f0e-4a53-9a8c-7b1f6a1f0e11")


class CaseResult(BaseModel):
    id: str
    passed: bool
    label: str = ""
    scores: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    # What the target produced, trimmed: enough to see why a case failed.
    detail: dict[str, Any] = Field(default_factory=dict)


class SuiteResult(BaseModel):
    suite: str
    dataset: str
    policy_hash: str
    created_at: str
    seconds: float
    n: int
    metrics: dict[str, float | None]
    # invariant name -> ids of the cases that broke it
    invariant_violations: dict[str, list[str]]
    cases: list[CaseResult]

    def failing(self) -> list[str]:
        return [c.id for c in self.cases if not c.passed]


def offline_client() -> Any:
    from langsmith import Client

    return Client(api_key="offline", auto_batch_tracing=False)


def _short(value: Any, limit: int = 400) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "..."
    if isinstance(value, dict):
        return {k: _short(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_short(v, limit) for v in value[:20]]
    return value


async def run_suite(suite: Suite, env: Any, *, limit: int | None = None) -> SuiteResult:
    from langsmith import aevaluate
    from langsmith.run_helpers import tracing_context
    from langsmith.schemas import Example

    started = time.perf_counter()
    cases = suite.load()
    if limit is not None:
        cases = cases[: max(limit, 1)]
    await suite.prepare(env, cases)
    by_id: dict[str, Case] = {c.id: c for c in cases}
    dataset_id = uuid.uuid5(NAMESPACE, suite.name)
    examples = [Example(id=uuid.uuid5(NAMESPACE, f"{suite.name}:{c.id}"), dataset_id=dataset_id,
                        inputs={"case_id": c.id}, outputs=c.model_dump(mode="json"), metadata={"case_id": c.id})
                for c in cases]

    async def target(inputs: dict[str, Any]) -> dict[str, Any]:
        case = by_id[inputs["case_id"]]
        try:
            # aevaluate records the target locally ("local" tracing), but LangChain's tracer inside the
            # graph would still send every node's run to the LangSmith API: no tracing below this point.
            with tracing_context(enabled=False):
                return await suite.run(env, case)
        except Exception as exc:  # recorded as this case's failure, never fatal to the run
            log.warning("eval %s/%s raised %s", suite.name, case.id, type(exc).__name__)
            return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}

    def evaluator(run: Any, example: Any) -> dict[str, Any]:
        case = by_id[example.metadata["case_id"]]
        outputs = dict(run.outputs or {})
        # A case that crashed proves nothing: it fails, and so does every invariant it was meant to show.
        failed = {"pass": 0.0, **{INVARIANT + name: 0.0 for name in suite.invariants}}
        scores = failed if outputs.get("error") else {}
        try:
            scores = {**suite.score(outputs, case), **scores}
        except Exception:
            scores = failed
        return {"results": [{"key": k, "score": float(v)} for k, v in scores.items() if v is not None]}

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")  # the upload_runs beta warning
        results = await aevaluate(target, data=examples, evaluators=[evaluator], client=offline_client(),
                                  upload_runs=False, max_concurrency=0, experiment_prefix=f"interlock-{suite.name}",
                                  metadata={"suite": suite.name, "policy_hash": env.policy_hash()})
        rows = [row async for row in results]

    case_results: list[CaseResult] = []
    for row in rows:
        case_id = row["example"].metadata["case_id"]
        outputs = dict(row["run"].outputs or {})
        scores = {r.key: float(r.score) for r in row["evaluation_results"]["results"] if r.score is not None}
        case_results.append(CaseResult(id=case_id, passed=scores.get("pass", 0.0) >= 1.0, scores=scores,
                                       label=suite.describe(by_id[case_id]),
                                       error=outputs.get("error"),
                                       detail=_short({k: v for k, v in outputs.items() if k != "error"})))
    order = {c.id: i for i, c in enumerate(cases)}
    case_results.sort(key=lambda r: order.get(r.id, 0))

    metrics: dict[str, float | None] = {}
    for metric in suite.metrics:
        values = [c.scores[metric.key] for c in case_results if metric.key in c.scores]
        metrics[metric.name] = metric.aggregate(values)
    violations = {name: [c.id for c in case_results if c.scores.get(INVARIANT + name, 1.0) < 1.0]
                  for name in suite.invariants}
    return SuiteResult(suite=suite.name, dataset=str(suite.path), policy_hash=env.policy_hash(),
                       created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                       seconds=round(time.perf_counter() - started, 2), n=len(case_results), metrics=metrics,
                       invariant_violations=violations, cases=case_results)


async def run_suites(suites: list[Suite], *, limit: int | None = None, home: Any = None,
                     policy_dir: Any = None) -> list[SuiteResult]:
    """Run suites one after the other in one environment (MCP servers and index are shared)."""
    from interlock.evals.environment import EvalEnvironment

    async with EvalEnvironment(home=home, policy_dir=policy_dir) as env:
        return [await run_suite(suite, env, limit=limit) for suite in suites]
