"""The model gateway: which chat model serves each task tier, and what happens when it fails.

Per tier (router, planner, answer) a failover chain of providers from `policies/models.yaml`.
Each call has a per-provider timeout, retries with backoff on 429/5xx, a circuit breaker per
provider and a whole-chain deadline. When the chain is exhausted the caller gets
`ModelsUnavailable` and switches to the zero-key mode, so a dead provider degrades answers
instead of failing the run. Token usage and cost are recorded per call against tenant and feature.
"""

from __future__ import annotations

import asyncio
import functools
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
    # The `tool_choice` of every bind_tools call, in order (what a real provider would have been sent).
    tool_choices: list[Any] = []

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
        self.tool_choices.append(tool_choice)
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
    # The provider reported no usage (e.g. a stream without a usage chunk): the counts are estimated locally.
    estimated: bool = False


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
    settings = settings or get_settings()
    if cfg.kind == "scripted":
        scripted = settings.scripted_model
        path = cfg.script or (str(scripted) if scripted else None)
        return ScriptedChatModel.from_file(path) if path and Path(path).is_file() else None
    api_key = env.get(cfg.api_key_env) if cfg.api_key_env else None
    base_url = cfg.base_url or (_setting_or_env(cfg.base_url_env, env, settings) if cfg.base_url_env else None)
    if cfg.kind == "openai":
        if not api_key and not base_url:
            return None
        # A base dependency: a configured provider never silently drops to the zero-key mode for want of it.
        ChatOpenAI = _openai_compatible_chat()
        base_url = normalise_base_url(base_url) if base_url else None
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


@functools.cache
def _openai_compatible_chat() -> type[BaseChatModel]:
    """ChatOpenAI that sends an assistant tool-call message's empty content as "" rather than null.

    LangChain sends null there (OpenAI accepts both); llama.cpp's Python server accepts only a string and
    answers HTTP 500, which failed every planner call after a tool result (notes/localmodel-findings.md)."""
    from langchain_openai import ChatOpenAI

    class OpenAICompatibleChat(ChatOpenAI):
        def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any) -> dict:
            payload = super()._get_request_payload(input_, stop=stop, **kwargs)
            for message in payload.get("messages") or []:
                if message.get("role") == "assistant" and message.get("content") is None:
                    message["content"] = ""
            if payload.get("tools"):  # copies: the bound tools are the caller's objects
                payload["tools"] = [portable_patterns(tool) for tool in payload["tools"]]
            return payload

    return OpenAICompatibleChat


# (outside a class, inside one); \w keeps every non-ASCII character, as Python's Unicode \w nearly does.
_CLASS_SHORTHANDS = {"d": ("[0-9]", "0-9"), "s": ("[ \\t\\n\\r]", " \\t\\n\\r"),
                     "w": ("[A-Za-z0-9_\\u0080-\\uffff]", "A-Za-z0-9_\\u0080-\\uffff")}


def portable_pattern(pattern: str) -> str:
    """`pattern` with the shorthand classes \\d, \\s and \\w spelled out, inside and outside brackets.

    llama.cpp's JSON-schema-to-grammar converter mistranslates them (`ORD-\\d{4}` became the literal
    `ORD-\\dORD-\\d...`, a grammar that fails to parse), and the server then died on the forced tool call.
    The arguments are still validated against the tool's own schema afterwards."""
    out: list[str] = []
    opened = -1  # index in `pattern` of the open bracket, -1 outside a class
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escaped = pattern[i + 1]
            out.append(_CLASS_SHORTHANDS[escaped][opened >= 0] if escaped in _CLASS_SHORTHANDS else char + escaped)
            i += 2
            continue
        if char == "[" and opened < 0:
            opened = i
        elif char == "]" and opened >= 0 and pattern[opened + 1:i] not in ("", "^"):  # "[]" / "[^]": literal
            opened = -1
        out.append(char)
        i += 1
    return "".join(out)


def portable_patterns(schema: Any) -> Any:
    """A copy of a JSON schema with every string `pattern` made portable (`portable_pattern`)."""
    if isinstance(schema, dict):
        return {k: portable_pattern(v) if k == "pattern" and isinstance(v, str) else portable_patterns(v)
                for k, v in schema.items()}
    if isinstance(schema, list):
        return [portable_patterns(v) for v in schema]
    return schema


