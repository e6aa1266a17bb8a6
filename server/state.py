"""Thread state as the API shows it: LangGraph StateSnapshots turned into JSON objects."""

from __future__ import annotations

from typing import Any

from interlock.server.serialization import jsonable
from langgraph.types import StateSnapshot


def checkpoint_of(config: dict[str, Any] | None) -> dict[str, Any] | None:
    if not config:
        return None
    conf = config.get("configurable", {})
    if "checkpoint_id" not in conf:
        return None
    out = {
        "thread_id": conf.get("thread_id"),
        "checkpoint_ns": conf.get("checkpoint_ns", ""),
        "checkpoint_id": conf.get("checkpoint_id"),
    }
    if conf.get("checkpoint_map"):
        out["checkpoint_map"] = conf["checkpoint_map"]
    return out


def interrupt_out(interrupt: Any) -> dict[str, Any]:
    return {"value": jsonable(getattr(interrupt, "value", None)), "id": getattr(interrupt, "id", None)}


def snapshot_out(snapshot: StateSnapshot) -> dict[str, Any]:
    checkpoint = checkpoint_of(snapshot.config)
    parent = checkpoint_of(snapshot.parent_config)
    tasks = []
    for task in snapshot.tasks:
        sub_state = task.state
        tasks.append(
            {
                "id": task.id,
                "name": task.name,
                "path": jsonable(task.path),
                "error": repr(task.error) if task.error else None,
                "interrupts": [interrupt_out(i) for i in task.interrupts],
                "checkpoint": checkpoint_of(sub_state) if isinstance(sub_state, dict) else None,
                "state": snapshot_out(sub_state) if isinstance(sub_state, StateSnapshot) else None,
                "result": jsonable(task.result) if getattr(task, "result", None) is not None else None,
            }
        )
    return {
        "values": jsonable(snapshot.values),
        "next": list(snapshot.next),
        "tasks": tasks,
        "metadata": jsonable(snapshot.metadata) if snapshot.metadata is not None else {},
        "created_at": snapshot.created_at,
        "checkpoint": checkpoint,
        "checkpoint_id": checkpoint["checkpoint_id"] if checkpoint else None,
        "parent_checkpoint": parent,
        "parent_checkpoint_id": parent["checkpoint_id"] if parent else None,
        "interrupts": [interrupt_out(i) for i in snapshot.interrupts],
    }


def pending_interrupts(snapshot: StateSnapshot) -> dict[str, list[dict[str, Any]]]:
    """Thread-level `interrupts`: task id -> interrupts, only dynamic ones (static breakpoints have none)."""
    return {t.id: [interrupt_out(i) for i in t.interrupts] for t in snapshot.tasks if t.interrupts}
