"""JSON for everything a graph can put in its state: pydantic models, LangChain messages, interrupts."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from pydantic import BaseModel

_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _default(obj: Any) -> Any:
    # LangChain messages and other pydantic models.
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if hasattr(obj, "to_json") and hasattr(obj, "lc_serializable") and not isinstance(obj, type):
        return obj.to_json()
    if type(obj).__name__ == "Interrupt" and hasattr(obj, "value"):
        return {"value": obj.value, "id": getattr(obj, "id", None)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if hasattr(obj, "_asdict"):  # NamedTuple (Send, PregelTask, ...)
        return obj._asdict()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if isinstance(obj, bytes | bytearray):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, BaseException):
        return {"error": type(obj).__name__, "message": str(obj)}
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    return repr(obj)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_default, option=_OPTS)


def dumps_str(obj: Any) -> str:
    return dumps(obj).decode()


def loads(data: str | bytes | None) -> Any:
    if data is None:
        return None
    return orjson.loads(data)


def jsonable(obj: Any) -> Any:
    """Round-trip through JSON so later comparisons see plain dicts and lists."""
    return orjson.loads(dumps(obj))
