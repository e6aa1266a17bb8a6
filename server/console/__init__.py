"""The operator console at /console: a static single page (HTML, CSS and JS shipped in this package, nothing
fetched at run time) that talks to the /approvals and trace APIs with the operator's bearer token.

The page and its assets are public (they carry no data). Every response sets a strict Content-Security-Policy:
scripts and styles only from this origin, no inline script, no framing; the script renders every value with
textContent, never as HTML, because approval arguments and messages are attacker-influenced."""

from __future__ import annotations

from pathlib import Path

from interlock.server.services import services
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:  # a fixed list: no path is ever built from the request
        return JSONResponse({"detail": f"no console asset '{name}'"}, status_code=404, headers=HEADERS)
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers=HEADERS)


async def config(request: Request) -> Response:
    """Whether the server authenticates (token sign-in) or is in local development mode (tenant sign-in)."""
    return JSONResponse({"auth": services(request).authorizer.enabled}, headers=HEADERS)


routes = [
    Route("/console", page, methods=["GET"]),
    Route("/console/", page, methods=["GET"]),
    Route("/console/config.json", config, methods=["GET"]),
    Route("/console/static/{name}", asset, methods=["GET"]),
]
