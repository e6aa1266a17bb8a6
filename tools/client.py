"""The graph-side client for Interlock's MCP servers (over `fastmcp.Client`, not langchain-mcp-adapters).

For every call it mints a short-lived token for the run's principal, bound to that one server (aud = the
server's canonical URL) and carrying only that server's scopes; the user's own token never leaves the
graph server. It filters tools by the principal's scopes and the graph's allowlist, sends the approval id
and trace id in the request `_meta`, applies a per-call timeout, retries only read-only (idempotent) tools
on transport failures, and reuses one open connection per (server, principal) while its token is fresh.

Configuration, not code (YAML at $INTERLOCK_TOOLS_CONFIG, else <home>/tools.yaml, else the defaults of
`tools.endpoints`):

    servers:
      orders: {url: "http://127.0.0.1:8701/mcp"}          # audience defaults to url
      crm: {url: "http://10.0.0.5:8702/mcp", audience: "https://crm.example.com/mcp"}
    allowlists:                                            # per graph id; patterns "server.tool", "tool", "server.*"
      support: ["orders.get_order", "orders.track_shipment", "crm.*", "tickets.*"]
    timeout_s: 10
    read_retries: 2

Public interface:
    Principal(sub, tenant, scopes, customer_id=None)   # customer_id: the customer an end user acts for
    tools = GovernedTools.from_config()
    await tools.list_tools(principal, allowlist=None) -> list[ToolInfo]
    await tools.as_langchain_tools(principal, allowlist=None, approval_for=None, trace_id=None) -> list[BaseTool]
    await tools.call(principal, "cancel_order", {...}, approval_id="apr_...", trace_id="...") -> ToolCallResult
    tools.allowlist_for("support") -> list[str] | None
    await tools.aclose()
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from interlock.tools import endpoints, identity
from interlock.tools.approvals import args_hash
from interlock.tools.audit import AuditLog, AuditRecord
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from interlock.kernel.identity import META_APPROVAL, META_PRECHECK, META_TRACE, STAFF_SCOPE, Principal
from interlock.kernel.settings import get_settings

__all__ = ["GovernedTools", "Principal", "ToolCallResult", "ToolDenied", "ToolInfo", "ToolUnavailable",
           "ToolsConfig", "classify_tool", "load_config"]

log = logging.getLogger(__name__)

_TOKEN_MARGIN_S = 30  # never send a token that could expire in flight
_CATALOG_TTL_S = 60.0


class ServerConfig(BaseModel):
    url: str
    audience: str | None = None

    @property
    def aud(self) -> str:
        return self.audience or self.url


class ToolsConfig(BaseModel):
    servers: dict[str, ServerConfig]
    allowlists: dict[str, list[str]] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    read_retries: int = Field(default=2, ge=0, le=5)
    token_ttl_s: int = Field(default=300, ge=60, le=3600)
    max_connections: int = Field(default=64, ge=1, le=4096)


def default_config() -> ToolsConfig:
    return ToolsConfig(servers={s: ServerConfig(url=endpoints.canonical_url(s)) for s in endpoints.SYSTEMS})


def load_config(path: str | Path | None = None) -> ToolsConfig:
    """Read the YAML config; a missing default file means the built-in local endpoints."""
    explicit = path or get_settings().tools_config
    candidate = Path(explicit) if explicit else get_settings().data_dir() / "tools.yaml"
    if not candidate.exists():
        if explicit:
            raise FileNotFoundError(f"tools config not found: {candidate}")
        return default_config()
    try:
        raw = yaml.safe_load(candidate.read_text()) or {}
        return ToolsConfig.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise ValueError(f"invalid tools config {candidate}: {exc}") from exc


Risk = Literal["read", "write", "destructive"]
Approval = Literal["never", "when_tainted", "always"]


def classify_tool(name: str, annotations: dict[str, Any] | None, tags: set[str] | None = None,
                  policy: Any | None = None) -> tuple[Risk, Approval]:
    """(risk, approval rule) for a tool: policy (policies/tools.yaml) first, then the server's annotations and tags."""
    annotations = annotations or {}
    tags = tags or set()
    if annotations.get("destructiveHint") is True or "destructive" in tags:
        risk: Risk = "destructive"
    elif annotations.get("readOnlyHint") is True:
        risk = "read"
    else:
        risk = "write"
    approval: Approval = {"read": "never", "write": "when_tainted", "destructive": "always"}[risk]  # type: ignore[assignment]
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


