"""Two requests in one message: a knowledge question beside an action ("what's your return window, and cancel
ORD-1001").

The router classifies the whole message, and its training labels such messages with the request to act on. This
module finds the question that would otherwise go unanswered: the message is split into clauses (sentences, and
coordinated clauses that start a new question or request), each clause is classified on its own, and when one is a
confident knowledge question and another a confident request, the router answers the question from the knowledge
base (RAG, on that clause alone) before acting on the request; the request keeps its approval flow unchanged.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # intent.py's Classify node calls this module
    from interlock.graphs.nodes.intent import IntentClassifier, IntentPrediction

# Words that open a new question or request. A coordinating "and"/"also" followed by one of them starts a second
# clause; followed by anything else ("cancel it and refund me") it continues the first.
_QUESTION_WORDS = ("what", "what's", "whats", "how", "when", "where", "why", "which", "who", "whom", "is", "are",
                   "was", "do", "does", "did", "can", "could", "will", "would", "should", "may", "am")
_REQUEST_WORDS = ("cancel", "refund", "track", "check", "show", "send", "update", "change", "open", "add", "look",
                  "find", "tell", "give", "please", "pls", "plz", "stop", "reset", "close", "escalate", "get", "put",
                  "i want", "i wanna", "i need", "i'd like", "id like", "i would like", "let me", "kindly")
_STARTERS = sorted(_QUESTION_WORDS + _REQUEST_WORDS, key=len, reverse=True)
_STARTER = "(?:" + "|".join(re.escape(w) for w in _STARTERS) + r")\b"
_SENTENCE = re.compile(r"(?<=[.?!])\s+|[\n;]+")
# ", and cancel", " and also what", ", plus can you", " also please" ... (the conjunction is dropped)
_COORDINATED = re.compile(r"(?:\s*,\s*(?:and\s+(?:also\s+|then\s+)?|also\s+|plus\s+|then\s+|but\s+)?"
                          r"|\s+(?:and\s+(?:also\s+|then\s+)?|also\s+|plus\s+|but\s+))(?=" + _STARTER + ")",
                          re.IGNORECASE)
_QUESTION_START = re.compile(r"^(?:" + "|".join(re.escape(w) for w in _QUESTION_WORDS) + r")\b", re.IGNORECASE)
_REQUEST_START = re.compile(r"^(?:(?:can|could|would|will) you\b|" + "|".join(
    re.escape(w) for w in _REQUEST_WORDS if w != "get") + r")\b", re.IGNORECASE)
_RECORD_ID = re.compile(r"\b(?:ORD|INV|TCK|T)-?\s?\d{3,}\b", re.IGNORECASE)
_LEADING_JOINER = re.compile(r"^(?:and|also|plus|then|but|btw|by the way|oh and|and also)\b[\s,]*", re.IGNORECASE)
MIN_WORDS = 3  # "hi", "thanks", "asap" are not requests of their own (a clause naming a record id always counts)
# A question whose probability leans this much towards the planner's requests is about that request ("where is the
# parcel actually?" beside a tracking request), not a question of its own.
MAX_REQUEST_LEANING = 0.25
ACTION_ROUTES = ("planner", "escalate")


def split_clauses(text: str) -> list[str]:
    """Sentences, and within a sentence the coordinated clauses that open a new question or request."""
    clauses: list[str] = []
    for sentence in _SENTENCE.split(text.strip()):
        for part in _COORDINATED.split(sentence):
            part = _LEADING_JOINER.sub("", part.strip(" ,.-")).strip(" ,.-")
            if part:
                clauses.append(part)
    return clauses


def looks_like_question(clause: str) -> bool:
    return clause.rstrip().endswith("?") or bool(_QUESTION_START.match(clause.strip()))


def looks_like_request(clause: str) -> bool:
    """An imperative or a polite request ("cancel ...", "can you cancel ...", "I want ..."), or one naming a
    record to act on."""
    return bool(_REQUEST_START.match(clause.strip()) or _RECORD_ID.search(clause))


_LOOSE_ENDS = re.compile(r"^(?:[\s,;:.-]|\b(?:and|also|plus|then|but|btw)\b)+|(?:[\s,;:-]|\b(?:and|also|plus|then|but|"
                         r"btw)\b)+$", re.IGNORECASE)


def without(text: str, clauses: list[str]) -> str:
    """`text` with `clauses` cut out, and the joiners they leave behind ("..., and") trimmed."""
    for clause in clauses:
        at = text.find(clause)
        if at >= 0:
            text = text[:at] + " " + text[at + len(clause):]
            text = re.sub(r"^\s*[?!]", "", text)  # the question mark that ended a leading question
    return _LOOSE_ENDS.sub("", " ".join(text.split()).replace(" ?", "").replace(" ,", ",")).strip()


@dataclass(frozen=True)
class Split:
    """A message holding a knowledge question and a request: the question to answer, the message without it
    (what the request's playbook reads) and the intent to act on."""

    question: str
    request: str
    intent: str


async def find_question_and_request(
    classifier: IntentClassifier, text: str, *, acting: tuple[str, float] | None,
    evidence: Callable[[str], Awaitable[float]] | None = None, evidence_floor: float = 1.0,
) -> Split | None:
    """The knowledge question and the request in `text`, when it holds both; else None.

    `acting` is the request the whole message was routed to and how sure that routing is (the classifier's
    margin; 1.0 when a router model or a pending question decided it), or None when the whole message did not
    route to a request. The request clause's own intent wins when it is surer: the question's words no longer
    blur it. Conservative, because a false split answers a question nobody asked: the question must read as one
    and lean towards no request; a clause the classifier puts out of scope counts only when the tenant's
    documents hold a close match (`evidence`, the knowledge-aware routing's measure); the request must be a
    confident classification (or agree with the whole message's) and read as a request (imperative, polite
    request, or a record id): "My email is x, how do I reset my password?" states context, it asks no change.
    """
    clauses = [c for c in split_clauses(text) if len(c.split()) >= MIN_WORDS or _RECORD_ID.search(c)]
    if len(clauses) < 2:
        return None
    routes = {name: spec.route for name, spec in classifier.policy.intents.items()}
    predictions = await asyncio.to_thread(classifier.classify_many, clauses)
    questions: list[str] = []
    requests: list[IntentPrediction] = []
    for clause, prediction in zip(clauses, predictions, strict=True):
        leaning = sum(score for name, score in prediction.scores.items() if routes.get(name) == "planner")
        if looks_like_question(clause) and leaning < MAX_REQUEST_LEANING:
            if prediction.route == "rag" or (
                    prediction.route == "refuse" and evidence is not None and await evidence(clause) >= evidence_floor):
                questions.append(clause)
                continue
        agrees = acting is not None and prediction.intent == acting[0]
        if prediction.route in ACTION_ROUTES and (prediction.confident or agrees) and looks_like_request(clause):
            requests.append(prediction)
    if not questions or not requests:
        return None
    request = max(requests, key=lambda p: p.margin)
    intent = acting[0] if acting is not None and acting[1] >= request.margin else request.intent
    rest = without(text, questions)
    return Split(question=" ".join(questions), request=rest, intent=intent)
