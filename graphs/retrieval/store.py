"""The chunk store port: what the embedded store and the Weaviate store both implement.

Tenant and access groups travel inside every `SearchRequest` and are enforced by the store at the
data layer (SQL `WHERE`, Weaviate tenant shard), not by callers filtering results afterwards.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .chunks import Chunk, Hit, check_groups, check_tenant
from .filters import Condition

Mode = Literal["hybrid", "bm25", "vector"]
Fusion = Literal["rrf", "relative"]


class StoreError(RuntimeError):
    """A store operation failed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (e.g. the Weaviate server is down)."""


class StoreMismatch(StoreError):
    """The store holds vectors of another embedding model or dimension."""


class SearchRequest(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    tenant: str
    groups: list[str]
    query: str = ""
    vector: np.ndarray | None = None
    mode: Mode = "hybrid"
    k: int = Field(default=10, ge=1, le=1000)
    # alpha weighs the vector side: 0 = keyword only, 1 = vector only (Weaviate's convention).
    alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    fusion: Fusion = "rrf"
    rrf_k: int = Field(default=60, ge=1)
    candidates: int = Field(default=100, ge=1, le=5000, description="per-retriever list length fused")
    filters: list[Condition] = Field(default_factory=list)

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        return check_tenant(value)

    @field_validator("groups", mode="before")
    @classmethod
    def _groups(cls, value: Sequence[str]) -> list[str]:
        return check_groups(value)

    @model_validator(mode="after")
    def _inputs(self) -> SearchRequest:
        if self.mode in ("hybrid", "vector") and self.vector is None:
            raise ValueError(f"{self.mode} search needs a query vector")
        if self.mode in ("hybrid", "bm25") and not self.query.strip():
            raise ValueError(f"{self.mode} search needs query text")
        return self


class ChunkStore(Protocol):
    """Persistence and search of chunks, partitioned by tenant."""

    async def check_model(self, model_id: str, dim: int) -> None:
        """Raise StoreMismatch when the store holds vectors of another model."""

    async def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> int:
        """Insert or replace chunks by (tenant, chunk_id); returns how many were written."""

    async def delete_documents(self, tenant: str, document_ids: Sequence[str]) -> int:
        """Remove every chunk of these documents; returns how many chunks were removed."""

    async def delete_tenant(self, tenant: str) -> int: ...

    async def count(self, tenant: str, *, document_id: str | None = None) -> int: ...

    async def document_hashes(self, tenant: str) -> dict[str, tuple[str, str]]:
        """document_id -> (source, document_hash) of what the tenant holds, for incremental ingest."""

    async def search(self, request: SearchRequest) -> list[Hit]: ...

    async def close(self) -> None: ...


class ThreadedStore(ABC):
    """The async port of a store whose work is blocking (SQLite and numpy, the Weaviate client): each call runs
    its `*_sync` counterpart in a worker thread, off the event loop. Subclasses implement the `*_sync` methods
    and `close`."""

    async def check_model(self, model_id: str, dim: int) -> None:
        await asyncio.to_thread(self.check_model_sync, model_id, dim)

    async def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> int:
        return await asyncio.to_thread(self.upsert_sync, chunks, vectors)

    async def delete_documents(self, tenant: str, document_ids: Sequence[str]) -> int:
        return await asyncio.to_thread(self.delete_documents_sync, tenant, document_ids)

    async def delete_tenant(self, tenant: str) -> int:
        return await asyncio.to_thread(self.delete_tenant_sync, tenant)

    async def count(self, tenant: str, *, document_id: str | None = None) -> int:
        return await asyncio.to_thread(self.count_sync, tenant, document_id=document_id)

    async def document_hashes(self, tenant: str) -> dict[str, tuple[str, str]]:
        return await asyncio.to_thread(self.document_hashes_sync, tenant)

    async def search(self, request: SearchRequest) -> list[Hit]:
        return await asyncio.to_thread(self.search_sync, request)

    @abstractmethod
    def check_model_sync(self, model_id: str, dim: int) -> None:
        ...

    @abstractmethod
    def upsert_sync(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> int:
        ...

    @abstractmethod
    def delete_documents_sync(self, tenant: str, document_ids: Sequence[str]) -> int:
        ...

    @abstractmethod
    def delete_tenant_sync(self, tenant: str) -> int:
        ...

    @abstractmethod
    def count_sync(self, tenant: str, *, document_id: str | None = None) -> int:
        ...

    @abstractmethod
    def document_hashes_sync(self, tenant: str) -> dict[str, tuple[str, str]]:
        ...

    @abstractmethod
    def search_sync(self, request: SearchRequest) -> list[Hit]:
        ...
