"""PostgreSQL hot path: database transactions per run and throughput, SQLite vs PostgreSQL with one and two
replicas (PostgreSQL + Redis), on the bench project's two-node graph.

Transactions per run = the delta of pg_stat_database.xact_commit for the server's database over a phase, divided
by its runs (it includes the engine's own polling and heartbeats during the phase, as a real deployment pays).
A thread-per-run phase creates a thread then calls `runs.wait` on it; a stateless phase calls `/runs/wait`.

    python bench/pg_hot_path.py [--n 500] [--concurrency 50] [--pg postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from langgraph_sdk import get_client

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "project"
sys.path.insert(0, str(HERE))
from server_runs import free_port, pct  # noqa: E402


def start(workdir: Path, db_url: str | None, redis: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    home = workdir / f"home-{port}"
    env = {**os.environ, "INTERLOCK_HOME": str(home), "LANGSMITH_TRACING": "false"}
    env.pop("INTERLOCK_DATABASE_URL", None)
    env.pop("INTERLOCK_REDIS_URL", None)
    if db_url:
        env["INTERLOCK_DATABASE_URL"] = db_url
    if redis:
        env["INTERLOCK_REDIS_URL"] = redis
    proc = subprocess.Popen(
        [sys.executable, "-m", "interlock", "serve", "--config", str(PROJECT / "langgraph.json"), "--port", str(port),
         "--log-level", "warning"],
        cwd=HERE.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ok", timeout=0.5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def commits(admin_url: str, dbname: str) -> int:
    time.sleep(1.2)  # backends flush their statistics at most once a second
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [dbname]).fetchone()
        return int(row[0]) if row else 0


async def phase(urls: list[str], n: int, conc: int, mode: str) -> dict:
    clients = [get_client(url=u, api_key=None) for u in urls]
    sem = asyncio.Semaphore(conc)
    lats: list[float] = []
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        client = clients[i % len(clients)]  # round robin, as a load balancer would
        async with sem:
            t = time.perf_counter()
            try:
                tid = (await client.threads.create())["thread_id"] if mode == "thread" else None
                await client.runs.wait(tid, "two_node", input={"n": 1})
            except Exception:  # noqa: BLE001 - counted, not fatal, in a benchmark
                errors += 1
            lats.append(time.perf_counter() - t)

    start_t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - start_t
    return {"runs_s": n / elapsed, "p50_ms": pct(lats, 50) * 1000, "p99_ms": pct(lats, 99) * 1000, "errors": errors}


async def measure(label: str, workdir: Path, db_url: str | None, replicas: int, redis: str | None,
                  admin: str, args: argparse.Namespace) -> dict[str, dict]:
    procs = [start(workdir, db_url, redis) for _ in range(replicas)]
    urls = [u for _, u in procs]
    out: dict[str, dict] = {}
    try:
        await phase(urls, 50, 10, "stateless")  # warm-up
        for mode in ("thread", "stateless"):
            before = commits(admin, db_url.rsplit("/", 1)[1]) if db_url else 0
            result = await phase(urls, args.n, args.concurrency, mode)
            if db_url:
                # Idle polling continues during the 1.2 s flush wait; small next to n runs.
                result["xact_per_run"] = (commits(admin, db_url.rsplit("/", 1)[1]) - before) / args.n
            out[mode] = result
            print(label, mode, {k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}, flush=True)
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGINT)
        for proc, _ in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--pg", default=os.environ.get("INTERLOCK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp, psycopg.connect(args.pg, autocommit=True) as admin:
        work = Path(tmp)
        results["SQLite"] = await measure("SQLite", work, None, 1, None, args.pg, args)
        for label, replicas in (("PostgreSQL x1", 1), ("PostgreSQL x2", 2)):
            name = f"interlock_bench_{uuid.uuid4().hex[:8]}"
            admin.execute(f'CREATE DATABASE "{name}"')
            try:
                url = args.pg.rsplit("/", 1)[0] + "/" + name
                results[label] = await measure(label, work, url, replicas, args.redis, args.pg, args)
            finally:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"\n{args.n} runs at {args.concurrency} concurrent, two-node graph\n")
    print("| server | mode | xact/run | runs/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for label, modes in results.items():
        for mode, r in modes.items():
            xact = f"{r['xact_per_run']:.1f}" if "xact_per_run" in r else "-"
            print(f"| {label} | {mode} | {xact} | {r['runs_s']:.0f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} |")


if __name__ == "__main__":
    asyncio.run(main())
