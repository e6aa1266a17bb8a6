"""The chunk-store contract, run against every store implementation.

The embedded store always runs. The Weaviate store runs only when WEAVIATE_URL points at a live
server (a unique collection per session, dropped afterwards); otherwise its cases are skipped
visibly, because no Weaviate server exists in CI.
"""

from __future__ import annotations

import os
import random
import uuid

import numpy as np
import pytest
from interlock.graphs.retrieval.chunks import Chunk, chunk_id_for, content_hash
from interlock.graphs.retrieval.embedded_store import EmbeddedStore
from interlock.graphs.retrieval.filters import Condition
from interlock.graphs.retrieval.store import SearchRequest, StoreMismatch

DIM = 8
MODEL = "contract-test-model"


def vec(*weights: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(weights)] = weights
    return v / np.linalg.norm(v)


def make_chunk(
    tenant: str,
    doc: str,
    position: int,
    text: str,
    *,
    groups: tuple[str, ...] = ("*",),
    kind: str = "paragraph",
    section: tuple[str, ...] = ("Guide",),
    start: int | None = None,
    ingested_at: float = 1000.0,
) -> Chunk:
    begin = position * 100 if start is None else start
    return Chunk(
        chunk_id=chunk_id_for(doc, position),
        tenant=tenant,
        document_id=doc,
        source=f"/docs/{doc}.md",
        title=f"Title of {doc}",
        section=list(section),
        kind=kind,
        position=position,
        start=begin,
        end=begin + len(text),
        text=text,
        groups=list(groups),
        content_hash=content_hash(text),
        document_hash="h-" + doc,
        ingested_at=ingested_at,
    )


def corpus(tenant: str) -> tuple[list[Chunk], np.ndarray]:
    """Ten chunks with a shared word ('common') so a keyword query can reach all of them."""
    rows = [
        (
            "alpha",
            0,
            "common password reset steps for the account page",
            ("*",),
            "paragraph",
            ("Guide", "Reset"),
            vec(1, 0),
        ),
        (
            "alpha",
            1,
            "common password rotation every ninety days",
            ("*",),
            "list",
            ("Guide", "Rotation"),
            vec(0.9, 0.1),
        ),
        ("alpha", 2, "common lunch menu bread soup", ("staff",), "paragraph", ("Food",), vec(0, 1)),
        ("beta", 0, "common vpn setup guide for laptops", ("it",), "code", ("Network", "VPN"), vec(0, 0, 1)),
        (
            "beta",
            1,
            "common vpn troubleshooting password prompt",
            ("it", "staff"),
            "paragraph",
            ("Network",),
            vec(0.3, 0, 0.9),
        ),
        ("beta", 2, "common holiday calendar", ("hr",), "table", ("Calendar",), vec(0, 0, 0, 1)),
        ("gamma", 0, "common expense policy receipts", ("*",), "paragraph", ("Finance",), vec(0, 0, 0, 0, 1)),
        (
            "gamma",
            1,
            "common travel booking rules",
            ("finance",),
            "list",
            ("Finance", "Travel"),
            vec(0, 0, 0, 0, 0.8, 0.6),
        ),
        (
            "gamma",
            2,
            "common password manager recommendation",
            ("*",),
            "paragraph",
            ("Finance", "Tools"),
            vec(0.7, 0, 0, 0, 0, 0, 0.7),
        ),
        ("gamma", 3, "common onboarding checklist", ("staff",), "list", ("HR",), vec(0, 0, 0, 0, 0, 0, 0, 1)),
    ]
    chunks = [
        make_chunk(tenant, d, p, t, groups=g, kind=k, section=s, ingested_at=1000.0 + i)
        for i, (d, p, t, g, k, s, _) in enumerate(rows)
    ]
    return chunks, np.stack([r[-1] for r in rows])


ALL_GROUPS = ["staff", "it", "hr", "finance"]


@pytest.fixture(params=["embedded", "weaviate"])
async def store(request, tmp_path):
    if request.param == "embedded":
        s = EmbeddedStore(tmp_path / "chunks.sqlite")
        await s.check_model(MODEL, DIM)
        yield s
        await s.close()
        return
    if not os.environ.get("WEAVIATE_URL"):
        pytest.skip("WEAVIATE_URL not set: Weaviate contract tests not run")
    from interlock.graphs.retrieval.weaviate_store import WeaviateStore

    s = WeaviateStore.from_env(collection=f"InterlockTest{uuid.uuid4().hex[:10]}")
    await s.check_model(MODEL, DIM)
    yield s
    await s.drop_collection()
    await s.close()


def tenant_name() -> str:
    return "t" + uuid.uuid4().hex[:12]


def req(tenant: str, groups=ALL_GROUPS, **kw) -> SearchRequest:
    base = {"tenant": tenant, "groups": groups, "query": "common", "vector": vec(1, 0), "k": 50}
    base.update(kw)
    return SearchRequest(**base)


