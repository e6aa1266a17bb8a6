"""Runs, streaming, interrupts, cancellation and multitask strategies over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import orjson
import pytest
from langgraph_sdk.errors import ConflictError, NotFoundError


async def sse_events(http: httpx.AsyncClient, method: str, path: str, **kwargs) -> tuple[httpx.Response, list[dict]]:
    """Raw SSE parse, to check framing, ids and headers exactly."""
    events: list[dict] = []
    async with http.stream(method, path, **kwargs) as resp:
        current: dict = {}
        buffer = b""
        async for chunk in resp.aiter_bytes():
            buffer += chunk
            while b"\r\n\r\n" in buffer:
                block, buffer = buffer.split(b"\r\n\r\n", 1)
                current = {}
                for line in block.split(b"\r\n"):
                    if line.startswith(b":"):
                        current["comment"] = line.decode()
                    elif line.startswith(b"event: "):
                        current["event"] = line[7:].decode()
                    elif line.startswith(b"data: "):
                        current["data"] = orjson.loads(line[6:])
                    elif line.startswith(b"id: "):
                        current["id"] = line[4:].decode()
                events.append(current)
    return resp, events


async def test_wait_stateless_and_stateful(client) -> None:
    assert await client.runs.wait(None, "two_node", input={"n": 1}) == {"n": 4, "log": ["a", "b"]}
    tid = (await client.threads.create())["thread_id"]
    assert (await client.runs.wait(tid, "two_node", input={"n": 1}))["log"] == ["a", "b"]
    second = await client.runs.wait(tid, "two_node", input={"n": 1})
    assert second["log"] == ["a", "b", "a", "b"]  # same thread accumulates
    runs = await client.runs.list(tid)
    assert len(runs) == 2 and all(r["status"] == "success" for r in runs)
    assert runs[0]["created_at"] >= runs[1]["created_at"]  # newest first


async def test_stream_framing_headers_and_modes(server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        tid = (await http.post("/threads", json={})).json()["thread_id"]
        resp, events = await sse_events(
            http,
            "POST",
            f"/threads/{tid}/runs/stream",
            json={"assistant_id": "two_node", "input": {"n": 1}, "stream_mode": ["values", "updates", "custom", "debug", "tasks", "checkpoints"]},
        )
        assert resp.headers["content-type"].startswith("text/event-stream")
        run_id = events[0]["data"]["run_id"]
        assert resp.headers["content-location"] == f"/threads/{tid}/runs/{run_id}"
        assert resp.headers["location"] == f"/threads/{tid}/runs/{run_id}/stream"
        names = [e.get("event") for e in events if "event" in e]
        assert names[0] == "metadata"
        assert {"values", "updates", "custom", "debug", "tasks", "checkpoints"} <= set(names)
        assert all("id" not in e for e in events)  # ids only for resumable runs
        assert [e["data"] for e in events if e.get("event") == "custom"] == [{"custom": "from-b"}]
        assert events[-1]["event"] == "values" or names[-1] in ("debug", "checkpoints", "tasks", "updates", "values")
        wait = await http.post(f"/threads/{tid}/runs/wait", json={"assistant_id": "two_node", "input": {"n": 1}})
        assert wait.headers["location"].endswith("/join") and "/runs/" in wait.headers["content-location"]


async def test_stream_messages_tuple_legacy_and_events(client) -> None:
    parts = [p async for p in client.runs.stream(None, "chat", input={"messages": [{"role": "user", "content": "hi"}]}, stream_mode="messages-tuple")]
    chunks = [p.data for p in parts if p.event == "messages"]
    assert chunks, [p.event for p in parts]
    message, meta = chunks[0]
    assert message["type"] == "AIMessageChunk" and meta["langgraph_node"] == "chat"
    assert len({c[0]["id"] for c in chunks}) == 1
    assert "".join(c[0]["content"] for c in chunks) == "hello from the fake model"
    legacy = [p async for p in client.runs.stream(None, "chat", input={"messages": [{"role": "user", "content": "hi"}]}, stream_mode="messages")]
    kinds = {p.event for p in legacy}
    assert {"messages/metadata", "messages/partial"} <= kinds
    last_partial = [p.data for p in legacy if p.event == "messages/partial"][-1]
    assert last_partial[0]["content"] == "hello from the fake model"
    events = [p async for p in client.runs.stream(None, "chat", input={"messages": [{"role": "user", "content": "hi"}]}, stream_mode="events")]
    assert any(p.event == "events" and p.data["event"] == "on_chat_model_stream" for p in events)


async def test_stream_subgraphs_namespaced(client) -> None:
    parts = [p async for p in client.runs.stream(None, "nested", input={"n": 1}, stream_mode="updates", stream_subgraphs=True)]
    names = [p.event for p in parts]
    assert "updates" in names
    assert any(n.startswith("updates|inner:") for n in names), names
    flat = [p async for p in client.runs.stream(None, "nested", input={"n": 1}, stream_mode="updates")]
    assert not any("|" in p.event for p in flat)


async def test_interrupt_wait_state_and_resume(client) -> None:
    tid = (await client.threads.create())["thread_id"]
    out = await client.runs.wait(tid, "hitl", input={"action": "wire-money"})
    interrupt = out["__interrupt__"][0]
    assert interrupt["value"] == {"question": "approve?", "action": "wire-money"} and len(interrupt["id"]) == 32
    thread = await client.threads.get(tid)
    assert thread["status"] == "interrupted"
    state = await client.threads.get_state(tid)
    assert state["next"] == ["approve"]
    assert state["tasks"][0]["interrupts"][0]["id"] == interrupt["id"] == state["interrupts"][0]["id"]
    resumed = await client.runs.wait(tid, "hitl", command={"resume": "yes"})
    assert resumed["result"] == "executed" and "__interrupt__" not in resumed
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_interrupt_surfaces_in_values_stream(client) -> None:
    tid = (await client.threads.create())["thread_id"]
    parts = [p async for p in client.runs.stream(tid, "hitl", input={}, stream_mode="values")]
    carrying = [p.data for p in parts if p.event == "values" and "__interrupt__" in p.data]
    assert carrying and carrying[0]["__interrupt__"][0]["value"]["question"] == "approve?"


async def test_resume_map_by_interrupt_id(client) -> None:
    tid = (await client.threads.create())["thread_id"]
    out = await client.runs.wait(tid, "parallel", input={})
    ids = {i["value"]["q"]: i["id"] for i in out["__interrupt__"]}
    assert set(ids) == {"first", "second"}
    done = await client.runs.wait(tid, "parallel", command={"resume": {ids["first"]: "one", ids["second"]: "two"}})
    assert done["result"] == "one" and done["second"] == "two"
    # strict_resume rejects ids that are not pending
    tid2 = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid2, "parallel", input={})
    with pytest.raises(Exception) as err:
        await client.runs.wait(tid2, "parallel", command={"resume": {uuid.uuid4().hex: "x"}}, strict_resume=True)
    assert "422" in str(err.value)


async def test_caller_text_in_batched_statements_is_data_not_sql(client) -> None:
    """A run's insert and its thread's busy status travel as one multi-statement message on PostgreSQL, with the
    caller's metadata bound client-side: quotes, semicolons, dollar quotes, backslashes and placeholder marks in
    it must be stored verbatim and run nothing."""
    hostile = "x'); DELETE FROM threads; -- $$ \\' %s %% ? ;"
    tid = (await client.threads.create(metadata={"keep": "me"}))["thread_id"]
    other = (await client.threads.create())["thread_id"]
    run = await client.runs.create(tid, "two_node", input={"n": 1}, metadata={"note": hostile, hostile: 1})
    await client.runs.join(tid, run["run_id"])
    stored = await client.runs.get(tid, run["run_id"])
    assert stored["metadata"]["note"] == hostile and stored["metadata"][hostile] == 1
    assert (await client.threads.get(tid))["metadata"]["keep"] == "me"
    assert (await client.threads.get(other))["thread_id"] == other  # no statement of the caller's ran


async def test_a_runs_final_state_equals_the_state_read_back(client) -> None:
    """On PostgreSQL a run's final state (its output, the thread's values and interrupts) comes from the
    checkpoint and task writes the run has just saved, not from reading them back; LangGraph saves a task's writes
    and the next checkpoint concurrently, so concurrent runs of fast graphs race them. Each answer must equal a
    later read of the thread's state from the database: values, interrupts (pending writes of parallel tasks),
    next nodes, and again after a resume."""

    async def one(graph: str, input_: dict) -> tuple[str, dict]:
        tid = (await client.threads.create())["thread_id"]
        return tid, await client.runs.wait(tid, graph, input=input_)

    def interrupts_of(state: dict) -> list[tuple[str, str]]:
        return sorted((i["id"], repr(i["value"])) for task in state["tasks"] for i in task["interrupts"])

    runs = await asyncio.gather(*[one("parallel", {}) for _ in range(8)], *[one("hitl", {}) for _ in range(8)],
                                *[one("two_node", {"n": i}) for i in range(8)])
    for tid, out in runs:
        state, thread = await client.threads.get_state(tid), await client.threads.get(tid)
        values = {k: v for k, v in out.items() if k != "__interrupt__"}
        assert values == state["values"] == thread["values"], (tid, out, state)
        got = sorted((i["id"], repr(i["value"])) for i in out.get("__interrupt__", []))
        assert got == interrupts_of(state), (tid, out, state)
        assert sorted(thread["interrupts"]) == sorted({task["id"] for task in state["tasks"] if task["interrupts"]})
        assert thread["status"] == ("interrupted" if state["next"] else "idle")
    resumed = []
    for tid, out in runs[:8]:
        ids = {i["value"]["q"]: i["id"] for i in out["__interrupt__"]}
        resumed.append((tid, client.runs.wait(tid, "parallel", command={"resume": {ids["first"]: "1", ids["second"]: "2"}})))
    for tid, pending in resumed:
        done = await pending
        state = await client.threads.get_state(tid)
        assert done == state["values"] and done["result"] == "1" and done["second"] == "2"
        assert state["next"] == [] and interrupts_of(state) == []


async def test_static_breakpoint_and_goto_update(client) -> None:
    tid = (await client.threads.create())["thread_id"]
    out = await client.runs.wait(tid, "two_node", input={"n": 1}, interrupt_before=["b"])
    assert "__interrupt__" not in out and out["n"] == 2
    thread = await client.threads.get(tid)
    state = await client.threads.get_state(tid)
    assert thread["status"] == "interrupted" and state["next"] == ["b"] and thread["interrupts"] == {}
    assert (await client.runs.wait(tid, "two_node", input=None))["n"] == 4
    after = await client.runs.wait(tid, "two_node", input={"n": 1}, interrupt_after=["a"])
    assert after["n"] == 2
    # command.update + goto: jump to b with n=50
    jumped = await client.runs.wait(tid, "two_node", command={"update": {"n": 50}, "goto": "b"})
    assert jumped["n"] == 100


async def test_background_join_get_cancel_delete(client) -> None:
    tid = (await client.threads.create())["thread_id"]
    run = await client.runs.create(tid, "two_node", input={"n": 1})
    assert run["status"] in ("pending", "running")
    assert (await client.runs.join(tid, run["run_id"]))["n"] == 4
    assert (await client.runs.get(tid, run["run_id"]))["status"] == "success"
    slow = await client.runs.create(tid, "slow", input={"n": 30})
    await asyncio.sleep(0.3)
    await client.runs.cancel(tid, slow["run_id"], wait=True)
    assert (await client.runs.get(tid, slow["run_id"]))["status"] == "interrupted"
    assert (await client.threads.get(tid))["status"] == "idle"
    await client.runs.delete(tid, slow["run_id"])
    with pytest.raises(NotFoundError):
        await client.runs.get(tid, slow["run_id"])
    rolled = await client.runs.create(tid, "slow", input={"n": 30})
    await asyncio.sleep(0.3)
    await client.runs.cancel(tid, rolled["run_id"], wait=True, action="rollback")
    with pytest.raises(NotFoundError):
        await client.runs.get(tid, rolled["run_id"])


async def test_multitask_strategies(client) -> None:
    tid = (await client.threads.create())["thread_id"]
    first = await client.runs.create(tid, "slow", input={"n": 30})
    await asyncio.sleep(0.2)
    with pytest.raises(ConflictError) as err:
        await client.runs.create(tid, "slow", input={"n": 0.01}, multitask_strategy="reject")
    assert "already running" in str(err.value)
    second = await client.runs.create(tid, "slow", input={"n": 0.01}, multitask_strategy="interrupt")
    await client.runs.join(tid, second["run_id"])
    assert (await client.runs.get(tid, first["run_id"]))["status"] == "interrupted"
    assert (await client.runs.get(tid, second["run_id"]))["status"] == "success"

    third = await client.runs.create(tid, "slow", input={"n": 30})
    await asyncio.sleep(0.2)
    fourth = await client.runs.create(tid, "slow", input={"n": 0.01}, multitask_strategy="rollback")
    await client.runs.join(tid, fourth["run_id"])
    with pytest.raises(NotFoundError):
        await client.runs.get(tid, third["run_id"])
    assert (await client.runs.get(tid, fourth["run_id"]))["status"] == "success"

    fifth = await client.runs.create(tid, "slow", input={"n": 0.5})
    sixth = await client.runs.create(tid, "slow", input={"n": 0.01})  # enqueue is the default
    assert (await client.runs.get(tid, sixth["run_id"]))["status"] == "pending"
    await client.runs.join(tid, sixth["run_id"])
    assert (await client.runs.get(tid, fifth["run_id"]))["status"] == "success"
    assert (await client.runs.get(tid, sixth["run_id"]))["status"] == "success"


async def test_resumable_stream_ids_and_exact_replay(server, client) -> None:
    tid = (await client.threads.create())["thread_id"]
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        _, events = await sse_events(
            http,
            "POST",
            f"/threads/{tid}/runs/stream",
            json={"assistant_id": "two_node", "input": {"n": 1}, "stream_mode": ["values", "updates", "custom", "debug"], "stream_resumable": True},
        )
        real = [e for e in events if "event" in e]
        ids = [int(e["id"]) for e in real]
        assert ids == sorted(set(ids)) and len(ids) == len(real)  # unique, strictly increasing
        run_id = real[0]["data"]["run_id"]
        for cut in (1, len(real) // 2, len(real) - 1):
            _, replay = await sse_events(
                http, "GET", f"/threads/{tid}/runs/{run_id}/stream", headers={"Last-Event-ID": real[cut - 1]["id"]}
            )
            assert [e for e in replay if "event" in e] == real[cut:]
        _, everything = await sse_events(http, "GET", f"/threads/{tid}/runs/{run_id}/stream", headers={"Last-Event-ID": "-1"})
        assert [e for e in everything if "event" in e] == real
    joined = [p async for p in client.runs.join_stream(tid, run_id, last_event_id="-1")]
    assert [p.event for p in joined][0] == "metadata"


async def test_heartbeat_and_disconnect_cancels(server, client) -> None:
    tid = (await client.threads.create())["thread_id"]
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        comments = 0
        run_id = None
        async with http.stream("POST", f"/threads/{tid}/runs/stream", json={"assistant_id": "slow", "input": {"n": 30}}) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: ") and run_id is None:
                    run_id = orjson.loads(line[6:])["run_id"]
                if line.startswith(": heartbeat"):
                    comments += 1
                    if comments == 2:
                        break  # client goes away mid-run; on_disconnect defaults to cancel
        assert comments == 2 and run_id
    for _ in range(50):
        if (await client.runs.get(tid, run_id))["status"] == "interrupted":
            break
        await asyncio.sleep(0.1)
    assert (await client.runs.get(tid, run_id))["status"] == "interrupted"

    # on_disconnect=continue keeps the run going after the client leaves
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        async with http.stream("POST", f"/threads/{tid}/runs/stream", json={"assistant_id": "slow", "input": {"n": 1}, "on_disconnect": "continue"}) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    run_id = orjson.loads(line[6:])["run_id"]
                    break
    assert (await client.runs.join(tid, run_id))["log"][-1] == "slow"
    assert (await client.runs.get(tid, run_id))["status"] == "success"


async def test_if_not_exists_after_seconds_durability(client) -> None:
    tid = str(uuid.uuid4())
    with pytest.raises(httpx.HTTPStatusError) as err:
        await client.runs.wait(tid, "two_node", input={"n": 1})
    assert err.value.response.status_code == 404
    out = await client.runs.wait(tid, "two_node", input={"n": 1}, if_not_exists="create")
    assert out["n"] == 4
    exit_only = await client.runs.wait(tid, "two_node", input={"n": 1}, durability="exit")
    assert exit_only["n"] == 4
    delayed = await client.runs.create(tid, "two_node", input={"n": 1}, after_seconds=1)
    await asyncio.sleep(0.3)
    assert (await client.runs.get(tid, delayed["run_id"]))["status"] == "pending"
    assert (await client.runs.join(tid, delayed["run_id"]))["n"] == 4


async def test_batch_and_bulk_cancel(client) -> None:
    runs = await client.runs.create_batch(
        [{"assistant_id": "two_node", "input": {"n": 1}}, {"assistant_id": "two_node", "input": {"n": 2}}]
    )
    assert len(runs) == 2 and all(r["status"] in ("pending", "running", "success") for r in runs)
    tid = (await client.threads.create())["thread_id"]
    first = await client.runs.create(tid, "slow", input={"n": 30})
    second = await client.runs.create(tid, "slow", input={"n": 30})
    await asyncio.sleep(0.2)
    await client.runs.cancel_many(thread_id=tid, run_ids=[first["run_id"], second["run_id"]])
    for run in (first, second):
        for _ in range(50):
            if (await client.runs.get(tid, run["run_id"]))["status"] == "interrupted":
                break
            await asyncio.sleep(0.1)
        assert (await client.runs.get(tid, run["run_id"]))["status"] == "interrupted"
