"""The routing contract: a router is ``decide(state) -> Decision``.

A `Decision` either dispatches calls (agent id, sub-query, weight) with its rationale and a score for every
candidate it considered, or finishes with an answer. Single-shot routers dispatch once and the aggregator ends
the run; multi-round routers (``multi_round = True``) are asked again with the observations until they finish
or the budget ends.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol, cast, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from orchestra.cards import AgentCard, ModelCard
from orchestra.errors import CheckpointError, ConfigurationError, UnknownRouterError
from orchestra.model import ChatOptions, ChatResult, Message
from orchestra.policies import RoutingPolicy

__all__ = [
    "BaseRouter",
    "Call",
    "CandidateScore",
    "Decision",
    "Dispatch",
    "Finish",
    "ModelAccess",
    "Observation",
    "Router",
    "RouterState",
    "Turn",
    "available_routers",
    "load_router",
    "register_router",
    "router_answers_itself",
    "router_loads_checkpoint",
    "router_needs_training",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Call(_Frozen):
    """One agent call a decision dispatches."""

    agent_id: str
    query: str
    """The sub-query this agent should answer (the whole query, or its part for this agent)."""
    weight: float = Field(default=1.0, ge=0.0)
    """How much this agent's answer counts when answers are fused."""
    model_id: str | None = None
    """Model card that should back this agent for this call (model routers set it); ``None``: the card's own."""


class CandidateScore(_Frozen):
    """A router's score for one candidate (agent or model) it considered."""

    id: str
    score: float
    detail: dict[str, float | str | None] = Field(default_factory=dict)
    """Extra figures behind the score, e.g. ``{"quality": 0.81, "cost_usd": 0.0004}``."""


class Dispatch(_Frozen):
    """Call these agents (in parallel), then aggregate or ask the router again."""

    kind: Literal["dispatch"] = "dispatch"
    calls: tuple[Call, ...] = Field(min_length=1)
    rationale: str = ""
    scores: tuple[CandidateScore, ...] = ()
    """Every candidate considered, chosen or not, best first."""
    meta: dict[str, Any] = Field(default_factory=dict)
    """Router-specific facts for the trace (raw model output, dropped ids, ...)."""


class Finish(_Frozen):
    """End the run with this answer (multi-round routers), or refuse (out of scope)."""

    kind: Literal["finish"] = "finish"
    answer: str
    rationale: str = ""
    scores: tuple[CandidateScore, ...] = ()
    out_of_scope: bool = False
    """True when no agent fits the query; ``answer`` is then the refusal shown to the user."""
    meta: dict[str, Any] = Field(default_factory=dict)


Decision = Annotated[Dispatch | Finish, Field(discriminator="kind")]


class Turn(_Frozen):
    """One earlier message of the session."""

    role: Literal["user", "assistant"]
    content: str


class Observation(_Frozen):
    """What one dispatched call returned (or how it failed)."""

    agent_id: str
    query: str
    answer: str | None
    """``None`` when the call failed; ``error`` then says why."""
    error: dict[str, Any] | None = None
    weight: float = 1.0
    round: int = 0
    model_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    declined: bool = False
    """The agent answered that it cannot help (`AgentReply.declined`): ``ok``, but no answer to count."""
    meta: dict[str, Any] = Field(default_factory=dict)
    """What the agent reported beside its answer (`AgentReply.meta`: a confidence, its sources), for an aggregator
    to weigh; empty for a failed call."""

    @model_validator(mode="after")
    def _answer_or_error(self) -> Observation:
        if (self.answer is None) == (self.error is None):
            raise ValueError("an observation has either an answer or an error")
        return self

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def answered(self) -> bool:
        """An answer to count: the call succeeded and the agent did not decline."""
        return self.error is None and not self.declined


class ModelAccess(Protocol):
    """How routers and agents call models during a run: by model card id, resolved in the registry at call
    time, with retries, fallbacks and budgets applied and every call recorded (or replayed)."""

    def chat(
        self, model_id: str, messages: list[Message], options: ChatOptions | None = None, *, purpose: str = ""
    ) -> ChatResult:
        """Call the model card ``model_id`` (then the fallbacks); ``purpose`` labels the call in the trace."""
        ...

    async def achat(
        self, model_id: str, messages: list[Message], options: ChatOptions | None = None, *, purpose: str = ""
    ) -> ChatResult:
        """The async twin of `chat`."""
        ...


