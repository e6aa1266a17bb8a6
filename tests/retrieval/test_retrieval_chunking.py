"""Structure-aware chunking and source reading."""

from __future__ import annotations

import json

import pytest
from interlock.graphs.retrieval.chunking import ChunkingConfig, chunk_spans, count_tokens
from interlock.graphs.retrieval.sources import SourceError, discover, html_to_text, read_file

LONG = " ".join(f"Sentence {i} talks about topic {i % 7} in some detail." for i in range(80))
MD = f"""# Handbook

Welcome to the handbook. Read it once.

## Setup

1. Install the agent.
2. Configure the token:
   paste it into the settings page.
3. Restart.

```python
def main():

    # a blank line inside the fence must not split the block
    return 42
```

## Policies

{LONG}

| key | value |
|-----|-------|
| a   | 1     |
"""


def spans(text=MD, fmt="markdown", **cfg):
    return chunk_spans(text, fmt, ChunkingConfig(**cfg))


def test_spans_are_exact_trimmed_slices_in_order():
    out = spans(max_tokens=60, overlap_tokens=12)
    assert out
    for s in out:
        piece = MD[s.start : s.end]
        assert piece == piece.strip() and piece
    starts = [s.start for s in out]
    assert starts == sorted(starts)


def test_headings_lists_and_code_stay_whole_with_section_paths():
    out = spans(max_tokens=60, overlap_tokens=12)
    texts = [MD[s.start : s.end] for s in out]
    code = next(t for t in texts if "```python" in t)
    assert "return 42\n```" in code  # the fence was not split at its blank line
    lst = next(t for t in texts if "1. Install" in t)
    assert "3. Restart." in lst and "paste it into the settings page" in lst
    table = next(s for s in out if "| key |" in MD[s.start : s.end])
    assert "| a   | 1     |" in MD[table.start : table.end]
    assert table.section == ["Handbook", "Policies"]
    assert out[0].section == ["Handbook"] and MD[out[0].start :].startswith("# Handbook")
    # Empty headings do not become chunks of their own.
    assert all(MD[s.start : s.end].strip("# \n") not in ("Handbook", "Setup", "Policies") for s in out)


def test_long_paragraphs_split_at_sentences_with_overlap():
    out = [s for s in spans(max_tokens=60, overlap_tokens=12) if "Sentence" in MD[s.start : s.end]]
    assert len(out) > 5
    for s in out:
        text = MD[s.start : s.end]
        assert count_tokens(text) <= 60 + 8  # heading-only prefix may ride along on the first piece
        assert text.rstrip().endswith(".")  # ends on a sentence boundary
    for a, b in zip(out, out[1:], strict=False):
        assert b.start < a.end  # overlap with the previous piece
        assert b.start > a.start  # but always moving forward


def test_no_overlap_and_oversized_sentence():
    text = "word " * 500 + "end."
    out = spans(text, "text", max_tokens=100, overlap_tokens=0)
    assert len(out) >= 5 and all(count_tokens(text[s.start : s.end]) <= 100 for s in out)
    assert out[-1].end == len(text)
    covered = "".join(text[s.start : s.end] + " " for s in out).split()
    assert covered == text.split()


def test_plain_text_paragraphs_pack_until_max():
    paras = [
        "First paragraph here has several more words in it.",
        "Second one is also quite a few words long.",
        "Third one is the last and it is short.",
    ]
    text = f"{paras[0]}\n\n{paras[1]}\n\n\n{paras[2]}\n"
    out = spans(text, "text", max_tokens=16, overlap_tokens=0)
    assert [text[s.start : s.end] for s in out] == paras
    merged = spans(text, "text", max_tokens=100)
    assert len(merged) == 1 and text[merged[0].start : merged[0].end].endswith("short.")


def test_config_is_validated():
    with pytest.raises(ValueError):
        ChunkingConfig(max_tokens=0)


def test_html_becomes_structured_text():
    html = """<html><head><title>Ops Guide</title><style>p{}</style><script>var x=1</script></head>
    <body><h1>Ops</h1><p>Intro   text &amp; more.</p><h2>Deploy</h2><ul><li>one</li><li>two</li></ul>
    <pre>make deploy
  --fast</pre><p>After.</p></body></html>"""
    title, text = html_to_text(html)
    assert title == "Ops Guide"
    assert "# Ops" in text and "## Deploy" in text and "- one\n- two" in text
    assert "```\nmake deploy\n  --fast\n```" in text
    assert "Intro text & more." in text and "var x" not in text and "p{}" not in text
    out = chunk_spans(text, "html", ChunkingConfig())
    assert out and out[0].section == ["Ops"]


def test_read_files_of_each_format(tmp_path):
    (tmp_path / "a.md").write_text("# Title A\n\nBody.\n")
    (tmp_path / "b.txt").write_text("plain body\n")
    (tmp_path / "c.html").write_text("<title>C</title><p>html body</p>")
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"_id": "r1", "title": "R1", "text": "first"})
        + "\n\n"
        + "{not json\n"
        + json.dumps({"id": "r2", "content": "second"})
        + "\n"
        + json.dumps({"_id": "r3"})
        + "\n"
        + json.dumps(["x"])
        + "\n"
    )
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "notes.md").write_text("# hidden\n")
    files, errors = discover([tmp_path, tmp_path / "missing.md"])
    assert [f.name for f in files] == ["a.md", "b.txt", "c.html", "d.jsonl"]
    assert len(errors) == 1 and "missing.md" in str(errors[0])
    docs = {f.name: list(read_file(f)) for f in files}
    assert docs["a.md"][0].title == "Title A" and docs["a.md"][0].format == "markdown"
    assert docs["b.txt"][0].title == "b"
    assert docs["c.html"][0].title == "C" and "html body" in docs["c.html"][0].text
    jsonl = docs["d.jsonl"]
    good = [d for d in jsonl if not isinstance(d, SourceError)]
    bad = [str(d) for d in jsonl if isinstance(d, SourceError)]
    assert [d.document_id for d in good] == ["r1", "r2"] and good[0].title == "R1"
    assert any("d.jsonl:3" in e and "invalid JSON" in e for e in bad)
    assert any("d.jsonl:5" in e and "no 'text'" in e for e in bad)
    assert any("d.jsonl:6" in e and "JSON object" in e for e in bad)


def test_unreadable_and_malformed_files_name_the_file(tmp_path):
    (tmp_path / "bin.txt").write_bytes(b"abc\x00def")
    (tmp_path / "latin.md").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "empty.md").write_text("   \n")
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    for name, fragment in (
        ("bin.txt", "binary"),
        ("latin.md", "UTF-8"),
        ("empty.md", "empty"),
        ("x.pdf", "unsupported"),
    ):
        (err,) = list(read_file(tmp_path / name))
        assert isinstance(err, SourceError) and name in str(err) and fragment in str(err)
