"""Progressive guarded streaming: a model's answer reaches clients while it is generated, never unguarded.

The gateway feeds the provider's raw tokens to a `ProgressiveAnswer` (`ModelGateway.ainvoke(..., stream=...)`).
It cuts the text into segments at sentence or clause boundaries and releases a segment to the client only when
every check that could still change it has passed:

- the output filter (PII, third-party values, pseudonyms, egress links/images/HTML), run on the segment with the
  text around it, so a value or link split across tokens is judged whole; a boundary that a redaction or an
  unclosed tag/link straddles is not a boundary;
- a system-prompt leak check over everything released so far;
- the caller's own per-segment check (RAG: cited ids retrieved, quotes found, `NOT_IN_CONTEXT`, or for an answer
  that cites nothing each whole sentence attributed to the passage that backs it; the planner: a sentence claiming
  an action was taken waits for the whole-answer checks), which can also ask to hold everything until one segment
  passes (RAG: nothing goes out before a verified citation) or to wait for more text (a sentence judged whole);
- text that looks like a structured tool call (JSON, a code fence, `<tool_call>`) stops the release: the node
  decides what it is when the reply is complete.

Released text goes out through a relay chat model run (tag `interlock:answer`), so LangGraph's `messages` stream
mode carries it as `AIMessageChunk`s of one message id. `finish` then guards the node's final answer whole (the
same output guard as a non-streamed answer): when it continues what was released, only the rest is sent and the
message stored in state is exactly the concatenation of the chunks, under the chunks' id. When the node replaced
the answer after text went out (a later citation failed, the provider broke off, a whole-answer check rewrote
it), the stored message keeps the chunks' id and carries the replacement, marked
`response_metadata["interlock_stream"]["replaced"]`; clients that merge state by id (langgraph-sdk `useStream`,
Agent Chat UI) show the replacement. Nothing a check removes is ever released first.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from interlock.graphs.events import emit
from interlock.graphs.nodes import guards
from interlock.policies.egress import unclosed_tag_start
from interlock.policies.loader import get_policies
from interlock.policies.output import _apply, system_prompt_leak
from interlock.policies.pii import PiiVault
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

log = logging.getLogger("interlock.answer_stream")

ANSWER_TAG = "interlock:answer"
CONTEXT_CHARS = 96  # text on each side of a segment that the filter sees, so split values are judged whole
MIN_CLAUSE = 24  # a clause boundary (, ; : dash) ends a segment once the segment is at least this long
CLAUSE_LOOKAHEAD = 16  # ... and this much text after it has arrived (the filter judges a value across it)
TAG_LIMIT = 1280  # an HTML tag or Markdown link longer than this is not waited for (the filter still sees it)
RELAY_CHUNK_CHARS = 24  # released text goes out in chunks of this size (RelayChatModel's, for the same framing)
RELAY_IDLE_S = 300.0  # a relay whose producer vanished (the node raised) ends on its own

# Where a segment may end: after a sentence stop, a clause mark or a line break, with more text already after it
# (so the next character is known). The whitespace after the mark stays with the segment.
_BREAK = re.compile(r"(?P<stop>[.!?][\"')\]”’]*\s)(?=\s*\S)|(?P<clause>(?:[,;:]|\s[-–—])\s)(?=\s*\S)"
                    r"|(?P<line>\n+)(?=[^\n])")
_ABBREVIATION = re.compile(r"(?:\b[A-Za-z]|\b(?:mr|mrs|ms|dr|st|no|nr|vs|etc|approx|inc|ltd|jr|sr|e\.g|i\.e))[.]$",
                           re.IGNORECASE)
# Text the node may turn into a tool call (JSON in content, fenced or tagged) is never streamed as prose.
_STRUCTURED_START = re.compile(r"^\s*(?:\{|\[\s*\{|```|<tool_call|<function|<\|)")
_STRUCTURED = re.compile(r"```|\{\s*\"|<tool_call|<function|\"(?:name|arguments|tool)\"\s*:")


@dataclass(frozen=True)
class SegmentVerdict:
    """A caller's judgement of one segment: `stop` ends the release (the node decides at the end);
    `text` is the segment as the final answer will hold it; `passes` marks the segment that opens the gate;
    `wait` leaves the segment undecided until more text has arrived (it is offered again, longer)."""

    text: str
    passes: bool = False
    stop: str | None = None
    wait: bool = False


# A check may be a coroutine (RAG's attribution embeds sentences off the event loop).
SegmentCheck = Callable[[str], SegmentVerdict | Awaitable[SegmentVerdict]]


# "I have cancelled…", "your order has been refunded", "it is now updated": a claim that something was done.
# Such a sentence waits for the whole-answer checks (action honesty), which may replace the answer.
_ACTION_CLAIM = re.compile(
    r"\b(?:(?:i|we)(?:'ve|\s+have|\s+had)?(?:\s+(?:just|now|already|successfully))?\s+"
    r"|(?:has|have)\s+(?:now\s+|just\s+|already\s+|successfully\s+)?been\s+"
    r"|(?:is|are)\s+now\s+|(?:was|were)\s+(?:successfully\s+|just\s+)?)"
    r"(?:cancel+ed|refunded|updated|changed|sent|created|issued|processed|submitted|deleted|removed|booked|"
    r"scheduled|escalated|opened|closed|reset|emailed|credited|charged|approved|placed|added|applied)\b",
    re.IGNORECASE)


def action_claim_check(segment: str) -> SegmentVerdict:
    """Hold a sentence that says an action was taken until the final answer is checked whole."""
    if _ACTION_CLAIM.search(segment):
        return SegmentVerdict(text=segment, stop="action_claim")
    return SegmentVerdict(text=segment)


class _Relay(BaseChatModel):
    """A chat model run whose tokens are the released segments (a queue fed by `ProgressiveAnswer`)."""

    queue: Any
    model_config = ConfigDict(arbitrary_types_allowed=True)

    @property
    def _llm_type(self) -> str:
        return "interlock-relay"

    async def _pieces(self) -> AsyncIterator[str]:
        while True:
            try:
                piece = await asyncio.wait_for(self.queue.get(), RELAY_IDLE_S)
            except TimeoutError:
                return
            if piece is None:
                return
            yield piece

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        raise NotImplementedError("the relay runs asynchronously only")

    async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        text = "".join([p async for p in self._pieces()])  # nobody streams this run: deliver it whole
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    async def _astream(self, messages: Any, stop: Any = None, run_manager: Any = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        # langchain-core reports each chunk to the callbacks (LangGraph's messages mode) and sets its id.
        async for piece in self._pieces():
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))


class ProgressiveAnswer:
    """One answer's guarded stream. Feed raw model text with `feed`; end with `finish` (or `discard`)."""

    def __init__(self, state: dict[str, Any], *, use_guards: bool = True, segment_check: SegmentCheck | None = None,
                 gate_until_pass: bool = False) -> None:
        self._state = dict(state)
        self._use_guards = use_guards
        self._check = segment_check
        self._gated = gate_until_pass
        self._filter = guards.output_filter() if use_guards else None
        self._vault = PiiVault.from_state(self._state.get("pii_vault"))
        self._system_prompt = guards._system_prompt(self._state) if use_guards else ""
        self._raw = ""  # every raw character fed so far
        self._cut = 0  # raw offset up to which segments were decided
        self._decided: list[str] = []  # decided segments as the final answer holds them (before filtering)
        self._held: list[str] = []  # guarded segments waiting for the gate to open
        self._sent: list[str] = []  # guarded text handed to the relay
        self._stopped: str | None = None
        self._queue: asyncio.Queue[str | None] | None = None
        self._relay: asyncio.Task[AIMessage] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.problems: list[str] = []

    # --- feeding -------------------------------------------------------------------------------

    @property
    def released(self) -> bool:
        """Text went out to clients: the answer can no longer silently change."""
        return self._relay is not None

    def restart(self) -> bool:
        """A provider failed mid-answer. Forget its unreleased text; False when some already went out."""
        if self.released:
            return False
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        self._raw, self._cut, self._decided, self._held, self._stopped = "", 0, [], [], None
        return True

    def hold(self, reason: str = "tool_call") -> None:
        """Release nothing more (the reply turned out to be a tool call)."""
        self._stopped = self._stopped or reason

    async def feed(self, text: str) -> None:
        if not self._raw:
            text = text.lstrip()  # answers are stored stripped; leading whitespace would split the two
        if not text:
            return
        self._raw += text
        if self._stopped:
            return
        if not self._decided and _STRUCTURED_START.match(self._raw):
            self.hold("structured")
            return
        # Checks run beside the provider's stream, not in it: a slow check never slows reading the tokens.
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._advance())

    async def _settle(self) -> None:
        """Wait for the checks in flight (their result is released before the final answer)."""
        if self._worker is not None:
            await self._worker

    async def _advance(self) -> None:
        while not self._stopped:
            end = self._boundary()
            if end is None:
                return
            segment = self._raw[self._cut:end]
            if _STRUCTURED.search(segment):
                self.hold("structured")
                return
            verdict = await self._judge(segment)
            if verdict.wait:
                return
            if verdict.stop:
                self.problems.append(verdict.stop)
                self.hold(verdict.stop)
                return
            guarded = await self._guard(verdict.text, end)
            if guarded is None:
                return  # a redaction straddles this boundary: wait for more text
            self._decided.append(verdict.text)
            self._cut = end
            if self._gated and not verdict.passes:
                self._held.append(guarded)
                continue
            self._gated = False
            pieces, self._held = [*self._held, guarded], []
            self._send("".join(pieces))

    async def _judge(self, segment: str) -> SegmentVerdict:
        if self._check is None:
            return SegmentVerdict(text=segment)
        verdict = self._check(segment)
        return await verdict if inspect.isawaitable(verdict) else verdict

    def _boundary(self) -> int | None:
        """Raw offset after the furthest complete segment (everything ready goes through one check, so a slow
        guard batches instead of falling behind), or None to wait for more text."""
        start, raw = self._cut, self._raw
        best = None
        for m in _BREAK.finditer(raw, start):
            end = m.end()
            if m.group("stop") and _ABBREVIATION.search(raw[max(start, m.start() - 6):m.start() + 1]):
                continue  # "Dr. Smith", "e.g. this": not a sentence end, and a name must not be cut
            if m.group("clause") and (end - start < MIN_CLAUSE or len(raw) - end < CLAUSE_LOOKAHEAD):
                continue  # a value may run on past a comma ("12 Main St, Springfield"): see some of what follows
            if unclosed_tag_start(raw[start:end], TAG_LIMIT) >= 0:
                continue  # an HTML tag or Markdown link is still open here: the segment grows until it closes
            best = end
        return best

    async def _guard(self, text: str, raw_end: int) -> str | None:
        """The segment as a client may see it, or None when a redaction reaches past it (wait)."""
        if self._filter is None:
            return text
        before = "".join(self._decided)[-CONTEXT_CHARS:]
        after = self._raw[raw_end:raw_end + CONTEXT_CHARS]
        window = before + text + after
        lo, hi = len(before), len(before) + len(text)
        policies = get_policies()
        try:
            await guards._warm(policies)  # no-op once the input guard loaded the models
            redactions = await asyncio.wait_for(asyncio.to_thread(self._filter.redactions, window, self._vault),
                                                policies.limits.run.guard_timeout_s)
        except Exception as exc:  # fails closed like every guard: the run ends with guard_failed
            verdict = {"guard": "output_stream", "ok": False, "error": type(exc).__name__,
                       "reason": guards.GuardFailed.reason}
            raise guards.GuardFailed("output_stream", type(exc).__name__, verdict) from None
        if after and any(r.start < hi < r.end for r in redactions):
            return None
        inside = []
        for r in redactions:
            if r.end <= lo or r.start >= hi:
                continue
            if r.start < lo:  # began in text already released: record it, redact what is left
                self.problems.append(f"late_{r.kind}")
                r = r.model_copy(update={"start": lo})
            inside.append(r.model_copy(update={"start": r.start - lo, "end": min(r.end, hi) - lo}))
        guarded, _ = _apply(text, inside)
        if self._system_prompt:
            leak = system_prompt_leak("".join(self._decided) + text, self._system_prompt,
                                      policies.scope.system_prompt_leak_threshold)
            if leak.leaked or leak.matched_sentences:
                self.problems.append("system_prompt")
                self.hold("system_prompt")
                return None
        return guarded

    def _send(self, piece: str) -> None:
        if not piece:
            return
        if self._queue is None:
            self._queue = asyncio.Queue()
            # The relay runs as a child of the node (the task copies the run's context), so LangGraph streams it.
            self._relay = asyncio.create_task(_Relay(queue=self._queue).ainvoke([], config={"tags": [ANSWER_TAG]}))
        self._sent.append(piece)
        # Framing only (the text is guarded already): slices of RELAY_CHUNK_CHARS, as the whole-answer relay sends.
        for start in range(0, len(piece), RELAY_CHUNK_CHARS):
            self._queue.put_nowait(piece[start:start + RELAY_CHUNK_CHARS])

    # --- ending --------------------------------------------------------------------------------

    async def _close_relay(self) -> AIMessage | None:
        if self._relay is None or self._queue is None:
            return None
        self._queue.put_nowait(None)
        return await self._relay

    async def discard(self) -> None:
        """Nothing (more) will be released; end the relay if one started."""
        self.hold("discarded")
        await self._settle()
        await self._close_relay()

    async def finish(self, message: AIMessage) -> tuple[AIMessage, list[dict[str, Any]]]:
        """The node's final answer, guarded whole, stored under the streamed id; the rest goes out as chunks."""
        verdicts: list[dict[str, Any]] = []
        await self._settle()
        await self._release_tail(message.content if isinstance(message.content, str) else "")
        if self._use_guards:
            out = await guards.output_guard({**self._state, "messages": [*(self._state.get("messages") or []),
                                                                           message]})
            verdicts = list(out.get("guard_verdicts") or [])
            message = next((m for m in reversed(out.get("messages") or []) if isinstance(m, AIMessage)), message)
        text = message.content if isinstance(message.content, str) else str(message.content)
        sent = "".join(self._sent)
        replaced = not text.startswith(sent)
        if not replaced:
            self._send(text[len(sent):])
        relayed = await self._close_relay()
        meta = dict(message.response_metadata or {})
        if replaced:
            # Text already out differs from the final answer: the message keeps the streamed id so clients
            # replace what they showed; the verdict records why.
            meta["interlock_stream"] = {"replaced": True, "problems": self.problems[:5]}
            verdicts.append({"guard": "stream", "ok": False, "replaced": True, "problems": self.problems[:5]})
            await emit("guard", {**verdicts[-1], "name": "stream", "verdict": "changed"})
            log.info("streamed answer replaced after release: %s", ",".join(self.problems[:5]) or "final differs")
        else:
            text = relayed.content if relayed is not None and isinstance(relayed.content, str) else text
        return message.model_copy(update={"id": relayed.id if relayed is not None else message.id, "content": text,
                                          "response_metadata": meta}), verdicts

    async def _release_tail(self, final: str) -> None:
        """The last segment of an answer already streaming goes out through the segment checks as soon as the
        reply is complete, when the final answer is exactly what was streamed plus it; the whole-answer guard then
        runs as the final verification (a disagreement replaces the answer, marked)."""
        tail = self._raw[self._cut:]
        if not self.released or self._stopped or not tail or _STRUCTURED.search(tail):
            return
        verdict = await self._judge(tail)
        if verdict.wait or verdict.stop or "".join(self._decided) + verdict.text != final:
            return
        guarded = await self._guard(verdict.text, len(self._raw))
        if guarded is None:
            return
        self._decided.append(verdict.text)
        self._cut = len(self._raw)
        self._send(guarded)

    async def settle_tool_step(self, message: AIMessage) -> AIMessage:
        """A reply that turned out to call tools after some text went out: that text is the message's content
        (guarded), under the streamed id, so the chunks and the stored message agree."""
        await self._settle()
        if not self.released:
            return message
        text = message.content if isinstance(message.content, str) else str(message.content)
        if self._filter is not None:
            text = self._filter.filter(text, self._vault).text
        sent = "".join(self._sent)
        if text.startswith(sent):
            self._send(text[len(sent):])
        else:
            text = sent
        relayed = await self._close_relay()
        return message.model_copy(update={"id": relayed.id if relayed is not None else message.id, "content": text})
