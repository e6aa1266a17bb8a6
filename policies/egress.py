"""Egress: every outbound URL in an answer must point at an allow-listed host, whatever its syntax.

An answer reaches a client that may render Markdown and HTML, so a URL can hide in an inline link or
image, a reference definition (`[r1]: //evil.example/x.png?d=…`), an autolink, bare text, any HTML
attribute (`src`, `srcset`, `href`, `action`, `data`, `style="…url(…)"`, `<meta content="0;url=…">`),
and behind entity or percent encoding, backslashes, mixed case, invisible characters or newlines
(which browsers strip from URLs in attributes). The scan therefore works on a *decoded view* of the
answer that maps every decoded character back to the original span, and fails closed: a URL whose
host cannot be established, or whose scheme is not http(s), is removed.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

WEB_SCHEMES = ("http", "https", "ftp", "ws", "wss")


# --- decoded view ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedView:
    """`text` decoded; `starts[i]`/`ends[i]` is the original span that produced `text[i]`."""

    text: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def original(self, i: int, j: int) -> tuple[int, int]:
        """The original span covering decoded characters [i, j)."""
        return self.starts[i], self.ends[max(i, j - 1)]


_ENTITY = re.compile(r"&(?:#[0-9]{1,8}|#[xX][0-9a-fA-F]{1,7}|[A-Za-z][A-Za-z0-9]{1,31});?")
_PERCENT_RUN = re.compile(r"(?:%[0-9a-fA-F]{2})+")
_MD_ESCAPABLE = set("!\"#$%&'()*+,-.:;<=>?@[]^_`{|}~")


def _pass(chars: list[tuple[str, int, int]], pattern: re.Pattern[str], decode: Callable[[str], str]) -> list[tuple[str, int, int]]:
    text = "".join(c for c, _, _ in chars)
    out: list[tuple[str, int, int]] = []
    pos = 0
    for m in pattern.finditer(text):
        decoded = decode(m.group(0))
        if decoded == m.group(0):
            continue
        out.extend(chars[pos : m.start()])
        start, end = chars[m.start()][1], chars[m.end() - 1][2]
        out.extend((ch, start, end) for ch in decoded)
        pos = m.end()
    out.extend(chars[pos:])
    return out


def _percent(run: str) -> str:
    return unquote(run, errors="replace")


def _char_pass(chars: list[tuple[str, int, int]], strip_newlines: bool) -> list[tuple[str, int, int]]:
    """NFKC per character, invisible characters dropped, Markdown escapes undone, other `\\` read as `/`."""
    out: list[tuple[str, int, int]] = []
    n = len(chars)
    i = 0
    while i < n:
        ch, s, e = chars[i]
        if ch == "\\":
            nxt = chars[i + 1][0] if i + 1 < n else ""
            if nxt in _MD_ESCAPABLE:  # Markdown escape: the next character is literal
                out.append((nxt, s, chars[i + 1][2]))
                i += 2
                continue
            out.append(("/", s, e))  # browsers treat `\` as `/` in http(s) URLs
            i += 1
            continue
        if strip_newlines and ch in "\t\r\n":
            i += 1
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cf", "Cc") and ch not in "\t\r\n":
            i += 1
            continue
        folded = unicodedata.normalize("NFKC", ch) if ord(ch) > 127 else ch
        out.extend((f, s, e) for f in folded)
        i += 1
    return out


def decoded_view(text: str, strip_newlines: bool = False, rounds: int = 4) -> DecodedView:
    """Decode entities and percent-encoding until nothing changes (at most `rounds` times)."""
    chars = [(ch, i, i + 1) for i, ch in enumerate(text)]
    for _ in range(rounds):
        before = "".join(c for c, _, _ in chars)
        chars = _pass(chars, _ENTITY, html.unescape)
        chars = _pass(chars, _PERCENT_RUN, _percent)
        if "".join(c for c, _, _ in chars) == before:
            break
    chars = _char_pass(chars, strip_newlines)
    return DecodedView(
        text="".join(c for c, _, _ in chars),
        starts=tuple(s for _, s, _ in chars),
        ends=tuple(e for _, _, e in chars),
    )


# --- hosts ---------------------------------------------------------------------------------------

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):")


def url_host(url: str) -> str | None:
    """The host a browser would contact for `url`, or None when it cannot be established.

    `//host`, `https:/host`, `https:host` and backslashes count as absolute; userinfo is skipped
    (`https://good@evil/` goes to `evil`). A relative URL has no host of its own: "" (the page's).
    """
    url = url.strip().replace("\\", "/")
    scheme_match = _SCHEME.match(url)
    if scheme_match is None:
        if url.startswith("//"):
            candidate = "http:" + url
        elif url.lower().startswith("www."):
            candidate = "http://" + url
        else:
            return ""
    else:
        scheme = scheme_match.group(1).lower()
        if scheme not in WEB_SCHEMES:
            return None
        rest = url[scheme_match.end():].lstrip("/")
        candidate = f"{scheme}://{rest}"
    try:
        parts = urlsplit(candidate)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return None
    if not host:
        return None
    host = unquote(host).strip().lower().rstrip(".")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return None
    if not host or not re.fullmatch(r"[a-z0-9._\-\[\]:]+", host):
        return None
    return host


def host_allowed(url: str, allowlist: Iterable[str]) -> bool:
    """A web URL whose host is an allowlisted host or a subdomain of one. Relative or other schemes: no."""
    host = url_host(url)
    if not host:
        return False
    return any(host == a or host.endswith("." + a) for a in allowlist)


def url_allowed(url: str, allowlist: Iterable[str]) -> bool:
    """For a link target: relative URLs stay on the page's own host; absolute ones need the allowlist."""
    host = url_host(url)
    if host == "":
        return not url.strip().lower().startswith(("data:", "javascript:"))
    return host is not None and any(host == a or host.endswith("." + a) for a in allowlist)


# --- candidates ----------------------------------------------------------------------------------

_URL_CHARS = r"[^\s<>\"'`()\[\]{}|^]"
_CANDIDATES = re.compile(
    rf"(?i)(?:\b(?:https?|ftps?|wss?):/{{0,3}}{_URL_CHARS}+"  # scheme, any number of slashes
    rf"|(?<![\w:/])//(?=[\w\-]+(?:\.[\w\-]+)+){_URL_CHARS}+"  # protocol-relative, host with a dot
    rf"|\bwww\.[\w\-]+\.{_URL_CHARS}+"  # www.host
    rf"|(?<![\w@./:\-])(?:[a-z0-9](?:[a-z0-9\-]{{0,61}}[a-z0-9])?\.)+[a-z]{{2,63}}(?::\d{{1,5}})?[/?]{_URL_CHARS}*"
    rf"|(?<![\w./])\d{{1,3}}(?:\.\d{{1,3}}){{3}}(?::\d{{1,5}})?/{_URL_CHARS}*)"  # IPv4 with a path
)
_NON_WEB = re.compile(r"(?i)^\s*(?:javascript|vbscript|data|file|blob|filesystem|jar|view-source)\s*:")


_RESERVED_TLDS = {"example", "test", "invalid", "localhost", "local", "internal", "corp", "lan", "home", "intranet"}


@functools.lru_cache(maxsize=1)
def _suffixes() -> Any:
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)  # bundled snapshot, no fetch


