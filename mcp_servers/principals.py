"""Who is calling an MCP server: token verification, tenant binding and per-tool scope checks.

The principal (sub, tenant, scopes, bound customer) comes ONLY from a verified token, never from tool arguments or headers:

- Streamable HTTP: the `Authorization: Bearer` token, verified by FastMCP's auth provider (issuer, audience =
  this server's canonical URL, expiry, signature). A token below the floor scope gets HTTP 403
  insufficient_scope; a bad token HTTP 401.
- stdio and in-process: FastMCP skips every auth check there, so this module verifies the token itself with
  the same verifier: from the request `_meta["io.interlock/token"]`, else `$INTERLOCK_MCP_TOKEN` (the Claude
  Desktop profile: credentials from the environment). No token -> every call is refused.

Verifier configuration (environment):
    INTERLOCK_ISSUER        expected `iss` (default http://127.0.0.1:2024, Interlock's dev issuer)
    INTERLOCK_JWKS_URI      verify with this JWKS (graph server's /.well-known/jwks.json or an external OIDC
                            provider's jwks_uri); unset -> the dev issuer's public key under <home>/keys
    INTERLOCK_TENANT_CLAIM  claim holding the tenant (default tenant_id)
    INTERLOCK_CUSTOMER_CLAIM  claim binding an end user to one customer (default customer_id); see records.py

`TenantBinding` middleware enforces the floor scope and each tool's scope on every transport, filters
`tools/list`, and exposes the principal to tool code through `current_principal()`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import mcp_types as mt
from fastmcp.server.auth import AccessToken, RemoteAuthProvider
from fastmcp.server.auth.providers.jwt import JWTVerifier
from fastmcp.server.dependencies import get_access_token
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import Tool, ToolResult
from interlock.mcp_servers.denials import Denied
from interlock.tools import identity
from pydantic import BaseModel

from interlock.kernel.identity import META_TOKEN, Principal
from interlock.kernel.settings import get_settings

HTTP_TRANSPORTS = ("streamable-http", "sse")

_principal: ContextVar[Principal | None] = ContextVar("interlock_principal", default=None)


class OwnedRecord(BaseModel):
    """The customer-owned record a tool acts on: its table and the argument holding its id."""

    table: str
    argument: str
    noun: str


class ToolPolicy(BaseModel):
    scope: str
    destructive: bool = False
    read_only: bool = True
    record: OwnedRecord | None = None


def _environment_token() -> str | None:
    token = get_settings().mcp_token
    return token.get_secret_value() if token else None


def tenant_claim() -> str:
    return get_settings().tenant_claim


def customer_claim() -> str:
    return get_settings().customer_claim


class InterlockJWTVerifier(JWTVerifier):
    """JWTVerifier that also insists on `exp`, `sub` and a tenant claim (FastMCP accepts tokens without exp)."""

    async def load_access_token(self, token: str) -> AccessToken | None:
        access = await super().load_access_token(token)
        if access is None:
            return None
        claims = access.claims
        if not claims.get("exp") or not claims.get("sub") or not claims.get(tenant_claim()):
            return None
        return access


def build_verifier(audience: str) -> InterlockJWTVerifier:
    jwks_uri = get_settings().jwks_uri
    if jwks_uri:
        return InterlockJWTVerifier(jwks_uri=jwks_uri, issuer=identity.issuer(), audience=audience)
    return InterlockJWTVerifier(
        public_key=identity.public_key_pem(), issuer=identity.issuer(), audience=audience, algorithm="RS256"
    )


def build_auth(audience: str, floor_scope: str, verifier: JWTVerifier) -> RemoteAuthProvider:
    """RFC 9728 resource metadata + bearer verification; the floor scope yields HTTP 403 when missing."""
    base = audience.rsplit("/mcp", 1)[0] if audience.endswith("/mcp") else audience
    return RemoteAuthProvider(
        token_verifier=verifier,
        authorization_servers=[identity.issuer()],
        base_url=base,
        scopes_supported=[floor_scope],
        required_scopes=[floor_scope],
    )


def current_principal() -> Principal:
    """The verified caller of the tool being executed (set by TenantBinding)."""
    principal = _principal.get()
    if principal is None:
        raise Denied("unauthenticated", "no verified principal for this call")
    return principal


def request_meta(context: MiddlewareContext[Any]) -> dict[str, Any]:
    ctx = context.fastmcp_context
    rc = ctx.request_context if ctx is not None else None
    meta = getattr(rc, "meta", None) if rc is not None else None
    if meta is None:
        return {}
    if isinstance(meta, dict):
        return meta
    return meta.model_dump(by_alias=True) if hasattr(meta, "model_dump") else dict(meta)


def _transport(context: MiddlewareContext[Any]) -> str | None:
    ctx = context.fastmcp_context
    return ctx.transport if ctx is not None else None


class PrincipalResolver:
    """Turns the request's credentials into a Principal, on any transport."""

    def __init__(self, verifier: JWTVerifier) -> None:
        self.verifier = verifier
        self._cache: dict[str, AccessToken] = {}

    async def resolve(self, context: MiddlewareContext[Any]) -> Principal:
        if _transport(context) in HTTP_TRANSPORTS:
            access = get_access_token()  # already verified by the HTTP auth layer
        else:
            token = request_meta(context).get(META_TOKEN) or _environment_token()
            if not token or not isinstance(token, str):
                raise Denied("unauthenticated", "no credentials: set INTERLOCK_MCP_TOKEN (interlock token mint)")
            access = await self._verify(token)
        if access is None:
            raise Denied("unauthenticated", "invalid, expired or foreign token")
        claims = access.claims
        customer = claims.get(customer_claim())
        # A present but unusable binding (blank, not a string) must not read as "no binding": that could be staff.
        if customer is not None and (not isinstance(customer, str) or not 0 < len(customer.strip()) <= 100):
            raise Denied("unauthenticated", f"invalid {customer_claim()} claim")
        return Principal(sub=str(claims["sub"]), tenant=str(claims[tenant_claim()]), scopes=list(access.scopes),
                         customer_id=customer)

    async def _verify(self, token: str) -> AccessToken | None:
        access = self._cache.get(token)
        if access is None:
            access = await self.verifier.verify_token(token)
            if access is None:
                return None
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[token] = access
        if not access.expires_at or access.expires_at <= time.time():
            self._cache.pop(token, None)
            return None
        return access


