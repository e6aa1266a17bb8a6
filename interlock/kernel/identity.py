"""Who a run or a tool call acts for, and the request metadata keys that carry it to an MCP server."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

# Keys of an MCP request's `_meta`: filled by Interlock's client, never by a model.
META_TOKEN = "io.interlock/token"
META_APPROVAL = "io.interlock/approval_id"
META_TRACE = "io.interlock/trace_id"


class Principal(BaseModel):
    """A user (or service) acting inside one tenant with a set of scopes such as `orders:read`.

    Built only from trusted sources: the server's auth context, a verified token, or development settings.
    """

    sub: str = Field(min_length=1, max_length=200)
    tenant: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    display_name: str | None = None

    @field_validator("scopes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # Accept the OAuth wire form ("a b") as well as a list.
        if isinstance(value, str):
            return [s for s in value.replace(",", " ").split() if s]
        return value

    def has(self, scope: str) -> bool:
        return scope in self.scopes
