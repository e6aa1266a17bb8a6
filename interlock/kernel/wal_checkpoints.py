"""WAL checkpoints of the embedded database, off the event loop.

SQLite checkpoints the write-ahead log automatically, inside whichever commit crosses 1000 pages: it copies the
log into the database file and fsyncs it, tens of milliseconds on this machine class and more under disk load,
and on the server's connections that commit runs on the event-loop thread. Those connections run with
`wal_autocheckpoint=0`; this task checkpoints instead, in a worker thread on a connection of its own. PASSIVE
checkpoints take no lock that writers or readers wait on; they copy what they can and the rest goes next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

log = logging.getLogger("interlock.storage")

INTERVAL_SECONDS = 0.25  # the log grows by what is written in between (each commit rewrites a few pages)
LOG_SIZE_LIMIT = 32 * 1024 * 1024  # the log file is truncated back to this after a checkpoint lets it restart


def disable_autocheckpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute(f"PRAGMA journal_size_limit={LOG_SIZE_LIMIT}")


@asynccontextmanager
async def background_checkpoints(path: str, interval: float = INTERVAL_SECONDS) -> AsyncIterator[None]:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=0")
    conn.execute(f"PRAGMA journal_size_limit={LOG_SIZE_LIMIT}")

    def checkpoint() -> None:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(checkpoint)
            except sqlite3.OperationalError as exc:  # busy or locked: the next round catches up
                log.debug("wal checkpoint skipped: %s", exc)

    task = asyncio.create_task(loop(), name="interlock-wal-checkpoint")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # One last pass, so a stopped server leaves a small log behind.
        with contextlib.suppress(sqlite3.OperationalError):
            await asyncio.to_thread(checkpoint)
        conn.close()
