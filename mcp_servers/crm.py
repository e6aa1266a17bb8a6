"""CRM MCP server: find_customer, get_customer, update_contact (scoped by the verified token's tenant and, for an
end user, the customer it binds)."""

from __future__ import annotations

from typing import Annotated, Any

from fastmcp.exceptions import ToolError
from interlock.mcp_servers import records
from interlock.mcp_servers.hosting import System
from pydantic import BaseModel, Field

system = System("crm", "Customers of the caller's tenant: search, read and update contact details.")

CustomerId = Annotated[str, Field(pattern=r"^CUS-\d{3}$", description="Customer id, e.g. CUS-101")]
Email = Annotated[str, Field(pattern=r"^[^@\s]{1,64}@[^@\s]{1,190}\.[A-Za-z]{2,}$", max_length=254)]
Phone = Annotated[str, Field(pattern=r"^\+?[0-9][0-9 \-]{5,24}$")]


class Customer(BaseModel):
    customer_id: str
    name: str
    email: str
    phone: str
    company: str
    tier: str
    created_at: str
    updated_at: str


class CustomerList(BaseModel):
    customers: list[Customer]


def _customer(data: dict[str, Any]) -> Customer:
    return Customer(customer_id=data.pop("id"), **data)


def _load(conn, customer_id: str, tenant: str) -> Customer:  # noqa: ANN001 - sqlite3 connection
    return _customer(records.fetch(conn, "customers", customer_id, tenant, "customer"))


@system.read("Find customer")
async def find_customer(
    query: Annotated[str, Field(min_length=2, max_length=100, description="Part of a name, email or phone")],
    limit: Annotated[int, Field(ge=1, le=50)] = 10,
) -> CustomerList:
    """Search the customers you may see by name, email or phone (a signed-in customer sees only their own record)."""
    rows = records.matching("crm", "customers", text=query, columns=("name", "email", "phone"), order_by="name",
                            limit=limit)
    return CustomerList(customers=[_customer(r) for r in rows])


@system.read("Get customer")
async def get_customer(customer_id: CustomerId) -> Customer:
    """Fetch one customer's profile."""
    return _customer(records.get("crm", "customers", customer_id, "customer"))


@system.write("Update contact details", destructive=False, idempotent=True,
              record=("customers", "customer_id", "customer"))
async def update_contact(customer_id: CustomerId, email: Email | None = None, phone: Phone | None = None) -> Customer:
    """Change a customer's email and/or phone number."""
    if email is None and phone is None:
        raise ToolError("nothing to update: give an email, a phone number or both")
    tenant = records.tenant()
    with records.transaction("crm") as conn:
        current = _load(conn, customer_id, tenant)
        conn.execute(
            "UPDATE customers SET email = ?, phone = ?, updated_at = ? WHERE id = ? AND tenant = ?",
            (email or current.email, phone or current.phone, records.now(), customer_id, tenant),
        )
        return _load(conn, customer_id, tenant)
