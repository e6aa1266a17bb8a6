"""One tenant's records in a sample system's database, read and written the same way by every tool.

Every query is filtered by the tenant of the verified token, and a record of another tenant answers exactly like an
unknown id (no cross-tenant oracle). Customer-owned records (orders, invoices, tickets, the customer records
themselves) are filtered the same way by the customer the token binds (`Principal.customer_id`): an end user
reads, lists, searches and changes only their own customer's records, another customer's id answers "not found",
and a bulk read returns only theirs. Staff (`customers:any`, no binding) reach every customer of the tenant; a
principal with neither reaches only records owned by no customer. Writes load the record through `fetch` first,
in the same transaction, so they are bound by the same filter; `RecordOwnership` refuses them even earlier.

A read-then-change runs in one immediate transaction, so two concurrent calls cannot both pass a business rule
(refund at most what was paid) on the same stale row. Table and column names come from the tool modules, never
from arguments.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import mcp_types as mt
from fastmcp.exceptions import ToolError
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import ToolResult
from interlock.mcp_servers import sample_data
from interlock.mcp_servers.principals import ToolPolicy, current_principal, request_meta

from interlock.kernel.identity import META_PRECHECK


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


# The column naming the customer that owns each table's rows. Tables owned through a parent record (shipments,
# refunds, credits, comments) map to None: tools reach them only after loading the parent with `fetch`. A table
# missing here is refused, so a new customer-owned table cannot be read unfiltered by accident.
OWNER_COLUMNS: dict[str, str | None] = {
    "orders": "customer_id", "invoices": "customer_id", "tickets": "customer_id", "customers": "id",
    "shipments": None, "refunds": None, "credits": None, "comments": None,
}


def owner_filter(table: str) -> tuple[str, tuple[Any, ...]]:
    """(" AND <condition>", params) limiting `table` to the rows the caller's customer binding allows."""
    if table not in OWNER_COLUMNS:
        raise LookupError(f"table {table!r} has no declared owner column")
    column = OWNER_COLUMNS[table]
    principal = current_principal()
    if column is None or principal.any_customer:
        return "", ()
    if principal.customer_id is None:
        return f" AND {column} IS NULL", ()
    return f" AND {column} = ?", (principal.customer_id,)


def owner_for_new(customer_id: str | None, noun: str = "customer") -> str | None:
    """The owner to record on a new customer-owned row: staff name any customer (or none); an end user's row is
    always their own, and naming another customer answers like an unknown one."""
    principal = current_principal()
    if principal.any_customer:
        return customer_id
    if customer_id is not None and customer_id != principal.customer_id:
        raise ToolError(f"{noun} {customer_id} not found")
    return principal.customer_id


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
    """One record of `tenant` the caller may act on; anything else (missing, another tenant's, another customer's)
    answers the same "not found"."""
    owner, bound = owner_filter(table)
    row = conn.execute(f"SELECT * FROM {table} WHERE id = ? AND tenant = ?{owner}",  # noqa: S608
                       (record_id, tenant, *bound)).fetchone()
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
    owner, bound = owner_filter(table)
    sql = f"SELECT {columns} FROM {table} WHERE tenant = ?{owner}{where} ORDER BY {order_by} DESC LIMIT ?"  # noqa: S608
    with sample_data.session(system) as conn:
        return [fields(r) for r in conn.execute(sql, (tenant(), *bound, *wanted.values(), limit)).fetchall()]


def matching(system: str, table: str, *, text: str, columns: Sequence[str], order_by: str,
             limit: int) -> list[dict[str, Any]]:
    """The tenant's rows of `table` the caller may see where any of `columns` contains `text` (a literal)."""
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    like = " OR ".join(f"{column} LIKE ? ESCAPE '\\'" for column in columns)
    owner, bound = owner_filter(table)
    sql = f"SELECT * FROM {table} WHERE tenant = ?{owner} AND ({like}) ORDER BY {order_by} LIMIT ?"  # noqa: S608
    with sample_data.session(system) as conn:
        rows = conn.execute(sql, (tenant(), *bound, *(pattern for _ in columns), limit)).fetchall()
    return [fields(r) for r in rows]


def visible(system: str, table: str, record_id: str) -> bool:
    """Whether the caller may act on this record of their tenant (the same filter `fetch` applies)."""
    owner, bound = owner_filter(table)
    with sample_data.session(system) as conn:
        row = conn.execute(f"SELECT 1 FROM {table} WHERE id = ? AND tenant = ?{owner}",  # noqa: S608
                           (record_id, tenant(), *bound)).fetchone()
    return row is not None


PRECHECK_OK = "precheck passed: the call may proceed to its approval (nothing was run)"


class RecordOwnership(Middleware):
    """Answers a call on a record the caller may not act on with the tool's own "not found", before the approval
    gate: no operator is asked about, and no approval is spent on, another customer's order.

    A precheck (`_meta["io.interlock/precheck"]: true`, set by Interlock's client before its graph asks an
    operator) stops here either way: "not found" as above, else an error result marked passed in its `_meta`
    (`"io.interlock/precheck": "passed"`). The tool does not run and the gate creates no approval; the scope and
    tenant checks before this layer have answered as for a call."""

    def __init__(self, system: str, policies: dict[str, ToolPolicy]) -> None:
        self.system = system
        self.policies = policies

    async def on_call_tool(
        self, context: MiddlewareContext[mt.CallToolRequestParams], call_next: CallNext[mt.CallToolRequestParams, ToolResult]
    ) -> ToolResult:
        policy = self.policies.get(context.message.name)
        owned = policy.record if policy is not None else None
        if owned is not None:
            record_id = (context.message.arguments or {}).get(owned.argument)
            # A malformed id is left to the tool's input validation, which answers it precisely.
            if isinstance(record_id, str) and not visible(self.system, owned.table, record_id):
                raise ToolError(f"{owned.noun} {record_id} not found")
        if request_meta(context).get(META_PRECHECK) is True:
            # An error result on purpose: nothing ran, and a client that does not know prechecks must not read a
            # success (nor validate it against the tool's output schema). Interlock's client reads the `_meta`.
            return ToolResult(content=[mt.TextContent(type="text", text=PRECHECK_OK)],
                              meta={META_PRECHECK: "passed"}, is_error=True)
        return await call_next(context)
