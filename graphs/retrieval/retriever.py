"""`Retriever`: the one object graphs use to search and ingest.

    retriever = Retriever.from_settings()
    hits = await retriever.search("reset my password", tenant="acme", groups=["staff"], k=5)

Tenant and access groups are mandatory keyword arguments: there is no call that searches "everything".
A chunk is visible to a caller when its groups intersect the caller's groups, or include "*".
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from interlock.kernel.settings import home

from .chunking import ChunkingConfig
from .chunks import Hit, check_groups, check_tenant
from .embedding_cache import EmbeddingCache
from .embeddings import Embedder, embed_async, get_embedder
from .filters import Condition
from .ingestion import Ingestor, IngestReport
from .reranking import FusionOrderReranker, Reranker, reranker_from_env
from .sources import Document, SourceError
from .store import ChunkStore, Fusion, SearchRequest

MAX_QUERY_CHARS = 4000


class RetrieverConfig(BaseModel):
    """Search defaults, chosen on the SciFact training split (see README for the numbers)."""

    # Relative-score fusion beat RRF on SciFact train at every chunk size (0.738 vs 0.726 at 128 tokens).
    alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    fusion: Fusion = "relative"
    rrf_k: int = Field(default=60, ge=1)
    # Per-side list length before fusion; relative-score fusion normalises over it (200 > 100 on train).
    candidates: int = Field(default=200, ge=1)
    rerank_depth: int = Field(default=50, ge=1)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)


class Retriever:
    def __init__(
        self,
        store: ChunkStore,
        *,
        embedder: Embedder | None = None,
        reranker: Reranker | None = None,
        config: RetrieverConfig | None = None,
        cache: EmbeddingCache | None = None,
    ) -> None:
        self.store = store
        self._embedder = embedder
        self.reranker = reranker or FusionOrderReranker()
        self.config = config or RetrieverConfig()
        self.cache = cache
        self._model_checked = False

    @classmethod
    def from_settings(cls) -> Retriever:
        """The configured store: Weaviate when WEAVIATE_URL is set, else the embedded store under home()."""
        root = home() / "retrieval"
        cache = EmbeddingCache(root / "embedding-cache.sqlite")
        if os.environ.get("WEAVIATE_URL"):
            from .weaviate_store import WeaviateStore

            store: ChunkStore = WeaviateStore.from_env()
        else:
            from .embedded_store import EmbeddedStore

            store = EmbeddedStore(root / "chunks.sqlite")
        return cls(store, reranker=reranker_from_env(), cache=cache)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    async def _check_model(self) -> None:
        if not self._model_checked:
            embedder = self.embedder
            await self.store.check_model(embedder.model_id, embedder.dim)
            self._model_checked = True

    async def search(
        self,
        query: str,
        *,
        tenant: str,
        groups: Sequence[str],
        k: int = 10,
        mode: Literal["hybrid", "bm25", "vector"] = "hybrid",
        filters: Sequence[Condition] = (),
        alpha: float | None = None,
        rerank: bool = True,
    ) -> list[Hit]:
        """Top-k chunks of `tenant` visible to `groups`, best first."""
        check_tenant(tenant)
        allowed = check_groups(groups)
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query is empty")
        if len(query) > MAX_QUERY_CHARS:
            raise ValueError(f"query longer than {MAX_QUERY_CHARS} characters")
        if mode not in ("hybrid", "bm25", "vector"):
            raise ValueError(f"unknown mode {mode!r}: use hybrid, bm25 or vector")
        if not 1 <= k <= 1000:
            raise ValueError("k must be between 1 and 1000")
        vector = None
        if mode != "bm25":
            await self._check_model()
            vector = (await embed_async(self.embedder, [query]))[0]
        use_reranker = rerank and not isinstance(self.reranker, FusionOrderReranker)
        fetch = max(k, self.config.rerank_depth) if use_reranker else k
        request = SearchRequest(
            tenant=tenant,
            groups=allowed,
            query=query,
            vector=vector,
            mode=mode,
            k=fetch,
            alpha=self.config.alpha if alpha is None else alpha,
            fusion=self.config.fusion,
            rrf_k=self.config.rrf_k,
            candidates=max(self.config.candidates, fetch),
            filters=list(filters),
        )
        hits = await self.store.search(request)
        if use_reranker:
            # Only the head is re-ranked (cost grows with depth); the tail keeps its fused order.
            depth = self.config.rerank_depth
            head = await asyncio.to_thread(self.reranker.rerank, query, hits[:depth], min(k, depth))
            hits = head + hits[depth:]
        return hits[:k]

    def ingestor(self) -> Ingestor:
        return Ingestor(self.store, self.embedder, cache=self.cache, chunking=self.config.chunking)

    async def ingest_paths(
        self,
        paths: Sequence[Path | str],
        tenant: str,
        acl: Sequence[str],
        *,
        prune: bool = False,
        progress: bool | None = None,
    ) -> IngestReport:
        """Ingest Markdown / text / HTML / JSONL files or directories into `tenant`, visible to `acl`."""
        return await self.ingestor().ingest_paths(paths, tenant, acl, prune=prune, progress=progress)

    async def ingest_documents(
        self,
        documents: Iterable[Document | SourceError],
        tenant: str,
        acl: Sequence[str],
        *,
        progress: bool | None = None,
    ) -> IngestReport:
        """Ingest already-parsed documents (e.g. a BEIR corpus or records from a business system)."""
        return await self.ingestor().ingest_documents(documents, tenant, acl, progress=progress)

    async def delete_documents(self, tenant: str, document_ids: Sequence[str]) -> int:
        return await self.store.delete_documents(check_tenant(tenant), list(document_ids))

    async def count(self, tenant: str, *, document_id: str | None = None) -> int:
        return await self.store.count(check_tenant(tenant), document_id=document_id)

    async def close(self) -> None:
        await self.store.close()
        if self.cache is not None:
            self.cache.close()
