"""Issue 13, desktop assistants: a Claude-Desktop-style stdio subprocess (README's configuration) cannot send an
approval id, so its destructive call asks an operator instead. The operator decides through the real server's
/approvals API (an `interlock serve` subprocess on the same INTERLOCK_HOME); the identical call then succeeds
once, and different arguments need a new approval."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastmcp import Client
from mcp_testkit import order_status, token
from test_mcp_stdio_desktop import ORDERS, desktop_config, text

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "tests" / "server" / "project" / "langgraph.json"
PENDING = re.compile(r"approval (apr_[0-9a-f]{32}) is pending")


@pytest.fixture(scope="module")
def operator_api(mcp_home: Path) -> Iterator[str]:
    """A real `interlock serve` (local development mode) sharing the MCP servers' home and database."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "INTERLOCK_DATABASE_URL"}
    env.update({"INTERLOCK_HOME": str(mcp_home), "LANGSMITH_API_KEY": "", "LANGGRAPH_API_KEY": ""})
    # Local mode accepts registered tenants only; `interlock seed` registers the sample ones (the MCP fixture seeds
    # the business data alone), so this module does not depend on another having registered them.
    subprocess.run([sys.executable, "-m", "interlock", "tenants", "add", "acme"], env=env, check=True, cwd=ROOT)
    subprocess.run([sys.executable, "-m", "interlock", "tenants", "add", "globex"], env=env, check=True, cwd=ROOT)
    log = mcp_home / f"serve-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "interlock", "serve", "--config", str(PROJECT), "--port", str(port)],
        cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        try:
            if httpx.get(url + "/ok", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(log.read_text()[-3000:])
        time.sleep(0.2)
    yield url
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def pending_id(result: Any) -> str:
    assert result.is_error, text(result)
    message = text(result)
    match = PENDING.search(message)
    assert match, message
    assert "Retry the identical call" in message and "once an operator has approved it" in message
    return match.group(1)


async def test_desktop_destructive_call_waits_for_an_operator_then_the_identical_call_runs_once(
    mcp_home: Path, operator_api: str
) -> None:
    args = {"order_id": "ORD-1005", "amount_cents": 25, "reason": "desktop goodwill"}
    before = order_status("ORD-1005")[1]
    config = desktop_config(mcp_home, token(ORDERS, ["orders:read", "orders:write"], sub="desk-user"))
    async with Client(config) as client, httpx.AsyncClient(base_url=operator_api, params={"tenant": "acme"},
                                                           timeout=30) as api:
        first = pending_id(await client.call_tool("refund_order", args, raise_on_error=False))
        # It is in the operator inbox, as the exact call, with no run attached.
        inbox = {a["id"]: a for a in (await api.get("/approvals", params={"status": "pending"})).json()}
        assert inbox[first]["tool"] == "refund_order" and inbox[first]["args"] == args
        assert inbox[first]["principal"] == "desk-user" and inbox[first]["thread_id"] is None
        # Another tenant's operator does not see it.
        other = (await api.get("/approvals", params={"status": "pending", "tenant": "globex"})).json()
        assert first not in {a["id"] for a in other}
        # Retrying before a decision names the same approval instead of queueing another one.
        assert pending_id(await client.call_tool("refund_order", args, raise_on_error=False)) == first
        assert order_status("ORD-1005")[1] == before

        decided = await api.post(f"/approvals/{first}", json={"decision": "approve", "reason": "checked"})
        assert decided.status_code == 200, decided.text
        assert decided.json()["approval"]["status"] == "approved"
        assert decided.json()["approval"]["decided_by"] == "operator@local"

        done = await client.call_tool("refund_order", args, raise_on_error=False)  # no _meta at all
        assert not done.is_error, text(done)
        assert order_status("ORD-1005")[1] == before + 25
        # Spent once: the same call again asks for a new approval and changes nothing.
        second = pending_id(await client.call_tool("refund_order", args, raise_on_error=False))
        assert second != first and order_status("ORD-1005")[1] == before + 25
        # Different arguments: a new pending approval of their own.
        third = pending_id(await client.call_tool("refund_order", {**args, "amount_cents": 26},
                                                  raise_on_error=False))
        assert third not in (first, second)

        detail = (await api.get(f"/approvals/{first}")).json()
    assert detail["status"] == "consumed"
    assert [(e["kind"], e["actor"]) for e in detail["audit"]] == [
        ("requested", "desk-user"), ("approved", "operator@local"), ("consumed", "desk-user")]
    assert [(c["outcome"], c["transport"]) for c in detail["tool_calls"]] == [
        ("denied", "stdio"), ("denied", "stdio"), ("ok", "stdio")]
    assert set(detail["input_schema"]["required"]) == {"order_id", "amount_cents", "reason"}


async def test_operator_rejection_keeps_the_desktop_call_refused(mcp_home: Path, operator_api: str) -> None:
    args = {"order_id": "ORD-1005", "amount_cents": 7, "reason": "desktop reject path"}
    before = order_status("ORD-1005")[1]
    config = desktop_config(mcp_home, token(ORDERS, ["orders:read", "orders:write"], sub="desk-user"))
    async with Client(config) as client, httpx.AsyncClient(base_url=operator_api, params={"tenant": "acme"},
                                                           timeout=30) as api:
        first = pending_id(await client.call_tool("refund_order", args, raise_on_error=False))
        foreign = await api.post(f"/approvals/{first}", params={"tenant": "globex"}, json={"decision": "approve"})
        assert foreign.status_code == 404
        rejected = await api.post(f"/approvals/{first}", json={"decision": "reject", "reason": "no"})
        assert rejected.status_code == 200 and rejected.json()["approval"]["status"] == "rejected"
        again = pending_id(await client.call_tool("refund_order", args, raise_on_error=False))
        assert again != first
    assert order_status("ORD-1005")[1] == before


async def test_approvals_api_answers_bad_input_with_4xx_naming_the_problem(mcp_home: Path, operator_api: str) -> None:
    args = {"order_id": "ORD-1005", "amount_cents": 9, "reason": "bad input checks"}
    config = desktop_config(mcp_home, token(ORDERS, ["orders:read", "orders:write"], sub="desk-user"))
    async with Client(config) as client:
        approval = pending_id(await client.call_tool("refund_order", args, raise_on_error=False))
    async with httpx.AsyncClient(base_url=operator_api, params={"tenant": "acme"}, timeout=30) as api:
        for params, needle in (({"limit": "0"}, "'limit'"), ({"limit": "x"}, "'limit'"), ({"offset": "-1"}, "'offset'"),
                               ({"status": "nope"}, "unknown approval status")):
            response = await api.get("/approvals", params=params)
            assert response.status_code == 422 and needle in response.json()["detail"], response.text
        async with httpx.AsyncClient(base_url=operator_api, timeout=30) as bare:
            assert (await bare.get("/approvals/events")).status_code == 422
        bad_edit = await api.post(f"/approvals/{approval}", json={"decision": "edit", "args": {**args, "amount_cents": "9"}})
        assert bad_edit.status_code == 422 and "args.amount_cents" in bad_edit.json()["detail"]
        extra = await api.post(f"/approvals/{approval}", json={"decision": "edit", "args": {**args, "note": "x"}})
        assert extra.status_code == 422 and "note" in extra.json()["detail"]
        assert (await api.post(f"/approvals/{approval}", json={"decision": "edit"})).status_code == 422
        assert (await api.post(f"/approvals/{approval}", json={"decision": "maybe"})).status_code == 422
        assert (await api.get("/approvals/apr_missing")).status_code == 404
        # A valid edit is an approval of the edited call: only that call (by that principal) may now spend it.
        edited = {**args, "amount_cents": 8}
        ok = await api.post(f"/approvals/{approval}", json={"decision": "edit", "args": edited, "reason": "less"})
        assert ok.status_code == 200 and ok.json()["approval"]["args"] == edited
        assert [e["kind"] for e in (await api.get(f"/approvals/{approval}")).json()["audit"]] == ["requested", "edited"]
        everything = (await api.get("/approvals", params={"status": "decided", "limit": "500"})).json()
        page = await api.get("/approvals", params={"status": "decided", "limit": "1"})
        assert page.status_code == 200 and [a["id"] for a in page.json()] == [everything[0]["id"]]
        assert page.headers.get("x-pagination-next") == ("1" if len(everything) > 1 else None)


@pytest.fixture
def self_confirm_policies(tmp_path: Path) -> Path:
    """The shipped policies, with cancel_order confirmable by its own requester."""
    import yaml

    for path in (ROOT / "policies").glob("*.yaml"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    tools = yaml.safe_load((tmp_path / "tools.yaml").read_text())
    tools["tools"]["cancel_order"]["self_confirm"] = True
    (tmp_path / "tools.yaml").write_text(yaml.safe_dump(tools, sort_keys=False))
    return tmp_path


async def test_desktop_user_confirms_their_own_call_through_elicitation_where_policy_allows(
    mcp_home: Path, operator_api: str, self_confirm_policies: Path
) -> None:
    import sqlite3
    from contextlib import closing

    from mcp_testkit import order_status as status

    with closing(sqlite3.connect(mcp_home / "systems" / "orders.db")) as conn:
        # A cancellable acme order no other MCP test touches (they use ORD-1001 and ORD-1004).
        (mine,) = conn.execute("SELECT id FROM orders WHERE tenant = 'acme' AND status IN ('processing', 'pending')"
                               " AND id NOT IN ('ORD-1001', 'ORD-1004') ORDER BY id LIMIT 1").fetchone()

    config = desktop_config(mcp_home, token(ORDERS, ["orders:read", "orders:write"], sub="desk-self"))
    config["mcpServers"]["orders"]["env"]["INTERLOCK_POLICY_DIR"] = str(self_confirm_policies)
    asked: list[str] = []

    async def confirm(message: str, response_type: Any, params: Any, context: Any) -> Any:
        asked.append(message)
        return mine in message  # the user confirms only the order they meant

    async with Client(config, elicitation_handler=confirm) as client:
        declined = await client.call_tool("cancel_order", {"order_id": "ORD-1004", "reason": "not this one"},
                                          raise_on_error=False)
        assert declined.is_error and "you did not confirm it" in text(declined)
        assert status("ORD-1004")[0] != "cancelled"
        done = await client.call_tool("cancel_order", {"order_id": mine, "reason": "desk self confirm"},
                                      raise_on_error=False)
        assert not done.is_error, text(done)
        # refund_order is operator-only under the same policy: no question, a pending approval instead.
        refund = await client.call_tool("refund_order", {"order_id": "ORD-1005", "amount_cents": 1, "reason": "x y z"},
                                        raise_on_error=False)
        pending_id(refund)
    assert status(mine)[0] == "cancelled"
    assert len(asked) == 2 and "cannot be undone" in asked[0] and '"order_id": "ORD-1004"' in asked[0]
    async with httpx.AsyncClient(base_url=operator_api, params={"tenant": "acme"}, timeout=30) as api:
        own = [a for a in (await api.get("/approvals", params={"limit": "500"})).json()
               if a["principal"] == "desk-self" and a["tool"] == "cancel_order"]
        by_order = {a["args"]["order_id"]: a for a in own}
        assert by_order["ORD-1004"]["status"] == "rejected" and by_order[mine]["status"] == "consumed"
        trail = (await api.get(f"/approvals/{by_order[mine]['id']}")).json()["audit"]
    assert [(e["kind"], e["actor"]) for e in trail] == [
        ("requested", "desk-self"), ("approved", "desk-self"), ("consumed", "desk-self")]
    assert "elicitation" in trail[1]["reason"]
