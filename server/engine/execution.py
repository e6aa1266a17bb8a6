"""Run execution: one claimed attempt of a run, from config assembly through the graph's stream to the
recorded outcome (run status, thread state, trace, webhook)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from interlock.server.assistants import Assistants
from interlock.server.auth import User
from interlock.server.checkpoints import prime_latest, release_primed
from interlock.server.dependencies import is_connection_error
from interlock.server.engine.cancellation import Cancellation
from interlock.server.engine.inflight import Inflight
from interlock.server.engine.job import RunJob, build_command
from interlock.server.engine.stream_modes import stream_graph
from interlock.server.logs import RUN_CONTEXT
from interlock.server.project import Project, graph_for_run
from interlock.server.runs import Runs, run_out
from interlock.server.serialization import jsonable
from interlock.server.state import interrupt_out, pending_interrupts
from interlock.server.streams import RunStream, StreamRegistry
from interlock.server.threads import Threads
from interlock.server.timeouts import run_retries
from interlock.server.traces import CURRENT_TRACE, Redactor, TraceRecorder, Traces

log = logging.getLogger("interlock.engine")


ASSISTANT_HINTS = 1000
ATTEMPT_ID_SPAN = 1_000_000  # event ids reserved per attempt when no shared copy records the last one


class RunFailed(Exception):
    """A run that cannot start (its assistant or graph is gone)."""


@dataclass
class Attempt:
    """One execution of a run in this process: its SSE log and, once built, its graph (for the final state)."""

    job: RunJob
    stream: RunStream
    graph: Any = None


@dataclass
class Outcome:
    """How an attempt ended; `shutdown` means it went back to the queue (no trace, no webhook)."""

    status: str
    output: Any = None
    trace: dict[str, Any] | None = None  # the trace document, when it was written with the outcome


def run_config(job: RunJob, assistant: dict[str, Any]) -> dict[str, Any]:
    """The RunnableConfig: the assistant's config under the run's, plus the ids, checkpoint and caller."""
    base = assistant.get("config") or {}
    override = job.options.config or {}
    config: dict[str, Any] = {**base, **override}
    configurable = {**(base.get("configurable") or {}), **(override.get("configurable") or {})}
    configurable.update(
        thread_id=job.thread_id, run_id=job.run_id, assistant_id=job.assistant_id, graph_id=assistant["graph_id"]
    )
    checkpoint = job.options.checkpoint or {}
    for key in ("checkpoint_id", "checkpoint_ns", "checkpoint_map"):
        if checkpoint.get(key) is not None:
            configurable[key] = checkpoint[key]
    if "checkpoint_id" in configurable:
        configurable.setdefault("checkpoint_ns", "")
    if job.options.user:
        principal = User.from_dict(job.options.user)
        configurable["langgraph_auth_user"] = principal
        configurable["langgraph_auth_user_id"] = principal.identity
        configurable["langgraph_auth_permissions"] = principal.permissions
    config["configurable"] = configurable
    config["metadata"] = {
        **(base.get("metadata") or {}),
        **(override.get("metadata") or {}),
        **job.metadata,
        "run_id": job.run_id,
        "thread_id": job.thread_id,
        "assistant_id": job.assistant_id,
        "graph_id": assistant["graph_id"],
        "run_attempt": job.attempt,
    }
    config["run_id"] = uuid.UUID(job.run_id)
    return config


class RunExecutor:
    def __init__(
        self,
        *,
        runs: Runs,
        threads: Threads,
        assistants: Assistants,
        project: Project,
        checkpointer: Any,
        ephemeral_checkpointer: Any,
        store: Any,
        streams: StreamRegistry,
        inflight: Inflight,
        cancellation: Cancellation,
        traces: Traces | None,
        on_trace: Callable[[dict[str, Any], str | None], Awaitable[None]] | None,
        webhooks: Any,
    ) -> None:
        self.runs = runs
        self.threads = threads
        self.assistants = assistants
        self.project = project
        self.checkpointer = checkpointer
        self.ephemeral_checkpointer = ephemeral_checkpointer
        self.store = store
        self.streams = streams
        self.inflight = inflight
        self.cancellation = cancellation
        self.traces = traces
        self.on_trace = on_trace  # callback(doc, tenant) after a run's trace is saved: metrics, budgets, export
        self.webhooks = webhooks
        self.redactor = Redactor() if traces is not None else None
        # Assistants as read by the request that created a run here, for its first attempt (bounded: a run taken
        # by another replica or cancelled while queued leaves its entry until it is pushed out).
        self.assistant_hints: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def hint_assistant(self, run_id: str, assistant: dict[str, Any]) -> None:
        """The assistant a run was created with, so its execution here need not read it again. As the reference
        server does, a run executes with its assistant as it was when the run was created."""
        self.assistant_hints[run_id] = assistant
        while len(self.assistant_hints) > ASSISTANT_HINTS:
            self.assistant_hints.popitem(last=False)

    async def execute(self, job: RunJob) -> None:
        assistant = self.assistant_hints.pop(job.run_id, None)
        if assistant is None or job.attempt > 1 or assistant["assistant_id"] != job.assistant_id:
            assistant = await self.assistants.find(job.assistant_id)  # the one read of the assistant per attempt
        recorder = None
        if self.traces is not None and self.redactor is not None:
            graph_id = assistant["graph_id"] if assistant is not None else ""
            recorder = TraceRecorder(job.run_id, job.thread_id, graph_id, self.redactor)
        trace_token = CURRENT_TRACE.set(recorder)
        log_token = RUN_CONTEXT.set({"run_id": job.run_id, "thread_id": job.thread_id, "trace_id": job.run_id})
        outcome = Outcome("interrupted")
        try:
            # LangChain's own LangSmith auto-tracing would ship unredacted inputs; exports go through our redactor.
            from langsmith.run_helpers import tracing_context

            with tracing_context(enabled=False):
                outcome = await self._attempt(job, assistant, recorder)
        except asyncio.CancelledError:
            outcome = Outcome("shutdown")
            raise
        finally:
            CURRENT_TRACE.reset(trace_token)
            RUN_CONTEXT.reset(log_token)
            if outcome.status != "shutdown":
                if recorder is not None:
                    await self._save_trace(recorder, job, outcome, outcome.trace)
                if job.options.webhook and self.webhooks is not None:
                    payload = {**run_out(job.row), "status": outcome.status, "values": outcome.output}
                    if isinstance(outcome.output, dict) and "__error__" in outcome.output:
                        payload["error"] = outcome.output["__error__"]
                    self.webhooks.send(job.options.webhook, payload)

    @staticmethod
    def _trace_doc(recorder: TraceRecorder, job: RunJob, status: str, output: Any) -> dict[str, Any]:
        policy_hash = None
        with contextlib.suppress(Exception):
            from interlock.policies.loader import get_policies

            policy_hash = get_policies().hash
        return recorder.document(
            status=status, policy_hash=policy_hash, input_=job.options.input or job.options.command, output=output
        )

    async def _save_trace(
        self, recorder: TraceRecorder, job: RunJob, outcome: Outcome, saved: dict[str, Any] | None = None
    ) -> None:
        """`saved`: the trace document already written with the run's outcome (see `_record`)."""
        try:
            doc = saved or self._trace_doc(recorder, job, outcome.status, outcome.output)
            if not job.ephemeral and saved is None:
                assert self.traces is not None
                await self.traces.save(doc)
            if self.on_trace is not None:
                await self.on_trace(doc, job.options.tenant())
        except Exception:  # noqa: BLE001 - a trace problem must not change the run's outcome
            log.exception("saving the trace of run %s failed", job.run_id)

    async def _latest_checkpoint(self, job: RunJob, checkpointer: Any, *, fresh: bool = False) -> str | None:
        """The id of the thread's newest root checkpoint. `fresh`: the thread was known at the claim to have
        none (and nothing else writes to it while its run executes), so there is nothing to read."""
        config = {"configurable": {"thread_id": job.thread_id, "checkpoint_ns": ""}}
        latest = None if fresh else await checkpointer.aget_tuple(config)
        prime_latest(job.thread_id, latest)  # LangGraph's first read of the thread, next, is answered from it
        return latest.checkpoint["id"] if latest else None

    async def _run_graph(self, attempt: Attempt, spec: Any, config: dict[str, Any], checkpointer: Any) -> Any:
        """Stream the graph to the run's SSE log; returns the final state snapshot.

        The caller's input is consumed once: a new attempt after a crash, or a retry after a lost database
        connection, continues from the last checkpoint the run wrote instead (its completed nodes do not repeat).
        A connection error is retried (bounded, logged) before it becomes the run's error.
        """
        job, stream = attempt.job, attempt.stream
        latest_id = await self._latest_checkpoint(
            job, checkpointer, fresh=job.fresh_thread and job.attempt <= 1 and not job.ephemeral
        )
        if job.attempt <= 1:
            base = latest_id
            if latest_id is not None:
                await self.runs.set_checkpoint_before(job.run_id, latest_id)
        else:
            base = job.checkpoint_before
        retries = run_retries()
        for retry in range(retries + 1):
            try:
                if retry:
                    latest_id = await self._latest_checkpoint(job, checkpointer)
                continuing = latest_id != base
                graph_input = None if continuing else (build_command(job.options.command) or job.options.input)
                async with graph_for_run(spec, config, checkpointer, self.store, ephemeral=job.ephemeral) as graph:
                    attempt.graph = graph
                    completed = False
                    try:
                        await stream_graph(
                            graph, graph_input, config, job.options, stream, job.run_id, continuing=continuing
                        )
                        completed = True
                    finally:
                        release_primed(completed=completed)
                    return await graph.aget_state({"configurable": {"thread_id": job.thread_id}})
            except Exception as exc:
                if retry >= retries or not is_connection_error(exc):
                    raise
                delay = min(0.5 * 2**retry, 4.0)
                log.warning(
                    "run %s lost a database connection (%s); retrying from its last checkpoint in %.1fs (%d/%d)",
                    job.run_id, type(exc).__name__, delay, retry + 1, retries,
                )
                stream.publish("metadata", {"run_id": job.run_id, "attempt": job.attempt, "retry": retry + 1})
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _events_before(self, job: RunJob) -> int:
        """The last event id of the run's earlier attempts: from the shared (Redis) copy when there is one, else a
        span per attempt so a new attempt's ids never repeat ids a client already saw."""
        if job.attempt <= 1:
            return 0
        mirror = self.streams.mirror
        if mirror is not None:
            try:
                return await mirror.last_seq(job.run_id)
            except Exception:  # noqa: BLE001 - Redis down: ids stay unique through the span, replay is local-only
                log.warning("reading the stream copy of run %s from Redis failed", job.run_id)
        return (job.attempt - 1) * ATTEMPT_ID_SPAN

    async def _with_retries(self, job: RunJob, step: Callable[[], Awaitable[None]]) -> None:
        """Recording a finished run survives a database blip (bounded, logged) rather than leaving it running."""
        retries = run_retries()
        for retry in range(retries + 1):
            try:
                await step()
                return
            except Exception as exc:
                if retry >= retries or not is_connection_error(exc):
                    raise
                log.warning("recording run %s lost a database connection (%s); retrying", job.run_id, type(exc).__name__)
                await asyncio.sleep(min(0.5 * 2**retry, 4.0))

    async def _attempt(self, job: RunJob, assistant: dict[str, Any] | None, recorder: TraceRecorder | None) -> Outcome:
        run_id, thread_id = job.run_id, job.thread_id
        checkpointer = self.ephemeral_checkpointer if job.ephemeral else self.checkpointer
        base = await self._events_before(job)
        stream = self.streams.open(run_id, job.options.resumable, base)
        if base:
            # A resumed attempt: its ids continue after the earlier attempts' events; this event marks where the
            # interrupted node's retry begins.
            stream.publish("metadata", {"run_id": run_id, "attempt": job.attempt, "resumed_after": base})
        else:
            stream.publish("metadata", {"run_id": run_id, "attempt": job.attempt})
        status, error, snapshot, result = "error", None, None, None
        attempt = Attempt(job, stream)
        try:
            if assistant is None:
                raise RunFailed(f"assistant {job.assistant_id} no longer exists")
            spec = self.project.graphs.get(assistant["graph_id"])
            if spec is None:
                raise RunFailed(f"graph {assistant['graph_id']} is not served")
            config = run_config(job, assistant)
            if recorder is not None:
                config["callbacks"] = [recorder]
            snapshot = await self._run_graph(attempt, spec, config, checkpointer)
            status = "success"
        except asyncio.CancelledError:
            action = self.inflight.cancel_actions.pop(run_id, "interrupt")
            if action == "shutdown":
                await self.runs.release(run_id)
                stream.close(final=False)  # the next attempt continues the shared stream
                raise
            await self.cancellation.finish_cancelled(job, action, stream, attempt.graph)
            return Outcome("interrupted", stream.result)
        except Exception as exc:  # noqa: BLE001 - a failing graph must not take the server down
            log.info("run %s failed: %s", run_id, type(exc).__name__)
            if type(exc).__name__ == "GuardFailed":
                # Fail closed, and say why without echoing the scanned content.
                error = {"error": "GuardFailed", "message": "guard_failed", "reason": "guard_failed"}
            else:
                error = {"error": type(exc).__name__, "message": str(exc)}
            stream.publish("error", error)
            result = {"__error__": error}
            if attempt.graph is not None:
                with contextlib.suppress(Exception):
                    snapshot = await attempt.graph.aget_state({"configurable": {"thread_id": thread_id}})
        written: dict[str, Any] = {}
        try:
            await self._with_retries(
                job, lambda: self._record(job, status, snapshot, error, stream, result, recorder, written)
            )
        finally:
            stream.close()
        return Outcome(status, stream.result, written.get("trace"))

    async def _record(
        self,
        job: RunJob,
        status: str,
        snapshot: Any,
        error: dict[str, Any] | None,
        stream: RunStream,
        result: Any,
        recorder: TraceRecorder | None = None,
        written: dict[str, Any] | None = None,
    ) -> None:
        run_id, thread_id = job.run_id, job.thread_id
        values = jsonable(snapshot.values) if snapshot is not None else None
        interrupts = pending_interrupts(snapshot) if snapshot is not None else {}
        if result is None:
            result = dict(values) if isinstance(values, dict) else values
            if snapshot is not None and snapshot.interrupts and isinstance(result, dict):
                result["__interrupt__"] = [interrupt_out(i) for i in snapshot.interrupts]
        stream.result = result
        if status == "error":
            thread_status = "error"
        elif snapshot is not None and (snapshot.next or interrupts):
            thread_status = "interrupted"
        else:
            thread_status = "idle"
        if job.ephemeral:
            await self.ephemeral_checkpointer.adelete_thread(thread_id)
            await self.runs.delete(run_id)
            return
        # One transaction for the run's outcome, its thread's state (a queued run keeps the thread busy) and its
        # trace: pipelined on PostgreSQL.
        statements = [
            self.runs.status_statement(run_id, status),
            self.threads.record_state_statement(
                thread_id, status=thread_status, values=values, interrupts=interrupts, error=error, finished_run=run_id
            ),
        ]
        trace = None
        if recorder is not None and self.traces is not None and written is not None:
            try:
                trace = self._trace_doc(recorder, job, status, result)
            except Exception:  # noqa: BLE001 - saved (or its failure logged) after the run instead
                trace = None
        if trace is not None:
            assert self.traces is not None and written is not None
            try:
                await self.runs.db.batch([*statements, self.traces.save_statement(trace)])
                written["trace"] = trace
                return
            except Exception as exc:
                if is_connection_error(exc):
                    raise
                # A trace problem must not change the run's outcome: record it alone, the trace after the run.
                log.warning("writing the trace of run %s with its outcome failed (%s)", run_id, type(exc).__name__)
        await self.runs.db.batch(statements)
