"""Text embeddings for retrieval and routing. The implementation lives in interlock.kernel.embeddings
(shared with the learned injection detector in policies, which sits below graphs)."""

from interlock.kernel.embeddings import (
    MAX_TOKENS,
    MINILM_DIM,
    TOKENIZER_PATH,
    TOKENIZER_SHA256,
    Embedder,
    EmbeddingError,
    MiniLMEmbedder,
    ProviderEmbedder,
    embed_async,
    embedder_from_env,
    get_embedder,
    local_minilm,
    sha256_file,
)

__all__ = [
    "MAX_TOKENS", "MINILM_DIM", "TOKENIZER_PATH", "TOKENIZER_SHA256", "Embedder", "EmbeddingError", "MiniLMEmbedder",
    "ProviderEmbedder", "embed_async", "embedder_from_env", "get_embedder", "local_minilm", "sha256_file",
]
