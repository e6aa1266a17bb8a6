"""A langgraph_sdk.Auth hook with two tenants, each with users and an operator (`approvals:decide`).

Every resource is scoped to the caller's tenant: the handler stamps `metadata.tenant` on what is created and
returns `{"tenant": ...}` as the filter; store namespaces are prefixed with the tenant.
"""

from __future__ import annotations

from langgraph_sdk import Auth

auth = Auth()
OPERATOR = ["approvals:decide"]
# token -> (identity, tenant, permissions)
USERS = {
    "acme-ann": ("ann@acme", "acme", []),
    "acme-bob": ("bob@acme", "acme", []),
    "acme-olga": ("olga@acme", "acme", OPERATOR),
    "acme-otto": ("otto@acme", "acme", OPERATOR),
    "globex-gus": ("gus@globex", "globex", []),
    "globex-oscar": ("oscar@globex", "globex", OPERATOR),
}


@auth.authenticate
async def authenticate(authorization: str | None) -> Auth.types.MinimalUserDict:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or token not in USERS:
        raise Auth.exceptions.HTTPException(status_code=401, detail="invalid or missing token")
    identity, tenant, permissions = USERS[token]
    return {"identity": identity, "tenant": tenant, "permissions": list(permissions)}  # type: ignore[typeddict-item]


@auth.on
async def same_tenant(ctx: Auth.types.AuthContext, value: dict) -> Auth.types.FilterType:
    tenant = ctx.user["tenant"]
    metadata = value.get("metadata") if isinstance(value, dict) else None
    if isinstance(metadata, dict):
        metadata["tenant"] = tenant
    return {"tenant": tenant}


@auth.on.store
async def tenant_namespace(ctx: Auth.types.AuthContext, value: dict) -> None:
    namespace = list(value.get("namespace") or [])
    if not namespace or namespace[0] != ctx.user["tenant"]:
        value["namespace"] = [ctx.user["tenant"], *namespace]
