"""Where Interlock keeps its files and which database it talks to.

Every process (graph server, MCP servers, CLI) reads the same environment, so they agree on
one data directory and one database without passing paths around.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The data directory: `$INTERLOCK_HOME`, else `./.interlock` under the working directory."""
    path = Path(os.environ.get("INTERLOCK_HOME") or ".interlock").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url() -> str:
    """`$INTERLOCK_DATABASE_URL` (postgresql://...) or the embedded SQLite file."""
    url = os.environ.get("INTERLOCK_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{home() / 'interlock.db'}"


def is_postgres(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://"))


def sqlite_path(url: str) -> str:
    """The file path inside a `sqlite:///...` URL."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    return url[len("sqlite:///") :]


def redis_url() -> str | None:
    return os.environ.get("INTERLOCK_REDIS_URL") or None


def approvals_webhook_url() -> str | None:
    """`$INTERLOCK_APPROVALS_WEBHOOK_URL`: POSTed an `approval.requested` event for every new pending approval
    (same SSRF guard as run webhooks: INTERLOCK_WEBHOOK_ALLOW_HOSTS)."""
    return os.environ.get("INTERLOCK_APPROVALS_WEBHOOK_URL") or None


def approvals_poll_seconds() -> float:
    """`$INTERLOCK_APPROVALS_POLL_SECONDS` (default 1): how often the server looks for new, decided and expired
    approvals (they are created by MCP servers in other processes too, so it reads the shared database)."""
    try:
        value = float(os.environ.get("INTERLOCK_APPROVALS_POLL_SECONDS") or 1.0)
    except ValueError:
        return 1.0
    return min(max(value, 0.05), 60.0)
