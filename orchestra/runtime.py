"""The workflow runtime on LangGraph: router → parallel dispatch (``Send``) → executor → router or aggregator.

An `Orchestra` holds the registry, the store and the models; ``Orchestra.workflow(router)`` compiles the
standard routed graph once. Agents and models are looked up in the registry at call time, so onboarding never
recompiles a graph. Every decision, agent call and model call is appended to the store as it happens.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import operator
import os
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, Literal, NoReturn, TypedDict, cast

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_config, get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Send
from pydantic_core import to_jsonable_python
from tenacity import AsyncRetrying, RetryCallState, Retrying

from orchestra.agent import AgentContext, AgentReply, agent_for_card
from orchestra.aggregate import Aggregated, Aggregator, Fuse, PassThrough, Refine, describe_aggregator, refined_so_far
from orchestra.cards import AgentCard, ModelCard
from orchestra.errors import (
    AgentError,
    ApprovalRequired,
    BudgetExceeded,
    ConfigurationError,
    DecisionError,
    ModelError,
    ModelOutputError,
    ModelTimeoutError,
    ModelUnavailableError,
    NotFoundError,
    OrchestraError,
    ReplayMismatch,
    RunCancelled,
    RunError,
    StoreError,
    UnknownAgentError,
)
from orchestra.model import ChatChunk, ChatModel, ChatOptions, ChatResult, Message
from orchestra.policies import Budget, FallbackPolicy, RetryPolicy, RoutingPolicy, retrying
from orchestra.registry import Registry, RegistrySnapshot
from orchestra.routing import Call, Dispatch, Finish, ModelAccess, Observation, Router, RouterState, Turn, load_router
from orchestra.trace import _DECISION, RunRecord, RunTrace, StepRecord, Store, new_id

__all__ = ["ModelFactory", "Orchestra", "RunEvent", "RunResult", "Workflow"]

logger = logging.getLogger(__name__)

ModelFactory = Callable[[ModelCard, RetryPolicy], ChatModel]
"""Builds the `ChatModel` for a card; the default speaks to any OpenAI-compatible endpoint."""

HISTORY_TURNS = 10
"""Earlier runs of a session that routers and agents see as history."""


def _default_model_factory(card: ModelCard, retry: RetryPolicy) -> ChatModel:
    from orchestra.client import model_for_card  # imported late: keeps `import orchestra` light

    return model_for_card(card, retry)


# ---------------------------------------------------------------------------------------------------------------
# results and events


@dataclass(frozen=True)
class RunEvent:
    """One thing that happened in a run, as `Workflow.stream` yields it."""

    kind: Literal["run_started", "decision", "token", "answer", "call", "aggregate", "error", "run_finished"]
    """``token`` events carry ``delta`` text of a model answer as it streams (only in streamed runs, from models
    that stream), with the ``step`` it belongs to, the call's ``purpose`` (``agent``, ``refine``, ...) and the
    ``model_id`` writing, and the ``agent_id`` of the call writing (``None`` for the router's and the aggregator's
    model calls). ``restart`` is true on the first delta of a fallback model whose failed predecessor had already
    streamed: drop the text streamed so far for that step. ``decision`` and ``call`` events carry their ``step``
    id too: the ``step`` of a call's tokens is its ``call`` event's.

    ``answer`` events carry the run's answer as it is written, in ``delta`` text: joined, starting over at one whose
    ``restart`` is true, they are ``RunResult.answer`` of a run that ends ok. The text comes as the model writing the
    answer streams it (the refining model's, or the one call's of a dispatch whose answer is passed through), and
    the rest when the run has its answer; a run whose answer no model writes as it goes (a vote, a router that
    finishes, an aggregator of your own, whatever models it calls) gets it whole, just before ``run_finished``.
    ``restart`` comes only when the answer turned out other than the text already sent (its model failed after it
    began writing)."""
    run_id: str
    data: dict[str, Any] = field(default_factory=dict)


class _AnswerStream:
    """Makes a streamed run's ``answer`` events (see `RunEvent.kind`) from its other events: the text of the model
    whose output becomes the answer, as far as the answer is sure to start with it, then at the end what is left.
    Which model that is is a guess made from the run's events; the final check against the answer keeps every
    guess honest (a wrong one costs a ``restart``, never a wrong answer)."""

    def __init__(self, workflow: "Workflow") -> None:
        aggregator = workflow.aggregator
        # Only the shipped aggregators' ways are known, so only their models' tokens are taken for the answer's. An
        # aggregator of the user's own (a subclass of a shipped one too) may make anything of what a model wrote: a
        # judge's "2" picking the second answer was sent as the answer, then taken back with a restart.
        kind = type(aggregator)
        # a lone answer reaches the user as its agent wrote it under these aggregators, so its tokens are the answer's
        self.passes_a_lone_answer = kind is PassThrough or (kind is Refine and not cast(Refine, aggregator).always)
        # their ``refine`` calls write the answer (less the prompt's cue, which `refined_so_far` holds back)
        self.refiner_writes = kind in (Refine, Fuse)
        # a multi-round router writes the answer itself, in its Finish: no model's tokens are the answer's
        self.multi_round = bool(getattr(workflow.router, "multi_round", False))
        self.running = 0
        """The dispatch's calls that have not ended yet."""
        self.answered = 0
        """Its calls that ended with an answer (neither failed nor declined)."""
        self.texts: dict[tuple[str, Any], str] = {}
        """By (purpose, step): what the refiner's, or a call's, model has written so far (the call left writing may be
        the lone answer, its earlier words included)."""
        self.source: tuple[str, Any] | None = None
        """The (purpose, step) whose words were sent as the answer's."""
        self.sent = ""
        self.off_track = False

    def after(self, event: RunEvent) -> RunEvent | None:
        """The ``answer`` event to send after ``event``, if it brought more of the answer."""
        data = event.data
        if event.kind == "decision":
            decision = data.get("decision") or {}
            dispatched = decision.get("kind") == "dispatch" and self.passes_a_lone_answer and not self.multi_round
            self.running, self.answered, self.texts = (len(decision.get("calls") or []) if dispatched else 0), 0, {}
            return None
        if event.kind == "call":
            self.running = max(0, self.running - 1)
            self.answered += not data.get("error") and not data.get("declined") and bool(data.get("answer"))
            return None
        if event.kind != "token" or self.off_track or self.multi_round:
            return None
        purpose, step = data.get("purpose"), data.get("step")
        if purpose not in ("refine", "agent") or (purpose == "agent" and not self.running) or (purpose == "refine" and not self.refiner_writes):
            return None
        source = (purpose, step)
        self.texts[source] = ("" if data.get("restart") else self.texts.get(source, "")) + str(data.get("delta", ""))
        # an agent's words are the answer's when its call is the last one running and no other call answered: if it
        # answers, its answer is passed through
        if purpose == "agent" and (self.running != 1 or self.answered):
            return None
        delta = self._more(source)
        return RunEvent("answer", event.run_id, {"delta": delta, "restart": False}) if delta else None

    def _more(self, source: tuple[str, Any]) -> str:
        """What ``source``'s text so far adds to the answer sent; ``""`` (and no more, ever) once what was sent is
        not how it goes on: another model wrote it, or this one started over (a fallback)."""
        if source != self.source:
            if self.sent:
                self.off_track = True
                return ""
            self.source = source
        written = self.texts[source]
        settled = refined_so_far(written) if source[0] == "refine" else written
        if not settled.startswith(self.sent):
            self.off_track = True
            return ""
        delta, self.sent = settled[len(self.sent):], settled
        return delta

    def finish(self, result: "RunResult") -> RunEvent | None:
        """The last ``answer`` event of a run that ended ok: the rest of the answer (all of it when nothing was
        sent), or the whole answer over again when what was sent is not how it starts."""
        if result.status != "ok" or result.answer is None:
            return None
        if not self.off_track and result.answer.startswith(self.sent):
            rest = result.answer[len(self.sent):]
            return RunEvent("answer", result.run_id, {"delta": rest, "restart": False}) if rest or not self.sent else None
        return RunEvent("answer", result.run_id, {"delta": result.answer, "restart": True})


@dataclass(frozen=True)
class RunResult:
    """The outcome of one run."""

    run_id: str
    session_id: str
    status: Literal["ok", "error", "interrupted"]
    """``interrupted`` when the caller stopped the run (`RunCancelled`)."""
    answer: str | None
    decisions: tuple[Dispatch | Finish, ...]
    observations: tuple[Observation, ...]
    error: OrchestraError | None = None
    out_of_scope: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    """Total USD, or ``None`` when any model call had an unknown price."""
    latency_ms: float = 0.0

    def raise_for_error(self) -> RunResult:
        """Raise the run's typed error, if it failed; return the result otherwise."""
        if self.error is not None:
            raise self.error
        return self


# ---------------------------------------------------------------------------------------------------------------
# per-run bookkeeping


class _Tracker:
    """Budget and totals of one run; thread-safe because calls run in parallel."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.started = time.perf_counter()
        self.lock = threading.Lock()
        self.cost_usd = 0.0
        self.cost_unknown = False
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.calls = 0
        self.cancelled = False
        """Set by `Orchestra.cancel`: what the run does next (a decision, a call, a model call or its next token)
        stops it with `RunCancelled`."""

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise RunCancelled("the run was cancelled (Orchestra.cancel)")

    def check(self, *, round: int | None = None, calls: int = 0) -> None:
        self.check_cancelled()
        if round is not None and round >= self.budget.max_rounds:
            raise BudgetExceeded("max_rounds", self.budget.max_rounds, round + 1, spent=False)
        if self.budget.max_seconds is not None and self.elapsed() > self.budget.max_seconds:
            raise self.out_of_time()
        if self.budget.max_cost_usd is not None and self.cost_usd > self.budget.max_cost_usd:
            raise BudgetExceeded("max_cost_usd", self.budget.max_cost_usd, self.cost_usd)
        if self.budget.max_tokens is not None and self.tokens > self.budget.max_tokens:
            raise BudgetExceeded("max_tokens", self.budget.max_tokens, self.tokens)
        if calls and self.calls + calls > self.budget.max_calls:
            raise BudgetExceeded("max_calls", self.budget.max_calls, self.calls + calls, spent=False)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def seconds_left(self) -> float | None:
        """Wall time left under ``max_seconds``; ``None`` without that limit."""
        return None if self.budget.max_seconds is None else self.budget.max_seconds - self.elapsed()

    def out_of_time(self) -> BudgetExceeded:
        assert self.budget.max_seconds is not None
        return BudgetExceeded("max_seconds", self.budget.max_seconds, round_(self.elapsed()))

    def add_usage(self, prompt_tokens: int, completion_tokens: int, cost_usd: float | None) -> None:
        with self.lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            if cost_usd is None:
                self.cost_unknown = True
            else:
                self.cost_usd += cost_usd

    def left(self, round: int) -> dict[str, float | None]:
        budget = self.budget
        return {
            "rounds": budget.max_rounds - round,
            "calls": budget.max_calls - self.calls,
            "cost_usd": None if budget.max_cost_usd is None else budget.max_cost_usd - self.cost_usd,
            "tokens": None if budget.max_tokens is None else budget.max_tokens - self.tokens,
            "seconds": self.seconds_left(),
        }


def _time_limit(ctx: _RunContext, attempt_timeout: float | None) -> tuple[float | None, bool]:
    """How long an agent call's attempt may take, and whether that is its own ``timeout_s`` (else the run's
    ``max_seconds``, or no limit: ``None``)."""
    left = ctx.tracker.seconds_left()
    if left is not None and left <= 0:
        raise ctx.tracker.out_of_time()
    if attempt_timeout is not None and (left is None or attempt_timeout < left):
        return attempt_timeout, True
    return left, False


def _timed_out(ctx: _RunContext, access: _RunModelAccess, limit: float, own: bool) -> OrchestraError:
    access.abandon()
    if own:  # the attempt's own limit: the agent failed (and may be retried), the run goes on
        return AgentError(f"agent {access.agent_id!r} did not answer within its retry policy's timeout_s ({limit:g} s)",
                          agent_id=access.agent_id)
    return ctx.tracker.out_of_time()


def _run_within(ctx: _RunContext, access: _RunModelAccess, work: Callable[[], Any], attempt_timeout: float | None = None) -> Any:
    """``work()`` (an agent's call), stopped at the run's ``max_seconds`` (`BudgetExceeded`) or at the attempt's
    own ``attempt_timeout`` (an `AgentError`), whichever comes first: the call is left running in its thread
    (Python cannot stop a thread) with its model access abandoned, so that what it does later is neither recorded
    nor counted. Without a time limit the call runs here, in the node's thread."""
    left, own = _time_limit(ctx, attempt_timeout)
    if left is None:
        return work()
    outcome: dict[str, Any] = {}
    done = threading.Event()
    context = contextvars.copy_context()  # LangGraph's stream writer (token events) lives in a context variable

    def run() -> None:
        try:
            outcome["value"] = context.run(work)
        except BaseException as exc:  # handed to the node's thread, which raises it as the call's own
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=f"orchestra-call-{access.agent_id}", daemon=True).start()
    if not done.wait(left):
        raise _timed_out(ctx, access, left, own)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


