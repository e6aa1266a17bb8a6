"""`interlock mcp <system>|all --transport stdio|http [--port N]`."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys

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

    if args.transport == "http":
        print(f"{args.system}: {mask_url(endpoints.canonical_url(args.system, args.port))}", file=sys.stderr)
    run(load_system(args.system), args.transport, args.port)
    return 0


def _run_all() -> int:
    """One process per system (each its own database, audience and failure domain)."""
    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)  # run the `finally` below so no child outlives us

    signal.signal(signal.SIGTERM, stop)
    procs = [
        subprocess.Popen([sys.executable, "-m", "interlock", "mcp", s, "--transport", "http"])
        for s in endpoints.SYSTEMS
    ]
    try:
        return max(p.wait() for p in procs)
    except (KeyboardInterrupt, SystemExit):
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
