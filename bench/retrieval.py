"""Retrieval benchmark: ingest throughput and query latency (bm25, vector, hybrid) at 10k and 100k chunks
in one tenant of the embedded store.

    .venv/bin/python bench/retrieval.py                      # defaults: sizes 10000,100000
    .venv/bin/python bench/retrieval.py --vectors model      # embed every chunk with MiniLM (slow; cached)

Chunks are synthetic text (Zipf-distributed pseudo-words, 40-120 words each). Embedding them all with
MiniLM on 2 shared cores takes ~10-30 min for 100k, so by default the model embeds a sample of
`--embed-sample` chunks to measure embedding throughput, and the stored vectors are synthetic unit
vectors from a low-rank model: exact numpy search costs the same whatever the values are. With
`--vectors model` every chunk is embedded once and the vectors are cached under bench/results/.
Query latency is measured twice: at the store (query vector given) and end to end through
`Retriever.search` (query embedding included). Results go to bench/results/retrieval-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from interlock.graphs.retrieval import Retriever  # noqa: E402
from interlock.graphs.retrieval.chunks import Chunk, chunk_id_for, content_hash  # noqa: E402
from interlock.graphs.retrieval.embedded_store import EmbeddedStore  # noqa: E402
from interlock.graphs.retrieval.embeddings import get_embedder  # noqa: E402
from interlock.graphs.retrieval.store import SearchRequest  # noqa: E402

RESULTS = REPO / "bench" / "results"
TENANT = "bench"
DIM = 384


def vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    consonants, vowels = "bcdfghklmnprstvz", "aeiou"
    words: set[str] = set()
    while len(words) < size:
        n = int(rng.integers(2, 5))
        words.add("".join(rng.choice(list(consonants)) + rng.choice(list(vowels)) for _ in range(n)))
    return sorted(words)


def synthetic_texts(n: int, seed: int = 1) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    vocab = vocabulary(20000, rng)
    ranks = np.arange(1, len(vocab) + 1)
    p = 1.0 / ranks**1.07
    p /= p.sum()
    texts = []
    for _ in range(n):
        length = int(rng.integers(40, 121))
        words = rng.choice(len(vocab), size=length, p=p)
        texts.append(" ".join(vocab[w] for w in words) + ".")
    return texts, vocab


def synthetic_vectors(n: int, seed: int = 2) -> np.ndarray:
    """Unit vectors around 500 topics in a rank-32 subspace plus noise (closer to real embeddings than iid)."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((32, DIM)).astype(np.float32)
    topics = rng.standard_normal((500, 32)).astype(np.float32)
    which = rng.integers(0, 500, size=n)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 10000):
        sl = slice(start, min(n, start + 10000))
        v = topics[which[sl]] @ basis + 0.5 * rng.standard_normal((sl.stop - sl.start, DIM)).astype(
            np.float32
        )
        out[sl] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def make_chunks(texts: list[str], offset: int) -> list[Chunk]:
    return [
        Chunk(
            chunk_id=chunk_id_for(f"doc-{(offset + i) // 8}", (offset + i) % 8),
            tenant=TENANT,
            document_id=f"doc-{(offset + i) // 8}",
            source=f"/bench/doc-{(offset + i) // 8}.md",
            title=f"Document {(offset + i) // 8}",
            section=["Part", str((offset + i) % 8)],
            kind="paragraph",
            position=(offset + i) % 8,
            start=0,
            end=len(t),
            text=t,
            groups=["*"] if i % 2 else ["staff"],
            content_hash=content_hash(t),
            document_hash="bench",
        )
        for i, t in enumerate(texts)
    ]


def percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 95))


def model_vectors(texts: list[str], embedder) -> np.ndarray:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"retrieval-vectors-{len(texts)}.npy"
    if path.is_file():
        cached = np.load(path)
        if cached.shape == (len(texts), DIM):
            return cached
    out = np.empty((len(texts), DIM), dtype=np.float32)
    for start in range(0, len(texts), 1000):
        out[start : start + 1000] = embedder.embed(texts[start : start + 1000])
        print(f"  embedded {min(len(texts), start + 1000)}/{len(texts)}", flush=True)
    np.save(path, out)
    return out


