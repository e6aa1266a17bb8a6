"""Persistence for the Agent Server: one interface (`Database`), SQLite or PostgreSQL underneath."""

from interlock.server.storage.database import Database, connect

__all__ = ["Database", "connect"]
