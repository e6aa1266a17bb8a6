"""PII detection and reversible per-thread pseudonyms, with Presidio fully offline.

The pattern tier runs Presidio's pattern recognizers through the `no_op` NLP engine (no model) and
never touches the network: tldextract's public-suffix fetch is replaced by its bundled snapshot.
Values are replaced by stable tokens (`<EMAIL_1>`) recorded in a `PiiVault` that lives in graph
state, so a model provider only sees tokens while the trusted tool executor can rehydrate them.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from interlock.policies.schema import PiiPolicy
from pydantic import BaseModel, Field

from interlock.kernel.settings import get_settings

Direction = Literal["input", "output"]

VAULT_FORMAT = "fernet-v1"
TOKEN_RE = re.compile(r"<([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)_(\d+)>")

_lock = threading.Lock()
_patched = False


def _offline_tldextract() -> None:
    """Point Presidio's email validator at tldextract's bundled suffix list: no fetch, no cache dir."""
    global _patched
    if _patched:
        return
    import tldextract
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    email_recognizer.tldextract = _TldModule(tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None))
    _patched = True


class _TldModule:
    """Stands in for the `tldextract` module inside email_recognizer (it only calls `.extract`)."""

    def __init__(self, extractor: Any) -> None:
        self.extract = extractor


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _extra_recognizers(policy: PiiPolicy) -> list[Any]:
    from presidio_analyzer import Pattern, PatternRecognizer

    class LuhnCardRecognizer(PatternRecognizer):
        """Any 12-19 digit Luhn-valid number; Presidio's own regex misses some issuer ranges."""

        def validate_result(self, pattern_text: str) -> bool:
            digits = re.sub(r"\D", "", pattern_text)
            return 12 <= len(digits) <= 19 and len(set(digits)) > 1 and _luhn(digits)

    card = LuhnCardRecognizer(
        supported_entity="CREDIT_CARD",
        name="LuhnCardRecognizer",
        patterns=[Pattern("card_digits", r"\b\d(?:[ -]?\d){11,18}\b", 0.3)],
        supported_language=policy.language,
    )
    # NANP-style numbers with the separators and extensions that phonenumbers' matcher skips.
    phone = PatternRecognizer(
        supported_entity="PHONE_NUMBER",
        name="NanpPhoneRecognizer",
        patterns=[
            Pattern(
                "nanp",
                r"(?<![\w.])(?:(?:\+|00)?1[-.\s]?|001[-.\s])?\(?\d{3}\)?[-.\s]?\d{3}[-.\s]?\d{4}"
                r"(?:\s*(?:x|ext\.?)\s*\d{1,5})?\b",
                0.45,
            ),
            Pattern("intl", r"(?<![\w.])\+\d{1,3}(?:[-.\s]?\d{2,4}){2,5}\b", 0.45),
        ],
        supported_language=policy.language,
    )
    # Presidio validates the TLD against the public-suffix list; keep addresses at unknown TLDs
    # (internal hosts, typos) at a lower score that still clears the input threshold.
    loose_email = PatternRecognizer(
        supported_entity="EMAIL_ADDRESS",
        name="LooseEmailRecognizer",
        patterns=[Pattern("loose_email", r"\b[\w.+'-]+@[\w-]+(?:\.[\w-]+)+\b", 0.35)],
        supported_language=policy.language,
    )
    custom = [
        PatternRecognizer(
            supported_entity=p.entity,
            name=f"custom_{p.entity.lower()}_{i}",
            patterns=[Pattern(p.entity.lower(), p.regex, p.score)],
            supported_language=policy.language,
        )
        for i, p in enumerate(policy.custom_patterns)
    ]
    from interlock.policies.pii_recognizers import extra_recognizers

    return [card, phone, loose_email, *extra_recognizers(policy.language), *custom]


class PiiSpan(BaseModel):
    entity: str
    start: int
    end: int
    score: float


