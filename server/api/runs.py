"""/runs routes: create (background, stream, wait), join, cancel, list and delete, stateful and stateless."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from interlock.server import clock, schemas
from interlock.server.auth import User, matches, request_user
from interlock.server.authorization import Access
from interlock.server.bodies import parse, parse_list
from interlock.server.engine import EPHEMERAL, run_tenant
from interlock.server.errors import Conflict, Invalid, NotFound
from interlock.server.runs import run_out
from interlock.server.serialization import dumps, loads
from interlock.server.services import Services, services
from interlock.server.streams import HEARTBEAT_SECONDS, Event, RunStream, sse_frame
from interlock.server.threads import check_uuid
from interlock.server.webhooks import check_url
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

REJECT_DETAIL = "Thread is already running a task. Wait for it to finish or choose a different multitask strategy."
_detached: set[asyncio.Task[Any]] = set()


def _detach(coro: Any) -> None:
    """Run cleanup that must survive the request being cancelled (client disconnects)."""
    task = asyncio.ensure_future(coro)
    _detached.add(task)
    task.add_done_callback(_detached.discard)


def _paths(thread_id: str | None, run_id: str, temporary: bool) -> tuple[str, str]:
    base = f"/runs/{run_id}" if temporary or thread_id is None else f"/threads/{thread_id}/runs/{run_id}"
    return base, base


async def create_run(
    svc: Services, user: User, thread_id: str | None, body: schemas.RunCreate, *, affinity: bool
) -> tuple[dict[str, Any], RunStream]:
    if body.input is not None and body.command is not None:
        raise Invalid("'input' and 'command' are mutually exclusive")
    if body.checkpoint_id and body.checkpoint:
        raise Invalid("'checkpoint' and 'checkpoint_id' are mutually exclusive")
    if thread_id is None and (body.checkpoint or body.checkpoint_id):
        raise Invalid("'checkpoint' needs a thread")
    if body.webhook:
        check_url(body.webhook)
    access = Access(svc, user)
    assistant = await access.assistant_for_run(body.assistant_id)
    temporary = thread_id is None
    run_id = clock.new_id()
    value = {
        "thread_id": thread_id,
        "assistant_id": assistant["assistant_id"],
        "run_id": run_id,
        "status": "pending",
        "metadata": body.metadata or {},
        "kwargs": body.model_dump(exclude={"metadata"}),
        "multitask_strategy": body.multitask_strategy,
        "prevent_insert_if_inflight": True,
        "after_seconds": body.after_seconds,
        "if_not_exists": body.if_not_exists,
    }
    filt = await svc.authorizer.authorize(user, "threads", "create_run", value)
    await _admit(svc, user, body)
    strategy = body.multitask_strategy or "enqueue"
    keep_thread = body.on_completion == "keep"
    if temporary and not keep_thread:
        thread_id = clock.new_id()  # ephemeral: no thread row, in-memory checkpoints, deleted on completion
    elif temporary:
        thread = await svc.threads.create(
            None,
            {**access.owner(filt), "graph_id": assistant["graph_id"], "assistant_id": assistant["assistant_id"]},
            None,
        )
        thread_id = thread["thread_id"]
    else:
        assert thread_id is not None
        check_uuid(thread_id, "thread ID")
        thread = await svc.threads.find(thread_id)
        if thread is None:
            if body.if_not_exists != "create":
                raise NotFound(f"Thread {thread_id} not found")
            owner = {k: v for k, v in (filt or {}).items() if not isinstance(v, dict)}
            thread = await svc.threads.create(thread_id, owner, "do_nothing")
        elif not matches(thread["metadata"], filt):
            raise NotFound(f"Thread {thread_id} not found")
        if body.command is not None:
            access.check_thread_command(thread)
        if body.strict_resume and body.command and isinstance(body.command.resume, dict):
            pending = {i["id"] for items in thread["interrupts"].values() for i in items}
            unknown = sorted(set(body.command.resume) - pending)
            if unknown:
                raise Invalid(f"unknown interrupt id(s) in command.resume: {unknown}")
        active = await svc.runs.active_for_thread(thread_id)
        if active:
            if strategy == "reject":
                raise Conflict(REJECT_DETAIL)
            if strategy in ("interrupt", "rollback"):
                for run in active:
                    await svc.engine.cancel(run, strategy)
        meta = thread["metadata"]
        if meta.get("graph_id") != assistant["graph_id"] or meta.get("assistant_id") != assistant["assistant_id"]:
            # Agent Chat UI lists threads by these keys.
            await svc.threads.merge_metadata(
                thread_id, {"graph_id": assistant["graph_id"], "assistant_id": assistant["assistant_id"]}
            )
    on_disconnect = body.on_disconnect or ("continue" if body.stream_resumable else "cancel")
    durability = body.durability
    if durability is None and body.checkpoint_during is not None:
        durability = "async" if body.checkpoint_during else "exit"
    checkpoint = body.checkpoint.model_dump(exclude_none=True) if body.checkpoint else None
    if body.checkpoint_id:
        checkpoint = {"checkpoint_id": body.checkpoint_id}
    kwargs = {
        "input": body.input,
        "command": body.command.model_dump(exclude_none=True) if body.command else None,
        "config": body.config,
        "context": body.context,
        "stream_mode": body.modes(),
        "subgraphs": body.stream_subgraphs,
        "resumable": body.stream_resumable,
        "interrupt_before": body.interrupt_before,
        "interrupt_after": body.interrupt_after,
        "checkpoint": checkpoint,
        "durability": durability,
        "on_disconnect": on_disconnect,
        "on_completion": body.on_completion or ("delete" if temporary else "keep"),
        "user": user.dict() if user.is_authenticated else None,
        "owner": access.owner(filt),
        "webhook": body.webhook,
    }
    stream = svc.streams.open(run_id, body.stream_resumable)
    run = await svc.runs.insert(
        run_id=run_id,
        thread_id=thread_id,
        assistant_id=assistant["assistant_id"],
        metadata=body.metadata or {},
        kwargs=kwargs,
        multitask_strategy=strategy,
        after_seconds=body.after_seconds,
        temporary=(EPHEMERAL if not keep_thread else 1) if temporary else 0,
        affinity=svc.engine.worker_id if affinity else None,
    )
    if not temporary or keep_thread:
        await svc.threads.set_status(thread_id, "busy")
    svc.engine.wake()
    return run, stream


async def _admit(svc: Services, user: User, body: schemas.RunCreate) -> None:
    """Tenant request/token/spend limits: refused with 429 and Retry-After before anything runs."""
    if svc.limiter is None:
        return
    tenant = run_tenant({"user": user.dict() if user.is_authenticated else None, "config": body.config})
    if not tenant:
        return
    decision = await svc.limiter.admit(tenant)
    if not decision.allowed:
        from interlock.server.metrics import RATE_LIMITED

        RATE_LIMITED.labels(decision.reason or "limit").inc()
        raise HTTPException(
            429, f"tenant {tenant} is over its {decision.reason} limit", headers=decision.headers()
        )


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
                _detach(_cancel_if_active(svc, run["run_id"]))

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", **(headers or {})},
    )


async def _cancel_if_active(svc: Services, run_id: str) -> None:
    row = await svc.runs.find(run_id)
    if row is not None and row["status"] in ("pending", "running"):
        await svc.engine.cancel(row, "interrupt")


async def _output(svc: Services, run_id: str, thread_id: str, stream: RunStream | None) -> Any:
    if stream is not None and stream.result is not None:
        return stream.result
    thread = await svc.threads.find(thread_id)
    if thread is None:
        return None
    if thread["error"]:
        return {"__error__": thread["error"]}
    values = thread["values"]
    interrupts = [i for items in (thread["interrupts"] or {}).values() for i in items]
    if interrupts and isinstance(values, dict):
        values = {**values, "__interrupt__": interrupts}
    return values


def wait_response(
    svc: Services,
    run: dict[str, Any],
    stream: RunStream | None,
    *,
    cancel_on_disconnect: bool,
    headers: dict[str, str],
) -> StreamingResponse:
    """The final values as JSON. Long waits send leading newlines (valid JSON whitespace) to keep proxies
    and clients from timing out, as the reference does."""

    async def body() -> AsyncIterator[bytes]:
        finished = False
        try:
            async for _ in _until_finished(svc, run["run_id"]):
                yield b"\n"
            finished = True
            yield dumps(await _output(svc, run["run_id"], run["thread_id"], stream))
        finally:
            if not finished and cancel_on_disconnect:
                _detach(_cancel_if_active(svc, run["run_id"]))

    return StreamingResponse(body(), media_type="application/json", headers=headers)


# -- handlers ---------------------------------------------------------------------------------------------
async def create_background(request: Request) -> Response:
    body = await parse(request, schemas.RunCreate, empty_ok=False)
    run, _ = await create_run(services(request), request_user(request), request.path_params.get("thread_id"), body, affinity=False)
    base, _ = _paths(run["thread_id"], run["run_id"], bool(run["temporary"]))
    return JSONResponse(run_out(run), headers={"Content-Location": base})


async def create_stream(request: Request) -> Response:
    body = await parse(request, schemas.RunCreate, empty_ok=False)
    run, stream = await create_run(services(request), request_user(request), request.path_params.get("thread_id"), body, affinity=True)
    base, _ = _paths(run["thread_id"], run["run_id"], bool(run["temporary"]))
    kw = loads(run["kwargs"])
    return sse_response(
        services(request),
        run,
        stream.follow(0),
        with_ids=body.stream_resumable,
        cancel_on_disconnect=kw["on_disconnect"] == "cancel",
        headers={"Location": f"{base}/stream", "Content-Location": base},
    )


async def create_wait(request: Request) -> Response:
    body = await parse(request, schemas.RunCreate, empty_ok=False)
    run, stream = await create_run(services(request), request_user(request), request.path_params.get("thread_id"), body, affinity=True)
    base, _ = _paths(run["thread_id"], run["run_id"], bool(run["temporary"]))
    kw = loads(run["kwargs"])
    return wait_response(
        services(request),
        run,
        stream,
        cancel_on_disconnect=kw["on_disconnect"] == "cancel",
        headers={"Location": f"{base}/join", "Content-Location": base},
    )


async def create_batch(request: Request) -> Response:
    bodies = await parse_list(request, schemas.RunCreate)
    if len(bodies) > 100:
        raise Invalid("a batch holds at most 100 runs")
    out = []
    for body in bodies:
        run, _ = await create_run(services(request), request_user(request), None, body, affinity=False)
        out.append(run_out(run))
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
    if status and status not in ("pending", "running", "error", "success", "timeout", "interrupted"):
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


async def cancel_many(request: Request) -> Response:
    body = await parse(request, schemas.RunCancelMany)
    action = request.query_params.get("action", "interrupt")
    if action not in ("interrupt", "rollback"):
        raise Invalid("action must be 'interrupt' or 'rollback'")
    svc = services(request)
    if body.status and (body.thread_id or body.run_ids):
        raise Invalid("give either 'status' or 'thread_id'/'run_ids'")
    if body.status:
        statuses = ("pending", "running") if body.status == "all" else (body.status,)
        marks = ", ".join("?" for _ in statuses)
        rows = await svc.runs.db.fetchall(f"SELECT run_id FROM runs WHERE status IN ({marks})", list(statuses))
        run_ids = [r["run_id"] for r in rows]
    elif body.thread_id and not body.run_ids:
        run_ids = [r["run_id"] for r in await svc.runs.active_for_thread(body.thread_id)]
    else:
        run_ids = body.run_ids or []
    access = Access(svc, request_user(request))
    for rid in run_ids:
        run = await svc.runs.find(rid)
        if run is None or (body.thread_id and run["thread_id"] != body.thread_id):
            continue
        if not await access.run_visible(run, "update"):
            continue
        if run["status"] in ("pending", "running"):
            await svc.engine.cancel(run, action)
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
    if stream is not None:
        after = last if (last is not None and stream.resumable) else len(stream.events)
        if last == 0:
            after = 0
        events = stream.follow(after)
        with_ids = stream.resumable
    elif svc.streams.mirror is not None and (
        run["status"] in ("pending", "running") or await svc.streams.mirror.exists(run["run_id"])
    ):
        # Executing (or recently executed) on another replica: replay and follow its copy in Redis.
        kwargs = loads(run["kwargs"]) or {}
        events = svc.streams.mirror.follow(run["run_id"], last or 0, HEARTBEAT_SECONDS)
        with_ids = bool(kwargs.get("resumable"))
    else:
        # Finished long ago, or on another replica with no shared stream copies: heartbeats until it ends.
        events = _until_finished(svc, run["run_id"])
        with_ids = False
    return sse_response(svc, run, events, with_ids=with_ids, cancel_on_disconnect=cancel, modes=modes)


async def _until_finished(svc: Services, run_id: str) -> AsyncIterator[Event | None]:
    """None (a heartbeat) every HEARTBEAT_SECONDS until the run is no longer pending or running."""
    waiter = asyncio.ensure_future(svc.engine.wait_finished(run_id))
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
    Route("/runs/cancel", cancel_many, methods=["POST"]),
    Route("/runs/{run_id}/join", join, methods=["GET"]),
    Route("/runs/{run_id}/stream", join_stream, methods=["GET"]),
]
