"""What Agent Chat UI sees (issue 13), through the real zero-key server: after an earlier turn, a cancel request
pauses with the AI message carrying the pending tool call already in the ROOT graph's messages (the UI renders
root `values` only), the interrupt is the HITL request the UI renders, and for an operator-only call the chat
user's approve is refused while the operator's decision is taken."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from e2e_testkit import *  # noqa: F403 - the shared fixtures
from e2e_testkit import Environment, Server, ask, config, interrupt_value, last_ai
from langgraph_sdk import get_client


@pytest.fixture(scope="module")
def client(zero_key: Server) -> Any:
    return get_client(url=zero_key.url, api_key=None)


def pending_call(messages: list[dict[str, Any]]) -> dict[str, Any]:
    last = messages[-1]
    assert last["type"] == "ai" and last.get("tool_calls"), f"last root message is {last['type']}: {last}"
    return last["tool_calls"][0]


async def test_cancel_after_an_earlier_turn_shows_the_pending_call_at_the_root(
    client: Any, zero_key: Server, e2e_env: Environment
) -> None:
    tenant, order = e2e_env.claim_order()
    cfg = config(tenant, sub=f"CUS-{'1' if tenant == 'acme' else '2'}01")
    tid = (await client.threads.create())["thread_id"]
    first = await client.runs.wait(tid, "router", input=ask(f"Where is my order {order}?"), config=cfg)
    assert order in last_ai(first)["content"]

    # The second turn, streamed the way the UI streams it (values, subgraphs on).
    root_values: list[dict[str, Any]] = []
    async for part in client.runs.stream(
        tid, "router", input=ask(f"Please cancel order {order}."), config=cfg,
        stream_mode=["values", "messages-tuple"], stream_subgraphs=True,
    ):
        if part.event == "values":
            root_values.append(part.data)
    interrupted = [v for v in root_values if "__interrupt__" in v]
    assert interrupted, "the stream carried the interrupt"
    before = [v for v in root_values if "__interrupt__" not in v][-1]
    call = pending_call(before["messages"])
    assert call["name"] == "cancel_order" and call["args"]["order_id"] == order
    assert sum(1 for m in before["messages"] if m["type"] == "human") == 2, "both turns are in the root messages"

    state = await client.threads.get_state(tid)
    assert pending_call(state["values"]["messages"]) == call
    value = interrupt_value(await client.threads.get(tid))
    assert value["action_requests"][0]["name"] == "cancel_order"
    assert value["action_requests"][0]["args"] == value["args"]
    assert value["review_configs"] == [{"action_name": "cancel_order", "allowed_decisions": []}]
    assert "operator must decide" in value["action_requests"][0]["description"]

    # A hand-made UI approve for an operator-only call decides nothing.
    again = await client.runs.wait(tid, "router", command={"resume": {"decisions": [{"type": "approve"}]}}, config=cfg)
    assert "only an operator may decide" in again["__interrupt__"][0]["value"]["error"]
    assert e2e_env.order_status(order) != "cancelled"

    # The operator's decision is taken (a reject here, so the shared sample order stays cancellable for others).
    async with httpx.AsyncClient(base_url=zero_key.url, timeout=60) as http:
        decided = await http.post(f"/approvals/{value['approval_id']}", params={"tenant": tenant},
                                  json={"decision": "reject", "reason": "customer changed their mind"})
    assert decided.status_code == 200, decided.text
    assert e2e_env.order_status(order) != "cancelled"
    e2e_env.release_order(order)
    final = (await client.threads.get_state(tid))["values"]
    answers = [m for m in final["messages"] if m["type"] == "tool" and m.get("tool_call_id") == call["id"]]
    assert len(answers) == 1 and answers[0]["status"] == "error" and "rejected" in answers[0]["content"]
