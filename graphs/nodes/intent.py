"""Zero-key intent routing: a logistic-regression classifier over embeddings of the labelled messages.

Chosen on cross-validated evidence (`interlock eval router-cv`, a new set of messages written without looking
at the examples): nearest centroid fitted its own examples (0.94 on them, 0.86 on unseen messages) where a
softmax regression over the same MiniLM embeddings generalises (about 0.96 under 5-fold cross-validation).
A few surface features (an order, invoice or ticket id, an email or phone number) sit beside the embedding,
because "how do refunds work" and "refund ORD-1005" differ mostly by the id.

The probability margin over the runner-up is the confidence. A message far from every intent (cosine to
each centroid below `min_similarity`) goes to the fallback intent. With a model configured, a confident
classifier answer is still used first because it is free.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from interlock.graphs import prompts
from interlock.graphs.models import ModelGateway, ModelsUnavailable
from interlock.graphs.nodes.multi_intent import ACTION_ROUTES, find_question_and_request
from interlock.graphs.state import InterlockState, last_user_text
from interlock.policies.graph_schema import IntentsPolicy, load_intents_policy
from langchain_core.messages import HumanMessage, SystemMessage

# Weights trained on the shipped policy, so a server does not embed ~500 messages before its first answer.
# Another policy (edited intents, INTERLOCK_POLICY_DIR) trains in memory at first use instead.
SHIPPED_MODEL = Path(__file__).with_name("intent_model.npz")
_VERSION = "logreg-v2"
FEATURES = (r"\bORD-?\s?\d{3,}", r"\bINV-?\d{3,}", r"\b(?:TCK|T)-\d{3,}", r"<EMAIL>", r"<PHONE>", r"\bticket\b")
FEATURE_WEIGHT = 0.5
# The router classifies after the input guard, which has replaced emails and phone numbers with placeholders
# (<EMAIL_1>); training messages hold real values. Both are mapped to one token, so they look alike.
_EMAIL = re.compile(r"<EMAIL_\d+>|[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"<PHONE_\d+>|\+?\d[\d\s().-]{6,}\d")


def normalise(text: str) -> str:
    return _PHONE.sub("<PHONE>", _EMAIL.sub("<EMAIL>", text))


def surface_features(texts: list[str]) -> np.ndarray:
    return np.array([[FEATURE_WEIGHT if re.search(p, t, re.IGNORECASE) else 0.0 for p in FEATURES] for t in texts],
                    dtype=np.float32)


def train_softmax(x: np.ndarray, y: np.ndarray, classes: int, *, l2: float = 1e-4, iterations: int = 1000,
                  rate: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by full-batch gradient descent (deterministic, numpy only)."""
    weights = np.zeros((x.shape[1], classes), dtype=np.float32)
    bias = np.zeros(classes, dtype=np.float32)
    onehot = np.eye(classes, dtype=np.float32)[y]
    for _ in range(iterations):
        logits = x @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        grad = (probs - onehot) / len(x)
        weights -= rate * (x.T @ grad + l2 * weights)
        bias -= rate * grad.sum(axis=0)
    return weights, bias


@dataclass(frozen=True)
class IntentPrediction:
    intent: str
    route: str
    score: float
    margin: float
    confident: bool
    scores: dict[str, float]


@dataclass(frozen=True)
class IntentModel:
    names: list[str]
    weights: np.ndarray
    bias: np.ndarray
    centroids: np.ndarray
    digest: str


