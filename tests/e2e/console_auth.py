"""The langgraph.json auth hook of the console tests: two tenants, customers and operators, by bearer token.

Threads are scoped to the caller's tenant (so an operator can read their tenant's run traces and nobody else's);
operators carry `approvals:decide`."""

from __future__ import annotations

from langgraph_sdk import Auth

auth = Auth()
CUSTOMER_SCOPES = ["orders:read", "orders:write", "crm:read", "tickets:read"]
USERS = {
    # An end user bound to their customer record (subject binding): they reach only CUS-201's orders.
    "tok-customer-globex": {"identity": "CUS-201", "tenant": "globex", "customer_id": "CUS-201",
                            "permissions": CUSTOMER_SCOPES},
    "tok-ops-ann": {"identity": "ops-ann", "tenant": "globex", "permissions": ["approvals:decide"]},
    "tok-ops-bob": {"identity": "ops-bob", "tenant": "globex", "permissions": ["approvals:decide"]},
    "tok-ops-acme": {"identity": "ops-gina", "tenant": "acme", "permissions": ["approvals:decide"]},
}


@auth.authenticate
async def authenticate(authorization: str | None) -> dict:
    scheme, _, token = (authorization or "").partition(" ")
    user = USERS.get(token) if scheme.lower() == "bearer" else None
    if user is None:
        raise Auth.exceptions.HTTPException(status_code=401, detail="invalid or missing token")
    return {**user, "groups": ["customers"]}


@auth.on.threads
async def same_tenant(ctx: Auth.types.AuthContext, value: dict) -> Auth.types.FilterType:
    tenant = ctx.user["tenant"]
    metadata = value.setdefault("metadata", {}) if isinstance(value, dict) else {}
    if isinstance(metadata, dict) and metadata.get("tenant") is None:
        metadata["tenant"] = tenant
    return {"tenant": tenant}
