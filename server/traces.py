"""Run traces: one span per graph node and per model, tool, retrieval and guard call, redacted before they are
stored (and before any export). Recorded through LangChain callbacks attached to each run, so any graph gets node
spans; Interlock's own graphs add retrieval and guard detail through custom events."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import re
import time
from collections import OrderedDict
from typing import Any
from uuid import UUID

from interlock.server import clock
from interlock.server.serialization import dumps_str, jsonable, loads
from interlock.server.storage import Database
from langchain_core.callbacks import AsyncCallbackHandler

log = logging.getLogger("interlock.traces")
CURRENT_TRACE: contextvars.ContextVar[TraceRecorder | None] = contextvars.ContextVar("interlock_trace", default=None)
MAX_TEXT = 4000  # characters kept per string in a span; traces are for people, not replays
MEMO_MAX_CHARS = 256  # strings up to this long have their redaction remembered...
MEMO_ENTRIES = 4096  # ...this many of them (about 2 MiB at most)


_OPAQUE_ID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # run, thread, checkpoint and message ids
    r"|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?"  # timestamps the server writes
)

_PATTERN_CUE = re.compile(r"[\d@]")
_NAME_CUE = re.compile(r"[^\W\d_a-z]|\s")  # a capital letter (any script without case counts too) or a space


def may_hold_pii(value: str, *, names: bool) -> bool:
    """Whether a trace string needs the detector at all. Every pattern-tier entity (email, phone, card, IBAN,
    SSN, IP, street address, date of birth...) contains a digit or an '@'; a name (NER tier) needs a capital
    letter or a cue phrase, which needs a space. Node names, state keys and ids then never load the recognizers
    (spaCy and Presidio are ~120 MiB a process that serves guard-free graphs need not carry)."""
    if _OPAQUE_ID.fullmatch(value):
        return False
    if _PATTERN_CUE.search(value):
        return True
    return names and _NAME_CUE.search(value) is not None and not value.isspace()


class Redactor:
    """Masks PII (the guardrail policy's recognizers) and obvious secrets in everything a trace stores."""

    def __init__(self) -> None:
        self._detector: Any = None
        self._loaded = False
        self._always = False  # an NER tier finds names without digits, so every string must be scanned
        self._seen: OrderedDict[str, str] = OrderedDict()  # short strings already redacted, least recent first
        try:
            from interlock.policies.loader import get_policies

            self._policy = get_policies().pii
            self._always = self._policy.engine != "pattern"
        except Exception:  # noqa: BLE001 - without the policy layer, fall back to secret masking only
            self._policy = None
            log.warning("PII policy unavailable; traces are masked for secrets only")

    def _get_detector(self) -> Any:
        # Loaded on first need: the recognizers cost ~60 MiB, and many graphs never trace a string that needs them.
        if not self._loaded:
            self._loaded = True
            if self._policy is not None:
                from interlock.policies.pii import detector_for

                self._detector = detector_for(self._policy)
        return self._detector

    async def aredact(self, obj: Any) -> Any:
        """`self(obj)` for the callbacks, which run on the event loop: when `obj` holds the first string that needs
        the recognizers, they are built in a worker thread first (loading spaCy takes seconds, tens under load)."""
        if self._loaded or self._policy is None:
            return self(obj)
        obj = jsonable(obj)
        if self._needs_detector(obj):
            await asyncio.to_thread(self._get_detector)
        return self._walk(obj)

    def _needs_detector(self, obj: Any) -> bool:
        if isinstance(obj, str):
            return may_hold_pii(obj[:MAX_TEXT], names=self._always)
        if isinstance(obj, list):
            return any(self._needs_detector(v) for v in obj[:200])
        if isinstance(obj, dict):
            return any(self._needs_detector(v) for v in obj.values())
        return False

    def text(self, value: str) -> str:
        from interlock.server.logs import mask_secrets

        value = mask_secrets(value[:MAX_TEXT])
        if not may_hold_pii(value, names=self._always):
            return value
        cached = self._seen.get(value)
        if cached is not None:
            self._seen.move_to_end(value)
            return cached
        detector = self._get_detector()
        if detector is None:
            return value
        original = value
        spans = sorted(detector.detect(value), key=lambda s: s.start, reverse=True)
        for span in spans:
            value = value[: span.start] + f"<{span.entity}>" + value[span.end :]
        if len(original) <= MEMO_MAX_CHARS:
            # The detector is deterministic and the same short strings (node names, state keys and small
            # values) recur in every run's spans: the NER tier cost ~30 ms of CPU per two-node run without this.
            self._seen[original] = value
            if len(self._seen) > MEMO_ENTRIES:
                self._seen.popitem(last=False)
        return value

    def __call__(self, obj: Any) -> Any:
        obj = jsonable(obj)
        return self._walk(obj)

    def _walk(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, list):
            return [self._walk(v) for v in obj[:200]]
        if isinstance(obj, dict):
            return {k: self._walk(v) for k, v in obj.items()}
        return obj


class TraceRecorder(AsyncCallbackHandler):
    """Collects spans for one run. Only what a person debugging an answer needs: nodes, models, tools,
    retrievals, guards; framework-internal chains are folded away."""

    raise_error = False
    run_inline = True

    def __init__(self, run_id: str, thread_id: str, graph_id: str, redactor: Redactor) -> None:
        self.run_id = run_id
        self.thread_id = thread_id
        self.graph_id = graph_id
        self.redact = redactor
        self.spans: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.tokens = 0  # from the gateway's usage records (tokens and cost per call)
        self.model_tokens = 0  # from model callbacks, for graphs that call models without the gateway
        self.cost_usd = 0.0
        self.started = time.perf_counter()
        self.events: list[dict[str, Any]] = []

    # -- span helpers ------------------------------------------------------------------------------------
    async def _open(self, run_id: UUID, parent: UUID | None, name: str, kind: str, inputs: Any,
                    attributes: dict[str, Any]) -> None:
        key = str(run_id)
        self.spans[key] = {
            "span_id": key,
            "parent_id": str(parent) if parent else None,
            "name": name,
            "kind": kind,
            "start": clock.iso(),
            "_t0": time.perf_counter(),
            "inputs": await self.redact.aredact(inputs),
            "outputs": None,
            "error": None,
            "attributes": attributes,
        }
        self.order.append(key)

    async def _close(self, run_id: UUID, outputs: Any = None, error: BaseException | None = None) -> dict[str, Any] | None:
        span = self.spans.get(str(run_id))
        if span is None:
            return None
        span["latency_ms"] = round((time.perf_counter() - span.pop("_t0")) * 1000, 3)
        span["end"] = clock.iso()
        if outputs is not None:
            span["outputs"] = await self.redact.aredact(outputs)
        if error is not None:
            span["error"] = {"type": type(error).__name__, "message": await self.redact.aredact(str(error))}
        return span

    # -- chains (graph nodes) -----------------------------------------------------------------------------
    async def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                             tags: list[str] | None = None, metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        metadata = metadata or {}
        name = kwargs.get("name") or ""
        node = metadata.get("langgraph_node")
        if node and name == node:
            await self._open(run_id, parent_run_id, node, "node", inputs,
                       {"step": metadata.get("langgraph_step"), "ns": metadata.get("langgraph_checkpoint_ns")})

    async def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        await self._close(run_id, outputs)

    async def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        # GraphInterrupt and friends are control flow, not failures.
        if type(error).__name__ in ("GraphInterrupt", "NodeInterrupt", "ParentCommand", "GraphBubbleUp"):
            await self._close(run_id, {"interrupted": True})
        else:
            await self._close(run_id, error=error)

    # -- models -------------------------------------------------------------------------------------------
    async def on_chat_model_start(self, serialized: Any, messages: list[list[Any]], *, run_id: UUID,
                                  parent_run_id: UUID | None = None, metadata: dict[str, Any] | None = None,
                                  tags: list[str] | None = None, **kwargs: Any) -> None:
        if "interlock:answer" in (tags or ()):
            return  # the relay that streams an already-guarded answer is not a model call
        metadata = metadata or {}
        model = metadata.get("ls_model_name") or (serialized or {}).get("name") or "chat_model"
        # The prompt's version: a digest of its system instructions (prompts live in code and policy files).
        system = "".join(str(m.content) for batch in messages for m in batch if getattr(m, "type", "") == "system")
        prompt = hashlib.sha256(system.encode()).hexdigest()[:12] if system else None
        await self._open(run_id, parent_run_id, str(model), "model", {"messages": messages},
                   {"model": model, "provider": metadata.get("ls_provider"), "node": metadata.get("langgraph_node"),
                    "prompt_version": prompt})

    async def on_llm_start(self, serialized: Any, prompts: list[str], *, run_id: UUID, parent_run_id: UUID | None = None,
                           metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        metadata = metadata or {}
        model = metadata.get("ls_model_name") or "llm"
        await self._open(run_id, parent_run_id, str(model), "model", {"prompts": prompts}, {"model": model})

    async def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        texts: list[str] = []
        tokens = 0
        for generation_list in getattr(response, "generations", []) or []:
            for gen in generation_list:
                texts.append(getattr(gen, "text", "") or "")
                message = getattr(gen, "message", None)
                usage = getattr(message, "usage_metadata", None) or {}
                tokens += int(usage.get("total_tokens") or 0)
        span = await self._close(run_id, {"text": texts})
        if span is not None:
            span["attributes"]["tokens"] = tokens
            self.model_tokens += tokens

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        await self._close(run_id, error=error)

    # -- tools and retrievers -----------------------------------------------------------------------------
    async def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID, parent_run_id: UUID | None = None,
                            inputs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        name = (serialized or {}).get("name") or kwargs.get("name") or "tool"
        await self._open(run_id, parent_run_id, name, "tool", inputs if inputs is not None else input_str, {"tool": name})

    async def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        span = await self._close(run_id, output)
        if span is not None:
            status = getattr(output, "status", None)
            span["attributes"]["outcome"] = "error" if status == "error" else "ok"

    async def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        span = await self._close(run_id, error=error)
        if span is not None:
            span["attributes"]["outcome"] = "error"

    async def on_retriever_start(self, serialized: Any, query: str, *, run_id: UUID, parent_run_id: UUID | None = None,
                                 **kwargs: Any) -> None:
        await self._open(run_id, parent_run_id, "retriever", "retrieval", {"query": query}, {})

    async def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        span = await self._close(run_id, None)
        if span is not None:
            span["attributes"]["chunks"] = [
                {"chunk_id": (d.metadata or {}).get("chunk_id"), "score": (d.metadata or {}).get("score")} for d in documents
            ]

    # -- Interlock's own events ---------------------------------------------------------------------------
    async def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """`interlock.<kind>` events from our graphs: retrieval (chunk ids, scores), guard verdicts, tool calls."""
        if not name.startswith("interlock."):
            return
        kind = name.split(".", 1)[1]
        payload = data if isinstance(data, dict) else {"value": data}
        if kind == "usage":
            self.record_usage(payload)
            return
        self.add_event(
            kind,
            str(payload.get("name") or kind),
            parent_id=str(run_id),
            latency_ms=float(payload.get("latency_ms") or 0.0),
            inputs=await self.redact.aredact(payload.get("inputs")),
            outputs=await self.redact.aredact(payload.get("outputs")),
            error=payload.get("error"),
            attributes=await self.redact.aredact({k: v for k, v in payload.items() if k not in ("inputs", "outputs", "error")}),
        )

    def add_event(self, kind: str, name: str, *, parent_id: str | None, latency_ms: float, inputs: Any = None,
                  outputs: Any = None, error: Any = None, attributes: dict[str, Any] | None = None) -> None:
        """A point-in-time span reported by the graph (retrieval, tool, guard) or the model gateway (usage)."""
        key = f"{kind}-{len(self.events)}"
        now = clock.iso()
        span = {
            "span_id": key,
            "parent_id": parent_id,
            "name": name,
            "kind": kind,
            "start": now,
            "end": now,
            "latency_ms": latency_ms,
            "inputs": inputs,
            "outputs": outputs,
            "error": error,
            "attributes": attributes or {},
        }
        self.events.append(span)
        self.spans[key] = span
        self.order.append(key)

    def add_usage(self, tokens: int, cost_usd: float) -> None:
        self.tokens += tokens
        self.cost_usd += cost_usd

    def record_usage(self, usage: dict[str, Any]) -> None:
        """A model call's usage (the gateway's `interlock.usage` event): tokens, cost, tenant, feature."""
        self.add_usage(int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0),
                       float(usage.get("cost_usd") or 0.0))
        outcome = usage.get("outcome")
        self.add_event(
            "usage",
            f"{usage.get('provider')}:{usage.get('model')}",
            parent_id=None,
            latency_ms=float(usage.get("latency_ms") or 0.0),
            error=None if outcome == "ok" else outcome,
            attributes={key: usage.get(key) for key in ("tenant", "feature", "tier", "model", "provider",
                                                         "input_tokens", "output_tokens", "cost_usd", "outcome")},
        )

    def document(self, *, status: str, policy_hash: str | None, input_: Any, output: Any) -> dict[str, Any]:
        spans = []
        for key in self.order:
            span = dict(self.spans[key])
            span.pop("_t0", None)
            spans.append(span)
        return {
            "run_id": self.run_id,
            "thread_id": self.thread_id,
            "graph_id": self.graph_id,
            "status": status,
            "policy_hash": policy_hash,
            "prompt_versions": sorted({s["attributes"].get("prompt_version") for s in spans if s["kind"] == "model"} - {None}),
            "input": self.redact(input_),
            "output": self.redact(output),
            "spans": spans,
            # One source of truth per call: the gateway's usage record when there is one, else the callbacks.
            "tokens": self.tokens if self.tokens else self.model_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "latency_ms": round((time.perf_counter() - self.started) * 1000, 3),
        }


class Traces:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def save_statement(doc: dict[str, Any]) -> tuple[str, list[Any]]:
        return (
            "INSERT INTO run_traces (run_id, thread_id, graph_id, created_at, trace) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id) DO UPDATE SET trace = excluded.trace",
            [doc["run_id"], doc["thread_id"], doc["graph_id"], clock.iso(), dumps_str(doc)],
        )

    async def save(self, doc: dict[str, Any]) -> None:
        await self.db.execute(*self.save_statement(doc))

    async def get(self, thread_id: str, run_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT trace FROM run_traces WHERE run_id = ? AND thread_id = ?", [run_id, thread_id])
        return loads(row["trace"]) if row else None

    async def delete_thread(self, thread_id: str) -> None:
        await self.db.execute("DELETE FROM run_traces WHERE thread_id = ?", [thread_id])
