"""TCAR-style LLM-prompted agent router (after TCAndon-Router, Tencent 2026).

The router model reads the agents as the registry has them at decision time (id and a one-line description),
reasons briefly in prose, then names up to k agents, best first, or says the request is out of scope. The answer
is constrained by a JSON schema whose agent field is an enum of the candidate ids, so servers with constrained
decoding (llama.cpp, vLLM) keep even a 135M model valid; the answer is parsed strictly either way: an id that is
not in the registry is dropped and recorded, never matched fuzzily. An answer that cannot be read (garbage, bad
JSON) is a recorded out-of-scope decision. A model that cannot be reached or times out after its retries is not:
the `ModelError` fails the run, typed and recorded, so an outage never looks like "no agent can help".

With many agents (CLINC150 has 150) the prompt stays compact: one line per agent, and when there are more than
``shortlist`` agents an embedding similarity prefilter keeps the closest ones (recorded in ``meta``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from orchestra.cards import AgentCard
from orchestra.errors import DecisionError, ModelOutputError, PolicyError
from orchestra.model import ChatOptions, Message
from orchestra.routing import BaseRouter, Call, CandidateScore, Dispatch, Finish, RouterState

from .basic import EmbeddingRouter, clean_query, effective_k, out_of_scope, routable_query

__all__ = ["TCARRouter", "build_prompt", "parse_answer", "routing_schema"]

_SYSTEM = (
    "You are a dispatcher. Each agent below handles one kind of request. Read the user's request, think "
    "briefly about what the user needs, then name the agents that should answer it, best first (at most {k}). "
    "If no agent fits the request, give no agents and set out_of_scope to true. Answer with JSON only: "
    '{{"reasoning": "<one or two sentences>", "agents": ["<agent id>", ...], "out_of_scope": false}}.'
)

_QUERY_CHARS_IN_PROMPT = 600
"""The request is cut to this length in the prompt: a 135M model's context is small and the request's head
carries its intent."""


_ABBREVIATIONS = frozenset({"e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.", "mr.", "mrs.", "ms.", "dr.", "no.", "st."})
"""Words whose full stop ends no sentence ("Translates text, e.g. French to German.")."""


def one_line(card: AgentCard, max_chars: int) -> str:
    """The card's description reduced to its first sentence, at most ``max_chars`` characters."""
    text = " ".join(card.description.split())
    sentence = text
    for stop in re.finditer(r"[.!?]\s", text):
        head = text[: stop.start() + 1]
        if head.rsplit(" ", 1)[-1].lower() not in _ABBREVIATIONS:
            sentence = head
            break
    if len(sentence) > max_chars:
        sentence = sentence[: max_chars - 1].rsplit(" ", 1)[0] + "…"
    return sentence


def routing_schema(agent_ids: Sequence[str], k: int, reasoning_chars: int) -> dict[str, Any]:
    """The JSON schema of the answer: bounded prose on one line, then up to ``k`` ids from ``agent_ids``, then the
    flag."""
    # llama.cpp's grammar otherwise lets a raw line break into the reasoning, which is no valid JSON string. The
    # bound goes into the pattern too, since grammar builders honour a pattern before maxLength; quotes and
    # backslashes are left out, as in Router-R1's turn_schema, so the grammar cannot produce broken JSON.
    reasoning = {"type": "string", "maxLength": reasoning_chars, "pattern": f"^[^\"\\\\\\n\\r]{{0,{reasoning_chars}}}$"}
    return {
        "type": "object",
        "properties": {
            "reasoning": reasoning,
            "agents": {"type": "array", "items": {"type": "string", "enum": list(agent_ids)}, "maxItems": k},
            "out_of_scope": {"type": "boolean"},
        },
        "required": ["reasoning", "agents", "out_of_scope"],
        "additionalProperties": False,
    }


def build_prompt(query: str, cards: Sequence[AgentCard], k: int, description_chars: int) -> list[Message]:
    """The chat messages: instructions, then one line per agent, then the request."""
    lines = "\n".join(f"- {card.id}: {one_line(card, description_chars)}" for card in cards)
    shown = query if len(query) <= _QUERY_CHARS_IN_PROMPT else query[:_QUERY_CHARS_IN_PROMPT] + "…"
    return [
        Message(role="system", content=_SYSTEM.format(k=k)),
        Message(role="user", content=f"Agents:\n{lines}\n\nRequest: {shown}"),
    ]


