"""The sample help centre: articles for the two sample tenants (acme, globex), written for this project.

Layout: `<tenant>/public/*.md` is visible to everyone in the tenant (ACL "*"); `<tenant>/staff/*.md`
only to the `staff` group. `interlock seed` calls `ingest_sample()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

KNOWLEDGE_DIR = Path(__file__).resolve().parent
ACLS = {"public": ["*"], "staff": ["staff"]}


def tenants() -> list[str]:
    return sorted(p.name for p in KNOWLEDGE_DIR.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


async def ingest_sample(retriever: Any | None = None) -> dict[str, Any]:
    """Ingest every tenant's articles; returns the ingestion report per `tenant/section`."""
    if retriever is None:
        from interlock.graphs.retrieval import Retriever

        retriever = Retriever.from_settings()
    reports: dict[str, Any] = {}
    for tenant in tenants():
        for section, acl in ACLS.items():
            folder = KNOWLEDGE_DIR / tenant / section
            if folder.is_dir():
                reports[f"{tenant}/{section}"] = await retriever.ingest_paths([folder], tenant, acl)
    return reports
