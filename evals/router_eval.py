"""Accuracy and per-intent confusion of the zero-key router on evals/datasets/router.jsonl.

    python -m evals.router_eval [--dataset PATH] [--json]

The dataset is kept separate from the labelled examples in policies/intents.yaml (the script
refuses to run if any message appears in both), so this measures the router on unseen messages.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

DATASET = Path(__file__).resolve().parent / "datasets" / "router.jsonl"


class LabelledMessage(BaseModel):
    text: str
    intent: str
    route: str


def load_dataset(path: Path) -> list[LabelledMessage]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(LabelledMessage.model_validate_json(line))
        except ValidationError as exc:
            raise ValueError(f"{path}:{n}: {exc.errors()[0]['msg']}") from exc
    return rows


def evaluate(rows: list[LabelledMessage], classifier: Any | None = None) -> dict[str, Any]:
    from interlock.graphs.nodes.intent import IntentClassifier

    classifier = classifier or IntentClassifier()
    known = {e.strip().lower() for spec in classifier.policy.intents.values() for e in spec.examples}
    leaked = [r.text for r in rows if r.text.strip().lower() in known]
    if leaked:
        raise ValueError(f"{len(leaked)} evaluation messages also appear in intents.yaml, e.g. {leaked[0]!r}")
    predictions = classifier.classify_many([r.text for r in rows])
    labels = sorted({r.intent for r in rows} | {p.intent for p in predictions})
    confusion: dict[str, Counter[str]] = {label: Counter() for label in labels}
    route_hits = intent_hits = 0
    errors = []
    for row, pred in zip(rows, predictions, strict=True):
        confusion[row.intent][pred.intent] += 1
        intent_hits += pred.intent == row.intent
        route_hits += pred.route == row.route
        if pred.intent != row.intent:
            errors.append({"text": row.text, "expected": row.intent, "got": pred.intent, "score": pred.score})
    per_intent = {}
    for label in labels:
        tp = confusion[label][label]
        support = sum(confusion[label].values())
        predicted = sum(confusion[other][label] for other in labels)
        per_intent[label] = {"support": support, "recall": round(tp / support, 3) if support else None,
                             "precision": round(tp / predicted, 3) if predicted else None}
    return {"n": len(rows), "intent_accuracy": round(intent_hits / len(rows), 4),
            "route_accuracy": round(route_hits / len(rows), 4), "per_intent": per_intent,
            "confusion": {k: dict(v) for k, v in confusion.items()}, "errors": errors}


def render(report: dict[str, Any]) -> str:
    labels = list(report["confusion"])
    short = {label: label[:6] for label in labels}
    lines = [f"messages: {report['n']}   intent accuracy: {report['intent_accuracy']:.1%}   "
             f"route accuracy: {report['route_accuracy']:.1%}", "",
             "confusion (rows = expected, columns = predicted):",
             f"{'':16}" + "".join(f"{short[c]:>8}" for c in labels) + f"{'recall':>8}{'prec.':>8}"]
    for row in labels:
        cells = "".join(f"{report['confusion'][row].get(c, 0) or '.':>8}" for c in labels)
        stats = report["per_intent"][row]
        fmt = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
        lines.append(f"{row:16}{cells}{fmt(stats['recall']):>8}{fmt(stats['precision']):>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = parser.parse_args(argv)
    report = evaluate(load_dataset(args.dataset))
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
