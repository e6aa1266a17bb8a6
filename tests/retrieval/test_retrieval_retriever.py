"""End to end through `Retriever`: real files, the real MiniLM embedder, the embedded store on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
from interlock.graphs.retrieval import Condition, Hit, Retriever
from interlock.graphs.retrieval.embedded_store import EmbeddedStore
from interlock.graphs.retrieval.embedding_cache import EmbeddingCache
from interlock.graphs.retrieval.embeddings import get_embedder
from interlock.graphs.retrieval.reranking import (
    CrossEncoderReranker,
    FusionOrderReranker,
    MMRReranker,
    reranker_from_env,
)

HANDBOOK = """# IT Handbook

## Passwords

To reset a forgotten password, open the self-service portal and choose "Forgot password".
A reset link is sent to your registered email address.

## VPN

- Install the WireGuard client.
- Import the profile from the portal.
- Connect before opening internal tools.

## Laptops

Laptops are replaced every three years. Contact the service desk for a loaner device.
"""

PAYROLL = """# Payroll

Salaries are paid on the 25th of each month. Bonus rounds are confidential.
"""


@pytest.fixture
def docs(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "handbook.md").write_text(HANDBOOK)
    (d / "cafeteria.txt").write_text("The cafeteria serves lunch from noon to two. Bread is baked daily.\n")
    (d / "faq.html").write_text(
        "<title>FAQ</title><h1>FAQ</h1><p>Parking permits are issued by facilities.</p>"
    )
    (d / "records.jsonl").write_text(
        json.dumps({"_id": "kb-1", "title": "Printer", "text": "Printers on floor 3 need badge release."})
        + "\n"
    )
    return d


@pytest.fixture
async def retriever(tmp_path):
    r = Retriever(
        EmbeddedStore(tmp_path / "store" / "chunks.sqlite"),
        embedder=get_embedder(),
        cache=EmbeddingCache(tmp_path / "store" / "cache.sqlite"),
    )
    yield r
    await r.close()


async def test_ingest_search_and_citations(retriever, docs):
    report = await retriever.ingest_paths([docs], "acme", ["staff"])
    assert report.ok and report.documents_added == 4 and report.chunks_written >= 6
    hits = await retriever.search(
        "how do I recover my login credentials", tenant="acme", groups=["staff"], k=3
    )
    assert hits and isinstance(hits[0], Hit)
    top = hits[0]
    assert top.section == ["IT Handbook", "Passwords"] and top.title == "IT Handbook"
    source_text = (docs / "handbook.md").read_text()
    assert source_text[top.start : top.end] == top.text  # offsets point at exactly the cited text
    assert top.document_id == str((docs / "handbook.md").resolve())
    for mode in ("bm25", "vector", "hybrid"):
        hits = await retriever.search(
            "WireGuard VPN profile", tenant="acme", groups=["staff"], mode=mode, k=2
        )
        assert hits[0].section[-1] == "VPN" and hits[0].kind == "list", mode
    jsonl_hit = (await retriever.search("printer badge", tenant="acme", groups=["staff"], k=1))[0]
    assert jsonl_hit.document_id == "kb-1" and jsonl_hit.title == "Printer"
    kinds = await retriever.search(
        "printer", tenant="acme", groups=["staff"], filters=[Condition(field="kind", op="eq", value="list")]
    )
    assert kinds and all(h.kind == "list" for h in kinds)


async def test_reingest_is_noop_changes_replace_and_prune_removes(retriever, docs):
    first = await retriever.ingest_paths([docs], "acme", ["staff"])
    again = await retriever.ingest_paths([docs], "acme", ["staff"])
    assert again.documents_unchanged == 4 and again.chunks_written == 0 and again.documents_added == 0
    handbook = str((docs / "handbook.md").resolve())
    before = await retriever.count("acme", document_id=handbook)
    (docs / "handbook.md").write_text("# IT Handbook\n\n## Passwords\n\nPasswords now use passkeys only.\n")
    changed = await retriever.ingest_paths([docs], "acme", ["staff"])
    assert changed.documents_updated == 1 and changed.documents_unchanged == 3
    assert await retriever.count("acme", document_id=handbook) == 1 < before
    hits = await retriever.search("WireGuard", tenant="acme", groups=["staff"], mode="bm25")
    assert all(h.document_id != handbook for h in hits)  # old chunks are gone
    # Changing the ACL is a change too.
    regrouped = await retriever.ingest_paths([docs], "acme", ["staff", "it"])
    assert regrouped.documents_updated == 4
    (docs / "cafeteria.txt").unlink()
    pruned = await retriever.ingest_paths([docs], "acme", ["staff", "it"], prune=True)
    assert pruned.documents_removed == 1
    # The handbook is now one chunk, and the cafeteria note (one chunk) is gone.
    assert await retriever.count("acme") == first.chunks_written - before + 1 - 1


async def test_bad_files_are_reported_and_the_rest_ingested(retriever, docs):
    (docs / "broken.md").write_bytes(b"\xff\xfe\x00garbage")
    (docs / "records.jsonl").write_text('{"_id": "ok", "text": "fine record"}\n{oops\n')
    report = await retriever.ingest_paths([docs, docs / "nope.txt"], "acme", ["*"])
    assert report.documents_added == 4  # handbook, cafeteria, faq, record "ok"
    assert len(report.errors) == 3
    assert any("broken.md" in e for e in report.errors)
    assert any("records.jsonl:2" in e for e in report.errors)
    assert any("nope.txt" in e for e in report.errors)
    assert await retriever.search("fine record", tenant="acme", groups=[], k=1)


async def test_groups_and_tenants_are_enforced(retriever, docs, tmp_path):
    await retriever.ingest_paths([docs], "acme", ["staff"])
    hr = tmp_path / "hr"
    hr.mkdir()
    (hr / "payroll.md").write_text(PAYROLL)
    await retriever.ingest_paths([hr], "acme", ["hr"])
    await retriever.ingest_paths([hr], "globex", ["*"])
    for mode in ("bm25", "vector", "hybrid"):
        staff = await retriever.search("salary bonus payroll", tenant="acme", groups=["staff"], mode=mode)
        assert all("Payroll" not in h.title for h in staff)
        hr_hits = await retriever.search("salary bonus payroll", tenant="acme", groups=["hr"], mode=mode)
        assert hr_hits and all(h.title == "Payroll" and h.tenant == "acme" for h in hr_hits)
        other = await retriever.search(
            "password portal vpn", tenant="globex", groups=["staff", "*"], mode=mode
        )
        assert all(h.tenant == "globex" and h.title == "Payroll" for h in other)
    assert await retriever.search("anything", tenant="initech", groups=["*"]) == []


async def test_search_refuses_bad_arguments(retriever, docs):
    await retriever.ingest_paths([docs], "acme", ["*"])
    with pytest.raises(TypeError):
        await retriever.search("x", tenant="acme", groups="staff")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await retriever.search("x", tenant="acme")  # type: ignore[call-arg]
    for kwargs in ({"tenant": "a/b"}, {"k": 0}, {"mode": "fuzzy"}, {"groups": ["bad|group"]}):
        args = {"tenant": "acme", "groups": ["*"], **kwargs}
        with pytest.raises(ValueError):
            await retriever.search("query", **args)
    with pytest.raises(ValueError):
        await retriever.search("   ", tenant="acme", groups=["*"])
    with pytest.raises(ValueError):
        await retriever.search("x" * 5000, tenant="acme", groups=["*"])
    with pytest.raises(ValueError):
        await retriever.ingest_paths([docs], "acme", [])


def _hit(i: int, text: str, doc: str = "d", score: float = 1.0) -> Hit:
    return Hit(
        chunk_id=f"c{i}",
        document_id=doc,
        text=text,
        score=score,
        source="s",
        title="t",
        section=[],
        kind="text",
        position=i,
        start=0,
        end=len(text),
        tenant="acme",
        groups=["*"],
    )


def test_rerankers():
    hits = [
        _hit(0, "vpn setup guide wireguard", "a", 0.9),
        _hit(1, "vpn setup guide wireguard client", "a", 0.85),
        _hit(2, "password reset portal", "b", 0.5),
    ]
    assert [h.chunk_id for h in FusionOrderReranker().rerank("q", hits, 2)] == ["c0", "c1"]
    assert [h.chunk_id for h in MMRReranker(lam=0.3).rerank("q", hits, 2)] == ["c0", "c2"]
    assert [h.chunk_id for h in MMRReranker(lam=1.0, max_per_document=1).rerank("q", hits, 3)] == ["c0", "c2"]

    def scorer(query, texts):
        return np.array([float("password" in t) for t in texts])

    ranked = CrossEncoderReranker(scorer=scorer, depth=2).rerank("q", hits, 3)
    assert [h.chunk_id for h in ranked] == ["c0", "c1", "c2"]  # c2 is below the depth: order kept
    ranked = CrossEncoderReranker(scorer=scorer, depth=3).rerank("q", hits, 3)
    assert ranked[0].chunk_id == "c2" and ranked[0].score == 1.0
    with pytest.raises(FileNotFoundError):
        CrossEncoderReranker("/nonexistent/model-dir")


def test_reranker_from_env(monkeypatch, tmp_path):
    monkeypatch.delenv("INTERLOCK_CROSS_ENCODER_DIR", raising=False)
    monkeypatch.delenv("INTERLOCK_RERANKER", raising=False)
    assert isinstance(reranker_from_env(), FusionOrderReranker)
    monkeypatch.setenv("INTERLOCK_RERANKER", "mmr")
    assert isinstance(reranker_from_env(), MMRReranker)
    monkeypatch.setenv("INTERLOCK_CROSS_ENCODER_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="model.onnx"):
        reranker_from_env()


async def test_mmr_reranker_in_the_search_path(tmp_path, docs):
    r = Retriever(
        EmbeddedStore(tmp_path / "m.sqlite"), embedder=get_embedder(), reranker=MMRReranker(lam=0.5)
    )
    await r.ingest_paths([docs], "acme", ["*"])
    hits = await r.search("portal", tenant="acme", groups=["*"], k=3)
    plain = await r.search("portal", tenant="acme", groups=["*"], k=3, rerank=False)
    assert len(hits) == len(plain) == 3 and {h.chunk_id for h in hits} <= {
        h.chunk_id for h in await r.search("portal", tenant="acme", groups=["*"], k=50, rerank=False)
    }
    await r.close()


async def test_from_settings_uses_interlock_home(tmp_path, monkeypatch, docs):
    monkeypatch.setenv("INTERLOCK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WEAVIATE_URL", raising=False)
    r = Retriever.from_settings()
    await r.ingest_paths([docs], "acme", ["*"])
    await r.close()
    assert (tmp_path / "home" / "retrieval" / "chunks.sqlite").is_file()
    r2 = Retriever.from_settings()  # a new process would see the same data
    assert (await r2.search("cafeteria lunch", tenant="acme", groups=["*"], k=1))[0].title == "cafeteria"
    await r2.close()
