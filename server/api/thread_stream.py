"""`GET /threads/{thread_id}/stream`: follow a thread rather than one run, as the reference's `threads.join_stream`.

The connection stays open (heartbeats) until the client leaves. Every run on the thread, the one active when
the client connects and each later one, is streamed from its first event, so nothing between runs is lost.
`stream_mode` picks what is sent: `run_modes` (default) the runs' own events followed by a `run_done` event,
`lifecycle` one `lifecycle` event as each run starts and ends, `state_update` the thread's values, status and
interrupts after each run. A run executing on another replica is followed through the shared Redis copy when
there is one, otherwise only its end is reported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from interlock.server import clock
from interlock.server.api.runs import _until_finished, sse_response
from interlock.server.authorization import Access
from interlock.server.errors import Invalid
from interlock.server.serialization import dumps
from interlock.server.services import Services, services
from interlock.server.streams import HEARTBEAT_SECONDS, Event
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

THREAD_MODES = ("run_modes", "lifecycle", "state_update")


def _modes(request: Request) -> set[str]:
    modes = {m for raw in request.query_params.getlist("stream_mode") for m in raw.split(",") if m} or {"run_modes"}
    unknown = modes - set(THREAD_MODES)
    if unknown:
        raise Invalid(f"unknown thread stream_mode {sorted(unknown)}: use {list(THREAD_MODES)}")
    return modes


def _event(name: str, data: Any) -> Event:
    return Event(0, name, dumps(data))


async def _run_events(svc: Services, run: dict[str, Any]) -> AsyncIterator[Event | None]:
    stream = svc.streams.get(run["run_id"])
    if stream is not None:
        async for event in stream.follow(0):
            yield event
    elif svc.streams.mirror is not None:
        async for event in svc.streams.mirror.follow(run["run_id"], 0, HEARTBEAT_SECONDS):
            yield event
    async for beat in _until_finished(svc, run["run_id"]):
        yield beat


async def _next_run(svc: Services, thread_id: str, since: str, seen: set[str]) -> dict[str, Any] | None:
    """The oldest run not yet streamed that is active or was created since the client connected (so a run
    that finished between two looks is still reported)."""
    recent = await svc.runs.list(thread_id, limit=50, offset=0, status=None)
    fresh = [
        r
        for r in recent
        if r["run_id"] not in seen and (r["status"] in ("pending", "running") or r["created_at"] >= since)
    ]
    return min(fresh, key=lambda r: (r["created_at"], r["run_id"])) if fresh else None


async def _thread_events(
    svc: Services, thread_id: str, modes: set[str], since: str
) -> AsyncIterator[Event | None]:
    seen: set[str] = set()
    while True:
        run = await _next_run(svc, thread_id, since, seen)
        if run is None:
            if not await svc.streams.wait_started(HEARTBEAT_SECONDS):
                yield None
            continue
        seen.add(run["run_id"])
        if "lifecycle" in modes:
            yield _event("lifecycle", {"event": "run_started", "run_id": run["run_id"], "thread_id": thread_id})
        async for event in _run_events(svc, run):
            if event is None or "run_modes" in modes:
                yield event
        row = await svc.runs.find(run["run_id"])
        status = row["status"] if row else "unknown"
        if "run_modes" in modes:
            yield _event("run_done", {"run_id": run["run_id"], "status": status})
        if "lifecycle" in modes:
            yield _event("lifecycle", {"event": "run_done", "run_id": run["run_id"], "status": status})
        if "state_update" in modes:
            thread = await svc.threads.find(thread_id)
            if thread is not None:
                yield _event(
                    "state_update",
                    {k: thread[k] for k in ("thread_id", "status", "values", "interrupts", "error")},
                )


async def join_thread_stream(request: Request) -> Response:
    svc = services(request)
    tid = request.path_params["thread_id"]
    await Access.of(request).thread(tid, "read")
    modes = _modes(request)
    since = clock.iso()  # fixed before the response starts: a run created after the client got headers is seen
    return sse_response(svc, {"run_id": None}, _thread_events(svc, tid, modes, since), with_ids=False, cancel_on_disconnect=False)


routes = [Route("/threads/{thread_id}/stream", join_thread_stream, methods=["GET"])]
