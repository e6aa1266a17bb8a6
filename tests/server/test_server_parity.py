"""Parity with the reference Agent Server where real clients noticed a difference (issue 13), through the
Python SDK (async and sync) against real `interlock serve` processes on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import UnprocessableEntityError
from server_testkit import ServerProcess, make_server

SEMANTIC = Path(__file__).resolve().parent / "project_semantic" / "langgraph.json"


# -- graph names where the reference resolves them ---------------------------------------------------------------
async def test_graph_schemas_subgraphs_by_graph_name(client) -> None:
    graph = await client.assistants.get_graph("two_node")
    assert {n["id"] for n in graph["nodes"]} >= {"a", "b"}
    schemas = await client.assistants.get_schemas("two_node")
    assert schemas["graph_id"] == "two_node" and "n" in schemas["input_schema"]["properties"]
    subgraphs = await client.assistants.get_subgraphs("nested")
    assert subgraphs, "the nested graph has a subgraph"
    # Same answer as by assistant id; GET /assistants/{id} itself stays UUID-only, as in the reference.
    aid = (await client.assistants.search(graph_id="two_node", metadata={"created_by": "system"}))[0]["assistant_id"]
    assert await client.assistants.get_graph(aid) == graph
    with pytest.raises(UnprocessableEntityError, match="UUID"):
        await client.assistants.get("two_node")


def test_graph_by_name_sync(sync_client) -> None:
    assert {n["id"] for n in sync_client.assistants.get_graph("two_node", xray=True)["nodes"]} >= {"a", "b"}
    assert sync_client.assistants.get_schemas("two_node")["graph_id"] == "two_node"
    assert sync_client.assistants.get_subgraphs("nested", recurse=True)


# -- a missing store item is 200 null --------------------------------------------------------------------------
async def test_missing_store_item_is_none(client, server) -> None:
    ns = ["parity", uuid.uuid4().hex]
    assert await client.store.get_item(ns, "absent") is None
    await client.store.put_item(ns, "k", {"v": 1})
    await client.store.delete_item(ns, "k")
    assert await client.store.get_item(ns, "k") is None
    async with httpx.AsyncClient(base_url=server.url) as http:
        resp = await http.get("/store/items", params={"namespace": ".".join(ns), "key": "k"})
    assert resp.status_code == 200 and resp.json() is None


def test_missing_store_item_is_none_sync(sync_client) -> None:
    assert sync_client.store.get_item(["parity", uuid.uuid4().hex], "absent") is None


# -- input must be an object -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["hello", 3, [1, 2], True])
async def test_non_object_input_is_422_at_creation(client, bad) -> None:
    tid = (await client.threads.create())["thread_id"]
    with pytest.raises(UnprocessableEntityError, match="input must be a JSON object"):
        await client.runs.create(tid, "two_node", input=bad)
    assert await client.runs.list(tid) == [], "nothing was queued"
    with pytest.raises(httpx.HTTPStatusError) as wait_error:  # the SDK's streaming path raises the httpx error
        await client.runs.wait(None, "two_node", input=bad)
    assert wait_error.value.response.status_code == 422


def test_non_object_input_is_422_sync(sync_client) -> None:
    with pytest.raises(UnprocessableEntityError, match="input must be a JSON object"):
        sync_client.runs.create(None, "two_node", input="hello")
    assert sync_client.runs.wait(None, "two_node", input={"n": 1})["n"] == 4


# -- GET /threads/{thread_id}/stream ---------------------------------------------------------------------------
def _by_run(parts: list[tuple[str, object]]) -> dict[str, list[str]]:
    """Event names per run id, using each run's leading `metadata` event and closing `run_done` event."""
    out: dict[str, list[str]] = {}
    current = None
    for event, data in parts:
        if event == "metadata":
            current = data["run_id"]  # type: ignore[index]
        if current is not None:
            out.setdefault(current, []).append(event)
        if event == "run_done":
            current = None
    return out


async def test_thread_join_stream_follows_active_and_next_runs(client) -> None:
    tid = (await client.threads.create())["thread_id"]
    first = await client.runs.create(tid, "slow", input={"n": 60})  # held until cancelled below
    parts: list[tuple[str, object]] = []
    second = None
    async for part in await client.threads.join_stream(tid, stream_mode=["run_modes", "lifecycle"]):
        parts.append((part.event, part.data))
        if part.event == "metadata" and part.data["run_id"] == first["run_id"]:
            second = await client.runs.create(tid, "slow", input={"n": 0.05}, multitask_strategy="enqueue")
            await client.runs.cancel(tid, first["run_id"])
        if part.event == "run_done" and second and part.data["run_id"] == second["run_id"]:
            break
    assert second is not None
    by_run = _by_run(parts)
    assert list(by_run) == [first["run_id"], second["run_id"]], "runs streamed in order, each from its start"
    assert by_run[second["run_id"]][0] == "metadata" and "values" in by_run[second["run_id"]]
    done = {d["run_id"]: d["status"] for e, d in parts if e == "run_done"}  # type: ignore[index]
    assert done == {first["run_id"]: "interrupted", second["run_id"]: "success"}
    lifecycle = [(d["event"], d["run_id"]) for e, d in parts if e == "lifecycle"]  # type: ignore[index]
    assert lifecycle[:2] == [("run_started", first["run_id"]), ("run_done", first["run_id"])]


