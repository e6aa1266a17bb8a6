"""Subject binding on the MCP servers, over real Streamable HTTP (and stdio) with real tokens: an end user's token
names the customer it acts for, and every read, search, list and write of a customer-owned record (orders,
shipments, CRM customers, invoices, tickets) is limited to that customer; another customer's id answers exactly
like an unknown id. Staff (`customers:any`) reach every customer; a token with neither reaches none."""

from __future__ import annotations

import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from fastmcp import Client
from interlock.tools import endpoints, identity
from interlock.tools.approvals import ApprovalStore
from interlock.tools.audit import AuditLog
from interlock.tools.client import GovernedTools, Principal, ServerConfig, ToolsConfig
from joserfc import jwt
from joserfc.jwk import KeySet
from mcp_testkit import ALL_SCOPES, forged_token, order_status, token

APPROVAL = "io.interlock/approval_id"
PRECHECK = "io.interlock/precheck"
ANN, ANN_CUSTOMER = "ann@acme", "CUS-101"  # an end user and the customer she is
INTERLOCK = str(Path(sys.executable).with_name("interlock"))


def db(system: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    from interlock.mcp_servers import sample_data

    with closing(sample_data.connect(system)) as conn:
        return [dict(r) for r in conn.execute(sql, params).fetchall()]


def others(system: str, table: str, customer: str = ANN_CUSTOMER, tenant: str = "acme", where: str = "") -> list[str]:
    """Ids of `table` rows of `tenant` owned by some other customer (from the database, not the server)."""
    rows = db(system, f"SELECT id FROM {table} WHERE tenant = ? AND customer_id != ?{where} ORDER BY id",  # noqa: S608
              tenant, customer)
    assert rows, f"the sample data has no other customer's {table}"
    return [r["id"] for r in rows]


def text(result: Any) -> str:
    return " ".join(getattr(b, "text", "") for b in result.content)


async def call(url: str, tok: str, tool: str, args: dict[str, Any], meta: dict | None = None) -> Any:
    async with Client(url, auth=tok) as client:
        return await client.call_tool(tool, args, raise_on_error=False, meta=meta)


def end_user(url: str, customer: str = ANN_CUSTOMER, sub: str = ANN) -> str:
    return token(url, sub=sub, customer=customer)


async def approve(tool: str, args: dict, sub: str, server: str) -> str:
    store = ApprovalStore()
    try:
        a = await store.request(tool=tool, server=server, args=args, principal=sub, tenant="acme")
        await store.decide(a.id, "approve", decided_by="ops@test", ttl_s=600)
        return a.id
    finally:
        await store.close()


async def assert_not_found_like_unknown(url: str, tok: str, tool: str, key: str, foreign: str, unknown: str,
                                        **extra: Any) -> None:
    """Another customer's record answers exactly like an id that does not exist (no existence oracle)."""
    theirs = await call(url, tok, tool, {key: foreign, **extra})
    missing = await call(url, tok, tool, {key: unknown, **extra})
    assert theirs.is_error and missing.is_error
    assert text(theirs).replace(foreign, "<id>") == text(missing).replace(unknown, "<id>")
    assert "not found" in text(theirs)


# -- reads by id -----------------------------------------------------------------------------------------------

async def test_an_end_user_reads_their_own_records_and_another_customers_are_not_found(servers):
    orders, crm, billing, tickets = (servers.urls[s] for s in ("orders", "crm", "billing", "tickets"))
    own = await call(orders, end_user(orders), "get_order", {"order_id": "ORD-1001"})
    assert not own.is_error and own.structured_content["customer_id"] == ANN_CUSTOMER
    for foreign in others("orders", "orders")[:3]:
        await assert_not_found_like_unknown(orders, end_user(orders), "get_order", "order_id", foreign, "ORD-1999")
    shipped = others("orders", "orders", where=" AND status IN ('shipped', 'delivered')")[0]
    await assert_not_found_like_unknown(orders, end_user(orders), "track_shipment", "order_id", shipped, "ORD-1999")
    assert not (await call(orders, end_user(orders), "track_shipment", {"order_id": "ORD-1002"})).is_error

    assert (await call(crm, end_user(crm), "get_customer", {"customer_id": ANN_CUSTOMER})).structured_content[
        "customer_id"] == ANN_CUSTOMER
    await assert_not_found_like_unknown(crm, end_user(crm), "get_customer", "customer_id", "CUS-102", "CUS-199")

    assert not (await call(billing, end_user(billing), "get_invoice", {"invoice_id": "INV-1001"})).is_error
    await assert_not_found_like_unknown(billing, end_user(billing), "get_invoice", "invoice_id",
                                        others("billing", "invoices")[0], "INV-1999")

    assert not (await call(tickets, end_user(tickets), "get_ticket", {"ticket_id": "TCK-1001"})).is_error
    await assert_not_found_like_unknown(tickets, end_user(tickets), "get_ticket", "ticket_id",
                                        others("tickets", "tickets")[0], "TCK-1999")


# -- bulk reads ------------------------------------------------------------------------------------------------

async def test_bulk_reads_return_only_the_bound_customers_records(servers):
    crm, orders, billing = servers.urls["crm"], servers.urls["orders"], servers.urls["billing"]
    # Every acme customer's email ends in acme.example: staff find them all, the end user only herself.
    everyone = await call(crm, token(crm), "find_customer", {"query": "acme.example", "limit": 50})
    assert len(everyone.structured_content["customers"]) == len(db("crm", "SELECT id FROM customers "
                                                                    "WHERE tenant = 'acme'"))
    mine = await call(crm, end_user(crm), "find_customer", {"query": "acme.example", "limit": 50})
    assert [c["customer_id"] for c in mine.structured_content["customers"]] == [ANN_CUSTOMER]
    # Searching for another customer by their name or phone finds nothing, as if they did not exist.
    [other] = db("crm", "SELECT name, phone FROM customers WHERE id = 'CUS-102'")
    for query in (other["name"], other["phone"]):
        found = await call(crm, end_user(crm), "find_customer", {"query": query})
        assert found.structured_content["customers"] == [] or all(
            c["customer_id"] == ANN_CUSTOMER for c in found.structured_content["customers"])

    listed = await call(orders, end_user(orders), "list_orders", {"limit": 100})
    ids = sorted(o["order_id"] for o in listed.structured_content["orders"])
    assert ids == sorted(r["id"] for r in db("orders", "SELECT id FROM orders WHERE customer_id = ?", ANN_CUSTOMER))
    asked_for_other = await call(orders, end_user(orders), "list_orders", {"customer_id": "CUS-102", "limit": 100})
    assert asked_for_other.structured_content["orders"] == []
    invoices = await call(billing, end_user(billing), "list_invoices", {"limit": 100})
    assert invoices.structured_content["invoices"]
    assert {i["customer_id"] for i in invoices.structured_content["invoices"]} == {ANN_CUSTOMER}
    staff = await call(orders, token(orders), "list_orders", {"limit": 100})
    assert len({o["customer_id"] for o in staff.structured_content["orders"]}) > 1


# -- writes ----------------------------------------------------------------------------------------------------

async def test_an_end_user_cannot_change_another_customers_records(servers):
    crm, tickets, orders, billing = (servers.urls[s] for s in ("crm", "tickets", "orders", "billing"))
    before = db("crm", "SELECT email, phone, updated_at FROM customers WHERE id = 'CUS-104'")
    changed = await call(crm, end_user(crm), "update_contact", {"customer_id": "CUS-104", "email": "ann@evil.example"})
    assert changed.is_error and "customer CUS-104 not found" in text(changed)
    assert db("crm", "SELECT email, phone, updated_at FROM customers WHERE id = 'CUS-104'") == before

    theirs = others("tickets", "tickets", where=" AND status = 'open'")[0]
    comments = len(db("tickets", "SELECT id FROM comments WHERE ticket_id = ?", theirs))
    commented = await call(tickets, end_user(tickets), "add_comment", {"ticket_id": theirs, "body": "refund me"})
    escalated = await call(tickets, end_user(tickets), "escalate_to_human", {"ticket_id": theirs, "reason": "now!"})
    assert commented.is_error and escalated.is_error and "not found" in text(commented) + text(escalated)
    assert len(db("tickets", "SELECT id FROM comments WHERE ticket_id = ?", theirs)) == comments
    assert db("tickets", "SELECT escalated FROM tickets WHERE id = ?", theirs)[0]["escalated"] == 0
    foreign_ticket = await call(tickets, end_user(tickets), "create_ticket",
                                {"subject": "About CUS-104", "body": "x", "customer_id": "CUS-104"})
    assert foreign_ticket.is_error and "customer CUS-104 not found" in text(foreign_ticket)

    # Destructive tools: even with an operator's approval for exactly this call, another customer's order or
    # invoice is not found and nothing changes.
    order = others("orders", "orders", where=" AND status IN ('processing', 'pending')")[0]
    args = {"order_id": order, "reason": "not mine"}
    result = await call(orders, end_user(orders), "cancel_order", args,
                        meta={APPROVAL: await approve("cancel_order", args, ANN, "orders")})
    assert result.is_error and f"order {order} not found" in text(result)
    assert order_status(order)[0] in ("processing", "pending")
    paid = others("orders", "orders", where=" AND paid_cents > refunded_cents + 100")[0]
    refunded = order_status(paid)[1]  # other tests of the session may have refunded part of it
    refund = {"order_id": paid, "amount_cents": 100, "reason": "not mine"}
    result = await call(orders, end_user(orders), "refund_order", refund,
                        meta={APPROVAL: await approve("refund_order", refund, ANN, "orders")})
    assert result.is_error and "not found" in text(result) and order_status(paid)[1] == refunded
    invoice = others("billing", "invoices", where=" AND amount_cents > credited_cents + 100")[0]
    credited = db("billing", "SELECT credited_cents FROM invoices WHERE id = ?", invoice)[0]["credited_cents"]
    credit = {"invoice_id": invoice, "amount_cents": 100, "reason": "not mine"}
    result = await call(billing, end_user(billing), "issue_credit", credit,
                        meta={APPROVAL: await approve("issue_credit", credit, ANN, "billing")})
    assert result.is_error and "not found" in text(result)
    assert db("billing", "SELECT credited_cents FROM invoices WHERE id = ?", invoice)[0]["credited_cents"] == credited


async def test_an_end_user_changes_their_own_records_and_new_tickets_are_theirs(servers):
    crm, tickets = servers.urls["crm"], servers.urls["tickets"]
    customer, sub = "CUS-106", "finn@acme"
    result = await call(crm, end_user(crm, customer, sub), "update_contact",
                        {"customer_id": customer, "phone": "+1 555 0106"})
    assert not result.is_error and result.structured_content["phone"] == "+1 555 0106"
    created = await call(tickets, end_user(tickets, customer, sub), "create_ticket",
                         {"subject": "Where is my parcel", "body": "It is late."})
    assert not created.is_error and created.structured_content["customer_id"] == customer
    ticket = created.structured_content["ticket_id"]
    assert db("tickets", "SELECT customer_id FROM tickets WHERE id = ?", ticket)[0]["customer_id"] == customer
    # The new ticket is hers alone: another end user of the tenant does not see it.
    await assert_not_found_like_unknown(tickets, end_user(tickets), "get_ticket", "ticket_id", ticket, "TCK-1999")


# -- staff, unbound and malformed tokens -------------------------------------------------------------------------

async def test_staff_scope_reaches_every_customer_and_a_token_with_neither_reaches_none(servers):
    orders, crm, tickets = servers.urls["orders"], servers.urls["crm"], servers.urls["tickets"]
    theirs = others("orders", "orders")[0]
    staff = await call(orders, token(orders, ["orders:read"], sub="ops@acme"), "get_order", {"order_id": theirs})
    assert not staff.is_error and staff.structured_content["order_id"] == theirs
    # A binding always narrows: a token bound to a customer stays bound even if it also carries the staff scope.
    bound_staff = identity.mint("ann@acme", "acme", ["orders:read", "customers:any"], orders, customer_id=ANN_CUSTOMER)
    assert (await call(orders, bound_staff, "get_order", {"order_id": theirs})).is_error

    unbound = token(orders, staff=False)
    assert (await call(orders, unbound, "get_order", {"order_id": "ORD-1001"})).is_error
    assert (await call(orders, unbound, "list_orders", {})).structured_content["orders"] == []
    found = await call(crm, token(crm, staff=False), "find_customer", {"query": "acme.example"})
    assert found.structured_content["customers"] == []
    # What such a principal creates belongs to no customer, and it may not name one.
    loose = await call(tickets, token(tickets, staff=False), "create_ticket", {"subject": "Printer", "body": "jam"})
    assert not loose.is_error and loose.structured_content["customer_id"] is None
    named = await call(tickets, token(tickets, staff=False), "create_ticket",
                       {"subject": "Printer", "body": "jam", "customer_id": "CUS-101"})
    assert named.is_error and "not found" in text(named)


async def test_a_malformed_customer_claim_is_refused_not_read_as_staff(servers):
    url = servers.urls["orders"]
    scope = " ".join([*ALL_SCOPES, "customers:any"])
    for bad in ("", "   ", 101, ["CUS-101"], "C" * 500):
        result = await call(url, forged_token(url, scope=scope, customer_id=bad), "get_order",
                            {"order_id": "ORD-1002"})
        assert result.is_error and "customer_id" in text(result), bad


# -- the graph-side client --------------------------------------------------------------------------------------

async def test_the_governed_client_mints_the_principals_binding_and_never_shares_a_connection(servers):
    tools = GovernedTools(ToolsConfig(servers={"orders": ServerConfig(url=servers.urls["orders"])}))
    ann = Principal(sub="shared-sub", tenant="acme", scopes=["orders:read"], customer_id=ANN_CUSTOMER)
    bob = Principal(sub="shared-sub", tenant="acme", scopes=["orders:read"], customer_id="CUS-107")
    ops = Principal(sub="shared-sub", tenant="acme", scopes=["orders:read", "customers:any"])
    try:
        [bobs] = db("orders", "SELECT id FROM orders WHERE customer_id = 'CUS-107' LIMIT 1")
        assert not (await tools.call(ann, "get_order", {"order_id": "ORD-1001"})).is_error
        assert (await tools.call(ann, "get_order", {"order_id": bobs["id"]})).is_error
        assert not (await tools.call(bob, "get_order", {"order_id": bobs["id"]})).is_error
        assert (await tools.call(bob, "get_order", {"order_id": "ORD-1001"})).is_error
        assert not (await tools.call(ops, "get_order", {"order_id": bobs["id"]})).is_error
        listed = await tools.call(ann, "list_orders", {"limit": 100})
        assert {o["customer_id"] for o in listed.structured["orders"]} == {ANN_CUSTOMER}
    finally:
        await tools.aclose()


# -- stdio (desktop assistants) and the token command ---------------------------------------------------------------

def desktop(home: Path, token_value: str) -> dict[str, Any]:
    import os

    env = {"INTERLOCK_HOME": str(home), "PATH": os.environ.get("PATH", ""), "INTERLOCK_MCP_TOKEN": token_value}
    return {"mcpServers": {"orders": {"command": INTERLOCK, "args": ["mcp", "orders", "--transport", "stdio"],
                                      "env": env}}}


def mint_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "INTERLOCK_HOME": str(home)}
    return subprocess.run([INTERLOCK, "token", "mint", "--tenant", "acme", "--aud", "orders", *args],
                          capture_output=True, text=True, env=env, timeout=120)


