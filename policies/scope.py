"""Deterministic topic scope check from scope.yaml: keywords and patterns per topic.

Out-of-scope topics win over in-scope ones; text matching neither is "unknown" and left to the
intent classifier. Matching runs on the normalised text so obfuscation does not dodge it.
"""

from __future__ import annotations

import re
from typing import Literal

from interlock.policies.injection import normalise
from interlock.policies.schema import ScopePolicy, Topic
from pydantic import BaseModel, Field

ScopeDecision = Literal["in_scope", "out_of_scope", "unknown"]


class ScopeVerdict(BaseModel):
    decision: ScopeDecision
    in_topics: list[str] = Field(default_factory=list)
    out_topics: list[str] = Field(default_factory=list)


def _compile(topic: Topic) -> re.Pattern[str] | None:
    parts = [rf"\b{re.escape(k.lower())}s?\b" for k in topic.keywords] + list(topic.patterns)
    return re.compile("|".join(f"(?:{p})" for p in parts), re.IGNORECASE) if parts else None


class ScopeChecker:
    def __init__(self, policy: ScopePolicy) -> None:
        self.policy = policy
        self._in = [(t.id, p) for t in policy.in_scope if (p := _compile(t)) is not None]
        self._out = [(t.id, p) for t in policy.out_of_scope if (p := _compile(t)) is not None]

    def check(self, text: str) -> ScopeVerdict:
        forms = normalise(text, max_base64_segments=0).forms()
        hits_in = [tid for tid, p in self._in if any(p.search(f) for f in forms)]
        hits_out = [tid for tid, p in self._out if any(p.search(f) for f in forms)]
        decision: ScopeDecision = "out_of_scope" if hits_out else ("in_scope" if hits_in else "unknown")
        return ScopeVerdict(decision=decision, in_topics=hits_in, out_topics=hits_out)
