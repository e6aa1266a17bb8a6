"""`interlock guard ...`: scan text from stdin, check the policy set."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from interlock.kernel.settings import get_settings

MAX_INPUT_BYTES = 10 * 1024 * 1024


def register(subparsers: argparse._SubParsersAction) -> None:
    guard = subparsers.add_parser("guard", help="guardrails: scan text, check policies")
    sub = guard.add_subparsers(dest="guard_command", required=True)
    scan = sub.add_parser("scan", help="scan text read from stdin and print the JSON verdict")
    scan.add_argument("--kind", choices=["user", "retrieved", "tool_output"], required=True)
    scan.add_argument("--policies", type=Path, default=None, help="policy directory (default: built-in)")
    scan.add_argument("--show-text", action="store_true", help="include the pseudonymised/quarantined text")
    scan.set_defaults(func=_scan)
    check = sub.add_parser("policies", help="validate the policy set and print its hash")
    check.add_argument("--policies", type=Path, default=None)
    check.set_defaults(func=_check)


def _load(directory: Path | None) -> Any:
    from interlock.policies.loader import load_policies

    return load_policies(directory)


def _scan(args: argparse.Namespace) -> int:
    from interlock.policies.injection import InjectionDetector, load_model_detector, quarantine
    from interlock.policies.loader import PolicyError
    from interlock.policies.pii import PiiVault, detector_for, pseudonymise

    try:
        policies = _load(args.policies)
    except PolicyError as exc:
        print(f"error: invalid policy: {exc}", file=sys.stderr)
        return 2
    raw = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    if len(raw) > MAX_INPUT_BYTES:
        print(f"error: input larger than {MAX_INPUT_BYTES} bytes", file=sys.stderr)
        return 2
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        print(f"error: input is not UTF-8 (byte {exc.start})", file=sys.stderr)
        return 2
    if get_settings().vault_key is None:
        # A one-off scan discards its vault: use a throwaway key instead of creating a key file.
        from cryptography.fernet import Fernet

        os.environ["INTERLOCK_VAULT_KEY"] = Fernet.generate_key().decode()
    detector = InjectionDetector(policies.injection, load_model_detector(policies.injection.model_detector))
    verdict = detector.scan(text, args.kind)
    vault = PiiVault()
    redacted = pseudonymise(detector_for(policies.pii), text, vault, trusted=args.kind == "user")
    out = {
        "kind": args.kind,
        "policy_hash": policies.hash,
        "injection": verdict.model_dump(),
        "pii": redacted.counts,
    }
    if args.show_text:
        style = "drop" if verdict.action in ("drop", "block") else policies.injection.quarantine_style
        shown = quarantine(redacted.text, verdict, style) if verdict.action != "flag" else redacted.text
        out["text"] = shown
    print(json.dumps(out, indent=2))
    return 0


def _check(args: argparse.Namespace) -> int:
    from interlock.policies.loader import PolicyError

    try:
        policies = _load(args.policies)
    except PolicyError as exc:
        print(f"error: invalid policy: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"directory": str(policies.directory), "hash": policies.hash, "files": list(policies.files)}))
    return 0