class PiiDetector:
    """An offline Presidio analyzer configured from pii.yaml."""

    def __init__(self, policy: PiiPolicy) -> None:
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider

        self.policy = policy
        with _lock:
            _offline_tldextract()
        # Presidio logs the no-context warning per call and may log text at debug level.
        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
        if policy.engine == "spacy":
            conf = {
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": policy.language, "model_name": policy.spacy_model}],
            }
            import spacy.util

            if not spacy.util.is_package(policy.spacy_model):
                # Presidio would try to download it; we never fetch models at run time.
                raise RuntimeError(f"pii.yaml engine=spacy needs the local spaCy model {policy.spacy_model!r}")
        else:
            conf = {"nlp_engine_name": "no_op", "models": [{"lang_code": policy.language, "model_name": "no_op"}]}
        engine = NlpEngineProvider(nlp_configuration=conf).create_engine()
        pipeline = (getattr(engine, "nlp", None) or {}).get(policy.language)
        if pipeline is not None and "parser" in getattr(pipeline, "pipe_names", ()):
            # Presidio uses tokens, lemmas and entities, never the dependency parse (a third of the cost).
            pipeline.disable_pipe("parser")
        self.analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=[policy.language])
        # Presidio's PhoneRecognizer runs phonenumbers' matcher once per region over the whole text
        # (70% of the pattern tier's time); EuPhoneRecognizer and the NANP patterns cover it for less.
        self.analyzer.registry.remove_recognizer("PhoneRecognizer")
        for recognizer in _extra_recognizers(policy):
            self.analyzer.registry.add_recognizer(recognizer)
        supported = set(self.analyzer.get_supported_entities(policy.language))
        self._entities = {
            "input": [e for e in policy.input.entities if e in supported],
            "output": [e for e in policy.output.entities if e in supported],
        }
        self._thresholds = {"input": policy.input.threshold, "output": policy.output.threshold}
        self._allow = set(policy.allow_values)

    def detect(self, text: str, direction: Direction = "input") -> list[PiiSpan]:
        """Non-overlapping spans, longest first on overlap (an email wins over the URL inside it)."""
        if not text:
            return []
        results = self.analyzer.analyze(
            text=text,
            language=self.policy.language,
            entities=self._entities[direction],
            score_threshold=self._thresholds[direction],
        )
        from interlock.policies.pii_recognizers import trim_name  # imports Presidio: only with a detector

        kept = []
        for r in results:
            if text[r.start : r.end] in self._allow:
                continue
            if r.entity_type == "PERSON":
                span = trim_name(text, r.start, r.end)
                if span is None:
                    continue
                r.start, r.end = span
            kept.append(r)
        results = kept
        results.sort(key=lambda r: (-(r.end - r.start), -r.score, r.start))
        taken: list[PiiSpan] = []
        for r in results:
            if all(r.end <= s.start or r.start >= s.end for s in taken):
                taken.append(PiiSpan(entity=r.entity_type, start=r.start, end=r.end, score=r.score))
        taken.sort(key=lambda s: s.start)
        return taken

    def label(self, entity: str) -> str:
        return self.policy.labels.get(entity, entity)


def canonical(entity: str, value: str) -> str:
    """Formatting-insensitive key: the same phone typed two ways maps to one token."""
    if entity in ("EMAIL_ADDRESS", "URL"):
        return value.strip().lower()
    digits = re.sub(r"[^0-9A-Za-z]", "", value).upper()
    return digits or value


class VaultKeyError(RuntimeError):
    """The vault in state cannot be decrypted with this server's key."""


@functools.lru_cache(maxsize=8)
def _keys_for(env_key: str, key_path: str) -> tuple[Any, bytes]:
    from cryptography.fernet import Fernet

    raw = env_key.encode() if env_key else _read_or_create_key(Path(key_path))
    try:
        fernet = Fernet(raw)
    except ValueError:
        raise VaultKeyError("the PII vault key is not a valid Fernet key") from None
    return fernet, hashlib.sha256(b"interlock-pii-index\0" + raw).digest()


def _read_or_create_key(path: Path) -> bytes:
    from cryptography.fernet import Fernet

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting together cannot both write a different key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key())
    for _ in range(100):  # another process may be between creating and writing the file
        key = path.read_bytes().strip()
        if key:
            return key
        time.sleep(0.01)
    raise VaultKeyError(f"the PII vault key file {path} is empty")


