"""Router-R1 (Zhang et al., NeurIPS 2025): a router model that thinks, consults models of a pool, reads their
answers, and answers itself, over several rounds.

Each `RouterR1.decide` continues one trajectory. The router model reasons in ``<think>…</think>`` and then
either consults models with ``<search>Model-Name:query</search>`` (the decision is a `Dispatch` with one
`Call` to the pool agent per search, ``model_id`` being the consulted model) or ends with
``<answer>…</answer>`` (a `Finish`). The next decision sees the pool's answers as ``state.observations`` and
appends them to the trajectory as ``<information>…</information>`` blocks, cut to 600 tokens.

The pool agent comes with the router (`RouterR1.own_agents`): route with ::

    router = RouterR1(router_model="smollm2-local")

An agent registered under the pool's id (``router-r1:pool``) is used instead, e.g. a pool that serves recorded
answers (`routers.recorded_pool`).

Where the trajectory lives between decisions: the router keeps the turns it generated per run (by
``state.run_id``) and checks them against the observations each time. When they do not match (a resumed run, whose
earlier decisions were served from the record, another process), it takes the trajectory the run's last dispatch
recorded in its meta (``state.decisions``), reasoning included; failing that (the decisions are another router's),
it rebuilds the earlier turns from the observations, which carry what was asked of which model, and says so in
``meta["rebuilt"]``.

Bounds: at most ``max_rounds`` consulting turns (then an answer turn is forced; give the workflow
``Budget(max_rounds=max_rounds + 1)`` so the answering decision fits). The run's budget forces the answer too,
while it can still be paid, rather than let the runtime stop the run with `BudgetExceeded`: when one decision is
left, when no agent call is left for a consultation, or when the cost, tokens or time left is less than another round
would take, estimated as twice the dearest (slowest) router turn so far plus the dearest (slowest) consultation
(a search turn, its answers, then the answer turn). ``max_turn_tokens`` per turn
(a 10,000-token think is cut there), ``max_invalid_turns`` turns out of format in a row; past these the router
raises `DecisionError` with the trajectory attached (``error.trajectory``, the decision's meta) and carries in
``error.details`` a JSON-serialisable summary: ``{"violations", "forced", "turns", "consulted", "unknown_models"}``.

With a router model whose card ``supports_json_schema``, each turn is decoded under a JSON schema
(``{"think", "action", "model", "query"}`` or ``{"think", "action", "answer"}``, the model an enum of the pool)
and rendered back to the tagged protocol, so every turn is in format by construction.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from orchestra.agent import LLMAgent
from orchestra.cards import AgentCard, ModelCard
from orchestra.errors import DecisionError, ModelOutputError, PolicyError
from orchestra.model import ChatOptions, ChatResult, Message
from orchestra.routing import BaseRouter, Call, CandidateScore, Dispatch, Finish, Observation, RouterState
from orchestra.routers.basic import check_whole_numbers
from orchestra.routers.r1_rewards import (
    FormatRules,
    SearchRequest,
    check_format,
    parse_search,
    tag_pairs,
    truncate_tokens,
)

__all__ = [
    "POOL_SYSTEM_PROMPT",
    "R1_POOL_AGENT_ID",
    "RouterR1",
    "pool_agent",
    "pool_agent_card",
    "turn_schema",
]

R1_POOL_AGENT_ID = "router-r1:pool"
"""The agent every Router-R1 call goes to; the call's ``model_id`` names the consulted model."""

POOL_SYSTEM_PROMPT = (
    "Another model is consulting you while it works out the answer to a user's question. Answer the question "
    "you are given directly and briefly: the answer first, then at most two sentences of support. If you "
    "cannot answer it, say so in one sentence and name what is missing, so it can ask another model."
)
"""The wrapper every consulted model receives before the sub-question."""


def pool_agent_card(model_id: str | None = None) -> AgentCard:
    """The card of the pool agent Router-R1 dispatches to. ``model_id`` is only its default model: each call
    names the consulted model."""
    return AgentCard(
        id=R1_POOL_AGENT_ID,
        name="Router-R1 model pool",
        description="Answers one sub-question with the model Router-R1 chose, directly and briefly.",
        backend="model",
        model=model_id,
        system_prompt=POOL_SYSTEM_PROMPT,
    )


