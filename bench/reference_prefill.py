"""Grow a *stopped* reference server's thread list to N, with the reference's own code, without its API.

Why: the reference (`langgraph dev`, langgraph-runtime-inmem) checks for a duplicate id on every thread create by
scanning its whole thread list twice (`Threads.put`: `next(t for t in conn.store["threads"] if ...)`), so each
create costs O(N) Python on its one event loop and filling to N is O(N^2): past 10k it creates ~13 threads/s
over HTTP, and even called in-process (no HTTP) 15k -> 20k took 63 s here. Concurrent creation cannot help (one
process, CPU-bound, one GIL). Here each thread is made by the same `Threads.put`, against a scratch list (so the
scan sees nothing: the ids are fresh uuid4s, which cannot collide) and then appended to the real list, and the
store is written the way the server itself persists it (its PersistentDict's pickle). The server, started again
in the same directory, loads it like its own data from a previous run.

Run with the reference's Python, in the reference server's working directory (scale.py does this):
    python bench/reference_prefill.py N HAD IDS_FILE   # HAD: threads it had over the API; new ids go to IDS_FILE
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from typing import Any

# What `langgraph dev` sets before importing its runtime (the in-memory edition needs no Redis or database).
for key, value in {"REDIS_URI": "fake", "DATABASE_URI": ":memory:", "MIGRATIONS_PATH": "__inmem",
                   "LANGGRAPH_RUNTIME_EDITION": "inmem"}.items():
    os.environ.setdefault(key, value)


def main(total: int, had: int, ids_file: str) -> None:
    from langgraph_runtime_inmem import database

    os.makedirs(".langgraph_api", exist_ok=True)
    store = database.GLOBAL_STORE
    if os.path.exists(database.OPS_FILENAME):
        store.load()
    for k in ("runs", "threads", "assistant_versions", "assistants", "crons"):
        store.setdefault(k, [])
    threads = store["threads"]
    if len(threads) < had:
        sys.exit(f"the reference persisted {len(threads)} threads, {had} were created: not stopped cleanly?")
    new_ids = asyncio.run(create(database, threads, total))
    store.sync()
    with open(ids_file, "a") as f:
        f.writelines(t + "\n" for t in new_ids)
    print(f"reference threads: {len(threads)} ({len(new_ids)} added)", file=sys.stderr)


async def create(database: Any, threads: list[Any], total: int) -> list[str]:
    from langgraph_runtime_inmem.ops import Threads

    scratch = database.InMemConnectionProto()
    new_ids = []
    for i in range(len(threads), total):
        scratch.store = {"threads": []}
        created = await Threads.put(scratch, uuid.uuid4(), metadata={"graph_id": "two_node", "owner": f"user{i % 50}"},
                                    if_exists="raise")
        async for thread in created:
            threads.append(thread)
            new_ids.append(str(thread["thread_id"]))
    return new_ids


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
