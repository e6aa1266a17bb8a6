"""Submitting runs and reading their results: validation against the thread, multitask strategies, tenant
admission, the typed run options stored with the run, and the final output `wait`/`join` return. The /runs
routes, the cron scheduler and approvals all submit through `create_run`."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from interlock.policies.loader import get_policies
from interlock.policies.pii import seal_input
from interlock.server import clock, schemas
from interlock.server.auth import User, matches
from interlock.server.authorization import Access
from interlock.server.engine import EPHEMERAL, RunOptions, run_tenant
from interlock.server.errors import Conflict, Invalid, NotFound
from interlock.server.services import Services
from interlock.server.streams import RunStream
from interlock.server.threads import check_uuid
from interlock.server.webhooks import check_url
from starlette.exceptions import HTTPException

from interlock.kernel.settings import get_settings

REJECT_DETAIL = "Thread is already running a task. Wait for it to finish or choose a different multitask strategy."
RUN_STATUSES = ("pending", "running", "error", "success", "timeout", "interrupted")


@dataclass
class SubmittedRun:
    row: dict[str, Any]
    options: RunOptions
    stream: RunStream

    @property
    def run_id(self) -> str:
        return self.row["run_id"]

    @property
    def thread_id(self) -> str:
        return self.row["thread_id"]


def seals_input(svc: Services, graph_id: str, user: User, body: schemas.RunCreate) -> bool:
    """Whether this run's user messages are stored sealed (pii.yaml `store_raw_input: false` for the run's
    tenant): only for graphs whose input guard unseals them (every graph built through `graphs.guarded`)."""
    if body.input is None and (body.command is None or body.command.update is None):
        return False
    return seals_user_input(svc, graph_id, user, body.config)


def seals_user_input(svc: Services, graph_id: str | None, user: User, config: dict[str, Any] | None) -> bool:
    """Whether user messages written into a thread of this graph are stored sealed, whatever the path (a run's
    input or `command.update`, `POST /threads/{id}/state`, a thread's supersteps, a cron's payload): the tenant's
    pii.yaml `store_raw_input` is false and the graph has an `input_guard` to unseal them. The tenant is the
    authenticated user's, else the config's (local development), else the development tenant."""
    spec = svc.project.graphs.get(graph_id) if graph_id else None
    graph = getattr(spec, "compiled", None)
    if graph is None or "input_guard" not in getattr(graph, "nodes", {}):
        return False
    tenant = run_tenant(user.dict() if user.is_authenticated else None, config) or get_settings().dev_tenant
    return not get_policies().pii.stores_raw_input(tenant)


def sealed_command(command: dict[str, Any] | None, seal: bool) -> dict[str, Any] | None:
    """A run's `command` with the user messages of its `update` sealed (a command writes into the thread too)."""
    if not seal or not command or not isinstance(command.get("update"), dict):
        return command
    return {**command, "update": seal_input(command["update"])}


def run_options(body: schemas.RunCreate, user: User, *, temporary: bool,
                owner: dict[str, Any] | None = None, seal: bool = False, keep_sealed: bool = False) -> RunOptions:
    durability = body.durability
    if durability is None and body.checkpoint_during is not None:
        durability = "async" if body.checkpoint_during else "exit"
    checkpoint = body.checkpoint.model_dump(exclude_none=True) if body.checkpoint else None
    if body.checkpoint_id:
        checkpoint = {"checkpoint_id": body.checkpoint_id}
    return RunOptions(
        input=seal_input(body.input, keep_sealed=keep_sealed) if seal else body.input,
        command=sealed_command(body.command.model_dump(exclude_none=True) if body.command else None, seal),
        config=body.config,
        context=body.context,
        stream_mode=body.modes(),
        subgraphs=body.stream_subgraphs,
        resumable=body.stream_resumable,
        interrupt_before=body.interrupt_before,
        interrupt_after=body.interrupt_after,
        checkpoint=checkpoint,
        durability=durability,
        on_disconnect=body.on_disconnect or ("continue" if body.stream_resumable else "cancel"),
        on_completion=body.on_completion or ("delete" if temporary else "keep"),
        user=user.dict() if user.is_authenticated else None,
        owner=owner,
        webhook=body.webhook,
    )


