"""Two stateless replicas sharing PostgreSQL and Redis: any replica serves any run, streams included."""

from __future__ import annotations

import asyncio

import pytest
from langgraph_sdk import get_client
from server_testkit import make_server

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def replicas(pg_factory, tmp_path_factory):  # noqa: ANN001, ANN201
    url = pg_factory()
    a = make_server(tmp_path_factory.mktemp("replica-a"), url, INTERLOCK_REDIS_URL=REDIS, INTERLOCK_RUN_LEASE_SECONDS="3")
    b = make_server(tmp_path_factory.mktemp("replica-b"), url, INTERLOCK_REDIS_URL=REDIS, INTERLOCK_RUN_LEASE_SECONDS="3")
    yield a, b
    a.stop()
    b.stop()


async def test_stream_replays_on_another_replica(replicas) -> None:
    a, b = (get_client(url=p.url, api_key=None) for p in replicas)
    tid = (await a.threads.create())["thread_id"]
    assert (await b.threads.get(tid))["thread_id"] == tid  # one database behind both
    parts_a = [p async for p in a.runs.stream(tid, "nested", input={"n": 1}, stream_mode=["values", "updates", "debug"],
                                               stream_resumable=True)]
    run_id = parts_a[0].data["run_id"]
    # Reconnect through the other replica, as after a reload behind a load balancer.
    parts_b = [p async for p in b.runs.join_stream(tid, run_id, last_event_id="-1")]
    assert [(p.event, p.data) for p in parts_b] == [(p.event, p.data) for p in parts_a]
    mid = [p async for p in b.runs.join_stream(tid, run_id, last_event_id="3")]
    assert [(p.event, p.data) for p in mid] == [(p.event, p.data) for p in parts_a[3:]]


async def test_follow_a_running_run_from_another_replica(replicas) -> None:
    a, b = (get_client(url=p.url, api_key=None) for p in replicas)
    tid = (await a.threads.create())["thread_id"]
    stream_a = a.runs.stream(tid, "slow", input={"n": 1.5}, stream_mode=["values", "updates"], stream_resumable=True)
    first = await stream_a.__anext__()
    run_id = first.data["run_id"]
    followed = [p async for p in b.runs.join_stream(tid, run_id, last_event_id="-1")]
    rest = [p async for p in stream_a]
    assert [p.event for p in followed] == [first.event, *[p.event for p in rest]]
    assert followed[-1].data["log"] == ["slow"]
    assert (await b.runs.get(tid, run_id))["status"] == "success"


async def test_cancel_through_another_replica(replicas) -> None:
    a, b = (get_client(url=p.url, api_key=None) for p in replicas)
    tid = (await a.threads.create())["thread_id"]
    stream_a = a.runs.stream(tid, "slow", input={"n": 30}, stream_mode="values", stream_resumable=True)
    run_id = (await stream_a.__anext__()).data["run_id"]
    await b.runs.cancel(tid, run_id, wait=True)
    assert (await a.runs.get(tid, run_id))["status"] == "interrupted"
    await asyncio.wait_for(stream_a.aclose(), 5)
