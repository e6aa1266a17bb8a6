"""Tool catalogue lint, rate limits, and the `interlock mcp|seed|token` commands as real subprocesses."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.utilities.tests import asgi_server
from interlock.mcp_servers.hosting import build_server, load_system
from interlock.tools import endpoints, identity
from joserfc import jwt
from joserfc.jwk import KeySet
from mcp_testkit import free_socket, token

INTERLOCK = str(Path(sys.executable).with_name("interlock"))
DESTRUCTIVE = {"cancel_order", "refund_order", "issue_credit"}


@pytest.mark.parametrize("name", endpoints.SYSTEMS)
async def test_every_tool_is_explicitly_annotated_and_scoped(name, mcp_home):
    aud = endpoints.canonical_url(name)
    async with asgi_server(build_server(load_system(name), audience=aud)) as running:
        async with running.client(auth=token(aud, [f"{name}:read", f"{name}:write"])) as client:
            tools = await client.list_tools()
    assert {t.name for t in tools} == set(load_system(name).policies)
    for tool in tools:
        ann = tool.annotations
        assert ann.title and ann.read_only_hint is not None and ann.open_world_hint is False, tool.name
        scope, tags = tool.meta["interlock"]["scope"], set(tool.meta["fastmcp"]["tags"])
        if ann.read_only_hint:
            assert scope == f"{name}:read" and "write" not in tags
        else:
            assert scope == f"{name}:write"
            assert ann.destructive_hint is not None and ann.idempotent_hint is not None, tool.name
            assert ("destructive" in tags) == bool(ann.destructive_hint) == (tool.name in DESTRUCTIVE)


async def test_rate_limit_is_per_principal_and_lists_do_not_starve_calls(mcp_home):
    aud = "http://127.0.0.1:8999/mcp"
    server = build_server(load_system("orders"), audience=aud, calls_per_s=0.01)  # burst of 1 call, no refill
    async with asgi_server(server) as running:
        async with running.client(auth=token(aud, ["orders:read"], sub="busy")) as client:
            for _ in range(10):
                await client.list_tools()  # listing draws from its own bucket
            assert not (await client.call_tool("list_orders", {"limit": 1})).is_error
            limited = await client.call_tool("list_orders", {"limit": 1}, raise_on_error=False)
            assert limited.is_error and "rate limit" in limited.content[0].text
        async with running.client(auth=token(aud, ["orders:read"], sub="calm")) as client:
            assert not (await client.call_tool("list_orders", {"limit": 1})).is_error


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INTERLOCK_HOME": str(home)}
    return subprocess.run([INTERLOCK, *args], capture_output=True, text=True, env=env, timeout=120)


def test_token_mint_and_seed_commands(mcp_home):
    out = run_cli("token", "mint", "--sub", "cli", "--tenant", "acme", "--scopes", "orders:read,crm:read",
                  "--aud", "orders", "--ttl", "120", home=mcp_home)
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), KeySet.import_key_set(identity.jwks())).claims
    assert claims["aud"] == endpoints.canonical_url("orders") and claims["scope"] == "crm:read orders:read"
    bad = run_cli("token", "mint", "--sub", "x", "--tenant", "t", "--scopes", "a", "--aud", "nope", home=mcp_home)
    assert bad.returncode == 2 and "--aud" in bad.stderr
    seeded = run_cli("seed", home=mcp_home)
    assert seeded.returncode == 0 and "orders: 0 rows inserted" in seeded.stdout  # idempotent
    assert run_cli("mcp", "all", "--port", "9000", home=mcp_home).returncode == 2


async def test_mcp_command_serves_http_with_auth(mcp_home):
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "INTERLOCK_HOME": str(mcp_home)}
    proc = await asyncio.create_subprocess_exec(
        INTERLOCK, "mcp", "orders", "--transport", "http", "--port", str(port), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            for _ in range(300):
                try:
                    response = await http.post(url, json={})
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("interlock mcp orders did not start")
        assert response.status_code == 401
        async with Client(url, auth=token(url, ["orders:read"])) as client:
            order = await client.call_tool("get_order", {"order_id": "ORD-1003"})
        assert order.structured_content["status"] == "delivered"
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)


def test_reused_business_connections_follow_a_reset(tmp_path, monkeypatch):
    from interlock.mcp_servers import sample_data

    monkeypatch.setenv("INTERLOCK_HOME", str(tmp_path))
    sample_data.seed(reset=True)
    with sample_data.session("orders") as conn:
        conn.execute("UPDATE orders SET status = 'cancelled' WHERE id = 'ORD-1001'")
    with sample_data.session("orders") as conn:
        assert conn.execute("SELECT status FROM orders WHERE id = 'ORD-1001'").fetchone()[0] == "cancelled"
    sample_data.seed(reset=True)
    with sample_data.session("orders") as conn:
        assert conn.execute("SELECT status FROM orders WHERE id = 'ORD-1001'").fetchone()[0] == "processing"
