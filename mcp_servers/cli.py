"""`interlock mcp <system>|all --transport stdio|http [--port N]`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from interlock.tools import endpoints

from interlock.kernel.settings import mask_url


def register(subparsers: argparse._SubParsersAction) -> None:
    mcp = subparsers.add_parser("mcp", help="run a business system's MCP server")
    mcp.add_argument("system", choices=[*endpoints.SYSTEMS, "all"])
    mcp.add_argument("--transport", choices=["stdio", "http"], default="http")
    mcp.add_argument("--port", type=int, help="HTTP port (default: orders 8701, crm 8702, billing 8703, tickets 8704)")
    mcp.set_defaults(func=_run_mcp)


def _run_mcp(args: argparse.Namespace) -> int:
    if args.port is not None and not 0 < args.port < 65536:
        print("error: --port must be between 1 and 65535", file=sys.stderr)
        return 2
    if args.system == "all":
        if args.transport != "http" or args.port is not None:
            print("error: `interlock mcp all` serves every system over HTTP on its own port; "
                  "use INTERLOCK_MCP_<SYSTEM>_URL to change ports", file=sys.stderr)
            return 2
        return _run_all()
    from interlock.mcp_servers.hosting import load_system, run
    from interlock.mcp_servers.supervision import die_with_parent

    die_with_parent()
    if args.transport == "http":
        print(f"{args.system}: {mask_url(endpoints.canonical_url(args.system, args.port))}", file=sys.stderr)
    run(load_system(args.system), args.transport, args.port)
    return 0


def _run_all() -> int:
    """One process per system (each its own database, audience and failure domain), supervised."""
    from interlock.mcp_servers.supervision import Supervisor

    stopped = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    supervisor = Supervisor()
    print("starting the MCP servers: " + ", ".join(endpoints.canonical_url(s) for s in endpoints.SYSTEMS),
          file=sys.stderr)
    try:
        late = supervisor.start()
        if not late:
            print("MCP servers ready", file=sys.stderr)
        stopped.wait()
    finally:
        supervisor.stop()
    return 0
