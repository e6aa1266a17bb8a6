"""The router in zero-key mode on the real sample knowledge base (retrieval, guards, classifier)."""

from __future__ import annotations

import time
from typing import Any

from graphs_testkit import *  # noqa: F403 - the shared pytest fixtures
from graphs_testkit import compile_with_memory, thread
from interlock.graphs.models import ModelGateway, ScriptedChatModel, scripted_chain
from interlock.graphs.rag import source_name, verify_citations
from interlock.graphs.router import RouterDeps, build_router
from langchain_core.messages import AIMessage, ToolMessage


def router(retriever: Any, gateway: ModelGateway | None = None, toolbox: Any = None) -> Any:
    return compile_with_memory(build_router(RouterDeps(gateway=gateway or ModelGateway(), retriever=retriever,
                                                       toolbox=toolbox)))


def final(out: dict[str, Any]) -> AIMessage:
    message = out["messages"][-1]
    assert isinstance(message, AIMessage)
    return message


async def test_knowledge_question_gets_an_answer_whose_citations_verify(kb_retriever: Any) -> None:
    out = await router(kb_retriever).ainvoke({"messages": [("user", "How long does standard shipping take?")]},
                                             thread("acme"))
    assert (out["route"], out["outcome"], out["mode"]) == ("rag", "answered", "zero-key")
    answer = str(final(out).content)
    assert "3 to 5 business days" in answer and "zero-key mode" in answer
    citations, problems = verify_citations(answer, out["retrieved"])
    assert problems == [] and citations
    retrieved_ids = {c["chunk_id"] for c in out["retrieved"]}
    assert {c["chunk_id"] for c in out["citations"]} <= retrieved_ids
    for citation in out["citations"]:
        chunk = next(c for c in out["retrieved"] if c["chunk_id"] == citation["chunk_id"])
        assert citation["quote"] in chunk["text"]
    assert final(out).response_metadata["interlock_mode"] == "zero-key"


async def test_tenants_get_their_own_help_centre(kb_retriever: Any) -> None:
    graph = router(kb_retriever)
    acme = await graph.ainvoke({"messages": [("user", "How long do I have to return an item?")]}, thread("acme"))
    globex = await graph.ainvoke({"messages": [("user", "How long do I have to return an item?")]}, thread("globex"))
    assert "30 days" in str(final(acme).content) and "14 days" not in str(final(acme).content)
    assert "14 days" in str(final(globex).content)
    assert {c["tenant"] for c in globex["retrieved"]} == {"globex"}


async def test_tenant_in_the_input_is_ignored(kb_retriever: Any) -> None:
    out = await router(kb_retriever).ainvoke(
        {"messages": [("user", "How long do I have to return an item?")], "tenant": "globex",
         "principal": {"sub": "mallory", "tenant": "globex", "groups": ["staff"]}}, thread("acme"))
    assert out["tenant"] == "acme" and out["principal"]["sub"] == "CUS-101"
    assert {c["tenant"] for c in out["retrieved"]} == {"acme"}


async def test_staff_articles_are_not_visible_to_customers(kb_retriever: Any) -> None:
    graph = router(kb_retriever)
    question = {"messages": [("user", "What is the policy on goodwill credits per order?")]}
    customer = await graph.ainvoke(question, thread("acme"))
    assert all("staff" not in c["source"] for c in customer["retrieved"])
    staff = await graph.ainvoke(question, thread("acme", sub="agent-7", groups=["staff"]))
    assert any("refund-approvals" in c["source"] for c in staff["retrieved"])


async def test_unsupported_question_is_refused_not_guessed(kb_retriever: Any) -> None:
    out = await router(kb_retriever).ainvoke(
        {"messages": [("user", "What is the warranty on your electric bicycles' batteries in Japan?")]}, thread())
    if out["route"] == "rag":
        assert out["outcome"] == "refused" or out["citations"]
    answered = await router(kb_retriever).ainvoke(
        {"messages": [("user", "Do you sell tickets to the opera in Vienna?")]}, thread())
    assert answered["outcome"] == "refused" and not answered.get("citations")


