"""Operator approvals for irreversible tool calls, shared by the graph server and the MCP servers.

An approval is bound to one exact call: the tool (and server), the SHA-256 of the canonical JSON of its
arguments, the principal (token `sub`) and the tenant. It is single use and expires. The graph server
creates it (`request`) when a run is interrupted, the operator decides (`decide`; an edit is an approval
with new arguments, re-hashed), and the MCP server's gate spends it (`consume`) right before the tool runs.

The `args` column is the ONLY place raw arguments are stored (for the operator's screen); the audit log
keeps the hash only.

Tables are created idempotently in `kernel.settings.database_url()` (SQLite file or PostgreSQL).

    store = ApprovalStore()
    a = await store.request(tool="cancel_order", server="orders", args={...}, principal="u1", tenant="acme")
    await store.decide(a.id, "approve", decided_by="ops@acme")
    await store.consume(a.id, "cancel_order", {...}, principal="u1", tenant="acme")   # once
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from interlock.kernel.database import LazyDatabase

Status = Literal["pending", "approved", "rejected", "consumed", "expired"]
Decision = Literal["approve", "reject"]

DEFAULT_TTL_S = 3600

_DDL = (
    """CREATE TABLE IF NOT EXISTS interlock_approvals (
        id TEXT PRIMARY KEY,
        tool TEXT NOT NULL,
        server TEXT NOT NULL,
        args_hash TEXT NOT NULL,
        args TEXT NOT NULL,
        principal TEXT NOT NULL,
        tenant TEXT NOT NULL,
        thread_id TEXT,
        run_id TEXT,
        interrupt_id TEXT,
        risk TEXT NOT NULL,
        reason TEXT,
        status TEXT NOT NULL,
        decided_by TEXT,
        decided_at DOUBLE PRECISION,
        decision_reason TEXT,
        expires_at DOUBLE PRECISION NOT NULL,
        consumed_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS interlock_approvals_tenant ON interlock_approvals (tenant, status)",
)


def canonical_json(args: dict[str, Any]) -> str:
    return json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def args_hash(args: dict[str, Any] | None) -> str:
    """SHA-256 (hex) of the canonical JSON of a tool's arguments."""
    return hashlib.sha256(canonical_json(args or {}).encode()).hexdigest()


