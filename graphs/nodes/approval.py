"""Human approval before irreversible calls: request a record, interrupt, then honour the decision.

Split into two nodes on purpose. `request_approval` creates the pending record (so operators see it
in GET /approvals) and checkpoints its id; `await_approval` only interrupts. A resume re-runs
`await_approval` from the top, so the record is never created twice. The tool then runs in a later
node with the approval id; the MCP gate spends that id once, and `executed` in state records the
call, so a retry after a crash or a second resume cannot execute twice.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Literal

from interlock.graphs import state as run_state
from interlock.graphs.state import InterlockState
from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

log = logging.getLogger("interlock.graphs.approval")

DECISIONS = ["approve", "edit", "reject"]


class ResumeDecision(BaseModel):
    """What an operator sends back: `{"decision": "approve"|"reject"|"edit", "args": {...}, "reason": "..."}`.

    Any identity in the value (`by`, ...) is ignored: who decided is the resuming run's authenticated principal
    (`decider`), which the server puts in the run's config."""

    model_config = ConfigDict(extra="ignore")
    decision: Literal["approve", "reject", "edit"]
    args: dict[str, Any] | None = None
    reason: str | None = Field(default=None, max_length=2000)
    # Set by `parse` when the value came in a chat client's shape (HITL decisions, HumanResponse): the
    # interrupt offered such clients controls only for calls a chat user may decide. Never read from the body.
    _via_chat: bool = PrivateAttr(default=False)

    @property
    def via_chat(self) -> bool:
        return self._via_chat

    @classmethod
    def parse(cls, value: Any, tool: str | None = None) -> ResumeDecision:
        """Accepts Interlock's own shape, Agent Chat UI's HITL `{"decisions": [...]}` and the older
        `HumanResponse` list (`[{"type": "accept"|"edit"|"response"|"ignore", "args": ...}]`)."""
        if isinstance(value, str):
            value = {"decision": value}
        if isinstance(value, list) and value:
            value = _from_human_response(value[0])
        if isinstance(value, dict) and isinstance(value.get("decisions"), list) and value["decisions"]:
            value = _from_hitl_decision(value["decisions"][0], tool)
        if isinstance(value, dict) and value.get("type") and "decision" not in value:
            value = {**value, "decision": value["type"]}
        via_chat = isinstance(value, dict) and value.get("_chat") is True
        decision = cls.model_validate(value)
        decision._via_chat = via_chat
        if decision.decision == "edit" and not decision.args:
            raise ValueError("an edit needs the edited 'args'")
        return decision


TENANT_ARGS = ("tenant", "tenant_id")


def edit_problem(tool: str | None, original: dict[str, Any], edited: dict[str, Any],
                 input_schema: dict[str, Any] | None = None) -> str | None:
    """Why an operator's edit of a pending call is refused, or None. The tool stays the same (the approval is
    bound to it); the edited arguments must fit the tool's input schema (without one: only the arguments of
    the original call, with their JSON types), must not name another tenant, and must pass the tool's policy
    constraints. The MCP server still scopes the record to the caller's tenant when the call executes."""
    for arg in TENANT_ARGS:
        if arg in edited and edited.get(arg) != original.get(arg):
            return f"'{arg}' cannot be changed by an edit"
    if input_schema:
        from interlock.graphs.nodes.playbooks import validate_args

        problems = validate_args(dict(edited), input_schema)
        if problems:
            return "; ".join(problems)
    else:
        extra = sorted(set(edited) - set(original))
        if extra:
            return f"{tool} was not called with {extra}"
        for arg, value in edited.items():
            before = original[arg]
            numbers = isinstance(value, (int, float)) and isinstance(before, (int, float))
            if type(value) is not type(before) and not numbers:
                return f"'{arg}' must stay a {type(before).__name__}"
    from interlock.policies.loader import get_policies
    from interlock.policies.tool_rules import _check_constraint

    rule = get_policies().tools.tools.get(tool or "")
    for constraint in rule.constraints if rule else []:
        if constraint.ref is None:  # facts-based constraints are checked again when the call executes
            outcome = _check_constraint(constraint, edited, {})
            if outcome is not None and outcome[0] == "deny":
                return f"the policy for {tool} refuses it ({outcome[1]})"
    return None


