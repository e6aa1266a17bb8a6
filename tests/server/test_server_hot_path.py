"""The run hot path's database round trips, on real SQLite and PostgreSQL: a pooled connection is checked without
a statement unless the server dropped it, thread metadata is merged in one statement, and a due run that cannot
be claimed yet is not polled in a tight loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from interlock.server.engine.inflight import Inflight
from interlock.server.engine.job import RunJob
from interlock.server.engine.queue import BLOCKED_RECHECK_SECONDS, RunQueue
from interlock.server.runs import Runs
from interlock.server.storage import connect
from interlock.server.storage.migrations import migrate
from interlock.server.threads import Threads
from server_testkit import PG_ADMIN

from interlock.kernel.database import PostgresDatabase


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_factory: Callable[[], str]) -> str:
    return f"sqlite:///{tmp_path / 'hot.sqlite'}" if request.param == "sqlite" else pg_factory()


def test_thread_metadata_merge_is_one_statement(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> tuple[dict[str, Any], list[str]]:
        db = await connect(db_url)
        await migrate(db)
        threads = Threads(db)
        thread = await threads.create(None, {"owner": "ann", "graph_id": "old", "nested": {"a": 1}}, None)
        seen: list[str] = []
        for name in ("execute", "fetchall"):
            original = getattr(db, name)

            async def wrapped(sql: str, params: Any = (), _original: Any = original) -> Any:
                seen.append(sql)
                return await _original(sql, params)

            monkeypatch.setattr(db, name, wrapped)
        monkeypatch.setattr(db, "transaction", lambda: (_ for _ in ()).throw(AssertionError("no transaction")))
        await threads.merge_metadata(thread["thread_id"], {"graph_id": "g1", "assistant_id": "a1"})
        monkeypatch.undo()
        found = await threads.find(thread["thread_id"])
        hits = await threads.search(metadata={"graph_id": "g1"})
        await db.close()
        assert [t["thread_id"] for t in hits] == [thread["thread_id"]]
        return found["metadata"], seen

    metadata, statements = asyncio.run(main())
    assert metadata == {"owner": "ann", "graph_id": "g1", "assistant_id": "a1", "nested": {"a": 1}}
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("UPDATE"), statements


def test_pooled_connection_check_costs_no_statement_and_replaces_a_dropped_one(
    pg_factory: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = pg_factory()
    dbname = url.rsplit("/", 1)[1]
    sent: list[str] = []
    original = psycopg.AsyncConnection.execute

    async def recording(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return await original(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", recording)

    async def main() -> tuple[int, list[dict[str, Any]]]:
        db = await PostgresDatabase.open(url, max_size=1)
        try:
            for _ in range(20):
                await db.fetchall("SELECT 1 AS x")
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                # The server drops the pooled connection; the next checkout must notice and reconnect.
                killed = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                    "pg_backend_pid()", [dbname]).fetchall()
            await asyncio.sleep(0.2)
            rows = await db.fetchall("SELECT 2 AS x")
            return len(killed), rows
        finally:
            await db.close()

    killed, rows = asyncio.run(main())
    assert killed >= 1 and rows == [{"x": 2}]
    # psycopg's own check sends an empty query at every checkout; a live idle connection needs none. The dropped
    # one gets the full check (one empty query), which fails, and the pool replaces it.
    assert sent.count("") <= 1, sent


def test_a_due_run_that_cannot_be_claimed_is_not_polled_in_a_loop(tmp_path: Path) -> None:
    """A run queued behind its thread's running run is due but not claimable: the dispatcher looks again every
    BLOCKED_RECHECK_SECONDS (or when woken), instead of re-reading the queue back to back."""

    async def main() -> int:
        db = await connect(f"sqlite:///{tmp_path / 'queue.sqlite'}")
        await migrate(db)
        threads, runs = Threads(db), Runs(db)
        thread = await threads.create(None, {}, None)
        for i in range(2):
            await runs.insert(run_id=f"00000000-0000-0000-0000-00000000000{i}", thread_id=thread["thread_id"],
                              assistant_id="a", metadata={}, kwargs={}, multitask_strategy="enqueue",
                              after_seconds=None, temporary=0)
        reads = 0
        original = runs.next_due

        async def counted() -> str | None:
            nonlocal reads
            reads += 1
            return await original()

        runs.next_due = counted  # type: ignore[method-assign]
        release = asyncio.Event()

        async def execute(job: Any) -> None:
            await release.wait()  # the first run keeps its thread busy; the second stays queued behind it

        queue = RunQueue(runs, Inflight(), execute, worker_id="w", concurrency=5, poll_seconds=5.0)
        task = asyncio.create_task(queue.dispatch())
        await asyncio.sleep(1.0)
        task.cancel()
        release.set()
        await db.close()
        return reads

    reads = asyncio.run(main())
    assert reads <= 2 + 1.0 / BLOCKED_RECHECK_SECONDS + 2, reads


def test_trace_redaction_is_remembered_and_still_redacts() -> None:
    """The same short string is scanned once; the remembered answer is the redacted one, and a different
    string is still scanned."""
    from interlock.server.traces import Redactor

    redactor = Redactor()
    detector = redactor._get_detector()
    assert detector is not None, "the PII policy's detector must load in tests"
    calls: list[str] = []
    original = detector.detect

    def counting(text: str) -> Any:
        calls.append(text)
        return original(text)

    detector.detect = counting
    first = redactor({"email": "reach me at ann.lee@example.com", "node": "a"})
    again = redactor({"email": "reach me at ann.lee@example.com", "node": "a"})
    assert first == again and "ann.lee@example.com" not in str(first) and first["node"] == "a"
    assert calls.count("reach me at ann.lee@example.com") == 1
    other = redactor("call 415-555-0134 today")
    assert "415-555-0134" not in other


def test_a_batch_is_one_transaction(db_url: str) -> None:
    """Database.batch (one pipeline on PostgreSQL, no BEGIN/COMMIT): a failing statement undoes the ones before it."""

    async def main() -> tuple[list[Any], list[dict[str, Any]]]:
        db = await connect(db_url)
        await migrate(db)
        threads = Threads(db)
        thread = await threads.create(None, {}, None)
        ok = await db.batch([threads.status_statement(thread["thread_id"], "busy"),
                             ("SELECT status FROM threads WHERE thread_id = ?", [thread["thread_id"]])])
        with pytest.raises(Exception, match="(?i)unique|constraint"):
            await db.batch([threads.status_statement(thread["thread_id"], "error"),
                            ("INSERT INTO threads (thread_id, created_at, updated_at, metadata, status) "
                             "VALUES (?, 'x', 'x', '{}', 'idle')", [thread["thread_id"]])])
        rows = await db.fetchall("SELECT status FROM threads WHERE thread_id = ?", [thread["thread_id"]])
        await db.close()
        return ok, rows

    ok, rows = asyncio.run(main())
    assert ok == [1, [{"status": "busy"}]]
    assert rows == [{"status": "busy"}]


def test_a_pipelined_transaction_is_all_or_nothing(db_url: str) -> None:
    """A pipelined transaction (a claim: BEGIN with the first read, the deferred writes with COMMIT): a deferred
    statement that fails undoes the ones before it and the read's effects, and the connection is usable after."""

    async def main() -> tuple[list[dict[str, Any]], list[Any]]:
        db = await connect(db_url)
        await migrate(db)
        threads = Threads(db)
        thread = await threads.create(None, {}, None)
        tid = thread["thread_id"]
        with pytest.raises(Exception, match="(?i)unique|constraint"):
            async with db.transaction(pipelined=True) as tx:
                await tx.fetchall("SELECT status FROM threads WHERE thread_id = ?", [tid])
                await tx.defer([threads.status_statement(tid, "busy"),
                                ("INSERT INTO threads (thread_id, created_at, updated_at, metadata, status) "
                                 "VALUES (?, 'x', 'x', '{}', 'idle')", [tid])])
        after_failure = await db.fetchall("SELECT status FROM threads WHERE thread_id = ?", [tid])
        async with db.transaction(pipelined=True) as tx:
            read = await tx.fetchall("SELECT status FROM threads WHERE thread_id = ?", [tid])
            deferred = await tx.defer([threads.status_statement(tid, "busy"),
                                       ("SELECT status FROM threads WHERE thread_id = ?", [tid])])
        results = await deferred.results()
        await db.close()
        return after_failure, [read, *results]

    after_failure, results = asyncio.run(main())
    assert after_failure == [{"status": "idle"}]
    assert results == [[{"status": "idle"}], 1, [{"status": "busy"}]]


