"""Pydantic models for the guardrail policy files: tools, pii, injection, scope and limits.

Every model forbids unknown keys, so a typo in an operator-edited file stops the start instead of
silently falling back to a default.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
    return pattern


# --- tools.yaml --------------------------------------------------------------------------------

Risk = Literal["read", "write", "destructive"]
Approval = Literal["never", "when_tainted", "always"]
CompareOp = Literal["<", "<=", ">", ">=", "==", "!="]
ProvenanceKind = Literal["email", "url", "account", "phone", "text"]
ProvenanceSource = Literal["trusted_input", "allowlist"]


class ArgConstraint(_Strict):
    """`arg <op> value`, `arg <op> args.other` or `arg <op> facts.name` (facts come from trusted tools)."""

    arg: str
    op: CompareOp
    value: float | None = None
    ref: str | None = Field(default=None, pattern=r"^(args|facts)\.[A-Za-z0-9_.]+$")

    @model_validator(mode="after")
    def _one_operand(self) -> ArgConstraint:
        if (self.value is None) == (self.ref is None):
            raise ValueError("set exactly one of 'value' or 'ref'")
        return self


class ProvenanceRule(_Strict):
    """Where an argument's value may come from; text seen only in untrusted content never counts."""

    arg: str
    kind: ProvenanceKind
    sources: list[ProvenanceSource] = Field(default_factory=lambda: ["trusted_input", "allowlist"], min_length=1)


class ToolRule(_Strict):
    risk: Risk = "read"
    approval: Approval | None = None  # None: derived from risk (see ToolsPolicy.default_approval)
    approval_ttl_s: int | None = Field(default=None, gt=0, le=30 * 86400)  # None: ToolsPolicy.approval_ttl_s
    # An MCP client's user may confirm their own call through MCP elicitation instead of waiting for an operator
    # (only where the client supports elicitation; the graph's runs always ask an operator).
    self_confirm: bool = False
    constraints: list[ArgConstraint] = Field(default_factory=list)
    provenance: list[ProvenanceRule] = Field(default_factory=list)
    description: str = ""
    # What its results are (policies/provenance.py): `data` (records: never instructions, yet not the user's
    # choice, so a write steered by them needs a decision) or `text` (untrusted free text). Unset: `text` (fail
    # closed). `text_fields` are the free-text fields inside a data result (ticket bodies, notes).
    output: Literal["data", "text"] = "text"
    text_fields: list[str] = Field(default_factory=list)
    # Arguments the model writes in its own words (None: subject, body, reason, ... see provenance.FREE_TEXT_NAMES).
    free_text: list[str] | None = None
    # Arguments of this write into which a pseudonym of a third party's value (read from a tool, never typed by
    # the requesting user) is put back as the real value; everywhere else it stays a pseudonym. Reads: always.
    restore_untrusted: list[str] = Field(default_factory=list)
    # Personal fields of its results, by field name or dotted path (`name`, `customers.email`, `billing.address`)
    # -> the PII entity (pii.yaml). The whole value becomes a pseudonym whether or not a detector would have found
    # it (a name the NER model misses); nested lists and records included, detection still runs on the rest.
    pii_fields: dict[str, str] = Field(default_factory=dict)
    # Who may decide its approval: `operator` (approvals:decide in the tenant; for a destructive tool never the
    # requester) or `confirm` (the requesting user may also confirm their own call; never for destructive tools).
    decision: Literal["operator", "confirm"] = "operator"

    @field_validator("pii_fields")
    @classmethod
    def _pii_fields(cls, fields: dict[str, str]) -> dict[str, str]:
        for path, entity in fields.items():
            if not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", path):
                raise ValueError(f"pii_fields: {path!r} is not a field name or dotted path")
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", entity):
                raise ValueError(f"pii_fields.{path}: {entity!r} is not a PII entity name (like PERSON)")
        return fields

    @model_validator(mode="after")
    def _separation_of_duties(self) -> ToolRule:
        if self.decision == "confirm" and self.risk == "destructive":
            raise ValueError("a destructive tool cannot be confirmed by its requester (decision: confirm)")
        return self


class Allowlists(_Strict):
    email_domains: list[str] = Field(default_factory=list)
    emails: list[str] = Field(default_factory=list)
    url_hosts: list[str] = Field(default_factory=list)  # also the output egress allowlist
    accounts: list[str] = Field(default_factory=list)
    phones: list[str] = Field(default_factory=list)

    @field_validator("email_domains", "url_hosts", "emails")
    @classmethod
    def _lower(cls, values: list[str]) -> list[str]:
        return [v.strip().lower() for v in values]


class ToolsPolicy(_Strict):
    version: int = Field(ge=1)
    unknown_tool: Literal["deny", "require_approval"] = "deny"
    default_approval: dict[Risk, Approval] = Field(
        default_factory=lambda: {"read": "never", "write": "when_tainted", "destructive": "always"}
    )
    # An approval not decided (or, once approved, not used) within this many seconds expires and the waiting
    # run ends with outcome "expired".
    approval_ttl_s: int = Field(default=24 * 3600, gt=0, le=30 * 86400)
    allowlists: Allowlists = Field(default_factory=Allowlists)
    tools: dict[str, ToolRule] = Field(default_factory=dict)


# --- pii.yaml ----------------------------------------------------------------------------------


class CustomPattern(_Strict):
    entity: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    regex: str
    score: float = Field(default=0.8, gt=0, le=1)

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str) -> str:
        return _compiles(value)


class PiiDirection(_Strict):
    entities: list[str] = Field(min_length=1)
    threshold: float = Field(default=0.4, ge=0, le=1)


class PiiTenant(_Strict):
    store_raw_input: bool | None = None  # None: the policy's default


