"""Retrieval quality on the sample knowledge base: recall@5, nDCG@10 and MRR@10 per query.

Searches the real retriever (hybrid mode, the tenant and the caller's groups, as the RAG graph
does) over the sample help centre ingested with its real ACLs. Results are per document: the
ranking is the order in which documents first appear. The scoring functions are the retrieval
area's own (graphs.retrieval.beir). A query may also name documents that must NOT be returned to
that caller (another tenant's or staff-only articles).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interlock.evals.suite import DATASETS, Case, Metric, Scores, Suite, flag
from pydantic import Field


class RetrievalCase(Case):
    query: str
    tenant: str = "acme"
    groups: list[str] = Field(default_factory=lambda: ["customers"])
    relevant: list[str] = Field(min_length=1)  # paths under graphs/knowledge, e.g. acme/public/refunds.md
    forbidden: list[str] = Field(default_factory=list)


def document_key(source: str) -> str:
    """A hit's document as a path relative to the knowledge folder (what the dataset names)."""
    from interlock.graphs.knowledge import KNOWLEDGE_DIR

    path = Path(source)
    try:
        return path.resolve().relative_to(KNOWLEDGE_DIR).as_posix()
    except ValueError:
        return source


class RetrievalSuite(Suite):
    name = "retrieval"
    description = "recall@5, nDCG@10 and MRR@10 of hybrid search on the sample knowledge base"
    dataset = DATASETS / "retrieval.jsonl"
    case_model = RetrievalCase
    text_field = "query"
    metrics = (
        Metric("recall_at_5", "recall_at_5", tolerance=0.03),
        Metric("ndcg_at_10", "ndcg_at_10", tolerance=0.03),
        Metric("mrr_at_10", "mrr_at_10", tolerance=0.03),
        Metric("acl_leaks", "acl_leak", higher_is_better=False, tolerance=0.0, how="sum",
               description="queries that returned a document the caller may not read"),
    )

    async def prepare(self, env: Any, cases: list[Case]) -> None:
        self._retriever = await env.retriever()

    async def run(self, env: Any, case: Case) -> dict[str, Any]:
        assert isinstance(case, RetrievalCase)
        hits = await self._retriever.search(case.query, tenant=case.tenant, groups=case.groups, k=10, mode="hybrid")
        ranked = list(dict.fromkeys(document_key(h.source) for h in hits))
        return {"ranked": ranked}

    def score(self, outputs: dict[str, Any], case: Case) -> Scores:
        from interlock.graphs.retrieval.beir import mrr_at, ndcg_at, recall_at

        assert isinstance(case, RetrievalCase)
        ranked = list(outputs.get("ranked") or [])
        rels = dict.fromkeys(case.relevant, 1)
        recall = recall_at(ranked, rels, 5)
        leak = bool(set(case.forbidden) & set(ranked))
        return {"recall_at_5": recall, "ndcg_at_10": ndcg_at(ranked, rels, 10), "mrr_at_10": mrr_at(ranked, rels, 10),
                "acl_leak": flag(leak), "pass": flag(recall >= 1.0 and not leak)}

    def case_from_trace(self, text: str, trace: Any, expect: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {"query": text, **expect}
        tenant = getattr(trace, "tenant", None)
        if tenant and "tenant" not in row:
            row["tenant"] = tenant
        return row