def pool_agent(max_tokens: int = 256) -> LLMAgent:
    """The agent behind `pool_agent_card`: the wrapper prompt at temperature 0 with bounded answers."""
    return LLMAgent(ChatOptions(temperature=0.0, max_tokens=max_tokens))


def turn_schema(
    pool: Sequence[str],
    *,
    answer_only: bool = False,
    max_think_chars: int = 400,
    max_query_chars: int = 300,
    max_answer_chars: int = 200,
) -> dict[str, Any]:
    """JSON schema of one constrained turn: ``{"think", "action", "model", "query", "answer"}``, every field
    required (OpenAI's strict mode asks for that; llama.cpp compiles it to a grammar in this order). A search
    turn fills ``model`` (an enum of the pool) and ``query``; an answer turn fills ``answer``; the other fields
    are ignored. ``answer_only`` fixes the action to ``answer`` (the forced last turn)."""
    def text(min_chars: int, max_chars: int) -> dict[str, Any]:
        # No tag brackets inside a field: a small model imitating the transcript would otherwise nest tags.
        # (A pattern, because grammar builders honour it before min/maxLength; quotes, backslashes and line
        # breaks are left out so the grammar cannot produce broken JSON.)
        return {"type": "string", "pattern": f"^[^<>\"\\\\\\n\\r]{{{min_chars},{max_chars}}}$"}

    return {
        "type": "object",
        "properties": {
            "think": text(2, max_think_chars),
            "action": {"type": "string", "enum": ["answer"] if answer_only else ["search", "answer"]},
            "model": {"type": "string", "enum": list(pool)},
            "query": text(1, max_query_chars),
            "answer": text(1, max_answer_chars),
        },
        "required": ["think", "action", "model", "query", "answer"],
        "additionalProperties": False,
    }


_PROTOCOL = """\
You answer the user's question with the help of a pool of language models. You work in turns.
In every turn, first reason inside <think> and </think>: what you know, what is missing, and which model fits.
Then do exactly one of these:
- Consult a model: <search>Model-Name:your question for it</search>. Write Model-Name exactly as listed below.
  Its reply comes back to you between <information> and </information>.
- Give the final answer: <answer>the answer</answer>. Keep it short, with no explanation.
You may consult models at most {max_rounds} times; then you must answer. Easy questions need no model or one
cheap model; ask a stronger model (or a second one) when you are unsure or the answers disagree.
Example of one turn: <think>I need the date; a small model knows it.</think>
<search>{example}:When was the Eiffel Tower completed?</search>

Models you can consult:
{pool}
"""

_JSON_PROTOCOL = """
Write each turn as one JSON object instead of tags, with the fields "think", "action", "model", "query" and
"answer": "action" is "search" to consult "model" with "query", or "answer" to give "answer" as the final answer.
"""

_FORCE_ANSWER = "You have consulted models {rounds} times, the most allowed. Give your final answer now."
_BUDGET_ANSWER = "The run's budget leaves no room to consult another model. Give your final answer now."
_INVALID_TURN = (
    "Your last turn was not in the required format ({problem}). Reason inside <think></think>, then either "
    "<search>Model-Name:question</search> or <answer>answer</answer>."
)


def _price_text(card: ModelCard) -> str:
    if card.output_price_per_mtok is not None:
        return f"${card.output_price_per_mtok:g} per million output tokens"
    return "price unknown"


def _pool_text(pool: Sequence[ModelCard]) -> str:
    lines = []
    for card in pool:
        latency = f"; typical latency {card.typical_latency_ms:.0f} ms" if card.typical_latency_ms is not None else ""
        lines.append(f"- {card.id}: {card.description} ({_price_text(card)}{latency})")
    return "\n".join(lines)


@dataclass
class _Turn:
    """One turn of the router model with what the environment returned after it."""

    raw: str
    """The router model's output as received (JSON in constrained mode)."""
    text: str
    """The turn in the tagged protocol, as it stands in the trajectory."""
    searches: list[SearchRequest] = field(default_factory=list)
    answer: str | None = None
    problems: list[str] = field(default_factory=list)
    """Why the turn is out of format (empty when it follows the protocol)."""
    information: list[str] = field(default_factory=list)
    """The information blocks' contents that followed, in search order (filled once answers are in)."""
    note: str | None = None
    """A correction shown to the router after an invalid turn, or the forced-answer notice."""
    cost_usd: float = 0.0
    """What the router model's call for this turn cost (0 when unknown, or for a turn rebuilt from observations)."""
    latency_ms: float = 0.0
    """How long that call took."""
    tokens: int = 0
    """The tokens that call used, prompt and completion."""
    consulted: bool = False
    """Its searches went to the pool. A turn whose searches were all refused, or that searched on the forced
    round, consulted no model: it uses up no round and names no model in ``meta["consulted"]``."""

    @property
    def dispatched(self) -> list[SearchRequest]:
        return [search for search in self.searches if search.ok]


