"""Leases and recovery: runs executing here refresh their lease; runs whose worker died (lease expired, or any
run left running when a single-process server restarts) go back to the queue and resume from their last
checkpoint; cancel requests written by other replicas reach the task running the run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from interlock.server import clock
from interlock.server.engine.inflight import Inflight
from interlock.server.runs import Runs
from interlock.server.threads import Threads

log = logging.getLogger("interlock.engine")


class Leases:
    def __init__(
        self,
        runs: Runs,
        threads: Threads,
        inflight: Inflight,
        *,
        lease_seconds: float,
        single_process: bool,
        wake: Callable[[], None],
        delete_thread: Callable[[str], Awaitable[None]],
    ) -> None:
        self.runs = runs
        self.threads = threads
        self.inflight = inflight
        self.lease_seconds = lease_seconds
        self.single_process = single_process
        self.wake = wake
        self.delete_thread = delete_thread

    def _stale_before(self) -> str:
        return clock.iso(clock.now() - timedelta(seconds=self.lease_seconds))

    async def recover(self) -> None:
        """At start: with no other process sharing the database, every running run is an orphan."""
        requeued = await self.runs.requeue_orphans(None if self.single_process else self._stale_before())
        if requeued:
            log.info("requeued %d run(s) left running by a previous server", requeued)

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.lease_seconds / 3))
            try:
                for row in await self.runs.heartbeat(list(self.inflight.tasks)):
                    self.inflight.interrupt(row["run_id"], row["cancel_action"])
                if not self.single_process and await self.runs.requeue_orphans(self._stale_before()):
                    self.wake()
                for thread_id in await self.threads.expired():
                    await self.delete_thread(thread_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("heartbeat failed")
