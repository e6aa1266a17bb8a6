"""Checkpointer and store lifecycles, plus the few checkpoint operations LangGraph's savers do not offer
(copying a thread, rolling a thread back to the checkpoint a cancelled run started from)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from interlock.server.storage.migrations import setup_lock
from interlock.server.timeouts import db_timeout_seconds
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver

from interlock.kernel.database import connect_kwargs, pool_options
from interlock.kernel.settings import get_settings, is_postgres, sqlite_path
from interlock.kernel.sqlite_busy import retry_busy, switch_to_wal


class LoopSqliteSaver(SqliteSaver):
    """LangGraph's SQLite saver, called directly on the event loop.

    Checkpoint reads and writes on the embedded database take tens of microseconds; AsyncSqliteSaver hands each
    to a worker thread, which profiles showed costing more than the statements. Same tables, same format.
    """

    async def aget_tuple(self, config: Any) -> Any:
        return self.get_tuple(config)

    async def alist(self, config: Any, *, filter: Any = None, before: Any = None, limit: Any = None) -> Any:  # noqa: A002
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        return await retry_busy(lambda: self.put(config, checkpoint, metadata, new_versions))

    async def aput_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        await retry_busy(lambda: self.put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await retry_busy(lambda: self.delete_thread(thread_id))

    async def aget_delta_channel_history(self, *args: Any, **kwargs: Any) -> Any:
        return self.get_delta_channel_history(*args, **kwargs)


@dataclass
class PrimedThread:
    """The checkpoint that answers a run's next latest-checkpoint read of its own thread, instead of the database.

    First the latest checkpoint the engine has just read (server/engine/execution.py): LangGraph's own first read of
    the same thread, moments later in the same task, is answered from it once. Then the last root checkpoint the run
    wrote, with the task writes saved against it: it answers the engine's final read of the run's state (PostgreSQL:
    a round trip and the heaviest of the saver's queries)."""

    thread_id: str
    latest: Any  # the engine's read (a CheckpointTuple or None) until the run writes one
    armed: bool = True  # the next read is answered from here (once)
    written: Any = None  # the last root checkpoint the run wrote
    # Task writes per checkpoint id, one per (task, index) as the saver's table keeps them.
    writes: dict[str, dict[tuple[str, int], tuple[str, str, int, str, Any]]] = field(default_factory=dict)
    closed: bool = False

    def take(self) -> Any:
        """The answer, once: later reads see the run's own writes in the database."""
        self.armed = False
        return self.latest if self.written is None else self._written_with_writes()

    def _written_with_writes(self) -> Any:
        """The last checkpoint written, with the writes saved against it, in the order the saver reads them back."""
        from langgraph.checkpoint.base import CheckpointTuple, writes_sort_key

        written = self.written
        keyed = self.writes.get(written.config["configurable"]["checkpoint_id"], {})
        ordered = sorted(keyed.values(), key=lambda w: writes_sort_key(w[0], w[1], w[2]))
        return CheckpointTuple(
            written.config, written.checkpoint, written.metadata, written.parent_config,
            [(task_id, channel, value) for _, task_id, _, channel, value in ordered],
        )


PRIMED: ContextVar[PrimedThread | None] = ContextVar("interlock_primed_thread", default=None)


def prime_latest(thread_id: str, latest: Any) -> None:
    """Hand `latest` (the thread's newest root checkpoint tuple, or None) to the next latest-checkpoint read of
    `thread_id` in this context. The caller holds the thread (its run is claimed), so nothing writes in between."""
    PRIMED.set(PrimedThread(thread_id=thread_id, latest=latest))


_ONE_ROW = re.compile(r"VALUES\s*\((\s*%s\s*,)*\s*%s\s*\)")


def _many_rows(sql: str, count: int) -> str:
    """LangGraph's one-row statement `sql` with `count` rows in its VALUES (same columns, same conflict clause)."""
    match = _ONE_ROW.search(sql)
    if match is None:
        raise RuntimeError("the saver's statement has no one-row VALUES list")
    row = "(" + ", ".join(["%s"] * match.group(0).count("%s")) + ")"
    return (sql[: match.start()] + "VALUES " + ", ".join([row] * count) + sql[match.end():]).strip().rstrip(";")


@lru_cache(maxsize=64)
def checkpoint_statement(blobs: int) -> str:
    """A checkpoint and its new channel blobs in one statement (the blobs' insert as a data-modifying CTE): the
    rows LangGraph's saver writes with one statement per blob and one for the checkpoint, with its statements."""
    from langgraph.checkpoint.postgres.base import UPSERT_CHECKPOINT_BLOBS_SQL, UPSERT_CHECKPOINTS_SQL

    checkpoint = _many_rows(UPSERT_CHECKPOINTS_SQL, 1)
    if not blobs:
        return checkpoint
    return f"WITH blobs AS ({_many_rows(UPSERT_CHECKPOINT_BLOBS_SQL, blobs)}) {checkpoint}"


@lru_cache(maxsize=64)
def writes_statement(rows: int, *, upsert: bool) -> str:
    """A task's writes as one multi-row insert (LangGraph's saver: the same statement once per write)."""
    from langgraph.checkpoint.postgres.base import INSERT_CHECKPOINT_WRITES_SQL, UPSERT_CHECKPOINT_WRITES_SQL

    return _many_rows(UPSERT_CHECKPOINT_WRITES_SQL if upsert else INSERT_CHECKPOINT_WRITES_SQL, rows)


def release_primed(*, completed: bool) -> None:
    """The run's graph has returned. What the engine read and nobody used must never answer a later read; what
    the run wrote answers its final read only if the graph completed (a failed or cancelled run, or one rolled
    back, is read from the database: a write may have been cut short)."""
    primed = PRIMED.get()
    if primed is not None and not (completed and primed.written is not None):
        primed.closed = True
        primed.armed = False


def remember_written(thread_id: str, written: Any) -> None:
    """A root checkpoint this run has just written for `thread_id` answers the run's next latest-checkpoint read
    (its final state), instead of reading back what it wrote."""
    primed = PRIMED.get()
    if primed is not None and primed.thread_id == str(thread_id) and not primed.closed:
        primed.written = written
        primed.armed = True


def remember_writes(
    thread_id: str, checkpoint_id: str, task_id: str, task_path: str, writes: Any, *, upsert: bool
) -> None:
    """A task's saved writes. They are kept per checkpoint id, because LangGraph saves a task's writes and the
    next checkpoint concurrently (either may land first), as the saver's table keeps them: one per task and
    index, the last for special channels, else the first."""
    from langgraph.checkpoint.base import WRITES_IDX_MAP

    primed = PRIMED.get()
    if primed is None or primed.thread_id != str(thread_id):
        return
    keyed = primed.writes.setdefault(checkpoint_id, {})
    for position, (channel, value) in enumerate(writes):
        idx = WRITES_IDX_MAP.get(channel, position)
        if upsert or (task_id, idx) not in keyed:
            keyed[(task_id, idx)] = (task_path, task_id, idx, channel, value)
    written = primed.written
    if written is not None and not primed.closed and written.config["configurable"]["checkpoint_id"] == checkpoint_id:
        primed.armed = True


def pooled_postgres_saver(pool: Any) -> BaseCheckpointSaver:
    """LangGraph's PostgreSQL saver over a connection pool, without its process-wide lock.

    AsyncPostgresSaver serialises every checkpoint read and write of the process behind one asyncio.Lock (needed
    when it shares a single connection); with a pool each call checks out its own connection, so the lock only
    queues concurrent runs. Each write (blobs and checkpoint, or task writes) is one pipeline: its statements
    travel together and, with no BEGIN/COMMIT, form the one implicit transaction PostgreSQL opens until the
    pipeline's Sync (atomic, one round trip, no extra commands). (De)serialisation runs inline rather than in a worker
    thread: a run's checkpoints are small, and the thread hand-off cost more than the encoding, as it did on SQLite.
    """
    from langgraph.checkpoint.base import (
        WRITES_IDX_MAP,
        CheckpointTuple,
        get_checkpoint_id,
        get_serializable_checkpoint_metadata,
    )
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from langgraph.checkpoint.serde.types import _DeltaSnapshot
    from psycopg.rows import dict_row
    from psycopg.types.json import Jsonb

    class PooledPostgresSaver(AsyncPostgresSaver):
        @asynccontextmanager
        async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[Any]:
            async with self.conn.connection() as conn:  # type: ignore[union-attr]
                if pipeline:
                    async with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
                        yield cur
                else:
                    async with conn.cursor(binary=True, row_factory=dict_row) as cur:
                        yield cur

        async def _write(self, sql: str, params: list[Any]) -> None:
            """One statement, one round trip (a pipeline costs psycopg a socket wait per statement)."""
            async with self.conn.connection() as conn:  # type: ignore[union-attr]
                await conn.execute(sql, params, binary=True)

        async def aget_tuple(self, config: Any) -> Any:
            primed = PRIMED.get()
            configurable = config["configurable"]
            if (
                primed is not None
                and primed.armed
                and primed.thread_id == str(configurable["thread_id"])
                and not configurable.get("checkpoint_ns")
                and not get_checkpoint_id(config)
            ):
                return primed.take()
            return await super().aget_tuple(config)

        # aput / aput_writes / _load_checkpoint_tuple: AsyncPostgresSaver's (langgraph-checkpoint-postgres 3.x),
        # with the (de)serialisation inline instead of asyncio.to_thread, and each write one statement.
        async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
            configurable = config["configurable"].copy()
            thread_id = configurable.pop("thread_id")
            checkpoint_ns = configurable.pop("checkpoint_ns")
            checkpoint_id = configurable.pop("checkpoint_id", None)
            copy = checkpoint.copy()
            copy["channel_values"] = copy["channel_values"].copy()
            next_config = {
                "configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint["id"]}
            }
            blob_values = {}
            for k, v in checkpoint["channel_values"].items():
                if isinstance(v, _DeltaSnapshot):
                    blob_values[k] = copy["channel_values"].pop(k)
                    copy["channel_values"][k] = True
                elif v is None or isinstance(v, (str, int, float, bool)):
                    pass
                else:
                    blob_values[k] = copy["channel_values"].pop(k)
            blob_versions = {k: v for k, v in new_versions.items() if k in blob_values}
            blobs = self._dump_blobs(thread_id, checkpoint_ns, blob_values, blob_versions) if blob_versions else []
            saved_metadata = get_serializable_checkpoint_metadata(config, metadata)
            row = [thread_id, checkpoint_ns, checkpoint["id"], checkpoint_id, Jsonb(copy), Jsonb(saved_metadata)]
            await self._write(checkpoint_statement(len(blobs)), [v for blob in blobs for v in blob] + row)
            if not checkpoint_ns:
                parent = {"configurable": {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": checkpoint_id}}
                remember_written(thread_id, CheckpointTuple(
                    next_config,
                    {**checkpoint, "channel_values": dict(checkpoint["channel_values"])},
                    saved_metadata,
                    parent if checkpoint_id else None,
                    [],
                ))
            return next_config

        async def aput_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
            upsert = all(w[0] in WRITES_IDX_MAP for w in writes)
            conf = config["configurable"]
            rows = self._dump_writes(
                conf["thread_id"], conf["checkpoint_ns"], conf["checkpoint_id"], task_id, task_path, writes
            )
            if upsert:
                # One INSERT may not update a row twice: keep the last write per key, as row-by-row upserts did.
                rows = list({row[5]: row for row in rows}.values())
            if rows:
                await self._write(writes_statement(len(rows), upsert=upsert), [v for row in rows for v in row])
            if not conf["checkpoint_ns"]:
                remember_writes(conf["thread_id"], conf["checkpoint_id"], task_id, task_path, writes, upsert=upsert)

        async def _load_checkpoint_tuple(self, value: Any) -> Any:
            from langgraph.checkpoint.base import CheckpointTuple

            def ids(checkpoint_id: str) -> dict[str, Any]:
                return {"configurable": {"thread_id": value["thread_id"], "checkpoint_ns": value["checkpoint_ns"],
                                         "checkpoint_id": checkpoint_id}}

            return CheckpointTuple(
                ids(value["checkpoint_id"]),
                {
                    **value["checkpoint"],
                    "channel_values": {
                        **(value["checkpoint"].get("channel_values") or {}),
                        **self._load_blobs(value["channel_values"]),
                    },
                },
                value["metadata"],
                ids(value["parent_checkpoint_id"]) if value["parent_checkpoint_id"] else None,
                self._load_writes(value["pending_writes"]),
            )

    return PooledPostgresSaver(pool)


def _json_dumps(value: Any) -> bytes | str:
    """Checkpoints and their metadata as JSON: orjson (several times faster than the standard library, which
    psycopg uses by default, on the four checkpoints a run writes), the standard library for what orjson refuses
    (integers beyond 64 bits)."""
    import json

    import orjson

    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(value)


async def _fast_json(conn: Any) -> None:
    from psycopg.types.json import set_json_dumps

    set_json_dumps(_json_dumps, conn)


@asynccontextmanager
async def open_persistence(
    url: str, index: dict[str, Any] | None = None
) -> AsyncIterator[tuple[BaseCheckpointSaver, Any]]:
    """The checkpointer and the long-term store for a database URL, set up and migrated. `index` (see
    store_index.py) turns on the store's semantic search; PostgreSQL then needs the pgvector extension."""
    if is_postgres(url):
        from interlock.server.storage.postgres_store import IndexedPostgresStore
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        timeout = db_timeout_seconds()
        pool = AsyncConnectionPool(
            url,
            min_size=2,
            max_size=get_settings().db_pool_size,
            open=False,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row, **connect_kwargs(timeout)},
            configure=_fast_json,
            **pool_options(timeout),
        )
        await pool.open(wait=True, timeout=15)
        try:
            saver = pooled_postgres_saver(pool)
            store = IndexedPostgresStore(pool, index=index)  # type: ignore[arg-type]
            async with setup_lock(url):
                await saver.setup()
                await store.setup()
            yield saver, store
        finally:
            await pool.close(timeout=2)
        return
    import sqlite3

    from interlock.server.storage.sqlite_store import LoopSqliteStore

    from interlock.kernel.wal_checkpoints import background_checkpoints, disable_autocheckpoint

    path = sqlite_path(url)

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=10000")  # start-up only: schema setup before the server serves
        switch_to_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    conn = connect()
    if index:
        # Semantic search (store.index in langgraph.json, opt-in) needs sqlite-vec on the store's connection:
        # LangGraph's async store on its own aiosqlite connection, as before.
        store_conn: Any = await _vector_sqlite(path)
        await store_conn.execute("PRAGMA busy_timeout=10000")
    else:
        # Its own connection (the store's batches open BEGIN/COMMIT on it), used on the loop thread like the saver's.
        store_conn = connect()
    try:
        async with setup_lock(url):  # `serve --workers N`: the store's migrations race otherwise
            saver = LoopSqliteSaver(conn)
            saver.setup()
            if index:
                from langgraph.store.sqlite.aio import AsyncSqliteStore

                store: Any = AsyncSqliteStore(store_conn, index=index)  # type: ignore[arg-type]
                await store.setup()
            else:
                store = LoopSqliteStore(store_conn)
                store.setup()
        if index:
            await store.start_ttl_sweeper()
        for c in (conn,) if index else (conn, store_conn):
            # Serving: no busy handler, which would sleep on the event loop thread; busy errors (another process
            # on the same file) are retried after an async sleep instead (kernel.sqlite_busy).
            c.execute("PRAGMA busy_timeout=0")
            disable_autocheckpoint(c)  # checkpoints (and their fsync) run in a worker thread instead
        async with background_checkpoints(path):
            yield saver, store
    finally:
        closed = store_conn.close()
        if closed is not None:
            await closed  # aiosqlite (semantic-search store)
        conn.close()


def _vector_sqlite(path: str) -> Any:
    """An aiosqlite connection that can load sqlite-vec, which the store's semantic index needs. Python builds
    without extension loading (pyenv's default) get it from pysqlite3, a current SQLite with loading enabled."""
    import sqlite3

    import aiosqlite

    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return aiosqlite.connect(path, isolation_level=None)
    try:
        from pysqlite3 import dbapi2 as vector_sqlite  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError(
            "store.index on SQLite needs SQLite extension loading: install pysqlite3-binary"
        ) from None
    return aiosqlite.Connection(
        lambda: vector_sqlite.connect(path, isolation_level=None, check_same_thread=False), 64
    )


async def copy_thread(saver: BaseCheckpointSaver, source: str, target: str) -> None:
    """Copy every checkpoint (oldest first, so parents exist) and its pending writes to another thread."""
    tuples = [t async for t in saver.alist({"configurable": {"thread_id": source}})]
    for tup in reversed(tuples):
        conf = tup.config["configurable"]
        ns = conf.get("checkpoint_ns", "")
        parent_id = tup.parent_config["configurable"]["checkpoint_id"] if tup.parent_config else None
        target_config = {"configurable": {"thread_id": target, "checkpoint_ns": ns}}
        if parent_id:
            target_config["configurable"]["checkpoint_id"] = parent_id
        metadata = {**(tup.metadata or {}), "thread_id": target}
        new_config = await saver.aput(
            target_config, tup.checkpoint, metadata, tup.checkpoint.get("channel_versions", {})
        )
        by_task: dict[str, list[tuple[str, Any]]] = {}
        for task_id, channel, value in tup.pending_writes or []:
            by_task.setdefault(task_id, []).append((channel, value))
        for task_id, writes in by_task.items():
            await saver.aput_writes(new_config, writes, task_id)


async def delete_after(saver: BaseCheckpointSaver, thread_id: str, checkpoint_id: str | None) -> None:
    """Remove the checkpoints a run wrote after `checkpoint_id` (all of them when None).

    Checkpoint ids are time-ordered UUIDs, so "after" is a string comparison.
    """
    name = type(saver).__name__
    if isinstance(saver, SqliteSaver):
        with saver.cursor() as cur:
            if checkpoint_id is None:
                cur.execute("DELETE FROM checkpoints WHERE thread_id = ?", (thread_id,))
                cur.execute("DELETE FROM writes WHERE thread_id = ?", (thread_id,))
            else:
                cur.execute("DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_id > ?", (thread_id, checkpoint_id))
                cur.execute("DELETE FROM writes WHERE thread_id = ? AND checkpoint_id >= ?", (thread_id, checkpoint_id))
        return
    if name == "AsyncSqliteSaver":
        conn = saver.conn  # type: ignore[attr-defined]
        async with saver.lock:  # type: ignore[attr-defined]
            if checkpoint_id is None:
                await conn.execute("DELETE FROM checkpoints WHERE thread_id = ?", (thread_id,))
                await conn.execute("DELETE FROM writes WHERE thread_id = ?", (thread_id,))
            else:
                await conn.execute(
                    "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_id > ?", (thread_id, checkpoint_id)
                )
                await conn.execute(
                    "DELETE FROM writes WHERE thread_id = ? AND checkpoint_id >= ?", (thread_id, checkpoint_id)
                )
            await conn.commit()
        return
    if name in ("AsyncPostgresSaver", "PooledPostgresSaver"):
        if checkpoint_id is None:
            await saver.adelete_thread(thread_id)
            return
        async with saver.conn.connection() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                "DELETE FROM checkpoints WHERE thread_id = %s AND checkpoint_id > %s", (thread_id, checkpoint_id)
            )
            await conn.execute(
                "DELETE FROM checkpoint_writes WHERE thread_id = %s AND checkpoint_id >= %s", (thread_id, checkpoint_id)
            )
        return
    raise NotImplementedError(f"rollback is not supported for {name}")
