"""Vendored files the retrieval package needs at run time (the MiniLM tokenizer, with its licence)."""
