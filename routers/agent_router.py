"""AgentRouter (after Zhang et al., 2025, "A Knowledge-Graph-Guided LLM Router for Collaborative Multi-Agent
Question Answering"): a heterogeneous knowledge graph per query, a type-aware GNN, soft supervision, weighted fusion.

Per query the router builds a graph with four node types and typed edges (`EDGE_TYPES`):

- ``query``: one node, the query's embedding (offline MiniLM, `orchestra.embeddings`);
- ``entity``: the named entities, dates and numbers of the query and its context (`orchestra.routers.entities`,
  rule-based on spaCy's tokenizer), each its text embedding and a one-hot label; when the query's task (data
  set) is known, as in the model-routing sets, it is one more entity labelled ``TASK`` (``use_task``);
- ``relation``: one node per pair of consecutive entities of a sentence, typed by the pair of labels and
  described by a hashed bag of the words that join them (``"born in"``, ``"flight from ... to"``);
- ``agent``: one node per candidate, its card's description embedding plus a learned vector for agents seen in
  training. Candidates are read from the registry at every decision, so an agent onboarded by card joins the
  graph at the next decision (with the description path only until the router is retrained).

A type-aware heterogeneous GNN (torch-geometric `HeteroConv` of `SAGEConv`, one convolution per edge type) reads
the graph; every agent node is scored against the query node and a softmax over the candidates gives
``p(agent | query, graph)``. Training minimises ``KL(p* || p)`` where ``p*`` is the empirical performance
distribution of the agents on that query (their scores normalised to sum 1), not a one-hot best agent. An extra
"no agent" outcome is learnt from out-of-scope examples when there are any.

At inference the top-k agents are dispatched with ``Call.weight`` = their ``p(agent)`` renormalised over the
dispatched agents; the run's aggregator fuses them: with `orchestra.Fuse` (``--aggregator fuse``), a weighted
vote for short or categorical answers and the Refining Agent (which reads the weights) for free text.
``meta["fusion"]`` says which one the query calls for. Backing one LLM agent with models (``mode="models"``), a
request's cost weight w > 0 ranks the models by utility ``(1 - w) * quality - w * normalised cost``.

The router works in both benchmark harnesses: `fit` dispatches on what it is given (``orchestra bench models``:
``fit(train_rows, model_cards, val=..., weights=..., card_costs=...)``, models act as agents;
``orchestra bench agents``: ``fit(agent_cards, routing_examples, regime, shots, oos_rows=...)``).
"""

from __future__ import annotations

import copy
import math
import os
import re
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np

from orchestra.aggregate import answer_kind
from orchestra.cards import AgentCard, ModelCard
from orchestra.errors import CheckpointError, DataError, DecisionError, OrchestraError, PolicyError
from orchestra.routing import BaseRouter, Call, CandidateScore, Dispatch, Finish, RouterState

from .basic import AgentEmbeddingCache, check_unique_ids, check_whole_numbers
from .entities import ENTITY_LABELS, Entity, get_extractor
from .model_routers import (
    RecordsGivenOptions,
    adopt_checkpoint,
    check_load_options,
    check_training_data,
    check_weight,
    checkpoint_embedder,
    choice_meta,
    damaged_checkpoint,
    embedder_name,
    load_checkpoint,
    price_scale,
    save_checkpoint,
    training_prices,
    utility,
)

__all__ = [
    "EDGE_TYPES",
    "AgentRouter",
    "QueryGraph",
    "answer_kind",
    "focus_text",
    "soft_targets",
]

DEFAULT_TEXT_WINDOW = 600
"""Characters of a long query the graph reads: its last paragraph, cut to this length (RouterBench prompts share
a long few-shot prefix and put the question at the end)."""
GRAPH_CACHE_SIZE = 100_000
"""Query graphs kept in memory (by focused text); the cache is emptied when it would grow past this."""
RELATION_HASH_DIM = 64
"""Width of the hashed bag of words that describes a relation node."""
ENTITY_AGENT_LINKS = 3
"""Each entity is linked to this many agents whose descriptions are most similar to it."""
REFUSAL = (
    "Sorry, none of the available agents can help with this request. "
    "Please rephrase it or ask about something the listed agents cover."
)

EDGE_TYPES: tuple[tuple[str, str, str], ...] = (
    ("entity", "mentioned_in", "query"),
    ("query", "mentions", "entity"),
    ("entity", "argument_of", "relation"),
    ("relation", "relates", "entity"),
    ("query", "asks", "agent"),
    ("agent", "answers", "query"),
    ("entity", "relevant_to", "agent"),
    ("agent", "knows", "entity"),
)
"""The typed edges of the knowledge graph (source type, relation, destination type)."""

NODE_LABELS: tuple[str, ...] = (*ENTITY_LABELS, "TASK")
"""Entity node labels: the extractor's, and ``TASK`` for the task (data set) a query is known to come from."""
_N_LABELS = len(NODE_LABELS)
_LABEL_INDEX = {label: i for i, label in enumerate(NODE_LABELS)}
_WORD = re.compile(r"[a-z]+")


def focus_text(query: str, window: int = DEFAULT_TEXT_WINDOW) -> str:
    """The part of a query the router reads: all of it when short, else its last paragraph (blank-line
    separated), cut to its last ``window`` characters."""
    text = str(query).strip()
    if window <= 0 or len(text) <= window:
        return text
    blocks = [block for block in re.split(r"\n\s*\n", text) if block.strip()]
    tail = blocks[-1].strip() if blocks else text
    return tail[-window:]


def _quality(p: np.ndarray, mean: np.ndarray | float) -> np.ndarray:
    """Predicted quality from ``p`` over the models (last axis) and the mean score: ``p(model) * m * mean``, the
    soft target's scale (``p*_a = s_a / sum(s)``), clipped to [0, 1]."""
    return np.clip(p * p.shape[-1] * mean, 0.0, 1.0)  # type: ignore[no-any-return]  # numpy: Any on a bare ndarray


