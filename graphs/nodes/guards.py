"""Guardrail nodes: input, retrieved-text, tool-call, tool-output and output guards.

Each node is an async LangGraph node over `InterlockState` and returns only the keys it changes.

Keys read and written (all optional on input; a missing key is treated as empty):
- `messages`      read; rewritten in place (same message id) with pseudonymised or filtered content. A tool
                  message's structured result (`artifact`) is pseudonymised too, or dropped with a quarantine.
                  A message is guarded once: the marker `additional_kwargs["interlock_guard"]`.
- `retrieved`     read/written by `retrieved_guard` (chunks with `text`, `chunk_id`, `trusted`); each
                  chunk gets `guarded: True`, PII pseudonymised, flagged ones quarantined or dropped.
- `pii_vault`     read/written: `PiiVault.to_state()`, values Fernet-encrypted with the server key
                  (INTERLOCK_VAULT_KEY or <home>/keys/pii-vault.key): the vault itself holds only ciphertext.
- `tainted`       written True when flagged content entered the run (state reducer keeps it sticky).
- `guard_verdicts` appended: one dict per guard call (new items only; state uses operator.add).
                  A verdict holds rule ids, counts and the policy hash, never raw text or values.
- `outcome`       set to "guard_blocked" when the input policy blocks the message.
The input verdict also carries the scope.yaml decision (in_scope / out_of_scope / unknown) for
the router; the guard itself does not refuse on scope.

What state and storage hold, and what they do not:
- Detected PII is a pseudonym everywhere in state once the guards ran. Tool results are guarded inside the node
  that ran the tool (planner `_guard_results`), so raw tool output never enters state, a checkpoint or a stream
  mode. The user's message is raw in the checkpoints written before `input_guard` (LangGraph records the run's
  input first) and in the run's stored `input`, unless pii.yaml `store_raw_input` is false for the tenant (the
  default): then the server seals it at submission (`policies.pii.seal_input`, encrypted with the vault key) on
  every path that writes user messages into a thread (a run's input or `command.update`, `POST /threads/{id}/state`,
  a thread's supersteps, a cron's stored payload), and `input_guard` unseals it in memory, scans it, and stores
  only the pseudonymised text. Graphs served through a factory (no compiled graph to inspect) are not sealed.
- A tool result's fields that tools.yaml declares personal (`pii_fields`: a customer's name, email, phone) are
  pseudonyms whatever the detector finds (policies/pii_fields.py); in the record of the customer the principal is
  bound to (token `customer_id`) they are the user's own values (trusted), in any other record a third party's. Other PII the detector misses (a name it does
  not recognise in free text) stays as it was: detection has a recall, not a proof.

Every guard fails closed: an exception or a timeout (limits.yaml run.guard_timeout_s) raises
`GuardFailed` (reason `guard_failed`) carrying the verdict, so no model or tool call happens
with unscanned content. Tool arguments get real values back only in the trusted executor
(`executor_args`): every value for a read, only the requesting user's own values for a write (a third
party's value read from a tool stays a pseudonym unless tools.yaml `restore_untrusted` names the argument).
Client-bound text goes through `client_text` / `client_stream_filter`, which likewise put back only the
user's own values. Which write needs a decision because of where its arguments came from is
policies/provenance.py, fed by `provenance_sources`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from interlock.graphs.events import emit, guard_label
from interlock.graphs.nodes import claims
from interlock.graphs.state import message_text
from interlock.policies.injection import InjectionDetector, InjectionVerdict, load_model_detector, quarantine
from interlock.policies.loader import PolicySet, get_policies
from interlock.policies.output import (
    OutputFilter,
    StreamingOutputFilter,
    system_prompt_leak,
    verify_citations,
)
from interlock.policies.pii import (
    SEALED_KEY,
    TOKEN_RE,
    PiiDetector,
    PiiVault,
    detector_for,
    pseudonymise,
    unseal_text,
)
from interlock.policies.pii_fields import pseudonymise_fields
from interlock.policies.provenance import Source, result_sources
from interlock.policies.scope import ScopeChecker
from interlock.policies.tool_rules import ToolCall, ToolContext, ToolDecision, evaluate_tool_call
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

log = logging.getLogger("interlock.guards")

MARKER = "interlock_guard"
GuardFn = Callable[[dict[str, Any]], dict[str, Any]]
ScanKind = Literal["user", "retrieved", "tool_output"]


class GuardFailed(RuntimeError):
    """A guard raised or timed out. The run must end with status error and reason `guard_failed`."""

    reason = "guard_failed"

    def __init__(self, guard: str, detail: str, verdict: dict[str, Any]) -> None:
        self.guard = guard
        self.detail = detail
        self.verdict = verdict
        super().__init__(f"guard {guard} failed closed: {detail}")


# --- shared machinery --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _scope_checker(policies: PolicySet) -> ScopeChecker:
    return ScopeChecker(policies.scope)


@functools.lru_cache(maxsize=4)
def _injection_detector(policies: PolicySet) -> InjectionDetector:
    return InjectionDetector(policies.injection, load_model_detector(policies.injection.model_detector))


def _components(policies: PolicySet | None = None) -> tuple[PolicySet, InjectionDetector, PiiDetector]:
    policies = policies or get_policies()
    return policies, _injection_detector(policies), detector_for(policies.pii)


def _guarded(message: BaseMessage) -> bool:
    return bool((message.additional_kwargs or {}).get(MARKER))


def _rewrite(message: BaseMessage, content: str, guard: str, **fields: Any) -> BaseMessage:
    """Same id, so the add_messages reducer replaces the original instead of appending."""
    kwargs = {**{k: v for k, v in (message.additional_kwargs or {}).items() if k != SEALED_KEY}, MARKER: guard}
    return message.model_copy(update={"content": content, "additional_kwargs": kwargs, **fields})


def _pseudonymise_result(policies: PolicySet, vault: PiiVault, value: Any) -> Any:
    """A structured tool result with every string pseudonymised like its text (same vault, same tokens)."""
    if isinstance(value, str):
        return pseudonymise(detector_for(policies.pii), value, vault, trusted=False, direction="input").text
    if isinstance(value, dict):
        return {k: _pseudonymise_result(policies, vault, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_pseudonymise_result(policies, vault, v) for v in value]
    return value


def _declared_fields(policies: PolicySet, vault: PiiVault, tool: str, text: str, artifact: Any,
                     owner: str | None = None) -> tuple[str, Any]:
    """tools.yaml `pii_fields` of this tool's result become pseudonyms first, whatever a detector would find; in
    the record of the customer the principal is bound to (`owner`) they are the user's own (trusted)."""
    rule = policies.tools.tools.get(tool)
    if rule is None or not rule.pii_fields:
        return text, artifact
    text, artifact, _ = pseudonymise_fields(text, artifact, rule.pii_fields, vault, detector_for(policies.pii).label,
                                            owner=owner)
    return text, artifact


