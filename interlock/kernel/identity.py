"""Who a run or a tool call acts for, and the request metadata keys that carry it to an MCP server."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

# Keys of an MCP request's `_meta`: filled by Interlock's client, never by a model.
META_TOKEN = "io.interlock/token"
META_APPROVAL = "io.interlock/approval_id"
META_TRACE = "io.interlock/trace_id"
# A precheck: the server runs its checks (scopes, record ownership) and answers without running the tool or
# asking for an approval, so a graph learns "not found" before it asks an operator about a call.
META_PRECHECK = "io.interlock/precheck"

# Staff may act on every customer of their tenant; everyone else acts for at most the one customer bound to them.
STAFF_SCOPE = "customers:any"


class Principal(BaseModel):
    """A user (or service) acting inside one tenant with a set of scopes such as `orders:read`.

    Built only from trusted sources: the server's auth context, a verified token, or development settings.

    Subject binding: an end user carries `customer_id`, the one customer they act for, and sees and changes only
    that customer's records. Without one, only `customers:any` (staff) reaches customer-owned records, across every
    customer of the tenant; a principal with neither reaches records owned by no customer only.
    """

    sub: str = Field(min_length=1, max_length=200)
    tenant: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    display_name: str | None = None
    customer_id: str | None = Field(None, min_length=1, max_length=100)

    @field_validator("scopes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # Accept the OAuth wire form ("a b") as well as a list.
        if isinstance(value, str):
            return [s for s in value.replace(",", " ").split() if s]
        return value

    def has(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def any_customer(self) -> bool:
        """May act on every customer of the tenant: staff scope and no binding (a binding always narrows)."""
        return self.customer_id is None and self.has(STAFF_SCOPE)

    def may_act_for(self, customer_id: str | None) -> bool:
        """Whether a record owned by `customer_id` (None: owned by no customer) is this principal's to see."""
        return self.any_customer or customer_id == self.customer_id
