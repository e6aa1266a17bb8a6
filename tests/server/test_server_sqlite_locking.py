"""Waiting for the embedded database's write lock never blocks the server's event loop.

Another process (this test) holds SQLite's write lock on the server's file. Store puts, thread creation and runs
must wait for it without stalling the server: requests that need no write (/ok, thread reads) are answered
while the lock is still held, and the waiting writes complete once it is released. Before, the store and the
run dispatcher waited in SQLite's busy handler on the event loop thread, so every request stalled until the
busy timeout and the writes failed with "database is locked".
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
from server_testkit import make_server


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


def test_writes_wait_for_another_process_without_stalling_the_server(tmp_path: Path) -> None:
    server = make_server(tmp_path, None)
    try:
        asyncio.run(scenario(server.url, server.home / "interlock.db"))
        assert "database is locked" not in server.log()
    finally:
        server.stop()
