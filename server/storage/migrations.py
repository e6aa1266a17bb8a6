"""Versioned schema for the server's own tables. Append a new entry; never edit an applied one."""

from __future__ import annotations

from datetime import UTC, datetime

from interlock.kernel.database import Database

MIGRATIONS: list[tuple[int, str]] = [
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
]


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
            for statement in filter(None, (s.strip() for s in sql.split(";"))):
                await tx.execute(statement)
            await tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                [version, datetime.now(UTC).isoformat()],
            )
    return MIGRATIONS[-1][0]
