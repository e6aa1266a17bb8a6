"""The Starlette application, wired explicitly: routes, middleware, error handlers and the lifespan that
opens storage, loads the project's graphs and starts the run engine and the cron scheduler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from interlock.server import console, errors, metrics
from interlock.server.api import (
    approvals,
    assistants,
    crons,
    meta,
    runs,
    store,
    thread_stream,
    threads,
    traces,
)
from interlock.server.approval_notices import ApprovalNotices
from interlock.server.assistants import Assistants
from interlock.server.auth import Authorizer, is_public
from interlock.server.authorization import check_routes
from interlock.server.checkpoints import open_persistence
from interlock.server.crons import Crons, Scheduler
from interlock.server.dependencies import dependency_exception, dependency_exception_types
from interlock.server.engine import Engine
from interlock.server.origins import LocalModeGuard
from interlock.server.project import bind_graphs, load_object, load_project
from interlock.server.runs import Runs
from interlock.server.services import Services
from interlock.server.storage import connect
from interlock.server.storage.migrations import migrate, setup_lock
from interlock.server.store_index import index_config
from interlock.server.streams import StreamRegistry
from interlock.server.threads import Threads
from interlock.server.trace_export import TraceExporter
from interlock.server.traces import Traces
from interlock.server.webhooks import Webhooks
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from interlock.kernel.settings import database_url, get_settings, redis_url
from interlock.kernel.tenants import TenantRegistry

log = logging.getLogger("interlock.server")


class AuthenticationMiddleware:
    """Authenticates every non-public request through the project's auth hook (streams and waits included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        services: Services | None = getattr(request.app.state, "services", None)
        public = is_public(scope["path"])
        if scope["path"] == "/metrics" and services is not None and services.authorizer.enabled:
            public = False  # with auth configured, metrics need a token too
        if services is None or public:
            await self.app(scope, receive, send)
            return
        try:
            user = await services.authorizer.authenticate(request)
        except HTTPException as exc:
            response = JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["user"] = user
        await self.app(scope, receive, send)


async def jwks(request: Request) -> Response:
    """Public keys of Interlock's token issuer, for MCP servers that verify its tokens."""
    from interlock.tools.identity import jwks as issuer_jwks

    return JSONResponse(issuer_jwks())


def _build_limiter() -> Any:
    """Per-tenant request, token and spend limits from policies/limits.yaml (Redis when configured)."""
    try:
        from interlock.policies.limits import build_limiter
        from interlock.policies.loader import get_policies
    except ImportError:
        return None
    return build_limiter(get_policies().limits, redis_url())


async def _refuse_fallback_identities(crons_: Crons) -> None:
    """With auth configured nothing may run as the development identity: graphs refuse a run without an
    authenticated principal, and the server refuses to start while enabled crons lack their creator's."""
    from interlock.graphs import state

    state.require_authenticated_principal()
    unowned = await crons_.unowned()
    if unowned:
        raise RuntimeError(
            f"auth is configured but {unowned} enabled cron(s) have no recorded creator and would run as the "
            "development identity: delete them or disable them (UPDATE crons SET enabled = 0 WHERE principal IS NULL)"
        )


async def _check_redis_at_start(mirror: Any) -> None:
    """A configured Redis that does not answer is not fatal: the replica starts degraded, and says so."""
    try:
        await asyncio.wait_for(mirror.ping(), 3)
    except Exception as exc:  # noqa: BLE001 - any failure means degraded mode
        log.warning(
            "Redis (INTERLOCK_REDIS_URL) unreachable at start (%s): degraded mode until it answers: tenant limits "
            "refuse runs with 503 and Retry-After, streams replay only on the replica that runs them",
            type(exc).__name__,
        )


async def _check_models_at_start() -> None:
    """A configured model provider that is not an OpenAI-compatible API (a base URL without /v1 on a server that
    needs it, a wrong port) or whose timeout the chain caps is said at start, not found out as zero-key answers."""
    from interlock.graphs.models import ModelGateway

    try:
        await ModelGateway.from_policy().check_endpoints()
    except Exception as exc:  # noqa: BLE001 - a probe must never stop the server
        log.warning("model providers could not be checked at start (%s)", type(exc).__name__)


