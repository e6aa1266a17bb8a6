"""The server's long-lived parts, created once at startup and reached from handlers via `request.app.state`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from interlock.server.assistants import Assistants
from interlock.server.auth import Authorizer
from interlock.server.engine import Engine
from interlock.server.project import Project
from interlock.server.runs import Runs
from interlock.server.storage import Database
from interlock.server.streams import StreamRegistry
from interlock.server.threads import Threads
from starlette.requests import Request


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
    tenants: Any = None  # kernel.tenants.TenantRegistry: the tenants local development mode accepts


def services(request: Request) -> Services:
    return request.app.state.services
