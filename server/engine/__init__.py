"""The run engine: a queue woken on submit (no polling floor), bounded concurrency, cancellation that reaches a
running graph, persisted status transitions, and restart safety (runs left pending or running resume from their
last checkpoint when the server starts again).

By concern: `queue` (claim and dispatch), `leases` (heartbeat and recovery), `cancellation`, `execution` (one
attempt of a run), `stream_modes` (API stream modes from LangGraph's stream) and `job` (the typed run)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from typing import Any

from interlock.server.assistants import Assistants
from interlock.server.engine.cancellation import Cancellation
from interlock.server.engine.execution import RunExecutor, RunFailed
from interlock.server.engine.inflight import Inflight
from interlock.server.engine.job import EPHEMERAL, RunJob, RunOptions, build_command, run_tenant
from interlock.server.engine.leases import Leases
from interlock.server.engine.queue import RunQueue
from interlock.server.project import Project
from interlock.server.runs import Runs
from interlock.server.streams import StreamRegistry
from interlock.server.threads import Threads
from interlock.server.traces import Traces
from langgraph.checkpoint.memory import InMemorySaver

from interlock.kernel.settings import get_settings

__all__ = ["EPHEMERAL", "Engine", "RunFailed", "RunJob", "RunOptions", "build_command", "run_tenant"]


class Engine:
    """Wires the engine's parts together and is what the API and the app's lifespan talk to."""

    def __init__(
        self,
        *,
        runs: Runs,
        threads: Threads,
        assistants: Assistants,
        project: Project,
        checkpointer: Any,
        store: Any,
        streams: StreamRegistry,
        concurrency: int = 10,
        single_process: bool = True,
        traces: Traces | None = None,
        on_trace: Any = None,
        webhooks: Any = None,
    ) -> None:
        self.runs = runs
        self.threads = threads
        self.checkpointer = checkpointer
        self.traces = traces
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        poll_seconds = get_settings().queue_poll_seconds
        lease_seconds = get_settings().run_lease_seconds
        # Stateless runs whose thread is deleted on completion never need durable checkpoints.
        self.ephemeral_checkpointer = InMemorySaver()
        self.inflight = Inflight()
        self.cancellation = Cancellation(
            runs,
            threads,
            streams,
            self.inflight,
            checkpointer=checkpointer,
            ephemeral_checkpointer=self.ephemeral_checkpointer,
            wake=self.wake,
            poll_seconds=poll_seconds,
        )
        self.executor = RunExecutor(
            runs=runs,
            threads=threads,
            assistants=assistants,
            project=project,
            checkpointer=checkpointer,
            ephemeral_checkpointer=self.ephemeral_checkpointer,
            store=store,
            streams=streams,
            inflight=self.inflight,
            cancellation=self.cancellation,
            traces=traces,
            on_trace=on_trace,
            webhooks=webhooks,
        )
        self.queue = RunQueue(
            runs,
            self.inflight,
            self.executor.execute,
            worker_id=self.worker_id,
            concurrency=concurrency,
            poll_seconds=poll_seconds,
        )
        self.leases = Leases(
            runs,
            threads,
            self.inflight,
            lease_seconds=lease_seconds,
            single_process=single_process,
            wake=self.wake,
            delete_thread=self.delete_thread,
        )
        self._background: list[asyncio.Task[None]] = []

    @property
    def running(self) -> int:
        """Runs executing in this process."""
        return len(self.inflight.tasks)

    async def start(self) -> None:
        await self.leases.recover()
        self._background = [
            asyncio.create_task(self.queue.dispatch(), name="interlock-dispatch"),
            asyncio.create_task(self.leases.heartbeat(), name="interlock-heartbeat"),
        ]

    async def stop(self) -> None:
        """Stop claiming; runs executing here go back to the queue (another replica or the next start resumes them)."""
        for task in self._background:
            task.cancel()
        for run_id in list(self.inflight.tasks):
            self.inflight.interrupt(run_id, "shutdown")
        await asyncio.gather(*self._background, *self.inflight.tasks.values(), return_exceptions=True)

    def wake(self) -> None:
        self.queue.wake()

    def submitted(self, *, due_now: bool) -> None:
        """A run was created here (`due_now`: not scheduled for later)."""
        if due_now:
            self.queue.submitted()
        else:
            self.queue.wake()

    def hint_assistant(self, run_id: str, assistant: dict[str, Any]) -> None:
        self.executor.hint_assistant(run_id, assistant)

    async def cancel(self, run: dict[str, Any], action: str) -> None:
        await self.cancellation.cancel(run, action)

    async def cancel_if_active(self, run_id: str) -> None:
        await self.cancellation.cancel_if_active(run_id)

    async def wait_finished(self, run_id: str, *, pending: asyncio.Event | None = None) -> None:
        await self.cancellation.wait_finished(run_id, pending=pending)

    def expect_finish(self, run_id: str) -> asyncio.Event:
        return self.cancellation.expect_finish(run_id)

    async def delete_thread(self, thread_id: str) -> None:
        for run in await self.runs.active_for_thread(thread_id):
            await self.cancel(run, "interrupt")
        await self.checkpointer.adelete_thread(thread_id)
        if self.traces is not None:
            await self.traces.delete_thread(thread_id)
        await self.threads.delete(thread_id)
