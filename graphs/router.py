"""The default assistant (`router`): input checks, then intent, then the right path.

identify -> input guard -> classify -> rag | planner | escalate | refuse | smalltalk -> output guard.
A message holding a knowledge question beside a request goes through both: rag answers the question, then the
request is acted on (with its approval, if it needs one). RAG and the planner are compiled subgraphs (visible with
`stream_subgraphs`). Routing is the
nearest-centroid classifier first; a configured router-tier model is asked only when the
classifier is not confident, and if that model fails the classifier's answer stands (degraded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from interlock.graphs.guarded import OUTPUT_GUARD, guarded
from interlock.graphs.models import ModelGateway
from interlock.graphs.nodes import approval
from interlock.graphs.nodes.answers import final_message
from interlock.graphs.nodes.intent import Classify, IntentClassifier
from interlock.graphs.nodes.multi_intent import ACTION_ROUTES
from interlock.graphs.nodes.toolbox import GovernedToolbox
from interlock.graphs.planner import (
    PlannerDeps,
    RunLimits,
    awaiting_approval,
    build_planner,
    recursion_budget,
)
from interlock.graphs.rag import RagConfig, RagDeps, build_rag
from interlock.graphs.state import InterlockState, last_user_text
from langgraph.graph import END, StateGraph
from langgraph.graph.state import CompiledStateGraph

ROUTES = ("rag", "planner", "escalate", "refuse", "smalltalk")


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


def _smalltalk_reply(text: str) -> str:
    lowered = text.lower()
    if re.search(r"\b(thanks?|thank you|cheers|appreciate)\b", lowered):
        return "You're welcome! Anything else I can help with?"
    if re.search(r"\b(bye|goodbye|see you|have a (nice|good))\b", lowered):
        return "Goodbye, and thanks for getting in touch."
    if re.search(r"\b(who|what) are you\b|\bbot\b|\bwhat can you do\b|\bhuman\?", lowered):
        return ("I'm the support assistant. I can answer questions from the help centre (shipping, returns, "
                "warranty, billing, accounts), look up and track your orders, show invoices, update your contact "
                "details, and cancel or refund orders with an operator's approval.")
    return "Hello! How can I help you today? You can ask about an order, a return, billing or your account."


def refuse(state: InterlockState) -> dict[str, Any]:
    mode = state.get("mode") or "zero-key"
    # A canned reply: even with a model configured, no model wrote it, and the state says so.
    mode = mode if mode != "model" else "zero-key"
    msg = final_message("Sorry, I can only help with this company's orders, deliveries, returns, billing and "
                        "accounts. Is there something along those lines I can do for you?", mode, "refused")
    return {"messages": [msg], "outcome": "refused", "mode": mode}


def smalltalk(state: InterlockState) -> dict[str, Any]:
    mode = state.get("mode") or "zero-key"
    # Canned replies: even with a model configured, no model produced them.
    msg = final_message(_smalltalk_reply(last_user_text(state)), mode if mode != "model" else "zero-key", "smalltalk")
    return {"messages": [msg], "outcome": "smalltalk"}


def escalate(state: InterlockState) -> dict[str, Any]:
    return {"intent": "escalate"}


def route(state: InterlockState) -> str:
    # A knowledge question asked beside a request is answered first, so the answer is there even while the
    # request waits for an operator.
    if state.get("question") and state.get("route") in ACTION_ROUTES:
        return "rag"
    return state.get("route") or "refuse"


def after_rag(state: InterlockState) -> str:
    """On to the request asked beside the question, else the answer is the reply."""
    return str(state["route"]) if state.get("question") and state.get("route") in ACTION_ROUTES else "done"


def build_router(deps: RouterDeps) -> CompiledStateGraph:
    limits = deps.limits or RunLimits.from_policy()
    builder = StateGraph(InterlockState)
    builder.add_node("classify", Classify(deps.gateway, deps.classifier, retriever=deps.retriever,
                                          embedder=deps.embedder, split_questions=True))
    builder.add_node("rag", build_rag(RagDeps(retriever=deps.retriever, gateway=deps.gateway, embedder=deps.embedder,
                                              config=deps.rag_config, use_guards=deps.use_guards)))
    builder.add_node("planner", build_planner(PlannerDeps(toolbox=deps.toolbox, gateway=deps.gateway, limits=limits,
                                                          use_guards=deps.use_guards, approvals_at_root=True)))
    builder.add_node("escalate", escalate)
    builder.add_node("refuse", refuse)
    builder.add_node("smalltalk", smalltalk)
    builder.add_conditional_edges("classify", route, {name: name for name in ROUTES})
    builder.add_edge("escalate", "planner")
    guarded(builder, entry="classify", exits=("refuse", "smalltalk"), use_guards=deps.use_guards)
    done = OUTPUT_GUARD if deps.use_guards else END
    builder.add_conditional_edges("rag", after_rag, {"planner": "planner", "escalate": "escalate", "done": done})
    # Approvals are asked here, at the root, not inside the planner subgraph: its messages (the AI message with
    # the pending tool call) reach the root state before the interrupt, so chat clients show the call.
    builder.add_node("request_approval", approval.request_approval)
    builder.add_node("await_approval", approval.await_approval)
    builder.add_conditional_edges("planner", lambda s: "approval" if awaiting_approval(s) else "done",
                                  {"approval": "request_approval", "done": OUTPUT_GUARD if deps.use_guards else END})
    builder.add_edge("request_approval", "await_approval")
    builder.add_edge("await_approval", "planner")
    # Room for the planner's own limits (checked in nodes) before LangGraph's recursion limit trips.
    return builder.compile(name="router").with_config(recursion_limit=recursion_budget(limits))


def default_deps() -> RouterDeps:
    from interlock.graphs.defaults import Lazy, default_retriever

    return RouterDeps(gateway=ModelGateway.from_policy(), toolbox=GovernedToolbox(),
                      retriever=Lazy(default_retriever))


graph = build_router(default_deps())