def _bound_customer(state: dict[str, Any]) -> str | None:
    """The customer the run's verified principal is bound to (`identify` stamped it from the token), or None."""
    value = (state.get("principal") or {}).get("customer_id")
    return str(value) if value else None


def pseudonymised_result(state: dict[str, Any], value: Any, tool: str = "") -> tuple[Any, dict[str, Any]]:
    """A tool result read outside the executor (a playbook's precheck) with PII pseudonymised as untrusted values
    (the tool's declared `pii_fields` first), and the state update that records the new pseudonyms."""
    policies = get_policies()
    vault = PiiVault.from_state(state.get("pii_vault"))
    _, value = _declared_fields(policies, vault, tool, "", value, _bound_customer(state))
    return _pseudonymise_result(policies, vault, value), {"pii_vault": vault.to_state()}


def _verdict(guard: str, policies: PolicySet, **fields: Any) -> dict[str, Any]:
    return {"guard": guard, "policy_hash": policies.hash, **fields}


def _injection_fields(v: InjectionVerdict) -> dict[str, Any]:
    return {"flagged": v.flagged, "action": v.action, "score": v.score, "rules": v.rules,
            "transforms": v.transforms}


# Policy sets (by hash) whose guard models are loaded. Loading them (Presidio, the NER model, the learned
# detector) is a one-time cost of seconds on a cold process, not a slow scan: it gets its own, generous bound.
_WARM: set[str] = set()
WARM_TIMEOUT_S = 120.0


