"""Planner/executor: plan with the tools the caller may use, execute through `tools/`, observe, re-plan.

Two planners behind one executor. With a model configured (planner tier) the model proposes tool
calls and sees their results until it answers. Without one, or when every provider fails, the
declarative playbook for the routed intent plans the calls (zero-key / degraded mode).
Independent reads run in parallel. A call the policy marks destructive, or a write once the run is
tainted, goes through the approval nodes first. Hard limits on steps, tool calls and wall-clock time
end the run in the `limit` node with a distinct outcome, never with an exception.

    plan ──> execute ──> guard_tools ──> execute ... ──> observe ──> plan (model) | respond (playbook)
     │          └──> request_approval ──> await_approval ──> run_approved ──> guard_tools
     │               (inside the router these two are root nodes: the planner ends, then re-enters at run_approved)
     └──> limit / END (answered, refused, needs input)
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from interlock.graphs import prompts, toolcalls
from interlock.graphs import state as run_state
from interlock.graphs.events import shown_args
from interlock.graphs.guarded import guarded_subgraph
from interlock.graphs.models import ModelGateway, ModelsUnavailable
from interlock.graphs.nodes import approval, guards
from interlock.graphs.nodes.answer_stream import ProgressiveAnswer, action_claim_check
from interlock.graphs.nodes.answers import deliver, final_message
from interlock.graphs.nodes.intent import Classify
from interlock.graphs.nodes.playbooks import (
    PlaybooksPolicy,
    default_playbooks,
    precheck_for_call,
    render,
    validate_args,
)
from interlock.graphs.nodes.playbooks import plan as playbook_plan
from interlock.graphs.nodes.toolbox import GovernedToolbox, Toolbox, ToolInfo
from interlock.graphs.state import InterlockState, PrincipalInfo, last_user_text, message_text
from interlock.policies.pii import PiiVault
from interlock.policies.tool_rules import ToolDecision
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command
from pydantic import BaseModel, Field

# --- typed plans -----------------------------------------------------------------------------------


class PlannedCall(BaseModel):
    """One tool call the model or a playbook proposed. State holds `model_dump()`s of these."""

    id: str
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    # A playbook's reply template for this call's result (zero-key answers); None for model calls.
    reply: str | None = None
    # Who chose the arguments: the model (each write argument is traced to its source) or a playbook (code that
    # builds them from the user's message and configuration).
    origin: Literal["model", "playbook"] = "model"

    def as_tool_call(self) -> dict[str, Any]:
        return {"name": self.tool, "args": self.args, "id": self.id, "type": "tool_call"}


class PendingApproval(BaseModel):
    """The gated call handed to the approval nodes (graphs/nodes/approval.py reads it from state)."""

    call_id: str
    tool: str
    args: dict[str, Any]
    server: str
    risk: str
    policy_reasons: list[str]
    input_schema: dict[str, Any] | None = None  # an operator's edit must fit it
    # The real arguments, sealed with the vault key, when the tenant stores no raw user input (pii.yaml
    # `store_raw_input: false`): `args` then holds the call as proposed (pseudonyms), and the real values are
    # unsealed only to hash the approval and to make the call (graphs/nodes/approval.py `real_args`).
    sealed_args: str | None = None


def planned(state: InterlockState) -> list[PlannedCall]:
    return [PlannedCall.model_validate(c) for c in state.get("plan") or []]


# --- dependencies and limits -----------------------------------------------------------------------


@dataclass
class RunLimits:
    max_steps: int = 25
    max_tool_calls: int = 10
    wall_clock_s: float = 120.0

    @classmethod
    def from_policy(cls) -> RunLimits:
        try:
            from interlock.policies.graph_schema import load_yaml
            from interlock.policies.schema import LimitsPolicy

            run = LimitsPolicy.model_validate(load_yaml("limits.yaml")).run
            return cls(run.max_steps, run.max_tool_calls, run.wall_clock_s)
        except Exception:
            return cls()


def recursion_budget(limits: RunLimits) -> int:
    """LangGraph supersteps a run may take: about six per planner step, plus routing and guards."""
    return limits.max_steps * 6 + 30


@dataclass
class PlannerDeps:
    toolbox: Toolbox | None
    gateway: ModelGateway
    limits: RunLimits = field(default_factory=RunLimits)
    playbooks: PlaybooksPolicy | None = None
    use_guards: bool = True
    # Inside the router the approval nodes sit at the root (chat clients render root messages only): the planner
    # ends with the pending call and is re-entered to run it once decided. Served alone, it asks itself.
    approvals_at_root: bool = False


def _principal(state: InterlockState) -> PrincipalInfo:
    return PrincipalInfo.model_validate(state.get("principal") or {"sub": "anonymous", "tenant": state.get("tenant", "")})


def _elapsed(state: InterlockState) -> float:
    """The turn's working time: wall time since it started, minus the time it spent waiting for a decision."""
    now = run_state.clock()
    return now - float(state.get("started_at") or now) - float(state.get("waited_s") or 0.0)


