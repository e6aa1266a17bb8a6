"""Cost as data grows, Interlock (embedded SQLite) vs the reference `langgraph dev`, side by side in one run.

Both servers run at once; at each size the same operations are measured alternately on each (interleaved, so
machine load hits both alike), median of --reps calls:
- threads grown to each of --threads (default 1k, 10k, 50k; metadata graph_id/owner): get, get_state, search
  (default order at a deep offset), search by metadata matching nothing, search by status, count, runs.wait on
  a thread; plus the fill rate and its slowest request. The reference's thread create scans its whole thread
  list (O(N) each, so its API fill is quadratic: 50+ minutes to 50k here); sizes above
  --reference-direct-above (default 10k) are reached by stopping it, adding the threads with its own
  `Threads.put` outside its API (bench/reference_prefill.py) and starting it again on that data; its fill rate
  there is "not measured".
- store items grown to each of --items (default 10k, 100k in 100 namespaces): put (and the fill's puts/s at
  concurrency 8, filled in chunks of --chunk puts alternating between the servers, so both rates come from the
  same minutes of machine load; median and total of the chunk rates), get, search in a namespace,
  list_namespaces.
- --streams (default 200, 500) concurrent `runs.stream` held open ~3 s each: completed count and RSS per stream.
Interlock's log is checked for "database is locked". --quick shrinks every size for a bounded run (~3 min).

    python bench/scale.py [--quick] [--only interlock] [--reference-bin PATH/TO/langgraph]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "project"
sys.path.insert(0, str(HERE))
from server_runs import free_port  # noqa: E402


def rss_mib(pid: int) -> float:
    """Resident set of a process and its descendants, from /proc (no psutil in the dev environment)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its descendants, from /proc: unlike wall time, it does not
    depend on what else the machine is running."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, name: str, workdir: Path, reference_bin: str | None, jobs: int = 10) -> None:
        self.name = name
        self.workdir = workdir
        self.reference_bin = reference_bin
        self.jobs = jobs
        self.log = workdir / f"{name}.log"
        self.start()
        self.threads: list[str] = []
        self.sample_thread = ""
        self.items = 0
        self.slowest = 0.0

    def start(self) -> None:
        name, workdir, reference_bin, jobs = self.name, self.workdir, self.reference_bin, self.jobs
        port = free_port()
        env = {**os.environ, "INTERLOCK_HOME": str(workdir / ".interlock"), "LANGSMITH_TRACING": "false"}
        env.pop("INTERLOCK_DATABASE_URL", None)
        if name == "interlock":
            cmd = [sys.executable, "-m", "interlock", "serve", "--config", str(workdir / "langgraph.json"),
                   "--port", str(port), "--log-level", "warning", "--concurrency", str(jobs)]
            cwd = HERE.parent
        else:
            exe = reference_bin or shutil.which("langgraph", path=str(Path(sys.executable).parent))
            if exe is None:
                raise FileNotFoundError("langgraph CLI not installed: make bench, or pass --reference-bin")
            cmd = [exe, "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port),
                   "--n-jobs-per-worker", str(jobs)]
            cwd = workdir
        self.exe = cmd[0]
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the servers on kill
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/ok", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError(f"{name} did not start: {self.log.read_text()[-2000:]}")
        # Idle connections are dropped before the servers' 5 s keep-alive timeout: while the other server's chunk runs,
        # reusing one the server is just closing would fail the next put with a ReadError.
        self.http = httpx.AsyncClient(base_url=self.url, timeout=120,
                                      limits=httpx.Limits(max_connections=600, keepalive_expiry=2))

    def prefill_reference_threads(self, n: int) -> None:
        """Stop the reference, grow its threads to n with its own code (bench/reference_prefill.py), restart it.
        The caller closes self.http first."""
        self.stop()
        ids = self.workdir / "prefilled-ids.txt"
        ids.unlink(missing_ok=True)
        python = Path(self.exe).parent / "python"
        cmd = [str(python), str(HERE / "reference_prefill.py"), str(n), str(len(self.threads)), str(ids)]
        subprocess.run(cmd, cwd=self.workdir, check=True)
        self.threads += ids.read_text().split()
        self.start()

    def rss(self) -> float:
        return rss_mib(self.proc.pid)

    def locked_in_log(self) -> int:
        return self.log.read_text(errors="replace").count("database is locked")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


