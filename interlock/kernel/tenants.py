"""The tenants a local development server knows.

With auth configured the tenant comes from the caller's token. In local development mode (no auth) a caller names
it (`config.configurable.tenant`, `?tenant=`, `--tenant`), so a typo would silently run against an empty tenant
("order ORD-1002 not found"). The registry is the list such a name is checked against: one table in the
configured database, filled by `interlock seed` (the sample tenants) and `interlock tenants add NAME`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any, Protocol

# Same shape as the retrieval store's tenant names, so a registered tenant can also own documents.
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

DDL = (
    """CREATE TABLE IF NOT EXISTS interlock_tenants (
        name TEXT PRIMARY KEY,
        note TEXT,
        created_at DOUBLE PRECISION NOT NULL
    )""",
)


class _Db(Protocol):
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    async def script(self, statements: Sequence[str]) -> None: ...


class UnknownTenant(LookupError):
    """A tenant named in local development mode that nobody registered."""

    def __init__(self, tenant: str, known: list[str]) -> None:
        self.tenant = tenant
        self.known = known
        super().__init__(describe_unknown(tenant, known))


def describe_unknown(tenant: str, known: list[str]) -> str:
    """One sentence naming the tenant, the known ones and how to register one."""
    listed = f"known tenants: {', '.join(known)}" if known else "no tenants are registered yet"
    return (f"unknown tenant {tenant!r} ({listed}); `interlock seed` registers the sample tenants, "
            f"`interlock tenants add {tenant if TENANT_NAME.match(tenant) else 'NAME'}` registers another")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not TENANT_NAME.match(name):
        raise ValueError(f"tenant names are 1-64 letters, digits, '-' or '_', starting with a letter or digit: "
                         f"{name!r}")
    return name


class TenantRegistry:
    """Registered tenant names over any Interlock database (the server's pool or a `LazyDatabase`)."""

    def __init__(self, db: _Db) -> None:
        self.db = db
        self._ready = False

    async def setup(self) -> None:
        if not self._ready:
            await self.db.script(DDL)
            self._ready = True

    async def names(self) -> list[str]:
        await self.setup()
        rows = await self.db.fetchall("SELECT name FROM interlock_tenants ORDER BY name")
        return [r["name"] for r in rows]

    async def add(self, name: str, note: str | None = None) -> bool:
        """Register a tenant; False when it already was."""
        await self.setup()
        added = await self.db.execute(
            "INSERT INTO interlock_tenants (name, note, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
            (check_name(name), note, time.time()),
        )
        return bool(added)

    async def remove(self, name: str) -> bool:
        await self.setup()
        return bool(await self.db.execute("DELETE FROM interlock_tenants WHERE name = ?", (name,)))

    async def require(self, names: Sequence[str]) -> None:
        """Raise `UnknownTenant` for the first of `names` that is not registered."""
        wanted = sorted(set(names))
        if not wanted:
            return
        await self.setup()
        marks = ", ".join("?" for _ in wanted)
        rows = await self.db.fetchall(f"SELECT name FROM interlock_tenants WHERE name IN ({marks})", wanted)
        found = {r["name"] for r in rows}
        for name in wanted:
            if name not in found:
                raise UnknownTenant(name, await self.names())


def named_tenants(config: Any) -> list[str]:
    """The tenants a run's config names: `configurable.tenant`/`tenant_id` and a local principal's `tenant`
    (what `principal_from_config` would run as when no auth is configured)."""
    configurable = (config or {}).get("configurable") if isinstance(config, dict) else None
    if not isinstance(configurable, dict):
        return []
    found = [configurable.get("tenant"), configurable.get("tenant_id")]
    principal = configurable.get("principal")
    if isinstance(principal, dict):
        found.append(principal.get("tenant"))
    return [str(t) for t in found if t not in (None, "")]