def decider(config: RunnableConfig) -> str:
    """Who decided: the authenticated principal of the run that resumed the graph; without auth (local
    development) the configured local operator. Never a value from the resume body."""
    configurable = (config or {}).get("configurable") or {}
    user = configurable.get("langgraph_auth_user")
    identity = (user.get("identity") if isinstance(user, dict) else getattr(user, "identity", None)) if user else None
    if identity:
        return str(identity)
    from interlock.kernel.settings import get_settings

    return get_settings().local_operator


def _from_hitl_decision(item: Any, tool: str | None) -> Any:
    """Agent Chat UI's Decision (src/components/thread/agent-inbox/types.ts): approve | reject{message} |
    edit{edited_action{name, args}}."""
    if not isinstance(item, dict):
        return item
    kind = item.get("type")
    if kind == "reject":
        return {"decision": "reject", "reason": item.get("message") or item.get("reason"), "_chat": True}
    if kind == "edit" and isinstance(item.get("edited_action"), dict):
        action = item["edited_action"]
        if tool is not None and action.get("name") not in (None, tool):
            raise ValueError(f"edited_action.name must be the pending tool '{tool}', not {action.get('name')!r}")
        return {"decision": "edit", "args": action.get("args"), "_chat": True}
    if kind in ("approve", "edit"):
        return {"decision": kind, "args": item.get("args"), "reason": item.get("reason"), "_chat": True}
    return item


def _from_human_response(item: Any) -> Any:
    """LangGraph's older HumanResponse, which earlier Agent Chat UI versions send as a one-element list."""
    if not isinstance(item, dict) or "decision" in item:
        return item
    kind, args = item.get("type"), item.get("args")
    if kind == "accept":
        return {"decision": "approve", "_chat": True}
    if kind == "edit" and isinstance(args, dict):
        return {"decision": "edit", "args": args.get("args"), "_chat": True}
    if kind in ("response", "ignore"):  # a reply or a dismissal never executes the call
        return {"decision": "reject", "reason": args if isinstance(args, str) else None, "_chat": True}
    return item


def pending_args(state: InterlockState, proposed: dict[str, Any], real: dict[str, Any]) -> tuple[dict[str, Any],
                                                                                                   str | None]:
    """(args kept in state, sealed real args) for a call that waits for a decision. Where the tenant stores no raw
    user input and the real call differs from the proposed one (a pseudonym was restored), state, the interrupt and
    the approval record keep the proposed form and the real arguments travel sealed with the vault key."""
    from interlock.policies.loader import get_policies
    from interlock.policies.pii import seal_text
    from interlock.tools.approvals import canonical_json

    if real == proposed or get_policies().pii.stores_raw_input(str(state.get("tenant") or "")):
        return real, None
    return proposed, seal_text(canonical_json(real))


def real_args(pending: dict[str, Any]) -> dict[str, Any]:
    """The exact arguments of the waiting call: unsealed in memory when they were sealed (for the approval's hash
    and the MCP call only; never written back to state)."""
    sealed = pending.get("sealed_args")
    if not sealed:
        return dict(pending.get("args") or {})
    from interlock.policies.pii import unseal_text

    return dict(json.loads(unseal_text(str(sealed))))


def shown_args(pending: dict[str, Any], state: InterlockState) -> dict[str, Any]:
    """The waiting call's arguments as people see them (interrupt, approval record): the user's own values masked,
    a third party's redacted, never a raw value the tenant does not store."""
    args = dict(pending.get("args") or {})
    if not pending.get("sealed_args"):
        return args
    from interlock.graphs.nodes.guards import render_pseudonyms
    from interlock.policies.pii import PiiVault

    vault = PiiVault.from_state(state.get("pii_vault"))

    def show(value: Any) -> Any:
        if isinstance(value, str):
            return render_pseudonyms(value, vault)
        if isinstance(value, dict):
            return {k: show(v) for k, v in value.items()}
        if isinstance(value, list):
            return [show(v) for v in value]
        return value

    return {k: show(v) for k, v in args.items()}


