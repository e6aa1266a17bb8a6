"""Cross-replica streams: with INTERLOCK_REDIS_URL set, every run's SSE events are copied to Redis (a list for
replay plus a pub/sub wake-up), so a client that reconnects to another replica behind a load balancer replays and
follows the run exactly, with the same per-run event ids. Redis holds only these short-lived copies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from interlock.server.streams import Event

from interlock.kernel.database import DependencyUnavailable

log = logging.getLogger("interlock.stream_mirror")
_DONE = b"0\n__done__\n"


def _pack(event: Event) -> bytes:
    return f"{event.seq}\n{event.name}\n".encode() + event.data


def _unpack(raw: bytes) -> Event | None:
    seq, name, data = raw.split(b"\n", 2)
    if name == b"__done__":
        return None
    return Event(int(seq), name.decode(), data)


class StreamMirror:
    def __init__(self, url: str, ttl_seconds: float, prefix: str = "interlock:stream") -> None:
        import redis.asyncio as aioredis

        # Short socket timeouts: an unreachable Redis must fail a request (503) or a mirror write, never hang it.
        self.redis: Any = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self.ttl = int(max(ttl_seconds, 60))
        self.prefix = prefix
        self._queues: dict[str, asyncio.Queue[Event | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _key(self, run_id: str) -> str:
        return f"{self.prefix}:{run_id}"

    def push(self, run_id: str, event: Event | None) -> None:
        """Called synchronously as events are published; a per-run task writes them in order."""
        queue = self._queues.get(run_id)
        if queue is None:
            queue = self._queues[run_id] = asyncio.Queue()
            task = asyncio.get_running_loop().create_task(self._drain(run_id, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        queue.put_nowait(event)

    async def _drain(self, run_id: str, queue: asyncio.Queue[Event | None]) -> None:
        key = self._key(run_id)
        loop = asyncio.get_running_loop()
        expires_set = float("-inf")
        try:
            while True:
                event = await queue.get()
                batch = [event]
                while not queue.empty() and batch[-1] is not None:
                    batch.append(queue.get_nowait())
                pipe = self.redis.pipeline(transaction=False)
                pipe.rpush(key, *[_pack(e) if e is not None else _DONE for e in batch])
                # The copy's TTL is (re)set with its first events, at its end, and every quarter TTL in between:
                # not with every batch (a command each, on the run hot path).
                if batch[-1] is None or loop.time() - expires_set > self.ttl / 4:
                    pipe.expire(key, self.ttl)
                    expires_set = loop.time()
                pipe.publish(key, b"1")
                await pipe.execute()
                if batch[-1] is None:
                    return
        except Exception:  # noqa: BLE001 - a mirror failure degrades cross-replica joins, never the run
            log.exception("mirroring the stream of run %s to Redis failed", run_id)
        finally:
            self._queues.pop(run_id, None)

    async def last_seq(self, run_id: str) -> int:
        """The id of the last event mirrored for the run (0 when none): a new attempt continues after it."""
        key = self._key(run_id)
        length = int(await self.redis.llen(key))
        if length and await self.redis.lindex(key, -1) == _DONE:
            # An end marker left by an attempt that did not finish the run: drop it so followers keep following.
            await self.redis.rpop(key)
            length -= 1
        return length

    async def exists(self, run_id: str) -> bool:
        return bool(await self.redis.exists(self._key(run_id)))

    async def has_copy(self, run_id: str, *, active: bool) -> bool:
        """Whether to replay the run from Redis. An active run on another replica needs Redis (unreachable: 503
        naming it); a finished run whose copy cannot be read is answered from the database instead."""
        try:
            if active:
                await self.redis.ping()
                return True
            return await self.exists(run_id)
        except Exception as exc:
            if active:
                raise DependencyUnavailable("redis", "cannot follow a run executing on another replica") from exc
            log.warning("Redis unreachable while joining finished run %s: %s", run_id, type(exc).__name__)
            return False

    async def ping(self) -> None:
        await self.redis.ping()

    async def follow(self, run_id: str, after: int, heartbeat: float) -> AsyncIterator[Event | None]:
        """Events with seq > after, then new ones as they arrive, until the run's end marker."""
        key = self._key(run_id)
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(key)
        position = after
        try:
            while True:
                for raw in await self.redis.lrange(key, position, -1):
                    position += 1
                    event = _unpack(raw)
                    if event is None:
                        return
                    yield event
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=heartbeat)
                if message is None:
                    yield None
        finally:
            with contextlib.suppress(Exception):
                await pubsub.unsubscribe(key)
                await pubsub.aclose()

    async def close(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 2)
        await self.redis.aclose()
