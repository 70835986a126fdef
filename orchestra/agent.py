"""The agent contract and the agent kinds Orchestra ships: `LLMAgent`, `FunctionAgent`, `RefiningAgent`."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from orchestra.cards import AgentCard
from orchestra.errors import AgentError, CardError
from orchestra.model import ChatOptions, ChatResult, Message
from orchestra.routing import ModelAccess, Observation, Turn

__all__ = ["Agent", "AgentContext", "AgentReply", "FunctionAgent", "LLMAgent", "RefiningAgent", "agent_for_card"]


@dataclass(frozen=True)
class AgentContext:
    """What an agent may use while answering one call."""

    card: AgentCard
    models: ModelAccess
    """Call models by card id through this: resolved at call time, retried, budgeted and recorded."""
    history: tuple[Turn, ...] = ()
    model_id: str | None = None
    """The model a model router chose for this call; ``None``: the card's own model."""
    run_id: str | None = None


@dataclass(frozen=True)
class AgentReply:
    """An agent's answer, with what its model calls used. An agent whose model calls go through
    ``context.models`` need not fill in the usage (the run counts those calls); one that pays for something else
    (a tool calling its own API) reports it here, and the run's totals and cost budget count it. A malformed reply
    (an answer that is no string, negative usage) fails that agent's call, naming the field."""

    answer: str
    model_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    declined: bool = False
    """True when ``answer`` says the agent cannot help with this request (a tool asked something outside its
    reach): the aggregators do not count it as an answer, so a refusal never outvotes, or gets merged with, the
    agent that did answer."""

    def __post_init__(self) -> None:
        # Checked here, where the agent's own code builds it, so the run records a failed call naming the field
        # instead of failing as a whole when the observation is built from it.
        if not isinstance(self.answer, str):
            raise TypeError(f"AgentReply.answer must be a str, not {type(self.answer).__name__}")
        if self.model_id is not None and not isinstance(self.model_id, str):
            raise TypeError(f"AgentReply.model_id must be a str or None, not {type(self.model_id).__name__}")
        for name in ("prompt_tokens", "completion_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"AgentReply.{name} must be a whole number of 0 or more, not {value!r}")
        cost = self.cost_usd
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int | float) or not 0 <= cost < float("inf")):
            raise ValueError(f"AgentReply.cost_usd must be a finite number of 0 or more or None, not {cost!r}")
        if not isinstance(self.meta, dict):
            raise TypeError(f"AgentReply.meta must be a dict, not {type(self.meta).__name__}")
        if not isinstance(self.declined, bool):
            raise TypeError(f"AgentReply.declined must be a bool, not {type(self.declined).__name__}")

    @classmethod
    def from_chat(cls, result: ChatResult, **meta: Any) -> AgentReply:
        return cls(
            answer=result.text,
            model_id=result.model_id,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cost_usd=result.cost_usd,
            meta=meta,
        )


@runtime_checkable
class Agent(Protocol):
    """What users implement for an agent that lives in Python: one call and its async twin."""

    def run(self, query: str, context: AgentContext) -> AgentReply:
        """Answer ``query`` (the part of the user's request this agent was given); ``context`` has its card, model
        access, the session's history and the run id. Raise to fail: the run records it and goes on."""
        ...

    async def arun(self, query: str, context: AgentContext) -> AgentReply:
        """The async twin of `run`."""
        ...


