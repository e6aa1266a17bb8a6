"""Bounded memory over many runs, through a real `interlock serve` (embedded SQLite).

Bounded variant of the soak in bench/soak.py: 2,000 runs after as many warm-up runs (about 1-2 min on 2 loaded
cores), mixing `runs.wait` and `runs.stream` (stateless and on a thread: the paths that only ever open a stream,
never get it, so only timed eviction frees them) with a few resumable streams and a rare join. The server
process must grow by less than BOUND_MIB_PER_10K per 10,000 runs, extrapolated. Before finished streams were
evicted on a timer this grew about 180 MiB per 10,000 runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from server_testkit import make_server

RUNS = 2_000
WARMUP = 2_000  # to steady state: the WAL at its size cap, the checkpoint thread's cache and arena
BOUND_MIB_PER_10K = 25.0
CONCURRENCY = 8


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def drive(url: str, n: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def new_thread() -> str:
            # A fresh thread per threaded run: a thread's own state grows with each run (that is data, not a leak).
            r = await http.post("/threads", json={})
            r.raise_for_status()
            return r.json()["thread_id"]

        async def one(i: int) -> None:
            body = {"assistant_id": "two_node", "input": {"n": 1}}
            kind = i % 4
            thread_id = await new_thread() if kind in (1, 3) else ""
            if kind == 0:
                r = await http.post("/runs/wait", json=body)
                assert r.status_code == 200 and r.json()["n"] == 4, r.text
            elif kind == 1:
                r = await http.post(f"/threads/{thread_id}/runs/wait", json=body)
                assert r.status_code == 200 and r.json()["n"] == 4, r.text
            elif kind == 2:
                resumable = i % 40 == 2
                async with http.stream(
                    "POST", "/runs/stream", json={**body, "stream_mode": ["values"], "stream_resumable": resumable}
                ) as r:
                    assert r.status_code == 200
                    text = "".join([chunk async for chunk in r.aiter_text()])
                assert "event: values" in text and '"n":4' in text.replace(" ", ""), text[-500:]
            elif i % 500 == 3:
                # A rare join: before timed eviction, only get() (join, join_stream, cancel) freed finished streams.
                r = await http.post(f"/threads/{thread_id}/runs", json=body)
                assert r.status_code == 200, r.text
                joined = await http.get(f"/threads/{thread_id}/runs/{r.json()['run_id']}/join")
                assert joined.status_code == 200 and joined.json()["n"] == 4, joined.text
            else:
                async with http.stream(
                    "POST", f"/threads/{thread_id}/runs/stream", json={**body, "stream_mode": ["updates"]}
                ) as r:
                    assert r.status_code == 200
                    text = "".join([chunk async for chunk in r.aiter_text()])
                assert "event: updates" in text, text[-500:]

        async def worker(w: int) -> None:
            for i in range(w, n, CONCURRENCY):
                await one(i)

        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))


def test_rss_growth_per_10k_runs_is_bounded(tmp_path: Path) -> None:
    # Short replay windows so the measurement sees steady state; the eviction path is the same as with defaults.
    server = make_server(tmp_path, None, INTERLOCK_STREAM_TTL_SECONDS="2")
    try:
        assert server.proc is not None
        pid = server.proc.pid
        asyncio.run(drive(server.url, WARMUP))
        asyncio.run(asyncio.sleep(3))  # past both replay windows: warm-up streams evicted
        before = rss_mib(pid)
        asyncio.run(drive(server.url, RUNS))
        asyncio.run(asyncio.sleep(3))
        after = rss_mib(pid)
        per_10k = (after - before) * 10_000 / RUNS
        print(f"RSS {before:.1f} -> {after:.1f} MiB over {RUNS} runs: {per_10k:.1f} MiB per 10,000 runs")
        assert per_10k < BOUND_MIB_PER_10K, f"{per_10k:.1f} MiB per 10,000 runs"
        assert "database is locked" not in server.log()
    finally:
        server.stop()
