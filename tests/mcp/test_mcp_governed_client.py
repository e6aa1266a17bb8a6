"""The graph-side client (`tools.client.GovernedTools`) against the MCP servers over real HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx2
import pytest
from interlock.tools.approvals import ApprovalStore
from interlock.tools.audit import AuditLog
from interlock.tools.client import (
    GovernedTools,
    Principal,
    ServerConfig,
    ToolDenied,
    ToolsConfig,
    ToolUnavailable,
    load_config,
)
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

READER = Principal(sub="reader", tenant="acme",
                   scopes=["orders:read", "crm:read", "crm:write", "tickets:read", "customers:any"])
WRITER = Principal(sub="writer", tenant="acme", scopes="orders:read orders:write billing:read customers:any")


class FlakyTransport(httpx2.AsyncBaseTransport):
    """Real network transport that can be switched to fail or stall, counting requests while it misbehaves."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.state = state

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        mode = self.state.get("mode")
        if mode:
            self.state["hits"] = self.state.get("hits", 0) + 1
        if mode == "down":
            raise httpx2.ConnectError("connection refused", request=request)
        if mode == "slow":
            await asyncio.sleep(3)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def counting_factory(state: dict[str, Any]) -> Any:
    def factory(**kwargs: Any) -> httpx2.AsyncClient:
        state["clients"] = state.get("clients", 0) + 1
        kwargs.setdefault("timeout", httpx2.Timeout(30.0))
        return httpx2.AsyncClient(transport=FlakyTransport(state), **kwargs)

    return factory


def make_tools(servers, **config: Any) -> GovernedTools:
    return GovernedTools(ToolsConfig(servers={n: ServerConfig(url=u) for n, u in servers.urls.items()}, **config))


async def test_list_tools_filters_by_scope_and_allowlist(servers):
    tools = make_tools(servers)
    try:
        infos = {t.name: t for t in await tools.list_tools(READER)}
        assert set(infos) == {"get_order", "list_orders", "track_shipment", "find_customer", "get_customer",
                              "update_contact", "get_ticket"}
        assert infos["update_contact"].server == "crm" and not infos["update_contact"].read_only
        assert infos["update_contact"].idempotent and not infos["update_contact"].destructive
        assert infos["get_order"].input_schema["properties"]["order_id"]["pattern"] == r"^ORD-\d{4}$"
        narrowed = await tools.list_tools(READER, allowlist=["orders.get_order", "crm.*"])
        assert {t.name for t in narrowed} == {"get_order", "find_customer", "get_customer", "update_contact"}
        writer = {t.name: t for t in await tools.list_tools(WRITER)}
        assert writer["cancel_order"].destructive and "destructive" in writer["cancel_order"].tags
        assert "issue_credit" not in writer  # billing:read only
    finally:
        await tools.aclose()


async def test_langchain_tools_in_a_tool_node(servers):
    tools = make_tools(servers)
    store = ApprovalStore()
    try:
        args = {"order_id": "ORD-1007", "amount_cents": 10, "reason": "goodwill"}
        approval = await store.request(tool="refund_order", server="orders", args=args, principal="writer",
                                       tenant="acme")
        await store.decide(approval.id, "approve", decided_by="ops@test")
        granted = {"refund_order": approval.id}
        lc_tools = await tools.as_langchain_tools(WRITER, allowlist=["orders.*"],
                                                  approval_for=lambda name, _args: granted.pop(name, None))
        assert {t.name for t in lc_tools} == {"get_order", "list_orders", "track_shipment", "cancel_order",
                                              "refund_order"}
        refund = next(t for t in lc_tools if t.name == "refund_order")
        assert set(refund.args) == {"order_id", "amount_cents", "reason"}
        assert refund.metadata["destructive"] is True
        builder = StateGraph(MessagesState)
        builder.add_node("tools", ToolNode(lc_tools))
        builder.add_edge(START, "tools")
        builder.add_edge("tools", END)
        node = builder.compile()
        calls = [
            {"name": "get_order", "args": {"order_id": "ORD-1001"}, "id": "c1"},
            {"name": "get_order", "args": {"order_id": "ORD-2001"}, "id": "c2"},
            {"name": "cancel_order", "args": {"order_id": "ORD-1006", "reason": "dup"}, "id": "c3"},
            {"name": "refund_order", "args": args, "id": "c4"},
            {"name": "get_order", "args": {"order_id": "not-an-id"}, "id": "c5"},
        ]
        out = await node.ainvoke({"messages": [AIMessage(content="", tool_calls=calls)]})
        msgs: dict[str, ToolMessage] = {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}
        assert msgs["c1"].status == "success" and msgs["c1"].artifact["order_id"] == "ORD-1001"
        assert msgs["c2"].status == "error" and "not found" in msgs["c2"].content
        assert msgs["c3"].status == "error" and "approval" in msgs["c3"].content
        assert msgs["c4"].status == "success" and msgs["c4"].artifact["amount_cents"] == 10
        assert msgs["c5"].status == "error"
    finally:
        await store.close()
        await tools.aclose()


