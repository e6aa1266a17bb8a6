"""Action honesty: an answer may say something was done only if a tool result in this run shows it.

Real models (small open ones especially) tell the customer "I have cancelled your order" without calling anything.
The output guard runs `unsupported_claims` on every answer: it finds completed-action claims ("I've cancelled",
"has been refunded", "is now updated", "Done: ... sent") and looks for the evidence in this run's successful tool
results (since the user's latest message):

- a first-person claim ("I/we have cancelled") needs a successful call of a tool that performs that action
  (its name carries the action's stem: cancel_order for "cancelled", create_ticket for "opened a ticket");
- a claim about a state ("has been cancelled", "is now cancelled") is also supported by a result that shows that
  state (a lookup whose result says "cancelled").

An answer with an unsupported claim is replaced by `honest_answer`, which says what was not done.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from interlock.graphs.state import message_text
from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage


@dataclass(frozen=True)
class Action:
    name: str
    verbs: str  # regex of the past participles that claim it
    stems: tuple[str, ...]  # tool-name parts of tools that perform it
    request: str  # how the customer asks for it ("cancel it")


ACTIONS: tuple[Action, ...] = (
    Action("cancel", r"cancell?ed|called off|voided", ("cancel", "void"), "cancel it"),
    Action("refund", r"refunded|reimbursed|(?:issued|processed|initiated|started|sent) (?:a|the|your) refund",
           ("refund", "credit"), "refund it"),
    Action("credit", r"credited|(?:issued|applied|added) (?:a|the|your) credit", ("credit", "refund"), "credit it"),
    Action("update", r"updated|changed|modified|edited|corrected|amended", ("update", "change", "edit", "set"),
           "change it"),
    Action("send", r"sent|e-?mailed|mailed|texted|notified", ("send", "email", "notify", "mail", "message"),
           "send it"),
    Action("create", r"created|opened|raised|filed|logged|submitted", ("create", "open", "ticket", "file"),
           "open it"),
    Action("delete", r"deleted|removed|erased", ("delete", "remove", "erase"), "delete it"),
    Action("escalate", r"escalated|transferred|forwarded|handed (?:it |this |you |your \w+ )?(?:over|on)",
           ("escalate", "ticket", "handoff", "human", "transfer"), "hand it to a person"),
    Action("comment", r"added (?:a|your|the) (?:comment|note)", ("comment", "note"), "add the comment"),
    Action("process", r"processed|completed|placed|scheduled|booked|reset|reactivated|unlocked|approved|"
           r"arranged|replaced|reordered|re-?sent", (), "do it"),
)

# Words that, between the subject and the verb, make it no claim of a finished action ("I can cancel", "I'd
# like it cancelled", "I have not cancelled", "I've asked for it to be cancelled").
_HEDGE = (r"(?:not|never|n['’]t|can|cannot|could|will|would|should|shall|may|might|must|to|be|if|once|unable|"
          r"going|want|wanted|need|needs|like|try|tried|help|asked|requested|am|is|are|ll|d)")
_SUBJECT = r"\b(?:I|we)(?:\s*['’]ve|\s+have|\s+had|\s+just|\s+now|\s+already|\s+successfully)*"
_ADVERBS = r"(?:\s+(?:now|just|already|successfully|also|then|been|gone\s+ahead\s+and|went\s+ahead\s+and))*"
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")


def _first_person(verbs: str) -> re.Pattern[str]:
    return re.compile(rf"{_SUBJECT}(?:\s+(?!{_HEDGE}\b)[\w'’-]+){{0,3}}?{_ADVERBS}\s+(?:{verbs})\b", re.I)


def _state(verbs: str) -> re.Pattern[str]:
    return re.compile(
        rf"\b(?:(?:has|have|had)(?:\s+(?:now|just|already|successfully|also))*\s+been"
        rf"|(?:is|are|was|were)(?:\s+(?:also|just|already))*\s+(?:now|successfully)"
        rf"|successfully)\s+(?:been\s+)?(?:{verbs})\b"
        rf"|^\s*(?:done|all set|success(?:fully)?|completed?)\b[^.!?\n]*?\b(?:{verbs})\b", re.I)


_PATTERNS = [(a, _first_person(a.verbs), _state(a.verbs)) for a in ACTIONS]
_READ_PREFIXES = ("get", "list", "find", "search", "track", "lookup", "read", "show", "check", "fetch")


@dataclass(frozen=True)
class Claim:
    action: str
    first_person: bool
    request: str


def claims_in(text: str) -> list[Claim]:
    """Completed-action claims in `text`, one per action (a negated or hedged sentence claims nothing)."""
    found: dict[str, Claim] = {}
    for sentence in _SENTENCE.findall(text):
        for action, first, state in _PATTERNS:
            if action.name in found:
                continue
            if first.search(sentence):
                found[action.name] = Claim(action.name, True, action.request)
            elif state.search(sentence.strip()):
                found[action.name] = Claim(action.name, False, action.request)
    return list(found.values())


def this_run(messages: Sequence[BaseMessage]) -> list[ToolMessage]:
    """The tool results since the user's latest message that succeeded."""
    out: list[ToolMessage] = []
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            break
        if isinstance(message, ToolMessage) and message.status != "error":
            out.append(message)
    return out


def _performs(tool: str, action: Action) -> bool:
    parts = [p for p in re.split(r"[_\-.\s]+", tool.lower()) if p]
    if not action.stems:  # a generic verb ("processed"): any tool that is not a read
        return bool(parts) and parts[0] not in _READ_PREFIXES
    return any(p.startswith(stem) for p in parts for stem in action.stems)


def _shows(result: ToolMessage, action: Action) -> bool:
    return re.search(rf"\b(?:{action.verbs})\b", message_text(result), re.I) is not None


def unsupported_claims(text: str, messages: Sequence[BaseMessage]) -> list[Claim]:
    """The claims in `text` that no successful tool result of this run backs."""
    results = this_run(messages)
    by_name = {a.name: a for a in ACTIONS}
    unsupported = []
    for claim in claims_in(text):
        action = by_name[claim.action]
        done = any(_performs(r.name or "", action) for r in results)
        shown = not claim.first_person and any(_shows(r, action) for r in results)
        if not (done or shown):
            unsupported.append(claim)
    return unsupported


_PARTICIPLE = {"cancel": "cancelled", "refund": "refunded", "credit": "credited", "update": "changed",
               "send": "sent", "create": "opened or created", "delete": "deleted", "escalate": "handed over",
               "comment": "added", "process": "done"}


def honest_answer(claims: Sequence[Claim]) -> str:
    """What replaces an answer that claims actions nobody performed."""
    done = " or ".join(dict.fromkeys(_PARTICIPLE[c.action] for c in claims))
    asks = " or ".join(dict.fromkeys(c.request for c in claims))
    return (f"To be clear: nothing has been {done} in this conversation; I haven't carried out that action. "
            f"If you want me to {asks}, please ask me to and I'll request it (some actions need an operator's "
            "approval first).")
