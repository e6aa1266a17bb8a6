"""Time to first streamed token vs total time, through the real server, for a long model answer.

Starts `interlock serve` on bench/stream_project (the router; planner and answer tiers on one model) in a
throwaway INTERLOCK_HOME, streams runs with the langgraph-sdk client (`messages-tuple` + `values`) and compares,
per run, the model's own time to first token (recorded inside the server by a callback on the model) with the
time the client got the answer's first chunk, and both with the run's total time.

    .venv/bin/python bench/stream_ttft.py [--runs 3] [--subgraphs] [--rag]
    # against an OpenAI-compatible provider (llama.cpp server, vLLM, Ollama, a hosted API):
    .venv/bin/python bench/stream_ttft.py --base-url http://127.0.0.1:8080/v1 --model qwen2.5-coder-1.5b

`--rag` ingests the sample help centre and asks a help-centre question (RAG path: sentences are released once
their citations check out); the default asks an order question (planner path, no tools). The scripted model
writes a ~2,400-character answer, 4 characters every `--token-s` seconds after `--delay-s`.
Writes bench/results/stream_ttft.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "bench" / "stream_project" / "langgraph.json"
RESULTS = ROOT / "bench" / "results"
ORDER_QUESTION = "Where is my order ORD-1001, and what happens next with it? Please explain in detail."
RAG_QUESTION = "How long does a refund take to reach my bank, and how is it paid back?"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(env: dict[str, str], home: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = _free_port()
    log = open(home / "server.log", "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen([sys.executable, "-m", "interlock", "serve", "--config", str(PROJECT), "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{(home / 'server.log').read_text()[-3000:]}")
        try:
            if httpx.get(url + "/ok", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def _calls(timings: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in timings.read_text().splitlines()] if timings.exists() else []


async def _one(url: str, question: str, subgraphs: bool, timings: Path) -> dict[str, Any]:
    from langgraph_sdk import get_client

    client = get_client(url=url, api_key=None)
    tid = (await client.threads.create())["thread_id"]
    before = len(_calls(timings))
    started = time.time()
    arrivals: list[tuple[float, str, str]] = []
    async for part in client.runs.stream(tid, "router", input={"messages": [{"role": "user", "content": question}]},
                                         stream_mode=["messages-tuple", "values"], stream_subgraphs=subgraphs):
        if part.event.split("|")[0] == "messages":
            message, _ = part.data
            if message.get("type") == "AIMessageChunk" and message.get("content"):
                arrivals.append((time.time(), message["id"], message["content"]))
    ended = time.time()
    state = (await client.threads.get_state(tid))["values"]
    answer = state["messages"][-1]
    mine = [a for a in arrivals if a[1] == answer.get("id")]
    calls = _calls(timings)[before:]
    call = next((c for c in reversed(calls) if c.get("node") in ("plan", "answer")), calls[-1] if calls else {})
    model_start = call.get("start", started)
    row = {
        "route": state.get("route"), "mode": state.get("mode"), "outcome": state.get("outcome"),
        "answer_chars": len(answer.get("content") or ""), "chunks": len(mine),
        "stored_equals_streamed": "".join(a[2] for a in mine) == answer.get("content"),
        "run_total_s": round(ended - started, 3),
        "model_call_start_s": round(model_start - started, 3),
        "model_first_token_s": round(call["first_token"] - model_start, 3) if "first_token" in call else None,
        "model_total_s": round(call["end"] - model_start, 3) if "end" in call else None,
        "client_first_chunk_s": round(mine[0][0] - model_start, 3) if mine else None,
        "client_last_chunk_s": round(mine[-1][0] - model_start, 3) if mine else None,
    }
    if row["client_first_chunk_s"] is not None and row["model_first_token_s"] is not None:
        row["first_chunk_after_model_first_token_s"] = round(row["client_first_chunk_s"] - row["model_first_token_s"], 3)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--subgraphs", action="store_true", help="stream with stream_subgraphs=True")
    parser.add_argument("--rag", action="store_true", help="ask a help-centre question (RAG path)")
    parser.add_argument("--question", help="ask this instead")
    parser.add_argument("--base-url", help="OpenAI-compatible provider (…/v1) instead of the scripted model")
    parser.add_argument("--model", default="local", help="model name for --base-url")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="variable holding the provider's key")
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--delay-s", type=float, default=0.5, help="scripted model: time to its first token")
    parser.add_argument("--token-s", type=float, default=0.03, help="scripted model: seconds per 4 characters")
    parser.add_argument("--out", type=Path, default=RESULTS / "stream_ttft.json")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="stream-ttft-"))
    timings = home / "model-calls.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTERLOCK_", "STREAM_BENCH_"))}
    env.update({"INTERLOCK_HOME": str(home), "STREAM_BENCH_TIMINGS": str(timings), "LANGGRAPH_API_KEY": "",
                "LANGSMITH_API_KEY": "", "STREAM_BENCH_DELAY_S": str(args.delay_s),
                "STREAM_BENCH_TOKEN_S": str(args.token_s), "STREAM_BENCH_MAX_TOKENS": str(args.max_tokens)})
    if args.base_url:
        env.update({"STREAM_BENCH_BASE_URL": args.base_url, "STREAM_BENCH_MODEL": args.model,
                    "STREAM_BENCH_API_KEY": os.environ.get(args.api_key_env, "")})
    if args.rag:
        subprocess.run([sys.executable, "-c", "import asyncio; from interlock.graphs.knowledge import ingest_sample; "
                        "asyncio.run(ingest_sample())"], env=env, cwd=ROOT, check=True)
    question = args.question or (RAG_QUESTION if args.rag else ORDER_QUESTION)
    proc, url = _start(env, home)
    try:
        rows = [asyncio.run(_one(url, question, args.subgraphs, timings)) for _ in range(args.runs)]
    finally:
        proc.terminate()
        proc.wait(30)

    def med(key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return round(statistics.median(values), 3) if values else None

    report = {"provider": args.base_url or "scripted", "model": args.model if args.base_url else "scripted",
              "path": "rag" if args.rag else "planner", "subgraphs": args.subgraphs, "question": question,
              "runs": rows, "median": {k: med(k) for k in ("model_first_token_s", "client_first_chunk_s",
                                                             "first_chunk_after_model_first_token_s",
                                                             "model_total_s", "client_last_chunk_s", "run_total_s")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    m = report["median"]
    print(f"{report['provider']} {report['path']} subgraphs={args.subgraphs}: model first token {m['model_first_token_s']}s, "
          f"client first chunk {m['client_first_chunk_s']}s (+{m['first_chunk_after_model_first_token_s']}s), "
          f"model done {m['model_total_s']}s, last chunk {m['client_last_chunk_s']}s, run {m['run_total_s']}s "
          f"(times from the model call's start; run total from the request)")
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
