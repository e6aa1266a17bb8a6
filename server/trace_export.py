"""Ship redacted traces to LangSmith (when LANGSMITH_API_KEY is set) and over OTLP/HTTP (when
OTEL_EXPORTER_OTLP_ENDPOINT is set). With neither set nothing here touches the network."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from datetime import datetime
from typing import Any

log = logging.getLogger("interlock.trace_export")


def _ns(ts: str | None) -> int:
    return int(datetime.fromisoformat(ts).timestamp() * 1e9) if ts else 0


class TraceExporter:
    def __init__(self) -> None:
        self.langsmith_key = os.environ.get("LANGSMITH_API_KEY") or None
        self.otlp_endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
        self._otel_tracer: Any = None
        self._langsmith: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return bool(self.langsmith_key or self.otlp_endpoint)

    def export(self, doc: dict[str, Any]) -> None:
        if not self.enabled:
            return
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._export_sync, doc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _export_sync(self, doc: dict[str, Any]) -> None:
        try:
            if self.otlp_endpoint:
                self._to_otlp(doc)
            if self.langsmith_key:
                self._to_langsmith(doc)
        except Exception:  # noqa: BLE001 - telemetry must never break a run
            log.exception("trace export failed for run %s", doc.get("run_id"))

    def _to_otlp(self, doc: dict[str, Any]) -> None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        if self._otel_tracer is None:
            provider = TracerProvider(resource=Resource.create({"service.name": "interlock"}))
            provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
            self._otel_tracer = provider.get_tracer("interlock")
        tracer = self._otel_tracer
        spans = doc.get("spans", [])
        start = min((_ns(s.get("start")) for s in spans), default=0) or None
        root = tracer.start_span(f"run {doc.get('graph_id')}", start_time=start)
        root.set_attribute("interlock.run_id", doc["run_id"])
        root.set_attribute("interlock.thread_id", doc["thread_id"])
        root.set_attribute("interlock.status", str(doc.get("status")))
        root.set_attribute("interlock.policy_hash", str(doc.get("policy_hash")))
        root.set_attribute("interlock.tokens", int(doc.get("tokens") or 0))
        root.set_attribute("interlock.cost_usd", float(doc.get("cost_usd") or 0))
        ctx = trace.set_span_in_context(root)
        for span in spans:
            child = tracer.start_span(f"{span['kind']} {span['name']}", context=ctx, start_time=_ns(span.get("start")) or None)
            child.set_attribute("interlock.kind", span["kind"])
            if span.get("error"):
                child.set_attribute("error", True)
            child.end(end_time=_ns(span.get("end")) or None)
        root.end()

    def _to_langsmith(self, doc: dict[str, Any]) -> None:
        from langsmith import Client

        if self._langsmith is None:
            self._langsmith = Client(api_key=self.langsmith_key)
        root_id = uuid.uuid4()
        self._langsmith.create_run(
            id=root_id,
            name=f"interlock:{doc.get('graph_id')}",
            run_type="chain",
            inputs={"input": doc.get("input")},
            outputs={"output": doc.get("output")},
            extra={"metadata": {"run_id": doc["run_id"], "thread_id": doc["thread_id"], "policy_hash": doc.get("policy_hash")}},
        )
        for span in doc.get("spans", []):
            self._langsmith.create_run(
                name=span["name"],
                run_type={"model": "llm", "tool": "tool", "retrieval": "retriever"}.get(span["kind"], "chain"),
                inputs={"inputs": span.get("inputs")},
                outputs={"outputs": span.get("outputs")},
                parent_run_id=root_id,
                error=str(span["error"]) if span.get("error") else None,
            )