def test_a_claim_knows_whether_its_thread_has_a_recorded_state(db_url: str) -> None:
    """The first attempt of a run on a thread that never had a state skips the latest-checkpoint read; once any
    state is recorded (a run's end, update_state, copy), the next claim must say the thread is not fresh."""

    async def main() -> list[bool]:
        db = await connect(db_url)
        await migrate(db)
        threads, runs = Threads(db), Runs(db)
        thread = await threads.create(None, {}, None)
        seen = []
        for i in range(2):
            run_id = f"00000000-0000-0000-0000-00000000000{i}"
            await runs.insert(run_id=run_id, thread_id=thread["thread_id"], assistant_id="a", metadata={}, kwargs={},
                              multitask_strategy="enqueue", after_seconds=None, temporary=0)
            claimed = await runs.claim("w")
            assert claimed is not None and claimed["run_id"] == run_id
            seen.append(RunJob.from_row(claimed).fresh_thread)
            await db.batch([runs.status_statement(run_id, "success"),
                            threads.record_state_statement(thread["thread_id"], status="idle", values={"n": i},
                                                           interrupts={}, finished_run=run_id)])
        await db.close()
        return seen

    assert asyncio.run(main()) == [True, False]


def test_one_claim_takes_several_runs_but_one_per_thread(db_url: str) -> None:
    """The dispatcher claims as many runs as it has room for in one transaction; two queued runs of one thread are
    never both taken (the second waits for the first), and the thread is marked busy."""

    async def main() -> tuple[list[str], list[str], str | None]:
        db = await connect(db_url)
        await migrate(db)
        threads, runs = Threads(db), Runs(db)
        first = await threads.create(None, {}, None)
        other = await threads.create(None, {}, None)
        for i, thread in enumerate((first, first, other)):
            await runs.insert(run_id=f"00000000-0000-0000-0000-00000000000{i}", thread_id=thread["thread_id"],
                              assistant_id="a", metadata={}, kwargs={}, multitask_strategy="enqueue",
                              after_seconds=None, temporary=0)
        claimed = await runs.claim_many("w", 3, then_next_due=True)
        statuses = [t["status"] for t in (await threads.find(first["thread_id"]), await threads.find(other["thread_id"]))]
        await db.close()
        return [r["run_id"][-1] for r in claimed], statuses, runs.last_next_due

    claimed, statuses, next_due = asyncio.run(main())
    assert claimed == ["0", "2"], claimed
    assert statuses == ["busy", "busy"]
    assert next_due is not None  # run 1 is still pending behind run 0


