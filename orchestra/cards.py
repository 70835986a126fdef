"""Agent and model cards: what the registry knows about each agent and model, and what routers read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestra._typed import CardId, TypedErrorModel
from orchestra.errors import CardError
from orchestra.policies import RetryPolicy

__all__ = ["AgentCard", "ModelCard", "load_cards", "parse_cards"]


def _http_url(value: str | None) -> str | None:
    if value is not None:
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("must be an http:// or https:// URL such as http://127.0.0.1:8080/v1")
    return value


class _Card(BaseModel, metaclass=TypedErrorModel):
    # allow_inf_nan=False: an infinite price would be stored as null, silently becoming "unknown"
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)

    @classmethod
    def parse(cls, data: dict[str, Any] | str | bytes) -> Self:
        """Validate a card from a dict or JSON text; any problem is a `CardError` naming the field."""
        try:
            if isinstance(data, (str, bytes)):
                return cls.model_validate_json(data)
            return cls.model_validate(data)
        except ValidationError as exc:
            raise cls._typed_error(exc) from None

    @classmethod
    def _typed_error(cls, exc: ValidationError) -> CardError:
        errors = exc.errors()
        first = errors[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        value = first.get("input")
        where = f"field {field!r}" if field else "card"
        # the others too, briefly: a misspelt field is both a missing one and an unknown one
        others = "; ".join(f"field {'.'.join(str(p) for p in e['loc'])!r}: {e['msg']}" for e in errors[1:4])
        also = f"; also {others}" if others else ""
        return CardError(f"{cls.__name__}: {where}: {first['msg']} (got {value!r:.80}){also}", field=field, value=value)

    @field_validator("description", check_fields=False)
    @classmethod
    def _description_has_words(cls, value: str) -> str:
        # routers read descriptions: a blank one would make the card unroutable, so it is refused here
        if not value.strip():
            raise ValueError("description must not be blank")
        return value

    def with_changes(self, **changes: Any) -> Self:
        """A validated copy with some fields changed (cards are frozen)."""
        return type(self).parse({**self.model_dump(), **changes})


class AgentCard(_Card):
    """One agent: who it is, what it is good at, and what backs it."""

    id: CardId
    """Stable id used in decisions and traces (``calculator``, ``travel:book_flight``)."""
    name: str = ""
    """Human-readable name; defaults to the id."""
    description: str = Field(min_length=1, max_length=8000)
    """What the agent does, in prose. Routers read this: it is how a new agent joins routing."""
    skills: tuple[str, ...] = ()
    """Short skill tags (``arithmetic``, ``dates``)."""
    examples: tuple[str, ...] = ()
    """Example queries the agent should receive; routers that learn from examples use them."""
    backend: Literal["model", "function", "endpoint"] = "model"
    """What answers: an LLM (``model``), a Python callable (``function``) or a remote HTTP agent (``endpoint``)."""
    model: str | None = None
    """For ``backend="model"``: the model card id that backs it (a model router may override it per query)."""
    system_prompt: str = ""
    """For ``backend="model"``: the instructions the model receives before the query."""
    function: str | None = None
    """For ``backend="function"``: import path ``package.module:callable`` of ``fn(query: str) -> str``."""
    endpoint: str | None = None
    """For ``backend="endpoint"``: URL of an OpenAI-compatible chat endpoint serving this agent."""
    requires_approval: bool = False
    """A human approves each dispatch to this agent before it is called (a tool with side effects: payments,
    e-mail): the run pauses after the decision with `ApprovalRequired`, status ``interrupted``, and resuming it
    approves (LangGraph's ``interrupt_before``, across processes: the decision waits in the trace store)."""
    retry: RetryPolicy | None = None
    """Retries of this agent's calls, for a flaky tool or endpoint: a failed attempt (the agent raised, or a model
    call of its still failed after the app's own retries and fallbacks) is tried again with backoff, up to
    ``max_attempts`` in all, and each attempt is cut at ``timeout_s``. Not retried: a bad card or configuration, the
    run's budget or deadline, a cancelled run. ``None``: one attempt, with no time limit but the run's."""

    _endpoint_is_http = field_validator("endpoint")(_http_url)

    @model_validator(mode="after")
    def _backend_is_complete(self) -> Self:
        if not self.name:
            object.__setattr__(self, "name", self.id)
        if self.backend == "function" and not self.function:
            raise ValueError("backend 'function' needs field 'function' (package.module:callable)")
        if self.backend == "function" and self.function and ":" not in self.function:
            raise ValueError(f"field 'function' must look like package.module:callable, got {self.function!r}")
        if self.backend == "endpoint" and not self.endpoint:
            raise ValueError("backend 'endpoint' needs field 'endpoint' (a URL)")
        return self

    def routing_text(self) -> str:
        """The text routers embed or show for this agent: name, description, skills."""
        parts = [self.name if self.name != self.id else self.id, self.description]
        if self.skills:
            parts.append("Skills: " + ", ".join(self.skills))
        return ". ".join(part.rstrip(". ") for part in parts if part)


class ModelCard(_Card):
    """One model behind an OpenAI-compatible endpoint, with what it costs."""

    id: CardId
    """Stable id used in decisions and traces."""
    model: str = ""
    """Model name sent to the endpoint; defaults to the id."""
    base_url: str | None = None
    """OpenAI-compatible base URL (``http://127.0.0.1:8080/v1``); ``None`` means the OpenAI API."""
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    """Name of the environment variable holding the API key. The key itself is never stored."""
    description: str = Field(min_length=1, max_length=8000)
    """Size, strengths, price class, in prose. Model routers embed it: it is how a new model becomes routable."""
    input_price_per_mtok: float | None = Field(default=None, ge=0)
    """USD per million prompt tokens; ``None`` when unknown (cost is then reported as unknown, never 0)."""
    output_price_per_mtok: float | None = Field(default=None, ge=0)
    """USD per million completion tokens; ``None`` when unknown."""
    context_window: int | None = Field(default=None, gt=0)
    typical_latency_ms: float | None = Field(default=None, ge=0)
    supports_json_schema: bool = False
    """Whether the server honours ``response_format`` JSON schemas (llama.cpp, vLLM do): constrained decoding."""
    local: bool = False
    """Served by Orchestra's embedded llama.cpp server, started on first use."""
    gguf_path: str | None = None
    """For ``local`` models: the GGUF file the embedded server loads."""

    _base_url_is_http = field_validator("base_url")(_http_url)

    @model_validator(mode="after")
    def _defaults(self) -> Self:
        if not self.model:
            object.__setattr__(self, "model", self.id)
        return self

    @property
    def priced(self) -> bool:
        return self.input_price_per_mtok is not None and self.output_price_per_mtok is not None

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for one call, or ``None`` when a price is unknown (never 0 for unknown)."""
        if not self.priced:
            return None
        assert self.input_price_per_mtok is not None and self.output_price_per_mtok is not None
        return (prompt_tokens * self.input_price_per_mtok + completion_tokens * self.output_price_per_mtok) / 1e6

    def routing_text(self) -> str:
        return f"{self.id}. {self.description}"


_CardT = TypeVar("_CardT", AgentCard, ModelCard)


def load_cards(path: str | Path, kind: type[_CardT]) -> list[_CardT]:
    """Cards from a YAML or JSON file (JSON lines when it ends in ``.jsonl``), as `parse_cards` reads them."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CardError(f"cannot read card file {str(path)!r}: {exc.strerror}", field=None, value=str(path)) from None
    return parse_cards(text, kind, source=f"card file {str(path)!r}", json_lines=path.suffix == ".jsonl")


def parse_cards(text: str, kind: type[_CardT], *, source: str = "card text", json_lines: bool = False) -> list[_CardT]:
    """Cards from YAML or JSON text holding one card or a list of cards, each validated, with no id twice.

    The first problem raises `CardError`; for a list, the message names the card by its position. ``source``
    says where the text came from, for messages."""
    try:
        if json_lines:
            items: Any = [json.loads(line) for line in text.split("\n") if line.strip()]
        else:
            items = yaml.safe_load(text)  # YAML is a superset of JSON
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise CardError(f"{source} is not valid YAML/JSON: {exc}") from None
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
        raise CardError(f"{source} must hold a card (a mapping) or a list of cards")
    cards: list[_CardT] = []
    for number, item in enumerate(items, 1):
        try:
            cards.append(kind.parse(item))
        except CardError as exc:
            where = f"{source}, card {number} of {len(items)}" if len(items) > 1 else source
            raise CardError(f"{where}: {exc}", field=exc.field, value=exc.value) from None
    seen: set[str] = set()
    for card in cards:
        if card.id in seen:
            raise CardError(f"{source} holds id {card.id!r} twice", field="id", value=card.id)
        seen.add(card.id)
    return cards