def test_thread_join_stream_sync_and_state_updates(sync_client) -> None:
    tid = sync_client.threads.create()["thread_id"]
    first = sync_client.runs.create(tid, "slow", input={"n": 60})
    second = None
    updates = []
    for part in sync_client.threads.join_stream(tid, stream_mode=["run_modes", "state_update"]):
        if part.event == "metadata" and part.data["run_id"] == first["run_id"]:
            sync_client.runs.cancel(tid, first["run_id"])
        if part.event == "state_update":
            updates.append(part.data)
            if second is None:
                second = sync_client.runs.create(tid, "two_node", input={"n": 1})
            else:
                break
    assert second is not None and [u["thread_id"] for u in updates] == [tid, tid]
    assert updates[-1]["values"]["n"] == 4 and updates[-1]["status"] == "idle"
    assert sync_client.runs.get(tid, second["run_id"])["status"] == "success"


async def test_thread_join_stream_rejects_unknown_mode(server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        tid = (await http.post("/threads", json={})).json()["thread_id"]
        resp = await http.get(f"/threads/{tid}/stream", params={"stream_mode": "telepathy"})
        assert resp.status_code == 422 and "telepathy" in resp.json()["detail"]
        missing = await http.get(f"/threads/{uuid.uuid4()}/stream")
        assert missing.status_code == 404


# -- semantic store search with store.index ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def semantic_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = make_server(tmp_path_factory.mktemp("semantic"), None, config=SEMANTIC)
    yield proc
    proc.stop()


async def test_semantic_store_search_uses_project_embedder(semantic_server) -> None:
    client = get_client(url=semantic_server.url, api_key=None)
    ns = ["kb", uuid.uuid4().hex]
    await client.store.put_item(ns, "refund", {"text": "How to get your money back for a returned order"})
    await client.store.put_item(ns, "ship", {"text": "Parcels are delivered by courier within three days"})
    await client.store.put_item(ns, "pwd", {"text": "Reset your account password from the sign-in page"})
    await client.store.put_item(ns, "unindexed", {"text": "refund money back returned"}, index=False)
    found = (await client.store.search_items(ns, query="I want a refund for my return", limit=3))["items"]
    assert [i["key"] for i in found][0] == "refund"
    assert "unindexed" not in {i["key"] for i in found}, "index=False items are not ranked"
    assert found[0]["score"] > found[-1]["score"]
    sync = get_sync_client(url=semantic_server.url, api_key=None)
    top = sync.store.search_items(ns, query="when will my parcel arrive", limit=1)["items"]
    assert top[0]["key"] == "ship"
    # Filters still apply on top of the ranking.
    assert (await client.store.search_items(ns, query="parcel", filter={"text": "nothing like this"}))["items"] == []


async def test_query_without_index_is_422(client) -> None:
    with pytest.raises(UnprocessableEntityError, match="store.index"):
        await client.store.search_items(["kb"], query="anything")


# -- the 5xx the fuzz found, now 4xx naming the problem (both databases) ------------------------------------
async def test_inputs_that_were_5xx_are_4xx_naming_the_problem(server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        tid = (await http.post("/threads", json={})).json()["thread_id"]
        cases = [
            (await http.put("/store/items", json={"namespace": [], "key": "k", "value": {}}), "namespace"),
            (await http.post("/threads", json={"ttl": 1e300}), "ttl"),
            (await http.patch(f"/threads/{tid}", json={"ttl": {"ttl": 1e300}}), "ttl"),
            (await http.post("/threads/search", json={"offset": 10000000000000000000}), "offset"),
            (await http.post("/store/namespaces", json={"suffix": [""]}), "namespace labels"),
            (await http.post("/store/items/search", json={"filter": {"a b": 1}}), "filter key"),
            (await http.post("/store/items/search", json={"filter": {"a": {"$regex": "x"}}}), "operators"),
            (await http.post("/threads/count", json={"metadata": {'a"b': 1}}), "filter key"),
            (await http.post("/threads/search", json={"values": {"k": "\u0000"}}), "NUL"),
            (await http.post("/threads", json={"metadata": {"k": "\u0000"}}), "NUL"),
            (await http.get(f"/threads/{tid}/runs", params={"limit": str(10**20)}), "limit"),
            (await http.get(f"/threads/{tid}/history", params={"limit": "many"}), "limit"),
            (await http.post("/assistants/00000000-0000-0000-0000-000000000000/latest",
                             json={"version": 10**20}), "version"),
            (await http.post("/runs", json={"assistant_id": "two_node", "after_seconds": 1e300}), "after_seconds"),
            (await http.post("/runs/batch", json=[{"assistant_id": "nope"}] * 101), "at most 100"),
        ]
        for resp, needle in cases:
            assert 400 <= resp.status_code < 500, (resp.request.url, resp.status_code, resp.text)
            assert needle.lower() in resp.json()["detail"].lower(), resp.text
        # Still serving, and the legitimate forms still work.
        assert (await http.post("/threads/search", json={"metadata": {"a b.c": 1}})).status_code == 200
        assert (await http.post("/threads", json={"ttl": 5})).status_code == 200