def test_trace_redaction_loads_the_detector_off_the_event_loop_and_only_when_a_string_needs_it() -> None:
    """Node names, state keys and ids never load the recognizers (a guard-free graph's server stays small);
    the first string that may hold a name or a pattern entity loads them in a worker thread, then is redacted."""
    import threading

    from interlock.server.traces import Redactor, may_hold_pii

    assert not may_hold_pii("input_guard", names=True) and not may_hold_pii("messages", names=True)
    assert not may_hold_pii("1f0c2b7e-9a4d-4e4f-8c1a-0b5b2d3e4f50", names=True)
    assert not may_hold_pii("2026-12-02T01:02:03.456+00:00", names=True)
    assert may_hold_pii("Okafor", names=True) and not may_hold_pii("Okafor", names=False)
    assert may_hold_pii("my name is omar okafor", names=True) and may_hold_pii("ORD-1001", names=False)

    redactor = Redactor()
    loaded_in: list[str] = []
    build = redactor._get_detector

    def recording() -> Any:
        loaded_in.append(threading.current_thread().name)
        return build()

    redactor._get_detector = recording  # type: ignore[method-assign]
    quiet = {"node": "a", "n": 1, "id": "1f0c2b7e-9a4d-4e4f-8c1a-0b5b2d3e4f50", "keys": ["messages", "log"]}

    async def main() -> Any:
        assert await redactor.aredact(quiet) == quiet and loaded_in == [], "nothing here needs the recognizers"
        out = await redactor.aredact({"messages": ["mail ann.lee@example.com"]})
        assert loaded_in and loaded_in[0] != threading.main_thread().name, loaded_in
        return out

    out = asyncio.run(main())
    assert "ann.lee@example.com" not in str(out) and "EMAIL" in str(out)


