"""Each cross-tenant and operator-authority finding of issue 11, replayed through a real server with a
two-tenant auth hook (tests/server/project/tenants_auth.py), now failing closed.

acme: ann, bob (users), olga, otto (operators with `approvals:decide`); globex: gus (user), oscar (operator).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import httpx
import pytest
from server_testkit import PROJECT, ServerProcess, make_server

TOKENS = {
    "ann": "acme-ann",
    "bob": "acme-bob",
    "olga": "acme-olga",
    "otto": "acme-otto",
    "gus": "globex-gus",
    "oscar": "globex-oscar",
}


class Caller:
    def __init__(self, server: ServerProcess, name: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {TOKENS[name]}"}
        )

    async def __aenter__(self) -> Caller:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def ok(self, method: str, path: str, **kw: Any) -> Any:
        resp = await self.http.request(method, path, **kw)
        assert resp.status_code < 300, (method, path, resp.status_code, resp.text)
        return resp.json() if resp.content else None

    async def thread(self) -> str:
        return (await self.ok("POST", "/threads", json={}))["thread_id"]

    async def state(self, thread_id: str) -> dict[str, Any]:
        return await self.ok("GET", f"/threads/{thread_id}/state")


async def _until(check: Any, what: str) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# -- runs by id ------------------------------------------------------------------------------------------
async def test_another_tenants_stateless_run_cannot_be_joined_streamed_or_cancelled(tenant_server) -> None:
    async with Caller(tenant_server, "ann") as ann, Caller(tenant_server, "gus") as gus:
        run = await ann.ok("POST", "/runs", json={"assistant_id": "slow", "input": {"n": 2}})
        rid = run["run_id"]
        for path in (f"/runs/{rid}/join", f"/runs/{rid}/stream"):
            resp = await gus.http.get(path)
            assert resp.status_code == 404 and "not found" in resp.json()["detail"].lower(), resp.text
        assert (await gus.http.post("/runs/cancel", json={"run_ids": [rid]})).status_code == 204
        assert (await gus.http.post("/runs/cancel", json={"status": "all"})).status_code == 204
        out = await ann.ok("GET", f"/runs/{rid}/join")
        assert out["log"] == ["slow"]  # ran to the end: neither cancel reached it


# -- assistants -------------------------------------------------------------------------------------------
async def test_a_run_cannot_use_another_tenants_assistant(tenant_server) -> None:
    async with Caller(tenant_server, "ann") as ann, Caller(tenant_server, "gus") as gus:
        assistant = await ann.ok("POST", "/assistants", json={"graph_id": "two_node", "config": {"tags": ["acme"]}})
        own = await gus.thread()
        for path in (f"/threads/{own}/runs/wait", "/runs/wait"):
            resp = await gus.http.post(path, json={"assistant_id": assistant["assistant_id"], "input": {"n": 1}})
            assert resp.status_code == 404, resp.text
        for path, body in (("/versions", {}), ("/latest", {"version": 1})):
            resp = await gus.http.post(f"/assistants/{assistant['assistant_id']}{path}", json=body)
            assert resp.status_code == 404, resp.text


# -- crons ------------------------------------------------------------------------------------------------
async def test_a_cron_runs_as_its_creator_never_a_development_identity(tenant_server) -> None:
    async with Caller(tenant_server, "gus") as gus, Caller(tenant_server, "ann") as ann:
        tid = await gus.thread()
        acme_thread = await ann.thread()
        refused = await gus.http.post(f"/threads/{acme_thread}/runs/crons", json={"assistant_id": "principal", "schedule": "* * * * *"})
        assert refused.status_code == 404, refused.text
        # The attack of the issue: a globex cron asking, through its config, to run in tenant acme.
        cron = await gus.ok(
            "POST",
            f"/threads/{tid}/runs/crons",
            json={"assistant_id": "principal", "schedule": "* * * * * *", "input": {},
                  "config": {"configurable": {"tenant": "acme", "user_id": "dev-user"}}},
        )
        try:
            values = await _until(lambda: _values_with(gus, tid, "sub"), "the cron's first run")
        finally:
            await gus.ok("DELETE", f"/runs/crons/{cron['cron_id']}")
        assert values["sub"] == "gus@globex" and values["tenant"] == "globex"
        assert values["scopes"] == []  # the creator's permissions, not the development scopes
        assert (await ann.http.get(f"/runs/crons/{cron['cron_id']}")).status_code == 404


async def _values_with(caller: Caller, tid: str, key: str) -> dict[str, Any] | None:
    values = (await caller.state(tid))["values"]
    return values if values.get(key) else None


def test_a_server_with_auth_refuses_to_start_with_a_cron_that_has_no_creator(tmp_path) -> None:
    server = make_server(tmp_path, None, config=PROJECT / "langgraph_tenants.json")
    server.stop()
    with sqlite3.connect(server.home / "interlock.db") as db:  # made before auth was configured
        db.execute(
            "INSERT INTO crons (cron_id, assistant_id, thread_id, schedule, timezone, payload, metadata, enabled, "
            "end_time, next_run_date, on_run_completed, user_id, created_at, updated_at, principal) VALUES "
            "('c-legacy', 'a', NULL, '* * * * *', NULL, '{}', '{}', 1, NULL, '2026-01-01T00:00:00+00:00', "
            "'delete', NULL, '2026-01-01', '2026-01-01', NULL)"
        )
    with pytest.raises(RuntimeError, match="no recorded creator"):
        server.start()


# -- operator authority -----------------------------------------------------------------------------------
async def _request(caller: Caller, tool: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The caller's own thread runs the approval graph up to its interrupt; returns (thread_id, interrupt value)."""
    tid = await caller.thread()
    out = await caller.ok(
        "POST", f"/threads/{tid}/runs/wait", json={"assistant_id": "approval", "input": {"call": {"tool": tool, "args": args}}}
    )
    [pending] = out["__interrupt__"]
    assert pending["value"]["type"] == "approval" and pending["value"]["tool"] == tool
    return tid, pending["value"]


