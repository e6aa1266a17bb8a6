"""Interlock's one async SQL layer, for the embedded SQLite file and for PostgreSQL.

Every table (the server's, the approval and audit stores') uses portable SQL (TEXT JSON, ISO timestamps,
ON CONFLICT, RETURNING) written with `?` placeholders; the PostgreSQL backend rewrites them to `%s`. The only
dialect-specific pieces are the JSON containment test used by metadata filters, row locking and idempotent DDL,
exposed as methods here.

`connect(url)` opens a backend for a server that owns its event loop; `LazyDatabase` is for stores used from
whichever loop calls them (graph nodes, MCP servers, the CLI, tests): it connects on first use and reconnects
when called from another loop.
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

from interlock.kernel.metadata_index import indexed_expression
from interlock.kernel.settings import database_url, get_settings, is_postgres, sqlite_path
from interlock.kernel.sqlite_busy import begin_immediate, retry_busy
from interlock.kernel.wal_checkpoints import disable_autocheckpoint

Row = dict[str, Any]
_PLACEHOLDER = re.compile(r"\?")


class DependencyUnavailable(Exception):
    """A backing service (database, Redis) did not answer in time; the API answers 503 naming it."""

    def __init__(self, dependency: str, reason: str) -> None:
        super().__init__(f"{dependency} unavailable: {reason}")
        self.dependency = dependency
        self.reason = reason


def pool_options(timeout: float) -> dict[str, Any]:
    """psycopg pool settings shared by the server's pools: connections are checked before use (a connection the
    database dropped is replaced, not handed to a query), and a caller waits at most `timeout` for one."""
    return {"check": check_pooled_connection, "timeout": timeout}


async def check_pooled_connection(conn: Any) -> None:
    """The pool's check on every checkout, without a round trip when the connection is plainly alive.

    psycopg's own check (`AsyncConnectionPool.check_connection`) sends an empty query each time: on the run hot
    path that was a third of all statements (21 of 89 per thread-per-run). An idle connection has nothing to
    read; one the server terminated or lost (pg_terminate_backend, shutdown, crash) has its FATAL message or
    EOF waiting on the socket. So: nothing readable and not known broken -> use it; anything else -> psycopg's
    full check, which raises (and the pool discards the connection) when it is dead.
    """
    import select

    from psycopg_pool import AsyncConnectionPool

    try:
        readable = bool(select.select([conn.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        readable = True
    if readable or conn.closed or conn.broken:
        await AsyncConnectionPool.check_connection(conn)


def connect_kwargs(timeout: float) -> dict[str, Any]:
    return {"connect_timeout": max(1, int(round(timeout)))}


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

    def transaction(self, *, pipelined: bool = False) -> Any:
        """`async with db.transaction() as tx:` where tx has fetchall/fetchone/execute/batch/defer.
        `pipelined` (PostgreSQL): see PostgresDatabase.transaction."""
        raise NotImplementedError

    async def fetch_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Row]]:
        """Several independent reads; on PostgreSQL one round trip (one snapshot)."""
        return [await self.fetchall(sql, params) for sql, params in statements]

    async def batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Run `statements` in order in one transaction; each result is its rows (a statement that returns rows)
        or its affected row count. For writes whose parameters do not depend on each other's results: on
        PostgreSQL they travel in one pipeline (one round trip)."""
        async with self.transaction() as tx:
            return [await tx.run(sql, params) for sql, params in statements]

    async def script(self, statements: Sequence[str]) -> None:
        """Run idempotent DDL (`CREATE ... IF NOT EXISTS`), each statement verbatim (no placeholders)."""
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
        # No busy handler: it sleeps on the event loop thread. Another process's lock is waited out asynchronously,
        # from the first statement on (the switch to WAL, as in sqlite_busy.switch_to_wal, but without blocking).
        conn.execute("PRAGMA busy_timeout=0")
        await retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL"))
        conn.execute("PRAGMA synchronous=NORMAL")
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

    async def script(self, statements: Sequence[str]) -> None:
        async with self._lock:
            for statement in statements:
                self._conn.execute(statement)

    @asynccontextmanager
    async def transaction(self, *, pipelined: bool = False) -> AsyncIterator[_SqliteTx]:
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

    async def run(self, sql: str, params: Sequence[Any] = ()) -> list[Row] | int:
        cur = self._db._conn.execute(sql, tuple(params))
        try:
            return [dict(r) for r in cur.fetchall()] if cur.description else cur.rowcount
        finally:
            cur.close()

    async def batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        return [await self.run(sql, params) for sql, params in statements]

    async def defer(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> Deferred:
        return Deferred(results=await self.batch(statements))


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

        timeout = get_settings().db_timeout_seconds
        pool = AsyncConnectionPool(
            url,
            min_size=min(2, max_size),
            max_size=max_size,
            open=False,
            # Server-side prepared statements from a statement's second use on a connection: the hot path repeats
            # a few dozen statement texts, which PostgreSQL then neither parses nor plans again (the checkpointer's
            # pool prepares from the first use).
            kwargs={"autocommit": True, "row_factory": dict_row, "prepare_threshold": 1, **connect_kwargs(timeout)},
            **pool_options(timeout),
        )
        await pool.open(wait=True, timeout=15)
        return cls(pool)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection; waiting too long for one means the database is unavailable (503, not a hang)."""
        from psycopg_pool import PoolTimeout

        try:
            async with self.pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise DependencyUnavailable("database", "no connection within the timeout") from exc

    def _sql(self, sql: str) -> str:
        out = self._sql_cache.get(sql)
        if out is None:
            out = _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))
            self._sql_cache[sql] = out
        return out

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._connection() as conn:
            cur = await conn.execute(self._sql(sql), tuple(params))
            return list(await cur.fetchall()) if cur.description else []

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._connection() as conn:
            cur = await conn.execute(self._sql(sql), tuple(params))
            return cur.rowcount

    async def executescript(self, sql: str) -> None:
        async with self._connection() as conn:
            await conn.execute(sql)

    async def script(self, statements: Sequence[str]) -> None:
        # One transaction under an advisory lock: several processes starting at once would otherwise race on
        # `CREATE IF NOT EXISTS` / `CREATE OR REPLACE` ("tuple concurrently updated").
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(74210013)")
            for statement in statements:
                await conn.execute(statement)

    @asynccontextmanager
    async def transaction(self, *, pipelined: bool = False) -> AsyncIterator[_PostgresTx]:
        """`pipelined`: BEGIN travels with the first statement and COMMIT with the statements queued by
        `tx.defer`, each group as one message (a claim: two round trips instead of one per command)."""
        if not pipelined:
            async with self._connection() as conn, conn.transaction():
                yield _PostgresTx(self, conn)
            return
        async with self._connection() as conn:
            tx = _PostgresTx(self, conn, pipelined=True)
            try:
                yield tx
                await tx._commit()
            except BaseException:
                await tx._rollback()
                raise

    async def batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        # One message with no BEGIN/COMMIT: PostgreSQL runs a multi-statement query as one implicit transaction
        # (all or nothing, as an explicit one, with two commands fewer).
        async with self._connection() as conn:
            return await self.send(conn, statements)

    async def fetch_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Row]]:
        async with self._connection() as conn:
            return [rows if isinstance(rows, list) else [] for rows in await self.send(conn, statements)]

    async def send(self, conn: Any, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """`statements` as one multi-statement query (one round trip, one wait on the socket); each result is its
        rows or its affected row count.

        The parameters are bound client-side (psycopg's escaping) because only the simple query protocol carries
        several statements. Profiles of the run hot path showed psycopg's per-command socket waits (a pipeline
        waits once per statement) as the largest cost of PostgreSQL over SQLite; this is one wait per batch.
        """
        from psycopg import AsyncClientCursor

        if not statements:
            return []
        if len(statements) == 1:
            # One statement keeps the extended protocol: server-side binding and a prepared statement.
            text, values = statements[0]
            cur = await conn.execute(self._sql(text), tuple(values))
            return [list(await cur.fetchall()) if cur.description else cur.rowcount]
        sql = "; ".join(self._sql(text.strip().rstrip(";")) for text, _ in statements)
        params = [value for _, values in statements for value in values]
        async with AsyncClientCursor(conn) as cur:
            await cur.execute(sql, params)
            results: list[Any] = []
            while True:
                results.append(list(await cur.fetchall()) if cur.description else cur.rowcount)
                if not cur.nextset():
                    break
        if len(results) != len(statements):
            raise RuntimeError(f"{len(statements)} statements gave {len(results)} results")
        return results

    async def close(self) -> None:
        await self.pool.close(timeout=2)

    def json_contains(self, column: str, filter_: dict[str, Any]) -> tuple[str, list[Any]]:
        if not filter_:
            return "1=1", []
        return f"({column})::jsonb @> (?)::jsonb", [orjson.dumps(filter_).decode()]

    @property
    def for_update_skip_locked(self) -> str:
        return " FOR UPDATE SKIP LOCKED"


class Deferred:
    """The results of statements queued with `tx.defer`, readable once the transaction block has ended."""

    def __init__(self, results: list[Any] | None = None) -> None:
        self._results = results

    def fill(self, results: list[Any]) -> None:
        """Set by the transaction when its block ends and the statements have run."""
        self._results = results

    async def results(self) -> list[Any]:
        """Each statement's rows (when it returns rows) or affected row count."""
        if self._results is None:
            raise RuntimeError("deferred results are read after the transaction block")
        return self._results


class _PostgresTx:
    def __init__(self, db: PostgresDatabase, conn: Any, *, pipelined: bool = False) -> None:
        self._db = db
        self._conn = conn
        self._pipelined = pipelined
        self._begun = False
        self._deferred: list[tuple[str, Sequence[Any]]] = []
        self._results: Deferred | None = None

    async def _send(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        if not self._pipelined or self._begun:
            return await self._db.send(self._conn, statements)
        self._begun = True
        return (await self._db.send(self._conn, [("BEGIN", ()), *statements]))[1:]

    async def _commit(self) -> None:
        """End of a pipelined block: the deferred statements, then COMMIT, in one message."""
        if self._deferred:
            results = await self._send([*self._deferred, ("COMMIT", ())])
            assert self._results is not None
            self._results.fill(results[:-1])
        elif self._begun:
            await self._db.send(self._conn, [("COMMIT", ())])

    async def _rollback(self) -> None:
        import psycopg

        if self._begun:
            try:
                await self._db.send(self._conn, [("ROLLBACK", ())])
            except psycopg.Error:
                pass  # a broken connection: the pool discards it, and the server ended the transaction

    async def defer(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> Deferred:
        """Queue the transaction's last statements: in a pipelined transaction they go with its COMMIT (their
        results are read after the block); otherwise they run now, together."""
        if not self._pipelined:
            return Deferred(results=await self.batch(statements))
        self._deferred.extend(statements)
        self._results = Deferred(results=None)
        return self._results

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        (rows,) = await self._send([(sql, params)])
        return rows if isinstance(rows, list) else []

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        (result,) = await self._send([(sql, params)])
        return len(result) if isinstance(result, list) else result

    async def run(self, sql: str, params: Sequence[Any] = ()) -> list[Row] | int:
        (result,) = await self._send([(sql, params)])
        return result

    async def batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Statements in order, sent together (one round trip); results as in `Database.batch`."""
        return await self._send(statements)


async def connect(url: str, *, max_size: int | None = None) -> Database:
    """Open the backend for `url` (`max_size`: PostgreSQL pool connections; default INTERLOCK_DB_POOL_SIZE)."""
    if is_postgres(url):
        return await PostgresDatabase.open(url, max_size=max_size or get_settings().db_pool_size)
    return await SqliteDatabase.open(sqlite_path(url))


class LazyDatabase:
    """The database at `url` (default: the configured one), connected on first use in the running event loop.

    A store built at import or in one loop (a test, the CLI) may be called from another: the connection of the
    old loop cannot be awaited there, so it is dropped (SQLite closed) and a new one opened.
    """

    def __init__(self, url: str | None = None, *, max_size: int = 4) -> None:
        self.url = url or database_url()
        self.postgres = is_postgres(self.url)
        self.max_size = max_size
        self._db: Database | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None

    async def _current(self) -> Database:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._db is not None:
            return self._db
        if self._loop is not loop:
            if isinstance(self._db, SqliteDatabase):
                self._db._conn.close()  # a plain sqlite3 connection closes from any thread
            self._db, self._loop, self._opening = None, loop, asyncio.Lock()
        assert self._opening is not None
        async with self._opening:
            if self._db is None:
                self._db = await connect(self.url, max_size=self.max_size)
        return self._db

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await (await self._current()).fetchall(sql, params)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return await (await self._current()).fetchone(sql, params)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the affected row count."""
        return await (await self._current()).execute(sql, params)

    async def script(self, statements: Sequence[str]) -> None:
        await (await self._current()).script(statements)

    async def close(self) -> None:
        db, loop = self._db, self._loop
        self._db = self._loop = self._opening = None
        if db is not None and loop is asyncio.get_running_loop():
            await db.close()
        elif isinstance(db, SqliteDatabase):
            db._conn.close()