def _load_models(policies: PolicySet) -> None:
    _, _, pii = _components(policies)
    pii.analyzer.analyze(text="warm up the analyzer", language=policies.pii.language)


async def _warm(policies: PolicySet) -> None:
    if policies.hash not in _WARM:
        await asyncio.wait_for(asyncio.to_thread(_load_models, policies), WARM_TIMEOUT_S)
        _WARM.add(policies.hash)


def make_guard_node(name: str, fn: GuardFn, timeout_s: float | None = None) -> Callable[[Any], Awaitable[dict]]:
    """Wrap a synchronous guard body as an async node that fails closed on error or timeout."""

    async def node(state: Any) -> dict[str, Any]:
        try:
            policies = get_policies()
            await _warm(policies)
            timeout = timeout_s if timeout_s is not None else policies.limits.run.guard_timeout_s
            out = await asyncio.wait_for(asyncio.to_thread(fn, dict(state or {})), timeout)
        except GuardFailed as exc:
            await emit("guard", {"name": name, "verdict": "failed", **(getattr(exc, "verdict", None) or {})})
            raise
        except TimeoutError:
            verdict = {"guard": name, "ok": False, "error": "timeout", "reason": GuardFailed.reason}
            log.error("guard %s timed out; failing closed", name)
            await emit("guard", {"name": name, "verdict": "failed", **verdict})
            raise GuardFailed(name, "timeout", verdict) from None
        except Exception as exc:
            # Only the exception type, and no chained cause: its message may quote the scanned text,
            # and a server logging the traceback would then log raw PII.
            verdict = {"guard": name, "ok": False, "error": type(exc).__name__, "reason": GuardFailed.reason}
            log.error("guard %s raised %s; failing closed", name, type(exc).__name__)
            await emit("guard", {"name": name, "verdict": "failed", **verdict})
            raise GuardFailed(name, type(exc).__name__, verdict) from None

        for verdict in out.get("guard_verdicts") or []:
            await emit("guard", {**verdict, "name": verdict.get("guard", name), "verdict": guard_label(verdict)})
        return out

    node.__name__ = f"{name}_guard"
    node.__doc__ = fn.__doc__
    return node


# --- guard bodies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scanned:
    """One text after the scan: pseudonymised, quarantined when flagged, None when dropped."""

    text: str | None
    verdict: InjectionVerdict
    pii: dict[str, int]


def _scan(policies: PolicySet, vault: PiiVault, kind: ScanKind, raw: str, label: str) -> _Scanned:
    """The one scan every incoming text goes through: injection (by kind), then PII, then quarantine.

    User text is trusted-origin PII (it may be rehydrated for the user) and is never quarantined: a flagged
    user message taints the run, or is blocked by the input node."""
    injection, pii = _injection_detector(policies), detector_for(policies.pii)
    v = injection.scan(raw, kind)
    result = pseudonymise(pii, raw, vault, trusted=kind == "user", direction="input")
    text: str | None = result.text
    if kind != "user" and v.action in ("quarantine", "drop", "block"):
        style = "drop" if v.action in ("drop", "block") else policies.injection.quarantine_style
        text = quarantine(result.text, v, style, label)
    return _Scanned(text, v, result.counts)


def _scanned_update(verdicts: list[dict[str, Any]], vault: PiiVault, scanned: list[_Scanned],
                    **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"guard_verdicts": verdicts}
    if scanned:
        out.update(changes)
        out["pii_vault"] = vault.to_state()
    if any(s.verdict.taint for s in scanned):
        out["tainted"] = True
    return out


def _user_text(message: BaseMessage) -> str:
    """The text the user sent: unsealed when the server sealed it (pii.yaml store_raw_input: false)."""
    sealed = (message.additional_kwargs or {}).get(SEALED_KEY)
    return unseal_text(str(sealed)) if sealed else message_text(message)


