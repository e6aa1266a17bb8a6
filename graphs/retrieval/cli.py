"""`interlock ingest`, `interlock search` and `interlock retrieval-eval`.

The eval harness can mount the same command as `interlock eval retrieval` with
`add_eval_arguments(parser)` and `parser.set_defaults(func=run_eval)`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from .chunks import PUBLIC_GROUP


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    ingest = subparsers.add_parser("ingest", help="ingest Markdown/text/HTML/JSONL files into a tenant")
    ingest.add_argument("paths", nargs="+", type=Path, help="files or directories")
    ingest.add_argument("--tenant", required=True)
    ingest.add_argument(
        "--acl",
        type=_csv,
        default=[PUBLIC_GROUP],
        help="comma-separated access groups that may read these documents (default '*': everyone in the tenant)",
    )
    ingest.add_argument("--prune", action="store_true", help="remove documents no longer present under PATHS")
    ingest.add_argument("--json", action="store_true", help="print the report as JSON")
    ingest.set_defaults(func=run_ingest)

    search = subparsers.add_parser("search", help="search a tenant's documents")
    search.add_argument("query")
    search.add_argument("--tenant", required=True)
    search.add_argument(
        "--groups",
        type=_csv,
        default=[PUBLIC_GROUP],
        help="comma-separated access groups of the reader (default '*': tenant-wide documents only)",
    )
    search.add_argument("--k", type=int, default=10)
    search.add_argument("--mode", choices=["hybrid", "bm25", "vector"], default="hybrid")
    search.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="FIELD:OP:VALUE",
        help="e.g. kind:eq:code, position:lt:3, source:prefix:/docs (repeatable, ANDed)",
    )
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=run_search)

    ev = subparsers.add_parser("retrieval-eval", help="nDCG/recall/MRR of each search mode on a BEIR dataset")
    add_eval_arguments(ev)
    ev.set_defaults(func=run_eval)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, type=Path, help="directory in BEIR layout")
    parser.add_argument(
        "--split", default=None, help="qrels split (default: test if present, else the only one)"
    )
    parser.add_argument("--tenant", default="eval-scratch", help="scratch tenant, emptied before and after")
    parser.add_argument("--modes", type=_csv, default=None, help="subset of bm25,vector,hybrid,hybrid+rerank")
    parser.add_argument("--keep", action="store_true", help="keep the ingested corpus afterwards")
    parser.add_argument(
        "--chunk-tokens",
        type=int,
        default=None,
        help="chunk size for this run (default: the tuned 128); a size above the longest document keeps "
        "documents whole, so a shipped corpus-*.npy covers every chunk and nothing is embedded but queries",
    )
    parser.add_argument("--json", action="store_true")


def _error(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def run_ingest(args: argparse.Namespace) -> int:
    from .retriever import Retriever

    async def go() -> int:
        retriever = Retriever.from_settings()
        try:
            report = await retriever.ingest_paths(args.paths, args.tenant, args.acl, prune=args.prune)
        finally:
            await retriever.close()
        if args.json:
            print(report.model_dump_json(indent=2))
        else:
            print(
                f"{report.documents_seen} documents: {report.documents_added} added, {report.documents_updated} "
                f"updated, {report.documents_unchanged} unchanged, {report.documents_removed} removed; "
                f"{report.chunks_written} chunks written, {report.chunks_removed} removed in {report.seconds:.1f} s"
            )
        for err in report.errors:
            print(f"error: {err}", file=sys.stderr)
        return 1 if report.errors else 0

    try:
        return asyncio.run(go())
    except (ValueError, TypeError) as exc:
        return _error(str(exc))


def run_search(args: argparse.Namespace) -> int:
    from .filters import parse_filter
    from .retriever import Retriever

    try:
        filters = [parse_filter(f) for f in args.filter]
    except ValueError as exc:
        return _error(f"bad --filter: {exc}")

    async def go() -> int:
        retriever = Retriever.from_settings()
        try:
            hits = await retriever.search(
                args.query, tenant=args.tenant, groups=args.groups, k=args.k, mode=args.mode, filters=filters
            )
        finally:
            await retriever.close()
        if args.json:
            print(json.dumps([h.model_dump() for h in hits], indent=2))
            return 0
        if not hits:
            print(f"no results (tenant {args.tenant}, groups {','.join(args.groups)})")
        for i, h in enumerate(hits, start=1):
            where = " > ".join([h.title, *(s for s in h.section if s != h.title)])
            print(f"{i:>2}. {h.score:.4f}  {where}  [{h.source} {h.start}-{h.end}]")
            snippet = " ".join(h.text.split())
            print(f"    {snippet[:200]}{'...' if len(snippet) > 200 else ''}")
        return 0

    try:
        return asyncio.run(go())
    except (ValueError, TypeError) as exc:
        return _error(str(exc))


def run_eval(args: argparse.Namespace) -> int:
    from .beir import EVAL_MODES, BeirError, evaluate, load_beir
    from .chunking import ChunkingConfig
    from .retriever import Retriever

    modes = args.modes or list(EVAL_MODES)
    try:
        dataset = load_beir(args.dataset, args.split)
    except (BeirError, OSError) as exc:
        return _error(str(exc))

    async def go() -> int:
        retriever = Retriever.from_settings()
        if args.chunk_tokens is not None:
            chunking = ChunkingConfig(
                max_tokens=args.chunk_tokens, overlap_tokens=min(25, args.chunk_tokens // 5)
            )
            retriever.config = retriever.config.model_copy(update={"chunking": chunking})
        try:
            report = await evaluate(
                retriever, dataset, tenant=args.tenant, modes=modes, keep=args.keep, dataset_dir=args.dataset
            )
        finally:
            await retriever.close()
        print(report.model_dump_json(indent=2) if args.json else report.table())
        return 0

    try:
        return asyncio.run(go())
    except (ValueError, TypeError) as exc:
        return _error(str(exc))
