"""Helpers for the MCP tests (servers over real HTTP, token minting and forging, business DB probes)."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any

import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey

STAFF = "customers:any"  # the staff scope: every customer of the tenant
ALL_SCOPES = ["orders:read", "orders:write", "crm:read", "crm:write", "billing:read", "billing:write",
              "tickets:read", "tickets:write"]


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class RunningServers:
    def __init__(self) -> None:
        self.urls: dict[str, str] = {}
        self.apps: dict[str, Any] = {}
        self._servers: list[tuple[uvicorn.Server, asyncio.Task]] = []

    async def start(self, name: str, **build_kwargs: Any) -> str:
        from interlock.mcp_servers.hosting import build_app, load_system

        sock = free_socket()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        app = build_app(load_system(name), audience=url, **build_kwargs)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        deadline = time.monotonic() + 20
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise RuntimeError(f"MCP server {name} did not start")
            await asyncio.sleep(0.02)
        self.urls[name] = url
        self._servers.append((server, task))
        return url

    async def stop(self) -> None:
        for server, task in self._servers:
            server.should_exit = True
            await asyncio.wait_for(task, 15)


def token(
    aud: str, scopes: list[str] | None = None, sub: str = "alice", tenant: str = "acme", ttl_s: int = 300,
    *, customer: str | None = None, staff: bool | None = None,
) -> str:
    """A token as Interlock mints it. Without `customer` the caller is staff (`customers:any`) unless `staff=False`;
    with one it is that customer's end user."""
    from interlock.tools import identity

    granted = list(ALL_SCOPES if scopes is None else scopes)
    if staff if staff is not None else customer is None:
        granted.append(STAFF)
    return identity.mint(sub, tenant, granted, aud, ttl_s=ttl_s, customer_id=customer)


def forged_token(aud: str, *, key: RSAKey | None = None, **overrides: Any) -> str:
    """A token with arbitrary claims, signed by the dev issuer's key unless another key is given."""
    from interlock.tools import identity

    now = int(time.time())
    claims = {"iss": identity.issuer(), "sub": "mallory", "aud": aud, "tenant_id": "acme",
              "scope": " ".join(ALL_SCOPES), "iat": now, "nbf": now, "exp": now + 300, "jti": uuid.uuid4().hex}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    signer = key or identity.signing_key()
    return jwt.encode({"alg": "RS256", "kid": signer.thumbprint()}, claims, signer)


def order_status(order_id: str) -> tuple[str, int]:
    from contextlib import closing

    from interlock.mcp_servers import sample_data

    with closing(sample_data.connect("orders")) as conn:
        row = conn.execute("SELECT status, refunded_cents FROM orders WHERE id = ?", (order_id,)).fetchone()
    return row["status"], row["refunded_cents"]
