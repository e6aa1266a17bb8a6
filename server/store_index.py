"""Semantic search over the long-term store: langgraph.json's `store.index`, embedded by Interlock's own embedder.

`{"store": {"index": {"embed": "interlock:minilm", "dims": 384, "fields": ["text"]}}}` indexes the named fields
of every item put; `POST /store/items/search` with `query` then ranks items by similarity, as the reference
server does. `embed` names the project's MiniLM embedder (`interlock:minilm`, also `minilm` or
`all-MiniLM-L6-v2`) or a `module:function` / `./file.py:function` taking a list of texts and returning vectors.
Provider strings (`openai:...`) are not loaded: this server makes no network calls it was not configured for.
"""

from __future__ import annotations

from typing import Any

from interlock.server.project import Project, ProjectError, load_object

MINILM_NAMES = {"interlock:minilm", "minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def minilm_embed(texts: list[str]) -> list[list[float]]:
    """The project's MiniLM int8 embedder (graphs/retrieval/embeddings.py) as a store embedding function."""
    from interlock.graphs.retrieval.embeddings import get_embedder

    return get_embedder().embed(list(texts)).tolist()


def _embed_function(project: Project, name: Any) -> Any:
    if not isinstance(name, str) or not name.strip():
        raise ProjectError("store.index.embed must name an embedder: 'interlock:minilm' or 'module:function'")
    if name.strip().lower() in MINILM_NAMES:
        return minilm_embed
    try:
        fn = load_object(project.root, name)
    except (ImportError, ProjectError) as exc:
        raise ProjectError(
            f"store.index.embed {name!r} is neither 'interlock:minilm' nor an importable 'module:function' ({exc})"
        ) from None
    if not callable(fn) and not hasattr(fn, "embed_documents"):
        raise ProjectError(f"store.index.embed {name!r} is not callable")
    return fn


def index_config(project: Project) -> dict[str, Any] | None:
    """The store's index configuration, or None when langgraph.json configures no semantic index."""
    store = project.raw.get("store") or {}
    if not isinstance(store, dict):
        raise ProjectError("'store' in langgraph.json must be an object")
    index = store.get("index")
    if index is None:
        return None
    if not isinstance(index, dict):
        raise ProjectError("store.index must be an object with 'embed' and 'dims'")
    dims = index.get("dims")
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 16384:
        raise ProjectError("store.index.dims must be an integer between 1 and 16384")
    fields = index.get("fields")
    if fields is not None and (not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields)):
        raise ProjectError("store.index.fields must be a list of field paths")
    config: dict[str, Any] = {"dims": dims, "embed": _embed_function(project, index.get("embed"))}
    if fields is not None:
        config["fields"] = fields
    return config
