"""A served LangGraph project may have its own `graphs/`, `tools/` and `server/` packages: Interlock installs only
`interlock.*`, so neither shadows the other and both the project's graphs and Interlock's work through the server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

FILES = {
    "graphs/__init__.py": "",
    "graphs/echo.py": '''
from langgraph.graph import START, MessagesState, StateGraph

from server.greeting import GREETING
from tools.shout import shout


def respond(state: MessagesState) -> dict:
    return {"messages": [("ai", f"{GREETING} {shout(state['messages'][-1].content)}")]}


builder = StateGraph(MessagesState)
builder.add_node(respond)
builder.add_edge(START, "respond")
graph = builder.compile()
''',
    "tools/__init__.py": "",
    "tools/shout.py": "def shout(text: str) -> str:\n    return text.upper() + '!'\n",
    "server/__init__.py": "",
    "server/greeting.py": "GREETING = 'the project server says'\n",
    "langgraph.json": json.dumps({"dependencies": ["."],
                                  "graphs": {"echo": "graphs.echo:graph", "router": "interlock.graphs.router:graph"}}),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    project = tmp_path_factory.mktemp("project")
    for rel, text in FILES.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTERLOCK_", "LANGSMITH_"))}
    env.update(INTERLOCK_HOME=str(project / ".interlock"), LANGSMITH_TRACING="false")
    # The runs below name tenant acme; a local development server accepts registered tenants only.
    subprocess.run([sys.executable, "-m", "interlock", "tenants", "add", "acme"], cwd=project, env=env, check=True,
                   capture_output=True, timeout=120)
    log = project / "server.log"
    with log.open("ab") as out:
        # Started from the project's folder, as a user would: its packages are first on the import path.
        proc = subprocess.Popen([sys.executable, "-m", "interlock", "serve", "--config", "langgraph.json",
                                 "--port", str(port)], cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(url + "/ok", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait(url: str, graph: str, text: str) -> dict:
    response = httpx.post(f"{url}/runs/wait", timeout=60, json={
        "assistant_id": graph, "input": {"messages": [{"role": "user", "content": text}]},
        "config": {"configurable": {"tenant": "acme"}}})
    assert response.status_code == 200, response.text
    return response.json()


def test_project_graph_uses_its_own_graphs_tools_and_server_packages(served: str) -> None:
    assert sorted(a["graph_id"] for a in httpx.post(f"{served}/assistants/search", json={}).json()) == ["echo", "router"]
    out = _wait(served, "echo", "hello")
    assert out["messages"][-1]["content"] == "the project server says HELLO!"


def test_interlock_graph_works_beside_the_project_packages(served: str) -> None:
    out = _wait(served, "router", "hello there")
    assert out["route"] == "smalltalk" and out["outcome"] == "smalltalk", out
    assert out["messages"][-1]["type"] == "ai" and out["messages"][-1]["content"]
