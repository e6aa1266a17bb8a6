"""Run-completion webhooks, with an SSRF guard: only http(s), and never a private, loopback, link-local or
otherwise internal address unless its host is explicitly allowed (INTERLOCK_WEBHOOK_ALLOW_HOSTS). Hosts are
checked when the run is created and resolved again when the webhook is sent (DNS can change in between)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx
from interlock.server.errors import Invalid
from interlock.server.serialization import dumps

from interlock.kernel.settings import get_settings

log = logging.getLogger("interlock.webhooks")


def _allowed_hosts() -> set[str]:
    return {h.lower() for h in get_settings().webhook_allow_hosts}


def _internal(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not ip.is_global or ip.is_multicast


def check_url(url: str) -> str:
    """Static checks at run creation (422 naming the problem)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"webhook must be an http(s) URL with a host, got {url!r}")
    host = parts.hostname.lower()
    if host in _allowed_hosts():
        return url
    try:
        if _internal(host):
            raise Invalid(f"webhook host {host} is an internal address")
    except ValueError:
        if host in ("localhost",) or host.endswith((".localhost", ".internal", ".local")):
            raise Invalid(f"webhook host {host} is internal") from None
    return url


async def _resolves_public(host: str, port: int) -> bool:
    if host in _allowed_hosts():
        return True
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return bool(infos) and not any(_internal(info[4][0]) for info in infos)


class Webhooks:
    def __init__(self, attempts: int = 3) -> None:
        self.attempts = attempts
        self._client = httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, url: str, payload: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._send(url, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, url: str, payload: dict[str, Any]) -> None:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        try:
            if not await _resolves_public(host, parts.port or (443 if parts.scheme == "https" else 80)):
                log.warning("webhook for run %s not sent: %s resolves to an internal address", payload.get("run_id"), host)
                return
        except OSError:
            log.warning("webhook for run %s not sent: %s does not resolve", payload.get("run_id"), host)
            return
        body = dumps(payload)
        for attempt in range(self.attempts):
            try:
                response = await self._client.post(url, content=body, headers={"content-type": "application/json"})
                if response.status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5 * 2**attempt)
        log.warning("webhook for run %s failed after %d attempts", payload.get("run_id"), self.attempts)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        await self._client.aclose()
