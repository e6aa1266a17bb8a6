"""Metadata filters on chunks: a small, store-neutral condition language (all conditions are ANDed).

Each store translates these into its own query language (SQL for the embedded store, `Filter`
objects for Weaviate). Tenant and access groups are not filters: they are mandatory arguments of
every search and are enforced by the stores themselves.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

TextField = Literal["document_id", "source", "kind", "title", "section"]
NumberField = Literal["position", "start", "ingested_at"]
Op = Literal["eq", "ne", "in", "not_in", "lt", "lte", "gt", "gte", "prefix"]

TEXT_FIELDS: frozenset[str] = frozenset(TextField.__args__)  # type: ignore[attr-defined]
NUMBER_FIELDS: frozenset[str] = frozenset(NumberField.__args__)  # type: ignore[attr-defined]
ORDER_OPS = frozenset({"lt", "lte", "gt", "gte"})
LIST_OPS = frozenset({"in", "not_in"})

Scalar = str | int | float


class Condition(BaseModel):
    """`field op value`. `section` compares the joined heading path ("A > B"); `prefix` is for text fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: TextField | NumberField
    op: Op
    value: Scalar | list[Scalar]

    @model_validator(mode="after")
    def _consistent(self) -> Condition:
        is_text = self.field in TEXT_FIELDS
        if self.op in LIST_OPS:
            if not isinstance(self.value, list) or not self.value:
                raise ValueError(f"{self.op} needs a non-empty list value")
            values = self.value
        else:
            if isinstance(self.value, list):
                raise ValueError(f"{self.op} needs a single value, not a list")
            values = [self.value]
        for v in values:
            if is_text and not isinstance(v, str):
                raise ValueError(f"field {self.field} is text; got {v!r}")
            if not is_text and (isinstance(v, str | bool)):
                raise ValueError(f"field {self.field} is numeric; got {v!r}")
        if self.op == "prefix" and not is_text:
            raise ValueError("prefix applies to text fields only")
        if self.op in ORDER_OPS and is_text:
            raise ValueError(f"{self.op} applies to numeric fields only")
        return self

    def matches(self, record: dict[str, object]) -> bool:
        """Reference semantics, used by tests and by stores that filter in Python."""
        actual = record[self.field]
        if self.field == "section" and isinstance(actual, list):
            actual = " > ".join(actual)
        v = self.value
        match self.op:
            case "eq":
                return actual == v
            case "ne":
                return actual != v
            case "in":
                return actual in v  # type: ignore[operator]
            case "not_in":
                return actual not in v  # type: ignore[operator]
            case "lt":
                return actual < v  # type: ignore[operator]
            case "lte":
                return actual <= v  # type: ignore[operator]
            case "gt":
                return actual > v  # type: ignore[operator]
            case "gte":
                return actual >= v  # type: ignore[operator]
            case "prefix":
                return str(actual).startswith(str(v))
        raise AssertionError(self.op)


def parse_filter(expr: str) -> Condition:
    """CLI form `field:op:value` (`in`/`not_in` take comma-separated values), e.g. `kind:eq:code`."""
    parts = expr.split(":", 2)
    if len(parts) != 3:
        raise ValueError(f"filter {expr!r} is not field:op:value")
    field, op, raw = parts
    numeric = field in NUMBER_FIELDS

    def conv(s: str) -> Scalar:
        if not numeric:
            return s
        try:
            return int(s)
        except ValueError:
            return float(s)

    value: Scalar | list[Scalar] = [conv(s) for s in raw.split(",")] if op in LIST_OPS else conv(raw)
    return Condition.model_validate({"field": field, "op": op, "value": value})