async def create_run(
    svc: Services, user: User, thread_id: str | None, body: schemas.RunCreate, *, affinity: bool,
    stored_input: bool = False,
) -> SubmittedRun:
    """Submit a run. `stored_input`: the input comes from a server-stored payload (a cron's), whose user messages
    were sealed when it was stored; they are kept as they are (others are sealed)."""
    if body.input is not None and body.command is not None:
        raise Invalid("'input' and 'command' are mutually exclusive")
    if body.checkpoint_id and body.checkpoint:
        raise Invalid("'checkpoint' and 'checkpoint_id' are mutually exclusive")
    if thread_id is None and (body.checkpoint or body.checkpoint_id):
        raise Invalid("'checkpoint' needs a thread")
    if body.webhook:
        check_url(body.webhook)
    access = Access(svc, user)
    assistant_row, thread_rows = await _read_for_run(svc, body.assistant_id, thread_id)
    assistant = await access.assistant_for_run(body.assistant_id, row=assistant_row)
    await access.check_named_tenants(assistant.get("config"), body.config)
    temporary = thread_id is None
    run_id = clock.new_id()
    value = {
        "thread_id": thread_id,
        "assistant_id": assistant["assistant_id"],
        "run_id": run_id,
        "status": "pending",
        "metadata": body.metadata or {},
        "kwargs": body.model_dump(exclude={"metadata"}),
        "multitask_strategy": body.multitask_strategy,
        "prevent_insert_if_inflight": True,
        "after_seconds": body.after_seconds,
        "if_not_exists": body.if_not_exists,
    }
    filt = await svc.authorizer.authorize(user, "threads", "create_run", value)
    await admit(svc, user, body)
    strategy = body.multitask_strategy or "enqueue"
    keep_thread = body.on_completion == "keep"
    merge: dict[str, Any] | None = None
    if temporary and not keep_thread:
        thread_id = clock.new_id()  # ephemeral: no thread row, in-memory checkpoints, deleted on completion
    elif temporary:
        thread = await svc.threads.create(
            None,
            {**access.owner(filt), "graph_id": assistant["graph_id"], "assistant_id": assistant["assistant_id"]},
            None,
        )
        thread_id = thread["thread_id"]
    else:
        assert thread_id is not None
        merge = await _prepare_thread(access, thread_id, body, assistant, filt, strategy, thread_rows)
    options = run_options(body, user, temporary=temporary, owner=access.owner(filt),
                          seal=seals_input(svc, assistant["graph_id"], user, body), keep_sealed=stored_input)
    stream = svc.streams.open(run_id, body.stream_resumable)
    insert = svc.runs.insert_statement(
        run_id=run_id,
        thread_id=thread_id,
        assistant_id=assistant["assistant_id"],
        metadata=body.metadata or {},
        kwargs=options.model_dump(),
        multitask_strategy=strategy,
        after_seconds=body.after_seconds,
        temporary=(EPHEMERAL if not keep_thread else 1) if temporary else 0,
        affinity=svc.engine.worker_id if affinity else None,
    )
    # The run and its thread's busy status (with the metadata Agent Chat UI lists threads by) in one
    # transaction, pipelined on PostgreSQL.
    if not temporary or keep_thread:
        rows, _ = await svc.db.batch([insert, svc.threads.status_statement(thread_id, "busy", merge)])
    else:
        (rows,) = await svc.db.batch([insert])
    row = rows[0]
    if affinity:
        # This replica will most likely execute it: its execution need not read the assistant again.
        svc.engine.hint_assistant(run_id, assistant)
    svc.engine.submitted(due_now=not body.after_seconds)
    return SubmittedRun(row, options, stream)


async def _read_for_run(
    svc: Services, assistant_ref: str, thread_id: str | None
) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
    """The assistant a run names and, for a stateful run, its thread, read together (one round trip on
    PostgreSQL). Only reads: every check on them is made where they are used, in the same order as before."""
    statements = [svc.assistants.find_statement(svc.assistants.key(assistant_ref))]
    if thread_id is not None:
        with contextlib.suppress(Invalid):  # a malformed thread id is refused where the thread is checked
            check_uuid(thread_id, "thread ID")
            statements.append(svc.threads.find_for_run_statement(thread_id))
    found = await svc.db.fetch_many(statements)
    return (found[0][0] if found[0] else None), (found[1] if len(found) > 1 else None)


