"""Baseline agent routers: every agent (``all``), a fixed list (``fixed``) and embedding similarity (``embedding``).

Also home of the small helpers the other agent routers share (query hygiene, the out-of-scope refusal, the
card-content cache of agent embeddings), so that each router reads queries and cards the same way.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestra.cards import AgentCard
from orchestra.errors import DataError, PolicyError
from orchestra.routing import BaseRouter, Call, CandidateScore, Dispatch, Finish, RouterState

__all__ = [
    "MAX_QUERY_CHARS",
    "REFUSAL",
    "AgentEmbeddingCache",
    "AgentVectors",
    "AllRouter",
    "EmbeddingRouter",
    "FixedRouter",
    "card_fingerprint",
    "clean_query",
    "out_of_scope",
    "routable_query",
]

MAX_QUERY_CHARS = 2000
"""Longer queries are cut to this many characters before routing: the encoder reads at most 256 word pieces
anyway, and an unbounded prompt would make an LLM router's cost unbounded too."""

REFUSAL = (
    "Sorry, none of the available agents can help with this request. "
    "Please rephrase it or ask about something the listed agents cover."
)
"""The polite answer of an out-of-scope decision."""


def clean_query(query: str) -> tuple[str, dict[str, Any]]:
    """The query as routers read it (whitespace collapsed, cut at `MAX_QUERY_CHARS`) and what was done to it.
    For the router's own reading only: the agents it dispatches get the user's text as it was."""
    text = " ".join(str(query).split())
    facts: dict[str, Any] = {}
    if len(text) > MAX_QUERY_CHARS:
        facts["truncated_from_chars"] = len(text)
        text = text[:MAX_QUERY_CHARS]
    return text, facts


def routable_query(state: RouterState) -> tuple[str, dict[str, Any]] | Finish:
    """The query as routers read it and what was done to it (`clean_query`), or the recorded out-of-scope
    decision when there is nothing to route: an empty query or a registry with no agents."""
    query, facts = clean_query(state.query)
    if not query:
        return out_of_scope("the query is empty", **facts)
    if not state.agents:
        return out_of_scope("the registry holds no agents", **facts)
    return query, facts


def out_of_scope(reason: str, *, scores: Sequence[CandidateScore] = (), **meta: Any) -> Finish:
    """A recorded out-of-scope decision: the polite refusal, with why."""
    return Finish(answer=REFUSAL, rationale=reason, scores=tuple(scores), out_of_scope=True, meta=meta)


def card_fingerprint(card: AgentCard) -> str:
    """A digest of what routers read from a card (text and examples): equal cards share cached work."""
    payload = json.dumps([card.id, card.routing_text(), list(card.examples)], ensure_ascii=False)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=16).hexdigest()


def effective_k(own_k: int, state: RouterState) -> int:
    """At most the router's own k and the run policy's ``max_agents``."""
    return max(1, min(own_k, state.policy.max_agents))


def check_whole_numbers(router: str, minimums: Mapping[str, tuple[Any, int]]) -> None:
    """Raise `PolicyError` naming the first option (``{option: (value, least)}``) that is not a whole number of
    at least ``least``. Checked when a router is built: a bad size or count would otherwise fail at fit with a
    torch error, or train nothing and pass for a trained router."""
    for option, (value, least) in minimums.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise PolicyError(f"{router} {option!r} must be a whole number of at least {least}, got {value!r}")


def check_embedder(embedder: Any) -> None:
    """`PolicyError` for an ``embedder`` option that cannot embed (no ``encode``): ``--option embedder=hashing``
    from the command line gave a string, which failed at the first decision with a TypeError from deep inside."""
    # a str has an encode too, the one that failed: encode() argument 'encoding' must be str, not list
    if embedder is not None and (isinstance(embedder, (str, bytes)) or not callable(getattr(embedder, "encode", None))):
        raise PolicyError(
            f"option 'embedder' must be an object with encode(texts), given in Python (the command line cannot give "
            f"one: leave it out for the project's MiniLM); got {type(embedder).__name__} {str(embedder)[:40]!r}"
        )


def check_unique_ids(ids: Sequence[str], where: str, kind: str = "agent") -> None:
    """Raise `DataError` naming the first id given twice: a router trained on a repeated card would give it two
    columns (two learned vectors, two probabilities) and report it twice among its candidates."""
    seen: set[str] = set()
    for card_id in ids:
        if card_id in seen:
            raise DataError(f"{where}: duplicate {kind} id {card_id!r}")
        seen.add(card_id)


@dataclass(frozen=True)
class AgentVectors:
    """One card's embeddings: its description text and each example query (L2-normalised rows)."""

    description: np.ndarray
    """Shape (dim,): the embedding of `AgentCard.routing_text`."""
    examples: np.ndarray
    """Shape (n_examples, dim); zero rows when the card has no examples."""


