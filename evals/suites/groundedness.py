"""Groundedness and citation validity of help-centre answers, and refusal when nothing supports one.

Runs the real `router` graph end to end (zero-key: extractive answers; or with a scripted answer
model when a case gives `model_reply`, to check that an answer citing what was not retrieved is
replaced). Checks per answer: every cited id was retrieved and every quote occurs in its chunk
(the RAG graph's own verifier), every cited claim is supported by the chunk it cites (exact quote,
or a fuzzy match of at least 90 for unquoted claims), the expected facts appear, and at least one
citation points at an expected article.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from interlock.evals.environment import thread_config
from interlock.evals.suite import DATASETS, Case, Metric, Scores, Suite, flag
from pydantic import Field

CLAIM_CITE = re.compile(r"\[#([0-9A-Za-z_-]{4,64})\]")
QUOTED = re.compile(r"[\"“]([^\"”]{8,400})[\"”]")


class GroundednessCase(Case):
    question: str
    tenant: str = "acme"
    groups: list[str] = Field(default_factory=lambda: ["customers"])
    expect: Literal["answer", "refuse"] = "answer"
    facts: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    model_reply: str | None = None  # scripted answer-tier reply (the model's words, not a real model)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def claim_support(answer: str, chunks: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(supported, total) cited claims: a line or sentence carrying [#id] must be backed by that chunk."""
    from rapidfuzz import fuzz

    supported = total = 0
    for line in re.split(r"\n+|(?<=\])\s+(?=[A-Z“\"])", answer):
        cited = CLAIM_CITE.findall(line)
        if not cited:
            continue
        total += 1
        texts = [c["text"] for cid in cited for key, c in chunks.items() if key.startswith(cid[:8])]
        if not texts:
            continue
        quotes = QUOTED.findall(line)
        if quotes:
            ok = all(any(_norm(q) in _norm(t) for t in texts) for q in quotes)
        else:
            claim = _norm(CLAIM_CITE.sub("", line).lstrip("-* "))
            ok = any(fuzz.partial_ratio(claim, _norm(t)) >= 90 for t in texts)
        supported += ok
    return supported, total


class GroundednessSuite(Suite):
    name = "groundedness"
    description = "answers are grounded in and cite what was retrieved; unsupported questions are refused"
    dataset = DATASETS / "groundedness.jsonl"
    case_model = GroundednessCase
    text_field = "question"
    metrics = (
        Metric("behaviour_accuracy", "behaviour_correct", tolerance=0.05,
               description="answered when it should, refused when the help centre has no answer"),
        Metric("citation_validity", "citation_valid", tolerance=0.0),
        Metric("groundedness", "grounded", tolerance=0.02),
        Metric("fact_recall", "fact_recall", tolerance=0.05),
        Metric("source_accuracy", "source_hit", tolerance=0.05),
    )

    async def prepare(self, env: Any, cases: list[Case]) -> None:
        await env.retriever()
        self._box = await env.toolbox()
        self._graph = await env.router(toolbox=self._box)

    async def run(self, env: Any, case: Case) -> dict[str, Any]:
        assert isinstance(case, GroundednessCase)
        graph = self._graph
        if case.model_reply is not None:
            from interlock.graphs.models import ScriptedChatModel, scripted_chain

            model = ScriptedChatModel(replies=[case.model_reply])
            graph = await env.router(toolbox=self._box, gateway=scripted_chain(model, tiers=("answer",)))
        config = thread_config(case.tenant, groups=case.groups)
        out = await graph.ainvoke({"messages": [("user", case.question)]}, config)
        message = out["messages"][-1]
        return {"route": out.get("route"), "outcome": out.get("outcome"), "mode": out.get("mode"),
                "answer": str(message.content),
                "citations": [{"chunk_id": c.get("chunk_id"), "source": c.get("source"), "quote": c.get("quote", ""),
                               "verified": c.get("verified", True)} for c in out.get("citations") or []],
                "retrieved": [{"chunk_id": c.get("chunk_id"), "source": c.get("source"), "text": c.get("text", "")}
                              for c in out.get("retrieved") or []]}

    def score(self, outputs: dict[str, Any], case: Case) -> Scores:
        from interlock.evals.suites.retrieval import document_key
        from interlock.graphs.rag import verify_citations

        assert isinstance(case, GroundednessCase)
        outcome = outputs.get("outcome")
        answer = str(outputs.get("answer") or "")
        citations = list(outputs.get("citations") or [])
        retrieved = list(outputs.get("retrieved") or [])
        if case.expect == "refuse":
            ok = outcome == "refused" and not citations
            return {"behaviour_correct": flag(ok), "pass": flag(ok)}
        answered = outcome == "answered"
        if not answered:  # citations and grounding are judged on answers; facts and sources end to end
            return {"behaviour_correct": 0.0, "fact_recall": 0.0 if case.facts else None,
                    "source_hit": 0.0 if case.sources else None, "pass": 0.0}
        ids = {c["chunk_id"] for c in retrieved}
        _, problems = verify_citations(answer, retrieved)  # type: ignore[arg-type]
        valid = not problems and all(c["chunk_id"] in ids and c.get("verified", True) for c in citations)
        supported, total = claim_support(answer, {c["chunk_id"]: c for c in retrieved})
        grounded = supported / total if total else 0.0
        lowered = answer.lower()
        facts = sum(f.lower() in lowered for f in case.facts) / len(case.facts) if case.facts else None
        cited_docs = {document_key(str(c.get("source") or "")) for c in citations}
        source_hit = flag(bool(cited_docs & set(case.sources))) if case.sources else None
        ok = valid and grounded >= 1.0 and facts in (None, 1.0) and source_hit in (None, 1.0)
        return {"behaviour_correct": 1.0, "citation_valid": flag(valid), "grounded": round(grounded, 4),
                "fact_recall": facts, "source_hit": source_hit, "pass": flag(ok)}

    def case_from_trace(self, text: str, trace: Any, expect: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {"question": text, **expect}
        tenant = getattr(trace, "tenant", None)
        if tenant and "tenant" not in row:
            row["tenant"] = tenant
        return row
