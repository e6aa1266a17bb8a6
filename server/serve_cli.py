"""`interlock serve`: run the Agent Server for a langgraph.json project."""

from __future__ import annotations

import argparse
import os
import sys

from interlock.server.project import ProjectError, load_project
from interlock.server.settings import is_postgres
from interlock.server.timeouts import shutdown_grace_seconds


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="serve a LangGraph project over the Agent Server API")
    p.add_argument("--config", default="langgraph.json", help="path to langgraph.json")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1; 0.0.0.0 needs auth configured)")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "2024")))
    p.add_argument("--workers", type=int, default=1, help="server processes sharing the database")
    p.add_argument("--concurrency", type=int, default=int(os.environ.get("INTERLOCK_RUN_CONCURRENCY", "10")),
                   help="runs executed at once per process")
    p.add_argument("--log-level", default=os.environ.get("INTERLOCK_LOG_LEVEL", "info"))
    p.add_argument("--log-format", choices=["json", "text"], default=os.environ.get("INTERLOCK_LOG_FORMAT", "json"))
    p.add_argument("--with-mcp", action="store_true",
                   help="also start the sample business systems' MCP servers (interlock mcp all) for this process's lifetime")
    p.set_defaults(func=serve)


def app_factory():  # noqa: ANN201 - uvicorn factory for --workers > 1
    from interlock.server.app import create_app

    return create_app(
        os.environ["INTERLOCK_CONFIG"],
        concurrency=int(os.environ.get("INTERLOCK_RUN_CONCURRENCY", "10")),
        # A shared database (PostgreSQL) may have other replicas: never assume their runs are orphans.
        single_process=os.environ.get("INTERLOCK_WORKERS", "1") == "1"
        and not is_postgres(os.environ.get("INTERLOCK_DATABASE_URL", "")),
    )


def serve(args: argparse.Namespace) -> int:

    from interlock.server.logs import configure

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
        if os.environ.get("INTERLOCK_ALLOW_UNAUTHENTICATED") != "1":
            return 2
    os.environ["INTERLOCK_CONFIG"] = str(project.config_path)
    os.environ["INTERLOCK_RUN_CONCURRENCY"] = str(args.concurrency)
    os.environ["INTERLOCK_WORKERS"] = str(args.workers)
    mcp = None
    if args.with_mcp:
        import subprocess

        mcp = subprocess.Popen([sys.executable, "-m", "interlock", "mcp", "all", "--transport", "http"])
    try:
        return _run(args, host)
    finally:
        if mcp is not None and mcp.poll() is None:
            mcp.terminate()
            try:
                mcp.wait(15)
            except subprocess.TimeoutExpired:
                mcp.kill()


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
