"""Queue and dispatch: claim due runs up to the concurrency limit, woken on submit (no polling floor) and at
the next scheduled run's due time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from interlock.server import clock
from interlock.server.engine.inflight import Inflight
from interlock.server.engine.job import RunJob
from interlock.server.runs import Runs

log = logging.getLogger("interlock.engine")

# How soon a due run that could not be claimed (thread busy, another replica's fresh affinity) is looked at again.
BLOCKED_RECHECK_SECONDS = 0.1


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
        self._dirty = True
        self._submitted = False

    def wake(self) -> None:
        """Something may have become due (a submit, a requeue, a cancel): the next pass reads the queue."""
        self._dirty = True
        self._wake.set()

    def submitted(self) -> None:
        """A run was submitted here, due now: the next pass claims without first reading whether one is due
        (the claim reads the next due time anyway; one round trip fewer per submit on PostgreSQL)."""
        self._submitted = True
        self._wake.set()

    def _capacity_freed(self) -> None:
        """A run ended here: a queued run may now be claimable (its thread is free, or there is room), which the
        next pass reads only if the queue was last known to hold pending runs."""
        self._wake.set()

    async def dispatch(self) -> None:
        due: str | None = None
        read = True
        while True:
            timeout = self.poll_seconds
            try:
                # One read per wake-up answers both "is anything due?" and "when is the next one due?"; a claim
                # reads the next due time in its own round trip. A run ending here with nothing known pending
                # costs no read (other replicas' submits are found by the poll).
                if self._submitted and not (read or self._dirty):
                    due = clock.iso()
                elif read or self._dirty or due is not None:
                    due = await self.runs.next_due()
                self._dirty = self._submitted = False
                blocked = False
                while due is not None and self._is_due(due) and len(self.inflight.tasks) < self.concurrency:
                    # As many as there is room for, in one transaction.
                    rows = await self.runs.claim_many(
                        self.worker_id, self.concurrency - len(self.inflight.tasks), known_due=True, then_next_due=True
                    )
                    if not rows:
                        blocked = True
                        break
                    for row in rows:
                        self._launch(RunJob.from_row(row))
                    due = self.runs.last_next_due
                if due is not None:
                    delta = (datetime.fromisoformat(due) - clock.now()).total_seconds()
                    if delta > 0:
                        timeout = min(timeout, delta)
                    elif blocked:
                        # Due but not ours to take yet (its thread has a run executing, or another replica's
                        # affinity hint is fresh): look again shortly instead of at once. Local completions wake
                        # the loop anyway; rechecking at once spun on the database while a run was queued.
                        timeout = min(timeout, BLOCKED_RECHECK_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep the queue alive through transient DB errors
                log.exception("run dispatch failed; retrying")
                timeout = self.poll_seconds
                due = None
                self._dirty = True
            read = False
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                read = True  # the poll: runs submitted to other replicas, or a due time reached
            self._wake.clear()

    @staticmethod
    def _is_due(due: str) -> bool:
        return datetime.fromisoformat(due) <= clock.now()

    def _launch(self, job: RunJob) -> None:
        run_id = job.run_id
        self.inflight.finished.setdefault(run_id, asyncio.Event())
        task = asyncio.create_task(self.execute(job), name=f"run-{run_id}")
        self.inflight.tasks[run_id] = task

        def _done(_: asyncio.Task[None]) -> None:
            self.inflight.tasks.pop(run_id, None)
            self.inflight.mark_finished(run_id)
            self._capacity_freed()

        task.add_done_callback(_done)
