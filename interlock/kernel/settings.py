"""Every `INTERLOCK_*` environment variable, read, validated and documented in one place.

Every process (graph server, MCP servers, CLI) reads the same environment, so they agree on one data directory,
one database and one issuer without passing paths around. `get_settings()` parses the environment once and
re-parses only when an `INTERLOCK_*` variable changed (tests, the eval harness and `interlock serve` set some
in-process), so callers read it where they need a value instead of caching their own copy.

`interlock config` prints the effective values with secrets masked (`masked()`); the README's configuration table
is checked against `Settings` by a test.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PREFIX = "INTERLOCK_"
DEFAULT_URL = "http://127.0.0.1:2024"
MASK = "****"

# Variables whose empty value means something (an empty scope list), not "unset".
_EMPTY_IS_A_VALUE = frozenset({"dev_scopes"})


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Interlock's configuration. The field name upper-cased with the `INTERLOCK_` prefix is the variable."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True)

    # -- data -------------------------------------------------------------------------------------------------
    home: Path = Field(Path(".interlock"), description="data directory (SQLite database, keys, indexes)")
    database_url: str | None = Field(
        None, description="`postgresql://...` switches every table, the checkpointer and the store to "
        "PostgreSQL; unset: `sqlite:///$INTERLOCK_HOME/interlock.db`")
    redis_url: str | None = Field(
        None, description="`redis://...`: stream events are mirrored so any replica can replay and follow any "
        "run, and tenant limits are shared")

    # -- graph server -----------------------------------------------------------------------------------------
    config: Path | None = Field(None, description="the langgraph.json a server process serves (set by `interlock serve`)")
    run_concurrency: int = Field(10, ge=1, description="runs executed at once per server process")
    workers: int = Field(1, ge=1, description="server processes sharing the database (set by `interlock serve --workers`)")
    log_level: str = Field("info", description="server log level")
    log_format: Literal["json", "text"] = Field("json", description="server log format")
    allow_unauthenticated: bool = Field(
        False, description="`1` lets `interlock serve` bind a non-loopback address with no auth configured")
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1, description="request bodies above this get 413")
    heartbeat_seconds: float = Field(5.0, gt=0, description="SSE heartbeat comment interval")
    stream_ttl_seconds: float = Field(
        600.0, ge=0, description="how long a resumable stream can be replayed after its run ends")
    stream_retain_mb: float = Field(
        64.0, gt=0, description="memory budget for finished streams kept for replay; past it the oldest go early")
    stream_retain_max: int = Field(10000, ge=1, description="most finished streams kept for replay")
    run_lease_seconds: float = Field(
        30.0, gt=0, description="with several processes, a run whose worker stopped heartbeating for this long "
        "is requeued")
    queue_poll_seconds: float = Field(
        1.0, gt=0, description="how often a server process looks for queued runs it was not woken for")
    webhook_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated webhook hosts allowed even though they resolve to "
        "internal addresses")

    db_pool_size: int = Field(
        10, ge=2, description="PostgreSQL connections each of a server process's two pools may open (server "
        "tables; checkpointer and store)")
    db_timeout_seconds: float = Field(
        5.0, gt=0, description="a request waiting for a database connection or statement gives up after this long "
        "and answers 503 naming the database")
    ready_timeout_seconds: float = Field(1.5, gt=0, description="each dependency check of `/ready`")
    shutdown_grace_seconds: float = Field(
        5.0, gt=0, description="on SIGTERM, how long open requests and streams may finish")
    run_retries: int = Field(
        3, ge=0, description="attempts of a run step that failed on a lost database connection, each resumed from "
        "the last checkpoint, before the run is recorded as an error")

    # -- browsers and operators (README "Security") -------------------------------------------------------------
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated browser origins allowed to call the API (none by default)")
    cors_private_network: bool = Field(
        False, description="`1` answers Private-Network-Access preflights from the allowed origins")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated Host header values accepted in local mode besides loopback")
    local_operator: str = Field(
        "operator@local", description="who decides approvals on a server without auth (local development)")

    approvals_webhook_url: str | None = Field(
        None, description="POSTed an `approval.requested` event for every new pending approval (same SSRF guard as "
        "run webhooks)")
    approvals_poll_seconds: float = Field(
        1.0, ge=0.05, le=60, description="how often the server looks for new, decided and expired approvals")

    # -- clients of a running server (`interlock approvals`, `interlock eval --url`) ----------------------------
    url: str = Field(DEFAULT_URL, description="the server the CLI talks to")
    token: SecretStr | None = Field(None, description="bearer token the CLI sends to an auth-enabled server")

    # -- identity and MCP servers -----------------------------------------------------------------------------
    issuer: str = Field(DEFAULT_URL, description="issuer (`iss`) of the tokens Interlock mints and MCP servers expect")
    jwks_uri: str | None = Field(
        None, description="MCP servers verify tokens with this JWKS; unset: the dev issuer's key under "
        "`$INTERLOCK_HOME/keys`")
    tenant_claim: str = Field("tenant_id", description="token claim holding the tenant")
    customer_claim: str = Field("customer_id", description="token claim holding the customer an end user acts for")
    mcp_token: SecretStr | None = Field(None, description="token a stdio MCP server uses when a call carries none")
    mcp_host: str = Field("127.0.0.1", description="host the sample MCP servers bind and are reached at")
    mcp_orders_url: str | None = Field(None, description="canonical URL (token audience) of the orders MCP server")
    mcp_crm_url: str | None = Field(None, description="canonical URL (token audience) of the CRM MCP server")
    mcp_billing_url: str | None = Field(None, description="canonical URL (token audience) of the billing MCP server")
    mcp_tickets_url: str | None = Field(None, description="canonical URL (token audience) of the tickets MCP server")
    mcp_calls_per_s: float = Field(50.0, gt=0, description="tool calls per second per principal on an MCP server (burst 2x)")
    mcp_lists_per_s: float = Field(10.0, gt=0, description="tool listings per second per principal on an MCP server")
    tools_config: Path | None = Field(
        None, description="YAML naming the MCP servers graphs call; unset: `$INTERLOCK_HOME/tools.yaml`, else "
        "the local sample servers")

    # -- policies and guards ----------------------------------------------------------------------------------
    policy_dir: Path | None = Field(None, description="directory of policy YAML files; unset: the packaged policies")
    vault_key: SecretStr | None = Field(
        None, description="Fernet key of the PII vault; unset: `$INTERLOCK_HOME/keys/pii-vault.key`, created on "
        "first use")

    # -- models -----------------------------------------------------------------------------------------------
    models_policy: Path | None = Field(None, description="models policy YAML replacing the packaged models.yaml")
    scripted_model: Path | None = Field(
        None, description="JSON script of replies for the `scripted` provider (tests and demos)")
    local_llm_url: str | None = Field(
        None, description="base URL of a local OpenAI-compatible model server (the `local` provider in models.yaml)")
    dev_scopes: Annotated[list[str] | None, NoDecode] = Field(
        None, description="comma-separated scopes of the development principal when no auth is configured; "
        "unset: every sample system's read and write scopes and customers:any")
    dev_tenant: str = Field("acme", description="tenant of the development principal when no auth is configured")

    # -- retrieval --------------------------------------------------------------------------------------------
    embeddings_url: str | None = Field(
        None, description="OpenAI-compatible embeddings endpoint; unset: the bundled local MiniLM")
    embeddings_model: str | None = Field(None, description="model name sent to `INTERLOCK_EMBEDDINGS_URL` (required with it)")
    embeddings_api_key: SecretStr | None = Field(None, description="API key for `INTERLOCK_EMBEDDINGS_URL`")
    embeddings_dim: int | None = Field(None, ge=1, description="embedding dimensions requested from the provider")
    reranker: str = Field("", description="`mmr` reranks by maximal marginal relevance; unset: fusion order")
    cross_encoder_dir: Path | None = Field(None, description="directory of an ONNX cross-encoder to rerank with")

    # -- command line and supervision -------------------------------------------------------------------------
    debug: bool = Field(False, description="CLI failures print their traceback instead of one line with a hint")
    supervisor_pid: int | None = Field(
        None, description="set by Interlock on the MCP servers it supervises: the parent process they exit with")

    # -- evaluation -------------------------------------------------------------------------------------------
    bipia_dir: Path | None = Field(None, description="BIPIA data for the guardrails benchmark (`python -m interlock.evals.guardrails.run`)")

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: Any) -> Any:
        # `INTERLOCK_HOME=` (empty) means unset, as `os.environ.get(...) or default` did before.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != "" or k in _EMPTY_IS_A_VALUE}
        return data

    @field_validator("webhook_allow_hosts", "dev_scopes", "cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        return _comma_list(value)

    # -- derived values ---------------------------------------------------------------------------------------
    def data_dir(self) -> Path:
        """The data directory, resolved against the working directory and created."""
        path = self.home.resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir() / 'interlock.db'}"

    def mcp_url(self, system: str) -> str | None:
        """The `INTERLOCK_MCP_<SYSTEM>_URL` override of one sample system, if set."""
        return getattr(self, f"mcp_{system}_url", None)


def variable(field: str) -> str:
    return PREFIX + field.upper()


@lru_cache(maxsize=16)
def _parse(environment: tuple[tuple[str, str], ...]) -> Settings:
    return Settings()  # reads os.environ, whose INTERLOCK_* part is `environment`


_PREFIX_BYTES = PREFIX.encode()


def _interlock_environment() -> tuple[tuple[str, str], ...]:
    """The `INTERLOCK_*` part of the environment (any case). It is read on every call, so a change made at run
    time (a test, an embedding application) is seen; POSIX keeps the environment as bytes, so matching on them
    skips decoding every other variable (the scan ran several times per run on the server's hot path)."""
    data = getattr(os.environ, "_data", None)
    if not isinstance(data, dict) or os.name != "posix":
        return tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(PREFIX)))
    decode = os.fsdecode
    return tuple(sorted(
        (decode(k), decode(v)) for k, v in data.items() if k[: len(_PREFIX_BYTES)].upper() == _PREFIX_BYTES
    ))


