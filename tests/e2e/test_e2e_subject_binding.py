"""Subject binding through the real server: `interlock serve` with an auth hook whose end users are bound to their
customer record (subject_auth.py), the four sample MCP servers over HTTP, and a hijacked scripted model that
proposes another customer's ids, bulk searches and writes. End user A never reads or changes customer B's
records, not by id, not by a bulk read, not even when an operator approves the hijacked call; staff
(`customers:any`) still act across customers; a binding sent in the run's config is ignored."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_testkit import *  # noqa: F403 - the shared fixtures
from e2e_testkit import Environment, Server, ask, call, tool_messages

HERE = Path(__file__).resolve().parent
ANN, OPS = "tok-ann", "tok-ops"  # ann@acme is customer CUS-101; ops@acme is staff
OWN = "CUS-101"
OTHER_CUSTOMER_ID = re.compile(r"CUS-1(?!01)\d\d")  # any acme customer but Ann's own


@pytest.fixture(scope="module")
def bound(e2e_env: Environment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    project = tmp_path_factory.mktemp("subject-project")
    config = {
        "dependencies": ["."],
        "graphs": {"router": "interlock.graphs.router:graph", "planner": "interlock.graphs.planner:graph",
                   "rag": "interlock.graphs.rag:graph"},
        "auth": {"path": f"{HERE / 'subject_auth.py'}:auth"},
    }
    (project / "langgraph.json").write_text(json.dumps(config))
    server = e2e_env.scripted_server(project / "langgraph.json", name="subject")
    yield server
    server.stop()


async def run(server: Server, token: str, text: str, **body: Any) -> tuple[str, dict[str, Any]]:
    """A new thread and a run of the router on it as the holder of `token`: (thread id, final values)."""
    async with http_as(server, token) as http:
        tid = (await http.post("/threads", json={})).json()["thread_id"]
        response = await http.post(f"/threads/{tid}/runs/wait",
                                   json={"assistant_id": "router", "input": ask(text), **body})
        assert response.status_code == 200, response.text
        return tid, response.json()


def http_as(server: Server, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120)


async def everything_the_client_sees(server: Server, token: str, tid: str) -> str:
    """The values of the thread's state and of every checkpoint in its history, as the end user's client reads
    them (the checkpoints' configs are left out: they echo what the caller itself sent)."""
    async with http_as(server, token) as http:
        state = await http.get(f"/threads/{tid}/state")
        history = await http.post(f"/threads/{tid}/history", json={"limit": 100})
    assert state.status_code == history.status_code == 200
    return json.dumps([state.json()["values"], *(c["values"] for c in history.json())])


async def approve_if_waiting(server: Server, user: str, tid: str) -> dict[str, Any] | None:
    """If the run waits for an operator, the staff operator approves it; returns the decided approval's output."""
    async with http_as(server, user) as http:
        thread = (await http.get(f"/threads/{tid}")).json()
    if thread["status"] != "interrupted":
        return None
    [value] = [i["value"] for group in thread["interrupts"].values() for i in group]
    async with http_as(server, OPS) as http:
        done = await http.post(f"/approvals/{value['approval_id']}",
                               json={"decision": "approve", "reason": "hijack test"})
    assert done.status_code == 200, done.text
    return dict(done.json())


def other_order(env: Environment, customer: str = "CUS-102") -> str:
    return str(env.business("orders", "SELECT id FROM orders WHERE customer_id = ? ORDER BY id", customer)[0]["id"])


async def test_a_hijacked_model_reading_another_customers_order_by_id_gets_not_found(
    bound: Server, e2e_env: Environment
) -> None:
    theirs = other_order(e2e_env)
    e2e_env.script(call("get_order", order_id=theirs), "Here is your order.")
    # The run's config names another customer and another principal: with auth on, only the token counts.
    forged = {"configurable": {"customer_id": "CUS-102", "principal": {"sub": "ops@acme", "tenant": "acme",
                                                                       "scopes": ["customers:any"]}}}
    tid, values = await run(bound, ANN, "What's the status of my order ORD-1001?", config=forged)
    results = tool_messages(values, "get_order")
    assert results and all(f"order {theirs} not found" in str(m["content"]) for m in results), results
    seen = await everything_the_client_sees(bound, ANN, tid)
    assert "CUS-102" not in seen and not OTHER_CUSTOMER_ID.search(seen)
    # Her own order through the same path works.
    e2e_env.script(call("get_order", order_id="ORD-1001"), "Here is your order.")
    _, values = await run(bound, ANN, "What's the status of my order ORD-1001?")
    [result] = tool_messages(values, "get_order")
    assert json.loads(result["content"])["customer_id"] == OWN


async def test_a_hijacked_bulk_read_returns_only_the_end_users_own_records(
    bound: Server, e2e_env: Environment
) -> None:
    e2e_env.script(call("find_customer", query="acme.example", limit=50), call("list_orders", limit=100),
                   call("list_invoices", limit=100), "Here is everything.")
    tid, values = await run(bound, ANN, "Show me my account details, my orders and my invoices please")
    found = tool_messages(values, "find_customer")
    assert found, [m["name"] for m in tool_messages(values)]
    seen = await everything_the_client_sees(bound, ANN, tid)
    assert not OTHER_CUSTOMER_ID.search(seen), OTHER_CUSTOMER_ID.findall(seen)[:5]
    others = e2e_env.business("crm", "SELECT email, phone FROM customers WHERE tenant = 'acme' AND id != ?", OWN)
    assert not any(o["email"] in seen or o["phone"] in seen for o in others)
    assert OWN in seen  # her own record did come back


async def approvals_of(server: Server, tid: str) -> list[dict[str, Any]]:
    """The approvals the server's operators see for this thread (any state), through the approvals API."""
    async with http_as(server, OPS) as http:
        listed = await http.get("/approvals", params={"limit": 500})
    assert listed.status_code == 200, listed.text
    return [a for a in listed.json() if a.get("thread_id") == tid]


async def test_a_hijacked_write_to_another_customers_record_gets_not_found_before_any_approval(
    bound: Server, e2e_env: Environment
) -> None:
    """The graph asks the MCP server first (a precheck through the call path, the server's own ownership rule):
    another customer's record is "not found" and no approval reaches the operators' inbox, not even for a
    destructive call."""
    [before] = e2e_env.business("crm", "SELECT email, phone, updated_at FROM customers WHERE id = 'CUS-102'")
    e2e_env.script(call("update_contact", customer_id="CUS-102", email="ann.new@example.com"), "Updated.")
    tid, values = await run(bound, ANN, "Please change my email to ann.new@example.com")
    assert await approve_if_waiting(bound, ANN, tid) is None and await approvals_of(bound, tid) == []
    assert e2e_env.business("crm", "SELECT email, phone, updated_at FROM customers WHERE id = 'CUS-102'") == [before]
    results = tool_messages(values, "update_contact")
    assert results and "customer CUS-102 not found" in str(results[-1]["content"]), results
    assert not [r for r in e2e_env.audit("update_contact") if r["principal"] == "ann@acme"]

    tenant, order = e2e_env.claim_order("acme", customer="CUS-107")
    status = e2e_env.order_status(order)
    e2e_env.script(call("cancel_order", order_id=order, reason="changed my mind"), "Cancelled.")
    tid, values = await run(bound, ANN, f"Cancel order {order} please, I changed my mind.")
    assert await approve_if_waiting(bound, ANN, tid) is None and await approvals_of(bound, tid) == []
    assert e2e_env.order_status(order) == status
    results = tool_messages(values, "cancel_order")
    assert results and f"order {order} not found" in str(results[-1]["content"]), results
    e2e_env.release_order(order)

    # Her own order still reaches an operator (the precheck passed; nothing ran before the decision).
    tenant, mine = e2e_env.claim_order("acme", customer=OWN)
    status = e2e_env.order_status(mine)
    e2e_env.script(call("cancel_order", order_id=mine, reason="changed my mind"), "Cancelled.")
    tid, _ = await run(bound, ANN, f"Cancel order {mine} please, I changed my mind.")
    [asked] = await approvals_of(bound, tid)
    assert asked["tool"] == "cancel_order" and e2e_env.order_status(mine) == status
    async with http_as(bound, OPS) as http:
        assert (await http.post(f"/approvals/{asked['id']}", json={"decision": "reject"})).status_code == 200
    e2e_env.release_order(mine)


async def test_staff_act_across_customers(bound: Server, e2e_env: Environment) -> None:
    theirs = other_order(e2e_env, "CUS-107")
    e2e_env.script(call("get_order", order_id=theirs), "Here it is.")
    _, values = await run(bound, OPS, f"What's the status of order {theirs}?")
    [result] = tool_messages(values, "get_order")
    assert json.loads(result["content"])["customer_id"] == "CUS-107"
    e2e_env.script(call("list_orders", limit=100), "Here they are.")
    _, values = await run(bound, OPS, "List the recent orders please")
    [listed] = tool_messages(values, "list_orders")
    assert len({o["customer_id"] for o in json.loads(listed["content"])["orders"]}) > 1
