"""Server-free tests of the Weaviate adapter: the translation layer, batch failures and error mapping.

These test our code against the real weaviate-client classes (Filter, MetadataQuery, HybridFusion),
with a small recording stand-in only where a server would answer. They prove nothing about a live
Weaviate server: that is the contract suite's job when WEAVIATE_URL is set.
"""

from __future__ import annotations

import socket
import uuid
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("weaviate", reason="weaviate-client not installed: Weaviate adapter unit tests not run")

from interlock.graphs.retrieval.chunks import Chunk, chunk_id_for, content_hash  # noqa: E402
from interlock.graphs.retrieval.filters import Condition  # noqa: E402
from interlock.graphs.retrieval.store import SearchRequest, StoreError, StoreUnavailable  # noqa: E402
from interlock.graphs.retrieval.weaviate_store import (  # noqa: E402
    VECTOR_NAME,
    WeaviateStore,
    collection_config,
    object_uuid,
    query_call,
    request_filter,
    to_hit,
    to_properties,
)
from weaviate.classes.query import HybridFusion  # noqa: E402
from weaviate.exceptions import WeaviateConnectionError, WeaviateQueryError  # noqa: E402


def flat(f):
    """A comparable tree of a weaviate Filter (public attributes only)."""
    if hasattr(f, "filters"):
        return (type(f).__name__.replace("_Filter", "").lower(), [flat(x) for x in f.filters])
    value = list(f.value) if isinstance(f.value, list | tuple) else f.value
    return (f.target, f.operator.name, value)


def chunk(tenant="acme", doc="d1", position=0, groups=("staff",)) -> Chunk:
    text = "hello world"
    return Chunk(
        chunk_id=chunk_id_for(doc, position),
        tenant=tenant,
        document_id=doc,
        source="/x.md",
        title="X",
        section=["A", "B"],
        kind="paragraph",
        position=position,
        start=10,
        end=21,
        text=text,
        groups=list(groups),
        content_hash=content_hash(text),
        document_hash="dh",
        ingested_at=5.0,
    )


def test_filters_translate_to_weaviate_filters():
    conds = [
        Condition(field="kind", op="eq", value="code"),
        Condition(field="position", op="lt", value=3),
        Condition(field="document_id", op="in", value=["a", "b"]),
        Condition(field="source", op="prefix", value="/docs/"),
        Condition(field="section", op="not_in", value=["X", "Y"]),
    ]
    tree = flat(request_filter(["staff"], conds))
    assert tree == (
        "and",
        [
            ("groups", "CONTAINS_ANY", ["staff", "*"]),
            ("kind", "EQUAL", "code"),
            ("position", "LESS_THAN", 3),
            ("or", [("document_id", "EQUAL", "a"), ("document_id", "EQUAL", "b")]),
            ("source", "LIKE", "/docs/*"),
            ("and", [("section", "NOT_EQUAL", "X"), ("section", "NOT_EQUAL", "Y")]),
        ],
    )
    # Groups are always enforced, even without conditions.
    assert flat(request_filter([], [])) == ("groups", "CONTAINS_ANY", ["*"])
    with pytest.raises(ValueError):
        request_filter([], [Condition(field="source", op="prefix", value="a*")])


def test_query_arguments_per_mode():
    vector = np.full(4, 0.5, dtype=np.float32)
    base = {"tenant": "acme", "groups": ["staff"], "query": "reset password", "vector": vector, "k": 7}
    method, kw = query_call(SearchRequest(**base, mode="bm25"))
    assert method == "bm25" and kw["query"] == "reset password" and kw["limit"] == 7
    assert kw["query_properties"][0] == "text" and kw["return_metadata"].score
    method, kw = query_call(SearchRequest(**base, mode="vector"))
    assert method == "near_vector" and kw["near_vector"] == [0.5] * 4 and kw["target_vector"] == VECTOR_NAME
    assert kw["return_metadata"].distance
    for fusion, expected in (("rrf", HybridFusion.RANKED), ("relative", HybridFusion.RELATIVE_SCORE)):
        for alpha in (0.0, 0.35, 1.0):
            method, kw = query_call(SearchRequest(**base, mode="hybrid", alpha=alpha, fusion=fusion))
            assert method == "hybrid" and kw["alpha"] == alpha and kw["fusion_type"] == expected
            assert kw["vector"] == [0.5] * 4 and kw["target_vector"] == VECTOR_NAME
            assert flat(kw["filters"]) == ("groups", "CONTAINS_ANY", ["staff", "*"])


