"""Health, server info, the OpenAPI document and a self-contained docs page (no CDN: this server may run
offline)."""

from __future__ import annotations

import html
import inspect
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from interlock.server import schemas
from interlock.server.api.approvals import DecisionBody
from interlock.server.dependencies import ready
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route


def _version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


async def ok(request: Request) -> Response:
    """Liveness: the process answers HTTP. Readiness (dependencies) is /ready."""
    return JSONResponse({"ok": True})


async def info(request: Request) -> Response:
    svc = request.app.state.services
    return JSONResponse(
        {
            "version": _version("interlock") or "0.1.0",
            "server": "interlock",
            "langgraph_py_version": _version("langgraph"),
            "flags": {
                "assistants": True,
                "crons": True,
                "store": True,
                "langsmith": False,
                "langsmith_tracing_replicas": False,
                "strict_resume": True,
                "resumable_streams": True,
                "auth": svc.authorizer.enabled,
            },
            "host": {"kind": "self-hosted", "project_id": None, "revision_id": None, "tenant_id": None},
            "database": svc.db.dialect,
            "graphs": sorted(svc.project.graphs),
        }
    )


# Request models per (method, path), so the OpenAPI document states the exact accepted fields.
BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("POST", "/assistants"): schemas.AssistantCreate,
    ("PATCH", "/assistants/{assistant_id}"): schemas.AssistantPatch,
    ("POST", "/assistants/search"): schemas.AssistantSearch,
    ("POST", "/assistants/count"): schemas.AssistantCount,
    ("POST", "/assistants/{assistant_id}/versions"): schemas.AssistantVersionsSearch,
    ("POST", "/assistants/{assistant_id}/latest"): schemas.AssistantSetLatest,
    ("POST", "/threads"): schemas.ThreadCreate,
    ("PATCH", "/threads/{thread_id}"): schemas.ThreadPatch,
    ("POST", "/threads/search"): schemas.ThreadSearch,
    ("POST", "/threads/count"): schemas.ThreadCount,
    ("POST", "/threads/prune"): schemas.ThreadPrune,
    ("POST", "/threads/{thread_id}/state"): schemas.StateUpdate,
    ("POST", "/threads/{thread_id}/state/checkpoint"): schemas.StateAtCheckpoint,
    ("POST", "/threads/{thread_id}/history"): schemas.HistoryRequest,
    ("POST", "/threads/{thread_id}/runs"): schemas.RunCreate,
    ("POST", "/threads/{thread_id}/runs/stream"): schemas.RunCreate,
    ("POST", "/threads/{thread_id}/runs/wait"): schemas.RunCreate,
    ("POST", "/runs"): schemas.RunCreate,
    ("POST", "/runs/stream"): schemas.RunCreate,
    ("POST", "/runs/wait"): schemas.RunCreate,
    ("POST", "/runs/cancel"): schemas.RunCancelMany,
    ("POST", "/runs/crons"): schemas.CronCreate,
    ("POST", "/threads/{thread_id}/runs/crons"): schemas.CronCreate,
    ("PATCH", "/runs/crons/{cron_id}"): schemas.CronPatch,
    ("POST", "/runs/crons/search"): schemas.CronSearch,
    ("POST", "/runs/crons/count"): schemas.CronCount,
    ("PUT", "/store/items"): schemas.StorePut,
    ("DELETE", "/store/items"): schemas.StoreDelete,
    ("POST", "/store/items/search"): schemas.StoreSearch,
    ("POST", "/store/namespaces"): schemas.StoreNamespaces,
}


