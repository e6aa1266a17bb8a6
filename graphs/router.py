"""The default assistant (`router`): input checks, then intent, then the right path.

identify -> input guard -> classify -> rag | planner | escalate | refuse | smalltalk -> output guard.
RAG and the planner are compiled subgraphs (visible with `stream_subgraphs`). Routing is the
nearest-centroid classifier first; a configured router-tier model is asked only when the
classifier is not confident, and if that model fails the classifier's answer stands (degraded).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from interlock.graphs.models import ModelGateway, ModelsUnavailable
from interlock.graphs.nodes import approval
from interlock.graphs.nodes.intent import IntentClassifier, default_classifier
from interlock.graphs.planner import (
    PlannerDeps,
    RunLimits,
    awaiting_approval,
    build_planner,
    final_message,
    guards_module,
    recursion_budget,
)
from interlock.graphs.rag import RagConfig, RagDeps, build_rag, knowledge_evidence
from interlock.graphs.state import InterlockState, identify, last_user_text
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph

log = logging.getLogger("interlock.graphs.router")

ROUTER_PROMPT = (
    "Classify the customer's message for a support assistant. Reply with exactly one intent name from this "
    "list and nothing else:\n{intents}"
)


@dataclass
class RouterDeps:
    gateway: ModelGateway
    toolbox: Any | None = None
    retriever: Any | None = None
    classifier: IntentClassifier | None = None
    embedder: Any | None = None
    limits: RunLimits | None = None
    rag_config: RagConfig | None = None
    use_guards: bool = True


def _smalltalk_reply(text: str, mode: str) -> str:
    lowered = text.lower()
    if re.search(r"\b(thanks?|thank you|cheers|appreciate)\b", lowered):
        reply = "You're welcome! Anything else I can help with?"
    elif re.search(r"\b(bye|goodbye|see you|have a (nice|good))\b", lowered):
        reply = "Goodbye, and thanks for getting in touch."
    elif re.search(r"\b(who|what) are you\b|\bbot\b|\bwhat can you do\b|\bhuman\?", lowered):
        reply = ("I'm the support assistant. I can answer questions from the help centre (shipping, returns, "
                 "warranty, billing, accounts), look up and track your orders, show invoices, update your contact "
                 "details, and cancel or refund orders with an operator's approval.")
    else:
        reply = "Hello! How can I help you today? You can ask about an order, a return, billing or your account."
    return reply


def build_router(deps: RouterDeps) -> Any:
    classifier = deps.classifier
    limits = deps.limits or RunLimits.from_policy()
    guards = guards_module() if deps.use_guards else None
    planner = build_planner(PlannerDeps(toolbox=deps.toolbox, gateway=deps.gateway, limits=limits,
                                        use_guards=deps.use_guards)).compile(name="planner")
    rag = build_rag(RagDeps(retriever=deps.retriever, gateway=deps.gateway, embedder=deps.embedder,
                            config=deps.rag_config, use_guards=deps.use_guards)).compile(name="rag")

    async def classify(state: InterlockState) -> dict[str, Any]:
        nonlocal classifier
        if classifier is None:
            classifier = default_classifier()
        text = last_user_text(state)
        mode = "model" if any(deps.gateway.has(t) for t in ("router", "planner", "answer")) else "zero-key"
        prediction = await classifier.aclassify(text)
        intent, route, confidence = prediction.intent, prediction.route, prediction.margin
        # A short answer to "which order?" continues the playbook that asked for it.
        waiting = state.get("awaiting_input") or {}
        if waiting.get("intent") in classifier.policy.intents and (len(text) < 40 or not prediction.confident):
            intent = waiting["intent"]
            route = classifier.policy.intents[intent].route
        elif not prediction.confident and deps.gateway.has("router"):
            listing = "\n".join(f"- {name}: {spec.description}" for name, spec in classifier.policy.intents.items())
            try:
                reply, _ = await deps.gateway.ainvoke(
                    "router", [SystemMessage(ROUTER_PROMPT.format(intents=listing)), HumanMessage(text)],
                    tenant=state.get("tenant", ""), feature="router")
                answer = str(reply.content).strip().strip("`'\". ").lower()
                if answer in classifier.policy.intents:
                    intent, route = answer, classifier.policy.intents[answer].route
            except ModelsUnavailable:
                mode = "degraded"
        if route == "refuse" and deps.retriever is not None:
            principal = state.get("principal") or {}
            evidence = await knowledge_evidence(deps.retriever, _embedder(), text, tenant=state.get("tenant", ""),
                                                groups=list(principal.get("groups") or []))
            if evidence >= classifier.policy.knowledge_evidence:
                intent, route = "knowledge", classifier.policy.intents["knowledge"].route
        return {"intent": intent, "route": route, "confidence": confidence, "mode": mode}

    def _embedder() -> Any:
        if deps.embedder is None:
            from interlock.graphs.retrieval.embeddings import get_embedder

            deps.embedder = get_embedder()
        return deps.embedder

    def refuse(state: InterlockState) -> dict[str, Any]:
        msg = final_message("Sorry, I can only help with this company's orders, deliveries, returns, billing and "
                            "accounts. Is there something along those lines I can do for you?",
                            state.get("mode") or "zero-key", "refused")
        return {"messages": [msg], "outcome": "refused"}

    def smalltalk(state: InterlockState) -> dict[str, Any]:
        mode = state.get("mode") or "zero-key"
        msg = final_message(_smalltalk_reply(last_user_text(state), mode), mode if mode != "model" else "zero-key",
                            "smalltalk")
        return {"messages": [msg], "outcome": "smalltalk"}

    def set_escalation(state: InterlockState) -> dict[str, Any]:
        return {"intent": "escalate"}

    def after_input(state: InterlockState) -> str:
        return "blocked" if state.get("outcome") == "guard_blocked" else "ok"

    def after_classify(state: InterlockState) -> str:
        return state.get("route") or "refuse"

    builder = StateGraph(InterlockState)
    builder.add_node("identify", identify)
    builder.add_node("classify", classify)
    builder.add_node("rag", rag)
    builder.add_node("planner", planner)
    builder.add_node("escalate", set_escalation)
    builder.add_node("refuse", refuse)
    builder.add_node("smalltalk", smalltalk)
    builder.add_edge(START, "identify")
    finish = END
    if guards is not None:
        builder.add_node("output_guard", guards.output_guard)
        builder.add_edge("output_guard", END)
        finish = "output_guard"
        builder.add_node("input_guard", guards.input_guard)
        builder.add_edge("identify", "input_guard")
        # A message the input policy blocks never reaches routing, retrieval or tools.
        builder.add_conditional_edges("input_guard", after_input, {"blocked": finish, "ok": "classify"})
    else:
        builder.add_edge("identify", "classify")
    builder.add_conditional_edges("classify", after_classify, {
        "rag": "rag", "planner": "planner", "escalate": "escalate", "refuse": "refuse", "smalltalk": "smalltalk"})
    builder.add_edge("escalate", "planner")
    for node in ("rag", "refuse", "smalltalk"):
        builder.add_edge(node, finish)
    # Approvals are asked here, at the root, not inside the planner subgraph: its messages (the AI message with
    # the pending tool call) reach the root state before the interrupt, so chat clients show the call.
    builder.add_node("request_approval", approval.request_approval)
    builder.add_node("await_approval", approval.await_approval)
    builder.add_conditional_edges("planner", lambda s: "approval" if awaiting_approval(s) else "done",
                                  {"approval": "request_approval", "done": finish})
    builder.add_edge("request_approval", "await_approval")
    builder.add_edge("await_approval", "planner")
    # Room for the planner's own limits (checked in nodes) before LangGraph's recursion limit trips.
    return builder.compile(name="router").with_config(recursion_limit=recursion_budget(limits))


def default_deps() -> RouterDeps:
    from interlock.graphs.defaults import Lazy, default_retriever, default_toolbox

    return RouterDeps(gateway=ModelGateway.from_policy(), toolbox=Lazy(default_toolbox),
                      retriever=Lazy(default_retriever))


def make_graph() -> Any:
    return build_router(default_deps())


graph = make_graph()
