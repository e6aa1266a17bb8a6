"""Billing MCP server: get_invoice, list_invoices, issue_credit.

Business rules: a credit needs a non-blank reason, is positive and at most the invoice amount minus credits
already issued. issue_credit is irreversible and needs an operator approval.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastmcp.exceptions import ToolError
from interlock.mcp_servers import records
from interlock.mcp_servers.hosting import System
from pydantic import BaseModel, Field

system = System("billing", "Invoices of the caller's tenant: read them and issue credits.")

InvoiceId = Annotated[str, Field(pattern=r"^INV-\d{4}$", description="Invoice id, e.g. INV-1001")]
InvoiceStatus = Literal["open", "paid", "credited"]


class Invoice(BaseModel):
    invoice_id: str
    customer_id: str
    order_id: str | None
    amount_cents: int
    paid_cents: int
    credited_cents: int
    currency: str
    status: InvoiceStatus
    issued_at: str
    due_date: str


class InvoiceList(BaseModel):
    invoices: list[Invoice]


class Credit(BaseModel):
    credit_id: str
    invoice_id: str
    amount_cents: int
    reason: str
    remaining_creditable_cents: int


def _invoice(data: dict[str, Any]) -> Invoice:
    return Invoice(invoice_id=data.pop("id"), **data)


def _load(conn, invoice_id: str, tenant: str) -> Invoice:  # noqa: ANN001 - sqlite3 connection
    return _invoice(records.fetch(conn, "invoices", invoice_id, tenant, "invoice"))


@system.read("Get invoice")
async def get_invoice(invoice_id: InvoiceId) -> Invoice:
    """Fetch one invoice with what was paid and credited."""
    return _invoice(records.get("billing", "invoices", invoice_id, "invoice"))


@system.read("List invoices")
async def list_invoices(
    customer_id: Annotated[str | None, Field(pattern=r"^CUS-\d{3}$")] = None,
    status: InvoiceStatus | None = None,
    limit: Annotated[int, Field(ge=1, le=100)] = 20,
) -> InvoiceList:
    """List the invoices you may see (a signed-in customer: only their own), newest first, optionally for one
    customer or status."""
    rows = records.newest("billing", "invoices", order_by="issued_at", limit=limit, customer_id=customer_id,
                          status=status)
    return InvoiceList(invoices=[_invoice(r) for r in rows])


@system.write("Issue credit", destructive=True, idempotent=False,
              record=("invoices", "invoice_id", "invoice"))
async def issue_credit(
    invoice_id: InvoiceId,
    amount_cents: Annotated[int, Field(gt=0, description="Credit amount, in cents")],
    reason: Annotated[str, Field(max_length=500, description="Why the credit is issued (required)")],
) -> Credit:
    """Issue a credit note against an invoice. Irreversible; requires an operator approval."""
    if not reason.strip():
        raise ToolError("a credit needs a reason")
    tenant = records.tenant()
    with records.transaction("billing") as conn:
        invoice = _load(conn, invoice_id, tenant)
        remaining = invoice.amount_cents - invoice.credited_cents
        records.at_most(amount_cents, remaining,
                        f"credit of {amount_cents} cents exceeds the {remaining} cents still creditable on {invoice_id}")
        credit_id = records.new_id("CRN")
        conn.execute("INSERT INTO credits VALUES (?, ?, ?, ?, ?, ?)",
                     (credit_id, tenant, invoice_id, amount_cents, reason.strip(), records.now()))
        status = "credited" if amount_cents == remaining else invoice.status
        conn.execute("UPDATE invoices SET credited_cents = credited_cents + ?, status = ? WHERE id = ? AND tenant = ?",
                     (amount_cents, status, invoice_id, tenant))
    return Credit(credit_id=credit_id, invoice_id=invoice_id, amount_cents=amount_cents, reason=reason.strip(),
                  remaining_creditable_cents=remaining - amount_cents)
