"""Replay a stored run: exactly (recorded outputs served back, zero model calls, same decisions and answer), or
counterfactually with another router (a new run on the same query and history, linked to the original). Or resume
a run that failed: what succeeded served from the record, what failed or never ran made live."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, Collection, Generator, Iterator
from contextlib import aclosing, contextmanager
from typing import TYPE_CHECKING, Any

from orchestra.aggregate import Aggregator, PassThrough, build_aggregator
from orchestra.errors import ConfigurationError, DecisionError, DuplicateIdError, ReplayMismatch, UnknownRouterError
from orchestra.policies import Budget, RoutingPolicy
from orchestra.routing import BaseRouter, Dispatch, Finish, Router, RouterState, Turn, available_routers, load_router
from orchestra.trace import _DECISION, RunRecord, RunTrace, StepRecord

if TYPE_CHECKING:
    from orchestra.runtime import Orchestra, RunEvent, RunResult, Workflow

__all__ = ["RecordedRouter", "aresume", "astream_resume", "replay", "resume", "stream_resume"]


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
    if trace.run.router not in available_routers():
        # a recorded name is looked up, never imported: `load_router` also takes `package.module:Class`, and a stored
        # run whose router reads `subprocess:run` would run a command when it is replayed or resumed
        return RecordedRouter(trace, f"UnknownRouterError: {UnknownRouterError(trace.run.router, available_routers())}")
    try:
        return load_router(trace.run.router, **spec)
    except (ConfigurationError, TypeError) as exc:
        return RecordedRouter(trace, f"{type(exc).__name__}: {exc}")


def _stored_run(app: Orchestra, run_id: str) -> RunTrace:
    """Run ``run_id`` as stored, once a run that a dead process of this host left ``running`` is marked
    ``interrupted`` (what opening the store does): a server or UI that stays up would otherwise see such a run as
    running for ever, and refuse to replay or resume it. `NotFoundError` names an unknown id."""
    trace = app.store.get_run(run_id)
    if trace.run.status == "running" and app.store.mark_interrupted():
        trace = app.store.get_run(run_id)
    return trace


def _aggregator_for(run: RunRecord, given: Aggregator | None, router: Router, needed: bool, how: str) -> Aggregator | None:
    """What aggregates ``run`` again under ``router``: ``given``, else the shipped aggregator its record names. One
    of Orchestra's own that is not given is a `ConfigurationError` where the run again ``needed`` it (saying to pass
    it to ``how``), else `PassThrough`. A multi-round ``router`` answers itself: nothing is rebuilt for it, and an
    aggregator given is passed on, for the `Workflow` to refuse."""
    if getattr(router, "multi_round", False):
        return given
    recorded = run.meta.get("aggregator") or {}  # None: the run's router was multi-round, and answered itself
    aggregator = given or build_aggregator(recorded)
    if aggregator is not None:
        return aggregator
    if needed:
        raise ConfigurationError(
            f"run {run.id} was aggregated by {recorded.get('name', 'an aggregator')!r}, which is not one Orchestra ships: "
            f"pass it as {how}(..., aggregator=...)"
        )
    return PassThrough()


def replay(
    app: Orchestra,
    run_id: str,
    *,
    router: Router | str | None = None,
    aggregator: Aggregator | None = None,
    routing: RoutingPolicy | None = None,
    reuse_calls: bool = False,
    **router_options: Any,
) -> RunResult:
    """Replay run ``run_id``. Without ``router``: exactly, with the recorded outputs of every call, asserting the
    same decisions and answer (a divergence is a recorded `ReplayMismatch`). With ``router``: counterfactually,
    a new live run of the same query and history, linked to the original, against the registry as it is now: every
    agent the router dispatches is called again, live (paid again, its side effects done again), whether the
    original called it or not.

    ``reuse_calls`` (counterfactual only): a call the replay makes as the original made it (the same agent asked
    the same query, with the same model, in the same round) and that succeeded there is served from the record
    instead, with its answer, tokens and cost (the agent as it was then; nothing called or paid again), so the
    replay differs from the original only where its router does, and its totals are what the original's calls
    cost plus what it adds. The decisions, the other calls and the aggregation run live; each of those steps says
    ``response["reused"]``: ``"served"`` or ``"live"``.

    ``routing`` replays counterfactually under another routing policy (another cost weight w, another k): with
    ``router``, or else with the original router rebuilt from its record ("what would this query have cost at
    w = 0.3?"). An exact replay keeps the recorded policy, so a policy alone makes the replay counterfactual.

    The shipped aggregators are rebuilt from the record; a run made with an aggregator of your own needs it
    given as ``aggregator`` (`ConfigurationError` otherwise, rather than a replay that cannot match)."""
    from orchestra.runtime import Workflow, _Recording, _Reuse  # LangGraph loads with the first replay, not with the package

    if routing is not None and not isinstance(routing, RoutingPolicy):
        raise ConfigurationError(f"routing must be a RoutingPolicy, got {type(routing).__name__}")
    if not isinstance(reuse_calls, bool):
        raise ConfigurationError(f"reuse_calls must be True or False, got {type(reuse_calls).__name__} {reuse_calls!r:.60}")
    if reuse_calls and router is None and routing is None:
        raise ConfigurationError("reuse_calls is for a counterfactual replay (router= or routing= given): an exact replay serves every call already")
    if router is None and router_options:
        # an exact replay rebuilds the original's router from its record: options given here went nowhere
        raise ConfigurationError(
            f"router options {', '.join(map(repr, sorted(router_options)))} are for a counterfactual replay: give router= too "
            "(an exact replay rebuilds the original router with its recorded options)"
        )
    trace = _stored_run(app, run_id)
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
    budget = run.budget()
    policy = RoutingPolicy(**run.meta["policy"]) if "policy" in run.meta else None
    history = [Turn(**turn) for turn in run.meta.get("history", [])]
    # an aggregator that took part must be the same: another would not match
    aggregated = any(step.kind == "aggregate" for step in trace.steps)
    if router is None:
        rebuilt = _rebuild_router(trace)
        workflow = Workflow(app, rebuilt, aggregator=_aggregator_for(run, aggregator, rebuilt, aggregated, "replay"), budget=budget, routing=policy)
        return workflow._run(run.query, run.session_id, None, history=history, recording=_Recording(trace), replay_of=run.id, replay_mode="exact")
    if isinstance(router, str):  # built first: whether it takes an aggregator depends on the router
        router, router_options = load_router(router, **router_options), {}
    aggregator = _aggregator_for(run, aggregator, router, aggregated, "replay")
    workflow = app.workflow(router, aggregator=aggregator, budget=budget, routing=routing or policy, **router_options)
    return workflow._run(run.query, run.session_id, None, history=history, recording=_Reuse(trace) if reuse_calls else None,
                         replay_of=run.id, replay_mode="counterfactual")


def _failed_steps(trace: RunTrace) -> list[StepRecord]:
    """The steps of a run that a resume would do again: decisions, agent calls and aggregations that failed, agents a
    decision named that the registry did not hold, and an aggregation that listed the answers because its model
    failed (`Refine`'s ``refine_failed``)."""
    # an error step with an agent: a dispatched agent the registry did not hold
    return [step for step in trace.steps
            if (step.kind in ("decision", "call", "aggregate") and step.failed) or (step.kind == "error" and step.agent_id)]


def resume_id(run_id: str) -> str:
    """The id of run ``run_id``'s resume: one per run, so that two resumes started at once (two processes, two
    clicks) cannot both be stored: the second is refused by the store as a taken id."""
    return hashlib.sha256(f"{run_id}:resume".encode()).hexdigest()[:32]


def _resumed_already(original: str, resume: str, how: str) -> ConfigurationError:
    """The refusal of a second resume of run ``original``, which ``resume`` resumed (``how``: its status, or how
    it was found): resumed twice, what the first resume did live would be done again, a payment approved twice."""
    return ConfigurationError(
        f"run {original} was already resumed, as run {resume} ({how}): resume that run instead, if a step of it failed "
        f"(orchestra resume {resume})"
    )


def _rejected(trace: RunTrace, reject: Collection[str]) -> frozenset[str]:
    """The agents a resume leaves unapproved, checked: ``ConfigurationError`` naming the first that is not one the
    run waited for approval of (or any, when the run did not wait for approval)."""
    if isinstance(reject, str):
        raise ConfigurationError(f"reject must be a list of agent ids, got the string {reject!r}")
    rejected = frozenset(reject)
    if not rejected:
        return rejected
    run = trace.run
    error = run.error or {}
    if error.get("type") != "ApprovalRequired":
        raise ConfigurationError(f"reject: run {run.id} did not wait for approval ({run.status}); there is no call to leave unapproved")
    waiting = error.get("agent_ids")  # the agents it waited for, as stored
    if not waiting:  # a run stored before they were: every agent of the decision that waited, the run's last
        paused = max((step for step in trace.steps if step.kind == "decision"), key=lambda step: step.round)
        waiting = [call.get("agent_id") for call in (paused.response.get("decision") or {}).get("calls", [])]
    for agent_id in sorted(rejected):
        if agent_id not in waiting:
            raise ConfigurationError(f"reject: {agent_id!r} is not an agent run {run.id} waited for approval of "
                                     f"(it waited for {', '.join(map(repr, waiting))})")
    return rejected


def _resumed(
    app: Orchestra, run_id: str, budget: Budget | None, aggregator: Aggregator | None, reject: Collection[str] = ()
) -> tuple[Workflow, tuple[str, str, None], dict[str, Any]]:
    """The workflow a resume of ``run_id`` runs on, and what its run starts with (the query, session and routing
    `Workflow._run` and its twins take first, then the rest); refuses (before anything is stored) a run there is
    nothing to resume of, or that cannot be resumed."""
    from orchestra.runtime import Workflow, _Resume  # LangGraph loads with the first resume, not with the package

    if budget is not None and not isinstance(budget, Budget):
        raise ConfigurationError(f"budget must be a Budget, got {type(budget).__name__} {budget!r:.60}")
    trace = _stored_run(app, run_id)  # NotFoundError names an unknown id
    run = trace.run
    if run.status == "running":
        raise ConfigurationError(
            f"run {run.id} is still running (or its process on another host ended without finishing it): resume it once "
            "it has stopped"
        )
    if run.replay_mode == "exact":
        # it reproduces its original, failure and pause included: resumed, it would do live what resuming the original
        # does, and the original would stay resumable (a payment approved through each, paid twice)
        raise ConfigurationError(
            f"run {run.id} is an exact replay of run {run.replay_of}: resume that run instead (orchestra resume {run.replay_of})"
        )
    failed = _failed_steps(trace)
    if run.status == "ok" and not failed:
        raise ConfigurationError(
            f"run {run.id} ended ok and no step of it failed: there is nothing to resume; replay it to see it again "
            f"(orchestra replay {run.id})"
        )
    earlier = app.store.list_runs(id_prefix=resume_id(run.id), limit=1)
    if earlier:
        raise _resumed_already(run.id, earlier[0].id, earlier[0].status)
    rejected = _rejected(trace, reject)
    router = _rebuild_router(trace)
    if isinstance(router, RecordedRouter) and (router.multi_round or 0 not in router._decisions):
        # its recorded decisions can be served, but a decision made anew needs the router itself: a multi-round one
        # decides again after any call that runs again, and a single-round one whose decision failed must decide
        raise ConfigurationError(
            f"run {run.id}'s router {run.router!r} cannot be rebuilt ({router.reason}), and resuming the run needs a decision "
            "made anew: replay it with a router given instead (replay(app, run_id, router=...))"
        )
    # a single-round run ends in its aggregation, made live when it cannot be served
    aggregator = _aggregator_for(run, aggregator, router, True, "resume")
    if budget is None:
        budget = run.budget()
    policy = RoutingPolicy(**run.meta["policy"]) if "policy" in run.meta else None
    history = [Turn(**turn) for turn in run.meta.get("history", [])]
    workflow = Workflow(app, router, aggregator=aggregator, budget=budget, routing=policy)
    what: dict[str, Any] = {
        "run": run.id,
        "status": run.status,
        "error": run.error,
        # what the original did not do, by step: a resumed run's own steps say "resumed": "served" or "live"
        "failed": [
            {"kind": step.kind, "round": step.round, "agent_id": step.agent_id, "error": (step.error or {}).get("type")
             or ((step.response.get("meta") or {}).get("refine_failed") or {}).get("type")}
            for step in failed
        ],
    }
    if rejected:
        what["not_approved"] = sorted(rejected)
    start = {"history": history, "recording": _Resume(trace, rejected), "replay_of": run.id, "replay_mode": "resume", "meta": {"resumed": what},
             "run_id": resume_id(run.id)}
    return workflow, (run.query, run.session_id, None), start


@contextmanager
def _one_resume(start: dict[str, Any]) -> Iterator[None]:
    """A resume of a run that another resume, started at the same moment, has stored first: refused as resumed."""
    original, taken = start["replay_of"], start["run_id"]
    try:
        yield
    except DuplicateIdError as exc:
        if (exc.kind, exc.id) != ("run", taken):
            raise
        raise _resumed_already(original, taken, "started at the same moment, elsewhere") from None


def resume(app: Orchestra, run_id: str, *, budget: Budget | None = None, aggregator: Aggregator | None = None,
           reject: Collection[str] = ()) -> RunResult:
    """Resume run ``run_id``, which failed or was stopped: a new run, linked to it (``replay_of``, ``replay_mode
    "resume"``), on the same query, history, router (rebuilt as an exact replay rebuilds it), aggregator and
    routing policy, in which what succeeded is served from the record (no model call, nothing paid again) and what
    failed or never ran is done live, against the registry as it is now: the fix the user made (a model card
    re-onboarded, an agent added) takes effect. The original run is never modified.

    - A recorded decision is copied, with its router's model calls, while every step before it was served; the
      router is not asked again (a router that calls a model would have to make the same calls, byte for byte,
      at another time and with another budget left). The first decision that failed or was never made is made
      live, and so is every decision after it or after a call that ran live (its observations differ). A router
      that cannot be rebuilt can be resumed only when no decision must be made anew (`ConfigurationError`).
    - A call is served with its model calls (as an exact replay serves it) when the decision that made it was
      served and it succeeded; a call that failed (an error, a time or budget stop, the run stopped) or never
      ran is made live, as is every call of a live decision.
    - The aggregation is served only when it succeeded (a `Refine` that listed the answers because its model
      failed did not) and every answer it merged was served; otherwise it runs live on the observations.

    ``reject``: of the agents a run paused for approval waited for (`ApprovalRequired`), those the user does not
    approve. Their calls are not made; each stays in the trace as the agent declining ("Not run: the user did not
    approve..."), and the approved calls run and are aggregated as usual.

    ``budget`` replaces the original's budget (a run stopped by `BudgetExceeded` is resumed with a larger one).
    The served steps' recorded tokens, cost and calls count against it as they count in the resumed run's totals,
    which are therefore the whole run's: ``max_cost_usd`` must leave room beyond what the original spent on what
    is served. ``max_seconds`` is this run's own wall time (served steps take none). What the original spent on
    steps that failed stays on the original's record only.

    Each decision, call and aggregate step of the resumed run says ``response["resumed"]``: ``"served"`` or
    ``"live"``; its ``meta["resumed"]`` names the original run, how it ended and the steps that had failed.

    Refused with `ConfigurationError`, nothing stored: an unknown run id (`NotFoundError`), a run still running, a
    run that ended ok with no failed step (nothing to resume: replay it), a run resumed already (resume its resume,
    if that one failed: resumed twice, what the first resume did live would be done again), a run of an
    aggregator of your own without ``aggregator`` given (as `replay`)."""
    workflow, first, start = _resumed(app, run_id, budget, aggregator, reject)
    with _one_resume(start):
        return workflow._run(*first, **start)


def stream_resume(
    app: Orchestra, run_id: str, *, budget: Budget | None = None, aggregator: Aggregator | None = None, reject: Collection[str] = ()
) -> Generator[RunEvent, None, None]:
    """`resume`, yielding the resumed run's events as `Workflow.stream` yields a run's (a served step's as it is
    copied, a live one's as it happens, the answer as it is written); the last is ``run_finished`` with the
    `RunResult`. Refused as `resume` refuses, when called, before any event."""
    workflow, first, start = _resumed(app, run_id, budget, aggregator, reject)

    def events() -> Generator[RunEvent, None, None]:
        with _one_resume(start):
            yield from workflow._stream(*first, **start)

    return events()


def astream_resume(
    app: Orchestra, run_id: str, *, budget: Budget | None = None, aggregator: Aggregator | None = None, reject: Collection[str] = ()
) -> AsyncGenerator[RunEvent, None]:
    """Async twin of `stream_resume`."""
    workflow, first, start = _resumed(app, run_id, budget, aggregator, reject)

    async def events() -> AsyncGenerator[RunEvent, None]:
        # closed with this generator: `async for` alone left the run's own generator to the event loop's garbage
        # collection, so after aclose() the resumed run was still "running" and its models writing (the sync twin's
        # ``yield from`` closes it at once)
        with _one_resume(start):
            async with aclosing(workflow._astream(*first, **start)) as stream:
                async for event in stream:
                    yield event

    return events()


async def aresume(app: Orchestra, run_id: str, *, budget: Budget | None = None, aggregator: Aggregator | None = None,
                  reject: Collection[str] = ()) -> RunResult:
    """Async twin of `resume`: the live steps call agents and models through their async interfaces."""
    workflow, first, start = _resumed(app, run_id, budget, aggregator, reject)
    with _one_resume(start):
        return await workflow._arun(*first, **start)
