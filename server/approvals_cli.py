"""`interlock approvals list|decide|watch`: the operator's commands, over the server's /approvals API."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import httpx

from interlock.kernel.settings import DEFAULT_URL, Settings, get_settings


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
    parser.add_argument("--tenant", default=default(settings.dev_tenant),
                        help="tenant (local development mode only, default: $INTERLOCK_DEV_TENANT or "
                             f"{Settings.model_fields['dev_tenant'].default}; with auth it comes from the token)")
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
    watch = sub.add_parser("watch", help="print new pending approvals as they arrive (until interrupted)")
    watch.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    watch.add_argument("--all", action="store_true", help="every change (decided, consumed, expired), not only new")
    watch.set_defaults(func=_watch)


def _client(args: argparse.Namespace) -> httpx.Client:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    params = {"tenant": args.tenant} if args.tenant else {}
    return httpx.Client(base_url=args.url, headers=headers, params=params, timeout=120)


def _show(resp: httpx.Response) -> int:
    try:
        body = resp.json()
    except ValueError:
        body = {"detail": resp.text}
    if resp.status_code >= 400:
        # One line, the server's own words (an unknown tenant's names the known ones and how to register one).
        detail = body.get("detail") if isinstance(body, dict) else body
        text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
        print(f"interlock approvals: {text} (HTTP {resp.status_code})", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2, default=str))
    return 0


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


def _line(event: dict[str, Any]) -> str:
    a = event.get("approval") or {}
    text = (f"{event.get('kind', '?'):<9} {a.get('id')}  {a.get('tool')} on {a.get('server')}  "
            f"by {a.get('principal')}  risk {a.get('risk')}  args {json.dumps(a.get('args'), sort_keys=True)}")
    if a.get("decided_by"):
        text += f"  decided by {a['decided_by']}"
    # Arguments come from users and models: never let them drive the terminal.
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _watch(args: argparse.Namespace) -> int:
    """Stream /approvals/events; reconnects (with a short pause) when the server goes away."""
    while True:
        try:
            with _client(args) as http, http.stream(
                "GET", "/approvals/events", headers={"Accept": "text/event-stream"}, timeout=httpx.Timeout(30, read=None)
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    return _show(resp)
                print("watching approvals (Ctrl-C to stop)", file=sys.stderr, flush=True)
                for line in resp.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    event = json.loads(line[5:])
                    if not args.all and event.get("kind") != "requested":
                        continue
                    print(json.dumps(event) if args.json else _line(event), flush=True)
        except KeyboardInterrupt:
            return 0
        except httpx.HTTPError as exc:
            print(f"connection lost ({type(exc).__name__}); reconnecting", file=sys.stderr, flush=True)
        try:
            time.sleep(2)
        except KeyboardInterrupt:
            return 0