def _vault(state: InterlockState) -> PiiVault | None:
    return PiiVault.from_state(state["pii_vault"]) if state.get("pii_vault") else None


# Corrections a planner model gets for an unusable tool call before the run gives up on that step.
MAX_REPAIRS = 2


def _results_this_turn(state: InterlockState) -> bool:
    """A tool has answered since the user's latest message."""
    for message in reversed(state.get("messages") or []):
        if isinstance(message, ToolMessage):
            return True
        if isinstance(message, HumanMessage):
            return False
    return False


def _tool_result_text(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, default=str)


def _call_key(name: str, args: Any) -> str:
    """A call's identity for spotting repeats: the tool and its arguments, key order and encoding aside (a model
    may copy an earlier call with its arguments as a JSON string)."""
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            pass
    return name + " " + json.dumps(args or {}, sort_keys=True, default=str)


def _executed_this_turn(state: InterlockState) -> set[str]:
    """The calls (`_call_key`) that were answered by a tool since the user's latest message."""
    answered: set[str] = set()
    keys: set[str] = set()
    for message in reversed(state.get("messages") or []):
        if isinstance(message, HumanMessage):
            break
        if isinstance(message, ToolMessage):
            answered.add(message.tool_call_id)
        elif isinstance(message, AIMessage):
            keys |= {_call_key(c["name"], c.get("args")) for c in message.tool_calls if c.get("id") in answered}
    return keys


def repeats_executed_calls(calls: list[dict[str, Any]], state: InterlockState) -> bool:
    """Every call in a reply was already executed in this turn with the same arguments: small models copy the
    call they see in the history instead of answering from its result; running it again only loops."""
    done = _executed_this_turn(state)
    return bool(calls) and all(_call_key(c["name"], c.get("args")) in done for c in calls)


def _playbook_tools(playbook: Any) -> list[str]:
    names = [step.tool for step in playbook.steps]
    if playbook.precheck is not None:
        names.append(playbook.precheck.tool)
    return list(dict.fromkeys(names))


def results_summary(state: InterlockState, playbooks: PlaybooksPolicy) -> str:
    """An answer written from this turn's tool results without a model: each result through the reply template a
    playbook has for its tool (the zero-key wording), else its fields listed; errors are said as errors."""
    templates: dict[str, str] = {}
    for name, playbook in playbooks.playbooks.items():
        for step in playbook.steps:
            if name == state.get("intent") or step.tool not in templates:
                templates[step.tool] = step.reply or playbook.reply
    calls = {c["id"]: c for m in state.get("messages") or [] if isinstance(m, AIMessage) for c in m.tool_calls}
    lines: list[str] = []
    for message in _results_of_this_turn(state):
        call = calls.get(message.tool_call_id) or {"name": message.name or "", "args": {}}
        if message.status == "error":
            lines.append(str(message.content))
            continue
        result = message.artifact if message.artifact is not None else str(message.content)
        template = templates.get(call["name"], f"{call['name'].replace('_', ' ')}: {{result}}")
        lines.append(render(template, {"result": result, **(call.get("args") or {})}))
    return "\n".join(dict.fromkeys(lines)) or ("I couldn't complete that: I found nothing to answer with. Nothing "
                                               "was changed. Please try again, or ask me to hand you to a person.")


def _results_of_this_turn(state: InterlockState) -> list[ToolMessage]:
    """The tool results since the user's latest message, oldest first."""
    results: list[ToolMessage] = []
    for message in reversed(state.get("messages") or []):
        if isinstance(message, HumanMessage):
            break
        if isinstance(message, ToolMessage):
            results.append(message)
    return results[::-1]


# --- the nodes -------------------------------------------------------------------------------------