async def _arun_within(ctx: _RunContext, access: _RunModelAccess, work: Awaitable[Any], attempt_timeout: float | None = None) -> Any:
    """Async twin of `_run_within`: the call is cancelled at the run's ``max_seconds`` or the attempt's
    ``attempt_timeout`` (a sync agent's thread, which cannot be, is left running with its model access abandoned)."""
    try:
        left, own = _time_limit(ctx, attempt_timeout)
    except BudgetExceeded:
        if inspect.iscoroutine(work):
            work.close()
        raise
    if left is None:
        return await work
    try:
        return await asyncio.wait_for(work, left)
    except TimeoutError:
        raise _timed_out(ctx, access, left, own) from None


def _agent_retryable(exc: BaseException) -> bool:
    """An agent call's failure worth another attempt under its card's `RetryPolicy`: the agent raised, an attempt
    ran past its ``timeout_s``, or a model call failed after its own retries and fallbacks. Never a
    misconfiguration (it would fail the same way again), the run's budget or deadline, or a stopped run."""
    return isinstance(exc, Exception) and not isinstance(exc, (ConfigurationError, BudgetExceeded, RunCancelled, ReplayMismatch))


class _CallAttempts:
    """The attempts of one agent call: each has its own model access (an attempt left running past its time keeps
    an abandoned one), and the call's usage is theirs summed. Read like a `_RunModelAccess` by `_finish_call`."""

    def __init__(self, first: _RunModelAccess) -> None:
        self.accesses = [first]
        self.failures: list[dict[str, Any]] = []
        """The errors of the attempts that failed and were retried, in order (the last attempt's is the call's)."""

    def failed(self, state: RetryCallState) -> None:
        """tenacity's ``before_sleep``: an attempt failed and another follows; its error is kept for the trace."""
        first, exc = self.accesses[0], state.outcome.exception() if state.outcome else None
        error = exc if isinstance(exc, OrchestraError) else AgentError(f"{type(exc).__name__}: {exc}", agent_id=first.agent_id)
        self.failures.append(error.to_record() | {"attempt": state.attempt_number})
        logger.info("agent %s: attempt %d failed (%s); retrying", first.agent_id, state.attempt_number, type(exc).__name__)

    def access(self, attempt_number: int) -> _RunModelAccess:
        """The model access of attempt ``attempt_number`` (from 1)."""
        if attempt_number == 1:
            return self.accesses[0]
        first = self.accesses[0]
        access = first.ctx.access(first.parent_id, first.round, first.original_parent, agent_id=first.agent_id)
        access.restart_stream = True
        self.accesses.append(access)
        return access

    @property
    def calls(self) -> int:
        return sum(access.calls for access in self.accesses)

    @property
    def prompt_tokens(self) -> int:
        return sum(access.prompt_tokens for access in self.accesses)

    @property
    def completion_tokens(self) -> int:
        return sum(access.completion_tokens for access in self.accesses)

    @property
    def cost_usd(self) -> float | None:
        costs = [access.cost_usd for access in self.accesses]
        return None if None in costs else sum(costs)  # type: ignore[arg-type]


def _reported_cost(prompt_tokens: int, completion_tokens: int, cost_usd: float | None) -> float | None:
    """The cost of a call that made no model call through the run: a reply that names no cost and no tokens cost
    nothing, which is known; tokens without a cost are an unknown cost."""
    if cost_usd is None and prompt_tokens == 0 and completion_tokens == 0:
        return 0.0
    return cost_usd


def round_(value: float) -> float:
    return round(value, 3)


class _Recording:
    """What an exact replay serves: the original run's steps, matched in order."""

    resume = False
    """`_Resume` sets it: the recording serves a resumed run's successful steps, and the rest runs live."""
    mark_key = ""
    """The key under which the run's decision, call and aggregate steps say whether they were ``served`` or ``live``."""

    def __init__(self, trace: RunTrace) -> None:
        self.trace = trace
        self.decisions: dict[int, StepRecord] = {}
        self.aggregate: StepRecord | None = None
        self.calls_at: dict[tuple[int, int], StepRecord] = {}
        """Calls by round and place in their dispatch. The same agent asked the same query twice in one dispatch (a
        router sampling an agent several times) makes calls that only their place tells apart: served by call,
        the answers went to the calls in the order the original's calls finished, not to the calls that gave them."""
        self.calls: dict[tuple[int, str, str, str | None], deque[StepRecord]] = {}
        """Calls of runs recorded before the place was, by what was asked, in the order they were stored."""
        for step in trace.steps:
            if step.kind == "decision":
                self.decisions[step.round] = step
            elif step.kind == "aggregate":
                self.aggregate = step
            elif step.kind == "call" and isinstance(step.request.get("index"), int):
                self.calls_at[(step.round, step.request["index"])] = step
            elif step.kind == "call":
                key = (step.round, step.agent_id or "", step.request.get("query", ""), step.request.get("model_id"))
                self.calls.setdefault(key, deque()).append(step)
        self.model_calls: dict[str, deque[StepRecord]] = {}
        for step in trace.steps:
            if step.kind == "model_call" and step.parent_id:
                self.model_calls.setdefault(step.parent_id, deque()).append(step)
        # Where the aggregator's model calls hang. Runs stored before a failed aggregation was recorded as a step
        # have the refiner's calls under the id of that unrecorded step: the one parent that is no step.
        self.aggregate_parent: str | None = self.aggregate.id if self.aggregate else None
        if self.aggregate_parent is None:
            step_ids = {step.id for step in trace.steps}
            orphans = {parent for parent in self.model_calls if parent not in step_ids}
            self.aggregate_parent = orphans.pop() if len(orphans) == 1 else None
        self.lock = threading.Lock()

    def stopped(self, where: str) -> RunError | None:
        """The error that stopped the original run at ``where``, for the replay to stop with: `RunCancelled` when its
        caller stopped it, the recorded `BudgetExceeded` when its budget did (under the same budget the replay stops
        the same way, even at a time limit a faster replay does not reach again); ``None`` when nothing stopped it."""
        if self.trace.run.status == "interrupted":
            return RunCancelled(f"the original run was stopped here ({where})")
        error = self.trace.run.error or {}
        if error.get("type") == BudgetExceeded.__name__ and "limit" in error:
            return BudgetExceeded(error["limit"], error["allowed"], error["used"], spent=error.get("spent", True))
        return None

    def missing(self, what: str) -> RunError:
        """The error for a step the replay needs and the recording lacks: where the original run was stopped by its
        caller or its budget, the replay stops there too, the same way; elsewhere the replay has diverged."""
        return self.stopped(what) or ReplayMismatch(what)

    def decision_step(self, round: int) -> StepRecord:
        step = self.decisions.get(round)
        if step is None:
            error = self.trace.run.error
            failed = f": it failed first ({error.get('type')}: {error.get('message')})" if error else ""
            raise self.missing(f"the original run made no decision in round {round}{failed}")
        return step

    # An exact replay re-runs the router and the aggregator on served model calls (checking they decide as
    # recorded) and serves every call; `_Resume` overrides these three to copy what succeeded and run the rest.

    def served_decision(self, round: int) -> StepRecord | None:
        """The recorded decision to copy into the run instead of asking the router; ``None``: ask it."""
        return None

    def serves_call(self, round: int, call: Call, index: int) -> bool:
        """Whether the call at place ``index`` of round ``round`` is served from the record (`take_call`)."""
        return True

    def served_aggregate(self) -> StepRecord | None:
        """The recorded aggregation to copy into the run instead of running the aggregator; ``None``: run it."""
        return None

    def take_call(self, round: int, call: Call, index: int) -> StepRecord:
        """The recorded call at place ``index`` of round ``round``'s dispatch (by what was asked, for a run recorded
        before places were)."""
        with self.lock:
            step = self.calls_at.pop((round, index), None)
            if step is not None:
                asked = (step.agent_id, step.request.get("query"), step.request.get("model_id"))
                if asked != (call.agent_id, call.query, call.model_id):
                    raise ReplayMismatch(f"round {round}: call {index} went to {step.agent_id!r} in the original run, not to {call.agent_id!r} "
                                         f"with {call.query!r}")
                return step
            queue = self.calls.get((round, call.agent_id, call.query, call.model_id))
            if not queue:
                raise self.missing(f"round {round}: the original run made no call to {call.agent_id!r} with {call.query!r}")
            return queue.popleft()

    def take_model_call(self, original_parent: str, model_id: str, messages: list[Message]) -> StepRecord:
        with self.lock:
            queue = self.model_calls.get(original_parent)
            if not queue:
                raise self.missing(f"the original run made no further model call here (asked for {model_id!r})")
            step = queue.popleft()
        if not self._same_call(step, model_id, messages):
            raise ReplayMismatch(f"model call to {model_id!r} differs from the recorded call to {step.model_id!r}")
        return step

    def take_fallback_call(self, original_parent: str, model_id: str, messages: list[Message]) -> StepRecord | None:
        """The next recorded step if it is a fallback of the call to ``model_id`` that just failed, else ``None``
        (the call failed for good). A fallback is recorded with the same request under another model's id; the
        same request made again would start from ``model_id`` itself."""
        with self.lock:
            queue = self.model_calls.get(original_parent)
            if not queue or queue[0].model_id == model_id or not self._same_call(queue[0], model_id, messages):
                return None
            return queue.popleft()

    @staticmethod
    def _same_call(step: StepRecord, model_id: str, messages: list[Message]) -> bool:
        recorded = step.request.get("messages", [])
        return step.request.get("model_requested", step.model_id) == model_id and recorded == [m.model_dump() for m in messages]


class _Resume(_Recording):
    """What a resumed run serves: the original run's successful steps up to the first that must run again.

    A decision is copied from the record while every step before it was served; the first decision recorded as
    failed (or never made) is made live, and so is every decision after it, and after any call that ran live (its
    observation differs from the record, so the router's inputs do). A call is served when the decision that made
    it was, and the record holds a successful call asking the same agent the same thing; any other call runs live.
    The aggregation is copied only when every decision and call was served and it succeeded."""

    resume = True
    mark_key = "resumed"

    def __init__(self, trace: RunTrace, rejected: frozenset[str] = frozenset()) -> None:
        super().__init__(trace)
        self.rejected = rejected
        """Agents whose calls in the decision that waited for approval the user did not approve."""
        self.paused_round = max(self.decisions, default=0)
        """The round of that decision: the run's last."""
        self.live = False
        """A decision was made live: every later decision and every call it made run live too."""
        self.changed = False
        """A call ran live: the observations differ from the record, so the next decision (and the aggregation) do."""
        self._call_steps = [step for step in trace.steps if step.kind == "call"]
        self._taken: set[str] = set()
        self._reserved: dict[tuple[int, int], StepRecord] = {}

    def served_decision(self, round: int) -> StepRecord | None:
        with self.lock:
            step = self.decisions.get(round)
            if self.live or self.changed or step is None or step.error:
                self.live = True
                return None
            return step

    def rejects(self, round: int, call: Call) -> bool:
        """Whether ``call`` is one of the paused decision's that the user did not approve."""
        return round == self.paused_round and call.agent_id in self.rejected

    def serves_call(self, round: int, call: Call, index: int) -> bool:
        with self.lock:
            step = None if self.live else self._match(round, call, index)
            if step is not None and not step.error:
                self._reserved[(round, index)] = step
                return True
            self.changed = True
            return False

    def _match(self, round: int, call: Call, index: int) -> StepRecord | None:
        # by place first; then by what was asked, since a decision served with an agent that is known now (and was
        # not then) dispatches one more call, and the places after it move
        asked = (call.agent_id, call.query, call.model_id)
        placed = self.calls_at.get((round, index))
        candidates = ([placed] if placed is not None else []) + [step for step in self._call_steps if step.round == round and step is not placed]
        for step in candidates:
            if step.id not in self._taken and (step.agent_id, step.request.get("query"), step.request.get("model_id")) == asked:
                self._taken.add(step.id)  # taken failed or not: each recorded call stands for one call of the resume
                return step
        return None

    def take_call(self, round: int, call: Call, index: int) -> StepRecord:
        with self.lock:
            return self._reserved.pop((round, index))

    def served_aggregate(self) -> StepRecord | None:
        with self.lock:
            if self.live or self.changed or self.aggregate is None or self.aggregate.failed:
                return None
            return self.aggregate


