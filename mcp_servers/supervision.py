"""The sample business systems' MCP servers as child processes that live and die with their parent.

`interlock serve --with-mcp` and `interlock mcp all` run one process per system (each its own database,
audience and failure domain). A child must never outlive the process that started it, so:
- each child runs in its own process group (a Ctrl-C in the terminal reaches the parent, which stops them);
- each child asks the kernel to send it SIGTERM when its parent dies (`PR_SET_PDEATHSIG`, set by the child
  itself in `die_with_parent`, so nothing unsafe runs between fork and exec), which covers a SIGKILLed parent;
- a child that crashes is restarted with exponential backoff; a child that keeps crashing is given up on and
  reported, and the parent keeps serving.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from interlock.tools import endpoints

from interlock.kernel.settings import get_settings, variable

log = logging.getLogger("interlock.mcp")

PARENT_ENV = variable("supervisor_pid")
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a supervised child: exit when the supervisor does (Linux; elsewhere the supervisor's stop() does it)."""
    parent = get_settings().supervisor_pid
    if parent is None:
        return
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass
    if os.getppid() != parent:  # the parent died before the request above took effect
        raise SystemExit(0)


@dataclass
class _Child:
    system: str
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started: float = 0.0
    failed: bool = field(default=False)


class Supervisor:
    """Start, watch and stop the MCP servers of `systems` over Streamable HTTP."""

    def __init__(self, systems: tuple[str, ...] = endpoints.SYSTEMS, *, ready_timeout: float = 30.0,
                 max_restarts: int = 5) -> None:
        self.children = [_Child(s) for s in systems]
        self.ready_timeout = ready_timeout
        self.max_restarts = max_restarts
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def _spawn(self, child: _Child) -> None:
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        child.process = subprocess.Popen(
            [sys.executable, "-m", "interlock", "mcp", child.system, "--transport", "http"],
            env=env, start_new_session=True,
        )
        child.started = time.monotonic()

    def start(self) -> list[str]:
        """Start every child and wait until each accepts connections; returns the systems that did not."""
        for child in self.children:
            self._spawn(child)
        late = [c.system for c in self.children if not self._wait_ready(c)]
        for system in late:
            log.warning("MCP server %s not ready after %.0f s (%s)", system, self.ready_timeout,
                        endpoints.canonical_url(system))
        # The watcher is the thread that restarts children, and PR_SET_PDEATHSIG follows the thread that
        # forked: it must live as long as the supervisor does.
        self._watcher = threading.Thread(target=self._watch, name="mcp-supervisor", daemon=True)
        self._watcher.start()
        return late

    def _wait_ready(self, child: _Child) -> bool:
        parts = urlsplit(endpoints.canonical_url(child.system))
        host, port = parts.hostname or "127.0.0.1", endpoints.port_of(endpoints.canonical_url(child.system))
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline and not self._stopping.is_set():
            if child.process is not None and child.process.poll() is not None:
                return False
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.1)
        return False

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                for child in self.children:
                    self._check(child)

    def _check(self, child: _Child) -> None:
        if child.failed or child.process is None or self._stopping.is_set():
            return
        code = child.process.poll()
        if code is None:
            if child.restarts and time.monotonic() - child.started > 60:
                child.restarts = 0  # stable for a minute: forget earlier crashes
            return
        now = time.monotonic()
        if child.next_start == 0.0:
            if child.restarts >= self.max_restarts:
                child.failed = True
                log.error("MCP server %s exited with %s and keeps crashing; not restarting it", child.system, code)
                return
            delay = min(30.0, 0.5 * 2 ** child.restarts)
            child.next_start = now + delay
            log.warning("MCP server %s exited with %s; restarting in %.1f s", child.system, code, delay)
            return
        if now >= child.next_start:
            child.restarts += 1
            child.next_start = 0.0
            self._spawn(child)

    def pids(self) -> list[int]:
        return [c.process.pid for c in self.children if c.process is not None]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every child's process group, then SIGKILL what is still there after `timeout`."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=2)
        with self._lock:
            live = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
            for proc in live:
                _signal_group(proc, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for proc in live:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
