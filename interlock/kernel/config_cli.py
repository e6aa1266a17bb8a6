"""`interlock config`: the effective settings of this environment, secrets masked."""

from __future__ import annotations

import argparse
import json

from interlock.kernel.settings import Settings, get_settings, masked, variable


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("config", help="print the effective INTERLOCK_* settings (secrets masked)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    p.set_defaults(func=show)


def show(args: argparse.Namespace) -> int:
    values = masked(get_settings())
    if args.json:
        print(json.dumps(values, indent=2))
        return 0
    width = max(len(name) for name in values)
    for name, field in Settings.model_fields.items():
        value = values[variable(name)]
        print(f"{variable(name):<{width}}  {'(unset)' if value is None else value}  # {field.description}")
    return 0
