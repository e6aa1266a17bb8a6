"""The router through a real `interlock serve` whose only model provider is a real local LLM: a Qwen2.5-Coder
GGUF served by `python -m llama_cpp.server` (OpenAI-compatible) on a free port, reached through the `local`
provider of policies/models.yaml. Nothing is scripted: these tests prove the plumbing with a real model.

Selected only by `make test-model` (`-m model`; the default run deselects the marker in pyproject's addopts),
which installs the runtime and the verified weights first and names the GGUF in LOCAL_MODEL_GGUF. When this
module is selected and the model is missing, that is a failure, never a skip.

A small model on two shared cores is slow and its wording varies, so the tests allow minutes per run and
assert mechanics and invariants only: which tool reached the business system, with which arguments, how many
times; where the run stopped; which passages the citations point at; when the streamed chunks arrived.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from e2e_testkit import *  # noqa: F403 - the shared fixtures
from e2e_testkit import (
    ROOT,
    Environment,
    Server,
    _wait_http,
    ask,
    config,
    free_port,
    interrupt_value,
    last_ai,
    tool_messages,
)
from interlock.tools.approvals import args_hash
from langgraph_sdk import get_client

pytestmark = pytest.mark.model

RUN_TIMEOUT_S = 900  # one run may make several model calls at a few tokens per second
UNANSWERABLE = "How many loyalty points do I earn per dollar spent, and when do the points expire?"
# The help centre states this plainly. ("Is there a restocking fee?" is not: no passage mentions one, and the 0.5B
# answering NOT_IN_CONTEXT to it is a fair reading, not a failure to overrule.)
HELP_QUESTION = "How long does standard shipping take within the EU?"
LONG_QUESTION = "How do returns work, and how long does a refund take to reach me?"


def _timings(name: str, **numbers: float) -> None:
    """Measurements for the issue note, appended to $LOCAL_MODEL_TIMINGS (JSON lines) when it is set."""
    path = os.environ.get("LOCAL_MODEL_TIMINGS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"test": name, **{k: round(v, 3) for k, v in numbers.items()}}) + "\n")


# --- the model server and the Interlock server in front of it ----------------------------------------------


LLAMA: dict[str, Any] = {}  # the model server's process and log, for the check after every test


@pytest.fixture(autouse=True)
def model_server_survives() -> Iterator[None]:
    """A model server that died mid-test (a native crash) fails the test with its log, not as a degraded answer."""
    yield
    proc, log = LLAMA.get("proc"), LLAMA.get("log")
    if proc is not None and proc.poll() is not None:
        pytest.fail(f"the model server exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def llm_url(e2e_env: Environment) -> Iterator[str]:
    """`python -m llama_cpp.server` on a free port, warmed up; its OpenAI-compatible base URL."""
    gguf = os.environ.get("LOCAL_MODEL_GGUF", "")
    if not gguf or not Path(gguf).is_file():
        pytest.fail(f"LOCAL_MODEL_GGUF={gguf!r} is not a model file: run `make test-model` (it fetches and verifies "
                    "the weights and installs llama-cpp-python)")
    port = free_port()
    log = e2e_env.root / "llama-server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", "local",
               "--n_threads", "2", "--n_ctx", "8192", "--host", "127.0.0.1", "--port", str(port),
               # Keep the evaluated prompts: the planner's ~2,200-token system prompt and tool list is then read
               # once, not again after every RAG call in between (prompt reading is the slow part here).
               "--cache", "true", "--cache_size", str(2 << 30)]
    if os.environ.get("LOCAL_MODEL_CHAT_FORMAT"):  # default: the GGUF's own chat template
        command += ["--chat_format", os.environ["LOCAL_MODEL_CHAT_FORMAT"]]
    # Spin-waiting OpenMP threads collapse throughput on a shared machine (local-llm.md, section 3).
    env = {**e2e_env.env, "OMP_WAIT_POLICY": "PASSIVE"}
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    LLAMA.update(proc=proc, log=log)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        _wait_http(url + "/models", proc, log, 180)
        ready = time.monotonic()
        # Warm-up: the first completion pages the weights in; also a decode-speed sample for the note.
        body = {"model": "local", "max_tokens": 64, "temperature": 0,
                "messages": [{"role": "user", "content": "Write a 300-word story about a lighthouse keeper."}]}
        response = httpx.post(url + "/chat/completions", json=body, timeout=600)
        response.raise_for_status()
        warm = time.monotonic()
        first = httpx.post(url + "/chat/completions", json=body, timeout=600)
        decode_s = time.monotonic() - warm
        tokens = first.json()["usage"]["completion_tokens"]
        _timings("model-server", start_s=ready - started, warmup_s=warm - ready, tokens=tokens,
                 tokens_per_s=tokens / decode_s)
        yield url
    finally:
        LLAMA.clear()
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def local(e2e_env: Environment, llm_url: str) -> Iterator[Server]:
    """`interlock serve` with the shipped policies, except: `local` is the only provider, with timeouts that fit
    a slow local model, and run limits that leave it time to answer."""
    policies = e2e_env.root / "policies-local-model"
    shutil.copytree(ROOT / "policies", policies, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    models = yaml.safe_load((policies / "models.yaml").read_text())
    models["providers"] = {"local": {**models["providers"]["local"], "timeout_s": 600, "max_retries": 0}}
    models["tiers"] = {tier: ["local"] for tier in models["tiers"]}
    models["chain_timeout_s"] = 600
    models["breaker"] = {"failure_threshold": 1000, "reset_after_s": 1}
    (policies / "models.yaml").write_text(yaml.safe_dump(models, sort_keys=False))
    limits = yaml.safe_load((policies / "limits.yaml").read_text())
    limits["run"]["wall_clock_s"] = RUN_TIMEOUT_S
    limits["default_tenant"]["requests_per_minute"] = 10_000
    (policies / "limits.yaml").write_text(yaml.safe_dump(limits, sort_keys=False))
    server = e2e_env._serve("local-model", [sys.executable, "-m", "interlock"], {
        "INTERLOCK_MODELS_POLICY": str(policies / "models.yaml"),
        "INTERLOCK_POLICY_DIR": str(policies),
        "INTERLOCK_LOCAL_LLM_URL": llm_url,
    })
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(local: Server) -> Any:
    return get_client(url=local.url, api_key=None, timeout=httpx.Timeout(RUN_TIMEOUT_S, connect=10))


async def new_thread(client: Any) -> str:
    return str((await client.threads.create())["thread_id"])


async def run(client: Any, thread_id: str, tenant: str = "acme", **kwargs: Any) -> dict[str, Any]:
    return dict(await client.runs.wait(thread_id, "router", config=config(tenant, sub=_owner(tenant)), **kwargs))


def _owner(tenant: str) -> str:
    return "CUS-101" if tenant == "acme" else "CUS-201"


def executed_with(env: Environment, tool: str, approval_id: str) -> list[dict[str, Any]]:
    return [row for row in env.audit(tool) if row["approval_id"] == approval_id]


def model_called(values: dict[str, Any], tool: str) -> dict[str, Any]:
    """The model's own call of `tool` in the run's messages (a playbook's call is the fallback, not the model)."""
    assert values.get("mode") == "model", values.get("mode")
    calls = [c for m in values.get("messages") or [] if m.get("type") == "ai" and m.get("name") != "playbook"
             for c in m.get("tool_calls") or [] if c["name"] == tool]
    assert calls, [(m.get("type"), m.get("name"), m.get("tool_calls")) for m in values.get("messages") or []]
    return dict(calls[-1])


def model_answered(values: dict[str, Any]) -> None:
    """The answer is the model's (not a playbook's or a degraded fallback's) and carries no raw tool-call JSON."""
    answer = last_ai(values)
    assert values["mode"] == "model" and answer["response_metadata"].get("interlock_mode") == "model", answer
    assert not answer.get("tool_calls") and answer["content"].strip(), answer
    assert '"arguments"' not in answer["content"] and "<" + "EMAIL_" not in answer["content"], answer["content"]


# --- the tests ----------------------------------------------------------------------------------------------


async def test_order_question_calls_the_read_tool_and_answers_from_its_result(
    client: Any, e2e_env: Environment
) -> None:
    started, before = time.monotonic(), len(e2e_env.audit("get_order"))
    values = await run(client, await new_thread(client), input=ask("What's the status of my order ORD-1002?"))
    assert values["route"] == "planner", values.get("route")
    assert model_called(values, "get_order")["args"]["order_id"] == "ORD-1002"
    calls = e2e_env.audit("get_order")[before:]
    assert args_hash({"order_id": "ORD-1002"}) in [c["args_hash"] for c in calls], calls
    # The result the orders system returned is in the conversation, and the final answer comes after it.
    results = tool_messages(values, "get_order")
    assert results and any(json.loads(r["content"]).get("status") == e2e_env.order_status("ORD-1002")
                           for r in results if r.get("status") != "error"), results
    messages = values["messages"]
    assert max(i for i, m in enumerate(messages) if m["type"] == "tool") < len(messages) - 1
    model_answered(values)
    _timings("order_question", wall_s=time.monotonic() - started)


async def test_cancel_reaches_the_exact_call_approval_and_approve_executes_once(
    client: Any, e2e_env: Environment
) -> None:
    started = time.monotonic()
    tenant, order = e2e_env.claim_order("acme")
    tid = await new_thread(client)
    waiting = await run(client, tid, tenant, input=ask(f"Please cancel my order {order}, I ordered the wrong size."))
    assert model_called(waiting, "cancel_order")["args"]["order_id"] == order
    value = interrupt_value(await client.threads.get(tid))
    assert value["tool"] == "cancel_order" and value["args"]["order_id"] == order, value
    assert e2e_env.order_status(order) != "cancelled", "nothing executes before the approval"
    assert not executed_with(e2e_env, "cancel_order", value["approval_id"])
    resume = {"decision": "approve", "reason": "customer asked"}
    values = await run(client, tid, tenant, command={"resume": resume})
    assert e2e_env.order_status(order) == "cancelled"
    (row,) = executed_with(e2e_env, "cancel_order", value["approval_id"])
    assert row["args_hash"] == args_hash(value["args"]), "the approved call is the one executed"
    # A second resume of the decided approval executes nothing more.
    await client.runs.wait(tid, "router", command={"resume": resume}, config=config(tenant), raise_error=False)
    assert len(executed_with(e2e_env, "cancel_order", value["approval_id"])) == 1
    assert values["outcome"] == "answered" and last_ai(values)["content"].strip()
    _timings("cancel_approve", wall_s=time.monotonic() - started)


async def test_a_rejected_cancel_never_executes(client: Any, local: Server, e2e_env: Environment) -> None:
    started = time.monotonic()
    tenant, order = e2e_env.claim_order("acme")
    tid = await new_thread(client)
    waiting = await run(client, tid, tenant, input=ask(f"Cancel order {order} please, I changed my mind."))
    assert model_called(waiting, "cancel_order")["args"]["order_id"] == order
    value = interrupt_value(await client.threads.get(tid))
    assert value["tool"] == "cancel_order" and value["args"]["order_id"] == order, value
    async with httpx.AsyncClient(base_url=local.url, timeout=RUN_TIMEOUT_S) as http:
        decided = await http.post(f"/approvals/{value['approval_id']}", params={"tenant": tenant},
                                  json={"decision": "reject", "reason": "operator said no"})
    assert decided.status_code == 200, decided.text
    assert decided.json()["approval"]["status"] == "rejected"
    assert e2e_env.order_status(order) != "cancelled"
    assert not executed_with(e2e_env, "cancel_order", value["approval_id"])
    e2e_env.release_order(order)
    _timings("cancel_reject", wall_s=time.monotonic() - started)


async def test_help_centre_answer_cites_only_retrieved_passages(client: Any) -> None:
    started = time.monotonic()
    values = await run(client, await new_thread(client), input=ask(HELP_QUESTION))
    assert values["route"] == "rag" and values["outcome"] == "answered", last_ai(values)["content"]
    model_answered(values)
    retrieved = {c["chunk_id"]: c for c in values["retrieved"]}
    assert values["citations"], "a grounded answer cites its passages"
    for citation in values["citations"]:
        assert citation["verified"] and citation["chunk_id"] in retrieved, citation
        if citation.get("quote"):
            flat = " ".join(citation["quote"].split()).lower()
            assert flat in " ".join(retrieved[citation["chunk_id"]]["text"].split()).lower(), citation
    _timings("help_centre", wall_s=time.monotonic() - started)


async def test_unanswerable_question_is_refused(client: Any) -> None:
    started = time.monotonic()
    values = await run(client, await new_thread(client), input=ask(UNANSWERABLE))
    assert values["outcome"] == "refused", last_ai(values)["content"]
    assert not values.get("citations")
    _timings("unanswerable", wall_s=time.monotonic() - started)


async def test_streamed_answer_arrives_in_chunks_before_the_run_ends(client: Any) -> None:
    started = time.monotonic()
    tid = await new_thread(client)
    chunks: list[tuple[float, str, str]] = []  # (arrival, message id, text)
    final: dict[str, Any] = {}
    ended = started
    async for part in client.runs.stream(tid, "router", input=ask(LONG_QUESTION), config=config(),
                                         stream_mode=["messages-tuple", "values"]):
        now = time.monotonic()
        if part.event == "messages":
            message = part.data[0]
            if message.get("type", "").startswith("AIMessageChunk") or message.get("type") == "ai":
                if isinstance(message.get("content"), str) and message["content"]:
                    chunks.append((now, str(message.get("id")), message["content"]))
        elif part.event == "values":
            final, ended = part.data, now
    assert final.get("outcome") == "answered", final.get("outcome")
    answer = last_ai(final)
    streamed = [c for c in chunks if c[1] == answer["id"]]
    assert len(streamed) > 1, f"{len(chunks)} chunks, {len(streamed)} of the answer"
    # The chunks add up to the delivered answer, and arrived progressively: the first well before the run's
    # last state, spread over the model's generation rather than replayed at once at the end.
    assert "".join(text for _, _, text in streamed) == answer["content"]
    first, last = streamed[0][0], streamed[-1][0]
    assert first < ended and last - first >= 1.0, (first - started, last - started, ended - started)
    _timings("stream", wall_s=ended - started, ttft_s=first - started, chunks=len(streamed),
             spread_s=last - first)
