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

Where tools.yaml sets `self_confirm: true` for the tool and the client declared the MCP elicitation capability,
the gate asks the user to confirm the exact call through elicitation instead; a confirmation is recorded as an
approval decided by that user (requested, approved, consumed in the audit trail), a refusal denies the call.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from typing import Any

import mcp_types as mt
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import InputRequiredToolResult, ToolResult
from interlock.mcp_servers.denials import Denied
from interlock.mcp_servers.principals import ToolPolicy, current_principal, request_meta
from interlock.tools.approvals import ApprovalError, ApprovalStore, args_hash, self_confirm_allowed

from interlock.kernel.identity import META_APPROVAL

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
            ask = await self._spend_matching(name, args, principal.sub, principal.tenant, context)
            return ask if ask is not None else await call_next(context)
        if not approval_id or not isinstance(approval_id, str):
            raise Denied("approval_required", f"{name} is irreversible and needs an operator approval")
        try:
            await self.store.consume(approval_id, name, args, principal.sub, principal.tenant, server=self.server)
        except ApprovalError as exc:
            raise Denied(f"approval_{exc.code}", f"approval refused for {name}: {exc}") from None
        return await call_next(context)

    async def _spend_matching(
        self, name: str, args: dict[str, Any], sub: str, tenant: str, context: MiddlewareContext[Any],
    ) -> ToolResult | None:
        """Spend an approved approval for exactly this call (None: go on), ask the user to confirm it where policy
        allows (an input-required result on 2026-era connections), or ask an operator and refuse."""
        for approval in await self.store.find_call(name, self.server, args, sub, tenant, "approved"):
            try:
                await self.store.consume(approval.id, name, args, sub, tenant, server=self.server)
                _note(approval.id)
                return None
            except ApprovalError:
                continue  # spent concurrently by an identical call: try the next one, else ask anew
        ctx = context.fastmcp_context
        if ctx is not None and self_confirm_allowed(name) and _can_elicit(ctx):
            question = (f"{name} cannot be undone. Run it with exactly these arguments? "
                        f"{json.dumps(args, sort_keys=True, ensure_ascii=False)[:2000]}")
            if ctx._is_modern_protocol():
                answer = _confirmed(_input_response(ctx), args)
                if answer is None:  # first round: ask, bound to this exact call
                    return InputRequiredToolResult(mt.InputRequiredResult(
                        input_requests={CONFIRM_KEY: mt.ElicitRequest(params=mt.ElicitRequestFormParams(
                            message=question, requested_schema=CONFIRM_SCHEMA))},
                        request_state=args_hash(args)))
            else:
                try:
                    reply = await ctx.elicit(question, response_type=bool, response_title="Confirm")
                except Exception:  # noqa: BLE001 - the client failed to answer: not confirmed
                    reply = None
                answer = getattr(reply, "action", None) == "accept" and getattr(reply, "data", None) is True
            await self._record_self_confirmation(name, args, sub, tenant, answer)
            return None
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

    async def _record_self_confirmation(
        self, name: str, args: dict[str, Any], sub: str, tenant: str, confirmed: bool,
    ) -> None:
        """The user's own answer, kept like an operator's: requested, approved or rejected by them, consumed."""
        approval = await self.store.request(
            tool=name, server=self.server, args=args, principal=sub, tenant=tenant, risk="destructive",
            reason=f"{name} cannot be undone; policy lets {sub} confirm it through their MCP client")
        _note(approval.id)
        await self.store.decide(approval.id, "approve" if confirmed else "reject", decided_by=sub,
                                reason="confirmed by the requester (MCP elicitation)" if confirmed
                                else "not confirmed by the requester (MCP elicitation)")
        if not confirmed:
            raise Denied("approval_declined", f"{name} was not run: you did not confirm it")
        try:
            await self.store.consume(approval.id, name, args, sub, tenant, server=self.server)
        except ApprovalError as exc:
            raise Denied(f"approval_{exc.code}", f"approval refused for {name}: {exc}") from None


CONFIRM_KEY = "interlock_confirm"
CONFIRM_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"value": {"type": "boolean", "title": "Confirm"}}, "required": ["value"]}


def _can_elicit(ctx: Any) -> bool:
    """Did the client declare the MCP elicitation capability?"""
    try:
        return bool(ctx.session.check_client_capability(mt.ClientCapabilities(elicitation=mt.ElicitationCapability())))
    except Exception:  # noqa: BLE001 - no session (in-memory, background task): no elicitation
        return False


def _input_response(ctx: Any) -> tuple[Any, str | None]:
    try:
        responses = ctx.input_responses or {}
        return responses.get(CONFIRM_KEY), ctx.request_state
    except Exception:  # noqa: BLE001 - a malformed retry is a first round
        return None, None


def _confirmed(response: tuple[Any, str | None], args: dict[str, Any]) -> bool | None:
    """The answer carried by a 2026-era retry (None: nothing answered yet, so ask). The sealed request state
    binds the answer to the arguments it was asked about."""
    reply, state = response
    if reply is None or state != args_hash(args):
        return None
    content = getattr(reply, "content", None) or {}
    return getattr(reply, "action", None) == "accept" and content.get("value") is True