# A thread-per-run `runs.wait` of the two-node graph on PostgreSQL, in round trips: thread insert 1; the assistant
# with the thread (and its active-run check) 1; the run + thread-busy batch 1; the claim 2 (BEGIN with the pick,
# the writes with COMMIT); the checkpointer 7 (4 checkpoints, each with its blobs, and 3 tasks' writes: one
# statement each); the outcome + thread state + trace batch 1. The final state is not read back, and the claim of
# a run submitted here is not preceded by an "is anything due?" read. About 57 at the start of session 4, 17 at
# its end (bb86e7b). The background polls' round trips are measured in an idle spell and taken off.
ROUND_TRIPS_PER_RUN = 14


def test_a_thread_per_run_costs_thirteen_round_trips_on_postgres(
    tmp_path: Path, pg_factory: Callable[[], str]
) -> None:
    import signal
    import sys

    from langgraph_sdk import get_sync_client
    from server_testkit import make_server

    log = tmp_path / "round-trips"
    server = make_server(tmp_path, pg_factory(), program=(sys.executable, str(Path(__file__).with_name(
        "round_trips_serve.py"))), INTERLOCK_ROUND_TRIPS_LOG=str(log))
    try:
        client = get_sync_client(url=server.url, api_key=None)

        def one(n: int) -> dict[str, Any]:
            thread = client.threads.create()["thread_id"]
            return client.runs.wait(thread, "two_node", input={"n": n})  # type: ignore[return-value]

        for i in range(3):
            one(i)  # warm-up: connections, prepared statements, the system assistant
        def count(during: Callable[[], object]) -> tuple[int, float]:
            """Round trips while `during` runs, and how long it took."""
            assert server.proc is not None
            log.unlink(missing_ok=True)
            server.proc.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
            started = time.monotonic()
            during()
            elapsed = time.monotonic() - started
            server.proc.send_signal(signal.SIGUSR2)
            for _ in range(50):
                if log.exists() and log.read_text():
                    break
                time.sleep(0.1)
            return int(log.read_text()), elapsed

        runs = 20
        outputs: list[dict[str, Any]] = []
        busy, elapsed = count(lambda: outputs.extend(one(i) for i in range(runs)))
        # The polls (queue, leases, crons, approvals) tick meanwhile: as many as in an idle spell as long.
        idle, _ = count(lambda: time.sleep(elapsed))
        per_run = (busy - idle) / runs
    finally:
        server.stop()
    assert [o["n"] for o in outputs] == [(i + 1) * 2 for i in range(runs)]
    assert 10 <= per_run <= ROUND_TRIPS_PER_RUN, per_run
