"""p50/p99 latency of read-tool calls through the governed client (`tools.client.GovernedTools`).

Two paths, both with full governance (token verification, tenant binding, scope checks, rate limits and
an audit row per call):
  http    - the orders server as its own process (`interlock mcp orders --transport http`), real sockets
  memory  - the same server's ASGI app in this process (no sockets, same HTTP stack)

    .venv/bin/python bench/mcp_calls.py [--calls 1000] [--warmup 50]

Uses a throwaway INTERLOCK_HOME; writes bench/results/mcp_calls.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRINCIPAL = {"sub": "bench", "tenant": "acme", "scopes": ["orders:read", "customers:any"]}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def measure(tools: Any, calls: int, warmup: int) -> dict[str, float]:
    from interlock.tools.client import Principal

    principal = Principal(**PRINCIPAL)
    for _ in range(warmup):
        await tools.call(principal, "get_order", {"order_id": "ORD-1003"})
    samples = []
    for i in range(calls):
        order_id = f"ORD-1{(i % 20) + 1:03d}"
        started = time.perf_counter()
        result = await tools.call(principal, "get_order", {"order_id": order_id})
        samples.append((time.perf_counter() - started) * 1000)
        if result.is_error:
            raise RuntimeError(f"bench call failed: {result.text}")
    return {"calls": calls, "p50_ms": round(percentile(samples, 50), 2), "p99_ms": round(percentile(samples, 99), 2),
            "mean_ms": round(statistics.fmean(samples), 2)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def bench_http(calls: int, warmup: int) -> dict[str, float]:
    from interlock.tools.client import GovernedTools, ServerConfig, ToolsConfig

    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    interlock = Path(sys.executable).with_name("interlock")
    proc = await asyncio.create_subprocess_exec(
        str(interlock), "mcp", "orders", "--transport", "http", "--port", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    tools = GovernedTools(ToolsConfig(servers={"orders": ServerConfig(url=url)}))
    try:
        for _ in range(600):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError("orders server did not start")
        return await measure(tools, calls, warmup)
    finally:
        await tools.aclose()
        proc.terminate()
        await proc.wait()


async def bench_memory(calls: int, warmup: int) -> dict[str, float]:
    from fastmcp.utilities.tests import asgi_server
    from interlock.mcp_servers.hosting import build_server, load_system
    from interlock.tools.client import GovernedTools, ServerConfig, ToolsConfig

    aud = "http://127.0.0.1:8701/mcp"
    async with asgi_server(build_server(load_system("orders"), audience=aud)) as running:
        tools = GovernedTools(ToolsConfig(servers={"orders": ServerConfig(url=running.url, audience=aud)}),
                              http_client_factories={"orders": running.http_client})
        try:
            return await measure(tools, calls, warmup)
        finally:
            await tools.aclose()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="interlock-bench-")
    os.environ["INTERLOCK_HOME"] = home
    os.environ.pop("INTERLOCK_DATABASE_URL", None)
    os.environ["INTERLOCK_MCP_CALLS_PER_S"] = "1000000"  # measure the path, not the limiter
    from interlock.mcp_servers import sample_data

    sample_data.seed(reset=True)
    results = {
        "http": await bench_http(args.calls, args.warmup),
        "memory": await bench_memory(args.calls, args.warmup),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "mcp_calls.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
