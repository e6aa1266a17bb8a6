"""Model mode as real providers behave, through the router, the real sample MCP servers over HTTP and the real
guards; only the model's replies are scripted: tool choice per step, tool calls written as text (fenced JSON,
`{"tool", "parameters"}`, Qwen's <tool_call>), the repair loop for unusable calls, claims of actions nobody took,
and pseudonym placeholders in answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from graphs_testkit import *  # noqa: F403 - the shared pytest fixtures
from graphs_testkit import compile_with_memory, thread
from interlock.graphs.models import ModelGateway, ScriptedChatModel, scripted_chain
from interlock.graphs.nodes.toolbox import GovernedToolbox
from interlock.graphs.planner import MAX_REPAIRS, RunLimits
from interlock.graphs.router import RouterDeps, build_router
from interlock.graphs.state import PrincipalInfo
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langgraph.types import Command
from pydantic import PrivateAttr

STATUS = "What's the status of order ORD-1002?"
CANCEL = "Please cancel order ORD-1001, I ordered the wrong size."


class RecordingModel(ScriptedChatModel):
    """Scripted replies; keeps the messages of every call (what a provider would have been sent)."""

    _sent: list[list[BaseMessage]] = PrivateAttr(default_factory=list)

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                         **kwargs: Any) -> Any:
        self._sent.append(list(messages))
        return await super()._agenerate(messages, stop, run_manager, **kwargs)

    @property
    def sent(self) -> list[list[BaseMessage]]:
        return self._sent


@pytest.fixture
async def toolbox(mcp_urls: dict[str, str], policy_dir: Path) -> AsyncIterator[GovernedToolbox]:
    from interlock.mcp_servers import sample_data
    from interlock.tools.client import GovernedTools, ServerConfig, ToolsConfig

    sample_data.seed(reset=True)
    box = GovernedToolbox(GovernedTools(ToolsConfig(servers={n: ServerConfig(url=u) for n, u in mcp_urls.items()})))
    yield box
    await box.aclose()


def router(toolbox: GovernedToolbox, model: ScriptedChatModel, limits: RunLimits | None = None) -> Any:
    gateway: ModelGateway = scripted_chain(model, tiers=("planner",))
    return compile_with_memory(build_router(RouterDeps(gateway=gateway, toolbox=toolbox, limits=limits)))


def calls_of(toolbox: GovernedToolbox, tool: str) -> list[tuple[str, dict[str, Any], str | None]]:
    return [c for c in toolbox.calls if c[0] == tool]


def answer(out: dict[str, Any]) -> str:
    return str(out["messages"][-1].content)


def ai_texts(out: dict[str, Any]) -> str:
    return "\n".join(str(m.content) for m in out["messages"] if isinstance(m, AIMessage))


async def order_status(toolbox: GovernedToolbox, order_id: str) -> str:
    outcome = await toolbox.call(PrincipalInfo(sub="auditor", tenant="acme", scopes=["orders:read", "customers:any"]), "get_order",
                                 {"order_id": order_id})
    toolbox.calls.pop()
    return str(outcome.content["status"])


# --- tool choice ------------------------------------------------------------------------------------------


async def test_a_step_that_must_act_forces_its_tool_then_the_model_may_answer(toolbox: GovernedToolbox) -> None:
    model = ScriptedChatModel(replies=[
        AIMessage(content="", tool_calls=[{"name": "get_order", "args": {"order_id": "ORD-1002"}, "id": "1",
                                           "type": "tool_call"}]),
        "Order ORD-1002 is on its way."])
    out = await router(toolbox, model).ainvoke({"messages": [("user", STATUS)]}, thread())
    assert out["outcome"] == "answered" and calls_of(toolbox, "get_order")
    # First step: the order-status playbook's one tool, by name; after its result: auto (answer or call again).
    assert model.tool_choices == ["get_order", "auto"]


async def test_without_the_details_to_act_the_model_is_not_forced(toolbox: GovernedToolbox) -> None:
    model = ScriptedChatModel(replies=["Which order do you mean? Please give me its number."])
    out = await router(toolbox, model).ainvoke({"messages": [("user", "Can you check on my order for me?")]},
                                               thread())
    assert model.tool_choices == ["auto"] and list(toolbox.calls) == [] and out["outcome"] == "answered"


# --- tool calls written as text ---------------------------------------------------------------------------


@pytest.mark.parametrize("written", [
    '```json\n{"name": "get_order", "arguments": {"order_id": "ORD-1002"}}\n```',
    '{"tool": "get_order", "parameters": {"order_id": "ORD-1002"}}',
    '<tool_call>\n{"name": "get_order", "arguments": {"order_id": "ORD-1002"}}\n</tool_call>',
])
async def test_a_tool_call_written_as_text_is_executed_not_shown(toolbox: GovernedToolbox, written: str) -> None:
    model = ScriptedChatModel(replies=[written, "Order ORD-1002 is on its way."])
    out = await router(toolbox, model).ainvoke({"messages": [("user", STATUS)]}, thread())
    assert calls_of(toolbox, "get_order") == [("get_order", {"order_id": "ORD-1002"}, None)]
    result = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert result.status == "success" and "ORD-1002" in str(result.content)
    assert out["outcome"] == "answered" and answer(out) == "Order ORD-1002 is on its way."
    assert '"order_id"' not in ai_texts(out) and "tool_call" not in ai_texts(out)


async def test_a_destructive_call_written_as_text_waits_for_the_exact_call_approval(toolbox: GovernedToolbox) -> None:
    model = ScriptedChatModel(replies=[
        '<tool_call>\n{"name": "cancel_order", "arguments": {"order_id": "ORD-1001", "reason": "wrong size"}}\n'
        '</tool_call>',
        "Done: ORD-1001 is cancelled."])
    graph, config = router(toolbox, model), thread()
    out = await graph.ainvoke({"messages": [("user", CANCEL)]}, config)
    [pending] = out["__interrupt__"]
    assert pending.value["tool"] == "cancel_order"
    assert pending.value["args"] == {"order_id": "ORD-1001", "reason": "wrong size"}
    assert calls_of(toolbox, "cancel_order") == [] and await order_status(toolbox, "ORD-1001") == "processing"
    done = await graph.ainvoke(Command(resume={"decision": "approve"}), config)
    assert [c[2] for c in calls_of(toolbox, "cancel_order")] == [pending.value["approval_id"]]
    assert await order_status(toolbox, "ORD-1001") == "cancelled"
    assert answer(done) == "Done: ORD-1001 is cancelled."  # backed by the approved call's result


async def test_a_rejected_call_is_never_run_and_a_claim_that_it_was_is_replaced(toolbox: GovernedToolbox) -> None:
    model = ScriptedChatModel(replies=[
        '{"name": "cancel_order", "arguments": {"order_id": "ORD-1001", "reason": "wrong size"}}',
        "I have cancelled order ORD-1001 for you."])
    graph, config = router(toolbox, model), thread()
    await graph.ainvoke({"messages": [("user", CANCEL)]}, config)
    done = await graph.ainvoke(Command(resume={"decision": "reject", "reason": "not allowed"}), config)
    assert calls_of(toolbox, "cancel_order") == [] and await order_status(toolbox, "ORD-1001") == "processing"
    assert "I have cancelled" not in answer(done) and "nothing has been cancelled" in answer(done)


# --- the repair loop --------------------------------------------------------------------------------------


async def test_an_invalid_call_is_corrected_after_the_model_is_told_why(toolbox: GovernedToolbox) -> None:
    model = RecordingModel(replies=[
        '{"name": "get_order", "arguments": {"id": "ORD-1002"}}',  # wrong field
        '{"name": "lookup_order", "arguments": {"order_id": "ORD-1002"}}',  # no such tool
        '{"name": "get_order", "arguments": {"order_id": "ORD-1002"}}',
        "Order ORD-1002 is on its way."])
    out = await router(toolbox, model).ainvoke({"messages": [("user", STATUS)]}, thread())
    assert calls_of(toolbox, "get_order") == [("get_order", {"order_id": "ORD-1002"}, None)]
    assert out["outcome"] == "answered" and len(model.sent) == 4
    first_fix, second_fix = str(model.sent[1][-1].content), str(model.sent[2][-1].content)
    assert "get_order" in first_fix and "missing required field(s) order_id" in first_fix
    assert "no tool named 'lookup_order'" in second_fix and "get_order" in second_fix
    # The corrections were for the model only: they are not part of the conversation.
    assert "could not be used as a tool call" not in json.dumps([str(m.content) for m in out["messages"]])
    assert out["steps"] >= 3  # every try counted against the step limit


async def test_the_repair_loop_is_bounded_and_never_shows_the_json(toolbox: GovernedToolbox) -> None:
    model = RecordingModel(replies=['```json\n{"name": "get_order", "arguments": {"order": 1002}}\n```'])
    out = await router(toolbox, model).ainvoke({"messages": [("user", STATUS)]}, thread())
    assert len(model.sent) == MAX_REPAIRS + 1 and list(toolbox.calls) == []
    assert out["outcome"] == "tool_error" and "nothing was changed" in answer(out).lower()
    assert "{" not in answer(out)


async def test_an_empty_reply_is_retried_not_delivered(toolbox: GovernedToolbox) -> None:
    model = RecordingModel(replies=["", '{"name": "get_order", "arguments": {"order_id": "ORD-1002"}}',
                                    "Order ORD-1002 is on its way."])
    out = await router(toolbox, model).ainvoke({"messages": [("user", STATUS)]}, thread())
    assert "reply was empty" in str(model.sent[1][-1].content) and calls_of(toolbox, "get_order")
    assert answer(out) == "Order ORD-1002 is on its way."


async def test_the_repair_loop_stays_inside_the_step_limit(toolbox: GovernedToolbox) -> None:
    model = RecordingModel(replies=['{"name": "nope", "arguments": {}}'])
    out = await router(toolbox, model, limits=RunLimits(max_steps=2, max_tool_calls=5, wall_clock_s=60)).ainvoke(
        {"messages": [("user", STATUS)]}, thread())
    assert len(model.sent) == 2 and out["steps"] <= 2 and list(toolbox.calls) == []


# --- honesty ----------------------------------------------------------------------------------------------


async def test_a_claimed_cancellation_without_a_tool_call_is_replaced(toolbox: GovernedToolbox) -> None:
    model = ScriptedChatModel(replies=["I have canceled your order ORD-1001. You will get an email shortly."])
    out = await router(toolbox, model).ainvoke({"messages": [("user", CANCEL)]}, thread())
    assert calls_of(toolbox, "cancel_order") == [] and await order_status(toolbox, "ORD-1001") == "processing"
    text = answer(out)
    assert "I have canceled" not in text and "nothing has been cancelled" in text
    [verdict] = [v for v in out["guard_verdicts"] if v.get("guard") == "output" and v.get("honesty", {}).get(
        "unsupported_claims")]
    assert verdict["ok"] is False and set(verdict["honesty"]["unsupported_claims"]) >= {"cancel"}


async def test_a_lookup_does_not_back_a_claimed_refund(toolbox: GovernedToolbox) -> None:
    model = ScriptedChatModel(replies=[
        AIMessage(content="", tool_calls=[{"name": "get_order", "args": {"order_id": "ORD-1002"}, "id": "1",
                                           "type": "tool_call"}]),
        "I've refunded ORD-1002 to your card."])
    out = await router(toolbox, model).ainvoke({"messages": [("user", "Refund my order ORD-1002 please")]}, thread())
    assert calls_of(toolbox, "refund_order") == [] and "I've refunded" not in answer(out)
    assert "refunded" in answer(out)  # it says what was not done


async def test_the_users_own_email_is_shown_masked_and_made_up_placeholders_removed(
    toolbox: GovernedToolbox,
) -> None:
    model = ScriptedChatModel(replies=[
        AIMessage(content="", tool_calls=[{"name": "update_contact", "args": {"customer_id": "CUS-101",
                                                                              "email": "<EMAIL_1>"},
                                           "id": "1", "type": "tool_call"}]),
        "I have updated your email to <EMAIL_1>. We will call <PHONE_4> if needed."])
    graph, config = router(toolbox, model), thread(sub="CUS-101")
    out = await graph.ainvoke({"messages": [("user", "Please change my email to jane.new@example.com")]}, config)
    [(_, args, _)] = calls_of(toolbox, "update_contact")
    assert args["email"] == "jane.new@example.com"  # the tool got the real value
    text = answer(out)
    assert "<EMAIL_" not in text and "<PHONE_" not in text and "j•••@example.com" in text
    assert "I have updated your email" in text  # backed by the update_contact result
    saved = json.dumps((await graph.aget_state(config)).values, default=str)
    assert "jane.new@example.com" not in saved  # the state still holds no raw value


# --- a model that repeats the call it already made (real small models do, finding 7/9) ---------------------


class BindingModel(ScriptedChatModel):
    """Scripted replies; records which tools each call was bound with (None: no tools at all)."""

    _bound: list[list[str] | None] = PrivateAttr(default_factory=list)
    _pending: list[str] | None = PrivateAttr(default=None)

    def bind_tools(self, tools: Any, *, tool_choice: str | None = None, **kwargs: Any) -> Any:
        self._pending = [t["function"]["name"] for t in tools]
        return super().bind_tools(tools, tool_choice=tool_choice, **kwargs)

    def _next_reply(self) -> AIMessage:
        self._bound.append(self._pending)
        self._pending = None
        return super()._next_reply()

    @property
    def bound(self) -> list[list[str] | None]:
        return self._bound


GET_1002 = AIMessage(content="", tool_calls=[{"name": "get_order", "args": {"order_id": "ORD-1002"}, "id": "1",
                                              "type": "tool_call"}])
# How Qwen2.5 copies the earlier call after its result: double braces, arguments as a JSON string.
COPIED_1002 = '{{"name": "get_order", "arguments": "{\\"order_id\\": \\"ORD-1002\\"}"}}'


@pytest.mark.parametrize("repeat", [COPIED_1002, GET_1002,
                                    '{"name": "get_order", "arguments": {"order_id": "ORD-1002"}}'])
async def test_a_repeated_call_is_not_run_again_the_model_answers_without_tools(
    toolbox: GovernedToolbox, repeat: Any
) -> None:
    model = BindingModel(replies=[GET_1002, repeat, "Your order ORD-1002 has shipped."])
    out = await router(toolbox, model).ainvoke({"messages": [("user", STATUS)]}, thread())
    assert calls_of(toolbox, "get_order") == [("get_order", {"order_id": "ORD-1002"}, None)]
    assert model.calls == 3 and model.bound[2] is None, model.bound  # the last ask had no tools in its prompt
    assert out["outcome"] == "answered" and answer(out) == "Your order ORD-1002 has shipped."


async def test_a_model_that_only_repeats_gets_an_answer_written_from_the_results(toolbox: GovernedToolbox) -> None:
    model = BindingModel(replies=[GET_1002, COPIED_1002], repeat="last")
    out = await router(toolbox, model, RunLimits(max_tool_calls=10)).ainvoke({"messages": [("user", STATUS)]},
                                                                             thread())
    status = await order_status(toolbox, "ORD-1002")
    assert len(calls_of(toolbox, "get_order")) == 1 and model.calls == 3  # never looped to the tool-call limit
    assert out["outcome"] == "answered" and "ORD-1002" in answer(out) and status in answer(out), answer(out)
    assert '"arguments"' not in answer(out) and "{" not in answer(out)


async def test_the_model_sees_only_the_tools_of_the_systems_the_intent_works_with(toolbox: GovernedToolbox) -> None:
    everything = {t.name: t for t in await toolbox.list_tools(PrincipalInfo(
        sub="CUS-101", tenant="acme", scopes=["orders:read", "orders:write", "crm:read", "crm:write",
                                              "billing:read", "billing:write", "tickets:read", "tickets:write"]))}
    model = BindingModel(replies=[GET_1002, "Your order ORD-1002 has shipped."])
    await router(toolbox, model).ainvoke({"messages": [("user", STATUS)]}, thread())
    offered = model.bound[0]
    assert offered and "get_order" in offered
    assert {everything[name].server for name in offered if name in everything} == {everything["get_order"].server}
    assert len(offered) < len(everything), (offered, sorted(everything))



async def test_a_call_to_a_tool_outside_the_intents_systems_is_decided_not_repaired(toolbox: GovernedToolbox) -> None:
    # Offering the intent's tools is a prompt matter: a model (a hijacked one, say) that calls another system's
    # real tool meets the executor's decision like any call, never a "no such tool" correction.
    off_intent = AIMessage(content="", tool_calls=[{"name": "get_customer", "args": {"customer_id": "CUS-101"},
                                                    "id": "c1", "type": "tool_call"}])
    model = BindingModel(replies=[off_intent, "Your order ORD-1002 has shipped."])
    await router(toolbox, model).ainvoke({"messages": [("user", STATUS)]}, thread())
    assert model.bound[0] and "get_customer" not in model.bound[0]  # not offered...
    assert len(calls_of(toolbox, "get_customer")) == 1  # ...but run through the toolbox all the same
    assert model.calls == 2  # no repair try in between

def test_the_output_guard_never_delivers_an_empty_answer() -> None:
    from interlock.graphs.nodes.guards import check_output

    for blank in ("", "   \n"):
        out = check_output({"messages": [("user", STATUS), AIMessage(content=blank, id="a1")], "tenant": "acme"})
        [message] = out["messages"]
        assert str(message.content).strip() and "couldn't" in str(message.content)


async def test_a_model_cancelling_a_shipped_order_is_answered_from_its_state_without_an_approval(
    toolbox: GovernedToolbox,
) -> None:
    # The playbook's precheck runs in model mode too: no operator is asked to approve a cancel that cannot work.
    model = ScriptedChatModel(replies=[AIMessage(content="", tool_calls=[
        {"name": "cancel_order", "args": {"order_id": "ORD-1002", "reason": "changed my mind"}, "id": "c1",
         "type": "tool_call"}])])
    out = await router(toolbox, model).ainvoke({"messages": [("user", "Please cancel order ORD-1002.")]}, thread())
    assert "__interrupt__" not in out and out["outcome"] == "answered" and out["mode"] == "model", out.get("outcome")
    assert "already shipped" in answer(out), answer(out)
    assert calls_of(toolbox, "cancel_order") == [] and model.calls == 1
    assert calls_of(toolbox, "get_order") == [("get_order", {"order_id": "ORD-1002"}, None)]
    # A cancellable order still goes to the exact-call approval.
    cancellable = ScriptedChatModel(replies=[AIMessage(content="", tool_calls=[
        {"name": "cancel_order", "args": {"order_id": "ORD-1001", "reason": "wrong size"}, "id": "c2",
         "type": "tool_call"}])])
    waiting = await router(toolbox, cancellable).ainvoke({"messages": [("user", CANCEL)]}, thread())
    [pending] = waiting["__interrupt__"]
    assert pending.value["tool"] == "cancel_order" and calls_of(toolbox, "cancel_order") == []
