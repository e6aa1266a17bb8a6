"""The approval gate: a destructive tool runs only by spending an operator approval bound to this exact call.

Runs as FastMCP middleware, so it holds on every transport (FastMCP skips auth on stdio; this does not).
The approval id travels in the request `_meta["io.interlock/approval_id"]`, which a model cannot fill in
through tool arguments. `ApprovalStore.consume` checks status, expiry, tool, server, argument hash,
principal and tenant and marks the record consumed in one atomic UPDATE, so it works once.
An approval is spent even if the business rule then refuses the action: fail closed, ask again.

A client that cannot carry an approval id (a desktop assistant over stdio) still gets an operator's decision:
its call without `_meta` creates a pending approval in the tenant's operator inbox (or names the one already
waiting) and fails with a tool error that names it. Once an operator approves, the same principal's identical
call (same tool, server and argument hash) spends that approval; different arguments need a new one.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import mcp_types as mt
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import ToolResult
from interlock.mcp_servers.denials import Denied
from interlock.mcp_servers.principals import META_APPROVAL, ToolPolicy, current_principal, request_meta
from interlock.tools.approvals import ApprovalError, ApprovalStore

# The audit trail's holder for the approval a call spent or is waiting on when it came without `_meta`.
SPENT_APPROVAL: ContextVar[dict[str, str] | None] = ContextVar("interlock_spent_approval", default=None)


def _note(approval_id: str) -> None:
    holder = SPENT_APPROVAL.get()
    if holder is not None:
        holder["approval_id"] = approval_id


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
        principal = current_principal()
        args = context.message.arguments or {}
        if approval_id is None:
            await self._spend_matching(name, args, principal.sub, principal.tenant)
            return await call_next(context)
        if not approval_id or not isinstance(approval_id, str):
            raise Denied("approval_required", f"{name} is irreversible and needs an operator approval")
        try:
            await self.store.consume(approval_id, name, args, principal.sub, principal.tenant, server=self.server)
        except ApprovalError as exc:
            raise Denied(f"approval_{exc.code}", f"approval refused for {name}: {exc}") from None
        return await call_next(context)

    async def _spend_matching(self, name: str, args: dict[str, Any], sub: str, tenant: str) -> None:
        """Spend an approved approval for exactly this call, or ask an operator for one and refuse."""
        for approval in await self.store.find_call(name, self.server, args, sub, tenant, "approved"):
            try:
                await self.store.consume(approval.id, name, args, sub, tenant, server=self.server)
                _note(approval.id)
                return
            except ApprovalError:
                continue  # spent concurrently by an identical call: try the next one, else ask anew
        waiting = await self.store.find_call(name, self.server, args, sub, tenant, "pending")
        approval = waiting[0] if waiting else await self.store.request(
            tool=name, server=self.server, args=args, principal=sub, tenant=tenant, risk="destructive",
            reason=f"{name} cannot be undone; {sub} asked for it from an MCP client, an operator must approve it",
        )
        _note(approval.id)
        raise Denied(
            "approval_pending",
            f"{name} is irreversible and needs an operator approval: approval {approval.id} is pending."
            " Retry the identical call (same arguments) once an operator has approved it;"
            " different arguments need a new approval.",
        )
