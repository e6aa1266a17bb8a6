"""Every hot query shape the API issues has an indexed plan, on SQLite and on PostgreSQL.

The statements are the ones the server really sends: the domain classes (Threads, Runs, the embedded store) run
against a real migrated database while the test records their SQL, then EXPLAINs each. SQLite fails on a full
table scan or a temp B-tree sort; PostgreSQL (with enable_seqscan=off, so a missing index shows as a Seq Scan
rather than being hidden by a small table) must use the named index.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from interlock.server.runs import Runs
from interlock.server.storage import connect
from interlock.server.storage.migrations import migrate
from interlock.server.storage.sqlite_store import LoopSqliteStore
from interlock.server.threads import Threads
from langgraph.store.base import PutOp

from interlock.kernel.database import Database, _PostgresTx, _SqliteTx

Recorded = list[tuple[str, list[Any]]]


def record(db: Database, monkeypatch: pytest.MonkeyPatch) -> Recorded:
    seen: Recorded = []
    for owner, name in ((db, "fetchall"), (db, "execute")):
        original = getattr(owner, name)

        async def wrapped(sql: str, params: Any = (), _original: Any = original) -> Any:
            seen.append((sql, list(params)))
            return await _original(sql, params)

        monkeypatch.setattr(owner, name, wrapped)
    # Batched statements (Database.batch, a transaction's batch) are recorded one by one.
    original_batch = db.batch

    async def batch_wrapped(statements: Any) -> Any:
        seen.extend((sql, list(params)) for sql, params in statements)
        return await original_batch(statements)

    monkeypatch.setattr(db, "batch", batch_wrapped)
    for tx_class in (_SqliteTx, _PostgresTx):
        original_tx_batch = tx_class.batch

        async def tx_batch_wrapped(self: Any, statements: Any, _original: Any = original_tx_batch) -> Any:
            seen.extend((sql, list(params)) for sql, params in statements)
            return await _original(self, statements)

        monkeypatch.setattr(tx_class, "batch", tx_batch_wrapped)
    # _SqliteTx.fetchone goes straight to the connection; _PostgresTx.fetchone goes through its fetchall.
    for tx_class, names in ((_SqliteTx, ("fetchall", "fetchone", "execute")), (_PostgresTx, ("fetchall", "execute"))):
        for name in names:
            original = getattr(tx_class, name)

            async def tx_wrapped(self: Any, sql: str, params: Any = (), _original: Any = original) -> Any:
                seen.append((sql, list(params)))
                return await _original(self, sql, params)

            monkeypatch.setattr(tx_class, name, tx_wrapped)
    return seen


# (label, call, index SQLite must use (None: only "no scan, no sort"), index PostgreSQL must use, where a sort is
# acceptable: "pg" for GIN containment filters (a bitmap scan, then a top-N sort of the matches), "both" for the
# run queue (it sorts the due pending runs, a set bounded by the queue's depth, never the table)).
Case = tuple[str, Callable[[Threads, Runs, str], Awaitable[Any]], str | None, str | None, str]

CASES: list[Case] = [
    ("threads.search default order, deep offset", lambda t, r, tid: t.search(limit=10, offset=500),
     "threads_updated_id", "threads_updated_id", ""),
    ("threads.search sort_by created_at asc", lambda t, r, tid: t.search(sort_by="created_at", sort_order="asc"),
     "threads_created_id", "threads_created_id", ""),
    ("threads.search by status", lambda t, r, tid: t.search(status="busy"),
     "threads_status_updated_id", "threads_status_updated_id", ""),
    ("threads.search by graph_id", lambda t, r, tid: t.search(metadata={"graph_id": "g1"}),
     "threads_meta_graph_id", "threads_metadata_gin", "pg"),
    ("threads.search by assistant_id and status",
     lambda t, r, tid: t.search(metadata={"assistant_id": "a1"}, status="idle"),
     "threads_meta_assistant_id", "threads_status_updated_id", "pg"),
    ("threads.search by owner (auth filter)", lambda t, r, tid: t.search(auth_filter={"owner": "ann"}),
     "threads_meta_owner", "threads_metadata_gin", "pg"),
    ("threads.count by graph_id", lambda t, r, tid: t.count(metadata={"graph_id": "g1"}),
     "threads_meta_graph_id", "threads_metadata_gin", "pg"),
    ("threads.count by status", lambda t, r, tid: t.count(status="idle"),
     "threads_status_updated_id", "threads_status_updated_id", ""),
    ("threads expiry heartbeat", lambda t, r, tid: t.expired(), "threads_expires", "threads_expires", ""),
    ("threads.get", lambda t, r, tid: t.find(tid), None, "threads_pkey", ""),
    ("thread and its activity for a new run", lambda t, r, tid: t.find_for_run(tid), None, "runs_thread_created", ""),
    ("run outcome and thread state", lambda t, r, tid: _record_outcome(t, r, tid), None, "", ""),
    ("runs.list of a thread", lambda t, r, tid: r.list(tid, limit=10, offset=0, status=None),
     "runs_thread_created", "runs_thread_created", ""),
    ("runs active on a thread", lambda t, r, tid: r.active_for_thread(tid),
     "runs_thread_created", "runs_thread_created", ""),
    ("runs.claim idle check", lambda t, r, tid: r.claim("worker"), "runs_queue", "runs_queue", ""),
    ("runs.claim with work", lambda t, r, tid: _claim_with_work(r, tid), "runs_running", "runs_running", "both"),
    ("runs next due", lambda t, r, tid: r.next_due(), "runs_queue", "runs_queue", ""),
    ("runs still active among waited ones",
     lambda t, r, tid: r.active_among([f"00000000-0000-0000-0000-{i:012d}" for i in range(3)]), None, "Index", ""),
]


async def _record_outcome(threads: Threads, runs: Runs, thread_id: str) -> Any:
    """The engine's record of a finished run (its status, and the thread busy while another run is queued)."""
    run_id = "00000000-0000-0000-0000-000000000000"
    return await runs.db.batch([
        runs.status_statement(run_id, "success"),
        threads.record_state_statement(thread_id, status="idle", values={"n": 1}, interrupts={}, finished_run=run_id),
    ])


