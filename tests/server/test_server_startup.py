"""Safe concurrent start: replicas and workers starting together on an empty PostgreSQL database all come up
(schema migrations and LangGraph's checkpointer/store setup run under one advisory lock), so do processes setting up
one new SQLite file (a file lock beside it), and a multi-worker server whose workers cannot start exits non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from server_testkit import PROJECT, ROOT, free_port


def _spawn(tmp: Path, url: str, n: int) -> list[tuple[subprocess.Popen, str, Path]]:
    """Start n servers at once without waiting for any of them."""
    procs = []
    for _ in range(n):
        port = free_port()
        home = tmp / f"home-{port}"
        home.mkdir(parents=True)
        log = home / "server.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "interlock", "serve", "--config", str(PROJECT / "langgraph.json"),
                 "--port", str(port)],
                cwd=str(ROOT), env=_env(home, url), stdout=out, stderr=subprocess.STDOUT,
            )
        procs.append((proc, f"http://127.0.0.1:{port}", log))
    return procs


def _env(home: Path, url: str) -> dict[str, str]:
    env = {**os.environ, "INTERLOCK_HOME": str(home), "INTERLOCK_DATABASE_URL": url, "LANGGRAPH_API_KEY": "",
           "LANGSMITH_API_KEY": ""}
    env.pop("INTERLOCK_REDIS_URL", None)
    return env


def _wait_up(proc: subprocess.Popen, url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(url + "/ok", timeout=0.5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def test_four_replicas_start_together_on_an_empty_database(pg_factory, tmp_path) -> None:  # noqa: ANN001
    """INTERLOCK_TEST_START_TRIALS trials (default 3; the issue's acceptance run uses 10) of 4 replicas, each
    bounded by 60 s; about 25 s per trial on 2 loaded cores."""
    for trial in range(int(os.environ.get("INTERLOCK_TEST_START_TRIALS", "3"))):
        url = pg_factory()
        procs = _spawn(tmp_path / f"trial-{trial}", url, 4)
        try:
            deadline = time.monotonic() + 60
            up = [_wait_up(proc, base, deadline) for proc, base, _ in procs]
            failed = [log.read_text()[-2000:] for (_, _, log), ok in zip(procs, up, strict=True) if not ok]
            assert not failed, f"trial {trial}: {len(failed)} replica(s) failed to start: {failed}"
            # They share one working schema: a thread created on one replica is visible on another.
            tid = httpx.post(procs[0][1] + "/threads", json={}).json()["thread_id"]
            assert httpx.get(f"{procs[3][1]}/threads/{tid}").status_code == 200
        finally:
            for proc, _, _ in procs:
                proc.terminate()
            for proc, _, _ in procs:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def test_workers_that_cannot_start_make_the_server_exit_non_zero(tmp_path) -> None:
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    # A database that does not exist: every worker's startup fails.
    env = _env(home, "postgresql://postgres@127.0.0.1:5432/interlock_no_such_database")
    proc = subprocess.run(
        [sys.executable, "-m", "interlock", "serve", "--config", str(PROJECT / "langgraph.json"), "--port", str(port),
         "--workers", "2"],
        cwd=str(ROOT), env=env, capture_output=True, timeout=120,
    )
    assert proc.returncode != 0, proc.stderr.decode()[-2000:]


SQLITE_SETUP = """
import asyncio, os, sys, time
from interlock.kernel.database import connect
from interlock.server.checkpoints import open_persistence
from interlock.server.storage.migrations import migrate, setup_lock

async def main(url, go):
    open(f"{go}.ready-{os.getpid()}", "w").close()
    while not os.path.exists(go):  # every process imported, then all set up at the same moment
        time.sleep(0.005)
    db = await connect(url)
    try:
        async with setup_lock(url):
            await migrate(db)
        async with open_persistence(url) as (saver, store):
            pass
    finally:
        await db.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_processes_setting_up_one_new_sqlite_file_at_once_all_succeed(tmp_path) -> None:  # noqa: ANN001
    """`serve --workers N` on the embedded default: N processes run the schema setup of one new SQLite file at the
    same moment (LangGraph's store reads its migration version, then inserts it: without the setup lock two of them
    inserted the same version and one worker died)."""
    for trial in range(5):
        url = f"sqlite:///{tmp_path / f'trial-{trial}.db'}"
        go = tmp_path / f"go-{trial}"
        env = {**os.environ, "INTERLOCK_HOME": str(tmp_path / "home")}
        procs = [subprocess.Popen([sys.executable, "-c", SQLITE_SETUP, url, str(go)], cwd=str(ROOT), env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(4)]
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob(f"go-{trial}.ready-*"))) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        go.touch()
        outputs = [(p.wait(60), p.stdout.read().decode()[-1500:] if p.stdout else "") for p in procs]
        failed = [out for code, out in outputs if code != 0]
        assert not failed, f"trial {trial}: {len(failed)} of 4 failed: {failed}"
