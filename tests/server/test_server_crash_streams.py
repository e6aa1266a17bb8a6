"""Resumable streams across a crash: two replicas on PostgreSQL + Redis; the replica executing a run is SIGKILLed
mid-stream, the other takes the run over, and a client that rejoins (on the other replica, and on the restarted
one) with its Last-Event-ID gets every event exactly once, with the same ids and content as an uninterrupted run
apart from the one `metadata` event that marks where the resumed attempt (the interrupted node's retry) begins.
Also: Redis configured but unreachable is a documented degraded mode, never a 500."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from server_testkit import free_port, make_server

REDIS = "redis://127.0.0.1:6379/0"
BODY = {
    "assistant_id": "steps",
    "input": {"n": 0.8},
    "stream_mode": ["values", "updates"],
    "stream_resumable": True,
    # Each step checkpointed before the next starts: the crash lands in n2 with n1 durable. (With "async" the
    # resumed attempt may also replay the last step's writes after the marker.)
    "durability": "sync",
}


@dataclass
class Sse:
    id: int | None
    event: str
    data: Any


def read_sse(response: httpx.Response, stop: Any = None) -> list[Sse]:
    """Parse SSE frames until the stream ends or `stop(frame)` is true (the frame is included)."""
    out: list[Sse] = []
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if line == "":
            if "event" in fields:
                frame = Sse(int(fields["id"]) if "id" in fields else None, fields["event"], json.loads(fields["data"]))
                out.append(frame)
                if stop is not None and stop(frame):
                    return out
            fields = {}
            continue
        key, _, value = line.partition(":")
        fields[key] = value[1:] if value.startswith(" ") else value
    return out


def _content(frames: list[Sse]) -> list[tuple[str, Any]]:
    return [(f.event, None if f.event == "metadata" else f.data) for f in frames]


@pytest.fixture
def replicas(pg_factory, tmp_path):  # noqa: ANN001, ANN201
    url = pg_factory()
    a = make_server(tmp_path / "a", url, INTERLOCK_REDIS_URL=REDIS, INTERLOCK_RUN_LEASE_SECONDS="3")
    b = make_server(tmp_path / "b", url, INTERLOCK_REDIS_URL=REDIS, INTERLOCK_RUN_LEASE_SECONDS="3")
    yield a, b
    a.stop()
    b.stop()


def test_rejoin_after_sigkill_yields_every_event_once(replicas) -> None:  # noqa: ANN001
    a, b = replicas
    http_a = httpx.Client(base_url=a.url, timeout=60)
    http_b = httpx.Client(base_url=b.url, timeout=60)

    # The uninterrupted run, for reference.
    tid0 = http_a.post("/threads", json={}).json()["thread_id"]
    with http_a.stream("POST", f"/threads/{tid0}/runs/stream", json=BODY) as r:
        reference = read_sse(r)
    assert [f.id for f in reference] == list(range(1, len(reference) + 1))

    # The same run on A, which dies inside n2 (after the state with n1's result was streamed).
    tid = http_a.post("/threads", json={}).json()["thread_id"]
    with http_a.stream("POST", f"/threads/{tid}/runs/stream", json=BODY) as r:
        seen = read_sse(r, stop=lambda f: f.event == "values" and f.data.get("log") == ["n1"])
    a.kill()
    run_id = seen[0].data["run_id"]
    last = seen[-1].id
    assert last is not None

    # Rejoin on B: it takes the run over once A's lease expires and continues the ids.
    with http_b.stream("GET", f"/threads/{tid}/runs/{run_id}/stream", headers={"Last-Event-ID": str(last)}) as r:
        rejoined = read_sse(r)
    collected = seen + rejoined
    ids = [f.id for f in collected]
    assert ids == sorted(set(ids)), f"ids repeat or go back: {ids}"
    markers = [f for f in collected if f.event == "metadata" and "resumed_after" in f.data]
    assert len(markers) == 1 and markers[0].data["attempt"] == 2 and markers[0].data["resumed_after"] == last
    unmarked = [f for f in collected if f is not markers[0]]
    assert _content(unmarked) == _content(reference)
    # Same ids as the uninterrupted run up to the crash; after it, shifted by the one marker event.
    cut = len(seen)
    assert [f.id for f in unmarked[:cut]] == [f.id for f in reference[:cut]]
    assert [f.id for f in unmarked[cut:]] == [f.id + 1 for f in reference[cut:]]

    run = http_b.get(f"/threads/{tid}/runs/{run_id}").json()
    assert run["status"] == "success"
    assert http_b.get(f"/threads/{tid}/state").json()["values"]["log"] == ["n1", "n2", "n3"]  # no node repeated

    # The restarted replica replays the same events from the same Last-Event-ID.
    a.start()
    with httpx.Client(base_url=a.url, timeout=60) as http_a2, http_a2.stream(
        "GET", f"/threads/{tid}/runs/{run_id}/stream", headers={"Last-Event-ID": str(last)}
    ) as r:
        again = read_sse(r)
    assert [(f.id, f.event, f.data) for f in again] == [(f.id, f.event, f.data) for f in rejoined]


def test_unreachable_redis_is_a_degraded_mode_not_a_500(tmp_path, pg_factory) -> None:  # noqa: ANN001
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    server = make_server(tmp_path, pg_factory(), tenants=("acme",), INTERLOCK_REDIS_URL=dead_redis)
    try:
        assert "degraded mode" in server.log()
        http = httpx.Client(base_url=server.url, timeout=30)
        ready = http.get("/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"]["ok"] is False
        assert ready.json()["checks"]["database"]["ok"] is True
        # Tenant limits live in Redis: fail closed with 503 + Retry-After, naming Redis.
        tid = http.post("/threads", json={}).json()["thread_id"]
        limited = http.post(
            f"/threads/{tid}/runs/wait",
            json={"assistant_id": "two_node", "input": {"n": 1}, "config": {"configurable": {"tenant": "acme"}}},
        )
        assert limited.status_code == 503, limited.text
        assert limited.json()["dependency"] == "redis" and limited.headers["retry-after"]
        # Runs without a tenant work; their streams are local to this replica.
        with http.stream("POST", f"/threads/{tid}/runs/stream", json={**BODY, "input": {"n": 0.05}}) as r:
            frames = read_sse(r)
        assert frames[-1].data["log"] == ["n1", "n2", "n3"]
        run_id = frames[0].data["run_id"]
        # Joining it once its local stream has expired (5 s for a finished run) answers from the database.
        time.sleep(6)
        with http.stream("GET", f"/threads/{tid}/runs/{run_id}/stream") as r:
            assert r.status_code == 200
            assert read_sse(r) == []
        joined = http.get(f"/threads/{tid}/runs/{run_id}/join")
        assert joined.status_code == 200 and joined.json()["log"] == ["n1", "n2", "n3"]
    finally:
        server.stop()