@dataclass(frozen=True)
class RouterState:
    """Everything a router may look at when it decides."""

    query: str
    agents: tuple[AgentCard, ...]
    """Agent cards as the registry has them now."""
    models: tuple[ModelCard, ...]
    """Model cards as the registry has them now."""
    registry_version: int
    history: tuple[Turn, ...] = ()
    observations: tuple[Observation, ...] = ()
    """Answers so far (multi-round routers see earlier rounds here)."""
    round: int = 0
    policy: RoutingPolicy = field(default_factory=RoutingPolicy)
    budget_left: dict[str, float | None] = field(default_factory=dict)
    """What is left of the run's budget: ``rounds``, ``calls``, ``cost_usd``, ``tokens``, ``seconds`` (``None``: no limit)."""
    model_access: ModelAccess | None = None
    """Call models through this (LLM routers); ``None`` outside a run."""
    run_id: str | None = None
    decisions: tuple[Dispatch, ...] = ()
    """The run's dispatches so far, in order, whether made live or served from a record (a resumed run): a
    multi-round router that keeps its reasoning in a decision's ``meta`` finds it here when another instance (or
    another process) made that decision."""

    def agent(self, agent_id: str) -> AgentCard | None:
        """The agent's card in this view, or ``None``."""
        return next((card for card in self.agents if card.id == agent_id), None)

    def model(self, model_id: str) -> ModelCard | None:
        """The model's card in this view, or ``None``."""
        return next((card for card in self.models if card.id == model_id), None)


@runtime_checkable
class Router(Protocol):
    """What users implement: a name and ``decide``. Set ``multi_round = True`` to be asked again with
    the observations after each round of calls."""

    @property
    def name(self) -> str:
        """The router's name, in traces and for an exact replay to rebuild it (`register_router`)."""
        # read-only here, so that a class attribute, a ClassVar (BaseRouter's) and an instance attribute all
        # satisfy it: declared ``name: str``, type checkers refused FunctionRouter and every BaseRouter subclass
        # that names itself per instance where a Router is expected
        ...

    def decide(self, state: RouterState) -> Dispatch | Finish:
        """The decision for ``state``: `Dispatch` (agents to call, with a score for every candidate) or `Finish`
        (the answer, or out of scope). Raising fails the run with a `DecisionError`."""
        ...


class BaseRouter:
    """Base class of the routers Orchestra ships: an async twin and single-shot by default."""

    name: ClassVar[str] = "router"
    multi_round: ClassVar[bool] = False
    calls_models: ClassVar[bool] = False
    """True for a router that asks a model to decide (TCAR, Router-R1): it needs ``state.model_access`` and a
    model card, and fails with `DecisionError` without them."""

    def decide(self, state: RouterState) -> Dispatch | Finish:
        """See `Router.decide`."""
        raise NotImplementedError

    async def adecide(self, state: RouterState) -> Dispatch | Finish:
        """The async twin of `decide`; by default `decide` in a worker thread."""
        return await asyncio.to_thread(self.decide, state)

    def describe(self) -> dict[str, Any]:
        """``{"name": ..., **constructor options}``: shown in traces and the UI, and how an exact replay
        rebuilds the router by name (``load_router(name, **options)``). Every other key must be an option the
        router takes, or the rebuild fails and the replay serves the recorded decisions instead, unchecked. What a
        trained router learnt goes under ``"trained"`` (a summary, not an option); with it, the replay rebuilds the
        router only from a ``"checkpoint"`` file named beside it, since built from its options alone it would be
        untrained. ``name`` should be the name the router is registered under: the run records it, and a replay
        in another process finds the router by it."""
        return {"name": self.name}

    def own_agents(self) -> Sequence[tuple[AgentCard, Any]]:
        """Agents that are part of the router, not of the team (Router-R1's model pool), each a card and its
        implementation (``None``: built from the card). A run dispatches to them when the registry holds no
        agent of that id (one it holds, e.g. a pool of recorded answers, is used instead); they are not among
        ``state.agents``, so other routers never see them."""
        return ()


_IN_PROCESS: dict[str, Callable[..., Router]] = {}
ENTRY_POINT_GROUP = "orchestra.routers"