def get_settings() -> Settings:
    """The current settings: parsed once per distinct `INTERLOCK_*` environment (raises ValidationError)."""
    return _parse(_interlock_environment())


# -- the helpers every process shares ---------------------------------------------------------------------------
def home() -> Path:
    """The data directory: `$INTERLOCK_HOME`, else `./.interlock` under the working directory."""
    return get_settings().data_dir()


def database_url() -> str:
    """`$INTERLOCK_DATABASE_URL` (postgresql://...) or the embedded SQLite file."""
    return get_settings().effective_database_url()


def redis_url() -> str | None:
    return get_settings().redis_url


def is_postgres(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://"))


def sqlite_path(url: str) -> str:
    """The file path inside a `sqlite:///...` URL."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    return url[len("sqlite:///") :]


# -- printing without leaking -----------------------------------------------------------------------------------
_SECRET_QUERY_KEYS = ("password", "token", "secret", "key", "sig", "signature", "auth")


def mask_url(url: str) -> str:
    """A URL safe to print: the password in its userinfo and secret-looking query values replaced by ****."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, MASK if any(s in k.lower() for s in _SECRET_QUERY_KEYS) else v) for k, v in pairs],
                              safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return MASK  # unparseable: print nothing of it


def masked(settings: Settings) -> dict[str, str | None]:
    """Every variable with its effective value as text, secrets masked."""
    out: dict[str, str | None] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            text = None
        elif isinstance(value, SecretStr):
            text = MASK
        elif isinstance(value, list):
            text = ",".join(value)
        elif isinstance(value, bool):
            text = "1" if value else "0"
        else:
            text = str(value)
            if "://" in text:
                text = mask_url(text)
        out[variable(name)] = text
    return out
