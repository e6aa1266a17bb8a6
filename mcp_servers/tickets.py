"""Tickets MCP server: create_ticket, get_ticket, add_comment, escalate_to_human.

Writes here are reversible (a ticket can be edited or closed by staff), so they need `tickets:write` but no
operator approval. Comments are attributed to the token's subject, never to an argument.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastmcp.exceptions import ToolError
from interlock.mcp_servers import records, sample_data
from interlock.mcp_servers.hosting import System
from interlock.mcp_servers.principals import current_principal
from pydantic import BaseModel, Field

system = System("tickets", "Support tickets of the caller's tenant: open, read, comment and escalate.")

TicketId = Annotated[str, Field(pattern=r"^TCK-\d{4}$", description="Ticket id, e.g. TCK-1001")]
Priority = Literal["low", "normal", "high", "urgent"]


class Comment(BaseModel):
    comment_id: str
    author: str
    body: str
    created_at: str


class Ticket(BaseModel):
    ticket_id: str
    customer_id: str | None
    subject: str
    body: str
    status: str
    priority: Priority
    escalated: bool
    escalation_reason: str | None
    created_at: str
    updated_at: str
    comments: list[Comment] = []


def _load(conn, ticket_id: str, tenant: str) -> Ticket:  # noqa: ANN001 - sqlite3 connection
    data = records.fetch(conn, "tickets", ticket_id, tenant, "ticket")
    comments = conn.execute(
        "SELECT id, author, body, created_at FROM comments WHERE ticket_id = ? AND tenant = ? ORDER BY created_at, id",
        (ticket_id, tenant)).fetchall()
    return Ticket(ticket_id=data.pop("id"), escalated=bool(data.pop("escalated")),
                  comments=[Comment(comment_id=c["id"], author=c["author"], body=c["body"],
                                    created_at=c["created_at"]) for c in comments], **data)


@system.write("Create ticket", destructive=False, idempotent=False)
async def create_ticket(
    subject: Annotated[str, Field(min_length=3, max_length=200)],
    body: Annotated[str, Field(min_length=1, max_length=5000)],
    customer_id: Annotated[str | None, Field(pattern=r"^CUS-\d{3}$")] = None,
    priority: Priority = "normal",
) -> Ticket:
    """Open a new support ticket (a signed-in customer's ticket is always their own)."""
    tenant = records.tenant()
    customer_id = records.owner_for_new(customer_id)
    ticket_id = f"TCK-{9000 + uuid.uuid4().int % 1000}"
    now = records.now()
    with sample_data.session("tickets") as conn:
        for _ in range(20):  # short ids can collide; retry with a new one
            cur = conn.execute("INSERT OR IGNORE INTO tickets VALUES (?, ?, ?, ?, ?, 'open', ?, 0, NULL, ?, ?)",
                               (ticket_id, tenant, customer_id, subject, body, priority, now, now))
            if cur.rowcount == 1:
                return _load(conn, ticket_id, tenant)
            ticket_id = f"TCK-{9000 + uuid.uuid4().int % 1000}"
    raise ToolError("could not allocate a ticket id; try again")


@system.read("Get ticket")
async def get_ticket(ticket_id: TicketId) -> Ticket:
    """Fetch a ticket with its comments."""
    with sample_data.session("tickets") as conn:
        return _load(conn, ticket_id, records.tenant())


@system.write("Add comment", destructive=False, idempotent=False, record=("tickets", "ticket_id", "ticket"))
async def add_comment(ticket_id: TicketId, body: Annotated[str, Field(min_length=1, max_length=5000)]) -> Ticket:
    """Add a comment to a ticket, attributed to the caller."""
    principal = current_principal()
    with records.transaction("tickets") as conn:
        ticket = _load(conn, ticket_id, principal.tenant)
        if ticket.status == "closed":
            raise ToolError(f"ticket {ticket_id} is closed")
        now = records.now()
        conn.execute("INSERT INTO comments VALUES (?, ?, ?, ?, ?, ?)",
                     (f"CMT-{uuid.uuid4().hex[:10]}", principal.tenant, ticket_id, principal.sub, body, now))
        conn.execute("UPDATE tickets SET updated_at = ? WHERE id = ? AND tenant = ?", (now, ticket_id, principal.tenant))
        return _load(conn, ticket_id, principal.tenant)


@system.write("Escalate to a human", destructive=False, idempotent=True,
              record=("tickets", "ticket_id", "ticket"))
async def escalate_to_human(
    ticket_id: TicketId, reason: Annotated[str, Field(min_length=3, max_length=500)]
) -> Ticket:
    """Hand the ticket to a human agent with high priority; escalating twice keeps the first reason."""
    tenant = records.tenant()
    with records.transaction("tickets") as conn:
        ticket = _load(conn, ticket_id, tenant)
        if not ticket.escalated:
            conn.execute(
                "UPDATE tickets SET escalated = 1, escalation_reason = ?, priority = CASE WHEN priority = 'urgent'"
                " THEN 'urgent' ELSE 'high' END, status = 'open', updated_at = ? WHERE id = ? AND tenant = ?",
                (reason, records.now(), ticket_id, tenant))
        return _load(conn, ticket_id, tenant)
