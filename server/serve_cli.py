"""`interlock serve`: run the Agent Server for a langgraph.json project."""

from __future__ import annotations

import argparse
import os
import sys

from interlock.server.project import ProjectError, load_project
from interlock.server.timeouts import shutdown_grace_seconds

from interlock.kernel.settings import get_settings, is_postgres


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="serve a LangGraph project over the Agent Server API")
    p.add_argument("--config", default="langgraph.json", help="path to langgraph.json")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1; 0.0.0.0 needs auth configured)")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "2024")),
                   help="port to listen on (default: $PORT or 2024)")
    p.add_argument("--workers", type=int, default=1, help="server processes sharing the database")
    p.add_argument("--concurrency", type=int, default=None,
                   help="runs executed at once per process (default $INTERLOCK_RUN_CONCURRENCY or 10)")
    p.add_argument("--log-level", default=None, help="default $INTERLOCK_LOG_LEVEL or info")
    p.add_argument("--log-format", choices=["json", "text"], default=None, help="default $INTERLOCK_LOG_FORMAT or json")
    p.add_argument("--with-mcp", action="store_true",
                   help="also start the sample business systems' MCP servers (interlock mcp all) for this process's lifetime")
    p.set_defaults(func=serve)


def app_factory():  # noqa: ANN201 - uvicorn factory for --workers > 1
    from interlock.server.app import create_app

    settings = get_settings()
    if settings.config is None:
        raise RuntimeError("INTERLOCK_CONFIG is not set (interlock serve sets it)")
    return create_app(
        str(settings.config),
        concurrency=settings.run_concurrency,
        # A shared database (PostgreSQL) may have other replicas: never assume their runs are orphans.
        single_process=settings.workers == 1 and not is_postgres(settings.database_url or ""),
    )


def serve(args: argparse.Namespace) -> int:
    from interlock.server.logs import configure

    settings = get_settings()
    args.concurrency = args.concurrency or settings.run_concurrency
    args.log_level = args.log_level or settings.log_level
    args.log_format = args.log_format or settings.log_format
    configure(args.log_level, args.log_format)
    try:
        project = load_project(args.config)
    except ProjectError as exc:
        print(f"interlock serve: {exc}", file=sys.stderr)
        return 2
    host = args.host or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1") and project.auth_target is None:
        print(
            "interlock serve: refusing to bind a non-loopback address with no auth configured "
            "(add \"auth\" to langgraph.json, or set INTERLOCK_ALLOW_UNAUTHENTICATED=1)",
            file=sys.stderr,
        )
        if not settings.allow_unauthenticated:
            return 2
    os.environ["INTERLOCK_CONFIG"] = str(project.config_path)
    os.environ["INTERLOCK_RUN_CONCURRENCY"] = str(args.concurrency)
    os.environ["INTERLOCK_WORKERS"] = str(args.workers)
    busy = _busy(host, args.port)
    if busy:
        print(f"interlock serve: port {args.port} on {host} is already in use ({busy}); pick another with "
              f"--port N (or `make run PORT=N`)", file=sys.stderr)
        return 2
    supervisor = None
    if args.with_mcp:
        from interlock.mcp_servers.supervision import Supervisor
        from interlock.tools import endpoints

        for system in endpoints.SYSTEMS:
            url = endpoints.canonical_url(system)
            busy = _busy(endpoints.bind_host(), endpoints.port_of(url))
            if busy:
                print(f"interlock serve: the {system} MCP server's port {endpoints.port_of(url)} is already in use "
                      f"({busy}); stop what holds it, or set INTERLOCK_MCP_{system.upper()}_URL", file=sys.stderr)
                return 2
        print("starting the sample MCP servers...", file=sys.stderr)
        supervisor = Supervisor()
        supervisor.start()
    try:
        return _run(args, host)
    finally:
        if supervisor is not None:
            supervisor.stop()


def _busy(host: str, port: int) -> str | None:
    """Why `host:port` cannot be bound, or None when it can (checked before a newcomer meets a traceback)."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "address already in use"
            return exc.strerror or str(exc)
    return None


def _run(args: argparse.Namespace, host: str) -> int:
    import uvicorn

    grace = shutdown_grace_seconds()
    if args.workers > 1:
        from uvicorn.config import STARTUP_FAILURE
        from uvicorn.supervisors import Multiprocess

        config = uvicorn.Config("interlock.server.serve_cli:app_factory", factory=True, host=host, port=args.port,
                                workers=args.workers, log_level=args.log_level, access_log=False, log_config=None,
                                timeout_graceful_shutdown=grace)
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        supervisor.run()
        # uvicorn stops every worker when one fails to start but returns normally; say so in the exit code.
        failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
        if failed:
            print(f"interlock serve: worker(s) {failed} failed to start", file=sys.stderr)
            return STARTUP_FAILURE
        return 0
    uvicorn.run(app_factory(), host=host, port=args.port, log_level=args.log_level, access_log=False, log_config=None,
                timeout_graceful_shutdown=grace)
    return 0