async def test_stdio_desktop_profile_keeps_its_configured_identity(mcp_home):
    minted = mint_cli(mcp_home, "--customer", ANN_CUSTOMER, "--scopes", "orders:read", "--ttl", "600")
    assert minted.returncode == 0, minted.stderr
    claims = jwt.decode(minted.stdout.strip(), KeySet.import_key_set(identity.jwks())).claims
    assert (claims["sub"], claims["customer_id"], claims["scope"]) == (ANN_CUSTOMER, ANN_CUSTOMER, "orders:read")
    theirs = others("orders", "orders")[0]
    async with Client(desktop(mcp_home, minted.stdout.strip())) as client:
        own = await client.call_tool("get_order", {"order_id": "ORD-1001"})
        assert own.structured_content["customer_id"] == ANN_CUSTOMER
        foreign = await client.call_tool("get_order", {"order_id": theirs}, raise_on_error=False)
        assert foreign.is_error and "not found" in text(foreign)
        listed = await client.call_tool("list_orders", {"limit": 100})
        assert {o["customer_id"] for o in listed.structured_content["orders"]} == {ANN_CUSTOMER}
    staff = mint_cli(mcp_home, "--sub", "ops@acme", "--staff", "--scopes", "orders:read")
    assert staff.returncode == 0 and "customers:any" in jwt.decode(
        staff.stdout.strip(), KeySet.import_key_set(identity.jwks())).claims["scope"]
    async with Client(desktop(mcp_home, staff.stdout.strip())) as client:
        assert not (await client.call_tool("get_order", {"order_id": theirs}, raise_on_error=False)).is_error


