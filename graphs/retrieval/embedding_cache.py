"""A persistent cache of embeddings keyed by (model, sha256 of the text).

Embedding is the slow part of ingestion (~30 abstracts/s on 2 cores), so unchanged chunks of an edited
document, re-ingests into another tenant and benchmark re-runs reuse vectors instead of recomputing.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import numpy as np

from interlock.kernel.sqlite_busy import switch_to_wal

from .embeddings import Embedder


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class EmbeddingCache:
    def __init__(self, path: Path | str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=10000")
        switch_to_wal(self._db)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (model TEXT NOT NULL, key TEXT NOT NULL, vector BLOB NOT NULL,"
            " PRIMARY KEY (model, key)) WITHOUT ROWID"
        )
        self._lock = threading.Lock()

    def get_many(self, model: str, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                rows = self._db.execute(
                    f"SELECT key, vector FROM embeddings WHERE model = ? AND key IN ({', '.join('?' for _ in part)})",
                    [model, *part],
                ).fetchall()
                for key, blob in rows:
                    found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model: str, items: dict[str, np.ndarray]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                [(model, k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()],
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def embed_cached(embedder: Embedder, texts: list[str], cache: EmbeddingCache | None) -> np.ndarray:
    """Vectors for `texts`, computing (and caching) only those the cache does not hold."""
    if cache is None:
        return embedder.embed(texts)
    keys = [text_key(t) for t in texts]
    found = cache.get_many(embedder.model_id, list(dict.fromkeys(keys)))
    missing = list(dict.fromkeys(k for k in keys if k not in found))
    if missing:
        wanted = set(missing)
        first = {k: t for k, t in zip(keys, texts, strict=True) if k in wanted}
        fresh = embedder.embed([first[k] for k in missing])
        computed = dict(zip(missing, fresh, strict=True))
        cache.put_many(embedder.model_id, computed)
        found.update(computed)
    return (
        np.stack([found[k] for k in keys]).astype(np.float32)
        if keys
        else np.zeros((0, embedder.dim), np.float32)
    )
