"""The approval gate: a destructive tool runs only by spending an operator approval bound to this exact call.

Runs as FastMCP middleware, so it holds on every transport (FastMCP skips auth on stdio; this does not).
The approval id travels in the request `_meta["io.interlock/approval_id"]`, which a model cannot fill in
through tool arguments. `ApprovalStore.consume` checks status, expiry, tool, server, argument hash,
principal and tenant and marks the record consumed in one atomic UPDATE, so it works once.
An approval is spent even if the business rule then refuses the action: fail closed, ask again.
"""

from __future__ import annotations

from typing import Any

import mcp_types as mt
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import ToolResult
from interlock.mcp_servers.denials import Denied
from interlock.mcp_servers.principals import ToolPolicy, current_principal, request_meta
from interlock.tools.approvals import ApprovalError, ApprovalStore

from interlock.kernel.identity import META_APPROVAL


class ApprovalGate(Middleware):
    def __init__(self, server: str, policies: dict[str, ToolPolicy], store: ApprovalStore) -> None:
        self.server = server
        self.policies = policies
        self.store = store

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        name = context.message.name
        policy = self.policies.get(name)
        if policy is None or not policy.destructive:
            return await call_next(context)
        approval_id: Any = request_meta(context).get(META_APPROVAL)
        if not approval_id or not isinstance(approval_id, str):
            raise Denied(
                "approval_required",
                f"{name} is irreversible and needs an operator approval; none was provided",
            )
        principal = current_principal()
        try:
            await self.store.consume(
                approval_id, name, context.message.arguments or {}, principal.sub, principal.tenant,
                server=self.server,
            )
        except ApprovalError as exc:
            raise Denied(f"approval_{exc.code}", f"approval refused for {name}: {exc}") from None
        return await call_next(context)
