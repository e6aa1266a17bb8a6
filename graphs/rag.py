"""Grounded answers from the tenant's knowledge base, with citations that are checked.

retrieve (hybrid, filtered by tenant and the caller's groups) -> rerank -> budget (most relevant
chunks under a token budget) -> answer -> verify. With a model, the query is rewritten first and the
answer is generated with `[#id]` citations; without one (or when it fails) the answer is extractive:
the best sentences of the top chunks, quoted verbatim, each with its citation. Verification checks
that every cited id was retrieved and every quoted span occurs in that chunk; a model answer that
fails is replaced by the extractive one. When the context does not support an answer, it refuses.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from interlock.graphs import prompts
from interlock.graphs.events import emit
from interlock.graphs.guarded import guarded_subgraph
from interlock.graphs.models import ModelGateway, ModelsUnavailable
from interlock.graphs.nodes import guards
from interlock.graphs.nodes.answer_stream import ProgressiveAnswer, SegmentCheck, SegmentVerdict
from interlock.graphs.nodes.answers import deliver
from interlock.graphs.retrieval.chunks import Hit
from interlock.graphs.state import Citation, InterlockState, last_user_text
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

# A retrieved chunk in state: `Hit.model_dump()` without the ACL groups and per-retriever scores, plus the
# guard's marks (`guarded`, `quarantined`).
Chunk = dict[str, Any]

CITE = re.compile(r"\[#([0-9A-Za-z_-]{4,64})\]")
QUOTE = re.compile(r"[\"“]([^\"”]{8,400})[\"”]\s*\[#([0-9A-Za-z_-]{4,64})\]")
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
SHORT_ID = 8
MAX_QUERY_CHARS = 1000  # a pasted essay still searches on its start instead of failing the run

class SearchBackend(Protocol):
    async def search(self, query: str, *, tenant: str, groups: list[str], k: int = 10,
                     mode: str = "hybrid") -> list[Hit]: ...


@dataclass
class RagConfig:
    k: int = 10
    context_tokens: int = 1200
    max_chunks_per_document: int = 2
    # Extractive answers: minimum cosine between the question and a sentence to count as support.
    min_sentence_similarity: float = 0.45
    keyword_weight: float = 0.25
    # Further sentences must score within this of the best one, so answers are not padded.
    max_drop_from_best: float = 0.12
    max_sentences: int = 3
    # A model's NOT_IN_CONTEXT is overruled when a passage sentence matches the question at least this well (the
    # extractive score: cosine plus keyword bonus); the extractive answer is given instead of a refusal.
    strong_support: float = 0.75
    # An answer that cites nothing (small models often leave the [#id] markers out) gets its citations attached when
    # every sentence is backed by one passage sentence: cosine at least this, nearly all its content words and
    # every number in that passage. Otherwise it fails the citation check as before.
    attribution_similarity: float = 0.75
    attribution_coverage: float = 0.75
    # A model's rewrite is used as the search query only if it looks like one (see `looks_like_search_query`).
    max_query_words: int = 16


@dataclass
class RagDeps:
    retriever: SearchBackend | None
    gateway: ModelGateway
    embedder: Any | None = None
    config: RagConfig | None = None
    use_guards: bool = True


def short_id(chunk_id: str) -> str:
    return chunk_id[:SHORT_ID]


def _count_tokens(embedder: Any, text: str) -> int:
    counter = getattr(embedder, "count_tokens", None)
    return int(counter(text)) if counter else max(1, len(text) // 4)


def split_sentences(text: str) -> list[str]:
    out = []
    for part in SENTENCE_SPLIT.split(text):
        part = part.strip().lstrip("#-*> ").strip()
        if len(part) >= 20 and not part.endswith(":"):
            out.append(part)
    return out


def source_name(chunk: Chunk) -> str:
    """What a reader recognises: the document's title and section ("Refunds › Timing"), not a chunk id."""
    title = str(chunk.get("title") or chunk.get("source") or "help centre").strip()
    raw = chunk.get("section") or ""
    section = str(raw[-1] if isinstance(raw, list) and raw else raw if isinstance(raw, str) else "").split(" > ")[-1]
    section = section.strip()
    return f"{title} › {section}" if section and section.lower() != title.lower() else title


