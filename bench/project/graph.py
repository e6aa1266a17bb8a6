"""The benchmark's trivial two-node graph (a: n+=1, b: n*=2), identical for both servers."""

import operator
from typing import Annotated

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class State(TypedDict, total=False):
    n: int
    log: Annotated[list[str], operator.add]


def a(state: State) -> dict:
    return {"n": state.get("n", 0) + 1, "log": ["a"]}


def b(state: State) -> dict:
    return {"n": state["n"] * 2, "log": ["b"]}


_g = StateGraph(State)
_g.add_node("a", a)
_g.add_node("b", b)
_g.add_edge(START, "a")
_g.add_edge("a", "b")
_g.add_edge("b", END)
two_node = _g.compile()


class SlowState(TypedDict, total=False):
    n: int


async def hold(state: SlowState) -> dict:
    """Streams a few custom events over `seconds` (default 3): keeps a stream open for the open-streams phase."""
    import asyncio

    from langgraph.config import get_stream_writer

    writer = get_stream_writer()
    for i in range(3):
        writer({"tick": i})
        await asyncio.sleep(float(state.get("n") or 3) / 3)
    return {"n": 0}


_s = StateGraph(SlowState)
_s.add_node("hold", hold)
_s.add_edge(START, "hold")
_s.add_edge("hold", END)
slow_stream = _s.compile()
