"""The eval gate end to end: `interlock eval` as CI runs it, on the real graphs and the sample data.

The gate runs as a subprocess (exactly the CI command) against the committed baselines; degraded
copies of the policy directory must make it fail and name the cases that newly fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def interlock_eval(*args: str, home: Path, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INTERLOCK_HOME": str(home), "LANGSMITH_TEST_TRACKING": "false"}
    env.pop("INTERLOCK_POLICY_DIR", None)
    return subprocess.run([sys.executable, "-m", "interlock", "eval", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def policy_copy(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    target.mkdir()
    for path in (ROOT / "policies").glob("*.yaml"):
        shutil.copy(path, target / path.name)
    return target


def edit_yaml(path: Path, change: object) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)  # type: ignore[operator]
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def table_rows(stdout: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[-1] in ("pass", "FAIL", "new"):
            rows[(parts[0], " ".join(parts[1:-4]))] = parts[-4:]
    return rows


def test_full_gate_passes_on_the_current_code(tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = interlock_eval("--results-dir", str(results), home=tmp_path / "home")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = table_rows(done.stdout)
    suites = {suite for suite, _ in rows}
    assert suites == {"router", "router_cv", "retrieval", "groundedness", "refusal", "injection", "approval", "safety",
                      "tenant_knowledge", "multi_intent"}
    assert all(status == "pass" for *_, status in rows.values()), done.stdout
    for name in ("approval", "safety", "multi_intent"):
        invariants = [m for s, m in rows if s == name and m.startswith("invariant ")]
        assert invariants and all(rows[(name, m)][0] == "0" for m in invariants)
    router = json.loads((results / "router.json").read_text())
    assert router["n"] >= 200 and len(router["cases"]) == router["n"]
    assert {"intent_correct", "pass"} <= set(router["cases"][0]["scores"])
    assert "gate passed" in done.stdout
    # The run's data lives in its own temporary home: the configured INTERLOCK_HOME is never touched.
    assert not (tmp_path / "home").exists()


def test_router_examples_degraded_fails_the_gate_and_names_the_cases(tmp_path: Path) -> None:
    policies = policy_copy(tmp_path)

    def degrade(data: dict) -> None:
        # Every intent gets the same three examples and no training set: the router can no longer tell them apart.
        for spec in data["intents"].values():
            spec["examples"] = ["hello", "I have a question", "can you help me"]
        data.pop("training_set", None)

    edit_yaml(policies / "intents.yaml", degrade)
    done = interlock_eval("router", "--policy-dir", str(policies), "--results-dir", str(tmp_path / "results"),
                          home=tmp_path / "home")
    assert done.returncode == 1, done.stdout + done.stderr
    rows = table_rows(done.stdout)
    assert rows[("router", "intent_accuracy")][-1] == "FAIL"
    assert "router: GATE FAILED" in done.stdout and "intent_accuracy" in done.stdout
    baseline = json.loads((ROOT / "evals" / "baselines" / "router.json").read_text())
    result = json.loads((tmp_path / "results" / "router.json").read_text())
    newly = [c["id"] for c in result["cases"] if not c["passed"] and baseline["cases"][c["id"]]["pass"] == 1.0]
    assert len(newly) > 50
    assert "passed in the baseline and fail now" in done.stdout
    for case_id in newly:
        assert case_id in done.stdout  # every newly failing case is named


def test_raw_pii_reaching_the_provider_breaks_a_hard_invariant(tmp_path: Path) -> None:
    policies = policy_copy(tmp_path)
    edit_yaml(policies / "pii.yaml", lambda d: d["input"].update(
        entities=[e for e in d["input"]["entities"] if e != "EMAIL_ADDRESS"]))
    done = interlock_eval("safety", "--policy-dir", str(policies), "--results-dir", str(tmp_path / "results"),
                          home=tmp_path / "home")
    assert done.returncode == 1, done.stdout + done.stderr
    assert table_rows(done.stdout)[("safety", "invariant no_raw_pii")][-1] == "FAIL"
    failed = next(line for line in done.stdout.splitlines() if "hard invariant 'no_raw_pii'" in line)
    assert "saf-pii-email-knowledge" in failed and "saf-pii-update-email" in failed
    assert "saf-pii-card-phone" not in failed  # cards and phones are still redacted


def test_weakened_injection_policy_fails_on_a_subset_run(tmp_path: Path) -> None:
    policies = policy_copy(tmp_path)
    edit_yaml(policies / "injection.yaml", lambda d: [k.update(threshold=1000) for k in d["kinds"].values()])
    done = interlock_eval("injection", "--limit", "6", "--policy-dir", str(policies),
                          "--results-dir", str(tmp_path / "results"), home=tmp_path / "home")
    assert done.returncode == 1, done.stdout + done.stderr
    rows = table_rows(done.stdout)
    assert rows[("injection", "detection_rate")] == ["0.0000", "1.0000", "0.04", "FAIL"]
    for case_id in ("inj-user-01", "inj-user-02", "inj-user-06"):
        assert case_id in done.stdout


def test_bad_suite_name_is_a_usage_error(tmp_path: Path) -> None:
    done = interlock_eval("no-such-suite", home=tmp_path / "home", timeout=60)
    assert done.returncode == 2 and "unknown suite 'no-such-suite'" in done.stderr
