"""Async access to Interlock's shared database (SQLite file or PostgreSQL) for the approval and audit stores.

SQL is written once with `?` placeholders; for PostgreSQL they are rewritten to `%s`. SQLite runs in WAL
mode with a busy timeout because the graph server, every MCP server and the CLI write the same file.
Connections are opened lazily and re-opened if the store is used from another event loop (tests, CLI).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import aiosqlite
from interlock.server import settings

_PLACEHOLDER = re.compile(r"\?")


class Database:
    """One lazily opened connection (SQLite) or pool (PostgreSQL) for a URL."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or settings.database_url()
        self.postgres = settings.is_postgres(self.url)
        self._sqlite: aiosqlite.Connection | None = None
        self._pool: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    async def _ensure(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and (self._sqlite is not None or self._pool is not None):
            return
        if self._loop is not loop:
            if self._sqlite is not None:
                self._sqlite.stop()  # bound to another loop: stop its worker thread without awaiting
            self._sqlite = None
            self._pool = None
        self._loop = loop
        self._lock = asyncio.Lock()
        if self.postgres:
            from psycopg_pool import AsyncConnectionPool

            pool = AsyncConnectionPool(self.url, min_size=1, max_size=4, open=False, kwargs={"autocommit": True})
            await pool.open(wait=True, timeout=10)
            self._pool = pool
        else:
            path = settings.sqlite_path(self.url)
            conn = aiosqlite.connect(path, timeout=10, isolation_level=None)
            worker = getattr(conn, "_thread", None)
            if worker is not None:
                worker.daemon = True  # an unclosed store must not keep the interpreter alive at exit
            await conn
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA busy_timeout=10000")
            self._sqlite = conn

    def _sql(self, sql: str) -> str:
        return _PLACEHOLDER.sub("%s", sql) if self.postgres else sql

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the affected row count."""
        await self._ensure()
        if self.postgres:
            async with self._pool.connection() as conn:
                cur = await conn.execute(self._sql(sql), params)
                return cur.rowcount
        assert self._sqlite is not None and self._lock is not None
        async with self._lock:
            cur = await self._sqlite.execute(sql, params)
            return cur.rowcount

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        await self._ensure()
        if self.postgres:
            from psycopg.rows import dict_row

            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(self._sql(sql), params)
                return list(await cur.fetchall())
        assert self._sqlite is not None and self._lock is not None
        async with self._lock:
            cur = await self._sqlite.execute(sql, params)
            cols = [c[0] for c in cur.description or ()]
            return [dict(zip(cols, row, strict=True)) for row in await cur.fetchall()]

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def script(self, statements: Sequence[str]) -> None:
        """Run idempotent DDL (`CREATE ... IF NOT EXISTS`).

        On PostgreSQL it runs in one transaction under an advisory lock: several processes starting at once
        would otherwise race on `CREATE IF NOT EXISTS` / `CREATE OR REPLACE` ("tuple concurrently updated").
        """
        await self._ensure()
        if self.postgres:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(74210013)")
                for stmt in statements:
                    await conn.execute(stmt)
            return
        for stmt in statements:
            await self.execute(stmt)

    async def close(self) -> None:
        if self._sqlite is not None and self._loop is asyncio.get_running_loop():
            await self._sqlite.close()
        if self._pool is not None and self._loop is asyncio.get_running_loop():
            await self._pool.close()
        self._sqlite = None
        self._pool = None
        self._loop = None