def test_token_mint_says_whom_a_token_acts_for(mcp_home):
    conflicting = mint_cli(mcp_home, "--customer", ANN_CUSTOMER, "--scopes", "orders:read,customers:any")
    assert conflicting.returncode == 2 and "customers:any" in conflicting.stderr
    both = mint_cli(mcp_home, "--customer", ANN_CUSTOMER, "--staff", "--scopes", "orders:read")
    assert both.returncode == 2
    nobody = mint_cli(mcp_home, "--scopes", "orders:read")
    assert nobody.returncode == 2 and "--sub" in nobody.stderr
    neither = mint_cli(mcp_home, "--sub", "svc", "--scopes", "orders:read")
    assert neither.returncode == 0 and "no customer" in neither.stderr
    claims = jwt.decode(neither.stdout.strip(), KeySet.import_key_set(identity.jwks())).claims
    assert "customer_id" not in claims and claims["aud"] == endpoints.canonical_url("orders")


async def test_the_seeded_demo_users_map_to_their_customers(servers):
    from interlock.mcp_servers import sample_data

    users = sample_data.demo_users()
    assert {u["tenant"] for u in users} == {"acme", "globex"}
    url = servers.urls["orders"]
    for user in users:
        tok = token(url, ["orders:read"], sub=str(user["sub"]), tenant=str(user["tenant"]),
                    customer=user["customer_id"])
        listed = (await call(url, tok, "list_orders", {"limit": 100})).structured_content["orders"]
        owners = {o["customer_id"] for o in listed}
        if user["customer_id"]:
            assert owners == {user["customer_id"]}
        else:  # staff
            assert len(owners) > 1