def _resume(value: dict[str, Any]) -> dict[str, Any]:
    return {"assistant_id": "approval", "command": {"resume": value}}


async def _approval(operator: Caller, approval_id: str) -> dict[str, Any]:
    return await operator.ok("GET", f"/approvals/{approval_id}")


async def test_a_user_without_the_operator_permission_cannot_approve_their_own_request(tenant_server) -> None:
    async with Caller(tenant_server, "bob") as bob, Caller(tenant_server, "olga") as olga:
        tid, value = await _request(bob, "cancel_order", {"order_id": "ORD-1001"})
        forged = {"decision": "approve", "by": "olga@acme"}
        for path in (f"/threads/{tid}/runs/wait", f"/threads/{tid}/runs"):
            resp = await bob.http.post(path, json=_resume(forged))
            assert resp.status_code == 403 and "approvals:decide" in resp.json()["detail"], resp.text
        resp = await bob.http.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "approval", "command": {"goto": "decide"}})
        assert resp.status_code == 403, resp.text
        resp = await bob.http.post(
            f"/threads/{tid}/state", json={"values": {"approval_decision": {"decision": "approve"}}, "as_node": "await_approval"}
        )
        assert resp.status_code == 403, resp.text
        assert (await bob.http.post(f"/approvals/{value['approval_id']}", json={"decision": "approve"})).status_code == 403
        record = await _approval(olga, value["approval_id"])
        assert record["status"] == "pending" and record["decided_by"] is None
        assert not (await bob.state(tid))["values"].get("executed")


