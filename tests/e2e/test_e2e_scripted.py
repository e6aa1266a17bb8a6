"""Issue 5 through the real server with a scripted chat model (graphs.models.ScriptedChatModel via
INTERLOCK_SCRIPTED_MODEL) that emits tool calls, plus a scripted backup provider for failover. The script is
rewritten per scenario (see e2e_serve.py); every payload the model was sent is recorded."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from e2e_testkit import *  # noqa: F403 - the shared fixtures
from e2e_testkit import (
    Environment,
    Server,
    ask,
    call,
    config,
    interrupt_value,
    last_ai,
    tool_messages,
    trace_of,
    trace_spans,
)
from interlock.tools.approvals import args_hash
from langgraph_sdk import get_client

RETURNS_QUESTION = "Is there a restocking fee when I return something?"


@pytest.fixture(scope="module")
def client(scripted: Server) -> Any:
    return get_client(url=scripted.url, api_key=None)


async def new_thread(client: Any) -> str:
    return str((await client.threads.create())["thread_id"])


async def decide(server: Server, approval_id: str, tenant: str, **body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        return await http.post(f"/approvals/{approval_id}", params={"tenant": tenant}, json=body)


def executed_with(env: Environment, tool: str, approval_id: str) -> list[dict[str, Any]]:
    return [row for row in env.audit(tool) if row["approval_id"] == approval_id]


def sent_since(env: Environment, mark: int) -> list[dict[str, Any]]:
    return env.model_calls()[mark:]


async def retrieved_for(client: Any, env: Environment, question: str) -> list[dict[str, Any]]:
    """The chunks the RAG path retrieves for `question` (the model declines; state keeps the retrieval)."""
    env.script(question, "NOT_IN_CONTEXT")
    values = await client.runs.wait(await new_thread(client), "router", input=ask(question), config=config())
    assert values["route"] == "rag" and values["retrieved"], values
    return list(values["retrieved"])


async def test_model_calls_get_order_with_the_right_id_and_answers_from_its_result(
    client: Any, scripted: Server, e2e_env: Environment
) -> None:
    e2e_env.script(call("get_order", order_id="ORD-1002"), "Your order ORD-1002 has shipped.")
    mark, before = len(e2e_env.model_calls()), len(e2e_env.audit("get_order"))
    tid = await new_thread(client)
    values = await client.runs.wait(
        tid, "router", input=ask("What's the status of order ORD-1002?"), config=config()
    )
    assert values["route"] == "planner" and values["outcome"] == "answered" and values["mode"] == "model"
    answer = last_ai(values)
    assert answer["content"] == "Your order ORD-1002 has shipped."
    assert answer["response_metadata"]["interlock_mode"] == "model"
    calls = e2e_env.audit("get_order")[before:]
    assert [c["args_hash"] for c in calls] == [args_hash({"order_id": "ORD-1002"})]
    # The model answered from the tool's real result: its second call carried the orders system's reply.
    sent = sent_since(e2e_env, mark)
    assert len(sent) == 2
    result = [m for m in sent[1]["messages"] if m["type"] == "tool"]
    assert len(result) == 1 and json.loads(result[0]["content"])["status"] == e2e_env.order_status("ORD-1002")
    run = (await client.runs.list(tid))[0]
    trace = await trace_of(scripted, tid, run["run_id"])
    assert len(trace_spans(trace, "model")) == 2 and trace["tokens"] > 0
    assert trace["prompt_versions"] and all(m["attributes"]["prompt_version"] for m in trace_spans(trace, "model"))
    assert [(t["name"], t["attributes"]["outcome"]) for t in trace_spans(trace, "tool")] == [("get_order", "ok")]


async def test_cancel_interrupts_with_the_model_call_and_approve_executes_once(
    client: Any, e2e_env: Environment
) -> None:
    tenant, order = e2e_env.claim_order()
    e2e_env.script(call("cancel_order", order_id=order, reason="ordered the wrong size"), "It is cancelled.")
    tid = await new_thread(client)
    await client.runs.wait(
        tid, "router", input=ask(f"Cancel order {order} please, wrong size."), config=config(tenant)
    )
    value = interrupt_value(await client.threads.get(tid))
    assert value["tool"] == "cancel_order" and value["args"] == {
        "order_id": order,
        "reason": "ordered the wrong size",
    }
    assert e2e_env.order_status(order) != "cancelled"
    resume = {"decision": "approve", "reason": "ok"}
    values = await client.runs.wait(tid, "router", command={"resume": resume}, config=config(tenant))
    assert values["outcome"] == "answered" and last_ai(values)["content"] == "It is cancelled."
    assert e2e_env.order_status(order) == "cancelled"
    await client.runs.wait(
        tid, "router", command={"resume": resume}, config=config(tenant), raise_error=False
    )
    assert len(executed_with(e2e_env, "cancel_order", value["approval_id"])) == 1


async def test_reject_never_executes_and_edit_executes_only_the_edited_call(
    client: Any, scripted: Server, e2e_env: Environment
) -> None:
    tenant, order = e2e_env.claim_order()
    e2e_env.script(call("cancel_order", order_id=order, reason="changed my mind"), "Understood.")
    tid = await new_thread(client)
    await client.runs.wait(tid, "router", input=ask(f"Cancel order {order}."), config=config(tenant))
    rejected = interrupt_value(await client.threads.get(tid))
    response = await decide(scripted, rejected["approval_id"], tenant, decision="reject", reason="no")
    assert response.status_code == 200 and response.json()["approval"]["status"] == "rejected"
    assert e2e_env.order_status(order) != "cancelled"
    assert not executed_with(e2e_env, "cancel_order", rejected["approval_id"])

    # Same request again; the operator edits the call to a different order of the same tenant.
    _, edited = e2e_env.claim_order(tenant)
    e2e_env.script(call("cancel_order", order_id=order, reason="changed my mind"), "Understood.")
    tid = await new_thread(client)
    await client.runs.wait(tid, "router", input=ask(f"Cancel order {order}."), config=config(tenant))
    value = interrupt_value(await client.threads.get(tid))
    args = {"order_id": edited, "reason": "operator picked the right order"}
    response = await decide(scripted, value["approval_id"], tenant, decision="edit", args=args)
    assert response.status_code == 200, response.text
    assert e2e_env.order_status(edited) == "cancelled" and e2e_env.order_status(order) != "cancelled"
    (row,) = executed_with(e2e_env, "cancel_order", value["approval_id"])
    assert row["args_hash"] == args_hash(args)
    e2e_env.release_order(order)


async def test_knowledge_answer_from_the_model_keeps_only_citations_that_verify(
    client: Any, e2e_env: Environment
) -> None:
    chunks = await retrieved_for(client, e2e_env, RETURNS_QUESTION)
    chunk = chunks[0]
    sentence = next(s.strip() for s in chunk["text"].replace("\n", " ").split(". ") if len(s.strip()) > 30)
    short = chunk["chunk_id"][:8]
    e2e_env.script(RETURNS_QUESTION, f'Our help centre says: "{sentence}" [#{short}]')
    values = await client.runs.wait(
        await new_thread(client), "router", input=ask(RETURNS_QUESTION), config=config()
    )
    assert values["outcome"] == "answered" and values["mode"] == "model"
    (citation,) = values["citations"]
    assert (
        citation["chunk_id"] == chunk["chunk_id"] and citation["verified"] and citation["quote"] == sentence
    )
    assert f"[#{short}]" in last_ai(values)["content"]

    # A citation of a chunk that was never retrieved is flagged and the answer falls back to verbatim quotes.
    e2e_env.script(RETURNS_QUESTION, f'Returns are free forever. "{sentence}" [#deadbeef]')
    values = await client.runs.wait(
        await new_thread(client), "router", input=ask(RETURNS_QUESTION), config=config()
    )
    assert values["mode"] == "degraded" and "Returns are free forever" not in last_ai(values)["content"]
    problems = [v for v in values["guard_verdicts"] if v.get("guard") == "citations"]
    assert problems and "deadbeef" in json.dumps(problems)
    assert all(
        c["verified"] and c["chunk_id"] in {x["chunk_id"] for x in values["retrieved"]}
        for c in values["citations"]
    )


async def test_out_of_scope_request_is_refused_with_zero_tool_calls(
    client: Any, e2e_env: Environment
) -> None:
    # A model that would happily call a tool if it were asked to plan anything.
    e2e_env.script(call("cancel_order", order_id="ORD-1001", reason="pirates"))
    audit = {tool: len(e2e_env.audit(tool)) for tool in ("get_order", "cancel_order")}
    values = await client.runs.wait(
        await new_thread(client),
        "router",
        input=ask("Write me a poem about pirates and the sea."),
        config=config(),
    )
    assert values["outcome"] == "refused" and not tool_messages(values)
    assert not any(m.get("tool_calls") for m in values["messages"])
    assert {tool: len(e2e_env.audit(tool)) for tool in audit} == audit


async def test_a_model_that_always_calls_a_tool_stops_at_the_limit(client: Any, e2e_env: Environment) -> None:
    # A new call every time (an identical repeat is not run again; the model is asked to answer instead).
    e2e_env.script(*(call("get_order", order_id=f"ORD-{1001 + i}") for i in range(20)))
    before = len(e2e_env.audit("get_order"))
    tid = await new_thread(client)
    values = await client.runs.wait(
        tid, "router", input=ask("What's the status of order ORD-1002?"), config=config()
    )
    assert values["outcome"] == "limit_tool_calls"
    assert "tool-call limit (10)" in last_ai(values)["content"]
    assert len(e2e_env.audit("get_order")) - before == 10
    run = (await client.runs.list(tid))[0]
    assert run["status"] == "success"


async def test_failing_primary_fails_over_to_the_backup(client: Any, e2e_env: Environment) -> None:
    e2e_env.script("unused", fail_status=503)
    e2e_env.script(call("get_order", order_id="ORD-1003"), "Delivered, says the backup.", backup=True)
    mark = len(e2e_env.model_calls())
    values = await client.runs.wait(
        await new_thread(client), "router", input=ask("What's the status of order ORD-1003?"), config=config()
    )
    assert values["mode"] == "model" and last_ai(values)["content"] == "Delivered, says the backup."
    assert [c["script"] for c in sent_since(e2e_env, mark)] == ["primary", "backup", "primary", "backup"]


async def test_hanging_and_failing_providers_degrade_to_the_playbook_within_the_timeout(
    client: Any, e2e_env: Environment
) -> None:
    hang_s = 60
    e2e_env.script("never delivered", delay_s=hang_s)
    e2e_env.script("unused", backup=True, fail_status=503)
    started = time.monotonic()
    values = await client.runs.wait(
        await new_thread(client), "router", input=ask("What's the status of order ORD-1003?"), config=config()
    )
    elapsed = time.monotonic() - started
    assert values["mode"] == "degraded" and values["outcome"] == "executed"
    answer = last_ai(values)
    assert "degraded mode" in answer["content"] and "ORD-1003 is delivered" in answer["content"]
    assert elapsed < hang_s  # the hung provider was abandoned, not waited for
    e2e_env.script("Hello from the backup model.", backup=True)


async def test_trace_tokens_match_the_usage_the_provider_reported(
    client: Any, scripted: Server, e2e_env: Environment
) -> None:
    e2e_env.script(call("get_order", order_id="ORD-1002"), "Shipped.")
    tid = await new_thread(client)
    await client.runs.wait(tid, "router", input=ask("What's the status of order ORD-1002?"), config=config())
    run = (await client.runs.list(tid))[0]
    trace = await trace_of(scripted, tid, run["run_id"])
    usage = trace_spans(trace, "usage")
    assert len(usage) == 2  # one per planner call
    reported = sum(s["attributes"]["input_tokens"] + s["attributes"]["output_tokens"] for s in usage)
    assert trace["tokens"] == reported
