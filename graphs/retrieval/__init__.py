"""Retrieval: ingestion, chunking, embeddings, embedded and Weaviate stores, hybrid search, re-ranking.

Graphs use `Retriever` and `Hit`; see README.md in this folder.
"""

from .chunks import PUBLIC_GROUP, Chunk, Hit
from .filters import Condition
from .retriever import Retriever, RetrieverConfig

__all__ = ["PUBLIC_GROUP", "Chunk", "Condition", "Hit", "Retriever", "RetrieverConfig"]
