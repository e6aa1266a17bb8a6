"""Planner/executor: plan with the tools the caller may use, execute through `tools/`, observe, re-plan.

Two planners behind one executor. With a model configured (planner tier) the model proposes tool
calls and sees their results until it answers. Without one, or when every provider fails, the
declarative playbook for the routed intent plans the calls (zero-key / degraded mode).
Independent reads run in parallel. A call the policy marks destructive, or a write once the run is
tainted, goes through the approval nodes first. Hard limits on steps, tool calls and wall-clock time
end the run in the `limit` node with a distinct outcome, never with an exception.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from interlock.graphs.models import ModelGateway, ModelsUnavailable
from interlock.graphs.nodes import approval
from interlock.graphs.nodes.answers import deliver
from interlock.graphs.nodes.playbooks import PlaybooksPolicy, default_playbooks, render, validate_args
from interlock.graphs.nodes.playbooks import plan as playbook_plan
from interlock.graphs.nodes.toolbox import Toolbox, ToolInfo
from interlock.graphs.state import InterlockState, PrincipalInfo, identify, last_user_text
from langchain_core.messages import AIMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

PLANNER_PROMPT = (
    "You are the customer-support planner of {company}. Use the tools to act for the signed-in customer. "
    "Only use ids the customer gave you or that tools returned. Never invent data. Call independent "
    "lookups together. When you have what you need, answer briefly and stop calling tools."
)


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


@dataclass
class PlannerDeps:
    toolbox: Toolbox | None
    gateway: ModelGateway
    limits: RunLimits = field(default_factory=RunLimits)
    playbooks: PlaybooksPolicy | None = None
    use_guards: bool = True


def _principal(state: InterlockState) -> PrincipalInfo:
    return PrincipalInfo.model_validate(state.get("principal") or {"sub": "anonymous", "tenant": state.get("tenant", "")})


def _elapsed(state: InterlockState) -> float:
    return time.time() - float(state.get("started_at") or time.time())


def _mode_note(mode: str) -> str:
    if mode == "zero-key":
        return "\n\n(zero-key mode: rule-based, no language model)"
    if mode == "degraded":
        return "\n\n(degraded mode: no language model answered, so rules handled this)"
    return ""


def final_message(text: str, mode: str, outcome: str, **meta: Any) -> AIMessage:
    """An answer that says which mode produced it, in the text and in metadata."""
    return AIMessage(content=text + _mode_note(mode), name="interlock",
                     response_metadata={"interlock_mode": mode, "outcome": outcome, **meta})


async def _tools_for(deps: PlannerDeps, state: InterlockState) -> dict[str, ToolInfo]:
    if deps.toolbox is None:
        return {}
    return {t.name: t for t in await deps.toolbox.list_tools(_principal(state))}


def guards_module() -> Any | None:
    """graphs.nodes.guards when it is installed (built by the guardrails area)."""
    try:
        return importlib.import_module("interlock.graphs.nodes.guards")
    except ModuleNotFoundError as exc:
        if exc.name == "interlock.graphs.nodes.guards":
            return None
        raise


def recursion_budget(limits: RunLimits) -> int:
    """LangGraph supersteps a run may take: about six per planner step, plus routing and guards."""
    return limits.max_steps * 6 + 30


def _no_guard(state: InterlockState) -> dict[str, Any]:
    return {}


def _vault(state: InterlockState) -> Any | None:
    if not state.get("pii_vault"):
        return None
    from interlock.policies.pii import PiiVault

    return PiiVault.from_state(state["pii_vault"])


def build_planner(deps: PlannerDeps, *, standalone: bool = False) -> Any:
    playbooks = deps.playbooks
    guards = guards_module() if deps.use_guards else None

    def _decide(state: InterlockState, call: dict[str, Any], info: ToolInfo | None) -> tuple[str, list[str]]:
        """allow / require_approval / deny: the tool policy's verdict, never weaker than the server's hints."""
        if info is None:
            return "deny", ["not_available"]
        action, reasons = "allow", []
        if guards is not None:
            decision = guards.decide_tool_call(dict(state), call["tool"], call["args"], call_id=call["id"])
            action, reasons = decision.action, list(decision.reasons)
        if action == "allow" and info.needs_approval(bool(state.get("tainted"))):
            action, reasons = "require_approval", [*reasons, f"approval:{info.risk}"]
        return action, reasons

    async def plan(state: InterlockState, config: RunnableConfig) -> Command[Any]:
        steps = int(state.get("steps") or 0) + 1
        if steps > deps.limits.max_steps:
            return Command(goto="limit", update={"outcome": "limit_steps"})
        if _elapsed(state) > deps.limits.wall_clock_s:
            return Command(goto="limit", update={"outcome": "limit_time"})
        tools = await _tools_for(deps, state)
        mode = state.get("mode") or "zero-key"
        if deps.gateway.has("planner") and mode != "degraded":
            system = SystemMessage(PLANNER_PROMPT.format(company=state.get("tenant", "the company")))
            remaining = deps.limits.wall_clock_s - _elapsed(state)
            try:
                reply, _provider = await deps.gateway.ainvoke(
                    "planner", [system, *state.get("messages", [])], tenant=state.get("tenant", ""),
                    feature="planner", tools=[t.as_openai_tool() for t in tools.values()],
                    deadline=time.monotonic() + max(remaining, 0.0))
            except ModelsUnavailable:
                mode = "degraded"
            else:
                reply.response_metadata = {**reply.response_metadata, "interlock_mode": "model"}
                if reply.tool_calls:
                    calls = [{"id": c.get("id") or f"call_{uuid.uuid4().hex[:12]}", "tool": c["name"],
                              "args": dict(c.get("args") or {})} for c in reply.tool_calls]
                    for c, raw in zip(calls, reply.tool_calls, strict=True):
                        raw["id"] = c["id"]
                    return Command(goto="execute", update={"messages": [reply], "plan": calls, "steps": steps,
                                                           "mode": "model"})
                delivered = await deliver(guards, state, {"messages": [reply], "steps": steps, "mode": "model",
                                                  "outcome": "answered"})
                return Command(goto=END, update=delivered)
        # Zero-key or degraded: the playbook for the routed intent.
        intent = state.get("intent") or ""
        text = last_user_text(state)
        waiting = state.get("awaiting_input") or {}
        if waiting.get("intent") == intent:
            text = f"{waiting.get('text', '')} {text}"
        pb = playbook_plan(intent, text, playbooks or default_playbooks(), principal=_principal(state).sub)
        if pb is None:
            msg = final_message("I can't do that here. I can look up, track, cancel or refund orders, show "
                                "invoices, update your contact details, or hand you to a person.", mode, "refused")
            return Command(goto=END, update={"messages": [msg], "mode": mode, "outcome": "refused", "steps": steps})
        if pb.missing:
            msg = final_message(pb.question, mode, "needs_input")
            return Command(goto=END, update={"messages": [msg], "mode": mode, "outcome": "needs_input", "steps": steps,
                                             "awaiting_input": {"intent": intent, "text": text}})
        problems = []
        calls = []
        vault = _vault(state)
        for (tool, args), reply_template in zip(pb.calls, pb.replies, strict=True):
            info = tools.get(tool)
            if info is None:
                problems.append(f"the {tool} tool is not available to you right now")
                continue
            problems += validate_args(args, info.input_schema, vault.rehydrate_args if vault is not None else None)
            calls.append({"id": f"pb_{uuid.uuid4().hex[:12]}", "tool": tool, "args": args, "reply": reply_template})
        if problems:
            msg = final_message("I couldn't do that: " + "; ".join(problems) + ".", mode, "needs_input")
            return Command(goto=END, update={"messages": [msg], "mode": mode, "outcome": "needs_input", "steps": steps})
        # The playbook's calls are recorded like a model's, marked as coming from a playbook.
        announce = AIMessage(content="", name="playbook", response_metadata={"interlock_mode": mode, "intent": intent},
                             tool_calls=[{"name": c["tool"], "args": c["args"], "id": c["id"], "type": "tool_call"}
                                         for c in calls])
        return Command(goto="execute", update={"messages": [announce], "plan": calls, "steps": steps, "mode": mode,
                                               "awaiting_input": None})

    async def call_tool(tool: str, args: dict[str, Any], approval_id: str | None, call_id: str,
                        state: InterlockState) -> dict[str, Any]:
        assert deps.toolbox is not None
        outcome = await deps.toolbox.call(_principal(state), tool, args, approval_id=approval_id)
        if not outcome.ok and outcome.code == "already_used":
            # The gate already spent this approval: the call ran before a crash. Never run it again.
            content, status = "Already executed earlier; not repeated.", "success"
        elif outcome.ok:
            content = outcome.content if isinstance(outcome.content, str) else json.dumps(outcome.content, default=str)
            status = "success"
        else:
            content, status = f"Tool error: {outcome.error or 'failed'}", "error"
        # Only the content goes into state: the tool-output guard scans and pseudonymises it next.
        message = ToolMessage(content=content, tool_call_id=call_id, name=tool, status=status)
        return {"messages": [message], "executed": {call_id: {"status": status, "tool": tool}},
                "tool_calls": int(state.get("tool_calls") or 0) + 1}

    async def execute(state: InterlockState) -> Command[Any]:
        """Run the plan's calls that policy allows; hand the first gated one to the approval nodes.

        Loops through the tool-output guard after every batch, so a gated call is judged with the
        taint that the earlier results may have caused.
        """
        tools = await _tools_for(deps, state)
        done = state.get("executed") or {}
        todo = [c for c in state.get("plan") or [] if c["id"] not in done]
        used = int(state.get("tool_calls") or 0)
        if _elapsed(state) > deps.limits.wall_clock_s:
            return Command(goto="limit", update={"outcome": "limit_time"})
        vault = _vault(state)
        messages: list[ToolMessage] = []
        executed: dict[str, Any] = {}
        runnable, gated = [], []
        for call in todo:
            info = tools.get(call["tool"])
            # Arguments go to the MCP server (and into any approval) with the user's real values.
            args = vault.rehydrate_args(call["args"]) if vault is not None else call["args"]
            action, reasons = _decide(state, call, info)
            if info is None or action == "deny":
                why = "is not available to you" if info is None else f"was blocked by policy ({', '.join(reasons)})"
                messages.append(ToolMessage(content=f"Not executed: {call['tool']} {why}.", tool_call_id=call["id"],
                                            name=call["tool"], status="error"))
                executed[call["id"]] = {"status": "denied", "reasons": reasons}
            elif action == "require_approval":
                gated.append(({**call, "args": args}, info, reasons))
            else:
                runnable.append({**call, "args": args})
        if runnable:
            if used + len(runnable) > deps.limits.max_tool_calls:
                return Command(goto="limit", update={"outcome": "limit_tool_calls", "messages": messages,
                                                     "executed": executed})
            # Independent calls of one step run concurrently.
            results = await asyncio.gather(*(call_tool(c["tool"], c["args"], None, c["id"], state)
                                             for c in runnable))
            for r in results:
                messages += r["messages"]
                executed.update(r["executed"])
            return Command(goto="guard_tools", update={"messages": messages, "executed": executed,
                                                       "tool_calls": used + len(runnable)})
        update: dict[str, Any] = {"messages": messages, "executed": executed}
        if gated:
            if used + 1 > deps.limits.max_tool_calls:
                return Command(goto="limit", update={**update, "outcome": "limit_tool_calls"})
            call, info, reasons = gated[0]
            update["pending_approval"] = {"call_id": call["id"], "tool": call["tool"], "args": call["args"],
                                          "server": info.server, "risk": info.risk, "policy_reasons": reasons,
                                          "input_schema": info.input_schema}  # an operator's edit must fit it
            # Inside the router the approval is asked at the root, so the AI message carrying this call is already
            # in the root's messages when the run pauses (clients render root messages only).
            return Command(goto="request_approval" if standalone else END, update=update)
        return Command(goto="observe", update=update)

    async def run_approved(state: InterlockState, config: RunnableConfig) -> Command[Any]:
        async def call(tool: str, args: dict[str, Any], approval_id: str | None, call_id: str) -> dict[str, Any]:
            return await call_tool(tool, args, approval_id, call_id, state)

        update = await approval.decide_and_run(state, config, call)
        return Command(goto="guard_tools", update=update)

    def observe(state: InterlockState) -> Command[Any]:
        if state.get("mode") == "model":
            return Command(goto="plan")
        return Command(goto="respond")

    async def respond(state: InterlockState) -> dict[str, Any]:
        return await deliver(guards, state, respond_text(state))

    def respond_text(state: InterlockState) -> dict[str, Any]:
        """Zero-key reply: the playbook's template over the last tool result, or the tool's error."""
        mode = state.get("mode") or "zero-key"
        plan_calls = {c["id"]: c for c in state.get("plan") or []}
        lines, outcome = [], "executed"
        for message in state.get("messages", []):
            if not isinstance(message, ToolMessage) or message.tool_call_id not in plan_calls:
                continue
            call = plan_calls[message.tool_call_id]
            if message.status == "error":
                lines.append(str(message.content))
                text = str(message.content)
                outcome = ("rejected" if "rejected" in text else
                           "expired" if "expired before an operator decided" in text else "tool_error")
                continue
            try:  # the guarded content, never the raw result
                result = json.loads(str(message.content))
            except ValueError:
                result = str(message.content)
            lines.append(render(call.get("reply") or "{result}", {"result": result, **call.get("args", {})}))
        text = "\n".join(lines) or "Done."
        return {"messages": [final_message(text, mode, outcome)], "outcome": outcome}

    def limit(state: InterlockState) -> dict[str, Any]:
        outcome = state.get("outcome") or "limit_steps"
        what = {"limit_steps": f"the step limit ({deps.limits.max_steps})",
                "limit_tool_calls": f"the tool-call limit ({deps.limits.max_tool_calls})",
                "limit_time": f"the time limit ({deps.limits.wall_clock_s:g}s)"}.get(outcome, "a run limit")
        # Close any tool calls the model left open so the thread stays valid for the next turn.
        answered = {m.tool_call_id for m in state.get("messages", []) if isinstance(m, ToolMessage)}
        dangling = [ToolMessage(content="Not executed: run limit reached.", tool_call_id=c["id"], name=c["tool"],
                                status="error") for c in state.get("plan") or [] if c["id"] not in answered]
        msg = final_message(f"I stopped because this request reached {what}. Nothing further was done; "
                            "please try a narrower request or ask for a person.",
                            state.get("mode") or "zero-key", outcome)
        return {"messages": [*dangling, msg], "outcome": outcome}

    builder = StateGraph(InterlockState)
    if standalone:
        builder.add_node("identify", identify)
        builder.add_node("classify", _standalone_classifier())
        builder.add_edge(START, "identify")
        builder.add_edge("identify", "classify")
        builder.add_edge("classify", "plan")
    else:
        # Re-entered from the router after its approval nodes took the decision: execute (or skip) that call.
        builder.add_conditional_edges(START, _entry, {"run_approved": "run_approved", "plan": "plan"})
    builder.add_node("plan", plan, destinations=("execute", "limit", END))
    approval_exit = "request_approval" if standalone else END
    builder.add_node("execute", execute, destinations=("guard_tools", approval_exit, "observe", "limit"))
    builder.add_node("guard_tools", guards.tool_output_guard if guards is not None else _no_guard)
    if standalone:
        builder.add_node("request_approval", approval.request_approval)
        builder.add_node("await_approval", approval.await_approval)
        builder.add_edge("request_approval", "await_approval")
        builder.add_edge("await_approval", "run_approved")
    builder.add_node("run_approved", run_approved, destinations=("guard_tools",))
    builder.add_node("observe", observe, destinations=("plan", "respond"))
    builder.add_node("respond", respond)
    builder.add_node("limit", limit)
    builder.add_edge("guard_tools", "execute")
    builder.add_edge("respond", END)
    builder.add_edge("limit", END)
    return builder


def _entry(state: InterlockState) -> str:
    return "run_approved" if state.get("pending_approval") and state.get("approval_decision") else "plan"


def awaiting_approval(state: InterlockState) -> bool:
    """The planner stopped at a call that needs approval (the router then asks for it at the root)."""
    pending = state.get("pending_approval") or {}
    return bool(pending.get("tool")) and not state.get("approval_decision")


def _standalone_classifier() -> Any:
    async def classify(state: InterlockState) -> dict[str, Any]:
        from interlock.graphs.nodes.intent import default_classifier

        if state.get("intent"):
            return {}
        prediction = await default_classifier().aclassify(last_user_text(state))
        return {"intent": prediction.intent, "route": prediction.route, "confidence": prediction.margin}

    return classify


def make_graph() -> Any:
    """`planner` as served on its own (langgraph.json): classifies the intent itself."""
    from interlock.graphs.defaults import Lazy, default_toolbox

    limits = RunLimits.from_policy()
    return build_planner(PlannerDeps(toolbox=Lazy(default_toolbox), gateway=ModelGateway.from_policy(),
                                     limits=limits), standalone=True).compile(name="planner").with_config(
        recursion_limit=recursion_budget(limits))


graph = make_graph()
