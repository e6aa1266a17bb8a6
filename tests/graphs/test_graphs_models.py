"""The model gateway: failover, retries, timeouts, circuit breaker, usage, configuration."""

from __future__ import annotations

import json
import time

import pytest
from interlock.graphs.models import (
    ModelGateway,
    ModelsUnavailable,
    ScriptedChatModel,
    scripted_chain,
)
from interlock.policies.graph_schema import ModelsPolicy
from langchain_core.messages import AIMessage, HumanMessage

from interlock.kernel.settings import Settings

ASK = [HumanMessage("hello")]


async def test_failover_to_second_provider_on_server_error() -> None:
    broken = ScriptedChatModel(replies=["never"], fail_status=500)
    good = ScriptedChatModel(replies=["from the second provider"])
    gateway = scripted_chain(broken, good)
    message, provider = await gateway.ainvoke("planner", ASK, tenant="acme", feature="test")
    assert provider == "p1"
    assert message.content == "from the second provider"
    outcomes = [(r.provider, r.outcome) for r in gateway.ledger.records]
    assert outcomes == [("p0", "error 500"), ("p1", "ok")]
    assert gateway.ledger.totals("acme")["output_tokens"] == 5


async def test_retries_with_backoff_on_429_then_succeeds() -> None:
    flaky = ScriptedChatModel(replies=["third time lucky"], fail_first=2, fail_status=429)
    gateway = scripted_chain(flaky, max_retries=2)
    message, provider = await gateway.ainvoke("answer", ASK)
    assert (message.content, provider, flaky.calls) == ("third time lucky", "p0", 3)


async def test_no_retry_on_client_error() -> None:
    bad_request = ScriptedChatModel(replies=["x"], fail_status=400)
    gateway = scripted_chain(bad_request, max_retries=3)
    with pytest.raises(ModelsUnavailable):
        await gateway.ainvoke("answer", ASK)
    assert bad_request.calls == 1


async def test_hanging_provider_times_out_and_fails_over() -> None:
    hung = ScriptedChatModel(replies=["too late"], delay_s=30)
    good = ScriptedChatModel(replies=["fast"])
    gateway = scripted_chain(hung, good, timeout_s=0.3)
    started = time.monotonic()
    message, provider = await gateway.ainvoke("router", ASK)
    assert provider == "p1" and message.content == "fast"
    assert time.monotonic() - started < 5


async def test_all_providers_down_raises_models_unavailable_within_the_chain_budget() -> None:
    gateway = scripted_chain(ScriptedChatModel(replies=["x"], delay_s=30), ScriptedChatModel(replies=["y"], delay_s=30),
                             timeout_s=5, chain_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(ModelsUnavailable) as info:
        await gateway.ainvoke("router", ASK)
    assert time.monotonic() - started < 5
    assert "timeout" in str(info.value) or "deadline" in str(info.value)


async def test_circuit_breaker_skips_a_failing_provider() -> None:
    broken = ScriptedChatModel(replies=["x"], fail_status=503)
    good = ScriptedChatModel(replies=["ok"])
    gateway = scripted_chain(broken, good)
    for provider in gateway.chains["answer"]:
        provider.breaker.failure_threshold = 2
        provider.breaker.reset_after_s = 60
    for _ in range(4):
        _, name = await gateway.ainvoke("answer", ASK)
        assert name == "p1"
    assert broken.calls == 2  # opened after two failures, then skipped
    assert gateway.chains["answer"][0].breaker.state == "open"


async def test_scripted_model_replays_tool_calls_with_fresh_ids() -> None:
    model = ScriptedChatModel(replies=[AIMessage(content="", tool_calls=[
        {"name": "get_order", "args": {"order_id": "ORD-1001"}, "id": "x", "type": "tool_call"}])])
    first, second = await model.ainvoke(ASK), await model.ainvoke(ASK)
    assert first.tool_calls[0]["name"] == "get_order"
    assert first.tool_calls[0]["id"] != second.tool_calls[0]["id"]


def test_from_policy_uses_only_configured_providers(tmp_path) -> None:
    policy = ModelsPolicy.model_validate({
        "providers": {"openai": {"kind": "openai", "model": "m", "api_key_env": "OPENAI_API_KEY"}},
        "tiers": {"router": ["openai"], "planner": ["openai"], "answer": ["openai"]}})
    assert not ModelGateway.from_policy(policy, env={}).has("router")  # zero-key: no key, no provider
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"replies": [{"content": "", "tool_calls": [{"name": "get_order", "args": {}}]}]}))
    gateway = ModelGateway.from_policy(policy, env={}, settings=Settings(scripted_model=script))
    assert [p.name for p in gateway.chains["planner"]] == ["scripted"]


def test_policy_rejects_unknown_provider_in_tier() -> None:
    with pytest.raises(ValueError, match="unknown providers"):
        ModelsPolicy.model_validate({"providers": {}, "tiers": {"router": ["nope"]}})


def test_shipped_policy_files_validate() -> None:
    from interlock.policies.graph_schema import load_intents_policy, load_models_policy, load_playbooks_policy

    assert load_models_policy().tiers["router"]
    assert len(load_intents_policy().intents) >= 5
    assert "cancel_order" in load_playbooks_policy().playbooks
