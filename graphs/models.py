"""The model gateway: which chat model serves each task tier, and what happens when it fails.

Per tier (router, planner, answer) a failover chain of providers from `policies/models.yaml`.
Each call has a per-provider timeout, retries with backoff on 429/5xx, a circuit breaker per
provider and a whole-chain deadline. When the chain is exhausted the caller gets
`ModelsUnavailable` and switches to the zero-key mode, so a dead provider degrades answers
instead of failing the run. Token usage and cost are recorded per call against tenant and feature.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from interlock.graphs.events import USAGE_EVENT, emit
from interlock.policies import POLICY_DIR
from interlock.policies.graph_schema import ModelsPolicy, ProviderConfig, Tier, load_models_policy
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, message_chunk_to_message
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import BaseModel, ConfigDict, PrivateAttr

from interlock.kernel.settings import Settings, get_settings

log = logging.getLogger("interlock.models")

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class ModelsUnavailable(RuntimeError):
    """No provider of the tier answered in time; the caller should use the zero-key mode."""

    def __init__(self, tier: str, failures: list[str]) -> None:
        super().__init__(f"no model available for tier {tier!r}: {'; '.join(failures) or 'none configured'}")
        self.tier = tier
        self.failures = failures


class ProviderHttpError(RuntimeError):
    """An HTTP-level failure carrying its status code (raised by the scripted model, mirrors SDK errors)."""

    def __init__(self, status_code: int, message: str = "") -> None:
        super().__init__(message or f"HTTP {status_code}")
        self.status_code = status_code


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a provider SDK exception, whatever SDK raised it."""
    for candidate in (exc, getattr(exc, "response", None)):
        code = getattr(candidate, "status_code", None) or getattr(candidate, "status", None)
        if isinstance(code, int):
            return code
    return None


# --- a scripted chat model (tests, demos, through-the-server runs without a key) ---------------


