"""`runs.wait` latency and throughput, Interlock vs the reference `langgraph dev`, in one run on this machine.

Phases (trivial two-node graph, no LLM): 200 sequential stateless runs; 1000 runs at 50 concurrent, stateless;
1000 runs at 50 concurrent with a fresh thread per run. Also idle RSS of each server process (after warm-up).
The reference needs the bench extra (`pip install -e '.[bench]'`, which brings `langgraph-cli[inmem]`).

    python bench/server_runs.py [--seq 200] [--conc-n 1000] [--concurrency 50] [--only interlock]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from langgraph_sdk import get_client

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "project"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, round(p / 100 * (len(xs) - 1))))]


def rss_mib(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def start(name: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "INTERLOCK_HOME": str(workdir / ".interlock"), "LANGSMITH_TRACING": "false"}
    env.pop("INTERLOCK_DATABASE_URL", None)
    if name == "interlock":
        cmd = [sys.executable, "-m", "interlock", "serve", "--config", str(workdir / "langgraph.json"), "--port", str(port),
               "--log-level", "warning"]
        cwd = HERE.parent
    else:
        exe = shutil.which("langgraph", path=str(Path(sys.executable).parent))
        if exe is None:
            raise FileNotFoundError("langgraph CLI not installed: pip install -e '.[bench]'")
        cmd = [exe, "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port)]
        cwd = workdir
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ok", timeout=0.5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{name} did not start")


async def one(client, mode: str) -> float:
    tid = (await client.threads.create())["thread_id"] if mode == "thread" else None
    t0 = time.perf_counter()
    out = await client.runs.wait(tid, "two_node", input={"n": 1})
    dt = time.perf_counter() - t0
    assert isinstance(out, dict) and out.get("n") == 4, out
    return dt


async def phase(client, n: int, conc: int, mode: str) -> dict:
    sem = asyncio.Semaphore(conc)
    lats: list[float] = []

    async def task() -> None:
        async with sem:
            lats.append(await one(client, mode))

    t0 = time.perf_counter()
    await asyncio.gather(*(task() for _ in range(n)))
    wall = time.perf_counter() - t0
    return {"runs_s": n / wall, "p50": pct(lats, 50) * 1000, "p99": pct(lats, 99) * 1000,
            "mean": statistics.mean(lats) * 1000}


async def measure(name: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        shutil.copy(PROJECT / "graph.py", workdir / "graph.py")
        shutil.copy(PROJECT / "langgraph.json", workdir / "langgraph.json")
        proc, url = start(name, workdir)
        try:
            client = get_client(url=url, api_key=None, timeout=120)
            for _ in range(5):
                await one(client, "stateless")
            await asyncio.sleep(1)
            idle = rss_mib(proc.pid)
            out = {"idle_rss": idle}
            out["sequential"] = await phase(client, args.seq, 1, "stateless")
            out["concurrent"] = await phase(client, args.conc_n, args.concurrency, "stateless")
            out["thread"] = await phase(client, args.conc_n, args.concurrency, "thread")
            out["rss_after"] = rss_mib(proc.pid)
            return out
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def table(results: dict[str, dict], args: argparse.Namespace) -> str:
    names = list(results)
    rows = [("metric", *names, "ratio (interlock vs ref)" if len(names) == 2 else "")]

    def add(label: str, key: tuple[str, ...], better: str) -> None:
        vals = []
        for n in names:
            v = results[n]
            for k in key:
                v = v[k]
            vals.append(v)
        ratio = ""
        if len(vals) == 2 and vals[0] and vals[1]:
            r = vals[1] / vals[0] if better == "lower" else vals[0] / vals[1]
            ratio = f"{r:.1f}x better" if r >= 1 else f"{1 / r:.1f}x worse"
        rows.append((label, *(f"{v:.1f}" for v in vals), ratio))

    add(f"sequential {args.seq} p50 ms", ("sequential", "p50"), "lower")
    add(f"sequential {args.seq} p99 ms", ("sequential", "p99"), "lower")
    add("sequential runs/s", ("sequential", "runs_s"), "higher")
    add(f"{args.conc_n}@{args.concurrency} stateless runs/s", ("concurrent", "runs_s"), "higher")
    add(f"{args.conc_n}@{args.concurrency} stateless p50 ms", ("concurrent", "p50"), "lower")
    add(f"{args.conc_n}@{args.concurrency} stateless p99 ms", ("concurrent", "p99"), "lower")
    add(f"{args.conc_n}@{args.concurrency} thread-per-run runs/s", ("thread", "runs_s"), "higher")
    add(f"{args.conc_n}@{args.concurrency} thread-per-run p50 ms", ("thread", "p50"), "lower")
    add("idle RSS MiB", ("idle_rss",), "lower")
    add("RSS after all runs MiB", ("rss_after",), "lower")
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", type=int, default=200)
    ap.add_argument("--conc-n", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--only", choices=["interlock", "reference"])
    args = ap.parse_args()
    results: dict[str, dict] = {}
    for name in ("interlock", "reference"):
        if args.only and args.only != name:
            continue
        try:
            results[name] = await measure(name, args)
        except FileNotFoundError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
    print(table(results, args))


if __name__ == "__main__":
    asyncio.run(main())
