"""The default store: one SQLite file (WAL) as system of record, FTS5 (porter) for BM25, and exact
vector search with numpy over a per-tenant float32 matrix held in memory.

Why this shape (measured in shared/reference/retrieval.md): at 100k x 384 an exact numpy scan is
~8 ms with recall 1.0, FTS5 BM25 is ~1-2 ms and matches bm25s quality on SciFact, and both are
transactional and incremental. Filters and access groups are applied before scoring (SQL `WHERE` for
BM25, a row mask for vectors), so a filter never costs recall. Growth path: past a few hundred
thousand chunks in one tenant, put a per-tenant HNSW index (usearch or faiss) behind `_vector_top`,
or move the deployment to the Weaviate store.

Every statement carries `tenant = ?`, and the vector matrices are keyed by tenant, so one tenant's
rows can never enter another tenant's candidate set.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from interlock.kernel.sqlite_busy import switch_to_wal

from . import fusion
from .chunks import PUBLIC_GROUP, Chunk, Hit, check_groups, check_tenant
from .filters import Condition
from .stopwords import STOPWORDS
from .store import SearchRequest, StoreError, StoreMismatch, ThreadedStore

_COLUMNS = {
    "document_id": "c.document_id",
    "source": "c.source",
    "kind": "c.kind",
    "title": "c.title",
    "section": "c.section",
    "position": "c.position",
    "start": "c.start_off",
    "ingested_at": "c.ingested_at",
}
_SQL_OPS = {"eq": "=", "ne": "!=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenant_state (
    tenant TEXT PRIMARY KEY, version INTEGER NOT NULL, deletes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS chunks (
    rid INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    chunk_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    source TEXT NOT NULL,
    title TEXT NOT NULL,
    section TEXT NOT NULL,
    section_json TEXT NOT NULL,
    kind TEXT NOT NULL,
    position INTEGER NOT NULL,
    start_off INTEGER NOT NULL,
    end_off INTEGER NOT NULL,
    text TEXT NOT NULL,
    acl TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    document_hash TEXT NOT NULL,
    ingested_at REAL NOT NULL,
    vector BLOB NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant, chunk_id)
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks (tenant, document_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, title, section, content='chunks', content_rowid='rid', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text, title, section) VALUES (new.rid, new.text, new.title, new.section);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text, title, section)
    VALUES ('delete', old.rid, old.text, old.title, old.section);
END;
CREATE TRIGGER IF NOT EXISTS chunks_au AFTER UPDATE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text, title, section)
    VALUES ('delete', old.rid, old.text, old.title, old.section);
    INSERT INTO chunks_fts(rowid, text, title, section) VALUES (new.rid, new.text, new.title, new.section);
END;
"""

_HIT_COLUMNS = "rid, chunk_id, document_id, text, source, title, section_json, kind, position, start_off, end_off, tenant, acl"
_WORD_RE = re.compile(r"\w+", re.UNICODE)


_blas: Any = None
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _keyword_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="interlock-bm25")
        return _pool


