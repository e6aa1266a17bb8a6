"""A real server on PostgreSQL whose database misbehaves: connections terminated mid-run (every run still
succeeds, resumed from its last checkpoint), and the database becoming unreachable (readiness fails fast,
requests answer 503 naming the database within INTERLOCK_DB_TIMEOUT_SECONDS, SIGTERM exits promptly)."""

from __future__ import annotations

import signal
import time

import httpx
import psycopg
import pytest
from server_testkit import PG_ADMIN, make_server


def _terminate_backends(admin: psycopg.Connection, dbname: str) -> int:
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        [dbname],
    ).fetchall()
    return len(rows)


@pytest.fixture
def admin():  # noqa: ANN201
    conn = psycopg.connect(PG_ADMIN, autocommit=True)
    yield conn
    conn.close()


def _wait_status(http: httpx.Client, tid: str, rid: str, statuses: set[str], seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = http.get(f"/threads/{tid}/runs/{rid}").json()["status"]
        if status in statuses:
            return status
        time.sleep(0.1)
    raise AssertionError(f"run {rid} still not in {statuses}")


def test_connections_terminated_mid_run_every_run_succeeds(pg_factory, admin, tmp_path) -> None:  # noqa: ANN001
    url = pg_factory()
    dbname = url.rsplit("/", 1)[1]
    server = make_server(tmp_path, url, INTERLOCK_DB_TIMEOUT_SECONDS="5")
    try:
        http = httpx.Client(base_url=server.url, timeout=30)
        runs = []
        for _ in range(5):
            tid = http.post("/threads", json={}).json()["thread_id"]
            run = http.post(f"/threads/{tid}/runs", json={"assistant_id": "steps", "input": {"n": 0.6}}).json()
            runs.append((tid, run["run_id"]))
        for tid, rid in runs:
            _wait_status(http, tid, rid, {"running", "success", "error"})
        # Every connection of the server (its pools and the checkpointer's) dies while the runs are inside nodes,
        # and again and again for 2.5 s, so some die mid-statement (those steps retry from their checkpoint).
        assert _terminate_backends(admin, dbname) > 0
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            _terminate_backends(admin, dbname)
            time.sleep(0.1)
        statuses = [_wait_status(http, tid, rid, {"success", "error", "interrupted"}) for tid, rid in runs]
        assert statuses == ["success"] * 5, server.log()[-3000:]
        for tid, _ in runs:
            assert http.get(f"/threads/{tid}/state").json()["values"]["log"] == ["n1", "n2", "n3"]
    finally:
        server.stop()


def test_database_gone_readiness_fails_and_requests_answer_503(pg_factory, admin, tmp_path) -> None:  # noqa: ANN001
    url = pg_factory()
    dbname = url.rsplit("/", 1)[1]
    server = make_server(tmp_path, url, INTERLOCK_DB_TIMEOUT_SECONDS="2", INTERLOCK_READY_TIMEOUT_SECONDS="1")
    try:
        http = httpx.Client(base_url=server.url, timeout=10)
        ready = http.get("/ready")
        assert ready.status_code == 200 and ready.json()["checks"]["database"]["ok"] is True
        tid = http.post("/threads", json={}).json()["thread_id"]

        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        _terminate_backends(admin, dbname)
        try:
            # Liveness is unaffected; readiness answers within 2 s and names the database.
            assert http.get("/ok").status_code == 200
            ready = http.get("/ready", timeout=2.0)
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"]["ok"] is False
            assert "database" in ready.json()["detail"]
            # Requests that need the database give up after INTERLOCK_DB_TIMEOUT_SECONDS (2) with a 503.
            for method, path, body in (("GET", f"/threads/{tid}", None), ("POST", "/threads/search", {})):
                response = http.request(method, path, json=body, timeout=2 + 3)
                assert response.status_code == 503, response.text
                assert response.json()["dependency"] == "database"
                assert response.headers["retry-after"]
        finally:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        # Back: readiness recovers without a restart.
        deadline = time.monotonic() + 30
        while http.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "readiness did not recover"
            time.sleep(0.2)
        assert http.get(f"/threads/{tid}").status_code == 200

        # Shutdown is prompt even after the outage (bounded wait, not a timing assert on a fast path).
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(15)
    finally:
        server.stop()


def test_a_step_that_loses_its_connection_is_retried_from_the_last_checkpoint(server) -> None:  # noqa: ANN001
    """On SQLite and PostgreSQL: n2 fails once with psycopg's lost-connection error; the run resumes from the
    checkpoint after n1 (n1 does not run again), the stream marks the retry, and the run succeeds."""
    http = httpx.Client(base_url=server.url, timeout=30)
    tid = http.post("/threads", json={}).json()["thread_id"]
    body = {"assistant_id": "flaky_connection", "input": {}, "stream_mode": ["updates"], "durability": "sync"}
    with http.stream("POST", f"/threads/{tid}/runs/stream", json=body) as r:
        text = r.read().decode()
    assert "event: error" not in text
    assert '"retry":1' in text.replace(" ", "")  # the metadata event marking the retried step
    state = http.get(f"/threads/{tid}/state").json()
    assert state["values"]["log"] == ["n1", "n2"]
    runs = http.get(f"/threads/{tid}/runs").json()
    assert [r["status"] for r in runs] == ["success"]
    assert "retrying from its last checkpoint" in server.log()


def test_only_the_drivers_in_use_are_loaded_and_mapped_to_503(tmp_path) -> None:  # noqa: ANN001
    """The embedded default imports neither psycopg nor redis (~15 MiB of idle memory); an app on PostgreSQL or
    with Redis configured still answers their connection errors with 503."""
    import json
    import os
    import subprocess
    import sys

    code = """
import json, sys
from interlock.server.app import create_app
from interlock.server.dependencies import is_connection_error
embedded = create_app(sys.argv[1], db_url="sqlite:///" + sys.argv[2])
loaded = sorted(m for m in ("psycopg", "psycopg_pool", "redis") if m in sys.modules)
shared = create_app(sys.argv[1], db_url="postgresql://127.0.0.1/test")
import psycopg, redis
print(json.dumps({"loaded": loaded, "embedded": sorted(t.__module__ for t in embedded.exception_handlers if t is not Exception),
                  "shared": sorted(t.__module__ for t in shared.exception_handlers if t is not Exception),
                  "retry_pg": is_connection_error(psycopg.OperationalError("x")),
                  "retry_redis": is_connection_error(redis.exceptions.ConnectionError("x"))}))
"""
    config = tmp_path / "langgraph.json"
    config.write_text(json.dumps({"graphs": {}}))
    env = {k: v for k, v in os.environ.items() if k not in ("INTERLOCK_DATABASE_URL", "INTERLOCK_REDIS_URL")}
    env["INTERLOCK_HOME"] = str(tmp_path / "home")
    out = subprocess.run([sys.executable, "-c", code, str(config), str(tmp_path / "db.sqlite")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["loaded"] == []
    assert not any(m.startswith(("psycopg", "redis")) for m in seen["embedded"]), seen
    assert {"psycopg", "psycopg_pool"} <= {m.split(".")[0] for m in seen["shared"]}, seen
    # Once a driver is loaded its connection errors are retried (the engine's check), Redis's too.
    assert seen["retry_pg"] and seen["retry_redis"]
    env["INTERLOCK_REDIS_URL"] = "redis://127.0.0.1:6379/0"
    out = subprocess.run([sys.executable, "-c", code, str(config), str(tmp_path / "db.sqlite")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert "redis.exceptions" in seen["embedded"], seen