def test_objects_and_results_round_trip():
    c = chunk()
    props = to_properties(c)
    assert (
        props["section_parts"] == ["A", "B"] and props["section"] == "A > B" and props["groups"] == ["staff"]
    )
    assert object_uuid(c) == object_uuid(chunk()) != object_uuid(chunk(tenant="globex"))
    uuid.UUID(object_uuid(c))
    obj = SimpleNamespace(properties=props, metadata=SimpleNamespace(score=None, distance=0.25))
    hit = to_hit(obj, "acme", "vector")
    assert hit.score == pytest.approx(0.75)
    assert (hit.document_id, hit.start, hit.end, hit.section, hit.text) == (
        "d1",
        10,
        21,
        ["A", "B"],
        "hello world",
    )
    obj = SimpleNamespace(properties=props, metadata=SimpleNamespace(score=0.8, distance=None))
    assert to_hit(obj, "acme", "hybrid").score == pytest.approx(0.8)


def test_collection_config_uses_multi_tenancy_and_own_vectors():
    cfg = collection_config("Chunks", "m", 384)
    assert cfg["multi_tenancy_config"].enabled is True
    assert cfg["multi_tenancy_config"].autoTenantCreation is False
    names = {p.name for p in cfg["properties"]}
    assert {"text", "groups", "document_id", "start", "end", "section_parts"} <= names
    assert '"model_id": "m"' in cfg["description"]


class FakeBatch:
    def __init__(self, owner):
        self.owner = owner

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_object(self, properties, uuid, vector):
        self.owner.added.append((properties, uuid, vector))


class FakeTenantCollection:
    """Records what the adapter sends; `reject` makes the batch report failed objects."""

    def __init__(self, reject=0):
        self.added: list = []
        self.reject = reject
        self.batch = SimpleNamespace(fixed_size=lambda **kw: FakeBatch(self), failed_objects=[])
        self.query = SimpleNamespace(hybrid=self._raise)

    def _raise(self, **kw):
        raise WeaviateQueryError("boom", "gRPC")


class FakeCollection:
    def __init__(self, tenant_collection):
        self.tc = tenant_collection
        self.created: list = []
        self.tenants = SimpleNamespace(exists=lambda name: name in self.created, create=self._create)

    def _create(self, tenants):
        self.created.extend(t.name for t in tenants)

    def with_tenant(self, name):
        return self.tc


class FakeClient:
    def __init__(self, collection):
        self.col = collection
        self.collections = SimpleNamespace(exists=lambda name: True, get=lambda name: collection)


def test_upsert_creates_tenant_and_reports_failed_objects():
    tc = FakeTenantCollection()
    col = FakeCollection(tc)
    store = WeaviateStore(FakeClient(col))
    chunks = [chunk(position=i) for i in range(3)]
    vectors = np.eye(3, 4, dtype=np.float32)
    assert store.upsert_sync(chunks, vectors) == 3
    assert col.created == ["acme"]
    assert [a[1] for a in tc.added] == [object_uuid(c) for c in chunks]
    assert tc.added[1][2] == {VECTOR_NAME: [0.0, 1.0, 0.0, 0.0]}
    tc.batch.failed_objects = [SimpleNamespace(message="vector dimension mismatch")]
    with pytest.raises(StoreError, match="rejected 1 of 3.*vector dimension mismatch"):
        store.upsert_sync(chunks, vectors)
    with pytest.raises(ValueError):
        store.upsert_sync(chunks, vectors[:2])


def test_client_errors_are_mapped():
    tc = FakeTenantCollection()
    col = FakeCollection(tc)
    col.created.append("acme")
    store = WeaviateStore(FakeClient(col))
    request = SearchRequest(
        tenant="acme", groups=["*"], query="q", vector=np.ones(4, np.float32), mode="hybrid"
    )
    with pytest.raises(StoreError, match="boom"):
        store.search_sync(request)

    def down(**kw):
        raise WeaviateConnectionError("connection refused")

    tc.query.hybrid = down
    with pytest.raises(StoreUnavailable):
        store.search_sync(request)
    # A tenant that does not exist has no results (and is not created by a read).
    assert store.search_sync(request.model_copy(update={"tenant": "nobody"})) == []
    assert col.created == ["acme"]


def test_from_env_validates_url_and_maps_unreachable_server(monkeypatch):
    monkeypatch.setenv("WEAVIATE_URL", "localhost:8080")
    with pytest.raises(StoreError, match="WEAVIATE_URL"):
        WeaviateStore.from_env()
    ports = []
    for _ in range(2):  # ports with nothing listening
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    monkeypatch.setenv("WEAVIATE_URL", f"http://127.0.0.1:{ports[0]}")
    monkeypatch.setenv("WEAVIATE_GRPC_PORT", str(ports[0]))
    with pytest.raises(StoreError, match="invalid Weaviate settings"):
        WeaviateStore.from_env()
    monkeypatch.setenv("WEAVIATE_GRPC_PORT", str(ports[1]))
    with pytest.raises(StoreUnavailable):
        WeaviateStore.from_env()
