"""The run engine: a queue woken on submit (no polling floor), bounded concurrency, cancellation that reaches a
running graph, persisted status transitions, and restart safety (runs left pending or running resume from their
last checkpoint when the server starts again)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any

from interlock.server import clock
from interlock.server.assistants import Assistants
from interlock.server.auth import User
from interlock.server.checkpoints import delete_after
from interlock.server.logs import RUN_CONTEXT
from interlock.server.project import Project, graph_for_run
from interlock.server.runs import Runs
from interlock.server.serialization import jsonable, loads
from interlock.server.state import checkpoint_of, interrupt_out, pending_interrupts
from interlock.server.streams import RunStream, StreamRegistry
from interlock.server.threads import Threads
from interlock.server.traces import CURRENT_TRACE, Redactor, TraceRecorder, Traces
from langchain_core.messages import BaseMessageChunk, message_chunk_to_message
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, Send

from interlock.kernel.settings import get_settings

log = logging.getLogger("interlock.engine")


EPHEMERAL = 2  # runs.temporary: a stateless run with no thread row and in-memory checkpoints


def run_tenant(kw: dict[str, Any]) -> str | None:
    """The tenant a run bills to: from the authenticated user, else (local development) the run's config."""
    user = kw.get("user") or {}
    tenant = user.get("tenant_id") or user.get("tenant")
    if tenant:
        return str(tenant)
    configurable = (kw.get("config") or {}).get("configurable") or {}
    value = configurable.get("tenant") or configurable.get("tenant_id")
    return str(value) if value else None


class RunFailed(Exception):
    """A run that cannot start (its assistant or graph is gone)."""


def build_command(command: dict[str, Any] | None) -> Command | None:
    if not command:
        return None
    goto = command.get("goto")
    if goto is not None:
        items = goto if isinstance(goto, list) else [goto]
        sends = [Send(g["node"], g.get("input")) if isinstance(g, dict) else g for g in items]
        goto = sends if isinstance(goto, list) else sends[0]
    kwargs: dict[str, Any] = {}
    if command.get("resume") is not None:
        kwargs["resume"] = command["resume"]
    if command.get("update") is not None:
        update = command["update"]
        kwargs["update"] = [tuple(u) for u in update] if isinstance(update, list) else update
    if goto is not None:
        kwargs["goto"] = goto
    return Command(**kwargs)