class ScriptedChatModel(BaseChatModel):
    """Replays scripted replies, including tool calls. It is not a language model and says so.

    `replies` are AIMessages or strings; after the last one, `repeat` decides: "last" repeats it,
    "cycle" starts over. `delay_s` simulates a slow provider; `fail_status` makes every call fail
    with that HTTP status.
    """

    replies: list[Any]  # AIMessage or str (a typed union trips AIMessage's validator on str)
    repeat: str = "last"
    delay_s: float = 0.0
    fail_status: int | None = None
    fail_first: int = 0  # fail only the first N calls (with fail_status, default 503)
    _index: int = PrivateAttr(default=0)
    calls: int = 0

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @property
    def _llm_type(self) -> str:
        return "interlock-scripted"

    def _next_reply(self) -> AIMessage:
        self.calls += 1
        if self.fail_first and self.calls <= self.fail_first:
            raise ProviderHttpError(self.fail_status or 503)
        if self.fail_status is not None and not self.fail_first:
            raise ProviderHttpError(self.fail_status)
        if not self.replies:
            raise ValueError("scripted model has no replies")
        if self._index >= len(self.replies):
            self._index = 0 if self.repeat == "cycle" else len(self.replies) - 1
        reply = self.replies[self._index]
        self._index += 1
        message = AIMessage(content=reply) if isinstance(reply, str) else reply.model_copy(deep=True)
        # Fresh ids so repeated tool calls are distinct messages in state.
        message.id = None
        for i, call in enumerate(message.tool_calls):
            call["id"] = f"call_{self.calls}_{i}"
        message.usage_metadata = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
        return message

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.delay_s:
            time.sleep(self.delay_s)
        return ChatResult(generations=[ChatGeneration(message=self._next_reply())])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return ChatResult(generations=[ChatGeneration(message=self._next_reply())])

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | None = None,
                   **kwargs: Any) -> Runnable[Any, AIMessage]:
        return self  # the script already decides which tool it calls

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedChatModel:
        """`{"replies": [{"content": "...", "tool_calls": [{"name": "get_order", "args": {...}}]}], ...}`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        replies: list[AIMessage | str] = []
        for item in data.get("replies", []):
            if isinstance(item, str):
                replies.append(item)
                continue
            calls = [{"name": c["name"], "args": c.get("args", {}), "id": "", "type": "tool_call"}
                     for c in item.get("tool_calls", [])]
            replies.append(AIMessage(content=item.get("content", ""), tool_calls=calls))
        fields: dict[str, Any] = {"replies": replies, "repeat": data.get("repeat", "last"),
                                  "delay_s": float(data.get("delay_s", 0)), "fail_status": data.get("fail_status")}
        if data.get("stream"):  # {"stream": {"chunk_chars": 4, "token_delay_s": 0.02}}
            return StreamingScriptedChatModel(**fields, **dict(data["stream"]))
        return cls(**fields)


class StreamingScriptedChatModel(ScriptedChatModel):
    """The scripted model, streaming its replies the way a provider does: `delay_s` before the first token,
    then `chunk_chars` characters every `token_delay_s` (tests and benches of token streaming).

    A reply may contain `{cite}`: it becomes the first `[#id]` passage marker of the prompt (RAG's context),
    so a scripted answer can cite whatever this run retrieved."""

    chunk_chars: int = 4
    token_delay_s: float = 0.02

    def _scripted(self, messages: list[BaseMessage]) -> AIMessage:
        message = self._next_reply()
        if isinstance(message.content, str) and "{cite}" in message.content:
            prompt = "\n".join(str(m.content) for m in messages)
            marker = re.search(r"\[#[0-9A-Za-z_-]{4,64}\]", prompt)
            message.content = message.content.replace("{cite}", marker.group(0) if marker else "")
        return message

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: Any = None, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        message = self._scripted(messages)
        text = message.content if isinstance(message.content, str) else ""
        step = max(self.chunk_chars, 1)
        for start in range(0, len(text), step):
            if start and self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            yield ChatGenerationChunk(message=AIMessageChunk(content=text[start:start + step]))
        calls = [{"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i,
                  "type": "tool_call_chunk"} for i, c in enumerate(message.tool_calls)]
        yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=calls,
                                                         usage_metadata=message.usage_metadata))

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        chunks = [c async for c in self._astream(messages, stop, **kwargs)]
        total = chunks[0].message
        for chunk in chunks[1:]:
            total = total + chunk.message
        return ChatResult(generations=[ChatGeneration(message=message_chunk_to_message(total))])


# --- circuit breaker and usage ledger ----------------------------------------------------------


@dataclass
class CircuitBreaker:
    failure_threshold: int = 3
    reset_after_s: float = 30.0
    failures: int = 0
    opened_at: float | None = None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        # Half-open after the cool-down: let one call through to probe.
        return time.monotonic() - self.opened_at >= self.reset_after_s

    def record(self, ok: bool) -> None:
        if ok:
            self.failures, self.opened_at = 0, None
            return
        self.failures += 1
        if self.failures >= self.failure_threshold:
            self.opened_at = time.monotonic()

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.allow() else "open"


class UsageRecord(BaseModel):
    at: float
    tenant: str
    feature: str
    tier: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    outcome: str


@dataclass
class UsageLedger:
    """Recent usage in memory plus optional sinks (observability plugs a persistent one in here)."""

    records: deque[UsageRecord] = field(default_factory=lambda: deque(maxlen=10_000))
    sinks: list[Callable[[UsageRecord], None]] = field(default_factory=list)

    def add(self, record: UsageRecord) -> None:
        self.records.append(record)
        log.info("model call tier=%s provider=%s tenant=%s feature=%s in=%d out=%d cost=%.6f %s",
                 record.tier, record.provider, record.tenant, record.feature, record.input_tokens,
                 record.output_tokens, record.cost_usd, record.outcome)
        for sink in self.sinks:
            try:
                sink(record)
            except Exception:  # a broken sink must not break the run
                log.exception("usage sink failed")

    def totals(self, tenant: str | None = None) -> dict[str, float]:
        rows = [r for r in self.records if tenant is None or r.tenant == tenant]
        return {"calls": len(rows), "input_tokens": sum(r.input_tokens for r in rows),
                "output_tokens": sum(r.output_tokens for r in rows),
                "cost_usd": round(sum(r.cost_usd for r in rows), 6)}


# --- providers and the gateway -----------------------------------------------------------------


@dataclass
class Provider:
    name: str
    model: BaseChatModel
    config: ProviderConfig
    breaker: CircuitBreaker


def build_chat_model(cfg: ProviderConfig, env: dict[str, str] | None = None,
                     settings: Settings | None = None) -> BaseChatModel | None:
    """A LangChain chat model for `cfg`, or None when it is not configured in this environment.

    `env` holds the provider variables models.yaml names (API keys, base URLs); `settings` Interlock's own.
    """
    env = dict(os.environ) if env is None else env
    if cfg.kind == "scripted":
        scripted = (settings or get_settings()).scripted_model
        path = cfg.script or (str(scripted) if scripted else None)
        return ScriptedChatModel.from_file(path) if path and Path(path).is_file() else None
    api_key = env.get(cfg.api_key_env) if cfg.api_key_env else None
    base_url = cfg.base_url or (env.get(cfg.base_url_env) if cfg.base_url_env else None)
    if cfg.kind == "openai":
        if not api_key and not base_url:
            return None
        try:
            from langchain_openai import ChatOpenAI
        except ImportError:
            log.warning("provider configured but langchain-openai is not installed (pip install '.[openai]')")
            return None
        return ChatOpenAI(model=cfg.model, base_url=base_url, api_key=api_key or "not-needed",
                          timeout=cfg.timeout_s, max_retries=0, temperature=cfg.temperature,
                          stream_usage=True)
    if cfg.kind == "anthropic":
        if not api_key:
            return None
        try:
            from langchain_anthropic import ChatAnthropic
        except ImportError:
            log.warning("provider configured but langchain-anthropic is not installed (pip install '.[anthropic]')")
            return None
        return ChatAnthropic(model=cfg.model, api_key=api_key, base_url=base_url, timeout=cfg.timeout_s,
                             max_retries=0, temperature=cfg.temperature)
    return None


class TokenSink(Protocol):
    """Where a streamed call's raw text goes (graphs/nodes/answer_stream.py `ProgressiveAnswer`)."""

    async def feed(self, text: str) -> None: ...

    def hold(self, reason: str = "tool_call") -> None: ...

    def restart(self) -> bool: ...


async def _stream_into(runnable: Runnable[Any, Any], messages: list[BaseMessage], sink: TokenSink) -> AIMessage:
    """Consume a provider's token stream, feeding its text to `sink`; the whole reply, tool calls included."""
    total: Any = None
    async for chunk in runnable.astream(messages, config={"tags": ["nostream"]}):
        if not isinstance(chunk, AIMessageChunk):  # a model without streaming answers in one message
            total = chunk
            content = getattr(chunk, "content", "")
            if getattr(chunk, "tool_calls", None):
                sink.hold()
            await sink.feed(content if isinstance(content, str) else "")
            continue
        total = chunk if total is None else total + chunk
        if chunk.tool_call_chunks:
            sink.hold()  # the reply calls tools: its text is not the answer
        await sink.feed(chunk.text)
    if isinstance(total, AIMessageChunk):
        return message_chunk_to_message(total)  # type: ignore[return-value]
    return total if isinstance(total, AIMessage) else AIMessage(content=str(getattr(total, "content", "") or ""))


class ModelGateway:
    """Calls the failover chain of a tier. Construct with `from_policy()` or with explicit chains."""

    def __init__(self, chains: dict[str, list[Provider]] | None = None, *, chain_timeout_s: float = 45.0,
                 backoff_base_s: float = 0.5, ledger: UsageLedger | None = None) -> None:
        self.chains = chains or {}
        self.chain_timeout_s = chain_timeout_s
        self.backoff_base_s = backoff_base_s
        self.ledger = ledger or UsageLedger()

    @classmethod
    def from_policy(cls, policy: ModelsPolicy | None = None, env: dict[str, str] | None = None,
                    settings: Settings | None = None) -> ModelGateway:
        env = dict(os.environ) if env is None else env
        settings = settings or get_settings()
        if policy is None:
            path = settings.models_policy
            policy = ModelsPolicy.model_validate(_read_yaml(path)) if path else load_models_policy(POLICY_DIR)
        providers: dict[str, Provider] = {}
        for name, cfg in policy.providers.items():
            model = build_chat_model(cfg, env, settings)
            if model is not None:
                providers[name] = Provider(name, model, cfg, CircuitBreaker(
                    policy.breaker.failure_threshold, policy.breaker.reset_after_s))
        chains = {tier: [providers[n] for n in names if n in providers] for tier, names in policy.tiers.items()}
        # A scripted model named in the environment serves every tier first (demos, server tests).
        if settings.scripted_model and "scripted" not in providers:
            scripted = build_chat_model(ProviderConfig(kind="scripted", model="scripted"), env, settings)
            if scripted is not None:
                p = Provider("scripted", scripted, ProviderConfig(kind="scripted", model="scripted"),
                             CircuitBreaker(policy.breaker.failure_threshold, policy.breaker.reset_after_s))
                for tier in ("router", "planner", "answer"):
                    chains[tier] = [p, *chains.get(tier, [])]
        return cls({t: c for t, c in chains.items() if c}, chain_timeout_s=policy.chain_timeout_s,
                   backoff_base_s=policy.backoff_base_s)

    def has(self, tier: Tier | str) -> bool:
        return bool(self.chains.get(tier))

    async def ainvoke(self, tier: Tier | str, messages: Sequence[BaseMessage], *, tenant: str = "",
                      feature: str = "", tools: Sequence[Any] | None = None,
                      deadline: float | None = None, stream: TokenSink | None = None) -> tuple[AIMessage, str]:
        """The first provider's answer as (message, provider name); `ModelsUnavailable` if none.

        With `stream`, the provider is called in streaming mode and its raw text fed to the sink as it arrives
        (the sink guards and releases it to clients). Once the sink has released text, a failing provider is not
        failed over (its successor would write a different answer): `ModelsUnavailable` is raised instead."""
        chain = self.chains.get(tier, [])
        failures: list[str] = []
        end = time.monotonic() + self.chain_timeout_s
        if deadline is not None:
            end = min(end, deadline)
        for provider in chain:
            if not provider.breaker.allow():
                failures.append(f"{provider.name}: circuit open")
                continue
            runnable: Runnable[Any, Any] = provider.model.bind_tools(list(tools)) if tools else provider.model
            for attempt in range(provider.config.max_retries + 1):
                remaining = end - time.monotonic()
                if remaining <= 0:
                    failures.append(f"{provider.name}: chain deadline")
                    break
                started = time.monotonic()
                try:
                    # Internal call: its raw tokens must not stream to clients (the answer is guarded first, then
                    # relayed by `relay_to_client`); "nostream" keeps it out of the messages stream mode.
                    call = (_stream_into(runnable, list(messages), stream) if stream is not None
                            else runnable.ainvoke(list(messages), config={"tags": ["nostream"]}))
                    message = await asyncio.wait_for(call, timeout=min(provider.config.timeout_s, remaining))
                except TimeoutError:
                    provider.breaker.record(False)
                    await self._record(provider, tier, tenant, feature, None, started, "timeout")
                    failures.append(f"{provider.name}: timeout")
                    if stream is not None and not stream.restart():
                        raise ModelsUnavailable(str(tier), failures) from None
                    break  # a hung provider gets no retry: it would eat the whole budget
                except Exception as exc:  # SDK errors vary; classify by status
                    status = status_of(exc)
                    provider.breaker.record(False)
                    await self._record(provider, tier, tenant, feature, None, started, f"error {status or type(exc).__name__}")
                    failures.append(f"{provider.name}: {status or type(exc).__name__}")
                    if stream is not None and not stream.restart():
                        raise ModelsUnavailable(str(tier), failures) from None
                    if status in RETRYABLE_STATUS and attempt < provider.config.max_retries \
                            and provider.breaker.allow():
                        await asyncio.sleep(min(self.backoff_base_s * 2**attempt, max(0.0, end - time.monotonic())))
                        continue
                    break
                provider.breaker.record(True)
                if not isinstance(message, AIMessage):
                    message = AIMessage(content=str(getattr(message, "content", message)))
                await self._record(provider, tier, tenant, feature, message, started, "ok")
                return message, provider.name
        raise ModelsUnavailable(str(tier), failures)

    async def _record(self, provider: Provider, tier: str, tenant: str, feature: str, message: AIMessage | None,
                      started: float, outcome: str) -> None:
        usage = (message.usage_metadata if message is not None else None) or {}
        tin, tout = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
        cost = (tin * provider.config.input_cost_per_mtok + tout * provider.config.output_cost_per_mtok) / 1e6
        record = UsageRecord(at=time.time(), tenant=tenant, feature=feature, tier=str(tier), provider=provider.name,
                             model=provider.config.model, input_tokens=tin, output_tokens=tout, cost_usd=cost,
                             latency_ms=round((time.monotonic() - started) * 1000, 1), outcome=outcome)
        self.ledger.add(record)
        # Whoever runs the graph learns about usage from this event (the server: run traces, metrics, budgets).
        await emit(USAGE_EVENT, record.model_dump())


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping")
    return data


def scripted_chain(*models: BaseChatModel, timeout_s: float = 5.0, max_retries: int = 0,
                   tiers: Sequence[str] = ("router", "planner", "answer"),
                   chain_timeout_s: float = 10.0) -> ModelGateway:
    """A gateway over explicit chat models (in order), for tests and embedding."""
    providers = [Provider(f"p{i}", m, ProviderConfig(kind="scripted", model=type(m).__name__, timeout_s=timeout_s,
                                                     max_retries=max_retries), CircuitBreaker())
                 for i, m in enumerate(models)]
    return ModelGateway({t: list(providers) for t in tiers}, chain_timeout_s=chain_timeout_s, backoff_base_s=0.05)


# --- streaming the client-safe answer -----------------------------------------------------------------


class RelayChatModel(BaseChatModel):
    """Streams a finished, already-guarded answer as chat-model tokens, so clients on `messages-tuple` get
    token streaming without ever seeing text the output guard would remove."""

    text: str
    chunk_chars: int = 24

    @property
    def _llm_type(self) -> str:
        return "interlock-relay"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.text))])

    async def _astream(self, messages: Any, stop: Any = None, run_manager: Any = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        # langchain-core reports each yielded chunk to the callbacks itself (reporting it here too sent it twice).
        for start in range(0, len(self.text), self.chunk_chars) or [0]:
            yield ChatGenerationChunk(message=AIMessageChunk(content=self.text[start:start + self.chunk_chars]))


async def relay_to_client(message: AIMessage) -> AIMessage:
    """Stream `message`'s text to clients and return it under the streamed id (clients merge the two)."""
    text = message.content if isinstance(message.content, str) else str(message.content)
    relayed = await RelayChatModel(text=text).ainvoke([], config={"tags": ["interlock:answer"]})
    return message.model_copy(update={"id": relayed.id or message.id})
