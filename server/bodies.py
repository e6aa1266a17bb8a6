"""Request body parsing: JSON (text/plain only from a configured CORS origin, as Studio sends), size-limited,
validated."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from interlock.server.origins import json_content_type
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import Request

from interlock.kernel.settings import get_settings

M = TypeVar("M", bound=BaseModel)

MAX_BODY_BYTES = get_settings().max_body_bytes


async def read_json(request: Request, *, default: Any = None) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise HTTPException(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return default
    ctype = request.headers.get("content-type", "")
    if not json_content_type(ctype, request.headers.get("origin")):
        detail = f"unsupported content type '{ctype.split(';')[0].strip()}', send application/json"
        raise HTTPException(415, detail)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, f"malformed JSON body: {exc}") from None


async def parse(request: Request, model: type[M], *, empty_ok: bool = True) -> M:
    data = await read_json(request, default={} if empty_ok else None)
    if data is None:
        raise HTTPException(422, "request body is required")
    if not isinstance(data, dict):
        raise HTTPException(422, f"request body must be a JSON object, got {type(data).__name__}")
    return model.model_validate(data)


async def parse_list(request: Request, model: type[M]) -> list[M]:
    data = await read_json(request, default=None)
    if not isinstance(data, list):
        raise HTTPException(422, "request body must be a JSON array")
    return [model.model_validate(item) for item in data]
