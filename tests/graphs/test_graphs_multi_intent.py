"""Two requests in one message: the router answers the knowledge question from the help centre and acts on the
request, whose approval is asked exactly as when it comes alone. Real sample MCP servers and knowledge base."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from graphs_testkit import *  # noqa: F403 - the shared pytest fixtures
from graphs_testkit import compile_with_memory, thread
from interlock.graphs.models import ModelGateway
from interlock.graphs.nodes.intent import IntentClassifier
from interlock.graphs.nodes.multi_intent import find_question_and_request, split_clauses
from interlock.graphs.nodes.toolbox import GovernedToolbox
from interlock.graphs.rag import verify_citations
from interlock.graphs.router import RouterDeps, build_router
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.types import Command


@pytest.fixture
async def toolbox(mcp_urls: dict[str, str], policy_dir: Path) -> AsyncIterator[GovernedToolbox]:
    from interlock.mcp_servers import sample_data
    from interlock.tools.client import GovernedTools, ServerConfig, ToolsConfig

    sample_data.seed(reset=True)  # every test starts from the same orders
    box = GovernedToolbox(GovernedTools(ToolsConfig(servers={n: ServerConfig(url=u) for n, u in mcp_urls.items()})))
    yield box
    await box.aclose()


def router(toolbox: Any, retriever: Any) -> Any:
    return compile_with_memory(build_router(RouterDeps(gateway=ModelGateway(), toolbox=toolbox, retriever=retriever)))


def turn_answers(out: dict[str, Any]) -> list[AIMessage]:
    """The AI messages with text written in the last turn."""
    messages = out["messages"]
    last_human = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
    return [m for m in messages[last_human + 1:] if isinstance(m, AIMessage) and str(m.content).strip()]


def calls_of(toolbox: GovernedToolbox, tool: str) -> list[tuple[str, dict[str, Any], str | None]]:
    return [c for c in toolbox.calls if c[0] == tool]


async def test_question_and_cancel_answers_first_then_waits_for_the_same_approval(
    toolbox: GovernedToolbox, kb_retriever: Any
) -> None:
    graph, config = router(toolbox, kb_retriever), thread()
    out = await graph.ainvoke({"messages": [("user", "what's your return window, and cancel ORD-1001")]}, config)
    assert (out["route"], out["intent"]) == ("planner", "cancel_order")
    assert out["question"] == "what's your return window"
    # The question is answered now, with citations that check out against what was retrieved ...
    [answer] = turn_answers(out)
    text = str(answer.content)
    assert "30" in text and "Returns policy" in text, text
    citations, problems = verify_citations(text, out["retrieved"])
    assert problems == [] and citations
    # ... and the cancel waits for an operator exactly as it does alone: same interrupt, nothing executed yet.
    [pending] = out["__interrupt__"]
    assert pending.value["tool"] == "cancel_order" and pending.value["args"]["order_id"] == "ORD-1001"
    assert calls_of(toolbox, "cancel_order") == []
    alone = await router(toolbox, kb_retriever).ainvoke({"messages": [("user", "cancel ORD-1001")]}, thread())
    alone_value = alone["__interrupt__"][0].value
    assert alone_value.keys() == pending.value.keys()
    for key in ("type", "tool", "server", "args", "risk", "policy_reasons", "requester", "tenant"):
        assert alone_value.get(key) == pending.value.get(key), key
    done = await graph.ainvoke(Command(resume={"decision": "approve", "reason": "customer asked"}), config)
    assert done["outcome"] == "executed" and "cancelled" in str(done["messages"][-1].content)
    assert [c[1]["order_id"] for c in calls_of(toolbox, "cancel_order")] == ["ORD-1001"]
    # The next turn is a plain question again: no left-over question from the split.
    after = await graph.ainvoke({"messages": [("user", "How long does standard shipping take?")]}, config)
    assert after["route"] == "rag" and not after.get("question") and "3 to 5 business days" in str(
        after["messages"][-1].content)


async def test_question_beside_a_lookup_answers_both(toolbox: GovernedToolbox, kb_retriever: Any) -> None:
    out = await router(toolbox, kb_retriever).ainvoke(
        {"messages": [("user", "Please refund $20 for ORD-1003. How long until the money is back on my card?")]}, thread())
    assert out["intent"] == "refund_order" and out["question"].startswith("How long until the money")
    answer = turn_answers(out)[0]
    assert "Refunds" in str(answer.content) and answer.response_metadata["outcome"] == "answered"
    assert out["__interrupt__"][0].value["tool"] == "refund_order"  # destructive: still an operator's decision

    out = await router(toolbox, kb_retriever).ainvoke(
        {"messages": [("user", "how much is express shipping? also check order ORD-1002")]}, thread())
    assert (out["route"], out["intent"], out["outcome"]) == ("planner", "order_status", "executed")
    first, last = turn_answers(out)
    assert "express" in str(first.content).lower() and first.response_metadata["citations"]
    assert "ORD-1002 is" in str(last.content)
    assert calls_of(toolbox, "get_order") == [("get_order", {"order_id": "ORD-1002"}, None)]


async def test_single_requests_and_follow_ups_are_not_split(toolbox: GovernedToolbox, kb_retriever: Any) -> None:
    graph = router(toolbox, kb_retriever)
    for text in ("Please cancel order ORD-1001, I ordered the wrong size.",
                 "The tracking page isn't updating for ORD-1003, where is the parcel actually?",
                 "I want to cancel my order ORD-1004 and get my money back"):
        out = await graph.ainvoke({"messages": [("user", text)]}, thread())
        assert not out.get("question"), (text, out.get("question"))
        assert out.get("retrieved") in (None, []), text  # no help-centre answer nobody asked for
    before = len(toolbox.calls)
    out = await graph.ainvoke({"messages": [("user", "can I pay by bank transfer and when will it ship")]}, thread())
    assert out["route"] == "rag" and not out.get("question") and len(toolbox.calls) == before


async def test_splitting_is_about_clauses_not_words() -> None:
    assert split_clauses("what's your return window, and cancel ORD-1001") == ["what's your return window",
                                                                               "cancel ORD-1001"]
    assert split_clauses("Do you ship to Norway? And where is my order ORD-1002?") == [
        "Do you ship to Norway?", "where is my order ORD-1002?"]
    assert split_clauses("the parcel and the invoice never arrived") == ["the parcel and the invoice never arrived"]
    classifier = IntentClassifier()
    text = "how do I reset my password, and also update my email to jane@example.com"
    whole = classifier.classify(text)
    split = await find_question_and_request(classifier, text, acting=(whole.intent, whole.margin))
    assert split is not None and split.intent == "update_contact" and split.question == "how do I reset my password"
    # Two questions and no request, or a request and a remark, are one message.
    for text in ("how do I close my account, what happens to my data",
                 "I changed my mind. cancel my order ORD-1003",
                 "hi! where is my order ORD-1010?"):
        whole = classifier.classify(text)
        acting = (whole.intent, whole.margin) if whole.route in ("planner", "escalate") else None
        assert await find_question_and_request(classifier, text, acting=acting) is None, text
