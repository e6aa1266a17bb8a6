"""A run as the engine executes it: the queue row plus its options, parsed once (they are stored as JSON in
`runs.kwargs` and echoed by the API as `kwargs`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from interlock.server.serialization import loads
from langgraph.types import Command, Send
from pydantic import BaseModel, ConfigDict

EPHEMERAL = 2  # runs.temporary: a stateless run with no thread row and in-memory checkpoints


class RunOptions(BaseModel):
    """What a caller asked a run to do; stored verbatim in `runs.kwargs`."""

    model_config = ConfigDict(extra="ignore")

    input: Any = None
    command: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    stream_mode: list[str] = ["values"]
    subgraphs: bool = False
    resumable: bool = False
    interrupt_before: Any = None
    interrupt_after: Any = None
    checkpoint: dict[str, Any] | None = None
    durability: str | None = None
    on_disconnect: str = "cancel"
    on_completion: str = "keep"
    user: dict[str, Any] | None = None
    # The owning keys the auth hook stamped (its filter's plain values): a run by id is visible only to callers
    # whose filter matches them (server/authorization.py).
    owner: dict[str, Any] | None = None
    webhook: str | None = None

    def tenant(self) -> str | None:
        """The tenant a run bills to: from the authenticated user, else (local development) the run's config."""
        return run_tenant(self.user, self.config)


def run_tenant(user: dict[str, Any] | None, config: dict[str, Any] | None) -> str | None:
    tenant = (user or {}).get("tenant_id") or (user or {}).get("tenant")
    if tenant:
        return str(tenant)
    configurable = (config or {}).get("configurable") or {}
    value = configurable.get("tenant") or configurable.get("tenant_id")
    return str(value) if value else None


@dataclass(frozen=True)
class RunJob:
    """One claimed attempt of a run."""

    run_id: str
    thread_id: str
    assistant_id: str
    attempt: int
    temporary: int
    checkpoint_before: str | None
    metadata: dict[str, Any]
    options: RunOptions
    row: dict[str, Any]  # the queue row as claimed, for `run_out` in webhooks
    fresh_thread: bool = False  # claimed on a thread that has no checkpoint yet (runs.FRESH_THREAD)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunJob:
        return cls(
            run_id=row["run_id"],
            thread_id=row["thread_id"],
            assistant_id=row["assistant_id"],
            attempt=int(row["attempt"]),
            temporary=int(row["temporary"]),
            checkpoint_before=row["checkpoint_before"],
            metadata=loads(row["metadata"]) or {},
            options=RunOptions.model_validate(loads(row["kwargs"]) or {}),
            row=row,
            fresh_thread=bool(row.get("fresh_thread")),
        )

    @property
    def ephemeral(self) -> bool:
        return self.temporary == EPHEMERAL


def build_command(command: dict[str, Any] | None) -> Command | None:
    """The LangGraph Command for an API `command` body."""
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
