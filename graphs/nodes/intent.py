"""Zero-key intent routing: nearest centroid over embeddings of the labelled examples.

Each intent's centroid is the normalised mean of its examples' embeddings (policies/intents.yaml).
A message goes to the closest centroid by cosine; the margin over the runner-up is the confidence.
With a model configured, a confident classifier answer is still used first because it is free.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from interlock.graphs import prompts
from interlock.graphs.models import ModelGateway, ModelsUnavailable
from interlock.graphs.state import InterlockState, last_user_text
from interlock.policies.graph_schema import IntentsPolicy, load_intents_policy
from langchain_core.messages import HumanMessage, SystemMessage


@dataclass(frozen=True)
class IntentPrediction:
    intent: str
    route: str
    score: float
    margin: float
    confident: bool
    scores: dict[str, float]


class IntentClassifier:
    def __init__(self, policy: IntentsPolicy | None = None, embedder: object | None = None) -> None:
        self.policy = policy or load_intents_policy()
        self._embedder = embedder
        self._names: list[str] = list(self.policy.intents)
        self._centroids: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def embedder(self) -> object:
        if self._embedder is None:
            from interlock.graphs.retrieval.embeddings import get_embedder

            self._embedder = get_embedder()
        return self._embedder

    def _embed(self, texts: list[str]) -> np.ndarray:
        vectors = np.asarray(self.embedder.embed(texts), dtype=np.float32)  # type: ignore[attr-defined]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def centroids(self) -> np.ndarray:
        if self._centroids is None:
            with self._lock:
                if self._centroids is None:
                    rows = []
                    for name in self._names:
                        mean = self._embed(self.policy.intents[name].examples).mean(axis=0)
                        rows.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
                    self._centroids = np.stack(rows)
        return self._centroids

    def classify(self, text: str) -> IntentPrediction:
        return self.classify_many([text])[0]

    def classify_many(self, texts: list[str]) -> list[IntentPrediction]:
        centroids = self.centroids()
        cleaned = [t.strip()[:2000] or "(empty)" for t in texts]
        sims = self._embed(cleaned) @ centroids.T
        out = []
        for row in sims:
            order = np.argsort(-row)
            best, second = float(row[order[0]]), float(row[order[1]]) if len(order) > 1 else -1.0
            name = self._names[int(order[0])]
            margin = best - second
            if best < self.policy.min_similarity:
                name = self.policy.fallback_intent
            out.append(IntentPrediction(
                intent=name, route=self.policy.intents[name].route, score=round(best, 4), margin=round(margin, 4),
                confident=best >= self.policy.min_similarity and margin >= self.policy.min_confidence,
                scores={n: round(float(s), 4) for n, s in zip(self._names, row, strict=True)}))
        return out

    async def aclassify(self, text: str) -> IntentPrediction:
        return await asyncio.to_thread(self.classify, text)


_default: IntentClassifier | None = None
_default_lock = threading.Lock()


def default_classifier() -> IntentClassifier:
    """The process-wide classifier over policies/intents.yaml (centroids computed once)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = IntentClassifier()
    return _default


class Classify:
    """The routing node: the classifier first (free); a router-tier model only when it is not confident,
    and if that model fails the classifier's answer stands (degraded)."""

    def __init__(self, gateway: ModelGateway, classifier: IntentClassifier | None = None) -> None:
        self.gateway = gateway
        self._classifier = classifier

    @property
    def classifier(self) -> IntentClassifier:
        if self._classifier is None:
            self._classifier = default_classifier()
        return self._classifier

    async def __call__(self, state: InterlockState) -> dict[str, Any]:
        classifier = self.classifier
        intents = classifier.policy.intents
        text = last_user_text(state)
        mode = "model" if any(self.gateway.has(t) for t in ("router", "planner", "answer")) else "zero-key"
        prediction = await classifier.aclassify(text)
        intent, route = prediction.intent, prediction.route
        # A short answer to "which order?" continues the playbook that asked for it.
        waiting = state.get("awaiting_input") or {}
        if waiting.get("intent") in intents and (len(text) < 40 or not prediction.confident):
            intent = waiting["intent"]
            route = intents[intent].route
        elif not prediction.confident and self.gateway.has("router"):
            listing = "\n".join(f"- {name}: {spec.description}" for name, spec in intents.items())
            try:
                reply, _ = await self.gateway.ainvoke(
                    "router", [SystemMessage(prompts.ROUTER.format(intents=listing)), HumanMessage(text)],
                    tenant=state.get("tenant", ""), feature="router")
                answer = str(reply.content).strip().strip("`'\". ").lower()
                if answer in intents:
                    intent, route = answer, intents[answer].route
            except ModelsUnavailable:
                mode = "degraded"
        return {"intent": intent, "route": route, "confidence": prediction.margin, "mode": mode}