class ToolInfo(BaseModel):
    """One tool as the MCP server published it, with the risk tier and approval rule the graphs act on."""

    model_config = ConfigDict(frozen=True)

    name: str
    server: str
    title: str | None = None
    description: str = ""
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    read_only: bool = False
    destructive: bool = True  # MCP's defaults for a tool that declares nothing: assume the worst
    idempotent: bool = False
    scope: str | None = None
    tags: list[str] = Field(default_factory=list)
    risk: Risk = "destructive"
    approval: Approval = "always"

    def classified(self, policy: Any | None) -> ToolInfo:
        """This tool with risk and approval rule from `policy` (None: the server's annotations alone)."""
        annotations = {"readOnlyHint": self.read_only, "destructiveHint": self.destructive}
        risk, approval = classify_tool(self.name, annotations, set(self.tags), policy)
        return self.model_copy(update={"risk": risk, "approval": approval})

    def needs_approval(self, tainted: bool) -> bool:
        return self.approval == "always" or (self.approval == "when_tainted" and tainted)

    def as_openai_tool(self) -> dict[str, Any]:
        """The tool as a function schema a chat model can be bound to."""
        schema = self.input_schema or {"type": "object", "properties": {}}
        return {"type": "function",
                "function": {"name": self.name, "description": self.description or self.name, "parameters": schema}}


class ToolCallResult(BaseModel):
    tool: str
    server: str
    is_error: bool
    text: str
    structured: dict[str, Any] | None = None


class ToolDenied(Exception):
    """The principal may not use this tool (scope or allowlist); nothing was sent to the server."""


class ToolUnavailable(Exception):
    """The server could not be reached or did not answer in time."""


class _Conn:
    def __init__(self, client: Client, expires_at: float) -> None:
        self.client = client
        self.expires_at = expires_at


HttpClientFactory = Callable[..., Any]


