"""The graphs' view of the governed MCP tools: what a caller may use, its risk, and how to call it.

The planner never talks to MCP directly. It sees `Toolbox`: the tools the principal may use (after
scopes and the graph's allowlist), each with its JSON schema and a risk tier, and a `call` that goes
through `tools/` (per-server token, approval id in `_meta`, errors as data). Risk and the approval
rule come from policies/tools.yaml, falling back to the MCP annotations the server published.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from interlock.graphs.state import PrincipalInfo

log = logging.getLogger("interlock.graphs.toolbox")

Risk = Literal["read", "write", "destructive"]


@dataclass(frozen=True)
class ToolInfo:
    name: str
    description: str
    input_schema: dict[str, Any]
    risk: Risk
    server: str = ""
    approval: Literal["never", "when_tainted", "always"] = "never"

    def needs_approval(self, tainted: bool) -> bool:
        return self.approval == "always" or (self.approval == "when_tainted" and tainted)

    def as_openai_tool(self) -> dict[str, Any]:
        """The tool as a function schema a chat model can be bound to."""
        schema = self.input_schema or {"type": "object", "properties": {}}
        return {"type": "function",
                "function": {"name": self.name, "description": self.description or self.name, "parameters": schema}}


@dataclass
class ToolOutcome:
    ok: bool
    content: Any
    error: str | None = None
    # Machine-readable reason from the gate (e.g. approval "already_used") when ok is False.
    code: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Toolbox(Protocol):
    async def list_tools(self, principal: PrincipalInfo) -> list[ToolInfo]: ...

    async def call(self, principal: PrincipalInfo, tool: str, args: dict[str, Any],
                   approval_id: str | None = None) -> ToolOutcome: ...


def tool_policy() -> Any | None:
    """policies/tools.yaml (validated by the guardrails loader), or None when it cannot be loaded."""
    try:
        from interlock.policies.loader import get_policies

        return get_policies().tools
    except Exception as exc:  # the loader insists on every guard file; fall back to tools.yaml alone
        try:
            from interlock.policies.graph_schema import load_yaml
            from interlock.policies.schema import ToolsPolicy

            return ToolsPolicy.model_validate(load_yaml("tools.yaml"))
        except Exception:
            log.warning("tool policy unavailable (%s); using MCP annotations only", type(exc).__name__)
            return None


def classify_tool(name: str, annotations: dict[str, Any] | None, tags: set[str] | None = None,
                  policy: Any | None = None) -> tuple[Risk, str]:
    """(risk, approval rule) for a tool: policy first, then the server's annotations and tags."""
    annotations = annotations or {}
    tags = tags or set()
    if annotations.get("destructiveHint") is True or "destructive" in tags:
        risk: Risk = "destructive"
    elif annotations.get("readOnlyHint") is True:
        risk = "read"
    else:
        risk = "write"
    approval = {"read": "never", "write": "when_tainted", "destructive": "always"}[risk]
    if policy is not None:
        rule = policy.tools.get(name)
        if rule is not None:
            # Policy may raise a tool's risk but never lowers what the server declared destructive.
            if not (risk == "destructive" and rule.risk != "destructive"):
                risk = rule.risk
            approval = rule.approval or policy.default_approval.get(risk, approval)
        else:
            approval = policy.default_approval.get(risk, approval)
        if risk == "destructive":
            approval = "always"
    return risk, approval
