"""Checks on what leaves the server: PII leak filter, egress filter, system-prompt leakage, citations.

The leak filter combines Presidio on the output with exact and fuzzy matching of values seen in
untrusted context (the untrusted-origin entries of the PII vault, plus any extra values given); phone numbers
are also compared by their national digits, so another format of the same number (+31 6 1234 5678, 0612345678,
(555) 010-2345, 555.010.2345) is caught.
`StreamingOutputFilter` applies the same filter to streamed chunks and holds back any tail that
could still turn into a match, so streaming never leaks what the full-text filter removes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from interlock.policies.egress import decoded_view, egress_spans, unclosed_tag_start
from interlock.policies.egress import host_allowed as host_allowed  # re-exported for tool_rules
from interlock.policies.pii import TOKEN_RE, PiiDetector, PiiVault, canonical
from pydantic import BaseModel, Field
from rapidfuzz import fuzz

FindingKind = Literal["pii", "untrusted_value", "egress_link", "egress_image", "pseudonym"]


class Redaction(BaseModel):
    start: int
    end: int
    replacement: str
    kind: FindingKind
    entity: str = ""


class Finding(BaseModel):
    """What was removed, without the removed value."""

    kind: FindingKind
    entity: str = ""
    count: int = 1


class FilteredText(BaseModel):
    text: str
    findings: list[Finding] = Field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.findings)


# --- egress (policies/egress.py) ---------------------------------------------------------------


def egress_redactions(text: str, allowlist: Sequence[str]) -> list[Redaction]:
    """Links, images and HTML that point at hosts not on the allowlist (any syntax, any encoding)."""
    return [Redaction(start=s.start, end=s.end, replacement=s.replacement, kind=s.kind)  # type: ignore[arg-type]
            for s in egress_spans(text, allowlist)]


# --- untrusted values: exact and fuzzy ---------------------------------------------------------


def _skeleton(text: str) -> tuple[str, list[int]]:
    """Lower-cased alphanumerics with a map back to positions, so '555 123-4567' matches '5551234567'."""
    chars: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        if ch.isalnum():
            chars.append(ch.lower())
            index.append(i)
    return "".join(chars), index


def value_redactions(
    text: str, values: Iterable[tuple[str, str]], threshold: float, min_length: int
) -> list[Redaction]:
    """Occurrences of (entity, value) pairs in text: exact after normalisation, then fuzzy."""
    skel, index = _skeleton(text)
    if not skel:
        return []
    masked = list(skel)
    out: list[Redaction] = []

    def add(i: int, j: int, entity: str) -> None:  # skeleton span [i, j)
        for k in range(i, j):
            masked[k] = "\0"
        start, end = index[i], index[j - 1] + 1
        # A fuzzy hit can stop one character short of the echoed value: widen to the whole token.
        while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "+(@._-"):
            start -= 1
        while end < len(text) and (text[end].isalnum() or (text[end] in "@._-" and end + 1 < len(text)
                                                          and text[end + 1].isalnum())):
            end += 1
        out.append(
            Redaction(start=start, end=end, replacement=f"[{entity or 'PII'} redacted]",
                      kind="untrusted_value", entity=entity)
        )

    pairs = sorted({(e, v) for e, v in values}, key=lambda p: -len(p[1]))
    for entity, value in pairs:
        vskel, _ = _skeleton(value)
        if len(vskel) < min_length:
            continue
        start = 0
        current = "".join(masked)
        while (pos := current.find(vskel, start)) >= 0:
            add(pos, pos + len(vskel), entity)
            start = pos + len(vskel)
        # Fuzzy pass: typos, a dropped or swapped character. A few rounds find repeated echoes.
        for _ in range(3):
            current = "".join(masked)
            alignment = fuzz.partial_ratio_alignment(vskel, current, score_cutoff=threshold)
            if alignment is None or alignment.dest_end - alignment.dest_start < min_length:
                break
            i, j = alignment.dest_start, alignment.dest_end
            if "\0" in current[i:j]:
                break
            # Trim aligned edge characters that cannot belong to the value ("phone" + digits).
            allowed = set(vskel)
            while i < j and current[i] not in allowed:
                i += 1
            while j > i and current[j - 1] not in allowed:
                j -= 1
            if j - i < min_length:
                break
            add(i, j, entity)
    return out


# A run of digits with the separators phone numbers are written with (no line breaks), optionally after "+".
_PHONE_RUN = re.compile(r"\+?\(?\d(?:[\d \t\u00a0().\-/]*\d)?")
PHONE_ENTITIES = frozenset({"PHONE_NUMBER"})
MIN_PHONE_DIGITS = 7


@functools.lru_cache(maxsize=4096)
def national_digits(value: str) -> str:
    """A phone number's national significant digits (no country code, no trunk 0): the part every format of the
    number shares. Parsed with `phonenumbers` when it carries its country (+ or 00); else its digits without a
    leading trunk 0."""
    import phonenumbers

    digits = re.sub(r"\D", "", value)
    if value.strip().startswith(("+", "00")):
        try:
            return str(phonenumbers.national_significant_number(
                phonenumbers.parse("+" + digits[2:] if value.strip().startswith("00") else value, None)))
        except phonenumbers.NumberParseException:
            pass
    return digits.lstrip("0")


def phone_redactions(text: str, values: Iterable[tuple[str, str]]) -> list[Redaction]:
    """Phone-number runs in text holding a listed phone's national digits, whatever the format (country code or
    trunk 0, spaces, dots, dashes, brackets): each whole run is redacted."""
    wanted = {(entity, national_digits(value)) for entity, value in values if entity in PHONE_ENTITIES}
    wanted = {(e, n) for e, n in wanted if len(n) >= MIN_PHONE_DIGITS}
    if not wanted:
        return []
    out: list[Redaction] = []
    for run in _PHONE_RUN.finditer(text):
        digits = re.sub(r"\D", "", run.group(0))
        for entity, national in wanted:
            if national in digits:
                out.append(Redaction(start=run.start(), end=run.end(), replacement=f"[{entity} redacted]",
                                     kind="untrusted_value", entity=entity))
                break
    return out


def _apply(text: str, redactions: list[Redaction]) -> tuple[str, list[Redaction]]:
    """Apply non-overlapping redactions; on overlap the longer one wins."""
    chosen: list[Redaction] = []
    for r in sorted(redactions, key=lambda r: (-(r.end - r.start), r.start)):
        if all(r.end <= c.start or r.start >= c.end for c in chosen):
            chosen.append(r)
    chosen.sort(key=lambda r: r.start)
    parts: list[str] = []
    pos = 0
    for r in chosen:
        parts.append(text[pos : r.start])
        parts.append(r.replacement)
        pos = r.end
    parts.append(text[pos:])
    return "".join(parts), chosen


def _findings(applied: list[Redaction]) -> list[Finding]:
    counts: dict[tuple[str, str], int] = {}
    for r in applied:
        counts[(r.kind, r.entity)] = counts.get((r.kind, r.entity), 0) + 1
    return [Finding(kind=k, entity=e, count=n) for (k, e), n in counts.items()]  # type: ignore[arg-type]


class OutputFilter:
    """Everything that must be removed from an answer before a client sees it."""

    def __init__(
        self,
        detector: PiiDetector,
        egress_allowlist: Sequence[str] = (),
        fuzzy_threshold: float = 90.0,
        min_fuzzy_length: int = 6,
    ) -> None:
        self.detector = detector
        self.egress_allowlist = [h.lower() for h in egress_allowlist]
        self.fuzzy_threshold = fuzzy_threshold
        self.min_fuzzy_length = min_fuzzy_length

    def redactions(
        self, text: str, vault: PiiVault | None = None, extra_values: Iterable[tuple[str, str]] = ()
    ) -> list[Redaction]:
        vault = vault or PiiVault()
        found: list[Redaction] = []
        # Pseudonyms of third-party values must not be rehydrated for the client; mark them.
        for m in TOKEN_RE.finditer(text):
            entry = vault.entries.get(m.group(0))
            if entry is not None and not entry.trusted:
                found.append(
                    Redaction(start=m.start(), end=m.end(), replacement=f"[{m.group(1)} redacted]",
                              kind="pseudonym", entity=entry.entity)
                )
        trusted_keys = {f"{e.entity}:{canonical(e.entity, e.value)}" for e in vault.values(trusted=True)}
        untrusted = [(e.entity, e.value) for e in vault.values(trusted=False)]
        untrusted.extend(extra_values)
        # Personal data is looked for in the text as written and again after entity and percent
        # decoding (a card number percent-encoded into a link's query string), mapped back.
        view = decoded_view(text)
        views = [(text, None)] if view.text == text else [(text, None), (view.text, view)]
        for scanned, mapping in views:
            for span in self.detector.detect(scanned, "output"):
                value = scanned[span.start : span.end]
                if TOKEN_RE.fullmatch(value) or f"{span.entity}:{canonical(span.entity, value)}" in trusted_keys:
                    continue  # the user's own value, given by the user
                start, end = (span.start, span.end) if mapping is None else mapping.original(span.start, span.end)
                found.append(
                    Redaction(start=start, end=end, replacement=f"[{self.detector.label(span.entity)} redacted]",
                              kind="pii", entity=span.entity)
                )
            for r in [*value_redactions(scanned, untrusted, self.fuzzy_threshold, self.min_fuzzy_length),
                      *phone_redactions(scanned, untrusted)]:
                if mapping is not None:
                    r.start, r.end = mapping.original(r.start, r.end)
                found.append(r)
        found.extend(egress_redactions(text, self.egress_allowlist))
        return found

    def filter(
        self, text: str, vault: PiiVault | None = None, extra_values: Iterable[tuple[str, str]] = ()
    ) -> FilteredText:
        new_text, applied = _apply(text, self.redactions(text, vault, extra_values))
        return FilteredText(text=new_text, findings=_findings(applied))


class StreamingOutputFilter:
    """Filter a stream of chunks. `feed` returns text that is safe to send now; call `close` at the end.

    Text is released only up to a whitespace boundary at least `hold` characters behind the end of
    what has arrived, and never inside a span the filter would change, so a value split across
    chunks is still caught. `hold` must exceed the longest value that can be matched.
    """

    def __init__(
        self,
        output_filter: OutputFilter,
        vault: PiiVault | None = None,
        extra_values: Iterable[tuple[str, str]] = (),
        hold: int = 256,
        batch: int = 64,
    ) -> None:
        self.filter = output_filter
        self.vault = vault or PiiVault()
        self.extra_values = list(extra_values)
        longest = max((len(e.value) for e in self.vault.entries.values()), default=0)
        longest = max([longest, *(len(v) for _, v in self.extra_values)])
        self.hold = max(hold, 2 * longest + 16)
        # Analyse once per `batch` new characters, not once per token: detection costs ~ms.
        self.batch = max(batch, 1)
        self._pending = ""
        self._findings: list[Finding] = []
        self._closed = False

    @property
    def findings(self) -> list[Finding]:
        return list(self._findings)

    def _release(self, cut: int) -> str:
        redactions = self.filter.redactions(self._pending, self.vault, self.extra_values)
        # Never cut through something the filter changes; move the cut to its start.
        moved = True
        while moved:
            moved = False
            for r in redactions:
                if r.start < cut < r.end:
                    cut = r.start
                    moved = True
        if cut <= 0:
            return ""
        inside = [r for r in redactions if r.end <= cut]
        released, applied = _apply(self._pending[:cut], inside)
        self._findings.extend(_findings(applied))
        self._pending = self._pending[cut:]
        return released

    def feed(self, chunk: str) -> str:
        if self._closed:
            raise RuntimeError("stream already closed")
        self._pending += chunk
        if len(self._pending) < self.hold + self.batch:
            return ""
        cut = len(self._pending) - self.hold
        # An HTML tag or Markdown link whose target has not arrived yet is held back whole.
        open_at = unclosed_tag_start(self._pending, self.hold * 8)
        if 0 <= open_at < cut:
            cut = open_at
        space = max(self._pending.rfind(" ", 0, cut), self._pending.rfind("\n", 0, cut))
        if space <= 0:
            return ""
        return self._release(space + 1)

    def close(self) -> str:
        self._closed = True
        return self._release(len(self._pending))


# --- system-prompt leakage ---------------------------------------------------------------------

_SENTENCE = re.compile(r"(?<=[.!?:;])\s+|\n+")
_WORD = re.compile(r"\w+")


class LeakVerdict(BaseModel):
    leaked: bool
    score: float
    matched_sentences: int
    sentences: int


def system_prompt_leak(output: str, system_prompt: str, threshold: float = 0.5, min_chars: int = 30) -> LeakVerdict:
    """Share of the system prompt reproduced in the output (sentence fuzzy match and 6-word shingles)."""
    sentences = [s.strip() for s in _SENTENCE.split(system_prompt) if len(s.strip()) >= min_chars]
    out_low = output.lower()
    matched = sum(1 for s in sentences if fuzz.partial_ratio(s.lower(), out_low) >= 90)
    sentence_share = matched / len(sentences) if sentences else 0.0
    words = _WORD.findall(system_prompt.lower())
    out_words = _WORD.findall(out_low)
    shingles = {tuple(words[i : i + 6]) for i in range(len(words) - 5)}
    out_shingles = {tuple(out_words[i : i + 6]) for i in range(len(out_words) - 5)}
    shingle_share = len(shingles & out_shingles) / len(shingles) if shingles else 0.0
    score = max(sentence_share, shingle_share)
    return LeakVerdict(leaked=score >= threshold, score=round(score, 3), matched_sentences=matched,
                       sentences=len(sentences))


# --- citations ---------------------------------------------------------------------------------

# `[#3f2a9c1d]` (short or full chunk id, as the RAG graph writes them) or `[source: <chunk_id>]`.
INLINE_CITATION = re.compile(r"\[(?:#|(?:source|chunk|cite):\s*)([A-Za-z0-9][A-Za-z0-9_.:/-]{3,127})\]")
_QUOTE = re.compile(r"[\"“]([^\"”\n]{20,400})[\"”]")


class CitationReport(BaseModel):
    ok: bool
    cited: list[str] = Field(default_factory=list)
    unknown: list[str] = Field(default_factory=list)  # cited but not retrieved in this run
    unsupported_quotes: int = 0  # quotes not found in the chunk they cite


def verify_citations(
    answer: str,
    retrieved: Sequence[dict[str, Any]],
    citations: Sequence[dict[str, Any]] = (),
    pattern: re.Pattern[str] = INLINE_CITATION,
    quote_threshold: float = 90.0,
) -> CitationReport:
    """Cited chunk ids must be among the retrieved ones; quoted text must appear in the cited chunk.

    Citations come from the structured `citations` list ({chunk_id, quote}) and inline `[chunk_id]`
    markers in the answer.
    """
    chunks = {str(c.get("chunk_id")): str(c.get("text") or "") for c in retrieved if c.get("chunk_id")}
    cited: list[str] = []
    quotes: list[tuple[str, str]] = []
    for c in citations:
        cid = str(c.get("chunk_id") or "")
        if cid:
            cited.append(cid)
            if c.get("quote"):
                quotes.append((cid, str(c["quote"])))
    inline = [m.group(1) for m in pattern.finditer(answer)]
    cited.extend(inline)
    if len(set(inline)) == 1:
        quotes.extend((inline[0], m.group(1)) for m in _QUOTE.finditer(answer))
    def resolve(cid: str) -> str:
        if cid in chunks:
            return cid
        prefixed = [k for k in chunks if k.startswith(cid)] if len(cid) >= 6 else []
        return prefixed[0] if len(prefixed) == 1 else cid

    unique = list(dict.fromkeys(resolve(c) for c in cited))
    quotes = [(resolve(cid), q) for cid, q in quotes]
    unknown = [c for c in unique if c not in chunks]
    unsupported = 0
    for cid, quote in quotes:
        source = chunks.get(cid)
        if source is None:
            continue  # already counted as unknown
        if fuzz.partial_ratio(quote.lower(), source.lower()) < quote_threshold:
            unsupported += 1
    return CitationReport(ok=not unknown and unsupported == 0, cited=unique, unknown=unknown,
                          unsupported_quotes=unsupported)
