"""Start `interlock serve` recording which of Interlock's own files a request runs, in first-entered order.

SIGUSR1 starts a recording (after a warm-up request, so lazy imports and caches are not counted), SIGUSR2 writes it
to $INTERLOCK_E2E_PATH_LOG as JSON. Recording stops by itself when the approval node interrupts the run: the path
measured is the one from the HTTP request to the approval interrupt. Instrumentation only; the code under test is
unchanged.
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
_state: dict[str, Any] = {"on": False, "files": []}


def _profile(frame: FrameType, event: str, arg: Any) -> None:
    if event != "call" or not _state["on"]:
        return
    code = frame.f_code
    if code.co_filename.startswith(OWN) and code.co_filename not in _state["files"]:
        _state["files"].append(code.co_filename)
    if (code.co_filename, code.co_name) == STOP_AT:
        _state["on"] = False


def _start(signum: int, frame: FrameType | None) -> None:
    _state.update(on=True, files=[])


def _dump(signum: int, frame: FrameType | None) -> None:
    _state["on"] = False
    files = [str(Path(f).relative_to(ROOT)) for f in _state["files"]]
    Path(os.environ["INTERLOCK_E2E_PATH_LOG"]).write_text(json.dumps(files))


signal.signal(signal.SIGUSR1, _start)
signal.signal(signal.SIGUSR2, _dump)
threading.setprofile(_profile)
sys.setprofile(_profile)

from interlock.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
