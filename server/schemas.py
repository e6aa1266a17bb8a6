"""Request bodies of the Agent Server API. Unknown fields are rejected (422 naming them), never ignored."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

StreamMode = Literal[
    "values", "updates", "messages", "messages-tuple", "custom", "debug", "tasks", "checkpoints", "events"
]
STREAM_MODES: tuple[str, ...] = StreamMode.__args__  # type: ignore[attr-defined]
MultitaskStrategy = Literal["reject", "interrupt", "rollback", "enqueue"]
SortOrder = Literal["asc", "desc", "ASC", "DESC"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- bounds: every number and key the databases see is checked here, so bad input is a 422, never a 5xx ---------
INT64_MAX = 2**63 - 1  # SQLite INTEGER and PostgreSQL BIGINT
MAX_TTL_MINUTES = 100 * 365 * 24 * 60  # a century; more overflows datetime arithmetic
MAX_DELAY_SECONDS = 366 * 24 * 3600

Offset = Annotated[int, Field(ge=0, le=INT64_MAX)]
TtlMinutes = Annotated[float, Field(gt=0, le=MAX_TTL_MINUTES, allow_inf_nan=False)]


def _label(value: str) -> str:
    # LangGraph's stores join namespaces with '.', and PostgreSQL text cannot hold NUL.
    if not value or "." in value or "\x00" in value:
        raise ValueError("namespace labels must be non-empty and contain no '.' or NUL character")
    return value


Label = Annotated[str, Field(max_length=256), AfterValidator(_label)]


def _item_key(value: str) -> str:
    if "\x00" in value:
        raise ValueError("item keys cannot contain the NUL character")
    return value


ItemKey = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_item_key)]
Namespace = Annotated[list[Label], Field(max_length=64)]

_STORE_FILTER_KEY = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
_STORE_OPERATORS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"}
_METADATA_KEY_FORBIDDEN = re.compile(r'["\\\x00-\x1f]')


def _no_nul(value: Any, where: str) -> None:
    """PostgreSQL's jsonb rejects \\u0000, so a filter carrying one could never match: refuse it up front."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where}: strings cannot contain the NUL character")
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_nul(k, where)
            _no_nul(v, where)
    elif isinstance(value, list):
        for v in value:
            _no_nul(v, where)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
        raise ValueError(f"{where}: integers must fit in 64 bits")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: numbers must be finite")


def _metadata_filter(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Keys become JSON paths (`$."key"`): no quotes, backslashes or control characters."""
    for key in value or {}:
        if not key or len(key) > 256 or _METADATA_KEY_FORBIDDEN.search(key):
            raise ValueError(f"filter key {key!r} must be 1-256 characters without quotes, backslashes or control characters")
    _no_nul(value, "filter")
    return value


def _store_filter(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The store interpolates keys into JSON paths and understands six comparison operators."""
    for key, cond in (value or {}).items():
        if len(key) > 256 or not _STORE_FILTER_KEY.match(key):
            raise ValueError(f"filter key {key!r} must be dot-separated names of letters, digits, '_' or '-'")
        if isinstance(cond, dict):
            unknown = sorted(set(cond) - _STORE_OPERATORS)
            if unknown or not cond:
                raise ValueError(f"filter on {key!r}: operators must be among {sorted(_STORE_OPERATORS)}")
    _no_nul(value, "filter")
    return value


MetadataFilter = Annotated[dict[str, Any] | None, AfterValidator(_metadata_filter)]


def _storable_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    # Stored metadata is later cast to jsonb in searches: one NUL would break every search on PostgreSQL.
    _no_nul(value, "metadata")
    return value


Metadata = Annotated[dict[str, Any] | None, AfterValidator(_storable_metadata)]
StoreFilter = Annotated[dict[str, Any] | None, AfterValidator(_store_filter)]


def _json_object_input(value: Any) -> Any:
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"input must be a JSON object or null, got {type(value).__name__}")
    _no_nul(value, "input")  # becomes thread values, which PostgreSQL searches as jsonb
    return value


RunInput = Annotated[dict[str, Any] | None, BeforeValidator(_json_object_input)]


