"""PostgreSQL hot path: database transactions per run and throughput, SQLite vs PostgreSQL with one and two
replicas (PostgreSQL + Redis) vs the reference server (`langgraph dev`), on the bench project's two-node graph.

Every server is started up front and the phases alternate between them round by round (--rounds, the order
rotated each round), so machine load on a shared host hits every configuration alike; rates are total runs over
total time per configuration, p50/p99 over all of its runs.

Round trips per run = the PostgreSQL commands each server sent and waited for (a statement, a multi-statement
message, a pipeline's sync) over its phases, divided by its runs, counted inside the server process by
tests/server/round_trips_serve.py (pg_stat_database's transaction counts lag: an idle backend reports them up to
ten seconds late). Server CPU per run = user + system time of the server processes (not the database's) over its
phases, divided by its runs, which machine load inflates far less than wall time. Both include the engine's own
polling and heartbeats meanwhile, as a deployment pays. A thread-per-run phase creates a thread then calls
`runs.wait` on it; a stateless phase calls `/runs/wait`.

--base-python/--base-cwd add the Interlock configurations once more on another checkout (e.g. the main
worktree's venv and directory) for a before/after in the same run.

    python bench/pg_hot_path.py [--n 300] [--rounds 3] [--concurrency 50] [--pg URL] [--reference-bin PATH]
        [--base-python /work/main/.venv/bin/python --base-cwd /work/main]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from langgraph_sdk import get_client

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "project"
ROUND_TRIPS_SERVE = HERE.parent / "tests" / "server" / "round_trips_serve.py"  # `interlock serve`, counting
sys.path.insert(0, str(HERE))
from scale import cpu_seconds  # noqa: E402
from server_runs import free_port, pct  # noqa: E402


@dataclass
class Config:
    label: str
    urls: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    dbname: str | None = None
    lats: dict[str, list[float]] = field(default_factory=lambda: {"thread": [], "stateless": []})
    spent: dict[str, float] = field(default_factory=lambda: {"thread": 0.0, "stateless": 0.0})
    trips: dict[str, int] = field(default_factory=lambda: {"thread": 0, "stateless": 0})
    logs: list[Path] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=lambda: {"thread": 0, "stateless": 0})
    cpu: dict[str, float] = field(default_factory=lambda: {"thread": 0.0, "stateless": 0.0})


def wait_ok(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url + "/ok", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"server did not start: {log.read_text(errors='replace')[-2000:]}")


def start_interlock(workdir: Path, db_url: str | None, redis: str | None, python: str, cwd: Path
                    ) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    home = workdir / f"home-{port}"
    env = {**os.environ, "INTERLOCK_HOME": str(home), "LANGSMITH_TRACING": "false"}
    env.pop("INTERLOCK_DATABASE_URL", None)
    env.pop("INTERLOCK_REDIS_URL", None)
    if db_url:
        env["INTERLOCK_DATABASE_URL"] = db_url
    if redis:
        env["INTERLOCK_REDIS_URL"] = redis
    log = workdir / f"interlock-{port}.log"
    trips = workdir / f"round-trips-{port}"
    env["INTERLOCK_ROUND_TRIPS_LOG"] = str(trips)
    proc = subprocess.Popen(
        [python, str(ROUND_TRIPS_SERVE), "serve", "--config", str(PROJECT / "langgraph.json"), "--port", str(port),
         "--log-level", "warning"],
        cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ok(url, proc, log)
    return proc, url, trips


def start_reference(workdir: Path, exe: str, jobs: int) -> tuple[subprocess.Popen, str]:
    ref = workdir / "reference"
    ref.mkdir()
    shutil.copy(PROJECT / "graph.py", ref / "graph.py")
    shutil.copy(PROJECT / "langgraph.json", ref / "langgraph.json")
    port = free_port()
    log = ref / "reference.log"
    proc = subprocess.Popen(
        [exe, "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port),
         "--n-jobs-per-worker", str(jobs)],
        cwd=ref, env={**os.environ, "LANGSMITH_TRACING": "false"}, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ok(url, proc, log)
    return proc, url


def round_trips(cfg: Config, reset: bool) -> int:
    """Reset (SIGUSR1) or read (SIGUSR2, then the file it writes) the servers' round-trip counts."""
    if not cfg.logs:
        return 0
    for proc, log in zip(cfg.procs, cfg.logs, strict=True):
        log.unlink(missing_ok=True)
        proc.send_signal(signal.SIGUSR1 if reset else signal.SIGUSR2)
    if reset:
        time.sleep(0.2)
        return 0
    total = 0
    for log in cfg.logs:
        for _ in range(100):
            if log.exists() and log.read_text():
                break
            time.sleep(0.05)
        total += int(log.read_text())
    return total


