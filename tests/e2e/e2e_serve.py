"""Start `interlock serve` with the scripted chat model instrumented for the end-to-end tests.

Two additions, both to the scripted (fake) model only, never to the code under test:
- every call's messages are appended as one JSON line to $INTERLOCK_E2E_MODEL_LOG: the exact provider
  payload, so a test can prove what a model provider would have been sent;
- the script file is re-read when its content changes, so one server process can play many scenarios
  (a test rewrites the script, the next model call starts from its first reply).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any


def _instrument() -> None:
    from interlock.graphs.models import ScriptedChatModel

    log_path = os.environ.get("INTERLOCK_E2E_MODEL_LOG")
    sources: dict[int, list[Any]] = {}  # id(model) -> [script path, digest of the loaded content]
    hijacked: dict[int, str] = {}  # id(model) -> the script's "hijack" mode (e2e_hijacked.py), when it has one
    lock = threading.Lock()
    load = ScriptedChatModel.from_file.__func__  # type: ignore[attr-defined]

    def from_file(cls: type[ScriptedChatModel], path: str | Path) -> ScriptedChatModel:
        model = load(cls, path)
        sources[id(model)] = [Path(path), hashlib.sha256(Path(path).read_bytes()).hexdigest()]
        return model

    def refresh(model: ScriptedChatModel) -> str:
        entry = sources.get(id(model))
        if entry is None:
            return "?"
        path, digest = entry
        current = hashlib.sha256(path.read_bytes()).hexdigest()
        if current != digest:
            fresh = load(ScriptedChatModel, path)
            for name in ("replies", "repeat", "delay_s", "fail_status"):
                setattr(model, name, getattr(fresh, name))
            model._index = 0
            entry[1] = current
            mode = json.loads(path.read_text()).get("hijack")
            if mode:
                hijacked[id(model)] = str(mode)
            else:
                hijacked.pop(id(model), None)
        return path.stem

    def record(script: str, messages: list[Any]) -> None:
        if not log_path:
            return
        payload = [
            {"type": m.type, "content": m.content, "tool_calls": getattr(m, "tool_calls", None) or []}
            for m in messages
        ]
        line = json.dumps({"script": script, "messages": payload}, default=str)
        with lock, open(log_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    generate = ScriptedChatModel._generate
    agenerate = ScriptedChatModel._agenerate

    def _generate(self: ScriptedChatModel, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
        record(refresh(self), messages)
        return generate(self, messages, *args, **kwargs)

    async def _agenerate(self: ScriptedChatModel, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
        record(refresh(self), messages)
        if id(self) in hijacked:
            from e2e_hijacked import reply
            from langchain_core.outputs import ChatGeneration, ChatResult

            message = reply(messages, hijacked[id(self)])
            message.usage_metadata = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
            return ChatResult(generations=[ChatGeneration(message=message)])
        return await agenerate(self, messages, *args, **kwargs)

    ScriptedChatModel.from_file = classmethod(from_file)  # type: ignore[method-assign,assignment]
    ScriptedChatModel._generate = _generate  # type: ignore[method-assign]
    ScriptedChatModel._agenerate = _agenerate  # type: ignore[method-assign]


_instrument()

from interlock.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
