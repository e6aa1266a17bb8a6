"""Pydantic models for the graph policy files: models.yaml, intents.yaml, playbooks.yaml.

The files are operator-edited configuration, so every model forbids unknown keys: a typo fails
loudly at load time instead of silently falling back to a default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from interlock.policies import POLICY_DIR
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from interlock.kernel.settings import get_settings

Tier = Literal["router", "planner", "answer"]
Route = Literal["rag", "planner", "escalate", "refuse", "smalltalk"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- models.yaml -------------------------------------------------------------------------------


class ProviderConfig(_Strict):
    """One chat-model endpoint. Secrets are never stored here, only the name of the env var."""

    kind: Literal["openai", "anthropic", "scripted"]
    model: str = ""
    base_url: str | None = None
    base_url_env: str | None = None
    api_key_env: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    temperature: float = 0.0
    # USD per million tokens, for cost attribution.
    input_cost_per_mtok: float = Field(default=0.0, ge=0)
    output_cost_per_mtok: float = Field(default=0.0, ge=0)
    # For kind=scripted: a JSON file with the replies (see graphs.models.ScriptedChatModel).
    script: str | None = None


class BreakerConfig(_Strict):
    failure_threshold: int = Field(default=3, ge=1)
    reset_after_s: float = Field(default=30.0, gt=0)


class ModelsPolicy(_Strict):
    """Providers, and per task tier the ordered failover chain of provider names."""

    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    tiers: dict[Tier, list[str]] = Field(default_factory=dict)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    # Whole-chain budget per call; when it runs out the caller falls back to the zero-key mode.
    chain_timeout_s: float = Field(default=60.0, gt=0)
    backoff_base_s: float = Field(default=0.5, ge=0)

    @model_validator(mode="after")
    def _tiers_name_known_providers(self) -> ModelsPolicy:
        for tier, chain in self.tiers.items():
            unknown = [name for name in chain if name not in self.providers]
            if unknown:
                raise ValueError(f"tier {tier!r} names unknown providers: {unknown}")
        return self


# --- intents.yaml ------------------------------------------------------------------------------


class IntentSpec(_Strict):
    route: Route
    description: str
    examples: list[str] = Field(min_length=3)


class IntentsPolicy(_Strict):
    """Labelled examples for the zero-key router, and how confident it must be."""

    # Below this probability margin (best minus runner-up) the classifier is not trusted alone: a model is
    # asked if one is configured, and an unsure knowledge-or-refusal call is settled by retrieval evidence.
    min_confidence: float = Field(default=0.35, ge=-1, le=1)
    # A message whose cosine to every intent's centroid is below `min_similarity` goes to `fallback_intent`.
    fallback_intent: str = "out_of_scope"
    min_similarity: float = Field(default=0.25, ge=-1, le=1)
    # A message classified out of scope goes to RAG instead when the tenant's documents hold a sentence at least
    # this similar to it (cosine; RAG's extractive answer quotes from 0.45), so ingesting knowledge widens what
    # the router answers. RAG still refuses when its passages do not answer the question.
    knowledge_evidence: float = Field(default=0.45, ge=0, le=1)
    # More labelled messages (a YAML file beside this one: {intent: [message, ...]}), trained on together
    # with `examples`; the evaluation measures the router on them with cross-validation.
    training_set: str | None = None
    training: dict[str, list[str]] = Field(default_factory=dict)
    intents: dict[str, IntentSpec]

    @model_validator(mode="after")
    def _fallback_known(self) -> IntentsPolicy:
        if self.fallback_intent not in self.intents:
            raise ValueError(f"fallback_intent {self.fallback_intent!r} is not a declared intent")
        unknown = sorted(set(self.training) - set(self.intents))
        if unknown:
            raise ValueError(f"the training set names undeclared intents: {unknown}")
        return self

    def labelled(self) -> list[tuple[str, str]]:
        """Every (message, intent) the classifier learns from: the examples, then the training set."""
        rows = [(text, name) for name, spec in self.intents.items() for text in spec.examples]
        return rows + [(text, name) for name, texts in self.training.items() for text in texts]


# --- playbooks.yaml ----------------------------------------------------------------------------


class SlotSpec(_Strict):
    """An argument pulled out of the user's message by a regular expression (group 1 wins)."""

    pattern: str
    # "message": searched in the user's text; "principal": the caller's own id (never the text),
    # kept only if it matches `pattern`.
    source: Literal["message", "principal"] = "message"
    required: bool = True
    default: Any = None
    transform: Literal["none", "upper", "lower", "int", "float", "cents"] = "none"
    prefix: str = ""  # prepended when missing, so "1042" and "ORD-1042" name the same order
    ask: str = ""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        re.compile(value)
        return value


class StepSpec(_Strict):
    tool: str
    # Values are templates: "{order_id}" is replaced by the slot (keeping its type when whole);
    # an argument whose slot is empty is left out.
    args: dict[str, Any] = Field(default_factory=dict)
    when: str | None = None  # run only if this slot has a value
    unless: str | None = None  # run only if this slot has no value
    reply: str | None = None  # overrides the playbook's reply when this step ran last


class PrecheckSpec(_Strict):
    """A read before the playbook's steps: when the record is already in a state that makes the steps pointless
    (cancelling a cancelled order), the reply is given from that state and nothing else runs (no approval asked)."""

    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    field: str  # a field of the tool's result
    stop_if: list[Any] = Field(min_length=1)  # values of `field` that end the playbook
    reply: str  # rendered with the slots and `result`


class PlaybookSpec(_Strict):
    description: str = ""
    slots: dict[str, SlotSpec] = Field(default_factory=dict)
    precheck: PrecheckSpec | None = None
    steps: list[StepSpec] = Field(min_length=1)
    # Rendered with the slots and `result` (the step's output); missing fields render as "?".
    # `{result.total_cents|money}` formats cents as 12.34.
    reply: str


class PlaybooksPolicy(_Strict):
    playbooks: dict[str, PlaybookSpec]


def load_yaml(name: str, directory: Path | None = None) -> dict[str, Any]:
    path = Path(directory or get_settings().policy_dir or POLICY_DIR) / name
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def load_models_policy(directory: Path | None = None) -> ModelsPolicy:
    return ModelsPolicy.model_validate(load_yaml("models.yaml", directory))


def load_intents_policy(directory: Path | None = None) -> IntentsPolicy:
    data = load_yaml("intents.yaml", directory)
    if data.get("training_set"):
        data["training"] = load_yaml(str(data["training_set"]), directory)
    return IntentsPolicy.model_validate(data)


def load_playbooks_policy(directory: Path | None = None) -> PlaybooksPolicy:
    return PlaybooksPolicy.model_validate(load_yaml("playbooks.yaml", directory))
