"""Approval interrupts in the schema Agent Chat UI renders, and the UI's resume values mapped to decisions.

The models below are transcribed from langchain-ai/agent-chat-ui
`src/components/thread/agent-inbox/types.ts` (ActionRequest, ReviewConfig, HITLRequest, Decision), and
`ui_controls` from `createDefaultHumanResponse` in `src/components/thread/agent-inbox/utils.ts`, which picks the
review config by `action_name` (else the first) and offers one control per entry of `allowed_decisions`.
"""

from __future__ import annotations

from typing import Any, Literal

import pytest
from interlock.graphs.nodes.approval import ResumeDecision, interrupt_value
from pydantic import BaseModel, ConfigDict

DecisionType = Literal["approve", "edit", "reject"]


class ActionRequest(BaseModel):
    name: str
    args: dict[str, Any]
    description: str | None = None
    diff: str | None = None
    summary: str | None = None


class ReviewConfig(BaseModel):
    action_name: str
    allowed_decisions: list[DecisionType]
    args_schema: dict[str, Any] | None = None


class HITLRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # the UI reads only these two keys; Interlock's fields ride along
    action_requests: list[ActionRequest]
    review_configs: list[ReviewConfig]


def ui_controls(value: dict[str, Any]) -> list[str]:
    request = HITLRequest.model_validate(value)
    action = request.action_requests[0] if request.action_requests else None
    config = next((c for c in request.review_configs if action and c.action_name == action.name), None)
    config = config or (request.review_configs[0] if request.review_configs else None)
    if action is None or config is None:
        return []
    return [d for d in ("edit", "approve", "reject") if d in config.allowed_decisions]


STATE: Any = {"principal": {"sub": "cust-1"}, "tenant": "acme"}


def test_destructive_call_shows_the_call_but_no_control() -> None:
    pending = {"tool": "cancel_order", "server": "orders", "args": {"order_id": "o-1"}, "risk": "destructive",
               "approval_id": "ap-1", "reason": "cancel_order cannot be undone; an operator must approve this exact call"}
    value = interrupt_value(pending, STATE)
    request = HITLRequest.model_validate(value)
    assert request.action_requests[0].name == "cancel_order" and request.action_requests[0].args == {"order_id": "o-1"}
    assert ui_controls(value) == [], "no approve/edit/reject the chat user could not use"
    assert "operator must decide" in request.action_requests[0].description and "ap-1" in request.action_requests[0].description
    # The fields the approvals API, CLI and console read are unchanged.
    assert value["type"] == "approval" and value["approval_id"] == "ap-1" and value["tool"] == "cancel_order"
    assert value["server"] == "orders" and value["requester"] == "cust-1" and value["decided_by"] == "operator"


def test_write_the_requester_may_confirm_gets_all_controls() -> None:
    # tools.yaml marks escalate_to_human `decision: confirm`: the requester may confirm it in the chat.
    pending = {"tool": "escalate_to_human", "args": {"reason": "a@b.c"}, "risk": "write", "approval_id": "ap-2",
               "input_schema": {"type": "object", "properties": {"reason": {"type": "string"}}}}
    value = interrupt_value(pending, STATE)
    assert sorted(ui_controls(value)) == ["approve", "edit", "reject"]
    assert HITLRequest.model_validate(value).review_configs[0].args_schema["properties"]["reason"]
    # A write the policy leaves to operators (decision: operator, the default) offers no control.
    operator_only = interrupt_value({**pending, "tool": "update_contact"}, STATE)
    assert ui_controls(operator_only) == []


@pytest.mark.parametrize(
    ("resume", "decision", "args", "reason"),
    [
        ({"decisions": [{"type": "approve"}]}, "approve", None, None),
        ({"decisions": [{"type": "reject", "message": "wrong order"}]}, "reject", None, "wrong order"),
        ({"decisions": [{"type": "edit", "edited_action": {"name": "update_contact", "args": {"email": "x@y.z"}}}]},
         "edit", {"email": "x@y.z"}, None),
        ([{"type": "accept", "args": None}], "approve", None, None),  # older HumanResponse
        ([{"type": "edit", "args": {"action": "update_contact", "args": {"email": "q@r.s"}}}], "edit", {"email": "q@r.s"}, None),
        ([{"type": "response", "args": "please don't"}], "reject", None, "please don't"),
        ([{"type": "ignore", "args": None}], "reject", None, None),
    ],
)
def test_ui_resume_values_map_to_decisions(resume: Any, decision: str, args: Any, reason: Any) -> None:
    parsed = ResumeDecision.parse(resume, "update_contact")
    assert (parsed.decision, parsed.args, parsed.reason, parsed.via_chat) == (decision, args, reason, True)


def test_edit_of_another_tool_is_refused() -> None:
    with pytest.raises(ValueError, match="pending tool"):
        ResumeDecision.parse({"decisions": [{"type": "edit", "edited_action": {"name": "refund", "args": {"x": 1}}}]},
                             "update_contact")
    # Interlock's own shape is unchanged, and no field of the body says who decided or that it came from a chat.
    own = ResumeDecision.parse({"decision": "approve", "by": "op", "_via_chat": True, "via_chat": True})
    assert own.decision == "approve" and not own.via_chat and "by" not in own.model_dump()
