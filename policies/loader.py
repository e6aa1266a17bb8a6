"""Load, validate and hash the versioned policy set (policies/*.yaml).

Called once at start: an invalid file raises `PolicyError` naming the file and the field, so the
server refuses to start with a broken policy. The hash covers the exact bytes of every file that
was loaded and is recorded on every run.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from interlock.policies import POLICY_DIR
from interlock.policies.schema import InjectionPolicy, LimitsPolicy, PiiPolicy, ScopePolicy, ToolsPolicy
from pydantic import BaseModel, ValidationError

from interlock.kernel.settings import get_settings

# File name -> (attribute, model). All five are required.
_GUARD_FILES: dict[str, tuple[str, type[BaseModel]]] = {
    "tools.yaml": ("tools", ToolsPolicy),
    "pii.yaml": ("pii", PiiPolicy),
    "injection.yaml": ("injection", InjectionPolicy),
    "scope.yaml": ("scope", ScopePolicy),
    "limits.yaml": ("limits", LimitsPolicy),
}
# Owned by the graphs area; validated when both the file and policies.graph_schema exist.
_GRAPH_FILES: dict[str, tuple[str, str]] = {
    "models.yaml": ("models", "ModelsPolicy"),
    "intents.yaml": ("intents", "IntentsPolicy"),
    "playbooks.yaml": ("playbooks", "PlaybooksPolicy"),
}


class PolicyError(ValueError):
    """A policy file is missing, is not YAML, or does not validate. The message names file and field."""

    def __init__(self, file: str, field_path: str, message: str) -> None:
        self.file = file
        self.field = field_path
        super().__init__(f"{file}: {field_path}: {message}" if field_path else f"{file}: {message}")


@dataclass(frozen=True, eq=False)  # identity hash: usable as a cache key
class PolicySet:
    directory: Path
    hash: str
    tools: ToolsPolicy
    pii: PiiPolicy
    injection: InjectionPolicy
    scope: ScopePolicy
    limits: LimitsPolicy
    models: Any = None
    intents: Any = None
    playbooks: Any = None
    files: tuple[str, ...] = field(default_factory=tuple)


def default_directory() -> Path:
    return get_settings().policy_dir or POLICY_DIR


def _read(path: Path) -> tuple[bytes, dict[str, Any]]:
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise PolicyError(path.name, "", f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PolicyError(path.name, "", "top level must be a mapping")
    return raw, data


def _validate(name: str, model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "<root>"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise PolicyError(name, loc, f"{first['msg']}{more}") from exc


def _graph_models() -> Any | None:
    try:
        return importlib.import_module("interlock.policies.graph_schema")
    except ModuleNotFoundError as exc:
        if exc.name == "interlock.policies.graph_schema":
            return None
        raise


def load_policies(directory: Path | None = None) -> PolicySet:
    """Validate every policy file in `directory` (default: $INTERLOCK_POLICY_DIR or this package)."""
    directory = Path(directory) if directory is not None else default_directory()
    digest = hashlib.sha256()
    parsed: dict[str, Any] = {}
    files: list[str] = []

    def take(name: str, raw: bytes) -> None:
        # Length-prefixed so that moving bytes between files changes the hash.
        digest.update(f"{name}\0{len(raw)}\0".encode())
        digest.update(raw)
        files.append(name)

    for name, (attr, model) in _GUARD_FILES.items():
        path = directory / name
        if not path.is_file():
            raise PolicyError(name, "", f"required policy file not found in {directory}")
        raw, data = _read(path)
        parsed[attr] = _validate(name, model, data)
        take(name, raw)

    graph_schema = _graph_models()
    for name, (attr, class_name) in _GRAPH_FILES.items():
        path = directory / name
        if not path.is_file():
            continue
        raw, data = _read(path)
        model = getattr(graph_schema, class_name, None) if graph_schema is not None else None
        if model is not None:
            parsed[attr] = _validate(name, model, data)
        take(name, raw)

    _check_pii_fields(parsed["tools"], parsed["pii"])
    return PolicySet(directory=directory, hash=digest.hexdigest(), files=tuple(files), **parsed)


def _check_pii_fields(tools: ToolsPolicy, pii: PiiPolicy) -> None:
    """tools.yaml `pii_fields` name entities pii.yaml knows (a typo would mint tokens nobody filters by type)."""
    known = {*pii.input.entities, *pii.output.entities, *pii.labels, *(p.entity for p in pii.custom_patterns)}
    for name, rule in tools.tools.items():
        for path, entity in rule.pii_fields.items():
            if entity not in known:
                raise PolicyError("tools.yaml", f"tools.{name}.pii_fields.{path}",
                                  f"unknown PII entity {entity!r} (pii.yaml knows {', '.join(sorted(known))})")


@functools.lru_cache(maxsize=1)
def _cached(directory: str) -> PolicySet:
    # The guards load their models (PII, learned detector) on first use, outside their per-call timeout
    # (graphs/nodes/guards.py): no background thread here, which could still be inside native code at exit.
    return load_policies(Path(directory))


def get_policies() -> PolicySet:
    """The process-wide policy set, loaded once per directory."""
    return _cached(str(default_directory()))


def clear_cache() -> None:
    _cached.cache_clear()