class GovernedTools:
    def __init__(
        self,
        config: ToolsConfig | None = None,
        *,
        http_client_factories: dict[str, HttpClientFactory] | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        """`http_client_factories` (per server) lets a process serve MCP apps in-process (tests, bench)."""
        self.config = config or load_config()
        self._factories = http_client_factories or {}
        self._audit = audit
        self._conns: OrderedDict[tuple[str, ...], _Conn] = OrderedDict()
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self._catalog: dict[tuple[str, tuple[str, ...]], tuple[float, list[ToolInfo]]] = {}

    @classmethod
    def from_config(cls, path: str | Path | None = None, **kwargs: Any) -> GovernedTools:
        return cls(load_config(path), **kwargs)

    def allowlist_for(self, graph_id: str) -> list[str] | None:
        return self.config.allowlists.get(graph_id)

    # -- connections ---------------------------------------------------------------------------------

    @staticmethod
    def _server_scopes(principal: Principal, server: str) -> tuple[str, ...]:
        # The server's own scopes plus the staff scope, which every server checks for customer-owned records.
        return tuple(sorted(s for s in principal.scopes if s.startswith(f"{server}:") or s == STAFF_SCOPE))

    @staticmethod
    def _key(server: str, principal: Principal, scopes: tuple[str, ...]) -> tuple[str, ...]:
        # The bound customer is part of the identity a connection's token carries: never share it across customers.
        return (server, principal.tenant, principal.sub, f"customer={principal.customer_id or ''}", *scopes)

    async def _client(self, server: str, principal: Principal) -> Client:
        scopes = self._server_scopes(principal, server)
        key = self._key(server, principal, scopes)
        if len(self._locks) > 4 * self.config.max_connections:
            # Forget idle locks of principals whose connections are gone, so the map stays bounded.
            self._locks = {k: v for k, v in self._locks.items() if v.locked() or k in self._conns}
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._conns.get(key)
            if conn is not None and conn.expires_at - _TOKEN_MARGIN_S > time.time():
                self._conns.move_to_end(key)
                return conn.client
            if conn is not None:
                await self._drop(key)
            spec = self.config.servers[server]
            ttl = self.config.token_ttl_s
            token = identity.mint(principal.sub, principal.tenant, scopes, spec.aud, ttl_s=ttl,
                                  customer_id=principal.customer_id)
            kwargs: dict[str, Any] = {"auth": token}
            if server in self._factories:
                kwargs["httpx_client_factory"] = self._factories[server]
            client = Client(StreamableHttpTransport(spec.url, **kwargs), timeout=self.config.timeout_s)
            try:
                await client.__aenter__()
            except Exception as exc:
                raise ToolUnavailable(f"{server}: cannot connect ({type(exc).__name__}: {exc})") from None
            self._conns[key] = _Conn(client, time.time() + ttl)
            while len(self._conns) > self.config.max_connections:
                await self._drop(next(iter(self._conns)))
            return client

    async def _drop(self, key: tuple[str, ...]) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            try:
                await conn.client.__aexit__(None, None, None)
            except Exception:  # a broken connection may fail to close; it is discarded either way
                pass

    async def _drop_for(self, server: str, principal: Principal) -> None:
        await self._drop(self._key(server, principal, self._server_scopes(principal, server)))

    async def aclose(self) -> None:
        for key in list(self._conns):
            await self._drop(key)
        if self._audit is not None:
            await self._audit.close()

    # -- discovery -----------------------------------------------------------------------------------

    async def _server_tools(self, server: str, principal: Principal) -> list[ToolInfo]:
        scopes = self._server_scopes(principal, server)
        if f"{server}:read" not in scopes:
            return []  # below the server's floor: it would answer 403 anyway
        key = (server, scopes)
        cached = self._catalog.get(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        client = await self._client(server, principal)
        try:
            listed = await asyncio.wait_for(client.list_tools(), self.config.timeout_s)
        except Exception as exc:
            await self._drop_for(server, principal)
            raise ToolUnavailable(f"{server}: cannot list tools ({type(exc).__name__})") from None
        infos = [self._info(server, t) for t in listed]
        # Belt and braces: the server already filters by token scopes; drop anything it did not justify.
        infos = [t for t in infos if t.scope is None or t.scope in scopes]
        self._catalog[key] = (time.monotonic() + _CATALOG_TTL_S, infos)
        return infos

    @staticmethod
    def _info(server: str, tool: Any) -> ToolInfo:
        ann = tool.annotations
        meta = tool.meta or {}
        interlock = meta.get("interlock") or {}
        read_only = bool(getattr(ann, "read_only_hint", None))
        destructive = getattr(ann, "destructive_hint", None)
        idempotent = getattr(ann, "idempotent_hint", None)
        return ToolInfo(
            name=tool.name, server=server, title=getattr(ann, "title", None) or tool.title,
            description=tool.description or "", input_schema=tool.input_schema or {"type": "object"},
            output_schema=tool.output_schema, read_only=read_only,
            destructive=False if read_only else (True if destructive is None else bool(destructive)),
            idempotent=True if read_only else bool(idempotent), scope=interlock.get("scope"),
            tags=sorted((meta.get("fastmcp") or {}).get("tags") or []),
        ).classified(None)

    @staticmethod
    def _allowed(info: ToolInfo, allowlist: Sequence[str] | None) -> bool:
        if allowlist is None:
            return True
        qualified = f"{info.server}.{info.name}"
        return any(fnmatch.fnmatchcase(qualified, p) or fnmatch.fnmatchcase(info.name, p) for p in allowlist)

    async def list_tools(self, principal: Principal, allowlist: Sequence[str] | None = None) -> list[ToolInfo]:
        """Tools this principal may use, across all configured servers, narrowed by the graph's allowlist."""
        results = await asyncio.gather(
            *(self._server_tools(s, principal) for s in self.config.servers), return_exceptions=True
        )
        tools: list[ToolInfo] = []
        seen: dict[str, str] = {}
        for server, result in zip(self.config.servers, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("tool discovery failed for %s: %s", server, result)
                continue
            for info in result:
                if not self._allowed(info, allowlist):
                    continue
                if info.name in seen:
                    raise ValueError(f"tool name {info.name} is served by both {seen[info.name]} and {server}")
                seen[info.name] = server
                tools.append(info)
        return tools

    # -- calls ---------------------------------------------------------------------------------------

    async def _resolve(self, principal: Principal, tool: str, allowlist: Sequence[str] | None) -> ToolInfo:
        for server in self.config.servers:
            try:
                infos = await self._server_tools(server, principal)
            except ToolUnavailable:
                continue
            for info in infos:
                if info.name == tool and self._allowed(info, allowlist):
                    return info
        raise ToolDenied(f"tool {tool!r} is not available to this principal")

    async def _deny(self, principal: Principal, tool: str, args: dict[str, Any], trace_id: str | None) -> None:
        if self._audit is None:
            self._audit = AuditLog()
        try:
            await self._audit.append(AuditRecord(
                principal=principal.sub, tenant=principal.tenant, server="interlock-client", tool=tool[:200],
                args_hash=args_hash(args), outcome="denied", reason="not_allowed", trace_id=trace_id,
                transport="client", customer_id=principal.customer_id))
        except Exception as exc:
            log.error("audit append failed for a client-side denial: %s", type(exc).__name__)

    async def call(
        self,
        principal: Principal,
        tool: str,
        args: dict[str, Any] | None = None,
        approval_id: str | None = None,
        trace_id: str | None = None,
        allowlist: Sequence[str] | None = None,
        precheck: bool = False,
    ) -> ToolCallResult:
        """Call one tool. Tool errors come back as `is_error=True`; transport failures raise ToolUnavailable.
        `precheck`: ask the server only whether it would accept the call (scopes, tenant, the record's owner): it
        answers "not found" or a pass, and neither runs the tool nor creates an approval."""
        args = dict(args or {})
        try:
            info = await self._resolve(principal, tool, allowlist)
        except ToolDenied:
            await self._deny(principal, tool, args, trace_id)
            raise
        meta: dict[str, Any] = {}
        if approval_id:
            meta[META_APPROVAL] = approval_id
        if trace_id:
            meta[META_TRACE] = trace_id
        if precheck:
            meta[META_PRECHECK] = True
        attempts = 1 + (self.config.read_retries if info.read_only or precheck else 0)
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                client = await self._client(info.server, principal)
                # The client's own timeout does not interrupt a stalled HTTP exchange; this does.
                result = await asyncio.wait_for(
                    client.call_tool(tool, args, timeout=self.config.timeout_s, raise_on_error=False,
                                     meta=meta or None),
                    self.config.timeout_s,
                )
            except Exception as exc:  # transport or protocol failure: the connection may be broken
                last = exc
                await self._drop_for(info.server, principal)
                if attempt + 1 < attempts:
                    await asyncio.sleep(0.05 * 2**attempt)
                continue
            text = " ".join(getattr(block, "text", "") for block in result.content).strip()
            if precheck and result.is_error and (result.meta or {}).get(META_PRECHECK) == "passed":
                # The server marks a passed precheck as an error result (nothing ran); only its `_meta` says so.
                return ToolCallResult(tool=tool, server=info.server, is_error=False, text=text,
                                      structured={"precheck": "passed"})
            return ToolCallResult(tool=tool, server=info.server, is_error=bool(result.is_error), text=text,
                                  structured=result.structured_content)
        raise ToolUnavailable(f"{info.server}.{tool} failed after {attempts} attempt(s): {type(last).__name__}")

    # -- LangChain -----------------------------------------------------------------------------------

    async def as_langchain_tools(
        self,
        principal: Principal,
        allowlist: Sequence[str] | None = None,
        approval_for: Callable[[str, dict[str, Any]], str | None] | None = None,
        trace_id: str | None = None,
    ) -> list[BaseTool]:
        """LangChain tools with the servers' JSON schemas. Errors become ToolMessage(status="error").

        `approval_for(tool, args)` returns the approval id to send for a call (destructive tools), if any.
        """
        infos = await self.list_tools(principal, allowlist)
        return [self._langchain_tool(info, principal, allowlist, approval_for, trace_id) for info in infos]

    def _langchain_tool(
        self,
        info: ToolInfo,
        principal: Principal,
        allowlist: Sequence[str] | None,
        approval_for: Callable[[str, dict[str, Any]], str | None] | None,
        trace_id: str | None,
    ) -> BaseTool:
        async def run(**kwargs: Any) -> tuple[str, Any]:
            approval = approval_for(info.name, kwargs) if approval_for else None
            try:
                result = await self.call(principal, info.name, kwargs, approval_id=approval, trace_id=trace_id,
                                         allowlist=allowlist)
            except (ToolDenied, ToolUnavailable) as exc:
                raise ToolException(str(exc)) from None
            if result.is_error:
                raise ToolException(result.text or "tool failed")
            content = json.dumps(result.structured) if result.structured is not None else result.text
            return content, result.structured

        return StructuredTool(
            name=info.name,
            description=info.description or info.title or info.name,
            args_schema=info.input_schema,
            coroutine=run,
            handle_tool_error=True,
            response_format="content_and_artifact",
            metadata={"server": info.server, "read_only": info.read_only, "destructive": info.destructive,
                      "idempotent": info.idempotent, "scope": info.scope, "tags": info.tags},
        )