async def loaded(store) -> tuple[str, list[Chunk], np.ndarray]:
    tenant = tenant_name()
    chunks, vectors = corpus(tenant)
    assert await store.upsert(chunks, vectors) == len(chunks)
    return tenant, chunks, vectors


async def test_upsert_is_idempotent_and_replaces(store):
    tenant, chunks, vectors = await loaded(store)
    await store.upsert(chunks, vectors)
    assert await store.count(tenant) == len(chunks)
    changed = chunks[0].model_copy(update={"text": "common password reset via the new self-service portal"})
    await store.upsert([changed], vectors[:1])
    assert await store.count(tenant) == len(chunks)
    hits = await store.search(req(tenant, mode="bm25", query="portal"))
    assert [h.chunk_id for h in hits] == [changed.chunk_id]
    assert hits[0].text == changed.text


async def test_counts_and_delete(store):
    tenant, chunks, _ = await loaded(store)
    assert await store.count(tenant, document_id="alpha") == 3
    assert await store.count(tenant, document_id="gamma") == 4
    assert await store.delete_documents(tenant, ["alpha"]) == 3
    assert await store.count(tenant) == len(chunks) - 3
    assert await store.count(tenant, document_id="alpha") == 0
    for mode in ("bm25", "vector", "hybrid"):
        hits = await store.search(req(tenant, mode=mode))
        assert hits and all(h.document_id != "alpha" for h in hits)
    assert await store.delete_documents(tenant, ["no-such-doc"]) == 0
    hashes = await store.document_hashes(tenant)
    assert set(hashes) == {"beta", "gamma"} and hashes["beta"] == ("/docs/beta.md", "h-beta")
    assert await store.delete_tenant(tenant) == len(chunks) - 3
    assert await store.count(tenant) == 0


FILTERS = [
    Condition(field="document_id", op="eq", value="beta"),
    Condition(field="document_id", op="ne", value="beta"),
    Condition(field="document_id", op="in", value=["alpha", "gamma"]),
    Condition(field="document_id", op="not_in", value=["alpha", "gamma"]),
    Condition(field="kind", op="eq", value="list"),
    Condition(field="source", op="prefix", value="/docs/ga"),
    Condition(field="title", op="eq", value="Title of alpha"),
    Condition(field="section", op="eq", value="Network > VPN"),
    Condition(field="section", op="prefix", value="Finance"),
    Condition(field="position", op="lt", value=1),
    Condition(field="position", op="lte", value=1),
    Condition(field="position", op="gt", value=1),
    Condition(field="position", op="gte", value=2),
    Condition(field="start", op="gte", value=200),
    Condition(field="ingested_at", op="gt", value=1004.5),
]


@pytest.mark.parametrize("cond", FILTERS, ids=lambda c: f"{c.field}-{c.op}")
@pytest.mark.parametrize("mode", ["bm25", "vector", "hybrid"])
async def test_every_filter_matches_reference(store, cond, mode):
    tenant, chunks, _ = await loaded(store)
    expected = {c.chunk_id for c in chunks if cond.matches(c.model_dump())}
    hits = await store.search(req(tenant, mode=mode, filters=[cond]))
    assert {h.chunk_id for h in hits} == expected
    # Two conditions are ANDed.
    second = Condition(field="position", op="lte", value=1)
    both = {c.chunk_id for c in chunks if cond.matches(c.model_dump()) and second.matches(c.model_dump())}
    hits = await store.search(req(tenant, mode=mode, filters=[cond, second]))
    assert {h.chunk_id for h in hits} == both


@pytest.mark.parametrize("mode", ["bm25", "vector", "hybrid"])
async def test_access_groups(store, mode):
    tenant, chunks, _ = await loaded(store)
    for groups in ([], ["staff"], ["it"], ["hr", "finance"], ALL_GROUPS):
        visible = {c.chunk_id for c in chunks if "*" in c.groups or set(c.groups) & set(groups)}
        hits = await store.search(req(tenant, groups=groups, mode=mode))
        assert {h.chunk_id for h in hits} == visible, groups


@pytest.mark.parametrize("mode", ["bm25", "vector", "hybrid"])
async def test_scores_are_ordered_and_k_respected(store, mode):
    tenant, chunks, vectors = await loaded(store)
    hits = await store.search(req(tenant, mode=mode, query="password vpn", vector=vec(0.3, 0, 0.9), k=3))
    assert len(hits) == 3
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    if mode == "vector":
        assert hits[0].document_id == "beta" and hits[0].position == 1  # the exact vector
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    if mode == "bm25":
        assert hits[0].chunk_id == chunks[4].chunk_id  # the only chunk with both words


