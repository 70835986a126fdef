"""Trace records and the store contract: a store appends records as a run goes and reads them back."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from orchestra.policies import Budget
from orchestra.routing import Decision, Dispatch, Finish

_DECISION: TypeAdapter[Dispatch | Finish] = TypeAdapter(Decision)

__all__ = ["RegistryEvent", "RunRecord", "RunStatus", "RunTrace", "StepKind", "StepRecord", "Store", "new_id", "summarize_runs"]

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
    replay_mode: Literal["exact", "counterfactual", "resume"] | None = None
    """``resume``: a failed run resumed (`orchestra.resume`), its successful steps served from the original."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    """Total USD, or ``None`` when any call had an unknown price."""
    latency_ms: float = 0.0
    meta: dict[str, Any] = Field(default_factory=dict)
    """Routing policy, budget, aggregator and router configuration, history length."""

    def budget(self, **changes: Any) -> Budget:
        """The budget the run ran on (a limit the record predates at its default) with the limits in ``changes``
        replaced, the others as recorded: what a resume runs on (``orchestra resume --budget``, the server's
        ``{"budget": ...}``, the Runs page). `PolicyError` names a wrong key or value."""
        return Budget.model_validate({**self.meta.get("budget", {}), **changes})

    def status_label(self) -> str:
        """The status, and what the run replays or resumes, as the CLI and the UI show it: ``ok``,
        ``ok (exact replay)``, ``error (counterfactual replay)``, ``ok (resume of 3f9a0c12)``."""
        if self.replay_mode == "resume":
            return f"{self.status} (resume of {(self.replay_of or '')[:8]})"
        return self.status + (f" ({self.replay_mode} replay)" if self.replay_mode else "")


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

    @property
    def failed(self) -> bool:
        """The step failed: it has an error, or it is an aggregation that listed the answers because its model failed
        (`Refine`'s ``refine_failed``), which a resume does again and the UI shows as failed."""
        return bool(self.error) or (self.kind == "aggregate" and bool((self.response.get("meta") or {}).get("refine_failed")))


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

    def resumed_counts(self) -> tuple[int, int]:
        """How many of a resumed run's decisions, calls and aggregations were served from the record, and how many
        ran live (0, 0 for any other run)."""
        marks = [step.response.get("resumed") for step in self.steps if step.kind in ("decision", "call", "aggregate")]
        return marks.count("served"), marks.count("live")

    def decisions(self) -> list[Dispatch | Finish]:
        """The run's decisions as the router made them, in order (typed, as `RunResult.decisions` has them): the
        chosen agents or models with their queries, the rationale, every candidate's score and the router's meta.
        A decision step that failed (the router raised) has none and is left out."""
        return [_DECISION.validate_python(step.response["decision"]) for step in self.steps
                if step.kind == "decision" and not step.error and "decision" in step.response]

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
        replays: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs, newest first; each filter given narrows them (``id_prefix``: ids that start with it). ``replays``:
        ``False`` keeps the runs that replay or resume no other run (the traffic itself, each query once), ``True``
        only the replays and resumes (``replay_of`` set). ``since`` and ``until`` bound the start time: at or after
        ``since``, before ``until`` (a naive time is UTC, as the store keeps and lists times); a value that is no
        ``datetime`` is a `ConfigurationError`."""
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


def summarize_runs(
    store: Store, *, router: str | None = None, session_id: str | None = None, status: RunStatus | None = None,
    replays: bool | None = None, since: datetime | None = None, until: datetime | None = None, limit: int = 1000,
) -> dict[str, Any]:
    """What the newest ``limit`` runs (filtered as `Store.list_runs` filters) did, per router and cost weight: how
    many runs and with what status, their total and mean cost, tokens and latency, and the share of agent calls
    each agent and each model took. What a RouteLLM user checks after calibrating w: did the strong model get the
    share it was meant to, at what cost. Replays count as runs of their own (an exact replay under its original's
    router) unless ``replays=False`` leaves them out."""
    # the filters added since the Store protocol first had list_runs are passed only when given: a user's store
    # written before them still summarises
    if replays is None and since is None and until is None:
        runs = store.list_runs(router=router, session_id=session_id, status=status, limit=limit)
    else:
        runs = store.list_runs(router=router, session_id=session_id, status=status, replays=replays, since=since, until=until, limit=limit)
    groups: dict[tuple[str, float | None], dict[str, Any]] = {}
    for run in runs:
        weight = run.meta.get("policy", {}).get("cost_weight")
        group = groups.setdefault((run.router, weight), {
            "router": run.router, "cost_weight": weight, "runs": 0, "status": {}, "cost_usd": 0.0, "runs_of_unknown_cost": 0,
            "prompt_tokens": 0, "completion_tokens": 0, "latency_ms": [], "agents": {}, "models": {},
        })
        group["runs"] += 1
        group["status"][run.status] = group["status"].get(run.status, 0) + 1
        if run.cost_usd is None:
            group["runs_of_unknown_cost"] += 1
        else:
            group["cost_usd"] += run.cost_usd
        group["prompt_tokens"] += run.prompt_tokens
        group["completion_tokens"] += run.completion_tokens
        group["latency_ms"].append(run.latency_ms)
        for step in store.get_run(run.id).steps:
            if step.kind == "call":
                group["agents"][step.agent_id or "?"] = group["agents"].get(step.agent_id or "?", 0) + 1
                if step.model_id:
                    group["models"][step.model_id] = group["models"].get(step.model_id, 0) + 1
    summary = []
    for group in groups.values():
        latencies = sorted(group.pop("latency_ms"))
        known = group["runs"] - group["runs_of_unknown_cost"]
        calls = sum(group["agents"].values())
        group["mean_cost_usd"] = group["cost_usd"] / known if known else None
        group["latency_p50_ms"] = latencies[len(latencies) // 2]
        group["calls"] = calls
        for key in ("agents", "models"):  # shares of the agent calls, largest first
            group[key] = {name: round(count / calls, 4) for name, count in sorted(group[key].items(), key=lambda kv: (-kv[1], kv[0]))}
        summary.append(group)
    summary.sort(key=lambda g: (g["router"], -1.0 if g["cost_weight"] is None else g["cost_weight"]))
    return {"runs": len(runs), "groups": summary}