def _single_blas_thread() -> Any:
    """One BLAS thread for the query product: on 2 shared cores a multi-threaded gemv waits on busy cores
    (measured p95 13 ms vs 0.3 ms at 5k rows), and a server runs several queries at once anyway."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # optional: without it the product just uses numpy's default threads
            _blas = False
        else:
            _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas") if _blas else contextlib.nullcontext()


@dataclass
class _TenantVectors:
    version: int
    deletes: int
    rids: np.ndarray  # int64, ascending
    matrix: np.ndarray  # (n, dim) float32, row i is rids[i]
    acls: list[str]  # row i's "|g1|g2|"
    by_group: dict[str, np.ndarray]  # group -> row indices


def _group_index(acls: list[str]) -> dict[str, np.ndarray]:
    members: dict[str, list[int]] = {}
    for i, acl in enumerate(acls):
        for g in acl.strip("|").split("|"):
            members.setdefault(g, []).append(i)
    return {g: np.asarray(ix, dtype=np.int64) for g, ix in members.items()}


def _merge(cached: _TenantVectors, rows: list[tuple[Any, ...]], version: int) -> _TenantVectors:
    """Apply rows written since `cached` (inserts and in-place updates, no deletes) to a new snapshot."""
    new_rids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    new_vecs = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), -1)
    pos = np.searchsorted(cached.rids, new_rids)
    exists = (pos < len(cached.rids)) & (cached.rids[np.minimum(pos, len(cached.rids) - 1)] == new_rids)
    rids = np.concatenate([cached.rids, new_rids[~exists]])
    matrix = np.concatenate([cached.matrix, new_vecs[~exists]])
    matrix[pos[exists]] = new_vecs[exists]
    acls = list(cached.acls)
    for i, r in enumerate(rows):
        if exists[i]:
            acls[pos[i]] = r[1]
        else:
            acls.append(r[1])
    if len(rids) > 1 and np.any(np.diff(rids) < 0):  # rowids normally only grow; keep the invariant anyway
        order = np.argsort(rids, kind="stable")
        rids, matrix, acls = rids[order], matrix[order], [acls[i] for i in order]
    return _TenantVectors(version, cached.deletes, rids, matrix, acls, _group_index(acls))


def fts_match_expression(query: str) -> str | None:
    """An FTS5 OR-query of the query's words. Quoting each word keeps user text from being FTS syntax;
    stopwords are dropped because FTS5's implicit operator is AND and OR over 'the' matches everything."""
    words = [w.lower() for w in _WORD_RE.findall(query)]
    content = [w for w in words if w not in STOPWORDS] or words
    unique = list(dict.fromkeys(content))
    if not unique:
        return None
    return " OR ".join(f'"{w}"' for w in unique)


def _acl_clause(groups: list[str]) -> tuple[str, list[str]]:
    allowed = [*groups, PUBLIC_GROUP] if PUBLIC_GROUP not in groups else groups
    return "(" + " OR ".join("instr(c.acl, ?) > 0" for _ in allowed) + ")", [f"|{g}|" for g in allowed]


def _filter_clause(filters: Sequence[Condition]) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for cond in filters:
        col = _COLUMNS[cond.field]
        if cond.op in _SQL_OPS:
            parts.append(f"{col} {_SQL_OPS[cond.op]} ?")
            params.append(cond.value)
        elif cond.op in ("in", "not_in"):
            values = list(cond.value)  # type: ignore[arg-type]
            neg = "NOT " if cond.op == "not_in" else ""
            parts.append(f"{col} {neg}IN ({', '.join('?' for _ in values)})")
            params.extend(values)
        elif cond.op == "prefix":
            parts.append(f"substr({col}, 1, ?) = ?")
            params.extend([len(str(cond.value)), cond.value])
    return (" AND ".join(parts) if parts else "1"), params