def register_router(name: str, factory: Callable[..., Router]) -> None:
    """Make a router available by name in this process (packages use the ``orchestra.routers`` entry point); a
    name registered again, a shipped one included, is served by the new factory. `ConfigurationError` when the name
    is not a non-empty string or the factory cannot be called."""
    # refused here: a factory that cannot be called failed the first load_router with a bare TypeError, and a name
    # that is no string broke available_routers(), so every unknown router's error and `orchestra routers`
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ConfigurationError(f"register_router: name must be a non-empty string without surrounding spaces, got {type(name).__name__} {name!r:.60}")
    if not callable(factory):
        raise ConfigurationError(f"register_router({name!r}): factory must be a router class or a function returning a router, "
                                 f"got {type(factory).__name__} {factory!r:.60}")
    _IN_PROCESS[name] = factory


@cache
def _entry_points() -> dict[str, Any]:
    # read once per process, as most plugin hosts do: scanning every installed package's metadata takes tens of
    # milliseconds, and an exact replay looks a router up by name each time (`register_router` adds one later)
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_routers() -> list[str]:
    """Names of every router that `load_router` can build."""
    return sorted(set(_IN_PROCESS) | set(_entry_points()))


# ``package.module:Class`` (dotted attributes allowed), as function agents name their function
_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _factory(name: str) -> Callable[..., Router]:
    if name in _IN_PROCESS:
        return _IN_PROCESS[name]
    found = _entry_points().get(name)
    if found is not None:
        return found.load()  # type: ignore[no-any-return]
    if _IMPORT_PATH.fullmatch(name):
        return _imported_factory(name)
    raise UnknownRouterError(name, available_routers())


def _imported_factory(path: str) -> Callable[..., Router]:
    """The router class (or factory) at ``package.module:Class``: a router of one's own named on the command line
    (``--router mypkg.routing:MyRouter``) without registering it or installing a package with an entry point.
    `UnknownRouterError` when it cannot be imported or is not callable."""
    from orchestra.agent import import_function  # orchestra.agent imports this module

    module = path.partition(":")[0]
    try:
        target = import_function(path)
    except ImportError as exc:
        # the module itself not found (not one it imports): say where Python looks for it
        missing_itself = isinstance(exc, ModuleNotFoundError) and exc.name == module.partition(".")[0]
        hint = f"; a {module.partition('.')[0]} folder or .py in the working folder needs PYTHONPATH=. (or install its package)" if missing_itself else ""
        raise UnknownRouterError(path, available_routers(), reason=f"cannot import {module!r}: {exc}{hint}") from None
    except AttributeError as exc:
        raise UnknownRouterError(path, available_routers(), reason=f"module {module!r} has no such attribute ({exc})") from None
    if not callable(target) or (isinstance(target, type) and not callable(getattr(target, "decide", None))):
        raise UnknownRouterError(path, available_routers(),
                                 reason=f"{type(target).__name__} {target!r:.60} is not a router class or a function returning a router")
    return target  # type: ignore[no-any-return]


def load_router(name: str, **options: Any) -> Router:
    """Build the router registered under ``name`` with ``options``; `ConfigurationError` names an option it does
    not take or one it needs. A name that no registration or entry point holds and that reads
    ``package.module:Class`` is imported: a router of one's own, named on the command line as it is.

    The ``checkpoint`` file of a router that loads one (`router_loads_checkpoint`) is taken from the working folder
    and made absolute (symbolic links kept, as the user named them): the router records it in every run's meta, and an exact replay started from another folder
    (or the UI, wherever Streamlit runs) must rebuild it from the same file rather than serve its decisions
    unchecked. A router class with a ``load`` classmethod is built by ``load(PATH, **other options)`` (its
    constructor need not take ``checkpoint``; the other options are checked against it), and a file ``load`` cannot
    read is a `CheckpointError`. Every other option given overrides the one saved in the file, even at its default
    value."""
    factory = _factory(name)
    checkpoint = options.get("checkpoint")
    from_file = isinstance(checkpoint, (str, os.PathLike)) and bool(str(checkpoint)) and getattr(factory, "checkpoint_format", None) is not None
    load = getattr(factory, "load", None)
    by_load = from_file and isinstance(factory, type) and callable(load)
    # built by its class's load, the file is load's first argument: a constructor need not take ``checkpoint`` too
    # (one that did not was refused "takes no option 'checkpoint'", the file its checkpoint_format announces)
    besides_the_file = {key: value for key, value in options.items() if key != "checkpoint"}
    _check_options(name, factory, besides_the_file if by_load else options)
    if from_file:
        # from_file found it a str or a path; by_load below found load callable (narrowings a checker cannot carry)
        path = os.path.abspath(Path(cast("str | os.PathLike[str]", checkpoint)).expanduser())
        if by_load:
            # Built by its class's load, every option named beside the file overrides the saved one. The constructor
            # cannot tell an option given at its default from one left out, and kept the saved value:
            # --option k=100 (knn's default) served the saved k=10, --option agent_id=null the saved agent.
            try:
                return cast(Callable[..., Router], load)(path, **besides_the_file)
            except OSError as exc:
                # a router of the user's reads its file itself: a file moved or unreadable is named as the shipped
                # routers name it, where a bare FileNotFoundError was a traceback from the CLI and, from an exact
                # replay, a crash rather than the recorded decisions served with the reason
                raise CheckpointError(f"router {name!r}: cannot read checkpoint {path!r}: {exc.strerror or exc}") from exc
        options["checkpoint"] = path
    return factory(**options)