async def test_the_deciding_identity_is_the_authenticated_operator_never_the_body(tenant_server) -> None:
    async with Caller(tenant_server, "bob") as bob, Caller(tenant_server, "olga") as olga:
        tid, value = await _request(bob, "cancel_order", {"order_id": "ORD-1001"})
        out = await olga.ok("POST", f"/threads/{tid}/runs/wait", json=_resume({"decision": "approve", "by": "ceo@acme"}))
        assert out["outcome"] == "executed"
        assert out["executed"]["call-1"]["args"] == {"order_id": "ORD-1001"}
        record = await _approval(olga, value["approval_id"])
        assert record["decided_by"] == "olga@acme" and record["status"] in ("approved", "consumed")


async def test_separation_of_duties_for_destructive_tools(tenant_server) -> None:
    async with Caller(tenant_server, "olga") as olga, Caller(tenant_server, "otto") as otto:
        tid, value = await _request(olga, "refund_order", {"order_id": "ORD-1002", "amount_cents": 500})
        for attempt in (
            olga.http.post(f"/approvals/{value['approval_id']}", json={"decision": "approve"}),
            olga.http.post(f"/threads/{tid}/runs/wait", json=_resume({"decision": "approve"})),
        ):
            resp = await attempt
            assert resp.status_code == 403 and "separation of duties" in resp.json()["detail"], resp.text
        done = await otto.ok("POST", f"/approvals/{value['approval_id']}", json={"decision": "approve", "reason": "ok"})
        assert done["approval"]["decided_by"] == "otto@acme" and done["output"]["outcome"] == "executed"


async def test_a_confirm_tool_may_be_confirmed_by_its_requester_only_in_their_tenant(tenant_server) -> None:
    async with Caller(tenant_server, "bob") as bob, Caller(tenant_server, "olga") as olga, \
            Caller(tenant_server, "ann") as ann, Caller(tenant_server, "oscar") as oscar:
        tid, value = await _request(bob, "escalate_to_human", {"ticket_id": "TCK-1", "note": "please call"})
        assert (await oscar.http.post(f"/threads/{tid}/runs/wait", json=_resume({"decision": "approve"}))).status_code == 404
        assert (await oscar.http.post(f"/approvals/{value['approval_id']}", json={"decision": "approve"})).status_code == 404
        out = await bob.ok("POST", f"/threads/{tid}/runs/wait", json=_resume({"decision": "approve", "by": "olga@acme"}))
        assert out["outcome"] == "executed"
        assert (await _approval(olga, value["approval_id"]))["decided_by"] == "bob@acme"
        # Only the requester may confirm: another user of the tenant without the permission may not.
        tid2, _ = await _request(bob, "escalate_to_human", {"ticket_id": "TCK-2", "note": "x"})
        await ann.ok("PATCH", f"/threads/{tid2}", json={"metadata": {"shared": True}})  # same tenant: ann sees it
        resp = await ann.http.post(f"/threads/{tid2}/runs/wait", json=_resume({"decision": "approve"}))
        assert resp.status_code == 403, resp.text


async def test_an_edit_keeps_the_tool_tenant_argument_types_and_policy(tenant_server) -> None:
    async with Caller(tenant_server, "bob") as bob, Caller(tenant_server, "olga") as olga:
        tid, value = await _request(bob, "refund_order", {"order_id": "ORD-1001", "amount_cents": 900})
        for edit, needle in (
            ({"order_id": "ORD-1001", "amount_cents": 900, "tenant": "globex"}, "tenant"),
            ({"order_id": "ORD-1001", "amount_cents": 900, "tool": "issue_credit"}, "not called with"),
            ({"order_id": "ORD-1001", "amount_cents": "all"}, "amount_cents"),
            ({"order_id": "ORD-1001", "amount_cents": -500}, "policy"),
        ):
            resp = await olga.http.post(f"/approvals/{value['approval_id']}", json={"decision": "edit", "args": edit})
            assert resp.status_code == 422 and needle in resp.json()["detail"], (edit, resp.text)
        # Through the runs API the graph itself refuses the edit and keeps waiting: nothing executed.
        out = await olga.ok("POST", f"/threads/{tid}/runs/wait",
                            json=_resume({"decision": "edit", "args": {"order_id": "ORD-1001", "tenant_id": "globex"}}))
        [pending] = out["__interrupt__"]
        assert "edit refused" in pending["value"]["error"] and not out.get("executed")
        # Another record of the same tenant is a legitimate correction (the MCP server scopes it to the tenant).
        done = await olga.ok("POST", f"/approvals/{value['approval_id']}",
                             json={"decision": "edit", "args": {"order_id": "ORD-1003", "amount_cents": 400}})
        assert done["output"]["executed"]["call-1"]["args"] == {"order_id": "ORD-1003", "amount_cents": 400}
        assert done["approval"]["decided_by"] == "olga@acme"


