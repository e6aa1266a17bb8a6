"""The real dependencies the served graphs use: the governed MCP tools and the tenant's retriever.

Kept apart from the graph modules so tests build graphs with explicit dependencies and importing
a graph never opens a database or a network connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def default_retriever() -> Any:
    from interlock.graphs.retrieval import Retriever

    return Retriever.from_settings()


def default_toolbox() -> Any:
    from interlock.graphs.nodes.toolbox import toolbox_from_settings

    return toolbox_from_settings()


class Lazy:
    """Builds a dependency on first use, so importing a graph module stays cheap and offline."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._obj: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._obj is None:
            self._obj = self._factory()
        return getattr(self._obj, name)
