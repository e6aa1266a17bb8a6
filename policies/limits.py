"""Per-tenant rate limits and budgets: requests/min, tokens/min, spend/day.

`admit` is called before a model call with the tokens it may use; an over-budget tenant gets a
429-style decision with a Retry-After and the caller must not call the model. `record` adds the
actual usage afterwards. Windows are fixed (the current UTC minute, the current UTC day).
In-process by default; Redis (atomic Lua check-and-count) when INTERLOCK_REDIS_URL is set.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Literal, Protocol

from interlock.policies.schema import LimitsPolicy, TenantLimits
from pydantic import BaseModel

from interlock.kernel.settings import get_settings

LimitReason = Literal["requests_per_minute", "tokens_per_minute", "spend_per_day"]
_MICRO = 1_000_000  # spend is counted in micro-dollars so Redis can use integer INCRBY


class LimitDecision(BaseModel):
    allowed: bool
    status: int = 200  # 429 when refused
    reason: LimitReason | None = None
    retry_after_s: int = 0  # whole seconds, for the Retry-After header
    tenant: str

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)} if not self.allowed else {}


class BudgetExceeded(RuntimeError):
    """Raised by `enforce` so a graph stops before the model call; map it to HTTP 429 + Retry-After."""

    status = 429

    def __init__(self, decision: LimitDecision) -> None:
        self.decision = decision
        super().__init__(f"tenant {decision.tenant} over {decision.reason}; retry after {decision.retry_after_s}s")


class RateLimiter(Protocol):
    async def admit(self, tenant: str, estimated_tokens: int = 0) -> LimitDecision: ...

    async def record(self, tenant: str, tokens: int = 0, cost_usd: float = 0.0) -> None: ...


def _windows(now: float) -> tuple[int, int, int, int]:
    minute = int(now // 60)
    day = int(now // 86_400)
    return minute, day, max(1, math.ceil((minute + 1) * 60 - now)), max(1, math.ceil((day + 1) * 86_400 - now))


def _check(
    tenant: str, limits: TenantLimits, requests: int, tokens: int, spend_micro: int, estimated_tokens: int,
    retry_minute: int, retry_day: int,
) -> LimitDecision:
    if limits.spend_per_day_usd is not None and spend_micro >= round(limits.spend_per_day_usd * _MICRO):
        return LimitDecision(allowed=False, status=429, reason="spend_per_day", retry_after_s=retry_day, tenant=tenant)
    if limits.requests_per_minute is not None and requests + 1 > limits.requests_per_minute:
        return LimitDecision(allowed=False, status=429, reason="requests_per_minute", retry_after_s=retry_minute,
                             tenant=tenant)
    if limits.tokens_per_minute is not None and tokens + max(estimated_tokens, 0) > limits.tokens_per_minute:
        return LimitDecision(allowed=False, status=429, reason="tokens_per_minute", retry_after_s=retry_minute,
                             tenant=tenant)
    return LimitDecision(allowed=True, tenant=tenant)


class InProcessLimiter:
    """Counters in this process; fine for one server process, use Redis for several."""

    def __init__(self, policy: LimitsPolicy, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.clock = clock
        self._lock = asyncio.Lock()
        self._minute: dict[str, tuple[int, int, int]] = {}  # tenant -> (minute, requests, tokens)
        self._day: dict[str, tuple[int, int]] = {}  # tenant -> (day, spend_micro)

    def _current(self, tenant: str, minute: int, day: int) -> tuple[int, int, int]:
        m, requests, tokens = self._minute.get(tenant, (minute, 0, 0))
        if m != minute:
            requests, tokens = 0, 0
        d, spend = self._day.get(tenant, (day, 0))
        if d != day:
            spend = 0
        return requests, tokens, spend

    async def admit(self, tenant: str, estimated_tokens: int = 0) -> LimitDecision:
        async with self._lock:
            minute, day, retry_minute, retry_day = _windows(self.clock())
            requests, tokens, spend = self._current(tenant, minute, day)
            decision = _check(tenant, self.policy.for_tenant(tenant), requests, tokens, spend,
                              estimated_tokens, retry_minute, retry_day)
            if decision.allowed:
                self._minute[tenant] = (minute, requests + 1, tokens)
                self._day[tenant] = (day, spend)
            return decision

    async def record(self, tenant: str, tokens: int = 0, cost_usd: float = 0.0) -> None:
        if tokens < 0 or cost_usd < 0:
            raise ValueError("usage cannot be negative")
        async with self._lock:
            minute, day, _, _ = _windows(self.clock())
            requests, used, spend = self._current(tenant, minute, day)
            self._minute[tenant] = (minute, requests, used + tokens)
            self._day[tenant] = (day, spend + round(cost_usd * _MICRO))


# KEYS: requests, tokens, spend. ARGV: rpm, tpm, spend_limit_micro (-1 = none), estimated tokens,
# minute ttl, day ttl. Returns {0|1, reason}. Check and count in one round trip, atomically.
_ADMIT_LUA = """
local req = tonumber(redis.call('GET', KEYS[1]) or '0')
local tok = tonumber(redis.call('GET', KEYS[2]) or '0')
local spend = tonumber(redis.call('GET', KEYS[3]) or '0')
local rpm, tpm, lim, est = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if lim >= 0 and spend >= lim then return {0, 'spend_per_day'} end
if rpm >= 0 and req + 1 > rpm then return {0, 'requests_per_minute'} end
if tpm >= 0 and tok + est > tpm then return {0, 'tokens_per_minute'} end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {1, ''}
"""


class RedisLimiter:
    """Shared counters in Redis, so every server process enforces the same budget."""

    def __init__(self, policy: LimitsPolicy, url: str, prefix: str = "interlock:limits",
                 clock: Callable[[], float] = time.time) -> None:
        import redis.asyncio as aioredis

        self.policy = policy
        self.clock = clock
        self.prefix = prefix
        self.client = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._admit = self.client.register_script(_ADMIT_LUA)

    def _keys(self, tenant: str, minute: int, day: int) -> list[str]:
        base = f"{self.prefix}:{tenant}"
        return [f"{base}:req:{minute}", f"{base}:tok:{minute}", f"{base}:spend:{day}"]

    async def admit(self, tenant: str, estimated_tokens: int = 0) -> LimitDecision:
        minute, day, retry_minute, retry_day = _windows(self.clock())
        limits = self.policy.for_tenant(tenant)

        def arg(value: float | None, scale: int = 1) -> int:
            return -1 if value is None else round(value * scale)

        allowed, reason = await self._admit(
            keys=self._keys(tenant, minute, day),
            args=[arg(limits.requests_per_minute), arg(limits.tokens_per_minute),
                  arg(limits.spend_per_day_usd, _MICRO), max(estimated_tokens, 0), 120, 2 * 86_400],
        )
        if int(allowed):
            return LimitDecision(allowed=True, tenant=tenant)
        reason = reason.decode() if isinstance(reason, bytes) else str(reason)
        retry = retry_day if reason == "spend_per_day" else retry_minute
        return LimitDecision(allowed=False, status=429, reason=reason, retry_after_s=retry, tenant=tenant)

    async def record(self, tenant: str, tokens: int = 0, cost_usd: float = 0.0) -> None:
        if tokens < 0 or cost_usd < 0:
            raise ValueError("usage cannot be negative")
        minute, day, _, _ = _windows(self.clock())
        _, tok_key, spend_key = self._keys(tenant, minute, day)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.incrby(tok_key, tokens).expire(tok_key, 120)
            pipe.incrby(spend_key, round(cost_usd * _MICRO)).expire(spend_key, 2 * 86_400)
            await pipe.execute()

    async def aclose(self) -> None:
        await self.client.aclose()


async def enforce(limiter: RateLimiter, tenant: str, estimated_tokens: int = 0) -> LimitDecision:
    """Admit or raise `BudgetExceeded`; call it immediately before every model call."""
    decision = await limiter.admit(tenant, estimated_tokens)
    if not decision.allowed:
        raise BudgetExceeded(decision)
    return decision


def build_limiter(policy: LimitsPolicy, redis_url: str | None = None) -> InProcessLimiter | RedisLimiter:
    """Redis when a URL is given (default: INTERLOCK_REDIS_URL), else in-process."""
    if redis_url is None:
        redis_url = get_settings().redis_url
    return RedisLimiter(policy, redis_url) if redis_url else InProcessLimiter(policy)
