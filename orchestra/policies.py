"""Typed, frozen policies: retries, fallbacks, budgets and routing options, instead of loose keyword arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from tenacity import RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from orchestra._typed import CardId, TypedErrorModel
from orchestra.errors import PolicyError

__all__ = ["Budget", "FallbackPolicy", "RetryPolicy", "RoutingPolicy"]


class _Policy(BaseModel, metaclass=TypedErrorModel):
    # Numbers are strict (every numeric field has strict=True): a flag or a string is not a count, a limit or a
    # price (True would become 1, "1" would pass), while an int is still a float. allow_inf_nan=False: nan
    # compares false with every bound.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @classmethod
    def model_validate(cls, obj: Any, **options: Any) -> Self:
        """The policy from a dict (a config file's); any problem is a `PolicyError` naming the field."""
        try:
            return super().model_validate(obj, **options)
        except ValidationError as exc:
            raise cls._typed_error(exc) from None

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **options: Any) -> Self:
        """The policy from JSON text; any problem is a `PolicyError` naming the field."""
        try:
            return super().model_validate_json(json_data, **options)
        except ValidationError as exc:
            raise cls._typed_error(exc) from None

    @classmethod
    def _typed_error(cls, exc: ValidationError) -> PolicyError:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        where = f"{cls.__name__}.{field}" if field else cls.__name__  # a check across fields names none
        return PolicyError(f"{where}: {first['msg']} (got {first.get('input')!r})")


class RetryPolicy(_Policy):
    """Retries with exponential backoff and jitter, each attempt within ``timeout_s``. Two uses:

    - the app's, for every model call (``Orchestra(retry=...)``): on timeouts, 429 and 5xx only; applied by the
      OpenAI-compatible client Orchestra builds for a card (and the embedded local model); a custom
      ``model_factory`` receives it and applies it as it sees fit (the test doubles do not retry);
    - an agent's (``AgentCard.retry``), for that agent's calls: a flaky tool or endpoint tried again when it
      raises, runs past ``timeout_s``, or its model call fails for good."""

    max_attempts: int = Field(default=3, ge=1, le=20, strict=True)
    """Attempts in all, the first included."""
    initial_backoff_s: float = Field(default=0.5, ge=0, strict=True)
    max_backoff_s: float = Field(default=8.0, ge=0, strict=True)
    jitter_s: float = Field(default=0.25, ge=0, strict=True)
    timeout_s: float = Field(default=60.0, gt=0, strict=True)
    """Per-attempt timeout. A model call's attempt past it fails (and is retried); an agent's is stopped as at the
    run's ``max_seconds`` (an async agent cancelled, a sync one left running in its thread) and retried."""

    @model_validator(mode="after")
    def _backoff_grows_to_its_cap(self) -> RetryPolicy:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(f"max_backoff_s ({self.max_backoff_s}) is below initial_backoff_s ({self.initial_backoff_s})")
        return self


class FallbackPolicy(_Policy):
    """Models tried in order when a model's call still fails after its retries."""

    models: tuple[CardId, ...] = ()
    """Model card ids, tried in this order after the primary."""

    @field_validator("models")
    @classmethod
    def _each_model_once(cls, models: tuple[str, ...]) -> tuple[str, ...]:
        # a model tried twice would only fail twice
        for number, model in enumerate(models):
            if model in models[:number]:
                raise ValueError(f"model {model!r} is given twice")
        return models


class Budget(_Policy):
    """Limits of one run, checked between steps: before each router decision, each dispatch (calls) and each model
    call, a fallback model's included (cost, tokens, time). Exceeding one stops the run with `BudgetExceeded`, which
    is recorded. Agent calls are also stopped when ``max_seconds`` runs out under way (a hung tool no longer holds
    the run); other steps already under way are not interrupted: a router's or an aggregator's model call runs to
    its end or its `RetryPolicy`'s timeouts, and model calls started together (parallel agents) can take a run past
    a cost or token limit, by what those calls cost, before the next model call stops it (`max_parallel_calls=1`
    bounds that to one call; a run whose last calls went past a limit and makes no model call after them, under
    `PassThrough` say, ends ok with what it cost)."""

    max_rounds: int = Field(default=4, ge=1, le=100, strict=True)
    """Router decisions at most (multi-round routers are asked again after each round of calls)."""
    max_cost_usd: float | None = Field(default=None, ge=0, strict=True)
    """Stop once this much is spent on model calls: no model call starts after the spend has passed it (calls of
    unknown cost count as 0 here and are flagged: `max_tokens` bounds those)."""
    max_tokens: int | None = Field(default=None, ge=1, strict=True)
    """Stop once the run has used this many tokens, prompt and completion, over all its model calls and the usage
    tools report: no model call starts after the total has passed it. Bounds models without a price (a local
    model), which `max_cost_usd` cannot."""
    max_seconds: float | None = Field(default=None, gt=0, strict=True)
    """Wall time of the whole run, checked before each decision and model call, and a deadline for every agent call
    under way: at the limit the call is recorded as stopped and the run stops. An async agent is cancelled; a sync
    one cannot be stopped in Python, so it is left to finish in its thread, and what it does after the deadline
    (its model calls) is neither recorded nor counted (a model call it had under way is recorded as stopped, of
    unknown cost)."""
    max_calls: int = Field(default=32, ge=1, strict=True)
    """Agent calls at most, over all rounds."""
    max_parallel_calls: int | None = Field(default=None, ge=1, strict=True)
    """Agent calls under way at once at most (LangGraph's ``max_concurrency``): a dispatch to more agents runs the
    rest as earlier ones finish, e.g. to stay under a provider's rate limit. ``None``: a dispatch's calls all at once.
    A sync attempt stopped at its card's ``timeout_s`` frees its slot though its thread, and the request it was
    making, go on: the provider may then see more requests at once than this."""


class RoutingPolicy(_Policy):
    """Options every router receives in its state; each router reads those it understands."""

    cost_weight: float = Field(default=0.0, ge=0.0, le=1.0, strict=True)
    """w in [0, 1]: utility = (1 - w) * predicted quality - w * normalised predicted cost."""
    max_agents: int = Field(default=3, ge=1, le=50, strict=True)
    """k: at most this many agents per decision."""
    min_score: float | None = Field(default=None, strict=True)
    """Below this score a candidate is not chosen; when none clears it the query is out of scope."""


def retrying(
    policy: RetryPolicy, retryable: Callable[[BaseException], bool], wait_hint: Callable[[BaseException], float | None] | None = None,
) -> dict[str, Any]:
    """tenacity's arguments for ``policy``, retrying the errors ``retryable`` accepts and raising the last one as it
    was: one reading of a `RetryPolicy`, for model calls (the client's) and agent calls (the runtime's, per card).

    ``wait_hint``: how long the failure itself asks to wait (a 429's ``Retry-After``), or ``None``. The wait before
    the next attempt is then at least that, still at most ``max_backoff_s``."""
    backoff = wait_exponential_jitter(multiplier=policy.initial_backoff_s, max=policy.max_backoff_s, jitter=policy.jitter_s)

    def wait(state: RetryCallState) -> float:
        waited = backoff(state)
        failure = state.outcome.exception() if state.outcome is not None and state.outcome.failed else None
        hinted = wait_hint(failure) if wait_hint is not None and failure is not None else None
        return waited if hinted is None else min(max(waited, hinted), policy.max_backoff_s)

    return {"stop": stop_after_attempt(policy.max_attempts), "wait": wait, "retry": retry_if_exception(retryable), "reraise": True}
