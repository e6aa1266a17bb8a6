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


# --- request authorization and browser access (read here only; see README "Security") -----------------
def _csv(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def cors_origins() -> list[str]:
    """`$INTERLOCK_CORS_ORIGINS`: comma-separated browser origins allowed to call the API (none by default)."""
    return _csv("INTERLOCK_CORS_ORIGINS")


def cors_private_network() -> bool:
    """`$INTERLOCK_CORS_PRIVATE_NETWORK=1`: answer Private-Network-Access preflights from the allowed origins."""
    return os.environ.get("INTERLOCK_CORS_PRIVATE_NETWORK", "").lower() in ("1", "true", "yes")


def allowed_hosts() -> list[str]:
    """`$INTERLOCK_ALLOWED_HOSTS`: Host header values accepted in local mode besides loopback names."""
    return _csv("INTERLOCK_ALLOWED_HOSTS")


def local_operator() -> str:
    """`$INTERLOCK_LOCAL_OPERATOR`: who decides approvals on a server without auth (local development)."""
    return os.environ.get("INTERLOCK_LOCAL_OPERATOR", "").strip() or "operator@local"