class EmbeddedStore(ThreadedStore):
    """SQLite + FTS5 + numpy chunk store (see module doc)."""

    def __init__(
        self,
        path: Path | str,
        *,
        title_weight: float = 1.0,
        section_weight: float = 0.5,
        max_cached_tenants: int = 8,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._weights = (1.0, title_weight, section_weight)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout=10000")
            switch_to_wal(self._db)
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._migrate()
        except sqlite3.OperationalError as exc:
            if "fts5" in str(exc).lower():
                raise StoreError("this Python's SQLite has no FTS5; use the Weaviate store") from exc
            raise StoreError(f"cannot open retrieval store {self.path}: {exc}") from exc
        self._cache: OrderedDict[str, _TenantVectors] = OrderedDict()
        self._max_cached = max_cached_tenants

    def _migrate(self) -> None:
        """Columns added after the first release of the schema (stores created before keep working). One write
        transaction: two processes opening an old store at once must not both see a column missing and add it."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for table, column, ddl in (
                ("chunks", "seq", "ALTER TABLE chunks ADD COLUMN seq INTEGER NOT NULL DEFAULT 0"),
                (
                    "tenant_state",
                    "deletes",
                    "ALTER TABLE tenant_state ADD COLUMN deletes INTEGER NOT NULL DEFAULT 0",
                ),
            ):
                if column not in {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}:
                    self._db.execute(ddl)
            self._db.execute("CREATE INDEX IF NOT EXISTS chunks_by_seq ON chunks (tenant, seq)")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        with self._lock:
            self._db.close()
            self._cache.clear()

    # -- synchronous implementation --

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def check_model_sync(self, model_id: str, dim: int) -> None:
        with self._lock:
            meta = dict(self._db.execute("SELECT key, value FROM store_meta").fetchall())
            if meta.get("model_id") in (None, model_id) and meta.get("dim") in (None, str(dim)):
                if "model_id" not in meta:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO store_meta VALUES (?, ?)",
                        [("model_id", model_id), ("dim", str(dim))],
                    )
                return
            (rows,) = self._db.execute("SELECT count(*) FROM chunks").fetchone()
            if rows == 0:  # an empty store may switch models
                self._db.executemany(
                    "INSERT OR REPLACE INTO store_meta VALUES (?, ?)",
                    [("model_id", model_id), ("dim", str(dim))],
                )
                return
        raise StoreMismatch(
            f"store {self.path} holds vectors of {meta.get('model_id')} (dim {meta.get('dim')}), "
            f"not {model_id} (dim {dim}); re-ingest into a new store"
        )

    def _bump(self, tenants: set[str], *, deleted: bool = False) -> dict[str, int]:
        """New version per tenant; `deletes` counts removals, which force a full matrix reload."""
        self._db.executemany(
            "INSERT INTO tenant_state (tenant, version, deletes) VALUES (?, 1, ?) ON CONFLICT(tenant) "
            "DO UPDATE SET version = version + 1, deletes = deletes + excluded.deletes",
            [(t, int(deleted)) for t in tenants],
        )
        return {
            t: self._db.execute("SELECT version FROM tenant_state WHERE tenant = ?", (t,)).fetchone()[0]
            for t in tenants
        }

    def upsert_sync(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> int:
        if len(chunks) == 0:
            return 0
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(chunks):
            raise ValueError(f"need one vector per chunk: {len(chunks)} chunks, vectors {vectors.shape}")
        rows = []
        for chunk, vec in zip(chunks, vectors, strict=True):
            if not np.all(np.isfinite(vec)):
                raise ValueError(f"chunk {chunk.chunk_id}: vector has NaN or inf")
            rows.append(
                (
                    chunk.tenant,
                    chunk.chunk_id,
                    chunk.document_id,
                    chunk.source,
                    chunk.title,
                    chunk.section_path,
                    json.dumps(chunk.section),
                    chunk.kind,
                    chunk.position,
                    chunk.start,
                    chunk.end,
                    chunk.text,
                    "|" + "|".join(chunk.groups) + "|",
                    chunk.content_hash,
                    chunk.document_hash,
                    chunk.ingested_at,
                    vec.tobytes(),
                )
            )
        tenants = {c.tenant for c in chunks}
        with self._lock:
            meta = dict(self._db.execute("SELECT key, value FROM store_meta").fetchall())
            if "dim" in meta and int(meta["dim"]) != vectors.shape[1]:
                raise StoreMismatch(f"store holds dim {meta['dim']} vectors, got dim {vectors.shape[1]}")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # Rows carry the tenant version that wrote them, so readers can load just what changed.
                versions = self._bump(tenants)
                rows = [(*r, versions[r[0]]) for r in rows]
                self._db.executemany(
                    """INSERT INTO chunks (tenant, chunk_id, document_id, source, title, section, section_json,
                           kind, position, start_off, end_off, text, acl, content_hash, document_hash,
                           ingested_at, vector, seq)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT (tenant, chunk_id) DO UPDATE SET
                           document_id = excluded.document_id, source = excluded.source,
                           title = excluded.title, section = excluded.section,
                           section_json = excluded.section_json, kind = excluded.kind,
                           position = excluded.position, start_off = excluded.start_off,
                           end_off = excluded.end_off, text = excluded.text, acl = excluded.acl,
                           content_hash = excluded.content_hash, document_hash = excluded.document_hash,
                           ingested_at = excluded.ingested_at, vector = excluded.vector,
                           seq = excluded.seq""",
                    rows,
                )
                if "dim" not in meta:
                    self._db.execute(
                        "INSERT OR REPLACE INTO store_meta VALUES ('dim', ?)", (str(vectors.shape[1]),)
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def delete_documents_sync(self, tenant: str, document_ids: Sequence[str]) -> int:
        check_tenant(tenant)
        ids = list(document_ids)
        if not ids:
            return 0
        removed = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(ids), 500):
                    part = ids[start : start + 500]
                    cur = self._db.execute(
                        f"DELETE FROM chunks WHERE tenant = ? AND document_id IN ({', '.join('?' for _ in part)})",
                        [tenant, *part],
                    )
                    removed += cur.rowcount
                self._bump({tenant}, deleted=True)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return removed

    def delete_tenant_sync(self, tenant: str) -> int:
        check_tenant(tenant)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed = self._db.execute("DELETE FROM chunks WHERE tenant = ?", (tenant,)).rowcount
                self._bump({tenant}, deleted=True)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._cache.pop(tenant, None)
        return removed

    def count_sync(self, tenant: str, *, document_id: str | None = None) -> int:
        check_tenant(tenant)
        if document_id is None:
            return self._q("SELECT count(*) FROM chunks WHERE tenant = ?", (tenant,))[0][0]
        return self._q(
            "SELECT count(*) FROM chunks WHERE tenant = ? AND document_id = ?", (tenant, document_id)
        )[0][0]

    def document_hashes_sync(self, tenant: str) -> dict[str, tuple[str, str]]:
        check_tenant(tenant)
        rows = self._q(
            "SELECT document_id, min(source), min(document_hash) FROM chunks WHERE tenant = ? GROUP BY document_id",
            (tenant,),
        )
        return {doc: (source, h) for doc, source, h in rows}

    # -- search --

    def _vectors(self, tenant: str) -> _TenantVectors:
        """The tenant's matrix, refreshed if any process wrote to the tenant since it was loaded.

        After inserts and updates only the changed rows are read (by `seq`); after a delete the matrix
        is reloaded whole. Version and rows are read in one transaction, so they agree."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                row = self._db.execute(
                    "SELECT version, deletes FROM tenant_state WHERE tenant = ?", (tenant,)
                ).fetchone()
                version, deletes = row if row else (0, 0)
                cached = self._cache.get(tenant)
                if cached is not None and cached.version == version:
                    self._cache.move_to_end(tenant)
                    return cached
                delta = cached is not None and cached.deletes == deletes and len(cached.rids) > 0
                if delta:
                    assert cached is not None
                    rows = self._db.execute(
                        "SELECT rid, acl, vector FROM chunks WHERE tenant = ? AND seq > ? ORDER BY rid",
                        (tenant, cached.version),
                    ).fetchall()
                else:
                    rows = self._db.execute(
                        "SELECT rid, acl, vector FROM chunks WHERE tenant = ? ORDER BY rid", (tenant,)
                    ).fetchall()
            finally:
                self._db.execute("COMMIT")
        if delta:
            assert cached is not None
            tv = _merge(cached, rows, version) if rows else replace(cached, version=version)
        elif rows:
            rids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            dim = len(rows[0][2]) // 4
            matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), dim)
            acls = [r[1] for r in rows]
            tv = _TenantVectors(version, deletes, rids, matrix, acls, _group_index(acls))
        else:
            tv = _TenantVectors(version, deletes, np.zeros(0, np.int64), np.zeros((0, 0), np.float32), [], {})
        with self._lock:
            self._cache[tenant] = tv
            self._cache.move_to_end(tenant)
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        return tv

    def _vector_top(self, request: SearchRequest, n: int) -> list[tuple[int, float]]:
        assert request.vector is not None
        tv = self._vectors(request.tenant)
        if len(tv.rids) == 0:
            return []
        query = np.asarray(request.vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != tv.matrix.shape[1]:
            raise StoreMismatch(f"query vector has dim {query.shape[0]}, store has {tv.matrix.shape[1]}")
        allowed = np.zeros(len(tv.rids), dtype=bool)
        for g in {*request.groups, PUBLIC_GROUP}:
            ix = tv.by_group.get(g)
            if ix is not None:
                allowed[ix] = True
        if request.filters:
            where, params = _filter_clause(request.filters)
            ok = self._q(
                f"SELECT c.rid FROM chunks c WHERE c.tenant = ? AND {where}", [request.tenant, *params]
            )
            keep = np.fromiter((r[0] for r in ok), dtype=np.int64, count=len(ok))
            allowed &= np.isin(tv.rids, keep, assume_unique=True)
        visible = int(allowed.sum())
        if visible == 0:
            return []
        # Score every row and mask afterwards: copying the allowed rows out costs more than the product.
        with _single_blas_thread():
            scores = tv.matrix @ query
        if visible < len(scores):
            scores[~allowed] = -np.inf
        n = min(n, visible)
        top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(tv.rids[i]), float(scores[i])) for i in top]

    def _bm25_top(self, request: SearchRequest, n: int) -> list[tuple[int, float]]:
        expr = fts_match_expression(request.query)
        if expr is None:
            return []
        acl, acl_params = _acl_clause(request.groups)
        where, params = _filter_clause(request.filters)
        sql = f"""SELECT c.rid, -bm25(chunks_fts, ?, ?, ?) AS score
                  FROM chunks_fts JOIN chunks c ON c.rid = chunks_fts.rowid
                  WHERE chunks_fts MATCH ? AND c.tenant = ? AND {acl} AND {where}
                  ORDER BY score DESC, c.rid LIMIT ?"""
        try:
            rows = self._q(sql, [*self._weights, expr, request.tenant, *acl_params, *params, n])
        except sqlite3.OperationalError as exc:
            raise StoreError(f"keyword search failed: {exc}") from exc
        return [(int(r[0]), float(r[1])) for r in rows]

    def search_sync(self, request: SearchRequest) -> list[Hit]:
        check_tenant(request.tenant)
        check_groups(request.groups)
        keyword: list[tuple[int, float]] = []
        vector: list[tuple[int, float]] = []
        if request.mode == "bm25":
            keyword = self._bm25_top(request, request.k)
            ranked = keyword
        elif request.mode == "vector":
            vector = self._vector_top(request, request.k)
            ranked = vector
        else:
            n = max(request.candidates, request.k)
            if 0.0 < request.alpha < 1.0:
                # SQLite and the numpy product both release the GIL: run the two sides at once.
                self._vectors(request.tenant)  # refresh first, so the keyword query's lock does not stall it
                pending = _keyword_pool().submit(self._bm25_top, request, n)
                vector = self._vector_top(request, n)
                keyword = pending.result()
            else:
                keyword = self._bm25_top(request, n) if request.alpha < 1.0 else []
                vector = self._vector_top(request, n) if request.alpha > 0.0 else []
            if request.fusion == "rrf":
                ranked = fusion.rrf(keyword, vector, alpha=request.alpha, k=request.rrf_k)
            else:
                ranked = fusion.relative_score(keyword, vector, alpha=request.alpha)
        ranked = ranked[: request.k]
        parts = {"bm25": dict(keyword), "vector": dict(vector)}
        return self._hits(request.tenant, ranked, parts)

    def _hits(
        self, tenant: str, ranked: list[tuple[int, float]], parts: dict[str, dict[int, float]]
    ) -> list[Hit]:
        if not ranked:
            return []
        rids = [rid for rid, _ in ranked]
        rows = self._q(
            # `+tenant` keeps the planner on rowid lookups instead of scanning the tenant's index range;
            # the tenant check still applies to every row returned.
            f"SELECT {_HIT_COLUMNS} FROM chunks WHERE +tenant = ? AND rid IN ({', '.join('?' for _ in rids)})",
            [tenant, *rids],
        )
        by_rid = {r[0]: r for r in rows}
        hits = []
        for rid, score in ranked:
            r = by_rid.get(rid)
            if r is None:  # deleted between the two statements, or (never) another tenant's row
                continue
            hits.append(
                Hit(
                    chunk_id=r[1],
                    document_id=r[2],
                    text=r[3],
                    score=score,
                    source=r[4],
                    title=r[5],
                    section=json.loads(r[6]),
                    kind=r[7],
                    position=r[8],
                    start=r[9],
                    end=r[10],
                    tenant=r[11],
                    groups=r[12].strip("|").split("|"),
                    scores={name: vals[rid] for name, vals in parts.items() if rid in vals},
                )
            )
        return hits
