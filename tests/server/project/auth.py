"""A langgraph_sdk.Auth hook for the auth tests: bearer tokens name the user; threads are owner-scoped."""

from __future__ import annotations

from langgraph_sdk import Auth

auth = Auth()
USERS = {"token-ann": "ann", "token-bob": "bob"}


@auth.authenticate
async def authenticate(authorization: str | None) -> Auth.types.MinimalUserDict:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or token not in USERS:
        raise Auth.exceptions.HTTPException(status_code=401, detail="invalid or missing token")
    return {"identity": USERS[token], "permissions": ["threads:write"]}


@auth.on.threads
async def owner_only(ctx: Auth.types.AuthContext, value: dict) -> Auth.types.FilterType:
    metadata = value.setdefault("metadata", {}) if isinstance(value, dict) else {}
    if isinstance(metadata, dict):
        metadata["owner"] = ctx.user.identity
    return {"owner": ctx.user.identity}


@auth.on.store
async def own_namespace(ctx: Auth.types.AuthContext, value: dict) -> None:
    namespace = list(value.get("namespace") or [])
    if not namespace or namespace[0] != ctx.user.identity:
        value["namespace"] = [ctx.user.identity, *namespace]
