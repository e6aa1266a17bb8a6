"""Orders MCP server: get_order, list_orders, track_shipment, cancel_order, refund_order.

Business rules: only pending or processing orders can be cancelled (a shipped order cannot); cancelling an
already cancelled order is a no-op (idempotent); a refund is positive and at most what was paid minus what
was already refunded. cancel_order and refund_order are irreversible: they need an operator approval.
Every query is filtered by the tenant of the verified token.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastmcp.exceptions import ToolError
from interlock.mcp_servers import records, sample_data
from interlock.mcp_servers.hosting import System
from pydantic import BaseModel, Field

system = System("orders", "Orders of the caller's tenant: look up, track, cancel and refund.")

OrderId = Annotated[str, Field(pattern=r"^ORD-\d{4}$", description="Order id, e.g. ORD-1001")]
OrderStatus = Literal["pending", "processing", "shipped", "delivered", "cancelled"]


class LineItem(BaseModel):
    sku: str
    name: str
    qty: int
    unit_cents: int


class Order(BaseModel):
    order_id: str
    customer_id: str
    status: OrderStatus
    currency: str
    total_cents: int
    paid_cents: int
    refunded_cents: int
    items: list[LineItem]
    created_at: str
    updated_at: str


class OrderSummary(BaseModel):
    order_id: str
    customer_id: str
    status: OrderStatus
    total_cents: int
    created_at: str


class OrderList(BaseModel):
    orders: list[OrderSummary]


class ShipmentEvent(BaseModel):
    at: str
    status: str
    location: str


class Shipment(BaseModel):
    order_id: str
    carrier: str
    tracking_number: str
    status: str
    eta: str | None
    events: list[ShipmentEvent]


class Refund(BaseModel):
    refund_id: str
    order_id: str
    amount_cents: int
    refunded_total_cents: int
    remaining_refundable_cents: int


def _order(data: dict[str, Any]) -> Order:
    return Order(order_id=data.pop("id"), items=json.loads(data.pop("items")), **data)


def _load(conn, order_id: str, tenant: str) -> Order:  # noqa: ANN001 - sqlite3 connection
    return _order(records.fetch(conn, "orders", order_id, tenant, "order"))


@system.read("Get order")
async def get_order(order_id: OrderId) -> Order:
    """Fetch one order with its line items and payment state."""
    return _order(records.get("orders", "orders", order_id, "order"))


@system.read("List orders")
async def list_orders(
    customer_id: Annotated[str | None, Field(pattern=r"^CUS-\d{3}$")] = None,
    status: OrderStatus | None = None,
    limit: Annotated[int, Field(ge=1, le=100)] = 20,
) -> OrderList:
    """List the most recent orders you may see (a signed-in customer: only their own), optionally for one
    customer or status."""
    rows = records.newest("orders", "orders", columns="id, customer_id, status, total_cents, created_at",
                          order_by="created_at", limit=limit, customer_id=customer_id, status=status)
    return OrderList(orders=[OrderSummary(order_id=r.pop("id"), **r) for r in rows])


@system.read("Track shipment")
async def track_shipment(order_id: OrderId) -> Shipment:
    """Carrier, tracking number and scan events of a shipped order."""
    tenant = records.tenant()
    with sample_data.session("orders") as conn:
        order = _load(conn, order_id, tenant)
        row = conn.execute("SELECT * FROM shipments WHERE order_id = ? AND tenant = ?", (order_id, tenant)).fetchone()
    if row is None:
        raise ToolError(f"order {order_id} has not shipped yet (status: {order.status})")
    return Shipment(order_id=order_id, carrier=row["carrier"], tracking_number=row["tracking_number"],
                    status=row["status"], eta=row["eta"], events=json.loads(row["events"]))


@system.write("Cancel order", destructive=True, idempotent=True, record=("orders", "order_id", "order"))
async def cancel_order(order_id: OrderId, reason: Annotated[str, Field(min_length=3, max_length=500)]) -> Order:
    """Cancel an order that has not shipped yet. Irreversible; requires an operator approval."""
    tenant = records.tenant()
    with records.transaction("orders") as conn:
        order = _load(conn, order_id, tenant)
        if order.status in ("shipped", "delivered"):
            raise ToolError(f"order {order_id} has already {order.status} and cannot be cancelled")
        if order.status != "cancelled":
            conn.execute("UPDATE orders SET status = 'cancelled', updated_at = ? WHERE id = ? AND tenant = ?",
                         (records.now(), order_id, tenant))
        return _load(conn, order_id, tenant)


@system.write("Refund order", destructive=True, idempotent=False, record=("orders", "order_id", "order"))
async def refund_order(
    order_id: OrderId,
    amount_cents: Annotated[int, Field(gt=0, description="Amount to refund, in cents")],
    reason: Annotated[str, Field(min_length=3, max_length=500)],
) -> Refund:
    """Refund part or all of what was paid for an order. Irreversible; requires an operator approval."""
    tenant = records.tenant()
    with records.transaction("orders") as conn:
        order = _load(conn, order_id, tenant)
        refundable = order.paid_cents - order.refunded_cents
        records.at_most(amount_cents, refundable, f"refund of {amount_cents} cents exceeds the refundable amount of "
                                                  f"{refundable} cents for order {order_id}")
        refund_id = records.new_id("RFD")
        now = records.now()
        conn.execute("INSERT INTO refunds VALUES (?, ?, ?, ?, ?, ?)",
                     (refund_id, tenant, order_id, amount_cents, reason, now))
        conn.execute("UPDATE orders SET refunded_cents = refunded_cents + ?, updated_at = ?"
                     " WHERE id = ? AND tenant = ?", (amount_cents, now, order_id, tenant))
    total = order.refunded_cents + amount_cents
    return Refund(refund_id=refund_id, order_id=order_id, amount_cents=amount_cents, refunded_total_cents=total,
                  remaining_refundable_cents=order.paid_cents - total)
