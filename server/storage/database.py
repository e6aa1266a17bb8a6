"""A small async SQL layer shared by the SQLite and PostgreSQL backends.

The server's own tables use portable SQL (TEXT JSON, ISO timestamps, ON CONFLICT, RETURNING) written with `?`
placeholders; the PostgreSQL backend rewrites them to `%s`. The only dialect-specific pieces are the JSON
containment test used by metadata filters and row locking, exposed as methods here.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from interlock.server.settings import is_postgres, sqlite_path
from interlock.server.storage.metadata_index import indexed_expression
from interlock.server.storage.sqlite_busy import begin_immediate, retry_busy
from interlock.server.storage.wal_checkpoints import disable_autocheckpoint

Row = dict[str, Any]
_PLACEHOLDER = re.compile(r"\?")


class Database:
    """Async access to the server's tables. Subclasses implement the four primitives."""

    dialect: str = "abstract"

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; returns the affected row count."""
        raise NotImplementedError

    async def executescript(self, sql: str) -> None:
        raise NotImplementedError

    def transaction(self) -> Any:
        """`async with db.transaction() as tx:` where tx has fetchall/fetchone/execute."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    # -- dialect pieces -------------------------------------------------------------------------------
    def json_contains(self, column: str, filter_: dict[str, Any]) -> tuple[str, list[Any]]:
        """SQL asserting that the JSON object in `column` contains every key/value of `filter_`."""
        raise NotImplementedError

    @property
    def for_update_skip_locked(self) -> str:
        return ""


class SqliteDatabase(Database):
    """The embedded backend: one sqlite3 connection in WAL mode, called on the event loop thread.

    The server's statements are small indexed reads and writes (tens of microseconds); handing each to a worker
    thread, as aiosqlite does, costs more than the statement itself and showed up as the largest cost in profiles
    of concurrent runs. A lock keeps each transaction whole.
    """

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SqliteDatabase:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # No busy handler: it sleeps on the event loop thread. Another process's lock is waited out asynchronously.
        conn.execute("PRAGMA busy_timeout=0")
        # The server checkpoints the log in a worker thread (storage.wal_checkpoints), not inside commits here.
        disable_autocheckpoint(conn)
        return cls(conn)

    def _fetchall(self, sql: str, params: Sequence[Any]) -> list[Row]:
        cur = self._conn.execute(sql, tuple(params))
        try:
            return [dict(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def _execute(self, sql: str, params: Sequence[Any]) -> int:
        cur = self._conn.execute(sql, tuple(params))
        try:
            return cur.rowcount
        finally:
            cur.close()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        if self._lock.locked():
            async with self._lock:
                return await retry_busy(lambda: self._fetchall(sql, params))
        return await retry_busy(lambda: self._fetchall(sql, params))

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        if self._lock.locked():
            async with self._lock:
                return await retry_busy(lambda: self._execute(sql, params))
        return await retry_busy(lambda: self._execute(sql, params))

    async def executescript(self, sql: str) -> None:
        async with self._lock:
            await retry_busy(lambda: self._conn.executescript(sql))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteTx]:
        await begin_immediate(self._lock, self._conn)
        try:
            yield _SqliteTx(self)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")
        finally:
            self._lock.release()

    async def close(self) -> None:
        self._conn.close()

    def json_contains(self, column: str, filter_: dict[str, Any]) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for key, value in filter_.items():
            path = '$."' + str(key).replace('"', '""') + '"'
            if isinstance(value, dict | list):
                # Compare canonical JSON text of nested values.
                clauses.append(f"json(json_extract({column}, ?)) = json(?)")
                params += [path, orjson.dumps(value).decode()]
            elif value is None:
                clauses.append(f"json_type({column}, ?) = 'null'")
                params.append(path)
            elif isinstance(value, bool):
                clauses.append(f"json_type({column}, ?) = ?")
                params += [path, "true" if value else "false"]
            elif expr := indexed_expression(column, str(key)):
                clauses.append(f"{expr} = ?")  # the literal path, so the expression index applies
                params.append(value)
            else:
                clauses.append(f"json_extract({column}, ?) = ?")
                params += [path, value]
        return (" AND ".join(clauses) or "1=1"), params


class _SqliteTx:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._db._fetchall(sql, params)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self._db._fetchall(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._db._execute(sql, params)


class PostgresDatabase(Database):
    """A psycopg async pool. `?` placeholders are rewritten to `%s` once per statement text."""

    dialect = "postgres"

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self._sql_cache: dict[str, str] = {}

    @classmethod
    async def open(cls, url: str, max_size: int = 20) -> PostgresDatabase:
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        pool = AsyncConnectionPool(
            url,
            min_size=2,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row, "prepare_threshold": None},
        )
        await pool.open(wait=True, timeout=15)
        return cls(pool)

    def _sql(self, sql: str) -> str:
        out = self._sql_cache.get(sql)
        if out is None:
            out = _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))
            self._sql_cache[sql] = out
        return out

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(self._sql(sql), tuple(params))
            return list(await cur.fetchall()) if cur.description else []

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(self._sql(sql), tuple(params))
            return cur.rowcount

    async def executescript(self, sql: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(sql)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PostgresTx]:
        async with self.pool.connection() as conn, conn.transaction():
            yield _PostgresTx(self, conn)

    async def close(self) -> None:
        await self.pool.close()

    def json_contains(self, column: str, filter_: dict[str, Any]) -> tuple[str, list[Any]]:
        if not filter_:
            return "1=1", []
        return f"({column})::jsonb @> (?)::jsonb", [orjson.dumps(filter_).decode()]

    @property
    def for_update_skip_locked(self) -> str:
        return " FOR UPDATE SKIP LOCKED"


class _PostgresTx:
    def __init__(self, db: PostgresDatabase, conn: Any) -> None:
        self._db = db
        self._conn = conn

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = await self._conn.execute(self._db._sql(sql), tuple(params))
        return list(await cur.fetchall()) if cur.description else []

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = await self._conn.execute(self._db._sql(sql), tuple(params))
        return cur.rowcount


async def connect(url: str) -> Database:
    if is_postgres(url):
        return await PostgresDatabase.open(url)
    return await SqliteDatabase.open(sqlite_path(url))
