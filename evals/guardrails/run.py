"""Guardrail evals: injection detection and false positives, PII recall per entity, guard latency per KB.

    python -m evals.guardrails.run [--bipia DIR] [--pii-sentences N] [--json OUT]

Sets: the project's own attacks/benign texts (datasets/*.jsonl, each attack also in six obfuscated
forms), and the BIPIA training split (microsoft/BIPIA, MIT; attacks inserted at the start, middle
or end of clean email and code contexts; the clean contexts are the benign set). Caveat: every
BIPIA training instruction was read while the rules were written, so BIPIA numbers are "seen during
tuning"; the tune/held-out columns (first 3 / last 2 instructions per category) only show how much
the score rests on individual instructions. Everything runs offline.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from interlock.policies.injection import InjectionDetector
from interlock.policies.loader import load_policies
from interlock.policies.pii import PiiVault, detector_for, pseudonymise

from interlock.kernel.settings import get_settings

HERE = Path(__file__).resolve().parent
DEFAULT_BIPIA = get_settings().bipia_dir or HERE.parents[2] / "shared" / "data" / "bipia"
if not DEFAULT_BIPIA.is_dir():
    DEFAULT_BIPIA = Path("/work/shared/data/bipia")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def obfuscations(text: str) -> dict[str, str]:
    return {
        "zero_width": "\u200b".join(text),
        "homoglyph": text.translate(str.maketrans({"a": "а", "e": "е", "o": "о", "i": "і", "c": "с", "p": "р"})),
        "json_escaped": json.dumps({"v": text}, ensure_ascii=True).replace(" ", "\\u0020"),
        "base64": "Attachment: " + base64.b64encode(text.encode()).decode(),
        "html_entities": "".join(f"&#{ord(c)};" for c in text),
        "fullwidth": "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text),
    }


def rate(hits: int, n: int) -> str:
    return f"{hits}/{n} = {hits / n:.3f}" if n else "n/a"


def eval_project(detector: InjectionDetector) -> dict[str, Any]:
    attacks = read_jsonl(HERE / "datasets" / "attacks.jsonl")
    benign = read_jsonl(HERE / "datasets" / "benign.jsonl")
    by_form: dict[str, list[bool]] = defaultdict(list)
    missed: list[str] = []
    for item in attacks:
        plain = detector.scan(item["text"], item["kind"]).flagged
        by_form["plain"].append(plain)
        if not plain:
            missed.append(item["id"])
        for form, text in obfuscations(item["text"]).items():
            # An obfuscated form counts as caught when it is flagged exactly like the plain form.
            by_form[form].append(detector.scan(text, item["kind"]).flagged == plain and plain)
    false_pos = [b["id"] for b in benign if detector.scan(b["text"], b["kind"]).flagged]
    plain_hits = sum(by_form["plain"])
    return {
        "attacks": len(attacks),
        "detection_plain": plain_hits / len(attacks),
        "detection_by_form": {k: sum(v) / len(v) for k, v in by_form.items()},
        "obfuscated_same_as_plain": all(
            detector.scan(t, a["kind"]).flagged == detector.scan(a["text"], a["kind"]).flagged
            for a in attacks for t in obfuscations(a["text"]).values()
        ),
        "missed_plain": missed,
        "benign": len(benign),
        "false_positive_rate": len(false_pos) / len(benign),
        "false_positives": false_pos,
    }


def _insert(context: str, attack: str, where: str) -> str:
    if where == "start":
        return f"{attack}\n{context}"
    if where == "end":
        return f"{context}\n{attack}"
    cut = context.find(". ", len(context) // 2)
    cut = len(context) // 2 if cut < 0 else cut + 2
    return f"{context[:cut]}{attack} {context[cut:]}"


def _code_context(row: dict[str, Any]) -> str:
    return "\n".join(row.get("context") or [])


def eval_bipia(detector: InjectionDetector, directory: Path) -> dict[str, Any] | None:
    if not (directory / "text_attack_train.json").is_file():
        return None
    text_attacks = json.loads((directory / "text_attack_train.json").read_text())
    code_attacks = json.loads((directory / "code_attack_train.json").read_text())
    emails = [r["context"] for r in read_jsonl(directory / "email_train.jsonl")]
    code = [_code_context(r) for r in read_jsonl(directory / "code_train.jsonl")]
    out: dict[str, Any] = {}
    for name, attacks, contexts in (("text_in_email", text_attacks, emails), ("code_in_code", code_attacks, code)):
        per_cat: dict[str, list[bool]] = defaultdict(list)
        split: dict[str, list[bool]] = defaultdict(list)
        for cat, items in attacks.items():
            for idx, attack in enumerate(items):
                for j, where in enumerate(("start", "middle", "end")):
                    ctx = contexts[(idx * 3 + j + len(per_cat)) % len(contexts)]
                    flagged = detector.scan(_insert(ctx, attack, where), "retrieved").flagged
                    per_cat[cat].append(flagged)
                    split["tune" if idx < 3 else "held_out"].append(flagged)
        flat = [f for v in per_cat.values() for f in v]
        fps = sum(detector.scan(c, "retrieved").flagged for c in contexts)
        out[name] = {
            "samples": len(flat),
            "detection": sum(flat) / len(flat),
            "detection_tune": sum(split["tune"]) / len(split["tune"]),
            "detection_held_out": sum(split["held_out"]) / len(split["held_out"]),
            "by_category": {k: sum(v) / len(v) for k, v in per_cat.items()},
            "clean_contexts": len(contexts),
            "false_positive_rate": fps / len(contexts),
        }
    return out


def faker_pii(n: int, seed: int) -> Iterable[tuple[str, dict[str, str]]]:
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    templates = [
        "Hi, I'm {name}. My email is {EMAIL} and my phone is {PHONE}.",
        "Card {CARD} was declined; please use IBAN {IBAN} for the refund.",
        "SSN {SSN} on the application; last login from {IP}.",
        "Contact {name} at {PHONE} or {EMAIL} about invoice 4471.",
        "Wire to {IBAN}, confirm by mail to {EMAIL}; card on file {CARD}.",
        "Applicant {name}, social security number {SSN}, phone {PHONE}, ip {IP}.",
    ]
    for i in range(n):
        values = {"EMAIL": fake.email(), "PHONE": fake.phone_number(), "CARD": fake.credit_card_number(),
                  "IBAN": fake.iban(), "SSN": fake.ssn(), "IP": fake.ipv4() if i % 2 else fake.ipv6()}
        template = templates[i % len(templates)]
        used = {k: v for k, v in values.items() if "{" + k + "}" in template}
        yield template.format(name=fake.name(), **values), used


def eval_pii(n: int, seed: int) -> dict[str, Any]:
    detector = detector_for(load_policies().pii)
    found: dict[str, list[bool]] = defaultdict(list)
    leaked_sentences = 0
    for text, values in faker_pii(n, seed):
        result = pseudonymise(detector, text, PiiVault(), trusted=True)
        leaked = False
        for entity, value in values.items():
            ok = value not in result.text
            found[entity].append(ok)
            leaked |= not ok
        leaked_sentences += leaked
    return {
        "sentences": n,
        "seed": seed,
        "recall": {k: sum(v) / len(v) for k, v in sorted(found.items())},
        "counts": {k: len(v) for k, v in sorted(found.items())},
        "sentences_with_a_raw_value_left": leaked_sentences,
    }


def non_pii(n: int, seed: int) -> Iterable[str]:
    """Support-desk sentences full of numbers that are not personal data."""
    import random

    rng = random.Random(seed)
    templates = [
        "Order ORD-{a} for ${b},{c:03d}.{d:02d} shipped on 2026-{m:02d}-{day:02d} at {h:02d}:{mi:02d}.",
        "Invoice INV-{a}{d:02d} total {b}.{d:02d} EUR, VAT {d}%, due in {day} days.",
        "Tracking number 1Z{a}{b}{c} is in transit; parcel weight {d}.{m} kg.",
        "SKU {a}-{c:03d} is back in stock: {b} units in warehouse {m}.",
        "Ticket #{a}{b}: version {m}.{day}.{d} fixed the sync issue (build {a}{c:03d}).",
        "Refund of ${d}.{m:02d} for order {a}{b} was approved on {day:02d}/{m:02d}/2026.",
    ]
    for i in range(n):
        yield templates[i % len(templates)].format(
            a=rng.randint(1000, 99999), b=rng.randint(1, 999), c=rng.randint(0, 999), d=rng.randint(1, 99),
            m=rng.randint(1, 12), day=rng.randint(1, 28), h=rng.randint(0, 23), mi=rng.randint(0, 59))


def eval_over_redaction(n: int, seed: int) -> dict[str, Any]:
    detector = detector_for(load_policies().pii)
    by_entity: dict[str, int] = defaultdict(int)
    hit = 0
    for text in non_pii(n, seed):
        spans = detector.detect(text, "input")
        hit += bool(spans)
        for span in spans:
            by_entity[span.entity] += 1
    return {"sentences": n, "sentences_with_a_redaction": hit, "rate": hit / n, "spans_by_entity": dict(by_entity)}


def eval_latency(detector: InjectionDetector, bipia: Path, repeats: int) -> dict[str, Any]:
    pii = detector_for(load_policies().pii)
    pool = [r["context"] for r in read_jsonl(bipia / "email_train.jsonl")] if (bipia / "email_train.jsonl").is_file() \
        else [t["text"] for t in read_jsonl(HERE / "datasets" / "benign.jsonl")]
    pii_bits = [text for text, _ in faker_pii(40, 99)]
    blob = ""
    i = 0
    while len(blob.encode()) < 64 * 1024:
        blob += pool[i % len(pool)] + "\n" + pii_bits[i % len(pii_bits)] + "\n"
        i += 1
    results: dict[str, Any] = {}
    for kb in (1, 10):
        samples = [blob[k * 1024 * kb : (k + 1) * 1024 * kb] for k in range(0, 6)]
        for s in samples[:2]:  # warm-up
            pii.detect(s)
            detector.scan(s, "retrieved")
        timings: dict[str, list[float]] = {"pii": [], "injection": [], "total": []}
        for r in range(repeats):
            s = samples[r % len(samples)]
            t0 = time.perf_counter()
            pii.detect(s)
            t1 = time.perf_counter()
            detector.scan(s, "retrieved")
            t2 = time.perf_counter()
            timings["pii"].append((t1 - t0) * 1000 / kb)
            timings["injection"].append((t2 - t1) * 1000 / kb)
            timings["total"].append((t2 - t0) * 1000 / kb)
        results[f"{kb}KB"] = {
            k: {"p50_ms_per_kb": round(statistics.median(v), 2),
                "p95_ms_per_kb": round(sorted(v)[int(0.95 * (len(v) - 1))], 2)}
            for k, v in timings.items()
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bipia", type=Path, default=DEFAULT_BIPIA)
    parser.add_argument("--pii-sentences", type=int, default=600)
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--latency-repeats", type=int, default=60)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if get_settings().vault_key is None:
        # The eval's vaults are thrown away: never create a key file in the developer's data.
        from cryptography.fernet import Fernet

        os.environ["INTERLOCK_VAULT_KEY"] = Fernet.generate_key().decode()

    policies = load_policies()
    detector = InjectionDetector(policies.injection)
    report: dict[str, Any] = {"policy_hash": policies.hash}
    report["project"] = eval_project(detector)
    report["bipia_train"] = eval_bipia(detector, args.bipia)
    report["pii"] = eval_pii(args.pii_sentences, args.seed)
    report["pii_over_redaction"] = eval_over_redaction(300, args.seed)
    report["latency"] = eval_latency(detector, args.bipia, args.latency_repeats)

    p = report["project"]
    print(f"policy set {policies.hash[:12]}")
    print("== injection, project sets")
    print(f"  detection (plain)        {rate(round(p['detection_plain'] * p['attacks']), p['attacks'])}")
    for form, value in p["detection_by_form"].items():
        print(f"    {form:<14}         {value:.3f}")
    print(f"  obfuscated == plain      {p['obfuscated_same_as_plain']}")
    print(f"  missed (plain)           {', '.join(p['missed_plain']) or '-'}")
    print(f"  false positives (benign) {rate(len(p['false_positives']), p['benign'])} {p['false_positives']}")
    if report["bipia_train"]:
        print("== injection, BIPIA train (attack inserted at start/middle/end of a clean context)")
        for name, b in report["bipia_train"].items():
            print(f"  {name}: detection {b['detection']:.3f} over {b['samples']} "
                  f"(tune {b['detection_tune']:.3f}, held-out {b['detection_held_out']:.3f}); "
                  f"false positives on {b['clean_contexts']} clean contexts {b['false_positive_rate']:.3f}")
            for cat, value in b["by_category"].items():
                print(f"    {cat:<36} {value:.3f}")
    else:
        print(f"== BIPIA not found at {args.bipia}; skipped")
    q = report["pii"]
    print(f"== PII recall per entity (seeded Faker, {q['sentences']} sentences, seed {q['seed']})")
    for entity, value in q["recall"].items():
        print(f"  {entity:<6} {value:.3f} (n={q['counts'][entity]})")
    print(f"  sentences with a raw value left: {q['sentences_with_a_raw_value_left']}")
    o = report["pii_over_redaction"]
    print(f"== PII over-redaction on {o['sentences']} non-PII support sentences (order ids, amounts, tracking)")
    print(f"  sentences with a redaction: {rate(o['sentences_with_a_redaction'], o['sentences'])} "
          f"{o['spans_by_entity']}")
    print("== latency, pattern tier (ms per KB)")
    for size, parts in report["latency"].items():
        line = ", ".join(f"{k} p50 {v['p50_ms_per_kb']} p95 {v['p95_ms_per_kb']}" for k, v in parts.items())
        print(f"  {size}: {line}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
