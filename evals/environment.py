"""The world an eval run happens in: a throw-away home, the sample systems and the real graphs.

Everything a run writes (sample business databases, approvals, the knowledge index, the PII vault
key) lives under a temporary INTERLOCK_HOME that is removed afterwards, so an eval never touches a
developer's data. The sample MCP servers are started in-process over real HTTP on free loopback
ports, and the sample knowledge base is ingested into the embedded store, both only when a suite
first asks for them. Tracing is switched off and nothing is sent anywhere.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

SYSTEMS = ("orders", "crm", "billing", "tickets")

# Set for the duration of a run; the previous values are restored afterwards.
OFFLINE_ENV = {"LANGSMITH_TRACING": "false", "LANGCHAIN_TRACING_V2": "false", "LANGSMITH_TEST_TRACKING": "false"}
# Pointing at shared infrastructure would make the eval depend on (and write into) it.
ISOLATED_UNSET = ("INTERLOCK_DATABASE_URL", "WEAVIATE_URL", "INTERLOCK_TOOLS_CONFIG")


class EvalSetupError(RuntimeError):
    """A part of the eval environment (MCP servers, knowledge base) could not be started."""


class EvalEnvironment:
    """Async context manager holding the shared, lazily started parts of an eval run."""

    def __init__(self, home: Path | None = None, policy_dir: Path | None = None) -> None:
        self._given_home = home
        self._policy_dir = policy_dir
        self.home: Path = Path()
        self._saved: dict[str, str | None] = {}
        self._retriever: Any = None
        self._mcp_urls: dict[str, str] | None = None
        self._servers: list[tuple[Any, asyncio.Task[Any]]] = []
        self._classifier: Any = None
        self._lock = asyncio.Lock()
        self._owned_home = False

    # -- lifecycle ---------------------------------------------------------------------------------

    def _setenv(self, key: str, value: str | None) -> None:
        if key not in self._saved:
            self._saved[key] = os.environ.get(key)
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

    async def __aenter__(self) -> EvalEnvironment:
        if self._given_home is None:
            self.home = Path(tempfile.mkdtemp(prefix="interlock-eval-"))
            self._owned_home = True
        else:
            self.home = self._given_home
            self.home.mkdir(parents=True, exist_ok=True)
        self._setenv("INTERLOCK_HOME", str(self.home))
        for key in ISOLATED_UNSET:
            self._setenv(key, None)
        for key, value in OFFLINE_ENV.items():
            self._setenv(key, value)
        if self._policy_dir is not None:
            self._setenv("INTERLOCK_POLICY_DIR", str(self._policy_dir))
        from interlock.policies.loader import clear_cache

        clear_cache()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if self._retriever is not None:
                await self._retriever.close()
            for server, _task in self._servers:
                server.should_exit = True
            for _server, task in self._servers:
                try:
                    await asyncio.wait_for(task, 15)
                except (TimeoutError, asyncio.CancelledError):
                    task.cancel()
        finally:
            for key, value in self._saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            from interlock.policies.loader import clear_cache

            clear_cache()
            if self._owned_home:
                shutil.rmtree(self.home, ignore_errors=True)

    # -- shared parts --------------------------------------------------------------------------------

    @property
    def policy_dir(self) -> Path:
        from interlock.policies.loader import default_directory

        return default_directory()

    def policy_hash(self) -> str:
        from interlock.policies.loader import get_policies

        return get_policies().hash

    def classifier(self) -> Any:
        """One intent classifier per run, built from the run's policy directory (not the process cache)."""
        if self._classifier is None:
            from interlock.graphs.nodes.intent import IntentClassifier

            self._classifier = IntentClassifier()
        return self._classifier

    async def retriever(self) -> Any:
        """The embedded store under this run's home, holding the sample knowledge base."""
        async with self._lock:
            if self._retriever is None:
                from interlock.graphs.knowledge import ingest_sample
                from interlock.graphs.retrieval import Retriever

                retriever = Retriever.from_settings()
                reports = await ingest_sample(retriever)
                bad = [name for name, report in reports.items() if not getattr(report, "ok", True)]
                if bad:
                    await retriever.close()
                    raise EvalSetupError(f"could not ingest the sample knowledge base: {', '.join(bad)}")
                self._retriever = retriever
        return self._retriever

    async def mcp_urls(self) -> dict[str, str]:
        """The sample business systems' MCP servers, seeded afresh, each on its own loopback port."""
        async with self._lock:
            if self._mcp_urls is None:
                self.reset_sample_data()
                urls: dict[str, str] = {}
                for system in SYSTEMS:
                    urls[system] = await self._start_mcp(system)
                self._mcp_urls = urls
        return self._mcp_urls

    async def _start_mcp(self, system: str) -> str:
        import uvicorn
        from interlock.mcp_servers.hosting import build_app, load_system

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        app = build_app(load_system(system), audience=url)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        deadline = time.monotonic() + 30
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                sock.close()
                raise EvalSetupError(f"the {system} MCP server did not start")
            await asyncio.sleep(0.02)
        self._servers.append((server, task))
        return url

    @staticmethod
    def reset_sample_data() -> None:
        """Recreate the sample systems' databases, so a case that cancels an order cannot affect the next."""
        from interlock.mcp_servers import sample_data

        sample_data.seed(reset=True)

    async def toolbox(self) -> Any:
        """A fresh governed toolbox (its `calls` list is this case's record of every tool call)."""
        from interlock.graphs.nodes.toolbox import GovernedToolbox
        from interlock.tools.client import GovernedTools, ServerConfig, ToolsConfig

        urls = await self.mcp_urls()
        return GovernedToolbox(GovernedTools(ToolsConfig(servers={n: ServerConfig(url=u) for n, u in urls.items()})))

    async def router(self, *, toolbox: Any = None, gateway: Any = None, limits: Any = None,
                     knowledge: bool = True) -> Any:
        """The served `router` graph, zero-key unless a gateway is given, compiled with an in-memory saver."""
        from interlock.graphs.models import ModelGateway
        from interlock.graphs.router import RouterDeps, build_router

        graph = build_router(RouterDeps(gateway=gateway or ModelGateway(), toolbox=toolbox,
                                        retriever=await self.retriever() if knowledge else None,
                                        classifier=self.classifier(), limits=limits))
        graph.checkpointer = InMemorySaver()
        return graph


def thread_config(tenant: str = "acme", sub: str = "CUS-101", groups: list[str] | None = None) -> dict[str, Any]:
    """A run config as the server would build it for an authenticated customer of `tenant`."""
    import uuid

    return {"configurable": {"thread_id": uuid.uuid4().hex, "tenant": tenant,
                             "principal": {"sub": sub, "tenant": tenant, "groups": groups or ["customers"]}}}
