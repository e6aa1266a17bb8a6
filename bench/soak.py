"""A mixed soak through a real `interlock serve` (embedded SQLite): no stalls, no growth per run.

For --minutes (default 10), at once: runs (runs.wait stateless and on threads, runs.stream stateless and on
threads, a few resumable), store puts, gets, searches and namespace listings over a growing item count, thread
creation and thread searches (default order, metadata, status, count) over a growing thread count, and a /ok
probe every 100 ms. Reports every request slower than 1 s that was not waiting on a graph, the slowest probe,
"database is locked" in the server log, and RSS growth per 10,000 runs (RSS sampled after a warm-up and at the
end; the thread and store tables keep growing meanwhile, so this bound includes their page cache).

    python bench/soak.py [--minutes 10] [--concurrency 6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from scale import PROJECT, Server  # noqa: E402

GRAPH_PATHS = ("/runs/wait", "/runs/stream")  # requests that wait on a graph run


class Soak:
    def __init__(self, server: Server) -> None:
        self.s = server
        self.runs = 0
        self.requests = 0
        self.slow: list[tuple[str, float]] = []  # non-graph requests over 1 s
        self.slowest_graph = 0.0
        self.slowest_probe = 0.0
        self.threads: list[str] = []
        self.items = 0

    async def call(self, method: str, path: str, **kw: object) -> object:
        t0 = time.perf_counter()
        r = await self.s.http.request(method, path, **kw)  # type: ignore[arg-type]
        dt = time.perf_counter() - t0
        assert r.status_code < 300, (path, r.status_code, r.text[:300])
        self.requests += 1
        if path.endswith(GRAPH_PATHS):
            self.slowest_graph = max(self.slowest_graph, dt)
        elif dt > 1.0:
            self.slow.append((path, dt))
        return r.json() if r.content and r.headers.get("content-type", "").startswith("application/json") else None

    async def stream(self, path: str, body: dict) -> None:
        t0 = time.perf_counter()
        async with self.s.http.stream("POST", path, json=body) as r:
            assert r.status_code == 200
            async for _ in r.aiter_bytes():
                pass
        self.slowest_graph = max(self.slowest_graph, time.perf_counter() - t0)
        self.requests += 1

    async def runner(self, w: int, until: float) -> None:
        i = w
        body = {"assistant_id": "two_node", "input": {"n": 1}}
        while time.monotonic() < until:
            kind = i % 4
            if kind == 0:
                await self.call("POST", "/runs/wait", json=body)
            elif kind == 1:
                thread = await self.call("POST", "/threads", json={"metadata": {"graph_id": "two_node"}})
                self.threads.append(thread["thread_id"])  # type: ignore[index]
                await self.call("POST", f"/threads/{thread['thread_id']}/runs/wait", json=body)  # type: ignore[index]
            elif kind == 2:
                await self.stream("/runs/stream", {**body, "stream_mode": ["values"], "stream_resumable": i % 20 == 2})
            else:
                thread = await self.call("POST", "/threads", json={"metadata": {"owner": f"u{i % 30}"}})
                await self.stream(f"/threads/{thread['thread_id']}/runs/stream", {**body, "stream_mode": ["updates"]})  # type: ignore[index]
            self.runs += 1
            i += 6

    async def storer(self, until: float) -> None:
        i = 0
        while time.monotonic() < until:
            last = ""
            for _ in range(20):
                i += 1
                last = uuid.uuid4().hex
                await self.call("PUT", "/store/items", json={"namespace": ["soak", f"ns{i % 200}"], "key": last,
                                                            "value": {"i": i}})
            self.items = i
            await self.call("GET", "/store/items", params={"namespace": f"soak.ns{i % 200}", "key": last})
            await self.call("POST", "/store/items/search", json={"namespace_prefix": ["soak", f"ns{i % 200}"], "limit": 10})
            await self.call("POST", "/store/namespaces", json={"prefix": ["soak"], "limit": 50})

    async def searcher(self, until: float) -> None:
        n = 0
        while time.monotonic() < until:
            for _ in range(20):
                await self.call("POST", "/threads", json={"metadata": {"graph_id": "soak", "owner": f"u{n % 30}"}})
                n += 1
            await self.call("POST", "/threads/search", json={"limit": 10, "offset": min(1000, n)})
            await self.call("POST", "/threads/search", json={"metadata": {"owner": "u7"}, "limit": 10})
            await self.call("POST", "/threads/search", json={"status": "busy"})
            await self.call("POST", "/threads/count", json={"metadata": {"graph_id": "soak"}})

    async def probe(self, until: float) -> None:
        while time.monotonic() < until:
            t0 = time.perf_counter()
            r = await self.s.http.get("/ok")
            assert r.status_code == 200
            self.slowest_probe = max(self.slowest_probe, time.perf_counter() - t0)
            await asyncio.sleep(0.1)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        shutil.copy(PROJECT / "graph.py", workdir / "graph.py")
        shutil.copy(PROJECT / "langgraph.json", workdir / "langgraph.json")
        os.environ.setdefault("INTERLOCK_STREAM_TTL_SECONDS", "60")
        server = Server("interlock", workdir, None)
        soak = Soak(server)
        try:
            warm = time.monotonic() + 30
            await asyncio.gather(*(soak.runner(w, warm) for w in range(args.concurrency)))
            await asyncio.sleep(5)
            runs0, rss0, t0 = soak.runs, server.rss(), time.monotonic()
            until = t0 + args.minutes * 60

            async def report() -> None:
                while time.monotonic() < until:
                    await asyncio.sleep(60)
                    print(f"{(time.monotonic() - t0) / 60:.0f} min: runs {soak.runs}, threads ~{len(soak.threads)}, "
                          f"items {soak.items}, RSS {server.rss():.1f} MiB, slow {len(soak.slow)}", flush=True)

            await asyncio.gather(
                *(soak.runner(w, until) for w in range(args.concurrency)),
                soak.storer(until), soak.searcher(until), soak.probe(until), report(),
            )
            await asyncio.sleep(65)  # past the replay window: finished streams evicted
            runs, rss1 = soak.runs - runs0, server.rss()
            print(f"\nruns {runs} ({runs / (args.minutes * 60):.1f}/s), requests {soak.requests}, "
                  f"store items {soak.items}, threads created ~{len(soak.threads)}")
            print(f"RSS {rss0:.1f} -> {rss1:.1f} MiB: {(rss1 - rss0) * 10_000 / max(runs, 1):.1f} MiB per 10,000 runs")
            print(f"non-graph requests over 1 s: {len(soak.slow)} {sorted(soak.slow, key=lambda x: -x[1])[:5]}")
            print(f"slowest /ok probe: {soak.slowest_probe * 1000:.0f} ms; slowest graph request: "
                  f"{soak.slowest_graph * 1000:.0f} ms")
            print(f"'database is locked' in log: {server.locked_in_log()}")
        finally:
            await server.http.aclose()
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
