"""Every error Orchestra raises, in one tree.

User misconfiguration (fix your input, then retry) is kept apart from run-time failures (something went wrong
while answering; the run is recorded with the error)::

    OrchestraError
    ├── ConfigurationError              bad input from the user; nothing was changed
    │   ├── CardError                   an agent or model card with a missing or malformed field
    │   ├── DuplicateIdError            an id that the registry already holds
    │   ├── NotFoundError               an id the registry or store does not hold (``remove``, ``runs show``)
    │   ├── UnknownRouterError          a router name no entry point provides (or an import path that fails)
    │   ├── PolicyError                 a budget, retry, fallback or routing policy out of range
    │   ├── StoreError                  the store URL is wrong or the database cannot be reached
    │   ├── DataError                   a benchmark set or training file in the wrong format
    │   ├── CheckpointError             a saved router that does not fit the registry it is loaded with
    │   └── LocalRuntimeMissing         the embedded local model is not installed (says how to install it)
    └── RunError                        a failure while a run is under way; recorded on the run
        ├── ModelError                  a model call failed after retries and fallbacks
        │   ├── ModelTimeoutError       the call exceeded its timeout
        │   ├── ModelUnavailableError   connection refused, server dead, 5xx after retries
        │   └── ModelOutputError        the model answered, but not in the form required (garbage, bad JSON)
        ├── AgentError                  an agent raised while answering
        ├── UnknownAgentError           a decision named an agent the registry does not hold
        ├── DecisionError               a router returned something that is not a valid decision, or raised
        ├── BudgetExceeded              max rounds, calls, cost, tokens or wall time reached
        ├── RunCancelled                the caller stopped the run (closed the stream, Ctrl-C, task cancelled)
        │   └── ApprovalRequired        the run paused before calling agents whose cards require approval
        └── ReplayMismatch              an exact replay diverged from the recording
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "AgentError",
    "ApprovalRequired",
    "BudgetExceeded",
    "CardError",
    "CheckpointError",
    "ConfigurationError",
    "DataError",
    "DecisionError",
    "DuplicateIdError",
    "LocalRuntimeMissing",
    "ModelError",
    "ModelOutputError",
    "ModelTimeoutError",
    "ModelUnavailableError",
    "NotFoundError",
    "OrchestraError",
    "PolicyError",
    "ReplayMismatch",
    "RunCancelled",
    "RunError",
    "StoreError",
    "UnknownAgentError",
    "UnknownRouterError",
]


class OrchestraError(Exception):
    """Base of every error Orchestra raises."""

    code: str = "orchestra_error"
    """A stable machine-readable name, recorded in the store beside the message."""

    def to_record(self) -> dict[str, Any]:
        """The form in which the error is stored on a run or step."""
        return {"type": type(self).__name__, "code": self.code, "message": str(self)}

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take their own arguments (kind, id; limit, allowed, used): pickle the message and attributes
        # instead, so errors cross process pools intact.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[OrchestraError], args: tuple[Any, ...], attributes: dict[str, Any]) -> OrchestraError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(attributes)
    return error


class ConfigurationError(OrchestraError):
    """The user's input is wrong; nothing was changed."""

    code = "configuration_error"


class CardError(ConfigurationError, ValueError):
    """An agent or model card with a missing or malformed field."""

    code = "card_error"

    def __init__(self, message: str, *, field: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.field = field
        """The offending field, dotted for nested ones (``backend.model``)."""
        self.value = value


class DuplicateIdError(ConfigurationError):
    """An id that the registry already holds."""

    code = "duplicate_id"

    def __init__(self, kind: str, id: str, *, hint: str | None = None) -> None:
        super().__init__(f"{kind} id {id!r} is already registered" + (f"; {hint}" if hint else ""))
        self.kind = kind
        self.id = id


class NotFoundError(ConfigurationError, LookupError):
    """An id the registry or store does not hold (``remove``, ``runs show``)."""

    code = "not_found"

    def __init__(self, kind: str, id: str) -> None:
        super().__init__(f"no {kind} with id {id!r}")
        self.kind = kind
        self.id = id


class UnknownRouterError(ConfigurationError):
    """A router name no entry point provides, or a ``package.module:Class`` that cannot be imported."""

    code = "unknown_router"

    def __init__(self, name: str, available: list[str], *, reason: str | None = None) -> None:
        listed = f"available: {', '.join(sorted(available)) or 'none'}"
        # an import path (package.module:Class) that failed to import: why, then the names to choose from
        super().__init__(f"unknown router {name!r}: {reason}; {listed}" if reason else f"unknown router {name!r}; {listed}")
        self.name = name
        self.available = available


class PolicyError(ConfigurationError, ValueError):
    """A budget, retry, fallback or routing policy out of range."""

    code = "policy_error"


class StoreError(ConfigurationError):
    """The store URL is wrong or the database cannot be reached."""

    code = "store_error"


class DataError(ConfigurationError, ValueError):
    """A benchmark set or training file in the wrong format."""

    code = "data_error"


class CheckpointError(ConfigurationError):
    """A saved router that does not fit the registry it is loaded with."""

    code = "checkpoint_error"


class LocalRuntimeMissing(ConfigurationError):
    """The embedded local model is not installed (says how to install it)."""

    code = "local_runtime_missing"


class RunError(OrchestraError):
    """A failure while a run is under way. The run is recorded with it."""

    code = "run_error"


class ModelError(RunError):
    """A model call failed after retries and fallbacks."""

    code = "model_error"

    def __init__(
        self,
        message: str,
        *,
        model_id: str | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost_usd: float | None = None,
    ) -> None:
        super().__init__(message)
        self.model_id = model_id
        self.prompt_tokens = prompt_tokens
        """What the failed call was billed, when a response came back (an answer refused for its form was still
        paid for); 0 when none came back."""
        self.completion_tokens = completion_tokens
        """As ``prompt_tokens``, for the completion."""
        self.cost_usd = cost_usd
        """USD the failed call cost, from the card's prices; ``None`` when no response came back or a price is
        unknown."""

    def to_record(self) -> dict[str, Any]:
        # what was billed is kept only when something was: most failures (refused, timed out) cost nothing
        record = super().to_record()
        billed = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "cost_usd": self.cost_usd}
        return record | {name: value for name, value in billed.items() if value}


