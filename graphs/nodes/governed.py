"""The planner's Toolbox over the governed MCP client in `tools/`.

`tools.client.GovernedTools` mints a per-server token for the run's principal (never the user's own
token), filters tools by scope and the graph's allowlist, sends the approval id in `_meta` and
retries only reads. This adapter adds what the planner needs on top: a risk tier and approval rule
per tool (policies/tools.yaml, then the server's annotations) and errors returned as data, so a tool
failure becomes a ToolMessage instead of an exception in the graph.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from interlock.graphs.events import emit
from interlock.graphs.nodes.toolbox import ToolInfo, ToolOutcome, classify_tool, tool_policy
from interlock.graphs.state import PrincipalInfo

log = logging.getLogger("interlock.graphs.tools")

GRAPH_ID = "router"


class GovernedToolbox:
    def __init__(self, tools: Any, *, allowlist: Sequence[str] | None = None) -> None:
        self.tools = tools
        self.allowlist = list(allowlist) if allowlist is not None else None
        # Recent calls in order (tool, args, approval id), for tests and debugging; bounded so a
        # long-running server does not grow it forever.
        self.calls: deque[tuple[str, dict[str, Any], str | None]] = deque(maxlen=1000)

    @classmethod
    def from_settings(cls, graph_id: str = GRAPH_ID) -> GovernedToolbox:
        from interlock.tools.client import GovernedTools

        tools = GovernedTools.from_config()
        return cls(tools, allowlist=tools.allowlist_for(graph_id))

    @staticmethod
    def _principal(principal: PrincipalInfo) -> Any:
        from interlock.tools.client import Principal

        return Principal(sub=principal.sub, tenant=principal.tenant, scopes=principal.scopes)

    async def list_tools(self, principal: PrincipalInfo) -> list[ToolInfo]:
        policy = tool_policy()
        out = []
        for info in await self.tools.list_tools(self._principal(principal), allowlist=self.allowlist):
            annotations = {"readOnlyHint": info.read_only, "destructiveHint": info.destructive}
            risk, approval = classify_tool(info.name, annotations, set(info.tags), policy)
            out.append(ToolInfo(info.name, info.description, dict(info.input_schema or {}), risk, info.server,
                                approval))
        return out

    async def call(self, principal: PrincipalInfo, tool: str, args: dict[str, Any],
                   approval_id: str | None = None) -> ToolOutcome:

        self.calls.append((tool, dict(args), approval_id))
        started = time.perf_counter()
        outcome = await self._call(principal, tool, args, approval_id)
        await emit("tool", {
            "name": tool, "tool": tool, "outcome": "ok" if outcome.ok else (outcome.code or "error"),
            "approval_id": approval_id, "inputs": args,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "error": outcome.error if not outcome.ok else None,
        })
        return outcome

    async def _call(self, principal: PrincipalInfo, tool: str, args: dict[str, Any],
                    approval_id: str | None) -> ToolOutcome:
        from interlock.tools.client import ToolDenied, ToolUnavailable

        try:
            result = await self.tools.call(self._principal(principal), tool, args, approval_id=approval_id,
                                           allowlist=self.allowlist)
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
        await self.tools.aclose()


def toolbox_from_settings() -> GovernedToolbox:
    return GovernedToolbox.from_settings()
