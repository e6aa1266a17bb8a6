"""PII beyond patterns: recall per type and over-redaction on a generated multi-locale set, latency per KB.

    python -m evals.guardrails.pii_eval [--sentences 600] [--seed 20261201] [--json OUT]

Sentences come from Faker (seeded) in eight locales: person names, postal addresses (lines joined
with ", ") and dates of birth in seven formats, embedded in English and native-language support
sentences, half of them with a cue ("my name is", "born on") and half without. A gold value counts
as caught when at least 80% of its non-space characters are inside detected spans. Over-redaction is
the share of non-gold characters that were redacted, on these sentences and on support sentences
with no personal data at all (product names, towns, order dates, amounts).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL")
MONTHS = {
    "de_DE": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
              "November", "Dezember"],
    "fr_FR": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
              "novembre", "décembre"],
    "es_ES": ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
              "noviembre", "diciembre"],
    "it_IT": ["gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto", "settembre",
              "ottobre", "novembre", "dicembre"],
    "nl_NL": ["januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus", "september", "oktober",
              "november", "december"],
}
EN_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
             "November", "December"]

TEMPLATES_EN = [
    # with a cue
    "Hi, my name is {name} and I was born on {dob}.",
    "Please send the replacement to {name}, {address}.",
    "Customer {name} (date of birth {dob}) has moved to {address}.",
    "Dear {name}, we have updated the delivery address to {address}.",
    "DOB: {dob}. Name: {name}. Address: {address}.",
    # without a cue
    "{name} called about the delayed refund yesterday.",
    "The invoice for {name} should go to {address} from now on.",
    "Yesterday {name} asked whether the warranty covers water damage; birthday {dob}.",
    "According to {name}, the parcel never arrived at {address}.",
    "I spoke with {name} this morning and confirmed the new address, {address}.",
]
TEMPLATES_NATIVE = {
    "de_DE": ["Mein Name ist {name}, geboren am {dob}, wohnhaft {address}.",
              "Bitte schicken Sie die Rechnung an {name}, {address}."],
    "fr_FR": ["Je m'appelle {name}, née le {dob}, et j'habite au {address}.",
              "Merci d'envoyer le colis à {name}, {address}."],
    "es_ES": ["Me llamo {name}, fecha de nacimiento {dob}, y vivo en {address}.",
              "Envíen el pedido a {name}, {address}, por favor."],
    "it_IT": ["Mi chiamo {name}, nato il {dob}, abito in {address}.",
              "Spedite il pacco a {name}, {address}."],
    "nl_NL": ["Mijn naam is {name}, geboren op {dob}, en ik woon op {address}.",
              "Stuur de factuur naar {name}, {address}."],
    "pl_PL": ["Nazywam się {name}, data urodzenia {dob}, mieszkam przy {address}.",
              "Proszę wysłać paczkę do {name}, {address}."],
}


def format_dob(d: date, style: int, locale: str) -> str:
    months = MONTHS.get(locale, EN_MONTHS)
    return [
        f"{d:%Y-%m-%d}", f"{d:%d/%m/%Y}", f"{d:%m/%d/%Y}", f"{d:%d.%m.%Y}",
        f"{d.day} {months[d.month - 1]} {d.year}", f"{EN_MONTHS[d.month - 1]} {d.day}, {d.year}",
        f"{d.day}. {months[d.month - 1]} {d.year}" if locale == "de_DE" else f"{d.day} {months[d.month - 1]} {d.year}",
    ][style % 7]


TYPES = {"name": "PERSON", "address": "ADDRESS", "dob": "DOB"}


def generate(n: int, seed: int) -> Iterator[tuple[str, list[tuple[str, int, int]], str]]:
    """(sentence, gold spans [(type, start, end)], locale)."""
    from faker import Faker

    fakers = {loc: Faker(loc) for loc in LOCALES}
    for i, f in enumerate(fakers.values()):
        f.seed_instance(seed + i)
    rng = random.Random(seed)
    for i in range(n):
        locale = LOCALES[i % len(LOCALES)]
        fake = fakers[locale]
        native = TEMPLATES_NATIVE.get(locale, [])
        template = rng.choice(native) if native and rng.random() < 0.3 else rng.choice(TEMPLATES_EN)
        values = {
            "name": fake.name(),
            "address": ", ".join(line.strip() for line in fake.address().splitlines() if line.strip()),
            "dob": format_dob(fake.date_of_birth(minimum_age=18, maximum_age=90), rng.randrange(7), locale),
        }
        out = ""
        gold: list[tuple[str, int, int]] = []
        pos = 0
        while True:
            start = template.find("{", pos)
            if start < 0:
                out += template[pos:]
                break
            end = template.index("}", start)
            out += template[pos:start]
            key = template[start + 1 : end]
            gold.append((TYPES[key], len(out), len(out) + len(values[key])))
            out += values[key]
            pos = end + 1
        yield out, gold, locale


NON_PII = [
    "Order ORD-{a} for {b}.{c:02d} EUR shipped from our Berlin warehouse on 2026-{m:02d}-{d:02d}.",
    "The Acme Pro Plan renews on {d} March; the Gold tier includes Express Shipping to Paris and Madrid.",
    "Tracking number 1Z{a}{b} is in transit via DHL Express; expected delivery {d}/{m:02d}/2026.",
    "Our Customer Service team in Amsterdam answers within {d} hours, Monday to Friday.",
    "Invoice INV-{a} totals {b}.{c:02d} GBP including VAT; payment is due within {d} days.",
    "The Galaxy Tab S{m} and the Pixel {d} are back in stock at the Munich and Milan stores.",
    "Returns to the Rotterdam hub take {d} business days; refunds go back to the original card.",
    "Version {m}.{d}.{c} of the Acme app fixes the login issue on Android and iOS.",
    "Please note that the New York office is closed on {d} December for the holiday.",
    "The warranty covers manufacturing defects for {m} years; water damage is excluded.",
]


def non_pii(n: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    for i in range(n):
        yield NON_PII[i % len(NON_PII)].format(a=rng.randint(1000, 99999), b=rng.randint(1, 999),
                                               c=rng.randint(0, 99), m=rng.randint(1, 12), d=rng.randint(1, 28))


def _covered(spans: list[tuple[int, int]], length: int) -> list[bool]:
    mask = [False] * length
    for s, e in spans:
        for k in range(max(0, s), min(length, e)):
            mask[k] = True
    return mask


def measure(detector: Any, n: int, seed: int) -> dict[str, Any]:
    caught: dict[str, list[bool]] = defaultdict(list)
    by_locale: dict[str, list[bool]] = defaultdict(list)
    over = non_gold = 0
    for text, gold, locale in generate(n, seed):
        spans = [(s.start, s.end) for s in detector.detect(text, "input")]
        mask = _covered(spans, len(text))
        gold_mask = _covered([(s, e) for _, s, e in gold], len(text))
        for kind, s, e in gold:
            chars = [k for k in range(s, e) if not text[k].isspace()]
            ok = sum(mask[k] for k in chars) >= 0.8 * len(chars)
            caught[kind].append(ok)
            by_locale[f"{locale}:{kind}"].append(ok)
        for k, ch in enumerate(text):
            if not gold_mask[k] and not ch.isspace():
                non_gold += 1
                over += mask[k]
    clean_hits = clean_chars = clean_redacted = 0
    clean_n = max(100, n // 2)
    entities: dict[str, int] = defaultdict(int)
    for text in non_pii(clean_n, seed):
        spans = detector.detect(text, "input")
        clean_hits += bool(spans)
        for s in spans:
            entities[s.entity] += 1
        mask = _covered([(s.start, s.end) for s in spans], len(text))
        clean_chars += sum(not c.isspace() for c in text)
        clean_redacted += sum(m and not c.isspace() for m, c in zip(mask, text, strict=True))
    return {
        "sentences": n, "seed": seed,
        "recall": {k: round(sum(v) / len(v), 4) for k, v in sorted(caught.items())},
        "counts": {k: len(v) for k, v in sorted(caught.items())},
        "recall_by_locale": {k: round(sum(v) / len(v), 3) for k, v in sorted(by_locale.items())},
        "over_redaction_in_pii_sentences": round(over / max(1, non_gold), 4),
        "non_pii_sentences": clean_n,
        "non_pii_sentences_with_a_redaction": clean_hits,
        "over_redaction_non_pii_chars": round(clean_redacted / max(1, clean_chars), 4),
        "non_pii_entities": dict(entities),
    }


def latency(detector: Any, repeats: int = 30) -> dict[str, float]:
    texts = [t for t, _, _ in generate(200, 5)] + list(non_pii(100, 5))
    blob = " ".join(texts)
    samples = [blob[k * 1024 : (k + 1) * 1024] for k in range(12)]
    for s in samples[:2]:
        detector.detect(s, "input")
    timings = []
    cpu = []
    for r in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        detector.detect(samples[r % len(samples)], "input")
        timings.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    # CPU time is reported beside wall time: on a shared machine the wall clock mostly measures the queue.
    return {"p50_ms_per_kb": round(statistics.median(timings), 2),
            "p95_ms_per_kb": round(sorted(timings)[int(0.95 * (len(timings) - 1))], 2),
            "cpu_p50_ms_per_kb": round(statistics.median(cpu), 2)}


def detectors() -> dict[str, Any]:
    from interlock.policies.loader import load_policies
    from interlock.policies.pii import PiiDetector

    policy = load_policies().pii
    return {"pattern": PiiDetector(policy.model_copy(update={"engine": "pattern"})),
            "spacy": PiiDetector(policy.model_copy(update={"engine": "spacy"}))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=600)
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--latency-repeats", type=int, default=30)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {}
    for tier, detector in detectors().items():
        report[tier] = measure(detector, args.sentences, args.seed)
        report[tier]["latency"] = latency(detector, args.latency_repeats)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
