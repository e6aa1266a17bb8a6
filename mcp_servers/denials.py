"""The error every governance check raises, so the audit log can tell a denial from a failure."""

from __future__ import annotations

from fastmcp.exceptions import ToolError


class Denied(ToolError):
    """A call refused by policy. The message is shown to the client; `code` goes to the audit log."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
