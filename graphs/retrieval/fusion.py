"""Combining a keyword ranking and a vector ranking into one (hybrid search).

Both functions take ranked lists of (id, score), best first, and weigh the vector side by `alpha`
(0 = keyword only, 1 = vector only). An id that only the zero-weighted side found gets no score and is
dropped, so alpha=0 reproduces the keyword ranking exactly and alpha=1 the vector ranking.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def rrf(
    keyword: Sequence[tuple[K, float]], vector: Sequence[tuple[K, float]], *, alpha: float = 0.5, k: int = 60
) -> list[tuple[K, float]]:
    """Weighted reciprocal-rank fusion: sum of weight / (k + rank) over the lists an id appears in."""
    scores: dict[K, float] = {}
    for weight, ranking in ((1.0 - alpha, keyword), (alpha, vector)):
        if weight <= 0.0:
            continue
        for rank, (key, _) in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    best = _best_ranks(keyword, vector)
    return sorted(scores.items(), key=lambda kv: (-kv[1], best[kv[0]]))


def relative_score(
    keyword: Sequence[tuple[K, float]], vector: Sequence[tuple[K, float]], *, alpha: float = 0.5
) -> list[tuple[K, float]]:
    """Min-max normalise each list's scores to [0, 1], then add them weighted (Weaviate's relativeScore)."""
    scores: dict[K, float] = {}
    for weight, ranking in ((1.0 - alpha, keyword), (alpha, vector)):
        if weight <= 0.0 or not ranking:
            continue
        values = [s for _, s in ranking]
        lo, hi = min(values), max(values)
        span = hi - lo
        for key, s in ranking:
            norm = (s - lo) / span if span > 0 else 1.0
            scores[key] = scores.get(key, 0.0) + weight * norm
    best = _best_ranks(keyword, vector)
    return sorted(scores.items(), key=lambda kv: (-kv[1], best[kv[0]]))


def _best_ranks(*rankings: Sequence[tuple[K, float]]) -> dict[K, int]:
    """Tie-break: the best rank an id has in any list, so equal scores keep a stable, meaningful order."""
    best: dict[K, int] = {}
    for ranking in rankings:
        for rank, (key, _) in enumerate(ranking):
            if rank < best.get(key, 1 << 30):
                best[key] = rank
    return best
