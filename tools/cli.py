"""`interlock token mint ...` and `interlock token jwks` (the development token issuer)."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    token = subparsers.add_parser("token", help="development token issuer")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    mint = token_sub.add_parser("mint", help="print a token for one MCP server")
    mint.add_argument("--sub", required=True)
    mint.add_argument("--tenant", required=True)
    mint.add_argument("--scopes", required=True, help="comma-separated, e.g. orders:read,orders:write")
    mint.add_argument("--aud", required=True, help="the MCP server's canonical URL, or a system name (orders, ...)")
    mint.add_argument("--ttl", type=int, default=300, help="lifetime in seconds (default 300)")
    mint.set_defaults(func=_mint)
    jwks = token_sub.add_parser("jwks", help="print the issuer's public JWKS")
    jwks.set_defaults(func=lambda _args: print(json.dumps(_jwks(), indent=2)) or 0)


def _jwks() -> dict:
    from interlock.tools import identity

    return identity.jwks()


def _mint(args: argparse.Namespace) -> int:
    from interlock.tools import endpoints, identity

    audience = endpoints.canonical_url(args.aud) if args.aud in endpoints.SYSTEMS else args.aud
    if not audience.startswith(("http://", "https://")):
        print("error: --aud must be an http(s) URL or a system name", file=sys.stderr)
        return 2
    try:
        print(identity.mint(args.sub, args.tenant, args.scopes.split(","), audience, ttl_s=args.ttl))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
