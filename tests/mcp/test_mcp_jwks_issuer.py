"""Verification through a JWKS URL (the graph server's /.well-known/jwks.json or an external OIDC provider)."""

from __future__ import annotations

import asyncio

import pytest
import uvicorn
from fastmcp.utilities.tests import asgi_server
from interlock.mcp_servers.hosting import build_server, load_system
from interlock.tools import identity
from joserfc.jwk import RSAKey
from mcp_testkit import forged_token, free_socket, token
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def jwks_endpoint() -> tuple[uvicorn.Server, asyncio.Task, str]:
    app = Starlette(routes=[Route("/.well-known/jwks.json", lambda _r: JSONResponse(identity.jwks()))])
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.02)
    return server, task, f"http://127.0.0.1:{sock.getsockname()[1]}/.well-known/jwks.json"


async def test_servers_verify_against_a_jwks_uri_and_a_configured_issuer(monkeypatch):
    server, task, url = await jwks_endpoint()
    monkeypatch.setenv("INTERLOCK_JWKS_URI", url)
    monkeypatch.setenv("INTERLOCK_ISSUER", "https://idp.example.test/realms/acme")
    aud = "https://orders.example.test/mcp"
    try:
        async with asgi_server(build_server(load_system("orders"), audience=aud)) as running:
            async with running.client(auth=token(aud, ["orders:read"])) as client:
                order = await client.call_tool("get_order", {"order_id": "ORD-1003"})
            assert order.structured_content["order_id"] == "ORD-1003"

            stranger = forged_token(aud, key=RSAKey.generate_key(2048))  # right iss and aud, key not in JWKS
            async with running.http_client() as http:
                response = await http.post(running.url, json={}, headers={"Authorization": f"Bearer {stranger}"})
            assert response.status_code == 401

            monkeypatch.setenv("INTERLOCK_ISSUER", "http://127.0.0.1:2024")  # mint as another issuer
            other_issuer = token(aud, ["orders:read"])
            async with running.http_client() as http:
                response = await http.post(running.url, json={}, headers={"Authorization": f"Bearer {other_issuer}"})
            assert response.status_code == 401
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def test_issuer_key_is_private_and_stable(mcp_home):
    key_file = mcp_home / "keys" / "issuer.pem"
    identity.signing_key()
    assert key_file.stat().st_mode & 0o077 == 0
    assert identity.key_id() == identity.key_id()
    with pytest.raises(ValueError):
        identity.mint("a", "t", ["x"], "")
