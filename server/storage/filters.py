"""The WHERE clause of the search and count queries (assistants, threads, crons): metadata containment merged
with the equality part of the caller's authorization filter, plus plain column conditions."""

from __future__ import annotations

from typing import Any

from interlock.kernel.database import Database


def where_clause(
    db: Database,
    *,
    metadata: dict[str, Any] | None = None,
    auth_equality: dict[str, Any] | None = None,
    json_columns: dict[str, dict[str, Any] | None] | None = None,
    equals: dict[str, Any] | None = None,
    like: dict[str, str | None] | None = None,
    any_of: dict[str, list[str] | None] | None = None,
) -> tuple[str, list[Any]]:
    """SQL and parameters; absent (None or empty) conditions are skipped, `any_of` with [] matches nothing.

    `auth_equality` is the SQL-pushable part of an authorization filter; it wins over the caller's `metadata`
    on the same key, so a caller cannot widen what they may see.
    """
    clauses: list[str] = []
    params: list[Any] = []
    meta = {**(metadata or {}), **(auth_equality or {})}
    for column, value in {"metadata": meta, **(json_columns or {})}.items():
        if value:
            sql, p = db.json_contains(column, value)
            clauses.append(sql)
            params += p
    for column, value in (equals or {}).items():
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    for column, text in (like or {}).items():
        if text:
            clauses.append(f"LOWER({column}) LIKE ?")
            params.append(f"%{text.lower()}%")
    for column, values in (any_of or {}).items():
        if values is not None:
            clauses.append(f"{column} IN ({', '.join('?' for _ in values)})" if values else "1=0")
            params += values
    return (" AND ".join(clauses) or "1=1"), params
