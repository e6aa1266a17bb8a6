"""Personal fields of structured tool results, pseudonymised by declaration (tools.yaml `pii_fields`).

Detection has a recall: the NER tier misses many names in JSON ("Omar Okafor" as a bare field value has no
sentence around it). A tool's policy therefore names the fields that always hold personal data; their whole
value becomes a vault pseudonym before any detector runs, in the structured result and in the text a model reads,
and the same raw values are replaced wherever else they occur in that result (a name repeated in a ticket body).
The vault decides trust as everywhere else: a value the requesting user typed keeps its trusted token; anything
first seen here is a third party's, except in the record of the customer the principal is bound to (`owner`: the
verified token's `customer_id`; a record whose `customer_id` is that id, and everything inside it): those values
are the user's own, trusted like their typed input (restored in write arguments, shown to them unredacted). Staff
principals (no binding) own no record.

A field spec is a field name (`name`: that key at any depth) or a dotted path of keys (`customers.name`,
`billing.address`) matched against the end of the key path; list indices are not part of a path. A declared
field holding a record or a list (`address: {street, city}`) has every string inside it pseudonymised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from interlock.policies.pii import TOKEN_RE, PiiVault

Label = Callable[[str], str]


def _entity_for(path: tuple[str, ...], fields: Mapping[str, str]) -> str | None:
    best: tuple[int, str] | None = None
    for spec, entity in fields.items():
        parts = tuple(spec.split("."))
        if len(parts) <= len(path) and path[-len(parts):] == parts and (best is None or len(parts) > best[0]):
            best = (len(parts), entity)  # the most specific spec wins (`items.name` over `name`)
    return best[1] if best is not None else None


def _tokenise(value: Any, entity: str, vault: PiiVault, label: Label, seen: dict[str, str], own: bool) -> Any:
    if isinstance(value, dict):
        return {k: _tokenise(v, entity, vault, label, seen, own) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_tokenise(v, entity, vault, label, seen, own) for v in value]
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip()
    if not text or TOKEN_RE.fullmatch(text):
        return value  # empty, or already a pseudonym (a write echoing its arguments)
    token = vault.token_for(text, entity, label(entity), trusted=own)
    seen[text] = token
    return token


def _declared(value: Any, fields: Mapping[str, str], vault: PiiVault, label: Label, seen: dict[str, str],
              path: tuple[str, ...] = (), owner: str | None = None, own: bool = False) -> Any:
    if isinstance(value, dict):
        # The bound customer's own record (the MCP server answered it under the verified binding).
        own = own or (owner is not None and value.get("customer_id") == owner)
        out: dict[str, Any] = {}
        for key, item in value.items():
            sub = (*path, str(key))
            entity = _entity_for(sub, fields)
            out[key] = (_tokenise(item, entity, vault, label, seen, own) if entity is not None
                        else _declared(item, fields, vault, label, seen, sub, owner, own))
        return out
    if isinstance(value, list | tuple):
        return [_declared(v, fields, vault, label, seen, path, owner, own) for v in value]
    return value


def _replacer(seen: Mapping[str, str]) -> Callable[[str], str]:
    """Replaces each declared raw value wherever it stands as a whole word, also JSON-escaped (non-ASCII)."""
    forms: dict[str, str] = {}
    for raw, token in seen.items():
        forms[raw] = token
        forms[json.dumps(raw)[1:-1]] = token
    if not forms:
        return lambda text: text
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
                         + r")(?!\w)")
    return lambda text: pattern.sub(lambda m: forms[m.group(0)], text)


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_map_strings(v, fn) for v in value]
    return value


def structured(text: str, artifact: Any) -> Any:
    """The result's structure: the artifact, else the text when it is a JSON record or list."""
    if artifact is not None:
        return artifact
    try:
        parsed = json.loads(text)
    except (TypeError, ValueError):
        return None
    return parsed if isinstance(parsed, dict | list) else None


def pseudonymise_fields(text: str, artifact: Any, fields: Mapping[str, str], vault: PiiVault,
                        label: Label, owner: str | None = None) -> tuple[str, Any, int]:
    """(text, artifact, number of values) with every declared field's value a pseudonym, and those raw values
    replaced elsewhere in the result too. The vault is updated in place. Nothing declared: returned as given.
    `owner`: the customer id the principal is bound to; its record's values are trusted (the user's own)."""
    value = structured(text, artifact)
    if not fields or value is None:
        return text, artifact, 0
    seen: dict[str, str] = {}
    tokenised = _declared(value, fields, vault, label, seen, owner=owner)
    if not seen:
        return text, artifact, 0
    replace = _replacer(seen)
    tokenised = _map_strings(tokenised, replace)
    if _same_json(text, value):
        new_text = json.dumps(tokenised, default=str)  # the planner's rendering of a structured result
    else:
        new_text = replace(text)
    return new_text, (tokenised if artifact is not None else None), len(seen)


def _same_json(text: str, value: Any) -> bool:
    try:
        return json.loads(text) == json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return False