class ApprovalError(Exception):
    """An approval cannot be used or decided; `code` is machine-readable, the message is safe to show."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Approval(BaseModel):
    id: str
    tool: str
    server: str
    args_hash: str
    args: dict[str, Any]
    principal: str
    tenant: str
    thread_id: str | None = None
    run_id: str | None = None
    interrupt_id: str | None = None
    risk: str
    reason: str | None = None
    status: Status
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    expires_at: datetime
    consumed_at: datetime | None = None
    created_at: datetime


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _row(row: dict[str, Any]) -> Approval:
    data = dict(row)
    data["args"] = json.loads(data["args"])
    for key in ("decided_at", "expires_at", "consumed_at", "created_at"):
        data[key] = _ts(data[key])
    return Approval.model_validate(data)


class ApprovalStore:
    def __init__(self, url: str | None = None, *, clock: Any = time.time) -> None:
        self.db = LazyDatabase(url)
        self._clock = clock  # injectable so tests can move time forward instead of sleeping
        self._ready = False

    async def setup(self) -> None:
        if not self._ready:
            await self.db.script(_DDL)
            self._ready = True

    async def close(self) -> None:
        await self.db.close()

    async def request(
        self,
        *,
        tool: str,
        server: str,
        args: dict[str, Any],
        principal: str,
        tenant: str,
        thread_id: str | None = None,
        run_id: str | None = None,
        interrupt_id: str | None = None,
        risk: str = "high",
        reason: str | None = None,
        ttl_s: int = DEFAULT_TTL_S,
    ) -> Approval:
        """Record a pending approval for one exact call."""
        if not tool or not server or not principal or not tenant:
            raise ValueError("tool, server, principal and tenant are required")
        if not isinstance(args, dict):
            raise ValueError("args must be a JSON object")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        await self.setup()
        now = self._clock()
        approval_id = f"apr_{uuid.uuid4().hex}"
        await self.db.execute(
            "INSERT INTO interlock_approvals (id, tool, server, args_hash, args, principal, tenant, thread_id,"
            " run_id, interrupt_id, risk, reason, status, expires_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            (approval_id, tool, server, args_hash(args), canonical_json(args), principal, tenant, thread_id,
             run_id, interrupt_id, risk, reason, now + ttl_s, now),
        )
        approval = await self.get(approval_id)
        assert approval is not None
        return approval

    async def get(self, approval_id: str) -> Approval | None:
        await self.setup()
        row = await self.db.fetchone("SELECT * FROM interlock_approvals WHERE id = ?", (approval_id,))
        return _row(row) if row else None

    async def list(self, tenant: str, status: Status | None = None, limit: int = 100) -> list[Approval]:
        await self.setup()
        await self._expire(tenant)
        sql = "SELECT * FROM interlock_approvals WHERE tenant = ?"
        params: list[Any] = [tenant]
        if status:
            sql += " AND status = ?"
            params.append(status)
        sql += " ORDER BY created_at DESC LIMIT ?"
        params.append(int(limit))
        return [_row(r) for r in await self.db.fetchall(sql, params)]

    async def _expire(self, tenant: str | None = None) -> None:
        sql = ("UPDATE interlock_approvals SET status = 'expired'"
               " WHERE status IN ('pending', 'approved') AND expires_at <= ?")
        params: list[Any] = [self._clock()]
        if tenant is not None:
            sql += " AND tenant = ?"
            params.append(tenant)
        await self.db.execute(sql, params)

    async def decide(
        self,
        approval_id: str,
        decision: Decision,
        decided_by: str,
        reason: str | None = None,
        args: dict[str, Any] | None = None,
        ttl_s: int | None = None,
    ) -> Approval:
        """Approve or reject a pending approval. `args` edits the call (approve only); `ttl_s` resets expiry."""
        if decision not in ("approve", "reject"):
            raise ValueError("decision must be 'approve' or 'reject'")
        if not decided_by:
            raise ValueError("decided_by is required")
        if args is not None and decision != "approve":
            raise ValueError("only an approval may edit the arguments")
        if args is not None and not isinstance(args, dict):
            raise ValueError("args must be a JSON object")
        await self.setup()
        now = self._clock()
        sets = ["status = ?", "decided_by = ?", "decided_at = ?", "decision_reason = ?"]
        params: list[Any] = ["approved" if decision == "approve" else "rejected", decided_by, now, reason]
        if args is not None:
            sets += ["args = ?", "args_hash = ?"]
            params += [canonical_json(args), args_hash(args)]
        if ttl_s is not None:
            if ttl_s <= 0:
                raise ValueError("ttl_s must be positive")
            sets.append("expires_at = ?")
            params.append(now + ttl_s)
        changed = await self.db.execute(
            f"UPDATE interlock_approvals SET {', '.join(sets)}"
            " WHERE id = ? AND status = 'pending' AND expires_at > ?",
            [*params, approval_id, now],
        )
        if changed != 1:
            current = await self.get(approval_id)
            if current is None:
                raise ApprovalError("not_found", f"approval {approval_id} not found")
            if current.status == "pending":  # only expiry can block a pending decision
                await self._expire(current.tenant)
                raise ApprovalError("expired", f"approval {approval_id} has expired")
            raise ApprovalError("already_decided", f"approval {approval_id} is already {current.status}")
        approval = await self.get(approval_id)
        assert approval is not None
        return approval

    async def consume(
        self,
        approval_id: str,
        tool: str,
        args: dict[str, Any] | None,
        principal: str,
        tenant: str,
        server: str | None = None,
    ) -> Approval:
        """Spend an approval for exactly this call, atomically and once; raise ApprovalError otherwise."""
        await self.setup()
        now = self._clock()
        digest = args_hash(args)
        sql = ("UPDATE interlock_approvals SET status = 'consumed', consumed_at = ?"
               " WHERE id = ? AND status = 'approved' AND expires_at > ? AND tool = ? AND args_hash = ?"
               " AND principal = ? AND tenant = ?")
        params: list[Any] = [now, approval_id, now, tool, digest, principal, tenant]
        if server is not None:
            sql += " AND server = ?"
            params.append(server)
        if await self.db.execute(sql, params) == 1:
            approval = await self.get(approval_id)
            assert approval is not None
            return approval
        raise await self._why_not(approval_id, tool, digest, principal, tenant, server, now)

    async def _why_not(
        self, approval_id: str, tool: str, digest: str, principal: str, tenant: str, server: str | None,
        now: float,
    ) -> ApprovalError:
        current = await self.get(approval_id)
        # Another tenant's approval is reported exactly like a missing one: no cross-tenant oracle.
        if current is None or current.tenant != tenant:
            return ApprovalError("not_found", "approval not found")
        if current.status == "consumed":
            return ApprovalError("already_used", "approval has already been used")
        if current.status in ("pending", "rejected", "expired") or current.expires_at.timestamp() <= now:
            if current.status == "approved":
                await self._expire(tenant)
                return ApprovalError("expired", "approval has expired")
            return ApprovalError(f"not_approved_{current.status}", f"approval is {current.status}, not approved")
        if current.tool != tool or (server is not None and current.server != server):
            return ApprovalError("wrong_tool", f"approval is for a different tool, not {tool}")
        if current.principal != principal:
            return ApprovalError("wrong_principal", "approval was granted to a different principal")
        if current.args_hash != digest:
            return ApprovalError("args_mismatch", "arguments differ from the approved call")
        return ApprovalError("unusable", "approval cannot be used")