def _q(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


_BOOL = {"type": "boolean"}
# Query parameters per (method, path), so clients and fuzzers reach the handlers with the parameters they read.
QUERY: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("GET", "/store/items"): [_q("namespace", {"type": "string"}), _q("key", {"type": "string"}, True),
                              _q("refresh_ttl", _BOOL)],
    ("GET", "/threads/{thread_id}/runs"): [
        _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
        _q("offset", {"type": "integer", "minimum": 0, "maximum": schemas.INT64_MAX}),
        _q("status", {"enum": ["pending", "running", "error", "success", "timeout", "interrupted"]}),
        _q("select", {"type": "array", "items": {"type": "string"}}),
    ],
    ("POST", "/threads/{thread_id}/runs/{run_id}/cancel"): [
        _q("wait", _BOOL), _q("action", {"enum": ["interrupt", "rollback"]})],
    ("POST", "/runs/cancel"): [_q("action", {"enum": ["interrupt", "rollback"]})],
    ("GET", "/threads/{thread_id}/runs/{run_id}/stream"): [
        _q("cancel_on_disconnect", _BOOL), _q("stream_mode", {"type": "array", "items": {"enum": list(schemas.STREAM_MODES)}})],
    ("GET", "/threads/{thread_id}/stream"): [
        _q("stream_mode", {"type": "array", "items": {"enum": ["run_modes", "lifecycle", "state_update"]}})],
    ("GET", "/threads/{thread_id}/state"): [_q("subgraphs", _BOOL)],
    ("GET", "/threads/{thread_id}/state/{checkpoint_id}"): [_q("subgraphs", _BOOL)],
    ("GET", "/threads/{thread_id}/history"): [
        _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}), _q("before", {"type": "string"})],
    ("GET", "/assistants/{assistant_id}/graph"): [_q("xray", {"anyOf": [_BOOL, {"type": "integer"}]})],
    ("GET", "/assistants/{assistant_id}/subgraphs"): [_q("recurse", _BOOL)],
    ("GET", "/assistants/{assistant_id}/subgraphs/{namespace}"): [_q("recurse", _BOOL)],
    ("DELETE", "/assistants/{assistant_id}"): [_q("delete_threads", _BOOL)],
}
BODIES[("POST", "/approvals/{approval_id}")] = DecisionBody
# Bodies that are JSON arrays of a model.
ARRAY_BODIES: dict[tuple[str, str], type[BaseModel]] = {("POST", "/runs/batch"): schemas.RunCreate}


def openapi_document(routes: list[Any]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    components: dict[str, Any] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        path = route.path.replace(":path}", "}")
        for method in sorted((route.methods or set()) - {"HEAD"}):
            op: dict[str, Any] = {
                "operationId": f"{method.lower()}_{route.name}_{len(paths)}",
                "summary": (inspect.getdoc(route.endpoint) or route.name).splitlines()[0],
                "responses": {"200": {"description": "OK"}, "404": {"description": "Not found"}, "422": {"description": "Invalid request"}},
                "parameters": [
                    {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                    for p in route.param_convertors
                ]
                + QUERY.get((method, path), []),
            }
            model = BODIES.get((method, path)) or ARRAY_BODIES.get((method, path))
            if model is not None:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
                ref: dict[str, Any] = {"$ref": f"#/components/schemas/{model.__name__}"}
                if (method, path) in ARRAY_BODIES:
                    ref = {"type": "array", "items": ref, "maxItems": 100}
                op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Interlock Agent Server", "version": _version("interlock") or "0.1.0"},
        "paths": paths,
        "components": {"schemas": components},
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(request.app.routes))


async def docs(request: Request) -> Response:
    doc = openapi_document(request.app.routes)
    rows = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            ref = body.get("$ref", "").rsplit("/", 1)[-1]
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op['summary'])}</td><td>{html.escape(ref)}</td></tr>"
            )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Interlock API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:2px 10px;border-bottom:1px solid #ddd}</style>"
        "</head><body><h1>Interlock Agent Server API</h1><p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>"
        "</p><table><tr><th>Method</th><th>Path</th><th>Summary</th><th>Body</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
    return HTMLResponse(page)


routes = [
    Route("/ok", ok, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/info", info, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
]