async def test_no_operator_is_asked_about_and_no_approval_spent_on_another_customers_record(servers):
    orders = servers.urls["orders"]
    order = others("orders", "orders", where=" AND status IN ('processing', 'pending')")[-1]
    args = {"order_id": order, "reason": "desktop hijack"}
    # A desktop-style call without an approval id would open a pending approval; for another customer's order it
    # answers "not found" first, so the operator inbox never hears of it.
    result = await call(orders, end_user(orders), "cancel_order", args)
    assert result.is_error and text(result) == f"order {order} not found"
    store = ApprovalStore()
    try:
        assert await store.find_call("cancel_order", "orders", args, ANN, "acme", "pending") == []
        approval = await approve("cancel_order", args, ANN, "orders")
        result = await call(orders, end_user(orders), "cancel_order", args, meta={APPROVAL: approval})
        assert result.is_error and text(result) == f"order {order} not found"
        assert (await store.get(approval)).status == "approved"  # not spent on a record she cannot act on
    finally:
        await store.close()
    assert order_status(order)[0] in ("processing", "pending")
    # Her own order still goes to the operator as before.
    own = {"order_id": "ORD-1004", "reason": "desktop request"}
    result = await call(orders, end_user(orders), "cancel_order", own)
    assert result.is_error and "pending" in text(result) and "approval" in text(result)


