"""Queue and dispatch: claim due runs up to the concurrency limit, woken on submit (no polling floor) and at
the next scheduled run's due time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from interlock.server import clock
from interlock.server.engine.inflight import Inflight
from interlock.server.engine.job import RunJob
from interlock.server.runs import Runs

log = logging.getLogger("interlock.engine")


class RunQueue:
    def __init__(
        self,
        runs: Runs,
        inflight: Inflight,
        execute: Callable[[RunJob], Awaitable[None]],
        *,
        worker_id: str,
        concurrency: int,
        poll_seconds: float,
    ) -> None:
        self.runs = runs
        self.inflight = inflight
        self.execute = execute
        self.worker_id = worker_id
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def dispatch(self) -> None:
        while True:
            try:
                while len(self.inflight.tasks) < self.concurrency:
                    row = await self.runs.claim(self.worker_id)
                    if row is None:
                        break
                    self._launch(RunJob.from_row(row))
                timeout = self.poll_seconds
                due = await self.runs.next_due()
                if due:
                    delta = (datetime.fromisoformat(due) - clock.now()).total_seconds()
                    timeout = max(0.0, min(timeout, delta))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep the queue alive through transient DB errors
                log.exception("run dispatch failed; retrying")
                timeout = self.poll_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    def _launch(self, job: RunJob) -> None:
        run_id = job.run_id
        self.inflight.finished.setdefault(run_id, asyncio.Event())
        task = asyncio.create_task(self.execute(job), name=f"run-{run_id}")
        self.inflight.tasks[run_id] = task

        def _done(_: asyncio.Task[None]) -> None:
            self.inflight.tasks.pop(run_id, None)
            self.inflight.mark_finished(run_id)
            self.wake()

        task.add_done_callback(_done)
