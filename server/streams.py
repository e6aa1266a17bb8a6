"""Per-run event logs for SSE: every event gets a per-run sequence number, so ids are unique and strictly
increasing and a replay after any `Last-Event-ID` is exact (the reference reuses millisecond ids)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from interlock.server.serialization import dumps

from interlock.kernel.settings import get_settings

RESUMABLE_TTL_SECONDS = get_settings().stream_ttl_seconds
HEARTBEAT_SECONDS = get_settings().heartbeat_seconds
EPHEMERAL_TTL_SECONDS = 5.0  # a finished non-resumable stream: long enough for a join racing the run's end
# Memory budget for finished streams kept for replay; past it the oldest go before their TTL.
RETAIN_BYTES = int(get_settings().stream_retain_mb * 1024 * 1024)
RETAIN_MAX = get_settings().stream_retain_max
SWEEP_SECONDS = 2.0  # how often finished streams are checked for expiry while any are held
_EVENT_OVERHEAD = 150  # bytes an Event costs beyond its payload (object, list slot, seq int)


@dataclass
class Event:
    seq: int
    name: str
    data: bytes


@dataclass
class RunStream:
    run_id: str
    resumable: bool = False
    events: list[Event] = field(default_factory=list)
    done: bool = False
    finished_at: float | None = None
    result: Any = None  # the final output `wait`/`join` return
    mirror: Any = None  # StreamMirror when replicas share streams through Redis
    on_start: Any = None  # called once, with the first event (the run is then recorded and executing)
    base: int = 0  # events of earlier attempts of the run (ids continue after them); not held here
    on_close: Callable[[RunStream], None] | None = None  # the registry's eviction bookkeeping
    nbytes: int = 0  # approximate memory held by the events
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def last_seq(self) -> int:
        return self.base + len(self.events)

    def publish(self, name: str, data: object) -> None:
        if self.done:
            return
        event = Event(self.base + len(self.events) + 1, name, dumps(data))
        self.events.append(event)
        if len(self.events) == 1 and self.on_start is not None:  # this attempt's first event (ids may start past 1)
            self.on_start()
        self.nbytes += len(event.data) + len(name) + _EVENT_OVERHEAD
        if self.mirror is not None:
            self.mirror.push(self.run_id, event)
        self._wake()

    def close(self, final: bool = True) -> None:
        """End the stream for its followers here; `final=False` (the run goes back to the queue) leaves the
        shared copy open for the next attempt to continue."""
        if not self.done:
            self.done = True
            self.finished_at = time.monotonic()
            if self.mirror is not None and final:
                self.mirror.push(self.run_id, None)
            self._wake()
            if self.on_close is not None:
                self.on_close(self)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self, after: int, heartbeat: float = HEARTBEAT_SECONDS) -> AsyncIterator[Event | None]:
        """Yield events with seq > after until the run ends; None marks a heartbeat."""
        position = max(0, after - self.base)
        while True:
            while position < len(self.events):
                event = self.events[position]
                position += 1
                yield event
            if self.done:
                return
            waiter = self._changed
            try:
                await asyncio.wait_for(waiter.wait(), heartbeat)
            except TimeoutError:
                yield None


class StreamRegistry:
    """The streams of runs executing (or recently finished) in this process.

    Finished streams are kept for replay (join, join_stream, Last-Event-ID): resumable ones for
    INTERLOCK_STREAM_TTL_SECONDS, others for a few seconds. They are evicted in finishing order, so each
    eviction pass costs only what it removes: on every open, get and close, and on a timer while any finished
    stream is held (a server that only serves `wait`/`stream` never calls get). Past a memory budget
    (INTERLOCK_STREAM_RETAIN_MB, INTERLOCK_STREAM_RETAIN_MAX streams) the oldest finished streams go first,
    so memory is bounded whatever the number of runs.
    """

    def __init__(
        self,
        mirror: Any = None,
        *,
        retain_bytes: int = RETAIN_BYTES,
        retain_max: int = RETAIN_MAX,
    ) -> None:
        self._streams: dict[str, RunStream] = {}
        # Finished streams in finishing order (dicts keep insertion order), one queue per TTL so the oldest of
        # each is always at its front: non-resumable (short TTL) and resumable.
        self._finished: tuple[dict[str, RunStream], dict[str, RunStream]] = ({}, {})
        self._finished_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self.retain_bytes = retain_bytes
        self.retain_max = retain_max
        self.mirror = mirror
        self._opened = asyncio.Event()

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, run_id: str, resumable: bool, base: int = 0) -> RunStream:
        """The run's stream; `base` is the last event id of its earlier attempts, so ids continue."""
        self._evict()
        stream = self._streams.get(run_id)
        if stream is None or stream.done:
            self._forget(run_id)
            stream = RunStream(run_id=run_id, resumable=resumable, mirror=self.mirror, on_start=self._started,
                               base=base, on_close=self._closed)
            self._streams[run_id] = stream
        elif base > stream.last_seq and not stream.events:
            stream.base = base  # opened by the submitting request before this attempt knew its base
        return stream

    def _started(self) -> None:
        # Thread-stream followers wake when any run starts here, then look for their thread's runs.
        self._opened.set()
        self._opened = asyncio.Event()

    async def wait_started(self, seconds: float) -> bool:
        """True when a run started streaming in this process within `seconds`."""
        try:
            await asyncio.wait_for(self._opened.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def get(self, run_id: str) -> RunStream | None:
        self._evict()
        return self._streams.get(run_id)

    def discard(self, run_id: str) -> None:
        self._forget(run_id)
        self._streams.pop(run_id, None)

    def _closed(self, stream: RunStream) -> None:
        if self._streams.get(stream.run_id) is not stream:
            return
        self._finished[stream.resumable][stream.run_id] = stream
        self._finished_bytes += stream.nbytes
        self._evict()
        self._arm_timer()

    def _forget(self, run_id: str) -> None:
        for queue in self._finished:
            stream = queue.pop(run_id, None)
            if stream is not None:
                self._finished_bytes -= stream.nbytes

    def _drop_oldest(self, queue: dict[str, RunStream]) -> None:
        run_id, stream = next(iter(queue.items()))
        del queue[run_id]
        self._finished_bytes -= stream.nbytes
        if self._streams.get(run_id) is stream:
            del self._streams[run_id]

    def _evict(self) -> None:
        """Drop expired streams, then the oldest while over budget; costs only what it removes."""
        now = time.monotonic()
        for queue, ttl in zip(self._finished, (EPHEMERAL_TTL_SECONDS, RESUMABLE_TTL_SECONDS), strict=True):
            while queue:
                oldest = next(iter(queue.values()))
                if oldest.finished_at is not None and now - oldest.finished_at <= ttl:
                    break
                self._drop_oldest(queue)
        short, resumable = self._finished
        while (short or resumable) and (
            self._finished_bytes > self.retain_bytes or len(short) + len(resumable) > self.retain_max
        ):
            self._drop_oldest(short if short else resumable)

    def _arm_timer(self) -> None:
        if self._timer is not None or not any(self._finished):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(SWEEP_SECONDS, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._evict()
        self._arm_timer()


def sse_frame(event: Event | None, with_id: bool) -> bytes:
    if event is None:
        return b": heartbeat\r\n\r\n"
    head = b"event: " + event.name.encode() + b"\r\ndata: " + event.data + b"\r\n"
    if with_id:
        head += b"id: " + str(event.seq).encode() + b"\r\n"
    return head + b"\r\n"
