"""Crons: scheduled runs on a thread or stateless, and the scheduler that fires them (claimed atomically, so
several replicas never fire one tick twice)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from interlock.server import clock
from interlock.server.auth import User
from interlock.server.errors import Invalid, NotFound
from interlock.server.serialization import dumps_str, loads
from interlock.server.storage import Database
from interlock.server.storage.filters import where_clause

log = logging.getLogger("interlock.crons")
Visible = Callable[[dict[str, Any]], Awaitable[bool]]
COLUMNS = (
    "cron_id, assistant_id, thread_id, schedule, timezone, payload, metadata, enabled, end_time, next_run_date, "
    "on_run_completed, user_id, created_at, updated_at, principal"
)


def next_run(schedule: str, timezone: str | None, after: datetime | None = None) -> datetime:
    if not croniter.is_valid(schedule):
        raise Invalid(f"invalid cron schedule {schedule!r}")
    try:
        tz = ZoneInfo(timezone) if timezone else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"unknown timezone {timezone!r}") from None
    base = (after or clock.now()).astimezone(tz)
    return croniter(schedule, base).get_next(datetime).astimezone(clock.now().tzinfo)


def cron_out(row: dict[str, Any]) -> dict[str, Any]:
    payload = loads(row["payload"]) or {}
    return {
        "cron_id": row["cron_id"],
        "assistant_id": row["assistant_id"],
        "thread_id": row["thread_id"],
        "schedule": row["schedule"],
        "timezone": row["timezone"],
        "payload": payload,
        "metadata": loads(row["metadata"]) or {},
        "enabled": bool(row["enabled"]),
        "end_time": row["end_time"],
        "next_run_date": row["next_run_date"],
        "on_run_completed": row["on_run_completed"],
        "user_id": row["user_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def cron_row(row: dict[str, Any]) -> dict[str, Any]:
    """The API shape plus the recorded principal, which authorization and the scheduler read (never returned)."""
    return {**cron_out(row), "principal": loads(row["principal"]) if row.get("principal") else None}


PAYLOAD_FIELDS = (
    "input",
    "config",
    "context",
    "interrupt_before",
    "interrupt_after",
    "multitask_strategy",
    "stream_mode",
    "stream_subgraphs",
    "stream_resumable",
    "durability",
    "checkpoint_during",
    "webhook",
)


class Crons:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, *, assistant_id: str, thread_id: str | None, body: Any, user: User, metadata: dict[str, Any]
    ) -> dict[str, Any]:
        enabled = True if body.enabled is None else body.enabled
        nxt = next_run(body.schedule, body.timezone)
        payload = {k: getattr(body, k) for k in PAYLOAD_FIELDS if getattr(body, k, None) is not None}
        ts = clock.iso()
        rows = await self.db.fetchall(
            f"INSERT INTO crons ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}",
            [
                clock.new_id(),
                assistant_id,
                thread_id,
                body.schedule,
                body.timezone,
                dumps_str(payload),
                dumps_str(metadata),
                1 if enabled else 0,
                body.end_time,
                nxt.isoformat(),
                getattr(body, "on_run_completed", None) or ("delete" if thread_id is None else None),
                user.identity if user.is_authenticated else None,
                ts,
                ts,
                dumps_str(user.dict()) if user.is_authenticated else None,
            ],
        )
        return cron_out(rows[0])

    async def find(self, cron_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone(f"SELECT {COLUMNS} FROM crons WHERE cron_id = ?", [cron_id])
        return cron_row(row) if row else None

    async def get(self, cron_id: str) -> dict[str, Any]:
        row = await self.db.fetchone(f"SELECT {COLUMNS} FROM crons WHERE cron_id = ?", [cron_id])
        if row is None:
            raise NotFound(f"Cron {cron_id} not found")
        return cron_out(row)

    async def unowned(self) -> int:
        """Enabled crons without a recorded principal: they cannot run on a server with auth configured."""
        row = await self.db.fetchone("SELECT COUNT(*) AS n FROM crons WHERE enabled = 1 AND principal IS NULL")
        return int(row["n"]) if row else 0

    async def patch(self, cron_id: str, body: Any) -> dict[str, Any]:
        current = await self.get(cron_id)
        fields = body.model_dump(exclude_unset=True, exclude_none=True)
        payload = {**current["payload"], **{k: v for k, v in fields.items() if k in PAYLOAD_FIELDS}}
        schedule = fields.get("schedule", current["schedule"])
        timezone = fields.get("timezone", current["timezone"])
        enabled = fields.get("enabled", current["enabled"])
        nxt = next_run(schedule, timezone).isoformat()
        await self.db.execute(
            "UPDATE crons SET schedule = ?, timezone = ?, payload = ?, metadata = ?, enabled = ?, end_time = ?, "
            "next_run_date = ?, on_run_completed = ?, updated_at = ? WHERE cron_id = ?",
            [
                schedule,
                timezone,
                dumps_str(payload),
                dumps_str({**current["metadata"], **(fields.get("metadata") or {})}),
                1 if enabled else 0,
                fields.get("end_time", current["end_time"]),
                nxt,
                fields.get("on_run_completed", current["on_run_completed"]),
                clock.iso(),
                cron_id,
            ],
        )
        return await self.get(cron_id)

    async def delete(self, cron_id: str) -> None:
        await self.get(cron_id)
        await self.db.execute("DELETE FROM crons WHERE cron_id = ?", [cron_id])

    def _where(self, assistant_id: str | None, thread_id: str | None, enabled: bool | None, metadata: Any) -> tuple[str, list[Any]]:
        return where_clause(
            self.db,
            metadata=metadata,
            equals={
                "assistant_id": assistant_id or None,
                "thread_id": thread_id or None,
                "enabled": None if enabled is None else int(enabled),
            },
        )

    async def _visible(self, body: Any, visible: Visible | None) -> list[dict[str, Any]]:
        where, params = self._where(body.assistant_id, body.thread_id, body.enabled, body.metadata)
        sort_by = getattr(body, "sort_by", None) or "created_at"
        order = "ASC" if (getattr(body, "sort_order", None) or "desc").lower() == "asc" else "DESC"
        rows = await self.db.fetchall(
            f"SELECT {COLUMNS} FROM crons WHERE {where} ORDER BY {sort_by} {order}, cron_id", params
        )
        # Authorization decides per cron (tenant, thread, hook filter), so it filters before paging.
        return [c for c in map(cron_row, rows) if visible is None or await visible(c)]

    async def search(self, body: Any, visible: Visible | None = None) -> list[dict[str, Any]]:
        items = [
            {k: v for k, v in c.items() if k != "principal"}
            for c in (await self._visible(body, visible))[body.offset : body.offset + body.limit]
        ]
        if body.select:
            items = [{k: v for k, v in c.items() if k in body.select} for c in items]
        return items

    async def count(self, body: Any, visible: Visible | None = None) -> int:
        return len(await self._visible(body, visible))

    async def claim_due(self) -> list[dict[str, Any]]:
        """Advance every due cron to its next tick; only the replica whose update wins fires it."""
        now = clock.now()
        rows = await self.db.fetchall(
            f"SELECT {COLUMNS} FROM crons WHERE enabled = 1 AND next_run_date <= ?", [now.isoformat()]
        )
        fired: list[dict[str, Any]] = []
        for row in rows:
            if row["end_time"] and row["end_time"] <= now.isoformat():
                await self.db.execute("UPDATE crons SET enabled = 0 WHERE cron_id = ?", [row["cron_id"]])
                continue
            nxt = next_run(row["schedule"], row["timezone"], now).isoformat()
            won = await self.db.execute(
                "UPDATE crons SET next_run_date = ? WHERE cron_id = ? AND next_run_date = ?",
                [nxt, row["cron_id"], row["next_run_date"]],
            )
            if won:
                fired.append(cron_row(row))
        return fired


class Scheduler:
    """Fires due crons by creating runs, once a second."""

    def __init__(self, crons: Crons, fire: Any, interval: float = 1.0) -> None:
        self.crons = crons
        self.fire = fire
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="interlock-cron-scheduler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                for cron in await self.crons.claim_due():
                    try:
                        await self.fire(cron)
                    except Exception:  # noqa: BLE001 - one bad cron must not stop the others
                        log.exception("cron %s failed to start a run", cron["cron_id"])
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("cron scheduler tick failed")
            await asyncio.sleep(self.interval)
