"""Start `interlock serve` counting its PostgreSQL round trips: every command psycopg sends and waits for (a
cursor's execute or executemany outside a pipeline, a pipeline's end). SIGUSR1 resets the count, SIGUSR2 writes it to
$INTERLOCK_ROUND_TRIPS_LOG. Instrumentation only; the code under test is unchanged."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from psycopg import AsyncCursor
from psycopg._pipeline_async import AsyncPipeline

_count = {"n": 0}


def _counted(method: Any) -> Any:
    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        # In a pipeline a command is not a round trip of its own; the pipeline's sync is.
        if not getattr(getattr(self, "_conn", None), "_pipeline", None):
            _count["n"] += 1
        return await method(self, *args, **kwargs)

    return counted


async def _pipeline_exit(self: Any, *args: Any) -> Any:
    _count["n"] += 1  # the pipeline's final sync: everything it queued travels and is answered together
    return await _original_exit(self, *args)


AsyncCursor.execute = _counted(AsyncCursor.execute)  # type: ignore[method-assign]
AsyncCursor.executemany = _counted(AsyncCursor.executemany)  # type: ignore[method-assign]
_original_exit = AsyncPipeline.__aexit__
AsyncPipeline.__aexit__ = _pipeline_exit  # type: ignore[method-assign]


def _reset(signum: int, frame: FrameType | None) -> None:
    _count["n"] = 0


def _dump(signum: int, frame: FrameType | None) -> None:
    Path(os.environ["INTERLOCK_ROUND_TRIPS_LOG"]).write_text(str(_count["n"]))


signal.signal(signal.SIGUSR1, _reset)
signal.signal(signal.SIGUSR2, _dump)

from interlock.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