def _setting_or_env(name: str, env: dict[str, str], settings: Settings) -> str | None:
    """A provider variable from models.yaml: Interlock's own (INTERLOCK_*) come from the settings object."""
    if name.startswith("INTERLOCK_"):
        field_name = name.removeprefix("INTERLOCK_").lower()
        if field_name in Settings.model_fields:
            value = getattr(settings, field_name)
            return str(value) if value else env.get(name)
    return env.get(name)


def normalise_base_url(url: str) -> str:
    """An OpenAI-compatible base URL ends in its API version (`/v1`): `http://host:8000` and `http://host:8000/`
    become `http://host:8000/v1`, so a missing suffix is not a 404 on every call. A URL that already names a
    version (`/v1`, `/openai/v1`, `/api/v2`...) or a deployment path with one is kept as it is."""
    url = url.strip().rstrip("/")
    if re.search(r"/v\d+(beta\d*|alpha\d*)?(/|$)", url):
        return url
    return url + "/v1"


async def probe_openai_endpoint(base_url: str, api_key: str | None = None, timeout_s: float = 3.0) -> str | None:
    """None when `base_url` answers `GET /models` like an OpenAI-compatible API, else what is wrong (for the log)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = base_url.rstrip("/") + "/models"
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return f"{url} did not answer ({type(exc).__name__})"
    if response.status_code in (401, 403):
        return None  # an API that wants a key: it is one, the key is the caller's business
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return (f"{url} answered HTTP {response.status_code} without an OpenAI model list: not an OpenAI-compatible "
                "API (is the base URL right? it normally ends in /v1)")
    return None


def _bind(provider: Provider, tools: Sequence[Any] | None, tool_choice: str | None) -> Runnable[Any, Any]:
    """The provider's model with `tools` bound, and the tool choice in the provider's own terms."""
    if not tools:
        return provider.model
    if tool_choice is None:
        return provider.model.bind_tools(list(tools))
    if provider.config.kind == "anthropic" and tool_choice == "required":
        tool_choice = "any"  # Anthropic's name for "must call some tool"
    return provider.model.bind_tools(list(tools), tool_choice=tool_choice)


_TOKENIZER: Any = None


def estimate_tokens(text: str) -> int:
    """Tokens in `text` by the tokenizer shipped with the kernel (a WordPiece vocabulary: close to, not equal to,
    a chat model's own count), or about four characters per token if it cannot be loaded."""
    global _TOKENIZER
    if not text:
        return 0
    if _TOKENIZER is None:
        try:
            from tokenizers import Tokenizer

            from interlock.kernel.embeddings import TOKENIZER_PATH

            _TOKENIZER = Tokenizer.from_file(str(TOKENIZER_PATH))
            _TOKENIZER.no_truncation()
            _TOKENIZER.no_padding()
        except Exception:  # noqa: BLE001 - an estimate must never fail a run
            _TOKENIZER = False
    if _TOKENIZER is False:
        return max(1, len(text) // 4)
    return len(_TOKENIZER.encode(text, add_special_tokens=False).ids)


def estimate_usage(messages: Sequence[BaseMessage], reply: AIMessage | None,
                   tools: Sequence[Any] | None = None) -> tuple[int, int]:
    """(input, output) token estimates for one call: every message's text plus a few tokens of chat framing
    each, the bound tool schemas, and the reply's text and tool calls."""
    def text_of(message: BaseMessage) -> str:
        content = message.content
        return content if isinstance(content, str) else json.dumps(content, default=str)

    tin = sum(estimate_tokens(text_of(m)) + 4 for m in messages)
    if tools:
        tin += estimate_tokens(json.dumps(list(tools), default=str))
    tout = 0
    if reply is not None:
        tout = estimate_tokens(text_of(reply))
        if reply.tool_calls:
            tout += estimate_tokens(json.dumps([{"name": c["name"], "args": c.get("args")} for c in reply.tool_calls],
                                               default=str))
    return tin, tout


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
        gateway = cls({t: c for t, c in chains.items() if c}, chain_timeout_s=policy.chain_timeout_s,
                      backoff_base_s=policy.backoff_base_s)
        for line in gateway.configuration_warnings():
            log.warning("%s", line)
        return gateway

    def configuration_warnings(self) -> list[str]:
        """What the configuration silently changes about a provider: a per-call timeout longer than the
        whole-chain budget is capped by it (stated once at start, not discovered as a timeout)."""
        seen: dict[str, Provider] = {p.name: p for chain in self.chains.values() for p in chain}
        return [f"model provider {p.name!r}: timeout_s={p.config.timeout_s:g} is capped by chain_timeout_s="
                f"{self.chain_timeout_s:g} (models.yaml): a call to it ends after {self.chain_timeout_s:g}s"
                for p in seen.values() if p.config.timeout_s > self.chain_timeout_s]

    async def check_endpoints(self, timeout_s: float = 3.0) -> dict[str, str | None]:
        """Probe every OpenAI-compatible provider's base URL (`GET /models`); provider -> problem (None: fine).

        Called at server start so a wrong URL is a clear log line instead of a 404 on every call and a gateway that
        quietly reports no model."""
        results: dict[str, str | None] = {}
        for provider in {p.name: p for chain in self.chains.values() for p in chain}.values():
            base_url = getattr(provider.model, "openai_api_base", None)
            if provider.config.kind != "openai" or not base_url:
                continue
            secret = getattr(provider.model, "openai_api_key", None)
            key = secret.get_secret_value() if secret is not None and hasattr(secret, "get_secret_value") else None
            problem = await probe_openai_endpoint(str(base_url), key, timeout_s)
            results[provider.name] = problem
            if problem:
                log.error("model provider %r is configured but unusable: %s", provider.name, problem)
            else:
                log.info("model provider %r answers at %s", provider.name, base_url)
        return results

    def has(self, tier: Tier | str) -> bool:
        return bool(self.chains.get(tier))

    async def ainvoke(self, tier: Tier | str, messages: Sequence[BaseMessage], *, tenant: str = "",
                      feature: str = "", tools: Sequence[Any] | None = None, tool_choice: str | None = None,
                      deadline: float | None = None, stream: TokenSink | None = None) -> tuple[AIMessage, str]:
        """The first provider's answer as (message, provider name); `ModelsUnavailable` if none.

        `tool_choice` ("auto", "required" or a tool's name) is sent with `tools` when given. With `stream`, the
        provider is called in streaming mode and its raw text fed to the sink as it arrives (the sink guards and
        releases it to clients). Once the sink has released text, a failing provider is not failed over (its
        successor would write a different answer): `ModelsUnavailable` is raised instead."""
        chain = self.chains.get(tier, [])
        failures: list[str] = []
        end = time.monotonic() + self.chain_timeout_s
        if deadline is not None:
            end = min(end, deadline)
        for provider in chain:
            if not provider.breaker.allow():
                failures.append(f"{provider.name}: circuit open")
                continue
            runnable: Runnable[Any, Any] = _bind(provider, tools, tool_choice)
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
                await self._record(provider, tier, tenant, feature, message, started, "ok",
                                   estimate=(messages, tools))
                return message, provider.name
        raise ModelsUnavailable(str(tier), failures)

    async def _record(self, provider: Provider, tier: str, tenant: str, feature: str, message: AIMessage | None,
                      started: float, outcome: str,
                      estimate: tuple[Sequence[BaseMessage], Sequence[Any] | None] | None = None) -> None:
        """`estimate` = (messages, tools) of a call that answered: counted locally when the provider sent no usage."""
        usage = (message.usage_metadata if message is not None else None) or {}
        tin, tout = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
        estimated = False
        if message is not None and estimate is not None and not (tin or tout):
            tin, tout = estimate_usage(estimate[0], message, estimate[1])
            estimated = True
        cost = (tin * provider.config.input_cost_per_mtok + tout * provider.config.output_cost_per_mtok) / 1e6
        record = UsageRecord(at=time.time(), tenant=tenant, feature=feature, tier=str(tier), provider=provider.name,
                             model=provider.config.model, input_tokens=tin, output_tokens=tout, cost_usd=cost,
                             latency_ms=round((time.monotonic() - started) * 1000, 1), outcome=outcome,
                             estimated=estimated)
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
