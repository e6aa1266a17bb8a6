"""Prometheus metrics (`GET /metrics`, text format). Counters move as runs happen; gauges that describe the
database (queue depth, approvals pending) are read at scrape time."""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

REGISTRY = CollectorRegistry()
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

RUN_LATENCY = Histogram("interlock_run_duration_seconds", "Run wall time", ["graph_id"], buckets=_BUCKETS, registry=REGISTRY)
NODE_LATENCY = Histogram(
    "interlock_node_duration_seconds", "Graph node wall time", ["graph_id", "node"], buckets=_BUCKETS, registry=REGISTRY
)
RUN_OUTCOMES = Counter("interlock_runs_total", "Runs by final status", ["graph_id", "status"], registry=REGISTRY)
TOOL_CALLS = Counter("interlock_tool_calls_total", "Tool calls by tool and outcome", ["tool", "outcome"], registry=REGISTRY)
GUARD_VERDICTS = Counter("interlock_guard_verdicts_total", "Guard verdicts", ["guard", "verdict"], registry=REGISTRY)
APPROVALS_DECIDED = Counter("interlock_approvals_decided_total", "Operator decisions", ["decision"], registry=REGISTRY)
APPROVALS_PENDING = Gauge("interlock_approvals_pending", "Approvals waiting for an operator", registry=REGISTRY)
TOKENS = Counter("interlock_tokens_total", "Model tokens", ["tenant", "feature", "model"], registry=REGISTRY)
COST = Counter("interlock_cost_usd_total", "Model cost in USD", ["tenant", "feature", "model"], registry=REGISTRY)
CACHE = Counter("interlock_cache_total", "Cache lookups", ["cache", "result"], registry=REGISTRY)
QUEUE_DEPTH = Gauge("interlock_queue_depth", "Runs waiting in the queue", registry=REGISTRY)
RUNS_ACTIVE = Gauge("interlock_runs_active", "Runs executing in this process", registry=REGISTRY)
RATE_LIMITED = Counter("interlock_rate_limited_total", "Requests refused by tenant limits", ["reason"], registry=REGISTRY)


def observe_trace(doc: dict[str, Any], tenant: str | None) -> None:
    """Fold one finished run's trace into the counters."""
    graph_id = doc.get("graph_id") or "unknown"
    RUN_OUTCOMES.labels(graph_id, doc.get("status") or "unknown").inc()
    RUN_LATENCY.labels(graph_id).observe((doc.get("latency_ms") or 0) / 1000)
    for span in doc.get("spans", []):
        kind = span.get("kind")
        attrs = span.get("attributes") or {}
        if kind == "node" and span.get("latency_ms") is not None:
            NODE_LATENCY.labels(graph_id, span["name"]).observe(span["latency_ms"] / 1000)
        elif kind == "tool":
            TOOL_CALLS.labels(attrs.get("tool") or span["name"], attrs.get("outcome") or ("error" if span.get("error") else "ok")).inc()
        elif kind == "guard":
            GUARD_VERDICTS.labels(span["name"], str(attrs.get("verdict") or attrs.get("action") or "pass")).inc()
        elif kind == "model":
            tokens = int(attrs.get("tokens") or 0)
            if tokens:
                TOKENS.labels(tenant or "unknown", graph_id, str(attrs.get("model") or "unknown")).inc(tokens)
        elif kind == "usage":
            tokens = int(attrs.get("input_tokens") or 0) + int(attrs.get("output_tokens") or 0)
            model = str(attrs.get("model") or "unknown")
            feature = str(attrs.get("feature") or graph_id)
            TOKENS.labels(tenant or str(attrs.get("tenant") or "unknown"), feature, model).inc(tokens)
            COST.labels(tenant or str(attrs.get("tenant") or "unknown"), feature, model).inc(float(attrs.get("cost_usd") or 0))


async def metrics(request: Request) -> Response:
    svc = request.app.state.services
    row = await svc.db.fetchone("SELECT COUNT(*) AS n FROM runs WHERE status = 'pending'")
    QUEUE_DEPTH.set(int(row["n"]) if row else 0)
    RUNS_ACTIVE.set(svc.engine.running)
    try:
        rows = await svc.db.fetchall("SELECT COUNT(*) AS n FROM interlock_approvals WHERE status = 'pending'")
        APPROVALS_PENDING.set(int(rows[0]["n"]) if rows else 0)
    except Exception:  # noqa: BLE001 - the approvals table appears with the MCP layer's first use
        APPROVALS_PENDING.set(0)
    return Response(_for_caller(generate_latest(REGISTRY), request), media_type=CONTENT_TYPE_LATEST)


_TENANT_LABEL = re.compile(rb'tenant="((?:[^"\\]|\\.)*)"')


def _for_caller(text: bytes, request: Request) -> bytes:
    """Series labelled with a tenant are shown only to a caller of that tenant: never to anonymous callers
    (local mode), never another tenant's."""
    from interlock.server.auth import request_user
    from interlock.server.authorization import user_tenant

    own = user_tenant(request_user(request))
    keep = []
    for line in text.split(b"\n"):
        found = _TENANT_LABEL.search(line)
        if found is None or (own is not None and found.group(1).decode() == own):
            keep.append(line)
    return b"\n".join(keep)


routes = [Route("/metrics", metrics, methods=["GET"])]