def _is_domain(url: str) -> bool:
    """A bare `name.tld/...` counts only with a real public suffix (or a reserved test TLD), so
    `node.js/express` or `config.yaml/` are not hosts."""
    host = re.split(r"[/?:]", url, maxsplit=1)[0].lower()
    if host.rsplit(".", 1)[-1] in _RESERVED_TLDS:
        return True
    return bool(_suffixes()(host).suffix)


def url_candidates(text: str) -> list[tuple[int, int, str]]:
    """(start, end, url) of everything in `text` a renderer or user could follow as an absolute URL."""
    out = []
    pos = 0
    while (m := _CANDIDATES.search(text, pos)) is not None:
        url = m.group(0).rstrip(".,;:!?*_~")
        if url and (url[0] in "/" or "://" in url[:12] or url[:4].lower() == "www." or ":/" in url[:7]
                    or url[0].isdigit() or _is_domain(url)):
            out.append((m.start(), m.start() + len(url), url))
            pos = m.end()
        else:
            pos = m.start() + 1  # not a host: something inside it may still be a URL
    return out


def urls_allowed(url: str, allowlist: Iterable[str]) -> bool:
    """`url` and every URL nested in it (`?next=https://…`, an open redirect) go to allowed hosts."""
    allowlist = list(allowlist)
    if not host_allowed(url, allowlist):
        return False
    return all(urls_allowed(u, allowlist) for _, _, u in url_candidates(url[1:]))


