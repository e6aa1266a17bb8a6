"""The long-term store on the embedded database: LangGraph's SqliteStore, called on the event loop thread.

LangGraph's AsyncSqliteStore runs on its own aiosqlite connection (a worker thread) and holds a transaction open
across awaits. While it did, the server's own writes on the event loop thread (the run dispatcher, thread
updates, checkpoints) waited in SQLite's busy handler, which blocks the whole event loop; the store's next
statement needed the loop to be scheduled, so both sat out the full busy timeout ("database is locked", 10 s
stalls). Here every store batch runs start to finish synchronously on the loop thread, like the server tables
and the checkpointer (LoopSqliteSaver): no transaction is ever open while the loop runs something else, so
writers in this process cannot collide. A statement takes tens of microseconds, less than handing it to a
thread, so this is also faster (puts/s roughly doubled).

Query shapes that differ from SqliteStore:
- search in a namespace reads the namespace's newest items from a (prefix, updated_at) index instead of sorting
  all of them: SqliteStore's `prefix = ? OR prefix GLOB ?` cannot deliver rows in index order, so it sorted
  every item of the namespace for each page. The search is split into the exact namespace (index order, no sort)
  and its descendants (sorted, usually empty), merged by SQLite's ordered UNION ALL.
- list_namespaces walks the distinct namespaces with a skip scan of the (prefix, key) primary key, so its cost
  follows the number of namespaces, not the number of items (SqliteStore's SELECT DISTINCT reads every row).
- busy errors from another process on the same file (the only remaining source) are retried with an async
  back-off (see `sqlite_busy`) instead of waiting in SQLite's busy handler on the loop thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from langgraph.store.base import ListNamespacesOp, Op, Result, SearchOp
from langgraph.store.sqlite.base import (
    NS_MATCH_FUNCTION,
    SqliteStore,
    _namespace_match_pattern,
    _namespace_prefix_condition,
)

from interlock.kernel.sqlite_busy import retry_busy, retry_busy_blocking

# Distinct namespaces by repeated "smallest prefix greater than the last one": each step is one seek in the
# primary key index, so listing k namespaces costs O(k log n) whatever the number of items n.
_DISTINCT_PREFIXES = """
    ns(prefix) AS (
        SELECT (SELECT MIN(prefix) FROM store)
        UNION ALL
        SELECT (SELECT MIN(prefix) FROM store WHERE prefix > ns.prefix) FROM ns WHERE ns.prefix IS NOT NULL
    ),
    matched(prefix) AS (SELECT prefix FROM ns WHERE prefix IS NOT NULL AND {where})
"""

_SPLIT_TO_DEPTH = """
    split(original, truncated, remainder, depth) AS (
        SELECT prefix, '', prefix, 0 FROM matched
        UNION ALL
        SELECT
            original,
            CASE WHEN depth = 0
                THEN substr(remainder, 1, CASE WHEN instr(remainder, '.') > 0
                                              THEN instr(remainder, '.') - 1 ELSE length(remainder) END)
                ELSE truncated || '.' || substr(remainder, 1, CASE WHEN instr(remainder, '.') > 0
                                                                 THEN instr(remainder, '.') - 1
                                                                 ELSE length(remainder) END)
            END,
            CASE WHEN instr(remainder, '.') > 0 THEN substr(remainder, instr(remainder, '.') + 1) ELSE '' END,
            depth + 1
        FROM split
        WHERE remainder <> '' AND depth < ?
    )
"""


# SqliteStore's namespace condition (see _namespace_prefix_condition) and the ordering of its plain search.
_NS_CONDITION = "(prefix = ? OR prefix GLOB ?)"
_NEWEST_FIRST = "ORDER BY updated_at DESC"


class LoopSqliteStore(SqliteStore):
    """SqliteStore whose async API runs each batch directly (and whole) on the event loop thread."""

    def setup(self) -> None:
        super().setup()
        with self._cursor() as cur:
            # Serves every lookup the (prefix) index did, plus the newest-first order of a namespace's items.
            cur.execute("CREATE INDEX IF NOT EXISTS store_prefix_updated_idx ON store (prefix, updated_at)")
            cur.execute("DROP INDEX IF EXISTS store_prefix_idx")

    def _prepare_batch_search_queries(
        self, search_ops: Sequence[tuple[int, SearchOp]]
    ) -> tuple[list[tuple[str, list[Any], bool]], list[tuple[int, str]]]:
        queries, embedding_requests = super()._prepare_batch_search_queries(search_ops)
        return [_split_by_namespace(*q) for q in queries], embedding_requests

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        return await retry_busy(lambda: SqliteStore.batch(self, ops))

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """The synchronous API, for graph nodes running in worker threads (off the loop, so sleeping is fine)."""
        ops = list(ops)
        return retry_busy_blocking(lambda: SqliteStore.batch(self, ops))

    def _get_batch_list_namespaces_queries(
        self, list_ops: Sequence[tuple[int, ListNamespacesOp]]
    ) -> list[tuple[str, Sequence[Any]]]:
        queries: list[tuple[str, Sequence[Any]]] = []
        for _, op in list_ops:
            where: list[str] = []
            params: list[Any] = []
            for cond in op.match_conditions or ():
                if not cond.path or cond.match_type not in ("prefix", "suffix"):
                    continue
                if cond.match_type == "prefix" and "*" not in cond.path:
                    sql, args = _namespace_prefix_condition(tuple(cond.path))
                    where.append(sql)
                    params.extend(args)
                else:
                    where.append(f"{NS_MATCH_FUNCTION}(prefix, ?) = 1")
                    params.append(_namespace_match_pattern(cond.path, cond.match_type))
            ctes = _DISTINCT_PREFIXES.format(where=" AND ".join(where) or "1")
            if op.max_depth is not None:
                query = (
                    f"WITH RECURSIVE {ctes}, {_SPLIT_TO_DEPTH} SELECT DISTINCT truncated AS prefix FROM split "
                    "WHERE depth = ? OR remainder = '' ORDER BY prefix LIMIT ? OFFSET ?"
                )
                params.extend([op.max_depth, op.max_depth, op.limit, op.offset])
            else:
                query = f"WITH RECURSIVE {ctes} SELECT prefix FROM matched ORDER BY prefix LIMIT ? OFFSET ?"
                params.extend([op.limit, op.offset])
            queries.append((query, tuple(params)))
        return queries


def _split_by_namespace(sql: str, params: list[Any], refresh: bool) -> tuple[str, list[Any], bool]:
    """SqliteStore's plain search of a namespace and its descendants, rewritten as an ordered UNION ALL of the
    two: the exact namespace in (prefix, updated_at) index order, the descendants sorted. Any other shape
    (semantic search, no prefix) is returned unchanged."""
    if sql.count(_NS_CONDITION) != 1 or sql.count(_NEWEST_FIRST) != 1 or "?" in sql.split(_NS_CONDITION)[0]:
        return sql, params, refresh
    body, tail = sql.split(_NEWEST_FIRST)
    if tail.strip() != "LIMIT ? OFFSET ?":
        return sql, params, refresh
    exact, descendants = body.replace(_NS_CONDITION, "prefix = ?"), body.replace(_NS_CONDITION, "prefix GLOB ?")
    path, pattern, *filters = params[:-2]
    split = f"{exact} UNION ALL {descendants} {_NEWEST_FIRST} LIMIT ? OFFSET ?"
    return split, [path, *filters, pattern, *filters, *params[-2:]], refresh
