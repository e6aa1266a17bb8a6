"""PII pseudonymisation: offline Presidio, seeded Faker data, reversible per-thread vault."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from faker import Faker
from interlock.policies.loader import load_policies
from interlock.policies.pii import PiiVault, detector_for, pseudonymise

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The PII vault key file is created under INTERLOCK_HOME: keep it in a temporary directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERLOCK_HOME", str(tmp_path_factory.mktemp("guards-home")))
        yield



@pytest.fixture(scope="module")
def detector():
    return detector_for(load_policies().pii)


def faker_sentences(n: int, seed: int) -> list[tuple[str, dict[str, str]]]:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    templates = [
        "Hi, this is {name}. Reach me at {email} or {phone}; my card {card} was charged twice.",
        "Please wire the refund to IBAN {iban}. SSN on file: {ssn}. Logged in from {ip}.",
        "{name} <{email}> called from {phone} about card ending {card} and account {iban}.",
        "Update my SSN to {ssn} and send the receipt to {email}, thanks. IP {ip}.",
    ]
    out = []
    for i in range(n):
        values = {
            "email": fake.email(), "phone": fake.phone_number(), "card": fake.credit_card_number(),
            "iban": fake.iban(), "ssn": fake.ssn(), "ip": fake.ipv4_public(),
        }
        template = templates[i % len(templates)]
        used = {k: v for k, v in values.items() if "{" + k + "}" in template}
        out.append((template.format(name=fake.name(), **values), used))
    return out


def test_hundred_faker_sentences_leave_no_raw_value(detector) -> None:
    vault = PiiVault()
    leaks = []
    for text, values in faker_sentences(100, seed=1234):
        result = pseudonymise(detector, text, vault, trusted=True)
        leaks.extend((kind, text) for kind, value in values.items() if value in result.text)
        assert vault.rehydrate(result.text) == text  # reversible
    assert leaks == []


def test_tokens_are_stable_and_formatting_insensitive(detector) -> None:
    vault = PiiVault()
    a = pseudonymise(detector, "mail Jane.Doe@Example.com or call 415-555-0132", vault, trusted=True).text
    b = pseudonymise(detector, "again: jane.doe@example.com, (415) 555-0132", vault, trusted=True).text
    assert a == "mail <EMAIL_1> or call <PHONE_1>"
    assert b == "again: <EMAIL_1>, <PHONE_1>"


def test_vault_round_trips_through_json_and_rehydrates_tool_args(detector) -> None:
    vault = PiiVault()
    pseudonymise(detector, "send to bob@corp.example.com", vault, trusted=True)
    pseudonymise(detector, "third party carol@other.example.org", vault, trusted=False)
    state = json.loads(json.dumps(vault.to_state()))
    # State, checkpoints and the thread-state API only ever see ciphertext and keyed hashes.
    dumped = json.dumps(state).lower()
    assert "bob@" not in dumped and "carol" not in dumped and "corp.example" not in dumped
    restored = PiiVault.from_state(state)
    assert restored.rehydrate_args({"to": ["<EMAIL_1>"], "n": 3}) == {"to": ["bob@corp.example.com"], "n": 3}
    assert restored.rehydrate("<EMAIL_1> <EMAIL_2>", only_trusted=True, placeholder="[x]") == "bob@corp.example.com [x]"
    assert "bob@" not in repr(restored)


def test_seen_in_trusted_input_upgrades_an_untrusted_value(detector) -> None:
    vault = PiiVault()
    pseudonymise(detector, "doc mentions dave@ext.example.net", vault, trusted=False)
    assert not vault.entries["<EMAIL_1>"].trusted
    pseudonymise(detector, "yes, email dave@ext.example.net", vault, trusted=True)
    assert vault.entries["<EMAIL_1>"].trusted


def test_detection_makes_no_network_attempt() -> None:
    # Fresh interpreter, sockets and DNS patched before Presidio or tldextract are imported.
    code = """
import socket
attempts = []
def refuse(*a, **k):
    attempts.append(a)
    raise OSError("network disabled in test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.getaddrinfo = refuse
socket.create_connection = refuse
from interlock.policies.loader import load_policies
from interlock.policies.pii import PiiVault, detector_for, pseudonymise

d = detector_for(load_policies().pii)
r = pseudonymise(d, "write to alice@example.co.uk or alice@mail.example.com", PiiVault(), trusted=True)
assert r.text == "write to <EMAIL_1> or <EMAIL_2>", r.text
print(len(attempts))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"
    assert "Traceback" not in proc.stderr


def test_vault_from_another_key_fails_clearly(detector, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.fernet import Fernet
    from interlock.policies.pii import VaultKeyError

    vault = PiiVault()
    pseudonymise(detector, "mail eve@corp.example.com", vault, trusted=True)
    state = vault.to_state()
    monkeypatch.setenv("INTERLOCK_VAULT_KEY", Fernet.generate_key().decode())
    with pytest.raises(VaultKeyError, match="cannot be decrypted"):
        PiiVault.from_state(state)
    with pytest.raises(VaultKeyError, match="not an encrypted vault"):
        PiiVault.from_state({"entries": {"<EMAIL_1>": {"value": "eve@corp.example.com"}}})
    monkeypatch.setenv("INTERLOCK_VAULT_KEY", "not-a-key")
    with pytest.raises(VaultKeyError, match="not a valid Fernet key"):
        PiiVault().to_state()
