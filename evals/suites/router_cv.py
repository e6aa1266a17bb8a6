"""Router accuracy under k-fold cross-validation on the router's own training messages.

The messages in policies/intent_training.yaml were written to measure routing on text nobody tuned for.
The shipped router also learns from them, so scoring it on them would only show that it fits its own data:
here every message is scored by a classifier trained on intents.yaml's examples and the other folds, never
on the message itself. The folds are stratified by intent and fixed by a seed, so runs are comparable.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from interlock.evals.suite import Case, Metric, Scores, Suite, flag

FOLDS = 5
SEED = 0


class RouterCvCase(Case):
    text: str
    intent: str
    route: str | None = None


def stratified_folds(labels: list[str], folds: int = FOLDS, seed: int = SEED) -> list[int]:
    """The fold of each row: rows of one intent dealt round-robin after a seeded shuffle."""
    order = np.random.default_rng(seed).permutation(len(labels))
    fold = [0] * len(labels)
    seen: dict[str, int] = defaultdict(int)
    for i in order:
        fold[int(i)] = seen[labels[i]] % folds
        seen[labels[i]] += 1
    return fold


def cross_validate(classifier: Any, folds: int = FOLDS, seed: int = SEED) -> list[tuple[str, str, str]]:
    """(message, expected intent, predicted intent) for every training-set message, each predicted by a
    classifier that never saw it."""
    policy = classifier.policy
    rows = [(text, name) for name, texts in policy.training.items() for text in texts]
    examples = [(text, name) for name, spec in policy.intents.items() for text in spec.examples]
    vectors = classifier._embed([t for t, _ in examples + rows])
    ex_vec, row_vec = vectors[: len(examples)], vectors[len(examples):]
    fold = stratified_folds([name for _, name in rows], folds, seed)
    predicted = [""] * len(rows)
    for k in range(folds):
        train = [i for i in range(len(rows)) if fold[i] != k]
        test = [i for i in range(len(rows)) if fold[i] == k]
        train_rows = examples + [rows[i] for i in train]
        train_vec = np.vstack([ex_vec, row_vec[train]])
        classifier._model = classifier.fit(train_rows, train_vec)
        for i, prediction in zip(test, classifier.classify_many([rows[i][0] for i in test]), strict=True):
            predicted[i] = prediction.intent
    classifier._model = None  # the next use trains (or loads) the full model again
    return [(text, name, predicted[i]) for i, (text, name) in enumerate(rows)]


class RouterCvSuite(Suite):
    name = "router_cv"
    description = f"intent and route of the zero-key router, {FOLDS}-fold cross-validated on its training messages"
    dataset = Path("policies/intent_training.yaml")  # informational: load() reads the policy in use
    case_model = RouterCvCase
    metrics = (
        Metric("intent_accuracy", "intent_correct", tolerance=0.02),
        Metric("route_accuracy", "route_correct", tolerance=0.02),
    )
    invariants: ClassVar[dict[str, str]] = {}

    def load(self) -> list[Case]:
        from interlock.policies.graph_schema import load_intents_policy

        policy = load_intents_policy()
        cases: list[Case] = []
        for name, texts in policy.training.items():
            for text in texts:
                digest = hashlib.sha1(f"{name}:{text}".encode()).hexdigest()[:10]
                cases.append(RouterCvCase(id=f"{self.name}-{digest}", text=text, intent=name,
                                          route=policy.intents[name].route))
        return cases

    async def prepare(self, env: Any, cases: list[Case]) -> None:
        import asyncio

        from interlock.graphs.nodes.intent import IntentClassifier

        classifier = IntentClassifier()
        results = await asyncio.to_thread(cross_validate, classifier)
        routes = {name: spec.route for name, spec in classifier.policy.intents.items()}
        self._predicted = {(text, name): (got, routes[got]) for text, name, got in results}

    async def run(self, env: Any, case: Case) -> dict[str, Any]:
        assert isinstance(case, RouterCvCase)
        intent, route = self._predicted[(case.text, case.intent)]
        return {"intent": intent, "route": route}

    def score(self, outputs: dict[str, Any], case: Case) -> Scores:
        assert isinstance(case, RouterCvCase)
        intent_ok = outputs.get("intent") == case.intent
        return {"intent_correct": flag(intent_ok), "route_correct": flag(outputs.get("route") == case.route),
                "pass": flag(outputs.get("route") == case.route)}
