"""Threads: records of conversations, their status and a cached copy of their latest state values."""

from __future__ import annotations

import uuid
from typing import Any

from interlock.server import clock
from interlock.server.auth import equality_part, matches
from interlock.server.errors import Conflict, Invalid, NotFound
from interlock.server.serialization import dumps_str, jsonable, loads
from interlock.server.storage import Database
from interlock.server.storage.filters import where_clause

THREAD_COLUMNS = (
    "thread_id, created_at, updated_at, state_updated_at, metadata, status, state_values, interrupts, config, error"
)


def check_uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise Invalid(f"Invalid {what}: must be a UUID") from None


def thread_out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "thread_id": row["thread_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "state_updated_at": row.get("state_updated_at") or row["updated_at"],
        "metadata": loads(row["metadata"]) or {},
        "status": row["status"],
        "values": loads(row.get("state_values")),
        "interrupts": loads(row.get("interrupts")) or {},
        "config": loads(row.get("config")) or {},
        "error": loads(row.get("error")),
    }


def _metadata_patch(extra: dict[str, Any]) -> str:
    """`extra` as the JSON a shallow merge applies; it must hold no nulls (json_patch would delete those keys)."""
    if any(v is None for v in extra.values()):
        raise ValueError("merge_metadata: json_patch would delete keys set to null")
    return dumps_str(extra)