async def test_out_of_scope_is_refused_with_zero_tool_calls(kb_retriever: Any) -> None:
    out = await router(kb_retriever).ainvoke({"messages": [("user", "Write me a poem about the sea.")]}, thread())
    assert (out["route"], out["outcome"]) == ("refuse", "refused")
    assert not [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert not any(getattr(m, "tool_calls", None) for m in out["messages"])
    assert int(out.get("tool_calls") or 0) == 0


async def test_smalltalk_says_which_mode(kb_retriever: Any) -> None:
    out = await router(kb_retriever).ainvoke({"messages": [("user", "Hello there!")]}, thread())
    assert out["outcome"] == "smalltalk" and "zero-key mode" in str(final(out).content)


async def test_model_answer_with_a_made_up_citation_is_replaced_by_quotes(kb_retriever: Any) -> None:
    liar = ScriptedChatModel(replies=["Yes, we ship to Mars in 2 days [#deadbeef]."])
    out = await router(kb_retriever, scripted_chain(liar, tiers=("answer",))).ainvoke(
        {"messages": [("user", "How long does standard shipping take?")]}, thread())
    answer = str(final(out).content)
    assert "Mars" not in answer and "3 to 5 business days" in answer
    assert out["mode"] == "degraded"
    assert any(v.get("guard") == "citations" and v["ok"] is False for v in out["guard_verdicts"])


async def test_model_answer_with_valid_citation_is_kept(kb_retriever: Any) -> None:
    graph = router(kb_retriever)
    probe = await graph.ainvoke({"messages": [("user", "How long does standard shipping take?")]}, thread())
    chunk = next(c for c in probe["retrieved"] if "3 to 5 business days" in c["text"])
    reply = f'Standard shipping takes "3 to 5 business days within the EU" [#{chunk["chunk_id"][:8]}].'
    model = ScriptedChatModel(replies=[reply])
    out = await router(kb_retriever, scripted_chain(model, tiers=("answer",))).ainvoke(
        {"messages": [("user", "How long does standard shipping take?")]}, thread())
    # The answer names the document and section beside the verified marker; the id stays for checking.
    short = chunk["chunk_id"][:8]
    assert out["mode"] == "model"
    assert str(final(out).content) == reply.replace(f"[#{short}]", f"({source_name(chunk)}) [#{short}]")
    assert chunk["title"] and chunk["title"] in str(final(out).content)
    assert out["citations"][0]["chunk_id"] == chunk["chunk_id"] and out["citations"][0]["verified"]


async def test_hanging_provider_degrades_to_zero_key_within_the_timeout(kb_retriever: Any) -> None:
    hung = [ScriptedChatModel(replies=["late"], delay_s=60), ScriptedChatModel(replies=["late"], fail_status=503)]
    gateway = scripted_chain(*hung, timeout_s=0.5, chain_timeout_s=2.0)
    started = time.monotonic()
    out = await router(kb_retriever, gateway).ainvoke(
        {"messages": [("user", "How long does standard shipping take?")]}, thread())
    assert time.monotonic() - started < 15
    assert out["mode"] == "degraded" and out["outcome"] == "answered"
    assert "degraded mode" in str(final(out).content) and "3 to 5 business days" in str(final(out).content)


async def test_empty_and_oversized_messages_get_an_answer_not_a_crash(kb_retriever: Any) -> None:
    graph = router(kb_retriever)
    empty = await graph.ainvoke({"messages": [("user", "")]}, thread())
    assert empty["outcome"] in ("refused", "smalltalk", "needs_input", "answered")
    huge = await graph.ainvoke({"messages": [("user", "How long does shipping take? " + "blah " * 3000)]}, thread())
    assert huge["outcome"] in ("refused", "answered")
    nothing = await graph.ainvoke({"messages": []}, thread())
    assert isinstance(nothing["messages"][-1], AIMessage)
