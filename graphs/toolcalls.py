"""Tool calls as real providers return them, and the checks a call passes before it is planned.

Many open models served behind an OpenAI-compatible API pick the right tool but return the call as text in
`content` instead of `tool_calls`: a fenced or bare JSON object (`{"name": ..., "arguments": {...}}`, or with
`tool`/`function` and `parameters`/`args`), or Qwen's `<tool_call>...</tool_call>` block. `recognise` turns such
a reply into the same tool-call dicts a native call has, so it goes through exactly the same approval, policy and
provenance path (nothing here executes anything). `check_calls` validates every call, native or recognised,
against the schemas of the tools the caller may use; its problems become the retry message a model is shown.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection, Mapping
from typing import Any

import jsonschema
from pydantic import BaseModel, Field

_FENCE = re.compile(r"```(?:json|tool_call|tool|javascript)?\s*(.*?)```", re.S | re.I)
_QWEN = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S | re.I)
_NAME_KEYS = ("name", "tool", "tool_name", "function", "action")
_ARG_KEYS = ("arguments", "args", "parameters", "params", "input", "action_input")


class TextToolCalls(BaseModel):
    """What a reply's text held: tool calls, and whether the text looked like an attempted call at all."""

    calls: list[dict[str, Any]] = Field(default_factory=list)
    # The text looks like a call (JSON with a tool name, a <tool_call> block) even if none could be read:
    # such text is never an answer for the customer.
    attempted: bool = False
    problems: list[str] = Field(default_factory=list)


def _json_values(text: str) -> list[Any]:
    """Every JSON value in `text`: fenced blocks, <tool_call> blocks, else the outermost braces/brackets."""
    candidates = [m.group(1) for m in _QWEN.finditer(text)] + [m.group(1) for m in _FENCE.finditer(text)]
    if not candidates:
        stripped = text.strip()
        starts = [i for i in (stripped.find("{"), stripped.find("[")) if i >= 0]
        if starts:
            candidates.append(stripped[min(starts):])
    decoder = json.JSONDecoder()
    values: list[Any] = []
    for candidate in candidates:
        candidate = candidate.strip()
        pos = 0
        while pos < len(candidate):
            start = min((i for i in (candidate.find("{", pos), candidate.find("[", pos)) if i >= 0), default=-1)
            if start < 0:
                break
            try:
                value, end = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                pos = start + 1
                continue
            values.append(value)
            pos = end
    return values


def _as_call(value: Any, tools: Collection[str]) -> tuple[dict[str, Any] | None, str | None]:
    """One JSON object as (tool call, None), (None, why it is not one), or (None, None) if it is no call attempt.

    An object counts as a call when it has an arguments key, or when its name is one of `tools` (a record that
    merely has a "name" field, say a customer's, is data, not a call)."""
    if not isinstance(value, Mapping):
        return None, None
    obj: Mapping[str, Any] = value
    if isinstance(obj.get("function"), Mapping):  # OpenAI's own shape, serialised into the text
        obj = {**obj, **obj["function"]}
    name = next((obj[k] for k in _NAME_KEYS if isinstance(obj.get(k), str) and obj.get(k)), None)
    has_args = any(k in obj for k in _ARG_KEYS)
    if name is None or not (has_args or name.strip() in tools):
        return None, None
    raw_args = next((obj[k] for k in _ARG_KEYS if k in obj), {})
    if isinstance(raw_args, str):  # OpenAI serialises arguments as a JSON string; some models copy that
        try:
            raw_args = json.loads(raw_args) if raw_args.strip() else {}
        except json.JSONDecodeError:
            return None, f"the arguments of {name} are not valid JSON"
    if not isinstance(raw_args, Mapping):
        return None, f"the arguments of {name} must be a JSON object"
    return {"name": name.strip(), "args": dict(raw_args), "id": f"call_{uuid.uuid4().hex[:12]}",
            "type": "tool_call"}, None


def recognise(text: str, tools: Collection[str] = ()) -> TextToolCalls:
    """Tool calls written as text in a model's reply (see the module docstring for the forms); `tools` are the
    names the caller may use (a bare `{"name": ...}` naming one of them is a call without arguments)."""
    if not text or ("{" not in text and "<tool_call" not in text.lower()):
        return TextToolCalls()
    attempted = "<tool_call" in text.lower()
    calls: list[dict[str, Any]] = []
    problems: list[str] = []
    for value in _json_values(text):
        for item in value if isinstance(value, list) else [value]:
            call, problem = _as_call(item, tools)
            if call is not None:
                calls.append(call)
            if problem is not None:
                problems.append(problem)
            attempted = attempted or call is not None or problem is not None
    if attempted and not calls and not problems:
        problems.append("the tool call could not be read as JSON")
    return TextToolCalls(calls=calls, attempted=attempted, problems=problems)


def check_calls(calls: list[dict[str, Any]], schemas: Mapping[str, dict[str, Any] | None]) -> list[str]:
    """Why each call cannot be planned as written (unknown tool, arguments that break its schema); empty if fine.

    `schemas` maps the tools the caller may use to their input schemas. The messages name the tool and the field,
    never an argument's value (it may be a pseudonym or text from a tool result)."""
    problems: list[str] = []
    for call in calls:
        name = call.get("name") or ""
        if name not in schemas:
            known = ", ".join(sorted(schemas)) or "none"
            problems.append(f"there is no tool named {name!r}; the tools you can call are: {known}")
            continue
        schema = schemas[name] or {"type": "object"}
        validator = jsonschema.Draft202012Validator(schema)
        for error in sorted(validator.iter_errors(call.get("args") or {}), key=lambda e: list(e.path)):
            where = ".".join(str(p) for p in error.path) or "arguments"
            problems.append(f"{name}: {where}: {_describe(error)}")
    return problems


def _describe(error: jsonschema.ValidationError) -> str:
    """The schema rule that failed, without echoing the offending value."""
    match error.validator:
        case "required":
            missing = [p for p in error.validator_value if p not in (error.instance or {})]
            return "missing required field(s) " + ", ".join(missing)
        case "additionalProperties":
            return "unexpected field(s); allowed: " + ", ".join(sorted(error.schema.get("properties") or {}))
        case "type":
            return f"must be of type {error.validator_value}"
        case "enum":
            return "must be one of " + ", ".join(map(str, error.validator_value))
        case "pattern":
            return f"must match the pattern {error.validator_value}"
        case _:
            return f"violates '{error.validator}' ({error.validator_value})"


def retry_message(problems: list[str]) -> str:
    """The correction a model is shown before it tries again."""
    lines = "\n".join(f"- {p}" for p in problems[:8])
    return ("Your previous reply could not be used as a tool call:\n" + lines +
            "\nCall one of the available tools with arguments that match its schema, using the tool-calling "
            "interface, or answer the customer in plain text without any JSON.")
