"""Builds and runs one business system's MCP server with Interlock's governance around every tool.

Each system module declares its tools on a `System` (`@system.read(...)` / `@system.write(...)`), which fixes
their annotations, tags and scope in one place:

- reads: scope `<system>:read`, readOnlyHint true, openWorldHint false;
- writes: scope `<system>:write`, readOnlyHint false, destructiveHint and idempotentHint explicit,
  openWorldHint false; irreversible writes (`destructive=True`) also carry the tag `destructive` and pass
  the approval gate.

`build_server(system)` wires, outermost first: audit -> rate limits -> tenant binding (floor + tool scopes)
-> record ownership (a write's record must be the caller's customer's) -> approval gate -> tool. Error details
are masked (internal exception text never reaches the client; `ToolError`/`Denied` messages are deliberate and
shown). `run(...)` serves stdio or Streamable HTTP with Host/Origin protection on.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import uvicorn
from fastmcp import FastMCP
from fastmcp.server.auth import require_scopes
from fastmcp.server.lifespan import lifespan
from interlock.mcp_servers.approvals import ApprovalGate
from interlock.mcp_servers.audit import AuditTrail, HttpDenialAudit
from interlock.mcp_servers.principals import (
    OwnedRecord,
    PrincipalResolver,
    TenantBinding,
    ToolPolicy,
    build_auth,
    build_verifier,
)
from interlock.mcp_servers.rate_limits import RateLimits
from interlock.mcp_servers.records import RecordOwnership
from interlock.tools import endpoints
from interlock.tools.approvals import ApprovalStore
from interlock.tools.audit import AuditLog
from mcp.types import ToolAnnotations
from starlette.middleware import Middleware

Transport = Literal["stdio", "http"]


class System:
    """A business system's tool catalogue and policies."""

    def __init__(self, name: str, instructions: str) -> None:
        self.name = endpoints.check_system(name)
        self.instructions = instructions
        self.policies: dict[str, ToolPolicy] = {}
        self._tools: list[tuple[Callable[..., Any], ToolAnnotations, set[str], str]] = []

    @property
    def read_scope(self) -> str:
        return f"{self.name}:read"

    @property
    def write_scope(self) -> str:
        return f"{self.name}:write"

    def read(self, title: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            annotations = ToolAnnotations(title=title, read_only_hint=True, open_world_hint=False)
            self._add(fn, annotations, {"read"}, ToolPolicy(scope=self.read_scope))
            return fn

        return register

    def write(
        self, title: str, *, destructive: bool, idempotent: bool, record: tuple[str, str, str] | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """`record` = (table, argument, noun) of the customer-owned record the write changes, checked for the
        caller's customer binding before the approval gate."""
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            annotations = ToolAnnotations(
                title=title, read_only_hint=False, destructive_hint=destructive, idempotent_hint=idempotent,
                open_world_hint=False,
            )
            tags = {"write", "destructive"} if destructive else {"write"}
            owned = OwnedRecord(table=record[0], argument=record[1], noun=record[2]) if record else None
            self._add(fn, annotations, tags, ToolPolicy(scope=self.write_scope, destructive=destructive,
                                                         read_only=False, record=owned))
            return fn

        return register

    def _add(self, fn: Callable[..., Any], annotations: ToolAnnotations, tags: set[str], policy: ToolPolicy) -> None:
        if fn.__name__ in self.policies:
            raise ValueError(f"duplicate tool {fn.__name__} in {self.name}")
        self.policies[fn.__name__] = policy
        self._tools.append((fn, annotations, tags, policy.scope))


def build_server(
    system: System,
    *,
    audience: str | None = None,
    approvals: ApprovalStore | None = None,
    audit: AuditLog | None = None,
    calls_per_s: float | None = None,
) -> FastMCP:
    """A FastMCP server for `system`; `audience` defaults to the system's canonical URL."""
    audience = audience or endpoints.canonical_url(system.name)
    verifier = build_verifier(audience)
    resolver = PrincipalResolver(verifier)
    approvals = approvals or ApprovalStore()
    audit = audit or AuditLog()

    @lifespan
    async def close_stores(_server: FastMCP) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}
        finally:
            await approvals.close()
            await audit.close()

    server = FastMCP(
        system.name,
        instructions=system.instructions,
        auth=build_auth(audience, system.read_scope, verifier),
        mask_error_details=True,
        lifespan=close_stores,
        middleware=[
            AuditTrail(system.name, resolver, audit),
            RateLimits(resolver, calls_per_s=calls_per_s),
            TenantBinding(resolver, system.read_scope, system.policies),
            RecordOwnership(system.name, system.policies),
            ApprovalGate(system.name, system.policies, approvals),
        ],
    )
    for fn, hints, tags, scope in system._tools:
        server.tool(
            fn, annotations=hints, tags=tags, auth=require_scopes(scope),
            meta={"interlock": {"scope": scope, "system": system.name}},
        )
    return server


def load_system(name: str) -> System:
    """The `System` declared by `mcp_servers/<name>.py`."""
    endpoints.check_system(name)
    return importlib.import_module(f"interlock.mcp_servers.{name}").system


def build_app(system: System, *, audience: str | None = None, **build_kwargs: Any) -> Any:
    """The Streamable HTTP ASGI app: Host/Origin protection on, HTTP auth denials audited."""
    audit = build_kwargs.pop("audit", None) or AuditLog()
    server = build_server(system, audience=audience, audit=audit, **build_kwargs)
    return server.http_app(
        path=endpoints.PATH, host_origin_protection=True,
        middleware=[Middleware(HttpDenialAudit, server=system.name, log_store=audit)],
    )


def run(system: System, transport: Transport = "http", port: int | None = None) -> None:
    """Serve until interrupted. HTTP binds the host of the canonical URL (127.0.0.1 by default)."""
    audience = endpoints.canonical_url(system.name, port)
    if transport == "stdio":
        build_server(system, audience=audience).run(transport="stdio", show_banner=False)
        return
    app = build_app(system, audience=audience)
    uvicorn.run(app, host=endpoints.bind_host(), port=port or endpoints.port_of(audience), log_level="warning",
                lifespan="on", timeout_graceful_shutdown=2)