async def phase(cfg: Config, n: int, conc: int, mode: str) -> None:
    clients = [get_client(url=u, api_key=None) for u in cfg.urls]
    sem = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        client = clients[i % len(clients)]  # round robin, as a load balancer would
        async with sem:
            t = time.perf_counter()
            try:
                tid = (await client.threads.create())["thread_id"] if mode == "thread" else None
                out = await client.runs.wait(tid, "two_node", input={"n": 1})
                if not (isinstance(out, dict) and out.get("n") == 4):
                    cfg.errors[mode] += 1
            except Exception:  # noqa: BLE001 - counted, not fatal, in a benchmark
                cfg.errors[mode] += 1
            cfg.lats[mode].append(time.perf_counter() - t)

    t0, c0 = time.perf_counter(), sum(cpu_seconds(p.pid) for p in cfg.procs)
    await asyncio.gather(*(one(i) for i in range(n)))
    cfg.spent[mode] += time.perf_counter() - t0
    cfg.cpu[mode] += sum(cpu_seconds(p.pid) for p in cfg.procs) - c0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="runs per configuration and mode, over all rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--pg", default=os.environ.get("INTERLOCK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--reference-bin", help="the reference's `langgraph` executable (default: next to python)")
    parser.add_argument("--reference-jobs", type=int, default=10)
    parser.add_argument("--base-python", help="python of a baseline checkout (its PostgreSQL rows are added)")
    parser.add_argument("--base-cwd", help="that checkout's directory")
    parser.add_argument("--only", help="comma-separated labels to run (e.g. 'PostgreSQL x1,reference')")
    args = parser.parse_args()
    per_round = max(1, args.n // args.rounds)
    ref_exe = args.reference_bin or shutil.which("langgraph", path=str(Path(sys.executable).parent))
    here = (sys.executable, HERE.parent)
    plans: list[tuple[str, str, int, tuple[str, Path] | None]] = [
        ("SQLite", "sqlite", 1, here), ("PostgreSQL x1", "pg", 1, here), ("PostgreSQL x2", "pg", 2, here)]
    if args.base_python and args.base_cwd:
        base = (args.base_python, Path(args.base_cwd))
        plans += [("SQLite (base)", "sqlite", 1, base), ("PostgreSQL x1 (base)", "pg", 1, base),
                  ("PostgreSQL x2 (base)", "pg", 2, base)]
    if ref_exe:
        plans.append(("reference", "reference", 1, None))
    else:
        print("reference not measured: no langgraph executable (make bench, or --reference-bin)", file=sys.stderr)
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        plans = [p for p in plans if p[0] in wanted]
    configs: list[Config] = []
    with tempfile.TemporaryDirectory() as tmp, psycopg.connect(args.pg, autocommit=True) as admin:
        work = Path(tmp)
        try:
            for label, kind, replicas, code in plans:
                cfg = Config(label)
                configs.append(cfg)
                if kind == "reference":
                    proc, url = start_reference(work, ref_exe, args.reference_jobs)  # type: ignore[arg-type]
                    cfg.procs, cfg.urls = [proc], [url]
                    continue
                db_url = None
                if kind == "pg":
                    cfg.dbname = f"interlock_bench_{uuid.uuid4().hex[:8]}"
                    admin.execute(f'CREATE DATABASE "{cfg.dbname}"')
                    db_url = args.pg.rsplit("/", 1)[0] + "/" + cfg.dbname
                assert code is not None
                for _ in range(replicas):
                    proc, url, trips = start_interlock(work, db_url, args.redis if kind == "pg" else None, *code)
                    cfg.procs.append(proc)
                    cfg.urls.append(url)
                    if kind == "pg":
                        cfg.logs.append(trips)
            for cfg in configs:  # warm-up
                await phase(cfg, 30, 10, "stateless")
                cfg.lats["stateless"].clear()
                cfg.spent["stateless"] = 0.0
                cfg.errors["stateless"] = 0
                cfg.cpu["stateless"] = 0.0
            for r in range(args.rounds):
                order = configs[r % len(configs):] + configs[: r % len(configs)]
                for mode in ("thread", "stateless"):
                    for cfg in order:
                        round_trips(cfg, reset=True)
                        await phase(cfg, per_round, args.concurrency, mode)
                        cfg.trips[mode] += round_trips(cfg, reset=False)
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        finally:
            for cfg in configs:
                for proc in cfg.procs:
                    try:
                        os.killpg(proc.pid, signal.SIGINT)
                    except ProcessLookupError:
                        pass
            for cfg in configs:
                for proc in cfg.procs:
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                if cfg.dbname:
                    admin.execute(f'DROP DATABASE IF EXISTS "{cfg.dbname}" WITH (FORCE)')
    total = per_round * args.rounds
    print(f"\n{total} runs per row at {args.concurrency} concurrent, two-node graph, {args.rounds} interleaved rounds\n")
    print("| server | mode | round trips/run | runs/s | p50 ms | p99 ms | server CPU ms/run | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("thread", "stateless"):
        for cfg in configs:
            xact = f"{cfg.trips[mode] / total:.1f}" if cfg.logs else "-"
            lats = cfg.lats[mode]
            rate = total / cfg.spent[mode] if cfg.spent[mode] else 0.0
            print(f"| {cfg.label} | {mode} | {xact} | {rate:.1f} | {pct(lats, 50) * 1000:.0f} | "
                  f"{pct(lats, 99) * 1000:.0f} | {cfg.cpu[mode] * 1000 / total:.1f} | {cfg.errors[mode]} |")


if __name__ == "__main__":
    asyncio.run(main())
