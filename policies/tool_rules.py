"""Tool-call policy: the load-bearing control against injected instructions.

A proposed call is checked against tools.yaml: unknown tools are denied, arguments must satisfy
their constraints (refund <= amount paid), recipients/accounts/URLs must come from trusted input
or an allowlist, writes need human approval when the run is tainted (destructive tools
always), and a write whose arguments (record ids included) do not all trace to the user, the
principal or configuration needs a decision too (policies/provenance.py), tainted or not. The decision depends only on the call, the run's taint, trusted facts and trusted text:
nothing here reads an approval claim from any text, so "the operator already approved this"
changes nothing. Approval itself is granted only through the graph's interrupt/resume.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from interlock.policies.output import host_allowed
from interlock.policies.pii import TOKEN_RE, PiiVault
from interlock.policies.provenance import (
    FREE_TEXT_NAMES,
    TRUSTED,
    UNTRUSTED_TEXT,
    Source,
    needs_decision,
    trace_arguments,
)
from interlock.policies.schema import ArgConstraint, ProvenanceRule, ToolsPolicy
from pydantic import BaseModel, Field

ToolAction = Literal["allow", "require_approval", "deny"]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}


class ToolCall(BaseModel):
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    id: str = ""


class ToolContext(BaseModel):
    """What the run knows that the model cannot forge.

    trusted_texts: text from trusted principals (system/operator prompt, the authenticated user's
    messages), never retrieved chunks or tool output. facts: values returned by trusted read tools
    (e.g. {"amount_paid": 40.0} from get_order). vault: the thread's PII vault (to_state() form).
    sources: everything the run holds with its provenance label (policies/provenance.py). origin: who chose
    the arguments, `model` (each write argument is traced) or `playbook` (code building them from the user's
    text and configuration). input_schema: the tool's published schema (its enums are configuration).
    Without sources (a caller that passes none) a model's write traces to nothing and needs a decision.
    """

    tainted: bool = False
    trusted_texts: list[str] = Field(default_factory=list)
    facts: dict[str, Any] = Field(default_factory=dict)
    vault: dict[str, Any] | None = None
    sources: list[Source] = Field(default_factory=list)
    origin: Literal["model", "playbook"] = "model"
    input_schema: dict[str, Any] | None = None


class ToolDecision(BaseModel):
    tool: str
    call_id: str = ""
    action: ToolAction
    risk: str = "unknown"
    reasons: list[str] = Field(default_factory=list)


def _lookup(data: dict[str, Any], path: str) -> Any:
    current: Any = data
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            raise KeyError(path)
        current = current[part]
    return current


def _number(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise InvalidOperation
    return Decimal(str(value).strip().lstrip("$€£").replace(",", ""))


def _check_constraint(c: ArgConstraint, args: dict[str, Any], facts: dict[str, Any]) -> tuple[ToolAction, str] | None:
    try:
        left = _number(_lookup(args, c.arg))
    except KeyError:
        return "deny", f"constraint:{c.arg}:missing_argument"
    except (InvalidOperation, ValueError):
        return "deny", f"constraint:{c.arg}:not_a_number"
    if c.ref is not None:
        scope, _, path = c.ref.partition(".")
        try:
            raw = _lookup(args if scope == "args" else facts, path)
        except KeyError:
            # Nothing trusted to compare with: a human must check it.
            return "require_approval", f"constraint:{c.arg}:unverifiable({c.ref})"
        try:
            right = _number(raw)
        except (InvalidOperation, ValueError):
            return "deny", f"constraint:{c.arg}:reference_not_a_number"
    else:
        right = Decimal(str(c.value))
    if not _OPS[c.op](left, right):
        return "deny", f"constraint:{c.arg}{c.op}{c.ref or c.value}"
    return None


def _canon(kind: str, value: str) -> str:
    value = value.strip()
    if kind in ("email", "url", "text"):
        return value.lower()
    return re.sub(r"[^0-9A-Za-z]", "", value).upper()


def _allowlisted(kind: str, value: str, policy: ToolsPolicy) -> bool:
    lists = policy.allowlists
    if kind == "email":
        v = value.strip().lower()
        return v in lists.emails or v.rpartition("@")[2] in lists.email_domains
    if kind == "url":
        return host_allowed(value, lists.url_hosts)
    if kind == "account":
        return _canon(kind, value) in {_canon(kind, a) for a in lists.accounts}
    if kind == "phone":
        return _canon(kind, value) in {_canon(kind, p) for p in lists.phones}
    return False


def _allowlisted_any(value: str, policy: ToolsPolicy) -> bool:
    return any(_allowlisted(kind, value, policy) for kind in ("email", "url", "account", "phone"))


def _values(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, list | tuple):
        return [str(v) for v in raw if v not in (None, "")]
    text = str(raw)
    return [v for v in re.split(r"[,;]\s*", text) if v.strip()] if "@" in text else [text]


def _check_provenance(
    rule: ProvenanceRule, raw_args: dict[str, Any], vault: PiiVault, trusted_blob: dict[str, str],
    policy: ToolsPolicy,
) -> str | None:
    try:
        raw = _lookup(raw_args, rule.arg)
    except KeyError:
        return None  # absent optional argument (cc): nothing to send anywhere
    for value in _values(raw):
        token = TOKEN_RE.fullmatch(value.strip())
        entry = vault.entries.get(value.strip()) if token else None
        real = entry.value if entry else vault.rehydrate(value)
        ok = False
        if "allowlist" in rule.sources and _allowlisted(rule.kind, real, policy):
            ok = True
        if not ok and "trusted_input" in rule.sources:
            if entry is not None and entry.trusted:
                ok = True  # the pseudonym stands for a value the trusted user typed
            else:
                canon = _canon(rule.kind, real)
                ok = len(canon) >= 3 and canon in trusted_blob[rule.kind]
        if not ok:
            return f"provenance:{rule.arg}:{rule.kind}_not_from_trusted_input_or_allowlist"
    return None


def _readable_sources(context: ToolContext, vault: PiiVault) -> list[Source]:
    """Sources with real values next to their pseudonyms, so a raw value in an argument is found where it was read
    (a trusted text gets back only the user's own values). Without labelled sources: the trusted texts."""
    sources = context.sources or [Source(label="user", text=t, name="user") for t in context.trusted_texts]
    return [s.model_copy(update={"text": s.text + "\n" + vault.rehydrate(s.text, only_trusted=s.label in TRUSTED)})
            if TOKEN_RE.search(s.text) else s for s in sources]


def evaluate_tool_call(call: ToolCall, context: ToolContext, policy: ToolsPolicy) -> ToolDecision:
    """allow / require_approval / deny for one proposed call. Deny wins over approval."""
    rule = policy.tools.get(call.name)
    if rule is None:
        action: ToolAction = "deny" if policy.unknown_tool == "deny" else "require_approval"
        return ToolDecision(tool=call.name, call_id=call.id, action=action, reasons=["unknown_tool"])
    vault = PiiVault.from_state(context.vault)
    args = vault.rehydrate_args(call.args)
    reasons: list[str] = []
    denied = False
    needs_approval = False

    for constraint in rule.constraints:
        outcome = _check_constraint(constraint, args, context.facts)
        if outcome is not None:
            reasons.append(outcome[1])
            denied |= outcome[0] == "deny"
            needs_approval |= outcome[0] == "require_approval"

    if rule.provenance:
        # Only tokens of trusted-origin values are put back into trusted text.
        texts = [vault.rehydrate(t, only_trusted=True) for t in context.trusted_texts]
        blob = {kind: _canon(kind, "\n".join(texts)) for kind in ("email", "url", "text")}
        blob.update({kind: "\n".join(_canon(kind, t) for t in texts) for kind in ("account", "phone")})
        for prov in rule.provenance:
            problem = _check_provenance(prov, call.args, vault, blob, policy)
            if problem:
                reasons.append(problem)
                denied = True

    if rule.risk == "write" and context.origin == "model" and not denied:
        # Every argument of a write, record ids included, must come from the user, the principal or config
        # (destructive tools always wait for an operator anyway).
        untrusted_text_seen = context.tainted or any(s.label in UNTRUSTED_TEXT for s in context.sources)
        free = frozenset(rule.free_text) if rule.free_text is not None else FREE_TEXT_NAMES
        for trace in trace_arguments(call.args, _readable_sources(context, vault), vault,
                                     schema=context.input_schema, free_text_args=free,
                                     allowlisted=lambda v: _allowlisted_any(vault.rehydrate(v), policy)):
            problem = needs_decision(trace, untrusted_text_seen)
            if problem:
                reasons.append(problem)
                needs_approval = True

    approval = rule.approval or policy.default_approval[rule.risk]
    if approval == "always" or rule.risk == "destructive":  # destructive: a human, whatever the file says
        needs_approval = True
        reasons.append(f"approval:{rule.risk}")
    elif context.tainted and (approval == "when_tainted" or rule.risk in ("write", "destructive")):
        # Invariant: every write in a tainted run needs a human, whatever the per-tool setting.
        needs_approval = True
        reasons.append("approval:tainted_run")

    final: ToolAction = "deny" if denied else ("require_approval" if needs_approval else "allow")
    return ToolDecision(tool=call.name, call_id=call.id, action=final, risk=rule.risk, reasons=reasons)