def merged_edit(shown: dict[str, Any], real: dict[str, Any], edited: dict[str, Any]) -> dict[str, Any]:
    """An edit of a call shown masked: an argument left as shown keeps its real value (the editor never saw it);
    an argument the editor changed is taken as written."""
    return {k: real[k] if k in real and k in shown and v == shown[k] else v for k, v in edited.items()}


def approval_store() -> Any:
    from interlock.tools.approvals import ApprovalStore

    return ApprovalStore()


def _reason(call: dict[str, Any]) -> str:
    reasons = call.get("policy_reasons") or []
    traced = sorted({r.split(":")[1] for r in reasons if r.startswith("provenance:") and r.count(":") >= 2})
    if traced and "approval:tainted_run" not in reasons and call.get("risk") != "destructive":
        # The arguments named here came from a tool result or retrieved text, or the model made them up.
        return (f"{call['tool']} would use {', '.join(traced)} that did not come from you (taken from untrusted "
                "tool output or retrieved text, or chosen by the assistant)")
    if "approval:tainted_run" in reasons:
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
        real = real_args(pending)
        record = await store.request(
            tool=pending["tool"], server=pending.get("server") or "unknown", args=shown_args(pending, state),
            digest_args=real if pending.get("sealed_args") else None,
            principal=principal.get("sub", ""), tenant=state.get("tenant", ""),
            thread_id=configurable.get("thread_id"), run_id=configurable.get("run_id"),
            risk=pending.get("risk", "destructive"), reason=_reason(pending))
    finally:
        await store.close()
    # `asked_at`: the wait for the decision starts here; `await_approval` books it as waiting, not working time.
    return {"pending_approval": {**pending, "approval_id": record.id, "reason": _reason(pending), "asked_at": run_state.clock()}}


def chat_may_decide(pending: dict[str, Any]) -> bool:
    """Whether the requesting chat user may decide this call themselves: only for tools policies/tools.yaml marks
    `decision: confirm` (never destructive ones). Everything else is the operators' (the approvals API), and the
    server refuses a chat user's resume of it, so the interrupt offers no control that would fail."""
    if pending.get("risk") == "destructive":
        return False
    from interlock.policies.loader import get_policies

    rule = get_policies().tools.tools.get(str(pending.get("tool") or ""))
    return rule is not None and rule.decision == "confirm"


def interrupt_value(pending: dict[str, Any], state: InterlockState) -> dict[str, Any]:
    """The approval interrupt: Interlock's fields (read by the approvals API, the CLI and the console) plus the
    HITL request Agent Chat UI renders with approve/edit/reject controls (`action_requests`/`review_configs`,
    src/components/thread/agent-inbox/types.ts). When only an operator may decide, `allowed_decisions` is empty,
    so the UI shows the call and the description but no control that would fail."""
    tool = pending.get("tool") or "unknown"
    may_decide = chat_may_decide(pending)
    args = shown_args(pending, state)
    description = (
        f"{pending.get('reason') or 'This call needs approval.'} "
        + ("Approve, edit or reject it here." if may_decide else
           f"An operator must decide (approval {pending.get('approval_id')}); this conversation continues "
           "once they have.")
    )
    review: dict[str, Any] = {"action_name": tool, "allowed_decisions": list(DECISIONS) if may_decide else []}
    if may_decide and isinstance(pending.get("input_schema"), dict):  # the schema serves the UI's edit form
        review["args_schema"] = pending["input_schema"]
    return {
        "type": "approval",
        "approval_id": pending.get("approval_id"),
        "tool": pending.get("tool"),
        "server": pending.get("server"),
        "args": args,
        # The user's own values show masked (the real call is sealed): an edit keeps an argument it leaves as shown.
        "args_masked": bool(pending.get("sealed_args")),
        "input_schema": pending.get("input_schema"),
        "requester": (state.get("principal") or {}).get("sub"),
        "tenant": state.get("tenant"),
        "risk": pending.get("risk"),
        "reason": pending.get("reason"),
        "decided_by": "requester_or_operator" if may_decide else "operator",
        "resume_with": {"decision": "approve | reject | edit", "args": "{... only for edit}", "reason": "..."},
        "action_requests": [{"name": tool, "args": dict(args), "description": description}],
        "review_configs": [review],
    }