# -- metrics ----------------------------------------------------------------------------------------------
async def test_metrics_need_a_token_when_auth_is_configured(tenant_server) -> None:
    async with httpx.AsyncClient(base_url=tenant_server.url) as http:
        resp = await http.get("/metrics")
        assert resp.status_code == 401
        assert "acme" not in resp.text and "globex" not in resp.text
    async with Caller(tenant_server, "gus") as gus:
        text = (await gus.http.get("/metrics")).text
        assert "interlock_runs_total" in text and 'tenant="acme"' not in text


async def test_creating_a_thread_with_another_tenants_id_neither_returns_nor_writes_it(tenant_server) -> None:
    async with Caller(tenant_server, "ann") as ann, Caller(tenant_server, "gus") as gus:
        tid = await ann.thread()
        await ann.ok("POST", f"/threads/{tid}/runs/wait", json={"assistant_id": "two_node", "input": {"n": 1}})
        before = await ann.state(tid)
        for body in (
            {"thread_id": tid, "if_exists": "do_nothing"},
            {"thread_id": tid, "if_exists": "do_nothing", "graph_id": "two_node",
             "supersteps": [{"updates": [{"values": {"n": 666}, "as_node": "b"}]}]},
        ):
            resp = await gus.http.post("/threads", json=body)
            assert resp.status_code == 409 and "values" not in resp.json(), resp.text
        assert (await ann.state(tid))["values"] == before["values"]


def test_metrics_show_tenant_series_only_to_that_tenant() -> None:
    """The scrape filter on real prometheus output (the server tests produce no model usage, hence no tenant series)."""
    from interlock.server import metrics
    from interlock.server.auth import ANONYMOUS, User
    from interlock.server.metrics import TOKENS, _for_caller
    from prometheus_client import generate_latest
    from starlette.requests import Request

    TOKENS.labels("acme", "router", "m").inc(3)
    TOKENS.labels("globex", "router", "m").inc(5)
    text = generate_latest(metrics.REGISTRY)
    assert b'tenant="acme"' in text and b'tenant="globex"' in text

    def scrape(user: User) -> str:
        return _for_caller(text, Request({"type": "http", "state": {"user": user}, "headers": []})).decode()

    acme = scrape(User(identity="olga@acme", extra={"tenant": "acme"}))
    assert 'tenant="acme"' in acme and "globex" not in acme and "interlock_tokens_total" in acme
    anonymous = scrape(ANONYMOUS)
    assert "acme" not in anonymous and "globex" not in anonymous and "interlock_runs_total" in anonymous


async def test_a_cron_patch_cannot_move_the_cron_to_another_tenant(tenant_server) -> None:
    async with Caller(tenant_server, "ann") as ann, Caller(tenant_server, "gus") as gus:
        cron = await ann.ok("POST", "/runs/crons", json={"assistant_id": "two_node", "schedule": "0 0 1 1 *"})
        patched = await ann.ok("PATCH", f"/runs/crons/{cron['cron_id']}", json={"metadata": {"tenant": "globex", "x": 1}})
        assert patched["metadata"]["tenant"] == "acme" and patched["metadata"]["x"] == 1
        assert (await gus.http.get(f"/runs/crons/{cron['cron_id']}")).status_code == 404
        listed = await gus.ok("POST", "/runs/crons/search", json={"limit": 100})
        assert cron["cron_id"] not in [c["cron_id"] for c in listed]