class Engine:
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
        self.assistants = assistants
        self.project = project
        self.checkpointer = checkpointer
        self.store = store
        self.streams = streams
        self.concurrency = concurrency
        self.single_process = single_process
        self.traces = traces
        self.webhooks = webhooks
        self.on_trace = on_trace  # callback(doc, tenant) after a run's trace is saved: metrics, budgets, export
        self.redactor = Redactor() if traces is not None else None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.poll_seconds = get_settings().queue_poll_seconds
        self.lease_seconds = get_settings().run_lease_seconds
        self._wake = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel_actions: dict[str, str] = {}
        self._finished: dict[str, asyncio.Event] = {}
        self._background: list[asyncio.Task[None]] = []
        self._stopping = False
        # Stateless runs whose thread is deleted on completion never need durable checkpoints.
        self.ephemeral_checkpointer = InMemorySaver()

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        requeued = await self.runs.requeue_orphans(None if self.single_process else self._stale_before())
        if requeued:
            log.info("requeued %d run(s) left running by a previous server", requeued)
        self._background = [
            asyncio.create_task(self._dispatch(), name="interlock-dispatch"),
            asyncio.create_task(self._heartbeat(), name="interlock-heartbeat"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._background:
            task.cancel()
        for run_id, task in list(self._tasks.items()):
            self._cancel_actions[run_id] = "shutdown"
            task.cancel()
        await asyncio.gather(*self._background, *self._tasks.values(), return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    def _stale_before(self) -> str:
        return clock.iso(clock.now() - timedelta(seconds=self.lease_seconds))

    async def _dispatch(self) -> None:
        while not self._stopping:
            try:
                while len(self._tasks) < self.concurrency:
                    run = await self.runs.claim(self.worker_id)
                    if run is None:
                        break
                    self._launch(run)
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

    async def _heartbeat(self) -> None:
        while not self._stopping:
            await asyncio.sleep(min(1.0, self.lease_seconds / 3))
            try:
                for row in await self.runs.heartbeat(list(self._tasks)):
                    task = self._tasks.get(row["run_id"])
                    if task is not None and not task.done():
                        self._cancel_actions[row["run_id"]] = row["cancel_action"]
                        task.cancel()
                if not self.single_process and await self.runs.requeue_orphans(self._stale_before()):
                    self.wake()
                for thread_id in await self.threads.expired():
                    await self.delete_thread(thread_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("heartbeat failed")

    def _launch(self, run: dict[str, Any]) -> None:
        run_id = run["run_id"]
        self._finished.setdefault(run_id, asyncio.Event())
        task = asyncio.create_task(self._execute(run), name=f"run-{run_id}")
        self._tasks[run_id] = task

        def _done(_: asyncio.Task[None]) -> None:
            self._tasks.pop(run_id, None)
            event = self._finished.pop(run_id, None)
            if event is not None:
                event.set()
            self.wake()

        task.add_done_callback(_done)

    # -- cancellation and waiting ------------------------------------------------------------------------
    async def cancel(self, run: dict[str, Any], action: str) -> None:
        run_id = run["run_id"]
        if run["status"] == "pending":
            if action == "rollback":
                changed = await self.runs.db.execute("DELETE FROM runs WHERE run_id = ? AND status = 'pending'", [run_id])
            else:
                changed = await self.runs.db.execute(
                    "UPDATE runs SET status = 'interrupted', updated_at = ? WHERE run_id = ? AND status = 'pending'",
                    [clock.iso(), run_id],
                )
            if not changed:
                # Claimed between our read and this write: cancel it as a running run.
                current = await self.runs.find(run_id)
                if current is not None and current["status"] == "running":
                    await self.cancel(current, action)
                return
            stream = self.streams.get(run_id)
            if stream is not None:
                stream.close()
            finished = self._finished.pop(run_id, None)
            if finished is not None:
                finished.set()
            await self._settle_thread_status(run["thread_id"])
            self.wake()
            return
        task = self._tasks.get(run_id)
        if task is not None:
            self._cancel_actions[run_id] = action
            task.cancel()
        else:
            await self.runs.request_cancel(run_id, action)

    async def wait_finished(self, run_id: str) -> None:
        """Until the run is no longer pending or running, whether it executes here or on another replica."""
        event = self._finished.setdefault(run_id, asyncio.Event())
        try:
            while True:
                row = await self.runs.find(run_id)
                if row is None or row["status"] not in ("pending", "running"):
                    return
                # Woken at once when it finishes here; the periodic re-read covers other replicas.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), self.poll_seconds)
                if event.is_set():
                    return
        finally:
            if run_id not in self._tasks and self._finished.get(run_id) is event and not event.is_set():
                self._finished.pop(run_id, None)

    async def _settle_thread_status(self, thread_id: str) -> None:
        active = await self.runs.active_for_thread(thread_id)
        if active:
            return
        thread = await self.threads.find(thread_id)
        if thread is not None and thread["status"] == "busy":
            await self.threads.set_status(thread_id, "interrupted" if thread["interrupts"] else "idle")

    async def delete_thread(self, thread_id: str) -> None:
        for run in await self.runs.active_for_thread(thread_id):
            await self.cancel(run, "interrupt")
        await self.checkpointer.adelete_thread(thread_id)
        if self.traces is not None:
            await self.traces.delete_thread(thread_id)
        await self.threads.delete(thread_id)

    # -- execution ---------------------------------------------------------------------------------------
    def _config(self, run: dict[str, Any], assistant: dict[str, Any], kw: dict[str, Any]) -> dict[str, Any]:
        base = assistant.get("config") or {}
        override = kw.get("config") or {}
        config: dict[str, Any] = {**base, **override}
        configurable = {**(base.get("configurable") or {}), **(override.get("configurable") or {})}
        configurable.update(
            thread_id=run["thread_id"],
            run_id=run["run_id"],
            assistant_id=run["assistant_id"],
            graph_id=assistant["graph_id"],
        )
        checkpoint = kw.get("checkpoint") or {}
        for key in ("checkpoint_id", "checkpoint_ns", "checkpoint_map"):
            if checkpoint.get(key) is not None:
                configurable[key] = checkpoint[key]
        if "checkpoint_id" in configurable:
            configurable.setdefault("checkpoint_ns", "")
        user = kw.get("user")
        if user:
            principal = User.from_dict(user)
            configurable["langgraph_auth_user"] = principal
            configurable["langgraph_auth_user_id"] = principal.identity
            configurable["langgraph_auth_permissions"] = principal.permissions
        config["configurable"] = configurable
        config["metadata"] = {
            **(base.get("metadata") or {}),
            **(override.get("metadata") or {}),
            **(loads(run["metadata"]) or {}),
            "run_id": run["run_id"],
            "thread_id": run["thread_id"],
            "assistant_id": run["assistant_id"],
            "graph_id": assistant["graph_id"],
            "run_attempt": run["attempt"],
        }
        config["run_id"] = uuid.UUID(run["run_id"])
        return config

    async def _execute(self, run: dict[str, Any]) -> None:
        kw = loads(run["kwargs"]) or {}
        assistant = await self.assistants.find(run["assistant_id"])
        recorder = None
        if self.traces is not None and self.redactor is not None:
            graph_id = assistant["graph_id"] if assistant is not None else ""
            recorder = TraceRecorder(run["run_id"], run["thread_id"], graph_id, self.redactor)
        trace_token = CURRENT_TRACE.set(recorder)
        log_token = RUN_CONTEXT.set({"run_id": run["run_id"], "thread_id": run["thread_id"], "trace_id": run["run_id"]})
        status_box: dict[str, Any] = {"status": "interrupted", "output": None}
        try:
            # LangChain's own LangSmith auto-tracing would ship unredacted inputs; exports go through our redactor.
            from langsmith.run_helpers import tracing_context

            with tracing_context(enabled=False):
                await self._execute_run(run, kw, assistant, recorder, status_box)
        finally:
            CURRENT_TRACE.reset(trace_token)
            RUN_CONTEXT.reset(log_token)
            if recorder is not None and status_box["status"] != "shutdown":
                await self._save_trace(recorder, run, kw, status_box)
            if kw.get("webhook") and self.webhooks is not None and status_box["status"] != "shutdown":
                from interlock.server.runs import run_out

                payload = {**run_out(run), "status": status_box["status"], "values": status_box["output"]}
                if isinstance(status_box["output"], dict) and "__error__" in status_box["output"]:
                    payload["error"] = status_box["output"]["__error__"]
                self.webhooks.send(kw["webhook"], payload)

    async def _save_trace(self, recorder: TraceRecorder, run: dict[str, Any], kw: dict[str, Any], box: dict[str, Any]) -> None:
        try:
            policy_hash = None
            with contextlib.suppress(Exception):
                from interlock.policies.loader import get_policies

                policy_hash = get_policies().hash
            doc = recorder.document(
                status=box["status"], policy_hash=policy_hash, input_=kw.get("input") or kw.get("command"), output=box["output"]
            )
            if run["temporary"] != EPHEMERAL:
                assert self.traces is not None
                await self.traces.save(doc)
            if self.on_trace is not None:
                await self.on_trace(doc, run_tenant(kw))
        except Exception:  # noqa: BLE001 - a trace problem must not change the run's outcome
            log.exception("saving the trace of run %s failed", run["run_id"])

    async def _execute_run(
        self,
        run: dict[str, Any],
        kw: dict[str, Any],
        assistant: dict[str, Any] | None,
        recorder: TraceRecorder | None,
        box: dict[str, Any],
    ) -> None:
        run_id, thread_id = run["run_id"], run["thread_id"]
        ephemeral = run["temporary"] == EPHEMERAL
        checkpointer = self.ephemeral_checkpointer if ephemeral else self.checkpointer
        stream = self.streams.open(run_id, bool(kw.get("resumable")))
        stream.publish("metadata", {"run_id": run_id, "attempt": run["attempt"]})
        status, error, snapshot, result = "error", None, None, None
        graph = None
        try:
            if assistant is None:
                raise RunFailed(f"assistant {run['assistant_id']} no longer exists")
            spec = self.project.graphs.get(assistant["graph_id"])
            if spec is None:
                raise RunFailed(f"graph {assistant['graph_id']} is not served")
            config = self._config(run, assistant, kw)
            if recorder is not None:
                config["callbacks"] = [recorder]
            latest = await checkpointer.aget_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
            latest_id = latest.checkpoint["id"] if latest else None
            if run["attempt"] <= 1:
                if latest_id is not None:
                    await self.runs.set_checkpoint_before(run_id, latest_id)
                graph_input: Any = build_command(kw.get("command")) or kw.get("input")
            elif latest_id != run["checkpoint_before"]:
                # Restarted after a crash: the input was consumed before the crash, continue from the checkpoint.
                graph_input = None
            else:
                graph_input = build_command(kw.get("command")) or kw.get("input")
            async with graph_for_run(spec, config, checkpointer, self.store, ephemeral=ephemeral) as graph:
                await self._stream(graph, graph_input, config, kw, stream, run_id)
                snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
            status = "success"
        except asyncio.CancelledError:
            action = self._cancel_actions.pop(run_id, "interrupt")
            if action == "shutdown":
                box["status"] = "shutdown"
                await self.runs.release(run_id)
                stream.close()
                raise
            await self._finish_cancelled(run, action, stream, graph)
            box["status"], box["output"] = "interrupted", stream.result
            return
        except Exception as exc:  # noqa: BLE001 - a failing graph must not take the server down
            log.info("run %s failed: %s", run_id, type(exc).__name__)
            if type(exc).__name__ == "GuardFailed":
                # Fail closed, and say why without echoing the scanned content.
                error = {"error": "GuardFailed", "message": "guard_failed", "reason": "guard_failed"}
            else:
                error = {"error": type(exc).__name__, "message": str(exc)}
            stream.publish("error", error)
            result = {"__error__": error}
            if graph is not None:
                with contextlib.suppress(Exception):
                    snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
        try:
            await self._record(run, kw, status, snapshot, error, stream, result)
        finally:
            stream.close()
        box["status"], box["output"] = status, stream.result

    async def _record(
        self,
        run: dict[str, Any],
        kw: dict[str, Any],
        status: str,
        snapshot: Any,
        error: dict[str, Any] | None,
        stream: RunStream,
        result: Any,
    ) -> None:
        run_id, thread_id = run["run_id"], run["thread_id"]
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
        if run["temporary"] == EPHEMERAL:
            await self.ephemeral_checkpointer.adelete_thread(thread_id)
            await self.runs.delete(run_id)
            return
        await self.runs.set_status(run_id, status)
        await self.threads.record_state(
            thread_id,
            status=thread_status,
            values=values,
            interrupts=interrupts,
            error=error,
        )
        if await self.runs.active_for_thread(thread_id):
            await self.threads.set_status(thread_id, "busy")

    async def _finish_cancelled(self, run: dict[str, Any], action: str, stream: RunStream, graph: Any) -> None:
        run_id, thread_id = run["run_id"], run["thread_id"]
        if run["temporary"] == EPHEMERAL:
            try:
                await self.ephemeral_checkpointer.adelete_thread(thread_id)
                await self.runs.delete(run_id)
            finally:
                stream.close()
            return
        try:
            if action == "rollback":
                row = await self.runs.find(run_id)
                before = row["checkpoint_before"] if row else None
                await delete_after(self.checkpointer, thread_id, before)
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

    async def _stream(
        self, graph: Any, graph_input: Any, config: dict[str, Any], kw: dict[str, Any], stream: RunStream, run_id: str
    ) -> None:
        requested: list[str] = kw.get("stream_mode") or ["values"]
        subgraphs = bool(kw.get("subgraphs"))
        internal = {m for m in requested if m not in ("events", "messages-tuple")}
        if "messages-tuple" in requested:
            internal.add("messages")
        internal.add("updates")  # interrupts surface through updates
        only_interrupt_updates = "updates" not in requested
        tuple_messages = "messages-tuple" in requested
        legacy_messages = "messages" in requested
        accumulated: dict[str, BaseMessageChunk] = {}

        def emit(ns: tuple[str, ...], mode: str, chunk: Any) -> None:
            suffix = ("|" + "|".join(ns)) if (ns and subgraphs) else ""
            if mode == "messages":
                if tuple_messages:
                    stream.publish("messages" + suffix, chunk)
                if legacy_messages:
                    message, meta = chunk
                    key = message.id or ""
                    if key in accumulated and isinstance(message, BaseMessageChunk):
                        accumulated[key] = accumulated[key] + message  # type: ignore[assignment]
                    else:
                        accumulated[key] = message
                        stream.publish("messages/metadata", {key: {"metadata": meta}})
                    if isinstance(message, BaseMessageChunk):
                        stream.publish("messages/partial", [message_chunk_to_message(accumulated[key])])
                    else:
                        stream.publish("messages/complete", [message])
                return
            if mode == "debug" and isinstance(chunk, dict) and chunk.get("type") == "checkpoint":
                payload = chunk.get("payload") or {}
                chunk = {
                    **chunk,
                    "payload": {
                        **payload,
                        "checkpoint": checkpoint_of(payload.get("config")),
                        "parent_checkpoint": checkpoint_of(payload.get("parent_config")),
                    },
                }
            if mode in requested:
                stream.publish(mode + suffix, chunk)
            elif mode == "updates" and only_interrupt_updates and isinstance(chunk, dict) and chunk.get("__interrupt__"):
                stream.publish("values" + suffix, {"__interrupt__": [interrupt_out(i) for i in chunk["__interrupt__"]]})

        options: dict[str, Any] = {
            "stream_mode": sorted(internal),
            "subgraphs": subgraphs,
            "interrupt_before": kw.get("interrupt_before"),
            "interrupt_after": kw.get("interrupt_after"),
        }
        if kw.get("context") is not None:
            options["context"] = kw["context"]
        if kw.get("durability"):
            options["durability"] = kw["durability"]
        if "events" in requested:
            async for event in graph.astream_events(graph_input, config, version="v2", **options):
                tags = event.get("tags") or ()
                if "nostream" in tags or "langsmith:hidden" in tags:
                    continue  # internal model calls: their raw text is not for clients in any stream mode
                if event.get("event") == "on_chain_stream" and event.get("run_id") == run_id:
                    data = event["data"]["chunk"]
                    if subgraphs:
                        ns, mode, chunk = data
                    else:
                        (mode, chunk), ns = data, ()
                    emit(tuple(ns), mode, chunk)
                else:
                    stream.publish("events", event)
            return
        async for item in graph.astream(graph_input, config, **options):
            if subgraphs:
                ns, mode, chunk = item
            else:
                (mode, chunk), ns = item, ()
            emit(tuple(ns), mode, chunk)
