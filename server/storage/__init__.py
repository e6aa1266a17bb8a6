"""Persistence for the Agent Server: the kernel's `Database` (SQLite or PostgreSQL) and the server's migrations."""

from interlock.kernel.database import Database, connect

__all__ = ["Database", "connect"]