def scan_input(state: dict[str, Any]) -> dict[str, Any]:
    """User messages: injection scan (kind user), then pseudonymise PII as trusted-origin values."""
    policies = get_policies()
    vault = PiiVault.from_state(state.get("pii_vault"))
    targets = [m for m in state.get("messages") or [] if isinstance(m, HumanMessage) and not _guarded(m)]
    raws = [_user_text(m) for m in targets]
    scanned = [_scan(policies, vault, "user", raw, "") for raw in raws]
    scope = _scope_checker(policies)
    verdicts = [_verdict("input", policies, target=m.id or "", ok=not s.verdict.flagged, pii=s.pii,
                         scope=scope.check(raw).model_dump(), **_injection_fields(s.verdict))
                for m, s, raw in zip(targets, scanned, raws, strict=True)]
    updates: list[BaseMessage] = [_rewrite(m, s.text or "", "input") for m, s in zip(targets, scanned, strict=True)]
    out = _scanned_update(verdicts, vault, scanned, messages=updates)
    if any(s.verdict.action == "block" for s in scanned):
        out["outcome"] = "guard_blocked"
        out["messages"] = [*updates, AIMessage(
            content="I can't act on that message. Please rephrase your request.", name="interlock",
            response_metadata={"outcome": "guard_blocked"})]
    return out


def scan_retrieved(state: dict[str, Any]) -> dict[str, Any]:
    """Retrieved chunks: injection scan (kind retrieved), quarantine per policy, pseudonymise PII."""
    policies = get_policies()
    vault = PiiVault.from_state(state.get("pii_vault"))
    chunks = list(state.get("retrieved") or [])
    todo = [c for c in chunks if isinstance(c, dict) and not c.get("guarded")]
    scanned = {id(c): _scan(policies, vault, "retrieved", str(c.get("text") or ""), str(c.get("chunk_id", "")))
               for c in todo}
    verdicts = [_verdict("retrieved", policies, target=str(c.get("chunk_id", "")), ok=not s.verdict.flagged,
                         trusted=bool(c.get("trusted", False)), pii=s.pii, **_injection_fields(s.verdict))
                for c, s in ((c, scanned[id(c)]) for c in todo)]
    kept = [c if id(c) not in scanned else {**c, "text": scanned[id(c)].text, "guarded": True,
                                            "quarantined": scanned[id(c)].verdict.flagged}
            for c in chunks if id(c) not in scanned or scanned[id(c)].text is not None]
    return _scanned_update(verdicts, vault, list(scanned.values()), retrieved=kept)


def scan_tool_outputs(state: dict[str, Any]) -> dict[str, Any]:
    """Tool results: injection scan (kind tool_output), quarantine per policy, pseudonymise PII."""
    policies = get_policies()
    vault = PiiVault.from_state(state.get("pii_vault"))
    targets = [m for m in state.get("messages") or [] if isinstance(m, ToolMessage) and not _guarded(m)]
    # Declared personal fields become pseudonyms before detection runs on the rest (and before the injection
    # scan: a pseudonym is no instruction).
    owner = _bound_customer(state)
    declared = [_declared_fields(policies, vault, m.name or "", message_text(m), getattr(m, "artifact", None), owner)
                for m in targets]
    scanned = [_scan(policies, vault, "tool_output", text, m.name or "")
               for m, (text, _) in zip(targets, declared, strict=True)]
    verdicts = [_verdict("tool_output", policies, target=m.tool_call_id, tool=m.name or "",
                         ok=not s.verdict.flagged, pii=s.pii, **_injection_fields(s.verdict))
                for m, s in zip(targets, scanned, strict=True)]
    updates: list[BaseMessage] = []
    for m, s, (_, structured) in zip(targets, scanned, declared, strict=True):
        # The structured result (artifact) travels on as an object, pseudonymised; withheld with the text when
        # the injection policy quarantines or drops the result.
        held = s.verdict.action in ("quarantine", "drop", "block")
        artifact = None if held else _pseudonymise_result(policies, vault, structured)
        text = s.text if s.text is not None else "[tool output withheld by the injection guard]"
        updates.append(_rewrite(m, text, "tool_output", artifact=artifact))
    return _scanned_update(verdicts, vault, scanned, messages=updates)


