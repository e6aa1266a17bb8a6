"""Start `interlock serve` recording which of Interlock's own files a request runs, in first-entered order.

SIGUSR1 starts a recording (after a warm-up request, so lazy imports and caches are not counted), SIGUSR2 writes it
to $INTERLOCK_E2E_PATH_LOG as JSON. Recording stops by itself when the approval node interrupts the run: the path
measured is the one from the HTTP request to the approval interrupt. Instrumentation only; the code under test is
unchanged.

Two lists: every file one of whose functions ran (`files`), and the hand-offs (`handoffs`): the files on the
request's stack when it hands the run to the engine, then those on the run's stack at the interrupt, through the
tasks and worker threads that led there (each new task carries its creator's files in a context variable).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OWN = tuple(f"{ROOT / folder}{os.sep}" for folder in ("server", "graphs", "tools", "policies", "mcp_servers",
                                                       "evals", "interlock"))
STOP_AT = (str(ROOT / "graphs" / "nodes" / "approval.py"), "await_approval")
HANDOFF = (str(ROOT / "server" / "engine" / "__init__.py"), "submitted")  # the request hands its run to the engine
EVENT_LOOP_STEP = asyncio.events.__file__  # Handle._run: where the event loop steps a task
_state: dict[str, Any] = {"on": False, "files": [], "handoff": [], "chain": []}
# Interlock's files on the stacks that created the running task (or, through the copied context, the task that
# handed a synchronous node to a worker thread), outermost first.
_ancestry: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("path_ancestry", default=())


def _stack_files(frame: FrameType | None) -> list[str]:
    """Interlock's files on the stack, outermost first, after those of the tasks that led here (a coroutine's own
    stack is its chain of awaits; a new task or a worker thread starts a new one)."""
    files: list[str] = []
    while frame is not None and frame.f_code.co_filename != EVENT_LOOP_STEP:  # below it: the loop, not a task
        name = frame.f_code.co_filename
        if name.startswith(OWN) and name not in files:
            files.append(name)
        frame = frame.f_back
    ancestry = list(_ancestry.get())
    return ancestry + [f for f in files[::-1] if f not in ancestry]


_create_task = asyncio.BaseEventLoop.create_task


def _recording_create_task(self: asyncio.BaseEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
    if _state["on"]:
        context = kwargs.pop("context", None) or contextvars.copy_context()
        context.run(_ancestry.set, tuple(_stack_files(sys._getframe(1))))
        kwargs["context"] = context
    return _create_task(self, coro, **kwargs)


asyncio.BaseEventLoop.create_task = _recording_create_task  # type: ignore[method-assign]


def _profile(frame: FrameType, event: str, arg: Any) -> None:
    if event != "call" or not _state["on"]:
        return
    code = frame.f_code
    if code.co_filename.startswith(OWN) and code.co_filename not in _state["files"]:
        _state["files"].append(code.co_filename)
    if (code.co_filename, code.co_name) == HANDOFF and not _state["handoff"]:
        _state["handoff"] = _stack_files(frame)
    if (code.co_filename, code.co_name) == STOP_AT:
        _state["chain"] = _stack_files(frame)  # the run's own stack at the interrupt
        _state["on"] = False


def _start(signum: int, frame: FrameType | None) -> None:
    _state.update(on=True, files=[], handoff=[], chain=[])


def _dump(signum: int, frame: FrameType | None) -> None:
    _state["on"] = False

    def relative(files: list[str]) -> list[str]:
        return [str(Path(f).relative_to(ROOT)) for f in files]

    chain = relative(_state["handoff"]) + [f for f in relative(_state["chain"]) if f not in relative(_state["handoff"])]
    Path(os.environ["INTERLOCK_E2E_PATH_LOG"]).write_text(json.dumps({"files": relative(_state["files"]),
                                                                       "handoffs": chain}))


signal.signal(signal.SIGUSR1, _start)
signal.signal(signal.SIGUSR2, _dump)
threading.setprofile(_profile)
sys.setprofile(_profile)

from interlock.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
