"""PII beyond patterns: names, postal addresses and dates of birth with the shipped spaCy model and the
project's recognisers; phone numbers of every EU country; recall and over-redaction floors on a
fixed-seed multi-locale sample (bounded: 120 sentences, a few seconds)."""

from __future__ import annotations

from collections.abc import Iterator

import phonenumbers
import pytest
from interlock.policies.loader import load_policies
from interlock.policies.pii import PiiVault, detector_for, pseudonymise
from interlock.policies.pii_recognizers import EU_REGIONS


@pytest.fixture(scope="module", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERLOCK_HOME", str(tmp_path_factory.mktemp("pii-home")))
        yield


@pytest.fixture(scope="module")
def detector():
    policy = load_policies().pii
    assert policy.engine == "spacy"  # the shipped default: names are found by the packaged model
    return detector_for(policy)


@pytest.mark.parametrize("region", EU_REGIONS)
def test_phone_numbers_of_every_eu_country_national_and_international(detector, region: str) -> None:
    number = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    international = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    for written in (national, international):
        text = f"Please call me on {written} tomorrow."
        out = pseudonymise(detector, text, PiiVault(), trusted=True).text
        digits = "".join(ch for ch in written if ch.isdigit())
        assert digits[-6:] not in "".join(ch for ch in out if ch.isdigit()), (region, written, out)


def test_dutch_mobile_from_the_issue(detector) -> None:
    for written in ("06 12345678", "06-12345678", "+31 6 12345678", "0031 6 1234 5678"):
        spans = detector.detect(f"Mijn nummer is {written}.")
        assert any(s.entity == "PHONE_NUMBER" for s in spans), written


@pytest.mark.parametrize(
    "text, value",
    [
        ("Hi, I'm Jürgen Müller and my order is late.", "Jürgen Müller"),
        ("Contact Giuseppe Verdi about the refund.", "Giuseppe Verdi"),
        ("Customer: Małgorzata Wiśniewska-Kowalczyk", "Wiśniewska-Kowalczyk"),
        ("Ship to 4521 Oak Ridge Lane Apt. 7, Springfield, IL 62704 please.", "Oak Ridge Lane"),
        ("Adresse: Hauptstraße 12a, 10115 Berlin.", "Hauptstraße 12a"),
        ("Envoyez à 12, rue de la Paix 75002 Paris.", "rue de la Paix"),
        ("Spedite a Via Roma 10, 00184 Roma (RM).", "Via Roma 10"),
        ("Stuur het naar Kerkstraat 5, 1234 AB Amsterdam.", "Kerkstraat 5"),
        ("DOB: 17.05.1984, thanks", "17.05.1984"),
        ("I was born on March 3, 1990.", "March 3, 1990"),
        ("geboren am 3. Februar 1975 in Köln", "3. Februar 1975"),
        ("née le 3 février 1975", "3 février 1975"),
    ],
)
def test_names_addresses_and_dates_of_birth_are_pseudonymised(detector, text: str, value: str) -> None:
    out = pseudonymise(detector, text, PiiVault(), trusted=True).text
    assert value not in out, out


def test_ordinary_dates_numbers_and_products_stay(detector) -> None:
    for text in ("Order ORD-12345 shipped on 2026-05-01 from our Berlin warehouse.",
                 "The Galaxy Tab S9 is back in stock; delivery in 3 days.",
                 "Invoice INV-5521 totals 120.50 EUR; due 12/05/2026."):
        assert detector.detect(text) == [], text


def test_recall_and_over_redaction_floors_on_a_fixed_seed_sample(detector) -> None:
    from interlock.evals.guardrails.pii_eval import measure

    report = measure(detector, 120, 20261201)
    recall = report["recall"]
    assert recall["PERSON"] >= RECALL_FLOOR["PERSON"], report
    assert recall["ADDRESS"] >= RECALL_FLOOR["ADDRESS"], report
    assert recall["DOB"] >= RECALL_FLOOR["DOB"], report
    assert report["over_redaction_in_pii_sentences"] <= 0.02, report
    assert report["over_redaction_non_pii_chars"] <= 0.02, report


RECALL_FLOOR = {"PERSON": 0.95, "ADDRESS": 0.95, "DOB": 0.95}
