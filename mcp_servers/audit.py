"""Audit middleware: one append-only row per `tools/call`, allowed, failed or denied, and one per request the
HTTP auth layer refuses (`HttpDenialAudit`).

Outermost layer, so rate-limit, scope and approval denials are recorded too. Stores the argument hash and
an outcome code, never raw arguments or error text. The trace id comes from `_meta["io.interlock/trace_id"]`
or a W3C `traceparent` in `_meta`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import mcp_types as mt
from fastmcp.exceptions import ToolError
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import ToolResult
from interlock.mcp_servers.approvals import SPENT_APPROVAL
from interlock.mcp_servers.denials import Denied
from interlock.mcp_servers.principals import PrincipalResolver, request_meta
from interlock.tools.approvals import args_hash
from interlock.tools.audit import AuditLog, AuditRecord

from interlock.kernel.identity import META_APPROVAL, META_PRECHECK, META_TRACE

log = logging.getLogger(__name__)


def _trace_id(meta: dict[str, Any]) -> str | None:
    trace = meta.get(META_TRACE)
    if isinstance(trace, str):
        return trace[:128]
    parent = meta.get("traceparent")
    if isinstance(parent, str) and parent.count("-") == 3:
        return parent.split("-")[1][:64]
    return None


class AuditTrail(Middleware):
    def __init__(self, server: str, resolver: PrincipalResolver, log_store: AuditLog) -> None:
        self.server = server
        self.resolver = resolver
        self.store = log_store

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        started = time.perf_counter()
        meta = request_meta(context)
        outcome, reason = "ok", None
        spent: dict[str, str] = {}
        token = SPENT_APPROVAL.set(spent)  # the gate fills in an approval it matched without `_meta`
        try:
            result = await call_next(context)
            if getattr(result, "is_error", False):
                outcome, reason = "error", "tool_error"
            if meta.get(META_PRECHECK) is True:  # nothing ran: the row says whether the server would accept it
                passed = (getattr(result, "meta", None) or {}).get(META_PRECHECK) == "passed"
                reason = "precheck_passed" if passed else "precheck_refused"
            return result
        except Denied as exc:
            outcome, reason = "denied", exc.code
            raise
        except ToolError:
            outcome, reason = "error", "precheck_refused" if meta.get(META_PRECHECK) is True else "tool_error"
            raise
        except Exception as exc:
            outcome, reason = "error", type(exc).__name__
            raise
        finally:
            SPENT_APPROVAL.reset(token)
            if spent.get("approval_id") and not meta.get(META_APPROVAL):
                meta = {**meta, META_APPROVAL: spent["approval_id"]}
            await self._record(context, meta, outcome, reason, (time.perf_counter() - started) * 1000)

    async def _record(
        self, context: MiddlewareContext[Any], meta: dict[str, Any], outcome: str, reason: str | None, ms: float
    ) -> None:
        try:
            principal = await self.resolver.resolve(context)
            sub, tenant, customer = principal.sub, principal.tenant, principal.customer_id
        except Denied:
            sub = tenant = customer = None
        approval = meta.get(META_APPROVAL)
        ctx = context.fastmcp_context
        try:
            await self.store.append(AuditRecord(
                principal=sub, tenant=tenant, server=self.server, tool=context.message.name[:200],
                args_hash=args_hash(context.message.arguments or {}),
                approval_id=approval[:100] if isinstance(approval, str) else None,
                outcome=outcome, reason=reason, latency_ms=round(ms, 3), trace_id=_trace_id(meta),
                transport=(ctx.transport if ctx is not None else None) or "memory", customer_id=customer,
            ))
        except Exception as exc:  # the call already happened; losing the row must be loud, not fatal
            log.error("audit append failed for %s.%s: %s", self.server, context.message.name, type(exc).__name__)


class HttpDenialAudit:
    """ASGI middleware: audits requests the HTTP auth layer refuses (401 bad token, 403 below the floor).

    Those never reach the MCP middleware chain. The tool name is read from the (small) JSON-RPC body when it
    is a `tools/call`; the principal is unknown because the token was not accepted.
    """

    def __init__(self, app: Any, server: str, log_store: AuditLog, max_body: int = 65536) -> None:
        self.app = app
        self.server = server
        self.store = log_store
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        # Buffer the (small) JSON-RPC body up front: the auth layer answers 401/403 without reading it.
        chunks: list[dict] = []
        size, more = 0, True
        while more and size <= self.max_body:
            message = await receive()
            chunks.append(message)
            if message.get("type") != "http.request":
                break
            size += len(message.get("body", b""))
            more = bool(message.get("more_body"))
        body = b"".join(m.get("body", b"") for m in chunks if m.get("type") == "http.request")
        status: dict[str, int] = {}
        started = time.perf_counter()

        async def replay() -> dict:
            return chunks.pop(0) if chunks else await receive()

        async def tapped_send(message: dict) -> None:
            if message.get("type") == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        await self.app(scope, replay, tapped_send)
        if status.get("code") in (401, 403):
            await self._record(body if size <= self.max_body else b"", status["code"],
                               (time.perf_counter() - started) * 1000)

    async def _record(self, body: bytes, code: int, ms: float) -> None:
        tool, arguments = "-", None
        try:
            message = json.loads(body or b"{}")
            if isinstance(message, dict) and message.get("method") == "tools/call":
                params = message.get("params") or {}
                tool = str(params.get("name") or "-")[:200]
                arguments = params.get("arguments") if isinstance(params.get("arguments"), dict) else None
            elif isinstance(message, dict) and isinstance(message.get("method"), str):
                tool = f"({message['method'][:100]})"
        except ValueError:
            pass
        try:
            await self.store.append(AuditRecord(
                server=self.server, tool=tool, args_hash=args_hash(arguments) if arguments is not None else None,
                outcome="denied", reason="invalid_token" if code == 401 else "insufficient_scope",
                latency_ms=round(ms, 3), transport="streamable-http"))
        except Exception as exc:
            log.error("audit append failed for an HTTP denial on %s: %s", self.server, type(exc).__name__)