class _Reuse(_Resume):
    """What a counterfactual replay with ``reuse_calls`` serves: a call that its router makes as the original made it
    (the same agent asked the same query, with the same model, in the same round) and that succeeded there. Its
    decisions, every other call and the aggregation run live, against the registry as it is now."""

    mark_key = "reused"

    def served_decision(self, round: int) -> StepRecord | None:
        return None

    def serves_call(self, round: int, call: Call, index: int) -> bool:
        with self.lock:
            step = self._match(round, call, index)
            if step is None or step.error:
                return False
            self._reserved[(round, index)] = step
            return True

    def served_aggregate(self) -> StepRecord | None:
        return None


class _ModelHub:
    """Chat models by card, built once and rebuilt when a card changes."""

    def __init__(self, factory: ModelFactory, retry: RetryPolicy) -> None:
        self.factory = factory
        self.retry = retry
        self._models: dict[str, tuple[str, ChatModel]] = {}
        self._lock = threading.Lock()

    def get(self, card: ModelCard) -> ChatModel:
        key = card.model_dump_json()
        with self._lock:
            held = self._models.get(card.id)
            if held is None or held[0] != key:
                held = (key, self.factory(card, self.retry))
                self._models[card.id] = held
            return held[1]


class _RunContext:
    """Everything one run needs that is not LangGraph state: store, registry, models, budget, recording."""

    def __init__(
        self,
        app: Orchestra,
        workflow: Workflow,
        run: RunRecord,
        history: tuple[Turn, ...],
        policy: RoutingPolicy,
        recording: _Recording | None,
        router: Router,
    ) -> None:
        self.app = app
        self.workflow = workflow
        self.run = run
        self.history = history
        self.policy = policy
        self.tracker = _Tracker(workflow.budget)
        self.recording = recording
        self.router = router
        self.decisions: list[Dispatch | Finish] = []
        self.observations: list[tuple[int, int, Observation]] = []
        self.call_events: list[RunEvent] = []
        """Every call's event, as emitted: a stream sends afterwards the ones LangGraph's writer dropped (a call that
        ends after a sibling failed the run writes into a stream that has stopped)."""
        """Each call's observation under its round and place in the dispatch: parallel calls finish in any order,
        and the run's result lists them in the order they were dispatched, as the aggregator saw them."""
        self.lock = threading.Lock()
        self._old_registries: dict[int, RegistrySnapshot] = {}
        self._refreshed_at_start = not self.exact
        """The run's start took in other processes' registry changes (for its recorded version): the first
        decision need not ask the store again a moment later."""
        self.streaming = False
        """True in `Workflow.stream`/`astream`: model answers then stream out as ``token`` events."""
        limit = workflow.budget.max_parallel_calls
        # Budget.max_parallel_calls is kept here rather than by LangGraph's max_concurrency: LangGraph's sync stream
        # runs its event waiter in the same pool as the nodes, so a pool of one never ran the call (a deadlock)
        self._call_slots = threading.BoundedSemaphore(limit) if limit else None
        self._acall_slots = asyncio.Semaphore(limit) if limit else None
        own = getattr(router, "own_agents", None)
        self.own_agents: dict[str, tuple[AgentCard, Any]] = {card.id: (card, impl) for card, impl in (own() if own else ())}
        """The router's own agents by id (see `BaseRouter.own_agents`): used where the registry holds no such agent."""

    @contextmanager
    def call_slot(self) -> Iterator[None]:
        """One of the run's ``max_parallel_calls`` slots, held while an agent call runs (none without the limit)."""
        if self._call_slots is None:
            yield
            return
        with self._call_slots:
            yield

    @asynccontextmanager
    async def acall_slot(self) -> AsyncIterator[None]:
        """Async twin of `call_slot`."""
        if self._acall_slots is None:
            yield
            return
        async with self._acall_slots:
            yield

    @property
    def exact(self) -> bool:
        """An exact replay: the router, agents and aggregator see the registry as recorded and are served the recorded
        model calls. A resumed run's live steps see the registry as it is now (the fix the user made) and call live."""
        return self.recording is not None and not self.recording.resume

    def mark(self, served: bool) -> dict[str, str]:
        """What a resumed run's decision, call and aggregate steps say in their response (``resumed``), and a replay's
        that reused the original's calls (``reused``): served from the record (with their model calls copied) or made
        live. Nothing in other runs."""
        if self.recording is None or not self.recording.mark_key:
            return {}
        return {self.recording.mark_key: "served" if served else "live"}

    # -- store --------------------------------------------------------------------------------------------------

    def record(self, step: StepRecord) -> None:
        self.app.store.append_step(step)

    def emit(self, kind: str, **data: Any) -> RunEvent:
        event = RunEvent(kind=kind, run_id=self.run.id, data=data)  # type: ignore[arg-type]
        try:
            writer = get_stream_writer()
        except RuntimeError:  # not inside a graph run (e.g. the run-finished event)
            return event
        writer(event)
        return event

    def undelivered_calls(self, delivered: set[str]) -> list[RunEvent]:
        """The call events a stream has not sent (``delivered``: the steps of those it has)."""
        with self.lock:
            return [event for event in self.call_events if event.data["step"] not in delivered]

    # -- registry -----------------------------------------------------------------------------------------------

    def snapshot(self, round: int) -> RegistrySnapshot:
        if self.exact:
            assert self.recording is not None
            return self.recorded_snapshot(self.recording.decision_step(round).request.get("registry_version", self.run.registry_version))
        if round == 0 and self._refreshed_at_start:
            self._refreshed_at_start = False
        else:
            self.app.registry.refresh()
        return self.app.registry.snapshot()

    def recorded_snapshot(self, version: int) -> RegistrySnapshot:
        """The registry as it was at ``version`` (read once per run)."""
        with self.lock:
            if version not in self._old_registries:
                self._old_registries[version] = Registry.at_version(self.app.store, version).snapshot()
            return self._old_registries[version]

    def agent_card(self, agent_id: str, snapshot: RegistrySnapshot | None) -> AgentCard:
        if snapshot is not None:
            card = snapshot.agent(agent_id)
        else:
            try:
                card = self.app.registry.agent(agent_id)
            except NotFoundError:
                card = None
        if card is None and agent_id in self.own_agents:
            card = self.own_agents[agent_id][0]
        if card is None:
            raise UnknownAgentError(agent_id)
        return card

    def implementation(self, card: AgentCard) -> Any:
        """The in-process implementation of the agent: the registry's, else the router's own agent's."""
        held = self.app.registry.implementation(card.id)
        if held is None and card.id in self.own_agents and self.own_agents[card.id][0] is card:
            return self.own_agents[card.id][1]
        return held

    def model_card(self, model_id: str, round: int) -> ModelCard:
        if model_id.startswith("endpoint:"):
            agent = self.agent_card(model_id.removeprefix("endpoint:"), None)
            return ModelCard(
                id=model_id, model=agent.model or "default", base_url=agent.endpoint, description=agent.description
            )
        if self.exact:
            card = self.snapshot(round).model(model_id)
            if card is None:
                raise NotFoundError("model", model_id)
            return card
        return self.app.registry.model(model_id)

    # -- model access -------------------------------------------------------------------------------------------

    def access(self, parent_id: str, round: int, original_parent: str | None = None, *, agent_id: str | None = None) -> _RunModelAccess:
        return _RunModelAccess(self, parent_id, round, original_parent, agent_id)


_MODEL_ERRORS: dict[str, type[ModelError]] = {cls.__name__: cls for cls in (ModelTimeoutError, ModelUnavailableError, ModelOutputError)}
"""The model error classes a replay rebuilds from their recorded names."""


def _recorded_result(step: StepRecord, model_id: str) -> ChatResult:
    """A recorded model call's result, as an exact replay serves it."""
    return ChatResult(
        text=step.response.get("text", ""),
        model_id=step.model_id or model_id,
        prompt_tokens=step.prompt_tokens,
        completion_tokens=step.completion_tokens,
        cost_usd=step.cost_usd,
        latency_ms=0.0,
        finish_reason=step.response.get("finish_reason"),
    )


