"""The frame every served graph runs in: identify -> input guard -> body -> output guard.

Each graph in langgraph.json is built through `guarded`, so none can be served without the input guard (injection
scan, PII pseudonymised before any model or tool sees the text) or the output guard. A message the input policy
blocks skips the body and goes straight to the output guard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interlock.graphs.nodes import guards
from interlock.graphs.state import InterlockState, identify
from langgraph.graph import END, START, StateGraph

IDENTIFY, INPUT_GUARD, OUTPUT_GUARD = "identify", "input_guard", "output_guard"


def _after_input(state: InterlockState) -> str:
    return "blocked" if state.get("outcome") == "guard_blocked" else "ok"


def guarded(builder: StateGraph, *, entry: str, exits: Sequence[str], use_guards: bool = True) -> StateGraph:
    """Wrap the body already in `builder` (it starts at `entry`; `exits` are its last nodes) in the guard frame.

    `use_guards=False` leaves only `identify`, for tests of the body's own logic."""
    builder.add_node(IDENTIFY, identify)
    builder.add_edge(START, IDENTIFY)
    if not use_guards:
        builder.add_edge(IDENTIFY, entry)
        for node in exits:
            builder.add_edge(node, END)
        return builder
    builder.add_node(INPUT_GUARD, guards.input_guard)
    builder.add_node(OUTPUT_GUARD, guards.output_guard)
    builder.add_edge(IDENTIFY, INPUT_GUARD)
    builder.add_conditional_edges(INPUT_GUARD, _after_input, {"blocked": OUTPUT_GUARD, "ok": entry})
    for node in exits:
        builder.add_edge(node, OUTPUT_GUARD)
    builder.add_edge(OUTPUT_GUARD, END)
    return builder


def guarded_subgraph(name: str, body: Any, *, entry_nodes: dict[str, Any] | None = None,
                     use_guards: bool = True) -> StateGraph:
    """A compiled body graph served on its own: optional lead-in nodes (in order), then the body as one node."""
    builder = StateGraph(InterlockState)
    chain = [*(entry_nodes or {}), name]
    for node_name, node in (entry_nodes or {}).items():
        builder.add_node(node_name, node)
    builder.add_node(name, body)
    for a, b in zip(chain, chain[1:], strict=False):
        builder.add_edge(a, b)
    return guarded(builder, entry=chain[0], exits=[name], use_guards=use_guards)