def name_sources(answer: str, chunks: list[Chunk]) -> str:
    """Name the document and section before each verified `[#id]` marker (the id stays for checking)."""
    by_short = {short_id(c["chunk_id"]): c for c in chunks}

    def named(match: re.Match[str]) -> str:
        chunk = by_short.get(match.group(1)[:SHORT_ID])
        return f"({source_name(chunk)}) {match.group(0)}" if chunk is not None else match.group(0)

    return CITE.sub(named, answer)


_LOOSE_CITE = re.compile(r"(?P<open>\[\s*#?|\(\s*#?|(?<![\w#/])#)(?P<ids>[0-9A-Za-z_-]{4,64}(?:\s*[,;]\s*#?[0-9A-Za-z_-]{4,64})*)"
                         r"(?P<close>\s*[\])])?")


def normalise_citations(answer: str, chunks: list[Chunk]) -> str:
    """Write the citation forms models use (`#id`, `[#id]`, `[id]`, `(id)`, `(#id)`, `[id1, id2]`) as `[#id]`, for
    ids of retrieved passages only: other bracketed text is left alone, and an id nobody retrieved keeps its
    form, so it still fails verification if written as `[#id]`."""
    known = {short_id(c["chunk_id"]) for c in chunks}

    def fix(match: re.Match[str]) -> str:
        opened, closed = match.group("open").strip(), (match.group("close") or "").strip()
        if opened[:1] in "[(" and closed != {"[": "]", "(": ")"}[opened[:1]]:
            return match.group(0)  # an unclosed bracket is not a citation
        ids = [i.strip().lstrip("#") for i in re.split(r"[,;]", match.group("ids"))]
        if not all(i[:SHORT_ID] in known for i in ids):
            return match.group(0)
        return " ".join(f"[#{i}]" for i in ids)

    return _LOOSE_CITE.sub(fix, answer)


def verify_citations(answer: str, chunks: list[Chunk]) -> tuple[list[Citation], list[str]]:
    """The answer's citations, and the problems found (empty when every citation checks out)."""
    by_short = {short_id(c["chunk_id"]): c for c in chunks}
    problems: list[str] = []
    citations: dict[str, Citation] = {}
    for cited in CITE.findall(answer):
        chunk = by_short.get(cited[:SHORT_ID])
        if chunk is None:
            problems.append(f"cited [#{cited}] was not retrieved")
            continue
        citations.setdefault(chunk["chunk_id"], {"chunk_id": chunk["chunk_id"], "title": chunk.get("title", ""),
                                                 "source": chunk.get("source", ""), "quote": "", "verified": True})
    for quote, cited in QUOTE.findall(answer):
        chunk = by_short.get(cited[:SHORT_ID])
        if chunk is None:
            continue
        if _normalise(quote) not in _normalise(chunk.get("text", "")):
            problems.append(f"quote attributed to [#{cited}] does not appear in it")
            citations[chunk["chunk_id"]]["verified"] = False
        else:
            citations[chunk["chunk_id"]]["quote"] = quote
    if not citations:
        problems.append("the answer cites nothing")
    return list(citations.values()), problems


_SENTENCE_END = re.compile(r"[.!?][\"')\]”’]*\s*$")


def citation_gate(chunks: list[Chunk], attributor: Attributor | None = None) -> SegmentCheck:
    """The per-sentence form of the checks `draft_answer` runs on a whole model answer, for streaming it: a
    sentence with a citation is released once its ids were retrieved and its quotes occur in them (with the
    sources named as in the final answer); `NOT_IN_CONTEXT` or a failing citation stops the release.

    With an `attributor`, an answer that has cited nothing so far is judged a whole sentence at a time, as the
    final check will judge it: a sentence backed by one passage is released with that citation attached; the
    first one that is not is held (the final answer decides), and attribution stops for the rest of the answer.
    Once attributed text went out, a later failure or a real citation stops the release (the final answer is
    then another one: the extractive quotes, or the model's own citations)."""
    attributing, attributed = attributor is not None, False

    async def check(segment: str) -> SegmentVerdict:
        nonlocal attributing, attributed
        if "NOT_IN_CONTEXT" in segment:
            return SegmentVerdict(text=segment, stop="not_in_context")
        segment = normalise_citations(segment, chunks)  # `#id`, `(id)`… as the final answer will read them
        if CITE.search(segment):
            if attributed:
                return SegmentVerdict(text=segment, stop="citation_after_attribution")
            attributing = False
            _, problems = verify_citations(segment, chunks)
            if problems:
                return SegmentVerdict(text=segment, stop="citation")
            return SegmentVerdict(text=name_sources(segment, chunks), passes=True)
        if not attributing or attributor is None or not _terms(segment):
            return SegmentVerdict(text=segment)  # held until a verified citation (released once one passed)
        if not _SENTENCE_END.search(segment):
            return SegmentVerdict(text=segment, wait=True)  # a sentence is attributed whole
        cited = await asyncio.to_thread(attributor.attribute, segment)
        if cited is None:
            attributing = False
            if attributed:
                return SegmentVerdict(text=segment, stop="unattributed")
            return SegmentVerdict(text=segment)
        attributed = True
        return SegmentVerdict(text=name_sources(cited, chunks), passes=True)

    return check


