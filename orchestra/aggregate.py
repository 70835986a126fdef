"""Aggregators: how the answers of the dispatched agents become one answer."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from orchestra.agent import REFINE_CUE, RefiningAgent
from orchestra.errors import ModelError
from orchestra.model import ChatOptions
from orchestra.routing import ModelAccess, Observation

__all__ = [
    "Aggregated",
    "Aggregator",
    "PassThrough",
    "Refine",
    "WeightedVote",
    "build_aggregator",
    "describe_aggregator",
    "normalise_answer",
]


@dataclass(frozen=True)
class Aggregated:
    """The merged answer, and how it was reached (for the trace)."""

    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Aggregator(Protocol):
    """What users implement to merge answers: one call and its async twin."""

    name: str

    def aggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        """One answer from the observations (failed ones included, marked); ``models`` calls models traced
        under this step. Raise (or return no `Aggregated`) to fail the run with an `AgentError`."""
        ...

    async def aaggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        """The async twin of `aggregate`."""
        ...


def describe_aggregator(aggregator: Aggregator) -> dict[str, Any]:
    """The aggregator's name and options, as recorded on a run so a replay can rebuild it."""
    describe = getattr(aggregator, "describe", None)
    return describe() if describe else {"name": getattr(aggregator, "name", type(aggregator).__name__)}


def build_aggregator(spec: dict[str, Any]) -> Aggregator | None:
    """Rebuild a shipped aggregator from its description; ``None`` for a user's own."""
    name = spec.get("name")
    if name == PassThrough.name:
        return PassThrough()
    if name == WeightedVote.name:
        return WeightedVote()
    if name == Refine.name and spec.get("model_id"):
        return Refine(spec["model_id"], always=bool(spec.get("always", False)))
    return None


NO_ANSWER = "None of the agents could answer this request."


class PassThrough:
    """One answer as it is; several answers listed under their agents' names."""

    name = "pass-through"

    def aggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        answered = [obs for obs in observations if obs.ok]
        if not answered:
            return Aggregated(NO_ANSWER, {"answered": 0})
        if len(answered) == 1:
            return Aggregated(answered[0].answer or "", {"answered": 1, "from": answered[0].agent_id})
        text = "\n\n".join(f"**{obs.agent_id}**: {obs.answer}" for obs in answered)
        return Aggregated(text, {"answered": len(answered)})

    async def aaggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        return self.aggregate(query, observations, models)


def normalise_answer(text: str) -> str:
    """Lower case, no accents, punctuation or articles, single spaces (SQuAD's normalisation)."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = re.sub(r"[^\w\s]", " ", text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


class WeightedVote:
    """For short or categorical answers: the answer whose agents' weights add up most wins."""

    name = "weighted-vote"

    def aggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        votes: dict[str, float] = {}
        first_form: dict[str, str] = {}
        for obs in observations:
            if not obs.ok or obs.answer is None:
                continue
            key = normalise_answer(obs.answer)
            votes[key] = votes.get(key, 0.0) + obs.weight
            first_form.setdefault(key, obs.answer.strip())
        if not votes:
            return Aggregated(NO_ANSWER, {"votes": {}})
        winner = max(votes, key=lambda key: votes[key])  # max keeps the first of equals: dispatch order
        return Aggregated(first_form[winner], {"votes": votes, "winner": winner})

    async def aaggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        return self.aggregate(query, observations, models)


def _without_cue(text: str) -> str:
    """The refiner's answer without the prompt's closing cue, which small models echo before or after it."""
    cue = REFINE_CUE.rstrip(":").lower()
    lines = text.strip().splitlines()
    while lines and lines[-1].strip().rstrip(":").lower() == cue:
        lines.pop()
    if lines and lines[0].strip().lower().startswith(cue + ":"):
        lines[0] = lines[0].strip()[len(cue) + 1 :]
    return "\n".join(lines).strip() or text.strip()


class Refine:
    """The Refining Agent on a model: merges complementary answers, states conflicts, refuses politely when
    nothing useful came back. A single good answer is passed through without a model call unless ``always``.
    When the refiner's model fails, the answers are listed as `PassThrough` lists them and the failure is kept
    in the step's ``meta["refine_failed"]``."""

    name = "refine"

    def __init__(self, model_id: str, *, always: bool = False, options: ChatOptions | None = None) -> None:
        self.agent = RefiningAgent(model_id, options)
        self.always = always

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model_id": self.agent.model_id, "always": self.always}

    def _shortcut(self, observations: Sequence[Observation]) -> Aggregated | None:
        answered = [obs for obs in observations if obs.ok]
        if not answered:
            return Aggregated(NO_ANSWER, {"answered": 0})
        if len(answered) == 1 and not self.always:
            return Aggregated(answered[0].answer or "", {"answered": 1, "from": answered[0].agent_id})
        return None

    @staticmethod
    def _unrefined(query: str, observations: Sequence[Observation], models: ModelAccess, error: ModelError) -> Aggregated:
        # The agents answered; the refiner could not merge them (down, context window exceeded, empty answer).
        # Their answers, listed, are worth more than no answer; the failure stays on the step's record.
        listed = PassThrough().aggregate(query, observations, models)
        return Aggregated(listed.answer, {**listed.meta, "refine_failed": error.to_record()})

    def aggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        shortcut = self._shortcut(observations)
        if shortcut is not None:
            return shortcut
        try:
            result = self.agent.refine(query, observations, models)
        except ModelError as exc:
            return self._unrefined(query, observations, models, exc)
        return Aggregated(_without_cue(result.text), {"answered": sum(obs.ok for obs in observations), "model": result.model_id})

    async def aaggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        shortcut = self._shortcut(observations)
        if shortcut is not None:
            return shortcut
        try:
            result = await self.agent.arefine(query, observations, models)
        except ModelError as exc:
            return self._unrefined(query, observations, models, exc)
        return Aggregated(_without_cue(result.text), {"answered": sum(obs.ok for obs in observations), "model": result.model_id})
