"""The state shared by the router, RAG and planner graphs, and the run's identity.

Principal and tenant are copied into state from the run's config (the Agent Server's auth context,
or `configurable.tenant`/`principal` in local development) by `identify`, which runs first in every
graph and overwrites whatever the client sent: identity never comes from user input.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.messages import AnyMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.message import add_messages

from interlock.kernel.identity import STAFF_SCOPE, Principal
from interlock.kernel.settings import get_settings

Mode = Literal["model", "zero-key", "degraded"]

# Terminal outcomes, so a client can tell why a run ended without parsing text.
OUTCOMES = (
    "answered", "refused", "escalated", "smalltalk", "needs_input", "executed", "rejected",
    "tool_error", "limit_steps", "limit_tool_calls", "limit_time", "guard_blocked",
)


# Who the run acts for (the kernel's one principal type); the old name stays for graph code.
PrincipalInfo = Principal


class Citation(TypedDict, total=False):
    chunk_id: str
    quote: str
    title: str
    source: str
    verified: bool


def _merge_dict(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return {**(left or {}), **(right or {})}


def _append_new(left: list[Any] | None, right: list[Any] | None) -> list[Any]:
    """Append, but when a subgraph hands back the whole list (old items first) add only its new tail."""
    left, right = list(left or []), list(right or [])
    if left and right[: len(left)] == left:
        return left + right[len(left):]
    return left + right


def _keep_true(left: bool | None, right: bool | None) -> bool:
    # Taint is sticky: once untrusted text entered the run, nothing may clear it.
    return bool(left) or bool(right)


class InterlockState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    tenant: str
    principal: dict[str, Any]
    route: str
    intent: str
    confidence: float
    mode: Mode
    # `graphs.retrieval.Hit.model_dump()`s plus the retrieved guard's marks (`guarded`, `quarantined`).
    retrieved: list[dict[str, Any]]
    citations: list[Citation]
    # `graphs.planner.PlannedCall.model_dump()`s.
    plan: list[dict[str, Any]]
    steps: int
    tool_calls: int
    started_at: float
    # Seconds of this turn spent interrupted, waiting for a decision: not the graph's working time, so not counted
    # against the wall-clock limit (graphs/planner.py `_elapsed`).
    waited_s: float
    guard_verdicts: Annotated[list[dict[str, Any]], _append_new]
    tainted: Annotated[bool, _keep_true]
    pii_vault: Annotated[dict[str, Any], _merge_dict]
    outcome: str
    # Idempotency record: call key -> result, written once a tool call has executed.
    executed: Annotated[dict[str, Any], _merge_dict]
    # The destructive call waiting for an operator, with its approval record id.
    pending_approval: dict[str, Any] | None
    approval_decision: dict[str, Any] | None
    # A playbook that asked for a missing detail: the next turn continues it.
    awaiting_input: dict[str, Any] | None
    # A message holding a knowledge question beside a request (graphs/nodes/multi_intent.py): RAG answers
    # `question`, then the planner acts on `request` (the message without the question). Unset otherwise.
    question: str | None
    request: str | None


def clock() -> float:
    """The run clock (wall time, seconds). One function, so a test can stand in for an operator who waits."""
    return time.time()


_AUTH_REQUIRED = False


def require_authenticated_principal() -> None:
    """Called by a server with auth configured: from now on a run without an authenticated principal that
    names its tenant fails instead of falling back to the development identity (INTERLOCK_DEV_TENANT, ...)."""
    global _AUTH_REQUIRED
    _AUTH_REQUIRED = True


class NoPrincipal(PermissionError):
    """Auth is configured but the run carries no authenticated principal with a tenant."""


def principal_from_config(config: RunnableConfig | None) -> PrincipalInfo:
    """The run's principal from the server's auth context, else dev settings, else the dev default.
    The fallbacks apply only when no auth is configured (see `require_authenticated_principal`)."""
    configurable = (config or {}).get("configurable") or {}
    user = configurable.get("langgraph_auth_user")
    if user is not None:
        def get(*names: str) -> Any:
            for name in names:
                value = user.get(name) if isinstance(user, dict) else getattr(user, name, None)
                if value is None and not isinstance(user, dict):
                    try:
                        value = user[name]
                    except (KeyError, TypeError, IndexError):
                        value = None
                if value not in (None, ""):
                    return value
            return None

        sub = get("identity", "sub", "id")
        tenant = get("tenant", "tenant_id")
        if sub and tenant:
            customer = get("customer_id")  # the auth hook's binding of an end user to their customer
            return PrincipalInfo(sub=str(sub), tenant=str(tenant),
                                 scopes=list(get("scopes", "permissions") or []),
                                 groups=list(get("groups") or []), display_name=get("display_name"),
                                 customer_id=str(customer) if customer is not None else None)
    if _AUTH_REQUIRED:
        raise NoPrincipal("auth is configured: the run has no authenticated principal with a tenant")
    raw = configurable.get("principal")
    if isinstance(raw, PrincipalInfo):
        return raw
    if isinstance(raw, dict):
        data = dict(raw)
        data.setdefault("tenant", configurable.get("tenant") or _dev_tenant())
        data.setdefault("scopes", _dev_scopes())
        data.setdefault("customer_id", configurable.get("customer_id"))
        return PrincipalInfo.model_validate(data)
    tenant = configurable.get("tenant") or _dev_tenant()
    return PrincipalInfo(sub=str(configurable.get("user_id") or "dev-user"), tenant=str(tenant),
                         scopes=_dev_scopes(), groups=["customers"], customer_id=configurable.get("customer_id"))


# Without an auth context (local development: `langgraph dev`, `make run` with auth off) the
# principal may use the sample systems as staff (every customer of the tenant), unless the run's config binds it
# to one customer (`configurable.customer_id` or `principal.customer_id`); a server with auth on always supplies
# the real scopes and binding.
DEV_SCOPES = ("orders:read", "orders:write", "crm:read", "crm:write", "billing:read", "billing:write",
              "tickets:read", "tickets:write", STAFF_SCOPE)


def _dev_scopes() -> list[str]:
    scopes = get_settings().dev_scopes
    return list(scopes) if scopes is not None else list(DEV_SCOPES)


def _dev_tenant() -> str:
    return get_settings().dev_tenant


def identify(state: InterlockState, config: RunnableConfig) -> dict[str, Any]:
    """First node of every graph: stamp principal and tenant from config over anything supplied."""
    principal = principal_from_config(config)
    # A new turn on a thread starts its counters and clock afresh; taint and the idempotency
    # record deliberately survive across turns.
    return {"principal": principal.model_dump(), "tenant": principal.tenant, "started_at": clock(), "waited_s": 0.0,
            "steps": 0, "tool_calls": 0, "outcome": "", "plan": [], "retrieved": [], "citations": [],
            "pending_approval": None, "approval_decision": None, "route": "", "intent": "", "mode": "zero-key",
            "question": None, "request": None}


def last_user_text(state: InterlockState) -> str:
    for message in reversed(state.get("messages") or []):
        if isinstance(message, HumanMessage) or getattr(message, "type", "") == "human":
            return message_text(message)
    return ""


def message_text(message: BaseMessage) -> str:
    """A message's text parts, one per line (joined, parts could fuse into words a scanner then misses)."""
    content = message.content
    if isinstance(content, str):
        return content
    return "\n".join(block if isinstance(block, str) else str(block.get("text", ""))
                     for block in content
                     if isinstance(block, str) or (isinstance(block, dict) and block.get("type") == "text"))