_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("""a about an and any are as at be by can could do does for from have how i if in is it my
    of on or our the their this to was we what when where which who why will with you your me much long
    does did get got please""".split())


def _terms(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2}


_ANSWERISH = re.compile(r"^(?:yes|no|sure|certainly|of course|you can|you should|you will|you'll|we |our |it "
                        r"|to |the answer|as an|i )|\b(?:i|we|you)\b.*\b(?:can|will|should|must|need)\b", re.I)


def looks_like_search_query(candidate: str, question: str, max_words: int = 16) -> bool:
    """A model's rewrite is a search query, not an answer: one short line, no sentence after sentence, not
    phrased as a reply, sharing a content word with the question, and adding no number the question did not
    have (an invented "5-7 business days" is an answer, and a wrong one becomes the query)."""
    text = candidate.strip().strip('"“”\'`')
    if not text or "\n" in text or len(text.split()) > max_words:
        return False
    if re.search(r"[.!?]\s+\S", text) or _ANSWERISH.search(text):
        return False
    asked = _terms(question)
    if asked and not (asked & _terms(text)):
        return False
    return set(re.findall(r"\d+", text)) <= set(re.findall(r"\d+", question))


_NEGATION = re.compile(r"\b(?:not|no|never|none|cannot|without)\b|n't\b", re.I)


def _negated(sentence: str) -> bool:
    return bool(_NEGATION.search(sentence))


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+(?:[.,]\d+)?", text))


class Attributor:
    """Attaches citations to sentences that cite nothing, when each is clearly backed by one retrieved passage
    sentence: meaning (cosine), wording (the share of its content words found in that passage) and every number it
    states (found in that passage), with the same negation. The passages' sentences are embedded once, so the
    streaming gate can ask sentence by sentence and the final check whole, with the same verdicts."""

    def __init__(self, chunks: list[Chunk], embed: Any, *, min_similarity: float = 0.75,
                 min_coverage: float = 0.75) -> None:
        self._chunks, self._embed = chunks, embed
        self._min_similarity, self._min_coverage = min_similarity, min_coverage
        self._candidates = [(s, c) for c in chunks for s in split_sentences(c.get("text", ""))]
        self._vectors: Any = None

    def attribute(self, answer: str) -> str | None:
        """`answer` with a `[#id]` after each sentence, naming the passage that backs it, or None when any sentence
        is not clearly backed (or the answer already cites something: the normal verification judges it)."""
        # Every sentence, short ones too: an unchecked "Returns are free." must not ride along.
        sentences = [s for s in (p.strip().lstrip("#-*> ").strip() for p in SENTENCE_SPLIT.split(answer))
                     if _terms(s)]
        if not sentences or not self._candidates or CITE.search(answer):
            return None
        if self._vectors is None:
            self._vectors = np.asarray(self._embed([s for s, _ in self._candidates]), dtype=np.float32)
        sims = np.asarray(self._embed(sentences), dtype=np.float32) @ self._vectors.T
        cited, at = answer, 0
        for i, sentence in enumerate(sentences):
            best = int(np.argmax(sims[i]))
            passage, chunk = self._candidates[best]
            words, text = _terms(sentence), chunk.get("text", "")
            coverage = len(words & _terms(text)) / max(len(words), 1)
            if (sims[i][best] < self._min_similarity or coverage < self._min_coverage
                    or not _numbers(sentence) <= _numbers(text)):
                return None
            if _negated(sentence) != _negated(passage):  # "are not free" is close to "are free" in meaning
                return None
            at = cited.find(sentence, at)
            if at < 0:
                return None
            at += len(sentence)
            marker = f" [#{short_id(chunk['chunk_id'])}]"
            cited = cited[:at] + marker + cited[at:]
            at += len(marker)
        return cited


