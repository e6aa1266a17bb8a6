"""Traces, /metrics and the no-network guarantee, against a real server process."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from langgraph_sdk import get_client
from prometheus_client.parser import text_string_to_metric_families
from server_testkit import PROJECT, ROOT, ServerProcess, free_port


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):  # noqa: ANN201
    import os

    tmp = tmp_path_factory.mktemp("guarded")
    port = free_port()
    log = tmp / "sockets.log"
    env = {**os.environ, "INTERLOCK_HOME": str(tmp), "INTERLOCK_SOCKET_LOG": str(log)}
    for key in ("LANGSMITH_API_KEY", "OTEL_EXPORTER_OTLP_ENDPOINT", "INTERLOCK_DATABASE_URL", "LANGSMITH_TRACING"):
        env.pop(key, None)
    proc = ServerProcess(url=f"http://127.0.0.1:{port}", home=tmp, config=PROJECT / "langgraph.json", env=env, port=port,
                         log_path=tmp / "server.log")
    proc.proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/server/guarded_serve.py"), "serve", "--config", str(proc.config), "--port", str(port)],
        cwd=str(ROOT), env=env, stdout=open(proc.log_path, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )
    for _ in range(300):
        try:
            if httpx.get(proc.url + "/ok", timeout=0.5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    yield proc, log
    proc.stop()


def metric_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def test_trace_has_nodes_and_no_raw_pii(guarded) -> None:
    proc, _ = guarded
    client = get_client(url=proc.url, api_key=None)
    tid = (await client.threads.create())["thread_id"]
    secret_email = "jane.roe@example.org"
    await client.runs.wait(tid, "chat", input={"messages": [{"role": "user", "content": f"mail me at {secret_email}"}]})
    run = (await client.runs.list(tid))[0]
    async with httpx.AsyncClient(base_url=proc.url) as http:
        trace = (await http.get(f"/threads/{tid}/runs/{run['run_id']}/trace")).json()
        missing = await http.get(f"/threads/{tid}/runs/00000000-0000-0000-0000-000000000000/trace")
    assert missing.status_code == 404
    assert trace["run_id"] == run["run_id"] and trace["status"] == "success" and trace["graph_id"] == "chat"
    kinds = {(s["kind"], s["name"]) for s in trace["spans"]}
    assert ("node", "chat") in kinds
    assert any(s["kind"] == "model" for s in trace["spans"])
    assert trace["policy_hash"]
    assert secret_email not in str(trace)
    assert "EMAIL" in str(trace["input"])


async def test_metrics_parse_and_move(guarded) -> None:
    proc, _ = guarded
    client = get_client(url=proc.url, api_key=None)
    async with httpx.AsyncClient(base_url=proc.url) as http:
        before = (await http.get("/metrics")).text
        await client.runs.wait(None, "two_node", input={"n": 1})
        await client.runs.wait(None, "failing", input={}, raise_error=False)
        after = (await http.get("/metrics")).text
    assert list(text_string_to_metric_families(after))
    assert metric_value(after, "interlock_runs_total", graph_id="two_node", status="success") == (
        metric_value(before, "interlock_runs_total", graph_id="two_node", status="success") + 1
    )
    assert metric_value(after, "interlock_runs_total", graph_id="failing", status="error") >= 1
    assert metric_value(after, "interlock_node_duration_seconds_count", graph_id="two_node", node="a") >= 1
    assert "interlock_queue_depth" in after


async def test_no_network_attempt_without_exporters(guarded) -> None:
    proc, log = guarded
    client = get_client(url=proc.url, api_key=None)
    await client.runs.wait(None, "chat", input={"messages": [{"role": "user", "content": "hello"}]})
    await client.runs.wait(None, "two_node", input={"n": 2})
    assert not log.exists() or log.read_text() == "", log.read_text()


async def test_json_logs_carry_ids_and_no_secrets(guarded) -> None:
    proc, _ = guarded
    client = get_client(url=proc.url, api_key=None, headers={"Authorization": "Bearer sk-live-abcdefghijklmnopqrstuvwxyz"})
    await client.runs.wait(None, "failing", input={}, raise_error=False)
    import json

    lines = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
    assert lines, proc.log()[-2000:]
    failed = [line for line in lines if "failed" in line["msg"] and line.get("run_id")]
    assert failed and failed[-1]["thread_id"] and failed[-1]["trace_id"]
    assert "sk-live-abcdefghijklmnopqrstuvwxyz" not in proc.log()