class Threads:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        thread_id: str | None,
        metadata: dict[str, Any] | None,
        if_exists: str | None,
        ttl_minutes: float | None = None,
    ) -> dict[str, Any]:
        thread_id = check_uuid(thread_id, "thread ID") if thread_id else clock.new_id()
        ts = clock.iso()
        expires = clock.iso_in(ttl_minutes * 60) if ttl_minutes else None
        inserted = await self.db.fetchall(
            f"INSERT INTO threads (thread_id, created_at, updated_at, state_updated_at, metadata, status, "
            f"state_values, interrupts, config, error, expires_at) VALUES (?, ?, ?, ?, ?, 'idle', NULL, '{{}}', '{{}}', NULL, ?) "
            f"ON CONFLICT (thread_id) DO NOTHING RETURNING {THREAD_COLUMNS}",
            [thread_id, ts, ts, ts, dumps_str(metadata or {}), expires],
        )
        if inserted:
            return thread_out(inserted[0])
        if if_exists == "do_nothing":
            return await self.get(thread_id)
        raise Conflict(f"Thread {thread_id} already exists")

    async def find(self, thread_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone(f"SELECT {THREAD_COLUMNS} FROM threads WHERE thread_id = ?", [thread_id])
        return thread_out(row) if row else None

    async def find_for_run(
        self, thread_id: str, *, rows: list[dict[str, Any]] | None = None
    ) -> tuple[dict[str, Any] | None, bool]:
        """The thread and whether it has a pending or running run, in one read (a new run's multitask check).
        `rows`: the result of `find_for_run_statement`, already read."""
        if rows is None:
            rows = await self.db.fetchall(*self.find_for_run_statement(thread_id))
        row = rows[0] if rows else None
        return (thread_out(row), bool(row["active"])) if row else (None, False)

    @staticmethod
    def find_for_run_statement(thread_id: str) -> tuple[str, list[Any]]:
        return (
            f"SELECT {THREAD_COLUMNS}, EXISTS (SELECT 1 FROM runs r WHERE r.thread_id = threads.thread_id "
            "AND r.status IN ('pending', 'running')) AS active FROM threads WHERE thread_id = ?",
            [thread_id],
        )

    async def get(self, thread_id: str, auth_filter: dict[str, Any] | None = None) -> dict[str, Any]:
        check_uuid(thread_id, "thread ID")
        thread = await self.find(thread_id)
        if thread is None or not matches(thread["metadata"], auth_filter):
            raise NotFound(f"Thread {thread_id} not found")
        return thread

    async def patch(
        self, thread_id: str, metadata: dict[str, Any] | None, ttl_minutes: float | None = None
    ) -> dict[str, Any]:
        async with self.db.transaction() as tx:
            row = await tx.fetchone("SELECT metadata FROM threads WHERE thread_id = ?", [thread_id])
            if row is None:
                raise NotFound(f"Thread {thread_id} not found")
            merged = {**(loads(row["metadata"]) or {}), **(metadata or {})}
            params: list[Any] = [dumps_str(merged), clock.iso()]
            extra = ""
            if ttl_minutes:
                extra = ", expires_at = ?"
                params.append(clock.iso_in(ttl_minutes * 60))
            await tx.execute(
                f"UPDATE threads SET metadata = ?, updated_at = ?{extra} WHERE thread_id = ?", [*params, thread_id]
            )
        return await self.get(thread_id)

    async def merge_metadata(self, thread_id: str, extra: dict[str, Any]) -> None:
        """Shallow-merge `extra` into the thread's metadata in one statement (no read-modify-write round trips:
        every run on a new thread pays this). `extra` holds no nulls, so json_patch is a plain key merge."""
        await self.db.execute(f"UPDATE threads SET metadata = {self._merged_metadata()} WHERE thread_id = ?",
                              [_metadata_patch(extra), thread_id])

    async def delete(self, thread_id: str) -> bool:
        await self.db.execute("DELETE FROM runs WHERE thread_id = ?", [thread_id])
        return await self.db.execute("DELETE FROM threads WHERE thread_id = ?", [thread_id]) > 0

    def status_statement(
        self, thread_id: str, status: str, merge_metadata: dict[str, Any] | None = None
    ) -> tuple[str, list[Any]]:
        """Set the status (and shallow-merge `merge_metadata`, which holds no nulls, into the metadata)."""
        if not merge_metadata:
            return "UPDATE threads SET status = ?, updated_at = ? WHERE thread_id = ?", [status, clock.iso(), thread_id]
        return (
            f"UPDATE threads SET status = ?, updated_at = ?, metadata = {self._merged_metadata()} WHERE thread_id = ?",
            [status, clock.iso(), _metadata_patch(merge_metadata), thread_id],
        )

    def _merged_metadata(self) -> str:
        return "((metadata)::jsonb || (?)::jsonb)::text" if self.db.dialect == "postgres" else "json_patch(metadata, ?)"

    async def set_status(self, thread_id: str, status: str, *, tx: Any = None) -> None:
        """`tx`: an open transaction to write in (batched with the run's own writes), else autocommit."""
        await (tx or self.db).execute(*self.status_statement(thread_id, status))

    @staticmethod
    def record_state_statement(
        thread_id: str,
        *,
        status: str,
        values: Any,
        interrupts: dict[str, Any],
        error: Any = None,
        config: dict[str, Any] | None = None,
        finished_run: str | None = None,
    ) -> tuple[str, list[Any]]:
        """The UPDATE recording a thread's state. `finished_run`: the run that just ended; the thread stays
        'busy' when another run of it is pending or running (decided in the statement, not by a read first)."""
        ts = clock.iso()
        status_sql, status_params = "?", [status]
        if finished_run is not None:
            status_sql = (
                "CASE WHEN EXISTS (SELECT 1 FROM runs r WHERE r.thread_id = threads.thread_id AND r.run_id <> ? "
                "AND r.status IN ('pending', 'running')) THEN 'busy' ELSE ? END"
            )
            status_params = [finished_run, status]
        return (
            f"UPDATE threads SET status = {status_sql}, state_values = ?, interrupts = ?, error = ?, updated_at = ?, "
            "state_updated_at = ?, config = COALESCE(?, config) WHERE thread_id = ?",
            [
                *status_params,
                dumps_str(values) if values is not None else None,
                dumps_str(interrupts),
                dumps_str(error) if error is not None else None,
                ts,
                ts,
                dumps_str(config) if config is not None else None,
                thread_id,
            ],
        )

    async def record_state(
        self,
        thread_id: str,
        *,
        status: str,
        values: Any,
        interrupts: dict[str, Any],
        error: Any = None,
        config: dict[str, Any] | None = None,
        tx: Any = None,
    ) -> None:
        await (tx or self.db).execute(
            *self.record_state_statement(
                thread_id, status=status, values=values, interrupts=interrupts, error=error, config=config
            )
        )

    def _where(
        self,
        metadata: dict[str, Any] | None,
        values: dict[str, Any] | None,
        status: str | None,
        ids: list[str] | None,
        auth_filter: dict[str, Any] | None,
    ) -> tuple[str, list[Any]]:
        return where_clause(
            self.db,
            metadata=metadata,
            auth_equality=equality_part(auth_filter),
            json_columns={"COALESCE(state_values, '{}')": values},
            equals={"status": status or None},
            any_of={"thread_id": ids},
        )

    async def search(
        self,
        *,
        metadata: dict[str, Any] | None = None,
        values: dict[str, Any] | None = None,
        status: str | None = None,
        ids: list[str] | None = None,
        limit: int = 10,
        offset: int = 0,
        sort_by: str | None = None,
        sort_order: str | None = None,
        auth_filter: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        where, params = self._where(metadata, values, status, ids, auth_filter)
        column = sort_by or "updated_at"
        order = "ASC" if (sort_order or "desc").lower() == "asc" else "DESC"
        rows = await self.db.fetchall(
            f"SELECT {THREAD_COLUMNS} FROM threads WHERE {where} ORDER BY {column} {order}, thread_id {order} "
            f"LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [t for t in map(thread_out, rows) if matches(t["metadata"], auth_filter)]

    async def count(
        self,
        *,
        metadata: dict[str, Any] | None = None,
        values: dict[str, Any] | None = None,
        status: str | None = None,
        auth_filter: dict[str, Any] | None = None,
    ) -> int:
        where, params = self._where(metadata, values, status, None, auth_filter)
        row = await self.db.fetchone(f"SELECT COUNT(*) AS n FROM threads WHERE {where}", params)
        return int(row["n"]) if row else 0

    async def expired(self) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT thread_id FROM threads WHERE expires_at IS NOT NULL AND expires_at < ? AND status != 'busy'",
            [clock.iso()],
        )
        return [r["thread_id"] for r in rows]


def state_values(values: Any) -> Any:
    return jsonable(values)
