"""A real stdio subprocess launched from a Claude-Desktop-style `mcpServers` config: credentials come from the
environment, scopes and tenant still hold, and destructive tools refuse without an approval id."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from fastmcp import Client
from interlock.tools import endpoints
from interlock.tools.approvals import ApprovalStore
from interlock.tools.audit import AuditLog
from mcp_testkit import order_status, token

INTERLOCK = str(Path(sys.executable).with_name("interlock"))
ORDERS = endpoints.canonical_url("orders")  # a stdio server still verifies aud against its canonical URL


def desktop_config(home: Path, token_value: str | None) -> dict[str, Any]:
    env = {"INTERLOCK_HOME": str(home), "PATH": os.environ.get("PATH", "")}
    if token_value:
        env["INTERLOCK_MCP_TOKEN"] = token_value
    return {"mcpServers": {"orders": {"command": INTERLOCK, "args": ["mcp", "orders", "--transport", "stdio"],
                                      "env": env}}}


def text(result: Any) -> str:
    return " ".join(getattr(b, "text", "") for b in result.content)


async def test_stdio_read_only_profile(mcp_home):
    async with Client(desktop_config(mcp_home, token(ORDERS, ["orders:read"], sub="desk"))) as client:
        names = {t.name for t in await client.list_tools()}
        assert names == {"get_order", "list_orders", "track_shipment"}
        order = await client.call_tool("get_order", {"order_id": "ORD-1002"})
        assert order.structured_content["status"] == "shipped"
        foreign = await client.call_tool("get_order", {"order_id": "ORD-2002"}, raise_on_error=False)
        assert foreign.is_error and "not found" in text(foreign)
        write = await client.call_tool("refund_order", {"order_id": "ORD-1002", "amount_cents": 1, "reason": "x y"},
                                       raise_on_error=False)
        assert write.is_error and "insufficient scope" in text(write)
    assert order_status("ORD-1002")[1] == 0


async def test_stdio_approval_id_in_meta_still_spends_exactly_that_approval(mcp_home):
    args = {"order_id": "ORD-1005", "amount_cents": 50, "reason": "desktop refund"}
    since = time.time()
    refunded_before = order_status("ORD-1005")[1]
    store = ApprovalStore()
    try:
        approval = await store.request(tool="refund_order", server="orders", args=args, principal="desk-meta",
                                       tenant="acme")
        await store.decide(approval.id, "approve", decided_by="ops@test")
    finally:
        await store.close()
    async with Client(desktop_config(mcp_home, token(ORDERS, ["orders:read", "orders:write"],
                                                     sub="desk-meta"))) as client:
        done = await client.call_tool("refund_order", args, raise_on_error=False,
                                      meta={"io.interlock/approval_id": approval.id})
        assert not done.is_error, text(done)
        again = await client.call_tool("refund_order", args, raise_on_error=False,
                                       meta={"io.interlock/approval_id": approval.id})
        assert again.is_error and "already been used" in text(again)
    assert order_status("ORD-1005")[1] == refunded_before + 50
    log = AuditLog()
    try:
        rows = await log.query(principal="desk-meta", tool="refund_order", since=since)
    finally:
        await log.close()
    assert sorted((r.outcome, r.transport) for r in rows) == [("denied", "stdio"), ("ok", "stdio")]


async def test_stdio_without_credentials_refuses_everything(mcp_home):
    async with Client(desktop_config(mcp_home, None)) as client:
        result = await client.call_tool("get_order", {"order_id": "ORD-1001"}, raise_on_error=False)
        assert result.is_error and "no credentials" in text(result)


async def test_stdio_rejects_a_token_for_another_audience(mcp_home):
    crm_token = token(endpoints.canonical_url("crm"), ["orders:read", "crm:read"])
    async with Client(desktop_config(mcp_home, crm_token)) as client:
        result = await client.call_tool("get_order", {"order_id": "ORD-1001"}, raise_on_error=False)
        assert result.is_error and "invalid, expired or foreign token" in text(result)
