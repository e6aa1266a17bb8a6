"""Progressive guarded streaming through the real server (HTTP + SSE, langgraph-sdk client): the answer's tokens
reach `messages-tuple` while the model is still writing, on the planner and the RAG path, with and without
`stream_subgraphs`; what the output guard removes never appears in a chunk; the answer stored in state is the
concatenation of the chunks under their message id.

The model is scripted (tests/server/project_stream/stream_graphs.py): it streams a few characters every 30 ms,
so its reply takes seconds to write, and the arrival times of the chunks show whether they were held back.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from server_testkit import ROOT, ServerProcess, free_port

PROJECT = Path(__file__).resolve().parent / "project_stream"
REFUND_QUESTION = "How long does a refund take to reach my bank?"
ORDER_QUESTION = "Where is my order ORD-1001?"


@pytest.fixture(scope="module")
def stream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("stream-home")
    env = {**os.environ, "INTERLOCK_HOME": str(home)}
    env.pop("INTERLOCK_DATABASE_URL", None)
    # The sample help centre, so the RAG path retrieves real passages.
    subprocess.run([sys.executable, "-c", "import asyncio; from interlock.graphs.knowledge import ingest_sample; "
                    "asyncio.run(ingest_sample())"], env=env, cwd=ROOT, check=True, timeout=600)
    port = free_port()
    proc = ServerProcess(url=f"http://127.0.0.1:{port}", home=home, config=PROJECT / "langgraph.json",
                         env={**env, "LANGGRAPH_API_KEY": "", "LANGSMITH_API_KEY": ""}, port=port,
                         log_path=home / "server.log")
    proc.start(timeout=180)  # the graphs load the guard and routing models at import: slow on a busy machine
    yield proc
    proc.stop()


@dataclass
class Streamed:
    chunks: list[tuple[float, str, str]]  # (seconds since the request, message id, content) per AIMessageChunk
    events: list[str]
    ended: float
    state: dict[str, Any]

    @property
    def answer(self) -> dict[str, Any]:
        return self.state["messages"][-1]

    def answer_chunks(self) -> list[tuple[float, str, str]]:
        return [c for c in self.chunks if c[1] == self.answer["id"]]


async def stream_run(server: ServerProcess, assistant: str, question: str, *, subgraphs: bool,
                     modes: tuple[str, ...] = ("messages-tuple", "values")) -> Streamed:
    from langgraph_sdk import get_client

    client = get_client(url=server.url, api_key=None)
    tid = (await client.threads.create())["thread_id"]
    chunks: list[tuple[float, str, str]] = []
    events: list[str] = []
    started = time.monotonic()
    async for part in client.runs.stream(tid, assistant, input={"messages": [{"role": "user", "content": question}]},
                                         stream_mode=list(modes), stream_subgraphs=subgraphs):
        events.append(part.event)
        if part.event.split("|")[0] == "messages":
            message, _meta = part.data
            if message["type"] == "AIMessageChunk" and message["content"]:
                chunks.append((time.monotonic() - started, message["id"], message["content"]))
    ended = time.monotonic() - started
    state = (await client.threads.get_state(tid))["values"]
    return Streamed(chunks, events, ended, state)


def assert_progressive(run: Streamed) -> None:
    mine = run.answer_chunks()
    assert run.answer["type"] == "ai" and run.answer["content"], run.answer
    assert len(mine) >= 4, f"the answer arrived in {len(mine)} chunk(s): {run.events}"
    assert "".join(c[2] for c in mine) == run.answer["content"], "state holds exactly what was streamed"
    first, last = mine[0][0], mine[-1][0]
    # The scripted model needs several seconds to write the answer: a held-back answer arrives all at the end.
    assert first < run.ended - 2.5, (first, run.ended)
    assert last - first > 2.0, [round(c[0], 2) for c in mine]
    assert not [c for c in run.chunks if c[1] != run.answer["id"] and c[2]], "no other message streamed text"


@pytest.mark.parametrize("subgraphs", [False, True])
async def test_rag_answer_streams_sentence_by_sentence(stream_server: ServerProcess, subgraphs: bool) -> None:
    run = await stream_run(stream_server, "router", REFUND_QUESTION, subgraphs=subgraphs)
    assert run.state["route"] == "rag" and run.state["mode"] == "model", (run.state["route"], run.state["mode"])
    assert_progressive(run)
    # Each released sentence passed the citation check: sources named, ids among the retrieved passages.
    retrieved = {c["chunk_id"][:8] for c in run.state["retrieved"]}
    cited = re.findall(r"\[#([0-9A-Za-z_-]{4,64})\]", "".join(c[2] for c in run.answer_chunks()))
    assert len(cited) == 8 and {c[:8] for c in cited} <= retrieved, cited
    assert run.state["citations"] and all(c["verified"] for c in run.state["citations"])
    assert any(e.startswith("messages|") for e in run.events) == subgraphs


async def test_an_uncited_rag_answer_streams_with_citations_attached(stream_server: ServerProcess) -> None:
    # Small real models write no [#id] markers: each sentence goes out once a passage backs it, cited.
    run = await stream_run(stream_server, "router_uncited", REFUND_QUESTION, subgraphs=False)
    assert run.state["route"] == "rag" and run.state["mode"] == "model", (run.state["route"], run.state["mode"])
    assert_progressive(run)
    retrieved = {c["chunk_id"][:8] for c in run.state["retrieved"]}
    chunks = run.answer_chunks()
    cited = re.findall(r"\[#([0-9A-Za-z_-]{4,64})\]", "".join(c[2] for c in chunks))
    assert len(cited) == 4 and {c[:8] for c in cited} <= retrieved, cited
    # The first sentence went out with its citation before the model wrote the last one.
    first_cited = next(i for i, c in enumerate(chunks) if "[#" in "".join(x[2] for x in chunks[:i + 1]))
    assert first_cited < len(chunks) - 4, [c[2] for c in chunks]
    assert run.state["citations"] and all(c["verified"] for c in run.state["citations"])


@pytest.mark.parametrize("subgraphs", [False, True])
async def test_planner_answer_streams(stream_server: ServerProcess, subgraphs: bool) -> None:
    run = await stream_run(stream_server, "router", ORDER_QUESTION, subgraphs=subgraphs)
    assert run.state["route"] == "planner" and run.state["outcome"] == "answered", run.state["route"]
    assert_progressive(run)


async def test_standalone_planner_and_legacy_messages_mode(stream_server: ServerProcess) -> None:
    run = await stream_run(stream_server, "planner", ORDER_QUESTION, subgraphs=False, modes=("messages",))
    partial_at = [e for e in run.events if e == "messages/partial"]
    assert len(partial_at) >= 4, run.events
    answer = run.answer
    assert answer["content"] and answer["content"].startswith("Refunds go back")


async def test_guarded_values_never_reach_a_chunk(stream_server: ServerProcess) -> None:
    run = await stream_run(stream_server, "router_leaky", ORDER_QUESTION, subgraphs=True)
    texts = [c[2] for c in run.chunks]
    assert len(run.answer_chunks()) >= 3 and run.answer_chunks()[0][0] < run.ended - 1.5
    streamed = "".join(c[2] for c in run.answer_chunks())
    assert streamed == run.answer["content"]
    # The values were written three characters at a time; no fragment of them went out.
    for fragment in ("jane", "roe@", "courier-mail", "collector", "evil", "t?id="):
        assert not any(fragment in t for t in texts), fragment
        assert fragment not in streamed
    assert "[link removed]" in streamed and "redacted]" in streamed
    assert streamed.startswith("Thanks for asking about your order.")