def _keys() -> tuple[Any, bytes]:
    """Key from INTERLOCK_VAULT_KEY (a Fernet key), else <home>/keys/pii-vault.key, created on first use."""
    settings = get_settings()
    env_key = settings.vault_key.get_secret_value() if settings.vault_key else ""
    return _keys_for(env_key, "" if env_key else str(settings.data_dir() / "keys" / "pii-vault.key"))


def _fernet() -> Any:
    return _keys()[0]


def _index_key(entity: str, value: str) -> str:
    """Keyed hash of the canonical value: lookups work, the index itself reveals nothing."""
    secret = _keys()[1]
    return hmac.new(secret, f"{entity}:{canonical(entity, value)}".encode(), hashlib.sha256).hexdigest()[:32]


# A user message the server sealed because the tenant does not store raw input (pii.yaml store_raw_input):
# its text is in `additional_kwargs[SEALED_KEY]`, encrypted with the vault key, until the input guard replaces
# it by the pseudonymised text.
SEALED_KEY = "interlock_sealed"
SEALED_TEXT = "[sealed: this message is stored only in pseudonymised form]"


def seal_text(text: str) -> str:
    return str(_fernet().encrypt(text.encode()).decode())


def unseal_text(sealed: str) -> str:
    from cryptography.fernet import InvalidToken

    try:
        return str(_fernet().decrypt(sealed.encode()).decode())
    except InvalidToken:
        raise VaultKeyError("a sealed message cannot be decrypted with this server's key") from None


def seal_input(graph_input: Any) -> Any:
    """The run input with every user message's text sealed (other messages and keys unchanged)."""
    if not isinstance(graph_input, dict) or "messages" not in graph_input:
        return graph_input
    messages = graph_input["messages"]
    items = messages if isinstance(messages, list) else [messages]
    sealed = [_seal_message(m) for m in items]
    return {**graph_input, "messages": sealed if isinstance(messages, list) else sealed[0]}


def _seal_message(message: Any) -> Any:
    if isinstance(message, str):
        message = {"role": "user", "content": message}
    if not isinstance(message, dict) or (message.get("role") or message.get("type")) not in ("user", "human"):
        return message
    content = message.get("content")
    if isinstance(content, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in content):
        content = "\n".join(str(b.get("text", "")) for b in content)
    if not isinstance(content, str) or not content:
        return message  # images or other parts: left as sent
    extra = dict(message.get("additional_kwargs") or {})
    extra[SEALED_KEY] = seal_text(content)
    return {**message, "content": SEALED_TEXT, "additional_kwargs": extra}


class VaultEntry(BaseModel):
    value: str
    entity: str
    trusted: bool  # first seen in trusted input (the user, the operator) rather than in untrusted content


