"""Re-ranking the fused candidates before they are cut to k.

- `FusionOrderReranker` (default) keeps the fusion order: no cross-encoder ships offline on PyPI, and
  on SciFact MMR diversity lowered nDCG (see README), so the default changes nothing.
- `MMRReranker` trades relevance for diversity (maximal marginal relevance over word-set overlap), and
  caps chunks per document, for answers that should cite several sources.
- `CrossEncoderReranker` scores (query, chunk) pairs with an ONNX cross-encoder the operator puts in a
  local directory (`model.onnx` + `tokenizer.json`, e.g. ms-marco-MiniLM-L-6-v2 exported to ONNX); it
  is used only when configured and never downloads anything.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from interlock.kernel.settings import get_settings

from .chunks import Hit

_WORD_RE = re.compile(r"\w+")


class Reranker(Protocol):
    name: str

    def rerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]: ...


class FusionOrderReranker:
    name = "fusion-order"

    def rerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]:
        return list(hits[:k])


class MMRReranker:
    """Greedy MMR: score = lam * relevance - (1 - lam) * max similarity to what is already picked."""

    name = "mmr"

    def __init__(self, lam: float = 0.7, max_per_document: int | None = None) -> None:
        if not 0.0 <= lam <= 1.0:
            raise ValueError("lam must be in [0, 1]")
        self.lam = lam
        self.max_per_document = max_per_document

    def rerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]:
        if not hits:
            return []
        scores = np.array([h.score for h in hits], dtype=np.float64)
        span = scores.max() - scores.min()
        relevance = (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
        words = [set(_WORD_RE.findall(h.text.lower())) for h in hits]
        picked: list[int] = []
        per_doc: dict[str, int] = {}
        remaining = list(range(len(hits)))
        while remaining and len(picked) < k:
            best, best_value = -1, -np.inf
            for i in remaining:
                if self.max_per_document and per_doc.get(hits[i].document_id, 0) >= self.max_per_document:
                    continue
                redundancy = max((_jaccard(words[i], words[j]) for j in picked), default=0.0)
                value = self.lam * relevance[i] - (1.0 - self.lam) * redundancy
                if value > best_value:
                    best, best_value = i, value
            if best < 0:
                break
            picked.append(best)
            remaining.remove(best)
            per_doc[hits[best].document_id] = per_doc.get(hits[best].document_id, 0) + 1
        return [hits[i].model_copy(update={"score": float(relevance[i])}) for i in picked]


def _jaccard(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


PairScorer = Callable[[str, list[str]], np.ndarray]


class CrossEncoderReranker:
    """Re-scores the top `depth` candidates with a cross-encoder; the rest keep their order after them."""

    name = "cross-encoder"

    def __init__(
        self, model_dir: Path | str | None = None, *, scorer: PairScorer | None = None, depth: int = 50
    ):
        if scorer is None:
            if model_dir is None:
                raise ValueError("CrossEncoderReranker needs model_dir or scorer")
            scorer = _OnnxPairScorer(Path(model_dir))
        self._scorer = scorer
        self.depth = depth

    def rerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]:
        head, tail = list(hits[: self.depth]), list(hits[self.depth :])
        if not head:
            return []
        scores = np.asarray(self._scorer(query, [h.text for h in head]), dtype=np.float64).reshape(-1)
        if scores.shape[0] != len(head):
            raise ValueError(f"cross-encoder returned {scores.shape[0]} scores for {len(head)} pairs")
        order = np.argsort(-scores, kind="stable")
        ranked = [head[i].model_copy(update={"score": float(scores[i])}) for i in order]
        return (ranked + tail)[:k]


class _OnnxPairScorer:
    def __init__(self, model_dir: Path, max_tokens: int = 512) -> None:
        model, tok = model_dir / "model.onnx", model_dir / "tokenizer.json"
        for f in (model, tok):
            if not f.is_file():
                raise FileNotFoundError(f"cross-encoder file missing: {f}")
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tok))
        self._tokenizer.enable_truncation(max_tokens)
        self._tokenizer.enable_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = min(2, os.cpu_count() or 1)
        self._session = ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._lock = threading.Lock()

    def __call__(self, query: str, texts: list[str]) -> np.ndarray:
        enc = self._tokenizer.encode_batch([(query, t) for t in texts])
        feed = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        }
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.array([e.type_ids for e in enc], dtype=np.int64)
        with self._lock:
            logits = self._session.run(None, feed)[0]
        return logits[:, -1] if logits.ndim == 2 else logits


def reranker_from_env() -> Reranker:
    """`INTERLOCK_RERANKER=mmr` or `INTERLOCK_CROSS_ENCODER_DIR=/path`; default keeps fusion order."""
    model_dir = get_settings().cross_encoder_dir
    if model_dir:
        return CrossEncoderReranker(model_dir)
    if get_settings().reranker.lower() == "mmr":
        return MMRReranker()
    return FusionOrderReranker()