class FunctionAgent:
    """An agent backed by a Python callable ``fn(query) -> str`` (or ``fn(query, context)``; sync or async)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        parameters = inspect.signature(fn).parameters
        required = [p for p in parameters.values() if p.default is inspect.Parameter.empty
                    and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        # a second required parameter, or one named context (``fn(query, context=None)``, usable outside a run
        # too): the knowledge agent's optional context was never passed, so its model summary never ran
        self._wants_context = len(required) >= 2 or "context" in parameters
        # an object whose __call__ is async (a tool class holding its client) is no coroutine function itself:
        # called like a sync one, it returned an unawaited coroutine and every call failed
        self._is_async = inspect.iscoroutinefunction(fn) or (
            not inspect.isroutine(fn) and inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))
        )

    def _args(self, query: str, context: AgentContext) -> tuple[Any, ...]:
        return (query, context) if self._wants_context else (query,)

    @staticmethod
    def _reply(value: Any) -> AgentReply:
        if isinstance(value, AgentReply):
            return value
        if not isinstance(value, str):
            raise AgentError(f"function agent returned {type(value).__name__}, expected str")
        return AgentReply(answer=value)

    def run(self, query: str, context: AgentContext) -> AgentReply:
        if self._is_async:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # no loop in this thread: the usual case
                return self._reply(asyncio.run(self.fn(*self._args(query, context))))
            # `run` called from async code (a notebook, a web handler): asyncio.run cannot nest, so the coroutine
            # gets a loop of its own in a worker thread
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(1) as worker:
                return self._reply(worker.submit(asyncio.run, self.fn(*self._args(query, context))).result())
        return self._reply(self.fn(*self._args(query, context)))

    async def arun(self, query: str, context: AgentContext) -> AgentReply:
        if self._is_async:
            return self._reply(await self.fn(*self._args(query, context)))
        return self._reply(await asyncio.to_thread(self.fn, *self._args(query, context)))


class LLMAgent:
    """An agent that is a system prompt on a model card; a model router may choose another model per call."""

    def __init__(self, options: ChatOptions | None = None) -> None:
        self.options = options or ChatOptions(temperature=0.0, max_tokens=512)

    @staticmethod
    def messages(query: str, context: AgentContext) -> list[Message]:
        system = context.card.system_prompt or (
            f"You are {context.card.name}. {_sentence(context.card.description)} Answer the user's request directly and briefly."
        )
        messages = [Message(role="system", content=system)]
        messages += [Message(role=turn.role, content=turn.content) for turn in context.history]
        messages.append(Message(role="user", content=query))
        return messages

    @staticmethod
    def _model(context: AgentContext) -> str:
        model_id = context.model_id or context.card.model
        if not model_id:
            raise CardError(f"AgentCard {context.card.id!r}: field 'model' is empty and no model was routed", field="model")
        return model_id

    def run(self, query: str, context: AgentContext) -> AgentReply:
        result = context.models.chat(self._model(context), self.messages(query, context), self.options, purpose="agent")
        return AgentReply.from_chat(result)

    async def arun(self, query: str, context: AgentContext) -> AgentReply:
        result = await context.models.achat(
            self._model(context), self.messages(query, context), self.options, purpose="agent"
        )
        return AgentReply.from_chat(result)


def import_function(path: str) -> Any:
    """The object at ``package.module:attribute`` (dotted attributes allowed); `ImportError` or
    `AttributeError` when it is not there."""
    module_name, _, attr = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    return target


def check_function(path: str, *, card_id: str | None = None) -> None:
    """Raise `CardError` (field ``function``, naming ``card_id`` when given) unless ``path`` imports to a
    callable: what onboarding checks before a function agent is added, so a typo is refused at once rather than
    failing every run routed to it."""
    where = f"AgentCard {card_id!r}: " if card_id else ""
    try:
        target = import_function(path)
    except Exception as exc:  # noqa: BLE001 - whatever stops the import (a missing module, a broken one) is the card's to fix
        problem = f"cannot import {path!r}: {type(exc).__name__}: {exc}"
        raise CardError(f"{where}field 'function': {problem}", field="function", value=path) from None
    if not callable(target):
        raise CardError(f"{where}field 'function': {path!r} is not callable", field="function", value=path)


def check_functions(cards: Iterable[AgentCard]) -> None:
    """`check_function` for every function agent among ``cards``: what the CLI and the UI run before adding a
    batch (the registry itself imports a function only at the agent's first call)."""
    for card in cards:
        if card.backend == "function" and card.function:
            check_function(card.function, card_id=card.id)


def agent_for_card(card: AgentCard, implementation: Any = None) -> Agent:
    """The agent that answers for ``card``: its in-process implementation, its function, or an `LLMAgent`."""
    if implementation is not None:
        return implementation if isinstance(implementation, Agent) else FunctionAgent(implementation)
    if card.backend == "function":
        assert card.function is not None
        try:
            target = import_function(card.function)
        except (ImportError, AttributeError) as exc:
            raise AgentError(f"agent {card.id!r}: cannot import function {card.function!r}: {exc}", agent_id=card.id) from None
        if isinstance(target, type):
            target = target()
        return target if isinstance(target, Agent) else FunctionAgent(target)
    # "model" and "endpoint" agents both speak the OpenAI chat protocol; an endpoint agent's model card is
    # created by the runtime from the card's endpoint URL.
    return LLMAgent()


def _sentence(text: str) -> str:
    """``text`` ending as a sentence does, so the prompt's next sentence does not run into it."""
    text = text.strip()
    return text if text.endswith((".", "!", "?", ":")) else text + "."


REFINE_SYSTEM = """You are the refining agent. Several agents answered the user's request; merge their answers \
into one reply.
- Keep every correct, relevant point; combine complementary points into one coherent answer.
- Where answers conflict, say so plainly and give each position with the agent that holds it.
- Weigh agents by the weight given beside each; prefer exact results from tool agents (calculators, dates).
- If no answer is useful, say politely that you cannot answer, and why, in one or two sentences.
Reply with the merged answer only; do not mention this process unless answers conflict."""


REFINE_CUE = "Merged answer:"
"""The line that ends the refiner's prompt."""


class RefiningAgent:
    """Merges several agents' answers: combines complementary points, states conflicts plainly, refuses
    politely when every answer is useless. Backed by a model card."""

    def __init__(self, model_id: str, options: ChatOptions | None = None) -> None:
        self.model_id = model_id
        self.options = options or ChatOptions(temperature=0.0, max_tokens=512)

    @staticmethod
    def messages(query: str, observations: Sequence[Observation]) -> list[Message]:
        lines = []
        for number, obs in enumerate(observations, 1):
            body = obs.answer if obs.ok else f"(failed: {obs.error.get('message') if obs.error else 'unknown error'})"
            part = f" on '{obs.query}'" if obs.query != query else ""
            lines.append(f"[{number}] agent {obs.agent_id}{part} (weight {obs.weight:.2f}):\n{body}")
        user = f"User request:\n{query}\n\nAgents' answers:\n\n" + "\n\n".join(lines) + f"\n\n{REFINE_CUE}"
        return [Message(role="system", content=REFINE_SYSTEM), Message(role="user", content=user)]

    def refine(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> ChatResult:
        return models.chat(self.model_id, self.messages(query, observations), self.options, purpose="refine")

    async def arefine(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> ChatResult:
        return await models.achat(self.model_id, self.messages(query, observations), self.options, purpose="refine")