async def test_call_sends_approval_and_trace_in_meta_and_reuses_connections(servers):
    state: dict[str, Any] = {}
    tools = GovernedTools(ToolsConfig(servers={"orders": ServerConfig(url=servers.urls["orders"])}),
                          http_client_factories={"orders": counting_factory(state)})
    try:
        for _ in range(5):
            result = await tools.call(WRITER, "get_order", {"order_id": "ORD-1003"}, trace_id="trace-xyz")
            assert not result.is_error and result.structured["order_id"] == "ORD-1003"
        assert state["clients"] == 1  # one connection for discovery and every call
        since = time.time()
        result = await tools.call(WRITER, "cancel_order", {"order_id": "ORD-1006", "reason": "dup"},
                                  approval_id="apr_does_not_exist", trace_id="trace-abc")
        assert result.is_error and "not found" in result.text
    finally:
        await tools.aclose()
    log = AuditLog()
    try:
        rows = await log.query(principal="writer", tool="cancel_order", since=since)
    finally:
        await log.close()
    assert [(r.outcome, r.reason, r.approval_id, r.trace_id) for r in rows] == [
        ("denied", "approval_not_found", "apr_does_not_exist", "trace-abc")]


async def test_only_reads_are_retried_and_calls_time_out(servers):
    state: dict[str, Any] = {}
    tools = GovernedTools(
        ToolsConfig(servers={"orders": ServerConfig(url=servers.urls["orders"])}, timeout_s=0.5, read_retries=2),
        http_client_factories={"orders": counting_factory(state)})
    try:
        await tools.call(WRITER, "get_order", {"order_id": "ORD-1001"})  # discovery + a connection
        state["mode"] = "down"
        with pytest.raises(ToolUnavailable):
            await tools.call(WRITER, "cancel_order", {"order_id": "ORD-1006", "reason": "dup"}, approval_id="a")
        assert state["hits"] == 1  # a write is never retried
        state["hits"] = 0
        with pytest.raises(ToolUnavailable, match="3 attempt"):
            await tools.call(WRITER, "get_order", {"order_id": "ORD-1001"})
        assert state["hits"] >= 3
        state["mode"] = "slow"  # the answer would arrive after 3 s, past the 0.5 s per-call timeout
        with pytest.raises(ToolUnavailable):
            await tools.call(WRITER, "cancel_order", {"order_id": "ORD-1006", "reason": "dup"}, approval_id="a")
        state["mode"] = None
        result = await tools.call(WRITER, "get_order", {"order_id": "ORD-1001"})
        assert not result.is_error  # recovers with a fresh connection
    finally:
        await tools.aclose()


async def test_denied_locally_and_audited(servers):
    tools = make_tools(servers)
    since = time.time()
    try:
        with pytest.raises(ToolDenied):
            await tools.call(READER, "cancel_order", {"order_id": "ORD-1001", "reason": "secret-reason"})
        with pytest.raises(ToolDenied):
            await tools.call(READER, "update_contact", {"customer_id": "CUS-101", "phone": "+1 555 1234"},
                             allowlist=["orders.*"])
    finally:
        await tools.aclose()
    log = AuditLog()
    try:
        rows = await log.query(principal="reader", since=since)
    finally:
        await log.close()
    assert sorted((r.tool, r.outcome, r.server) for r in rows) == [
        ("cancel_order", "denied", "interlock-client"), ("update_contact", "denied", "interlock-client")]
    assert "secret-reason" not in " ".join(r.model_dump_json() for r in rows)


async def test_unreachable_server_does_not_break_discovery_of_the_others(servers, mcp_home):
    from mcp_testkit import free_socket

    dead = free_socket()  # bound, never listening
    port = dead.getsockname()[1]
    config = ToolsConfig(servers={"orders": ServerConfig(url=servers.urls["orders"]),
                                  "crm": ServerConfig(url=f"http://127.0.0.1:{port}/mcp")}, timeout_s=2)
    tools = GovernedTools(config)
    try:
        names = {t.name for t in await tools.list_tools(READER)}
        assert "get_order" in names and "find_customer" not in names
        with pytest.raises(ToolDenied):
            await tools.call(READER, "find_customer", {"query": "ava"})
    finally:
        dead.close()
        await tools.aclose()


def test_config_is_loaded_from_yaml(tmp_path, monkeypatch):
    path = tmp_path / "tools.yaml"
    path.write_text("servers:\n  orders: {url: 'http://127.0.0.1:9999/mcp', audience: 'https://orders.example/mcp'}\n"
                    "allowlists:\n  support: ['orders.get_order']\ntimeout_s: 3\n")
    config = load_config(path)
    assert config.servers["orders"].aud == "https://orders.example/mcp" and config.timeout_s == 3
    monkeypatch.setenv("INTERLOCK_TOOLS_CONFIG", str(path))
    assert GovernedTools.from_config().allowlist_for("support") == ["orders.get_order"]
    path.write_text("servers: [1, 2]\n")
    with pytest.raises(ValueError, match="invalid tools config"):
        load_config(path)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    monkeypatch.delenv("INTERLOCK_TOOLS_CONFIG")
    assert set(load_config().servers) == {"orders", "crm", "billing", "tickets"}  # built-in defaults
