"""Trace records and the store contract: a store appends records as a run goes and reads them back."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RegistryEvent", "RunRecord", "RunStatus", "RunTrace", "StepKind", "StepRecord", "Store", "new_id"]

RunStatus = Literal["running", "ok", "error", "interrupted"]
StepKind = Literal["decision", "call", "model_call", "aggregate", "error"]


_ids = random.Random()
"""The process's own generator of ids, seeded from the OS: not the ``random`` module's shared one, which a user's
``random.seed`` would make repeat ids."""
os.register_at_fork(after_in_child=_ids.seed)  # a forked child must not draw the ids its parent draws


def new_id() -> str:
    """A fresh id: 128 random bits as 32 hex digits. Drawn in memory rather than with ``uuid4``, whose system call
    per id makes each of a run's agent threads wait to take the GIL back."""
    return f"{_ids.getrandbits(128):032x}"


def _now() -> datetime:
    return datetime.now(UTC)


class RunRecord(BaseModel):
    """One run: a query answered (or not) in a session."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_id)
    session_id: str
    query: str
    router: str
    """Router name; its configuration is in ``meta["router"]``."""
    status: RunStatus = "running"
    answer: str | None = None
    error: dict[str, Any] | None = None
    registry_version: int = 0
    started_at: datetime = Field(default_factory=_now)
    finished_at: datetime | None = None
    replay_of: str | None = None
    """The original run, for replays."""
    replay_mode: Literal["exact", "counterfactual"] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    """Total USD, or ``None`` when any call had an unknown price."""
    latency_ms: float = 0.0
    meta: dict[str, Any] = Field(default_factory=dict)
    """Routing policy, budget, aggregator and router configuration, history length."""


class StepRecord(BaseModel):
    """One thing that happened in a run: a decision, an agent call, a model call, the aggregation, an error."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_id)
    run_id: str
    kind: StepKind
    parent_id: str | None = None
    """The step this one belongs to: an agent call's decision, a model call's agent call or decision."""
    round: int = 0
    agent_id: str | None = None
    model_id: str | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    """What went in: the query and sub-query, or the messages and options of a model call."""
    response: dict[str, Any] = Field(default_factory=dict)
    """What came out: the decision, the answer, the model's text."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    error: dict[str, Any] | None = None
    created_at: datetime = Field(default_factory=_now)
    seq: int | None = None
    """Order within the run, set by the store on append."""


class RegistryEvent(BaseModel):
    """One change to the registry; the registry at version v is every event up to v, folded."""

    model_config = ConfigDict(extra="forbid")

    version: int
    kind: Literal["agent", "model"]
    card_id: str
    card: dict[str, Any] | None
    """The card as added or updated, or ``None`` when it was removed."""
    at: datetime = Field(default_factory=_now)


class RunTrace(BaseModel):
    """A run with its steps in the order they were appended."""

    run: RunRecord
    steps: list[StepRecord]

    def children(self, parent_id: str | None) -> list[StepRecord]:
        """The steps under ``parent_id`` (``None``: the top level), in the order they were stored."""
        return [step for step in self.steps if step.parent_id == parent_id]

    def tree(self) -> list[dict[str, Any]]:
        """The run as a normalised tree (no ids, times or latencies), for tests and display.

        Each node is ``{"kind", "agent", "model", "round", "children"}`` plus ``"answer"``/``"error"`` and, for
        decisions, ``"decision"`` (its kind and dispatched agents)."""

        def node(step: StepRecord) -> dict[str, Any]:
            out: dict[str, Any] = {"kind": step.kind, "round": step.round}
            if step.agent_id:
                out["agent"] = step.agent_id
            if step.model_id:
                out["model"] = step.model_id
            if step.kind == "decision":
                decision = step.response.get("decision", {})
                out["decision"] = decision.get("kind")
                out["calls"] = [call["agent_id"] for call in decision.get("calls", [])]
            if step.kind in ("call", "aggregate") and "answer" in step.response:
                out["answer"] = step.response["answer"]
            if step.error:
                out["error"] = step.error.get("type")
            kids = [node(child) for child in self.children(step.id)]
            if kids:
                # parallel calls finish in any order: sort siblings so the tree is deterministic
                out["children"] = sorted(kids, key=lambda n: (n["kind"], n.get("agent", ""), n.get("model", "")))
            return out

        return [node(step) for step in self.children(None)]


@runtime_checkable
class Store(Protocol):
    """Where runs, steps and the registry are kept. Written as a run goes, so a crash loses nothing done."""

    def start_run(self, run: RunRecord) -> None:
        """Store a new run (status ``running``); `DuplicateIdError` when its id is taken."""
        ...

    def append_step(self, step: StepRecord) -> StepRecord:
        """Append one step; returns it with ``seq`` set."""
        ...

    def finish_run(self, run: RunRecord) -> None:
        """Store the run's final status, answer, error and totals."""
        ...

    def get_run(self, run_id: str) -> RunTrace:
        """The run and its steps; `NotFoundError` when there is no such run."""
        ...

    def list_runs(
        self,
        *,
        session_id: str | None = None,
        status: RunStatus | None = None,
        router: str | None = None,
        id_prefix: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs, newest first; each filter given narrows them (``id_prefix``: ids that start with it)."""
        ...

    def mark_interrupted(self) -> int:
        """Mark runs left ``running`` by a process that died as ``interrupted``; returns how many."""
        ...

    def append_registry_events(self, events: Sequence[RegistryEvent]) -> None:
        """Append registry changes, all or none (one transaction). Versions are unique: a version already taken
        (another process changed the registry meanwhile) raises `DuplicateIdError` with kind
        ``"registry version"`` and stores none of ``events``."""
        ...

    def registry_events(self, *, after_version: int = 0, up_to_version: int | None = None) -> list[RegistryEvent]:
        """Registry events in version order: those after ``after_version``, up to ``up_to_version`` inclusive."""
        ...