class _RunModelAccess:
    """`ModelAccess` for one step of a run: registry lookup at call time, fallbacks, budget, recording, replay."""

    def __init__(self, ctx: _RunContext, parent_id: str, round: int, original_parent: str | None, agent_id: str | None = None) -> None:
        self.ctx = ctx
        self.parent_id = parent_id
        self.round = round
        self.original_parent = original_parent
        self.agent_id = agent_id
        """The agent whose call this access serves (``None``: the router's or the aggregator's step)."""
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd: float | None = 0.0
        """What the calls made through this access cost; ``None`` once any price was unknown."""
        self.abandoned = False
        """Set when the agent call this access serves ran out of time and was left running (`abandon`)."""
        self.restart_stream = False
        """Set on a retried agent call's next attempt: its first token event says ``restart``, so a reader drops the
        failed attempt's streamed text."""
        self._in_flight: tuple[str, list[Message], ChatOptions, str, str, float] | None = None

    def abandon(self) -> None:
        """The agent call ran out of time (the run's, or its attempt's) and is left running in its thread: a model call it has under
        way is recorded now as stopped (its cost unknown: the provider may bill it), and whatever it does later
        records nothing and costs the run nothing, since the run has moved on (or ended)."""
        with self.ctx.tracker.lock:
            self.abandoned, in_flight, self._in_flight = True, self._in_flight, None
        if in_flight is not None:
            self._record_stopped(*in_flight)

    def _begin(self, requested: str, messages: list[Message], options: ChatOptions, purpose: str, model_id: str, started: float) -> None:
        with self.ctx.tracker.lock:
            if self.abandoned:
                raise RunCancelled("the agent call ran out of time and was left behind by its run")
            self._in_flight = (requested, messages, options, purpose, model_id, started)

    def _end(self) -> None:
        """After a model call came back: `RunCancelled` when the agent call was abandoned meanwhile (`abandon`
        recorded the call already)."""
        with self.ctx.tracker.lock:
            if self.abandoned:
                raise RunCancelled("the agent call ran out of time and was left behind by its run")
            self._in_flight = None

    def _count(self, result: ChatResult) -> None:
        self._add(result.prompt_tokens, result.completion_tokens, result.cost_usd)
        with self.ctx.tracker.lock:
            self.calls += 1

    def _count_failure(self, error: ModelError) -> None:
        """What a failed call was billed (its response came back and was refused: empty, not the schema, cut
        off) counts like a success's; a call that got no response cost nothing."""
        bill = _bill(error)
        if _was_billed(*bill):
            self._add(*bill)

    def _add(self, prompt_tokens: int, completion_tokens: int, cost_usd: float | None) -> None:
        self.ctx.tracker.add_usage(prompt_tokens, completion_tokens, cost_usd)
        with self.ctx.tracker.lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.cost_usd = None if self.cost_usd is None or cost_usd is None else self.cost_usd + cost_usd

    def _chain(self, model_id: str) -> list[str]:
        return [model_id] + [m for m in self.ctx.app.fallback.models if m != model_id]

    def _record(
        self,
        requested: str,
        messages: list[Message],
        options: ChatOptions,
        purpose: str,
        result: ChatResult | None,
        error: OrchestraError | None,
        model_id: str,
        failed_after_ms: float = 0.0,
    ) -> None:
        request = {
            "messages": [m.model_dump() for m in messages],
            "options": options.model_dump(mode="json"),
            "purpose": purpose,
            "model_requested": requested,
        }
        response: dict[str, Any] = {}
        if result is not None:
            response = {"text": result.text, "finish_reason": result.finish_reason, "attempts": result.attempts}
            prompt_tokens, completion_tokens, cost_usd = result.prompt_tokens, result.completion_tokens, result.cost_usd
        else:
            if getattr(error, "attempts", None) is not None:
                response = {"attempts": error.attempts}  # type: ignore[union-attr]  # the client's retries, all failed
            prompt_tokens, completion_tokens, cost_usd = _bill(error)
        self.ctx.record(
            StepRecord(
                run_id=self.ctx.run.id,
                kind="model_call",
                parent_id=self.parent_id,
                round=self.round,
                model_id=model_id,
                request=request,
                response=response,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_usd=cost_usd,
                latency_ms=result.latency_ms if result else failed_after_ms,
                error=error.to_record() if error else None,
            )
        )

    def _record_stopped(self, requested: str, messages: list[Message], options: ChatOptions, purpose: str, model_id: str,
                        started: float) -> None:
        """The caller stopped the run during this call (Ctrl-C, a closed stream, a cancelled task). The request was
        sent and the provider may bill it, so the trace keeps it, and the run's cost becomes unknown rather than
        leaving it out."""
        stopped = RunCancelled(f"the run was stopped during this call to {model_id!r}")
        self._record(requested, messages, options, purpose, None, stopped, model_id, (time.perf_counter() - started) * 1000)
        self._add(0, 0, None)

    def _replayed(self, model_id: str, messages: list[Message], options: ChatOptions, purpose: str) -> ChatResult:
        assert self.ctx.recording is not None
        if self.original_parent is None:
            raise ReplayMismatch(f"the original run made no model call here (asked for {model_id!r})")
        failures: list[ModelError] = []
        step: StepRecord | None = self.ctx.recording.take_model_call(self.original_parent, model_id, messages)
        while step is not None and step.error:
            if step.error.get("type") == RunCancelled.__name__:
                raise self.ctx.recording.missing(f"the call to {step.model_id!r}")
            # the recorded class, so that code telling failures apart (Refine, TCAR) takes the same branch
            kind = _MODEL_ERRORS.get(step.error.get("type", ""), ModelError)
            error = kind(step.error.get("message", "recorded model error"), model_id=step.model_id, prompt_tokens=step.prompt_tokens,
                         completion_tokens=step.completion_tokens, cost_usd=step.cost_usd)
            self._record(model_id, messages, options, purpose, None, error, step.model_id or model_id)
            self._count_failure(error)
            failures.append(error)
            # the same call's fallbacks were recorded next, each under the requested model's name
            step = self.ctx.recording.take_fallback_call(self.original_parent, model_id, messages)
        if step is None:
            # no fallback followed where the chain had one left: the original's budget (or its caller) stopped it
            # there, at a limit (the time) the replay may not reach again
            stopped = self.ctx.recording.stopped(f"before the fallback of {model_id!r}") if len(failures) < len(self._chain(model_id)) else None
            raise stopped or _chain_failure(failures)
        result = _recorded_result(step, model_id)
        self._record(model_id, messages, options, purpose, result, None, result.model_id)
        self._count(result)
        return result

    def _emit_token(self, delta: str, purpose: str, model_id: str, streamed_by: list[str]) -> None:
        """One ``token`` event. ``streamed_by`` lists the models that have streamed in this call so far: when a
        fallback starts writing after a failed model had, its first event says ``restart`` (the text so far is
        void), so a reader never shows the failed model's words glued to the fallback's answer."""
        restart = bool(streamed_by) and streamed_by[-1] != model_id
        if not streamed_by or restart:
            streamed_by.append(model_id)
        if self.restart_stream:
            restart, self.restart_stream = True, False
        # the agent named: parallel agents stream at once, and a step id alone named nothing a reader had been shown
        self.ctx.emit("token", step=self.parent_id, agent_id=self.agent_id, purpose=purpose, delta=delta, model_id=model_id, restart=restart)

    def _streamed(self, chunks: Iterator[ChatChunk], purpose: str, model_id: str, streamed_by: list[str]) -> ChatResult:
        for chunk in chunks:
            # cancelled: stop reading, which closes the stream, so the model stops writing for nobody
            self.ctx.tracker.check_cancelled()
            if chunk.delta:
                self._emit_token(chunk.delta, purpose, model_id, streamed_by)
            if chunk.result is not None:
                return chunk.result
        raise ModelError("the stream ended without a result")

    async def _astreamed(self, chunks: AsyncIterator[ChatChunk], purpose: str, model_id: str, streamed_by: list[str]) -> ChatResult:
        async for chunk in chunks:
            self.ctx.tracker.check_cancelled()
            if chunk.delta:
                self._emit_token(chunk.delta, purpose, model_id, streamed_by)
            if chunk.result is not None:
                return chunk.result
        raise ModelError("the stream ended without a result")

    def chat(self, model_id: str, messages: list[Message], options: ChatOptions | None = None, *, purpose: str = "") -> ChatResult:
        options = options or ChatOptions()
        self.ctx.tracker.check()
        if self.ctx.exact:
            return self._replayed(model_id, messages, options, purpose)
        failures: list[ModelError] = []
        streamed_by: list[str] = []
        for candidate in self._chain(model_id):
            if failures:
                # a fallback is a model call like the first, within the budget: the model that failed may have used up
                # the run's time (its retries, their timeouts) or been billed past its cost; it was called regardless
                self.ctx.tracker.check()
            started = time.perf_counter()
            self._begin(model_id, messages, options, purpose, candidate, started)
            try:
                card = self.ctx.model_card(candidate, self.round)
                model = self.ctx.app.models.get(card)
                if self.ctx.streaming and hasattr(model, "stream"):
                    result = self._streamed(model.stream(messages, options), purpose, candidate, streamed_by)
                else:
                    result = model.chat(messages, options)
            except RunCancelled:  # the run was cancelled during the call: no fallback, the call kept as stopped
                self._end()
                self._record_stopped(model_id, messages, options, purpose, candidate, started)
                raise
            except Exception as exc:
                self._end()
                failures.append(_as_model_failure(exc, candidate))
            except BaseException:
                self._end()
                self._record_stopped(model_id, messages, options, purpose, candidate, started)
                raise
            else:
                self._end()
                self._record(model_id, messages, options, purpose, result, None, candidate)
                self._count(result)
                return result
            # how long the failed candidate took (its retries and backoff included), so the trace shows where time went
            self._record(model_id, messages, options, purpose, None, failures[-1], candidate, (time.perf_counter() - started) * 1000)
            self._count_failure(failures[-1])
        raise _chain_failure(failures)

    async def achat(self, model_id: str, messages: list[Message], options: ChatOptions | None = None, *, purpose: str = "") -> ChatResult:
        options = options or ChatOptions()
        self.ctx.tracker.check()
        if self.ctx.exact:
            return self._replayed(model_id, messages, options, purpose)
        failures: list[ModelError] = []
        streamed_by: list[str] = []
        for candidate in self._chain(model_id):
            if failures:
                self.ctx.tracker.check()  # as in `chat`
            started = time.perf_counter()
            self._begin(model_id, messages, options, purpose, candidate, started)
            try:
                card = self.ctx.model_card(candidate, self.round)
                model = self.ctx.app.models.get(card)
                if self.ctx.streaming and hasattr(model, "astream"):
                    result = await self._astreamed(model.astream(messages, options), purpose, candidate, streamed_by)
                else:
                    result = await model.achat(messages, options)
            except RunCancelled:
                self._end()
                self._record_stopped(model_id, messages, options, purpose, candidate, started)
                raise
            except Exception as exc:
                self._end()
                failures.append(_as_model_failure(exc, candidate))
            except BaseException:
                self._end()
                self._record_stopped(model_id, messages, options, purpose, candidate, started)
                raise
            else:
                self._end()
                self._record(model_id, messages, options, purpose, result, None, candidate)
                self._count(result)
                return result
            # how long the failed candidate took (its retries and backoff included), so the trace shows where time went
            self._record(model_id, messages, options, purpose, None, failures[-1], candidate, (time.perf_counter() - started) * 1000)
            self._count_failure(failures[-1])
        raise _chain_failure(failures)


def _bill(error: OrchestraError | None) -> tuple[int, int, float | None]:
    """What a failed model call was billed: tokens and cost, read with defaults (a user's ModelError subclass may
    not set them, and other errors carry none)."""
    return getattr(error, "prompt_tokens", 0), getattr(error, "completion_tokens", 0), getattr(error, "cost_usd", None)


def _was_billed(prompt_tokens: int, completion_tokens: int, cost_usd: float | None) -> bool:
    """A failed call's response came back (and was paid for): it has tokens or a cost."""
    return bool(prompt_tokens or completion_tokens) or cost_usd is not None


def _as_model_failure(exc: Exception, model_id: str) -> ModelError:
    """What a model call that raised ``exc`` counts as in a fallback chain. A misconfiguration (a card without its
    API key) is re-raised, the user's to fix; a user's ChatModel with a bug is a failed call like any other."""
    if isinstance(exc, NotFoundError):
        return ModelUnavailableError(str(exc), model_id=model_id)
    if isinstance(exc, ModelError):
        return exc
    if isinstance(exc, OrchestraError):
        raise exc
    return ModelError(f"model {model_id!r} raised {type(exc).__name__}: {exc}", model_id=model_id)


def _chain_failure(failures: list[ModelError]) -> ModelError:
    """The primary model's error (its class, so callers take the same branch), naming the fallbacks that failed
    after it: the last fallback's error alone hid why the primary failed."""
    primary = failures[0]
    if len(failures) == 1:
        return primary
    after = "; ".join(f"{error.model_id}: {type(error).__name__}: {error}" for error in failures[1:])
    try:
        error = type(primary)(f"{primary} (then the fallbacks failed: {after})", model_id=primary.model_id)
    except TypeError:  # a model's own ModelError subclass with other arguments: report it as it is
        return primary
    error.__cause__ = primary
    return error


class _DirectModelAccess:
    """`ModelAccess` outside a run (benchmarks, scripts): registry lookup and fallbacks, no trace, no budget."""

    def __init__(self, app: Orchestra) -> None:
        self.app = app

    def _chain(self, model_id: str) -> list[tuple[str, ChatModel | None, ModelError | None]]:
        chain: list[tuple[str, ChatModel | None, ModelError | None]] = []
        for candidate in [model_id] + [m for m in self.app.fallback.models if m != model_id]:
            try:
                chain.append((candidate, self.app.models.get(self.app.registry.model(candidate)), None))
            except NotFoundError as exc:
                chain.append((candidate, None, ModelUnavailableError(str(exc), model_id=candidate)))
        return chain

    def chat(self, model_id: str, messages: list[Message], options: ChatOptions | None = None, *, purpose: str = "") -> ChatResult:
        failures: list[ModelError] = []
        for candidate, model, error in self._chain(model_id):
            if model is None:
                failures.append(error)  # type: ignore[arg-type]
                continue
            try:
                return model.chat(messages, options or ChatOptions())
            except Exception as exc:
                failures.append(_as_model_failure(exc, candidate))
        raise _chain_failure(failures)

    async def achat(self, model_id: str, messages: list[Message], options: ChatOptions | None = None, *, purpose: str = "") -> ChatResult:
        failures: list[ModelError] = []
        for candidate, model, error in self._chain(model_id):
            if model is None:
                failures.append(error)  # type: ignore[arg-type]
                continue
            try:
                return await model.achat(messages, options or ChatOptions())
            except Exception as exc:
                failures.append(_as_model_failure(exc, candidate))
        raise _chain_failure(failures)


# ---------------------------------------------------------------------------------------------------------------
# the graph


class _GraphState(TypedDict, total=False):
    query: str
    round: int
    observations: Annotated[list[Observation], operator.add]
    dispatch: tuple[str, int, tuple[Call, ...]]
    """The last decision's step id, round and calls: what the fan-out sends."""
    answer: str | None
    out_of_scope: bool


_PASSED_CONFIG = ("callbacks", "tags", "metadata", "run_name")
"""The keys of LangGraph's config a run takes from its caller; the others are the workflow's."""

_OWN_CONFIG = {
    "recursion_limit": "set from Budget.max_rounds",
    "max_concurrency": "set from Budget.max_parallel_calls",
    "configurable": "it carries the run's context (no checkpointer: the trace store records the run)",
}


