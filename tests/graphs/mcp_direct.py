"""A minimal Toolbox straight over fastmcp.Client and real per-server tokens (test scaffolding).

Used by the graph tests while `tools.client` (the governed client) is not available; real HTTP,
real tokens, the servers' own scope checks, approval gate and audit.
"""

from __future__ import annotations

import json
from typing import Any

from fastmcp import Client

from graphs.nodes.toolbox import ToolInfo, ToolOutcome, classify_tool, tool_policy
from graphs.state import PrincipalInfo
from tools import identity

SCOPES = ["orders:read", "orders:write", "crm:read", "crm:write", "billing:read", "billing:write",
          "tickets:read", "tickets:write"]


class DirectMCPToolbox:
    def __init__(self, urls: dict[str, str], scopes: list[str] | None = None) -> None:
        self.urls = urls
        self.scopes = scopes or SCOPES
        self.calls: list[tuple[str, dict[str, Any], str | None]] = []
        self._catalogue: dict[str, ToolInfo] | None = None

    def _token(self, principal: PrincipalInfo, system: str) -> str:
        scopes = [s for s in self.scopes if s.startswith(f"{system}:")]
        return identity.mint(principal.sub, principal.tenant, scopes, self.urls[system])

    async def list_tools(self, principal: PrincipalInfo) -> list[ToolInfo]:
        if self._catalogue is None:
            policy = tool_policy()
            catalogue = {}
            for system, url in self.urls.items():
                async with Client(url, auth=self._token(principal, system)) as client:
                    for tool in await client.list_tools():
                        ann = tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else {}
                        tags = set(((tool.meta or {}).get("fastmcp") or {}).get("tags") or [])
                        risk, approval = classify_tool(tool.name, ann, tags, policy)
                        catalogue[tool.name] = ToolInfo(tool.name, tool.description or "", tool.input_schema, risk,
                                                        system, approval)
            self._catalogue = catalogue
        return list(self._catalogue.values())

    async def call(self, principal: PrincipalInfo, tool: str, args: dict[str, Any],
                   approval_id: str | None = None) -> ToolOutcome:
        self.calls.append((tool, dict(args), approval_id))
        info = {t.name: t for t in await self.list_tools(principal)}[tool]
        meta = {"io.interlock/approval_id": approval_id} if approval_id else None
        async with Client(self.urls[info.server], auth=self._token(principal, info.server)) as client:
            result = await client.call_tool(tool, args, raise_on_error=False, meta=meta)
        text = " ".join(getattr(b, "text", "") for b in result.content)
        if result.is_error:
            code = "already_used" if "already been used" in text else None
            return ToolOutcome(ok=False, content=None, error=text, code=code)
        content = result.structured_content if result.structured_content is not None else text
        if isinstance(content, str):
            try:
                content = json.loads(content)
            except ValueError:
                pass
        return ToolOutcome(ok=True, content=content)