def _json_object(text: str) -> dict[str, Any] | None:
    """The answer's JSON object: the whole text, or the first balanced ``{...}`` in it (models that wrap the
    JSON in prose or code fences)."""
    # strict=False: control characters inside strings are read (a raw line break in the reasoning, which
    # constrained decoding may let through), so an answer that names agents is not lost for them
    try:
        value = json.loads(text, strict=False)
        return value if isinstance(value, dict) else None
    except json.JSONDecodeError:
        pass
    start = text.find("{")
    while start != -1:
        depth = 0
        in_string = escaped = False
        for end in range(start, len(text)):
            char = text[end]
            if in_string:
                escaped = char == "\\" and not escaped
                if char == '"' and not escaped:
                    in_string = False
                continue
            if char == '"':
                in_string = True
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    try:
                        value = json.loads(text[start : end + 1], strict=False)
                    except json.JSONDecodeError:
                        break
                    return value if isinstance(value, dict) else None
        start = text.find("{", start + 1)
    return None


def parse_answer(text: str, known_ids: Sequence[str], k: int) -> dict[str, Any]:
    """Strict reading of the model's answer.

    Returns ``{"ok", "agents", "dropped", "repeated", "beyond_k", "reasoning", "out_of_scope", "error"}``:
    ``agents`` are known ids in the model's order (each once, at most ``k``); ``dropped`` every name that is not an
    exact known id; ``repeated`` a known id named again (small models often do: the set is then smaller than the
    model's list); ``ok`` is False when the answer is not a JSON object with an ``agents`` list.
    """
    result: dict[str, Any] = {
        "ok": False,
        "agents": [],
        "dropped": [],
        "repeated": [],
        "beyond_k": [],
        "reasoning": "",
        "out_of_scope": False,
        "error": None,
    }
    answer = _json_object(text)
    if answer is None:
        result["error"] = "the answer holds no JSON object"
        return result
    names = answer.get("agents")
    if names is None:
        if answer.get("out_of_scope") is not True:  # a refusal may leave the list out; anything else is unreadable
            result["error"] = "field 'agents' is missing (or null) and the answer does not say out_of_scope: true"
            return result
        names = []
    if not isinstance(answer.get("out_of_scope", False), bool):
        result["error"] = f"field 'out_of_scope' is {type(answer['out_of_scope']).__name__}, not true or false"
        return result
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list):
        result["error"] = f"field 'agents' is {type(names).__name__}, not a list"
        return result
    known = set(known_ids)
    chosen: list[str] = []
    for name in names:
        if isinstance(name, str) and name in known:
            if name not in chosen:
                chosen.append(name)
            else:
                result["repeated"].append(name)
        else:
            result["dropped"].append(name if isinstance(name, str) else json.dumps(name))
    result["ok"] = True
    result["agents"] = chosen[:k]
    result["beyond_k"] = chosen[k:]
    reasoning = answer.get("reasoning", "")
    result["reasoning"] = reasoning if isinstance(reasoning, str) else json.dumps(reasoning)
    result["out_of_scope"] = answer.get("out_of_scope") is True
    return result


