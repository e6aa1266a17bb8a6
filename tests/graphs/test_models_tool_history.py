"""A conversation that already holds a tool call and its result reaches an OpenAI-compatible server that, like
llama.cpp's Python server, accepts an assistant message's content only as a string (over a real socket, with
the real langchain-openai client; the endpoint validates like that server and scripts the reply)."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from interlock.graphs.models import ModelGateway, portable_pattern, portable_patterns
from interlock.policies.graph_schema import ModelsPolicy
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from interlock.kernel.settings import Settings

GET_ORDER = {"type": "function", "function": {"name": "get_order", "description": "Look up an order",
                                               "parameters": {"type": "object", "properties": {
                                                   "order_id": {"type": "string", "pattern": r"^ORD-\d{4}$"}},
                                                   "required": ["order_id"]}}}


class StrictServer:
    """Answers 500 with a validation error for a non-string message content, as llama_cpp.server 0.3.36 does."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            bad = [i for i, m in enumerate(body["messages"]) if not isinstance(m.get("content"), str)]
            if bad:
                return JSONResponse({"detail": f"messages {bad}: content: Input should be a valid string"}, 500)
            return JSONResponse({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "local",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "Order ORD-1002 has shipped."}}],
                "usage": {"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46}})

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture
async def strict() -> AsyncIterator[tuple[StrictServer, str]]:
    fake = StrictServer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(fake.app(), log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.02)
    yield fake, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server.should_exit = True
    await task


async def test_a_tool_call_in_the_history_is_sent_with_string_content(strict: tuple[StrictServer, str]) -> None:
    fake, url = strict
    policy = ModelsPolicy.model_validate({
        "providers": {"local": {"kind": "openai", "model": "local", "base_url_env": "INTERLOCK_LOCAL_LLM_URL",
                                "max_retries": 0}},
        "tiers": {"planner": ["local"]}})
    gateway = ModelGateway.from_policy(policy, env={}, settings=Settings(local_llm_url=url))
    history = [
        HumanMessage("Where is my order ORD-1002?"),
        AIMessage(content="", tool_calls=[{"name": "get_order", "args": {"order_id": "ORD-1002"}, "id": "c1"}]),
        ToolMessage(content='{"id": "ORD-1002", "status": "shipped"}', tool_call_id="c1", name="get_order"),
    ]
    reply, provider = await gateway.ainvoke("planner", history, tenant="acme", feature="t", tools=[GET_ORDER])
    assert provider == "local" and reply.content == "Order ORD-1002 has shipped."
    (sent,) = fake.requests
    assistant = sent["messages"][1]
    assert assistant["role"] == "assistant" and assistant["content"] == ""
    assert assistant["tool_calls"][0]["function"]["name"] == "get_order"
    assert sent["messages"][2]["role"] == "tool" and "shipped" in sent["messages"][2]["content"]
    # The tool's pattern goes out without regex shorthands, which llama.cpp's grammar converter mistranslates.
    assert sent["tools"][0]["function"]["parameters"]["properties"]["order_id"]["pattern"] == "^ORD-[0-9]{4}$"
    assert GET_ORDER["function"]["parameters"]["properties"]["order_id"]["pattern"] == r"^ORD-\d{4}$"


@pytest.mark.parametrize("pattern", [
    r"^ORD-\d{4}$", r"^CUS-\d{3}$", r"^[^@\s]{1,64}@[^@\s]{1,190}\.[A-Za-z]{2,}$", r"^\+?[0-9][0-9 \-]{5,24}$",
    r"^[\w.]+$", r"^[]\d]+$", r"^a\\d$", r"^\w+\s\d$",
])
def test_portable_patterns_match_what_the_originals_match(pattern: str) -> None:
    portable = portable_pattern(pattern)
    assert "\\d" not in portable.replace("\\\\", "") and "\\w" not in portable and "\\s" not in portable
    samples = ["ORD-1234", "ORD-12345", "CUS-101", "a@b.example", "a b@c.de", "+44 20 7946 0321", "x.y_z", "]5",
               "a\\d", "ad", "abc 7", "abc\t7", "é", ""]
    assert [bool(re.search(pattern, s)) for s in samples] == [bool(re.search(portable, s)) for s in samples]
    nested = portable_patterns({"anyOf": [{"type": "string", "pattern": pattern}], "pattern": pattern})
    assert nested == {"anyOf": [{"type": "string", "pattern": portable}], "pattern": portable}
