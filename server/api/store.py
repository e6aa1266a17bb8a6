"""/store routes over LangGraph's BaseStore (SQLite or PostgreSQL), with auth scoping of namespaces."""

from __future__ import annotations

from typing import Any

from interlock.server import schemas
from interlock.server.auth import request_user
from interlock.server.bodies import parse
from interlock.server.errors import Invalid
from interlock.server.services import services
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def _item(item: Any) -> dict[str, Any]:
    out = {
        "namespace": list(item.namespace),
        "key": item.key,
        "value": item.value,
        "created_at": item.created_at.isoformat() if item.created_at else None,
        "updated_at": item.updated_at.isoformat() if item.updated_at else None,
    }
    if getattr(item, "score", None) is not None:
        out["score"] = item.score
    return out


def _check_namespace(namespace: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    for label in namespace:
        if not label or "." in label or "\x00" in label:
            raise Invalid(f"invalid namespace label {label!r}: labels must be non-empty and contain no '.' or NUL")
    return tuple(namespace)


async def _authorize(request: Request, action: str, value: dict[str, Any]) -> dict[str, Any]:
    """Store handlers may rewrite `value` (e.g. prefix the namespace with the user id), as in langgraph-api."""
    await services(request).authorizer.authorize(request_user(request), "store", action, value)
    return value


async def put_item(request: Request) -> Response:
    body = await parse(request, schemas.StorePut, empty_ok=False)
    value = await _authorize(request, "put", body.model_dump())
    ns = _check_namespace(value["namespace"])
    store = services(request).store
    kwargs: dict[str, Any] = {}
    if body.index is not None:
        kwargs["index"] = body.index
    if body.ttl is not None:
        kwargs["ttl"] = body.ttl
    await store.aput(ns, value["key"], value["value"], **kwargs)
    return Response(status_code=204)


async def get_item(request: Request) -> Response:
    raw_ns = request.query_params.get("namespace", "")
    key = request.query_params.get("key")
    if not key or len(key) > 1024 or "\x00" in key:
        raise Invalid("query parameter 'key' is required (at most 1024 characters, no NUL)")
    namespace = [p for p in raw_ns.split(".") if p]
    value = await _authorize(request, "get", {"namespace": namespace, "key": key})
    refresh = request.query_params.get("refresh_ttl")
    kwargs: dict[str, Any] = {}
    if refresh is not None:
        kwargs["refresh_ttl"] = refresh.lower() in ("1", "true")
    item = await services(request).store.aget(_check_namespace(value["namespace"]), value["key"], **kwargs)
    # The reference answers a missing item with 200 `null`; the SDKs then return None instead of raising.
    return JSONResponse(_item(item) if item is not None else None)


async def delete_item(request: Request) -> Response:
    body = await parse(request, schemas.StoreDelete, empty_ok=False)
    value = await _authorize(request, "delete", {"namespace": body.namespace or [], "key": body.key})
    await services(request).store.adelete(_check_namespace(value["namespace"]), value["key"])
    return Response(status_code=204)


async def search_items(request: Request) -> Response:
    body = await parse(request, schemas.StoreSearch)
    value = await _authorize(request, "search", {**body.model_dump(), "namespace": body.namespace_prefix or []})
    prefix = _check_namespace(value["namespace"])
    kwargs: dict[str, Any] = {"filter": body.filter, "limit": body.limit, "offset": body.offset, "query": body.query}
    if body.refresh_ttl is not None:
        kwargs["refresh_ttl"] = body.refresh_ttl
    if body.query and not getattr(services(request).store, "index_config", None):
        raise Invalid("semantic 'query' needs a store index: configure store.index in langgraph.json")
    items = await services(request).store.asearch(prefix, **kwargs)
    return JSONResponse({"items": [_item(i) for i in items]})


async def list_namespaces(request: Request) -> Response:
    body = await parse(request, schemas.StoreNamespaces)
    value = await _authorize(request, "list_namespaces", {**body.model_dump(), "namespace": body.prefix or []})
    prefix = tuple(value["namespace"]) or None
    namespaces = await services(request).store.alist_namespaces(
        prefix=prefix,
        suffix=tuple(body.suffix) if body.suffix else None,
        max_depth=body.max_depth,
        limit=body.limit,
        offset=body.offset,
    )
    return JSONResponse({"namespaces": [list(ns) for ns in namespaces]})


routes = [
    Route("/store/items", put_item, methods=["PUT"]),
    Route("/store/items", get_item, methods=["GET"]),
    Route("/store/items", delete_item, methods=["DELETE"]),
    Route("/store/items/search", search_items, methods=["POST"]),
    Route("/store/namespaces", list_namespaces, methods=["POST"]),
]