async def timed(call: Awaitable[httpx.Response]) -> float:
    t0 = time.perf_counter()
    r = await call
    dt = time.perf_counter() - t0
    assert r.status_code < 300, (r.status_code, r.text[:300])
    return dt


async def fill(server: Server, n: int, make: Callable[[Server, int], Awaitable[None]], conc: int) -> float:
    """Calls make(server, i) n times at `conc`; returns calls per second and records the slowest call."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await make(server, i)
            server.slowest = max(server.slowest, time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return n / (time.perf_counter() - t0)


async def interleaved_fill(servers: list[Server], n: int, chunk: int, conc: int) -> dict[str, dict[str, float]]:
    """Store puts up to n items per server, `chunk` at a time, alternating servers chunk by chunk."""
    rates: dict[str, list[float]] = {s.name: [] for s in servers}
    spent: dict[str, float] = {s.name: 0.0 for s in servers}
    cpu: dict[str, float] = {s.name: 0.0 for s in servers}
    done = {s.name: 0 for s in servers}
    while any(s.items + done[s.name] < n for s in servers):
        for s in servers:
            k = min(chunk, n - s.items - done[s.name])
            if k <= 0:
                continue
            base = s.items + done[s.name]
            t0, c0 = time.perf_counter(), cpu_seconds(s.proc.pid)
            await fill(s, k, lambda srv, i, base=base: put_item(srv, base + i), conc)
            dt = time.perf_counter() - t0
            cpu[s.name] += cpu_seconds(s.proc.pid) - c0
            rates[s.name].append(k / dt)
            spent[s.name] += dt
            done[s.name] += k
    for s in servers:
        s.items += done[s.name]
    return {s.name: {"median": statistics.median(rates[s.name]) if rates[s.name] else 0.0,
                     "overall": done[s.name] / spent[s.name] if spent[s.name] else 0.0,
                     "cpu_ms": cpu[s.name] * 1000 / done[s.name] if done[s.name] else 0.0} for s in servers}


async def make_thread(server: Server, i: int) -> None:
    r = await server.http.post("/threads", json={"metadata": {"graph_id": "two_node", "owner": f"user{i % 50}"}})
    assert r.status_code == 200, r.text
    server.threads.append(r.json()["thread_id"])


async def put_item(server: Server, i: int) -> None:
    """The i-th item of the fill (keys k0, k1, ... across 100 namespaces)."""
    body = {"namespace": ["scale", f"ns{i % 100}"], "key": f"k{i}", "value": {"i": i, "text": "x" * 64}}
    r = await server.http.put("/store/items", json=body)
    assert r.status_code in (200, 204), r.text


def thread_ops(server: Server) -> dict[str, Callable[[], Awaitable[httpx.Response]]]:
    tid = server.sample_thread
    deep = min(1000, len(server.threads) - 10)
    h = server.http
    return {
        "thread get": lambda: h.get(f"/threads/{tid}"),
        "thread get_state": lambda: h.get(f"/threads/{tid}/state"),
        f"search offset {deep}": lambda: h.post("/threads/search", json={"limit": 10, "offset": deep}),
        "search metadata (no match)": lambda: h.post("/threads/search", json={"metadata": {"graph_id": "nope"}}),
        "search metadata owner": lambda: h.post("/threads/search", json={"metadata": {"owner": "user7"}}),
        "search status busy": lambda: h.post("/threads/search", json={"status": "busy"}),
        "count": lambda: h.post("/threads/count", json={}),
        "runs.wait on a thread": lambda: h.post(f"/threads/{tid}/runs/wait",
                                                json={"assistant_id": "two_node", "input": {"n": 1}}),
    }


def store_ops(server: Server) -> dict[str, Callable[[], Awaitable[httpx.Response]]]:
    h = server.http
    return {
        "store put": lambda: h.put("/store/items", json={"namespace": ["scale", "probe"], "key": uuid.uuid4().hex,
                                                        "value": {"v": 1}}),
        "store get": lambda: h.get("/store/items", params={"namespace": "scale.ns7", "key": "k7"}),
        "store search ns": lambda: h.post("/store/items/search", json={"namespace_prefix": ["scale", "ns7"],
                                                                       "limit": 10}),
        "list_namespaces": lambda: h.post("/store/namespaces", json={"prefix": ["scale"], "limit": 100}),
    }


async def interleaved(servers: list[Server], ops_of: Callable[[Server], dict], reps: int) -> dict[str, dict[str, float]]:
    """Median ms per op per server, alternating servers call by call."""
    samples: dict[str, dict[str, list[float]]] = {s.name: {} for s in servers}
    for _ in range(reps):
        for s in servers:
            for label, call in ops_of(s).items():
                samples[s.name].setdefault(label, []).append(await timed(call()))
    return {name: {k: statistics.median(v) * 1000 for k, v in ops.items()} for name, ops in samples.items()}


async def open_streams(server: Server, k: int) -> dict[str, float]:
    before = server.rss()
    peak = before
    done = 0

    async def one() -> None:
        nonlocal done
        body = {"assistant_id": "slow_stream", "input": {"n": 3}, "stream_mode": ["custom", "values"]}
        async with server.http.stream("POST", "/runs/stream", json=body) as r:
            text = "".join([c async for c in r.aiter_text()])
        if r.status_code == 200 and text.count('"tick"') == 3:
            done += 1

    async def sample() -> None:
        nonlocal peak
        while True:
            await asyncio.sleep(0.5)
            peak = max(peak, server.rss())

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(one() for _ in range(k)))
    sampler.cancel()
    return {"completed": done, "kib_per_stream": (peak - before) * 1024 / k}


def row(label: str, vals: dict[str, float], names: list[str], fmt: str = "{:.1f}", lower: bool = True) -> str:
    cells = [fmt.format(vals[n]) if n in vals else "not measured" for n in names]
    ratio = ""
    if len(names) == 2 and all(vals.get(n) for n in names):
        a, b = vals[names[0]], vals[names[1]]
        r = b / a if lower else a / b
        ratio = f"{r:.1f}x better" if r >= 1 else f"{1 / r:.1f}x worse"
    return f"| {label} | " + " | ".join(cells) + f" | {ratio} |"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1000,10000,50000")
    ap.add_argument("--items", default="10000,100000")
    ap.add_argument("--streams", default="200,500")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--chunk", type=int, default=500, help="store puts per server per turn while filling")
    ap.add_argument("--quick", action="store_true", help="threads 500,2000; items 1000,5000; streams 50,100")
    ap.add_argument("--only", choices=["interlock", "reference"])
    ap.add_argument("--reference-bin", help="the reference's `langgraph` executable (default: next to python)")
    ap.add_argument("--reference-direct-above", type=int, default=10000,
                    help="thread counts above this are added to the reference outside its API (0: always its API)")
    args = ap.parse_args()
    if args.quick:
        args.threads, args.items, args.streams, args.reps = "500,2000", "1000,5000", "50,100", 7
    # An empty list ("--items ''") skips that phase.
    sizes = [int(x) for x in args.threads.split(",") if x]
    item_sizes = [int(x) for x in args.items.split(",") if x]
    stream_sizes = [int(x) for x in args.streams.split(",") if x] or [0]

    with tempfile.TemporaryDirectory() as tmp:
        servers: list[Server] = []
        for name in ("interlock", "reference"):
            if args.only and args.only != name:
                continue
            workdir = Path(tmp) / name
            workdir.mkdir()
            shutil.copy(PROJECT / "graph.py", workdir / "graph.py")
            shutil.copy(PROJECT / "langgraph.json", workdir / "langgraph.json")
            try:
                # Both run as many graphs at once as the widest open-streams phase holds open.
                servers.append(Server(name, workdir, args.reference_bin, jobs=max(stream_sizes) + 10))
            except FileNotFoundError as exc:
                print(f"reference not measured: {exc}", file=sys.stderr)
        names = [s.name for s in servers]
        lines = [f"| measure | {' | '.join(names)} | interlock vs reference |", "|---" * (len(names) + 2) + "|"]
        try:
            for n in sizes:
                filled: list[Server] = []
                for s in servers:
                    s.slowest = 0.0
                    if s.name == "reference" and 0 < args.reference_direct_above < n:
                        await s.http.aclose()
                        s.prefill_reference_threads(n)
                        counted = (await s.http.post("/threads/count", json={})).json()
                        assert counted == n, f"the restarted reference counts {counted} threads, not {n}"
                    else:
                        s.fill_rate = await fill(s, n - len(s.threads), make_thread, 16)  # type: ignore[attr-defined]
                        s.fill_slowest = s.slowest  # type: ignore[attr-defined]
                        filled.append(s)
                    s.sample_thread = s.threads[len(s.threads) // 2]
                lines.append(row(f"{n} threads: fill threads/s", {s.name: s.fill_rate for s in filled}, names,
                                 lower=False))
                lines.append(row(f"{n} threads: fill slowest ms", {s.name: s.fill_slowest * 1000 for s in filled},
                                 names))
                res = await interleaved(servers, thread_ops, args.reps)
                for label in res[names[0]]:
                    lines.append(row(f"{n} threads: {label} ms", {k: v[label] for k, v in res.items()}, names, "{:.2f}"))
                lines.append(row(f"{n} threads: RSS MiB", {s.name: s.rss() for s in servers}, names))
                print("\n".join(lines[-12:]), flush=True)
            for n in item_sizes:
                for s in servers:
                    s.slowest = 0.0
                rates = await interleaved_fill(servers, n, args.chunk, 8)
                lines.append(row(f"{n} items: fill puts/s @8, median of chunks",
                                 {k: v["median"] for k, v in rates.items()}, names, lower=False))
                lines.append(row(f"{n} items: fill puts/s @8, overall",
                                 {k: v["overall"] for k, v in rates.items()}, names, lower=False))
                lines.append(row(f"{n} items: server CPU ms per put", {k: v["cpu_ms"] for k, v in rates.items()},
                                 names, "{:.2f}"))
                lines.append(row(f"{n} items: fill slowest ms", {s.name: s.slowest * 1000 for s in servers}, names))
                res = await interleaved(servers, store_ops, args.reps)
                for label in res[names[0]]:
                    lines.append(row(f"{n} items: {label} ms", {k: v[label] for k, v in res.items()}, names, "{:.2f}"))
                print("\n".join(lines[-8:]), flush=True)
            for k in filter(None, stream_sizes):
                out = {s.name: await open_streams(s, k) for s in servers}
                lines.append(row(f"{k} open streams: completed", {n: v["completed"] for n, v in out.items()}, names,
                                 "{:.0f}", lower=False))
                lines.append(row(f"{k} open streams: KiB per stream", {n: v["kib_per_stream"] for n, v in out.items()},
                                 names))
            if "interlock" in names:
                lines.append(f"| 'database is locked' in interlock log | {servers[0].locked_in_log()} | | |")
        except BaseException:
            for s in servers:  # the servers' side of a failure, before their directory is removed
                print(f"--- {s.name} log tail, exit code {s.proc.poll()}:\n"
                      + s.log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            for s in servers:
                await s.http.aclose()
                s.stop()
        print()
        print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