async def _claim_with_work(runs: Runs, thread_id: str) -> Any:
    await runs.insert(run_id="10000000-0000-0000-0000-000000000000", thread_id=thread_id, assistant_id="a",
                      metadata={}, kwargs={}, multitask_strategy="reject", after_seconds=None, temporary=0)
    claimed = await runs.claim("worker")
    assert claimed is not None and claimed["run_id"] == "10000000-0000-0000-0000-000000000000"
    return claimed


async def _seed(threads: Threads, runs: Runs) -> str:
    first = ""
    for i in range(40):
        thread = await threads.create(None, {"graph_id": f"g{i % 3}", "assistant_id": f"a{i % 4}", "owner": "ann"},
                                      None, ttl_minutes=60 if i % 5 == 0 else None)
        first = first or thread["thread_id"]
        await runs.insert(run_id=f"00000000-0000-0000-0000-{i:012d}", thread_id=thread["thread_id"], assistant_id="a",
                          metadata={}, kwargs={}, multitask_strategy="reject", after_seconds=None, temporary=0)
        await runs.set_status(f"00000000-0000-0000-0000-{i:012d}", "success")
    return first


def _sqlite_problems(
    conn: sqlite3.Connection, sql: str, params: list[Any], sort_ok: bool = False
) -> tuple[list[str], str]:
    plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()]
    text = "\n".join(plan)
    bad = [line for line in plan if line.startswith("SCAN ") and " USING " not in line]
    if not sort_ok:
        bad += [line for line in plan if "TEMP B-TREE" in line]
    return bad, text


