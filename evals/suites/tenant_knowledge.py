"""A tenant's own documents widen what the router answers; off-topic questions stay refused.

Ingests five documents about a product absent from the sample help centre (evals/datasets/tenant_docs) into a
tenant of their own, then runs the real `router` graph: a question those documents answer must be answered
with a citation naming the right document (never refused as out of scope), and an off-topic question must be
refused with no citation (never answered from a weak match).
"""

from __future__ import annotations

from typing import Any, Literal

from interlock.evals.environment import thread_config
from interlock.evals.suite import DATASETS, Case, Metric, Scores, Suite, flag

TENANT = "initech"
DOCS = DATASETS / "tenant_docs"


class TenantKnowledgeCase(Case):
    text: str
    expect: Literal["answer", "refuse"]
    document: str | None = None


class TenantKnowledgeSuite(Suite):
    name = "tenant_knowledge"
    description = "questions about a tenant's ingested documents are answered with the right citation"
    dataset = DATASETS / "tenant_knowledge.jsonl"
    case_model = TenantKnowledgeCase
    metrics = (
        Metric("answered_with_right_document", "answered_right", tolerance=0.0,
               description="questions the tenant's documents answer, answered citing the right document"),
        Metric("off_topic_refused", "refused", tolerance=0.0, description="off-topic questions refused"),
        Metric("off_topic_answered", "answered_off_topic", higher_is_better=False, tolerance=0.0, how="sum",
               description="off-topic questions answered from a weak match"),
    )

    async def prepare(self, env: Any, cases: list[Case]) -> None:
        retriever = await env.retriever()
        report = await retriever.ingest_paths([DOCS], TENANT, ["*"])
        if not getattr(report, "ok", True):
            raise RuntimeError(f"could not ingest {DOCS}: {report}")
        self._graph = await env.router()

    async def run(self, env: Any, case: Case) -> dict[str, Any]:
        assert isinstance(case, TenantKnowledgeCase)
        out = await self._graph.ainvoke({"messages": [("user", case.text)]}, thread_config(TENANT))
        citations = out.get("citations") or []
        return {"route": out.get("route"), "outcome": out.get("outcome"),
                "sources": sorted({str(c.get("source", "")).rsplit("/", 1)[-1] for c in citations}),
                "answer": str(out["messages"][-1].content)[:400]}

    def score(self, outputs: dict[str, Any], case: Case) -> Scores:
        assert isinstance(case, TenantKnowledgeCase)
        answered = outputs.get("outcome") == "answered"
        if case.expect == "answer":
            # The right document is cited, and the answer names it in words a reader recognises (its title).
            title = (DOCS / str(case.document)).read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
            right = (answered and case.document in (outputs.get("sources") or [])
                     and title in str(outputs.get("answer") or ""))
            return {"answered_right": flag(right), "pass": flag(right)}
        refused = outputs.get("outcome") == "refused" and not outputs.get("sources")
        return {"refused": flag(refused), "answered_off_topic": flag(answered), "pass": flag(refused)}
