"""Shared fixtures and helpers for the graph tests: an isolated INTERLOCK_HOME, the sample knowledge
base, the real MCP servers. Imported explicitly by each test module (no conftest.py, so this folder
cannot shadow another folder's `conftest`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

__all__ = ["compile_with_memory", "graphs_home", "kb_retriever", "mcp_urls", "policy_dir", "thread"]


@pytest.fixture(scope="module")
def graphs_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Everything these tests write (databases, keys, indexes) lives here, never in the developer's data."""
    home = tmp_path_factory.mktemp("graphs-home")
    saved = {k: os.environ.get(k) for k in ("INTERLOCK_HOME", "INTERLOCK_DATABASE_URL")}
    os.environ["INTERLOCK_HOME"] = str(home)
    os.environ.pop("INTERLOCK_DATABASE_URL", None)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
async def kb_retriever(graphs_home: Path) -> AsyncIterator[Any]:
    from interlock.graphs.knowledge import ingest_sample
    from interlock.graphs.retrieval import Retriever

    retriever = Retriever.from_settings()
    reports = await ingest_sample(retriever)
    assert all(r.ok for r in reports.values()), reports
    yield retriever
    await retriever.close()


def compile_with_memory(graph: Any) -> Any:
    """The served graphs compile without a checkpointer; tests attach an in-memory one."""
    graph.checkpointer = InMemorySaver()
    return graph


def thread(tenant: str = "acme", sub: str = "CUS-101", **extra: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": uuid.uuid4().hex, "tenant": tenant,
                             "principal": {"sub": sub, "tenant": tenant, "groups": ["customers"], **extra}}}


# --- real MCP servers --------------------------------------------------------------------------

import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import httpx  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ("orders", "crm", "billing", "tickets")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mcp_urls(graphs_home: Path) -> Iterator[dict[str, str]]:
    """Every sample business system's MCP server, each its own process on a free loopback port."""
    from interlock.mcp_servers import sample_data

    sample_data.seed(reset=True)
    available = [s for s in SYSTEMS if (ROOT / "mcp_servers" / f"{s}.py").is_file()]
    urls = {s: f"http://127.0.0.1:{free_port()}/mcp" for s in available}
    env = {**os.environ, "INTERLOCK_HOME": str(graphs_home)}
    for system, url in urls.items():
        env[f"INTERLOCK_MCP_{system.upper()}_URL"] = url
    procs = []
    for system, url in urls.items():
        port = url.split(":")[2].split("/")[0]
        code = (f"from mcp_servers import hosting, {system}; "
                f"hosting.run({system}.system, 'http', port={port})")
        log = open(graphs_home / f"mcp-{system}.log", "ab")  # noqa: SIM115 - owned by the process
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
    saved = {k: os.environ.get(k) for k in (f"INTERLOCK_MCP_{s.upper()}_URL" for s in urls)}
    for system, url in urls.items():
        os.environ[f"INTERLOCK_MCP_{system.upper()}_URL"] = url
    try:
        deadline = time.monotonic() + 60
        for url in urls.values():
            while True:
                try:
                    httpx.get(url, timeout=1.0)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"MCP server at {url} did not start") from None
                    time.sleep(0.2)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# The guardrails' tools.yaml denies tools it does not list; until it lists every sample tool, the
# graph tests run with a copy that adds the missing ones at their servers' risk.
SAMPLE_TOOL_RISKS = {
    "get_order": "read", "list_orders": "read", "track_shipment": "read", "cancel_order": "destructive",
    "refund_order": "destructive", "find_customer": "read", "get_customer": "read", "update_contact": "write",
    "get_invoice": "read", "list_invoices": "read", "issue_credit": "destructive", "create_ticket": "write",
    "get_ticket": "read", "add_comment": "write", "escalate_to_human": "write",
}


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import yaml

    source = ROOT / "policies"
    target = tmp_path_factory.mktemp("policies")
    for path in source.glob("*.yaml"):
        (target / path.name).write_bytes(path.read_bytes())
    tools = yaml.safe_load((target / "tools.yaml").read_text())
    for name, risk in SAMPLE_TOOL_RISKS.items():
        tools.setdefault("tools", {}).setdefault(name, {"risk": risk})
    (target / "tools.yaml").write_text(yaml.safe_dump(tools, sort_keys=False))
    saved = os.environ.get("INTERLOCK_POLICY_DIR")
    os.environ["INTERLOCK_POLICY_DIR"] = str(target)
    yield target
    if saved is None:
        os.environ.pop("INTERLOCK_POLICY_DIR", None)
    else:
        os.environ["INTERLOCK_POLICY_DIR"] = saved
