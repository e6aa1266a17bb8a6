"""Turn a production trace into an eval case (`interlock eval add-from-trace`).

Reads `GET /threads/{thread_id}/runs/{run_id}/trace` from a running server. Without a thread id it
is discovered by searching the caller's threads for one that holds the run. The case gets the
user's last message from the trace input (already redacted by the server), the expected
behaviour given with `--expect key=value`, and the trace's ids as its `source`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from interlock.evals.suite import Case, DatasetError, Suite
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from interlock.kernel.settings import DEFAULT_URL

MAX_THREADS_SEARCHED = 2000


class TraceError(RuntimeError):
    """The trace could not be fetched or does not have the expected shape."""


class Span(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    kind: str = "node"
    inputs: Any = None
    outputs: Any = None
    error: Any = None
    latency_ms: float | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class Trace(BaseModel):
    model_config = ConfigDict(extra="allow")
    run_id: str
    thread_id: str
    graph_id: str | None = None
    policy_hash: str | None = None
    input: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    spans: list[Span] = Field(default_factory=list)
    tokens: Any = None
    cost_usd: float | None = None

    @property
    def tenant(self) -> str | None:
        """The run's tenant: in the final state, as model spans' attribute, or as the `identify` node's output."""
        if isinstance(self.output, dict) and isinstance(self.output.get("tenant"), str) and self.output["tenant"]:
            return str(self.output["tenant"])
        for span in self.spans:
            for source in (span.attributes, span.outputs if isinstance(span.outputs, dict) else {}):
                tenant = source.get("tenant")
                if isinstance(tenant, str) and tenant:
                    return tenant
        return None


def _message_text(message: Any) -> tuple[str, str]:
    """(role, text) of a message in any of the shapes the Agent Server API accepts."""
    if isinstance(message, list | tuple) and len(message) == 2:
        return str(message[0]), str(message[1])
    if isinstance(message, dict):
        role = str(message.get("role") or message.get("type") or "")
        content = message.get("content", "")
        if isinstance(content, list):
            content = " ".join(str(b.get("text", "")) if isinstance(b, dict) else str(b) for b in content)
        return role, str(content)
    if isinstance(message, str):
        return "user", message
    return "", ""


def user_text(trace: Trace) -> str:
    """The last user message of the run's input."""
    messages = (trace.input or {}).get("messages")
    if isinstance(messages, dict | str):
        messages = [messages]
    for message in reversed(messages or []):
        role, text = _message_text(message)
        if role in ("user", "human") and text.strip():
            return text.strip()
    raise TraceError(f"run {trace.run_id}: the trace input has no user message")


def parse_expect(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs; a value that parses as JSON (true, 3, ["a"]) is taken as JSON, else as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--expect {item!r}: use key=value, e.g. --expect intent=order_status")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        if key in out:  # repeated keys build a list: --expect sources=a --expect sources=b
            value = (out[key] if isinstance(out[key], list) else [out[key]]) + (value if isinstance(value, list)
                                                                                 else [value])
        out[key] = value
    if not out:
        raise ValueError("give the expected behaviour with --expect key=value")
    return out


class TraceClient:
    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout_s: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str) -> httpx.Response:
        try:
            return self.http.get(path)
        except httpx.HTTPError as exc:
            raise TraceError(f"cannot reach the server at {self.http.base_url}: {type(exc).__name__}") from None

    def find_thread(self, run_id: str) -> str:
        offset = 0
        while offset < MAX_THREADS_SEARCHED:
            try:
                response = self.http.post("/threads/search", json={"limit": 100, "offset": offset})
            except httpx.HTTPError as exc:
                raise TraceError(f"cannot reach the server at {self.http.base_url}: {type(exc).__name__}") from None
            if response.status_code != 200:
                raise TraceError(f"thread search failed: HTTP {response.status_code}")
            threads = response.json()
            if not isinstance(threads, list) or not threads:
                break
            for thread in threads:
                thread_id = thread.get("thread_id") if isinstance(thread, dict) else None
                if thread_id and self._get(f"/threads/{thread_id}/runs/{run_id}").status_code == 200:
                    return str(thread_id)
            offset += len(threads)
        raise TraceError(f"run {run_id} not found in any thread visible to you; pass --thread-id")

    def trace(self, run_id: str, thread_id: str | None = None) -> Trace:
        thread_id = thread_id or self.find_thread(run_id)
        response = self._get(f"/threads/{thread_id}/runs/{run_id}/trace")
        if response.status_code == 404:
            raise TraceError(f"no trace for run {run_id} in thread {thread_id}")
        if response.status_code != 200:
            raise TraceError(f"trace request failed: HTTP {response.status_code}")
        try:
            return Trace.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise TraceError(f"the server's trace is not in the expected shape: {str(exc).splitlines()[0]}") from None


def case_from_trace(suite: Suite, trace: Trace, expect: dict[str, Any], case_id: str | None = None) -> Case:
    row = suite.case_from_trace(user_text(trace), trace, expect)
    row["id"] = case_id or f"trace-{trace.run_id}"
    row["source"] = {"run_id": trace.run_id, "thread_id": trace.thread_id, "graph_id": trace.graph_id,
                     "policy_hash": trace.policy_hash}
    return suite.validate_row(row)


def append_case(path: Path, case: Case) -> None:
    """Append one JSONL line, refusing an id the dataset already has."""
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    for line in existing.splitlines():
        try:
            row = json.loads(line) if line.strip() else {}
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("id") == case.id:
            raise DatasetError(f"{path} already has a case with id {case.id!r}")
    line = json.dumps(case.model_dump(mode="json", exclude_none=True), ensure_ascii=False)
    prefix = "" if not existing or existing.endswith("\n") else "\n"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(prefix + line + "\n")