def _system_prompt(state: dict[str, Any]) -> str:
    explicit = state.get("system_prompt")
    if isinstance(explicit, str):
        return explicit
    return "\n".join(message_text(m) for m in state.get("messages") or [] if isinstance(m, SystemMessage))


def output_filter(policies: PolicySet | None = None) -> OutputFilter:
    policies, _, pii = _components(policies)
    return OutputFilter(pii, policies.tools.allowlists.url_hosts, policies.pii.fuzzy_threshold,
                        policies.pii.min_fuzzy_length)


def check_output(state: dict[str, Any]) -> dict[str, Any]:
    """The final answer: PII leak + egress filter, system-prompt leakage, citation verification."""
    policies, _, _ = _components()
    vault = PiiVault.from_state(state.get("pii_vault"))
    target = None
    for message in reversed(state.get("messages") or []):
        if isinstance(message, AIMessage):
            if not message.tool_calls and not _guarded(message):
                target = message
            break
    if target is None:
        return {"guard_verdicts": []}
    raw = message_text(target)
    honesty = answer_honesty(raw, state.get("messages") or [])
    if honesty["replacement"] is not None:
        raw = honesty["replacement"]
    filtered = output_filter(policies).filter(raw, vault)
    text = render_pseudonyms(filtered.text, vault)
    leak = None
    system_prompt = _system_prompt(state)
    if system_prompt:
        leak = system_prompt_leak(raw, system_prompt, policies.scope.system_prompt_leak_threshold)
        if leak.leaked:
            text = "I can't share that."
    if not text.strip():  # whatever blanked it (a filter, a model that said nothing), no one gets an empty answer
        text = EMPTY_ANSWER
    citations = verify_citations(raw, state.get("retrieved") or [], state.get("citations") or [])
    verdict = _verdict(
        "output", policies, target=target.id or "",
        ok=not filtered.changed and not (leak and leak.leaked) and citations.ok and honesty["ok"],
        findings=[f.model_dump() for f in filtered.findings],
        honesty={k: v for k, v in honesty.items() if k != "replacement"},
        system_prompt_leak=leak.model_dump() if leak else None,
        citations={"ok": citations.ok, "unknown": citations.unknown,
                   "unsupported_quotes": citations.unsupported_quotes},
    )
    return {"messages": [_rewrite(target, text, "output")], "guard_verdicts": [verdict]}


# --- answer honesty ----------------------------------------------------------------------------

TOOL_CALL_TEXT_ANSWER = ("I couldn't complete that request, and nothing was changed. Please try again in other "
                         "words, or ask me to hand you to a person.")


EMPTY_ANSWER = ("I couldn't complete that: I have no answer I can give you. Nothing was changed. Please try again, "
                "or ask me to hand you to a person.")


def answer_honesty(text: str, messages: list[BaseMessage]) -> dict[str, Any]:
    """An answer is no tool call written as text, and claims no action that this run's tool results do not show
    (graphs/nodes/claims.py). `replacement` is the honest answer to send instead, or None when `text` is fine."""
    from interlock.graphs.toolcalls import recognise

    if recognise(text).attempted:
        return {"ok": False, "tool_call_text": True, "unsupported_claims": [], "replacement": TOOL_CALL_TEXT_ANSWER}
    unsupported = claims.unsupported_claims(text, messages)
    return {"ok": not unsupported, "tool_call_text": False, "unsupported_claims": [c.action for c in unsupported],
            "replacement": claims.honest_answer(unsupported) if unsupported else None}


def _mask(value: str, entity: str) -> str:
    """The user's own value, recognisable but not whole: `j•••@example.com`, `•••0143`."""
    if entity == "EMAIL_ADDRESS" and "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}•••@{domain}"
    tail = re.sub(r"[^0-9A-Za-z]", "", value)[-4:]
    return f"•••{tail}" if len(re.sub(r"[^0-9A-Za-z]", "", value)) >= 8 else "•••"


