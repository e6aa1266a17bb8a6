"""/threads routes: the thread records, their state, history, copies and pruning."""

from __future__ import annotations

from typing import Any

from interlock.policies.pii import seal_input
from interlock.server import schemas
from interlock.server.auth import matches, request_user
from interlock.server.authorization import Access
from interlock.server.bodies import parse
from interlock.server.checkpoints import copy_thread
from interlock.server.engine import build_command
from interlock.server.errors import Conflict, Invalid, NotFound
from interlock.server.project import graph_for_run
from interlock.server.run_service import sealed_command, seals_user_input
from interlock.server.serialization import jsonable
from interlock.server.services import Services, services
from interlock.server.state import checkpoint_of, pending_interrupts, snapshot_out
from interlock.server.threads import check_uuid
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def _authorize(request: Request, action: str, value: dict[str, Any]) -> dict[str, Any] | None:
    return await services(request).authorizer.authorize(request_user(request), "threads", action, value)


def _ttl_minutes(ttl: Any) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, int | float):
        return float(ttl)
    return float(ttl.ttl)


async def create(request: Request) -> Response:
    body = await parse(request, schemas.ThreadCreate)
    value = body.model_dump()
    value["metadata"] = value.get("metadata") or {}
    filt = await _authorize(request, "create", value)
    metadata = {**value["metadata"], **{k: v for k, v in (filt or {}).items() if not isinstance(v, dict)}}
    if body.graph_id:
        metadata.setdefault("graph_id", body.graph_id)
    svc = services(request)
    thread = await svc.threads.create(body.thread_id, metadata, body.if_exists, _ttl_minutes(body.ttl))
    if not Access.of(request).may_reuse(thread, filt):
        raise Conflict(f"Thread {thread['thread_id']} already exists")  # someone else's: never returned
    if body.supersteps:
        seal = seals_user_input(svc, body.graph_id, request_user(request), None)
        await _apply_supersteps(svc, thread["thread_id"], body.graph_id, body.supersteps, seal)
        thread = await svc.threads.get(thread["thread_id"])
    return JSONResponse(thread)


async def _apply_supersteps(svc: Services, thread_id: str, graph_id: str | None, supersteps: list[Any],
                            seal: bool = False) -> None:
    if not graph_id:
        raise Invalid("graph_id is required with supersteps")
    spec = svc.project.graphs.get(graph_id)
    if spec is None:
        raise NotFound(f"Graph {graph_id} not found")
    config = {"configurable": {"thread_id": thread_id}}
    async with graph_for_run(spec, config, svc.checkpointer, svc.store) as graph:
        steps = [
            [
                (seal_input(u.values) if seal else u.values, u.as_node) if u.command is None
                else (build_command(sealed_command(u.command, seal) or {}), u.as_node)
                for u in step.updates
            ]
            for step in supersteps
        ]
        from langgraph.types import StateUpdate

        await graph.abulk_update_state(
            config, [[StateUpdate(values=v, as_node=n) for v, n in step] for step in steps]
        )
        snapshot = await graph.aget_state(config)
    await svc.threads.record_state(
        thread_id,
        status="interrupted" if snapshot.next else "idle",
        values=jsonable(snapshot.values),
        interrupts=pending_interrupts(snapshot),
    )


async def get(request: Request) -> Response:
    tid = request.path_params["thread_id"]
    filt = await _authorize(request, "read", {"thread_id": tid})
    return JSONResponse(await services(request).threads.get(tid, filt))


async def patch(request: Request) -> Response:
    tid = request.path_params["thread_id"]
    body = await parse(request, schemas.ThreadPatch)
    filt = await _authorize(request, "update", {"thread_id": tid, **body.model_dump()})
    svc = services(request)
    await svc.threads.get(tid, filt)
    return JSONResponse(await svc.threads.patch(tid, body.metadata, _ttl_minutes(body.ttl)))


async def delete(request: Request) -> Response:
    tid = request.path_params["thread_id"]
    filt = await _authorize(request, "delete", {"thread_id": tid})
    svc = services(request)
    await svc.threads.get(tid, filt)
    await svc.engine.delete_thread(tid)
    return Response(status_code=204)


async def search(request: Request) -> Response:
    body = await parse(request, schemas.ThreadSearch)
    filt = await _authorize(request, "search", body.model_dump())
    items = await services(request).threads.search(
        metadata=body.metadata,
        values=body.values,
        status=body.status,
        ids=body.ids,
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
        auth_filter=filt,
    )
    if body.extract:
        for item in items:
            item["extracted"] = {alias: _extract(item, path) for alias, path in body.extract.items()}
    if body.select:
        items = [{k: v for k, v in t.items() if k in body.select or k == "extracted"} for t in items]
    headers = {"X-Pagination-Next": str(body.offset + body.limit)} if len(items) == body.limit else {}
    return JSONResponse(items, headers=headers)