class TCARRouter(BaseRouter):
    """LLM-prompted candidate-set router. ``model_id`` is the model card the router model runs on (``None``:
    the first model card in the state); calls go through ``state.model_access`` so they are retried,
    budgeted, recorded and replayed like every other call.

    - ``k``: at most this many agents (the run policy's ``max_agents`` lowers it);
    - ``shortlist``: with more agents than this, only the ``shortlist`` most similar cards (embedding
      similarity of query and card) are shown; ``0`` shows every agent;
    - ``description_chars``: length of each agent's line in the prompt;
    - ``reasoning_chars`` / ``max_tokens``: bounds of the answer.
    """

    name = "tcar"
    calls_models = True

    def __init__(
        self,
        model_id: str | None = None,
        *,
        k: int = 3,
        shortlist: int = 20,
        description_chars: int = 120,
        reasoning_chars: int = 240,
        max_tokens: int = 256,
        timeout_s: float | None = None,
        embedder: Any | None = None,
    ) -> None:
        if k < 1:
            raise PolicyError(f"TCARRouter 'k' must be at least 1, got {k}")
        if shortlist < 0:
            raise PolicyError(f"TCARRouter 'shortlist' must be 0 (off) or positive, got {shortlist}")
        if max_tokens < 32:
            raise PolicyError(f"TCARRouter 'max_tokens' must be at least 32 to hold an answer, got {max_tokens}")
        self.model_id = model_id
        self.k = k
        self.shortlist = shortlist
        self.description_chars = description_chars
        self.reasoning_chars = reasoning_chars
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self._prefilter = EmbeddingRouter(k=max(shortlist, 1), threshold=-1.0, embedder=embedder)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_id": self.model_id,
            "k": self.k,
            "shortlist": self.shortlist,
            "description_chars": self.description_chars,
            "reasoning_chars": self.reasoning_chars,
            "max_tokens": self.max_tokens,
        }

    def _candidates(self, query: str, cards: list[AgentCard]) -> tuple[list[AgentCard], dict[str, float]]:
        if not self.shortlist or len(cards) <= self.shortlist:
            return cards, {}
        sims = self._prefilter.similarities(query, cards)
        order = sorted(range(len(cards)), key=lambda i: -float(sims[i]))[: self.shortlist]
        return [cards[i] for i in order], {cards[i].id: float(sims[i]) for i in order}

    def _request(self, state: RouterState) -> tuple[str, list[AgentCard], dict[str, float], int, list[Message], ChatOptions] | Finish:
        checked = routable_query(state)
        if isinstance(checked, Finish):
            return checked
        query, facts = checked
        model_id = self.model_id or (state.models[0].id if state.models else None)
        # a missing router model is a failure, never a pass for "no agent can help"
        if model_id is None:
            raise DecisionError("tcar: no router model: pass model_id or register a model card")
        if state.model_access is None:
            raise DecisionError("tcar: no model access in the state (TCAR needs a run to call its model)")
        k = effective_k(self.k, state)
        candidates, sims = self._candidates(query, list(state.agents))
        messages = build_prompt(query, candidates, k, self.description_chars)
        options = ChatOptions(
            temperature=0.0,
            max_tokens=self.max_tokens,
            json_schema=routing_schema([card.id for card in candidates], k, self.reasoning_chars),
            # parse_answer is the strict reader: an unknown id is dropped and recorded, not the whole answer lost
            check_schema=False,
            timeout_s=self.timeout_s,
        )
        return model_id, candidates, sims, k, messages, options

    def _decision(
        self, state: RouterState, model_id: str, candidates: list[AgentCard], sims: dict[str, float], k: int, text: str
    ) -> Dispatch | Finish:
        query, facts = clean_query(state.query)
        parsed = parse_answer(text, [card.id for card in state.agents], k)
        meta: dict[str, Any] = {
            "model_id": model_id,
            "raw": text,
            "dropped": parsed["dropped"],
            "candidates": len(candidates),
            **facts,
        }
        if sims:
            meta["prefilter"] = f"embedding similarity shortlist of {len(candidates)} among {len(state.agents)} agents"
        if parsed["beyond_k"]:
            meta["beyond_k"] = parsed["beyond_k"]
        if parsed["repeated"]:
            meta["repeated"] = parsed["repeated"]
        rank = {agent_id: i for i, agent_id in enumerate(parsed["agents"])}
        scores = tuple(
            sorted(
                (
                    CandidateScore(
                        id=card.id,
                        score=1.0 / (1 + rank[card.id]) if card.id in rank else 0.0,
                        detail={"similarity": round(sims[card.id], 6)} if card.id in sims else {},
                    )
                    for card in candidates
                ),
                key=lambda s: -s.score,
            )
        )
        if not parsed["ok"]:
            return out_of_scope(f"router model answer unreadable: {parsed['error']}", scores=scores, **meta)
        if not parsed["agents"]:
            reason = "the router model judged the request out of scope" if parsed["out_of_scope"] else (
                "the router model named no known agent"
            )
            return out_of_scope(reason, scores=scores, reasoning=parsed["reasoning"], **meta)
        if parsed["out_of_scope"]:
            meta["conflict"] = "out_of_scope was true but agents were named; the agents were kept"
        return Dispatch(
            calls=tuple(Call(agent_id=agent_id, query=state.query, weight=1.0) for agent_id in parsed["agents"]),
            rationale=parsed["reasoning"] or "chosen by the router model",
            scores=scores,
            meta=meta,
        )

    def decide(self, state: RouterState) -> Dispatch | Finish:
        request = self._request(state)
        if isinstance(request, Finish):
            return request
        model_id, candidates, sims, k, messages, options = request
        assert state.model_access is not None
        try:
            result = state.model_access.chat(model_id, messages, options, purpose="route")
        except ModelOutputError as exc:  # it answered, but not in the form asked: its judgement is unreadable
            return out_of_scope(f"router model answer unreadable: {exc}", model_id=model_id, error=exc.to_record())
        return self._decision(state, model_id, candidates, sims, k, result.text)

    async def adecide(self, state: RouterState) -> Dispatch | Finish:
        request = self._request(state)
        if isinstance(request, Finish):
            return request
        model_id, candidates, sims, k, messages, options = request
        assert state.model_access is not None
        try:
            result = await state.model_access.achat(model_id, messages, options, purpose="route")
        except ModelOutputError as exc:  # it answered, but not in the form asked: its judgement is unreadable
            return out_of_scope(f"router model answer unreadable: {exc}", model_id=model_id, error=exc.to_record())
        return self._decision(state, model_id, candidates, sims, k, result.text)
