"""The embedded database's writers: waiting for the write lock never blocks the server's event loop, and
concurrent store puts are each acknowledged only once written (server/storage/sqlite_store.py).

Another process (this test) holds SQLite's write lock on the server's file. Store puts, thread creation and runs
must wait for it without stalling the server: requests that need no write (/ok, thread reads) are answered
while the lock is still held, and the waiting writes complete once it is released. Before, the store and the
run dispatcher waited in SQLite's busy handler on the event loop thread, so every request stalled until the
busy timeout and the writes failed with "database is locked".

Concurrent puts: each is acknowledged only once it is written (a following read sees it), and a put that fails
fails alone. The failure is a real one inside SQLite: a trigger on the store table rejects one key; the puts
around it must still be written and acknowledged.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_testkit import ServerProcess, make_server

BAD_KEY = "rejected-by-trigger"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = make_server(tmp_path_factory.mktemp("sqlite-writers"), None)
    try:
        yield proc
    finally:
        proc.stop()


async def scenario(url: str, db_path: Path) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        thread = (await http.post("/threads", json={"metadata": {"graph_id": "two_node"}})).json()
        await http.put("/store/items", json={"namespace": ["locks"], "key": "before", "value": {"v": 0}})

        holder = sqlite3.connect(db_path, isolation_level=None, timeout=30)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held by another process's connection
        try:
            put = asyncio.create_task(
                http.put("/store/items", json={"namespace": ["locks"], "key": "during", "value": {"v": 1}})
            )
            created = asyncio.create_task(http.post("/threads", json={}))
            run = asyncio.create_task(
                http.post(f"/threads/{thread['thread_id']}/runs/wait", json={"assistant_id": "two_node", "input": {"n": 1}})
            )
            await asyncio.sleep(0.5)  # let the writes reach the lock
            # Reads and the health check are served while the writes wait.
            assert (await http.get("/ok")).status_code == 200
            got = await http.get(f"/threads/{thread['thread_id']}")
            assert got.status_code == 200 and got.json()["thread_id"] == thread["thread_id"]
            item = await http.get("/store/items", params={"namespace": "locks", "key": "before"})
            assert item.status_code == 200 and item.json()["value"] == {"v": 0}
            assert not put.done() and not created.done(), "a write finished while another process held the lock"
        finally:
            holder.execute("COMMIT")
            holder.close()
        put_r, created_r, run_r = await asyncio.gather(put, created, run)
        assert put_r.status_code == 204, put_r.text
        assert created_r.status_code == 200, created_r.text
        assert run_r.status_code == 200 and run_r.json()["n"] == 4, run_r.text
        item = await http.get("/store/items", params={"namespace": "locks", "key": "during"})
        assert item.status_code == 200 and item.json()["value"] == {"v": 1}


def test_writes_wait_for_another_process_without_stalling_the_server(server: ServerProcess) -> None:
    asyncio.run(scenario(server.url, server.home / "interlock.db"))
    assert "database is locked" not in server.log()


def reject_one_key(db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            f"CREATE TRIGGER IF NOT EXISTS reject_one BEFORE INSERT ON store WHEN NEW.key = '{BAD_KEY}' "
            "BEGIN SELECT RAISE(ABORT, 'rejected by the test trigger'); END"
        )


def test_concurrent_puts_over_http(server: ServerProcess) -> None:
    reject_one_key(server.home / "interlock.db")
    try:
        asyncio.run(http_scenario(server.url, 40))
    except Exception:
        print(server.log()[-6000:])
        raise
    assert "database is locked" not in server.log()


async def http_scenario(url: str, n: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=n)) as http:

        async def put_then_get(i: int) -> tuple[int, object]:
            key = BAD_KEY if i == n // 2 else f"k{i}"
            put = await http.put("/store/items", json={"namespace": ["grouped"], "key": key, "value": {"i": i}})
            if key == BAD_KEY or put.status_code != 204:
                return put.status_code, None
            # Acknowledged means written: the very next read sees it.
            got = await http.get("/store/items", params={"namespace": "grouped", "key": key})
            return put.status_code, got.json()["value"] if got.status_code == 200 and got.json() else None

        results = await asyncio.gather(*(put_then_get(i) for i in range(n)))
        for i, (status, value) in enumerate(results):
            if i == n // 2:
                assert status == 500, "the rejected put must fail"
            else:
                assert (status, value) == (204, {"i": i}), (i, status, value)
        found = await http.post("/store/items/search", json={"namespace_prefix": ["grouped"], "limit": 100})
        assert sorted(item["key"] for item in found.json()["items"]) == sorted(f"k{i}" for i in range(n) if i != n // 2)
