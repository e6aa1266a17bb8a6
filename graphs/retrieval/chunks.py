"""The records retrieval stores and returns: a `Chunk` of a document, and a `Hit` (a scored chunk).

Tenants and access groups are validated here once, so every store can rely on them: a tenant name is
also a Weaviate tenant name, and a group never contains the `|` the embedded store uses as separator.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A chunk whose groups include PUBLIC_GROUP is visible to every caller of its tenant.
PUBLIC_GROUP = "*"
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
GROUP_RE = re.compile(r"^(\*|[A-Za-z0-9_.:@/-][A-Za-z0-9_.:@/ -]{0,127})$")


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
        raise ValueError(
            f"invalid tenant {tenant!r}: use 1-64 letters, digits, '_' or '-', starting alphanumeric"
        )
    return tenant


def check_groups(groups: Sequence[str]) -> list[str]:
    """Access groups as a clean list. A bare string is refused: it would be read as one group per letter."""
    if isinstance(groups, str | bytes) or not isinstance(groups, Sequence | set | frozenset):
        raise TypeError("groups must be a sequence of group names, e.g. ['staff'], not a string")
    out: list[str] = []
    for g in groups:
        if not isinstance(g, str) or not GROUP_RE.match(g):
            raise ValueError(f"invalid access group {g!r}")
        if g not in out:
            out.append(g)
    return out


def chunk_id_for(document_id: str, position: int) -> str:
    """Deterministic id: re-ingesting a document overwrites its chunks instead of duplicating them."""
    return hashlib.sha256(f"{document_id}\x00{position}".encode()).hexdigest()[:32]


def content_hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()


class Chunk(BaseModel):
    """One retrievable piece of a document, with everything a citation needs."""

    model_config = ConfigDict(extra="forbid")

    chunk_id: str
    tenant: str
    document_id: str = Field(min_length=1)
    source: str
    title: str = ""
    section: list[str] = Field(default_factory=list, description="heading path, outermost first")
    kind: str = "text"
    position: int = Field(ge=0, description="ordinal of the chunk within its document")
    start: int = Field(ge=0, description="character offset of the chunk in the document text")
    end: int = Field(ge=0)
    text: str
    groups: list[str] = Field(min_length=1)
    content_hash: str
    document_hash: str = ""
    ingested_at: float = 0.0

    @field_validator("tenant")
    @classmethod
    def _valid_tenant(cls, value: str) -> str:
        return check_tenant(value)

    @field_validator("groups")
    @classmethod
    def _valid_groups(cls, value: list[str]) -> list[str]:
        return check_groups(value)

    @property
    def section_path(self) -> str:
        return " > ".join(self.section)

    def embedding_text(self) -> str:
        """What is embedded: title and section give a short chunk its context."""
        path = " > ".join(s for s in self.section if s != self.title)  # an H1 usually repeats the title
        head = " ".join(p for p in (self.title, path) if p)
        return f"{head} {self.text}" if head else self.text


class Hit(BaseModel):
    """A search result: a chunk, its score (higher is better) and where it came from."""

    chunk_id: str
    document_id: str
    text: str
    score: float
    source: str
    title: str
    section: list[str]
    kind: str
    position: int
    start: int
    end: int
    tenant: str
    groups: list[str]
    scores: dict[str, float] = Field(default_factory=dict, description="per-retriever scores before fusion")
    # The tenant's own help centre is curated; a source that is not must mark its hits untrusted (taints the run).
    trusted: bool = True

    @classmethod
    def from_chunk(cls, chunk: Chunk, score: float, **extra: Any) -> Hit:
        data = chunk.model_dump(include=set(cls.model_fields))
        return cls(**data, score=score, **extra)

    def citation(self) -> dict[str, Any]:
        """Enough to point a reader at the exact span: document, section and character offsets."""
        return {
            "document_id": self.document_id,
            "source": self.source,
            "title": self.title,
            "section": self.section,
            "start": self.start,
            "end": self.end,
        }
