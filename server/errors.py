"""HTTP errors as `{"detail": ...}`, the shape LangGraph clients parse."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class NotFound(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(404, detail)


class Conflict(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(409, detail)


class Invalid(HTTPException):
    def __init__(self, detail: str, **fields: Any) -> None:
        super().__init__(422, detail)
        self.fields = fields  # machine-readable parts of the problem, beside `detail`


def describe_validation_error(exc: ValidationError) -> str:
    """One readable line per problem, naming the field: `stream_mode.1: Input should be ...`."""
    parts: list[str] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown field '{loc}'")
        else:
            parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=headers)
    return JSONResponse({"detail": exc.detail, **getattr(exc, "fields", {})}, status_code=exc.status_code,
                        headers=headers)


async def validation_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    return JSONResponse({"detail": describe_validation_error(exc)}, status_code=422)


async def unhandled_exception(request: Request, exc: Exception) -> Response:
    # Never echo internal exception text to clients; the log carries it.
    import logging

    logging.getLogger("interlock.server").exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "Internal server error"}, status_code=500)


def detail(status: int, message: Any) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


class UnhandledErrors:
    """Answers an unexpected exception with the JSON 500 and keeps the connection. Starlette's own last-resort
    handler re-raises after answering, and uvicorn then closes the keep-alive connection under the client's pool:
    another request already sent on it fails with a read error instead of getting its own answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            if started:
                raise  # part of the answer went out: only closing the connection can tell the client
            response = await unhandled_exception(Request(scope, receive), exc)
            await response(scope, receive, send)
