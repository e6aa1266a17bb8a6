"""Declarative playbooks: intent -> slots extracted by pattern -> validated tool calls -> a reply.

This is the zero-key planner and the degraded mode. It is deterministic on purpose: it fills
arguments only from what the user wrote (never invents an id), validates them against the tool's
JSON schema, and asks for whatever is missing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from interlock.policies.graph_schema import PlaybookSpec, PlaybooksPolicy, SlotSpec, load_playbooks_policy

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w.]*)(?:\|(money))?\}")


@dataclass
class PlaybookPlan:
    intent: str
    slots: dict[str, Any]
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    question: str = ""
    # (tool, args, field, stop values, reply template): read first, end here when the state makes the steps moot.
    precheck: tuple[str, dict[str, Any], str, list[Any], str] | None = None


def _convert(value: str, slot: SlotSpec) -> Any:
    value = value.strip()
    if slot.prefix and not value.upper().startswith(slot.prefix.upper()):
        value = slot.prefix + value
    match slot.transform:
        case "upper":
            return value.upper()
        case "lower":
            return value.lower()
        case "int":
            return int(value)
        case "float":
            return float(value)
        case "cents":
            return round(float(value) * 100)
    return value


def extract_slots(playbook: PlaybookSpec, text: str, principal: str = "") -> tuple[dict[str, Any], list[str]]:
    """Slot values found in `text` (or the principal), and the required slots that were not found."""
    values: dict[str, Any] = {"message": text.strip()[:500]}
    missing = []
    for name, slot in playbook.slots.items():
        match = re.search(slot.pattern, principal if slot.source == "principal" else text)
        raw = next((g for g in match.groups() if g), None) if match and match.groups() else \
            (match.group(0) if match else None)
        if raw is not None:
            try:
                values[name] = _convert(raw, slot)
                continue
            except ValueError:
                pass
        if slot.default is not None:
            values[name] = slot.default
        elif slot.required:
            missing.append(name)
    return values, missing


def _fill(template: Any, slots: dict[str, Any]) -> Any:
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole:
            return slots.get(whole.group(1))
        return _PLACEHOLDER.sub(lambda m: str(slots.get(m.group(1), "")), template)
    if isinstance(template, dict):
        return {k: _fill(v, slots) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, slots) for v in template]
    return template


def precheck_for_call(tool: str, args: dict[str, Any], policy: PlaybooksPolicy | None = None,
                      intent: str = "") -> tuple[str, dict[str, Any], str, list[Any], str] | None:
    """The precheck a playbook runs before its step calling `tool`, filled from a model's call of that tool (the
    step's `{slot}` arguments read back from the call), so model mode reads the record first exactly as the playbook
    would: the routed intent's playbook first. None when no playbook prechecks this tool or the call lacks a value
    the precheck needs."""
    policy = policy or default_playbooks()
    names = [intent, *policy.playbooks] if intent in policy.playbooks else list(policy.playbooks)
    for name in names:
        playbook = policy.playbooks[name]
        step = next((s for s in playbook.steps if s.tool == tool), None)
        if playbook.precheck is None or step is None:
            continue
        slots = {whole.group(1): args.get(arg) for arg, template in step.args.items()
                 if isinstance(template, str) and (whole := _PLACEHOLDER.fullmatch(template))}
        check = playbook.precheck
        filled = _fill(check.args, slots)
        if not filled or any(v in (None, "") for v in filled.values()):
            return None
        return (check.tool, filled, check.field, list(check.stop_if), check.reply)
    return None


def plan(intent: str, text: str, policy: PlaybooksPolicy | None = None, principal: str = "") -> PlaybookPlan | None:
    """The calls a playbook makes for this message, or None when the intent has no playbook."""
    policy = policy or default_playbooks()
    playbook = policy.playbooks.get(intent)
    if playbook is None:
        return None
    slots, missing = extract_slots(playbook, text, principal)
    result = PlaybookPlan(intent=intent, slots=slots, missing=missing)
    if missing:
        asks = [playbook.slots[m].ask or f"Please tell me the {m.replace('_', ' ')}." for m in missing]
        result.question = " ".join(dict.fromkeys(asks))
        return result
    if playbook.precheck is not None:
        check = playbook.precheck
        args = {k: v for k, v in _fill(check.args, slots).items() if v not in (None, "")}
        result.precheck = (check.tool, args, check.field, list(check.stop_if), check.reply)
    for step in playbook.steps:
        if step.when and slots.get(step.when) in (None, ""):
            continue
        if step.unless and slots.get(step.unless) not in (None, ""):
            continue
        args = {k: v for k, v in _fill(step.args, slots).items() if v not in (None, "")}
        result.calls.append((step.tool, args))
        result.replies.append(step.reply or playbook.reply)
    return result


def validate_args(args: dict[str, Any], schema: dict[str, Any] | None,
                  rehydrate: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> list[str]:
    """Schema errors for `args` (empty when valid). Strings are coerced to numbers where the schema asks.

    Arguments may hold PII placeholders from the input guard; `rehydrate` gives the real values to
    validate against, while `args` itself keeps the placeholders.
    """
    if not schema:
        return []
    props = schema.get("properties") or {}
    for key, value in list(args.items()):
        kind = (props.get(key) or {}).get("type")
        if isinstance(value, str) and kind in ("integer", "number"):
            try:
                args[key] = int(value) if kind == "integer" else float(value)
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and kind == "string":
            args[key] = str(value)
    validator = jsonschema.Draft202012Validator(schema)
    real = rehydrate(args) if rehydrate is not None else args
    # The error names the argument and the rule, not the rejected value (it may be PII).
    return [describe_error(e) for e in validator.iter_errors(real)]


_EXAMPLE = re.compile(r"\be\.g\.,?\s*([^\s,;)]+)", re.IGNORECASE)


def describe_error(error: jsonschema.ValidationError) -> str:
    """A schema error in the user's words ("order ids look like ORD-1001"), never echoing the value."""
    name = ".".join(str(p) for p in error.absolute_path) or "arguments"
    label = name.rsplit(".", 1)[-1].replace("_", " ")
    schema = error.schema if isinstance(error.schema, dict) else {}
    examples = schema.get("examples") or []
    match = _EXAMPLE.search(str(schema.get("description") or ""))
    example = str(examples[0]) if examples else (match.group(1) if match else None)
    if error.validator == "pattern":
        return f"{label}s look like {example}" if example else f"that {label} is not in the expected format"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "an argument"
        return f"{missing.replace('_', ' ')} is missing"
    if error.validator == "type":
        return f"{label} should be {'a number' if error.validator_value in ('integer', 'number') else 'text'}"
    if error.validator == "enum":
        return f"{label} must be one of {', '.join(map(str, error.validator_value))}"
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        return f"{label} is out of range"
    if error.validator in ("minLength", "maxLength"):
        return f"{label} is too {'short' if error.validator == 'minLength' else 'long'}"
    return f"{label} is not valid ({error.validator})"


