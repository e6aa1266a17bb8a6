"""/runs routes: create (background, stream, wait), join, cancel, list and delete, stateful and stateless."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from interlock.server import schemas
from interlock.server.auth import request_user
from interlock.server.authorization import Access
from interlock.server.bodies import parse, parse_list
from interlock.server.engine import RunJob
from interlock.server.errors import Conflict, Invalid
from interlock.server.run_service import RUN_STATUSES, cancel_many, create_run, run_output
from interlock.server.runs import run_out
from interlock.server.serialization import dumps
from interlock.server.services import Services, services
from interlock.server.streams import HEARTBEAT_SECONDS, Event, RunStream, sse_frame
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_detached: set[asyncio.Task[Any]] = set()


def _detach(coro: Any) -> None:
    """Run cleanup that must survive the request being cancelled (client disconnects)."""
    task = asyncio.ensure_future(coro)
    _detached.add(task)
    task.add_done_callback(_detached.discard)


def _paths(thread_id: str | None, run_id: str, temporary: bool) -> tuple[str, str]:
    base = f"/runs/{run_id}" if temporary or thread_id is None else f"/threads/{thread_id}/runs/{run_id}"
    return base, base


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id")
    if raw is None:
        return None
    raw = raw.strip()
    if raw == "-1" or raw == "":
        return 0
    if raw.isdigit():
        return int(raw)
    raise Invalid(f"Last-Event-ID must be -1 or an event id sent by this server, got {raw!r}")


def sse_response(
    svc: Services,
    run: dict[str, Any],
    events: AsyncIterator[Event | None],
    *,
    with_ids: bool,
    cancel_on_disconnect: bool,
    modes: set[str] | None = None,
    headers: dict[str, str] | None = None,
) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        finished = False
        try:
            async for event in events:
                if event is not None and modes is not None:
                    base = event.name.split("|")[0].split("/")[0]
                    if base not in modes and base not in ("metadata", "error"):
                        continue
                yield sse_frame(event, with_ids)
            finished = True
        finally:
            if not finished and cancel_on_disconnect:
                _detach(svc.engine.cancel_if_active(run["run_id"]))

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", **(headers or {})},
    )


def wait_response(
    svc: Services,
    run: dict[str, Any],
    stream: RunStream | None,
    *,
    cancel_on_disconnect: bool,
    headers: dict[str, str],
    pending: asyncio.Event | None = None,
) -> StreamingResponse:
    """The final values as JSON. Long waits send leading newlines (valid JSON whitespace) to keep proxies
    and clients from timing out, as the reference does. `pending`: see Engine.wait_finished."""

    async def body() -> AsyncIterator[bytes]:
        finished = False
        try:
            async for _ in _until_finished(svc, run["run_id"], pending):
                yield b"\n"
            finished = True
            yield dumps(await run_output(svc, run["thread_id"], stream))
        finally:
            if not finished and cancel_on_disconnect:
                _detach(svc.engine.cancel_if_active(run["run_id"]))

    return StreamingResponse(body(), media_type="application/json", headers=headers)


# -- handlers ---------------------------------------------------------------------------------------------
async def create_background(request: Request) -> Response:
    body = await parse(request, schemas.RunCreate, empty_ok=False)
    run = await create_run(services(request), request_user(request), request.path_params.get("thread_id"), body, affinity=False)
    base, _ = _paths(run.thread_id, run.run_id, bool(run.row["temporary"]))
    return JSONResponse(run_out(run.row), headers={"Content-Location": base})


async def create_stream(request: Request) -> Response:
    body = await parse(request, schemas.RunCreate, empty_ok=False)
    run = await create_run(services(request), request_user(request), request.path_params.get("thread_id"), body, affinity=True)
    base, _ = _paths(run.thread_id, run.run_id, bool(run.row["temporary"]))
    return sse_response(
        services(request),
        run.row,
        run.stream.follow(0),
        with_ids=body.stream_resumable,
        cancel_on_disconnect=run.options.on_disconnect == "cancel",
        headers={"Location": f"{base}/stream", "Content-Location": base},
    )


async def create_wait(request: Request) -> Response:
    body = await parse(request, schemas.RunCreate, empty_ok=False)
    svc = services(request)
    run = await create_run(svc, request_user(request), request.path_params.get("thread_id"), body, affinity=True)
    pending = svc.engine.expect_finish(run.run_id)  # no await since its creation: it cannot have been claimed yet
    base, _ = _paths(run.thread_id, run.run_id, bool(run.row["temporary"]))
    return wait_response(
        svc,
        run.row,
        run.stream,
        cancel_on_disconnect=run.options.on_disconnect == "cancel",
        headers={"Location": f"{base}/join", "Content-Location": base},
        pending=pending,
    )


async def create_batch(request: Request) -> Response:
    bodies = await parse_list(request, schemas.RunCreate)
    if len(bodies) > 100:
        raise Invalid("a batch holds at most 100 runs")
    out = []
    for body in bodies:
        run = await create_run(services(request), request_user(request), None, body, affinity=False)
        out.append(run_out(run.row))
    return JSONResponse(out)


async def _thread_run(request: Request, action: str = "read") -> tuple[Services, dict[str, Any]]:
    access = Access.of(request)
    run = await access.run(request.path_params["run_id"], request.path_params.get("thread_id"), action)
    return access.svc, run


async def list_runs(request: Request) -> Response:
    svc = services(request)
    tid = request.path_params["thread_id"]
    filt = await svc.authorizer.authorize(request_user(request), "threads", "read", {"thread_id": tid})
    await svc.threads.get(tid, filt)
    try:
        limit = int(request.query_params.get("limit", 10))
        offset = int(request.query_params.get("offset", 0))
    except ValueError:
        raise Invalid("limit and offset must be integers") from None
    if not (1 <= limit <= 1000 and 0 <= offset <= schemas.INT64_MAX):
        raise Invalid("limit must be 1-1000 and offset 0 or more (64-bit)")
    status = request.query_params.get("status")
    if status and status not in RUN_STATUSES:
        raise Invalid(f"unknown run status '{status}'")
    rows = await svc.runs.list(tid, limit=limit, offset=offset, status=status)
    items = [run_out(r) for r in rows]
    select = request.query_params.getlist("select")
    if select:
        items = [{k: v for k, v in r.items() if k in select} for r in items]
    return JSONResponse(items)


async def get_run(request: Request) -> Response:
    _, run = await _thread_run(request)
    return JSONResponse(run_out(run))


async def delete_run(request: Request) -> Response:
    svc, run = await _thread_run(request, "delete")
    if run["status"] in ("pending", "running"):
        raise Conflict("Run is still active: cancel it before deleting it")
    await svc.runs.delete(run["run_id"])
    return Response(status_code=204)


async def cancel_run(request: Request) -> Response:
    svc, run = await _thread_run(request, "update")
    action = request.query_params.get("action", "interrupt")
    if action not in ("interrupt", "rollback"):
        raise Invalid("action must be 'interrupt' or 'rollback'")
    wait = request.query_params.get("wait", "false").lower() in ("1", "true")
    if run["status"] not in ("pending", "running"):
        raise Conflict(f"Run {run['run_id']} is not pending or running (status: {run['status']})")
    await svc.engine.cancel(run, action)
    if wait:
        await svc.engine.wait_finished(run["run_id"])
        row = await svc.runs.find(run["run_id"])
        return JSONResponse(run_out(row)) if row else Response(status_code=204)
    return Response(status_code=202)


async def cancel_runs(request: Request) -> Response:
    body = await parse(request, schemas.RunCancelMany)
    action = request.query_params.get("action", "interrupt")
    if action not in ("interrupt", "rollback"):
        raise Invalid("action must be 'interrupt' or 'rollback'")
    await cancel_many(services(request), request_user(request), body, action)
    return Response(status_code=204)


async def join(request: Request) -> Response:
    svc, run = await _thread_run(request)
    stream = svc.streams.get(run["run_id"])
    base, _ = _paths(run["thread_id"], run["run_id"], bool(run["temporary"]))
    return wait_response(svc, run, stream, cancel_on_disconnect=False, headers={"Content-Location": base})


async def join_stream(request: Request) -> Response:
    svc, run = await _thread_run(request)
    stream = svc.streams.get(run["run_id"])
    last = _last_event_id(request)
    cancel = request.query_params.get("cancel_on_disconnect", "false").lower() in ("1", "true")
    modes_raw = request.query_params.getlist("stream_mode")
    modes = {m for raw in modes_raw for m in raw.split(",") if m} or None
    if modes:
        unknown = modes - set(schemas.STREAM_MODES)
        if unknown:
            raise Invalid(f"unknown stream_mode {sorted(unknown)}")
        if "messages-tuple" in modes:
            modes.add("messages")
    mirror = svc.streams.mirror
    if stream is not None and mirror is not None and stream.base and last is not None and last < stream.base:
        # Resumed here after a crash or takeover: earlier attempts' events are only in the shared copy.
        stream = None
    if stream is not None:
        after = last if (last is not None and stream.resumable) else stream.last_seq
        if last == 0:
            after = 0
        events = stream.follow(after)
        with_ids = stream.resumable
    elif mirror is not None and await mirror.has_copy(run["run_id"], active=run["status"] in ("pending", "running")):
        # Executing (or recently executed) on another replica: replay and follow its copy in Redis.
        events = mirror.follow(run["run_id"], last or 0, HEARTBEAT_SECONDS)
        with_ids = RunJob.from_row(run).options.resumable
    else:
        # Finished long ago, or on another replica with no shared stream copies: heartbeats until it ends.
        events = _until_finished(svc, run["run_id"])
        with_ids = False
    return sse_response(svc, run, events, with_ids=with_ids, cancel_on_disconnect=cancel, modes=modes)


async def _until_finished(
    svc: Services, run_id: str, pending: asyncio.Event | None = None
) -> AsyncIterator[Event | None]:
    """None (a heartbeat) every HEARTBEAT_SECONDS until the run is no longer pending or running."""
    waiter = asyncio.ensure_future(svc.engine.wait_finished(run_id, pending=pending))
    try:
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=HEARTBEAT_SECONDS)
            if done:
                return
            yield None
    finally:
        waiter.cancel()


routes = [
    Route("/threads/{thread_id}/runs", create_background, methods=["POST"]),
    Route("/threads/{thread_id}/runs", list_runs, methods=["GET"]),
    Route("/threads/{thread_id}/runs/stream", create_stream, methods=["POST"]),
    Route("/threads/{thread_id}/runs/wait", create_wait, methods=["POST"]),
    Route("/threads/{thread_id}/runs/{run_id}", get_run, methods=["GET"]),
    Route("/threads/{thread_id}/runs/{run_id}", delete_run, methods=["DELETE"]),
    Route("/threads/{thread_id}/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
    Route("/threads/{thread_id}/runs/{run_id}/join", join, methods=["GET"]),
    Route("/threads/{thread_id}/runs/{run_id}/stream", join_stream, methods=["GET"]),
    Route("/runs", create_background, methods=["POST"]),
    Route("/runs/stream", create_stream, methods=["POST"]),
    Route("/runs/wait", create_wait, methods=["POST"]),
    Route("/runs/batch", create_batch, methods=["POST"]),
    Route("/runs/cancel", cancel_runs, methods=["POST"]),
    Route("/runs/{run_id}/join", join, methods=["GET"]),
    Route("/runs/{run_id}/stream", join_stream, methods=["GET"]),
]