def _passed_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The caller's LangGraph config for a run, checked before anything is stored: `ConfigurationError` naming a
    key the workflow sets itself, or one it does not pass."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ConfigurationError(f"config must be a mapping (LangGraph's RunnableConfig), got {type(config).__name__}")
    for key in config:
        if key in _OWN_CONFIG:
            raise ConfigurationError(f"config[{key!r}] is the workflow's own: {_OWN_CONFIG[key]}")
        if key not in _PASSED_CONFIG:
            raise ConfigurationError(f"config[{key!r}] is not passed to the run; it takes {', '.join(_PASSED_CONFIG)}")
    if not isinstance(config.get("metadata", {}), Mapping):
        raise ConfigurationError(f"config['metadata'] must be a mapping, got {type(config['metadata']).__name__}")
    tags = config.get("tags", [])
    if not isinstance(tags, (list, tuple)) or not all(isinstance(tag, str) for tag in tags):
        raise ConfigurationError(f"config['tags'] must be a list of strings, got {tags!r:.80}")
    return dict(config)


def _inside_a_graph() -> bool:
    """The run was started inside a LangGraph (or LangChain) run: `run` or `arun` from a node of the user's own graph."""
    try:
        get_config()
    except RuntimeError:
        return False
    return True


def _ctx(config: RunnableConfig) -> _RunContext:
    ctx = config.get("configurable", {}).get("orchestra_run")
    if ctx is None:
        raise ConfigurationError(
            "this graph runs through Workflow.run, arun, stream or astream, which give each run its trace, "
            "budget and registry view; invoked directly (or as a subgraph) it has none"
        )
    return ctx  # type: ignore[no-any-return]


def _decision_dump(decision: Dispatch | Finish) -> dict[str, Any]:
    return decision.model_dump(mode="json")


def _expect(name: str, value: Any, ok: Callable[[Any], bool], what: str) -> None:
    """Refuse a wrongly typed argument when it is given, not at the first run (where it was an AttributeError)."""
    if not ok(value):
        raise ConfigurationError(f"{name} must be {what}, got {type(value).__name__} {value!r:.60}")


class Workflow:
    """A compiled routed graph: one router, one aggregator, one budget. Run it many times, concurrently."""

    def __init__(
        self,
        app: Orchestra,
        router: Router,
        *,
        aggregator: Aggregator | None = None,
        budget: Budget | None = None,
        routing: RoutingPolicy | None = None,
    ) -> None:
        _expect("router", router, lambda value: callable(getattr(value, "decide", None)), "a router: an object with decide(state), or a router's name")
        _expect("aggregator", aggregator, lambda value: value is None or callable(getattr(value, "aggregate", None)), "an Aggregator (Refine, WeightedVote, PassThrough or your own)")
        if aggregator is not None and not callable(getattr(aggregator, "aaggregate", None)):
            # refused here: found out in `arun`, it failed the run after every agent had answered (and been paid)
            raise ConfigurationError(
                f"aggregator {type(aggregator).__name__} has no aaggregate: an Aggregator implements aggregate and its "
                "async twin aaggregate (returning await asyncio.to_thread(self.aggregate, query, observations, models) will do)"
            )
        if aggregator is not None and not isinstance(getattr(aggregator, "name", None), str):
            # refused here: the run read it only once every agent had answered, and escaped as an AttributeError
            raise ConfigurationError(
                f"aggregator {type(aggregator).__name__} has no name: an Aggregator has a name (a class attribute, "
                "name = \"my-aggregator\"), which its runs' trace and replay's messages show"
            )
        if aggregator is not None and getattr(router, "multi_round", False):
            # the graph of a multi-round router has no aggregation: the aggregator given would never run
            raise ConfigurationError(
                f"router {getattr(router, 'name', type(router).__name__)!r} is multi-round: it writes the run's answer "
                f"itself (its Finish), so aggregator {getattr(aggregator, 'name', type(aggregator).__name__)!r} would "
                "never run; leave aggregator out"
            )
        _expect("budget", budget, lambda value: value is None or isinstance(value, Budget), "a Budget")
        _expect("routing", routing, lambda value: value is None or isinstance(value, RoutingPolicy), "a RoutingPolicy")
        self.app = app
        self.router = router
        self.aggregator = aggregator or PassThrough()
        self.budget = budget or Budget()
        self.routing = routing or RoutingPolicy()
        self.graph = self._build(asynchronous=False)
        """The compiled LangGraph graph, to inspect or draw (``graph.get_graph().draw_mermaid()``). Runs go through
        `run`, `arun`, `stream` and `astream`, which give it each run's context; invoked directly it raises
        `ConfigurationError`. To use a workflow inside a graph of your own, call `run` (or `arun`) from a node."""

    @cached_property
    def async_graph(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The same graph with async nodes, behind `arun` and `astream`; compiled on first use, since most
        workflows (and every exact replay) only run synchronously."""
        return self._build(asynchronous=True)

    # -- graph construction -------------------------------------------------------------------------------------

    def _build(self, asynchronous: bool) -> CompiledStateGraph[Any, Any, Any, Any]:
        # Two compilations of one graph: plain functions keep LangGraph's fast path, and the async one lets
        # agents and models run through their async twins.
        graph = StateGraph(_GraphState)
        graph.add_node("router", self._aroute if asynchronous else self._route)
        # its input is a Send's payload (see _fan_out), not the graph's state, which add_node's types cannot say
        graph.add_node("call", self._acall if asynchronous else self._call)  # type: ignore[arg-type]
        graph.add_node("aggregate", self._aaggregate if asynchronous else self._aggregate)
        graph.add_edge(START, "router")
        graph.add_conditional_edges("router", self._fan_out, ["call", END])
        if getattr(self.router, "multi_round", False):
            graph.add_edge("call", "router")
        else:
            graph.add_edge("call", "aggregate")
        graph.add_edge("aggregate", END)
        # never a checkpointer, not even a parent graph's: run from a node of a checkpointed graph of the user's own,
        # it took theirs, and when that node ran again (resumed after an interrupt) the run found its last checkpoint
        # and ran nothing. The trace store is the run's record, and resume() its way back.
        return graph.compile(checkpointer=False)

    @staticmethod
    def _fan_out(state: _GraphState) -> list[Send] | str:
        if state.get("answer") is not None:
            return END
        step_id, round, calls = state["dispatch"]
        # each call carries its place in the dispatch: an exact replay serves it the answer recorded at that place
        return [Send("call", {"call": call, "round": round, "parent_id": step_id, "index": index}) for index, call in enumerate(calls)]

    # -- router node --------------------------------------------------------------------------------------------

    def _router_state(self, ctx: _RunContext, state: _GraphState, step_id: str) -> tuple[RouterState, RegistrySnapshot]:
        round = state.get("round", 0)
        ctx.tracker.check(round=round)
        snapshot = ctx.snapshot(round)
        original = ctx.recording.decision_step(round).id if ctx.exact else None  # type: ignore[union-attr]
        router_state = RouterState(
            query=state["query"],
            agents=snapshot.agents,
            models=snapshot.models,
            registry_version=snapshot.version,
            history=ctx.history,
            observations=tuple(state.get("observations", [])),
            round=round,
            policy=ctx.policy,
            budget_left=ctx.tracker.left(round),
            model_access=ctx.access(step_id, round, original),
            run_id=ctx.run.id,
            decisions=tuple(decision for decision in ctx.decisions if isinstance(decision, Dispatch)),
        )
        return router_state, snapshot

    @staticmethod
    def _decision_request(ctx: _RunContext, router_state: RouterState, snapshot: RegistrySnapshot) -> dict[str, Any]:
        return {
            "query": router_state.query,
            "registry_version": snapshot.version,
            "agents": [card.id for card in snapshot.agents],
            "models": [card.id for card in snapshot.models],
            "policy": ctx.policy.model_dump(),
            "budget_left": router_state.budget_left,
        }

    def _fail_decision(
        self, ctx: _RunContext, router_state: RouterState, snapshot: RegistrySnapshot, step_id: str, exc: Exception, started: float
    ) -> NoReturn:
        """Record the failed decision as a step (the router's model calls hang off it in the tree, and an exact
        replay runs the router again on them) and raise the run's typed error: a router's own bug is a
        `DecisionError`, a failure of its model the model's error."""
        error = exc if isinstance(exc, OrchestraError) else self._router_failure(ctx, exc)
        if ctx.exact:
            assert ctx.recording is not None
            recorded = ctx.recording.decision_step(router_state.round)
            if not recorded.error:
                error = ReplayMismatch(f"round {router_state.round}: the router failed ({type(error).__name__}: {error}) where the original decided")
        ctx.record(
            StepRecord(
                id=step_id,
                run_id=ctx.run.id,
                kind="decision",
                round=router_state.round,
                request=self._decision_request(ctx, router_state, snapshot),
                response=ctx.mark(served=False),
                latency_ms=(time.perf_counter() - started) * 1000,
                error=error.to_record(),
            )
        )
        if error is exc:
            raise error
        raise error from exc

    @staticmethod
    def _checked_decision(ctx: _RunContext, decision: Any) -> Dispatch | Finish:
        if not isinstance(decision, (Dispatch, Finish)):
            raise DecisionError(f"router {getattr(ctx.router, 'name', type(ctx.router).__name__)!r} returned {type(decision).__name__}, not a Dispatch or Finish")
        return decision

    def _after_decision(
        self, ctx: _RunContext, router_state: RouterState, snapshot: RegistrySnapshot, step_id: str, decision: Dispatch | Finish, started: float
    ) -> dict[str, Any]:
        round = router_state.round
        unknown = (
            [call.agent_id for call in decision.calls if snapshot.agent(call.agent_id) is None and call.agent_id not in ctx.own_agents]
            if isinstance(decision, Dispatch) else []
        )
        gate: RegistrySnapshot | None = snapshot
        if ctx.exact:
            assert ctx.recording is not None
            recorded_step = ctx.recording.decision_step(round)
            # a decision a resume served was approved by that resume: its replay does not pause where it did not
            if recorded_step.response.get("resumed") == "served":
                gate = None
            if recorded_step.error:
                failed = f"{recorded_step.error.get('type')}: {recorded_step.error.get('message')}"
                raise ReplayMismatch(f"round {round}: the router decided where the original failed ({failed})")
            if recorded_step.response.get("decision") != _decision_dump(decision):
                raise ReplayMismatch(f"round {round}: the router decided differently from the recording")
        ctx.record(
            StepRecord(
                id=step_id,
                run_id=ctx.run.id,
                kind="decision",
                round=round,
                request=self._decision_request(ctx, router_state, snapshot),
                response={"decision": _decision_dump(decision)} | ctx.mark(served=False),
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        )
        return self._dispatched(ctx, step_id, round, decision, unknown, gate=gate)

    def _serve_decision(self, ctx: _RunContext, state: _GraphState, recorded: StepRecord) -> dict[str, Any]:
        """A resumed run's decision copied from the record, with the router's model calls (counted, as the calls'
        are), instead of asking the router again: a router that calls a model is not asked to make the same
        calls, byte for byte, at another time and under another budget left."""
        round = state.get("round", 0)
        ctx.tracker.check(round=round)
        step_id = new_id()
        self._copy_model_calls(ctx, recorded.id, step_id)
        decision: Dispatch | Finish = _DECISION.validate_python(recorded.response["decision"])
        ctx.record(recorded.model_copy(update={
            "id": step_id, "run_id": ctx.run.id, "latency_ms": 0.0, "seq": None, "created_at": datetime.now(UTC),
            "response": recorded.response | ctx.mark(served=True),
        }))
        unknown: list[str] = []
        if isinstance(decision, Dispatch):
            # An agent is dispatched if the registry held it then or holds it now: one the user onboarded since (the
            # original dropped it as unknown) is called live, one removed since is still served its recorded answer.
            then = ctx.recorded_snapshot(recorded.request.get("registry_version", ctx.run.registry_version))
            now = ctx.snapshot(round)
            unknown = [call.agent_id for call in decision.calls
                       if then.agent(call.agent_id) is None and now.agent(call.agent_id) is None and call.agent_id not in ctx.own_agents]
        return self._dispatched(ctx, step_id, round, decision, unknown)

    def _dispatched(
        self, ctx: _RunContext, step_id: str, round: int, decision: Dispatch | Finish, unknown: list[str], *,
        gate: RegistrySnapshot | None = None,
    ) -> dict[str, Any]:
        """After a decision was recorded: the run's answer for a `Finish`, else the calls to fan out (the agents the
        registry does not hold recorded as errors). ``gate``: the registry a decision just made was made on; the run
        stops with `ApprovalRequired` if the decision calls an agent whose card there requires approval (``None``: a
        decision served by a resume, approved by resuming)."""
        with ctx.lock:
            ctx.decisions.append(decision)
        ctx.emit("decision", step=step_id, round=round, decision=_decision_dump(decision))
        if isinstance(decision, Finish):
            return {"round": round + 1, "answer": decision.answer, "out_of_scope": decision.out_of_scope}
        calls = tuple(call for call in decision.calls if call.agent_id not in unknown)
        for agent_id in unknown:
            error = UnknownAgentError(agent_id)
            ctx.record(StepRecord(run_id=ctx.run.id, kind="error", parent_id=step_id, round=round, agent_id=agent_id, error=error.to_record()))
            ctx.emit("error", round=round, error=error.to_record())
        if not calls:
            raise UnknownAgentError(unknown[0])
        ctx.tracker.check(calls=len(calls))
        if gate is not None:
            waiting = tuple(dict.fromkeys(call.agent_id for call in calls
                                          if (card := gate.agent(call.agent_id)) is not None and card.requires_approval))
            if waiting and ctx.exact:
                # the original's pause, reproduced: approving is resuming the original (a resume of this replay is
                # refused; it would pay what the original's resume pays too)
                original = ctx.run.replay_of
                raise ApprovalRequired(
                    f"the dispatch to {', '.join(map(repr, waiting))} awaited approval in the original run, as here: resume run "
                    f"{original} to approve it (orchestra resume {original})", agent_ids=waiting,
                )
            if waiting:
                raise ApprovalRequired(
                    f"the dispatch to {', '.join(map(repr, waiting))} awaits approval: resume run {ctx.run.id} to approve it "
                    f"(orchestra resume {ctx.run.id})", agent_ids=waiting,
                )
        return {"round": round + 1, "dispatch": (step_id, round, calls)}

    def _route(self, state: _GraphState, config: RunnableConfig) -> dict[str, Any]:
        ctx = _ctx(config)
        if ctx.recording is not None and (recorded := ctx.recording.served_decision(state.get("round", 0))) is not None:
            return self._serve_decision(ctx, state, recorded)
        step_id = new_id()
        router_state, snapshot = self._router_state(ctx, state, step_id)
        started = time.perf_counter()
        try:
            decision = self._checked_decision(ctx, ctx.router.decide(router_state))
        except Exception as exc:
            self._fail_decision(ctx, router_state, snapshot, step_id, exc, started)
        return self._after_decision(ctx, router_state, snapshot, step_id, decision, started)

    @staticmethod
    def _router_failure(ctx: _RunContext, exc: Exception) -> DecisionError:
        # a router's own bug is the run's typed failure, recorded and returned like an agent's, not an escape
        return DecisionError(f"router {getattr(ctx.router, 'name', type(ctx.router).__name__)!r} raised {type(exc).__name__}: {exc}")

    async def _aroute(self, state: _GraphState, config: RunnableConfig) -> dict[str, Any]:
        ctx = _ctx(config)
        if ctx.recording is not None and (recorded := ctx.recording.served_decision(state.get("round", 0))) is not None:
            return self._serve_decision(ctx, state, recorded)
        step_id = new_id()
        router_state, snapshot = self._router_state(ctx, state, step_id)
        started = time.perf_counter()
        adecide = getattr(ctx.router, "adecide", None)
        try:
            decision = self._checked_decision(ctx, await adecide(router_state) if adecide else await asyncio.to_thread(ctx.router.decide, router_state))
        except Exception as exc:
            self._fail_decision(ctx, router_state, snapshot, step_id, exc, started)
        return self._after_decision(ctx, router_state, snapshot, step_id, decision, started)

    # -- call node ----------------------------------------------------------------------------------------------

    def _prepare_call(self, ctx: _RunContext, payload: dict[str, Any]) -> tuple[Call, int, str, str, int]:
        with ctx.tracker.lock:
            ctx.tracker.calls += 1
        return payload["call"], payload["round"], payload["parent_id"], new_id(), payload["index"]

    def _context(self, ctx: _RunContext, call: Call, round: int, step_id: str) -> tuple[AgentContext, Any]:
        snapshot = ctx.snapshot(round) if ctx.exact else None
        if snapshot is None:
            # the registry as stored, not as this process last read it: an agent another process (`orchestra agents
            # remove`, another server) removed or changed since the decision is treated as one removed here, where the
            # stale view called the removed agent
            ctx.app.registry.refresh()
        card = ctx.agent_card(call.agent_id, snapshot)  # looked up now: onboarding needs no recompile
        model_id = call.model_id or (f"endpoint:{card.id}" if card.backend == "endpoint" else None)
        agent = agent_for_card(card, ctx.implementation(card))
        context = AgentContext(card=card, models=ctx.access(step_id, round, agent_id=call.agent_id), history=ctx.history, model_id=model_id, run_id=ctx.run.id)
        return context, agent

    def _finish_call(
        self,
        ctx: _RunContext,
        call: Call,
        round: int,
        parent_id: str,
        step_id: str,
        index: int,
        reply: AgentReply | None,
        error: OrchestraError | None,
        started: float,
        access: _CallAttempts | None,
    ) -> dict[str, Any]:
        usage: tuple[int, int, float | None] = (0, 0, None)
        if access is not None and (access.calls or access.prompt_tokens or access.completion_tokens):
            # what the agent's model calls really used (failed ones' bills included), whatever the agent reported
            usage = (access.prompt_tokens, access.completion_tokens, access.cost_usd)
        elif reply is not None:
            # No model call went through the run: what the agent reports (a tool paying for its own API) is what
            # the call used, and the run's totals and budget count it.
            usage = (reply.prompt_tokens, reply.completion_tokens, _reported_cost(reply.prompt_tokens, reply.completion_tokens, reply.cost_usd))
            ctx.tracker.add_usage(*usage)
        observation = Observation(
            agent_id=call.agent_id,
            query=call.query,
            answer=reply.answer if reply else None,
            error=error.to_record() if error else None,
            weight=call.weight,
            round=round,
            model_id=reply.model_id if reply else call.model_id,
            prompt_tokens=usage[0],
            completion_tokens=usage[1],
            cost_usd=usage[2],
            latency_ms=(time.perf_counter() - started) * 1000,
            declined=bool(reply and reply.declined),
            meta=reply.meta if reply else {},
        )
        self._record_call(ctx, observation, parent_id, step_id, call, index, access.failures if access else [])
        return {"observations": [observation]}

    @staticmethod
    def _record_call(
        ctx: _RunContext, obs: Observation, parent_id: str, step_id: str, call: Call, index: int,
        retried: list[dict[str, Any]], *, served: bool = False,
    ) -> None:
        """Store the call's step. ``retried``: the errors of its attempts that failed before the last (its card's
        `RetryPolicy`), kept in its response whether the last attempt answered or failed too. ``served``: served
        from a record (an exact replay's or a resume's), as the step's mark says."""
        ctx.record(
            StepRecord(
                id=step_id,
                run_id=ctx.run.id,
                kind="call",
                parent_id=parent_id,
                round=obs.round,
                agent_id=obs.agent_id,
                model_id=obs.model_id,
                request={"query": call.query, "weight": call.weight, "model_id": call.model_id, "index": index},
                response=(({"answer": obs.answer, "meta": obs.meta} | ({"declined": True} if obs.declined else {})) if obs.ok else {})
                | ({"retried": retried} if retried else {}) | ctx.mark(served),
                prompt_tokens=obs.prompt_tokens,
                completion_tokens=obs.completion_tokens,
                cost_usd=obs.cost_usd,
                latency_ms=obs.latency_ms,
                error=obs.error,
            )
        )
        with ctx.lock:
            ctx.observations.append((obs.round, index, obs))
        event = ctx.emit("call", step=step_id, round=obs.round, agent_id=obs.agent_id, model_id=obs.model_id, answer=obs.answer, error=obs.error,
                         latency_ms=obs.latency_ms, declined=obs.declined)
        with ctx.lock:
            ctx.call_events.append(event)

    def _not_approved(self, ctx: _RunContext, call: Call, round: int, parent_id: str, step_id: str, index: int) -> dict[str, Any]:
        """A call the user did not approve (``resume(..., reject=...)``): not made, kept as the agent's declining, so
        the aggregation merges the calls that were approved and the trace says which was not."""
        reply = AgentReply(answer=f"Not run: the user did not approve the call to {call.agent_id}.", declined=True, meta={"not_approved": True})
        return self._finish_call(ctx, call, round, parent_id, step_id, index, reply, None, time.perf_counter(), None)

    def _replay_call(self, ctx: _RunContext, call: Call, round: int, parent_id: str, step_id: str, index: int) -> dict[str, Any]:
        assert ctx.recording is not None
        step = ctx.recording.take_call(round, call, index)
        observation = Observation(
            agent_id=call.agent_id,
            query=call.query,
            answer=step.response.get("answer") if not step.error else None,
            declined=bool(step.response.get("declined")) and not step.error,
            error=step.error,
            weight=call.weight,
            round=round,
            model_id=step.model_id,
            prompt_tokens=step.prompt_tokens,
            completion_tokens=step.completion_tokens,
            cost_usd=step.cost_usd,
            latency_ms=0.0,
            meta=(step.response.get("meta") or {}) if not step.error else {},
        )
        # the agent's own model calls are served with its answer; copied so the replay's trace has the same shape,
        # and counted, so the replay's tokens and cost are the original's
        model_steps = self._copy_model_calls(ctx, step.id, step_id)
        if not model_steps and not step.error:  # usage the agent reported itself, counted as the original counted it
            ctx.tracker.add_usage(step.prompt_tokens, step.completion_tokens, _reported_cost(step.prompt_tokens, step.completion_tokens, step.cost_usd))
        self._record_call(ctx, observation, parent_id, step_id, call, index, step.response.get("retried", []), served=True)
        if step.error and step.error.get("type") in (RunCancelled.__name__, BudgetExceeded.__name__):
            # the original run was stopped during this call: so is the replay, with the same error and totals
            raise ctx.recording.missing(f"round {round}: the call to {call.agent_id!r}")
        return {"observations": [observation]}

    @staticmethod
    def _copy_model_calls(ctx: _RunContext, original_parent: str, parent_id: str) -> list[StepRecord]:
        """The recorded model calls under step ``original_parent``, copied under ``parent_id`` and counted in the
        run's totals and budget as the original counted them; returns them."""
        assert ctx.recording is not None
        model_steps = list(ctx.recording.model_calls.get(original_parent, ()))
        for model_step in model_steps:
            ctx.record(model_step.model_copy(update={"id": new_id(), "run_id": ctx.run.id, "parent_id": parent_id, "latency_ms": 0.0, "seq": None}))
            usage = (model_step.prompt_tokens, model_step.completion_tokens, model_step.cost_usd)
            if not model_step.error or _was_billed(*usage):  # a failed call counts what it was billed, as in the original
                ctx.tracker.add_usage(*usage)
            elif model_step.error.get("type") == RunCancelled.__name__:  # sent, then stopped: its cost is unknown
                ctx.tracker.add_usage(0, 0, None)
        return model_steps

    @staticmethod
    def _as_error(exc: Exception, agent_id: str) -> OrchestraError:
        if isinstance(exc, OrchestraError):
            return exc
        return AgentError(f"agent {agent_id!r} failed: {type(exc).__name__}: {exc}", agent_id=agent_id)

    def _call(self, payload: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        ctx = _ctx(config)
        call, round, parent_id, step_id, index = self._prepare_call(ctx, payload)
        if ctx.recording is not None and ctx.recording.serves_call(round, call, index):
            return self._replay_call(ctx, call, round, parent_id, step_id, index)
        if isinstance(ctx.recording, _Resume) and ctx.recording.rejects(round, call):
            return self._not_approved(ctx, call, round, parent_id, step_id, index)
        with ctx.call_slot():
            return self._call_live(ctx, call, round, parent_id, step_id, index)

    def _call_live(self, ctx: _RunContext, call: Call, round: int, parent_id: str, step_id: str, index: int) -> dict[str, Any]:
        started = time.perf_counter()
        attempts = None
        try:
            context, agent = self._context(ctx, call, round, step_id)
            attempts = _CallAttempts(context.models)  # type: ignore[arg-type]
            reply, error = self._attempts(ctx, call, context, agent, attempts), None
        except (BudgetExceeded, RunCancelled) as exc:  # a budget, or a cancel, stops the whole run, not just this call; the call stays in the trace
            self._finish_call(ctx, call, round, parent_id, step_id, index, None, exc, started, attempts)
            raise
        except Exception as exc:  # one failing agent does not fail the run: it becomes an observation
            reply, error = None, self._as_error(exc, call.agent_id)
        except BaseException:  # the caller stopped the run during the call (Ctrl-C, a cancelled task): kept too
            self._finish_call(ctx, call, round, parent_id, step_id, index, None, RunCancelled(f"the run was stopped during this call to {call.agent_id!r}"),
                              started, attempts)
            raise
        if reply is not None and not isinstance(reply, AgentReply):
            reply, error = None, AgentError(f"agent {call.agent_id!r} returned {type(reply).__name__}", agent_id=call.agent_id)
        return self._finish_call(ctx, call, round, parent_id, step_id, index, reply, error, started, attempts)

    @staticmethod
    def _attempts(ctx: _RunContext, call: Call, context: AgentContext, agent: Any, attempts: _CallAttempts) -> Any:
        """The agent's answer to ``call``: one attempt, or as many as its card's `RetryPolicy` allows (tenacity's
        loop, as for model calls), each on its own model access and within its ``timeout_s``."""
        policy = context.card.retry
        if policy is None:
            return _run_within(ctx, attempts.accesses[0], lambda: agent.run(call.query, context))
        for attempt in Retrying(**retrying(policy, _agent_retryable), before_sleep=attempts.failed):
            with attempt:
                access = attempts.access(attempt.retry_state.attempt_number)
                attempt_context = replace(context, models=access)
                return _run_within(ctx, access, lambda: agent.run(call.query, attempt_context), policy.timeout_s)
        raise AssertionError("tenacity ends with a result or the last error")  # pragma: no cover

    async def _acall(self, payload: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        ctx = _ctx(config)
        call, round, parent_id, step_id, index = self._prepare_call(ctx, payload)
        if ctx.recording is not None and ctx.recording.serves_call(round, call, index):
            return self._replay_call(ctx, call, round, parent_id, step_id, index)
        if isinstance(ctx.recording, _Resume) and ctx.recording.rejects(round, call):
            return self._not_approved(ctx, call, round, parent_id, step_id, index)
        async with ctx.acall_slot():
            return await self._acall_live(ctx, call, round, parent_id, step_id, index)

    async def _acall_live(self, ctx: _RunContext, call: Call, round: int, parent_id: str, step_id: str, index: int) -> dict[str, Any]:
        started = time.perf_counter()
        attempts = None
        try:
            context, agent = self._context(ctx, call, round, step_id)
            attempts = _CallAttempts(context.models)  # type: ignore[arg-type]
            reply, error = await self._aattempts(ctx, call, context, agent, attempts), None
        except (BudgetExceeded, RunCancelled) as exc:  # a budget, or a cancel, stops the whole run, not just this call; the call stays in the trace
            self._finish_call(ctx, call, round, parent_id, step_id, index, None, exc, started, attempts)
            raise
        except Exception as exc:
            reply, error = None, self._as_error(exc, call.agent_id)
        except BaseException:  # the caller stopped the run during the call (Ctrl-C, a cancelled task): kept too
            self._finish_call(ctx, call, round, parent_id, step_id, index, None, RunCancelled(f"the run was stopped during this call to {call.agent_id!r}"),
                              started, attempts)
            raise
        if reply is not None and not isinstance(reply, AgentReply):
            reply, error = None, AgentError(f"agent {call.agent_id!r} returned {type(reply).__name__}", agent_id=call.agent_id)
        return self._finish_call(ctx, call, round, parent_id, step_id, index, reply, error, started, attempts)

    @staticmethod
    async def _aattempts(ctx: _RunContext, call: Call, context: AgentContext, agent: Any, attempts: _CallAttempts) -> Any:
        """Async twin of `_attempts`."""
        policy = context.card.retry
        if policy is None:
            return await _arun_within(ctx, attempts.accesses[0], agent.arun(call.query, context))
        async for attempt in AsyncRetrying(**retrying(policy, _agent_retryable), before_sleep=attempts.failed):
            with attempt:
                access = attempts.access(attempt.retry_state.attempt_number)
                return await _arun_within(ctx, access, agent.arun(call.query, replace(context, models=access)), policy.timeout_s)
        raise AssertionError("tenacity ends with a result or the last error")  # pragma: no cover

    # -- aggregate node -----------------------------------------------------------------------------------------

    def _aggregate_inputs(self, ctx: _RunContext, state: _GraphState) -> tuple[list[Observation], str, Any]:
        if ctx.exact:
            self._same_aggregator_as_recorded(ctx)
        observations = state.get("observations", [])
        step_id = new_id()
        original = ctx.recording.aggregate_parent if ctx.exact else None  # type: ignore[union-attr]
        return observations, step_id, ctx.access(step_id, state.get("round", 0), original)

    def _after_aggregate(self, ctx: _RunContext, state: _GraphState, observations: list[Observation], step_id: str, result: Aggregated, started: float) -> dict[str, Any]:
        if not any(obs.ok for obs in observations):
            failures = "; ".join(f"{obs.agent_id}: {obs.error.get('message') if obs.error else ''}" for obs in observations)
            raise AgentError(f"every dispatched agent failed ({failures})")
        self._record_aggregate(ctx, state, observations, step_id, started, response={"answer": result.answer, "meta": result.meta})
        ctx.emit("aggregate", answer=result.answer, meta=result.meta)
        return {"answer": result.answer}

    def _checked(self, ctx: _RunContext, result: Any) -> Aggregated:
        if not isinstance(result, Aggregated):
            raise AgentError(f"aggregator {self.aggregator.name!r} returned {type(result).__name__}, not Aggregated")
        if ctx.exact:
            assert ctx.recording is not None
            # the answer alone was compared: an aggregator that skipped the original's model calls (a judge left out)
            # matched whenever it happened to land on the same answer
            left = ctx.recording.model_calls.get(ctx.recording.aggregate_parent or "")
            if left:
                raise ReplayMismatch(f"the aggregator made {len(left)} model call(s) fewer than the original's aggregation "
                                     f"(next recorded: {left[0].model_id!r})")
        return result

    def _same_aggregator_as_recorded(self, ctx: _RunContext) -> None:
        """`ReplayMismatch` unless an exact replay's aggregator describes itself (`describe`) as the original's did:
        replay rebuilds only the shipped aggregators, and takes one of the user's own as given, so a replay given
        another configuration (or another aggregator) was reported exact whenever its answer came out the same. Only
        what the record names is compared: a description that gained a field since still matches."""
        assert ctx.recording is not None
        recorded = ctx.recording.trace.run.meta.get("aggregator")
        if not isinstance(recorded, dict):  # a multi-round run, or one recorded before aggregators described themselves
            return
        given = to_jsonable_python(describe_aggregator(self.aggregator))  # as the store keeps it (a tuple as a list)
        differs = sorted(key for key in recorded if given.get(key) != recorded[key])
        if differs:
            raise ReplayMismatch(
                f"the aggregator given describes itself as {given}, the original run's as {recorded} (differs in "
                f"{', '.join(differs)}): replay it with the aggregator configured as the original was"
            )

    def _fail_aggregate(self, ctx: _RunContext, state: _GraphState, observations: list[Observation], step_id: str, exc: Exception, started: float) -> NoReturn:
        """Record the failed aggregate step (so the aggregator's model calls hang off it in the tree and an exact
        replay finds them) and raise the run's typed error: the refining agent's own bug is an `AgentError`."""
        if isinstance(exc, OrchestraError):
            self._record_aggregate(ctx, state, observations, step_id, started, error=exc.to_record())
            raise exc
        error = AgentError(f"aggregator {self.aggregator.name!r} raised {type(exc).__name__}: {exc}")
        self._record_aggregate(ctx, state, observations, step_id, started, error=error.to_record())
        raise error from exc

    def _record_aggregate(
        self, ctx: _RunContext, state: _GraphState, observations: list[Observation], step_id: str, started: float,
        *, response: dict[str, Any] | None = None, error: dict[str, str] | None = None,
    ) -> None:
        ctx.record(
            StepRecord(
                id=step_id,
                run_id=ctx.run.id,
                kind="aggregate",
                round=state.get("round", 0),
                request={"aggregator": self.aggregator.name, "observations": len(observations)},
                response=(response or {}) | ctx.mark(served=False),
                error=error,
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        )

    def _serve_aggregate(self, ctx: _RunContext, recorded: StepRecord) -> dict[str, Any]:
        """A resumed run's aggregation copied from the record with its model calls: every answer it merged was
        served unchanged, and it succeeded."""
        step_id = new_id()
        self._copy_model_calls(ctx, recorded.id, step_id)
        ctx.record(recorded.model_copy(update={
            "id": step_id, "run_id": ctx.run.id, "latency_ms": 0.0, "seq": None, "created_at": datetime.now(UTC),
            "response": recorded.response | ctx.mark(served=True),
        }))
        ctx.emit("aggregate", answer=recorded.response.get("answer"), meta=recorded.response.get("meta", {}))
        return {"answer": recorded.response.get("answer")}

    def _aggregate(self, state: _GraphState, config: RunnableConfig) -> dict[str, Any]:
        ctx = _ctx(config)
        if ctx.recording is not None and (recorded := ctx.recording.served_aggregate()) is not None:
            return self._serve_aggregate(ctx, recorded)
        observations, step_id, access = self._aggregate_inputs(ctx, state)
        started = time.perf_counter()
        if not any(obs.ok for obs in observations):
            return self._after_aggregate(ctx, state, observations, step_id, Aggregated(""), started)
        try:
            result = self._checked(ctx, self.aggregator.aggregate(state["query"], observations, access))
        except Exception as exc:
            self._fail_aggregate(ctx, state, observations, step_id, exc, started)
        return self._after_aggregate(ctx, state, observations, step_id, result, started)

    async def _aaggregate(self, state: _GraphState, config: RunnableConfig) -> dict[str, Any]:
        ctx = _ctx(config)
        if ctx.recording is not None and (recorded := ctx.recording.served_aggregate()) is not None:
            return self._serve_aggregate(ctx, recorded)
        observations, step_id, access = self._aggregate_inputs(ctx, state)
        started = time.perf_counter()
        if not any(obs.ok for obs in observations):
            return self._after_aggregate(ctx, state, observations, step_id, Aggregated(""), started)
        try:
            result = self._checked(ctx, await self.aggregator.aaggregate(state["query"], observations, access))
        except Exception as exc:
            self._fail_aggregate(ctx, state, observations, step_id, exc, started)
        return self._after_aggregate(ctx, state, observations, step_id, result, started)

    # -- running ------------------------------------------------------------------------------------------------

    def _start(
        self,
        query: str,
        session_id: str | None,
        routing: RoutingPolicy | None,
        *,
        history: Sequence[Turn] | None = None,
        recording: _Recording | None = None,
        replay_of: str | None = None,
        replay_mode: Literal["exact", "counterfactual", "resume"] | None = None,
        meta: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> tuple[_RunContext, dict[str, Any], RunnableConfig]:
        _expect("query", query, lambda value: isinstance(value, str) and bool(value.strip()), "a non-empty string")
        passed = _passed_config(config)
        _expect("session_id", session_id, lambda value: value is None or (isinstance(value, str) and bool(value.strip())), "a non-empty string")
        _expect("routing", routing, lambda value: value is None or isinstance(value, RoutingPolicy), "a RoutingPolicy")
        _expect("history", history, lambda value: value is None or (isinstance(value, Sequence) and not isinstance(value, str)
                                                                    and all(isinstance(turn, Turn) for turn in value)), "a sequence of Turn")
        if history is not None:
            turns = tuple(history)
        elif session_id is None:
            turns = ()  # a new session has no history: no need to ask the store
        else:
            turns = self.app.history(session_id)
        session_id = session_id or new_id()
        policy = routing or self.routing
        describe = getattr(self.router, "describe", None)
        run = RunRecord(
            id=run_id or new_id(),
            session_id=session_id,
            query=query,
            router=getattr(self.router, "name", type(self.router).__name__),
            # taken in fresh, as the first decision will: a version read before another process's onboarding
            # would disagree with the decision's own
            registry_version=self.app.registry.version if recording is not None and not recording.resume else self.app.registry.refresh(),
            replay_of=replay_of,
            replay_mode=replay_mode,
            meta={
                "router": describe() if describe else {"name": getattr(self.router, "name", "")},
                # how the graph loops, kept for an exact replay that serves the decisions of a router it cannot rebuild
                "multi_round": bool(getattr(self.router, "multi_round", False)),
                # None: a multi-round router answers itself, with no aggregation
                "aggregator": None if getattr(self.router, "multi_round", False) else describe_aggregator(self.aggregator),
                "policy": policy.model_dump(),
                "budget": self.budget.model_dump(),
                "history": [turn.model_dump() for turn in turns],
                "pid": os.getpid(),
                "host": socket.gethostname(),
                **(meta or {}),
            },
        )
        self.app.store.start_run(run)
        ctx = _RunContext(self.app, self, run, turns, policy, recording, self.router)
        # from a node of the user's own graph, whose stream (subgraphs=True) carries the run's events: its models'
        # answers stream there as token events, as in `stream`
        ctx.streaming = _inside_a_graph()
        graph_config: RunnableConfig = {
            **passed,  # type: ignore[typeddict-item]
            # tracers (LangSmith, Langfuse) see the run's id beside their own, to find its trace in the store
            "metadata": {**passed.get("metadata", {}), "orchestra_run_id": run.id},
            "configurable": {"orchestra_run": ctx},
            "recursion_limit": 4 * self.budget.max_rounds + 10,
            # always set: from a node of the user's graph the run would otherwise take that graph's max_concurrency.
            # A dispatch never holds more than max_calls calls, plus one for the waiter LangGraph's sync stream runs
            # in the same pool; max_parallel_calls is kept by the run itself (`_RunContext.call_slot`)
            "max_concurrency": self.budget.max_calls + 1,
        }
        self.app._under_way[run.id] = ctx.tracker
        return ctx, {"query": query, "round": 0, "observations": []}, graph_config

    def _finish(self, ctx: _RunContext, final: Mapping[str, Any] | None, error: BaseException | None) -> RunResult:
        run = ctx.run
        self.app._under_way.pop(run.id, None)
        typed: OrchestraError | None = None
        if isinstance(error, (GeneratorExit, KeyboardInterrupt, asyncio.CancelledError)):
            typed = RunCancelled(f"the run was stopped before it finished ({type(error).__name__})")
        elif error is not None:
            typed = error if isinstance(error, OrchestraError) else RunError(f"{type(error).__name__}: {error}")
        if typed is not None:
            self._record_error_step(ctx, typed)
        answer = None if typed is not None or final is None else final.get("answer")
        if ctx.exact and typed is None and answer != ctx.recording.trace.run.answer:  # type: ignore[union-attr]
            typed = ReplayMismatch("the replayed answer differs from the recorded answer")
            self._record_error_step(ctx, typed)
            answer = None
        tracker = ctx.tracker
        run.status = "ok" if typed is None else ("interrupted" if isinstance(typed, RunCancelled) else "error")
        run.answer = answer
        run.error = typed.to_record() if typed else None
        run.finished_at = datetime.now(UTC)
        run.prompt_tokens = tracker.prompt_tokens
        run.completion_tokens = tracker.completion_tokens
        run.cost_usd = None if tracker.cost_unknown else tracker.cost_usd
        run.latency_ms = tracker.elapsed() * 1000
        try:
            self.app.store.finish_run(run)
        except StoreError as exc:
            if error is None or isinstance(error, RunError):
                raise  # the run's result is returned: its caller must learn that it was not stored
            # the caller raises the error that stopped the run (often this store's own failure, a moment earlier)
            logger.warning("run %s: could not store how it ended (%s); it stays 'running' in the store", run.id, exc)
        return RunResult(
            run_id=run.id,
            session_id=run.session_id,
            status=run.status,
            answer=answer,
            decisions=tuple(ctx.decisions),
            observations=tuple(obs for _, _, obs in sorted(ctx.observations, key=lambda placed: placed[:2])),
            error=typed,
            out_of_scope=bool(final and final.get("out_of_scope")),
            prompt_tokens=run.prompt_tokens,
            completion_tokens=run.completion_tokens,
            cost_usd=run.cost_usd,
            latency_ms=run.latency_ms,
        )

    @staticmethod
    def _record_error_step(ctx: _RunContext, error: OrchestraError) -> None:
        """The step saying how the run failed, if the store takes it. The run's record carries the same error, so a
        store that refuses this step (often the very failure that stopped the run: a locked file, a dropped
        connection) must not keep `finish_run` from being tried: the run stayed ``running`` for ever."""
        try:
            ctx.record(StepRecord(run_id=ctx.run.id, kind="error", round=len(ctx.decisions), error=error.to_record()))
        except StoreError as exc:
            logger.warning("run %s: could not store its error step (%s)", ctx.run.id, exc)

    def run(
        self, query: str, *, session_id: str | None = None, routing: RoutingPolicy | None = None, history: Sequence[Turn] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Answer ``query`` (in ``session_id``, whose earlier turns are the history, or with the turns given as
        ``history`` instead). ``routing`` overrides the workflow's policy for this run. Run-time failures are
        recorded and returned in `RunResult.error`; misconfiguration raises at once.

        ``config`` is passed to LangGraph with the run: ``callbacks`` (a LangSmith or Langfuse tracer, any LangChain
        callback handler), ``tags``, ``metadata`` and ``run_name``; the metadata gains ``orchestra_run_id``. The
        rest of LangGraph's config is the workflow's own (`Budget` sets the recursion limit and concurrency)."""
        return self._run(query, session_id, routing, history=history, config=config)

    def _run(self, query: str, session_id: str | None, routing: RoutingPolicy | None, **start: Any) -> RunResult:
        """`run`, with what a replay adds (its recording and what it replays)."""
        ctx, inputs, config = self._start(query, session_id, routing, **start)
        try:
            final = self.graph.invoke(inputs, config)
        except RunError as exc:
            return self._finish(ctx, None, exc)
        except BaseException as exc:
            self._finish(ctx, None, exc)
            raise
        return self._finish(ctx, final, None)

    async def arun(
        self, query: str, *, session_id: str | None = None, routing: RoutingPolicy | None = None, history: Sequence[Turn] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Async twin of `run`: agents and models are called through their async interfaces."""
        return await self._arun(query, session_id, routing, history=history, config=config)

    async def _arun(self, query: str, session_id: str | None, routing: RoutingPolicy | None, **start: Any) -> RunResult:
        """`arun`, with what a resumed run adds (its recording and what it resumes)."""
        ctx, inputs, config = self._start(query, session_id, routing, **start)
        try:
            final = await self.async_graph.ainvoke(inputs, config)
        except RunError as exc:
            return self._finish(ctx, None, exc)
        except BaseException as exc:
            self._finish(ctx, None, exc)
            raise
        return self._finish(ctx, final, None)

    def stream(
        self, query: str, *, session_id: str | None = None, routing: RoutingPolicy | None = None, history: Sequence[Turn] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> Generator[RunEvent, None, None]:
        """Run ``query`` and yield a `RunEvent` as each step happens; the last event is ``run_finished`` with
        the `RunResult` in ``data["result"]``. ``config`` as for `run`. Closing the generator before the end
        (``close()``, `contextlib.closing`) stops the run, stored as interrupted."""
        return self._stream(query, session_id, routing, history=history, config=config)

    def _stream(self, query: str, session_id: str | None, routing: RoutingPolicy | None, **start: Any) -> Generator[RunEvent, None, None]:
        """`stream`, with what a resumed run adds (its recording and what it resumes)."""
        ctx, inputs, config = self._start(query, session_id, routing, **start)
        ctx.streaming = True
        answer = _AnswerStream(self)
        final: dict[str, Any] = {}
        delivered: set[str] = set()
        try:
            # inside the try: a reader that stops at this first event (Ctrl-C, a closed connection) has the run
            # stored as interrupted, not left "running"
            yield RunEvent("run_started", ctx.run.id, {"query": query, "session_id": ctx.run.session_id})
            # with a list of modes LangGraph yields (mode, chunk) pairs, which its types do not say
            for mode, chunk in cast(Iterator[tuple[str, Any]], self.graph.stream(inputs, config, stream_mode=["custom", "values"])):
                if mode == "custom":
                    yield chunk
                    if chunk.kind == "call":
                        delivered.add(chunk.data["step"])
                    if (more := answer.after(chunk)) is not None:
                        yield more
                else:
                    final = chunk
        except RunError as exc:
            result = self._finish(ctx, None, exc)
        except BaseException as exc:
            # the reader stopped (closed the stream, Ctrl-C, a cancelled task): the graph's calls still under way stop
            # at their next step or token, so closing the graph below does not wait for them to finish
            ctx.tracker.cancelled = True
            self._finish(ctx, None, exc)
            raise
        else:
            result = self._finish(ctx, final, None)
        for event in ctx.undelivered_calls(delivered):
            yield event
        if (rest := answer.finish(result)) is not None:
            yield rest
        yield RunEvent("run_finished", ctx.run.id, {"result": result})

    def astream(
        self, query: str, *, session_id: str | None = None, routing: RoutingPolicy | None = None, history: Sequence[Turn] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[RunEvent, None]:
        """Async twin of `stream` (``aclose()`` stops the run, stored as interrupted)."""
        return self._astream(query, session_id, routing, history=history, config=config)

    async def _astream(self, query: str, session_id: str | None, routing: RoutingPolicy | None, **start: Any) -> AsyncGenerator[RunEvent, None]:
        """`astream`, with what a resumed run adds."""
        ctx, inputs, config = self._start(query, session_id, routing, **start)
        ctx.streaming = True
        answer = _AnswerStream(self)
        final: dict[str, Any] = {}
        delivered: set[str] = set()
        try:
            # inside the try: a reader that stops at this first event (Ctrl-C, a closed connection) has the run
            # stored as interrupted, not left "running"
            yield RunEvent("run_started", ctx.run.id, {"query": query, "session_id": ctx.run.session_id})
            # (mode, chunk) pairs, as in _stream
            async for mode, chunk in cast(AsyncIterator[tuple[str, Any]], self.async_graph.astream(inputs, config, stream_mode=["custom", "values"])):
                if mode == "custom":
                    yield chunk
                    if chunk.kind == "call":
                        delivered.add(chunk.data["step"])
                    if (more := answer.after(chunk)) is not None:
                        yield more
                else:
                    final = chunk
        except RunError as exc:
            result = self._finish(ctx, None, exc)
        except BaseException as exc:
            # the reader stopped (closed the stream, Ctrl-C, a cancelled task): the graph's calls still under way stop
            # at their next step or token, so closing the graph below does not wait for them to finish
            ctx.tracker.cancelled = True
            self._finish(ctx, None, exc)
            raise
        else:
            result = self._finish(ctx, final, None)
        for event in ctx.undelivered_calls(delivered):
            yield event
        if (rest := answer.finish(result)) is not None:
            yield rest
        yield RunEvent("run_finished", ctx.run.id, {"result": result})


class Orchestra:
    """An application: the registry of agents and models, the trace store, and how models are reached.

    ``store`` is a `Store` or a database URL (default: ``$ORCHESTRA_DB_URL`` or SQLite under ``~/.orchestra``).
    ``model_factory`` builds the chat model for a card (default: the OpenAI-compatible client; tests pass
    ``orchestra.testing.ScriptedModels``)."""

    def __init__(
        self,
        *,
        store: Store | str | None = None,
        model_factory: ModelFactory | None = None,
        retry: RetryPolicy | None = None,
        fallback: FallbackPolicy | None = None,
    ) -> None:
        _expect("retry", retry, lambda value: value is None or isinstance(value, RetryPolicy), "a RetryPolicy")
        _expect("fallback", fallback, lambda value: value is None or isinstance(value, FallbackPolicy), "a FallbackPolicy")
        if store is None or isinstance(store, str):
            from orchestra.store import open_store

            store = open_store(store)
        _expect("store", store, lambda value: isinstance(value, Store), "a Store or a database URL")
        self.store: Store = store
        self.store.mark_interrupted()  # runs a dead process left behind are marked, not lost
        self.registry = Registry(store)
        self.retry = retry or RetryPolicy()
        self.fallback = fallback or FallbackPolicy()
        self.models = _ModelHub(model_factory or _default_model_factory, self.retry)
        self._under_way: dict[str, _Tracker] = {}
        """The runs of this application under way in this process, by id, for `cancel`."""

    def cancel(self, run_id: str) -> bool:
        """Stop run ``run_id``, under way in this process (another thread, another task): a model writing for it
        stops at its next token (its stream is closed, so the model stops writing for nobody), and nothing more is
        asked of a router, an agent or a model; the run ends ``interrupted`` (`RunCancelled`), as when its stream is
        closed, and can be resumed. An agent in the middle of a call of its own (a tool) finishes that call first.
        ``False`` when no such run is under way here."""
        tracker = self._under_way.get(run_id)
        if tracker is None:
            return False
        tracker.cancelled = True
        return True

    def workflow(
        self,
        router: Router | str,
        *,
        aggregator: Aggregator | None = None,
        budget: Budget | None = None,
        routing: RoutingPolicy | None = None,
        **router_options: Any,
    ) -> Workflow:
        """The standard routed graph for ``router`` (an object, or a name registered as an entry point, built with
        ``router_options``). ``aggregator`` makes one answer of the calls a single-shot router dispatched
        (`PassThrough` when not given); a multi-round router writes the answer itself, and is given none."""
        if isinstance(router, str):
            router = load_router(router, **router_options)
        elif router_options:
            # a router object is already built: its options went nowhere, and the run used the router as it was
            raise ConfigurationError(
                f"router options {', '.join(map(repr, sorted(router_options)))} are for a router given by name; "
                f"{type(router).__name__} is already built: give them to it when you build it"
            )
        return Workflow(self, router, aggregator=aggregator, budget=budget, routing=routing)

    def model_access(self) -> ModelAccess:
        """Call models by card id outside a run (benchmarks, scripts): resolved in the registry, with the
        fallback policy, but not traced or budgeted. Inside a run, routers and agents get a traced one."""
        return _DirectModelAccess(self)

    def history(self, session_id: str, turns: int = HISTORY_TURNS) -> tuple[Turn, ...]:
        """The session's last ``turns`` completed exchanges (each a user and an assistant `Turn`), oldest first.
        Replays are stored in their original's session but are not part of its history. A resumed run is: it
        finishes the user's turn, in place of the run it resumed (which, ended ok with an agent failed, would
        otherwise be the same turn twice), at the time it finished; so is a resume of a resume that failed, in place
        of both. A resume of a replay is a replay: no turn either."""
        runs: list[RunRecord] = []
        # a run that a resume in ``runs`` resumed, for the resume that stands for its turn: followed back through
        # resumes that failed (listed too) to the first run, which a replay's resume must not be taken for
        resumed_by: dict[str, str] = {}
        replayed: set[str] = set()
        page, offset = max(turns, 1) * 2, 0
        while len(runs) - len(replayed) < turns or resumed_by:  # replays are skipped before counting: they never push turns out
            found = self.store.list_runs(session_id=session_id, limit=page, offset=offset)
            for run in found:  # newest first: a resume is met before the run it resumed
                resumes = run.replay_of if run.replay_mode == "resume" else None
                if run.id in resumed_by:
                    turn = resumed_by.pop(run.id)
                    if resumes:
                        resumed_by[resumes] = turn
                    elif run.replay_of is not None:
                        replayed.add(turn)
                    continue
                if run.status != "ok" or (run.replay_of is not None and not resumes):
                    continue  # a failed or stopped run is no turn (until resumed), and a replay is none
                if resumes:
                    resumed_by[resumes] = run.id
                runs.append(run)
            if len(found) < page:
                break
            offset += page
        runs = [run for run in runs if run.id not in replayed][:turns]
        history: list[Turn] = []
        for run in reversed(runs):
            history.append(Turn(role="user", content=run.query))
            history.append(Turn(role="assistant", content=run.answer or ""))
        return tuple(history)
