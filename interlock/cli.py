"""The `interlock` command. Each area registers its own subcommands; this module only wires them."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from interlock.kernel.settings import Settings, variable

# Modules exposing `register(subparsers)`. Imported lazily so `interlock serve` does not pay for
# the retrieval or MCP stacks, and a missing area does not break the others.
_AREAS = (
    "interlock.kernel.config_cli",
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
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        result = args.func(args)
    except ValidationError as exc:
        if exc.title != Settings.__name__:
            raise
        # A bad INTERLOCK_* variable: name it (never echo its value, it may be a secret), no traceback.
        for error in exc.errors(include_input=False):
            name = variable(str(error["loc"][0])) if error["loc"] else "INTERLOCK_*"
            print(f"interlock: invalid {name}: {error['msg']}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