def _extract(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.lstrip("-").isdigit():
            idx = int(part)
            obj = obj[idx] if -len(obj) <= idx < len(obj) else None
        else:
            return None
    return obj


async def count(request: Request) -> Response:
    body = await parse(request, schemas.ThreadCount)
    filt = await _authorize(request, "search", body.model_dump())
    n = await services(request).threads.count(
        metadata=body.metadata, values=body.values, status=body.status, auth_filter=filt
    )
    return JSONResponse(n)


async def copy(request: Request) -> Response:
    tid = request.path_params["thread_id"]
    filt = await _authorize(request, "read", {"thread_id": tid})
    svc = services(request)
    source = await svc.threads.get(tid, filt)
    await _authorize(request, "create", {"metadata": source["metadata"]})
    target = await svc.threads.create(None, source["metadata"], None)
    await copy_thread(svc.checkpointer, tid, target["thread_id"])
    await svc.threads.record_state(
        target["thread_id"],
        status=source["status"] if source["status"] != "busy" else "idle",
        values=source["values"],
        interrupts=source["interrupts"],
        error=source["error"],
    )
    return JSONResponse(await svc.threads.get(target["thread_id"]))


async def prune(request: Request) -> Response:
    body = await parse(request, schemas.ThreadPrune, empty_ok=False)
    svc = services(request)
    pruned = 0
    for tid in body.thread_ids:
        check_uuid(tid, "thread ID")
        filt = await _authorize(request, "delete", {"thread_id": tid})
        thread = await svc.threads.find(tid)
        if thread is None or not matches(thread["metadata"], filt):
            continue
        if body.strategy == "delete":
            await svc.engine.delete_thread(tid)
        else:
            await _keep_latest(svc, tid)
        pruned += 1
    return JSONResponse({"pruned_count": pruned})


async def _keep_latest(svc: Services, thread_id: str) -> None:
    latest = await svc.checkpointer.aget_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
    if latest is None:
        return
    if hasattr(svc.checkpointer, "aprune"):
        try:
            await svc.checkpointer.aprune([thread_id], strategy="keep_latest")
            return
        except NotImplementedError:
            pass
    # Portable fallback: copy the latest checkpoint to a scratch thread, replace the original.
    from interlock.server.checkpoints import delete_after

    await delete_after(svc.checkpointer, thread_id, None)
    await svc.checkpointer.aput(
        {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}},
        latest.checkpoint,
        latest.metadata,
        latest.checkpoint.get("channel_versions", {}),
    )


# -- state ----------------------------------------------------------------------------------------------
async def _thread_graph(request: Request, action: str = "read") -> tuple[Services, dict[str, Any], Any]:
    tid = request.path_params["thread_id"]
    filt = await _authorize(request, action, {"thread_id": tid})
    svc = services(request)
    thread = await svc.threads.get(tid, filt)
    graph_id = thread["metadata"].get("graph_id")
    if graph_id is None or graph_id not in svc.project.graphs:
        return svc, thread, None
    return svc, thread, svc.project.graphs[graph_id]


def _empty_state(thread: dict[str, Any]) -> dict[str, Any]:
    return {
        "values": {},
        "next": [],
        "tasks": [],
        "metadata": {},
        "created_at": None,
        "checkpoint": None,
        "checkpoint_id": None,
        "parent_checkpoint": None,
        "parent_checkpoint_id": None,
        "interrupts": [],
    }


async def _state(request: Request, checkpoint: dict[str, Any] | None, subgraphs: bool) -> Response:
    svc, thread, spec = await _thread_graph(request)
    if spec is None:
        return JSONResponse(_empty_state(thread))
    configurable = {"thread_id": thread["thread_id"], **(checkpoint or {})}
    configurable = {k: v for k, v in configurable.items() if v is not None}
    config = {"configurable": configurable}
    async with graph_for_run(spec, config, svc.checkpointer, svc.store) as graph:
        snapshot = await graph.aget_state(config, subgraphs=subgraphs)
    if checkpoint and checkpoint.get("checkpoint_id") and snapshot.config is None:
        raise NotFound(f"Checkpoint {checkpoint['checkpoint_id']} not found")
    return JSONResponse(snapshot_out(snapshot))


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "false").lower() in ("1", "true")