class IntentClassifier:
    def __init__(self, policy: IntentsPolicy | None = None, embedder: object | None = None) -> None:
        self.policy = policy or load_intents_policy()
        self._embedder = embedder
        self._names: list[str] = list(self.policy.intents)
        self._model: IntentModel | None = None
        self._lock = threading.Lock()

    @property
    def embedder(self) -> object:
        if self._embedder is None:
            from interlock.graphs.retrieval.embeddings import get_embedder

            self._embedder = get_embedder()
        return self._embedder

    def _embed(self, texts: list[str]) -> np.ndarray:
        vectors = np.asarray(self.embedder.embed([normalise(t) for t in texts]), dtype=np.float32)  # type: ignore[attr-defined]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def digest(self) -> str:
        """Identifies what the weights were trained on: the labelled messages, the intents and the method."""
        h = hashlib.sha256(_VERSION.encode())
        h.update(repr(FEATURES).encode())
        for text, name in self.policy.labelled():
            h.update(f"{name}\x1f{text}\x1e".encode())
        h.update("|".join(self._names).encode())
        return h.hexdigest()

    def fit(self, rows: list[tuple[str, str]], vectors: np.ndarray | None = None) -> IntentModel:
        """Train on (message, intent) rows; `vectors` are their embeddings when already computed."""
        texts = [t for t, _ in rows]
        emb = self._embed(texts) if vectors is None else vectors
        y = np.array([self._names.index(name) for _, name in rows])
        x = np.hstack([emb, surface_features([normalise(t) for t in texts])])
        weights, bias = train_softmax(x, y, len(self._names))
        centroids = []
        for i in range(len(self._names)):
            mean = emb[y == i].mean(axis=0) if (y == i).any() else np.zeros(emb.shape[1], dtype=np.float32)
            centroids.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        return IntentModel(self._names, weights, bias, np.stack(centroids).astype(np.float32), self.digest())

    def model(self) -> IntentModel:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load_shipped() or self.fit(self.policy.labelled())
        return self._model

    def _load_shipped(self) -> IntentModel | None:
        if not SHIPPED_MODEL.exists():
            return None
        with np.load(SHIPPED_MODEL, allow_pickle=False) as data:
            if str(data["digest"]) != self.digest():
                return None
            return IntentModel(self._names, data["weights"], data["bias"], data["centroids"], str(data["digest"]))

    def save(self, path: Path = SHIPPED_MODEL) -> None:
        model = self.model()
        np.savez_compressed(path, weights=model.weights, bias=model.bias, centroids=model.centroids,
                            digest=np.array(model.digest))

    def classify(self, text: str) -> IntentPrediction:
        return self.classify_many([text])[0]

    def classify_many(self, texts: list[str]) -> list[IntentPrediction]:
        model = self.model()
        cleaned = [t.strip()[:2000] or "(empty)" for t in texts]
        emb = self._embed(cleaned)
        logits = np.hstack([emb, surface_features([normalise(t) for t in cleaned])]) @ model.weights + model.bias
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        nearest = (emb @ model.centroids.T).max(axis=1)
        out = []
        for row, similarity in zip(probs, nearest, strict=True):
            order = np.argsort(-row)
            best = float(row[order[0]])
            second = float(row[order[1]]) if len(order) > 1 else 0.0
            name = self._names[int(order[0])]
            margin = best - second
            far = float(similarity) < self.policy.min_similarity
            if far:
                name = self.policy.fallback_intent
            out.append(IntentPrediction(
                intent=name, route=self.policy.intents[name].route, score=round(best, 4), margin=round(margin, 4),
                confident=not far and margin >= self.policy.min_confidence,
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

    def __init__(self, gateway: ModelGateway, classifier: IntentClassifier | None = None, *,
                 retriever: Any | None = None, embedder: Any | None = None, split_questions: bool = False) -> None:
        self.gateway = gateway
        self._classifier = classifier
        self.retriever = retriever
        self._embedder = embedder
        # The router answers a knowledge question asked beside a request (graphs/nodes/multi_intent.py).
        self.split_questions = split_questions

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
        continued = waiting.get("intent") in intents and (len(text) < 40 or not prediction.confident)
        if continued:
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
        if route == "refuse" and self.retriever is not None:
            # Whatever the tenant has ingested widens what counts as a knowledge question (RAG still refuses
            # when its passages do not answer it).
            if await self._evidence(state, text) >= classifier.policy.knowledge_evidence:
                intent, route = "knowledge", intents["knowledge"].route
        question = request = None
        if self.split_questions and not continued:
            split = await find_question_and_request(
                classifier, text,
                acting=(intent, prediction.margin if intent == prediction.intent else 1.0)
                if route in ACTION_ROUTES else None,
                evidence=(lambda clause: self._evidence(state, clause)) if self.retriever is not None else None,
                evidence_floor=classifier.policy.knowledge_evidence)
            if split is not None:
                intent, route = split.intent, intents[split.intent].route
                question, request = split.question, split.request
        return {"intent": intent, "route": route, "confidence": prediction.margin, "mode": mode, "question": question,
                "request": request}

    async def _evidence(self, state: InterlockState, text: str) -> float:
        """How closely the tenant's own documents match `text` (graphs/rag.knowledge_evidence)."""
        from interlock.graphs.rag import knowledge_evidence

        if self._embedder is None:
            self._embedder = self.classifier.embedder
        principal = state.get("principal") or {}
        return await knowledge_evidence(self.retriever, self._embedder, text, tenant=state.get("tenant", ""),
                                        groups=list(principal.get("groups") or []))


if __name__ == "__main__":  # python -m interlock.graphs.nodes.intent: retrain the shipped weights
    classifier = IntentClassifier(load_intents_policy())
    classifier._model = classifier.fit(classifier.policy.labelled())
    classifier.save()
    print(f"wrote {SHIPPED_MODEL} ({len(classifier.policy.labelled())} messages)")
