"""Human approval before irreversible calls: request a record, interrupt, then honour the decision.

Split into two nodes on purpose. `request_approval` creates the pending record (so operators see it
in GET /approvals) and checkpoints its id; `await_approval` only interrupts. A resume re-runs
`await_approval` from the top, so the record is never created twice. The tool then runs in a later
node with the approval id; the MCP gate spends that id once, and `executed` in state records the
call, so a retry after a crash or a second resume cannot execute twice.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from interlock.graphs.state import InterlockState
from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger("interlock.graphs.approval")


class ResumeDecision(BaseModel):
    """What an operator sends back: `{"decision": "approve"|"reject"|"edit", "args": {...}, "reason": "..."}`."""

    model_config = ConfigDict(extra="ignore")
    decision: Literal["approve", "reject", "edit"]
    args: dict[str, Any] | None = None
    reason: str | None = Field(default=None, max_length=2000)
    by: str | None = Field(default=None, max_length=200)

    @classmethod
    def parse(cls, value: Any) -> ResumeDecision:
        if isinstance(value, str):
            value = {"decision": value}
        if isinstance(value, dict) and isinstance(value.get("decisions"), list) and value["decisions"]:
            value = value["decisions"][0]  # Agent Chat UI's HITL shape
        if isinstance(value, dict) and value.get("type") and "decision" not in value:
            value = {**value, "decision": value["type"]}
        decision = cls.model_validate(value)
        if decision.decision == "edit" and not decision.args:
            raise ValueError("an edit needs the edited 'args'")
        return decision


def approval_store() -> Any:
    from interlock.tools.approvals import ApprovalStore

    return ApprovalStore()


def _reason(call: dict[str, Any]) -> str:
    if "approval:tainted_run" in (call.get("policy_reasons") or []):
        return f"{call['tool']} changes data after untrusted content entered this conversation"
    if call.get("risk") == "destructive":
        return f"{call['tool']} cannot be undone; an operator must approve this exact call"
    return f"{call['tool']} changes data after untrusted content entered this conversation"


async def request_approval(state: InterlockState, config: RunnableConfig) -> dict[str, Any]:
    pending = state.get("pending_approval") or {}
    if pending.get("approval_id"):
        return {}
    principal = state.get("principal") or {}
    configurable = config.get("configurable") or {}
    store = approval_store()
    try:
        record = await store.request(
            tool=pending["tool"], server=pending.get("server") or "unknown", args=pending.get("args") or {},
            principal=principal.get("sub", ""), tenant=state.get("tenant", ""),
            thread_id=configurable.get("thread_id"), run_id=configurable.get("run_id"),
            risk=pending.get("risk", "destructive"), reason=_reason(pending))
    finally:
        await store.close()
    return {"pending_approval": {**pending, "approval_id": record.id, "reason": _reason(pending)}}


def await_approval(state: InterlockState) -> dict[str, Any]:
    pending = dict(state.get("pending_approval") or {})
    value = {
        "type": "approval",
        "approval_id": pending.get("approval_id"),
        "tool": pending.get("tool"),
        "server": pending.get("server"),
        "args": pending.get("args"),
        "requester": (state.get("principal") or {}).get("sub"),
        "tenant": state.get("tenant"),
        "risk": pending.get("risk"),
        "reason": pending.get("reason"),
        "resume_with": {"decision": "approve | reject | edit", "args": "{... only for edit}", "reason": "..."},
    }
    error = None
    while True:
        raw = interrupt({**value, "error": error} if error else value)
        try:
            decision = ResumeDecision.parse(raw)
            break
        except (ValidationError, ValueError, TypeError) as exc:
            # Bad operator input: ask again with the reason instead of crashing the run.
            error = f"invalid resume value: {str(exc).splitlines()[0][:200]}"
            log.warning("approval %s: %s", pending.get("approval_id"), error)
    return {"approval_decision": decision.model_dump()}


async def decide_and_run(state: InterlockState, config: RunnableConfig, call_tool: Any) -> dict[str, Any]:
    """Record the operator's decision, then execute (approve/edit) or skip (reject) the call once."""
    pending = state.get("pending_approval") or {}
    decision = ResumeDecision.model_validate(state.get("approval_decision") or {"decision": "reject"})
    call_id = pending.get("call_id", "")
    done = (state.get("executed") or {}).get(call_id)
    if done is not None:  # idempotency record: this call already ran (or was rejected)
        return {"pending_approval": None, "approval_decision": None}
    store = approval_store()
    approval_id = pending.get("approval_id")
    args = dict(pending.get("args") or {})
    try:
        current = await store.get(approval_id) if approval_id else None
        if current is not None and (current.status == "expired" or (
                current.status == "pending" and current.expires_at.timestamp() <= time.time())):
            # Expired by policy (tools.yaml approval_ttl_s): whatever the resume says, nothing runs.
            message = ToolMessage(content=f"Not executed: the approval for {pending.get('tool')} expired before an"
                                  " operator decided. Ask again if it is still needed.",
                                  tool_call_id=call_id, name=pending.get("tool"), status="error")
            return {"messages": [message], "executed": {call_id: {"status": "expired"}},
                    "pending_approval": None, "approval_decision": None, "outcome": "expired"}
        if decision.decision == "reject":
            try:
                await store.decide(approval_id, "reject", decided_by=decision.by or "operator", reason=decision.reason)
            except Exception as exc:  # already decided by the operator endpoint is fine
                log.info("approval %s reject: %s", approval_id, exc)
            message = ToolMessage(content=f"Not executed: the operator rejected {pending.get('tool')}"
                                  + (f" ({decision.reason})" if decision.reason else "") + ".",
                                  tool_call_id=call_id, name=pending.get("tool"), status="error")
            return {"messages": [message], "executed": {call_id: {"status": "rejected"}},
                    "pending_approval": None, "approval_decision": None, "outcome": "rejected"}
        if decision.decision == "edit" and decision.args is not None:
            args = dict(decision.args)
        try:
            await store.decide(approval_id, "approve", decided_by=decision.by or "operator", reason=decision.reason,
                               args=args if decision.decision == "edit" else None)
        except Exception as exc:
            current = await store.get(approval_id)
            status = getattr(current, "status", None)
            if status == "rejected":
                return {"messages": [ToolMessage(content="Not executed: the operator rejected this call.",
                                                 tool_call_id=call_id, name=pending.get("tool"), status="error")],
                        "executed": {call_id: {"status": "rejected"}}, "pending_approval": None,
                        "approval_decision": None, "outcome": "rejected"}
            if status not in ("approved", "consumed"):
                raise
            log.info("approval %s already %s (%s)", approval_id, status, type(exc).__name__)
            args = dict(getattr(current, "args", args) or args)
    finally:
        await store.close()
    result = await call_tool(pending.get("tool"), args, approval_id, call_id)
    return {**result, "pending_approval": None, "approval_decision": None}