async def get_state(request: Request) -> Response:
    return await _state(request, None, _flag(request, "subgraphs"))


async def get_state_at(request: Request) -> Response:
    cid = request.path_params["checkpoint_id"]
    return await _state(request, {"checkpoint_id": cid}, _flag(request, "subgraphs"))


async def post_state_checkpoint(request: Request) -> Response:
    body = await parse(request, schemas.StateAtCheckpoint, empty_ok=False)
    return await _state(request, body.checkpoint.model_dump(exclude_none=True), body.subgraphs)


async def update_state(request: Request) -> Response:
    body = await parse(request, schemas.StateUpdate)
    svc, thread, spec = await _thread_graph(request, "update")
    if spec is None:
        raise Invalid("Thread has no graph yet: run it once, or create it with a graph_id")
    Access.of(request).check_thread_command(thread)  # writing state past a waiting approval is deciding it
    if thread["status"] == "busy":
        raise Conflict("Thread is busy: wait for its run to finish before updating its state")
    configurable: dict[str, Any] = {"thread_id": thread["thread_id"]}
    if body.checkpoint:
        configurable.update(body.checkpoint.model_dump(exclude_none=True))
    if body.checkpoint_id:
        configurable["checkpoint_id"] = body.checkpoint_id
    configurable["thread_id"] = thread["thread_id"]
    configurable.setdefault("checkpoint_ns", "")
    config = {"configurable": configurable}
    # User messages written here are stored like a run's input: sealed unless the tenant keeps raw input.
    values = seal_input(body.values) if seals_user_input(svc, thread["metadata"].get("graph_id"),
                                                         request_user(request), None) else body.values
    async with graph_for_run(spec, config, svc.checkpointer, svc.store) as graph:
        try:
            new_config = await graph.aupdate_state(config, values, as_node=body.as_node)
        except Exception as exc:  # noqa: BLE001 - bad node names and values are the caller's error
            raise Invalid(f"cannot update state: {exc}") from None
        snapshot = await graph.aget_state({"configurable": {"thread_id": thread["thread_id"]}})
    await svc.threads.record_state(
        thread["thread_id"],
        status="interrupted" if snapshot.next else "idle",
        values=jsonable(snapshot.values),
        interrupts=pending_interrupts(snapshot),
    )
    return JSONResponse({"checkpoint": checkpoint_of(new_config)})


async def history(request: Request) -> Response:
    if request.method == "GET":
        body = schemas.HistoryRequest.model_validate(
            {"limit": request.query_params.get("limit", 10), "before": request.query_params.get("before")}
        )
    else:
        body = await parse(request, schemas.HistoryRequest)
    svc, thread, spec = await _thread_graph(request)
    if spec is None:
        return JSONResponse([])
    configurable: dict[str, Any] = {"thread_id": thread["thread_id"]}
    if body.checkpoint:
        configurable.update(body.checkpoint.model_dump(exclude_none=True))
        configurable["thread_id"] = thread["thread_id"]
    else:
        configurable["checkpoint_ns"] = ""
    before = None
    if body.before is not None:
        before_id = body.before if isinstance(body.before, str) else body.before.checkpoint_id
        before = {"configurable": {"thread_id": thread["thread_id"], "checkpoint_id": before_id}}
    config = {"configurable": configurable}
    async with graph_for_run(spec, config, svc.checkpointer, svc.store) as graph:
        states = [
            snapshot_out(s)
            async for s in graph.aget_state_history(config, filter=body.metadata, before=before, limit=body.limit)
        ]
    if body.select:
        states = [{k: v for k, v in s.items() if k in body.select} for s in states]
    return JSONResponse(states)


routes = [
    Route("/threads", create, methods=["POST"]),
    Route("/threads/search", search, methods=["POST"]),
    Route("/threads/count", count, methods=["POST"]),
    Route("/threads/prune", prune, methods=["POST"]),
    Route("/threads/{thread_id}", get, methods=["GET"]),
    Route("/threads/{thread_id}", patch, methods=["PATCH"]),
    Route("/threads/{thread_id}", delete, methods=["DELETE"]),
    Route("/threads/{thread_id}/copy", copy, methods=["POST"]),
    Route("/threads/{thread_id}/state", get_state, methods=["GET"]),
    Route("/threads/{thread_id}/state", update_state, methods=["POST"]),
    Route("/threads/{thread_id}/state/checkpoint", post_state_checkpoint, methods=["POST"]),
    Route("/threads/{thread_id}/state/{checkpoint_id}", get_state_at, methods=["GET"]),
    Route("/threads/{thread_id}/history", history, methods=["GET", "POST"]),
]
