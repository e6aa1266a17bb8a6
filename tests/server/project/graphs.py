"""Small graphs for the Agent Server conformance tests (no LLM, except a scripted fake chat model)."""

from __future__ import annotations

import asyncio
import itertools
import operator
from typing import Annotated

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import interrupt
from typing_extensions import TypedDict


class State(TypedDict, total=False):
    n: int
    log: Annotated[list[str], operator.add]


def a(state: State) -> dict:
    return {"n": state.get("n", 0) + 1, "log": ["a"]}


def b(state: State) -> dict:
    get_stream_writer()({"custom": "from-b"})
    return {"n": state["n"] * 2, "log": ["b"]}


_b = StateGraph(State)
_b.add_node("a", a)
_b.add_node("b", b)
_b.add_edge(START, "a")
_b.add_edge("a", "b")
_b.add_edge("b", END)
two_node = _b.compile()


class HState(TypedDict, total=False):
    action: str
    approved: bool
    result: str
    second: str


def propose(state: HState) -> dict:
    return {"action": state.get("action") or "delete-prod-db"}


def approve(state: HState) -> dict:
    decision = interrupt({"question": "approve?", "action": state["action"]})
    return {"approved": decision == "yes"}


def execute(state: HState) -> dict:
    return {"result": "executed" if state["approved"] else "skipped"}


_h = StateGraph(HState)
_h.add_node("propose", propose)
_h.add_node("approve", approve)
_h.add_node("execute", execute)
_h.add_edge(START, "propose")
_h.add_edge("propose", "approve")
_h.add_edge("approve", "execute")
_h.add_edge("execute", END)
hitl = _h.compile()


def ask_two(state: HState) -> dict:
    first = interrupt({"q": "first"})
    return {"result": str(first)}


def ask_other(state: HState) -> dict:
    second = interrupt({"q": "second"})
    return {"second": str(second)}


_p = StateGraph(HState)
_p.add_node("ask_two", ask_two)
_p.add_node("ask_other", ask_other)
_p.add_edge(START, "ask_two")
_p.add_edge(START, "ask_other")
_p.add_edge("ask_two", END)
_p.add_edge("ask_other", END)
parallel_interrupts = _p.compile()


async def slow(state: State) -> dict:
    await asyncio.sleep(float(state.get("n", 2) or 2))
    return {"log": ["slow"]}


_s = StateGraph(State)
_s.add_node("slow", slow)
_s.add_edge(START, "slow")
_s.add_edge("slow", END)
slow_graph = _s.compile()


def _step(name: str):  # noqa: ANN202
    async def step(state: State) -> dict:
        await asyncio.sleep(float(state.get("n", 0.5) or 0.5))
        return {"log": [name]}

    return step


# Three slow nodes in a row: crash, takeover and connection-loss tests interrupt it between and inside nodes.
_t = StateGraph(State)
for _name in ("n1", "n2", "n3"):
    _t.add_node(_name, _step(_name))
_t.add_edge(START, "n1")
_t.add_edge("n1", "n2")
_t.add_edge("n2", "n3")
_t.add_edge("n3", END)
steps = _t.compile()


def boom(state: State) -> dict:
    raise ValueError("graph exploded on purpose")


_e = StateGraph(State)
_e.add_node("boom", boom)
_e.add_edge(START, "boom")
_e.add_edge("boom", END)
failing = _e.compile()


def _chat(state: MessagesState) -> dict:
    model = GenericFakeChatModel(messages=itertools.repeat(AIMessage(content="hello from the fake model")))
    return {"messages": [model.invoke(state["messages"])]}


_c = StateGraph(MessagesState)
_c.add_node("chat", _chat)
_c.add_edge(START, "chat")
_c.add_edge("chat", END)
chat = _c.compile()

# A parent graph with the two-node graph as a subgraph, for stream_subgraphs and subgraph routes.
_parent = StateGraph(State)
_parent.add_node("inner", two_node)
_parent.add_node("after", lambda s: {"log": ["after"]})
_parent.add_edge(START, "inner")
_parent.add_edge("inner", "after")
_parent.add_edge("after", END)
nested = _parent.compile()

# A builder (not compiled) and a factory taking config, as langgraph.json allows.
builder = _b


def factory(config: dict) -> object:
    return _b.compile()


class WhoState(TypedDict, total=False):
    user: str
    env: str