def render_pseudonyms(text: str, vault: PiiVault) -> str:
    """No `<EMAIL_1>`-style placeholder reaches a reader. The user's own values (trusted: the user typed them) show
    masked, so the customer recognises them while the answer, which is kept in state, checkpoints and traces,
    still holds no raw personal data; a token nobody issued (a model made it up) is removed. Third-party values
    were already redacted by the output filter."""

    def sub(match: re.Match[str]) -> str:
        entry = vault.entries.get(match.group(0))
        if entry is None:
            return "[redacted]"
        return _mask(entry.value, entry.entity) if entry.trusted else f"[{match.group(1)} redacted]"

    return TOKEN_RE.sub(sub, text)


# --- tool calls --------------------------------------------------------------------------------


def _principal_values(state: dict[str, Any]) -> list[str]:
    principal = state.get("principal") or {}
    values: list[str] = []
    for key, value in principal.items():
        if key in ("scopes", "groups", "display_name"):
            continue  # permissions and a display name choose no record
        if isinstance(value, str):
            values.append(value)
        elif isinstance(value, list):
            values += [str(v) for v in value if isinstance(v, str | int)]
    return values


def provenance_sources(state: dict[str, Any], policies: PolicySet | None = None) -> list[Source]:
    """Everything the run holds, labelled by where it came from (policies/provenance.py): the user's messages,
    the principal, the system prompt and allowlists (config), each tool result split by its tool's `output`
    label, and the retrieved chunks. Texts are the guarded (pseudonymised) ones the model saw."""
    policies = policies or get_policies()
    sources: list[Source] = []
    for m in state.get("messages") or []:
        if isinstance(m, HumanMessage):
            sources.append(Source(label="user", text=message_text(m), name="user"))
        elif isinstance(m, SystemMessage):
            sources.append(Source(label="config", text=message_text(m), name="system"))
        elif isinstance(m, ToolMessage):
            rule = policies.tools.tools.get(m.name or "")
            trust = rule.output if rule is not None else "text"
            fields = rule.text_fields if rule is not None else []
            sources += result_sources(m.name or "tool", message_text(m), getattr(m, "artifact", None), trust, fields)
    principal = _principal_values(state)
    if principal:
        sources.append(Source(label="principal", text="\n".join(principal), name="principal"))
    lists = policies.tools.allowlists
    config = [*lists.emails, *lists.email_domains, *lists.url_hosts, *lists.accounts, *lists.phones,
              str(state.get("tenant") or "")]
    sources.append(Source(label="config", text="\n".join(c for c in config if c), name="config"))
    for chunk in state.get("retrieved") or []:
        if isinstance(chunk, dict) and chunk.get("text"):
            sources.append(Source(label="retrieved", text=str(chunk["text"]), name=str(chunk.get("chunk_id", ""))))
    return sources


def tool_context(state: dict[str, Any], facts: dict[str, Any] | None = None, *, origin: str = "model",
                 input_schema: dict[str, Any] | None = None) -> ToolContext:
    """Trusted text = the user's messages and the system prompt; never chunks or tool output. Sources carry
    every text with its provenance label for tracing a write's arguments."""
    texts = [message_text(m) for m in state.get("messages") or [] if isinstance(m, HumanMessage | SystemMessage)]
    return ToolContext(tainted=bool(state.get("tainted")), trusted_texts=texts,
                       facts=facts if facts is not None else dict(state.get("facts") or {}),
                       vault=state.get("pii_vault") or None, sources=provenance_sources(state),
                       origin="playbook" if origin == "playbook" else "model", input_schema=input_schema)


def decide_tool_call(state: dict[str, Any], tool: str, args: dict[str, Any], facts: dict[str, Any] | None = None,
                     call_id: str = "", *, origin: str = "model",
                     input_schema: dict[str, Any] | None = None) -> ToolDecision:
    """The tool policy's decision for one proposed call in this run (for the planner's executor)."""
    policies = get_policies()
    context = tool_context(state, facts, origin=origin, input_schema=input_schema)
    return evaluate_tool_call(ToolCall(name=tool, args=args, id=call_id), context, policies.tools)


