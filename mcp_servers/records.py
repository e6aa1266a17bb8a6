"""One tenant's records in a sample system's database, read and written the same way by every tool.

Every query is filtered by the tenant of the verified token, and a record of another tenant answers exactly like an
unknown id (no cross-tenant oracle). A read-then-change runs in one immediate transaction, so two concurrent calls
cannot both pass a business rule (refund at most what was paid) on the same stale row. Table and column names
come from the tool modules, never from arguments.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fastmcp.exceptions import ToolError
from interlock.mcp_servers import sample_data
from interlock.mcp_servers.principals import current_principal


def now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def at_most(amount_cents: int, available_cents: int, refusal: str) -> None:
    """Money out (refund, credit) never exceeds what is left on the record; `refusal` says so to the caller."""
    if amount_cents > available_cents:
        raise ToolError(refusal)


def tenant() -> str:
    """The caller's tenant, from the verified token (never from an argument)."""
    return current_principal().tenant


@contextmanager
def transaction(system: str) -> Iterator[sqlite3.Connection]:
    with sample_data.session(system) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def fields(row: sqlite3.Row) -> dict[str, Any]:
    """A row without its tenant column (the caller knows its own tenant)."""
    data = dict(row)
    data.pop("tenant", None)
    return data


def fetch(conn: sqlite3.Connection, table: str, record_id: str, tenant: str, noun: str) -> dict[str, Any]:
    row = conn.execute(f"SELECT * FROM {table} WHERE id = ? AND tenant = ?", (record_id, tenant)).fetchone()  # noqa: S608
    if row is None:
        raise ToolError(f"{noun} {record_id} not found")
    return fields(row)


def get(system: str, table: str, record_id: str, noun: str) -> dict[str, Any]:
    """One record of the caller's tenant, read outside any transaction."""
    with sample_data.session(system) as conn:
        return fetch(conn, table, record_id, tenant(), noun)


def newest(system: str, table: str, *, order_by: str, limit: int, columns: str = "*",
           **equal: Any) -> list[dict[str, Any]]:
    """The tenant's rows of `table`, newest first, where each given (non-None) column equals its value."""
    wanted = {k: v for k, v in equal.items() if v is not None}
    where = "".join(f" AND {column} = ?" for column in wanted)
    sql = f"SELECT {columns} FROM {table} WHERE tenant = ?{where} ORDER BY {order_by} DESC LIMIT ?"  # noqa: S608
    with sample_data.session(system) as conn:
        return [fields(r) for r in conn.execute(sql, (tenant(), *wanted.values(), limit)).fetchall()]
