"""`interlock ingest` / `search` / `retrieval-eval`, and the BEIR evaluation on a small made-up dataset."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from interlock.graphs.retrieval import Retriever
from interlock.graphs.retrieval.beir import BeirError, evaluate, load_beir, mrr_at, ndcg_at, recall_at
from interlock.graphs.retrieval.cli import register
from interlock.graphs.retrieval.embedded_store import EmbeddedStore
from interlock.graphs.retrieval.embedding_cache import EmbeddingCache
from interlock.graphs.retrieval.embeddings import get_embedder

REPO = Path(__file__).resolve().parents[2]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="interlock")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERLOCK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WEAVIATE_URL", raising=False)
    return tmp_path / "home"


def test_cli_ingest_search_json_and_errors(tmp_path, home, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "vpn.md").write_text("# VPN\n\nInstall WireGuard and import the company profile.\n")
    (docs / "bad.jsonl").write_text("{broken\n")
    code, out, err = run_cli(["ingest", str(docs), "--tenant", "acme", "--acl", "staff,it"], capsys)
    assert code == 1  # one file was bad ...
    assert "1 added" in out and "bad.jsonl:1" in err  # ... and named, while the good one was ingested
    code, out, _ = run_cli(
        ["search", "wireguard profile", "--tenant", "acme", "--groups", "it", "--json"], capsys
    )
    assert code == 0
    hits = json.loads(out)
    assert hits[0]["title"] == "VPN" and hits[0]["groups"] == ["staff", "it"]
    code, out, _ = run_cli(["search", "wireguard", "--tenant", "acme", "--mode", "bm25"], capsys)
    assert code == 0 and "no results" in out  # default groups '*' cannot read staff/it documents
    code, out, _ = run_cli(
        ["search", "wireguard", "--tenant", "acme", "--groups", "staff", "--filter", "kind:eq:paragraph"],
        capsys,
    )
    assert code == 0 and " 1. " in out and "VPN" in out
    code, _, err = run_cli(["search", "x", "--tenant", "acme", "--filter", "nonsense"], capsys)
    assert code == 2 and "bad --filter" in err
    code, _, err = run_cli(["search", "x", "--tenant", "bad tenant"], capsys)
    assert code == 2 and "invalid tenant" in err


def test_console_script_end_to_end(tmp_path):
    docs = tmp_path / "d"
    docs.mkdir()
    (docs / "a.txt").write_text("Quarterly planning happens in the first week of each quarter.\n")
    env = {**os.environ, "INTERLOCK_HOME": str(tmp_path / "h")}
    env.pop("WEAVIATE_URL", None)
    cmd = [sys.executable, "-m", "interlock"]
    done = subprocess.run(
        [*cmd, "ingest", str(docs), "--tenant", "t1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [*cmd, "search", "when is planning", "--tenant", "t1", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["text"].startswith("Quarterly planning")


def make_beir(root: Path, with_vectors: bool = False) -> Path:
    root.mkdir(parents=True)
    corpus = [
        ("d1", "Vitamin D", "Vitamin D deficiency is linked to bone fractures in older adults."),
        ("d2", "Coffee", "Coffee consumption improves short term alertness in night shift workers."),
        ("d3", "Exercise", "Aerobic exercise lowers resting blood pressure in hypertensive patients."),
        ("d4", "Sleep", "Sleep deprivation impairs memory consolidation in students."),
        ("d5", "Sugar", "High sugar intake increases the risk of dental caries in children."),
    ]
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x, "metadata": {}}) + "\n" for i, t, x in corpus)
    )
    queries = {
        "q1": "does vitamin d prevent broken bones",
        "q2": "caffeine and alertness at night",
        "q3": "exercise reduces hypertension",
        "q4": "unjudged query",
    }
    (root / "queries-train.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items())
    )
    (root / "qrels").mkdir()
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\n")
    if with_vectors:
        np.save(root / "corpus-wrong-model-f16.npy", np.ones((5, 384), dtype=np.float16) / np.sqrt(384))
    return root


def test_metrics():
    rels = {"a": 1, "b": 1}
    assert ndcg_at(["a", "b", "c"], rels) == pytest.approx(1.0)
    assert ndcg_at(["c", "a"], {"a": 1}) == pytest.approx(1 / np.log2(3))
    assert ndcg_at(["x"], {}) == 0.0
    assert recall_at(["a", "x"], rels, 100) == 0.5
    assert mrr_at(["x", "y", "b"], rels) == pytest.approx(1 / 3)
    assert mrr_at(["x"] * 10 + ["a"], rels) == 0.0


def test_load_beir_validates_layout(tmp_path):
    root = make_beir(tmp_path / "mini")
    ds = load_beir(root)
    assert ds.split == "train" and set(ds.queries) == {"q1", "q2", "q3"} and len(ds.corpus) == 5
    with pytest.raises(BeirError, match="no qrels/test.tsv"):
        load_beir(root, "test")
    with pytest.raises(BeirError, match="corpus.jsonl"):
        load_beir(tmp_path)
    (root / "corpus.jsonl").write_text('{"_id": "x"}\n')
    with pytest.raises(BeirError, match="corpus.jsonl:1"):
        load_beir(root)


async def test_evaluate_on_a_tiny_dataset(tmp_path):
    root = make_beir(tmp_path / "mini", with_vectors=True)
    ds = load_beir(root, "train")
    r = Retriever(
        EmbeddedStore(tmp_path / "s.sqlite"),
        embedder=get_embedder(),
        cache=EmbeddingCache(tmp_path / "c.sqlite"),
    )
    report = await evaluate(r, ds, tenant="eval-mini", dataset_dir=root)
    assert [m.mode for m in report.results] == ["bm25", "vector", "hybrid", "hybrid+rerank"]
    by_mode = {m.mode: m for m in report.results}
    # The wrong-model vector file was refused by the spot check, so the real vectors were used.
    assert by_mode["vector"].ndcg_at_10 > 0.9 and by_mode["hybrid"].ndcg_at_10 > 0.9
    assert all(m.recall_at_100 == 1.0 and m.p95_ms >= m.p50_ms > 0 for m in report.results)
    assert await r.count("eval-mini") == 0  # scratch tenant removed
    assert "nDCG@10" in report.table()
    await r.close()


def test_cli_eval(tmp_path, home, capsys):
    root = make_beir(tmp_path / "mini")
    code, out, _ = run_cli(
        ["retrieval-eval", "--dataset", str(root), "--modes", "bm25,hybrid", "--json"], capsys
    )
    assert code == 0
    report = json.loads(out)
    assert [r["mode"] for r in report["results"]] == ["bm25", "hybrid"] and report["split"] == "train"
    code, out, _ = run_cli(
        ["retrieval-eval", "--dataset", str(root), "--chunk-tokens", "4096", "--json"], capsys
    )
    assert code == 0 and json.loads(out)["chunks"] == 5
    code, _, err = run_cli(["retrieval-eval", "--dataset", str(root), "--chunk-tokens", "5"], capsys)
    assert code == 2 and "max_tokens" in err
    code, _, err = run_cli(["retrieval-eval", "--dataset", str(tmp_path / "none")], capsys)
    assert code == 2 and "corpus.jsonl" in err
    code, _, err = run_cli(["retrieval-eval", "--dataset", str(root), "--modes", "bm25,magic"], capsys)
    assert code == 2 and "magic" in err
