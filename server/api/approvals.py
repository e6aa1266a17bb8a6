"""/approvals: the operator's view of irreversible actions waiting for a decision, across threads, scoped by
tenant. Deciding resumes the waiting run with the decision; the graph's approval node records it in the approval
store (decided_by = the operator) and only then lets the tool run."""

from __future__ import annotations

from typing import Any, Literal

from interlock.server import schemas
from interlock.server.auth import User, request_user
from interlock.server.bodies import parse
from interlock.server.errors import Conflict, Invalid, NotFound
from interlock.server.run_service import create_run
from interlock.server.serialization import jsonable
from interlock.server.services import Services, services
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

OPERATOR_PERMISSION = "approvals:decide"


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


def _operator(request: Request) -> tuple[User, str]:
    """The deciding user and their tenant. With auth on, the tenant comes only from the authenticated user."""
    svc = services(request)
    user = request_user(request)
    if not svc.authorizer.enabled:
        tenant = request.query_params.get("tenant")
        if not tenant:
            raise Invalid("query parameter 'tenant' is required in local development mode")
        return User(identity="local-operator"), tenant
    tenant = user.extra.get("tenant_id") or user.extra.get("tenant")
    if not tenant:
        raise HTTPException(403, "the authenticated user has no tenant")
    if OPERATOR_PERMISSION not in user.permissions:
        raise HTTPException(403, f"deciding approvals needs the '{OPERATOR_PERMISSION}' permission")
    return user, str(tenant)


def _out(approval: Any) -> dict[str, Any]:
    return jsonable(approval)


async def list_approvals(request: Request) -> Response:
    _, tenant = _operator(request)
    status = request.query_params.get("status")
    if status and status not in ("pending", "approved", "rejected", "consumed", "expired"):
        raise Invalid(f"unknown approval status '{status}'")
    items = await _store(request).list(tenant, status=status)
    return JSONResponse([_out(a) for a in items])


async def get_approval(request: Request) -> Response:
    _, tenant = _operator(request)
    approval = await _store(request).get(request.path_params["approval_id"])
    if approval is None or approval.tenant != tenant:
        raise NotFound(f"Approval {request.path_params['approval_id']} not found")
    return JSONResponse(_out(approval))


def _waiting_interrupt(thread: dict[str, Any], approval_id: str) -> str | None:
    for items in (thread.get("interrupts") or {}).values():
        for item in items:
            value = item.get("value")
            if isinstance(value, dict) and value.get("approval_id") == approval_id:
                return item["id"]
    return None


async def decide(request: Request) -> Response:
    operator, tenant = _operator(request)
    body = await parse(request, DecisionBody, empty_ok=False)
    if body.decision == "edit" and not body.args:
        raise Invalid("an edit needs the edited 'args'")
    svc: Services = services(request)
    store = _store(request)
    approval_id = request.path_params["approval_id"]
    approval = await store.get(approval_id)
    if approval is None or approval.tenant != tenant:
        raise NotFound(f"Approval {approval_id} not found")
    if approval.status != "pending":
        raise Conflict(f"Approval {approval_id} is already {approval.status}")
    if not approval.thread_id:
        raise Conflict(f"Approval {approval_id} is not attached to a waiting run")
    thread = await svc.threads.find(approval.thread_id)
    interrupt_id = _waiting_interrupt(thread, approval_id) if thread else None
    if thread is None or interrupt_id is None:
        raise Conflict(f"No run is waiting on approval {approval_id}")
    assistant_id = thread["metadata"].get("assistant_id") or thread["metadata"].get("graph_id")
    resume = {"decision": body.decision, "args": body.args, "reason": body.reason, "by": operator.identity}
    run_body = schemas.RunCreate(
        assistant_id=assistant_id,
        command=schemas.CommandBody(resume={interrupt_id: {k: v for k, v in resume.items() if v is not None}}),
        multitask_strategy="reject",
    )
    run = await create_run(svc, operator, approval.thread_id, run_body, affinity=True)
    await svc.engine.wait_finished(run.run_id)
    decided = await store.get(approval_id)
    return JSONResponse(
        {"approval": _out(decided), "run_id": run.run_id, "thread_id": approval.thread_id, "output": run.stream.result}
    )


routes = [
    Route("/approvals", list_approvals, methods=["GET"]),
    Route("/approvals/{approval_id}", get_approval, methods=["GET"]),
    Route("/approvals/{approval_id}", decide, methods=["POST"]),
]