async def _prepare_thread(
    access: Access,
    thread_id: str,
    body: schemas.RunCreate,
    assistant: dict[str, Any],
    filt: dict[str, Any] | None,
    strategy: str,
    rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The thread a stateful run goes to: created if asked, visible to the caller, and free per the strategy.
    A command on a thread waiting for an approval is a decision: only those who may decide it may send one.
    `rows`: the thread as read with the run's assistant. Returns the metadata keys to merge into the thread's
    (written with its busy status), or None."""
    svc = access.svc
    check_uuid(thread_id, "thread ID")
    thread, has_active = await svc.threads.find_for_run(thread_id, rows=rows)
    if thread is None:
        if body.if_not_exists != "create":
            raise NotFound(f"Thread {thread_id} not found")
        owner = {k: v for k, v in (filt or {}).items() if not isinstance(v, dict)}
        thread = await svc.threads.create(thread_id, owner, "do_nothing")
        # Created just now, or by a concurrent request (do_nothing): only then can a run be active on it.
        has_active = thread["status"] == "busy"
    elif not matches(thread["metadata"], filt):
        raise NotFound(f"Thread {thread_id} not found")
    if body.command is not None:
        access.check_thread_command(thread)
    if body.strict_resume and body.command and isinstance(body.command.resume, dict):
        pending = {i["id"] for items in thread["interrupts"].values() for i in items}
        unknown = sorted(set(body.command.resume) - pending)
        if unknown:
            raise Invalid(f"unknown interrupt id(s) in command.resume: {unknown}")
    active = await svc.runs.active_for_thread(thread_id) if has_active else []
    if active:
        if strategy == "reject":
            raise Conflict(REJECT_DETAIL)
        if strategy in ("interrupt", "rollback"):
            for run in active:
                await svc.engine.cancel(run, strategy)
    meta = thread["metadata"]
    if meta.get("graph_id") != assistant["graph_id"] or meta.get("assistant_id") != assistant["assistant_id"]:
        return {"graph_id": assistant["graph_id"], "assistant_id": assistant["assistant_id"]}  # Agent Chat UI lists by these
    return None


async def admit(svc: Services, user: User, body: schemas.RunCreate) -> None:
    """Tenant request/token/spend limits: refused with 429 and Retry-After before anything runs."""
    if svc.limiter is None:
        return
    tenant = run_tenant(user.dict() if user.is_authenticated else None, body.config)
    if not tenant:
        return
    decision = await svc.limiter.admit(tenant)
    if not decision.allowed:
        from interlock.server.metrics import RATE_LIMITED

        RATE_LIMITED.labels(decision.reason or "limit").inc()
        raise HTTPException(429, f"tenant {tenant} is over its {decision.reason} limit", headers=decision.headers())


async def run_output(svc: Services, thread_id: str, stream: RunStream | None) -> Any:
    """What `wait` and `join` return: the final values (with pending interrupts) or the error."""
    if stream is not None and stream.result is not None:
        return stream.result
    thread = await svc.threads.find(thread_id)
    if thread is None:
        return None
    if thread["error"]:
        return {"__error__": thread["error"]}
    values = thread["values"]
    interrupts = [i for items in (thread["interrupts"] or {}).values() for i in items]
    if interrupts and isinstance(values, dict):
        values = {**values, "__interrupt__": interrupts}
    return values


async def cancel_many(svc: Services, user: User, body: schemas.RunCancelMany, action: str) -> None:
    """Cancel by status, by thread, or by ids; runs on threads the caller may not update are skipped."""
    if body.status and (body.thread_id or body.run_ids):
        raise Invalid("give either 'status' or 'thread_id'/'run_ids'")
    if body.status:
        run_ids = await svc.runs.ids_with_status(("pending", "running") if body.status == "all" else (body.status,))
    elif body.thread_id and not body.run_ids:
        run_ids = [r["run_id"] for r in await svc.runs.active_for_thread(body.thread_id)]
    else:
        run_ids = body.run_ids or []
    access = Access(svc, user)
    for rid in run_ids:
        run = await svc.runs.find(rid)
        if run is None or (body.thread_id and run["thread_id"] != body.thread_id):
            continue
        if not await access.run_visible(run, "update"):
            continue
        if run["status"] in ("pending", "running"):
            await svc.engine.cancel(run, action)