@dataclass(frozen=True)
class EgressSpan:
    start: int
    end: int
    replacement: str
    kind: str  # "egress_link" | "egress_image"


_IMAGE_TAGS = {"img", "image", "picture", "source", "video", "audio", "track", "input", "svg", "use"}
_ALWAYS_REMOVED = {"script", "style", "iframe", "frame", "frameset", "object", "embed", "applet", "base", "link",
                   "meta", "form", "portal", "template", "noscript"}
_TAG = re.compile(
    r"<\s*(/?)\s*([a-zA-Z][a-zA-Z0-9:\-]*)((?:\s*[^\s\"'>/=]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'>]*))?|\s*/)*)\s*>?",
    re.DOTALL,
)
_ATTR = re.compile(r"([^\s\"'>/=]+)(?:\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s\"'>]*))?", re.DOTALL)
_URL_ATTRS = {"href", "src", "srcset", "action", "formaction", "data", "poster", "background", "cite", "codebase",
              "longdesc", "lowsrc", "dynsrc", "manifest", "ping", "xlink:href", "usemap", "icon", "profile",
              "archive", "classid", "imagesrcset", "content"}


def _value_allowed(name: str, value: str, allowlist: Sequence[str]) -> bool:
    view = decoded_view(value, strip_newlines=True).text
    if _NON_WEB.match(view) and name in _URL_ATTRS | {"style"} or re.search(r"(?i)(?:javascript|vbscript):", view):
        return False
    if name in _URL_ATTRS and name not in ("srcset", "imagesrcset", "content", "ping", "archive"):
        if not url_allowed(view, allowlist):
            return False
    parts = re.split(r"[\s,;]+|url\s*\(|=", view) if name in ("srcset", "imagesrcset", "ping", "archive",
                                                               "content", "style") else [view]
    for part in parts:
        part = part.strip().strip("\"')")
        if part and name != "content" and name in _URL_ATTRS | {"style"} and not url_allowed(part, allowlist):
            if name != "style" or part.startswith("//") or _SCHEME.match(part):
                return False
    return all(urls_allowed(url, allowlist) for _, _, url in url_candidates(view))


def _html_spans(text: str, allowlist: Sequence[str]) -> list[EgressSpan]:
    out: list[EgressSpan] = []
    lower = text.lower()
    for m in _TAG.finditer(text):
        closing, name, attrs = m.group(1), m.group(2).lower(), m.group(3) or ""
        if closing:
            continue
        end = m.end()
        bad = name in _ALWAYS_REMOVED
        if not bad:
            for a in _ATTR.finditer(attrs):
                attr_name = a.group(1).lower()
                raw = a.group(2) or ""
                if raw[:1] in "\"'":
                    raw = raw[1:-1]
                if attr_name.startswith("on"):
                    bad = True  # event handlers run script, which can build any URL
                elif raw and not _value_allowed(attr_name, raw, allowlist):
                    bad = True
                if bad:
                    break
        if not bad:
            continue
        if name in ("a", "script", "style", "iframe", "object", "noscript", "template", "form", "svg"):
            close = lower.find(f"</{name}", end)
            if close >= 0:
                gt = text.find(">", close)
                end = gt + 1 if gt >= 0 else len(text)
        kind = "egress_image" if name in _IMAGE_TAGS else "egress_link"
        replacement = "[image removed]" if kind == "egress_image" else (
            "[link removed]" if name == "a" else "[content removed]")
        out.append(EgressSpan(m.start(), end, replacement, kind))
    return out