# -- assistants -------------------------------------------------------------------------------------------
class AssistantCreate(Body):
    graph_id: str
    assistant_id: str | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: Metadata = None
    if_exists: Literal["raise", "do_nothing"] | None = None
    name: str | None = None
    description: str | None = None


class AssistantPatch(Body):
    graph_id: str | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: Metadata = None
    name: str | None = None
    description: str | None = None


class AssistantSearch(Body):
    metadata: MetadataFilter = None
    graph_id: str | None = None
    name: str | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: Offset = 0
    sort_by: Literal["assistant_id", "graph_id", "name", "created_at", "updated_at"] | None = None
    sort_order: SortOrder | None = None
    select: list[str] | None = None


class AssistantCount(Body):
    metadata: MetadataFilter = None
    graph_id: str | None = None
    name: str | None = None


class AssistantVersionsSearch(Body):
    metadata: MetadataFilter = None
    limit: int = Field(10, ge=1, le=1000)
    offset: Offset = 0


class AssistantSetLatest(Body):
    version: int = Field(ge=1, le=INT64_MAX)


# -- threads ----------------------------------------------------------------------------------------------
class SuperstepUpdate(Body):
    values: Any = None
    command: dict[str, Any] | None = None
    as_node: str


class Superstep(Body):
    updates: list[SuperstepUpdate]


class ThreadTTL(Body):
    strategy: Literal["delete"] = "delete"
    ttl: TtlMinutes = Field(description="minutes")


class ThreadCreate(Body):
    thread_id: str | None = None
    metadata: Metadata = None
    if_exists: Literal["raise", "do_nothing"] | None = None
    supersteps: list[Superstep] | None = None
    graph_id: str | None = None
    ttl: ThreadTTL | TtlMinutes | None = None


class ThreadPatch(Body):
    metadata: Metadata = None
    ttl: ThreadTTL | TtlMinutes | None = None


ThreadStatus = Literal["idle", "busy", "interrupted", "error"]


class ThreadSearch(Body):
    metadata: MetadataFilter = None
    values: MetadataFilter = None
    ids: list[str] | None = None
    status: ThreadStatus | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: Offset = 0
    sort_by: Literal["thread_id", "status", "created_at", "updated_at", "state_updated_at"] | None = None
    sort_order: SortOrder | None = None
    select: list[str] | None = None
    extract: dict[str, str] | None = None


class ThreadCount(Body):
    metadata: MetadataFilter = None
    values: MetadataFilter = None
    status: ThreadStatus | None = None


class ThreadPrune(Body):
    thread_ids: list[str]
    strategy: Literal["delete", "keep_latest"] = "delete"


class CheckpointRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    checkpoint_id: str | None = None
    checkpoint_ns: str | None = ""
    thread_id: str | None = None
    checkpoint_map: dict[str, Any] | None = None


class StateUpdate(Body):
    values: Any = None
    as_node: str | None = None
    checkpoint: CheckpointRef | None = None
    checkpoint_id: str | None = None


class StateAtCheckpoint(Body):
    checkpoint: CheckpointRef
    subgraphs: bool = False


class HistoryRequest(Body):
    limit: int = Field(10, ge=1, le=1000)
    before: str | CheckpointRef | None = None
    metadata: MetadataFilter = None
    checkpoint: CheckpointRef | None = None
    select: list[str] | None = None


# -- runs -------------------------------------------------------------------------------------------------
class CommandBody(Body):
    resume: Any = None
    update: Any = None
    goto: Any = None