class AgentEmbeddingCache:
    """Embeddings of agent cards keyed by card content: a card added or changed in the registry is embedded at
    the next decision, the others are reused. Thread-safe; the embedder is loaded on first use."""

    def __init__(self, embedder: Any | None = None) -> None:
        check_embedder(embedder)
        self._embedder = embedder
        self._vectors: dict[str, AgentVectors] = {}
        self._lock = threading.Lock()

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from orchestra.embeddings import get_embedder

            self._embedder = get_embedder()
        return self._embedder

    def encode(self, texts: list[str]) -> np.ndarray:
        """Normalised embeddings of ``texts`` (float32, one row each)."""
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return np.asarray(self.embedder.encode(texts), dtype=np.float32)

    def vectors(self, cards: Iterable[AgentCard]) -> list[AgentVectors]:
        """Vectors of each card in order, embedding only the cards not seen before (in one batch)."""
        cards = list(cards)
        keys = [card_fingerprint(card) for card in cards]
        with self._lock:
            missing = {key: card for key, card in zip(keys, cards, strict=True) if key not in self._vectors}
        if missing:
            texts: list[str] = []
            spans: list[tuple[str, int, int]] = []
            for key, card in missing.items():
                start = len(texts)
                texts.append(card.routing_text())
                texts.extend(card.examples)
                spans.append((key, start, len(texts)))
            matrix = self.encode(texts)
            with self._lock:
                for key, start, end in spans:
                    self._vectors[key] = AgentVectors(description=matrix[start], examples=matrix[start + 1 : end])
        with self._lock:
            return [self._vectors[key] for key in keys]

    def __len__(self) -> int:
        return len(self._vectors)


class AllRouter(BaseRouter):
    """Dispatches the query to every agent in the registry, each with the whole query."""

    name = "all"

    def decide(self, state: RouterState) -> Dispatch | Finish:
        checked = routable_query(state)
        if isinstance(checked, Finish):
            return checked
        query, facts = checked
        return Dispatch(
            calls=tuple(Call(agent_id=card.id, query=state.query) for card in state.agents),
            rationale=f"every agent ({len(state.agents)})",
            scores=tuple(CandidateScore(id=card.id, score=1.0) for card in state.agents),
            meta=facts,
        )


class FixedRouter(BaseRouter):
    """Dispatches the query to a fixed list of agents. An id the registry does not hold (a typo, an agent removed
    since) is the runtime's `UnknownAgentError`: recorded as an error step while the others answer, and the
    run's error when none of the ids is registered, never an out-of-scope answer that would hide it."""

    name = "fixed"

    def __init__(self, agent_ids: Sequence[str] | str) -> None:
        ids = [part.strip() for part in agent_ids.split(",")] if isinstance(agent_ids, str) else list(agent_ids)
        ids = [agent_id for agent_id in ids if agent_id]
        if not ids:
            raise PolicyError("FixedRouter needs at least one agent id in 'agent_ids'")
        if len(set(ids)) != len(ids):
            raise PolicyError(f"FixedRouter 'agent_ids' repeats an id: {ids}")
        self.agent_ids: tuple[str, ...] = tuple(ids)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "agent_ids": list(self.agent_ids)}

    def decide(self, state: RouterState) -> Dispatch | Finish:
        query, facts = clean_query(state.query)
        if not query:
            return out_of_scope("the query is empty", **facts)
        return Dispatch(
            calls=tuple(Call(agent_id=agent_id, query=state.query) for agent_id in self.agent_ids),
            rationale="fixed agents: " + ", ".join(self.agent_ids),
            scores=tuple(CandidateScore(id=agent_id, score=1.0) for agent_id in self.agent_ids),
            meta=facts,
        )


class EmbeddingRouter(BaseRouter):
    """Cosine similarity of the query to each card: the best of its description and its example queries
    (all-MiniLM-L6-v2). The top ``k`` agents whose similarity clears ``threshold`` answer; when none clears it
    the query is out of scope. The run policy's ``min_score``, when set, replaces ``threshold``, and its ``max_agents``
    caps ``k``."""

    name = "embedding"

    def __init__(self, k: int = 3, threshold: float = 0.3, *, use_examples: bool = True, embedder: Any | None = None) -> None:
        if k < 1:
            raise PolicyError(f"EmbeddingRouter 'k' must be at least 1, got {k}")
        if not -1.0 <= threshold <= 1.0:
            raise PolicyError(f"EmbeddingRouter 'threshold' is a cosine in [-1, 1], got {threshold}")
        self.k = k
        self.threshold = threshold
        self.use_examples = use_examples
        self.cache = AgentEmbeddingCache(embedder)

    @property
    def embedder(self) -> Any:
        """The encoder that embeds queries and cards (loaded on first use)."""
        return self.cache.embedder

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k, "threshold": self.threshold, "use_examples": self.use_examples}

    def similarities(self, query: str, cards: Sequence[AgentCard]) -> np.ndarray:
        """One cosine per card: the query against the card's description and (optionally) its examples."""
        vectors = self.cache.vectors(cards)
        q = self.cache.encode([query])[0]
        sims = np.empty(len(cards), dtype=np.float32)
        for i, vec in enumerate(vectors):
            best = float(vec.description @ q)
            if self.use_examples and len(vec.examples):
                best = max(best, float((vec.examples @ q).max()))
            sims[i] = best
        return sims

    def decide(self, state: RouterState) -> Dispatch | Finish:
        checked = routable_query(state)
        if isinstance(checked, Finish):
            return checked
        query, facts = checked
        cards = list(state.agents)
        sims = self.similarities(query, cards)
        order = np.argsort(-sims, kind="stable")
        scores = tuple(CandidateScore(id=cards[i].id, score=round(float(sims[i]), 6)) for i in order)
        threshold = state.policy.min_score if state.policy.min_score is not None else self.threshold
        chosen = [i for i in order[: effective_k(self.k, state)] if sims[i] >= threshold]
        if not chosen:
            return out_of_scope(
                f"no agent is similar enough (best {float(sims[order[0]]):.3f} < threshold {threshold:.3f})",
                scores=scores,
                threshold=threshold,
                **facts,
            )
        return Dispatch(
            calls=tuple(Call(agent_id=cards[i].id, query=state.query, weight=float(sims[i])) for i in chosen),
            rationale=f"top {len(chosen)} by cosine similarity >= {threshold:.3f}",
            scores=scores,
            meta={"threshold": threshold, **facts},
        )
