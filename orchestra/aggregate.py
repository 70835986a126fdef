"""Aggregators: how the answers of the dispatched agents become one answer."""

from __future__ import annotations

import ast
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from orchestra.agent import REFINE_CUE, RefiningAgent
from orchestra.cards import ModelCard
from orchestra.errors import ConfigurationError, ModelError, ModelOutputError
from orchestra.model import ChatOptions, ChatResult
from orchestra.routing import ModelAccess, Observation

__all__ = [
    "AGGREGATOR_NAMES",
    "Aggregated",
    "Aggregator",
    "Fuse",
    "PassThrough",
    "Refine",
    "WeightedVote",
    "answer_kind",
    "build_aggregator",
    "describe_aggregator",
    "extract_option",
    "named_aggregator",
    "normalise_answer",
    "option_letters",
]


@dataclass(frozen=True)
class Aggregated:
    """The merged answer, and how it was reached (for the trace)."""

    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Aggregator(Protocol):
    """What users implement to merge answers: one call and its async twin, and a ``name``. It may also have
    ``describe() -> dict``, its name and options (``{"name": "my-pick", "judge": "gpt-4o"}``, JSON values): each run
    records it (without it, the name alone), and an exact replay, which is given an aggregator of your own rather
    than rebuilding it, fails with a `ReplayMismatch` when the one given describes itself otherwise."""

    name: str

    def aggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        """One answer from the observations (failed ones included, marked); ``models`` calls models traced
        under this step. Raise (or return no `Aggregated`) to fail the run with an `AgentError`."""
        ...

    async def aaggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        """The async twin of `aggregate`."""
        ...


def describe_aggregator(aggregator: Aggregator) -> dict[str, Any]:
    """The aggregator's name and options, as recorded on a run so a replay can rebuild it (a shipped one) or check
    the one it is given (your own)."""
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
    if name == Fuse.name:
        return Fuse(spec.get("model_id"))
    return None


AGGREGATOR_NAMES = ("refine", "fuse", "weighted-vote", "pass-through")
"""The shipped aggregators by the names the CLI and the UI offer."""


def named_aggregator(name: str, models: Sequence[ModelCard]) -> Aggregator:
    """The shipped aggregator called ``name``, its Refining Agent on the local model when one is among ``models``
    (else the first); ``refine`` with no model at all passes the answers through."""
    refiner = next((m.id for m in models if m.local), None) or next((m.id for m in models), None)
    if name == "refine":
        return Refine(refiner) if refiner else PassThrough()
    if name == "fuse":
        return Fuse(refiner)
    if name == "weighted-vote":
        return WeightedVote()
    if name == "pass-through":
        return PassThrough()
    raise ConfigurationError(f"unknown aggregator {name!r}; choose one of {', '.join(AGGREGATOR_NAMES)}")


NO_ANSWER = "None of the agents could answer this request."


def _declined(observations: Sequence[Observation]) -> dict[str, list[str]]:
    """``{"declined": [agent ids]}`` for a step's meta when some agents declined, else ``{}``."""
    ids = [obs.agent_id for obs in observations if obs.ok and obs.declined]
    return {"declined": ids} if ids else {}


class PassThrough:
    """One answer as it is; several answers listed under their agents' names. Agents that declined are left out
    while another answered; when every agent declined, their refusals are what there is to show."""

    name = "pass-through"

    def aggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        return _as_they_came(observations)

    async def aaggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        return _as_they_came(observations)


def _as_they_came(observations: Sequence[Observation]) -> Aggregated:
    """`PassThrough`'s answer, which `Refine` also gives when there is nothing to merge or its model failed."""
    answered = [obs for obs in observations if obs.answered]
    shown = answered or [obs for obs in observations if obs.ok]
    meta = {"answered": len(answered), **_declined(observations)}
    if not shown:
        return Aggregated(NO_ANSWER, meta)
    if len(shown) == 1:
        return Aggregated(shown[0].answer or "", {**meta, "from": shown[0].agent_id})
    # one agent backed by several models (a model router's fusion) is told apart by its models
    ids = [obs.agent_id for obs in shown]
    text = "\n\n".join(
        f"**{obs.agent_id}{' @ ' + obs.model_id if ids.count(obs.agent_id) > 1 and obs.model_id else ''}**: {obs.answer}"
        for obs in shown
    )
    return Aggregated(text, meta)


