"""Cancellation: of a queued run (a guarded status change), of a run executing here (its task is cancelled and
finishes as interrupted or rolled back), or of a run on another replica (a request its lease heartbeat reads);
and waiting for a run to finish wherever it executes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from interlock.server.checkpoints import delete_after
from interlock.server.engine.inflight import Inflight
from interlock.server.engine.job import RunJob
from interlock.server.runs import Runs
from interlock.server.serialization import jsonable
from interlock.server.streams import RunStream, StreamRegistry
from interlock.server.threads import Threads


class ActivePoll:
    """Answers "is this run still pending or running?" for every waiter that asks in the same loop turn with one
    query (waiters re-read on a shared beat, so under load one statement serves them all)."""

    def __init__(self, runs: Runs) -> None:
        self.runs = runs
        self._ids: set[str] = set()
        self._answer: asyncio.Future[set[str]] | None = None

    async def active(self, run_id: str) -> bool:
        self._ids.add(run_id)
        if self._answer is None:
            self._answer = asyncio.get_running_loop().create_future()
            task = asyncio.ensure_future(self._read())
            _reads.add(task)
            task.add_done_callback(_reads.discard)
        answer = self._answer
        return run_id in await asyncio.shield(answer)  # a cancelled waiter must not cancel the others' answer

    async def _read(self) -> None:
        await asyncio.sleep(0)  # the waiters of this turn join the query
        ids, answer = sorted(self._ids), self._answer
        self._ids, self._answer = set(), None
        assert answer is not None
        try:
            answer.set_result(await self.runs.active_among(ids))
        except Exception as exc:  # noqa: BLE001 - every waiter of this turn sees the failure
            answer.set_exception(exc)
            answer.exception()  # retrieved here too: no "never retrieved" warning when every waiter was cancelled


_reads: set[asyncio.Task[None]] = set()


class Cancellation:
    def __init__(
        self,
        runs: Runs,
        threads: Threads,
        streams: StreamRegistry,
        inflight: Inflight,
        *,
        checkpointer: Any,
        ephemeral_checkpointer: Any,
        wake: Callable[[], None],
        poll_seconds: float,
    ) -> None:
        self.runs = runs
        self.threads = threads
        self.streams = streams
        self.inflight = inflight
        self.checkpointer = checkpointer
        self.ephemeral_checkpointer = ephemeral_checkpointer
        self.wake = wake
        self.poll_seconds = poll_seconds
        self._poll = ActivePoll(runs)

    async def cancel(self, run: dict[str, Any], action: str) -> None:
        run_id = run["run_id"]
        if run["status"] == "pending":
            if not await self.runs.cancel_pending(run_id, action):
                # Claimed between our read and this write: cancel it as a running run.
                current = await self.runs.find(run_id)
                if current is not None and current["status"] == "running":
                    await self.cancel(current, action)
                return
            stream = self.streams.get(run_id)
            if stream is not None:
                stream.close()
            self.inflight.mark_finished(run_id)
            await self.settle_thread_status(run["thread_id"])
            self.wake()
            return
        if not self.inflight.interrupt(run_id, action):
            await self.runs.request_cancel(run_id, action)

    async def cancel_if_active(self, run_id: str) -> None:
        row = await self.runs.find(run_id)
        if row is not None and row["status"] in ("pending", "running"):
            await self.cancel(row, "interrupt")

    async def wait_finished(self, run_id: str, *, pending: asyncio.Event | None = None) -> None:
        """Until the run is no longer pending or running, whether it executes here or on another replica.

        `pending`: the completion event registered (`expect_finish`) when this process created the run; the run
        is known to have been pending then, so the first read of it is skipped. The periodic re-reads (for a run
        another replica executes or cancels) happen on a shared beat, so all the waits of this process cost one
        query per beat rather than one each."""
        event = pending or self.inflight.finished.setdefault(run_id, asyncio.Event())
        known_pending = pending is not None
        try:
            while True:
                if event.is_set():
                    return
                if not known_pending and not await self._poll.active(run_id):
                    return
                known_pending = False
                if run_id in self.inflight.tasks:
                    await event.wait()  # executing here: its task sets the event when it ends, no need to poll
                    return
                # Woken at once when it finishes here; the periodic re-read covers other replicas.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), self._until_beat())
                if event.is_set():
                    return
        finally:
            if run_id not in self.inflight.tasks and self.inflight.finished.get(run_id) is event and not event.is_set():
                self.inflight.finished.pop(run_id, None)

    def _until_beat(self) -> float:
        """Seconds to the next shared poll beat, at least half a poll interval away."""
        wait = self.poll_seconds - (time.monotonic() % self.poll_seconds)
        return wait + self.poll_seconds if wait < self.poll_seconds / 2 else wait

    def expect_finish(self, run_id: str) -> asyncio.Event:
        """Register, before the run can be claimed, the event its end here sets (for `wait_finished(pending=)`)."""
        return self.inflight.finished.setdefault(run_id, asyncio.Event())

    async def settle_thread_status(self, thread_id: str) -> None:
        if await self.runs.active_for_thread(thread_id):
            return
        thread = await self.threads.find(thread_id)
        if thread is not None and thread["status"] == "busy":
            await self.threads.set_status(thread_id, "interrupted" if thread["interrupts"] else "idle")

    async def finish_cancelled(self, job: RunJob, action: str, stream: RunStream, graph: Any) -> None:
        """Record a run whose task was cancelled here: interrupted, or (rollback) erased with its checkpoints."""
        run_id, thread_id = job.run_id, job.thread_id
        try:
            if job.ephemeral:
                await self.ephemeral_checkpointer.adelete_thread(thread_id)
                await self.runs.delete(run_id)
                return
            if action == "rollback":
                row = await self.runs.find(run_id)
                await delete_after(self.checkpointer, thread_id, row["checkpoint_before"] if row else None)
                await self.runs.delete(run_id)
            else:
                await self.runs.set_status(run_id, "interrupted")
            snapshot = None
            if graph is not None:
                with contextlib.suppress(Exception):
                    snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
            values = jsonable(snapshot.values) if snapshot is not None else None
            stream.result = values
            await self.threads.record_state(
                thread_id,
                status="busy" if await self.runs.active_for_thread(thread_id) else "idle",
                values=values,
                interrupts={},
            )
        finally:
            stream.close()