_LABEL = r"\[((?:[^\[\]\\]|\\.|\[[^\[\]]*\]){0,500})\]"
_DEST = r"\(\s*(<[^<>\n]*>|(?:[^\s()\\]|\\.|\([^\s()]*\))*)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?\s*\)"
_MD_INLINE = re.compile(rf"(!?){_LABEL}{_DEST}", re.DOTALL)
_MD_REF = re.compile(
    r"(?m)^[ \t]{0,3}\[((?:[^\[\]\\]|\\.){1,999})\]:[ \t]*\n?[ \t]*(<[^<>\n]*>|\S+)"
    r"(?:(?:[ \t]+|[ \t]*\n[ \t]*)(?:\"[^\"\n]*\"|'[^'\n]*'|\([^()\n]*\)))?[ \t]*$"
)
_AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.\-]{1,31}:[^\s<>]*)>")


def _dest(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith("<") and raw.endswith(">"):
        raw = raw[1:-1]
    return decoded_view(raw).text


def _markdown_spans(text: str, allowlist: Sequence[str]) -> list[EgressSpan]:
    out: list[EgressSpan] = []
    for m in _MD_INLINE.finditer(text):
        image, label, dest = m.group(1), m.group(2), _dest(m.group(3))
        if dest.startswith("#") or url_allowed(dest, allowlist) and all(
            urls_allowed(u, allowlist) for _, _, u in url_candidates(dest)
        ):
            continue
        if image:
            out.append(EgressSpan(m.start(), m.end(), "[image removed]", "egress_image"))
        else:
            label = label.strip()
            keep = label and not url_candidates(decoded_view(label).text) and "<" not in label
            out.append(EgressSpan(m.start(), m.end(), f"{label} [link removed]" if keep else "[link removed]",
                                  "egress_link"))
    for m in _MD_REF.finditer(text):
        dest = _dest(m.group(2))
        if not url_allowed(dest, allowlist) or not all(urls_allowed(u, allowlist) for _, _, u in url_candidates(dest)):
            out.append(EgressSpan(m.start(), m.end(), "[link removed]", "egress_link"))
    for m in _AUTOLINK.finditer(text):
        dest = decoded_view(m.group(1)).text
        if not host_allowed(dest, allowlist):
            out.append(EgressSpan(m.start(), m.end(), "[link removed]", "egress_link"))
    return out


def egress_spans(text: str, allowlist: Sequence[str]) -> list[EgressSpan]:
    """Spans of `text` that would send a reader (or a renderer) to a host not on the allowlist."""
    allowlist = [a.lower().rstrip(".") for a in allowlist]
    out = _html_spans(text, allowlist) if "<" in text else []
    out.extend(_markdown_spans(text, allowlist))
    view = decoded_view(text)
    for i, j, url in url_candidates(view.text):
        if not urls_allowed(url, allowlist):
            start, end = view.original(i, j)
            out.append(EgressSpan(start, end, "[link removed]", "egress_link"))
    return out


def unclosed_tag_start(text: str, limit: int) -> int:
    """Start of a trailing HTML tag or Markdown link still open at the end of `text`, or -1.

    A streaming filter must not release part of a construct whose target has not arrived yet.
    """
    lt = max(text.rfind("<"), text.rfind("]("))
    if lt < 0 or len(text) - lt > limit:
        return -1
    return lt if ">" not in text[lt:] and ")" not in text[lt:] else -1
