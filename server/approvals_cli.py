"""`interlock approvals list|decide`: the operator's commands, over the server's /approvals API."""

from __future__ import annotations

import argparse
import json
import sys

import httpx

from interlock.kernel.settings import DEFAULT_URL, get_settings


def _connection_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--url/--tenant/--token, accepted before or after the subcommand (`approvals list --tenant acme`).

    On the subcommands the defaults are suppressed, so an option given before the subcommand is not reset.
    """
    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    settings = get_settings()
    token = settings.token.get_secret_value() if settings.token else None
    parser.add_argument("--url", default=default(settings.url),
                        help=f"server URL (default: $INTERLOCK_URL or {DEFAULT_URL})")
    parser.add_argument("--tenant", default=default(None),
                        help="tenant (local development mode only; with auth it comes from the token)")
    parser.add_argument("--token", default=default(token),
                        help="bearer token for an auth-enabled server (default: $INTERLOCK_TOKEN)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("approvals", help="list and decide approvals waiting for an operator")
    _connection_options(p, top=True)
    sub = p.add_subparsers(dest="approvals_command", required=True)
    ls = sub.add_parser("list", help="list approvals")
    _connection_options(ls, top=False)
    ls.add_argument("--status", default="pending", help="pending, approved, rejected, ... (default: pending)")
    ls.set_defaults(func=_list)
    dec = sub.add_parser("decide", help="approve, reject or edit one approval; resumes the waiting run")
    _connection_options(dec, top=False)
    dec.add_argument("approval_id")
    dec.add_argument("decision", choices=["approve", "reject", "edit"])
    dec.add_argument("--args", help="edited arguments as JSON (with 'edit')")
    dec.add_argument("--reason")
    dec.set_defaults(func=_decide)


def _client(args: argparse.Namespace) -> httpx.Client:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    params = {"tenant": args.tenant} if args.tenant else {}
    return httpx.Client(base_url=args.url, headers=headers, params=params, timeout=120)


def _show(resp: httpx.Response) -> int:
    try:
        body = resp.json()
    except ValueError:
        body = {"detail": resp.text}
    print(json.dumps(body, indent=2, default=str))
    return 0 if resp.status_code < 400 else 1


def _list(args: argparse.Namespace) -> int:
    with _client(args) as http:
        return _show(http.get("/approvals", params={"status": args.status}))


def _decide(args: argparse.Namespace) -> int:
    body: dict[str, object] = {"decision": args.decision}
    if args.args:
        try:
            body["args"] = json.loads(args.args)
        except json.JSONDecodeError as exc:
            print(f"--args is not valid JSON: {exc}", file=sys.stderr)
            return 2
    if args.reason:
        body["reason"] = args.reason
    with _client(args) as http:
        return _show(http.post(f"/approvals/{args.approval_id}", json=body))
