"""Per-principal rate limits, with separate buckets for tool calls and for discovery/listing.

FastMCP's RateLimitingMiddleware counts every request in one bucket, so a client that lists tools before
each call halves its own budget. Here `tools/call` and list/discover requests draw from different buckets
keyed by (tenant, sub); the limits are per server process (in memory).

Environment: INTERLOCK_MCP_CALLS_PER_S (default 50, burst 2x, at least 1) and INTERLOCK_MCP_LISTS_PER_S
(default 10, burst 5x, at least 5).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import mcp_types as mt
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import Tool, ToolResult
from interlock.mcp_servers.denials import Denied
from interlock.mcp_servers.principals import PrincipalResolver

from interlock.kernel.settings import get_settings


class TokenBucket:
    __slots__ = ("capacity", "rate", "tokens", "stamp")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class RateLimits(Middleware):
    def __init__(
        self,
        resolver: PrincipalResolver,
        calls_per_s: float | None = None,
        lists_per_s: float | None = None,
    ) -> None:
        self.resolver = resolver
        self.calls_per_s = calls_per_s or get_settings().mcp_calls_per_s
        self.lists_per_s = lists_per_s or get_settings().mcp_lists_per_s
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}

    async def _check(self, context: MiddlewareContext[Any], kind: str) -> None:
        try:
            principal = await self.resolver.resolve(context)
        except Denied:
            return  # unauthenticated requests are refused further in, and never reach a tool
        key = (kind, principal.tenant, principal.sub)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 10_000:
                self._buckets.clear()  # bound memory; a reset only ever grants a fresh burst
            rate = self.calls_per_s if kind == "call" else self.lists_per_s
            burst = max(1.0, rate * 2) if kind == "call" else max(5.0, rate * 5)
            bucket = self._buckets[key] = TokenBucket(rate, burst)
        if not bucket.take():
            raise Denied("rate_limited", "rate limit exceeded; retry shortly")

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        await self._check(context, "call")
        return await call_next(context)

    async def on_list_tools(
        self, context: MiddlewareContext[mt.ListToolsRequest], call_next: CallNext[mt.ListToolsRequest, Sequence[Tool]]
    ) -> Sequence[Tool]:
        await self._check(context, "list")
        return await call_next(context)
