"""GET /threads/{thread_id}/runs/{run_id}/trace: a run's redacted trace, under the thread's auth scoping."""

from __future__ import annotations

from interlock.server.auth import request_user
from interlock.server.errors import NotFound
from interlock.server.services import services
from interlock.server.threads import check_uuid
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def get_trace(request: Request) -> Response:
    svc = services(request)
    tid = check_uuid(request.path_params["thread_id"], "thread ID")
    rid = check_uuid(request.path_params["run_id"], "run ID")
    filt = await svc.authorizer.authorize(request_user(request), "threads", "read", {"thread_id": tid, "run_id": rid})
    await svc.threads.get(tid, filt)
    doc = await svc.engine.traces.get(tid, rid) if svc.engine.traces else None
    if doc is None:
        raise NotFound(f"No trace for run {rid}")
    return JSONResponse(doc)


routes = [Route("/threads/{thread_id}/runs/{run_id}/trace", get_trace, methods=["GET"])]
