"""The server's backing services (database, Redis, configured MCP servers): the readiness probe that checks them
with short timeouts, and the 503 answer a request gets when one of them is down (never a bare 500)."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from interlock.server.timeouts import ready_timeout_seconds
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from interlock.kernel.database import DependencyUnavailable
from interlock.kernel.settings import get_settings, is_postgres

log = logging.getLogger("interlock.server")
RETRY_AFTER_SECONDS = "5"


def unavailable(dependency: str, reason: str) -> JSONResponse:
    return JSONResponse(
        {"detail": f"{dependency} unavailable: {reason}", "dependency": dependency},
        status_code=503,
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


def _dependency_of(exc: Exception) -> str:
    module = type(exc).__module__
    if isinstance(exc, DependencyUnavailable):
        return exc.dependency
    if module.startswith("redis"):
        return "redis"
    return "database"


async def dependency_exception(request: Request, exc: Exception) -> Response:
    """A lost database or Redis connection or pool timeout, as 503 naming the dependency (logged, not echoed)."""
    dependency = _dependency_of(exc)
    log.warning("%s unavailable on %s %s: %s", dependency, request.method, request.url.path, type(exc).__name__)
    reason = exc.reason if isinstance(exc, DependencyUnavailable) else "connection failed"
    return unavailable(dependency, reason)


def dependency_exception_types(db_url: str | None = None) -> list[type[Exception]]:
    """Exception types that mean a backing service is unreachable (not a bug in the request or the server).

    Only the drivers this process uses (`db_url`, else the configured database, and Redis when configured, or
    a driver already imported): importing psycopg and redis on the embedded default cost ~15 MiB of idle memory."""
    types: list[type[Exception]] = [DependencyUnavailable]
    settings = get_settings()
    if "psycopg" in sys.modules or is_postgres(db_url or settings.database_url or ""):
        types += _postgres_errors()
    if "redis" in sys.modules or settings.redis_url:
        types += _redis_errors()
    return types


def _postgres_errors() -> list[type[Exception]]:
    try:
        import psycopg
        from psycopg_pool import PoolTimeout

        return [psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout]
    except ImportError:  # pragma: no cover - PostgreSQL support is a dependency
        return []


def _redis_errors() -> list[type[Exception]]:
    try:
        import redis.exceptions

        return [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    except ImportError:  # pragma: no cover
        return []


def is_connection_error(exc: BaseException) -> bool:
    """A lost or refused connection to a backing service: worth retrying from the last checkpoint."""
    return isinstance(exc, tuple(dependency_exception_types()))


def configured_mcp_urls() -> dict[str, str]:
    """MCP servers named explicitly in the environment (INTERLOCK_MCP_<SYSTEM>_URL)."""
    from interlock.tools.endpoints import SYSTEMS

    settings = get_settings()
    out = {}
    for system in SYSTEMS:
        url = getattr(settings, f"mcp_{system}_url")
        if url:
            out[f"mcp:{system}"] = url
    return out


async def _tcp(url: str) -> None:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    _, writer = await asyncio.open_connection(parts.hostname or "127.0.0.1", port)
    writer.close()


async def check_dependencies(svc: Any) -> dict[str, dict[str, Any]]:
    """Each dependency's status, checked concurrently, each within INTERLOCK_READY_TIMEOUT_SECONDS."""
    timeout = ready_timeout_seconds()
    checks: dict[str, Any] = {"database": _check_database(svc)}
    if svc.checkpointer is not None and hasattr(svc.checkpointer, "conn") and hasattr(svc.checkpointer.conn, "connection"):
        checks["checkpointer"] = _check_pool(svc.checkpointer.conn)
    mirror = svc.streams.mirror
    if mirror is not None:
        checks["redis"] = mirror.redis.ping()
    for name, url in configured_mcp_urls().items():
        checks[name] = _tcp(url)

    async def one(coro: Any) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            await asyncio.wait_for(coro, timeout)
        except TimeoutError:
            return {"ok": False, "error": f"no answer within {timeout:g}s"}
        except Exception as exc:  # noqa: BLE001 - any failure means not ready; the type is enough to act on
            return {"ok": False, "error": type(exc).__name__}
        return {"ok": True, "ms": round((time.perf_counter() - start) * 1000, 1)}

    results = await asyncio.gather(*(one(c) for c in checks.values()))
    return dict(zip(checks, results, strict=True))


async def _check_database(svc: Any) -> None:
    await svc.db.fetchone("SELECT 1 AS ok")


async def _check_pool(pool: Any) -> None:
    async with pool.connection() as conn:
        await conn.execute("SELECT 1")


async def ready(request: Request) -> Response:
    """Readiness: 200 when every dependency answers, else 503 naming those that do not. `/ok` is liveness."""
    svc = getattr(request.app.state, "services", None)
    if svc is None:
        return JSONResponse({"ready": False, "detail": "starting"}, status_code=503)
    results = await check_dependencies(svc)
    failing = sorted(name for name, r in results.items() if not r["ok"])
    body = {"ready": not failing, "checks": results}
    if failing:
        body["detail"] = f"unavailable: {', '.join(failing)}"
        return JSONResponse(body, status_code=503, headers={"Retry-After": RETRY_AFTER_SECONDS})
    return JSONResponse(body)
