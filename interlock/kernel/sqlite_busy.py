"""Waiting for another SQLite writer without blocking the event loop.

The embedded database's connections used on the event loop thread run with `busy_timeout=0`: SQLite's busy
handler sleeps inside the C call, which would stall every request in the process for as long as another writer
holds the lock. Within one server process no transaction stays open across an await (server tables, checkpoints
and the store all run whole on the loop thread), so a busy error can only come from another process or a worker
thread on the same file; it is retried here after an async sleep, with back-off, up to a deadline.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

BUSY_DEADLINE_SECONDS = 10.0  # what busy_timeout used to be: give up (and raise) after this long


def is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


async def retry_busy(call: Callable[[], T], deadline: float = BUSY_DEADLINE_SECONDS) -> T:
    """Run `call` (synchronous, on the loop thread; it must end its own transaction when it fails, as LangGraph's
    savers and stores do); on a busy error sleep asynchronously and run it again."""
    delay = 0.002
    give_up = time.monotonic() + deadline
    while True:
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > give_up:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


def retry_busy_blocking(call: Callable[[], T], deadline: float = BUSY_DEADLINE_SECONDS) -> T:
    """The same for callers off the event loop (a synchronous graph node in a worker thread): sleeping is fine."""
    delay = 0.002
    give_up = time.monotonic() + deadline
    while True:
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > give_up:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def switch_to_wal(conn: sqlite3.Connection) -> None:
    """`PRAGMA journal_mode=WAL`, retried: the switch fails at once with "database is locked", without calling the
    busy handler, while another process opens the same new file (workers of one server starting together)."""
    retry_busy_blocking(lambda: conn.execute("PRAGMA journal_mode=WAL"))


async def begin_immediate(lock: asyncio.Lock, conn: sqlite3.Connection, deadline: float = BUSY_DEADLINE_SECONDS) -> None:
    """Acquire `lock` and open a write transaction on `conn`; the caller releases the lock after COMMIT/ROLLBACK.

    While another process holds the write lock the coroutine sleeps without holding `lock`, so this process's
    reads and autocommit statements on the same connection keep being served meanwhile.
    """
    delay = 0.002
    give_up = time.monotonic() + deadline
    while True:
        await lock.acquire()
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            lock.release()
            if not is_busy(exc) or time.monotonic() > give_up:
                raise
        except BaseException:
            lock.release()
            raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
