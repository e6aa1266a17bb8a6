"""Versioned schema for the server's own tables. Append a new entry; never edit an applied one."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from interlock.kernel.database import Database
from interlock.kernel.metadata_index import INDEXED_METADATA_KEYS, indexed_expression
from interlock.kernel.settings import is_postgres, sqlite_path

# pg_advisory_lock key shared by every Interlock process on a database: schema migrations and LangGraph's
# checkpointer/store setup run one process at a time (their CREATE ... IF NOT EXISTS statements race otherwise).
SETUP_LOCK_KEY = 727274

# A migration is portable SQL, or {"common": ..., "sqlite": ..., "postgres": ...} for dialect-specific parts.
MIGRATIONS: list[tuple[int, str | dict[str, str]]] = [
    (
        1,
        """
        CREATE TABLE IF NOT EXISTS assistants (
            assistant_id TEXT PRIMARY KEY,
            graph_id TEXT NOT NULL,
            name TEXT NOT NULL,
            description TEXT,
            config TEXT NOT NULL,
            context TEXT NOT NULL,
            metadata TEXT NOT NULL,
            version INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS assistant_versions (
            assistant_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            graph_id TEXT NOT NULL,
            name TEXT NOT NULL,
            description TEXT,
            config TEXT NOT NULL,
            context TEXT NOT NULL,
            metadata TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (assistant_id, version)
        );
        CREATE TABLE IF NOT EXISTS threads (
            thread_id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            state_updated_at TEXT,
            metadata TEXT NOT NULL,
            status TEXT NOT NULL,
            state_values TEXT,
            interrupts TEXT NOT NULL,
            config TEXT NOT NULL,
            error TEXT,
            expires_at TEXT,
            ttl TEXT
        );
        CREATE INDEX IF NOT EXISTS threads_updated ON threads (updated_at);
        CREATE TABLE IF NOT EXISTS runs (
            run_id TEXT PRIMARY KEY,
            thread_id TEXT NOT NULL,
            assistant_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            status TEXT NOT NULL,
            metadata TEXT NOT NULL,
            kwargs TEXT NOT NULL,
            multitask_strategy TEXT NOT NULL,
            available_at TEXT NOT NULL,
            claimed_by TEXT,
            attempt INTEGER NOT NULL DEFAULT 0,
            temporary INTEGER NOT NULL DEFAULT 0,
            checkpoint_before TEXT,
            cancel_action TEXT
        );
        CREATE INDEX IF NOT EXISTS runs_thread ON runs (thread_id, created_at);
        CREATE INDEX IF NOT EXISTS runs_queue ON runs (status, available_at);
        CREATE TABLE IF NOT EXISTS crons (
            cron_id TEXT PRIMARY KEY,
            assistant_id TEXT NOT NULL,
            thread_id TEXT,
            schedule TEXT NOT NULL,
            timezone TEXT,
            payload TEXT NOT NULL,
            metadata TEXT NOT NULL,
            enabled INTEGER NOT NULL,
            end_time TEXT,
            next_run_date TEXT,
            on_run_completed TEXT,
            user_id TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS crons_due ON crons (enabled, next_run_date);
        """,
    ),
    (
        2,
        """
        CREATE TABLE IF NOT EXISTS run_traces (
            run_id TEXT PRIMARY KEY,
            thread_id TEXT NOT NULL,
            graph_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            trace TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS run_traces_thread ON run_traces (thread_id, created_at);
        """,
    ),
    (
        3,
        # The principal a cron runs as (identity, tenant, permissions), recorded when it was created.
        "ALTER TABLE crons ADD COLUMN principal TEXT",
    ),
    (
        4,
        # Indexes for every query shape the API offers (tests/server/test_server_query_plans.py checks the plans).
        {
            "common": """
            CREATE INDEX IF NOT EXISTS threads_updated_id ON threads (updated_at, thread_id);
            DROP INDEX IF EXISTS threads_updated;
            CREATE INDEX IF NOT EXISTS threads_created_id ON threads (created_at, thread_id);
            CREATE INDEX IF NOT EXISTS threads_state_updated_id ON threads (state_updated_at, thread_id);
            CREATE INDEX IF NOT EXISTS threads_status_updated_id ON threads (status, updated_at, thread_id);
            CREATE INDEX IF NOT EXISTS threads_expires ON threads (expires_at) WHERE expires_at IS NOT NULL;
            CREATE INDEX IF NOT EXISTS runs_thread_created ON runs (thread_id, created_at, run_id);
            DROP INDEX IF EXISTS runs_thread;
            CREATE INDEX IF NOT EXISTS runs_running ON runs (thread_id) WHERE status = 'running';
            """,
            # One composite index per filtered metadata key, ending in the search order so a filtered page
            # needs no sort (see storage/metadata_index.py for the keys and why the path is literal).
            "sqlite": "".join(
                f"CREATE INDEX IF NOT EXISTS threads_meta_{key} ON threads "
                f"({indexed_expression('metadata', key)}, updated_at, thread_id);"
                for key in INDEXED_METADATA_KEYS
            ),
            "postgres": """
            CREATE INDEX IF NOT EXISTS threads_metadata_gin ON threads USING GIN ((metadata::jsonb));
            """,
        },
    ),
]


@asynccontextmanager
async def setup_lock(url: str, wait_seconds: float = 60.0) -> AsyncIterator[None]:
    """Hold the database-wide setup lock: setup reads a version, then writes (LangGraph's store inserts its
    migration rows), so two processes starting together on one database must take turns.

    PostgreSQL: a session lock on its own connection, so it spans statements that run on pooled connections and is
    released if this process dies mid-setup. SQLite (`serve --workers N`): an exclusive lock on a file beside the
    database, released by the operating system if this process dies.
    """
    if not is_postgres(url):
        async with _file_lock(url, wait_seconds):
            yield
        return
    import psycopg

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=10)
    try:
        # Poll rather than block in pg_advisory_lock: a waiter sitting in a statement holds a snapshot, and the
        # holder's CREATE INDEX CONCURRENTLY (LangGraph's setup) waits for every such snapshot: a deadlock.
        async def try_lock() -> bool:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", [SETUP_LOCK_KEY])
            row = await cur.fetchone()
            return bool(row and row[0])

        await _poll(try_lock, wait_seconds, interval=0.1)
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", [SETUP_LOCK_KEY])
    finally:
        await conn.close()


@asynccontextmanager
async def _file_lock(url: str, wait_seconds: float) -> AsyncIterator[None]:
    path = sqlite_path(url)
    if not path or path == ":memory:":  # private to this process: nobody to wait for
        yield
        return
    # Polled, not blocking: a blocking flock would stall the event loop of a process that is also serving.
    fd = os.open(f"{path}.setup-lock", os.O_RDWR | os.O_CREAT, 0o600)

    async def try_lock() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    try:
        await _poll(try_lock, wait_seconds, interval=0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


async def _poll(try_lock: Callable[[], Awaitable[bool]], wait_seconds: float, *, interval: float) -> None:
    """Try the setup lock every `interval` until it is held; TimeoutError after `wait_seconds`."""
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while not await try_lock():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"another process held the database setup lock for over {wait_seconds:.0f}s")
        await asyncio.sleep(interval)


def _statements(sql: str | dict[str, str], dialect: str) -> list[str]:
    parts = [sql] if isinstance(sql, str) else [sql.get("common", ""), sql.get(dialect, "")]
    return [s.strip() for part in parts for s in part.split(";") if s.strip()]


async def migrate(db: Database) -> int:
    """Apply pending migrations; returns the schema version. Call it inside `setup_lock` (several replicas may
    start at once)."""
    await db.executescript(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    async with db.transaction() as tx:
        rows = await tx.fetchall("SELECT version FROM schema_migrations")
        applied = {r["version"] for r in rows}
        for version, sql in MIGRATIONS:
            if version in applied:
                continue
            for statement in _statements(sql, db.dialect):
                await tx.execute(statement)
            await tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                [version, datetime.now(UTC).isoformat()],
            )
    return MIGRATIONS[-1][0]