@pytest.mark.parametrize("fusion", ["rrf", "relative"])
async def test_alpha_extremes_equal_pure_modes(store, fusion):
    tenant, _, _ = await loaded(store)
    query, vector = "password vpn policy", vec(0.2, 0.5, 0.1, 0.4, 0.3)
    bm25 = await store.search(req(tenant, mode="bm25", query=query, vector=vector, k=5))
    dense = await store.search(req(tenant, mode="vector", query=query, vector=vector, k=5))
    at0 = await store.search(
        req(tenant, mode="hybrid", query=query, vector=vector, k=5, alpha=0.0, fusion=fusion)
    )
    at1 = await store.search(
        req(tenant, mode="hybrid", query=query, vector=vector, k=5, alpha=1.0, fusion=fusion)
    )
    assert [h.chunk_id for h in at0] == [h.chunk_id for h in bm25]
    assert [h.chunk_id for h in at1] == [h.chunk_id for h in dense]
    mid = await store.search(
        req(tenant, mode="hybrid", query=query, vector=vector, k=10, alpha=0.5, fusion=fusion)
    )
    assert {h.chunk_id for h in bm25[:1] + dense[:1]} <= {h.chunk_id for h in mid}


async def test_citations_round_trip(store):
    tenant, chunks, vectors = await loaded(store)
    by_id = {c.chunk_id: c for c in chunks}
    for mode in ("bm25", "vector", "hybrid"):
        for h in await store.search(req(tenant, mode=mode)):
            c = by_id[h.chunk_id]
            assert (h.document_id, h.start, h.end, h.position) == (c.document_id, c.start, c.end, c.position)
            assert (h.source, h.title, h.section, h.kind, h.text) == (
                c.source,
                c.title,
                c.section,
                c.kind,
                c.text,
            )
            assert h.tenant == tenant and sorted(h.groups) == sorted(c.groups)
            assert h.citation()["document_id"] == c.document_id


async def test_tenant_isolation_is_a_data_layer_property(store):
    """Whatever the query text, vector, filter or groups, tenant B never sees tenant A's chunks."""
    tenant_a, chunks_a, vectors_a = await loaded(store)
    tenant_b = tenant_name()
    secret = make_chunk(tenant_a, "secret", 0, "zebra quarterly revenue secret", groups=("*", "staff"))
    await store.upsert([secret], np.stack([vec(1, 1, 1, 1, 1, 1, 1, 1)]))
    b_chunks = [make_chunk(tenant_b, "other", 0, "unrelated common text", groups=("*",))]
    await store.upsert(b_chunks, vec(0, 1)[None, :])
    a_ids = {c.chunk_id for c in chunks_a} | {secret.chunk_id}
    words = sorted({w for c in [*chunks_a, secret] for w in c.text.split()})
    rng = random.Random(7)
    probes = [*vectors_a, vec(1, 1, 1, 1, 1, 1, 1, 1)]
    for trial in range(60):
        query = " ".join(rng.sample(words, rng.randint(1, 4)))
        cond = rng.choice([None, *FILTERS])
        groups = rng.choice([["*"], ALL_GROUPS, ["staff"], []])
        mode = rng.choice(["bm25", "vector", "hybrid"])
        request = req(
            tenant_b,
            groups=groups,
            mode=mode,
            query=query,
            vector=probes[trial % len(probes)],
            filters=[cond] if cond else [],
            alpha=rng.random(),
            fusion=rng.choice(["rrf", "relative"]),
        )
        hits = await store.search(request)
        assert all(h.tenant == tenant_b and h.chunk_id not in a_ids for h in hits), (query, cond, mode)
    # An empty tenant returns nothing, and deletes in B cannot touch A.
    assert await store.search(req(tenant_name(), query="zebra secret", vector=probes[-1])) == []
    assert await store.delete_documents(tenant_b, ["secret", "alpha"]) == 0
    assert await store.count(tenant_a) == len(chunks_a) + 1
    hits = await store.search(req(tenant_a, mode="bm25", query="zebra"))
    assert [h.chunk_id for h in hits] == [secret.chunk_id]


async def test_bad_input_is_refused(store):
    tenant, chunks, vectors = await loaded(store)
    for bad in ("", "../etc", "a b", "x" * 65, "-lead"):
        with pytest.raises(ValueError):
            req(bad)
    with pytest.raises(TypeError):
        req(tenant, groups="staff")
    with pytest.raises(ValueError):
        req(tenant, mode="vector", vector=None)
    with pytest.raises(ValueError):
        req(tenant, mode="bm25", query="   ")
    with pytest.raises(ValueError):
        await store.upsert(chunks[:2], vectors[:1])
    # Query text that looks like FTS syntax is just text.
    hits = await store.search(req(tenant, mode="bm25", query='password" OR title:* NEAR(x) -- ;DROP'))
    assert hits and "password" in hits[0].text
    assert await store.search(req(tenant, mode="bm25", query="!!! ???")) == []


async def test_model_mismatch_is_refused(store):
    await loaded(store)
    with pytest.raises(StoreMismatch):
        await store.check_model("another-model", DIM)