@pytest.mark.parametrize("label", [c[0] for c in CASES])
def test_sqlite_plans(label: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = next(c for c in CASES if c[0] == label)
    path = tmp_path / "plans.sqlite"

    async def main() -> Recorded:
        db = await connect(f"sqlite:///{path}")
        await migrate(db)
        threads, runs = Threads(db), Runs(db)
        tid = await _seed(threads, runs)
        seen = record(db, monkeypatch)
        await case[1](threads, runs, tid)
        await db.close()
        return seen

    seen = asyncio.run(main())
    assert seen, "the call issued no SQL"
    conn = sqlite3.connect(path)
    for sql, params in seen:
        bad, text = _sqlite_problems(conn, sql, params, case[4] == "both")
        assert not bad, f"{label}: {sql}\n{text}"
    plans = "\n".join(_sqlite_problems(conn, sql, params)[1] for sql, params in seen)
    if case[2] is not None:
        assert case[2] in plans, f"{label}: expected {case[2]}\n{plans}"
    conn.close()


def test_sqlite_store_list_namespaces_never_reads_every_item(tmp_path: Path) -> None:
    """The namespace listing walks distinct namespaces in the primary key (a sort over namespaces, never items)."""
    conn = sqlite3.connect(tmp_path / "store.sqlite", isolation_level=None, check_same_thread=False)
    store = LoopSqliteStore(conn)
    store.setup()
    for n in range(30):
        for k in range(20):
            store.put(("users", f"u{n}", "prefs"), f"k{k}", {"v": k})
    from langgraph.store.base import ListNamespacesOp, MatchCondition

    ops = [
        ListNamespacesOp(match_conditions=None, max_depth=None, limit=10, offset=0),
        ListNamespacesOp(match_conditions=(MatchCondition("prefix", ("users",)),), max_depth=2, limit=10, offset=0),
        ListNamespacesOp(match_conditions=(MatchCondition("suffix", ("prefs",)),), max_depth=None, limit=10, offset=0),
    ]
    for sql, params in store._get_batch_list_namespaces_queries([(i, op) for i, op in enumerate(ops)]):
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()]
        assert not [line for line in plan if line.startswith("SCAN store")], "\n".join(plan)
        assert any("SEARCH store USING COVERING INDEX" in line for line in plan), "\n".join(plan)
    assert len(store.list_namespaces(prefix=("users",), limit=100)) == 30
    assert store.list_namespaces(max_depth=2, limit=5, offset=1) == [("users", f"u{n}") for n in (1, 10, 11, 12, 13)]
    conn.close()


@pytest.mark.parametrize("label", [c[0] for c in CASES])
def test_postgres_plans(label: str, pg_factory: Callable[[], str], monkeypatch: pytest.MonkeyPatch) -> None:
    case = next(c for c in CASES if c[0] == label)
    url = pg_factory()

    async def main() -> tuple[Recorded, Any]:
        db = await connect(url)
        await migrate(db)
        threads, runs = Threads(db), Runs(db)
        tid = await _seed(threads, runs)
        seen = record(db, monkeypatch)
        await case[1](threads, runs, tid)
        sql_of = db._sql  # type: ignore[attr-defined]
        await db.close()
        return seen, sql_of

    seen, sql_of = asyncio.run(main())
    assert seen, "the call issued no SQL"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        plans = []
        for sql, params in seen:
            if not sql.lstrip().upper().startswith("SELECT"):
                continue
            rows = conn.execute("EXPLAIN " + sql_of(sql), params).fetchall()
            text = "\n".join(r[0] for r in rows)
            assert "Seq Scan" not in text, f"{label}: {sql}\n{text}"
            if not case[4]:
                assert "Sort" not in text, f"{label}: {sql}\n{text}"
            plans.append(text)
    assert case[3] in "\n".join(plans), f"{label}: expected {case[3]}\n" + "\n".join(plans)


def _store_search_ops() -> list[Any]:
    from langgraph.store.base import SearchOp

    return [
        SearchOp(("users", "u3", "prefs"), None, 10, 0, refresh_ttl=False),
        SearchOp(("users", "u3", "prefs"), {"v": 3}, 10, 20),
        SearchOp(("users", "u3", "prefs"), None, 10, 0),  # refreshing TTLs
    ]