async def test_a_precheck_answers_like_the_call_and_never_runs_the_tool_or_asks_an_operator(servers):
    """The graph's precheck (`_meta io.interlock/precheck`): another customer's record is "not found" exactly as a
    call would be; her own destructive call passes, yet nothing runs and no approval appears."""
    orders = servers.urls["orders"]
    order = others("orders", "orders", where=" AND status IN ('processing', 'pending')")[0]
    theirs = await call(orders, end_user(orders), "cancel_order", {"order_id": order, "reason": "x"},
                        meta={PRECHECK: True})
    assert theirs.is_error and text(theirs) == f"order {order} not found"
    mine = db("orders", "SELECT id, status FROM orders WHERE customer_id = ? AND status IN ('processing', 'pending')"
              " ORDER BY id", ANN_CUSTOMER)[-1]
    args = {"order_id": mine["id"], "reason": "precheck only"}
    passed = await call(orders, end_user(orders), "cancel_order", args, meta={PRECHECK: True})
    # An error result (nothing ran) that says, in its `_meta` only, that the call would be accepted.
    assert passed.is_error and (passed.meta or {}).get(PRECHECK) == "passed"
    assert order_status(mine["id"])[0] == mine["status"]
    store = ApprovalStore()
    try:
        assert await store.find_call("cancel_order", "orders", args, ANN, "acme", "pending") == []
    finally:
        await store.close()
    # Through the governed client, as the graph asks it.
    tools = GovernedTools(ToolsConfig(servers={"orders": ServerConfig(url=orders)}))
    try:
        ann = Principal(sub=ANN, tenant="acme", scopes=ALL_SCOPES, customer_id=ANN_CUSTOMER)
        refused = await tools.call(ann, "cancel_order", {"order_id": order, "reason": "x"}, precheck=True)
        assert refused.is_error and refused.text == f"order {order} not found"
        ok = await tools.call(ann, "cancel_order", args, precheck=True)
        assert not ok.is_error and ok.structured == {"precheck": "passed"}
        assert order_status(mine["id"])[0] == mine["status"]
    finally:
        await tools.aclose()
    # The audit log names the customer Ann acts for, and that these calls were prechecks (nothing ran).
    log = AuditLog()
    try:
        rows = [r for r in await log.query(tool="cancel_order", principal=ANN, limit=20)
                if r.reason in ("precheck_passed", "precheck_refused")][:4]
    finally:
        await log.close()
    assert sorted(r.reason for r in rows) == ["precheck_passed"] * 2 + ["precheck_refused"] * 2
    assert {r.customer_id for r in rows} == {ANN_CUSTOMER}
