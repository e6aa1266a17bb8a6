"""The gateway against a real OpenAI-compatible HTTP endpoint (the real `langchain-openai` client over a socket;
the endpoint scripts the model's replies): base URLs normalised to /v1, endpoints probed at start, tool_choice on
the wire, usage estimated when a stream has no usage chunk, timeout caps reported, the client a base dependency."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from interlock.graphs.models import (
    CircuitBreaker,
    ModelGateway,
    Provider,
    build_chat_model,
    estimate_tokens,
    normalise_base_url,
)
from interlock.policies.graph_schema import ModelsPolicy, ProviderConfig
from langchain_core.messages import HumanMessage, SystemMessage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from interlock.kernel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
GET_ORDER = {"type": "function", "function": {"name": "get_order", "description": "Look up an order",
                                               "parameters": {"type": "object", "properties": {
                                                   "order_id": {"type": "string"}}, "required": ["order_id"]}}}


@dataclass
class FakeOpenAI:
    """An OpenAI-compatible endpoint that answers with scripted text and records every request body."""

    reply: str = "Hello from the endpoint."
    usage_in_stream: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self, prefix: str = "/v1") -> Starlette:
        async def models(_: Request) -> Response:
            return JSONResponse({"object": "list", "data": [{"id": "local", "object": "model"}]})

        async def chat(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            if body.get("stream"):
                return StreamingResponse(self._sse(), media_type="text/event-stream")
            return JSONResponse({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "local",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": self.reply}}],
                "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}})

        return Starlette(routes=[Route(f"{prefix}/models", models), Route(f"{prefix}/chat/completions", chat,
                                                                             methods=["POST"])])

    async def _sse(self) -> AsyncIterator[bytes]:
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "local"}
        words = self.reply.split(" ")
        for i, word in enumerate(words):
            delta = {"content": word + (" " if i < len(words) - 1 else "")}
            if i == 0:
                delta["role"] = "assistant"
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n".encode()
        if self.usage_in_stream:
            usage = {**base, "choices": [], "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}}
            yield f"data: {json.dumps(usage)}\n\n".encode()
        yield b"data: [DONE]\n\n"


async def serve(app: Starlette) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.02)
    return server, task, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI()
    server, task, url = await serve(fake.app())
    yield fake, url
    server.should_exit = True
    await task


def local_gateway(url: str, chain_timeout_s: float = 45, **cfg: Any) -> ModelGateway:
    """The shipped `local` provider shape, its base URL from INTERLOCK_LOCAL_LLM_URL (the settings object)."""
    config = ProviderConfig(kind="openai", model="local", base_url_env="INTERLOCK_LOCAL_LLM_URL", max_retries=0,
                            **cfg)
    policy = ModelsPolicy.model_validate({"providers": {"local": config.model_dump()},
                                          "tiers": {"router": ["local"], "planner": ["local"], "answer": ["local"]},
                                          "chain_timeout_s": chain_timeout_s})
    return ModelGateway.from_policy(policy, env={}, settings=Settings(local_llm_url=url))


def test_base_urls_get_their_api_version() -> None:
    assert normalise_base_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert normalise_base_url("http://127.0.0.1:8000/ ") == "http://127.0.0.1:8000/v1"
    assert normalise_base_url("http://localhost:11434/v1/") == "http://localhost:11434/v1"
    assert normalise_base_url("https://example.test/openai/v1") == "https://example.test/openai/v1"
    assert normalise_base_url("https://example.test/v1beta/openai") == "https://example.test/v1beta/openai"


async def test_a_local_url_without_v1_still_reaches_the_api(endpoint: tuple[FakeOpenAI, str]) -> None:
    fake, url = endpoint
    gateway = local_gateway(url)  # no /v1: before, every call was a 404 and the gateway reported no model
    reply, provider = await gateway.ainvoke("answer", [HumanMessage("hi")], tenant="acme", feature="t")
    assert provider == "local" and reply.content == fake.reply and len(fake.requests) == 1
    assert await gateway.check_endpoints(timeout_s=2) == {"local": None}


async def test_an_endpoint_that_is_not_an_openai_api_is_reported_at_start(caplog: pytest.LogCaptureFixture) -> None:
    not_an_api = Starlette(routes=[Route("/{path:path}", lambda _r: HTMLResponse("<h1>router login</h1>"))])
    server, task, url = await serve(not_an_api)
    try:
        caplog.set_level(logging.ERROR, logger="interlock.models")
        problems = await local_gateway(url).check_endpoints(timeout_s=2)
        assert problems["local"] and "not an OpenAI-compatible API" in problems["local"]
        assert "'local' is configured but unusable" in caplog.text
    finally:
        server.should_exit = True
        await task
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    problems = await local_gateway(dead).check_endpoints(timeout_s=1)
    assert "did not answer" in str(problems["local"])


async def test_tool_choice_reaches_the_provider(endpoint: tuple[FakeOpenAI, str]) -> None:
    fake, url = endpoint
    gateway = local_gateway(url)
    for choice in ("get_order", "required", "auto"):
        await gateway.ainvoke("planner", [HumanMessage("where is ORD-1002?")], tools=[GET_ORDER], tool_choice=choice)
    sent = [r.get("tool_choice") for r in fake.requests]
    assert sent == [{"type": "function", "function": {"name": "get_order"}}, "required", "auto"]
    assert all(r["tools"][0]["function"]["name"] == "get_order" for r in fake.requests)


async def test_provider_usage_is_recorded_as_reported(endpoint: tuple[FakeOpenAI, str]) -> None:
    _, url = endpoint
    gateway = local_gateway(url)
    await gateway.ainvoke("answer", [HumanMessage("hi")], tenant="acme", feature="t")
    [record] = gateway.ledger.records
    assert (record.input_tokens, record.output_tokens, record.estimated) == (42, 7, False)


async def test_a_stream_without_a_usage_chunk_is_estimated_and_marked() -> None:
    fake = FakeOpenAI(reply="Refunds reach the original payment method within five to seven business days.")
    server, task, url = await serve(fake.app())
    try:
        gateway = local_gateway(url)
        gateway.chains["answer"][0].model.streaming = True  # the provider streams; no usage chunk follows
        prompt = [SystemMessage("Answer from the passages."), HumanMessage("How long does a refund take?")]
        reply, _ = await gateway.ainvoke("answer", prompt, tenant="acme", feature="rag.answer")
        assert fake.requests[0]["stream"] is True and reply.content == fake.reply
        assert not reply.usage_metadata  # the provider really sent no numbers
        [record] = gateway.ledger.records
        assert record.estimated is True
        assert record.output_tokens == estimate_tokens(fake.reply) > 0
        assert record.input_tokens >= estimate_tokens("Answer from the passages.How long does a refund take?")
        fake.usage_in_stream = True
        await gateway.ainvoke("answer", prompt, tenant="acme", feature="rag.answer")
        last = gateway.ledger.records[-1]
        assert (last.input_tokens, last.output_tokens, last.estimated) == (42, 7, False)
    finally:
        server.should_exit = True
        await task


def test_a_provider_timeout_above_the_chain_budget_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="interlock.models")
    gateway = local_gateway("http://127.0.0.1:9/v1", timeout_s=60)
    assert "'local': timeout_s=60 is capped by chain_timeout_s=45" in caplog.text
    assert local_gateway("http://127.0.0.1:9/v1", timeout_s=5).configuration_warnings() == []


def test_the_openai_compatible_client_is_a_base_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(dep.replace(" ", "").startswith("langchain-openai") for dep in project["dependencies"])
    # so a configured provider is built, never skipped with a warning
    model = build_chat_model(ProviderConfig(kind="openai", model="m", base_url="http://127.0.0.1:9"), env={},
                             settings=Settings())
    assert model is not None and str(model.openai_api_base) == "http://127.0.0.1:9/v1"


def test_anthropic_is_asked_for_any_tool_when_one_is_required() -> None:
    seen: list[Any] = []

    class Recorder:
        def bind_tools(self, tools: list[Any], **kwargs: Any) -> str:
            seen.append(kwargs.get("tool_choice"))
            return "bound"

    from interlock.graphs.models import _bind

    provider = Provider("a", Recorder(), ProviderConfig(kind="anthropic", model="m"), CircuitBreaker())  # type: ignore[arg-type]
    _bind(provider, [GET_ORDER], "required")
    _bind(provider, [GET_ORDER], "get_order")
    assert seen == ["any", "get_order"]
