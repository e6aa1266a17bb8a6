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
        assert decided.json()["approval"]["decided_by"] == "local-operator"

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
        ("requested", "desk-user"), ("approved", "local-operator"), ("consumed", "desk-user")]
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