class TenantBinding(Middleware):
    """Binds each request to its verified principal and enforces floor and per-tool scopes everywhere."""

    def __init__(self, resolver: PrincipalResolver, floor_scope: str, policies: dict[str, ToolPolicy]) -> None:
        self.resolver = resolver
        self.floor = floor_scope
        self.policies = policies

    async def _principal(self, context: MiddlewareContext[Any]) -> Principal:
        principal = await self.resolver.resolve(context)
        if not principal.has(self.floor):
            raise Denied("insufficient_scope", f"insufficient scope (required: {self.floor})")
        return principal

    async def on_list_tools(
        self, context: MiddlewareContext[mt.ListToolsRequest], call_next: CallNext[mt.ListToolsRequest, Sequence[Tool]]
    ) -> Sequence[Tool]:
        principal = await self._principal(context)
        tools = await call_next(context)
        return [t for t in tools if t.name in self.policies and principal.has(self.policies[t.name].scope)]

    async def on_call_tool(
        self, context: MiddlewareContext[mt.CallToolRequestParams], call_next: CallNext[mt.CallToolRequestParams, ToolResult]
    ) -> ToolResult:
        principal = await self._principal(context)
        policy = self.policies.get(context.message.name)
        if policy is None:
            raise Denied("unknown_tool", f"unknown tool: {context.message.name!r}")
        if not principal.has(policy.scope):
            # Same wording as an unknown tool for hidden tools would hide the scope to step up to; we name it.
            raise Denied("insufficient_scope", f"insufficient scope (required: {policy.scope})")
        token = _principal.set(principal)
        try:
            return await call_next(context)
        finally:
            _principal.reset(token)