class PiiVault(BaseModel):
    """Per-thread token <-> value map.

    In memory the values are plain; `to_state()` encrypts each value (Fernet) and keys the lookup
    index by HMAC, so the graph state, checkpoints, traces and the thread-state API only ever hold
    ciphertext. `from_state()` decrypts with this server's key.
    """

    entries: dict[str, VaultEntry] = Field(default_factory=dict)
    counters: dict[str, int] = Field(default_factory=dict)
    index: dict[str, str] = Field(default_factory=dict)  # HMAC(entity:canonical) -> token

    @classmethod
    def from_state(cls, data: Any) -> PiiVault:
        if isinstance(data, PiiVault):
            return data.model_copy(deep=True)
        if not data:
            return cls()
        if not isinstance(data, dict) or data.get("format") != VAULT_FORMAT:
            raise VaultKeyError("pii_vault in state is not an encrypted vault")
        from cryptography.fernet import InvalidToken

        fernet = _fernet()
        entries: dict[str, VaultEntry] = {}
        try:
            for token, item in (data.get("entries") or {}).items():
                value = fernet.decrypt(str(item["value"]).encode()).decode()
                entries[token] = VaultEntry(value=value, entity=item["entity"], trusted=bool(item["trusted"]))
        except InvalidToken:
            raise VaultKeyError("pii_vault cannot be decrypted with this server's key") from None
        except (KeyError, TypeError, AttributeError):
            raise VaultKeyError("pii_vault entry is malformed") from None
        return cls(entries=entries, counters=dict(data.get("counters") or {}), index=dict(data.get("index") or {}))

    def to_state(self) -> dict[str, Any]:
        fernet = _fernet()
        return {
            "format": VAULT_FORMAT,
            "entries": {
                token: {"entity": e.entity, "trusted": e.trusted, "value": fernet.encrypt(e.value.encode()).decode()}
                for token, e in self.entries.items()
            },
            "counters": dict(self.counters),
            "index": dict(self.index),
        }

    def __repr__(self) -> str:  # never print raw values
        return f"PiiVault({len(self.entries)} entries)"

    __str__ = __repr__

    def token_for(self, value: str, entity: str, label: str, trusted: bool) -> str:
        key = _index_key(entity, value)
        token = self.index.get(key)
        if token is not None:
            if trusted and not self.entries[token].trusted:
                self.entries[token] = VaultEntry(value=value, entity=entity, trusted=True)
            return token
        n = self.counters.get(label, 0) + 1
        self.counters[label] = n
        token = f"<{label}_{n}>"
        self.entries[token] = VaultEntry(value=value, entity=entity, trusted=trusted)
        self.index[key] = token
        return token

    def rehydrate(self, text: str, only_trusted: bool = False, placeholder: str | None = None) -> str:
        """Put real values back. With only_trusted, tokens for untrusted-origin values stay masked."""

        def sub(match: re.Match[str]) -> str:
            entry = self.entries.get(match.group(0))
            if entry is None:
                return match.group(0)
            if only_trusted and not entry.trusted:
                return placeholder if placeholder is not None else match.group(0)
            return entry.value

        return TOKEN_RE.sub(sub, text)

    def rehydrate_args(self, obj: Any) -> Any:
        """Rehydrate every string in a tool-argument structure (inside the trusted executor only)."""
        if isinstance(obj, str):
            return self.rehydrate(obj)
        if isinstance(obj, dict):
            return {k: self.rehydrate_args(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return type(obj)(self.rehydrate_args(v) for v in obj)
        return obj

    def values(self, trusted: bool | None = None) -> list[VaultEntry]:
        return [e for e in self.entries.values() if trusted is None or e.trusted == trusted]


class Pseudonymised(BaseModel):
    text: str
    counts: dict[str, int] = Field(default_factory=dict)  # entity -> number replaced (no values)


def pseudonymise(
    detector: PiiDetector, text: str, vault: PiiVault, trusted: bool, direction: Direction = "input"
) -> Pseudonymised:
    """Replace every detected value by its vault token (the vault is updated in place)."""
    spans = detector.detect(text, direction)
    counts: Counter[str] = Counter()
    out: list[str] = []
    pos = 0
    for span in spans:
        out.append(text[pos : span.start])
        out.append(vault.token_for(text[span.start : span.end], span.entity, detector.label(span.entity), trusted))
        counts[span.entity] += 1
        pos = span.end
    out.append(text[pos:])
    return Pseudonymised(text="".join(out), counts=dict(counts))


_detectors: dict[int, PiiDetector] = {}
_building: dict[int, threading.Lock] = {}


def detector_for(policy: PiiPolicy) -> PiiDetector:
    """One analyzer per policy object. Building one costs ~30 ms for patterns and 1-5 s with the spaCy
    model, so concurrent callers wait for the one build instead of each starting their own."""
    key = id(policy)
    with _lock:
        found = _detectors.get(key)
        building = _building.setdefault(key, threading.Lock())
    if found is not None and found.policy is policy:
        return found
    with building:
        with _lock:
            found = _detectors.get(key)
        if found is None or found.policy is not policy:
            found = PiiDetector(policy)
            with _lock:
                _detectors[key] = found
    return found



def redact_counts(spans: Iterable[PiiSpan]) -> dict[str, int]:
    return dict(Counter(s.entity for s in spans))
