"""/assistants routes."""

from __future__ import annotations

from typing import Any

from interlock.server import schemas
from interlock.server.assistants import system_assistant_id
from interlock.server.auth import request_user
from interlock.server.authorization import Access
from interlock.server.bodies import parse
from interlock.server.errors import Invalid, NotFound
from interlock.server.project import graph_for_run
from interlock.server.serialization import jsonable
from interlock.server.services import services
from langgraph.pregel import Pregel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def _authorize(request: Request, action: str, value: dict[str, Any]) -> dict[str, Any] | None:
    return await services(request).authorizer.authorize(request_user(request), "assistants", action, value)


async def create(request: Request) -> Response:
    body = await parse(request, schemas.AssistantCreate)
    value = body.model_dump()
    value["metadata"] = value.get("metadata") or {}
    filt = await _authorize(request, "create", value)
    await Access.of(request).check_named_tenants(body.config)
    metadata = {**value["metadata"], **Access.of(request).owner(filt)}
    out = await services(request).assistants.create(
        graph_id=body.graph_id,
        assistant_id=body.assistant_id,
        config=body.config,
        context=body.context,
        metadata=metadata,
        if_exists=body.if_exists,
        name=body.name,
        description=body.description,
    )
    return JSONResponse(out)


async def get(request: Request) -> Response:
    return JSONResponse(await Access.of(request).assistant(request.path_params["assistant_id"], "read"))


async def patch(request: Request) -> Response:
    aid = request.path_params["assistant_id"]
    body = await parse(request, schemas.AssistantPatch)
    await Access.of(request).assistant(aid, "update")
    filt = await _authorize(request, "update", {"assistant_id": aid, **body.model_dump()})
    await Access.of(request).check_named_tenants(body.config)
    out = await services(request).assistants.patch(aid, **body.model_dump(), auth_filter=filt)
    return JSONResponse(out)


async def delete(request: Request) -> Response:
    aid = request.path_params["assistant_id"]
    filt = await _authorize(request, "delete", {"assistant_id": aid})
    svc = services(request)
    assistant = await Access.of(request).assistant(aid, "delete")
    if request.query_params.get("delete_threads", "false").lower() in ("1", "true"):
        for thread in await svc.threads.search(metadata={"assistant_id": assistant["assistant_id"]}, limit=1000):
            await svc.engine.delete_thread(thread["thread_id"])
    await svc.assistants.delete(aid, filt)
    return Response(status_code=204)


async def search(request: Request) -> Response:
    body = await parse(request, schemas.AssistantSearch)
    filt = await _authorize(request, "search", body.model_dump())
    items, more = await services(request).assistants.search(
        metadata=body.metadata,
        graph_id=body.graph_id,
        name=body.name,
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
        auth_filter=filt,
    )
    if body.select:
        items = [{k: v for k, v in a.items() if k in body.select} for a in items]
    headers = {"X-Pagination-Next": str(body.offset + body.limit)} if more > body.limit else {}
    return JSONResponse(items, headers=headers)


async def count(request: Request) -> Response:
    body = await parse(request, schemas.AssistantCount)
    filt = await _authorize(request, "search", body.model_dump())
    n = await services(request).assistants.count(
        metadata=body.metadata, graph_id=body.graph_id, name=body.name, auth_filter=filt
    )
    return JSONResponse(n)


async def versions(request: Request) -> Response:
    aid = request.path_params["assistant_id"]
    body = await parse(request, schemas.AssistantVersionsSearch)
    aid = (await Access.of(request).assistant(aid, "read"))["assistant_id"]
    out = await services(request).assistants.versions(aid, metadata=body.metadata, limit=body.limit, offset=body.offset)
    return JSONResponse(out)


async def set_latest(request: Request) -> Response:
    aid = request.path_params["assistant_id"]
    body = await parse(request, schemas.AssistantSetLatest, empty_ok=False)
    aid = (await Access.of(request).assistant(aid, "update", version=body.version))["assistant_id"]
    return JSONResponse(await services(request).assistants.set_latest(aid, body.version))


