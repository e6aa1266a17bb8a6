"""How long the server waits on its dependencies, and how often it retries them. Every variable is read here,
once per process, so an operator finds them in one place.

- INTERLOCK_DB_TIMEOUT_SECONDS (default 5): a request waiting for a database connection or statement gives up
  after this long and answers 503 naming the database.
- INTERLOCK_READY_TIMEOUT_SECONDS (default 1.5): each dependency check of /ready.
- INTERLOCK_SHUTDOWN_GRACE_SECONDS (default 5): on SIGTERM, how long open requests and streams may finish.
- INTERLOCK_RUN_RETRIES (default 3): attempts of a run step that failed on a lost database connection, each
  resumed from the last checkpoint, before the run is recorded as an error.
"""

from __future__ import annotations

import os
from functools import cache


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


@cache
def db_timeout_seconds() -> float:
    return _seconds("INTERLOCK_DB_TIMEOUT_SECONDS", 5.0)


@cache
def ready_timeout_seconds() -> float:
    return _seconds("INTERLOCK_READY_TIMEOUT_SECONDS", 1.5)


@cache
def shutdown_grace_seconds() -> int:
    return max(1, int(_seconds("INTERLOCK_SHUTDOWN_GRACE_SECONDS", 5.0)))


@cache
def run_retries() -> int:
    raw = os.environ.get("INTERLOCK_RUN_RETRIES", "").strip() or "3"
    if not raw.isdigit():
        raise ValueError(f"INTERLOCK_RUN_RETRIES must be a whole number, got {raw!r}")
    return int(raw)
