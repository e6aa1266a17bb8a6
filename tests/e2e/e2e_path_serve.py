"""Start `interlock serve` recording which of Interlock's own files a request runs, in first-entered order.

SIGUSR1 starts a recording (after a warm-up request, so lazy imports and caches are not counted), SIGUSR2 writes it
to $INTERLOCK_E2E_PATH_LOG as JSON. Recording stops by itself when the approval node interrupts the run: the path
measured is the one from the HTTP request to the approval interrupt. Instrumentation only; the code under test is
unchanged.

Two lists: every file one of whose functions ran (`files`), and the hand-offs (`handoffs`): the files on the
request's stack when it hands the run to the engine, then those on the run's stack at the interrupt.
"""

from __future__ import annotations

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
HANDLER = str(ROOT / "server" / "api" / "runs.py")
ENGINE = f"{ROOT / 'server' / 'engine'}{os.sep}"
_state: dict[str, Any] = {"on": False, "files": [], "handoff": [], "chain": []}


def _stack_files(frame: FrameType | None) -> list[str]:
    """Interlock's files on the stack, outermost first (a coroutine's stack is its chain of awaits)."""
    files: list[str] = []
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(OWN) and name not in files:
            files.append(name)
        frame = frame.f_back
    return files[::-1]


def _profile(frame: FrameType, event: str, arg: Any) -> None:
    if event != "call" or not _state["on"]:
        return
    code = frame.f_code
    if code.co_filename.startswith(OWN) and code.co_filename not in _state["files"]:
        _state["files"].append(code.co_filename)
    if not _state["handoff"] and code.co_filename.startswith(ENGINE):
        stack = _stack_files(frame)
        if HANDLER in stack:  # the request handing its run to the engine
            _state["handoff"] = stack
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
