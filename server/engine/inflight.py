"""The runs executing in this process: their tasks, pending cancel actions and completion events. Shared by the
queue (which launches them), the leases (which learn of remote cancel requests) and cancellation."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class Inflight:
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    cancel_actions: dict[str, str] = field(default_factory=dict)
    finished: dict[str, asyncio.Event] = field(default_factory=dict)

    def interrupt(self, run_id: str, action: str) -> bool:
        """Cancel the run's task with `action` (interrupt, rollback, shutdown); False when it is not running here."""
        task = self.tasks.get(run_id)
        if task is None or task.done():
            return False
        self.cancel_actions[run_id] = action
        task.cancel()
        return True

    def mark_finished(self, run_id: str) -> None:
        event = self.finished.pop(run_id, None)
        if event is not None:
            event.set()
