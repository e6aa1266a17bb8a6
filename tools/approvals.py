"""Operator approvals for irreversible tool calls, shared by the graph server and the MCP servers.

An approval is bound to one exact call: the tool (and server), the SHA-256 of the canonical JSON of its
arguments, the principal (token `sub`) and the tenant. It is single use and expires. The graph server
creates it (`request`) when a run is interrupted, the operator decides (`decide`; an edit is an approval
with new arguments, re-hashed), and the MCP server's gate spends it (`consume`) right before the tool runs.

The `args` column is the ONLY place arguments are stored (for the operator's screen); the audit log keeps the
hash only. Where the tenant does not store raw user input (pii.yaml `store_raw_input: false`) the graph passes
the arguments as shown (the user's own values masked) and the real ones only as `digest_args`: the record
holds the hash of the exact call the MCP gate will check, never those raw values.

Every change of state (requested, approved, rejected, edited, consumed, expired) is appended to
`interlock_approval_events` with who did it, which is the approval's audit trail. Approvals expire after the
tool policy's `approval_ttl_s` (policies/tools.yaml, default 24 h).

Tables are created idempotently in `interlock.kernel.settings.database_url()` (SQLite file or PostgreSQL).

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

DEFAULT_TTL_S = 24 * 3600
STATUSES: tuple[str, ...] = ("pending", "approved", "rejected", "consumed", "expired")

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
    # The audit trail: one row per change of state, never updated.
    """CREATE TABLE IF NOT EXISTS interlock_approval_events (
        approval_id TEXT NOT NULL,
        seq DOUBLE PRECISION NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT,
        reason TEXT,
        args_hash TEXT,
        at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS interlock_approval_events_id ON interlock_approval_events (approval_id, seq)",
    # Claims for one-time side effects (the approval-requested webhook, ending an expired approval's run), so
    # several server replicas polling the same database do each only once.
    """CREATE TABLE IF NOT EXISTS interlock_approval_notices (
        approval_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (approval_id, kind)
    )""",
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


def policy_ttl_s(tool: str) -> int:
    """How long an approval for `tool` stays valid: tools.yaml `approval_ttl_s` (per tool, else global)."""
    try:
        from interlock.policies.loader import get_policies

        policy = get_policies().tools
    except Exception:  # noqa: BLE001 - policies unreadable here (a bare MCP server): the documented default
        return DEFAULT_TTL_S
    rule = policy.tools.get(tool)
    return int(rule.approval_ttl_s if rule is not None and rule.approval_ttl_s else policy.approval_ttl_s)


def self_confirm_allowed(tool: str) -> bool:
    """Whether tools.yaml lets an MCP client's user confirm their own `tool` call (default: no, an operator)."""
    try:
        from interlock.policies.loader import get_policies

        rule = get_policies().tools.tools.get(tool)
    except Exception:  # noqa: BLE001 - no readable policy: never self-confirm
        return False
    return bool(rule is not None and rule.self_confirm)


class ApprovalEvent(BaseModel):
    """One row of an approval's audit trail."""

    kind: str
    actor: str | None = None
    reason: str | None = None
    args_hash: str | None = None
    at: datetime


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

    async def _event(self, approval_id: str, kind: str, actor: str | None, reason: str | None = None,
                     digest: str | None = None, at: float | None = None) -> None:
        at = self._clock() if at is None else at
        await self.db.execute(
            "INSERT INTO interlock_approval_events (approval_id, seq, kind, actor, reason, args_hash, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (approval_id, time.time(), kind, actor, reason, digest, at),
        )

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
        ttl_s: int | None = None,
        digest_args: dict[str, Any] | None = None,
    ) -> Approval:
        """Record a pending approval for one exact call (expiry: `ttl_s`, else the tool policy's). `digest_args`:
        the call's real arguments, hashed but not stored, when `args` is only what the operator is shown."""
        if not tool or not server or not principal or not tenant:
            raise ValueError("tool, server, principal and tenant are required")
        if not isinstance(args, dict):
            raise ValueError("args must be a JSON object")
        ttl_s = policy_ttl_s(tool) if ttl_s is None else ttl_s
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        await self.setup()
        now = self._clock()
        approval_id = f"apr_{uuid.uuid4().hex}"
        digest = args_hash(digest_args if digest_args is not None else args)
        await self.db.execute(
            "INSERT INTO interlock_approvals (id, tool, server, args_hash, args, principal, tenant, thread_id,"
            " run_id, interrupt_id, risk, reason, status, expires_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            (approval_id, tool, server, digest, canonical_json(args), principal, tenant, thread_id,
             run_id, interrupt_id, risk, reason, now + ttl_s, now),
        )
        await self._event(approval_id, "requested", principal, reason, digest, now)
        approval = await self.get(approval_id)
        assert approval is not None
        return approval

    async def get(self, approval_id: str) -> Approval | None:
        await self.setup()
        row = await self.db.fetchone("SELECT * FROM interlock_approvals WHERE id = ?", (approval_id,))
        return _row(row) if row else None

    async def list(
        self, tenant: str, status: Status | None = None, limit: int = 100, offset: int = 0,
        statuses: tuple[str, ...] | None = None,
    ) -> list[Approval]:
        """Newest first. `statuses` filters on several states (the console's decided history)."""
        await self.setup()
        await self._expire(tenant)
        sql = "SELECT * FROM interlock_approvals WHERE tenant = ?"
        params: list[Any] = [tenant]
        wanted = statuses or ((status,) if status else ())
        if wanted:
            sql += f" AND status IN ({', '.join('?' for _ in wanted)})"
            params.extend(wanted)
        sql += " ORDER BY created_at DESC, id LIMIT ? OFFSET ?"
        params += [int(limit), int(offset)]
        return [_row(r) for r in await self.db.fetchall(sql, params)]

    async def events(self, approval_id: str) -> list[ApprovalEvent]:
        """The approval's audit trail, oldest first."""
        await self.setup()
        rows = await self.db.fetchall(
            "SELECT kind, actor, reason, args_hash, at FROM interlock_approval_events WHERE approval_id = ?"
            " ORDER BY seq", (approval_id,))
        return [ApprovalEvent(**{**r, "at": _ts(r["at"])}) for r in rows]

    async def changes(self, tenant: str, since: float, limit: int = 200) -> list[tuple[float, str, str]]:
        """(seq, approval id, event kind) of the tenant's changes recorded after `since`, oldest first."""
        await self.setup()
        await self._expire(tenant)
        rows = await self.db.fetchall(
            "SELECT e.seq, e.approval_id, e.kind FROM interlock_approval_events e"
            " JOIN interlock_approvals a ON a.id = e.approval_id"
            " WHERE a.tenant = ? AND e.seq > ? ORDER BY e.seq LIMIT ?", (tenant, since, int(limit)))
        return [(float(r["seq"]), str(r["approval_id"]), str(r["kind"])) for r in rows]

    async def _expire(self, tenant: str | None = None) -> list[str]:
        """Mark due approvals expired, one row at a time so each expiry is recorded once; returns their ids."""
        now = self._clock()
        sql = "SELECT id FROM interlock_approvals WHERE status IN ('pending', 'approved') AND expires_at <= ?"
        params: list[Any] = [now]
        if tenant is not None:
            sql += " AND tenant = ?"
            params.append(tenant)
        expired: list[str] = []
        for row in await self.db.fetchall(sql, params):
            changed = await self.db.execute(
                "UPDATE interlock_approvals SET status = 'expired'"
                " WHERE id = ? AND status IN ('pending', 'approved') AND expires_at <= ?", (row["id"], now))
            if changed == 1:
                await self._event(row["id"], "expired", None, "not decided in time", at=now)
                expired.append(row["id"])
        return expired

    async def expire_due(self) -> list[str]:
        """Expire every due approval (all tenants); returns the ids this call expired."""
        await self.setup()
        return await self._expire()

    async def claim(self, approval_id: str, kind: str) -> bool:
        """Claim a one-time side effect of an approval; True for exactly one caller across processes."""
        await self.setup()
        return await self.db.execute(
            "INSERT INTO interlock_approval_notices (approval_id, kind, at) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING", (approval_id, kind, self._clock())) == 1

    async def unclaimed(self, kind: str, status: Status, limit: int = 100) -> list[Approval]:
        """Approvals in `status` whose side effect `kind` nobody has claimed yet (all tenants, oldest first)."""
        await self.setup()
        rows = await self.db.fetchall(
            "SELECT a.* FROM interlock_approvals a LEFT JOIN interlock_approval_notices n"
            " ON n.approval_id = a.id AND n.kind = ? WHERE a.status = ? AND n.approval_id IS NULL"
            " ORDER BY a.created_at LIMIT ?", (kind, status, int(limit)))
        return [_row(r) for r in rows]

    async def find_call(
        self, tool: str, server: str, args: dict[str, Any] | None, principal: str, tenant: str, status: Status,
    ) -> list[Approval]:
        """Live approvals in `status` for exactly this call by this principal (the desktop flow), oldest first."""
        await self.setup()
        rows = await self.db.fetchall(
            "SELECT * FROM interlock_approvals WHERE tool = ? AND server = ? AND args_hash = ? AND principal = ?"
            " AND tenant = ? AND status = ? AND expires_at > ? ORDER BY created_at",
            (tool, server, args_hash(args), principal, tenant, status, self._clock()))
        return [_row(r) for r in rows]

    async def decide(
        self,
        approval_id: str,
        decision: Decision,
        decided_by: str,
        reason: str | None = None,
        args: dict[str, Any] | None = None,
        ttl_s: int | None = None,
        digest_args: dict[str, Any] | None = None,
    ) -> Approval:
        """Approve or reject a pending approval. `args` edits the call (approve only; `digest_args`: the edited
        call's real arguments when `args` is what is shown, as in `request`); `ttl_s` resets expiry."""
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
            params += [canonical_json(args), args_hash(digest_args if digest_args is not None else args)]
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
        kind = "rejected" if decision == "reject" else ("edited" if args is not None else "approved")
        await self._event(approval_id, kind, decided_by, reason, approval.args_hash, now)
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
            await self._event(approval_id, "consumed", principal, None, digest, now)
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
