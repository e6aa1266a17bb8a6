"""Per-tenant limits: over budget -> 429 with Retry-After, in-process and on the real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from interlock.policies.limits import InProcessLimiter, RedisLimiter, build_limiter
from interlock.policies.schema import LimitsPolicy


@pytest.fixture(scope="module", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The PII vault key file is created under INTERLOCK_HOME: keep it in a temporary directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERLOCK_HOME", str(tmp_path_factory.mktemp("guards-home")))
        yield

REDIS_URL = "redis://127.0.0.1:6379/0"


def policy() -> LimitsPolicy:
    return LimitsPolicy.model_validate({
        "version": 1,
        "default_tenant": {"requests_per_minute": 3, "tokens_per_minute": 1000, "spend_per_day_usd": 1.0},
        "tenants": {"tiny": {"tokens_per_minute": 100}},
    })


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def exercise(limiter, clock: Clock, tenant: str) -> None:
    # Token budget: an over-budget request is refused before any model call.
    first = await limiter.admit(tenant, estimated_tokens=80)
    assert first.allowed
    await limiter.record(tenant, tokens=80)
    refused = await limiter.admit(tenant, estimated_tokens=50)
    assert not refused.allowed and refused.status == 429 and refused.reason == "tokens_per_minute"
    assert refused.retry_after_s == 20  # clock sits 40 s into the minute
    assert refused.headers() == {"Retry-After": "20"}
    clock.now += 21  # next minute: budget is back
    assert (await limiter.admit(tenant, estimated_tokens=50)).allowed


async def test_in_process_token_budget() -> None:
    clock = Clock(1_800_000_040.0)
    limiter = InProcessLimiter(policy(), clock=clock)
    limiter.policy = limiter.policy.model_copy(update={"tenants": {"t1": policy().tenants["tiny"]}})
    await exercise(limiter, clock, "t1")


async def test_in_process_requests_and_spend() -> None:
    clock = Clock(1_800_000_040.0)
    limiter = InProcessLimiter(policy(), clock=clock)
    results = [await limiter.admit("acme") for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert results[-1].reason == "requests_per_minute"
    assert (await limiter.admit("other")).allowed  # tenants are isolated
    clock.now += 60
    await limiter.record("acme", cost_usd=1.0)
    spent = await limiter.admit("acme")
    assert not spent.allowed and spent.reason == "spend_per_day"
    assert 0 < spent.retry_after_s <= 86_400
    with pytest.raises(ValueError):
        await limiter.record("acme", tokens=-1)


async def test_redis_limiter_shares_budget_across_instances() -> None:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("Redis not reachable at 127.0.0.1:6379")
    clock = Clock(1_800_000_040.0)
    prefix = f"interlock:test:{uuid.uuid4().hex}"
    pol = policy().model_copy(update={"tenants": {"t1": policy().tenants["tiny"]}})
    a = RedisLimiter(pol, REDIS_URL, prefix=prefix, clock=clock)
    b = RedisLimiter(pol, REDIS_URL, prefix=prefix, clock=clock)
    try:
        await exercise(a, clock, "t1")
        # Requests counted by one process are seen by another.
        clock.now += 60
        assert (await a.admit("r")).allowed and (await a.admit("r")).allowed and (await b.admit("r")).allowed
        over = await b.admit("r")
        assert not over.allowed and over.reason == "requests_per_minute" and over.status == 429
        await a.record("s", cost_usd=0.6)
        await b.record("s", cost_usd=0.5)
        assert (await a.admit("s")).reason == "spend_per_day"
    finally:
        keys = await a.client.keys(f"{prefix}:*")
        if keys:
            await a.client.delete(*keys)
        await a.aclose()
        await b.aclose()


def test_build_limiter_picks_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTERLOCK_REDIS_URL", raising=False)
    assert isinstance(build_limiter(policy()), InProcessLimiter)
    monkeypatch.setenv("INTERLOCK_REDIS_URL", REDIS_URL)
    assert isinstance(build_limiter(policy()), RedisLimiter)


async def test_over_budget_tenant_gets_429_and_no_model_call() -> None:
    from interlock.graphs.state import InterlockState
    from interlock.policies.limits import BudgetExceeded, enforce
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.graph import END, START, StateGraph

    clock = Clock(1_800_000_010.0)
    limiter = InProcessLimiter(policy().model_copy(update={"tenants": {"acme": policy().tenants["tiny"]}}),
                               clock=clock)
    model_calls: list[int] = []
    model = GenericFakeChatModel(messages=iter([AIMessage("one"), AIMessage("two")]))

    async def call_model(state: InterlockState) -> dict:
        await enforce(limiter, state["tenant"], estimated_tokens=60)
        model_calls.append(1)
        reply = await model.ainvoke(state["messages"])
        await limiter.record(state["tenant"], tokens=60)
        return {"messages": [reply]}

    g = StateGraph(InterlockState)
    g.add_node("model", call_model)
    g.add_edge(START, "model")
    g.add_edge("model", END)
    graph = g.compile()
    await graph.ainvoke({"tenant": "acme", "messages": [HumanMessage("hi")]})
    with pytest.raises(BudgetExceeded) as info:
        await graph.ainvoke({"tenant": "acme", "messages": [HumanMessage("again")]})
    assert info.value.status == 429 and info.value.decision.retry_after_s == 50
    assert info.value.decision.headers() == {"Retry-After": "50"}
    assert model_calls == [1]
