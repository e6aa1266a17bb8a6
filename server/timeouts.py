"""How long the server waits on its dependencies, and how often it retries them (kernel settings:
INTERLOCK_DB_TIMEOUT_SECONDS, INTERLOCK_READY_TIMEOUT_SECONDS, INTERLOCK_SHUTDOWN_GRACE_SECONDS,
INTERLOCK_RUN_RETRIES)."""

from __future__ import annotations

from interlock.kernel.settings import get_settings


def db_timeout_seconds() -> float:
    return get_settings().db_timeout_seconds


def ready_timeout_seconds() -> float:
    return get_settings().ready_timeout_seconds


def shutdown_grace_seconds() -> int:
    return max(1, int(get_settings().shutdown_grace_seconds))


def run_retries() -> int:
    return get_settings().run_retries
