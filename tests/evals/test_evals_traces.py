"""`interlock eval add-from-trace` against a small trace server of our own on a real loopback socket."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from interlock.cli import main

RUN_ID = "1f0c2b7e-5a4d-4c1e-9d77-0a1b2c3d4e5f"
THREAD_ID = "7d3e9a10-2222-4b55-8c66-123456789abc"
OTHER_THREAD = "00000000-0000-4000-8000-000000000001"

TRACE = {
    "run_id": RUN_ID, "thread_id": THREAD_ID, "graph_id": "router", "policy_hash": "d3222aa4e6f8",
    "input": {"messages": [{"role": "user", "content": "hi"},
                           {"role": "assistant", "content": "Hello! How can I help?"},
                           {"role": "user", "content": "Is my parcel for ORD-1002 on its way? Mail me at <EMAIL_1>"}]},
    "output": {"messages": [{"type": "ai", "content": "Order ORD-1002 is shipped."}]},
    "spans": [{"name": "classify", "kind": "node", "inputs": {}, "outputs": {"intent": "order_status"}, "error": None,
               "latency_ms": 4.2, "attributes": {"tenant": "acme"}},
              {"name": "get_order", "kind": "tool", "inputs": {"order_id": "ORD-1002"}, "outputs": {"status": "shipped"},
               "error": None, "latency_ms": 12.0, "attributes": {"outcome": "ok"}}],
    "tokens": {"input": 0, "output": 0}, "cost_usd": 0.0,
}


class TraceServer(BaseHTTPRequestHandler):
    requests: list[tuple[str, str, str | None]] = []

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.requests.append(("GET", self.path, self.headers.get("Authorization")))
        if self.path == f"/threads/{THREAD_ID}/runs/{RUN_ID}/trace":
            self._send(200, TRACE)
        elif self.path == f"/threads/{THREAD_ID}/runs/{RUN_ID}":
            self._send(200, {"run_id": RUN_ID, "thread_id": THREAD_ID, "status": "success"})
        elif self.path == f"/threads/{THREAD_ID}/runs/broken/trace":
            self._send(200, {"spans": "not a list"})
        else:
            self._send(404, {"detail": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.requests.append(("POST", self.path, self.headers.get("Authorization")))
        if self.path == "/threads/search":
            threads = [{"thread_id": OTHER_THREAD}, {"thread_id": THREAD_ID}]
            self._send(200, threads[int(body.get("offset", 0)):])
        else:
            self._send(404, {"detail": "not found"})

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


@pytest.fixture(scope="module")
def trace_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), TraceServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_trace_becomes_a_router_case(trace_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = tmp_path / "router.jsonl"
    dataset.write_text('{"text": "where is my stuff", "intent": "track_shipment", "route": "planner"}')  # no newline
    code = main(["eval", "add-from-trace", RUN_ID, "--suite", "router", "--expect", "intent=track_shipment",
                 "--thread-id", THREAD_ID, "--url", trace_url, "--token", "s3cret", "--dataset", str(dataset)])
    assert code == 0, capsys.readouterr().err
    rows = read_rows(dataset)
    assert len(rows) == 2 and rows[0]["text"] == "where is my stuff"
    added = rows[1]
    assert added["text"] == "Is my parcel for ORD-1002 on its way? Mail me at <EMAIL_1>"  # the last user turn
    assert added["intent"] == "track_shipment" and added["route"] == "planner"  # route from intents.yaml
    assert added["id"] == f"trace-{RUN_ID}"
    assert added["source"] == {"run_id": RUN_ID, "thread_id": THREAD_ID, "graph_id": "router",
                               "policy_hash": "d3222aa4e6f8"}
    assert ("GET", f"/threads/{THREAD_ID}/runs/{RUN_ID}/trace", "Bearer s3cret") in TraceServer.requests
    assert f"added trace-{RUN_ID}" in capsys.readouterr().out
    # The same trace again is refused rather than duplicated.
    again = main(["eval", "add-from-trace", RUN_ID, "--suite", "router", "--expect", "intent=track_shipment",
                  "--thread-id", THREAD_ID, "--url", trace_url, "--dataset", str(dataset)])
    assert again == 2 and "already has a case" in capsys.readouterr().err
    assert len(read_rows(dataset)) == 2
    from interlock.evals.suites.router import RouterSuite

    cases = RouterSuite(dataset).load()
    assert [c.id for c in cases][-1] == f"trace-{RUN_ID}"


def test_thread_is_discovered_and_expectations_are_typed(trace_url: str, tmp_path: Path) -> None:
    dataset = tmp_path / "groundedness.jsonl"
    code = main(["eval", "add-from-trace", RUN_ID, "--suite", "groundedness", "--url", trace_url,
                 "--expect", "expect=answer", "--expect", 'facts=["shipped"]',
                 "--expect", "sources=acme/public/tracking.md", "--dataset", str(dataset), "--id", "gnd-prod-1"])
    assert code == 0
    [row] = read_rows(dataset)
    assert row["question"].startswith("Is my parcel for ORD-1002")
    assert row["facts"] == ["shipped"] and row["sources"] == ["acme/public/tracking.md"]
    assert row["tenant"] == "acme"  # from the trace's span attributes
    assert ("POST", "/threads/search", None) in TraceServer.requests


@pytest.mark.parametrize(("argv", "message"), [
    (["--suite", "router", "--expect", "intent"], "use key=value"),
    (["--suite", "nope", "--expect", "intent=x"], "unknown suite"),
    (["--suite", "router", "--expect", "intent=no_such_intent", "--thread-id", THREAD_ID], "unknown intent"),
    (["--suite", "refusal", "--expect", "expect=maybe", "--thread-id", THREAD_ID], "not a valid refusal case"),
])
def test_bad_expectations_are_clear_errors(trace_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           argv: list[str], message: str) -> None:
    dataset = tmp_path / "cases.jsonl"
    code = main(["eval", "add-from-trace", RUN_ID, "--url", trace_url, "--dataset", str(dataset), *argv])
    assert code == 2 and message in capsys.readouterr().err
    assert not dataset.exists()


def test_unknown_run_unreachable_server_and_bad_trace(trace_url: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--suite", "refusal", "--expect", "expect=refuse", "--dataset", str(tmp_path / "x.jsonl")]
    assert main(["eval", "add-from-trace", "missing-run", "--url", trace_url, *base]) == 2
    assert "not found in any thread" in capsys.readouterr().err
    assert main(["eval", "add-from-trace", "missing-run", "--thread-id", THREAD_ID, "--url", trace_url, *base]) == 2
    assert "no trace for run missing-run" in capsys.readouterr().err
    assert main(["eval", "add-from-trace", "broken", "--thread-id", THREAD_ID, "--url", trace_url, *base]) == 2
    assert "not in the expected shape" in capsys.readouterr().err
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert main(["eval", "add-from-trace", RUN_ID, "--thread-id", THREAD_ID, "--url", dead, *base]) == 2
    assert "cannot reach the server" in capsys.readouterr().err