class PiiPolicy(_Strict):
    version: int = Field(ge=1)
    # Whether the user's raw message is persisted (the run's `input` in the runs list and the checkpoints written
    # before the input guard). false: the server seals it (encrypted with the vault key) at submission and the
    # input guard replaces it by its pseudonymised form, so storage holds no raw input.
    store_raw_input: bool = False
    tenants: dict[str, PiiTenant] = Field(default_factory=dict)
    engine: Literal["pattern", "spacy"] = "pattern"
    spacy_model: str = "en_core_web_sm"
    language: str = "en"
    input: PiiDirection
    output: PiiDirection
    # Short labels for pseudonyms: EMAIL_ADDRESS -> <EMAIL_1>.
    labels: dict[str, str] = Field(default_factory=dict)
    custom_patterns: list[CustomPattern] = Field(default_factory=list)
    allow_values: list[str] = Field(default_factory=list)  # never redacted (support addresses etc.)
    fuzzy_threshold: float = Field(default=90.0, ge=50, le=100)
    min_fuzzy_length: int = Field(default=6, ge=3)

    def stores_raw_input(self, tenant: str) -> bool:
        override = self.tenants.get(tenant)
        return self.store_raw_input if override is None or override.store_raw_input is None else override.store_raw_input


# --- injection.yaml ----------------------------------------------------------------------------

InjectionAction = Literal["allow", "flag", "quarantine", "drop", "block"]
Kind = Literal["user", "retrieved", "tool_output"]


class InjectionRule(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    pattern: str
    weight: float = Field(gt=0, le=10)
    kinds: list[Kind] = Field(default_factory=lambda: ["user", "retrieved", "tool_output"])
    description: str = ""

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        return _compiles(value)


class KindPolicy(_Strict):
    threshold: float = Field(gt=0)
    action: InjectionAction
    taint: bool = True


class ModelDetectorConfig(_Strict):
    """Opt-in local model detector: `entrypoint` is `module:factory`, called with `path`."""

    enabled: bool = False
    entrypoint: str = ""
    path: str = ""
    threshold: float = Field(default=0.9, gt=0, le=1)
    timeout_s: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> ModelDetectorConfig:
        if self.enabled and (":" not in self.entrypoint or not self.path):
            raise ValueError("an enabled model detector needs entrypoint 'module:factory' and path")
        return self


class LearnedDetectorConfig(_Strict):
    """The shipped embedding classifier (policies/injection_model.py), combined with the rules.

    A text whose most suspicious window scores >= `threshold` is flagged on its own; >= `mid` adds
    `mid_weight` to the rules' score, so it flags only together with a weak rule.
    """

    enabled: bool = False
    kinds: list[Kind] = Field(default_factory=lambda: ["retrieved", "tool_output"])
    weights: str = ""  # empty: the weights shipped in the package
    threshold: float | None = Field(default=None, gt=0, le=1)  # None: the one stored with the weights
    mid: float | None = Field(default=None, gt=0, le=1)
    mid_weight: float = Field(default=1.5, ge=0, le=10)
    max_windows: int = Field(default=64, ge=1, le=1024)


class InjectionPolicy(_Strict):
    version: int = Field(ge=1)
    kinds: dict[Kind, KindPolicy]
    quarantine_style: Literal["delimit", "drop"] = "delimit"
    max_base64_segments: int = Field(default=8, ge=0)
    rules: list[InjectionRule] = Field(min_length=1)
    model_detector: ModelDetectorConfig = Field(default_factory=ModelDetectorConfig)
    learned: LearnedDetectorConfig = Field(default_factory=LearnedDetectorConfig)

    @model_validator(mode="after")
    def _all_kinds(self) -> InjectionPolicy:
        missing = {"user", "retrieved", "tool_output"} - set(self.kinds)
        if missing:
            raise ValueError(f"kinds is missing {sorted(missing)}")
        ids = [r.id for r in self.rules]
        if len(ids) != len(set(ids)):
            raise ValueError("rule ids must be unique")
        return self


# --- scope.yaml --------------------------------------------------------------------------------


class Topic(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    keywords: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, values: list[str]) -> list[str]:
        return [_compiles(v) for v in values]


class ScopePolicy(_Strict):
    version: int = Field(ge=1)
    in_scope: list[Topic] = Field(default_factory=list)
    out_of_scope: list[Topic] = Field(default_factory=list)
    refusal_message: str = "I can only help with questions about this service."
    # Checked against the system prompt by the output leakage check.
    system_prompt_leak_threshold: float = Field(default=0.5, gt=0, le=1)


# --- limits.yaml -------------------------------------------------------------------------------


class RunLimits(_Strict):
    max_steps: int = Field(default=25, ge=1)
    max_tool_calls: int = Field(default=10, ge=0)
    max_tokens_per_run: int = Field(default=50_000, ge=1)
    wall_clock_s: float = Field(default=120.0, gt=0)
    guard_timeout_s: float = Field(default=5.0, gt=0)


class TenantLimits(_Strict):
    requests_per_minute: int | None = Field(default=None, ge=0)
    tokens_per_minute: int | None = Field(default=None, ge=0)
    spend_per_day_usd: float | None = Field(default=None, ge=0)


class LimitsPolicy(_Strict):
    version: int = Field(ge=1)
    run: RunLimits = Field(default_factory=RunLimits)
    default_tenant: TenantLimits = Field(default_factory=TenantLimits)
    tenants: dict[str, TenantLimits] = Field(default_factory=dict)

    def for_tenant(self, tenant: str) -> TenantLimits:
        """Per-tenant override, field by field, on top of the default."""
        override = self.tenants.get(tenant)
        if override is None:
            return self.default_tenant
        merged = self.default_tenant.model_dump()
        merged.update(override.model_dump(exclude_unset=True))
        return TenantLimits(**merged)