def normalise_answer(text: str) -> str:
    """Lower case, no accents, punctuation or articles, single spaces (SQuAD's normalisation)."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = re.sub(r"[^\w\s]", " ", text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


_OPTION_LINE = re.compile(r"(?m)^\s*\(?([A-H])[).:]\s+\S")


def option_letters(query: str) -> str:
    """The option letters a multiple-choice query offers in its last block (``"ABCD"``); ``""`` when it is not
    multiple choice."""
    text = str(query).strip()
    blocks = [b for b in re.split(r"\n\s*\n", text) if b.strip()]
    tail = blocks[-1] if blocks else text
    letters = sorted(set(_OPTION_LINE.findall(tail)))
    if len(letters) < 2:
        return ""
    expected = "".join(chr(ord("A") + i) for i in range(len(letters)))
    return expected if "".join(letters) == expected else "".join(letters)


def _unwrap(response: str) -> str:
    """RouterBench stores responses as a Python list literal (``"['B']"``); take its first item."""
    text = response.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(value, list) and value:
            return str(value[0])
    return text


def extract_option(response: str | None, letters: str) -> str | None:
    """The option a response picks among ``letters``, or ``None`` when none can be read: a leading letter
    (``"B"``, ``"(B)"``, ``"B) Sarah"``), else "answer/option/choice is X", else a lone ``X)``."""
    if not response or not letters:
        return None
    text = _unwrap(str(response)).strip()
    allowed = re.escape(letters)
    match = re.match(rf"^[\s\(\[\"'*]*([{allowed}])(?![A-Za-z])", text)
    if match:
        return match.group(1)
    found: list[str] = re.findall(rf"\b(?:answer|option|choice)\s*(?:is|:)?\s*\(?([{allowed}])(?![A-Za-z])", text, flags=re.I)
    if found:
        return found[-1].upper()
    found = re.findall(rf"(?<![A-Za-z])([{allowed}])\)", text)
    return found[0] if len(set(found)) == 1 else None


_YES_NO = re.compile(r"\b(yes or no|true or false)\b")
_NUMBER_ASKED = re.compile(r"\banswer with (a|one) number\b")
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def extract_choice(response: str | None, query: str) -> str | None:
    """What a response chooses when ``query`` asks for a category: its option letter (lettered options), ``yes``
    or ``no`` (a yes-or-no or true-or-false question; true counts as yes), or its first number ("answer with a
    number"). ``None`` when the query asks for no category or the response states none (a refusal, a hedge)."""
    if not response:
        return None
    letters = option_letters(query)
    if letters:
        return extract_option(response, letters)
    asked = str(query).lower()
    if _YES_NO.search(asked):
        found = re.match(r"^[\W_]*(yes|no|true|false)\b", _unwrap(str(response)).lower())
        return None if not found else {"true": "yes", "false": "no"}.get(found.group(1), found.group(1))
    if _NUMBER_ASKED.search(asked):
        number = _NUMBER.search(str(response))
        return None if not number else number.group(0).replace(",", "")
    return None


def answer_kind(query: str) -> str:
    """``"vote"`` when the query asks for a short or categorical answer (lettered options, yes/no, a number),
    else ``"refine"`` (free text): which fusion its answers call for."""
    text = str(query)
    if len(_OPTION_LINE.findall(text[-2000:])) >= 2:
        return "vote"
    lowered = text.strip().lower()
    if re.search(r"\b(yes or no|true or false|answer with (a|one) (number|word|letter))\b", lowered):
        return "vote"
    return "refine"


class WeightedVote:
    """For short or categorical answers: the answer whose agents' weights add up most wins. When the query asks
    for a category (lettered options, yes or no, a number) answers vote for the one they state ("B", "(B)" and
    "B) Sarah" are one vote; "No." and "no, because…" too), and an answer that states none (a refusal) abstains,
    named in ``meta["abstained"]``; otherwise, or when every answer abstains, answers vote by their normalised
    text."""

    name = "weighted-vote"

    def aggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        answered = [obs for obs in observations if obs.answered]
        choices = [extract_choice(obs.answer, query) for obs in answered]
        categorical = any(choice is not None for choice in choices)
        votes: dict[str, float] = {}
        first_form: dict[str, str] = {}
        abstained: list[str] = []
        for obs, choice in zip(answered, choices, strict=True):
            key = choice if categorical else normalise_answer(obs.answer or "")
            if key is None:
                abstained.append(obs.agent_id)
                continue
            votes[key] = votes.get(key, 0.0) + obs.weight
            first_form.setdefault(key, (obs.answer or "").strip())
        if not votes:
            return Aggregated(NO_ANSWER, {"votes": {}, **_declined(observations)})
        winner = max(votes, key=lambda key: votes[key])  # max keeps the first of equals: dispatch order
        meta: dict[str, Any] = {"votes": votes, "winner": winner, **_declined(observations)}
        if abstained:
            meta["abstained"] = abstained
        return Aggregated(first_form[winner], meta)

    async def aaggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        return self.aggregate(query, observations, models)


def _without_cue(text: str) -> str:
    """The refiner's answer without the prompt's closing cue, which small models echo before or after it; ``""``
    when the cue is all it wrote."""
    cue = REFINE_CUE.rstrip(":").lower()
    lines = text.strip().splitlines()
    while lines and lines[-1].strip().rstrip(":").lower() == cue:
        lines.pop()
    if lines and lines[0].strip().lower().startswith(cue + ":"):
        lines[0] = lines[0].strip()[len(cue) + 1 :]
    return "\n".join(lines).strip()


def refined_so_far(text: str) -> str:
    """The start of the answer `Refine` will make of a refiner's text still being written, whatever is written next:
    `_without_cue`'s result for the whole text starts with it. Held back: a first line that may yet be the prompt's
    cue echoed alone, and a tail of blank lines and lines that are (or may become) the cue echoed after the answer,
    which `_without_cue` would take off; trailing white space, which its ``strip`` would."""
    cue = REFINE_CUE.rstrip(":").lower()
    lines = text.lstrip().split("\n")
    keep = len(lines)
    while keep and (
        cue.startswith(lines[keep - 1].strip().rstrip(":").lower()) if keep == len(lines)  # the line still being written
        else lines[keep - 1].strip().rstrip(":").lower() in ("", cue)
    ):
        keep -= 1
    kept = lines[:keep]
    if kept and kept[0].strip().lower().startswith(cue + ":"):
        kept[0] = kept[0].strip()[len(cue) + 1 :]
    return "\n".join(kept).strip()


class Refine:
    """The Refining Agent on a model: merges complementary answers, states conflicts, refuses politely when
    nothing useful came back. A single good answer is passed through without a model call unless ``always``.
    When the refiner's model fails, or writes no answer (only the prompt's cue, or blank text), the answers are
    listed as `PassThrough` lists them and the failure is kept in the step's ``meta["refine_failed"]``."""

    name = "refine"

    def __init__(self, model_id: str, *, always: bool = False, options: ChatOptions | None = None) -> None:
        if not isinstance(model_id, str) or not model_id.strip():
            # refused here: Refine(None) failed each refine inside the run (an AttributeError kept in the step's
            # meta, the answers listed instead) and its runs could not be replayed; Refine(42) failed every run
            # after the agents had answered
            raise ConfigurationError(f"Refine model_id must be a model card's id, got {type(model_id).__name__} {model_id!r:.60}")
        self.agent = RefiningAgent(model_id, options)
        self.always = always

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model_id": self.agent.model_id, "always": self.always}

    def _shortcut(self, observations: Sequence[Observation]) -> Aggregated | None:
        # Only real answers are merged: a tool's "Sorry, I only answer date and time questions" beside the
        # calculator's "21" made two answers, and a small refiner turned them into "3 times 7 is 24".
        answered = [obs for obs in observations if obs.answered]
        if not answered or (len(answered) == 1 and not self.always):
            return _as_they_came(observations)
        return None

    @staticmethod
    def _unrefined(query: str, observations: Sequence[Observation], models: ModelAccess, error: ModelError) -> Aggregated:
        # The agents answered; the refiner could not merge them (down, context window exceeded, empty answer).
        # Their answers, listed, are worth more than no answer; the failure stays on the step's record.
        listed = _as_they_came(observations)
        return Aggregated(listed.answer, {**listed.meta, "refine_failed": error.to_record()})

    def _refined(self, query: str, observations: Sequence[Observation], models: ModelAccess, result: ChatResult) -> Aggregated:
        answer = _without_cue(result.text)
        if not answer:
            # the prompt's cue alone (or blank text) is no answer: made the run's answer, it read "Merged answer:"
            wrote = f"only the prompt's cue {result.text.strip()!r}" if result.text.strip() else "nothing"
            error = ModelOutputError(f"refining model {result.model_id!r} wrote {wrote}, no answer", model_id=result.model_id)
            return self._unrefined(query, observations, models, error)
        return Aggregated(answer, {"answered": sum(obs.answered for obs in observations), "model": result.model_id, **_declined(observations)})

    def aggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        shortcut = self._shortcut(observations)
        if shortcut is not None:
            return shortcut
        try:
            result = self.agent.refine(query, [obs for obs in observations if not obs.declined], models)
        except ModelError as exc:
            return self._unrefined(query, observations, models, exc)
        return self._refined(query, observations, models, result)

    async def aaggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        shortcut = self._shortcut(observations)
        if shortcut is not None:
            return shortcut
        try:
            result = await self.agent.arefine(query, [obs for obs in observations if not obs.declined], models)
        except ModelError as exc:
            return self._unrefined(query, observations, models, exc)
        return self._refined(query, observations, models, result)


class Fuse:
    """The answers of a router that weights them (AgentRouter's ``p``), fused as the query calls for
    (`answer_kind`): a `WeightedVote` for a short or categorical answer (lettered options, yes or no, a number),
    the Refining Agent otherwise (the answers listed as they came when there is no model to refine on). The
    step's ``meta["fusion"]`` says which."""

    name = "fuse"

    def __init__(self, model_id: str | None) -> None:
        self.model_id = model_id
        self._text: Aggregator = Refine(model_id) if model_id else PassThrough()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model_id": self.model_id}

    def _pick(self, query: str) -> tuple[Aggregator, str]:
        return (WeightedVote(), "weighted-vote") if answer_kind(query) == "vote" else (self._text, self._text.name)

    def aggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        aggregator, fusion = self._pick(query)
        merged = aggregator.aggregate(query, observations, models)
        return Aggregated(merged.answer, {**merged.meta, "fusion": fusion})

    async def aaggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        aggregator, fusion = self._pick(query)
        merged = await aggregator.aaggregate(query, observations, models)
        return Aggregated(merged.answer, {**merged.meta, "fusion": fusion})
