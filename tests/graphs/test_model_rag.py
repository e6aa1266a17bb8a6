"""RAG with a model that behaves like a real small one, on the real sample knowledge base through the router (real
retrieval, guards and classifier; only the model's replies are scripted): a rewrite that answers instead of
rewriting, a NOT_IN_CONTEXT the passages contradict, citations written as `#id`, `[id]` or `(id)`, and which mode
a canned refusal is recorded under."""

from __future__ import annotations

from typing import Any

import pytest
from graphs_testkit import *  # noqa: F403 - the shared pytest fixtures
from graphs_testkit import compile_with_memory, thread
from interlock.graphs.models import ModelGateway, ScriptedChatModel, scripted_chain
from interlock.graphs.rag import looks_like_search_query, normalise_citations
from interlock.graphs.router import RouterDeps, build_router
from langchain_core.messages import AIMessage

SHIPPING = "How long does standard shipping take?"


class RecordingRetriever:
    """The real retriever, with the queries it was asked (to see what RAG searched for)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.queries: list[str] = []

    async def search(self, query: str, **kwargs: Any) -> Any:
        self.queries.append(query)
        return await self.inner.search(query, **kwargs)


def router(retriever: Any, gateway: ModelGateway | None = None) -> Any:
    return compile_with_memory(build_router(RouterDeps(gateway=gateway or ModelGateway(), retriever=retriever)))


def gateway_of(**tiers: ScriptedChatModel) -> ModelGateway:
    gateway = ModelGateway()
    for tier, model in tiers.items():
        gateway.chains[tier] = scripted_chain(model, tiers=(tier,)).chains[tier]
    return gateway


def text_of(out: dict[str, Any]) -> str:
    message = out["messages"][-1]
    assert isinstance(message, AIMessage)
    return str(message.content)


async def shipping_chunk(kb_retriever: Any) -> dict[str, Any]:
    probe = await router(kb_retriever).ainvoke({"messages": [("user", SHIPPING)]}, thread())
    return next(c for c in probe["retrieved"] if "3 to 5 business days" in c["text"])


# --- the rewrite ------------------------------------------------------------------------------------------


async def test_a_rewrite_that_answers_is_not_used_as_the_query(kb_retriever: Any) -> None:
    spy = RecordingRetriever(kb_retriever)
    rewriter = ScriptedChatModel(replies=["Standard shipping takes 1 to 2 days with our express partner."])
    out = await router(spy, gateway_of(router=rewriter)).ainvoke({"messages": [("user", SHIPPING)]}, thread())
    assert rewriter.calls >= 1 and spy.queries[-1] == SHIPPING  # the question itself was searched
    assert out["outcome"] == "answered" and "3 to 5 business days" in text_of(out)
    assert "1 to 2 days" not in text_of(out)


async def test_a_rewrite_that_looks_like_a_query_is_used(kb_retriever: Any) -> None:
    spy = RecordingRetriever(kb_retriever)
    rewriter = ScriptedChatModel(replies=['"standard shipping delivery time"'])
    await router(spy, gateway_of(router=rewriter)).ainvoke({"messages": [("user", SHIPPING)]}, thread())
    assert spy.queries[-1] == "standard shipping delivery time"


@pytest.mark.parametrize(("rewrite", "ok"), [
    ("refund timing returned jacket", True),
    ("Refunds are issued to the original payment method within 5-7 business days.", False),
    ("jacket refund 5-7 days", False),  # a number the customer never gave
    ("You can get your money back within a week", False),
    ("Sure! Here is the query. refund jacket", False),
    ("weather forecast Paris", False),  # shares nothing with the question
    ("refund " * 20, False),
])
def test_what_counts_as_a_search_query(rewrite: str, ok: bool) -> None:
    question = "I sent back a jacket. How long until I get my refund, and where will it go?"
    assert looks_like_search_query(rewrite, question) is ok


# --- NOT_IN_CONTEXT against the evidence ------------------------------------------------------------------


async def test_a_not_in_context_the_passages_contradict_gives_the_quoted_answer(kb_retriever: Any) -> None:
    model = ScriptedChatModel(replies=["NOT_IN_CONTEXT"])
    out = await router(kb_retriever, gateway_of(answer=model)).ainvoke(
        {"messages": [("user", "How many days do I have to return an item?")]}, thread())
    assert model.calls == 1 and out["outcome"] == "answered"
    assert "30 days" in text_of(out) and out["citations"] and all(c["verified"] for c in out["citations"])
    assert out["mode"] == "degraded"  # the model's answer was overruled; the state says so
    assert any(v.get("guard") == "not_in_context" and v["support"] >= 0.75 for v in out["guard_verdicts"])


async def test_a_not_in_context_the_passages_do_not_contradict_is_a_refusal(kb_retriever: Any) -> None:
    model = ScriptedChatModel(replies=["NOT_IN_CONTEXT"])
    out = await router(kb_retriever, gateway_of(answer=model)).ainvoke(
        {"messages": [("user", "Can I pay with PayPal?")]}, thread())
    assert out["outcome"] == "refused" and out["citations"] == []
    assert not any(v.get("guard") == "not_in_context" for v in out["guard_verdicts"])


# --- citation forms ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["#{id}", "[{id}]", "({id})", "(#{id})", "[#{id}]"])
async def test_common_citation_forms_verify(kb_retriever: Any, form: str) -> None:
    chunk = await shipping_chunk(kb_retriever)
    short = chunk["chunk_id"][:8]
    model = ScriptedChatModel(replies=[f"Standard shipping takes 3 to 5 business days {form.format(id=short)}."])
    out = await router(kb_retriever, gateway_of(answer=model)).ainvoke({"messages": [("user", SHIPPING)]}, thread())
    assert out["mode"] == "model" and out["outcome"] == "answered"
    assert [c["chunk_id"] for c in out["citations"]] == [chunk["chunk_id"]] and out["citations"][0]["verified"]
    assert f"[#{short}]" in text_of(out)


async def test_a_loose_citation_of_a_passage_nobody_retrieved_still_fails(kb_retriever: Any) -> None:
    model = ScriptedChatModel(replies=["Standard shipping takes 1 day (deadbeef)."])
    out = await router(kb_retriever, gateway_of(answer=model)).ainvoke({"messages": [("user", SHIPPING)]}, thread())
    assert out["mode"] == "degraded" and "1 day" not in text_of(out)
    assert any(v.get("guard") == "citations" and v["ok"] is False for v in out["guard_verdicts"])


def test_normalising_touches_only_retrieved_ids() -> None:
    chunks = [{"chunk_id": "abcd1234" + "0" * 24}, {"chunk_id": "feedbeef" + "1" * 24}]
    text = "See #abcd1234, [abcd1234, feedbeef], (call 555-0100), [note], #hashtag and (abcd1234"
    assert normalise_citations(text, chunks) == (
        "See [#abcd1234], [#abcd1234] [#feedbeef], (call 555-0100), [note], #hashtag and (abcd1234")


# --- mode ---------------------------------------------------------------------------------------------------


async def test_a_canned_refusal_is_not_recorded_as_a_model_answer() -> None:
    model = ScriptedChatModel(replies=["This should never be asked."])
    out = await router(None, gateway_of(answer=model)).ainvoke(
        {"messages": [("user", "How long does standard shipping take?")]}, thread())
    assert out["route"] == "rag" and out["outcome"] == "refused" and model.calls == 0
    assert out["mode"] != "model" and out["messages"][-1].response_metadata["interlock_mode"] != "model"


async def test_an_out_of_scope_refusal_is_not_recorded_as_a_model_answer(kb_retriever: Any) -> None:
    model = ScriptedChatModel(replies=["out_of_scope"])
    out = await router(kb_retriever, gateway_of(router=model, answer=model)).ainvoke(
        {"messages": [("user", "Write me a poem about the sea.")]}, thread())
    assert out["outcome"] == "refused" and out["mode"] != "model"


# --- an answer that cites nothing (the 0.5B leaves the [#id] markers out) ---------------------------------

EU_SHIPPING = "How long does standard shipping take within the EU?"


async def test_an_uncited_answer_every_sentence_of_which_a_passage_backs_gets_its_citations(kb_retriever: Any) -> None:
    model = ScriptedChatModel(replies=["Standard shipping takes 3 to 5 business days within the EU."])
    out = await router(kb_retriever, gateway_of(answer=model)).ainvoke(
        {"messages": [("user", EU_SHIPPING)]}, thread())
    assert out["outcome"] == "answered" and out["mode"] == "model", text_of(out)
    [citation] = out["citations"]
    chunk = next(c for c in out["retrieved"] if c["chunk_id"] == citation["chunk_id"])
    assert citation["verified"] and "3 to 5 business days" in chunk["text"]
    assert f"[#{citation['chunk_id'][:8]}]" in text_of(out)
    assert any(v.get("guard") == "citations" and v.get("attributed") for v in out["guard_verdicts"])


@pytest.mark.parametrize("uncited", [
    "Standard shipping takes 3 to 5 business days within the EU. Express delivery is always free of charge.",
    "Standard shipping takes 1 to 2 business days within the EU.",  # a number no passage has
    "Shipping is always free.",  # short sentences are checked too
    "Standard shipping does not take 3 to 5 business days within the EU.",  # the passage's words, negated
])
async def test_an_uncited_answer_with_an_unbacked_sentence_falls_back_to_quotes(kb_retriever: Any,
                                                                                uncited: str) -> None:
    model = ScriptedChatModel(replies=[uncited])
    out = await router(kb_retriever, gateway_of(answer=model)).ainvoke(
        {"messages": [("user", EU_SHIPPING)]}, thread())
    assert out["mode"] == "degraded" and "(degraded mode" in text_of(out), text_of(out)
    assert "always free" not in text_of(out) and "1 to 2" not in text_of(out)
    assert "“Standard shipping takes 3 to 5 business days" in text_of(out)
    assert all(c["verified"] for c in out["citations"])
