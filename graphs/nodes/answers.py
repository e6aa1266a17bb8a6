"""Delivering an answer: through the output guard before it enters the state, then streamed to clients."""

from __future__ import annotations

from typing import Any

from interlock.graphs.models import relay_to_client


async def deliver(guards: Any, state: Any, update: dict[str, Any]) -> dict[str, Any]:
    """`update["messages"][-1]` is the draft answer; it is replaced by the guarded, relayed one.

    Guarding where the answer is written keeps raw model text out of every stream mode; `guards` is the guard
    module, or None for graphs built without guards (tests), which still stream their answers."""
    message = update["messages"][-1]
    if guards is None:
        update["messages"] = [await relay_to_client(message)]
        return update
    guarded, verdicts = await guards.guard_answer(dict(state), message)
    update["messages"] = [guarded]
    update["guard_verdicts"] = [*(update.get("guard_verdicts") or []), *verdicts]
    return update
