"""Retrieval quality on any dataset in BEIR layout: nDCG@10, recall@100 and MRR@10 per search mode.

Layout: `corpus.jsonl` ({"_id", "title", "text"}), `queries.jsonl` or `queries-<split>.jsonl`
({"_id", "text"}), and `qrels/<split>.tsv` (query-id, corpus-id, score, with a header line). The corpus
is ingested into a scratch tenant (removed afterwards unless kept); results are per document (a
document's best chunk counts). A `corpus-*.npy` beside the corpus, holding one vector per corpus
document in corpus order, seeds the embedding cache after a spot check against the live embedder.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from .chunks import PUBLIC_GROUP
from .embedding_cache import text_key
from .reranking import FusionOrderReranker
from .retriever import Retriever
from .sources import Document

EVAL_MODES = ("bm25", "vector", "hybrid", "hybrid+rerank")


class BeirError(ValueError):
    """The dataset directory is not in BEIR layout."""


class BeirDataset(BaseModel):
    name: str
    split: str
    corpus: list[Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_beir(directory: Path | str, split: str | None = None) -> BeirDataset:
    root = Path(directory)
    corpus_file = root / "corpus.jsonl"
    if not corpus_file.is_file():
        raise BeirError(f"{root}: no corpus.jsonl (not a BEIR dataset)")
    qrels_dir = root / "qrels"
    splits = sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
    if not splits:
        raise BeirError(f"{root}: no qrels/*.tsv")
    if split is None:
        split = "test" if "test" in splits else splits[0]
    if split not in splits:
        raise BeirError(f"{root}: no qrels/{split}.tsv (have: {', '.join(splits)})")
    queries_file = root / f"queries-{split}.jsonl"
    if not queries_file.is_file():
        queries_file = root / "queries.jsonl"
    if not queries_file.is_file():
        raise BeirError(f"{root}: no queries-{split}.jsonl or queries.jsonl")

    corpus: list[Document] = []
    for lineno, line in enumerate(corpus_file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            corpus.append(
                Document(
                    document_id=str(rec["_id"]),
                    source=f"{root.name}#{rec['_id']}",
                    title=rec.get("title") or "",
                    text=rec["text"] or rec.get("title") or " ",
                    format="text",
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise BeirError(f"{corpus_file}:{lineno}: bad corpus record ({exc})") from exc
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in enumerate((qrels_dir / f"{split}.tsv").read_text().splitlines(), start=1):
        parts = line.split("\t")
        if lineno == 1 and not parts[-1].strip().lstrip("-").isdigit():
            continue  # header
        if len(parts) < 3:
            raise BeirError(f"{qrels_dir / f'{split}.tsv'}:{lineno}: expected query-id, corpus-id, score")
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    queries: dict[str, str] = {}
    for lineno, line in enumerate(queries_file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BeirError(f"{queries_file}:{lineno}: invalid JSON") from exc
        if str(rec.get("_id")) in qrels:
            queries[str(rec["_id"])] = rec["text"]
    if not queries:
        raise BeirError(f"{queries_file}: no query has judgements in qrels/{split}.tsv")
    return BeirDataset(name=root.name, split=split, corpus=corpus, queries=queries, qrels=qrels)


def ndcg_at(ranked: Sequence[str], rels: dict[str, int], k: int = 10) -> float:
    dcg = sum((2 ** rels.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum((2**r - 1) / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], rels: dict[str, int], k: int = 100) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at(ranked: Sequence[str], rels: dict[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


class ModeResult(BaseModel):
    mode: str
    ndcg_at_10: float
    recall_at_100: float
    mrr_at_10: float
    p50_ms: float
    p95_ms: float


class EvalReport(BaseModel):
    dataset: str
    split: str
    documents: int
    chunks: int
    queries: int
    ingest_seconds: float
    reranker: str
    results: list[ModeResult] = Field(default_factory=list)

    def table(self) -> str:
        lines = [
            f"{self.dataset} ({self.split} split): {self.documents} documents, {self.chunks} chunks, "
            f"{self.queries} queries; ingest {self.ingest_seconds:.1f} s; re-ranker {self.reranker}",
            f"{'mode':<15} {'nDCG@10':>8} {'R@100':>7} {'MRR@10':>7} {'p50 ms':>7} {'p95 ms':>7}",
        ]
        for r in self.results:
            lines.append(
                f"{r.mode:<15} {r.ndcg_at_10:8.4f} {r.recall_at_100:7.4f} {r.mrr_at_10:7.4f} "
                f"{r.p50_ms:7.1f} {r.p95_ms:7.1f}"
            )
        return "\n".join(lines)


def seed_cached_vectors(dataset_dir: Path, dataset: BeirDataset, retriever: Retriever) -> int:
    """Put a shipped `corpus-*.npy` into the embedding cache if it agrees with the live embedder."""
    cache = retriever.cache
    if cache is None:
        return 0
    embedder = retriever.embedder
    for path in sorted(dataset_dir.glob("corpus-*.npy")):
        vectors = np.load(path, mmap_mode="r")
        if vectors.ndim != 2 or vectors.shape != (len(dataset.corpus), embedder.dim):
            continue
        texts = [f"{d.title} {d.text}" if d.title else d.text for d in dataset.corpus]
        sample = [0, len(texts) // 2, len(texts) - 1]
        live = embedder.embed([texts[i] for i in sample])
        cos = (live * np.asarray(vectors[sample], dtype=np.float32)).sum(axis=1)
        if float(cos.min()) < 0.99:
            continue  # another model or another text convention: do not trust it
        cache.put_many(
            embedder.model_id,
            {text_key(t): np.asarray(vectors[i], dtype=np.float32) for i, t in enumerate(texts)},
        )
        return len(texts)
    return 0


async def evaluate(
    retriever: Retriever,
    dataset: BeirDataset,
    *,
    tenant: str = "eval-scratch",
    modes: Sequence[str] = EVAL_MODES,
    keep: bool = False,
    progress: bool | None = None,
    dataset_dir: Path | None = None,
) -> EvalReport:
    """Ingest the corpus into `tenant`, run every query in every mode, and score the rankings."""
    unknown = set(modes) - set(EVAL_MODES)
    if unknown:
        raise ValueError(f"unknown eval modes: {', '.join(sorted(unknown))}")
    if dataset_dir is not None:
        seed_cached_vectors(dataset_dir, dataset, retriever)
    await retriever.store.delete_tenant(tenant)
    ingest = await retriever.ingest_documents(dataset.corpus, tenant, [PUBLIC_GROUP], progress=progress)
    chunks = await retriever.count(tenant)
    report = EvalReport(
        dataset=dataset.name,
        split=dataset.split,
        documents=len(dataset.corpus),
        chunks=chunks,
        queries=len(dataset.queries),
        ingest_seconds=ingest.seconds,
        reranker=retriever.reranker.name,
    )
    try:
        depth = 100 if chunks == len(dataset.corpus) else 200  # enough chunks for 100 distinct documents
        for mode in modes:
            base = "hybrid" if mode == "hybrid+rerank" else mode
            rerank = mode == "hybrid+rerank"
            if mode == "hybrid" and not isinstance(retriever.reranker, FusionOrderReranker):
                rerank = False
            ndcg, recall, mrr, times = [], [], [], []
            for qid, text in dataset.queries.items():
                t0 = time.perf_counter()
                hits = await retriever.search(
                    text,
                    tenant=tenant,
                    groups=[PUBLIC_GROUP],
                    k=depth,
                    mode=base,
                    rerank=rerank,  # type: ignore[arg-type]
                )
                times.append((time.perf_counter() - t0) * 1000)
                ranked = list(dict.fromkeys(h.document_id for h in hits))
                rels = dataset.qrels.get(qid, {})
                ndcg.append(ndcg_at(ranked, rels, 10))
                recall.append(recall_at(ranked, rels, 100))
                mrr.append(mrr_at(ranked, rels, 10))
            report.results.append(
                ModeResult(
                    mode=mode,
                    ndcg_at_10=float(np.mean(ndcg)),
                    recall_at_100=float(np.mean(recall)),
                    mrr_at_10=float(np.mean(mrr)),
                    p50_ms=float(np.percentile(times, 50)),
                    p95_ms=float(np.percentile(times, 95)),
                )
            )
    finally:
        if not keep:
            await retriever.store.delete_tenant(tenant)
    return report
