"""/approvals: the operator's view of irreversible actions waiting for a decision, across threads, scoped by
tenant. Deciding resumes the waiting run with the decision; the graph's approval node records it in the approval
store (decided_by = the operator) and only then lets the tool run. An approval requested by an MCP client without
a run (a desktop assistant) is decided in the store directly; the client's identical retry then spends it.

`GET /approvals/events` streams the tenant's approval changes (SSE) for the operator console and
`interlock approvals watch`."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from interlock.graphs.nodes.approval import edit_problem
from interlock.server import schemas
from interlock.server.auth import User
from interlock.server.authorization import Access
from interlock.server.bodies import parse
from interlock.server.errors import Conflict, Invalid, NotFound
from interlock.server.run_service import create_run
from interlock.server.serialization import dumps, jsonable
from interlock.server.services import Services, services
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from interlock.kernel.settings import get_settings

STATUSES = ("pending", "approved", "rejected", "consumed", "expired")
DECIDED = ("approved", "rejected", "consumed", "expired")
CONTEXT_MESSAGES = 6  # the last messages of the conversation shown with an approval
HEARTBEAT_SECONDS = 15.0


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["approve", "reject", "edit"]
    args: dict[str, Any] | None = None
    reason: str | None = Field(None, max_length=2000)


def _store(request: Request) -> Any:
    store = getattr(request.app.state, "approvals", None)
    if store is None:
        from interlock.tools.approvals import ApprovalStore

        store = ApprovalStore(services(request).db_url)
        request.app.state.approvals = store
    return store


async def _operator(request: Request) -> tuple[Access, str]:
    """The caller's access and the tenant whose approvals they administer (403 without `approvals:decide`;
    in local development mode the tenant named by `?tenant=`, if registered, and the configured local operator)."""
    access = Access.of(request)
    tenant = access.operator_tenant(request.query_params.get("tenant"))
    await access.check_tenants([tenant])
    return access, tenant


def _out(approval: Any) -> dict[str, Any]:
    return jsonable(approval)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(f"query parameter '{name}' must be an integer") from None
    if not low <= value <= high:
        raise Invalid(f"query parameter '{name}' must be between {low} and {high}")
    return value


async def operator(request: Request) -> Response:
    """Who the console is signed in as: the operator's identity and tenant (local mode: the local operator)."""
    access, tenant = await _operator(request)
    return JSONResponse({"identity": access.decider()[0], "tenant": tenant})


async def list_approvals(request: Request) -> Response:
    """`?status=pending|approved|rejected|consumed|expired|decided` (decided: every state but pending),
    `limit` (1-500, default 100) and `offset`; X-Pagination-Next carries the next offset when there is more."""
    _, tenant = await _operator(request)
    status = request.query_params.get("status")
    if status and status not in (*STATUSES, "decided"):
        raise Invalid(f"unknown approval status '{status}'")
    limit = _int_param(request, "limit", 100, 1, 500)
    offset = _int_param(request, "offset", 0, 0, 1_000_000)
    statuses = DECIDED if status == "decided" else ((status,) if status else None)
    items = await _store(request).list(tenant, limit=limit + 1, offset=offset, statuses=statuses)
    headers = {"X-Pagination-Next": str(offset + limit)} if len(items) > limit else {}
    return JSONResponse([_out(a) for a in items[:limit]], headers=headers)


async def _owned(request: Request, tenant: str) -> Any:
    approval = await _store(request).get(request.path_params["approval_id"])
    if approval is None or approval.tenant != tenant:  # another tenant's approval is simply not found
        raise NotFound(f"Approval {request.path_params['approval_id']} not found")
    return approval


