"""Answers: a final message that says which mode produced it, and its delivery through the output guard."""

from __future__ import annotations

from typing import Any

from interlock.graphs.models import relay_to_client
from interlock.graphs.nodes import guards as guard_nodes
from interlock.graphs.nodes.answer_stream import ProgressiveAnswer
from langchain_core.messages import AIMessage

_MODE_NOTES = {
    "zero-key": "\n\n(zero-key mode: rule-based, no language model)",
    "degraded": "\n\n(degraded mode: no language model answered, so rules handled this)",
}


def final_message(text: str, mode: str, outcome: str, **meta: Any) -> AIMessage:
    """An answer that says which mode produced it, in the text and in metadata."""
    return AIMessage(content=text + _MODE_NOTES.get(mode, ""), name="interlock",
                     response_metadata={"interlock_mode": mode, "outcome": outcome, **meta})


async def deliver(use_guards: bool, state: Any, update: dict[str, Any],
                  stream: ProgressiveAnswer | None = None) -> dict[str, Any]:
    """`update["messages"][-1]` is the draft answer; it is replaced by the guarded, relayed one.

    Guarding where the answer is written keeps raw model text out of every stream mode. Graphs built without
    guards (`use_guards=False`, tests only) still stream their answers. With `stream` (the answer's model call
    streamed through it), the answer is finished under the id its released chunks carry."""
    message = update["messages"][-1]
    if stream is not None:
        finished, verdicts = await stream.finish(message)
        update["messages"] = [*update["messages"][:-1], finished]
        update["guard_verdicts"] = [*(update.get("guard_verdicts") or []), *verdicts]
        return update
    if not use_guards:
        update["messages"] = [await relay_to_client(message)]
        return update
    guarded, verdicts = await guard_nodes.guard_answer(dict(state), message)
    update["messages"] = [guarded]
    update["guard_verdicts"] = [*(update.get("guard_verdicts") or []), *verdicts]
    return update
