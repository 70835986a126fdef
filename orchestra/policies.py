"""Typed, frozen policies: retries, fallbacks, budgets and routing options, instead of loose keyword arguments."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestra.errors import PolicyError

__all__ = ["Budget", "FallbackPolicy", "RetryPolicy", "RoutingPolicy"]


class _Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # nan compares false with every bound

    def __init__(self, **data: object) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            where = f"{type(self).__name__}.{field}" if field else type(self).__name__  # a check across fields names none
            raise PolicyError(f"{where}: {first['msg']} (got {first.get('input')!r})") from None


class RetryPolicy(_Policy):
    """Retries of one model call: exponential backoff with jitter, on timeouts, 429 and 5xx only. Applied by the
    OpenAI-compatible client that Orchestra builds for a card (and the embedded local model); a custom
    ``model_factory`` receives it and applies it as it sees fit (the test doubles do not retry)."""

    max_attempts: int = Field(default=3, ge=1, le=20)
    """Attempts in all, the first included."""
    initial_backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=8.0, ge=0)
    jitter_s: float = Field(default=0.25, ge=0)
    timeout_s: float = Field(default=60.0, gt=0)
    """Per-attempt timeout."""

    @model_validator(mode="after")
    def _backoff_grows_to_its_cap(self) -> RetryPolicy:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(f"max_backoff_s ({self.max_backoff_s}) is below initial_backoff_s ({self.initial_backoff_s})")
        return self


class FallbackPolicy(_Policy):
    """Models tried in order when a model's call still fails after its retries."""

    models: tuple[str, ...] = ()
    """Model card ids, tried in this order after the primary."""


class Budget(_Policy):
    """Limits of one run, checked between steps: before each router decision, each dispatch (calls) and each model
    call (cost, time). Exceeding one stops the run with `BudgetExceeded`, which is recorded. A step already under
    way is not interrupted, so an agent that runs long, or parallel model calls started together, can go past a
    limit before it stops the run."""

    max_rounds: int = Field(default=4, ge=1, le=100, strict=True)
    """Router decisions at most (multi-round routers are asked again after each round of calls)."""
    max_cost_usd: float | None = Field(default=None, ge=0)
    """Stop once this much is spent on model calls: no model call starts after the spend has passed it (calls of
    unknown cost count as 0 here and are flagged)."""
    max_seconds: float | None = Field(default=None, gt=0)
    """Wall time of the whole run, checked before each decision and model call."""
    max_calls: int = Field(default=32, ge=1, strict=True)
    """Agent calls at most, over all rounds."""


class RoutingPolicy(_Policy):
    """Options every router receives in its state; each router reads those it understands."""

    cost_weight: float = Field(default=0.0, ge=0.0, le=1.0)
    """w in [0, 1]: utility = (1 - w) * predicted quality - w * normalised predicted cost."""
    max_agents: int = Field(default=3, ge=1, le=50)
    """k: at most this many agents per decision."""
    min_score: float | None = Field(default=None)
    """Below this score a candidate is not chosen; when none clears it the query is out of scope."""
