"""The `interlock` command. Each area registers its own subcommands; this module only wires them."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from interlock.kernel.settings import Settings, get_settings, variable

# Modules exposing `register(subparsers)`. Imported lazily so `interlock serve` does not pay for
# the retrieval or MCP stacks, and a missing area does not break the others.
_AREAS = (
    "interlock.kernel.config_cli",
    "interlock.kernel.tenants_cli",
    "interlock.server.serve_cli",
    "interlock.server.approvals_cli",
    "interlock.mcp_servers.cli",
    "interlock.seed",
    "interlock.tools.cli",
    "interlock.graphs.retrieval.cli",
    "interlock.policies.cli",
    "interlock.evals.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interlock", description="Interlock agent orchestration server")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _AREAS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # area not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args: argparse.Namespace | None = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        result = args.func(args)
    except ValidationError as exc:
        if exc.title != Settings.__name__:
            return _failed(exc, args)
        # A bad INTERLOCK_* variable: name it (never echo its value, it may be a secret), no traceback.
        for error in exc.errors(include_input=False):
            name = variable(str(error["loc"][0])) if error["loc"] else "INTERLOCK_*"
            print(f"interlock: invalid {name}: {error['msg']}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return _failed(exc, args)
    return int(result or 0)


def _failed(exc: Exception, args: argparse.Namespace | None) -> int:
    """A newcomer gets one line and a hint; INTERLOCK_DEBUG=1 shows the traceback."""
    if get_settings().debug:
        raise exc
    command = f"interlock {args.command}" if args is not None else "interlock"
    print(f"{command}: {describe_failure(exc, args)}", file=sys.stderr)
    return 1


def describe_failure(exc: BaseException, args: argparse.Namespace | None) -> str:
    """One line saying what failed and what to try, for the errors people meet in their first hour."""
    import httpx

    url = getattr(args, "url", None)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return (f"cannot reach the server at {url or 'the configured URL'} ({exc}); is `interlock serve` "
                "running there? Pass --url or set INTERLOCK_URL.")
    if isinstance(exc, httpx.TimeoutException):
        return f"the server at {url} did not answer in time; check it is healthy (GET {url}/ok)."
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return f"{url!r} is not a valid server URL; it looks like http://127.0.0.1:2024"
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename}"
    return f"{type(exc).__name__}: {exc} (set INTERLOCK_DEBUG=1 for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