async def run(args: argparse.Namespace) -> dict:
    sizes = sorted(int(s) for s in args.sizes.split(","))
    total = sizes[-1]
    print(f"generating {total} synthetic chunks ...", flush=True)
    texts, vocab = synthetic_texts(total)
    embedder = get_embedder()

    # Embedding throughput on a sample (the part that dominates real ingestion).
    sample = texts[: args.embed_sample]
    t0 = time.perf_counter()
    embedder.embed(sample)
    embed_rate = len(sample) / (time.perf_counter() - t0)
    print(f"MiniLM embedding: {embed_rate:.0f} chunks/s on {len(sample)} chunks", flush=True)

    if args.vectors == "model":
        vectors = model_vectors(texts, embedder)
    else:
        vectors = synthetic_vectors(total)

    rng = np.random.default_rng(3)
    mid = vocab[200:5000]  # mid-frequency words: realistic keyword queries, neither stopword-like nor absent
    queries = [" ".join(rng.choice(mid, size=int(rng.integers(2, 5)))) for _ in range(args.queries)]
    query_vectors = embedder.embed(queries)

    workdir = Path(tempfile.mkdtemp(prefix="interlock-bench-"))
    store = EmbeddedStore(workdir / "chunks.sqlite")
    await store.check_model(embedder.model_id, DIM)
    retriever = Retriever(store, embedder=embedder)
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "vectors": args.vectors,
        "embedding_chunks_per_s": embed_rate,
        "sizes": [],
    }
    loaded = 0
    for size in sizes:
        t0 = time.perf_counter()
        for start in range(loaded, size, args.batch):
            end = min(size, start + args.batch)
            await store.upsert(make_chunks(texts[start:end], start), vectors[start:end])
        ingest_s = time.perf_counter() - t0
        store_rate = (size - loaded) / ingest_s
        loaded = size
        t0 = time.perf_counter()
        store._vectors(TENANT)  # first query after a write reloads the tenant matrix
        reload_s = time.perf_counter() - t0
        row: dict = {
            "chunks": size,
            "store_ingest_chunks_per_s": store_rate,
            "matrix_load_s": reload_s,
            "end_to_end_ingest_chunks_per_s": 1.0 / (1.0 / store_rate + 1.0 / embed_rate),
            "modes": {},
        }
        for mode in ("bm25", "vector", "hybrid"):
            store_ms, e2e_ms, hits_n = [], [], []
            for q, qv in zip(queries, query_vectors, strict=True):
                request = SearchRequest(tenant=TENANT, groups=["staff"], query=q, vector=qv, mode=mode, k=10)
                t0 = time.perf_counter()
                hits = store.search_sync(request)
                store_ms.append((time.perf_counter() - t0) * 1000)
                hits_n.append(len(hits))
                t0 = time.perf_counter()
                await retriever.search(q, tenant=TENANT, groups=["staff"], k=10, mode=mode)
                e2e_ms.append((time.perf_counter() - t0) * 1000)
            sp50, sp95 = percentiles(store_ms)
            ep50, ep95 = percentiles(e2e_ms)
            row["modes"][mode] = {
                "store_p50_ms": sp50,
                "store_p95_ms": sp95,
                "e2e_p50_ms": ep50,
                "e2e_p95_ms": ep95,
                "mean_hits": float(np.mean(hits_n)),
            }
            print(
                f"{size:>7} {mode:<7} store p50 {sp50:6.2f} p95 {sp95:6.2f} ms | "
                f"end-to-end p50 {ep50:6.2f} p95 {ep95:6.2f} ms",
                flush=True,
            )
        report["sizes"].append(row)
    # Continuous ingestion: a small batch after the big load is merged into the cached matrix.
    extra_texts, _ = synthetic_texts(1000, seed=5)
    await store.upsert(make_chunks(extra_texts, total), synthetic_vectors(1000, seed=6))
    t0 = time.perf_counter()
    store._vectors(TENANT)
    report["refresh_after_1k_more_s"] = time.perf_counter() - t0
    print(f"matrix refresh after 1,000 more chunks: {report['refresh_after_1k_more_s']:.3f} s", flush=True)
    await store.close()
    report["load_after"] = os.getloadavg()
    report["workdir"] = str(workdir)
    return report


def tables(report: dict) -> str:
    lines = [
        f"Embedding (MiniLM int8, 2 threads): {report['embedding_chunks_per_s']:.0f} chunks/s; vectors: "
        f"{report['vectors']}; load avg before {report['machine']['load'][0]:.1f}, after {report['load_after'][0]:.1f}",
        "",
        "| chunks | store ingest chunks/s | with embedding chunks/s | matrix load s |",
        "|---|---|---|---|",
    ]
    for row in report["sizes"]:
        lines.append(
            f"| {row['chunks']:,} | {row['store_ingest_chunks_per_s']:,.0f} | "
            f"{row['end_to_end_ingest_chunks_per_s']:,.0f} | {row['matrix_load_s']:.2f} |"
        )
    lines += [
        "",
        f"Cached tenant matrix refreshed after 1,000 more chunks in {report['refresh_after_1k_more_s']:.3f} s "
        "(full load in the table above).",
        "",
        "| chunks | mode | store p50 ms | store p95 ms | end-to-end p50 ms | end-to-end p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["sizes"]:
        for mode, m in row["modes"].items():
            lines.append(
                f"| {row['chunks']:,} | {mode} | {m['store_p50_ms']:.2f} | {m['store_p95_ms']:.2f} | "
                f"{m['e2e_p50_ms']:.2f} | {m['e2e_p95_ms']:.2f} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated chunk counts (one tenant)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=2000, help="chunks per upsert transaction")
    parser.add_argument("--vectors", choices=["synthetic", "model"], default="synthetic")
    parser.add_argument("--embed-sample", type=int, default=1000)
    args = parser.parse_args()
    report = asyncio.run(run(args))
    shutil.rmtree(report.pop("workdir"), ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"retrieval-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print()
    print(tables(report))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
