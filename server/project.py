"""A LangGraph project as `langgraph dev` reads it: langgraph.json's graphs, env, dependencies and auth."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.graph import StateGraph
from langgraph.pregel import Pregel


class ProjectError(Exception):
    """langgraph.json or one of the files it names cannot be loaded."""


@dataclass
class GraphSpec:
    graph_id: str
    target: str  # "./path.py:attr" or "package.module:attr"
    obj: Any = None
    compiled: Pregel | None = None  # bound to the server's checkpointer and store
    ephemeral: Pregel | None = None  # bound to an in-memory checkpointer, for stateless runs
    factory: Any = None  # a callable taking config; called per run


@dataclass
class Project:
    config_path: Path
    graphs: dict[str, GraphSpec] = field(default_factory=dict)
    auth_target: str | None = None
    http: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.config_path.parent


def _load_env(root: Path, env: Any) -> None:
    if env is None:
        return
    if isinstance(env, dict):
        for key, value in env.items():
            os.environ.setdefault(str(key), str(value))
        return
    if isinstance(env, str):
        path = (root / env).resolve()
        if not path.exists():
            raise ProjectError(f"env file {path} named in langgraph.json does not exist")
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.partition("=")
            key = key.strip().removeprefix("export ").strip()
            value = value.strip().strip('"').strip("'")
            os.environ.setdefault(key, value)
        return
    raise ProjectError("'env' in langgraph.json must be a path or an object")


def load_object(root: Path, target: str) -> Any:
    """Import `./file.py:attr` (relative to the project) or `module.path:attr`."""
    if ":" not in target:
        raise ProjectError(f"'{target}' must be 'path/to/file.py:attribute' or 'module:attribute'")
    location, _, attr = target.rpartition(":")
    if location.endswith(".py") or "/" in location:
        path = (root / location).resolve()
        if not path.exists():
            raise ProjectError(f"graph file {path} does not exist")
        module_name = "interlock_user_" + "_".join(path.with_suffix("").parts[-3:]).replace("-", "_").replace(".", "_")
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise ProjectError(f"cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[module_name]
                raise ProjectError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(location)
        except Exception as exc:
            raise ProjectError(f"importing {location} failed: {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ProjectError(f"'{target}': {part!r} not found") from None
    return obj


def load_project(config_path: str | Path) -> Project:
    path = Path(config_path).resolve()
    if not path.exists():
        raise ProjectError(f"config file {path} does not exist")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ProjectError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("graphs"), dict) or not raw["graphs"]:
        raise ProjectError(f"{path} must have a non-empty 'graphs' object")
    project = Project(config_path=path, raw=raw)
    for dep in raw.get("dependencies") or []:
        # Local dependencies become importable the way `langgraph dev` installs them; package names are
        # expected to be installed already.
        if isinstance(dep, str) and (dep.startswith(".") or dep.startswith("/")):
            dep_path = str((project.root / dep).resolve())
            if dep_path not in sys.path:
                sys.path.insert(0, dep_path)
    _load_env(project.root, raw.get("env"))
    for graph_id, target in raw["graphs"].items():
        if isinstance(target, dict):
            target = target.get("path")
        if not isinstance(target, str):
            raise ProjectError(f"graph '{graph_id}' must name 'path:attribute'")
        project.graphs[graph_id] = GraphSpec(graph_id=graph_id, target=target)
    auth = raw.get("auth")
    if isinstance(auth, dict) and auth.get("path"):
        project.auth_target = auth["path"]
    project.http = raw.get("http") or {}
    return project


def bind_graphs(project: Project, checkpointer: Any, store: Any, ephemeral_checkpointer: Any = None) -> None:
    """Import every graph and bind compiled ones to the server's checkpointer and store once."""
    for spec in project.graphs.values():
        obj = load_object(project.root, spec.target)
        spec.obj = obj
        if isinstance(obj, Pregel):
            spec.compiled = obj.copy(update={"checkpointer": checkpointer, "store": store})
            if ephemeral_checkpointer is not None:
                spec.ephemeral = obj.copy(update={"checkpointer": ephemeral_checkpointer, "store": store})
        elif isinstance(obj, StateGraph):
            spec.compiled = obj.compile(checkpointer=checkpointer, store=store)
            if ephemeral_checkpointer is not None:
                spec.ephemeral = obj.compile(checkpointer=ephemeral_checkpointer, store=store)
        elif callable(obj):
            spec.factory = obj
        else:
            raise ProjectError(
                f"graph '{spec.graph_id}' ({spec.target}) is a {type(obj).__name__}, "
                "expected a compiled graph, a StateGraph or a factory"
            )


@asynccontextmanager
async def graph_for_run(
    spec: GraphSpec, config: dict[str, Any], checkpointer: Any, store: Any, *, ephemeral: bool = False
) -> AsyncIterator[Pregel]:
    """The graph to execute for one run; factories are called with the run's config."""
    bound = spec.ephemeral if ephemeral else spec.compiled
    if bound is not None:
        yield bound
        return
    factory = spec.factory
    params = inspect.signature(factory).parameters
    result = factory(config) if params else factory()
    if inspect.isawaitable(result):
        result = await result
    if hasattr(result, "__aenter__"):
        async with result as value:
            yield _bind(value, checkpointer, store)
        return
    if hasattr(result, "__enter__"):
        with result as value:
            yield _bind(value, checkpointer, store)
        return
    yield _bind(result, checkpointer, store)


def _bind(obj: Any, checkpointer: Any, store: Any) -> Pregel:
    if isinstance(obj, StateGraph):
        return obj.compile(checkpointer=checkpointer, store=store)
    if isinstance(obj, Pregel):
        return obj.copy(update={"checkpointer": checkpointer, "store": store})
    raise ProjectError(f"graph factory returned {type(obj).__name__}, expected a graph")
