"""Assistants, threads, state and history over HTTP with langgraph-sdk, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import httpx
import pytest
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError


def system_id(graph_id: str) -> str:
    return str(uuid.uuid5(uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8"), graph_id))


async def test_meta_endpoints(server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/ok")).json() == {"ok": True}
        info = (await http.get("/info")).json()
        assert info["flags"]["assistants"] is True and info["flags"]["crons"] is True
        doc = (await http.get("/openapi.json")).json()
        assert "/threads/{thread_id}/runs/stream" in doc["paths"]
        assert "RunCreate" in doc["components"]["schemas"]
        assert (await http.get("/docs")).status_code == 200
        pre = await http.options(
            "/threads",
            headers={
                "Origin": "https://smith.langchain.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Private-Network": "true",
            },
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-private-network"] == "true"
        # Only configured origins get CORS: any other page's preflight is refused and grants nothing.
        other = await http.options(
            "/threads",
            headers={
                "Origin": "https://attacker.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Private-Network": "true",
            },
        )
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers  # so the browser refuses, PNA header or not


async def test_system_assistants(client) -> None:
    found = await client.assistants.search(metadata={"created_by": "system"}, limit=100)
    by_graph = {a["graph_id"]: a for a in found}
    assert {"two_node", "hitl", "chat", "nested"} <= set(by_graph)
    for graph_id, assistant in by_graph.items():
        assert assistant["assistant_id"] == system_id(graph_id)
    assert system_id("two_node") == "13809642-110b-5019-a5d1-ed32a7d04814"
    got = await client.assistants.get(system_id("two_node"))
    assert got["graph_id"] == "two_node" and got["metadata"] == {"created_by": "system"}
    with pytest.raises(UnprocessableEntityError):
        await client.assistants.get("two_node")  # graph names are for run creation only
    graph = await client.assistants.get_graph(system_id("two_node"))
    assert {n["id"] for n in graph["nodes"]} >= {"a", "b"}
    schemas = await client.assistants.get_schemas(system_id("two_node"))
    assert "n" in schemas["input_schema"]["properties"]
    assert schemas["state_schema"]["properties"].keys() >= {"n", "log"}
    subgraphs = await client.assistants.get_subgraphs(system_id("nested"))
    assert "inner" in subgraphs
    xray = await client.assistants.get_graph(system_id("nested"), xray=True)
    assert any(n["id"].startswith("inner:") for n in xray["nodes"])


async def test_assistant_lifecycle_and_versions(client) -> None:
    created = await client.assistants.create(
        "two_node", config={"configurable": {"x": 1}}, metadata={"team": "a"}, name="first"
    )
    aid = created["assistant_id"]
    assert created["version"] == 1
    with pytest.raises(ConflictError):
        await client.assistants.create("two_node", assistant_id=aid)
    same = await client.assistants.create("two_node", assistant_id=aid, if_exists="do_nothing")
    assert same["assistant_id"] == aid
    patched = await client.assistants.update(aid, metadata={"stage": "b"}, name="second")
    assert patched["version"] == 2 and patched["name"] == "second"
    assert patched["metadata"] == {"team": "a", "stage": "b"}
    versions = await client.assistants.get_versions(aid)
    assert [v["version"] for v in versions] == [2, 1]
    latest = await client.assistants.set_latest(aid, 1)
    assert latest["version"] == 1 and latest["name"] == "first"
    assert await client.assistants.count(metadata={"team": "a"}) >= 1
    assert await client.assistants.count(graph_id="two_node") >= 2
    with pytest.raises(NotFoundError):
        await client.assistants.create("no_such_graph")
    # Runs work against a user-created assistant, with its config applied.
    out = await client.runs.wait(None, aid, input={"n": 1})
    assert out["n"] == 4
    await client.assistants.delete(aid)
    with pytest.raises(NotFoundError):
        await client.assistants.get(aid)


async def test_thread_crud_and_search(client) -> None:
    tag = uuid.uuid4().hex
    t1 = await client.threads.create(metadata={"tag": tag, "owner": "ann"})
    t2 = await client.threads.create(metadata={"tag": tag, "owner": "bob"})
    t3 = await client.threads.create(metadata={"tag": tag, "owner": "bob", "n": 3})
    assert t1["status"] == "idle" and t1["metadata"]["owner"] == "ann"
    got = await client.threads.get(t1["thread_id"])
    assert got["thread_id"] == t1["thread_id"]
    patched = await client.threads.update(t1["thread_id"], metadata={"extra": True})
    assert patched["metadata"] == {"tag": tag, "owner": "ann", "extra": True}  # merged, not replaced
    found = await client.threads.search(metadata={"tag": tag})
    assert [t["thread_id"] for t in found] == [t1["thread_id"], t3["thread_id"], t2["thread_id"]]  # newest update first
    bobs = await client.threads.search(metadata={"tag": tag, "owner": "bob"})
    assert {t["thread_id"] for t in bobs} == {t2["thread_id"], t3["thread_id"]}
    assert len(await client.threads.search(metadata={"tag": tag, "n": 3})) == 1
    page1 = await client.threads.search(metadata={"tag": tag}, limit=2, sort_by="created_at", sort_order="asc")
    page2 = await client.threads.search(metadata={"tag": tag}, limit=2, offset=2, sort_by="created_at", sort_order="asc")
    assert [t["thread_id"] for t in page1 + page2] == [t1["thread_id"], t2["thread_id"], t3["thread_id"]]
    by_ids = await client.threads.search(ids=[t2["thread_id"]])
    assert [t["thread_id"] for t in by_ids] == [t2["thread_id"]]
    assert await client.threads.count(metadata={"tag": tag}) == 3
    await client.runs.wait(t2["thread_id"], "two_node", input={"n": 5})
    assert [t["thread_id"] for t in await client.threads.search(metadata={"tag": tag}, values={"n": 12})] == [
        t2["thread_id"]
    ]
    assert await client.threads.count(metadata={"tag": tag}, status="idle") == 3
    await client.threads.delete(t3["thread_id"])
    with pytest.raises(NotFoundError):
        await client.threads.get(t3["thread_id"])
    with pytest.raises(ConflictError):
        await client.threads.create(thread_id=t1["thread_id"])
    again = await client.threads.create(thread_id=t1["thread_id"], if_exists="do_nothing")
    assert again["metadata"]["owner"] == "ann"


async def test_thread_metadata_stamped_and_state(client) -> None:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, "two_node", input={"n": 1})
    stamped = await client.threads.get(tid)
    assert stamped["metadata"]["graph_id"] == "two_node"
    assert stamped["metadata"]["assistant_id"] == system_id("two_node")
    assert stamped["values"] == {"n": 4, "log": ["a", "b"]}
    listed = await client.threads.search(metadata={"graph_id": "two_node", "assistant_id": system_id("two_node")})
    assert tid in {t["thread_id"] for t in listed}
    state = await client.threads.get_state(tid)
    assert state["values"] == {"n": 4, "log": ["a", "b"]} and state["next"] == []
    assert state["checkpoint"]["thread_id"] == tid and state["checkpoint_id"]
    history = await client.threads.get_history(tid)
    assert history[0]["checkpoint_id"] == state["checkpoint_id"]  # newest first
    assert history[0]["parent_checkpoint"]["checkpoint_id"] == history[1]["checkpoint_id"]
    assert len(await client.threads.get_history(tid, limit=2)) == 2
    older = await client.threads.get_history(tid, before=history[1]["checkpoint"])
    assert older[0]["checkpoint_id"] == history[2]["checkpoint_id"]
    inputs = await client.threads.get_history(tid, metadata={"source": "input"})
    assert inputs and all(h["metadata"]["source"] == "input" for h in inputs)
    at = await client.threads.get_state(tid, checkpoint_id=history[1]["checkpoint_id"])
    assert at["values"] == history[1]["values"]
    at2 = await client.threads.get_state(tid, checkpoint=history[2]["checkpoint"])
    assert at2["values"] == history[2]["values"]
    # update_state as a node, then the state shows it
    res = await client.threads.update_state(tid, {"n": 100}, as_node="b")
    assert res["checkpoint"]["checkpoint_id"]
    assert (await client.threads.get_state(tid))["values"]["n"] == 100
    with pytest.raises(UnprocessableEntityError):
        await client.threads.update_state(tid, {"n": 1}, as_node="no_such_node")


async def test_fork_from_checkpoint(client) -> None:
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "two_node", input={"n": 1})
    history = await client.threads.get_history(tid)
    after_a = next(h for h in history if h["next"] == ["b"])
    # Replay from the checkpoint before b with edited state: a fork.
    fork = await client.threads.update_state(tid, {"n": 10}, as_node="a", checkpoint_id=after_a["checkpoint_id"])
    out = await client.runs.wait(tid, "two_node", input=None, checkpoint_id=fork["checkpoint"]["checkpoint_id"])
    assert out["n"] == 20
    state = await client.threads.get_state(tid)
    assert state["parent_checkpoint"]["checkpoint_id"] == fork["checkpoint"]["checkpoint_id"]


async def test_copy_and_prune(client) -> None:
    tid = (await client.threads.create(metadata={"k": "v"}))["thread_id"]
    await client.runs.wait(tid, "two_node", input={"n": 2})
    copy = await client.threads.copy(tid)
    assert copy["thread_id"] != tid and copy["metadata"]["k"] == "v"
    assert (await client.threads.get_state(copy["thread_id"]))["values"]["n"] == 6
    assert len(await client.threads.get_history(copy["thread_id"])) == len(await client.threads.get_history(tid))
    # The copy is independent: running on it leaves the original untouched.
    await client.runs.wait(copy["thread_id"], "two_node", input={"n": 0})
    assert (await client.threads.get_state(tid))["values"]["n"] == 6
    result = await client.threads.prune([copy["thread_id"]], strategy="delete")
    assert result["pruned_count"] == 1
    with pytest.raises(NotFoundError):
        await client.threads.get(copy["thread_id"])


def test_sync_client_round_trip(sync_client) -> None:
    thread = sync_client.threads.create(metadata={"via": "sync"})
    out = sync_client.runs.wait(thread["thread_id"], "two_node", input={"n": 3})
    assert out["n"] == 8
    assert sync_client.threads.get(thread["thread_id"])["status"] == "idle"
    parts = list(sync_client.runs.stream(thread["thread_id"], "two_node", input={"n": 1}, stream_mode="updates"))
    assert [p.event for p in parts] == ["metadata", "updates", "updates"]


async def test_builder_factory_and_env_graphs(client) -> None:
    assert (await client.runs.wait(None, "builder", input={"n": 1}))["n"] == 4
    assert (await client.runs.wait(None, "factory", input={"n": 2}))["n"] == 6


async def test_deleting_a_thread_deletes_its_checkpoints(client) -> None:
    tid = (await client.threads.create())["thread_id"]
    await client.runs.wait(tid, "two_node", input={"n": 1})
    assert await client.threads.get_history(tid)
    await client.threads.delete(tid)
    await client.threads.create(thread_id=tid, graph_id="two_node")
    assert await client.threads.get_history(tid) == []
    assert (await client.threads.get_state(tid))["values"] == {}
