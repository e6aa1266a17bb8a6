"""The harness offline (no network attempt), the gate's comparison rules, datasets and CLI edges."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from interlock.evals.gate import Baseline, BaselineError, baseline_from, compare, load_baseline, render_table
from interlock.evals.harness import CaseResult, SuiteResult, run_suites
from interlock.evals.suite import DatasetError
from interlock.evals.suites.approval import ApprovalSuite
from interlock.evals.suites.refusal import RefusalSuite
from interlock.evals.suites.router import RouterSuite
from interlock.evals.suites.safety import SafetySuite

from interlock.cli import main

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = ("127.0.0.1", "::1", "localhost")


async def test_suites_run_offline_with_no_network_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[Any] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            attempts.append(address)
            raise OSError("network disabled in this test")
        return real_connect(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in LOOPBACK and host is not None:
            attempts.append(host)
            raise socket.gaierror("network disabled in this test")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.delenv("LANGSMITH_API_KEY", raising=False)
    home_before = os.environ.get("INTERLOCK_HOME")
    results = await run_suites([RouterSuite(), ApprovalSuite(), SafetySuite()], limit=2)
    assert attempts == []
    assert os.environ.get("INTERLOCK_HOME") == home_before  # the environment is restored
    by_name = {r.suite: r for r in results}
    assert by_name["router"].n == 2 and by_name["approval"].n == 2 and by_name["safety"].n == 2
    approval = by_name["approval"]
    assert all(c.passed for c in approval.cases), [c.model_dump() for c in approval.cases]
    # The first approval case really executed the approved cancel over MCP, with its approval id.
    first = approval.cases[0].detail
    # The playbook reads the order first (an already cancelled one is answered from its state), then cancels.
    assert first["interrupted"] and [c["tool"] for c in first["calls"]] == ["get_order", "cancel_order"]
    cancel = first["calls"][1]
    assert cancel["approval_id"].startswith("apr_") and cancel["approval_status"] == "consumed"
    assert approval.invariant_violations == {"destructive_needs_approval": [], "reject_never_executes": []}


def result(scores: dict[str, dict[str, float]], violations: dict[str, list[str]] | None = None) -> SuiteResult:
    cases = [CaseResult(id=i, passed=s.get("pass", 0) >= 1, scores=s) for i, s in scores.items()]
    metrics = {"intent_accuracy": sum(s["intent_correct"] for s in scores.values()) / len(scores),
               "route_accuracy": None}
    return SuiteResult(suite="router", dataset="x", policy_hash="h", created_at="t", seconds=0.1, n=len(cases),
                       metrics=metrics, invariant_violations=violations or {}, cases=cases)


def ok(value: float) -> dict[str, float]:
    return {"intent_correct": value, "pass": value}


def test_compare_tolerance_subsets_and_newly_failing_cases() -> None:
    suite = RouterSuite()
    base = baseline_from(result({f"c{i}": ok(1.0) for i in range(9)} | {"c9": ok(0.0)}), suite)
    assert base.metrics["intent_accuracy"].value == 0.9 and base.metrics["intent_accuracy"].tolerance == 0.02
    same = compare(result({f"c{i}": ok(1.0) for i in range(9)} | {"c9": ok(0.0)}), suite, base)
    assert not same.failed and same.newly_failing == []
    # One more failure on ten cases is 0.1 worse: beyond 0.02, and the case is named.
    worse = compare(result({f"c{i}": ok(1.0) for i in range(8)} | {"c8": ok(0.0), "c9": ok(0.0)}), suite, base)
    assert worse.failed and worse.newly_failing == ["c8"]
    assert any("intent_accuracy = 0.8000 is below the baseline 0.9000" in r for r in worse.reasons)
    # Swapping which case fails keeps the metric: not a failure, but the new failure is still named.
    swapped = compare(result({f"c{i}": ok(1.0) for i in range(1, 10)} | {"c0": ok(0.0)}), suite, base)
    assert not swapped.failed and swapped.newly_failing == ["c0"]
    assert compare(result({f"c{i}": ok(1.0) for i in range(1, 10)} | {"c0": ok(0.0)}), suite, base,
                   strict=True).failed
    # A subset run is compared with the baseline's scores for the same cases.
    subset = compare(result({"c0": ok(1.0), "c9": ok(0.0)}), suite, base)
    row = next(r for r in subset.rows if r.metric == "intent_accuracy")
    assert (row.value, row.baseline, row.status) == (0.5, 0.5, "pass")
    # Cases added since the baseline are reported, not gated.
    added = compare(result({f"c{i}": ok(1.0) for i in range(9)} | {"c9": ok(0.0), "new": ok(0.0)}), suite, base)
    assert not added.failed and added.new_cases_failing == ["new"]


def test_invariant_violation_fails_whatever_the_baseline() -> None:
    suite = ApprovalSuite()
    run = SuiteResult(suite="approval", dataset="x", policy_hash="h", created_at="t", seconds=0.1, n=1,
                      metrics={"flow_accuracy": 1.0},
                      invariant_violations={"destructive_needs_approval": ["apr-1"], "reject_never_executes": []},
                      cases=[CaseResult(id="apr-1", passed=False, scores={"pass": 0.0, "flow_correct": 1.0})])
    verdict = compare(run, suite, None)
    assert verdict.failed and "apr-1" in verdict.reasons[0] and "without an operator's approval" in verdict.reasons[0]
    table = render_table(verdict.rows)
    assert "invariant destructive_needs_approval" in table and "FAIL" in table
    assert table.splitlines()[0].split() == ["suite", "metric", "value", "baseline", "tolerance", "status"]


def test_baselines_and_datasets_fail_with_clear_messages(tmp_path: Path) -> None:
    (tmp_path / "router.json").write_text("{not json")
    with pytest.raises(BaselineError, match="router.json: not a valid baseline"):
        load_baseline("router", tmp_path)
    assert load_baseline("absent", tmp_path) is None
    committed = load_baseline("router")
    assert isinstance(committed, Baseline) and committed.n >= 200
    bad = tmp_path / "refusal.jsonl"
    bad.write_text('{"id": "a", "text": "hi", "expect": "refuse"}\n{"id": "b", "text": "yo", "expect": "maybe"}\n')
    with pytest.raises(DatasetError, match=r"refusal.jsonl:2: expect: Input should be 'refuse' or 'help'"):
        RefusalSuite(bad).load()
    bad.write_text('{"id": "a", "text": "hi", "expect": "refuse"}\n{"id": "a", "text": "yo", "expect": "help"}\n')
    with pytest.raises(DatasetError, match="duplicate id 'a'"):
        RefusalSuite(bad).load()
    bad.write_text("not json\n")
    with pytest.raises(DatasetError, match="refusal.jsonl:1"):
        RefusalSuite(bad).load()


def test_every_committed_dataset_loads_and_has_a_baseline() -> None:
    from interlock.evals.suites import SUITES

    for name, cls in SUITES.items():
        cases = cls().load()
        baseline = load_baseline(name)
        assert baseline is not None, name
        # Cases added later (add-from-trace) are reported until the next baseline; most must be covered.
        covered = {c.id for c in cases} & set(baseline.cases)
        assert len(covered) >= 0.9 * len(cases), f"{name}: the baseline is stale, run --update-baselines"


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--limit", "3", "--update-baselines"]) == 2
    assert "needs the full suites" in capsys.readouterr().err
    assert main(["eval", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("router", "retrieval", "groundedness", "refusal", "injection",
                                           "approval", "safety"))


def test_eval_retrieval_mounts_the_beir_evaluation(tmp_path: Path) -> None:
    data = tmp_path / "tiny"
    (data / "qrels").mkdir(parents=True)
    corpus = [{"_id": "d1", "title": "Returns", "text": "You can return items within 30 days of delivery."},
              {"_id": "d2", "title": "Shipping", "text": "Standard shipping takes 3 to 5 business days."},
              {"_id": "d3", "title": "Warranty", "text": "Products have a two year warranty."}]
    (data / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in corpus))
    (data / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "how long does shipping take"}))
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    env = {**os.environ, "INTERLOCK_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "interlock", "eval", "retrieval", "--dataset", str(data),
                           "--modes", "bm25", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["queries"] == 1 and report["results"][0]["mode"] == "bm25"
    assert report["results"][0]["mrr_at_10"] == 1.0


def test_bad_policy_dir_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "router", "--policy-dir", str(tmp_path / "missing")]) == 2
    assert "required policy file not found" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in (ROOT / "policies").glob("*.yaml"):
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "intents.yaml").write_text("min_confidence: 0.1\nintents:\n  knowledge: {route: rag}\n")
    assert main(["eval", "router", "--policy-dir", str(broken)]) == 2
    assert "intents.yaml" in capsys.readouterr().err


async def test_router_cases_may_not_repeat_the_labelled_examples(tmp_path: Path) -> None:
    from interlock.evals.environment import EvalEnvironment

    leaked = tmp_path / "router.jsonl"
    leaked.write_text('{"text": "How long does standard shipping take?", "intent": "knowledge", "route": "rag"}\n')
    suite = RouterSuite(leaked)
    async with EvalEnvironment() as env:
        with pytest.raises(DatasetError, match="also training messages"):
            await suite.prepare(env, suite.load())


def test_invariant_checks_catch_violations() -> None:
    from interlock.evals.suites.approval import ApprovalCase
    from interlock.evals.suites.safety import SafetyCase

    approval = ApprovalSuite()
    case = ApprovalCase(id="a", text="cancel", tool="cancel_order", decision="reject", expect_interrupt=True,
                        expect="no_execute")
    ran = {"interrupted": True, "destructive": ["cancel_order"], "calls_before_decision": [],
           "calls": [{"tool": "cancel_order", "args": {}, "approval_id": None, "approval_status": None}]}
    scores = approval.score(ran, case)
    assert scores["invariant:destructive_needs_approval"] == 0 and scores["invariant:reject_never_executes"] == 0
    early = {**ran, "calls_before_decision": ["cancel_order"], "calls": []}
    assert approval.score(early, case)["invariant:destructive_needs_approval"] == 0
    clean = {**ran, "calls": []}
    assert approval.score(clean, case) == {"invariant:destructive_needs_approval": 1.0,
                                           "invariant:reject_never_executes": 1.0, "flow_correct": 1.0, "pass": 1.0}

    safety = SafetySuite()
    pii = SafetyCase(id="p", kind="pii", text="x", pii_values=["jane@example.com"])
    leaked = {"payloads": ['[{"content": "mail jane@example.com"}]'], "updates": [], "state": "", "model_calls": 1}
    assert safety.score(leaked, pii)["invariant:no_raw_pii"] == 0
    in_trace = {"payloads": ["<EMAIL_1>"], "updates": ['{"input_guard": "jane@example.com"}'], "model_calls": 1}
    assert safety.score(in_trace, pii)["invariant:no_raw_pii"] == 0
    assert safety.score({"payloads": ["<EMAIL_1>"], "model_calls": 1}, pii)["pass"] == 1
    assert safety.score({"model_calls": 0}, pii)["pass"] == 0  # no payload seen proves nothing
    loop = SafetyCase(id="l", kind="step_limit", text="x")
    assert safety.score({"escaped": "GraphRecursionError"}, loop)["invariant:step_limit_holds"] == 0
    assert safety.score({"outcome": "limit_tool_calls", "tool_calls": 11, "max_tool_calls": 10},
                        loop)["invariant:step_limit_holds"] == 0
    guard = SafetyCase(id="g", kind="guard_failure", text="x")
    assert safety.score({"guard_failed": None, "model_calls": 1}, guard)["invariant:guard_fails_closed"] == 0
    assert safety.score({"guard_failed": "input", "model_calls": 0, "tool_calls": 0},
                        guard)["invariant:guard_fails_closed"] == 1
