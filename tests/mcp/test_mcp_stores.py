"""The token issuer, the approval store and the audit log, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from interlock.tools import identity
from interlock.tools.approvals import ApprovalError, ApprovalStore, args_hash
from interlock.tools.audit import AuditLog, AuditRecord
from joserfc import jwt
from joserfc.jwk import KeySet

PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"


def test_mint_produces_a_token_the_published_jwks_verifies():
    tok = identity.mint("alice", "acme", ["orders:write", "orders:read", "orders:read"], "http://x/mcp", ttl_s=60)
    claims = jwt.decode(tok, KeySet.import_key_set(identity.jwks())).claims
    assert claims["sub"] == "alice" and claims["tenant_id"] == "acme" and claims["aud"] == "http://x/mcp"
    assert claims["scope"] == "orders:read orders:write"
    assert claims["act"] == {"sub": "interlock"} and claims["iss"] == identity.issuer()
    assert 0 < claims["exp"] - time.time() <= 60
    assert identity.jwks()["keys"][0]["kid"] == identity.key_id()
    assert "d" not in identity.jwks()["keys"][0]  # never the private part


def test_mint_rejects_bad_input_and_issuer_is_configurable(monkeypatch):
    with pytest.raises(ValueError):
        identity.mint("", "acme", [], "http://x/mcp")
    with pytest.raises(ValueError):
        identity.mint("a", "acme", [], "http://x/mcp", ttl_s=0)
    monkeypatch.setenv("INTERLOCK_ISSUER", "https://issuer.test")
    claims = jwt.decode(identity.mint("a", "t", [], "http://x/mcp"), KeySet.import_key_set(identity.jwks())).claims
    assert claims["iss"] == "https://issuer.test"


def test_args_hash_is_canonical():
    assert args_hash({"b": 1, "a": [1, "é"]}) == args_hash({"a": [1, "é"], "b": 1})
    assert args_hash({"a": 1}) != args_hash({"a": 2})
    assert len(args_hash(None)) == 64


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request, mcp_home) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{mcp_home / f'stores-{uuid.uuid4().hex[:8]}.db'}"
        return
    schema = f"mcp_test_{uuid.uuid4().hex[:10]}"
    try:
        async with await psycopg.AsyncConnection.connect(PG_BASE, autocommit=True, connect_timeout=5) as conn:
            await conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    async with await psycopg.AsyncConnection.connect(PG_BASE, autocommit=True) as conn:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_approval_lifecycle_and_binding(db_url):
    clock = Clock()
    store = ApprovalStore(db_url, clock=clock)
    try:
        args = {"order_id": "ORD-1", "reason": "dup"}
        a = await store.request(tool="cancel_order", server="orders", args=args, principal="u1", tenant="acme",
                                thread_id="th", run_id="run", interrupt_id="int", ttl_s=100)
        assert a.status == "pending" and a.args == args and a.args_hash == args_hash(args)
        with pytest.raises(ApprovalError, match="not approved"):
            await store.consume(a.id, "cancel_order", args, "u1", "acme")
        await store.decide(a.id, "approve", decided_by="ops")
        with pytest.raises(ApprovalError, match="already approved"):
            await store.decide(a.id, "reject", decided_by="ops")
        for tool, call_args, sub, tenant, code in [
            ("refund_order", args, "u1", "acme", "wrong_tool"),
            ("cancel_order", {**args, "order_id": "ORD-2"}, "u1", "acme", "args_mismatch"),
            ("cancel_order", args, "u2", "acme", "wrong_principal"),
            ("cancel_order", args, "u1", "globex", "not_found"),
        ]:
            with pytest.raises(ApprovalError) as err:
                await store.consume(a.id, tool, call_args, sub, tenant)
            assert err.value.code == code
        with pytest.raises(ApprovalError) as err:
            await store.consume(a.id, "cancel_order", args, "u1", "acme", server="billing")
        assert err.value.code == "wrong_tool"
        used = await store.consume(a.id, "cancel_order", args, "u1", "acme", server="orders")
        assert used.status == "consumed" and used.consumed_at is not None
        with pytest.raises(ApprovalError) as err:
            await store.consume(a.id, "cancel_order", args, "u1", "acme")
        assert err.value.code == "already_used"
        assert [x.id for x in await store.list("acme", status="consumed")] == [a.id]
        assert await store.list("globex") == []
    finally:
        await store.close()


async def test_approval_expiry_edit_and_reject(db_url):
    clock = Clock()
    store = ApprovalStore(db_url, clock=clock)
    try:
        a = await store.request(tool="refund_order", server="orders", args={"amount_cents": 500}, principal="u1",
                                tenant="acme", ttl_s=60)
        edited = await store.decide(a.id, "approve", decided_by="ops", args={"amount_cents": 300}, ttl_s=30)
        assert edited.args == {"amount_cents": 300} and edited.args_hash == args_hash({"amount_cents": 300})
        with pytest.raises(ApprovalError) as err:
            await store.consume(a.id, "refund_order", {"amount_cents": 500}, "u1", "acme")
        assert err.value.code == "args_mismatch"
        clock.now += 31
        with pytest.raises(ApprovalError) as err:
            await store.consume(a.id, "refund_order", {"amount_cents": 300}, "u1", "acme")
        assert err.value.code == "expired"
        assert (await store.get(a.id)).status == "expired"

        r = await store.request(tool="refund_order", server="orders", args={}, principal="u1", tenant="acme")
        await store.decide(r.id, "reject", decided_by="ops", reason="no")
        with pytest.raises(ApprovalError, match="rejected"):
            await store.consume(r.id, "refund_order", {}, "u1", "acme")
        late = await store.request(tool="x", server="orders", args={}, principal="u1", tenant="acme", ttl_s=5)
        clock.now += 6
        with pytest.raises(ApprovalError) as err:
            await store.decide(late.id, "approve", decided_by="ops")
        assert err.value.code == "expired"
        with pytest.raises(ApprovalError) as err:
            await store.consume("apr_missing", "x", {}, "u1", "acme")
        assert err.value.code == "not_found"
        with pytest.raises(ValueError):
            await store.decide(r.id, "maybe", decided_by="ops")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await store.request(tool="x", server="s", args=[1], principal="u", tenant="t")  # type: ignore[arg-type]
    finally:
        await store.close()


async def test_concurrent_consume_spends_an_approval_once(db_url):
    import asyncio

    store = ApprovalStore(db_url)
    other = ApprovalStore(db_url)  # a second connection, like a second MCP server process
    try:
        a = await store.request(tool="t", server="s", args={"k": 1}, principal="u", tenant="acme")
        await store.decide(a.id, "approve", decided_by="ops")
        results = await asyncio.gather(
            *(s.consume(a.id, "t", {"k": 1}, "u", "acme") for s in (store, other, store, other)),
            return_exceptions=True)
        assert sum(not isinstance(r, Exception) for r in results) == 1
    finally:
        await store.close()
        await other.close()


async def test_audit_log_appends_queries_and_refuses_changes(db_url):
    log = AuditLog(db_url)
    try:
        await log.append(AuditRecord(principal="u1", tenant="acme", server="orders", tool="get_order",
                                     args_hash="0" * 64, outcome="ok", latency_ms=1.5, trace_id="t1"))
        await log.append(AuditRecord(principal="u1", tenant="globex", server="orders", tool="cancel_order",
                                     outcome="denied", reason="approval_required"))
        rows = await log.query(tenant="acme")
        assert [(r.tool, r.outcome, r.trace_id) for r in rows] == [("get_order", "ok", "t1")]
        with pytest.raises(Exception, match="append-only"):
            await log.db.execute("UPDATE interlock_audit SET outcome = 'ok' WHERE outcome = 'denied'")
        with pytest.raises(Exception, match="append-only"):
            await log.db.execute("DELETE FROM interlock_audit")
        assert len(await log.query()) == 2
    finally:
        await log.close()


async def test_audit_rows_name_the_bound_customer_also_in_a_log_created_before_the_column(db_url):
    old = AuditLog(db_url)
    try:  # the table as it was before rows named the customer, with a row in it
        await old.db.execute(audit_table_without_customer())
        await old.db.execute("INSERT INTO interlock_audit (id, ts, server, tool, outcome) "
                             "VALUES ('aud_old', 1.0, 'orders', 'get_order', 'ok')")
    finally:
        await old.close()
    log = AuditLog(db_url)
    try:
        await log.append(AuditRecord(principal="ann@acme", customer_id="CUS-101", tenant="acme", server="orders",
                                     tool="get_order", outcome="ok"))
        [row] = await log.query(customer_id="CUS-101")
        assert (row.principal, row.customer_id) == ("ann@acme", "CUS-101")
        assert [r.customer_id for r in await log.query(tool="get_order")] == ["CUS-101", None]
    finally:
        await log.close()


def audit_table_without_customer() -> str:
    from interlock.tools import audit

    return audit._TABLE[0].replace(",\n        customer_id TEXT", "")


async def test_concurrent_setup_from_many_processes_is_safe(db_url):
    import asyncio

    stores = [AuditLog(db_url) for _ in range(3)] + [ApprovalStore(db_url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.setup() for s in stores))
        await stores[0].append(AuditRecord(server="s", tool="t", outcome="ok"))
        assert len(await stores[1].query()) == 1
    finally:
        for s in stores:
            await s.close()
