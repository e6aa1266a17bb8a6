"""The long-term store on PostgreSQL: LangGraph's AsyncPostgresStore with a namespace search that reads an index.

LangGraph's plain search filters `prefix = %s OR prefix LIKE 'ns.%'` and orders by updated_at: no index can
deliver that OR in updated_at order, so every page sorted all of the namespace's items. Here the store table
gets a (prefix, updated_at) index and the search becomes an ordered UNION ALL of the exact namespace (read
newest-first from the index, stopping at the page's end) and its descendants (sorted, usually none), which
PostgreSQL merges (Merge Append). At 100k items in 100 namespaces: 1.7 ms -> 0.07 ms (EXPLAIN ANALYZE). Every other query is LangGraph's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langgraph.store.base import SearchOp
from langgraph.store.postgres.aio import AsyncPostgresStore

# LangGraph's namespace condition (langgraph.store.postgres.base._namespace_prefix_condition) and the order and
# page of its plain search; a query not built from exactly these is left as it is.
_NS_CONDITION = r"(store.prefix = %s OR store.prefix LIKE %s ESCAPE '\')"
_NEWEST_FIRST = "ORDER BY store.updated_at DESC"
_PAGE = "LIMIT %s OFFSET %s"


class IndexedPostgresStore(AsyncPostgresStore):
    async def setup(self) -> None:
        await super().setup()
        async with self._cursor() as cur:
            # Plain CREATE INDEX (not CONCURRENTLY): it runs under the setup advisory lock before serving.
            await cur.execute("CREATE INDEX IF NOT EXISTS store_prefix_updated_idx ON store (prefix, updated_at)")

    def _prepare_batch_search_queries(
        self, search_ops: Sequence[tuple[int, SearchOp]]
    ) -> tuple[list[tuple[str, list[Any]]], list[tuple[int, str]]]:
        queries, embedding_requests = super()._prepare_batch_search_queries(search_ops)
        return [split_by_namespace(sql, list(params)) for sql, params in queries], embedding_requests


def split_by_namespace(sql: str, params: list[Any]) -> tuple[str, list[Any]]:
    """LangGraph's plain search (optionally inside its TTL-refresh CTE) as an ordered UNION ALL of the exact
    namespace and its descendants. The namespace's two parameters come first, the filters' next, the page last."""
    if sql.count(_NS_CONDITION) != 1 or sql.count(_NEWEST_FIRST) != 1 or "%s" in sql.split(_NS_CONDITION)[0]:
        return sql, params
    select_start = sql.find("SELECT store.prefix")
    if select_start < 0:
        return sql, params
    head, rest = sql[:select_start], sql[select_start:]
    body, tail = rest.split(_NEWEST_FIRST)
    tail_words = tail.split()
    if tail_words[:4] != _PAGE.split() or "%s" in " ".join(tail_words[4:]):
        return sql, params
    exact = body.replace(_NS_CONDITION, "store.prefix = %s")
    descendants = body.replace(_NS_CONDITION, r"store.prefix LIKE %s ESCAPE '\'")
    after_page = " ".join(tail_words[4:])
    # Each arm is ordered and cut at the page's end itself: PostgreSQL then merges the two (Merge Append), the
    # exact namespace read backwards from the index; without the arms' own ORDER BY it sorts their union.
    split = (f"{head}SELECT * FROM (({exact} {_NEWEST_FIRST} LIMIT %s) UNION ALL ({descendants} {_NEWEST_FIRST} "
             f"LIMIT %s)) AS ns ORDER BY updated_at DESC {_PAGE} {after_page}")
    path, pattern, *filters = params[:-2]
    limit, offset = params[-2:]
    return split, [path, *filters, limit + offset, pattern, *filters, limit + offset, limit, offset]
