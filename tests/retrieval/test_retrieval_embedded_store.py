"""Embedded-store specifics: persistence, several handles on one file, WAL, fusion functions."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from interlock.graphs.retrieval import fusion
from interlock.graphs.retrieval.embedded_store import _SCHEMA, EmbeddedStore, fts_match_expression
from interlock.graphs.retrieval.store import SearchRequest, StoreMismatch
from test_retrieval_store_contract import DIM, MODEL, corpus, vec


def request(tenant: str, mode: str = "hybrid", **kw) -> SearchRequest:
    return SearchRequest(
        tenant=tenant, groups=["staff", "it"], query="password", vector=vec(1, 0), mode=mode, **kw
    )


async def test_data_survives_reopen_and_uses_wal(tmp_path):
    path = tmp_path / "chunks.sqlite"
    store = EmbeddedStore(path)
    await store.check_model(MODEL, DIM)
    chunks, vectors = corpus("acme")
    await store.upsert(chunks, vectors)
    before = [h.chunk_id for h in await store.search(request("acme"))]
    await store.close()
    reopened = EmbeddedStore(path)
    assert [h.chunk_id for h in await reopened.search(request("acme"))] == before
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(StoreMismatch):
        await reopened.check_model("other-model", DIM)
    await reopened.close()


async def test_a_second_handle_sees_writes_of_the_first(tmp_path):
    """Like the CLI ingesting while the server answers: the server's cached matrix must refresh."""
    writer, reader = EmbeddedStore(tmp_path / "c.sqlite"), EmbeddedStore(tmp_path / "c.sqlite")
    chunks, vectors = corpus("acme")
    await writer.upsert(chunks[:3], vectors[:3])
    assert len(await reader.search(request("acme", "vector", k=50))) == 3
    await writer.upsert(chunks[3:], vectors[3:])
    assert {h.chunk_id for h in await reader.search(request("acme", "vector", k=50))} >= {chunks[3].chunk_id}
    await writer.delete_documents("acme", ["alpha"])
    assert all(h.document_id != "alpha" for h in await reader.search(request("acme", "vector", k=50)))
    await writer.close()
    await reader.close()


