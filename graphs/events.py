"""Telemetry events from inside graph nodes: retrievals, tool calls, guard verdicts and model usage.

They travel as LangChain custom events (`interlock.<kind>`), so whoever runs the graph can record them (the
Interlock server turns them into trace spans and metrics) and a graph run outside any server pays nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

log = logging.getLogger("interlock.graphs.events")

# A model call's usage (UsageRecord fields: tenant, feature, tier, provider, model, tokens, cost, latency, outcome).
USAGE_EVENT = "usage"


# The arguments a tool-call event may show: the call as proposed (pseudonyms), not the real values the executor
# put back for the MCP server (a third party's email read earlier must not reach the `events` stream or a trace).
_SHOWN: ContextVar[dict[str, Any] | None] = ContextVar("interlock_shown_args", default=None)


@contextmanager
def shown_args(args: dict[str, Any]) -> Iterator[None]:
    token = _SHOWN.set(args)
    try:
        yield
    finally:
        _SHOWN.reset(token)


def tool_inputs(args: dict[str, Any]) -> dict[str, Any]:
    """What a tool event shows as its inputs: the proposed arguments when the caller set them."""
    shown = _SHOWN.get()
    return shown if shown is not None else args


async def emit(kind: str, payload: dict[str, Any]) -> None:
    from langchain_core.callbacks.manager import adispatch_custom_event

    try:
        await adispatch_custom_event(f"interlock.{kind}", payload)
    except RuntimeError:
        pass  # called outside a run (unit tests calling a node directly)
    except Exception:  # noqa: BLE001 - telemetry must never change a run's outcome
        log.debug("could not emit %s event", kind, exc_info=True)


def guard_label(verdict: dict[str, Any]) -> str:
    if verdict.get("ok") is False or verdict.get("error"):
        return "failed"
    for key in ("blocked", "flagged", "quarantined", "tainted", "changed", "redacted"):
        if verdict.get(key):
            return key
    return "pass"
