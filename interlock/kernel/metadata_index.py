"""The metadata keys the thread tables index, and the SQL expression both the index and the filter must use.

SQLite matches an expression index only when the query repeats the indexed expression exactly, literal JSON path
included; a bound path parameter (`json_extract(metadata, ?)`) never matches. So the keys the server and the
usual auth handlers filter on get an index each (migration 3), and filters on those keys are written with the
same literal path. Other keys still work, unindexed. PostgreSQL uses one GIN index on `metadata::jsonb` for all
keys instead (containment `@>` is what its filters use).

- graph_id, assistant_id: set on every thread a run creates; how UIs list "threads of this agent".
- owner: the key LangGraph auth handlers (and the reference's examples) scope threads by; every request of an
  authenticated user filters on it.
"""

from __future__ import annotations

INDEXED_METADATA_KEYS: tuple[str, ...] = ("graph_id", "assistant_id", "owner")


def json_path(key: str) -> str:
    return '$."' + key.replace('"', '""') + '"'


def indexed_expression(column: str, key: str) -> str | None:
    """`json_extract(column, '<literal path>')` for an indexed key (matching the index), else None."""
    if key not in INDEXED_METADATA_KEYS:
        return None
    return f"json_extract({column}, '{json_path(key)}')"
