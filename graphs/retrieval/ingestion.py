"""Ingestion: documents -> chunks -> vectors -> store, incrementally.

A document whose content, title, access groups and chunking settings are unchanged is skipped (its
`document_hash` matches the stored one); a changed document replaces all its old chunks; with
`prune`, documents that were ingested from the given paths but no longer exist there are removed.
A bad file or record is reported by name and the rest of the batch is still ingested.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, Field
from tqdm import tqdm

from .chunking import ChunkingConfig, chunk_spans
from .chunks import Chunk, check_groups, check_tenant, chunk_id_for, content_hash
from .embedding_cache import EmbeddingCache, embed_cached
from .embeddings import Embedder
from .sources import Document, SourceError, discover, read_file
from .store import ChunkStore

CHUNKER_VERSION = "1"
FLUSH_CHUNKS = 256  # chunks embedded and written per batch: bounds memory and shows progress


class IngestReport(BaseModel):
    documents_seen: int = 0
    documents_added: int = 0
    documents_updated: int = 0
    documents_unchanged: int = 0
    documents_removed: int = 0
    chunks_written: int = 0
    chunks_removed: int = 0
    errors: list[str] = Field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors


def document_hash(doc: Document, groups: list[str], chunking: ChunkingConfig) -> str:
    return content_hash(
        CHUNKER_VERSION, chunking.model_dump_json(), doc.source, doc.title, doc.text, "|".join(sorted(groups))
    )


def chunk_document(
    doc: Document, tenant: str, groups: list[str], chunking: ChunkingConfig, doc_hash: str, now: float
) -> list[Chunk]:
    chunks = []
    for position, span in enumerate(chunk_spans(doc.text, doc.format, chunking)):
        text = doc.text[span.start : span.end]
        chunks.append(
            Chunk(
                chunk_id=chunk_id_for(doc.document_id, position),
                tenant=tenant,
                document_id=doc.document_id,
                source=doc.source,
                title=doc.title,
                section=span.section,
                kind=span.kind,
                position=position,
                start=span.start,
                end=span.end,
                text=text,
                groups=groups,
                content_hash=content_hash(text),
                document_hash=doc_hash,
                ingested_at=now,
            )
        )
    return chunks


class Ingestor:
    def __init__(
        self,
        store: ChunkStore,
        embedder: Embedder,
        *,
        cache: EmbeddingCache | None = None,
        chunking: ChunkingConfig | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.cache = cache
        self.chunking = chunking or ChunkingConfig()

    async def ingest_paths(
        self,
        paths: Sequence[Path | str],
        tenant: str,
        acl: Sequence[str],
        *,
        prune: bool = False,
        progress: bool | None = None,
    ) -> IngestReport:
        resolved = [Path(p) for p in paths]
        files, errors = discover(resolved)

        def documents() -> Iterable[Document | SourceError]:
            yield from errors
            for f in files:
                yield from read_file(f)

        prune_roots = [str(p.resolve()) for p in resolved if p.exists()] if prune else None
        return await self.ingest_documents(
            documents(), tenant, acl, prune_roots=prune_roots, progress=progress, total=len(files)
        )

    async def ingest_documents(
        self,
        documents: Iterable[Document | SourceError],
        tenant: str,
        acl: Sequence[str],
        *,
        prune_roots: list[str] | None = None,
        progress: bool | None = None,
        total: int | None = None,
    ) -> IngestReport:
        check_tenant(tenant)
        groups = check_groups(acl)
        if not groups:
            raise ValueError("acl needs at least one access group ('*' makes documents visible tenant-wide)")
        await self.store.check_model(self.embedder.model_id, self.embedder.dim)
        started = time.perf_counter()
        report = IngestReport()
        existing = await self.store.document_hashes(tenant)
        seen: set[str] = set()
        pending: list[Chunk] = []
        replaced: list[str] = []
        now = time.time()
        show = sys.stderr.isatty() if progress is None else progress
        bar = tqdm(total=total, unit="file" if total else "doc", disable=not show, desc=f"ingest {tenant}")

        async def flush() -> None:
            if replaced:
                report.chunks_removed += await self.store.delete_documents(tenant, replaced)
                replaced.clear()
            if pending:
                texts = [c.embedding_text() for c in pending]
                vectors = await asyncio.to_thread(embed_cached, self.embedder, texts, self.cache)
                report.chunks_written += await self.store.upsert(pending, vectors)
                pending.clear()

        last_source = None
        for item in documents:
            if isinstance(item, SourceError):
                report.errors.append(str(item))
                bar.update(1 if total else 0)
                continue
            doc = item
            if total and doc.source.split("#", 1)[0] != last_source:
                last_source = doc.source.split("#", 1)[0]
                bar.update(1)
            elif not total:
                bar.update(1)
            report.documents_seen += 1
            if doc.document_id in seen:
                report.errors.append(f"{doc.source}: duplicate document id {doc.document_id!r} skipped")
                continue
            seen.add(doc.document_id)
            doc_hash = document_hash(doc, groups, self.chunking)
            old = existing.get(doc.document_id)
            if old is not None and old[1] == doc_hash:
                report.documents_unchanged += 1
                continue
            chunks = chunk_document(doc, tenant, groups, self.chunking, doc_hash, now)
            if not chunks:
                report.errors.append(f"{doc.source}: no text to index in document {doc.document_id!r}")
                continue
            if old is None:
                report.documents_added += 1
            else:
                report.documents_updated += 1
                replaced.append(doc.document_id)
            pending.extend(chunks)
            if len(pending) >= FLUSH_CHUNKS:
                await flush()
        await flush()
        bar.close()
        if prune_roots:
            gone = [
                doc_id
                for doc_id, (source, _) in existing.items()
                if doc_id not in seen and any(_under(source, root) for root in prune_roots)
            ]
            if gone:
                report.chunks_removed += await self.store.delete_documents(tenant, gone)
                report.documents_removed = len(gone)
        report.seconds = time.perf_counter() - started
        return report


def _under(source: str, root: str) -> bool:
    path = source.split("#", 1)[0]
    return path == root or path.startswith(root.rstrip("/") + "/")
