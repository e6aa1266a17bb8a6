"""Router accuracy: does the zero-key router pick the labelled intent and route for unseen messages?

Runs the real `router` graph (identify, input guard, classify) and stops it after `classify`, so
the planner and RAG paths are not executed. The dataset must not share messages with the labelled
examples in policies/intents.yaml; the run refuses to start if it does.
"""

from __future__ import annotations

from typing import Any, ClassVar

from interlock.evals.environment import thread_config
from interlock.evals.suite import DATASETS, Case, DatasetError, Metric, Scores, Suite, flag


class RouterCase(Case):
    text: str
    intent: str
    route: str | None = None


class RouterSuite(Suite):
    name = "router"
    description = "intent and route of the zero-key router on messages it has never seen"
    dataset = DATASETS / "router.jsonl"
    case_model = RouterCase
    metrics = (
        Metric("intent_accuracy", "intent_correct", tolerance=0.02),
        Metric("route_accuracy", "route_correct", tolerance=0.02),
    )
    invariants: ClassVar[dict[str, str]] = {}

    async def prepare(self, env: Any, cases: list[Case]) -> None:
        policy = env.classifier().policy
        known = {text.strip().lower() for text, _ in policy.labelled()}
        leaked = [c.text for c in cases if isinstance(c, RouterCase) and c.text.strip().lower() in known]
        if leaked:
            raise DatasetError(f"{len(leaked)} router cases are also training messages (intents.yaml or its "
                               f"training set), e.g. {leaked[0]!r}")
        self._graph = await env.router(knowledge=False)

    async def run(self, env: Any, case: Case) -> dict[str, Any]:
        assert isinstance(case, RouterCase)
        out = await self._graph.ainvoke({"messages": [("user", case.text)]}, thread_config(),
                                        interrupt_after=["classify"])
        return {"intent": out.get("intent") or "", "route": out.get("route") or "",
                "outcome": out.get("outcome") or "", "confidence": out.get("confidence")}

    def score(self, outputs: dict[str, Any], case: Case) -> Scores:
        assert isinstance(case, RouterCase)
        intent_ok = outputs.get("intent") == case.intent
        route_ok = outputs.get("route") == case.route if case.route else None
        return {"intent_correct": flag(intent_ok), "route_correct": None if route_ok is None else flag(route_ok),
                "pass": flag(intent_ok)}

    def case_from_trace(self, text: str, trace: Any, expect: dict[str, Any]) -> dict[str, Any]:
        row = {"text": text, **expect}
        if "intent" in row and "route" not in row:
            from interlock.graphs.nodes.intent import IntentClassifier

            spec = IntentClassifier().policy.intents.get(row["intent"])
            if spec is None:
                raise DatasetError(f"unknown intent {row['intent']!r}")
            row["route"] = spec.route
        return row