@dataclass
class _Trajectory:
    turns: list[_Turn] = field(default_factory=list)
    rebuilt: bool = False

    @property
    def consulting_rounds(self) -> int:
        return sum(1 for turn in self.turns if turn.consulted)

    def segments(self) -> list[tuple[Literal["turn", "information", "note"], str]]:
        """The completion as ordered pieces: router turns, information blocks, notes."""
        pieces: list[tuple[Literal["turn", "information", "note"], str]] = []
        for turn in self.turns:
            pieces.append(("turn", turn.text))
            for block in turn.information:
                pieces.append(("information", f"\n\n<information>{block}</information>\n\n"))
            if turn.note:
                pieces.append(("note", f"\n\n{turn.note}\n\n"))
        return pieces

    def completion(self) -> str:
        return "".join(text for _, text in self.segments())


class RouterR1(BaseRouter):
    """Router-R1 on the multi-round side of the routing contract (see the module docstring)."""

    name = "router-r1"
    multi_round = True
    # The runtime reads multi_round from the router, so a replay rebuilt from `describe` is multi-round too,
    # however many decisions the original run recorded.
    calls_models = True

    def __init__(
        self,
        router_model: str,
        *,
        max_rounds: int = 4,
        max_turn_tokens: int | None = None,
        max_think_chars: int = 400,
        max_query_chars: int = 300,
        max_answer_chars: int = 200,
        observation_tokens: int = 600,
        max_invalid_turns: int = 2,
        constrained: bool | None = None,
        pool: Sequence[str] | None = None,
        temperature: float = 0.0,
        seed: int | None = None,
        format_rules: FormatRules | dict[str, Any] | None = None,
    ) -> None:
        """``router_model``: model card id of the router model. ``constrained``: JSON-schema turns (``None``:
        when the router model's card supports JSON schemas); the ``max_*_chars`` bound their strings.
        ``max_turn_tokens``: the router model's tokens per turn; by default 512 for free turns, and for constrained
        turns the most the schema lets a turn hold at a token per character (`turn_tokens`), so a turn the grammar
        keeps in form cannot be cut off before its JSON closes. ``pool``: model ids it may consult (default: every
        model card in the state except the router model itself). ``format_rules``: the rules, or their dict as
        `describe` records them."""
        # Checked here, once: a bad bound would otherwise fail every run (or, from the CLI, give a traceback).
        minimums = {
            "max_rounds": (max_rounds, 1),
            "max_turn_tokens": (512 if max_turn_tokens is None else max_turn_tokens, 1),
            "max_think_chars": (max_think_chars, 2),  # turn_schema asks for a think of at least two characters
            "max_query_chars": (max_query_chars, 1),
            "max_answer_chars": (max_answer_chars, 1),
            "observation_tokens": (observation_tokens, 1),
            "max_invalid_turns": (max_invalid_turns, 0),
        }
        check_whole_numbers("RouterR1", minimums)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < math.inf:
            raise PolicyError(f"RouterR1 'temperature' must be a finite number of at least 0, got {temperature!r}")
        if pool is not None and (isinstance(pool, str) or not list(pool)):
            raise PolicyError(f"RouterR1 'pool' must be a non-empty list of model ids (or None for every model but the router's), got {pool!r}")
        try:
            rules = FormatRules.model_validate(format_rules) if format_rules is not None else FormatRules()
        except ValidationError as exc:
            raise PolicyError(f"RouterR1 'format_rules': {exc.errors()[0]['msg']} (got {format_rules!r})") from None
        self.router_model = router_model
        self.max_rounds = max_rounds
        self.max_turn_tokens = max_turn_tokens
        self.max_think_chars = max_think_chars
        self.max_query_chars = max_query_chars
        self.max_answer_chars = max_answer_chars
        self.observation_tokens = observation_tokens
        self.max_invalid_turns = max_invalid_turns
        self.constrained = constrained
        self.pool_ids = tuple(pool) if pool is not None else None
        self.temperature = temperature
        self.seed = seed
        self.format_rules = rules
        self._runs: OrderedDict[str, _Trajectory] = OrderedDict()
        self._lock = threading.Lock()

    def own_agents(self) -> Sequence[tuple[AgentCard, Any]]:
        """The model pool every search goes to: part of the router, so it needs no registering and no other
        router ever routes to it."""
        return [(pool_agent_card(), pool_agent())]

    def describe(self) -> dict[str, Any]:
        # Every constructor option, as given: replay rebuilds the router as RouterR1(**description minus name), so
        # an option left out (or recorded in another form) would replay a different router, or none at all.
        return {
            "name": self.name,
            "router_model": self.router_model,
            "max_rounds": self.max_rounds,
            "max_turn_tokens": self.max_turn_tokens,
            "max_think_chars": self.max_think_chars,
            "max_query_chars": self.max_query_chars,
            "max_answer_chars": self.max_answer_chars,
            "observation_tokens": self.observation_tokens,
            "max_invalid_turns": self.max_invalid_turns,
            "constrained": self.constrained,
            "pool": list(self.pool_ids) if self.pool_ids is not None else None,
            "temperature": self.temperature,
            "seed": self.seed,
            "format_rules": self.format_rules.model_dump(),
        }

    @staticmethod
    def pool_agent_card(model_id: str | None = None) -> AgentCard:
        """The card of the agent this router dispatches to (register it with `pool_agent` or a pool of your own)."""
        return pool_agent_card(model_id)

    @staticmethod
    def pool_agent(max_tokens: int = 256) -> LLMAgent:
        """The default agent behind `pool_agent_card`: each consulted model under the wrapper prompt."""
        return pool_agent(max_tokens)

    # -- the pool and the prompt ----------------------------------------------------------------------------

    def pool(self, state: RouterState) -> list[ModelCard]:
        """The models this decision may consult, from the registry's cards as the state has them now: ``pool``,
        or by default every model but the router's, and the router's own model when it is the only one (a fresh
        call of it, without the trajectory, as the one-model default team has it)."""
        if self.pool_ids is not None:
            return [card for card in state.models if card.id in self.pool_ids]
        others = [card for card in state.models if card.id != self.router_model]
        return others or [card for card in state.models if card.id == self.router_model]

    def prompt(self, state: RouterState, pool: Sequence[ModelCard], constrained: bool) -> str:
        """The opening user message: the protocol, the pool, the question."""
        text = _PROTOCOL.format(max_rounds=self.max_rounds, example=pool[0].id, pool=_pool_text(pool))
        if constrained:
            text += _JSON_PROTOCOL
        if state.history:
            earlier = "\n".join(f"{turn.role}: {turn.content}" for turn in state.history[-6:])
            text += f"\nConversation so far:\n{earlier}\n"
        return text + f"\nQuestion: {state.query}\n"

    def _is_constrained(self, state: RouterState) -> bool:
        if self.constrained is not None:
            return self.constrained
        card = state.model(self.router_model)
        return bool(card and card.supports_json_schema)

    # -- the trajectory between decisions -------------------------------------------------------------------

    @staticmethod
    def _key(state: RouterState) -> str:
        return state.run_id or f"query:{state.query}"

    @staticmethod
    def _rounds_of(observations: Sequence[Observation]) -> list[list[Observation]]:
        groups: dict[int, list[Observation]] = {}
        for obs in observations:
            groups.setdefault(obs.round, []).append(obs)
        return [groups[number] for number in sorted(groups)]

    def _information(self, obs: Observation) -> str:
        if obs.ok:
            text, _ = truncate_tokens((obs.answer or "").strip(), self.observation_tokens)
            return text
        message = (obs.error or {}).get("message", "unknown error")
        return f"The call to {obs.model_id or 'the model'} failed: {message}"

    def _restore(self, state: RouterState, pool_ids: Sequence[str]) -> _Trajectory:
        """The trajectory so far, with the observations of every round filled in: this instance's own, else the one
        the run's earlier decisions carry in their meta (a resumed run, another process), else one rebuilt from
        what the observations say was asked."""
        groups = self._rounds_of(state.observations)
        with self._lock:
            cached = self._runs.get(self._key(state))
        if cached is not None and self._answers_filled(cached, groups):
            return cached
        # parsed only when needed: on a live run's every decision, the instance's own trajectory matches
        recorded = self._recorded(state, pool_ids)
        if recorded is not None and self._answers_filled(recorded, groups):
            return recorded
        # Neither matches: rebuild the earlier turns from what the observations say was asked.
        trajectory = _Trajectory(rebuilt=bool(groups))
        for group in groups:
            searches = [
                SearchRequest(raw=f"{o.model_id}:{o.query}", model=o.model_id, name=o.model_id or "", query=o.query)
                for o in group
            ]
            text = "<think>(reasoning of an earlier decision, not kept)</think>\n" + "\n".join(
                f"<search>{s.raw}</search>" for s in searches
            )
            trajectory.turns.append(
                _Turn(raw=text, text=text, searches=searches, information=[self._information(o) for o in group], consulted=True)
            )
        return trajectory

    def _answers_filled(self, trajectory: _Trajectory, groups: list[list[Observation]]) -> bool:
        """Whether ``trajectory``'s consulting turns asked what the observations answer, round by round; if so, the
        answers of the rounds not yet read are filled in as its information blocks."""
        dispatching = [turn for turn in trajectory.turns if turn.consulted]
        if len(dispatching) != len(groups) or not all(
            sorted(s.query for s in turn.dispatched) == sorted(obs.query for obs in group)
            for turn, group in zip(dispatching, groups, strict=True)
        ):
            return False
        for turn, group in zip(dispatching, groups, strict=True):
            if turn.information:
                continue
            remaining = list(group)
            for search in turn.searches:
                if not search.ok:
                    turn.information.append(search.detail)
                    continue
                match = next(o for o in remaining if o.query == search.query)
                remaining.remove(match)
                turn.information.append(self._information(match))
        return True

    def _recorded(self, state: RouterState, pool_ids: Sequence[str]) -> _Trajectory | None:
        """The trajectory as the run's last dispatch recorded it (``meta["segments"]``, ``meta["raw_turns"]``), its
        reasoning intact; ``None`` when the decisions carry none (another router's, or none yet). Each dispatch
        consulted with the last turn it had recorded."""
        recorded = [decision.meta for decision in state.decisions if isinstance(decision.meta.get("segments"), list)]
        if not recorded or len(recorded) != len(state.decisions):
            return None
        trajectory = _Trajectory()
        raw_turns = recorded[-1].get("raw_turns") or []
        for segment in recorded[-1]["segments"]:
            kind, text = segment.get("kind"), str(segment.get("text", ""))
            if kind == "turn":
                turn = self._parse_tags(text, None, pool_ids)
                index = len(trajectory.turns)
                turn.raw = raw_turns[index] if index < len(raw_turns) else text
                trajectory.turns.append(turn)
            elif not trajectory.turns:
                return None
            elif kind == "information":  # as `_Trajectory.segments` wrote it
                trajectory.turns[-1].information.append(text.strip().removeprefix("<information>").removesuffix("</information>"))
            elif kind == "note":
                trajectory.turns[-1].note = text.strip()
        for meta in recorded:
            consulted = sum(1 for segment in meta["segments"] if segment.get("kind") == "turn") - 1
            if not 0 <= consulted < len(trajectory.turns) or not trajectory.turns[consulted].dispatched:
                return None
            trajectory.turns[consulted].consulted = True
        return trajectory

    def _remember(self, state: RouterState, trajectory: _Trajectory | None) -> None:
        key = self._key(state)
        with self._lock:
            if trajectory is None:
                self._runs.pop(key, None)
                return
            self._runs[key] = trajectory
            self._runs.move_to_end(key)
            while len(self._runs) > 1024:
                self._runs.popitem(last=False)

    # -- one turn -------------------------------------------------------------------------------------------

    def _messages(self, prompt: str, trajectory: _Trajectory) -> list[Message]:
        messages = [Message(role="user", content=prompt)]
        for turn in trajectory.turns:
            messages.append(Message(role="assistant", content=turn.text))
            after = [f"<information>{block}</information>" for block in turn.information]
            if turn.note:
                after.append(turn.note)
            if after:
                messages.append(Message(role="user", content="\n".join(after)))
        return messages

    @staticmethod
    def _cut_at_stop(text: str, finish_reason: str | None) -> str:
        """The turn up to and including the first closing action tag; a server that drops the stop string
        gets it back (the protocol needs it in the trajectory)."""
        text = text.strip()
        ends = [(text.find(tag), tag) for tag in ("</search>", "</answer>") if tag in text]
        if ends:
            position, tag = min(ends)
            return text[: position + len(tag)]
        if finish_reason != "length":
            opened = max(("<search>", "<answer>"), key=text.rfind)
            if text.rfind(opened) >= 0:
                return text + "</" + opened[1:]
        return text

    def turn_tokens(self, pool_ids: Sequence[str], *, constrained: bool) -> int:
        """Tokens the router model may write in one turn: ``max_turn_tokens`` when given. A constrained turn fills
        every field of `turn_schema`, so by default it gets their bounds plus the longest model id, at one token
        per character (byte-level tokenizers never use more for ASCII), and 128 for the keys, the action and the
        punctuation (73 characters written as `json.dumps` spaces them): a small model repeating digits until its
        think was 400 characters long was cut off at 512 tokens."""
        if self.max_turn_tokens is not None:
            return self.max_turn_tokens
        if not constrained:
            return 512
        longest_id = max((len(model_id) for model_id in pool_ids), default=0)
        return self.max_think_chars + self.max_query_chars + self.max_answer_chars + longest_id + 128

    def _parse_tags(self, raw: str, finish_reason: str | None, pool_ids: Sequence[str]) -> _Turn:
        text = self._cut_at_stop(raw, finish_reason)
        turn = _Turn(raw=raw, text=text)
        check = check_format(text, pool_ids, self.format_rules)
        searches = [part for tag, part in tag_pairs(text) if tag == "search"]
        answers = [part for tag, part in tag_pairs(text) if tag == "answer"]
        if finish_reason == "length":
            turn.problems.append(f"cut at {self.turn_tokens(pool_ids, constrained=False)} tokens before the turn ended")
        if answers:
            turn.answer = answers[-1].strip()
            turn.problems += [v for v in check.violations if v not in ("unknown_model", "malformed_search")]
        elif searches:
            turn.searches = [parse_search(part, pool_ids, self.format_rules) for part in searches]
            # A consulting turn is checked as if it were followed by its information and an answer.
            structural = {"unbalanced_tags", "nested_tags", "empty_think", "missing_think", "not_think_first"}
            turn.problems += [v for v in check.violations if v in structural]
        else:
            turn.problems.append("no <search> or <answer>")
        if turn.answer is not None and not turn.answer:
            turn.problems.append("empty answer")
        return turn

    def _parse_json(self, raw: str, pool_ids: Sequence[str]) -> _Turn:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            return _Turn(raw=raw, text=raw, problems=[f"not JSON: {exc.msg}"])
        if not isinstance(data, dict):
            return _Turn(raw=raw, text=raw, problems=["not a JSON object"])
        problems: list[str] = []

        def text(key: str) -> str | None:
            # A null (or a number, a list) is a format violation, never its string form: str(None) made the
            # answer "None" and the search "None:None".
            value = data.get(key, "")
            if isinstance(value, str):
                return value.strip()
            problems.append(f"field {key!r} is {'null' if value is None else type(value).__name__}, not a string")
            return None

        think = text("think") or ""
        action = data.get("action")
        if action == "answer":
            answer = text("answer")
            turn = _Turn(raw=raw, text=f"<think>{think}</think>\n<answer>{answer or ''}</answer>", answer=answer)
        elif action == "search":
            model, query = text("model"), text("query")
            content = f"{model or ''}:{query or ''}"
            turn = _Turn(raw=raw, text=f"<think>{think}</think>\n<search>{content}</search>")
            if model is not None and query is not None:
                turn.searches = [parse_search(content, pool_ids, self.format_rules)]
        else:
            return _Turn(raw=raw, text=raw, problems=[f"unknown action {action!r}"])
        turn.problems += problems
        # The rendered turn is checked like a tagged one (a think that itself holds tags is still nesting).
        check = check_format(turn.text, pool_ids, self.format_rules)
        structural = {"unbalanced_tags", "nested_tags", "empty_think"}
        turn.problems += [v for v in check.violations if v in structural]
        if turn.answer is not None and not turn.answer:
            turn.problems.append("empty answer")
        return turn

    def _generate(
        self, state: RouterState, prompt: str, trajectory: _Trajectory, pool_ids: Sequence[str], *, constrained: bool, force: bool
    ) -> tuple[_Turn, ChatResult | None]:
        assert state.model_access is not None
        max_tokens = self.turn_tokens(pool_ids, constrained=constrained)
        options = ChatOptions(
            temperature=self.temperature,
            max_tokens=max_tokens,
            stop=() if constrained else ("</search>", "</answer>"),
            json_schema=turn_schema(
                pool_ids,
                answer_only=force,
                max_think_chars=self.max_think_chars,
                max_query_chars=self.max_query_chars,
                max_answer_chars=self.max_answer_chars,
            )
            if constrained
            else None,
            seed=self.seed,
        )
        try:
            result = state.model_access.chat(
                self.router_model, self._messages(prompt, trajectory), options, purpose="route"
            )
        except ModelOutputError as exc:
            # The model answered out of schema: an invalid turn, not a failed run.
            return _Turn(raw=str(exc), text="", problems=[f"model output rejected: {exc}"]), None
        if constrained:
            turn = self._parse_json(result.text, pool_ids)
            if result.finish_reason == "length":
                turn.problems.append(f"cut at {max_tokens} tokens before the turn ended")
        else:
            turn = self._parse_tags(result.text, result.finish_reason, pool_ids)
        return turn, result

    # -- the decision ---------------------------------------------------------------------------------------

    def _last_round(self, state: RouterState, trajectory: _Trajectory, router_calls: list[dict[str, Any]], started: float) -> str | None:
        """The notice forcing the answer turn (see the module docstring's bounds), or ``None`` when the router may
        still consult. ``router_calls`` and ``started``: this decision's router-model calls so far and when it began
        (``state.budget_left`` was taken then)."""
        if trajectory.consulting_rounds >= self.max_rounds:
            return _FORCE_ANSWER.format(rounds=trajectory.consulting_rounds)
        left = state.budget_left
        # ``rounds`` counts the decisions left, this one included: with one left, only an answer can end the run.
        if ((rounds := left.get("rounds")) is not None and rounds <= 1) or ((calls := left.get("calls")) is not None and calls < 1):
            return _BUDGET_ANSWER
        # The runtime refuses every model call once the cost, tokens or time are over their limit, so the answer
        # must come while a round still fits: this decision's own turns are spent already; the estimate is a
        # search turn, its answers and the answer turn, from the dearest seen (0 before anything was seen).
        measures = (
            ("cost_usd", sum(call["cost_usd"] or 0.0 for call in router_calls),
             lambda turn: turn.cost_usd, lambda obs: obs.cost_usd or 0.0),
            ("tokens", sum(call["prompt_tokens"] + call["completion_tokens"] for call in router_calls),
             lambda turn: turn.tokens, lambda obs: obs.prompt_tokens + obs.completion_tokens),
            ("seconds", time.perf_counter() - started,
             lambda turn: turn.latency_ms / 1000, lambda obs: obs.latency_ms / 1000),
        )
        for name, spent, of_turn, of_answer in measures:
            if (limit := left.get(name)) is None:
                continue
            remaining = limit - spent
            needed = 2 * max((of_turn(t) for t in trajectory.turns), default=0.0) + max(
                (of_answer(o) for o in state.observations), default=0.0
            )
            if remaining <= 0 or remaining < needed:
                return _BUDGET_ANSWER
        return None

    def decide(self, state: RouterState) -> Dispatch | Finish:
        if state.model_access is None:
            raise DecisionError("router-r1 needs state.model_access to call its router model (run it in a runtime)")
        pool = self.pool(state)
        if not pool:
            raise DecisionError(
                f"router-r1 has no model to consult: the registry holds no model card besides {self.router_model!r}"
                + (f" among pool {list(self.pool_ids)}" if self.pool_ids is not None else "")
            )
        pool_ids = [card.id for card in pool]
        constrained = self._is_constrained(state)
        trajectory = self._restore(state, pool_ids)
        prompt = self.prompt(state, pool, constrained)
        invalid_in_a_row = 0
        router_calls: list[dict[str, Any]] = []
        started = time.perf_counter()
        while True:
            notice = self._last_round(state, trajectory, router_calls, started)
            force = notice is not None
            if notice and trajectory.turns and not trajectory.turns[-1].note:
                trajectory.turns[-1].note = notice
            turn, result = self._generate(state, prompt, trajectory, pool_ids, constrained=constrained, force=force)
            if result is not None:
                turn.cost_usd, turn.latency_ms = result.cost_usd or 0.0, result.latency_ms
                turn.tokens = result.prompt_tokens + result.completion_tokens
                router_calls.append(
                    {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                     "cost_usd": result.cost_usd, "finish_reason": result.finish_reason}
                )
            trajectory.turns.append(turn)
            if turn.answer:
                meta = self._meta(trajectory, pool_ids, router_calls, force, final=True)
                meta["prompt"] = prompt
                self._remember(state, None)
                return Finish(answer=turn.answer, rationale=_think_of(turn.text), meta=meta)
            if turn.dispatched and not force:
                turn.consulted = True
                self._remember(state, trajectory)
                return self._dispatch(turn, pool, pool_ids, trajectory, router_calls)
            invalid_in_a_row += 1
            if turn.searches and not force:
                # Only refused searches (unknown models, malformed): say why, and go on within this decision.
                turn.information = [search.detail for search in turn.searches]
            elif turn.searches:
                turn.note = notice
                turn.problems.append("searched after the last allowed round")
            else:
                turn.note = _INVALID_TURN.format(problem="; ".join(turn.problems) or "unknown")
            if invalid_in_a_row > self.max_invalid_turns:
                meta = self._meta(trajectory, pool_ids, router_calls, force, final=True)
                meta["prompt"] = prompt
                self._remember(state, None)
                error = DecisionError(
                    f"router-r1: router model {self.router_model!r} gave {invalid_in_a_row} turns in a row without a "
                    f"valid search or answer (last problem: {'; '.join(turn.problems) or 'only unknown models'}); "
                    f"bounded at max_invalid_turns={self.max_invalid_turns}",
                    # plain JSON, so the summary can be stored with the error where the whole trajectory would not fit
                    details={
                        "violations": meta["format_violations"],
                        "forced": meta["forced_answer"],
                        "turns": len(trajectory.turns),
                        "consulted": meta["consulted"],
                        "unknown_models": meta["unknown_models"],
                    },
                )
                error.trajectory = meta  # type: ignore[attr-defined]
                raise error

    def _dispatch(
        self,
        turn: _Turn,
        pool: Sequence[ModelCard],
        pool_ids: Sequence[str],
        trajectory: _Trajectory,
        router_calls: list[dict[str, Any]],
    ) -> Dispatch:
        chosen = [search.model for search in turn.dispatched]
        calls = tuple(Call(agent_id=R1_POOL_AGENT_ID, query=search.query, model_id=search.model) for search in turn.dispatched)
        scores = tuple(
            sorted(
                (
                    CandidateScore(
                        id=card.id,
                        score=float(chosen.count(card.id)),
                        detail={"output_price_per_mtok": card.output_price_per_mtok},
                    )
                    for card in pool
                ),
                key=lambda score: -score.score,
            )
        )
        meta = self._meta(trajectory, pool_ids, router_calls, False, final=False)
        return Dispatch(calls=calls, rationale=_think_of(turn.text), scores=scores, meta=meta)

    def _meta(
        self,
        trajectory: _Trajectory,
        pool_ids: Sequence[str],
        router_calls: list[dict[str, Any]],
        forced: bool,
        *,
        final: bool,
    ) -> dict[str, Any]:
        """Facts for the trace; on the last decision also the trajectory's format check."""
        completion = trajectory.completion()
        violations = [
            {"turn": number, "problem": problem}
            for number, turn in enumerate(trajectory.turns)
            for problem in turn.problems
        ]
        violations += [
            {"turn": number, "problem": search.problem or "", "detail": search.detail}
            for number, turn in enumerate(trajectory.turns)
            for search in turn.searches
            if not search.ok
        ]
        check = check_format(completion, pool_ids, self.format_rules) if final else None
        return {
            "transcript": completion,
            "segments": [{"kind": kind, "text": text} for kind, text in trajectory.segments()],
            "raw_turns": [turn.raw for turn in trajectory.turns],
            "rounds": trajectory.consulting_rounds,
            "consulted": [search.model for turn in trajectory.turns if turn.consulted for search in turn.dispatched],
            "unknown_models": [
                search.name for turn in trajectory.turns for search in turn.searches if search.problem == "unknown_model"
            ],
            "format_violations": violations,
            "trajectory_format": list(check.violations) if check else None,
            "format_valid": (not violations and check.valid) if check else None,
            "forced_answer": forced,
            "rebuilt": trajectory.rebuilt,
            "router_calls": router_calls,
        }


def _think_of(text: str) -> str:
    thinks = [part for tag, part in tag_pairs(text) if tag == "think"]
    return thinks[-1].strip() if thinks else ""
