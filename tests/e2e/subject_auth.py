"""The langgraph.json auth hook of the subject-binding tests: end users of tenant acme bound to their customer
record (`customer_id`), and a staff member with `customers:any` who also decides approvals. Threads are scoped to
the caller's tenant."""

from __future__ import annotations

from langgraph_sdk import Auth

auth = Auth()
END_USER_SCOPES = ["orders:read", "orders:write", "crm:read", "crm:write", "billing:read", "tickets:read",
                   "tickets:write"]
USERS = {
    "tok-ann": {"identity": "ann@acme", "tenant": "acme", "customer_id": "CUS-101", "permissions": END_USER_SCOPES},
    "tok-ben": {"identity": "ben@acme", "tenant": "acme", "customer_id": "CUS-102", "permissions": END_USER_SCOPES},
    "tok-ops": {"identity": "ops@acme", "tenant": "acme",
                "permissions": [*END_USER_SCOPES, "customers:any", "approvals:decide"]},
}


@auth.authenticate
async def authenticate(authorization: str | None) -> dict:
    scheme, _, token = (authorization or "").partition(" ")
    user = USERS.get(token) if scheme.lower() == "bearer" else None
    if user is None:
        raise Auth.exceptions.HTTPException(status_code=401, detail="invalid or missing token")
    return {**user, "groups": ["customers"]}


@auth.on
async def same_tenant(ctx: Auth.types.AuthContext, value: dict) -> Auth.types.FilterType:
    tenant = ctx.user["tenant"]
    metadata = value.get("metadata") if isinstance(value, dict) else None
    if isinstance(metadata, dict):
        metadata["tenant"] = tenant
    return {"tenant": tenant}