def router_needs_training(name: str) -> bool:
    """Whether the router registered under ``name`` decides only once trained on data (its class says
    ``needs_training``, as the model routers do): built by name alone, its first decision is a `DecisionError`."""
    return bool(getattr(_factory(name), "needs_training", False))


def router_answers_itself(name: str) -> bool:
    """Whether the router registered under ``name`` is multi-round (its class says ``multi_round``, as Router-R1
    does): it writes each run's answer in its `Finish`, so its workflow takes no aggregator."""
    return bool(getattr(_factory(name), "multi_round", False))


def router_loads_checkpoint(name: str) -> bool:
    """Whether the router registered under ``name`` can be built from a file its ``save`` wrote (its class names
    a ``checkpoint_format``): ``load_router(name, checkpoint=PATH)``, as the CLI's ``--option checkpoint=PATH``
    and the UI do for a router that decides only once trained."""
    return getattr(_factory(name), "checkpoint_format", None) is not None


def _signature(function: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(function, eval_str=True)
    except NameError:  # an annotation names a type-checking-only import: check names, not types
        return inspect.signature(function)


def _check_options(name: str, factory: Callable[..., Any], options: dict[str, Any]) -> None:
    try:
        signature = _signature(factory)
    except (TypeError, ValueError):  # a builtin or C callable: its own call says what is wrong
        return
    parameters = list(signature.parameters.values())
    if isinstance(factory, type):
        # a router's **options usually go on to its base class: take that class's parameters too
        for klass in factory.__mro__[1:]:
            if not any(p.kind is p.VAR_KEYWORD for p in parameters) or klass is object:
                break
            if "__init__" in vars(klass):
                # the base's own **options carries on the walk even when named like this class's
                named = {p.name for p in parameters if p.kind is not p.VAR_KEYWORD}
                base = [p for p in _signature(vars(klass)["__init__"]).parameters.values() if p.name != "self"]
                parameters = [p for p in parameters if p.kind is not p.VAR_KEYWORD] + [p for p in base if p.name not in named]
    open_ended = any(p.kind is p.VAR_KEYWORD for p in parameters)  # passes the rest on: not ours to judge
    takes = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(takes))
    if unknown and not open_ended:
        raise ConfigurationError(f"router {name!r} takes no option {', '.join(map(repr, unknown))}; its options: {', '.join(takes) or 'none'}")
    needed = [p.name for p in parameters if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in options]
    if needed:
        raise ConfigurationError(f"router {name!r} needs option {', '.join(map(repr, needed))} (`--option {needed[0]}=...` on the command line, workflow({name!r}, {needed[0]}=...) in Python)")
    for option, value in options.items():
        if option not in takes:
            continue
        annotation = next(p.annotation for p in parameters if p.name == option)
        if annotation is inspect.Parameter.empty or isinstance(annotation, str):
            continue
        try:  # lax, as the options of `--option k=3` arrive: a type check, the router still gets the value given
            TypeAdapter(annotation).validate_python(value)
        except ValidationError as exc:
            raise ConfigurationError(
                f"router {name!r} option {option!r}: {exc.errors()[0]['msg']} (got {value!r:.60})"
            ) from None
        except Exception:  # noqa: BLE001 - a type pydantic cannot check (a protocol, a class): the router checks it
            continue
