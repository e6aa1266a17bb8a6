"""Provenance of a write's arguments: where each value came from, and whether that needs a decision.

Every leaf of a proposed call's arguments (record ids included) is looked up in the run's labelled
sources. A value the requesting user typed, the principal's own identity or operator configuration
may steer a write; a value found only in a tool result or in retrieved text, or one the model made
up, may not without a human decision (an operator, or the requester where the tool's policy says
`decision: confirm`). Free text the model composed (a ticket body in its own words) is allowed only
while nothing untrusted-text was in its context: once a ticket body, a note or a retrieved chunk was
read, anything composed may have been steered by it.

    user messages ──┐ (trusted tokens)           tool result ── label from tools.yaml `output`:
    principal ──────┼─> trusted sources               data  (a record's fields: not instructions,
    system / config ┘                                        but not the user's choice either)
                                                      text  (ticket bodies, notes: untrusted text)
    retrieved chunks ───────────────────────────────> text
                             │
    proposed write args ─> trace each leaf ─> user/principal/config: ok
                                           ─> tool data/text, retrieved: decision
                                           ─> nowhere (model-made): id-like: decision;
                                              free text: decision only after untrusted text was read
Matching is on canonical forms (case, separators), record ids also by their number ("order 1002"
names ORD-1002), and pseudonyms by the vault's trusted flag (a trusted token is the user's value).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any, Literal

from interlock.policies.pii import TOKEN_RE, PiiVault
from pydantic import BaseModel, Field

Label = Literal["user", "principal", "config", "tool_data", "tool_text", "retrieved"]
Origin = Literal["user", "principal", "config", "tool_data", "tool_text", "retrieved", "model"]
TRUSTED: frozenset[str] = frozenset({"user", "principal", "config"})
UNTRUSTED_TEXT: frozenset[str] = frozenset({"tool_text", "retrieved"})
# Earlier labels win when a value is in several sources: what the user said stands even if a tool echoed it.
_ORDER: tuple[Label, ...] = ("user", "principal", "config", "tool_text", "retrieved", "tool_data")

_ID_RE = re.compile(r"^[A-Za-z]{1,6}[-_ ]?#?(\d{3,})$")
_WORDS_RE = re.compile(r"\s")
# Arguments that pick a record or a recipient: always traced as identifiers, never as composed text.
_SELECTOR_NAME = re.compile(r"(^|_)(id|ids|email|emails|phone|account|iban|url|to|cc|bcc|recipient|recipients|"
                            r"number|customer|order|invoice|ticket|user|address)$")
# Arguments that hold text the model writes in its own words.
FREE_TEXT_NAMES = frozenset({"subject", "body", "reason", "summary", "message", "comment", "note", "notes",
                             "description", "title", "text", "content"})


class Source(BaseModel):
    """One piece of text the run holds, with where it came from (`name`: the tool or chunk)."""

    label: Label
    text: str
    name: str = ""


class ArgTrace(BaseModel):
    path: str
    origin: Origin
    found_in: list[str] = Field(default_factory=list)  # source names (tools, chunk ids) for the reason
    free_text: bool = False
    untrusted_tokens: list[str] = Field(default_factory=list)  # third-party pseudonyms inside the value


def _canon(value: str) -> str:
    return re.sub(r"[^0-9a-z]", "", value.lower())


def _words(value: str) -> str:
    return " ".join(value.lower().split())


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]")
    elif value is not None:
        yield path, value


def _schema_constants(schema: dict[str, Any] | None) -> set[str]:
    """Enum/const/default values of a tool's input schema: choices the operator's tool offers, not data."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("enum",):
                for v in node.get(key) or []:
                    found.add(str(v))
            for key in ("const", "default"):
                if key in node and node[key] is not None and not isinstance(node[key], dict | list):
                    found.add(str(node[key]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema or {})
    return found


class _Index:
    """The sources in the three forms values are compared in, built once per call."""

    def __init__(self, sources: list[Source]) -> None:
        self.by_label: dict[str, list[tuple[str, str, str, str]]] = {}
        for s in sources:
            self.by_label.setdefault(s.label, []).append((s.name, s.text, _canon(s.text), _words(s.text)))

    def where(self, test: Any, untrusted: bool = False) -> tuple[Label | None, list[str]]:
        for label in _ORDER:
            if untrusted and label in TRUSTED:
                continue
            names = [name or label for name, raw, canon, words in self.by_label.get(label, [])
                     if test(raw, canon, words)]
            if names:
                return label, names
        return None, []


def _selector_test(value: str) -> Any:
    canon = _canon(value)
    number = _ID_RE.match(value.strip())
    digits = re.compile(rf"(?<![0-9]){number.group(1)}(?![0-9])") if number else None

    def test(raw: str, c: str, _w: str) -> bool:
        return canon in c or (digits is not None and digits.search(raw) is not None)

    return test


def _phrase_test(words: str) -> Any:
    return lambda _raw, _canon_text, text_words: words in text_words


def trace_arguments(
    args: dict[str, Any], sources: list[Source], vault: PiiVault, *,
    schema: dict[str, Any] | None = None, free_text_args: frozenset[str] = FREE_TEXT_NAMES,
    allowlisted: Callable[[str], bool] | None = None,
) -> list[ArgTrace]:
    """Where every leaf of `args` came from. `args` as the model proposed them (pseudonyms, not real values)."""
    index = _Index(sources)
    constants = _schema_constants(schema)
    traces: list[ArgTrace] = []
    for path, value in _leaves(args):
        if isinstance(value, bool):
            traces.append(ArgTrace(path=path, origin="model", free_text=True))  # a yes/no choice, not data
            continue
        text = str(value)
        if isinstance(value, int | float) and abs(value) < 100:
            traces.append(ArgTrace(path=path, origin="model", free_text=True))  # small counts: choices
            continue
        if text in constants or (allowlisted is not None and allowlisted(text)):
            traces.append(ArgTrace(path=path, origin="config"))
            continue
        untrusted_tokens = [m.group(0) for m in TOKEN_RE.finditer(text)
                            if (e := vault.entries.get(m.group(0))) is not None and not e.trusted]
        top = path.split(".")[0].split("[")[0]
        selector_name = bool(_SELECTOR_NAME.search(top.lower()))
        free = top in free_text_args or (not selector_name and bool(_WORDS_RE.search(text.strip())))
        token = TOKEN_RE.fullmatch(text.strip())
        entry = vault.entries.get(text.strip()) if token else None
        if entry is not None:
            # A pseudonym's origin is the vault's: the user's own value, or one read from somewhere else
            # (typing a token's text never makes a third party's value the user's).
            label, names = ("user", ["user"]) if entry.trusted else index.where(_selector_test(text), untrusted=True)
            if label is None and not entry.trusted:
                label, names = "tool_data", ["earlier tool output"]
        elif free:
            words = _words(text)
            label, names = index.where(_phrase_test(words)) if len(words) >= 8 else (None, [])
        elif len(_canon(text)) < 3:
            label, names, free = None, [], True  # two characters identify nothing
        else:
            label, names = index.where(_selector_test(text))
        origin: Origin = label if label is not None else "model"
        if untrusted_tokens and origin in (*TRUSTED, "model"):
            # A text carrying a third party's value (its pseudonym) moves that value, whoever composed the text.
            origin, names = "tool_data", untrusted_tokens
        traces.append(ArgTrace(path=path, origin=origin, found_in=names, free_text=free,
                               untrusted_tokens=untrusted_tokens))
    return traces


def needs_decision(trace: ArgTrace, untrusted_text_seen: bool) -> str | None:
    """The reason this argument needs a human decision, or None."""
    if trace.origin in TRUSTED:
        return None
    if trace.origin == "model":
        if not trace.free_text:
            return f"provenance:{trace.path}:untraceable"
        if untrusted_text_seen:
            return f"provenance:{trace.path}:composed_after_untrusted_text"
        return None
    where = ",".join(sorted(set(trace.found_in)))[:80]
    return f"provenance:{trace.path}:from_{trace.origin}({where})"


def result_sources(tool: str, content: Any, artifact: Any, trust: Literal["data", "text"],
                   text_fields: list[str]) -> list[Source]:
    """A tool result as labelled sources: `text` results whole; `data` results split so that the free-text
    fields the policy names (ticket bodies, notes) are untrusted text and the rest is data."""
    if trust == "text":
        return [Source(label="tool_text", text=_as_text(content), name=tool)]
    if not text_fields:
        return [Source(label="tool_data", text=_as_text(content), name=tool)]
    if not isinstance(artifact, dict | list):
        # Without the structured result the fields cannot be told apart: all of it is untrusted text.
        return [Source(label="tool_text", text=_as_text(content), name=tool)]
    texts: list[str] = []
    data = _split(artifact, set(text_fields), texts)
    out = [Source(label="tool_data", text=_as_text(data), name=tool)]
    out += [Source(label="tool_text", text=t, name=tool) for t in texts if t]
    return out


def _split(value: Any, fields: set[str], texts: list[str]) -> Any:
    if isinstance(value, dict):
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if key in fields:
                texts.append(_as_text(item))
            else:
                kept[key] = _split(item, fields, texts)
        return kept
    if isinstance(value, list):
        return [_split(v, fields, texts) for v in value]
    return value


def has_text_fields(artifact: Any, text_fields: list[str]) -> bool:
    texts: list[str] = []
    _split(artifact, set(text_fields), texts)
    return any(t.strip() and t not in ("null", "[]", '""') for t in texts)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