async def test_vector_with_wrong_dimension_is_refused(tmp_path):
    store = EmbeddedStore(tmp_path / "c.sqlite")
    chunks, vectors = corpus("acme")
    await store.upsert(chunks, vectors)
    bad = SearchRequest(tenant="acme", groups=["*"], vector=np.ones(3, np.float32), mode="vector")
    with pytest.raises(StoreMismatch):
        await store.search(bad)
    with pytest.raises(StoreMismatch):
        await store.upsert(chunks[:1], np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        await store.upsert(chunks[:1], np.full((1, DIM), np.nan, np.float32))
    await store.close()


def test_fts_query_building():
    assert fts_match_expression("How do I reset the password?") == '"reset" OR "password"'
    assert fts_match_expression("the of and") == '"the" OR "of" OR "and"'  # all stopwords: keep them
    assert fts_match_expression('x" OR NEAR(a b) *') == '"x" OR "near" OR "b"'  # "a" and "or" are stopwords
    assert fts_match_expression("  ?? ") is None


def test_fusion_functions():
    kw = [("a", 10.0), ("b", 5.0), ("c", 1.0)]
    vv = [("c", 0.9), ("d", 0.8), ("a", 0.1)]
    assert [k for k, _ in fusion.rrf(kw, vv, alpha=0.0)] == ["a", "b", "c"]
    assert [k for k, _ in fusion.rrf(kw, vv, alpha=1.0)] == ["c", "d", "a"]
    mixed = dict(fusion.rrf(kw, vv, alpha=0.5, k=60))
    assert mixed["a"] == pytest.approx(0.5 / 61 + 0.5 / 63)
    rel = dict(fusion.relative_score(kw, vv, alpha=0.5))
    assert rel["a"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.0)
    assert rel["c"] == pytest.approx(0.5 * 0.0 + 0.5 * 1.0)
    assert [k for k, _ in fusion.relative_score(kw, [], alpha=0.3)] == ["a", "b", "c"]


async def test_incremental_refresh_applies_updates_and_appends(tmp_path):
    """After inserts/updates a reader loads only the changed rows; the result equals a fresh load."""
    writer, reader = EmbeddedStore(tmp_path / "c.sqlite"), EmbeddedStore(tmp_path / "c.sqlite")
    chunks, vectors = corpus("acme")
    await writer.upsert(chunks[:6], vectors[:6])
    probe = SearchRequest(
        tenant="acme", groups=["hr"], vector=vec(0, 0, 0, 0, 0, 0, 0, 1), mode="vector", k=3
    )
    await reader.search(probe)  # cache the six-row matrix
    # Move chunk 0 to where the probe points and restrict it to 'hr'; append the other four chunks.
    moved = chunks[0].model_copy(update={"groups": ["hr"]})
    await writer.upsert([moved], np.stack([vec(0, 0, 0, 0, 0, 0, 0, 1)]))
    await writer.upsert(chunks[6:], vectors[6:])
    hits = await reader.search(probe)
    assert hits[0].chunk_id == moved.chunk_id and hits[0].groups == ["hr"]
    cached = reader._cache["acme"]
    assert len(cached.rids) == 10 and list(cached.rids) == sorted(cached.rids)
    fresh = EmbeddedStore(tmp_path / "c.sqlite")
    for groups in (["hr"], ["staff"], ["*"], ["it", "finance"]):
        for v in vectors:
            req = SearchRequest(tenant="acme", groups=groups, vector=v, mode="vector", k=10)
            assert [h.chunk_id for h in await reader.search(req)] == [
                h.chunk_id for h in await fresh.search(req)
            ]
    for s in (writer, reader, fresh):
        await s.close()


def _old_store(path) -> None:  # noqa: ANN001
    """A store as the first release of the schema left it: no `seq` on chunks, no `deletes` on tenant_state."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE tenant_state (tenant TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    old_chunks = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS chunks") :].split(";")[0]
    db.execute(old_chunks.replace("    seq INTEGER NOT NULL DEFAULT 0,\n", ""))
    assert "seq" not in {r[1] for r in db.execute("PRAGMA table_info(chunks)")}
    db.execute("INSERT INTO tenant_state VALUES ('acme', 3)")
    db.commit()
    db.close()


OPEN_AT_ONCE = """
import os, sys, time
from interlock.graphs.retrieval.embedded_store import EmbeddedStore
from interlock.graphs.retrieval.embedding_cache import EmbeddingCache
open(sys.argv[2] + f".ready-{os.getpid()}", "w").close()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.002)
{"store": EmbeddedStore, "cache": EmbeddingCache}[sys.argv[3]](sys.argv[1])
"""


def _open_at_once(path, go, kind: str, n: int = 4) -> list[str]:  # noqa: ANN001
    """n processes open `path` at the same moment; the output of those that failed."""
    import os
    import subprocess
    import sys
    import time

    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, str(path), str(go), kind], env=dict(os.environ),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(n)]
    deadline = time.monotonic() + 60
    while len(list(go.parent.glob(f"{go.name}.ready-*"))) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    return [out for code, out in ((p.wait(60), p.stdout.read().decode()[-800:] if p.stdout else "") for p in procs)
            if code != 0]


def test_processes_opening_an_old_store_at_once_all_migrate_it(tmp_path):
    """Workers (`serve --workers N`) opening a store of the older schema together: each checked for the missing
    column and added it, and all but one failed with "duplicate column name" before the check and the change
    became one write transaction (or with "database is locked": the switch to WAL does not wait by itself)."""
    for trial in range(8):
        path = tmp_path / f"old-{trial}.sqlite"
        _old_store(path)
        failed = _open_at_once(path, tmp_path / f"go-{trial}", "store")
        assert not failed, f"trial {trial}: {failed}"
        db = sqlite3.connect(path)
        assert "seq" in {r[1] for r in db.execute("PRAGMA table_info(chunks)")}
        assert "deletes" in {r[1] for r in db.execute("PRAGMA table_info(tenant_state)")}
        db.close()


def test_processes_creating_one_embedding_cache_at_once_all_open_it(tmp_path):
    for trial in range(8):
        failed = _open_at_once(tmp_path / f"cache-{trial}.sqlite", tmp_path / f"cache-go-{trial}", "cache")
        assert not failed, f"trial {trial}: {failed}"


def test_store_created_by_an_older_schema_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    _old_store(path)
    store = EmbeddedStore(path)
    chunks, vectors = corpus("acme")
    store.upsert_sync(chunks, vectors)
    assert store.count_sync("acme") == len(chunks)
    assert store._q("SELECT version, deletes FROM tenant_state WHERE tenant = 'acme'")[0] == (4, 0)