def attribute_citations(answer: str, chunks: list[Chunk], embed: Any, *, min_similarity: float = 0.75,
                        min_coverage: float = 0.75) -> str | None:
    """`Attributor(...).attribute(answer)` for one answer."""
    return Attributor(chunks, embed, min_similarity=min_similarity, min_coverage=min_coverage).attribute(answer)


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


async def knowledge_evidence(retriever: Any, embedder: Any, question: str, *, tenant: str,
                             groups: list[str], k: int = 5) -> float:
    """How well the tenant's own documents match `question`: the best cosine between it and a sentence of the
    top passages (the measure the extractive answer quotes by), 0.0 when nothing is retrieved.

    The router asks this before refusing a message as out of scope: whatever a tenant has ingested widens
    what counts as a knowledge question, and RAG still refuses when the passages do not answer it.
    """
    if retriever is None or not question.strip():
        return 0.0
    hits = await retriever.search(" ".join(question.split())[:MAX_QUERY_CHARS], tenant=tenant, groups=groups,
                                  k=k, mode="hybrid")
    sentences = [s for h in hits if (h.get("tenant") if isinstance(h, dict) else getattr(h, "tenant", tenant)) == tenant
                 for s in split_sentences(h.get("text", "") if isinstance(h, dict) else getattr(h, "text", ""))]
    if not sentences:
        return 0.0
    vectors = np.asarray(await asyncio.to_thread(embedder.embed, [question, *sentences]), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return float((vectors[1:] @ vectors[0]).max())


def rag_question(state: InterlockState) -> str:
    """What RAG answers: the question asked beside a request (the router split it off), else the last message."""
    return state.get("question") or last_user_text(state)


def _get_embedder(deps: RagDeps) -> Any:
    if deps.embedder is None:
        from interlock.graphs.retrieval.embeddings import get_embedder

        deps.embedder = get_embedder()
    return deps.embedder


def build_rag(deps: RagDeps) -> CompiledStateGraph:
    cfg = deps.config or RagConfig()

    async def retrieve(state: InterlockState) -> dict[str, Any]:
        question = rag_question(state)
        query, mode = question, state.get("mode") or "zero-key"
        if deps.gateway.has("router") and mode != "degraded":
            try:
                reply, _ = await deps.gateway.ainvoke("router", [SystemMessage(prompts.RAG_REWRITE), HumanMessage(question)],
                                                      tenant=state.get("tenant", ""), feature="rag.rewrite")
                rewritten = str(reply.content).strip().strip('"“”\'`')
                if looks_like_search_query(rewritten, question, cfg.max_query_words):
                    query = rewritten
            except ModelsUnavailable:
                pass
        query = " ".join(query.split())[:MAX_QUERY_CHARS]
        if deps.retriever is None or not query:
            return {"retrieved": []}
        principal = state.get("principal") or {}
        started = time.perf_counter()
        hits = await deps.retriever.search(query, tenant=state.get("tenant", ""),
                                           groups=list(principal.get("groups") or []), k=cfg.k, mode="hybrid")
        await emit("retrieval", {
            "name": "hybrid", "inputs": {"query": query}, "mode": "hybrid", "k": cfg.k,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "chunks": [{"chunk_id": h.chunk_id, "score": h.score} for h in hits],
        })
        # Defence in depth: never let another tenant's text into the context.
        chunks = [h.model_dump(exclude={"groups", "scores"}) for h in hits if h.tenant == state.get("tenant")]
        update: dict[str, Any] = {"retrieved": chunks, "tainted": any(not c["trusted"] for c in chunks)}
        if deps.use_guards:
            # Scan in the node that fetched the text, so raw chunks never enter the state (or any stream mode).
            scanned = await guards.retrieved_guard({**state, "retrieved": chunks})
            update.update({k: v for k, v in scanned.items() if k != "tainted"})
            update["tainted"] = bool(update["tainted"] or scanned.get("tainted"))
        return update

    def rerank(state: InterlockState) -> dict[str, Any]:
        # Keep retrieval's fused order but spread the context over documents.
        per_doc: dict[str, int] = {}
        kept = []
        for chunk in sorted(state.get("retrieved") or [], key=lambda c: -c.get("score", 0.0)):
            doc = chunk.get("document_id", "")
            if per_doc.get(doc, 0) >= cfg.max_chunks_per_document:
                continue
            per_doc[doc] = per_doc.get(doc, 0) + 1
            kept.append(chunk)
        return {"retrieved": kept}

    def budget(state: InterlockState) -> dict[str, Any]:
        embedder = deps.embedder
        used, kept = 0, []
        for chunk in state.get("retrieved") or []:
            cost = _count_tokens(embedder, chunk.get("text", ""))
            if used + cost > cfg.context_tokens and kept:
                continue
            used += cost
            kept.append(chunk)
        return {"retrieved": kept}

    async def extractive(question: str, chunks: list[Chunk]) -> tuple[str, list[Citation], float]:
        """The quoted answer, its citations, and the best sentence's score (how strongly the passages answer)."""
        candidates = [(s, c) for c in chunks for s in split_sentences(c.get("text", ""))]
        if not candidates:
            return "", [], 0.0
        embedder = _get_embedder(deps)
        vectors = await asyncio.to_thread(embedder.embed, [question] + [s for s, _ in candidates])
        vectors = np.asarray(vectors, dtype=np.float32)
        # Meaning plus a bonus for the question's own content words ("PayPal" must count).
        terms = _terms(question)
        overlap = np.array([len(terms & _terms(s)) / max(len(terms), 1) for s, _ in candidates], dtype=np.float32)
        sims = vectors[1:] @ vectors[0] + cfg.keyword_weight * overlap
        best = float(sims.max())
        floor = max(cfg.min_sentence_similarity, best - cfg.max_drop_from_best)
        order = [int(i) for i in np.argsort(-sims) if sims[int(i)] >= floor][: cfg.max_sentences]
        if not order:
            return "", [], best
        lines, citations = [], {}
        for i in sorted(order, key=lambda i: -sims[i]):
            sentence, chunk = candidates[i]
            lines.append(f"- “{sentence}” ({source_name(chunk)}) [#{short_id(chunk['chunk_id'])}]")
            citations.setdefault(chunk["chunk_id"], {"chunk_id": chunk["chunk_id"], "quote": sentence,
                                                     "title": chunk.get("title", ""),
                                                     "source": chunk.get("source", ""), "verified": True})
        return "From our help centre:\n" + "\n".join(lines), list(citations.values()), best

    async def answer(state: InterlockState) -> dict[str, Any]:
        # A model answer streams sentence by sentence once its citations check out (nothing before the first).
        # An answer that cites nothing streams too, each sentence once attributed to the passage backing it.
        chunks = state.get("retrieved") or []
        attributor = Attributor(chunks, lambda texts: _get_embedder(deps).embed(texts),
                                min_similarity=cfg.attribution_similarity,
                                min_coverage=cfg.attribution_coverage) if chunks else None
        stream = ProgressiveAnswer(dict(state), use_guards=deps.use_guards, gate_until_pass=True,
                                   segment_check=citation_gate(chunks, attributor))
        return await deliver(deps.use_guards, state, await draft_answer(state, stream, attributor), stream=stream)

    async def draft_answer(state: InterlockState, stream: ProgressiveAnswer | None = None,
                           attributor: Attributor | None = None) -> dict[str, Any]:
        question = rag_question(state)
        chunks = state.get("retrieved") or []
        mode = state.get("mode") or "zero-key"
        verdicts: list[dict[str, Any]] = []
        if chunks and deps.gateway.has("answer") and mode != "degraded":
            context = "\n\n".join(f"[#{short_id(c['chunk_id'])}] {c.get('title', '')}\n{c.get('text', '')}"
                                  for c in chunks)
            try:
                reply, provider = await deps.gateway.ainvoke(
                    "answer", [SystemMessage(prompts.RAG_ANSWER.format(context=context)), HumanMessage(question)],
                    tenant=state.get("tenant", ""), feature="rag.answer", stream=stream)
            except ModelsUnavailable:
                mode = "degraded"
            else:
                text = normalise_citations(str(reply.content).strip(), chunks)
                if "NOT_IN_CONTEXT" in text:
                    # Checked against the evidence: a passage that plainly answers overrules the model's refusal.
                    quoted, quoted_citations, best = await extractive(question, chunks)
                    if not quoted or best < cfg.strong_support:
                        return _refusal("model", state)
                    verdicts.append({"guard": "not_in_context", "ok": False, "support": round(best, 3)})
                    return _quoted(quoted, quoted_citations, "degraded", verdicts)
                citations, problems = verify_citations(text, chunks)
                if problems == ["the answer cites nothing"]:
                    attributor = attributor or Attributor(chunks, _get_embedder(deps).embed,
                                                          min_similarity=cfg.attribution_similarity,
                                                          min_coverage=cfg.attribution_coverage)
                    attributed = await asyncio.to_thread(attributor.attribute, text)
                    if attributed is not None:
                        text = attributed
                        citations, problems = verify_citations(text, chunks)
                        verdicts.append({"guard": "citations", "ok": True, "attributed": True})
                if not problems:
                    text = name_sources(text, chunks)
                    return {"messages": [AIMessage(content=text, name="interlock", response_metadata={
                        "interlock_mode": "model", "provider": provider, "outcome": "answered",
                        "citations": citations})], "citations": citations, "mode": "model", "outcome": "answered",
                        **({"guard_verdicts": verdicts} if verdicts else {})}
                # Unverifiable citations: fall back to quoting the passages verbatim.
                verdicts.append({"guard": "citations", "ok": False, "problems": problems[:5]})
                mode = "degraded"
        text, citations, _ = await extractive(question, chunks) if chunks else ("", [], 0.0)
        if not text:
            # No model wrote this refusal: the state says which mode did.
            return {**_refusal(mode if mode != "model" else "zero-key", state), "guard_verdicts": verdicts}
        return _quoted(text, citations, mode, verdicts)

    def _quoted(text: str, citations: list[Citation], mode: str, verdicts: list[dict[str, Any]]) -> dict[str, Any]:
        note = ("zero-key mode: extractive answer quoting the help centre, no language model" if mode == "zero-key"
                else "degraded mode: no model answer could be used, so this quotes the help centre")
        message = AIMessage(content=f"{text}\n\n({note})", name="interlock",
                            response_metadata={"interlock_mode": mode, "outcome": "answered", "citations": citations})
        return {"messages": [message], "citations": citations, "mode": mode, "outcome": "answered",
                "guard_verdicts": verdicts}

    def _refusal(mode: str, state: InterlockState) -> dict[str, Any]:
        text = ("I couldn't find that in our help centre, so I won't guess. You can rephrase the question, "
                "or ask me to hand you to a person.")
        if mode != "model":
            text += f"\n\n({mode} mode: no supporting passage found)"
        return {"messages": [AIMessage(content=text, name="interlock",
                                       response_metadata={"interlock_mode": mode, "outcome": "refused"})],
                "citations": [], "outcome": "refused", "mode": mode}

    builder = StateGraph(InterlockState)
    builder.add_node("retrieve", retrieve)
    builder.add_node("rerank", rerank)
    builder.add_node("budget", budget)
    builder.add_node("answer", answer)
    builder.add_edge(START, "retrieve")
    builder.add_edge("retrieve", "rerank")
    builder.add_edge("rerank", "budget")
    builder.add_edge("budget", "answer")
    builder.add_edge("answer", END)
    return builder.compile(name="rag")


def make_graph(deps: RagDeps | None = None) -> CompiledStateGraph:
    """`rag` as served on its own (langgraph.json): guarded, default retriever and models."""
    if deps is None:
        from interlock.graphs.defaults import Lazy, default_retriever

        deps = RagDeps(retriever=Lazy(default_retriever), gateway=ModelGateway.from_policy())
    return guarded_subgraph("rag", build_rag(deps), use_guards=deps.use_guards).compile(name="rag")


graph = make_graph()