def executor_args(state: dict[str, Any], tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments the MCP server receives. Reads get every real value back (the server holds them anyway and
    the result is guarded again). Writes get back only the requesting user's own values: a third party's value
    read from a tool stays a pseudonym, unless tools.yaml `restore_untrusted` names that argument."""
    vault = PiiVault.from_state(state.get("pii_vault"))
    rule = get_policies().tools.tools.get(tool)
    if rule is None or rule.risk == "read":
        return vault.rehydrate_args(args)
    return {k: vault.rehydrate_args(v) if k in rule.restore_untrusted else _restore_trusted(vault, v)
            for k, v in args.items()}


def _restore_trusted(vault: PiiVault, value: Any) -> Any:
    if isinstance(value, str):
        return vault.rehydrate(value, only_trusted=True)
    if isinstance(value, dict):
        return {k: _restore_trusted(vault, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_restore_trusted(vault, v) for v in value)
    return value


def rehydrate_tool_args(state: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Real values for `<EMAIL_1>`-style tokens in tool arguments. Call it only in the trusted executor,
    right before the MCP call, and never put the result back into state or a model prompt."""
    return PiiVault.from_state(state.get("pii_vault")).rehydrate_args(args)


def check_tool_calls(state: dict[str, Any]) -> dict[str, Any]:
    """Decisions for the tool calls of the last AI message, recorded as one verdict."""
    policies = get_policies()
    messages = state.get("messages") or []
    last = messages[-1] if messages else None
    if not isinstance(last, AIMessage) or not last.tool_calls:
        return {"guard_verdicts": []}
    context = tool_context(state)
    decisions = [evaluate_tool_call(ToolCall(name=c["name"], args=c.get("args") or {}, id=c.get("id") or ""),
                                    context, policies.tools) for c in last.tool_calls]
    verdict = _verdict("tool_call", policies, target=last.id or "",
                       ok=all(d.action == "allow" for d in decisions),
                       decisions=[d.model_dump() for d in decisions])
    return {"guard_verdicts": [verdict]}


# --- client rendering --------------------------------------------------------------------------


def client_text(text: str, pii_vault: dict[str, Any] | None, policies: PolicySet | None = None) -> str:
    """Final text for the client: filter, then put back only the user's own (trusted) values."""
    vault = PiiVault.from_state(pii_vault)
    filtered = output_filter(policies).filter(text, vault).text
    return vault.rehydrate(filtered, only_trusted=True, placeholder="[redacted]")


class ClientStream:
    """Streaming counterpart of `client_text`: feed model chunks, send what `feed`/`close` return."""

    def __init__(self, pii_vault: dict[str, Any] | None, policies: PolicySet | None = None, hold: int = 256,
                 batch: int = 64) -> None:
        self.vault = PiiVault.from_state(pii_vault)
        self._filter = StreamingOutputFilter(output_filter(policies), self.vault, hold=hold, batch=batch)

    def feed(self, chunk: str) -> str:
        return self.vault.rehydrate(self._filter.feed(chunk), only_trusted=True, placeholder="[redacted]")

    def close(self) -> str:
        return self.vault.rehydrate(self._filter.close(), only_trusted=True, placeholder="[redacted]")


def client_stream_filter(state: dict[str, Any], hold: int = 256, batch: int = 64) -> ClientStream:
    return ClientStream(state.get("pii_vault"), hold=hold, batch=batch)


# --- the nodes ---------------------------------------------------------------------------------

input_guard = make_guard_node("input", scan_input)
retrieved_guard = make_guard_node("retrieved", scan_retrieved)
tool_output_guard = make_guard_node("tool_output", scan_tool_outputs)
tool_call_guard = make_guard_node("tool_call", check_tool_calls)
output_guard = make_guard_node("output", check_output)


async def guard_answer(state: dict[str, Any], message: AIMessage) -> tuple[AIMessage, list[dict[str, Any]]]:
    """Run the output guard on an answer before it enters the state, then stream the client-safe text.

    Guarding in the node that writes the answer keeps raw model text out of every stream mode (values, updates,
    subgraph events, checkpoints); relaying the filtered text keeps token streaming on `messages-tuple`.
    Fails closed like every guard (GuardFailed)."""
    from interlock.graphs.models import relay_to_client

    out = await output_guard({**state, "messages": [*(state.get("messages") or []), message]})
    rewritten = next((m for m in reversed(out.get("messages") or []) if isinstance(m, AIMessage)), message)
    return await relay_to_client(rewritten), list(out.get("guard_verdicts") or [])
