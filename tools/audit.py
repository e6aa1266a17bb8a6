"""Append-only audit log of tool calls and denials, in Interlock's shared database.

One row per `tools/call` that reaches an MCP server (allowed, failed or denied) and per denial the graph-side
client makes on its own (tool outside the caller's scopes or the graph's allowlist). Rows carry the argument
*hash*, never raw arguments, and an outcome code rather than error text (which may echo inputs). Next to the
user (`principal`) a row names the customer the verified token binds them to (`customer_id`; empty for staff and
services), so "who acted for which customer" is answered from the log alone.

The table refuses UPDATE and DELETE through triggers, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from interlock.kernel.database import LazyDatabase

Outcome = Literal["ok", "error", "denied"]

_TABLE = (
    """CREATE TABLE IF NOT EXISTS interlock_audit (
        id TEXT PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        principal TEXT,
        tenant TEXT,
        server TEXT NOT NULL,
        tool TEXT NOT NULL,
        args_hash TEXT,
        approval_id TEXT,
        outcome TEXT NOT NULL,
        reason TEXT,
        latency_ms DOUBLE PRECISION,
        trace_id TEXT,
        transport TEXT,
        customer_id TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS interlock_audit_tenant_ts ON interlock_audit (tenant, ts)",
)
_SQLITE_GUARDS = (
    """CREATE TRIGGER IF NOT EXISTS interlock_audit_no_update BEFORE UPDATE ON interlock_audit
       BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS interlock_audit_no_delete BEFORE DELETE ON interlock_audit
       BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END""",
)
_PG_GUARDS = (
    """CREATE OR REPLACE FUNCTION interlock_audit_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'audit log is append-only'; END $$ LANGUAGE plpgsql""",
    """CREATE OR REPLACE TRIGGER interlock_audit_append_only BEFORE UPDATE OR DELETE ON interlock_audit
       FOR EACH ROW EXECUTE FUNCTION interlock_audit_append_only()""",
)


class AuditRecord(BaseModel):
    id: str = Field(default_factory=lambda: f"aud_{uuid.uuid4().hex}")
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC))
    principal: str | None = None
    tenant: str | None = None
    server: str
    tool: str
    args_hash: str | None = None
    approval_id: str | None = None
    outcome: Outcome
    reason: str | None = Field(default=None, max_length=200)
    latency_ms: float | None = None
    trace_id: str | None = None
    transport: str | None = None
    customer_id: str | None = Field(default=None, max_length=100)


_COLUMNS = tuple(AuditRecord.model_fields)


class AuditLog:
    def __init__(self, url: str | None = None) -> None:
        self.db = LazyDatabase(url)
        self._ready = False

    async def setup(self) -> None:
        if not self._ready:
            await self.db.script(_TABLE + (_PG_GUARDS if self.db.postgres else _SQLITE_GUARDS))
            await self._add_customer_column()
            self._ready = True

    async def _add_customer_column(self) -> None:
        """A log created before rows named the bound customer gets the column (adding one is no UPDATE)."""
        if self.db.postgres:
            await self.db.execute("ALTER TABLE interlock_audit ADD COLUMN IF NOT EXISTS customer_id TEXT")
            return
        columns = {r["name"] for r in await self.db.fetchall("PRAGMA table_info(interlock_audit)")}
        if "customer_id" not in columns:
            try:
                await self.db.execute("ALTER TABLE interlock_audit ADD COLUMN customer_id TEXT")
            except Exception as exc:  # another process added it first
                if "duplicate column" not in str(exc):
                    raise

    async def close(self) -> None:
        await self.db.close()

    async def append(self, record: AuditRecord) -> None:
        await self.setup()
        values: dict[str, Any] = record.model_dump()
        values["ts"] = record.ts.timestamp()
        await self.db.execute(
            f"INSERT INTO interlock_audit ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})",
            [values[c] for c in _COLUMNS],
        )

    async def query(
        self,
        *,
        tenant: str | None = None,
        tool: str | None = None,
        principal: str | None = None,
        customer_id: str | None = None,
        since: float | None = None,
        limit: int = 200,
    ) -> list[AuditRecord]:
        """Most recent rows first, filtered by any of tenant/tool/principal/customer_id/since (epoch seconds)."""
        await self.setup()
        where, params = [], []
        for column, value in (("tenant", tenant), ("tool", tool), ("principal", principal),
                              ("customer_id", customer_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        sql = "SELECT * FROM interlock_audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts DESC LIMIT ?"
        params.append(int(limit))
        rows = await self.db.fetchall(sql, params)
        return [AuditRecord.model_validate({**r, "ts": datetime.fromtimestamp(r["ts"], UTC)}) for r in rows]