def soft_targets(scores: np.ndarray, *, power: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``p*``: each row of non-negative scores normalised to sum 1 (``score ** power`` first). Returns the
    targets and a mask of rows that carry information (some score above 0); other rows are uniform."""
    scores = np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0), 0.0, None) ** power
    totals = scores.sum(axis=1, keepdims=True)
    informative = totals[:, 0] > 0
    uniform = np.full_like(scores, 1.0 / max(1, scores.shape[1]))
    targets = np.where(totals > 0, scores / np.where(totals > 0, totals, 1.0), uniform)
    return targets.astype(np.float32), informative


def _hash_words(text: str) -> np.ndarray:
    vector = np.zeros(RELATION_HASH_DIM, dtype=np.float32)
    words = _WORD.findall(text.lower())
    for word in words:
        vector[zlib.crc32(word.encode("utf-8")) % RELATION_HASH_DIM] += 1.0
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


@dataclass(frozen=True)
class QueryGraph:
    """The query-side part of one knowledge graph (agent nodes are added when candidates are known)."""

    text: str
    """The focused query text the graph was built from."""
    query: np.ndarray
    """Query node feature, shape (dim,)."""
    entities: tuple[Entity, ...]
    entity_x: np.ndarray
    """Entity node features, shape (n_entities, dim + len(NODE_LABELS)): text embedding and one-hot label."""
    relation_x: np.ndarray
    """Relation node features, shape (n_relations, labels² + RELATION_HASH_DIM)."""
    relation_edges: np.ndarray
    """(2, n_edges): entity index -> relation index (head and tail of each relation)."""

    @property
    def n_entities(self) -> int:
        return len(self.entities)

    def to_hetero_data(self, agent_x: np.ndarray) -> Any:
        """The whole graph as a torch-geometric `HeteroData` with ``agent_x`` (n_agents, dim) agent nodes (for
        inspection; training batches graphs without it)."""
        import torch
        from torch_geometric.data import HeteroData

        batch = _collate([self], agent_x)
        data = HeteroData()
        data["query"].x = torch.from_numpy(self.query[None, :].astype(np.float32))
        data["entity"].x = torch.from_numpy(self.entity_x.astype(np.float32))
        data["relation"].x = torch.from_numpy(self.relation_x.astype(np.float32))
        data["agent"].x = torch.from_numpy(np.asarray(agent_x, dtype=np.float32))
        for edge_type, index in batch["edges"].items():
            data[edge_type].edge_index = index
        return data


RELATION_DIM = _N_LABELS * _N_LABELS + RELATION_HASH_DIM


def _relations(text: str, entities: Sequence[Entity], sentences: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Relation nodes between consecutive entities of a sentence, and entity -> relation edges."""
    features: list[np.ndarray] = []
    heads: list[int] = []
    rels: list[int] = []

    def sentence_of(entity: Entity) -> int:
        for number, (start, end) in enumerate(sentences):
            if start <= entity.start < end:
                return number
        return -1

    order = sorted((i for i in range(len(entities)) if entities[i].start >= 0), key=lambda i: entities[i].start)
    for a, b in zip(order, order[1:], strict=False):
        first, second = entities[a], entities[b]
        if sentence_of(first) != sentence_of(second):
            continue
        feature = np.zeros(RELATION_DIM, dtype=np.float32)
        feature[_LABEL_INDEX[first.label] * _N_LABELS + _LABEL_INDEX[second.label]] = 1.0
        feature[_N_LABELS * _N_LABELS :] = _hash_words(text[first.end : second.start][:200])
        index = len(features)
        features.append(feature)
        heads += [a, b]
        rels += [index, index]
    x = np.stack(features) if features else np.zeros((0, RELATION_DIM), dtype=np.float32)
    edges = np.array([heads, rels], dtype=np.int64) if heads else np.zeros((2, 0), dtype=np.int64)
    return x, edges


def _collate(graphs: Sequence[QueryGraph], agent_x: np.ndarray, links: int = ENTITY_AGENT_LINKS) -> dict[str, Any]:
    """Batch query graphs that share one candidate set into node features and typed edge indices."""
    import torch

    n_graphs, n_agents = len(graphs), len(agent_x)
    entity_offsets = np.cumsum([0] + [g.n_entities for g in graphs])
    relation_offsets = np.cumsum([0] + [len(g.relation_x) for g in graphs])
    dim = graphs[0].query.shape[0]
    entity_x = np.concatenate([g.entity_x for g in graphs]) if entity_offsets[-1] else np.zeros((0, dim + _N_LABELS), np.float32)
    relation_x = np.concatenate([g.relation_x for g in graphs]) if relation_offsets[-1] else np.zeros((0, RELATION_DIM), np.float32)
    entity_graph = np.repeat(np.arange(n_graphs), [g.n_entities for g in graphs])
    rel_src = np.concatenate([g.relation_edges[0] + entity_offsets[i] for i, g in enumerate(graphs)])
    rel_dst = np.concatenate([g.relation_edges[1] + relation_offsets[i] for i, g in enumerate(graphs)])
    query_agent_src = np.repeat(np.arange(n_graphs), n_agents)
    query_agent_dst = np.arange(n_graphs * n_agents)
    ent_src: np.ndarray = np.zeros(0, dtype=np.int64)
    ent_dst: np.ndarray = np.zeros(0, dtype=np.int64)
    if len(entity_x) and n_agents:
        agent_unit = np.asarray(agent_x, dtype=np.float32)
        sims = entity_x[:, :dim] @ agent_unit.T
        m = min(links, n_agents)
        top = np.argpartition(-sims, m - 1, axis=1)[:, :m]
        ent_src = np.repeat(np.arange(len(entity_x)), m)
        ent_dst = (entity_graph[:, None] * n_agents + top).reshape(-1)

    def edge(src: np.ndarray, dst: np.ndarray) -> Any:
        return torch.from_numpy(np.stack([np.asarray(src, np.int64), np.asarray(dst, np.int64)]))

    edges = {
        ("entity", "mentioned_in", "query"): edge(np.arange(len(entity_x)), entity_graph),
        ("query", "mentions", "entity"): edge(entity_graph, np.arange(len(entity_x))),
        ("entity", "argument_of", "relation"): edge(rel_src, rel_dst),
        ("relation", "relates", "entity"): edge(rel_dst, rel_src),
        ("query", "asks", "agent"): edge(query_agent_src, query_agent_dst),
        ("agent", "answers", "query"): edge(query_agent_dst, query_agent_src),
        ("entity", "relevant_to", "agent"): edge(ent_src, ent_dst),
        ("agent", "knows", "entity"): edge(ent_dst, ent_src),
    }
    return {
        "query": torch.from_numpy(np.stack([g.query for g in graphs]).astype(np.float32)),
        "entity": torch.from_numpy(np.ascontiguousarray(entity_x, dtype=np.float32)),
        "relation": torch.from_numpy(np.ascontiguousarray(relation_x, dtype=np.float32)),
        "edges": edges,
        "n_graphs": n_graphs,
        "n_agents": n_agents,
    }


def _build_network(dim: int, hidden: int, layers: int, n_known: int, dropout: float) -> Any:
    import torch
    from torch import nn
    from torch_geometric.nn import HeteroConv, SAGEConv

    class HeteroAgentGNN(nn.Module):
        """Type-aware message passing over the query graph, then a score per agent node and a "no agent" logit."""

        def __init__(self) -> None:
            super().__init__()
            self.inputs = nn.ModuleDict({
                "query": nn.Linear(dim, hidden),
                "entity": nn.Linear(dim + _N_LABELS, hidden),
                "relation": nn.Linear(RELATION_DIM, hidden),
                "agent": nn.Linear(dim, hidden),
            })
            # row 0 is "an agent not seen in training": it stays zero, so such agents are read by description only
            self.agent_ids = nn.Embedding(n_known + 1, hidden, padding_idx=0)
            self.convs = nn.ModuleList(
                HeteroConv({et: SAGEConv((hidden, hidden), hidden) for et in EDGE_TYPES}, aggr="sum") for _ in range(layers)
            )
            self.norms = nn.ModuleList(
                nn.ModuleDict({t: nn.LayerNorm(hidden) for t in ("query", "entity", "relation", "agent")}) for _ in range(layers)
            )
            self.dropout = nn.Dropout(dropout)
            self.score = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            self.none = nn.Linear(hidden, 1)
            self.mean_score = nn.Linear(hidden, 1)

        def forward(self, batch: dict[str, Any], agent_x: Any, agent_index: Any) -> tuple[Any, Any, Any]:
            n_graphs, n_agents = batch["n_graphs"], batch["n_agents"]
            agents = self.inputs["agent"](agent_x) + self.agent_ids(agent_index)
            h = {
                "query": self.inputs["query"](batch["query"]),
                "entity": self.inputs["entity"](batch["entity"]),
                "relation": self.inputs["relation"](batch["relation"]),
                "agent": agents.repeat(n_graphs, 1),
            }
            # a ModuleList of ModuleDicts, whose items torch types as bare Modules
            for conv, norms in zip(self.convs, cast("list[nn.ModuleDict]", self.norms), strict=True):
                messages = conv(h, batch["edges"])
                h = {
                    kind: norms[kind](value + self.dropout(torch.relu(messages[kind])) if kind in messages else value)
                    for kind, value in h.items()
                }
            query = h["query"]  # (B, hidden)
            agent = h["agent"].view(n_graphs, n_agents, -1)
            expanded = query[:, None, :].expand_as(agent)
            logits = self.score(torch.cat([agent, expanded, agent * expanded], dim=-1)).squeeze(-1)
            return logits, self.none(query).squeeze(-1), self.mean_score(query).squeeze(-1)

    return HeteroAgentGNN()


class AgentRouter(RecordsGivenOptions, BaseRouter):
    """Knowledge-graph GNN router with weighted fusion (AgentRouter). See the module docstring.

    Options: ``k`` agents dispatched (capped by the run policy's ``max_agents``), ``min_share`` (drop dispatched
    agents whose p is below this share of the best one's), ``hidden``/``layers``/``dropout`` of the GNN,
    ``epochs``/``lr``/``batch_size``/``patience`` of training, ``target_power`` (``p* ∝ score ** power``; 1 as
    published), ``text_window``, ``agent_id`` (the LLM agent whose model is chosen when the router was trained on
    models), ``checkpoint`` (load a saved router), ``seed``.
    """

    name: ClassVar[str] = "agent-router"
    multi_round: ClassVar[bool] = False
    needs_training: ClassVar[bool] = True
    """Built by name it has no trained network (its first decision says so): a chat, in the CLI or the UI, needs
    ``checkpoint`` (a router trained with `fit_agents` or `fit_models` and saved)."""
    checkpoint_format: ClassVar[str] = "orchestra.agent-router/1"
    """What `save` writes and `load` reads."""

    def __init__(
        self,
        k: int = 3,
        *,
        min_share: float = 0.0,
        hidden: int = 128,
        layers: int = 2,
        dropout: float = 0.1,
        epochs: int = 60,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 128,
        patience: int = 8,
        target_power: float = 1.0,
        id_dropout: float = 0.1,
        use_task: bool = True,
        text_window: int = DEFAULT_TEXT_WINDOW,
        agent_id: str | None = None,
        checkpoint: str | None = None,
        seed: int = 0,
        embedder: Any | None = None,
    ) -> None:
        if int(k) < 1:
            raise PolicyError(f"AgentRouter 'k' must be at least 1, got {k}")
        if not 0.0 <= float(min_share) <= 1.0:
            raise PolicyError(f"AgentRouter 'min_share' must lie in [0, 1], got {min_share}")
        if float(target_power) <= 0:
            raise PolicyError(f"AgentRouter 'target_power' must be positive, got {target_power}")
        check_whole_numbers("AgentRouter", {
            "hidden": (hidden, 1), "layers": (layers, 1), "epochs": (epochs, 1), "batch_size": (batch_size, 1), "patience": (patience, 0),
        })
        self.k = int(k)
        self.min_share = float(min_share)
        self.hidden, self.layers, self.dropout = int(hidden), int(layers), float(dropout)
        self.epochs, self.lr, self.weight_decay = int(epochs), float(lr), float(weight_decay)
        self.batch_size, self.patience = int(batch_size), int(patience)
        self.target_power = float(target_power)
        self.id_dropout = float(id_dropout)
        self.use_task = bool(use_task)
        self.text_window = int(text_window)
        self.agent_id = agent_id
        self.seed = int(seed)
        self._texts = AgentEmbeddingCache(embedder)  # lazy, shared loading of the project embedder
        self.mode: str | None = None
        """``"models"`` (trained on model outcomes: candidates are model cards) or ``"agents"``; ``None`` untrained."""
        self.known_ids: list[str] = []
        """Candidates seen in training (they have a learned vector besides their description)."""
        self.uses_none = False
        """Whether a "no agent" outcome was learnt (out-of-scope examples were given)."""
        self._net: Any = None
        self._graphs: dict[str, QueryGraph] = {}
        self._card_vectors: dict[str, np.ndarray] = {}
        self._task_model_cost: dict[tuple[str, str], float] = {}
        self._model_cost: dict[str, float] = {}
        self.card_costs: dict[str, float | None] = {}
        self.trained_prices: dict[str, tuple[float, float]] = {}
        """Prices of the priced model cards at training, by id (see `ModelRouter.trained_prices`)."""
        self.training_log: dict[str, Any] = {}
        self.checkpoint = checkpoint
        if checkpoint:
            adopt_checkpoint(self, checkpoint, embedder)

    # ------------------------------------------------------------------------------------------ features
    @property
    def embedder(self) -> Any:
        return self._texts.embedder

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._texts.encode(list(texts))

    def graphs(
        self, texts: Sequence[str], contexts: Sequence[str] | None = None, tasks: Sequence[str | None] | None = None
    ) -> list[QueryGraph]:
        """The query-side graphs of ``texts`` (entities also from ``contexts``, e.g. the last turns; a ``TASK``
        entity for each known task when ``use_task``), cached by text."""
        contexts = list(contexts) if contexts is not None else [""] * len(texts)
        task_list = [(t or "") if self.use_task else "" for t in tasks] if tasks is not None else [""] * len(texts)
        contexts = [c + ("\x01" + t if t else "") for c, t in zip(contexts, task_list, strict=True)]
        keys = [focus_text(t, self.text_window) + ("\x00" + c if c else "") for t, c in zip(texts, contexts, strict=True)]
        if len(self._graphs) + len(keys) > GRAPH_CACHE_SIZE:  # a long-running server must not grow forever
            self._graphs.clear()
        missing = {key: (focus_text(t, self.text_window), c) for key, t, c in zip(keys, texts, contexts, strict=True) if key not in self._graphs}
        if missing:
            extractor = get_extractor()
            parsed = {}
            for key, (text, context) in missing.items():
                context, _, task = context.partition("\x01")
                source = f"{context}\n\n{text}" if context else text
                entities = extractor.extract(source)
                if task:
                    entities.append(Entity(text=task.replace("_", " "), label="TASK", start=-1, end=-1))
                parsed[key] = (text, source, entities, extractor.sentences(source) if len(entities) > 1 else [])
            entity_texts = sorted({e.text for _, _, ents, _ in parsed.values() for e in ents})
            query_vectors = self._encode([text for text, _, _, _ in parsed.values()])
            entity_vectors = dict(zip(entity_texts, self._encode(entity_texts), strict=True))
            for (key, (text, source, entities, sentences)), vector in zip(parsed.items(), query_vectors, strict=True):
                dim = len(vector)
                entity_x = np.zeros((len(entities), dim + _N_LABELS), dtype=np.float32)
                for i, entity in enumerate(entities):
                    entity_x[i, :dim] = entity_vectors[entity.text]
                    entity_x[i, dim + _LABEL_INDEX[entity.label]] = 1.0
                relation_x, relation_edges = _relations(source, entities, sentences)
                self._graphs[key] = QueryGraph(text, vector, tuple(entities), entity_x, relation_x, relation_edges)
        return [self._graphs[key] for key in keys]

    def card_vectors(self, cards: Sequence[AgentCard | ModelCard]) -> tuple[np.ndarray, list[str]]:
        """Description embeddings of the candidates, cached by content, and the ids of candidates that have no
        usable description (their id is embedded instead)."""
        texts = []
        undescribed = []
        for card in cards:
            description = str(getattr(card, "description", "") or "").strip()
            if not description:
                undescribed.append(card.id)
                texts.append(card.id)
            else:
                texts.append(card.routing_text())
        missing = [t for t in texts if t not in self._card_vectors]
        if missing:
            for text, vector in zip(missing, self._encode(missing), strict=True):
                self._card_vectors[text] = vector
        vectors = np.stack([self._card_vectors[t] for t in texts]) if texts else np.zeros((0, self.embedder.dim), np.float32)
        return vectors, undescribed

    # ------------------------------------------------------------------------------------------ training
    def fit(self, first: Sequence[Any], second: Sequence[Any], *args: Any, **kwargs: Any) -> AgentRouter:
        """Train from what a harness gives: ``fit(train_rows, model_cards, val=..., ...)`` (model routing: the
        first items carry ``outcomes``) or ``fit(agent_cards, routing_examples, regime, shots, oos_rows=...)``."""
        items = list(first)
        if items and hasattr(items[0], "outcomes"):
            return self.fit_models(items, list(second), *args, **kwargs)
        return self.fit_agents(items, list(second), *args, **kwargs)

    def fit_models(
        self,
        train: Sequence[Any],
        cards: Sequence[ModelCard],
        *,
        val: Sequence[Any] = (),
        weights: Sequence[float] = (),
        card_costs: Mapping[str, float | None] | None = None,
        seed: int | None = None,
    ) -> AgentRouter:
        """Models act as agents: ``p*`` of a query is its models' recorded scores normalised to sum 1."""
        if seed is not None:
            self.seed = int(seed)
        # the model routers' checks: a query without outcomes (of these models) was trained on as uninformative
        check_training_data(self.name, train, val, cards)
        ids = [card.id for card in cards]
        scores = np.array([[row.outcomes[m].score if m in row.outcomes else 0.0 for m in ids] for row in train])
        val_scores = np.array([[row.outcomes[m].score if m in row.outcomes else 0.0 for m in ids] for row in val]) if val else None
        self.card_costs = dict(card_costs or {})
        self.trained_prices = training_prices(cards)
        self._fit_costs(train)
        self.mode = "models"
        self._train(
            [row.query for row in train], scores, list(cards),
            [row.query for row in val] if val else None, val_scores, none_rows=(),
            tasks=[row.task for row in train], val_tasks=[row.task for row in val],
        )
        return self

    def fit_agents(
        self,
        agents: Sequence[AgentCard],
        train_rows: Sequence[Any],
        regime: str = "supervised",
        shots: int = 0,
        *,
        oos_rows: Sequence[Any] = (),
        seed: int = 0,
    ) -> AgentRouter:
        """Agent sets: ``p*`` is uniform over a query's gold agents; each card's example queries (or, with none
        at all, its description) are labelled rows too; out-of-scope rows teach the "no agent" outcome."""
        from orchestra.bench.agents import Regime

        Regime.parse(regime)  # every regime trains alike here, but a misspelt one is still a mistake to report
        self.seed = int(seed)
        cards = list(agents)
        if not cards:
            raise DataError("agent-router: no agent cards to train on")
        check_unique_ids([card.id for card in cards], "agent-router.fit_agents")  # as SetRouter.fit
        index = {card.id: j for j, card in enumerate(cards)}
        texts: list[str] = []
        rows: list[np.ndarray] = []
        for number, row in enumerate(train_rows, start=1):
            target = np.zeros(len(cards))
            for agent in row.agents:
                if agent not in index:
                    raise DataError(f"training row {number}: agent {agent!r} is not among the agents being trained")
                target[index[agent]] = 1.0
            if target.any():
                texts.append(row.query)
                rows.append(target)
        for card in cards:
            pseudo = list(card.examples) or ([card.description] if not texts else [])
            for example in pseudo:
                target = np.zeros(len(cards))
                target[index[card.id]] = 1.0
                texts.append(example)
                rows.append(target)
        oos = [row.query for row in oos_rows if not row.agents]
        self.mode = "agents"
        self._train(texts, np.stack(rows), cards, None, None, none_rows=oos)
        return self

    def _fit_costs(self, train: Sequence[Any]) -> None:
        sums: dict[tuple[str, str], list[float]] = {}
        for row in train:
            for model_id, outcome in row.outcomes.items():
                if outcome.cost is not None:
                    sums.setdefault(("", model_id), []).append(outcome.cost)
                    if row.task:
                        sums.setdefault((row.task, model_id), []).append(outcome.cost)
        means = {key: float(np.mean(values)) for key, values in sums.items()}
        self._model_cost = {m: c for (task, m), c in means.items() if task == ""}
        self._task_model_cost = {key: c for key, c in means.items() if key[0]}

    def _train(
        self,
        texts: list[str],
        scores: np.ndarray,
        cards: list[Any],
        val_texts: list[str] | None,
        val_scores: np.ndarray | None,
        *,
        none_rows: Sequence[str],
        tasks: Sequence[str | None] | None = None,
        val_tasks: Sequence[str | None] | None = None,
    ) -> None:
        import torch

        started = time.perf_counter()
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.known_ids = [card.id for card in cards]
        self.uses_none = bool(none_rows)
        targets, informative = soft_targets(scores, power=self.target_power)
        mean_scores = np.clip(scores, 0, 1).mean(axis=1).astype(np.float32)
        # a row where every candidate failed says nothing about which is better: it trains the mean-score head only
        targets = np.concatenate([targets, np.zeros((len(targets), 1), np.float32)], axis=1)
        kl_mask = informative.astype(np.float32)
        if none_rows:
            none_targets = np.zeros((len(none_rows), targets.shape[1]), np.float32)
            none_targets[:, -1] = 1.0
            texts = texts + list(none_rows)
            tasks = list(tasks) + [None] * len(none_rows) if tasks is not None else None
            targets = np.concatenate([targets, none_targets])
            kl_mask = np.concatenate([kl_mask, np.ones(len(none_rows), np.float32)])
            mean_scores = np.concatenate([mean_scores, np.zeros(len(none_rows), np.float32)])
        if val_texts is None:  # carve a validation slice for early stopping
            order = rng.permutation(len(texts))
            n_val = max(1, len(texts) // 10) if len(texts) > 10 else 0
            val_idx, train_idx = order[:n_val], order[n_val:]
        else:
            train_idx, val_idx = np.arange(len(texts)), np.zeros(0, dtype=np.int64)
        graphs = self.graphs(texts, tasks=tasks)
        if val_texts is not None and val_scores is not None and len(val_texts):
            v_targets, v_inf = soft_targets(val_scores, power=self.target_power)
            val_graphs = self.graphs(val_texts, tasks=val_tasks)
            val_pack = (val_graphs, np.concatenate([v_targets, np.zeros((len(v_targets), 1), np.float32)], axis=1),
                        v_inf.astype(np.float32), np.clip(val_scores, 0, 1).mean(axis=1).astype(np.float32))
        elif len(val_idx):
            val_pack = ([graphs[i] for i in val_idx], targets[val_idx], kl_mask[val_idx], mean_scores[val_idx])
        else:
            val_pack = None
        agent_x, undescribed = self.card_vectors(cards)
        agent_t = torch.from_numpy(agent_x)
        agent_index = torch.arange(1, len(cards) + 1)
        self._net = _build_network(agent_x.shape[1], self.hidden, self.layers, len(cards), self.dropout)
        optimiser = torch.optim.AdamW(self._net.parameters(), lr=self.lr, weight_decay=self.weight_decay)

        def loss_of(batch_graphs: list[QueryGraph], tgt: np.ndarray, mask: np.ndarray, mean: np.ndarray, ids: Any) -> Any:
            batch = _collate(batch_graphs, agent_x)
            logits, none_logit, mean_logit = self._net(batch, agent_t, ids)
            log_p = self._log_probs(logits, none_logit)
            target = torch.from_numpy(tgt)
            kl = (target * (torch.log(target.clamp(min=1e-12)) - log_p)).sum(dim=1)
            weights = torch.from_numpy(mask)
            kl = (kl * weights).sum() / weights.sum().clamp(min=1.0)
            mse = torch.nn.functional.binary_cross_entropy_with_logits(mean_logit, torch.from_numpy(mean))
            return kl + 0.1 * mse, kl

        best, best_state, waited, epochs_run = math.inf, copy.deepcopy(self._net.state_dict()), 0, 0
        history = []
        for _epoch in range(self.epochs):
            self._net.train()
            order = rng.permutation(train_idx)
            total = 0.0
            for start in range(0, len(order), self.batch_size):
                chosen = order[start : start + self.batch_size]
                ids = agent_index.clone()
                if self.id_dropout > 0:  # learn to read descriptions too, for agents onboarded later
                    drop = torch.rand(len(ids), generator=torch.Generator().manual_seed(int(rng.integers(1 << 30))))
                    ids = torch.where(drop < self.id_dropout, torch.zeros_like(ids), ids)
                loss, _ = loss_of([graphs[i] for i in chosen], targets[chosen], kl_mask[chosen], mean_scores[chosen], ids)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(chosen)
            epochs_run += 1
            if val_pack is None:
                history.append(round(total / max(1, len(order)), 5))
                continue
            self._net.eval()
            with torch.no_grad():
                val_kl = 0.0
                vg, vt, vm, vmean = val_pack
                for start in range(0, len(vg), 512):
                    sl = slice(start, start + 512)
                    _, kl = loss_of(vg[sl], vt[sl], vm[sl], vmean[sl], agent_index)
                    val_kl += float(kl) * float(vm[sl].sum())
                val_kl /= max(1.0, float(vm.sum()))
            history.append(round(val_kl, 5))
            if val_kl < best - 1e-4:
                best, best_state, waited = val_kl, copy.deepcopy(self._net.state_dict()), 0
            else:
                waited += 1
                if waited >= self.patience:
                    break
        if val_pack is not None:
            self._net.load_state_dict(best_state)
        self._net.eval()
        self.training_log = {
            "rows": int(len(train_idx)),
            "val_rows": int(len(val_pack[0])) if val_pack else 0,
            "none_rows": len(none_rows),
            "uninformative_rows": int((~informative).sum()),
            "epochs": epochs_run,
            "best_val_kl": None if val_pack is None else round(best, 5),
            "history": history,
            "undescribed_candidates": undescribed,
            "seconds": round(time.perf_counter() - started, 2),
        }

    def _log_probs(self, logits: Any, none_logit: Any) -> Any:
        import torch

        none = none_logit[:, None] if self.uses_none else torch.full_like(none_logit[:, None], -1e9)
        return torch.log_softmax(torch.cat([logits, none], dim=1), dim=1)

    # ------------------------------------------------------------------------------------------ inference
    def _require_trained(self) -> None:
        if self._net is None:
            raise DecisionError(
                "router 'agent-router' is not trained: call fit() or pass checkpoint=PATH of a saved router"
            )

    def distribution(
        self, queries: Sequence[Any], cards: Sequence[AgentCard | ModelCard], *, contexts: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``p(candidate | query, graph)`` for each query over ``cards`` plus the "no agent" column: (n, m + 1);
        with the predicted mean score per query (n,) and the candidates' "seen in training" mask (m,)."""
        import torch

        self._require_trained()
        texts = [getattr(q, "query", q) for q in queries]
        if not cards:
            none = np.zeros((len(texts), 1))
            none[:, 0] = 1.0
            return none, np.zeros(len(texts)), np.zeros(0, dtype=bool)
        agent_x, _ = self.card_vectors(cards)
        expected = self._net.inputs["agent"].in_features
        if agent_x.shape[1] != expected:
            raise CheckpointError(
                f"agent-router was trained on {expected}-dimensional embeddings but the embedder gives {agent_x.shape[1]}"
            )
        known = {agent_id: j + 1 for j, agent_id in enumerate(self.known_ids)}
        agent_index = torch.tensor([known.get(card.id, 0) for card in cards])
        graphs = self.graphs([str(t) for t in texts], contexts, [getattr(q, "task", None) for q in queries])
        out_p, out_mean = [], []
        with torch.no_grad():
            for start in range(0, len(graphs), 256):
                batch = _collate(graphs[start : start + 256], agent_x)
                logits, none_logit, mean_logit = self._net(batch, torch.from_numpy(agent_x), agent_index)
                out_p.append(torch.exp(self._log_probs(logits, none_logit)).numpy())
                out_mean.append(torch.sigmoid(mean_logit).numpy())
        return np.concatenate(out_p), np.concatenate(out_mean), (agent_index > 0).numpy()

    # model-router protocol (orchestra bench models) ----------------------------------------------------------
    def embed_queries(self, queries: Sequence[Any]) -> np.ndarray:
        """Build (and cache) the graphs of ``queries``; returns their query-node embeddings."""
        graphs = self.graphs([str(getattr(q, "query", q)) for q in queries], tasks=[getattr(q, "task", None) for q in queries])
        return np.stack([g.query for g in graphs]) if graphs else np.zeros((0, self.embedder.dim), np.float32)

    def predict(self, queries: Sequence[Any], model_cards: Sequence[ModelCard]) -> tuple[np.ndarray, np.ndarray]:
        """Quality and cost per (query, model): quality ``p(model) * m * mean score`` (the soft target's
        scale: ``p*_a = s_a / sum(s)``), cost the model's mean recorded cost on the task."""
        if not model_cards:
            raise DecisionError("agent-router: no model cards to choose from")
        p, mean, _ = self.distribution(queries, model_cards)
        quality = _quality(p[:, :-1], mean[:, None])
        tasks = [str(getattr(q, "task", "") or "") for q in queries]
        texts = [str(getattr(q, "query", q)) for q in queries]
        return quality, self._costs(texts, tasks, model_cards)

    def _costs(self, texts: Sequence[str], tasks: Sequence[str], cards: Sequence[ModelCard]) -> np.ndarray:
        from orchestra.bench.models import estimate_cost

        costs = np.full((len(texts), len(cards)), np.nan)
        for j, card in enumerate(cards):
            base = self._model_cost.get(card.id, self.card_costs.get(card.id))
            # a trained mean follows a price changed since training, as in ModelRouter._costs
            scale = price_scale(card, self.trained_prices, texts) if isinstance(card, ModelCard) else np.ones(len(texts))
            for i, task in enumerate(tasks):
                value = self._task_model_cost.get((task, card.id), base)
                if value is None and isinstance(card, ModelCard):
                    value = estimate_cost(card, texts[i], None)
                elif value is not None and scale[i] != 1.0:
                    value = value * scale[i]
                costs[i, j] = np.nan if value is None else value
        if np.isnan(costs).any():  # an unpriced, unseen model is taken as dear as the dearest known one
            fallback = np.nanmax(costs, axis=1, keepdims=True) if not np.isnan(costs).all() else np.ones((len(texts), 1))
            costs = np.where(np.isnan(costs), np.nan_to_num(fallback, nan=1.0), costs)
        return costs

    def route_batch(
        self, queries: Sequence[Any], model_cards: Sequence[ModelCard], w: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Chosen model per query at cost weight ``w`` (``(1 - w) * quality - w * normalised cost``) and the
        (utility, quality, cost) matrices. At ``w = 0`` the choice is the top-1 of ``p``."""
        check_weight(w)
        quality, costs = self.predict(queries, model_cards)
        values = utility(quality, costs, w)
        return np.argmax(values, axis=1), values, quality, costs

    def route_one(
        self, query: str, model_cards: Sequence[ModelCard], w: float, *, task: str | None = None
    ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """One query's choice: (index, utility row, quality row, cost row)."""
        item = _Query(query, task or "")
        chosen, values, quality, costs = self.route_batch([item], model_cards, w)
        return int(chosen[0]), values[0], quality[0], costs[0]

    # ------------------------------------------------------------------------------------------ decision
    def _served_agent(self, state: RouterState) -> str | None:
        if self.agent_id is not None:
            return self.agent_id if state.agent(self.agent_id) is not None else None
        return next((card.id for card in state.agents if card.backend == "model"), None)

    def decide(self, state: RouterState) -> Dispatch | Finish:
        """Build the query's graph over the registry's candidates as they are now, and dispatch the top-k with
        their weight ``p``; no candidate, an empty query or a "no agent" top choice is a recorded refusal."""
        query = " ".join(str(state.query).split())
        if not query:
            return self._refuse("the query is empty")
        self._require_trained()
        served = None
        if self.mode == "models":
            served = self._served_agent(state)
            if served is None:
                return self._refuse("no LLM agent (backend 'model') in the registry to back with a model")
            cards: list[Any] = list(state.models)
            kind = "model"
        else:
            cards = list(state.agents)
            kind = "agent"
        if not cards:
            return self._refuse(f"the registry holds no {kind}s to route to", candidates=0)
        context = " ".join(turn.content for turn in state.history[-2:] if turn.role == "user")
        p, mean, seen = self.distribution([query], cards, contexts=[context] if context else None)
        probs, p_none = p[0, :-1], float(p[0, -1])
        graph = self.graphs([query], [context] if context else None)[0]
        order = np.argsort(-probs, kind="stable")
        details: list[dict[str, Any]] = [{"seen_in_training": "yes" if seen[j] else "no"} for j in range(len(cards))]
        w = check_weight(state.policy.cost_weight) if kind == "model" else 0.0
        if kind == "model":
            # predicted quality and cost are given at every w, as ModelRouter.decide gives them; only w > 0 ranks
            # the models by utility (as `route_batch` does in the benchmark), w = 0 keeps the order of p
            quality = _quality(probs, float(mean[0]))
            costs = self._costs([state.query], [""], cards)
            values = utility(quality[None, :], costs, w)[0]
            if w > 0:
                order = np.argsort(-values, kind="stable")
            for j in range(len(cards)):
                details[j].update(quality=round(float(quality[j]), 6), cost_usd=float(costs[0, j]), utility=round(float(values[j]), 6))
        scores = tuple(CandidateScore(id=cards[j].id, score=round(float(probs[j]), 6), detail=details[j]) for j in order)
        _, undescribed = self.card_vectors(cards)
        meta: dict[str, Any] = {
            "router": self.name,
            "mode": self.mode,
            "p_none": round(p_none, 6),
            "entities": [[e.text, e.label] for e in graph.entities],
            "relations": int(len(graph.relation_x)),
            "onboarded": [cards[j].id for j in range(len(cards)) if not seen[j]],
            "fusion": "weighted-vote" if answer_kind(state.query) == "vote" else "refine",
        }
        if not graph.entities:
            meta["no_entities"] = True
        if undescribed:
            meta["undescribed"] = undescribed
        if self.uses_none and p_none > float(probs.max()):
            return self._refuse(f"'no agent' is the most likely outcome (p={p_none:.3f})", scores=scores, **meta)
        k = max(1, min(self.k, state.policy.max_agents, len(cards)))
        top = float(probs[order[0]])
        chosen = [j for j in order[:k] if probs[j] >= self.min_share * top]
        total = float(sum(probs[j] for j in chosen)) or 1.0
        if served is not None:  # routing models: each chosen one backs the served agent
            meta.update(choice_meta(self.name, w, quality[chosen[0]], costs[0, chosen[0]]))
            calls = tuple(Call(agent_id=served, query=state.query, weight=float(probs[j]) / total, model_id=cards[j].id)
                          for j in chosen)
        else:
            calls = tuple(Call(agent_id=cards[j].id, query=state.query, weight=float(probs[j]) / total) for j in chosen)
        rationale = f"top {len(chosen)} of {len(cards)} {kind}s by p(· | query, graph): " + ", ".join(
            f"{cards[j].id} {probs[j]:.2f}" for j in chosen
        )
        if not any(seen):
            # a checkpoint trained for another registry: still routable by card, but the person should know
            rationale += f" (none of these {kind}s was seen in training: chosen by their cards alone; retrain for this registry)"
        return Dispatch(calls=calls, rationale=rationale, scores=scores, meta=meta)

    def _refuse(self, reason: str, *, scores: Sequence[CandidateScore] = (), **meta: Any) -> Finish:
        return Finish(answer=REFUSAL, rationale=reason, scores=tuple(scores), out_of_scope=True, meta={"router": self.name, **meta})

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "k": self.k, "min_share": self.min_share, "hidden": self.hidden, "layers": self.layers,
            "dropout": self.dropout, "epochs": self.epochs, "lr": self.lr, "target_power": self.target_power,
            "use_task": self.use_task, "text_window": self.text_window, "agent_id": self.agent_id, "checkpoint": self.checkpoint, "seed": self.seed,
            "trained": self._net is not None,
        }

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the trained router (weights, candidates, costs, options) to ``path`` as tensors and plain data,
        which `load` reads without running code from the file."""
        self._require_trained()
        return save_checkpoint(path, {
            "format": self.checkpoint_format,
            "options": {key: value for key, value in self.describe().items() if key not in ("name", "checkpoint")},
            "mode": self.mode,
            "known_ids": self.known_ids,
            "uses_none": self.uses_none,
            "dim": int(self.embedder.dim),
            "embedder": embedder_name(self.embedder),
            "state_dict": self._net.state_dict(),
            "model_cost": self._model_cost,
            "task_model_cost": [[task, model, cost] for (task, model), cost in self._task_model_cost.items()],
            "card_costs": self.card_costs,
            "trained_prices": {model_id: list(prices) for model_id, prices in self.trained_prices.items()},
        })

    @classmethod
    def load(
        cls, path: str | Path, *, candidates: Sequence[str] | None = None, strict: bool = False, **options: Any
    ) -> AgentRouter:
        """A saved router, with the options it was saved with (``k``, ``min_share``, ``agent_id``, ...); an option
        given here overrides the saved one. ``candidates``: the agent (or model) ids of the registry it will
        route over; a `CheckpointError` is raised when none of them was seen in training (or, with ``strict``,
        when the sets differ), as well as for a file that is not an AgentRouter checkpoint."""
        options.pop("checkpoint", None)  # this call is the loading: the router must not load the file again
        check_load_options(cls, options)
        saved = load_checkpoint(path, cls.checkpoint_format)
        try:
            saved_options = {key: value for key, value in saved["options"].items() if key not in ("trained", "checkpoint")}
            embedder = checkpoint_embedder(saved.get("embedder"), options.get("embedder"), path, cls.name)
            router = cls(**{**saved_options, **options, "embedder": embedder})
            router._load_state(saved, path)
        except OrchestraError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise damaged_checkpoint(path, cls.name, exc) from None
        # absolute, so that a replay started from another folder (or the UI) rebuilds the router from this file
        router.checkpoint = os.path.abspath(Path(path).expanduser())
        if candidates is not None:
            given, known = set(candidates), set(router.known_ids)
            if strict and given != known:
                raise CheckpointError(
                    f"checkpoint {str(path)!r} was trained on {sorted(known)}; the registry holds {sorted(given)} "
                    f"(missing {sorted(known - given)}, new {sorted(given - known)})"
                )
            if given and not given & known:
                raise CheckpointError(
                    f"checkpoint {str(path)!r} knows none of the candidates {sorted(given)[:10]}; it was trained on "
                    f"{sorted(known)[:10]}: retrain it for this registry"
                )
        return router

    def _load_state(self, saved: Mapping[str, Any], path: str | Path) -> None:
        """Take the trained state of a checkpoint read by `load` (its options are already set)."""
        self.mode = saved["mode"]
        self.known_ids = list(saved["known_ids"])
        self.uses_none = bool(saved["uses_none"])
        self._model_cost = dict(saved["model_cost"])
        self._task_model_cost = {(task, model): cost for task, model, cost in saved["task_model_cost"]}
        self.card_costs = dict(saved["card_costs"])
        # absent from checkpoints saved before they were kept: no price scaling
        self.trained_prices = {model_id: tuple(prices) for model_id, prices in saved.get("trained_prices", {}).items()}
        self._net = _build_network(int(saved["dim"]), self.hidden, self.layers, len(self.known_ids), self.dropout)
        try:
            self._net.load_state_dict(saved["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {str(path)!r} does not fit the network: {exc}") from None
        self._net.eval()


@dataclass(frozen=True)
class _Query:
    """A query with its task, as the model harness routes it."""

    query: str
    task: str = ""
