"""Interlock: LangGraph graphs behind an Agent-Server-compatible API, touching business systems only through
scoped MCP servers.

The repository's folders install as subpackages of this one (`interlock.server`, `interlock.graphs`, ...); the
kernel (`interlock.kernel`) is the bottom layer every other package may import.
"""