async def _graph(request: Request) -> tuple[Pregel, dict[str, Any]]:
    svc = services(request)
    aid = request.path_params["assistant_id"]
    if aid in svc.project.graphs:
        # The reference resolves a graph name to its system assistant here (Studio, RemoteGraph and the JS SDK
        # ask for `/assistants/{graph_name}/graph`); `GET /assistants/{id}` itself stays UUID-only, as there.
        aid = system_assistant_id(aid)
    assistant = await Access.of(request).assistant(aid, "read")
    spec = svc.project.graphs.get(assistant["graph_id"])
    if spec is None:
        raise NotFound(f"Graph {assistant['graph_id']} not found")
    config = {**assistant["config"], "configurable": {**assistant["config"].get("configurable", {})}}
    async with graph_for_run(spec, config, svc.checkpointer, svc.store) as graph:
        return graph, assistant


def _xray(request: Request) -> bool | int:
    raw = request.query_params.get("xray", "false").lower()
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0", ""):
        return False
    try:
        return int(raw)
    except ValueError:
        raise Invalid("xray must be a boolean or an integer") from None


async def graph(request: Request) -> Response:
    g, _ = await _graph(request)
    drawable = g.get_graph(xray=_xray(request))
    return JSONResponse(jsonable(drawable.to_json()))


async def schemas_(request: Request) -> Response:
    g, assistant = await _graph(request)

    def safe(fn: Any) -> Any:
        try:
            return jsonable(fn())
        except Exception:  # noqa: BLE001 - a graph without this schema reports null, as the reference does
            return None

    return JSONResponse(
        {
            "graph_id": assistant["graph_id"],
            "input_schema": safe(g.get_input_jsonschema),
            "output_schema": safe(g.get_output_jsonschema),
            "state_schema": safe(lambda: _state_schema(g)),
            "config_schema": safe(g.get_config_jsonschema),
            "context_schema": safe(g.get_context_jsonschema),
        }
    )


def _state_schema(g: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(g.builder.state_schema).json_schema()


async def subgraphs(request: Request) -> Response:
    g, _ = await _graph(request)
    namespace = request.path_params.get("namespace")
    recurse = request.query_params.get("recurse", "false").lower() in ("1", "true")
    out: dict[str, Any] = {}
    for ns, sub in g.get_subgraphs(namespace=namespace, recurse=recurse):
        out[ns] = {
            "input_schema": jsonable(sub.get_input_jsonschema()),
            "output_schema": jsonable(sub.get_output_jsonschema()),
            "state_schema": jsonable(_state_schema(sub)) if hasattr(sub, "builder") else None,
            "config_schema": jsonable(sub.get_config_jsonschema()),
            "context_schema": jsonable(sub.get_context_jsonschema()),
        }
    return JSONResponse(out)


routes = [
    Route("/assistants", create, methods=["POST"]),
    Route("/assistants/search", search, methods=["POST"]),
    Route("/assistants/count", count, methods=["POST"]),
    Route("/assistants/{assistant_id}", get, methods=["GET"]),
    Route("/assistants/{assistant_id}", patch, methods=["PATCH"]),
    Route("/assistants/{assistant_id}", delete, methods=["DELETE"]),
    Route("/assistants/{assistant_id}/versions", versions, methods=["POST"]),
    Route("/assistants/{assistant_id}/latest", set_latest, methods=["POST"]),
    Route("/assistants/{assistant_id}/graph", graph, methods=["GET"]),
    Route("/assistants/{assistant_id}/schemas", schemas_, methods=["GET"]),
    Route("/assistants/{assistant_id}/subgraphs", subgraphs, methods=["GET"]),
    Route("/assistants/{assistant_id}/subgraphs/{namespace:path}", subgraphs, methods=["GET"]),
]
