"""The router served for bench/stream_ttft.py: planner and answer tiers on one model, either the scripted slow
model (default) or an OpenAI-compatible provider (STREAM_BENCH_BASE_URL, STREAM_BENCH_MODEL, STREAM_BENCH_API_KEY).

Every streamed model call appends one JSON line to STREAM_BENCH_TIMINGS: when the call started, when its first
token and its end arrived (epoch seconds) and the graph node that made it, so the bench can compare the model's
own time to first token with the client's.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any
from uuid import UUID

from interlock.graphs.defaults import Lazy, default_retriever
from interlock.graphs.models import StreamingScriptedChatModel, scripted_chain
from interlock.graphs.router import RouterDeps, build_router
from langchain_core.callbacks import BaseCallbackHandler

ANSWER = " ".join(
    f"Point {i}: refunds go back to the original payment method once the return is received and checked {{cite}}."
    for i in range(1, 25))


class CallTimings(BaseCallbackHandler):
    """First-token and end times of each model call, appended to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.calls: dict[UUID, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, metadata: Any = None,
                            **kwargs: Any) -> None:
        self.calls[run_id] = {"node": (metadata or {}).get("langgraph_node", ""), "start": time.time()}

    def on_llm_new_token(self, token: str, *, run_id: UUID, **kwargs: Any) -> None:
        call = self.calls.get(run_id)
        if call is not None and token and "first_token" not in call:
            call["first_token"] = time.time()

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        call = self.calls.pop(run_id, None)
        if call is not None:
            call["end"] = time.time()
            with self.lock, open(self.path, "a", encoding="utf-8") as out:
                out.write(json.dumps(call) + "\n")


def _model() -> Any:
    base_url = os.environ.get("STREAM_BENCH_BASE_URL")
    if not base_url:
        return StreamingScriptedChatModel(replies=[ANSWER], delay_s=float(os.environ.get("STREAM_BENCH_DELAY_S", "0.5")),
                                          chunk_chars=4, token_delay_s=float(os.environ.get("STREAM_BENCH_TOKEN_S", "0.03")))
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=os.environ.get("STREAM_BENCH_MODEL", "local"), base_url=base_url,
                      api_key=os.environ.get("STREAM_BENCH_API_KEY") or "not-needed", temperature=0,
                      timeout=float(os.environ.get("STREAM_BENCH_TIMEOUT_S", "300")), max_retries=0,
                      stream_usage=True, max_tokens=int(os.environ.get("STREAM_BENCH_MAX_TOKENS", "400")))


def _router() -> Any:
    model = _model()
    if os.environ.get("STREAM_BENCH_TIMINGS"):
        model.callbacks = [CallTimings(os.environ["STREAM_BENCH_TIMINGS"])]
    timeout = float(os.environ.get("STREAM_BENCH_TIMEOUT_S", "300"))
    gateway = scripted_chain(model, tiers=("planner", "answer"), timeout_s=timeout, chain_timeout_s=timeout)
    return build_router(RouterDeps(gateway=gateway, toolbox=None, retriever=Lazy(default_retriever)))


router = _router()
