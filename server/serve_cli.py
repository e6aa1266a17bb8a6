"""`interlock serve`: run the Agent Server for a langgraph.json project."""

from __future__ import annotations

import argparse
import os
import sys

from interlock.server.project import ProjectError, load_project

from interlock.kernel.settings import get_settings, is_postgres


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="serve a LangGraph project over the Agent Server API")
    p.add_argument("--config", default="langgraph.json", help="path to langgraph.json")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1; 0.0.0.0 needs auth configured)")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "2024")))
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

    if args.workers > 1:
        uvicorn.run("interlock.server.serve_cli:app_factory", factory=True, host=host, port=args.port, workers=args.workers,
                    log_level=args.log_level, access_log=False, log_config=None)
        return 0
    uvicorn.run(app_factory(), host=host, port=args.port, log_level=args.log_level, access_log=False, log_config=None)
    return 0
