"""The learned injection detector: logistic regression over MiniLM sentence embeddings.

Untrusted text is normalised and flattened like the rule detector's input, cut into windows of a few
sentences, and each window is embedded with the project's shipped all-MiniLM-L6-v2 int8 model
(interlock.kernel.embeddings). A linear classifier, trained by evals/guardrails/injection_train.py on
the BIPIA training split plus the project's own attack and benign material, scores each window; the
text scores as its most suspicious window, so an instruction hidden in the middle of a long email is
not averaged away. Weights ship beside this module (`injection_model.npz`, a few KB).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS_PATH = Path(__file__).with_name("injection_model.npz")
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+|\s+(?=[-*•]\s)")
# JSON and YAML keys: the model reads the values, so a record's field names (or an attacker's wrapper
# `{"v": …}`) do not move a window's score.
_KEYS = re.compile(r"(?m)\"[\w\- ]{1,40}\"\s*:\s*|^[ \t]*-?[ \t]*[\w\-]{1,40}:[ \t]+")


def learned_text(normalised: str) -> str:
    """What the model reads: the rule detector's normalised text without keys, flattened."""
    from interlock.policies.injection import flatten

    return flatten(_KEYS.sub(" ", normalised))


def windows(flat: str, max_words: int = 40, max_windows: int = 64) -> list[str]:
    """Sentence-packed windows of at most `max_words` words; consecutive windows share one sentence.

    `flat` is the rule detector's flattened form (lower-case, one line). Very long sentences (code,
    run-on text) are cut into word chunks. At most `max_windows` windows, spread over the text.
    """
    pieces: list[list[str]] = []
    for sentence in _SENTENCE.split(flat):
        words = sentence.split()
        for i in range(0, len(words), max_words):
            if words[i : i + max_words]:
                pieces.append(words[i : i + max_words])
    out: list[str] = []
    i = 0
    while i < len(pieces):
        window = list(pieces[i])
        j = i + 1
        while j < len(pieces) and len(window) + len(pieces[j]) <= max_words:
            window.extend(pieces[j])
            j += 1
        out.append(" ".join(window))
        if j >= len(pieces):
            break
        i = j - 1 if j - 1 > i else j  # overlap one sentence, always advance
    if len(out) > max_windows:
        step = len(out) / max_windows
        out = [out[int(k * step)] for k in range(max_windows)]
    return out


@dataclass(frozen=True)
class LinearModel:
    """Standardised logistic regression: p = sigmoid(((x - mean) / scale) . w + b)."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    threshold: float
    meta: dict[str, Any]

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        z = ((vectors - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))

    def save(self, path: Path) -> None:
        import json

        np.savez_compressed(path, weights=self.weights.astype(np.float32), bias=np.float32(self.bias),
                            mean=self.mean.astype(np.float32), scale=self.scale.astype(np.float32),
                            threshold=np.float32(self.threshold), meta=np.array(json.dumps(self.meta)))

    @classmethod
    def load(cls, path: Path) -> LinearModel:
        import json

        with np.load(path, allow_pickle=False) as data:
            return cls(weights=data["weights"], bias=float(data["bias"]), mean=data["mean"], scale=data["scale"],
                       threshold=float(data["threshold"]), meta=json.loads(str(data["meta"])))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, epochs: int = 300, lr: float = 0.5,
                 positive_weight: float | None = None) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Full-batch gradient descent with L2 on standardised features (deterministic, numpy only)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    xs = (x - mean) / scale
    n, d = xs.shape
    pw = positive_weight if positive_weight is not None else max(1.0, (y == 0).sum() / max(1, (y == 1).sum()))
    sample_w = np.where(y == 1, pw, 1.0)
    sample_w = sample_w / sample_w.sum()
    w = np.zeros(d)
    b = 0.0
    for _ in range(epochs):
        p = 1.0 / (1.0 + np.exp(-np.clip(xs @ w + b, -30, 30)))
        g = (p - y) * sample_w
        w -= lr * (xs.T @ g + l2 * w / n)
        b -= lr * g.sum()
    return w, b, mean, scale


class LearnedInjectionDetector:
    """Scores text with the shipped linear model over the shared MiniLM embedder."""

    def __init__(self, path: Path = WEIGHTS_PATH, embedder: Any = None, max_windows: int = 64) -> None:
        self.model = LinearModel.load(path)
        self._embedder = embedder
        self.max_windows = max_windows
        self._lock = threading.Lock()

    @property
    def threshold(self) -> float:
        return self.model.threshold

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    from interlock.kernel.embeddings import local_minilm

                    self._embedder = local_minilm()
        return self._embedder.embed(texts)

    def window_scores(self, flat: str) -> np.ndarray:
        parts = windows(flat, max_windows=self.max_windows)
        if not parts:
            return np.zeros(0)
        return self.model.probabilities(self._embed(parts))

    def score_flat(self, flat: str) -> float:
        scores = self.window_scores(flat)
        return float(scores.max()) if scores.size else 0.0

    def score(self, text: str) -> float:
        """Probability-like score in [0, 1] of the most suspicious window of `text`."""
        from interlock.policies.injection import normalise

        return self.score_flat(learned_text(normalise(text).text))