def test_sqlite_store_search_in_a_namespace_reads_the_index_in_order(tmp_path: Path) -> None:
    """A namespace's newest items come from the (prefix, updated_at) index, never a sort of the namespace; only
    its descendants (none here) may be sorted, in the right arm of the merge."""
    conn = sqlite3.connect(tmp_path / "store.sqlite", isolation_level=None, check_same_thread=False)
    store = LoopSqliteStore(conn)
    store.setup()
    for n in range(10):
        store.batch([PutOp(("users", f"u{n}", "prefs"), f"k{k}", {"v": k}) for k in range(200)])
    store.put(("users", "u3", "prefs", "deeper"), "child", {"v": 3})
    queries, _ = store._prepare_batch_search_queries(list(enumerate(_store_search_ops())))
    for sql, params, _refresh in queries:
        rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        text = "\n".join(r[3] for r in rows)
        assert not [r for r in rows if r[3].startswith("SCAN ")], text
        right = {r[0] for r in rows if r[3] == "RIGHT"}
        assert right, f"not split into the namespace and its descendants:\n{text}"
        left_of_merge = [r for r in rows if r[1] not in right and r[0] not in right]
        assert not [r for r in left_of_merge if "TEMP B-TREE" in r[3]], text
        assert "SEARCH store USING INDEX store_prefix_updated_idx (prefix=?)" in text, text
    # Same answers as SqliteStore's own query: newest first, the namespace and its descendants, filters applied.
    page = store.search(("users", "u3", "prefs"), limit=300)
    assert len(page) == 201 and {i.key for i in page} >= {"child", "k0", "k199"}
    assert [i.key for i in store.search(("users", "u3", "prefs"), filter={"v": 3}, limit=10)] in (
        ["child", "k3"], ["k3", "child"])
    assert len(store.search(("users", "u3", "prefs"), limit=10, offset=195)) == 6
    conn.close()


def test_postgres_store_search_in_a_namespace_reads_the_index_in_order(pg_factory: Callable[[], str]) -> None:
    from interlock.server.storage.postgres_store import IndexedPostgresStore
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    url = pg_factory()

    async def main() -> list[str]:
        pool = AsyncConnectionPool(url, min_size=1, max_size=2, open=False,
                                   kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
        await pool.open()
        try:
            store = IndexedPostgresStore(pool)  # type: ignore[arg-type]
            await store.setup()
            for n in range(10):
                await store.abatch([PutOp(("users", f"u{n}", "prefs"), f"k{k}", {"v": k}) for k in range(300)])
            await store.aput(("users", "u3", "prefs", "deeper"), "child", {"v": 3})
            async with pool.connection() as conn:
                await conn.execute("ANALYZE store")
                # As in test_postgres_plans: a small table must not hide a missing index behind a Seq Scan.
                await conn.execute("SET enable_seqscan = off")
                plans = []
                queries, _ = store._prepare_batch_search_queries(list(enumerate(_store_search_ops())))
                for sql, params in queries:
                    rows = await (await conn.execute("EXPLAIN " + sql, params)).fetchall()
                    plans.append("\n".join(next(iter(r.values())) for r in rows))
            page = await store.asearch(("users", "u3", "prefs"), limit=400)
            assert len(page) == 301 and {i.key for i in page} >= {"child", "k0", "k299"}
            hits = await store.asearch(("users", "u3", "prefs"), filter={"v": 3}, limit=10)
            assert sorted(i.key for i in hits) == ["child", "k3"]
            assert len(await store.asearch(("users", "u3", "prefs"), limit=10, offset=295)) == 6
            return plans
        finally:
            await pool.close()

    unfiltered, filtered, refreshing = asyncio.run(main())
    for plan in (unfiltered, filtered, refreshing):
        assert "Seq Scan" not in plan, plan
        assert "store_prefix_updated_idx" in plan, plan
    # Unfiltered pages read the namespace newest-first and stop; a filtered one may sort the (few) matches.
    for plan in (unfiltered, refreshing):
        assert "Merge Append" in plan, plan
        assert "Index Scan Backward using store_prefix_updated_idx" in plan, plan
