"""Fixtures for the MCP tests: an isolated INTERLOCK_HOME with seeded sample systems and the four MCP servers
over real Streamable HTTP (uvicorn on free 127.0.0.1 ports)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mcp_testkit import RunningServers


@pytest.fixture(scope="session")
def mcp_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("mcp-home")
    saved = {k: os.environ.get(k) for k in ("INTERLOCK_HOME", "INTERLOCK_DATABASE_URL", "INTERLOCK_ISSUER",
                                            "INTERLOCK_JWKS_URI", "INTERLOCK_MCP_TOKEN")}
    os.environ["INTERLOCK_HOME"] = str(home)
    for key in ("INTERLOCK_DATABASE_URL", "INTERLOCK_ISSUER", "INTERLOCK_JWKS_URI", "INTERLOCK_MCP_TOKEN"):
        os.environ.pop(key, None)
    from interlock.mcp_servers import sample_data

    sample_data.seed(reset=True)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _pin_home(mcp_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Other areas' session fixtures may repoint INTERLOCK_HOME; every MCP test runs against its own.
    monkeypatch.setenv("INTERLOCK_HOME", str(mcp_home))
    monkeypatch.delenv("INTERLOCK_DATABASE_URL", raising=False)
    monkeypatch.delenv("INTERLOCK_ISSUER", raising=False)


@pytest.fixture(scope="session")
async def servers(mcp_home: Path) -> AsyncIterator[RunningServers]:
    running = RunningServers()
    for name in ("orders", "crm", "billing", "tickets"):
        await running.start(name, calls_per_s=1000)
    yield running
    await running.stop()
