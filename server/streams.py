"""Per-run event logs for SSE: every event gets a per-run sequence number, so ids are unique and strictly
increasing and a replay after any `Last-Event-ID` is exact (the reference reuses millisecond ids)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from interlock.server.serialization import dumps

from interlock.kernel.settings import get_settings

RESUMABLE_TTL_SECONDS = get_settings().stream_ttl_seconds
HEARTBEAT_SECONDS = get_settings().heartbeat_seconds


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
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def last_seq(self) -> int:
        return self.base + len(self.events)

    def publish(self, name: str, data: object) -> None:
        if self.done:
            return
        event = Event(self.base + len(self.events) + 1, name, dumps(data))
        self.events.append(event)
        if event.seq == 1 and self.on_start is not None:
            self.on_start()
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
    """The streams of runs executing (or recently finished) in this process."""

    def __init__(self, mirror: Any = None) -> None:
        self._streams: dict[str, RunStream] = {}
        self.mirror = mirror
        self._opened = asyncio.Event()

    def open(self, run_id: str, resumable: bool, base: int = 0) -> RunStream:
        """The run's stream; `base` is the last event id of its earlier attempts, so ids continue."""
        stream = self._streams.get(run_id)
        if stream is None or stream.done:
            stream = RunStream(run_id=run_id, resumable=resumable, mirror=self.mirror, on_start=self._started,
                               base=base)
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
        self._streams.pop(run_id, None)

    def _evict(self) -> None:
        now = time.monotonic()
        stale = [
            rid
            for rid, s in self._streams.items()
            if s.done and s.finished_at is not None and now - s.finished_at > (RESUMABLE_TTL_SECONDS if s.resumable else 5)
        ]
        for rid in stale:
            del self._streams[rid]


def sse_frame(event: Event | None, with_id: bool) -> bytes:
    if event is None:
        return b": heartbeat\r\n\r\n"
    head = b"event: " + event.name.encode() + b"\r\ndata: " + event.data + b"\r\n"
    if with_id:
        head += b"id: " + str(event.seq).encode() + b"\r\n"
    return head + b"\r\n"
