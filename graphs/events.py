"""Telemetry events from inside graph nodes: retrievals, tool calls, guard verdicts and model usage.

They travel as LangChain custom events (`interlock.<kind>`), so whoever runs the graph can record them (the
Interlock server turns them into trace spans and metrics) and a graph run outside any server pays nothing.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("interlock.graphs.events")

# A model call's usage (UsageRecord fields: tenant, feature, tier, provider, model, tokens, cost, latency, outcome).
USAGE_EVENT = "usage"


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
