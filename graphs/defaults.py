"""The tenant's retriever for the served graphs, built on first use (the toolbox builds its own client lazily).

Kept apart from the graph modules so tests build graphs with explicit dependencies and importing
a graph never opens a database or a network connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def default_retriever() -> Any:
    from interlock.graphs.retrieval import Retriever

    return Retriever.from_settings()


class Lazy:
    """Builds a dependency on first use, so importing a graph module stays cheap and offline."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._obj: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._obj is None:
            self._obj = self._factory()
        return getattr(self._obj, name)
