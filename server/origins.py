"""Browser access: which web origins may call the API, and the Host/Origin checks that keep a page on another
site (or another local port) from driving a server that has no auth (local development mode).

- CORS answers only for `INTERLOCK_CORS_ORIGINS`; the Private-Network grant only with
  `INTERLOCK_CORS_PRIVATE_NETWORK=1`.
- In local mode a request must name a loopback Host (or one in `INTERLOCK_ALLOWED_HOSTS`) and, when it carries
  an Origin, come from the server's own origin or a configured CORS origin (DNS rebinding, drive-by pages).
- Bodies must be `application/json`; `text/plain` (what Studio sends) only from a configured CORS origin
  (see `bodies.read_json`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from interlock.kernel.settings import get_settings

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host: str) -> bool:
    name = _hostname(host.strip().lower())
    return name in LOOPBACK_HOSTS or name in get_settings().allowed_hosts or host.strip().lower() in get_settings().allowed_hosts


def json_content_type(content_type: str, origin: str | None) -> bool:
    """JSON, or `text/plain` from a configured CORS origin (Studio); a CORS-simple form or text POST from
    anywhere else is refused, so a page cannot change state without a preflight."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json")):
        return True
    return ctype == "text/plain" and origin is not None and origin in get_settings().cors_origins


def origin_allowed(origin: str, host: str) -> bool:
    """The server's own origin (same host and port), or a configured CORS origin."""
    if origin in get_settings().cors_origins:
        return True
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == host.strip().lower()


class LocalModeGuard:
    """Host and Origin checks for a server without auth, as the MCP servers' host/origin protection does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = getattr(getattr(scope.get("app"), "state", None), "services", None)
        auth_on = services is not None and services.authorizer.enabled
        if auth_on or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if not host_allowed(host):
            await JSONResponse({"detail": f"Host '{host}' is not allowed (set INTERLOCK_ALLOWED_HOSTS)"}, 421)(
                scope, receive, send
            )
            return
        origin = headers.get("origin")
        if origin is not None and not origin_allowed(origin, host):
            detail = f"Origin '{origin}' is not allowed (set INTERLOCK_CORS_ORIGINS)"
            await JSONResponse({"detail": detail}, 403)(scope, receive, send)
            return
        await self.app(scope, receive, send)
