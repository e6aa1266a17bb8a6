"""Who a tool call is made for: the run's principal, as the graph server authenticated it."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator


class Principal(BaseModel):
    """A user (or service) acting inside one tenant with a set of scopes such as `orders:read`."""

    sub: str = Field(min_length=1, max_length=200)
    tenant: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(default_factory=list)

    @field_validator("scopes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # Accept the OAuth wire form ("a b") as well as a list.
        if isinstance(value, str):
            return [s for s in value.replace(",", " ").split() if s]
        return value

    def has(self, scope: str) -> bool:
        return scope in self.scopes
