"""Assistants: a graph plus configuration, versioned. Each graph gets a system assistant at startup."""

from __future__ import annotations

import uuid
from typing import Any

from interlock.server import clock
from interlock.server.auth import equality_part, matches
from interlock.server.errors import Conflict, Invalid, NotFound
from interlock.server.serialization import dumps_str, loads
from interlock.server.storage import Database
from interlock.server.storage.filters import where_clause

COLUMNS = "assistant_id, graph_id, name, description, config, context, metadata, version, created_at, updated_at"


# The reference server's namespace. It is one digit away from uuid.NAMESPACE_URL (6ba7b811-...), which the
# docs name; clients that compute system assistant ids agree with the reference, so we use its value.
NAMESPACE_GRAPH = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")


def system_assistant_id(graph_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE_GRAPH, graph_id))


def assistant_out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "assistant_id": row["assistant_id"],
        "graph_id": row["graph_id"],
        "name": row["name"],
        "description": row.get("description"),
        "config": loads(row["config"]) or {},
        "context": loads(row["context"]) or {},
        "metadata": loads(row["metadata"]) or {},
        "version": row["version"],
        "created_at": row["created_at"],
        "updated_at": row.get("updated_at") or row["created_at"],
    }


class Assistants:
    def __init__(self, db: Database, graph_ids: set[str]) -> None:
        self.db = db
        self.graph_ids = graph_ids

    def _check_graph(self, graph_id: str) -> None:
        if graph_id not in self.graph_ids:
            raise NotFound(f"Graph '{graph_id}' not found. Available graphs: {sorted(self.graph_ids)}")

    async def ensure_system(self) -> None:
        for graph_id in sorted(self.graph_ids):
            await self.create(
                graph_id=graph_id,
                assistant_id=system_assistant_id(graph_id),
                config={},
                context={},
                metadata={"created_by": "system"},
                if_exists="do_nothing",
                name=graph_id,
                description=None,
            )

    async def create(
        self,
        *,
        graph_id: str,
        assistant_id: str | None,
        config: dict[str, Any] | None,
        context: dict[str, Any] | None,
        metadata: dict[str, Any] | None,
        if_exists: str | None,
        name: str | None,
        description: str | None,
    ) -> dict[str, Any]:
        self._check_graph(graph_id)
        if assistant_id:
            try:
                assistant_id = str(uuid.UUID(assistant_id))
            except ValueError:
                raise Invalid("Invalid assistant ID: must be a UUID") from None
        assistant_id = assistant_id or clock.new_id()
        ts = clock.iso()
        values = [
            assistant_id,
            graph_id,
            name or "Untitled",
            description,
            dumps_str(config or {}),
            dumps_str(context or {}),
            dumps_str(metadata or {}),
        ]
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                f"INSERT INTO assistants ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?) "
                f"ON CONFLICT (assistant_id) DO NOTHING RETURNING {COLUMNS}",
                [*values, ts, ts],
            )
            if rows:
                await tx.execute(
                    "INSERT INTO assistant_versions (assistant_id, graph_id, name, description, config, context, "
                    "metadata, version, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)",
                    [*values, ts],
                )
                return assistant_out(rows[0])
        if if_exists == "do_nothing":
            return await self.get(assistant_id)
        raise Conflict(f"Assistant {assistant_id} already exists")

    async def find(self, assistant_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone(*self.find_statement(assistant_id))
        return assistant_out(row) if row else None

    @staticmethod
    def find_statement(assistant_id: str) -> tuple[str, list[Any]]:
        return f"SELECT {COLUMNS} FROM assistants WHERE assistant_id = ?", [assistant_id]

    async def get(self, assistant_id: str, auth_filter: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            assistant_id = str(uuid.UUID(assistant_id))
        except ValueError:
            raise Invalid("Invalid assistant ID: must be a UUID") from None
        found = await self.find(assistant_id)
        if found is None or not matches(found["metadata"], auth_filter):
            raise NotFound(f"Assistant {assistant_id} not found")
        return found

    def key(self, assistant_id_or_graph: str) -> str:
        """The assistant id a run names: run endpoints accept a graph name in place of an assistant id."""
        if assistant_id_or_graph in self.graph_ids:
            assistant_id_or_graph = system_assistant_id(assistant_id_or_graph)
        try:
            return str(uuid.UUID(assistant_id_or_graph))
        except ValueError:
            raise NotFound(f"Assistant '{assistant_id_or_graph}' not found") from None

    async def resolve(self, assistant_id_or_graph: str, *, row: dict[str, Any] | None = None) -> dict[str, Any]:
        """The assistant a run names (`row`: its row, already read with `find_statement`)."""
        key = self.key(assistant_id_or_graph)
        found = assistant_out(row) if row is not None else await self.find(key)
        if found is None or found["assistant_id"] != key:
            raise NotFound(f"Assistant {key} not found")
        return found

    async def patch(
        self,
        assistant_id: str,
        *,
        graph_id: str | None,
        config: dict[str, Any] | None,
        context: dict[str, Any] | None,
        metadata: dict[str, Any] | None,
        name: str | None,
        description: str | None,
        auth_filter: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        current = await self.get(assistant_id, auth_filter)
        if graph_id is not None:
            self._check_graph(graph_id)
        ts = clock.iso()
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                "SELECT MAX(version) AS v FROM assistant_versions WHERE assistant_id = ?", [current["assistant_id"]]
            )
            version = int(row["v"] or 0) + 1 if row else 1
            new = {
                "graph_id": graph_id or current["graph_id"],
                "name": name if name is not None else current["name"],
                "description": description if description is not None else current["description"],
                "config": config if config is not None else current["config"],
                "context": context if context is not None else current["context"],
                "metadata": {**current["metadata"], **(metadata or {})},
            }
            values = [
                new["graph_id"],
                new["name"],
                new["description"],
                dumps_str(new["config"]),
                dumps_str(new["context"]),
                dumps_str(new["metadata"]),
            ]
            await tx.execute(
                "INSERT INTO assistant_versions (assistant_id, graph_id, name, description, config, context, "
                "metadata, version, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [current["assistant_id"], *values, version, ts],
            )
            await tx.execute(
                "UPDATE assistants SET graph_id = ?, name = ?, description = ?, config = ?, context = ?, "
                "metadata = ?, version = ?, updated_at = ? WHERE assistant_id = ?",
                [*values, version, ts, current["assistant_id"]],
            )
        return await self.get(current["assistant_id"])

    async def delete(self, assistant_id: str, auth_filter: dict[str, Any] | None = None) -> None:
        current = await self.get(assistant_id, auth_filter)
        await self.db.execute("DELETE FROM assistant_versions WHERE assistant_id = ?", [current["assistant_id"]])
        await self.db.execute("DELETE FROM assistants WHERE assistant_id = ?", [current["assistant_id"]])

    def _where(
        self, metadata: dict[str, Any] | None, graph_id: str | None, name: str | None, auth_filter: dict[str, Any] | None
    ) -> tuple[str, list[Any]]:
        return where_clause(
            self.db,
            metadata=metadata,
            auth_equality=equality_part(auth_filter),
            equals={"graph_id": graph_id or None},
            like={"name": name},
        )

    async def search(
        self,
        *,
        metadata: dict[str, Any] | None,
        graph_id: str | None,
        name: str | None,
        limit: int,
        offset: int,
        sort_by: str | None,
        sort_order: str | None,
        auth_filter: dict[str, Any] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        where, params = self._where(metadata, graph_id, name, auth_filter)
        order = "ASC" if (sort_order or "desc").lower() == "asc" else "DESC"
        rows = await self.db.fetchall(
            f"SELECT {COLUMNS} FROM assistants WHERE {where} ORDER BY {sort_by or 'created_at'} {order}, "
            f"assistant_id {order} LIMIT ? OFFSET ?",
            [*params, limit + 1, offset],
        )
        items = [a for a in map(assistant_out, rows) if matches(a["metadata"], auth_filter)]
        return items[:limit], len(items)

    async def count(
        self, *, metadata: dict[str, Any] | None, graph_id: str | None, name: str | None, auth_filter: dict[str, Any] | None
    ) -> int:
        where, params = self._where(metadata, graph_id, name, auth_filter)
        row = await self.db.fetchone(f"SELECT COUNT(*) AS n FROM assistants WHERE {where}", params)
        return int(row["n"]) if row else 0

    async def versions(
        self, assistant_id: str, *, metadata: dict[str, Any] | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        current = await self.get(assistant_id)
        where, params = where_clause(self.db, metadata=metadata, equals={"assistant_id": current["assistant_id"]})
        rows = await self.db.fetchall(
            "SELECT assistant_id, graph_id, name, description, config, context, metadata, version, created_at "
            f"FROM assistant_versions WHERE {where} ORDER BY version DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [assistant_out(r) for r in rows]

    async def set_latest(self, assistant_id: str, version: int) -> dict[str, Any]:
        current = await self.get(assistant_id)
        row = await self.db.fetchone(
            "SELECT graph_id, name, description, config, context, metadata FROM assistant_versions "
            "WHERE assistant_id = ? AND version = ?",
            [current["assistant_id"], version],
        )
        if row is None:
            raise NotFound(f"Assistant {assistant_id} has no version {version}")
        await self.db.execute(
            "UPDATE assistants SET graph_id = ?, name = ?, description = ?, config = ?, context = ?, metadata = ?, "
            "version = ?, updated_at = ? WHERE assistant_id = ?",
            [
                row["graph_id"],
                row["name"],
                row["description"],
                row["config"],
                row["context"],
                row["metadata"],
                version,
                clock.iso(),
                current["assistant_id"],
            ],
        )
        return await self.get(current["assistant_id"])