def _lookup(path: str, context: dict[str, Any]) -> Any:
    value: Any = context
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def render(template: str, context: dict[str, Any]) -> str:
    """Fill `{name}` / `{result.field}`; missing values render as "?" rather than failing."""
    def one(match: re.Match[str]) -> str:
        value = _lookup(match.group(1), context)
        if value is None:
            return "?"
        if match.group(2) == "money" and isinstance(value, (int, float)):
            return f"{value / 100:.2f}"
        if isinstance(value, (dict, list)):
            return _summarise(value)
        return str(value)

    return _PLACEHOLDER.sub(one, template)


def _summarise(value: Any, limit: int = 600) -> str:
    if isinstance(value, list):
        items = [_summarise(v, 200) for v in value[:10]]
        more = f" (+{len(value) - 10} more)" if len(value) > 10 else ""
        return "; ".join(items) + more
    if isinstance(value, dict):
        text = ", ".join(f"{k}: {v}" for k, v in value.items() if not isinstance(v, (dict, list)))
        return text[:limit] or json.dumps(value)[:limit]
    return str(value)[:limit]


_default: PlaybooksPolicy | None = None


def default_playbooks() -> PlaybooksPolicy:
    global _default
    if _default is None:
        _default = load_playbooks_policy()
    return _default