def await_approval(state: InterlockState) -> dict[str, Any]:
    pending = dict(state.get("pending_approval") or {})
    value = interrupt_value(pending, state)
    error = None
    while True:
        raw = interrupt({**value, "error": error} if error else value)
        try:
            decision = ResumeDecision.parse(raw, pending.get("tool"))
            if decision.via_chat and not chat_may_decide(pending):
                # The interrupt offered the chat user no control for this call; a hand-made resume gets the same
                # answer instead of deciding it. (Who may resume a thread at all is the authorizer's job.)
                raise ValueError("only an operator may decide this call, through the approvals API")
            if decision.decision == "edit":
                real = real_args(pending)
                problem = edit_problem(pending.get("tool"), real,
                                       merged_edit(value["args"], real, decision.args or {}),
                                       pending.get("input_schema"))
                if problem:
                    raise ValueError(f"edit refused: {problem}")
            break
        except (ValidationError, ValueError, TypeError) as exc:
            # Bad operator input: ask again with the reason instead of crashing the run.
            error = f"invalid resume value: {str(exc).splitlines()[0][:200]}"
            log.warning("approval %s: %s", pending.get("approval_id"), error)
    # The time spent interrupted does not count against the run's wall-clock limit (an operator may take minutes).
    now = run_state.clock()
    asked_at = float(pending.get("asked_at") or now)
    return {"approval_decision": decision.model_dump(),
            "waited_s": float(state.get("waited_s") or 0.0) + max(0.0, now - asked_at)}


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
    args = real_args(pending)
    sealed = bool(pending.get("sealed_args"))
    real = dict(args)
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
                await store.decide(approval_id, "reject", decided_by=decider(config), reason=decision.reason)
            except Exception as exc:  # already decided by the operator endpoint is fine
                log.info("approval %s reject: %s", approval_id, exc)
            message = ToolMessage(content=f"Not executed: the operator rejected {pending.get('tool')}"
                                  + (f" ({decision.reason})" if decision.reason else "") + ".",
                                  tool_call_id=call_id, name=pending.get("tool"), status="error")
            return {"messages": [message], "executed": {call_id: {"status": "rejected"}},
                    "pending_approval": None, "approval_decision": None, "outcome": "rejected"}
        edited = decision.decision == "edit" and decision.args is not None
        if edited:
            args = merged_edit(shown_args(pending, state), real, dict(decision.args or {}))
        try:
            await store.decide(approval_id, "approve", decided_by=decider(config), reason=decision.reason,
                               args=(dict(decision.args or {}) if sealed else args) if edited else None,
                               digest_args=args if edited and sealed else None)
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
            from interlock.tools.approvals import args_hash

            # Decided elsewhere: its record names the call (an edit there holds the edited arguments in full);
            # an unedited record of a sealed call holds only the masked form, and the hash says it is this call.
            if current is not None and current.args_hash != args_hash(args):
                args = dict(current.args or args)
    finally:
        await store.close()
    result = await call_tool(pending.get("tool"), args, approval_id, call_id)
    return {**result, "pending_approval": None, "approval_decision": None}


def telemetry_args(pending: dict[str, Any], decision: dict[str, Any] | None) -> dict[str, Any] | None:
    """What tool events and traces show for the decided call when its real arguments were sealed: the proposed
    form (or the edit as written); None when nothing was sealed (they show the call as made)."""
    if not pending.get("sealed_args"):
        return None
    if (decision or {}).get("decision") == "edit" and (decision or {}).get("args"):
        return dict(decision["args"])  # type: ignore[index]
    return dict(pending.get("args") or {})
