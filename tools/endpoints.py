"""Where each business system's MCP server listens, and its canonical URL (= the token audience).

Defaults: orders 8701, crm 8702, billing 8703, tickets 8704 on 127.0.0.1, path /mcp. Override per system
with `INTERLOCK_MCP_<SYSTEM>_URL` (e.g. behind a reverse proxy the public URL differs from the bind
address) or the whole host with `INTERLOCK_MCP_HOST`. `--port` on the CLI changes the port of the
default URL.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from interlock.kernel.settings import get_settings

SYSTEMS: tuple[str, ...] = ("orders", "crm", "billing", "tickets")
DEFAULT_PORTS: dict[str, int] = {"orders": 8701, "crm": 8702, "billing": 8703, "tickets": 8704}
PATH = "/mcp"


def check_system(system: str) -> str:
    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; expected one of {', '.join(SYSTEMS)}")
    return system


def bind_host() -> str:
    return get_settings().mcp_host


def canonical_url(system: str, port: int | None = None) -> str:
    """The server's canonical URL, which is also the `aud` its tokens must carry."""
    check_system(system)
    override = get_settings().mcp_url(system)
    if override and port is None:
        return override.rstrip("/")
    return f"http://{bind_host()}:{port or DEFAULT_PORTS[system]}{PATH}"


def port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)
