"""Store, crons, bad input, failing graphs, restart safety and the auth hook, over real server processes."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.errors import NotFoundError
from server_testkit import PROJECT, STUDIO_ORIGIN, make_server


async def test_store_items_namespaces_ttl(client) -> None:
    ns = ["users", uuid.uuid4().hex]
    await client.store.put_item(ns, "prefs", {"v": 1, "theme": "dark"})
    await client.store.put_item(ns, "other", {"v": 2})
    await client.store.put_item([*ns, "deep"], "x", {"v": 2})
    item = await client.store.get_item(ns, "prefs")
    assert item["value"] == {"v": 1, "theme": "dark"} and item["namespace"] == ns and item["created_at"]
    found = await client.store.search_items(ns, filter={"v": 2})
    assert {i["key"] for i in found["items"]} == {"other", "x"}
    spaces = await client.store.list_namespaces(prefix=ns)
    assert sorted(spaces["namespaces"]) == sorted([ns, [*ns, "deep"]])
    await client.store.delete_item(ns, "prefs")
    assert await client.store.get_item(ns, "prefs") is None  # 200 null, as the reference answers
    await client.store.put_item(ns, "short", {"v": 3}, ttl=0.01)  # minutes
    assert (await client.store.get_item(ns, "short"))["value"] == {"v": 3}


async def test_crons_lifecycle_and_scheduler_fires(client) -> None:
    tid = (await client.threads.create())["thread_id"]
    every_second = "* * * * * *"  # croniter's optional seconds field
    cron = await client.crons.create_for_thread(tid, "two_node", schedule=every_second, input={"n": 1})
    assert cron["thread_id"] == tid and cron["enabled"] is True
    stateless = await client.crons.create("two_node", schedule="0 0 1 1 *", input={"n": 1}, metadata={"k": 1})
    assert stateless["thread_id"] is None
    async with httpx.AsyncClient(base_url=client.http.client.base_url) as http:
        got = (await http.get(f"/runs/crons/{stateless['cron_id']}")).json()
    assert got["schedule"] == "0 0 1 1 *"
    found = await client.crons.search(assistant_id=cron["assistant_id"], thread_id=tid)
    assert [c["cron_id"] for c in found] == [cron["cron_id"]]
    assert await client.crons.count(metadata={"k": 1}) >= 1
    for _ in range(60):  # the scheduler fires within a couple of seconds
        runs = await client.runs.list(tid)
        if runs and runs[-1]["status"] == "success":
            break
        await asyncio.sleep(0.1)
    assert runs and runs[-1]["metadata"]["cron_id"] == cron["cron_id"]
    patched = await client.crons.update(cron["cron_id"], enabled=False)
    assert patched["enabled"] is False
    await client.crons.delete(cron["cron_id"])
    await client.crons.delete(stateless["cron_id"])
    assert await client.crons.search(thread_id=tid) == []
    with pytest.raises(Exception):  # noqa: B017 - invalid schedules are rejected
        await client.crons.create("two_node", schedule="not a schedule")


async def test_bad_input_is_4xx_json_and_server_keeps_serving(server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        tid = (await http.post("/threads", json={})).json()["thread_id"]
        cases = [
            (await http.post("/threads", content=b"{not json", headers={"content-type": "application/json"}), 422, "malformed JSON"),
            (await http.post("/threads/search", json={"limit": "many"}), 422, "limit"),
            (await http.post("/threads", json={"metadata": {}, "colour": "red"}), 422, "unknown field 'colour'"),
            (await http.post(f"/threads/{tid}/runs", json={"assistant_id": "two_node", "stream_mode": ["values", "telepathy"]}), 422, "stream_mode"),
            (await http.post(f"/threads/{tid}/runs", json={"assistant_id": "two_node", "feedback_keys": ["x"]}), 422, "feedback_keys"),
            (await http.post(f"/threads/{tid}/runs", json={"assistant_id": "two_node", "input": {}, "command": {"resume": 1}}), 422, "mutually exclusive"),
            (await http.get(f"/threads/{uuid.uuid4()}"), 404, "not found"),
            (await http.get("/threads/not-a-uuid"), 422, "UUID"),
            (await http.post(f"/threads/{tid}/runs", json={"assistant_id": "no_such_graph"}), 404, "not found"),
            (await http.post("/threads", content=b"x" * (300 * 1024), headers={"content-type": "application/json"}), 413, "exceeds"),
            (await http.post("/threads", json=[1, 2]), 422, "JSON object"),
            (await http.get(f"/threads/{tid}/runs/{uuid.uuid4()}"), 404, "not found"),
        ]
        for resp, status, needle in cases:
            assert resp.status_code == status, (resp.status_code, resp.text)
            assert needle.lower() in resp.json()["detail"].lower(), resp.text
        # Studio sends JSON as text/plain: accepted from the configured origin only (a CORS-simple request
        # from any other page would otherwise change state without a preflight).
        body = b'{"metadata": {"via": "plain"}}'
        plain = await http.post("/threads", content=body, headers={"content-type": "text/plain", "origin": STUDIO_ORIGIN})
        assert plain.status_code == 200 and plain.json()["metadata"] == {"via": "plain"}
        for headers in ({"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}):
            refused = await http.post("/threads", content=body, headers=headers)
            assert refused.status_code == 415 and "application/json" in refused.json()["detail"], refused.text
        assert (await http.get("/ok")).status_code == 200


async def test_failing_graph_reports_error(client, server) -> None:
    tid = (await client.threads.create())["thread_id"]
    parts = [p async for p in client.runs.stream(tid, "failing", input={})]
    errors = [p.data for p in parts if p.event == "error"]
    assert errors == [{"error": "ValueError", "message": "graph exploded on purpose"}]
    runs = await client.runs.list(tid)
    assert runs[0]["status"] == "error"
    assert (await client.threads.get(tid))["status"] == "error"
    async with httpx.AsyncClient(base_url=server.url) as http:
        waited = (await http.post("/runs/wait", json={"assistant_id": "failing", "input": {}})).json()
    assert waited["__error__"]["error"] == "ValueError"
    assert (await client.runs.wait(None, "two_node", input={"n": 1}))["n"] == 4  # still serving


async def test_env_from_langgraph_json(client) -> None:
    out = await client.runs.wait(None, "whoami", input={})
    assert out == {"user": "anonymous", "env": "from-langgraph-json"}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_killed_server_restarts_without_losing_runs(backend, tmp_path, request) -> None:
    url = request.getfixturevalue("pg_factory")() if backend == "postgres" else None
    proc = make_server(tmp_path, url, INTERLOCK_RUN_LEASE_SECONDS="3")
    try:
        client = get_client(url=proc.url, api_key=None)
        tid = (await client.threads.create())["thread_id"]
        running = await client.runs.create(tid, "slow", input={"n": 2})
        queued = await client.runs.create(tid, "two_node", input={"n": 1})
        await asyncio.sleep(0.5)
        assert (await client.runs.get(tid, running["run_id"]))["status"] == "running"
        proc.kill()  # SIGKILL: no graceful shutdown
        proc.start()
        client = get_client(url=proc.url, api_key=None)
        await asyncio.wait_for(client.runs.join(tid, queued["run_id"]), 30)
        assert (await client.runs.get(tid, running["run_id"]))["status"] == "success"
        assert (await client.runs.get(tid, queued["run_id"]))["status"] == "success"
        values = (await client.threads.get_state(tid))["values"]
        assert values["log"][0] == "slow" and values["n"] == 4
    finally:
        proc.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def auth_server(request, tmp_path_factory):  # noqa: ANN201
    url = request.getfixturevalue("pg_factory")() if request.param == "postgres" else None
    proc = make_server(tmp_path_factory.mktemp("auth"), url, config=PROJECT / "langgraph_auth.json")
    yield proc
    proc.stop()


async def test_auth_hook_scopes_every_endpoint(auth_server) -> None:
    ann = get_client(url=auth_server.url, api_key=None, headers={"Authorization": "Bearer token-ann"})
    bob = get_client(url=auth_server.url, api_key=None, headers={"Authorization": "Bearer token-bob"})
    async with httpx.AsyncClient(base_url=auth_server.url) as http:
        assert (await http.post("/threads", json={})).status_code == 401
        assert (await http.post("/runs/wait", json={"assistant_id": "two_node", "input": {}})).status_code == 401
        assert (await http.post("/runs/stream", json={"assistant_id": "two_node", "input": {}})).status_code == 401
        assert (await http.get("/ok")).status_code == 200
    thread = await ann.threads.create()
    assert thread["metadata"]["owner"] == "ann"
    with pytest.raises(NotFoundError):
        await bob.threads.get(thread["thread_id"])
    with pytest.raises(httpx.HTTPStatusError) as err:
        await bob.runs.wait(thread["thread_id"], "two_node", input={"n": 1})
    assert err.value.response.status_code == 404
    with pytest.raises(NotFoundError):
        [p async for p in bob.runs.stream(thread["thread_id"], "two_node", input={"n": 1})]
    out = await ann.runs.wait(thread["thread_id"], "whoami", input={})
    assert out["user"] == "ann"  # the run sees the authenticated user
    await bob.threads.create()
    assert {t["metadata"]["owner"] for t in await ann.threads.search()} == {"ann"}
    assert {t["metadata"]["owner"] for t in await bob.threads.search()} == {"bob"}
    await ann.store.put_item(["notes"], "k", {"v": "ann's"})
    await bob.store.put_item(["notes"], "k", {"v": "bob's"})
    assert (await ann.store.get_item(["notes"], "k"))["value"] == {"v": "ann's"}
    assert (await bob.store.get_item(["notes"], "k"))["value"] == {"v": "bob's"}


async def test_webhook_on_completion_and_ssrf_guard(client, server) -> None:
    received: list[bytes] = []
    arrived = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        received.append(await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
        arrived.set()

    receiver = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = receiver.sockets[0].getsockname()[1]
    try:
        tid = (await client.threads.create())["thread_id"]
        run = await client.runs.create(tid, "two_node", input={"n": 1}, webhook=f"http://127.0.0.1:{port}/hook")
        await asyncio.wait_for(arrived.wait(), 15)
    finally:
        receiver.close()
    import orjson

    payload = orjson.loads(received[0])
    assert payload["run_id"] == run["run_id"] and payload["status"] == "success" and payload["values"]["n"] == 4
    async with httpx.AsyncClient(base_url=server.url) as http:
        for url in ("http://10.1.2.3/hook", "http://169.254.169.254/latest/meta-data", "http://localhost:9/x",
                    "ftp://example.com/x", "http://[::1]:8080/x"):
            resp = await http.post(f"/threads/{tid}/runs", json={"assistant_id": "two_node", "webhook": url})
            assert resp.status_code == 422 and "webhook" in resp.json()["detail"], (url, resp.text)
