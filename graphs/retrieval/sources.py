"""Reading source files into documents: Markdown, plain text, HTML and JSONL.

A `Document.text` is the text that chunk offsets point into: the file itself for Markdown and plain
text, the extracted text (headings as `#` lines, lists as `-` items, code fenced) for HTML, and the
`text` field of each record for JSONL. Errors name the file (and line), so one bad file does not
hide which one it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

Format = Literal["markdown", "text", "html", "jsonl"]
SUFFIXES: dict[str, Format] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".html": "html",
    ".htm": "html",
    ".jsonl": "jsonl",
}
MAX_FILE_BYTES = 50 * 1024 * 1024


class SourceError(ValueError):
    """A file (or one record of it) that cannot be read; the message names it."""


class Document(BaseModel):
    document_id: str = Field(min_length=1)
    source: str
    title: str = ""
    text: str
    format: Format


def discover(paths: list[Path]) -> tuple[list[Path], list[SourceError]]:
    """Files to ingest under `paths` (directories are walked; unknown suffixes there are skipped)."""
    files: list[Path] = []
    errors: list[SourceError] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                p
                for p in sorted(path.rglob("*"))
                # Hidden folders and files (.git, .venv, editor swap files) are never documents.
                if p.is_file()
                and p.suffix.lower() in SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            if path.suffix.lower() in SUFFIXES:
                files.append(path)
            else:
                errors.append(SourceError(f"{path}: unsupported file type {path.suffix or '(none)'}"))
        else:
            errors.append(SourceError(f"{path}: no such file or directory"))
    return files, errors


def read_file(path: Path) -> Iterator[Document | SourceError]:
    """Documents in one file; a malformed JSONL line yields an error and the other lines still load."""
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        yield SourceError(f"{path}: unsupported file type {path.suffix or '(none)'}")
        return
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            yield SourceError(f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
            return
        raw = path.read_bytes()
    except OSError as exc:
        yield SourceError(f"{path}: cannot read: {exc.strerror or exc}")
        return
    if b"\x00" in raw[:8192]:
        yield SourceError(f"{path}: looks binary, not {fmt}")
        return
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield SourceError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})")
        return
    source = str(path.resolve())
    if fmt == "jsonl":
        yield from _jsonl_documents(path, source, content)
        return
    if fmt == "html":
        title, text = html_to_text(content)
    else:
        text = content.replace("\r\n", "\n")
        title = _markdown_title(text) if fmt == "markdown" else ""
    if not text.strip():
        yield SourceError(f"{path}: empty document")
        return
    yield Document(document_id=source, source=source, title=title or path.stem, text=text, format=fmt)


def _markdown_title(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return ""


def _jsonl_documents(path: Path, source: str, content: str) -> Iterator[Document | SourceError]:
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield SourceError(f"{path}:{lineno}: invalid JSON ({exc.msg})")
            continue
        if not isinstance(record, dict):
            yield SourceError(f"{path}:{lineno}: expected a JSON object")
            continue
        doc_id = record.get("_id", record.get("id"))
        text = record.get("text", record.get("content"))
        if doc_id is None or not str(doc_id).strip():
            yield SourceError(f"{path}:{lineno}: record has no '_id' or 'id'")
            continue
        if not isinstance(text, str) or not text.strip():
            yield SourceError(f"{path}:{lineno}: record {doc_id} has no 'text'")
            continue
        title = record.get("title") or ""
        yield Document(
            document_id=str(doc_id),
            source=str(record.get("source") or f"{source}#{doc_id}"),
            title=str(title),
            text=text.replace("\r\n", "\n"),
            format="jsonl",
        )


_BLOCK_TAGS = {
    "p",
    "div",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "blockquote",
    "table",
    "tr",
    "ul",
    "ol",
}
_SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "head"}


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False
        self._pre = 0
        self._line: list[str] = []
        self._prefix = ""

    def _flush(self, blank: bool = True) -> None:
        text = " ".join("".join(self._line).split())
        if text:
            self.out.append(self._prefix + text)
            if blank:
                self.out.append("")
        self._line = []
        self._prefix = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in {"h1", "h2", "h3", "h4", "h5", "h6"}:
            self._flush()
            self._prefix = "#" * int(tag[1]) + " "
        elif tag == "li":
            self._flush(blank=False)
            self._prefix = "- "
        elif tag == "pre":
            self._flush()
            self.out.append("```")
            self._pre += 1
        elif tag == "br":
            self._line.append("\n" if self._pre else " ")
        elif tag in _BLOCK_TAGS or tag in {"td", "th"}:
            if tag in {"td", "th"}:
                self._line.append(" | ")
            else:
                self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag == "pre" and self._pre:
            self._pre -= 1
            self.out.append("".join(self._line).strip("\n"))
            self.out.append("```")
            self.out.append("")
            self._line = []
        elif tag in {
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "p",
            "div",
            "blockquote",
            "tr",
            "section",
            "article",
        }:
            self._flush()
        elif tag == "li":
            self._flush(blank=False)
        elif tag in {"ul", "ol"}:
            self._flush()
            if self.out and self.out[-1] != "":
                self.out.append("")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self._line.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """(title, text) of an HTML page, the text keeping headings, lists and code as Markdown-like blocks."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    parser._flush()
    lines: list[str] = []
    for line in parser.out:
        if line == "" and (not lines or lines[-1] == ""):
            continue
        lines.append(line)
    title = " ".join(parser.title.split())
    if not title:
        title = next((ln.lstrip("# ") for ln in lines if ln.startswith("# ")), "")
    return title, "\n".join(lines).strip() + "\n"
