"""Run records: creation, queue claims, status transitions. The engine executes them."""

from __future__ import annotations

from typing import Any

from interlock.server import clock
from interlock.server.errors import NotFound
from interlock.server.serialization import dumps_str, loads
from interlock.server.storage import Database

COLUMNS = (
    "run_id, thread_id, assistant_id, created_at, updated_at, status, metadata, kwargs, multitask_strategy, "
    "available_at, claimed_by, attempt, temporary, checkpoint_before, cancel_action"
)
ACTIVE = ("pending", "running")
TERMINAL = ("success", "error", "timeout", "interrupted")


def run_out(row: dict[str, Any]) -> dict[str, Any]:
    kwargs = loads(row["kwargs"]) or {}
    kwargs.pop("user", None)  # the caller's identity is not echoed back
    return {
        "run_id": row["run_id"],
        "thread_id": row["thread_id"],
        "assistant_id": row["assistant_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "status": row["status"],
        "metadata": loads(row["metadata"]) or {},
        "kwargs": kwargs,
        "multitask_strategy": row["multitask_strategy"],
    }


# Whether the run's thread has never had a state recorded: created with no values and never written since (every
# server path that writes checkpoints - a run's end, update_state, copy, supersteps - records the thread's state,
# which moves state_updated_at). Such a thread has no checkpoint, so a run's first attempt need not look for one.
FRESH_THREAD = (
    "(SELECT t.state_values IS NULL AND t.state_updated_at = t.created_at FROM threads t "
    "WHERE t.thread_id = runs.thread_id) AS fresh_thread"
)
NEXT_DUE: tuple[str, list[Any]] = ("SELECT MIN(available_at) AS t FROM runs WHERE status = 'pending'", [])


class Runs:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.last_next_due: str | None = None

    @staticmethod
    def insert_statement(
        *,
        run_id: str,
        thread_id: str,
        assistant_id: str,
        metadata: dict[str, Any],
        kwargs: dict[str, Any],
        multitask_strategy: str,
        after_seconds: float | None,
        temporary: int,
        affinity: str | None = None,
    ) -> tuple[str, list[Any]]:
        """The INSERT ... RETURNING of a new pending run, for `insert` or a `Database.batch`."""
        ts = clock.iso()
        available = clock.iso_in(after_seconds) if after_seconds else ts
        return (
            f"INSERT INTO runs ({COLUMNS}) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, 0, ?, NULL, NULL) "
            f"RETURNING {COLUMNS}",
            [
                run_id,
                thread_id,
                assistant_id,
                ts,
                ts,
                dumps_str(metadata),
                dumps_str(kwargs),
                multitask_strategy,
                available,
                affinity,
                int(temporary),
            ],
        )

    async def insert(self, *, tx: Any = None, **fields: Any) -> dict[str, Any]:
        rows = await (tx or self.db).fetchall(*self.insert_statement(**fields))
        return rows[0]

    async def find(self, run_id: str) -> dict[str, Any] | None:
        return await self.db.fetchone(f"SELECT {COLUMNS} FROM runs WHERE run_id = ?", [run_id])

    async def get(self, thread_id: str | None, run_id: str) -> dict[str, Any]:
        row = await self.find(run_id)
        if row is None or (thread_id is not None and row["thread_id"] != thread_id):
            raise NotFound(f"Run {run_id} not found")
        return row

    async def list(self, thread_id: str, *, limit: int, offset: int, status: str | None) -> list[dict[str, Any]]:
        clauses = ["thread_id = ?"]
        params: list[Any] = [thread_id]
        if status:
            clauses.append("status = ?")
            params.append(status)
        return await self.db.fetchall(
            f"SELECT {COLUMNS} FROM runs WHERE {' AND '.join(clauses)} ORDER BY created_at DESC, run_id DESC "
            "LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )

    async def active_for_thread(self, thread_id: str, *, tx: Any = None) -> list[dict[str, Any]]:
        return await (tx or self.db).fetchall(
            f"SELECT {COLUMNS} FROM runs WHERE thread_id = ? AND status IN ('pending', 'running') ORDER BY created_at",
            [thread_id],
        )

    async def active_among(self, run_ids: list[str]) -> set[str]:
        """Which of `run_ids` are pending or running (one query per 500 ids)."""
        active: set[str] = set()
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            rows = await self.db.fetchall(
                f"SELECT run_id FROM runs WHERE run_id IN ({marks}) AND status IN ('pending', 'running')", chunk
            )
            active.update(r["run_id"] for r in rows)
        return active

    async def delete(self, run_id: str) -> None:
        await self.db.execute("DELETE FROM runs WHERE run_id = ?", [run_id])

    @staticmethod
    def status_statement(run_id: str, status: str) -> tuple[str, list[Any]]:
        return "UPDATE runs SET status = ?, updated_at = ? WHERE run_id = ?", [status, clock.iso(), run_id]

    async def set_status(self, run_id: str, status: str, *, tx: Any = None) -> None:
        await (tx or self.db).execute(*self.status_statement(run_id, status))

    async def cancel_pending(self, run_id: str, action: str) -> bool:
        """Cancel a run still queued: rollback deletes it, interrupt marks it. False when it was claimed meanwhile."""
        if action == "rollback":
            return bool(await self.db.execute("DELETE FROM runs WHERE run_id = ? AND status = 'pending'", [run_id]))
        return bool(
            await self.db.execute(
                "UPDATE runs SET status = 'interrupted', updated_at = ? WHERE run_id = ? AND status = 'pending'",
                [clock.iso(), run_id],
            )
        )

    async def ids_with_status(self, statuses: tuple[str, ...]) -> list[str]:
        marks = ", ".join("?" for _ in statuses)
        rows = await self.db.fetchall(f"SELECT run_id FROM runs WHERE status IN ({marks})", list(statuses))
        return [r["run_id"] for r in rows]

    async def request_cancel(self, run_id: str, action: str) -> None:
        await self.db.execute("UPDATE runs SET cancel_action = ? WHERE run_id = ?", [action, run_id])

    async def claim(
        self, worker_id: str, *, known_due: bool = False, then_next_due: bool = False
    ) -> dict[str, Any] | None:
        """Take the oldest due pending run whose thread has nothing running (see `claim_many`)."""
        claimed = await self.claim_many(worker_id, 1, known_due=known_due, then_next_due=then_next_due)
        return claimed[0] if claimed else None

    async def claim_many(
        self, worker_id: str, limit: int, *, known_due: bool = False, then_next_due: bool = False
    ) -> list[dict[str, Any]]:
        """Take up to `limit` of the oldest due pending runs whose threads have nothing running, at most one per
        thread, in one transaction. Atomic across replicas.

        A run created by a streaming or waiting request carries its replica's id as an affinity hint, so the
        replica holding the client connection executes it; other replicas take it only if it lingers.
        `known_due`: the caller has just read (next_due) that a pending run is due, so skip the idle check.
        `then_next_due`: also read, in the same round trip, what `next_due` would answer after the claim (left in
        `last_next_due`; unchanged when no run could be picked).
        """
        now = clock.iso()
        affinity_expired = clock.iso_in(-2.0)
        # Look for work with a plain read before taking the write lock (BEGIN IMMEDIATE on SQLite), so an idle
        # server never contends with other writers.
        if not known_due and not await self.db.fetchone(
            "SELECT 1 AS x FROM runs WHERE status = 'pending' AND available_at <= ? LIMIT 1", [now]
        ):
            return []
        # Pipelined on PostgreSQL: BEGIN goes with the pick, COMMIT with the claim's writes (two round trips for
        # the whole batch; one claim at a time capped a replica at one run per two round trips).
        async with self.db.transaction(pipelined=True) as tx:
            picked = await tx.fetchall(
                "SELECT run_id, thread_id FROM runs r WHERE status = 'pending' AND available_at <= ? "
                "AND (claimed_by IS NULL OR claimed_by = ? OR created_at < ?) "
                "AND NOT EXISTS (SELECT 1 FROM runs x WHERE x.thread_id = r.thread_id AND x.status = 'running') "
                f"ORDER BY created_at LIMIT ?{self.db.for_update_skip_locked}",
                [now, worker_id, affinity_expired, max(1, limit)],
            )
            if not picked:
                return []
            statements: list[tuple[str, list[Any]]] = []
            if self.db.dialect == "postgres":
                # Two replicas may pick different runs of one thread; the thread lock makes one of them wait, and
                # each claim below (a new snapshot, after the locks) skips a run whose thread already runs one -
                # including one claimed a statement earlier in this batch. Locks in one order: no deadlock.
                for thread_id in sorted({row["thread_id"] for row in picked}):
                    statements.append(("SELECT pg_advisory_xact_lock(hashtext(?))", [thread_id]))
            locks = len(statements)
            for row in picked:
                statements += [
                    (
                        "UPDATE runs SET status = 'running', claimed_by = ?, attempt = attempt + 1, updated_at = ? "
                        "WHERE run_id = ? AND status = 'pending' AND NOT EXISTS (SELECT 1 FROM runs x WHERE "
                        f"x.thread_id = ? AND x.status = 'running') RETURNING {COLUMNS}, {FRESH_THREAD}",
                        [worker_id, now, row["run_id"], row["thread_id"]],
                    ),
                    (
                        "UPDATE threads SET status = 'busy', updated_at = ? WHERE thread_id = ? AND EXISTS "
                        "(SELECT 1 FROM runs WHERE run_id = ? AND status = 'running' AND claimed_by = ?)",
                        [now, row["thread_id"], row["run_id"], worker_id],
                    ),
                ]
            if then_next_due:
                statements.append(NEXT_DUE)
            # None depends on another's result in Python: they travel with the COMMIT.
            deferred = await tx.defer(statements)
        results = await deferred.results()
        if then_next_due:
            self.last_next_due = results.pop()[0]["t"]
        return [rows[0] for rows in results[locks::2] if rows]

    async def next_due(self) -> str | None:
        row = await self.db.fetchone(*NEXT_DUE)
        return row["t"] if row else None

    async def heartbeat(self, run_ids: list[str]) -> list[dict[str, Any]]:
        """Refresh the lease of runs executing here; returns those with a cancel request."""
        if not run_ids:
            return []
        marks = ", ".join("?" for _ in run_ids)
        await self.db.execute(f"UPDATE runs SET updated_at = ? WHERE run_id IN ({marks})", [clock.iso(), *run_ids])
        return await self.db.fetchall(
            f"SELECT run_id, cancel_action FROM runs WHERE run_id IN ({marks}) AND cancel_action IS NOT NULL", run_ids
        )

    async def requeue_orphans(self, stale_before: str | None) -> int:
        """Runs left 'running' by a dead worker go back to the queue; they resume from their last checkpoint."""
        if stale_before is None:
            return await self.db.execute(
                "UPDATE runs SET status = 'pending', claimed_by = NULL WHERE status = 'running'"
            )
        return await self.db.execute(
            "UPDATE runs SET status = 'pending', claimed_by = NULL WHERE status = 'running' AND updated_at < ?",
            [stale_before],
        )

    async def release(self, run_id: str) -> None:
        """Put a run back in the queue (server shutting down mid-run)."""
        await self.db.execute(
            "UPDATE runs SET status = 'pending', claimed_by = NULL, updated_at = ? WHERE run_id = ?",
            [clock.iso(), run_id],
        )

    async def set_checkpoint_before(self, run_id: str, checkpoint_id: str | None) -> None:
        await self.db.execute("UPDATE runs SET checkpoint_before = ? WHERE run_id = ?", [checkpoint_id, run_id])