def _conversation(thread: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The last messages of the waiting run's conversation, as role and text (tool calls named)."""
    messages = ((thread or {}).get("values") or {}).get("messages") or []
    out = []
    for message in messages[-CONTEXT_MESSAGES:]:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
        calls = [{"name": c.get("name"), "args": c.get("args")} for c in message.get("tool_calls") or []
                 if isinstance(c, dict)]
        out.append({"type": message.get("type"), "name": message.get("name"), "content": str(content or "")[:4000],
                    "tool_calls": calls})
    return out


@functools.lru_cache(maxsize=64)
def input_schema(server: str, tool: str) -> dict[str, Any] | None:
    """The MCP tool's input JSON schema, as the MCP server advertises it (None for an unknown tool)."""
    from fastmcp.tools import Tool
    from interlock.mcp_servers.hosting import load_system

    try:
        system = load_system(server)
    except (ValueError, ImportError):
        return None
    for fn, *_ in system._tools:
        if fn.__name__ == tool:
            return dict(Tool.from_function(fn).parameters)
    return None


def schema_errors(schema: dict[str, Any], args: dict[str, Any]) -> list[str]:
    """Every way `args` breaks `schema`, each naming the argument."""
    from jsonschema import Draft202012Validator

    errors = []
    for error in sorted(Draft202012Validator(schema).iter_errors(args), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in error.absolute_path)
        errors.append(f"args.{where}: {error.message}" if where else f"args: {error.message}")
    return errors


async def get_approval(request: Request) -> Response:
    """One approval with what the operator needs to decide: the conversation's last messages, the tool's input
    schema (for edits) and the audit trail (state changes, then the tool calls that used it)."""
    _, tenant = await _operator(request)
    approval = await _owned(request, tenant)
    store = _store(request)
    svc = services(request)
    thread = await svc.threads.find(approval.thread_id) if approval.thread_id else None
    return JSONResponse({
        **_out(approval),
        "conversation": _conversation(thread),
        "input_schema": input_schema(approval.server, approval.tool),
        "audit": jsonable(await store.events(approval.id)),
        "tool_calls": await _tool_calls(store, approval.id),
    })


async def _tool_calls(store: Any, approval_id: str) -> list[dict[str, Any]]:
    """Rows of the MCP servers' audit log that carried this approval (none until the tool has been called)."""
    try:
        rows = await store.db.fetchall(
            "SELECT ts, principal, customer_id, server, tool, outcome, reason, transport FROM interlock_audit"
            " WHERE approval_id = ? ORDER BY ts", (approval_id,))
    except Exception:  # noqa: BLE001 - the audit table exists only once an MCP server has run
        return []
    return [dict(r) for r in rows]


def _waiting(thread: dict[str, Any], approval_id: str) -> dict[str, Any] | None:
    """The thread's pending interrupt (`{"id", "value"}`) that waits on this approval, if any."""
    for items in (thread.get("interrupts") or {}).values():
        for item in items:
            value = item.get("value")
            if isinstance(value, dict) and value.get("approval_id") == approval_id:
                return item
    return None


async def resume_waiting_run(svc: Services, user: User, approval: Any, resume: dict[str, Any]) -> dict[str, Any]:
    """Resume the run interrupted on `approval` with `resume` and wait for it; Conflict when none waits."""
    thread = await svc.threads.find(approval.thread_id)
    waiting = _waiting(thread, approval.id) if thread else None
    interrupt_id = waiting["id"] if waiting else None
    if thread is None or interrupt_id is None:
        raise Conflict(f"No run is waiting on approval {approval.id}")
    assistant_id = thread["metadata"].get("assistant_id") or thread["metadata"].get("graph_id")
    run_body = schemas.RunCreate(
        assistant_id=assistant_id,
        command=schemas.CommandBody(resume={interrupt_id: {k: v for k, v in resume.items() if v is not None}}),
        multitask_strategy="reject",
    )
    run = await create_run(svc, user, approval.thread_id, run_body, affinity=True)
    await svc.engine.wait_finished(run.run_id)
    return {"run_id": run.run_id, "thread_id": approval.thread_id, "output": run.stream.result}


async def decide(request: Request) -> Response:
    access = Access.of(request)
    body = await parse(request, DecisionBody, empty_ok=False)
    if body.decision == "edit" and not body.args:
        raise Invalid("an edit needs the edited 'args'")
    svc: Services = services(request)
    store = _store(request)
    tenant = access.decision_tenant(request.query_params.get("tenant"))
    await access.check_tenants([tenant] if tenant else [])
    approval = await _owned(request, tenant)
    # Who may decide is policy (policies/tools.yaml): operators, never the requester of a destructive call;
    # `confirm` tools also by their requester. The decider is the authenticated principal, never a body field.
    access.check_decision(tool=approval.tool, requester=approval.principal, tenant=approval.tenant,
                          what=f"Approval {approval.id}")
    if approval.status == "pending" and approval.expires_at.timestamp() <= time.time():
        await store.expire_due()  # records the expiry (and its audit event) now rather than on the next round
        raise Conflict(f"Approval {approval.id} has expired")
    if approval.status != "pending":
        raise Conflict(f"Approval {approval.id} is already {approval.status}")
    if body.decision == "edit":
        # The graph's own rules first (same tool, no tenant switch, argument types, policy constraints; against the
        # schema the waiting call carries), then the MCP tool's published input schema, for the console's form.
        # A waiting run carries the schema its toolbox listed for the call; an MCP client's request (no run) is
        # checked against the schema the MCP server publishes for the tool.
        thread = await svc.threads.find(approval.thread_id) if approval.thread_id else None
        if thread is not None:
            waiting = (_waiting(thread, approval.id) or {}).get("value") or {}
            # Masked arguments (the real call is sealed in the run) are checked by the run itself, which unseals
            # them: an argument left as shown keeps its real value there, and a bad edit is asked again.
            problem = None if waiting.get("args_masked") else edit_problem(
                approval.tool, approval.args or {}, body.args or {}, waiting.get("input_schema"))
            if problem:
                raise Invalid(f"edit refused: {problem}")
        else:
            schema = input_schema(approval.server, approval.tool)
            problems = schema_errors(schema, body.args or {}) if schema else []
            problem = edit_problem(approval.tool, approval.args or {}, body.args or {}, schema)
            if problems or problem:
                raise Invalid("; ".join(problems) or f"edit refused: {problem}")
    identity = access.decider()[0]
    if not approval.thread_id:
        # Requested by an MCP client (no run waits): the decision is the record; the identical retry spends it.
        from interlock.tools.approvals import ApprovalError

        try:
            decided = await store.decide(
                approval.id, "reject" if body.decision == "reject" else "approve", decided_by=identity,
                reason=body.reason, args=body.args if body.decision == "edit" else None)
        except ApprovalError as exc:
            raise Conflict(str(exc)) from None
        return JSONResponse({"approval": _out(decided), "run_id": None, "thread_id": None, "output": None})
    # No identity in the resume value: the approval node records the resuming run's authenticated principal.
    resume = {"decision": body.decision, "args": body.args, "reason": body.reason}
    result = await resume_waiting_run(svc, access.user, approval, resume)
    decided = await store.get(approval.id)
    return JSONResponse({"approval": _out(decided), **result})


async def events(request: Request) -> Response:
    """SSE: `event: approval` with `{"kind": requested|approved|edited|rejected|consumed|expired, "approval"}`
    for every change of the tenant's approvals from now on, polled from the shared database (MCP servers in
    other processes create approvals too). A comment line every 15 s keeps proxies from closing it."""
    _, tenant = await _operator(request)
    store = _store(request)
    poll = get_settings().approvals_poll_seconds

    async def stream() -> AsyncIterator[bytes]:
        overlap = 5.0  # other processes' clocks and commits may land slightly out of order
        cursor = time.time() - overlap
        seen: dict[tuple[float, str, str], None] = {}
        last_beat = time.monotonic()
        yield b": connected\n\n"
        while True:
            for change in await store.changes(tenant, cursor - overlap):
                if change in seen:
                    continue
                seen[change] = None
                seq, approval_id, kind = change
                cursor = max(cursor, seq)
                approval = await store.get(approval_id)
                data = dumps({"kind": kind, "approval": _out(approval)})
                yield b"event: approval\ndata: " + data + b"\n\n"
            for key in [k for k in seen if k[0] < cursor - 2 * overlap]:
                del seen[key]
            if time.monotonic() - last_beat > HEARTBEAT_SECONDS:
                last_beat = time.monotonic()
                yield b": heartbeat\n\n"
            await asyncio.sleep(poll)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


routes = [
    Route("/approvals", list_approvals, methods=["GET"]),
    Route("/approvals/events", events, methods=["GET"]),
    Route("/approvals/operator", operator, methods=["GET"]),
    Route("/approvals/{approval_id}", get_approval, methods=["GET"]),
    Route("/approvals/{approval_id}", decide, methods=["POST"]),
]
