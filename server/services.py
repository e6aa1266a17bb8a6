"""The server's long-lived parts, created once at startup and reached from handlers via `request.app.state`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from server.assistants import Assistants
from server.auth import Authorizer
from server.engine import Engine
from server.project import Project
from server.runs import Runs
from server.storage import Database
from server.streams import StreamRegistry
from server.threads import Threads


@dataclass
class Services:
    db: Database
    project: Project
    checkpointer: Any
    store: Any
    assistants: Assistants
    threads: Threads
    runs: Runs
    streams: StreamRegistry
    engine: Engine
    authorizer: Authorizer
    crons: Any = None
    db_url: str | None = None
    limiter: Any = None


def services(request: Request) -> Services:
    return request.app.state.services