class ModelTimeoutError(ModelError):
    """The call exceeded its timeout."""

    code = "model_timeout"


class ModelUnavailableError(ModelError):
    """Connection refused, server dead, 5xx after retries."""

    code = "model_unavailable"


class ModelOutputError(ModelError):
    """The model answered, but not in the form required (garbage, bad JSON)."""

    code = "model_output"


class AgentError(RunError):
    """An agent raised while answering."""

    code = "agent_error"

    def __init__(self, message: str, *, agent_id: str | None = None) -> None:
        super().__init__(message)
        self.agent_id = agent_id


class UnknownAgentError(RunError, LookupError):
    """A decision named an agent the registry does not hold."""

    code = "unknown_agent"

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"unknown agent {agent_id!r}: the registry holds no agent with that id")
        self.agent_id = agent_id


class DecisionError(RunError):
    """A router returned something that is not a valid decision, or raised."""

    code = "decision_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = dict(details or {})
        """What the router knew when it gave up (Router-R1: its format violations, its turns, whether the answer
        was forced), stored with the error on the run."""

    def to_record(self) -> dict[str, Any]:
        record = super().to_record()
        details = getattr(self, "details", None)
        if details:
            # stored as JSON: what cannot be written as JSON is kept as its text rather than failing the record
            record["details"] = json.loads(json.dumps(details, default=str))
        return record


class BudgetExceeded(RunError):
    """Max rounds, calls, cost, tokens or wall time reached."""

    code = "budget_exceeded"

    def __init__(self, limit: str, allowed: float, used: float, *, spent: bool = True) -> None:
        # rounds and calls are checked before they start: the budget would be exceeded, nothing was spent on them
        amount = f"used {used:g}" if spent else f"{used:g} needed"
        super().__init__(f"budget exceeded: {limit} allowed {allowed:g}, {amount}")
        self.limit = limit
        """Which budget ran out: ``max_rounds``, ``max_calls``, ``max_cost_usd``, ``max_tokens`` or ``max_seconds``."""
        self.allowed = allowed
        self.used = used
        self.spent = spent

    def to_record(self) -> dict[str, Any]:
        # kept, so that an exact replay stops with the same error where the original stopped (a time limit does not
        # come again in a replay that runs faster)
        return super().to_record() | {"limit": self.limit, "allowed": self.allowed, "used": self.used, "spent": self.spent}


class RunCancelled(RunError):
    """The caller stopped the run (closed the stream, Ctrl-C, task cancelled)."""

    code = "cancelled"


class ApprovalRequired(RunCancelled):
    """The run paused before a dispatch to agents whose cards say ``requires_approval``; its decision is recorded.
    Resuming the run (`orchestra.resume`, ``orchestra resume``, the UI's Resume) approves that decision: its calls
    are made (``reject=`` leaves some of them unapproved: those agents are not called); not resuming it rejects it."""

    code = "approval_required"

    def __init__(self, message: str, *, agent_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.agent_ids = agent_ids
        """The agents awaiting approval."""

    def to_record(self) -> dict[str, Any]:
        # stored, so that a resume can tell which calls it may leave unapproved (``reject``)
        return super().to_record() | {"agent_ids": list(self.agent_ids)}


class ReplayMismatch(RunError):
    """An exact replay diverged from the recording."""

    code = "replay_mismatch"
