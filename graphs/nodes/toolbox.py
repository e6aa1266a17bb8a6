"""The graphs' view of the governed MCP tools: what a caller may use, its risk, and how to call it.

The planner never talks to MCP directly. It sees a `Toolbox`: the tools the principal may use (after scopes and
the graph's allowlist), each a `tools.client.ToolInfo` with its JSON schema and a risk tier, and a `call` that goes
through `tools/` (per-server token, approval id in `_meta`, retries of reads only). `GovernedToolbox` adds what the
planner needs on top of `tools.client.GovernedTools`: risk and approval rule per tool from policies/tools.yaml
(falling back to the MCP annotations the server published), and errors returned as data, so a tool failure becomes
a ToolMessage instead of an exception in the graph.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from interlock.graphs.events import emit, tool_inputs
from interlock.graphs.state import PrincipalInfo
from interlock.tools.client import GovernedTools, Principal, ToolDenied, ToolInfo, ToolUnavailable

log = logging.getLogger("interlock.graphs.toolbox")

__all__ = ["GovernedToolbox", "ToolInfo", "ToolOutcome", "Toolbox", "tool_policy"]

GRAPH_ID = "router"


@dataclass
class ToolOutcome:
    ok: bool
    # The tool's structured result (a dict) or its text; never re-serialised on the way to the graph.
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


class GovernedToolbox:
    def __init__(self, tools: GovernedTools | None = None, *, allowlist: Sequence[str] | None = None,
                 graph_id: str = GRAPH_ID) -> None:
        """Without `tools`, the governed client and the graph's allowlist come from the tools config on first use,
        so importing a graph module stays cheap and offline."""
        self._tools = tools
        self._graph_id = graph_id
        self.allowlist = list(allowlist) if allowlist is not None else None
        # Recent calls in order (tool, args, approval id), for tests and debugging; bounded so a
        # long-running server does not grow it forever.
        self.calls: deque[tuple[str, dict[str, Any], str | None]] = deque(maxlen=1000)

    @property
    def tools(self) -> GovernedTools:
        if self._tools is None:
            self._tools = GovernedTools.from_config()
            if self.allowlist is None:
                allowlist = self._tools.allowlist_for(self._graph_id)
                self.allowlist = list(allowlist) if allowlist is not None else None
        return self._tools

    @staticmethod
    def _principal(principal: PrincipalInfo) -> Principal:
        return Principal(sub=principal.sub, tenant=principal.tenant, scopes=principal.scopes,
                         customer_id=principal.customer_id)

    async def list_tools(self, principal: PrincipalInfo) -> list[ToolInfo]:
        policy = tool_policy()
        return [info.classified(policy)
                for info in await self.tools.list_tools(self._principal(principal), allowlist=self.allowlist)]

    async def call(self, principal: PrincipalInfo, tool: str, args: dict[str, Any],
                   approval_id: str | None = None) -> ToolOutcome:
        self.calls.append((tool, dict(args), approval_id))
        started = time.perf_counter()
        outcome = await self._call(principal, tool, args, approval_id)
        await emit("tool", {
            "name": tool, "tool": tool, "outcome": "ok" if outcome.ok else (outcome.code or "error"),
            "approval_id": approval_id, "inputs": tool_inputs(args),
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "error": outcome.error if not outcome.ok else None,
        })
        return outcome

    async def precheck(self, principal: PrincipalInfo, tool: str, args: dict[str, Any]) -> ToolOutcome:
        """Whether the MCP server would accept this call (its scope, tenant and record-ownership checks), asked
        before an operator is: a record the principal may not touch answers "not found" here. Runs nothing."""
        return await self._call(principal, tool, args, None, precheck=True)

    async def _call(self, principal: PrincipalInfo, tool: str, args: dict[str, Any],
                    approval_id: str | None, precheck: bool = False) -> ToolOutcome:
        try:
            result = await self.tools.call(self._principal(principal), tool, args, approval_id=approval_id,
                                           allowlist=self.allowlist, precheck=precheck)
        except ToolDenied:
            return ToolOutcome(ok=False, content=None, error=f"{tool} is not available to you", code="denied")
        except ToolUnavailable:
            log.warning("tool %s unavailable", tool)
            return ToolOutcome(ok=False, content=None, error=f"{tool} could not be reached; try again later",
                               code="unavailable")
        if result.is_error:
            code = "already_used" if "already been used" in result.text else None
            return ToolOutcome(ok=False, content=None, error=result.text[:500], code=code)
        return ToolOutcome(ok=True, content=result.structured if result.structured is not None else result.text)

    async def aclose(self) -> None:
        if self._tools is not None:
            await self._tools.aclose()
