"""The Weaviate store (weaviate-client v4): one collection, native multi-tenancy (one Weaviate tenant
per Interlock tenant), our own vectors, hybrid search with an explicit alpha.

Isolation: every data and query call goes through `collection.with_tenant(name)`, so it is served by
that tenant's shard only. Access groups are a `contains_any` filter on the `groups` property.

Not exercised in CI: no Weaviate server can run there. The translation functions below (filters,
query arguments, objects, results) are unit-tested without a server; the shared contract suite runs
against a live server when WEAVIATE_URL is set.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlparse

import numpy as np

from .chunks import PUBLIC_GROUP, Chunk, Hit, check_tenant
from .filters import Condition
from .store import SearchRequest, StoreError, StoreMismatch, StoreUnavailable, ThreadedStore

COLLECTION = "InterlockChunk"
VECTOR_NAME = "content"
T = TypeVar("T")


def _wv() -> Any:
    try:
        import weaviate  # noqa: F401
        import weaviate.classes as wvc
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise StoreError("the Weaviate store needs the weaviate-client package (>=4.16)") from exc
    return wvc


def collection_config(name: str, model_id: str = "", dim: int = 0) -> dict[str, Any]:
    """kwargs for `client.collections.create`."""
    wvc = _wv()
    Property, DataType, Tokenization = wvc.config.Property, wvc.config.DataType, wvc.config.Tokenization
    Configure = wvc.config.Configure

    def text(n: str, tok: Any, searchable: bool = False) -> Any:
        return Property(name=n, data_type=DataType.TEXT, tokenization=tok, index_searchable=searchable)

    return {
        "name": name,
        "description": json.dumps({"interlock": "chunks", "model_id": model_id, "dim": dim}),
        "properties": [
            text("chunk_id", Tokenization.FIELD),
            text("document_id", Tokenization.FIELD),
            text("source", Tokenization.FIELD),
            text("title", Tokenization.WORD, searchable=True),
            text("section", Tokenization.FIELD, searchable=False),
            Property(
                name="section_parts",
                data_type=DataType.TEXT_ARRAY,
                index_filterable=False,
                index_searchable=True,
                tokenization=Tokenization.WORD,
            ),
            text("kind", Tokenization.FIELD),
            Property(name="position", data_type=DataType.INT),
            Property(name="start", data_type=DataType.INT),
            Property(name="end", data_type=DataType.INT),
            text("text", Tokenization.WORD, searchable=True),
            Property(name="groups", data_type=DataType.TEXT_ARRAY, tokenization=Tokenization.FIELD),
            text("content_hash", Tokenization.FIELD),
            text("document_hash", Tokenization.FIELD),
            Property(name="ingested_at", data_type=DataType.NUMBER),
        ],
        "vector_config": [
            Configure.Vectors.self_provided(
                name=VECTOR_NAME,
                vector_index_config=Configure.VectorIndex.hnsw(
                    distance_metric=wvc.config.VectorDistances.COSINE
                ),
            )
        ],
        "inverted_index_config": Configure.inverted_index(bm25_k1=1.2, bm25_b=0.75),
        "multi_tenancy_config": Configure.multi_tenancy(
            enabled=True, auto_tenant_creation=False, auto_tenant_activation=True
        ),
    }


def object_uuid(chunk: Chunk) -> str:
    from weaviate.util import generate_uuid5

    # Deterministic per (tenant, chunk): a re-upsert overwrites the same object.
    return str(generate_uuid5(f"{chunk.tenant}/{chunk.chunk_id}"))


def to_properties(chunk: Chunk) -> dict[str, Any]:
    return {
        "chunk_id": chunk.chunk_id,
        "document_id": chunk.document_id,
        "source": chunk.source,
        "title": chunk.title,
        "section": chunk.section_path,
        "section_parts": chunk.section,
        "kind": chunk.kind,
        "position": chunk.position,
        "start": chunk.start,
        "end": chunk.end,
        "text": chunk.text,
        "groups": chunk.groups,
        "content_hash": chunk.content_hash,
        "document_hash": chunk.document_hash,
        "ingested_at": chunk.ingested_at,
    }


def condition_filter(cond: Condition) -> Any:
    Filter = _wv().query.Filter
    prop = Filter.by_property(cond.field)
    v = cond.value
    match cond.op:
        case "eq":
            return prop.equal(v)
        case "ne":
            return prop.not_equal(v)
        case "in":
            return Filter.any_of([Filter.by_property(cond.field).equal(x) for x in v])  # type: ignore[union-attr]
        case "not_in":
            return Filter.all_of([Filter.by_property(cond.field).not_equal(x) for x in v])  # type: ignore[union-attr]
        case "lt":
            return prop.less_than(v)
        case "lte":
            return prop.less_or_equal(v)
        case "gt":
            return prop.greater_than(v)
        case "gte":
            return prop.greater_or_equal(v)
        case "prefix":
            if any(ch in str(v) for ch in "*?"):
                raise ValueError("prefix filters on Weaviate cannot contain '*' or '?'")
            return prop.like(f"{v}*")
    raise ValueError(f"unsupported filter op {cond.op}")


def request_filter(groups: Sequence[str], conditions: Sequence[Condition]) -> Any:
    """Access groups (always) AND every condition."""
    Filter = _wv().query.Filter
    allowed = list(dict.fromkeys([*groups, PUBLIC_GROUP]))
    parts = [Filter.by_property("groups").contains_any(allowed), *(condition_filter(c) for c in conditions)]
    return parts[0] if len(parts) == 1 else Filter.all_of(parts)


def query_call(request: SearchRequest, *, title_weight: float = 1.0) -> tuple[str, dict[str, Any]]:
    """(query method name, kwargs) for `collection.with_tenant(t).query`."""
    wvc = _wv()
    MetadataQuery, HybridFusion = wvc.query.MetadataQuery, wvc.query.HybridFusion
    filters = request_filter(request.groups, request.filters)
    properties = ["text", f"title^{title_weight:g}", "section_parts^0.5"]
    vector = None if request.vector is None else np.asarray(request.vector, dtype=np.float32).tolist()
    if request.mode == "bm25":
        return "bm25", {
            "query": request.query,
            "query_properties": properties,
            "filters": filters,
            "limit": request.k,
            "return_metadata": MetadataQuery(score=True),
        }
    if request.mode == "vector":
        return "near_vector", {
            "near_vector": vector,
            "target_vector": VECTOR_NAME,
            "filters": filters,
            "limit": request.k,
            "return_metadata": MetadataQuery(distance=True),
        }
    return "hybrid", {
        "query": request.query,
        "vector": vector,
        "target_vector": VECTOR_NAME,
        "alpha": request.alpha,  # always explicit: the server default differs between versions
        "fusion_type": HybridFusion.RANKED if request.fusion == "rrf" else HybridFusion.RELATIVE_SCORE,
        "query_properties": properties,
        "filters": filters,
        "limit": request.k,
        "return_metadata": MetadataQuery(score=True),
    }


def to_hit(obj: Any, tenant: str, mode: str) -> Hit:
    p = obj.properties
    meta = obj.metadata
    if mode == "vector":
        # Cosine distance -> cosine similarity, so scores mean the same as in the embedded store.
        score = 1.0 - float(meta.distance) if meta.distance is not None else 0.0
    else:
        score = float(meta.score) if meta.score is not None else 0.0
    return Hit(
        chunk_id=p["chunk_id"],
        document_id=p["document_id"],
        text=p["text"],
        score=score,
        source=p["source"],
        title=p.get("title") or "",
        section=list(p.get("section_parts") or []),
        kind=p.get("kind") or "text",
        position=int(p["position"]),
        start=int(p["start"]),
        end=int(p["end"]),
        tenant=tenant,
        groups=list(p.get("groups") or []),
        scores={mode: score},
    )


def _mapped(fn: Callable[[], T]) -> T:
    """Run a client call, turning client errors into store errors."""
    from weaviate import exceptions as wex

    unavailable = tuple(
        getattr(wex, n)
        for n in (
            "WeaviateConnectionError",
            "WeaviateStartUpError",
            "WeaviateGRPCUnavailableError",
            "WeaviateTimeoutError",
            "WeaviateClosedClientError",
        )
        if hasattr(wex, n)
    )
    try:
        return fn()
    except unavailable as exc:
        raise StoreUnavailable(f"Weaviate unreachable: {exc}") from exc
    except wex.WeaviateBaseError as exc:
        raise StoreError(f"Weaviate error: {exc}") from exc


class WeaviateStore(ThreadedStore):
    def __init__(
        self, client: Any, *, collection: str = COLLECTION, batch_size: int = 200, title_weight: float = 1.0
    ) -> None:
        self._client = client
        self._name = collection
        self._batch_size = batch_size
        self._title_weight = title_weight
        self._tenants: set[str] = set()

    @classmethod
    def from_env(cls, collection: str | None = None) -> WeaviateStore:
        """WEAVIATE_URL (http[s]://host:port), optional WEAVIATE_GRPC_HOST / _GRPC_PORT / _API_KEY."""
        _wv()  # a clear error when weaviate-client is not installed
        import weaviate
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        url = os.environ.get("WEAVIATE_URL", "")
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise StoreError(f"WEAVIATE_URL must look like http://host:8080, got {url!r}")
        secure = parsed.scheme == "https"
        key = os.environ.get("WEAVIATE_API_KEY")

        def connect() -> Any:
            return weaviate.connect_to_custom(
                http_host=parsed.hostname,
                http_port=parsed.port or (443 if secure else 80),
                http_secure=secure,
                grpc_host=os.environ.get("WEAVIATE_GRPC_HOST") or parsed.hostname,
                grpc_port=int(os.environ.get("WEAVIATE_GRPC_PORT") or 50051),
                grpc_secure=secure,
                auth_credentials=Auth.api_key(key) if key else None,
                additional_config=AdditionalConfig(timeout=Timeout(init=10, query=30, insert=120)),
            )

        try:
            client = _mapped(connect)
        except ValueError as exc:  # the client validates its connection parameters with pydantic
            raise StoreError(f"invalid Weaviate settings: {exc}") from exc
        return cls(client, collection=collection or os.environ.get("WEAVIATE_COLLECTION") or COLLECTION)

    # -- helpers --

    def _collection(self) -> Any:
        return self._client.collections.get(self._name)

    def _ensure_collection(self, model_id: str = "", dim: int = 0) -> None:
        if not _mapped(lambda: self._client.collections.exists(self._name)):
            _mapped(lambda: self._client.collections.create(**collection_config(self._name, model_id, dim)))

    def _ensure_tenant(self, tenant: str) -> bool:
        """Create the tenant if missing (writes) - returns whether it exists."""
        if tenant in self._tenants:
            return True
        from weaviate.classes.tenants import Tenant

        col = self._collection()
        if not _mapped(lambda: col.tenants.exists(tenant)):
            _mapped(lambda: col.tenants.create([Tenant(name=tenant)]))
        self._tenants.add(tenant)
        return True

    def _tenant_exists(self, tenant: str) -> bool:
        if tenant in self._tenants:
            return True
        if not _mapped(lambda: self._client.collections.exists(self._name)):
            return False
        exists = bool(_mapped(lambda: self._collection().tenants.exists(tenant)))
        if exists:
            self._tenants.add(tenant)
        return exists

    # -- sync implementation --

    def check_model_sync(self, model_id: str, dim: int) -> None:
        self._ensure_collection(model_id, dim)
        config = _mapped(lambda: self._collection().config.get())
        try:
            meta = json.loads(config.description or "{}")
        except ValueError:
            meta = {}
        if meta.get("model_id") and (meta["model_id"] != model_id or int(meta.get("dim", dim)) != dim):
            raise StoreMismatch(
                f"Weaviate collection {self._name} holds vectors of {meta['model_id']} (dim {meta.get('dim')}), "
                f"not {model_id} (dim {dim})"
            )

    def upsert_sync(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> int:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(chunks):
            raise ValueError(f"need one vector per chunk: {len(chunks)} chunks, vectors {vectors.shape}")
        self._ensure_collection()
        by_tenant: dict[str, list[int]] = {}
        for i, c in enumerate(chunks):
            by_tenant.setdefault(c.tenant, []).append(i)
        written = 0
        for tenant, idx in by_tenant.items():
            self._ensure_tenant(tenant)
            col = self._collection().with_tenant(tenant)

            def run(col: Any = col, idx: list[int] = idx) -> list[Any]:
                with col.batch.fixed_size(batch_size=self._batch_size, concurrent_requests=2) as batch:
                    for i in idx:
                        batch.add_object(
                            properties=to_properties(chunks[i]),
                            uuid=object_uuid(chunks[i]),
                            vector={VECTOR_NAME: vectors[i].tolist()},
                        )
                return list(col.batch.failed_objects)

            failed = _mapped(run)
            if failed:
                # Batch errors do not raise in the client; surface them so ingestion reports them.
                first = "; ".join(str(getattr(f, "message", f)) for f in failed[:3])
                raise StoreError(
                    f"Weaviate rejected {len(failed)} of {len(idx)} chunks in tenant {tenant}: {first}"
                )
            written += len(idx)
        return written

    def delete_documents_sync(self, tenant: str, document_ids: Sequence[str]) -> int:
        check_tenant(tenant)
        ids = list(document_ids)
        if not ids or not self._tenant_exists(tenant):
            return 0
        Filter = _wv().query.Filter
        col = self._collection().with_tenant(tenant)
        removed = 0
        for start in range(0, len(ids), 100):
            part = ids[start : start + 100]
            res = _mapped(
                lambda part=part: col.data.delete_many(
                    where=Filter.by_property("document_id").contains_any(part)
                )
            )
            removed += int(res.successful)
        return removed

    def delete_tenant_sync(self, tenant: str) -> int:
        check_tenant(tenant)
        if not self._tenant_exists(tenant):
            return 0
        n = self.count_sync(tenant)
        _mapped(lambda: self._collection().tenants.remove([tenant]))
        self._tenants.discard(tenant)
        return n

    def count_sync(self, tenant: str, *, document_id: str | None = None) -> int:
        check_tenant(tenant)
        if not self._tenant_exists(tenant):
            return 0
        Filter = _wv().query.Filter
        filters = Filter.by_property("document_id").equal(document_id) if document_id else None
        col = self._collection().with_tenant(tenant)
        res = _mapped(lambda: col.aggregate.over_all(total_count=True, filters=filters))
        return int(res.total_count or 0)

    def document_hashes_sync(self, tenant: str) -> dict[str, tuple[str, str]]:
        check_tenant(tenant)
        if not self._tenant_exists(tenant):
            return {}
        col = self._collection().with_tenant(tenant)

        def scan() -> dict[str, tuple[str, str]]:
            out: dict[str, tuple[str, str]] = {}
            for obj in col.iterator(return_properties=["document_id", "source", "document_hash"]):
                p = obj.properties
                out.setdefault(p["document_id"], (p["source"], p["document_hash"]))
            return out

        return _mapped(scan)

    def search_sync(self, request: SearchRequest) -> list[Hit]:
        check_tenant(request.tenant)
        if not self._tenant_exists(request.tenant):
            return []
        method, kwargs = query_call(request, title_weight=self._title_weight)
        query = self._collection().with_tenant(request.tenant).query
        result = _mapped(lambda: getattr(query, method)(**kwargs))
        return [to_hit(o, request.tenant, request.mode) for o in result.objects]

    # -- async port (the rest comes from ThreadedStore) --

    async def drop_collection(self) -> None:
        """Remove the whole collection (tests use a unique collection per session)."""
        await asyncio.to_thread(lambda: _mapped(lambda: self._client.collections.delete(self._name)))

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)
