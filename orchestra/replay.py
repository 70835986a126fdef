"""Replay a stored run: exactly (recorded outputs served back, zero model calls, same decisions and answer), or
counterfactually with another router (a new run on the same query and history, linked to the original)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from orchestra.aggregate import Aggregator, PassThrough, build_aggregator
from orchestra.errors import ConfigurationError, DecisionError, ReplayMismatch
from orchestra.policies import Budget, RoutingPolicy
from orchestra.routing import BaseRouter, Decision, Dispatch, Finish, Router, RouterState, Turn, load_router
from orchestra.trace import RunTrace

if TYPE_CHECKING:
    from orchestra.runtime import Orchestra, RunResult

__all__ = ["RecordedRouter", "replay"]

_DECISION = TypeAdapter(Decision)


class RecordedRouter(BaseRouter):
    """Serves a run's recorded decisions in order: exact replay of a router that cannot be rebuilt by name. Its
    description (on the replay's run) says so, and why, since its decisions are served rather than checked."""

    name = "recorded"

    def __init__(self, trace: RunTrace, reason: str = "") -> None:
        self.name = trace.run.router  # type: ignore[misc]
        self.reason = reason
        """Why the router was not rebuilt."""
        decided = [step for step in trace.steps if step.kind == "decision"]
        self._decisions = {step.round: _DECISION.validate_python(step.response["decision"]) for step in decided if not step.error}
        self._failures = {step.round: step.error for step in decided if step.error}
        """Rounds whose decision failed in the original run, and how."""
        # recorded since session 15; before, guessed (a multi-round run stopped after one decision looked single)
        recorded = trace.run.meta.get("multi_round")
        self.multi_round = bool(recorded) if recorded is not None else len(decided) > 1 or bool(trace.run.meta.get("router", {}).get("multi_round"))  # type: ignore[misc]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "recorded": True, "why": self.reason}

    def decide(self, state: RouterState) -> Dispatch | Finish:
        decision = self._decisions.get(state.round)
        if decision is None:
            failure = self._failures.get(state.round)
            if failure:  # served like the decisions: the original router failed here
                raise DecisionError(f"the original decision failed ({failure.get('type')}: {failure.get('message')})")
            raise ReplayMismatch(f"the original run made no decision in round {state.round}")
        return decision


def _rebuild_router(trace: RunTrace) -> Router:
    # Routers describe themselves as {"name": ..., **constructor options}: rebuild one the same way when its
    # name is registered; a router that cannot be rebuilt has its recorded decisions served instead. So does
    # one that is trained ("trained" in its description) and names no checkpoint file: rebuilt from its options
    # alone it would be untrained, not the router that decided.
    spec: dict[str, Any] = dict(trace.run.meta.get("router", {}))
    spec.pop("name", None)
    if spec.pop("recorded", None):  # the run replayed was itself served from a record
        return RecordedRouter(trace, str(spec.get("why", "")))
    if spec.pop("trained", None) and not spec.get("checkpoint"):
        return RecordedRouter(trace, "it was trained, and its description names no checkpoint file to rebuild it from "
                                     "(trained in its process, or loaded by a call that does not record its file)")
    try:
        return load_router(trace.run.router, **spec)
    except (ConfigurationError, TypeError) as exc:
        return RecordedRouter(trace, f"{type(exc).__name__}: {exc}")


def replay(
    app: Orchestra,
    run_id: str,
    *,
    router: Router | str | None = None,
    aggregator: Aggregator | None = None,
    routing: RoutingPolicy | None = None,
    **router_options: Any,
) -> RunResult:
    """Replay run ``run_id``. Without ``router``: exactly, with the recorded outputs of every call, asserting the
    same decisions and answer (a divergence is a recorded `ReplayMismatch`). With ``router``: counterfactually,
    a new live run of the same query and history, linked to the original.

    ``routing`` replays counterfactually under another routing policy (another cost weight w, another k): with
    ``router``, or else with the original router rebuilt from its record ("what would this query have cost at
    w = 0.3?"). An exact replay keeps the recorded policy, so a policy alone makes the replay counterfactual.

    The shipped aggregators are rebuilt from the record; a run made with an aggregator of your own needs it
    given as ``aggregator`` (`ConfigurationError` otherwise, rather than a replay that cannot match)."""
    from orchestra.runtime import Workflow, _Recording  # LangGraph loads with the first replay, not with the package

    if routing is not None and not isinstance(routing, RoutingPolicy):
        raise ConfigurationError(f"routing must be a RoutingPolicy, got {type(routing).__name__}")
    if router is None and router_options:
        # an exact replay rebuilds the original's router from its record: options given here went nowhere
        raise ConfigurationError(
            f"router options {', '.join(map(repr, sorted(router_options)))} are for a counterfactual replay: give router= too "
            "(an exact replay rebuilds the original router with its recorded options)"
        )
    trace = app.store.get_run(run_id)
    run = trace.run
    if router is None and routing is not None:
        router = _rebuild_router(trace)
        if isinstance(router, RecordedRouter):  # recorded decisions answer the recorded policy, not another one
            raise ConfigurationError(
                f"run {run.id}'s router cannot be rebuilt ({router.reason}): replay it under another policy with router= given"
            )
    if router is None and run.status == "running":
        # its record is not complete yet: replayed, the first step it had not stored read as the router diverging
        # (a ReplayMismatch, stored as a failed replay)
        raise ConfigurationError(
            f"run {run.id} is still running (or its process on another host ended without finishing it): an exact replay "
            "needs its whole record; replay it once it has finished, or with another router (router=...)"
        )
    recorded = run.meta.get("aggregator", {})
    aggregator = aggregator or build_aggregator(recorded)
    if aggregator is None:
        if any(step.kind == "aggregate" for step in trace.steps):  # it took part: another would not match
            raise ConfigurationError(
                f"run {run.id} was aggregated by {recorded.get('name', 'an aggregator')!r}, which is not one Orchestra ships: "
                "pass it as replay(..., aggregator=...)"
            )
        aggregator = PassThrough()
    budget = Budget(**run.meta["budget"]) if "budget" in run.meta else None
    policy = RoutingPolicy(**run.meta["policy"]) if "policy" in run.meta else None
    history = [Turn(**turn) for turn in run.meta.get("history", [])]
    if router is None:
        workflow = Workflow(app, _rebuild_router(trace), aggregator=aggregator, budget=budget, routing=policy)
        return workflow._run(run.query, run.session_id, None, history=history, recording=_Recording(trace), replay_of=run.id, replay_mode="exact")
    workflow = app.workflow(router, aggregator=aggregator, budget=budget, routing=routing or policy, **router_options)
    return workflow._run(run.query, run.session_id, None, history=history, replay_of=run.id, replay_mode="counterfactual")
