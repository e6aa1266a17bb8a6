"""`interlock token mint ...` and `interlock token jwks` (the development token issuer)."""

from __future__ import annotations

import argparse
import json
import sys

from interlock.kernel.identity import STAFF_SCOPE


def register(subparsers: argparse._SubParsersAction) -> None:
    token = subparsers.add_parser("token", help="development token issuer")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    mint = token_sub.add_parser(
        "mint", help="print a token for one MCP server",
        description="An end user's token names their customer (--customer CUS-101): it reaches only that customer's "
                    "records. A staff token (--staff, adding the scope customers:any) reaches every customer of the "
                    "tenant. A token with neither reaches no customer's records.")
    mint.add_argument("--sub", help="the subject (default: the --customer id)")
    mint.add_argument("--tenant", required=True)
    mint.add_argument("--scopes", required=True, help="comma-separated, e.g. orders:read,orders:write")
    who = mint.add_mutually_exclusive_group()
    who.add_argument("--customer", metavar="CUSTOMER_ID", help="an end user's token, bound to this customer")
    who.add_argument("--staff", action="store_true", help=f"a staff token: adds {STAFF_SCOPE} (every customer)")
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
    sub = args.sub or args.customer
    if not sub:
        print("error: give --sub (or --customer, whose id is then the subject)", file=sys.stderr)
        return 2
    scopes = [s for s in args.scopes.split(",") if s.strip()]
    if args.staff:
        scopes.append(STAFF_SCOPE)
    elif STAFF_SCOPE in scopes and args.customer:
        print(f"error: {STAFF_SCOPE} is the staff scope; a --customer token acts for one customer", file=sys.stderr)
        return 2
    if not args.customer and STAFF_SCOPE not in scopes:
        print("note: this token acts for no customer and reaches no customer's records; add --customer CUS-... "
              "(an end user) or --staff", file=sys.stderr)
    try:
        print(identity.mint(sub, args.tenant, scopes, audience, ttl_s=args.ttl, customer_id=args.customer))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