class PlannerNodes:
    """The planner's nodes over its dependencies; `build_planner` wires them in reading order."""

    def __init__(self, deps: PlannerDeps) -> None:
        self.deps = deps
        self.limits = deps.limits

    async def _tools(self, state: InterlockState) -> dict[str, ToolInfo]:
        if self.deps.toolbox is None:
            return {}
        return {t.name: t for t in await self.deps.toolbox.list_tools(_principal(state))}

    def _decide(self, state: InterlockState, call: PlannedCall, info: ToolInfo | None) -> ToolDecision:
        """allow / require_approval / deny: the tool policy's decision, never weaker than the server's hints."""
        if info is None:
            return ToolDecision(tool=call.tool, call_id=call.id, action="deny", reasons=["not_available"])
        decision = (guards.decide_tool_call(dict(state), call.tool, call.args, call_id=call.id, origin=call.origin,
                                            input_schema=info.input_schema) if self.deps.use_guards
                    else ToolDecision(tool=call.tool, call_id=call.id, action="allow"))
        if decision.action == "allow" and info.needs_approval(bool(state.get("tainted"))):
            decision = decision.model_copy(update={"action": "require_approval",
                                                   "reasons": [*decision.reasons, f"approval:{info.risk}"]})
        return decision

    # plan ---------------------------------------------------------------------------------------------

    async def plan(self, state: InterlockState, config: RunnableConfig) -> Command[Any]:
        """The next calls: from the planner model when one answers, else from the intent's playbook."""
        steps = int(state.get("steps") or 0) + 1
        if steps > self.limits.max_steps:
            return Command(goto="limit", update={"outcome": "limit_steps"})
        if _elapsed(state) > self.limits.wall_clock_s:
            return Command(goto="limit", update={"outcome": "limit_time"})
        tools = await self._tools(state)
        mode = state.get("mode") or "zero-key"
        if self.deps.gateway.has("planner") and mode != "degraded":
            try:
                return await self._plan_with_model(state, tools, steps)
            except ModelsUnavailable:
                mode = "degraded"
        return await self._plan_with_playbook(state, tools, steps, mode)

    async def _plan_with_model(self, state: InterlockState, tools: dict[str, ToolInfo], steps: int) -> Command[Any]:
        system = SystemMessage(prompts.PLANNER.format(company=state.get("tenant", "the company")))
        # A plain answer streams to clients as it is generated, through the incremental output guard; text that
        # looks like a tool call is never released.
        stream = ProgressiveAnswer(dict(state), use_guards=self.deps.use_guards, segment_check=action_claim_check)
        try:
            reply, steps, unusable = await self._checked_model_reply(state, tools, steps, system, stream)
        except ModelsUnavailable:
            await stream.discard()
            raise
        if not unusable and repeats_executed_calls(reply.tool_calls, state):
            # Nothing new to run: the results are already in the conversation, so the model must answer now. The
            # repeated call (text is held back, never released) is forgotten and the answer streams afresh.
            if not stream.restart():
                await stream.discard()
                stream = ProgressiveAnswer(dict(state), use_guards=self.deps.use_guards,
                                           segment_check=action_claim_check)
            reply, steps = await self._answer_from_results(state, steps, system, stream)
        reply.response_metadata = {**reply.response_metadata, "interlock_mode": "model"}
        if unusable:
            # The repair budget is spent and the reply is still a tool call nobody can run: say so, never show it.
            text = ("I couldn't complete that: I wasn't able to turn your request into a valid action. Nothing was "
                    "changed. Please rephrase it, or ask me to hand you to a person.")
            update = {"messages": [final_message(text, "model", "tool_error")], "steps": steps, "mode": "model",
                      "outcome": "tool_error"}
            await stream.discard()
            return Command(goto=END, update=await deliver(self.deps.use_guards, state, update))
        if not reply.tool_calls:
            update = {"messages": [reply], "steps": steps, "mode": "model", "outcome": "answered"}
            return Command(goto=END, update=await deliver(self.deps.use_guards, state, update, stream=stream))
        moot = await self._moot_calls(state, reply.tool_calls, tools)
        if moot is not None:
            # The record's state already answers (an order already cancelled): nothing runs, no operator is asked.
            text, vault_update = moot
            update = {"messages": [final_message(text, "model", "answered")], "steps": steps, "mode": "model",
                      "outcome": "answered", **vault_update}
            return Command(goto=END, update=await deliver(self.deps.use_guards, state, update, stream=stream))
        reply = await stream.settle_tool_step(reply)
        calls = [PlannedCall(id=c.get("id") or f"call_{uuid.uuid4().hex[:12]}", tool=c["name"],
                             args=dict(c.get("args") or {})) for c in reply.tool_calls]
        for call, raw in zip(calls, reply.tool_calls, strict=True):
            raw["id"] = call.id  # the ToolMessages answer these ids
        return Command(goto="execute", update={"messages": [reply], "plan": [c.model_dump() for c in calls],
                                               "steps": steps, "mode": "model"})

    async def _precheck(self, state: InterlockState, check: tuple[str, dict[str, Any], str, list[Any], str],
                        slots: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """A playbook's precheck read: the reply and the state update when the record's state makes the steps moot
        (an already cancelled order is not cancelled again, and no operator is asked to approve it), else None."""
        tool, args, field_name, stop_if, reply = check
        if self.deps.toolbox is None:
            return None
        seen = await self.deps.toolbox.call(_principal(state), tool, args)
        if not (seen.ok and isinstance(seen.content, dict) and seen.content.get(field_name) in stop_if):
            return None
        result, vault_update = seen.content, {}
        if self.deps.use_guards:  # the reply is state (and streamed) before the output guard: no raw values
            result, vault_update = await asyncio.to_thread(guards.pseudonymised_result, dict(state), result, tool)
        return render(reply, {**slots, "result": result}), vault_update

    async def _moot_calls(self, state: InterlockState, calls: list[dict[str, Any]],
                          tools: dict[str, ToolInfo]) -> tuple[str, dict[str, Any]] | None:
        """Model mode runs the playbooks' prechecks too: when every call of a reply is one a playbook prechecks
        and every precheck finds the record already in a final state, the answer comes from those states."""
        playbooks = self.deps.playbooks or default_playbooks()
        checks = [precheck_for_call(c["name"], dict(c.get("args") or {}), playbooks, state.get("intent") or "")
                  for c in calls]
        if not calls or any(check is None or check[0] not in tools for check in checks):
            return None
        texts: list[str] = []
        update: dict[str, Any] = {}
        for call, check in zip(calls, checks, strict=True):
            assert check is not None
            moot = await self._precheck({**state, **update}, check, dict(call.get("args") or {}))
            if moot is None:
                return None
            texts.append(moot[0])
            update.update(moot[1])
        return "\n".join(texts), update

    # model replies that real providers give: tool choice, calls written as text, a bounded repair loop ------

    def _offered(self, state: InterlockState, tools: dict[str, ToolInfo]) -> dict[str, ToolInfo]:
        """The tools shown to the model: those on the business systems the routed intent's playbook works with (an
        order question sees the orders tools, not all fifteen: a shorter prompt, read faster, and fewer wrong picks).
        Only a prompt matter: a call to any tool the caller may use is still checked against that tool's schema and
        decided by policy, provenance, the toolbox and the MCP servers like any other (a hijacked model's off-intent
        call meets the same decision, never a "no such tool" repair). An intent without a playbook sees every tool
        the caller may use."""
        playbook = (self.deps.playbooks or default_playbooks()).playbooks.get(state.get("intent") or "")
        if playbook is None:
            return tools
        servers = {tools[name].server for name in _playbook_tools(playbook) if name in tools}
        offered = {name: info for name, info in tools.items() if info.server in servers}
        return offered or tools

    async def _answer_from_results(self, state: InterlockState, steps: int, system: SystemMessage,
                                   stream: ProgressiveAnswer | None = None) -> tuple[AIMessage, int]:
        """The answer once the model only repeats calls that already ran: asked once more with no tools bound (the
        Qwen template lists bound tools in the prompt whatever `tool_choice` says, and a model shown tools keeps
        calling them); when that is again a call, or nothing, the answer is written from the tool results."""
        within = steps + 1 <= self.limits.max_steps and _elapsed(state) < self.limits.wall_clock_s
        if within and self.deps.gateway.has("planner"):
            steps += 1
            remaining = self.limits.wall_clock_s - _elapsed(state)
            nudge = HumanMessage("The tool results above answer this. Reply to the customer now in plain "
                                 "sentences, using only those results. Do not call any tool.")
            try:
                reply, _provider = await self.deps.gateway.ainvoke(
                    "planner", [system, *state.get("messages", []), nudge], tenant=state.get("tenant", ""),
                    feature="planner", deadline=time.monotonic() + max(remaining, 0.0), stream=stream)
            except ModelsUnavailable:
                reply = None
            text = message_text(reply) if reply is not None else ""
            if reply is not None and not reply.tool_calls and text.strip() and not toolcalls.recognise(text).attempted:
                return AIMessage(content=text, id=reply.id, usage_metadata=reply.usage_metadata,
                                 response_metadata=dict(reply.response_metadata)), steps
            if stream is not None:
                stream.restart()  # a call written as text was held back; the summary below goes out instead
        return AIMessage(content=results_summary(state, self.deps.playbooks or default_playbooks()),
                         response_metadata={"answer_from": "tool_results"}), steps

    def _tool_choice(self, state: InterlockState, tools: dict[str, ToolInfo]) -> str:
        """What the model may do at this step. `auto` (answer or call) once a tool has answered in this turn, or
        when the routed intent names no action; when the intent's playbook can act on this message, the step must
        act: its one tool by name, or `required` (any tool). Small open models left on `auto` tend to answer in
        prose instead of calling the tool (or to claim the action was done)."""
        if _results_this_turn(state):
            return "auto"
        intent = state.get("intent") or ""
        pb = playbook_plan(intent, last_user_text(state), self.deps.playbooks or default_playbooks(),
                           principal=_principal(state).sub) if intent else None
        if pb is None or pb.missing or not pb.calls:
            return "auto"
        names = list(dict.fromkeys(tool for tool, _ in pb.calls if tool in tools))
        if len(names) == 1:
            return names[0]
        return "required" if names else "auto"

    async def _checked_model_reply(self, state: InterlockState, tools: dict[str, ToolInfo], steps: int,
                                   system: SystemMessage, stream: ProgressiveAnswer | None = None,
                                   ) -> tuple[AIMessage, int, bool]:
        """The planner model's reply with every tool call checked against the tools' schemas: (reply, steps used,
        still unusable). Calls written as text are turned into ordinary tool calls, so they take exactly the path
        (policy, approval, provenance) a native call takes. An unknown tool, arguments that break the schema or
        an unreadable call get a correction naming the problem and another try, at most `MAX_REPAIRS` times and
        never past the step or time limit; each try counts as a step. The model is shown the routed intent's tools
        (`_offered`); calls are checked against every tool the caller may use."""
        schemas = {name: info.input_schema for name, info in tools.items()}
        vault = _vault(state)
        bound = [t.as_openai_tool() for t in self._offered(state, tools).values()]
        choice = self._tool_choice(state, tools) if bound else None
        conversation: list[Any] = [system, *state.get("messages", [])]
        for attempt in range(MAX_REPAIRS + 1):
            remaining = self.limits.wall_clock_s - _elapsed(state)
            if attempt and stream is not None:
                stream.restart()  # the rejected try released nothing (a call written as text is held back)
            reply, _provider = await self.deps.gateway.ainvoke(
                "planner", conversation, tenant=state.get("tenant", ""), feature="planner", tools=bound or None,
                tool_choice=choice, deadline=time.monotonic() + max(remaining, 0.0),
                # A step that must call a tool has no answer to stream, and llama_cpp.server's streamed forced
                # calls repeat the tool name in every delta: only steps that may answer are streamed.
                stream=stream if choice in (None, "auto") else None)
            calls, from_text = list(reply.tool_calls), None
            if not calls:
                from_text = toolcalls.recognise(message_text(reply), schemas.keys())
                calls = from_text.calls
                if not message_text(reply).strip():  # some servers answer a tool prompt with nothing at all
                    from_text.attempted, from_text.problems = True, ["your reply was empty"]
                elif not from_text.attempted:
                    return reply, steps, False  # a plain answer
            problems = [*(from_text.problems if from_text else []),
                        *toolcalls.check_calls(calls, schemas, vault.rehydrate_args if vault is not None else None)]
            if calls and not problems:
                if from_text is not None:
                    # The call itself is the message: the JSON text is no answer for anyone to read.
                    reply = AIMessage(content="", tool_calls=calls, id=reply.id, usage_metadata=reply.usage_metadata,
                                      response_metadata={**reply.response_metadata, "tool_calls_from_text": True})
                return reply, steps, False
            out_of_budget = steps + 1 > self.limits.max_steps or _elapsed(state) > self.limits.wall_clock_s
            if attempt == MAX_REPAIRS or out_of_budget:
                break
            steps += 1
            said = message_text(reply) or json.dumps([{"name": c["name"], "arguments": c.get("args")}
                                                      for c in calls])
            conversation += [AIMessage(content=said), HumanMessage(toolcalls.retry_message(problems))]
        if reply.tool_calls:
            return reply, steps, False  # native calls go on to the executor, which refuses what it cannot run
        return reply, steps, True

    async def _plan_with_playbook(self, state: InterlockState, tools: dict[str, ToolInfo], steps: int,
                                  mode: str) -> Command[Any]:
        """Zero-key or degraded: the playbook for the routed intent, its arguments checked against the schemas."""
        intent = state.get("intent") or ""
        text = state.get("request") or last_user_text(state)  # without a question the router answered apart
        waiting = state.get("awaiting_input") or {}
        if waiting.get("intent") == intent:
            text = f"{waiting.get('text', '')} {text}"
        principal = _principal(state)  # a bound end user's slots name their customer, else the subject
        pb = playbook_plan(intent, text, self.deps.playbooks or default_playbooks(),
                           principal=principal.customer_id or principal.sub)

        def finish(message: str, outcome: str, **extra: Any) -> Command[Any]:
            return Command(goto=END, update={"messages": [final_message(message, mode, outcome)], "mode": mode,
                                             "outcome": outcome, "steps": steps, **extra})

        if pb is None:
            return finish("I can't do that here. I can look up, track, cancel or refund orders, show invoices, "
                          "update your contact details, or hand you to a person.", "refused")
        if pb.missing:
            return finish(pb.question, "needs_input", awaiting_input={"intent": intent, "text": text})
        vault = _vault(state)
        problems: list[str] = []
        calls: list[PlannedCall] = []
        for (tool, args), reply_template in zip(pb.calls, pb.replies, strict=True):
            info = tools.get(tool)
            if info is None:
                problems.append(f"the {tool} tool is not available to you right now")
                continue
            problems += validate_args(args, info.input_schema, vault.rehydrate_args if vault is not None else None)
            calls.append(PlannedCall(id=f"pb_{uuid.uuid4().hex[:12]}", tool=tool, args=args, reply=reply_template,
                                     origin="playbook"))
        if problems:
            return finish("I couldn't do that: " + "; ".join(problems) + ".", "needs_input")
        if pb.precheck is not None and pb.precheck[0] in tools:
            moot = await self._precheck(state, pb.precheck, pb.slots)
            if moot is not None:
                return finish(moot[0], "answered", **moot[1])
        # The playbook's calls are recorded like a model's, marked as coming from a playbook.
        announce = AIMessage(content="", name="playbook", response_metadata={"interlock_mode": mode, "intent": intent},
                             tool_calls=[c.as_tool_call() for c in calls])
        return Command(goto="execute", update={"messages": [announce], "plan": [c.model_dump() for c in calls],
                                               "steps": steps, "mode": mode, "awaiting_input": None})

    # execute ------------------------------------------------------------------------------------------

    async def execute(self, state: InterlockState) -> Command[Any]:
        """Run the plan's calls that policy allows; hand the first gated one to the approval nodes.

        Loops through the tool-output guard after every batch, so a gated call is judged with the
        taint that the earlier results may have caused.
        """
        tools = await self._tools(state)
        done = state.get("executed") or {}
        todo = [c for c in planned(state) if c.id not in done]
        used = int(state.get("tool_calls") or 0)
        if _elapsed(state) > self.limits.wall_clock_s:
            return Command(goto="limit", update={"outcome": "limit_time"})
        vault = _vault(state)
        messages: list[ToolMessage] = []
        executed: dict[str, Any] = {}
        runnable: list[PlannedCall] = []
        shown: dict[str, dict[str, Any]] = {}  # the arguments as proposed (pseudonyms), for telemetry
        gated: list[tuple[PlannedCall, PlannedCall, ToolInfo, list[str]]] = []
        for call in todo:
            info = tools.get(call.tool)
            decision = self._decide(state, call, info)
            if info is None or decision.action == "deny":
                why = "is not available to you" if info is None else f"was blocked by policy ({', '.join(decision.reasons)})"
                messages.append(ToolMessage(content=f"Not executed: {call.tool} {why}.", tool_call_id=call.id,
                                            name=call.tool, status="error"))
                executed[call.id] = {"status": "denied", "reasons": decision.reasons}
                continue
            # Arguments go to the MCP server (and into any approval) with the user's real values.
            real = call.model_copy(update={"args": guards.executor_args(dict(state), call.tool, call.args)
                                           if vault is not None else call.args})
            if decision.action == "require_approval":
                gated.append((real, call, info, decision.reasons))
            else:
                runnable.append(real)
                shown[call.id] = call.args
        if runnable:
            if used + len(runnable) > self.limits.max_tool_calls:
                return Command(goto="limit", update={"outcome": "limit_tool_calls", "messages": messages,
                                                     "executed": executed})
            # Independent calls of one step run concurrently.
            for result in await asyncio.gather(*(self._call_tool(c.tool, c.args, None, c.id, state, shown.get(c.id))
                                                 for c in runnable)):
                messages += result["messages"]
                executed.update(result["executed"])
            return Command(goto="guard_tools", update=await self._guard_results(
                state, {"messages": messages, "executed": executed, "tool_calls": used + len(runnable)}))
        update: dict[str, Any] = {"messages": messages, "executed": executed}
        if gated:
            if used + 1 > self.limits.max_tool_calls:
                return Command(goto="limit", update={**update, "outcome": "limit_tool_calls"})
            call, proposed, info, reasons = gated[0]
            refused = await self._ownership_precheck(state, call)
            if refused is not None:
                # The MCP server would refuse it (another customer's record is "not found"): answered like a tool
                # error, and no approval is created, so no operator is asked about a call that cannot run.
                return Command(goto="guard_tools", update=await self._guard_results(state, {
                    "messages": [*messages, refused], "executed": {**executed, call.id: {"status": "error",
                                                                                        "tool": call.tool}}}))
            args, sealed = approval.pending_args(state, proposed.args, call.args)
            update["pending_approval"] = PendingApproval(call_id=call.id, tool=call.tool, args=args,
                                                         server=info.server, risk=info.risk, policy_reasons=reasons,
                                                         input_schema=info.input_schema,
                                                         sealed_args=sealed).model_dump()
            # Inside the router the approval is asked at the root, so the AI message carrying this call is already
            # in the root's messages when the run pauses (clients render root messages only).
            return Command(goto=END if self.deps.approvals_at_root else "request_approval", update=update)
        return Command(goto="observe", update=update)

    async def _ownership_precheck(self, state: InterlockState, call: PlannedCall) -> ToolMessage | None:
        """The MCP server's own answer to a gated call before any approval is requested (its record-ownership
        rule, asked through the call path, never re-implemented here): a ToolMessage when it refuses, else None.
        A server that cannot be reached is no refusal: the call waits for its decision as before."""
        precheck = getattr(self.deps.toolbox, "precheck", None)
        if precheck is None:
            return None
        outcome = await precheck(_principal(state), call.tool, call.args)
        if outcome.ok or outcome.code in ("unavailable", "denied"):
            return None
        return ToolMessage(content=f"Tool error: {outcome.error or 'refused'}", tool_call_id=call.id, name=call.tool,
                           status="error")

    async def _call_tool(self, tool: str, args: dict[str, Any], approval_id: str | None, call_id: str,
                         state: InterlockState, shown: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.deps.toolbox is not None
        with shown_args(shown if shown is not None else args):
            outcome = await self.deps.toolbox.call(_principal(state), tool, args, approval_id=approval_id)
        if not outcome.ok and outcome.code == "already_used":
            # The gate already spent this approval: the call ran before a crash. Never run it again.
            content, status = "Already executed earlier; not repeated.", "success"
        elif outcome.ok:
            content, status = _tool_result_text(outcome.content), "success"
        else:
            content, status = f"Tool error: {outcome.error or 'failed'}", "error"
        # The text is what a model reads; the structured result rides along as the artifact for the zero-key reply.
        # The tool-output guard scans and pseudonymises both next.
        artifact = outcome.content if outcome.ok and not isinstance(outcome.content, str) else None
        message = ToolMessage(content=content, tool_call_id=call_id, name=tool, status=status, artifact=artifact)
        return {"messages": [message], "executed": {call_id: {"status": status, "tool": tool}},
                "tool_calls": int(state.get("tool_calls") or 0) + 1}

    async def run_approved(self, state: InterlockState, config: RunnableConfig) -> Command[Any]:
        shown = approval.telemetry_args(state.get("pending_approval") or {}, state.get("approval_decision"))

        async def call(tool: str, args: dict[str, Any], approval_id: str | None, call_id: str) -> dict[str, Any]:
            return await self._call_tool(tool, args, approval_id, call_id, state, shown)

        return Command(goto="guard_tools",
                       update=await self._guard_results(state, await approval.decide_and_run(state, config, call)))

    async def _guard_results(self, state: InterlockState, update: dict[str, Any]) -> dict[str, Any]:
        """Tool results pass the tool-output guard inside the node that ran the tools, so raw output never enters
        state, a checkpoint or any stream mode (values, updates, messages, events, debug, with subgraphs)."""
        if not self.deps.use_guards or not update.get("messages"):
            return update
        out = await guards.tool_output_guard({**state, "messages": [*(state.get("messages") or []),
                                                                    *update["messages"]]})
        guarded = {m.tool_call_id: m for m in out.get("messages") or [] if isinstance(m, ToolMessage)}
        messages = [guarded.get(m.tool_call_id, m) if isinstance(m, ToolMessage) else m for m in update["messages"]]
        return {**update, **{k: v for k, v in out.items() if k != "messages"}, "messages": messages}

    async def guard_tools(self, state: InterlockState) -> dict[str, Any]:
        # Results are guarded where they are produced (_guard_results); this catches any that were not.
        return await guards.tool_output_guard(state) if self.deps.use_guards else {}

    # answer -------------------------------------------------------------------------------------------

    def observe(self, state: InterlockState) -> Command[Any]:
        return Command(goto="plan" if state.get("mode") == "model" else "respond")

    async def respond(self, state: InterlockState) -> dict[str, Any]:
        """Zero-key reply: the playbook's template over each guarded tool result, or the tool's error."""
        mode = state.get("mode") or "zero-key"
        calls = {c.id: c for c in planned(state)}
        lines, outcome = [], "executed"
        for message in state.get("messages", []):
            if not isinstance(message, ToolMessage) or message.tool_call_id not in calls:
                continue
            call = calls[message.tool_call_id]
            if message.status == "error":
                lines.append(str(message.content))
                text = str(message.content)
                outcome = ("rejected" if "rejected" in text else
                           "expired" if "expired before an operator decided" in text else "tool_error")
                continue
            # The guarded (pseudonymised) result object, or the guarded text when there is none or it was withheld.
            result = message.artifact if message.artifact is not None else str(message.content)
            lines.append(render(call.reply or "{result}", {"result": result, **call.args}))
        update = {"messages": [final_message("\n".join(lines) or "Done.", mode, outcome)], "outcome": outcome}
        return await deliver(self.deps.use_guards, state, update)

    def limit(self, state: InterlockState) -> dict[str, Any]:
        outcome = state.get("outcome") or "limit_steps"
        what = {"limit_steps": f"the step limit ({self.limits.max_steps})",
                "limit_tool_calls": f"the tool-call limit ({self.limits.max_tool_calls})",
                "limit_time": f"the time limit ({self.limits.wall_clock_s:g}s)"}.get(outcome, "a run limit")
        # Close any tool calls the model left open so the thread stays valid for the next turn.
        answered = {m.tool_call_id for m in state.get("messages", []) if isinstance(m, ToolMessage)}
        dangling = [ToolMessage(content="Not executed: run limit reached.", tool_call_id=c.id, name=c.tool,
                                status="error") for c in planned(state) if c.id not in answered]
        msg = final_message(f"I stopped because this request reached {what}. Nothing further was done; "
                            "please try a narrower request or ask for a person.",
                            state.get("mode") or "zero-key", outcome)
        return {"messages": [*dangling, msg], "outcome": outcome}


# --- the graph -------------------------------------------------------------------------------------


def build_planner(deps: PlannerDeps) -> CompiledStateGraph:
    """The planner as a subgraph (the router's `planner` node, and the body of the served `planner` graph)."""
    nodes = PlannerNodes(deps)
    builder = StateGraph(InterlockState)
    if deps.approvals_at_root:
        # Re-entered from the router after its approval nodes took the decision: execute (or skip) that call.
        builder.add_conditional_edges(START, _entry, {"run_approved": "run_approved", "plan": "plan"})
        approval_exit = END
    else:
        builder.add_edge(START, "plan")
        approval_exit = "request_approval"
        builder.add_node("request_approval", approval.request_approval)
        builder.add_node("await_approval", approval.await_approval)
        builder.add_edge("request_approval", "await_approval")
        builder.add_edge("await_approval", "run_approved")
    builder.add_node("plan", nodes.plan, destinations=("execute", "limit", END))
    builder.add_node("execute", nodes.execute, destinations=("guard_tools", approval_exit, "observe", "limit"))
    builder.add_node("guard_tools", nodes.guard_tools)
    builder.add_node("run_approved", nodes.run_approved, destinations=("guard_tools",))
    builder.add_node("observe", nodes.observe, destinations=("plan", "respond"))
    builder.add_node("respond", nodes.respond)
    builder.add_node("limit", nodes.limit)
    builder.add_edge("guard_tools", "execute")
    builder.add_edge("respond", END)
    builder.add_edge("limit", END)
    return builder.compile(name="planner")


def _entry(state: InterlockState) -> str:
    return "run_approved" if state.get("pending_approval") and state.get("approval_decision") else "plan"


def awaiting_approval(state: InterlockState) -> bool:
    """The planner stopped at a call that needs approval (the router then asks for it at the root)."""
    pending = state.get("pending_approval") or {}
    return bool(pending.get("tool")) and not state.get("approval_decision")


def make_graph(deps: PlannerDeps | None = None) -> CompiledStateGraph:
    """`planner` as served on its own (langgraph.json): guarded, and it classifies the intent itself."""
    if deps is None:
        deps = PlannerDeps(toolbox=GovernedToolbox(), gateway=ModelGateway.from_policy(),
                           limits=RunLimits.from_policy())
    builder = guarded_subgraph("planner", build_planner(deps), entry_nodes={"classify": Classify(deps.gateway)},
                               use_guards=deps.use_guards)
    return builder.compile(name="planner").with_config(recursion_limit=recursion_budget(deps.limits))


graph = make_graph()
