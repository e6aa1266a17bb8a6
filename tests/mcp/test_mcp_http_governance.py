"""The MCP servers over real Streamable HTTP on 127.0.0.1: scopes, tokens, tenants, approvals, audit, Origin,
masked errors and business rules."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from fastmcp import Client
from interlock.tools.approvals import ApprovalStore
from interlock.tools.audit import AuditLog
from joserfc.jwk import RSAKey
from mcp_testkit import forged_token, order_status, token

APPROVAL = "io.interlock/approval_id"
READ = ["orders:read"]


async def call(url: str, tok: str, tool: str, args: dict[str, Any], meta: dict | None = None) -> Any:
    async with Client(url, auth=tok) as client:
        return await client.call_tool(tool, args, raise_on_error=False, meta=meta)


def text(result: Any) -> str:
    return " ".join(getattr(b, "text", "") for b in result.content)


async def approve(tool: str, args: dict, sub: str = "alice", tenant: str = "acme", server: str = "orders",
                  ttl_s: int = 600) -> str:
    store = ApprovalStore()
    try:
        a = await store.request(tool=tool, server=server, args=args, principal=sub, tenant=tenant)
        await store.decide(a.id, "approve", decided_by="ops@test", ttl_s=ttl_s)
        return a.id
    finally:
        await store.close()


async def raw_post(url: str, tok: str | None, origin: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-11-25"}
    if tok:
        headers["Authorization"] = f"Bearer {tok}"
    if origin:
        headers["Origin"] = origin
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "probe", "version": "0"}}}
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(url, json=body, headers=headers)


# -- scopes and tokens ---------------------------------------------------------------------------------------

async def test_read_only_token_neither_lists_nor_calls_write_tools(servers):
    url = servers.urls["orders"]
    async with Client(url, auth=token(url, READ)) as client:
        names = {t.name for t in await client.list_tools()}
        assert names == {"get_order", "list_orders", "track_shipment"}
        before = order_status("ORD-1004")
        result = await client.call_tool("cancel_order", {"order_id": "ORD-1004", "reason": "test"},
                                        raise_on_error=False, meta={APPROVAL: "apr_none"})
    assert result.is_error
    assert "insufficient scope" in text(result) or "not authorized" in text(result)
    assert order_status("ORD-1004") == before


async def test_write_token_lists_write_tools_with_annotations(servers):
    url = servers.urls["orders"]
    async with Client(url, auth=token(url, ["orders:read", "orders:write"])) as client:
        tools = {t.name: t for t in await client.list_tools()}
    cancel = tools["cancel_order"]
    assert cancel.annotations.destructive_hint is True and cancel.annotations.read_only_hint is False
    assert "destructive" in cancel.meta["fastmcp"]["tags"]
    assert cancel.meta["interlock"]["scope"] == "orders:write"
    assert tools["get_order"].annotations.read_only_hint is True


@pytest.mark.parametrize("case", ["wrong_audience", "expired", "foreign_key", "foreign_issuer", "no_exp",
                                  "no_tenant", "garbage", "none"])
async def test_bad_tokens_get_401(servers, case):
    url = servers.urls["orders"]
    tok = {
        "wrong_audience": lambda: token(servers.urls["crm"]),
        "expired": lambda: forged_token(url, iat=int(time.time()) - 600, nbf=int(time.time()) - 600,
                                        exp=int(time.time()) - 60),
        "foreign_key": lambda: forged_token(url, key=RSAKey.generate_key(2048)),
        "foreign_issuer": lambda: forged_token(url, iss="https://evil.example"),
        "no_exp": lambda: forged_token(url, exp=None),
        "no_tenant": lambda: forged_token(url, tenant_id=None),
        "garbage": lambda: "not-a-jwt",
        "none": lambda: None,
    }[case]()
    response = await raw_post(url, tok)
    assert response.status_code == 401
    assert "resource_metadata=" in response.headers["www-authenticate"]


async def test_missing_floor_scope_gets_403_insufficient_scope(servers):
    url = servers.urls["orders"]
    response = await raw_post(url, token(url, ["crm:read", "orders:write"]))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_valid_token_is_accepted_and_metadata_names_the_canonical_url(servers):
    url = servers.urls["orders"]
    assert (await raw_post(url, token(url, READ))).status_code == 200
    base = url.rsplit("/mcp", 1)[0]
    async with httpx.AsyncClient(timeout=10) as http:
        prm = (await http.get(f"{base}/.well-known/oauth-protected-resource/mcp")).json()
    assert prm["resource"] == url
    assert prm["authorization_servers"]


async def test_foreign_origin_is_rejected(servers):
    url = servers.urls["orders"]
    tok = token(url, READ)
    assert (await raw_post(url, tok, origin="https://evil.example")).status_code == 403
    assert (await raw_post(url, tok, origin=url.rsplit("/mcp", 1)[0])).status_code == 200


# -- tenants -------------------------------------------------------------------------------------------------

async def test_tenant_cannot_read_another_tenants_order_by_id(servers):
    url = servers.urls["orders"]
    own = await call(url, token(url, READ, tenant="acme"), "get_order", {"order_id": "ORD-1001"})
    assert not own.is_error and own.structured_content["order_id"] == "ORD-1001"
    other = await call(url, token(url, READ, tenant="acme"), "get_order", {"order_id": "ORD-2001"})
    assert other.is_error and "not found" in text(other)
    theirs = await call(url, token(url, READ, sub="gina", tenant="globex"), "get_order", {"order_id": "ORD-2001"})
    assert not theirs.is_error


async def test_tenant_in_arguments_or_headers_is_ignored(servers):
    url = servers.urls["orders"]
    tok = token(url, READ, tenant="acme")
    smuggled = await call(url, tok, "get_order", {"order_id": "ORD-2001", "tenant_id": "globex"})
    assert smuggled.is_error and "ORD-2001" not in str(smuggled.structured_content or "")
    from fastmcp.client.transports import StreamableHttpTransport

    transport = StreamableHttpTransport(url, auth=tok, headers={"X-Tenant-Id": "globex", "X-Tenant": "globex"})
    async with Client(transport) as client:
        listed = await client.call_tool("list_orders", {"limit": 100})
        foreign = await client.call_tool("get_order", {"order_id": "ORD-2002"}, raise_on_error=False)
    ids = [o["order_id"] for o in listed.structured_content["orders"]]
    assert ids and all(i.startswith("ORD-1") for i in ids)
    assert foreign.is_error


# -- approvals -----------------------------------------------------------------------------------------------

W = ["orders:read", "orders:write"]


async def test_destructive_call_without_approval_is_refused_and_db_unchanged(servers):
    url = servers.urls["orders"]
    before = order_status("ORD-1004")
    result = await call(url, token(url, W), "cancel_order", {"order_id": "ORD-1004", "reason": "dup order"})
    assert result.is_error and "approval" in text(result)
    assert order_status("ORD-1004") == before


async def test_approval_is_bound_to_arguments_single_use_principal_and_expiry(servers):
    url = servers.urls["orders"]
    args_a = {"order_id": "ORD-1004", "reason": "customer request"}
    args_b = {"order_id": "ORD-1001", "reason": "customer request"}
    approval = await approve("cancel_order", args_a)

    # An approval for order A cannot cancel order B.
    wrong = await call(url, token(url, W), "cancel_order", args_b, meta={APPROVAL: approval})
    assert wrong.is_error and "differ" in text(wrong)
    assert order_status("ORD-1001")[0] != "cancelled"

    # Bound to its principal: bob (same tenant, same scopes) cannot spend alice's approval.
    bob = await call(url, token(url, W, sub="bob"), "cancel_order", args_a, meta={APPROVAL: approval})
    assert bob.is_error and "different principal" in text(bob)
    # Nor can another tenant's principal with the same name.
    alien = await call(url, token(url, W, tenant="globex"), "cancel_order", args_a, meta={APPROVAL: approval})
    assert alien.is_error and "not found" in text(alien)
    assert order_status("ORD-1004")[0] == "pending"

    ok = await call(url, token(url, W), "cancel_order", args_a, meta={APPROVAL: approval})
    assert not ok.is_error and ok.structured_content["status"] == "cancelled"

    again = await call(url, token(url, W), "cancel_order", args_a, meta={APPROVAL: approval})
    assert again.is_error and "already been used" in text(again)


async def test_expired_approval_is_refused(servers):
    url = servers.urls["orders"]
    args = {"order_id": "ORD-1001", "amount_cents": 100, "reason": "late delivery"}
    approval = await approve("refund_order", args, ttl_s=1)
    time.sleep(1.2)  # noqa: ASYNC251 - the approval must really expire on the server's clock
    result = await call(url, token(url, W), "refund_order", args, meta={APPROVAL: approval})
    assert result.is_error and "expired" in text(result)
    assert order_status("ORD-1001")[1] == 0


async def test_approval_for_another_tool_is_refused(servers):
    url = servers.urls["orders"]
    args = {"order_id": "ORD-1001", "reason": "customer request"}
    approval = await approve("refund_order", args)
    result = await call(url, token(url, W), "cancel_order", args, meta={APPROVAL: approval})
    assert result.is_error and "different tool" in text(result)


# -- business rules ------------------------------------------------------------------------------------------

async def test_shipped_order_cannot_be_cancelled_even_with_approval(servers):
    url = servers.urls["orders"]
    args = {"order_id": "ORD-1002", "reason": "customer changed mind"}
    result = await call(url, token(url, W), "cancel_order", args, meta={APPROVAL: await approve("cancel_order", args)})
    assert result.is_error and "cannot be cancelled" in text(result)
    assert order_status("ORD-1002")[0] == "shipped"


async def test_refund_cannot_exceed_what_was_paid(servers):
    url = servers.urls["orders"]
    async with Client(url, auth=token(url, READ)) as client:
        order = (await client.call_tool("get_order", {"order_id": "ORD-1003"})).structured_content
    too_much = {"order_id": "ORD-1003", "amount_cents": order["paid_cents"] + 1, "reason": "damaged"}
    result = await call(url, token(url, W), "refund_order", too_much,
                        meta={APPROVAL: await approve("refund_order", too_much)})
    assert result.is_error and "exceeds the refundable amount" in text(result)
    fine = {"order_id": "ORD-1003", "amount_cents": order["paid_cents"], "reason": "damaged"}
    result = await call(url, token(url, W), "refund_order", fine, meta={APPROVAL: await approve("refund_order", fine)})
    assert not result.is_error and result.structured_content["remaining_refundable_cents"] == 0
    # Nothing is left to refund now, even one cent.
    one = {"order_id": "ORD-1003", "amount_cents": 1, "reason": "damaged"}
    result = await call(url, token(url, W), "refund_order", one, meta={APPROVAL: await approve("refund_order", one)})
    assert result.is_error


async def test_credit_needs_a_reason(servers):
    url = servers.urls["billing"]
    scopes = ["billing:read", "billing:write"]
    blank = {"invoice_id": "INV-1005", "amount_cents": 100, "reason": "   "}
    result = await call(url, token(url, scopes), "issue_credit", blank,
                        meta={APPROVAL: await approve("issue_credit", blank, server="billing")})
    assert result.is_error and "a credit needs a reason" in text(result)
    good = {"invoice_id": "INV-1005", "amount_cents": 100, "reason": "goodwill"}
    result = await call(url, token(url, scopes), "issue_credit", good,
                        meta={APPROVAL: await approve("issue_credit", good, server="billing")})
    assert not result.is_error and result.structured_content["amount_cents"] == 100


async def test_ticket_and_crm_writes_need_no_approval_and_attribute_the_caller(servers):
    url = servers.urls["tickets"]
    tok = token(url, ["tickets:read", "tickets:write"], sub="agent-7")
    result = await call(url, tok, "add_comment", {"ticket_id": "TCK-1001", "body": "Looking into it"})
    assert not result.is_error
    assert result.structured_content["comments"][-1]["author"] == "agent-7"
    crm = servers.urls["crm"]
    result = await call(crm, token(crm, ["crm:read", "crm:write"]), "update_contact",
                        {"customer_id": "CUS-105", "phone": "+1 555 0100"})
    assert not result.is_error and result.structured_content["phone"] == "+1 555 0100"


# -- audit and masking ---------------------------------------------------------------------------------------

async def test_audit_has_one_row_per_call_including_denials_and_no_raw_arguments(servers):
    url = servers.urls["orders"]
    since = time.time() - 0.001
    marker = f"audit-marker-{time.time_ns()}"
    tok = token(url, W, sub="auditor")
    await call(url, tok, "get_order", {"order_id": "ORD-1003"})
    await call(url, tok, "cancel_order", {"order_id": "ORD-1001", "reason": marker})  # denied: no approval
    await call(url, token(url, READ, sub="auditor"), "refund_order",
               {"order_id": "ORD-1001", "amount_cents": 1, "reason": marker})      # denied: scope
    await call(url, tok, "get_order", {"order_id": "ORD-2001"})                      # tool error
    log = AuditLog()
    try:
        rows = await log.query(principal="auditor", since=since)
    finally:
        await log.close()
    rows.sort(key=lambda r: r.ts)
    assert [(r.tool, r.outcome) for r in rows] == [
        ("get_order", "ok"), ("cancel_order", "denied"), ("refund_order", "denied"), ("get_order", "error")]
    assert rows[1].reason == "approval_pending" and rows[2].reason == "insufficient_scope"
    assert all(r.tenant == "acme" and r.server == "orders" and r.args_hash and len(r.args_hash) == 64 for r in rows)
    dumped = " ".join(r.model_dump_json() for r in rows)
    assert marker not in dumped and "ORD-1001" not in dumped


async def test_audit_log_is_append_only(servers):
    log = AuditLog()
    try:
        await log.setup()
        with pytest.raises(Exception, match="append-only"):
            await log.db.execute("UPDATE interlock_audit SET outcome = 'ok'")
        with pytest.raises(Exception, match="append-only"):
            await log.db.execute("DELETE FROM interlock_audit")
    finally:
        await log.close()


async def test_internal_exception_text_never_reaches_the_client(servers, monkeypatch):
    from interlock.mcp_servers import sample_data

    def broken(system: str):
        raise RuntimeError("SECRET-dsn=postgres://admin:hunter2@db")

    monkeypatch.setattr(sample_data, "session", broken)
    url = servers.urls["orders"]
    result = await call(url, token(url, READ), "get_order", {"order_id": "ORD-1001"})
    assert result.is_error
    assert "SECRET" not in text(result) and "hunter2" not in text(result)


async def test_http_auth_denials_are_audited_without_arguments(servers):
    url = servers.urls["crm"]
    since = time.time()
    marker = f"http-denial-{time.time_ns()}"
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "update_contact", "arguments": {"customer_id": "CUS-101", "email": f"{marker}@x.io"}}}
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}
    async with httpx.AsyncClient(timeout=10) as http:
        expired = forged_token(url, exp=int(time.time()) - 5)
        denied = await http.post(url, json=body, headers={**headers, "Authorization": f"Bearer {expired}"})
        floor = await http.post(url, json=body, headers={**headers,
                                                         "Authorization": f"Bearer {token(url, ['crm:write'])}"})
    assert (denied.status_code, floor.status_code) == (401, 403)
    log = AuditLog()
    try:
        rows = [r for r in await log.query(tool="update_contact", since=since) if r.server == "crm"]
    finally:
        await log.close()
    assert sorted((r.outcome, r.reason) for r in rows) == [("denied", "insufficient_scope"), ("denied", "invalid_token")]
    assert marker not in " ".join(r.model_dump_json() for r in rows)