class RunCreate(Body):
    assistant_id: str
    input: RunInput = None
    command: CommandBody | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: Metadata = None
    stream_mode: StreamMode | list[StreamMode] = "values"
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    checkpoint: CheckpointRef | None = None
    checkpoint_id: str | None = None
    checkpoint_during: bool | None = None
    durability: Literal["sync", "async", "exit"] | None = None
    multitask_strategy: MultitaskStrategy | None = None
    if_not_exists: Literal["reject", "create"] | None = None
    on_disconnect: Literal["cancel", "continue"] | None = None
    on_completion: Literal["delete", "keep"] | None = None
    after_seconds: float | None = Field(None, ge=0, le=MAX_DELAY_SECONDS, allow_inf_nan=False)
    strict_resume: bool | None = None
    webhook: str | None = Field(None, max_length=2048)
    # Accepted only when absent/null: we do not silently drop what we cannot honour.
    feedback_keys: None = None
    langsmith_tracer: None = None

    @field_validator("feedback_keys", "langsmith_tracer", mode="before")
    @classmethod
    def _unsupported(cls, value: Any, info: Any) -> None:
        if value is not None:
            raise ValueError(f"'{info.field_name}' is not supported by this server")
        return None

    def modes(self) -> list[str]:
        modes = [self.stream_mode] if isinstance(self.stream_mode, str) else list(self.stream_mode)
        return list(dict.fromkeys(modes)) or ["values"]


class RunCancelMany(Body):
    thread_id: str | None = None
    run_ids: list[str] | None = None
    status: Literal["pending", "running", "all"] | None = None


# -- crons ------------------------------------------------------------------------------------------------
class CronCreate(Body):
    assistant_id: str
    schedule: str
    input: RunInput = None
    metadata: Metadata = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    multitask_strategy: MultitaskStrategy | None = None
    end_time: str | None = None
    enabled: bool | None = None
    timezone: str | None = None
    stream_mode: StreamMode | list[StreamMode] | None = None
    stream_subgraphs: bool | None = None
    stream_resumable: bool | None = None
    durability: Literal["sync", "async", "exit"] | None = None
    on_run_completed: Literal["delete", "keep"] | None = None
    checkpoint_during: bool | None = None
    webhook: str | None = Field(None, max_length=2048)


class CronPatch(Body):
    schedule: str | None = None
    end_time: str | None = None
    input: RunInput = None
    metadata: Metadata = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    enabled: bool | None = None
    timezone: str | None = None
    on_run_completed: Literal["delete", "keep"] | None = None
    stream_mode: StreamMode | list[StreamMode] | None = None
    stream_subgraphs: bool | None = None
    stream_resumable: bool | None = None
    durability: Literal["sync", "async", "exit"] | None = None
    multitask_strategy: MultitaskStrategy | None = None
    webhook: str | None = Field(None, max_length=2048)


class CronSearch(Body):
    assistant_id: str | None = None
    thread_id: str | None = None
    enabled: bool | None = None
    metadata: MetadataFilter = None
    limit: int = Field(10, ge=1, le=1000)
    offset: Offset = 0
    sort_by: Literal["cron_id", "assistant_id", "thread_id", "next_run_date", "end_time", "created_at", "updated_at"] | None = None
    sort_order: SortOrder | None = None
    select: list[str] | None = None


class CronCount(Body):
    assistant_id: str | None = None
    thread_id: str | None = None
    enabled: bool | None = None
    metadata: MetadataFilter = None


# -- store ------------------------------------------------------------------------------------------------
class StorePut(Body):
    namespace: Annotated[Namespace, Field(min_length=1)]
    key: ItemKey
    value: dict[str, Any]
    index: Literal[False] | list[str] | None = None
    ttl: TtlMinutes | None = None

    @field_validator("namespace")
    @classmethod
    def _not_reserved(cls, value: list[str]) -> list[str]:
        if value[0] == "langgraph":
            raise ValueError("the root namespace label 'langgraph' is reserved")
        return value

    @field_validator("value")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        _no_nul(value, "item")
        return value


class StoreDelete(Body):
    namespace: Namespace | None = None
    key: ItemKey


class StoreSearch(Body):
    namespace_prefix: Namespace | None = None
    filter: StoreFilter = None
    limit: int = Field(10, ge=1, le=1000)
    offset: Offset = 0
    query: Annotated[str, Field(max_length=8192)] | None = None
    refresh_ttl: bool | None = None


class StoreNamespaces(Body):
    prefix: Namespace | None = None
    suffix: Namespace | None = None
    max_depth: int | None = Field(None, ge=1, le=1024)
    limit: int = Field(100, ge=1, le=1000)
    offset: Offset = 0
