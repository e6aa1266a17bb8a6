"""Versioned schema for the server's own tables. Append a new entry; never edit an applied one."""

from __future__ import annotations

from datetime import UTC, datetime

from interlock.server.storage.database import Database
from interlock.server.storage.metadata_index import INDEXED_METADATA_KEYS, indexed_expression

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


def _statements(sql: str | dict[str, str], dialect: str) -> list[str]:
    parts = [sql] if isinstance(sql, str) else [sql.get("common", ""), sql.get(dialect, "")]
    return [s.strip() for part in parts for s in part.split(";") if s.strip()]


async def migrate(db: Database) -> int:
    """Apply pending migrations; returns the schema version. Safe to run from several replicas."""
    await db.executescript(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    async with db.transaction() as tx:
        if db.dialect == "postgres":
            # Serialise concurrent starters; released at commit.
            await tx.execute("SELECT pg_advisory_xact_lock(727274)")
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