def _whoami(state: WhoState, config: RunnableConfig) -> dict:
    import os

    user = config["configurable"].get("langgraph_auth_user_id", "anonymous")
    return {"user": user, "env": os.environ.get("INTERLOCK_TEST_ENV", "")}


_w = StateGraph(WhoState)
_w.add_node("whoami", _whoami)
_w.add_edge(START, "whoami")
_w.add_edge("whoami", END)
whoami = _w.compile()


# --- Interlock's own principal and approval nodes, for the authorization tests ------------------------------
class PrincipalState(TypedDict, total=False):
    sub: str
    tenant: str
    scopes: list[str]
    ticks: Annotated[list[str], operator.add]


def _principal(state: PrincipalState, config: RunnableConfig) -> dict:
    from interlock.graphs.state import principal_from_config

    found = principal_from_config(config)  # the graphs' own lookup: auth context, else the dev fallback
    return {"sub": found.sub, "tenant": found.tenant, "scopes": found.scopes, "ticks": [found.sub]}


_p = StateGraph(PrincipalState)
_p.add_node("principal", _principal)
_p.add_edge(START, "principal")
_p.add_edge("principal", END)
principal = _p.compile()


def _merge(left: dict | None, right: dict | None) -> dict:
    return {**(left or {}), **(right or {})}


class ApprovalState(TypedDict, total=False):
    call: dict  # the proposed call: {"tool": ..., "args": {...}}
    principal: dict
    tenant: str
    pending_approval: dict | None
    approval_decision: dict | None
    executed: Annotated[dict, _merge]
    messages: Annotated[list, operator.add]
    outcome: str


def _identify(state: ApprovalState, config: RunnableConfig) -> dict:
    from interlock.graphs.state import principal_from_config

    found = principal_from_config(config)
    return {"principal": found.model_dump(), "tenant": found.tenant}


def _propose(state: ApprovalState) -> dict:
    from interlock.policies.loader import get_policies

    call = state["call"]
    risk = get_policies().tools.tools[call["tool"]].risk
    return {"pending_approval": {"tool": call["tool"], "server": "orders", "args": call["args"], "risk": risk,
                                 "call_id": "call-1"}}


async def _decide(state: ApprovalState, config: RunnableConfig) -> dict:
    from interlock.graphs.nodes.approval import decide_and_run

    async def run_tool(tool: str, args: dict, approval_id: str, call_id: str) -> dict:
        # Stands in for the MCP call: records exactly what would have been executed.
        return {"executed": {call_id: {"tool": tool, "args": args, "approval_id": approval_id}}, "outcome": "executed"}

    return await decide_and_run(state, config, run_tool)  # type: ignore[arg-type]


async def _request(state: ApprovalState, config: RunnableConfig) -> dict:
    from interlock.graphs.nodes.approval import request_approval

    return await request_approval(state, config)  # type: ignore[arg-type]


def _await(state: ApprovalState) -> dict:
    from interlock.graphs.nodes.approval import await_approval

    return await_approval(state)  # type: ignore[arg-type]


def _build_approval() -> object:
    g = StateGraph(ApprovalState)
    g.add_node("identify", _identify)
    g.add_node("propose", _propose)
    g.add_node("request_approval", _request)
    g.add_node("await_approval", _await)
    g.add_node("decide", _decide)
    g.add_edge(START, "identify")
    g.add_edge("identify", "propose")
    g.add_edge("propose", "request_approval")
    g.add_edge("request_approval", "await_approval")
    g.add_edge("await_approval", "decide")
    g.add_edge("decide", END)
    return g.compile()


approval = _build_approval()
_dropped_once: set[str] = set()
def _n1(state: State) -> dict:
    return {"log": ["n1"]}
def _drops_connection_once(state: State, config: RunnableConfig) -> dict:
    """Fails the first time per thread with the error a dropped PostgreSQL connection raises."""
    import psycopg
    thread_id = config["configurable"]["thread_id"]
    if thread_id not in _dropped_once:
        _dropped_once.add(thread_id)
        raise psycopg.OperationalError("server closed the connection unexpectedly")
    return {"log": ["n2"]}
_f = StateGraph(State)
_f.add_node("n1", _n1)
_f.add_node("n2", _drops_connection_once)
_f.add_edge(START, "n1")
_f.add_edge("n1", "n2")
_f.add_edge("n2", END)
flaky_connection = _f.compile()