def create_app(
    config_path: str | Path,
    *,
    db_url: str | None = None,
    concurrency: int = 10,
    single_process: bool = True,
    extra_routes: list[Any] | None = None,
) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        url = db_url or database_url()
        project = load_project(config_path)
        db = await connect(url)
        tenants = TenantRegistry(db)
        async with setup_lock(url):
            await migrate(db)
            await tenants.setup()
        async with open_persistence(url, index_config(project)) as (checkpointer, long_term_store):
            auth_obj = load_object(project.root, project.auth_target) if project.auth_target else None
            crons_ = Crons(db)
            if auth_obj is not None:
                await _refuse_fallback_identities(crons_)
            assistants_ = Assistants(db, set(project.graphs))
            await assistants_.ensure_system()
            threads_ = Threads(db)
            runs_ = Runs(db)
            mirror = None
            if redis_url():
                from interlock.server.stream_mirror import StreamMirror
                from interlock.server.streams import RESUMABLE_TTL_SECONDS

                mirror = StreamMirror(redis_url(), RESUMABLE_TTL_SECONDS)
                await _check_redis_at_start(mirror)
            streams = StreamRegistry(mirror)
            limiter = _build_limiter()
            exporter = TraceExporter()
            webhooks = Webhooks()

            async def on_trace(doc: dict[str, Any], tenant: str | None) -> None:
                metrics.observe_trace(doc, tenant)
                if limiter is not None and tenant and (doc.get("tokens") or doc.get("cost_usd")):
                    await limiter.record(tenant, int(doc.get("tokens") or 0), float(doc.get("cost_usd") or 0.0))
                exporter.export(doc)

            engine = Engine(
                runs=runs_,
                threads=threads_,
                assistants=assistants_,
                project=project,
                checkpointer=checkpointer,
                store=long_term_store,
                streams=streams,
                concurrency=concurrency,
                single_process=single_process,
                traces=Traces(db),
                on_trace=on_trace,
                webhooks=webhooks,
            )
            svc = Services(
                db=db,
                project=project,
                checkpointer=checkpointer,
                store=long_term_store,
                assistants=assistants_,
                threads=threads_,
                runs=runs_,
                streams=streams,
                engine=engine,
                authorizer=Authorizer(auth_obj),
                crons=crons_,
                db_url=url,
                limiter=limiter,
                tenants=tenants,
            )
            bind_graphs(project, checkpointer, long_term_store, engine.ephemeral_checkpointer)
            app.state.services = svc
            await engine.start()
            models_check = asyncio.create_task(_check_models_at_start())
            scheduler = Scheduler(svc.crons, crons.firer(svc))
            scheduler.start()
            notices = ApprovalNotices(svc, webhooks)
            notices.start()
            log.info("serving graphs %s on %s", sorted(project.graphs), db.dialect)
            try:
                yield
            finally:
                models_check.cancel()
                await notices.stop()
                await scheduler.stop()
                await engine.stop()
                if mirror is not None:
                    await mirror.close()
                await webhooks.close()
                await db.close()

    routes: list[Any] = [
        *meta.routes,
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        *assistants.routes,
        *crons.routes,  # before /runs/{run_id}/...
        *threads.routes,
        *thread_stream.routes,
        *runs.routes,
        *store.routes,
        *approvals.routes,
        *console.routes,
        *traces.routes,
        *metrics.routes,
        *(extra_routes or []),
    ]
    check_routes(routes)
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=get_settings().cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Location", "Content-Location", "X-Pagination-Next"],
            allow_private_network=get_settings().cors_private_network,
        ),
        Middleware(LocalModeGuard),
        Middleware(AuthenticationMiddleware),
        Middleware(errors.UnhandledErrors),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: errors.http_exception,
            ValidationError: errors.validation_exception,
            **{exc_type: dependency_exception for exc_type in dependency_exception_types(db_url)},
            Exception: errors.unhandled_exception,
        },
    )
