"""The fast learned set router: which agents (at most k) answer a query, on CPU, with no LLM at decision time.

How it decides:

1. **Representations.** The query is embedded with all-MiniLM-L6-v2 (`orchestra.embeddings`). Each agent card
   is represented by embeddings of its description, of the description's sentences and of its id read as words
   (``banking:freeze_account`` -> "banking freeze account"), and of its example queries when the card has some.
   They are cached by card content, so an agent added or changed in the registry is embedded at the next
   decision and the others are reused. With ``finetune_epochs`` the encoder itself is fine-tuned on the
   training queries first (a cosine classifier over the agents, so the tuned space still scores agents by
   cosine to a prototype and onboarded agents keep working); the checkpoint then carries the tuned encoder.
2. **Scorer.** Every agent gets a logit ``w_a . q + b_a``. Agents seen in training have ``w_a`` learned by a
   multinomial logistic regression over query embeddings (supervised: all of train; few-shot: K examples per
   agent, with the card's description sentences as extra examples). An agent the model was not trained on
   gets its weights *imprinted* from its card: the direction of its prototype (example centroid blended with
   its description) scaled to the trained weights' median norm, with the trained agents' median bias lowered
   by ``imprint_offset`` (the blend and the offset are tuned on CLINC150 val). So onboarding takes effect at
   once, without retraining. With no training at all (zero-shot) the logit is a fixed mix of the query's similarity to the
   description, its best sentence and the id words.
3. **Calibrated set rule.** Probabilities are a softmax over the agents (and an out-of-scope class when
   out-of-scope examples were given), with a temperature. With ``knn_weight`` > 0 the in-scope distribution
   is a product of two experts: the scorer's, and a vote of the query's nearest training queries and card
   examples (a memory kept with the scorer, in the same embedding space). The best agent joins; each next one
   joins while its probability clears ``join_threshold``, at most k. The query is out of scope when the out-of-scope
   probability, or the lack of any similar text, clears ``oos_threshold``.
4. **Multi-agent queries.** The query is cut at conjunction boundaries ("and then", ",", "and also", ...);
   a cut is kept when each part is confidently classified and the parts go to different agents (the cut with
   most parts wins), and each agent is called with the part of the query it should answer.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from orchestra.cards import AgentCard
from orchestra.errors import CheckpointError, DataError, OrchestraError, PolicyError
from orchestra.routing import BaseRouter, Call, CandidateScore, Dispatch, Finish, RouterState

from .basic import AgentEmbeddingCache, AgentVectors, card_fingerprint, check_unique_ids, check_whole_numbers, effective_k, out_of_scope, routable_query
from .model_routers import (
    RecordsGivenOptions,
    adopt_checkpoint,
    check_load_options,
    checkpoint_embedder,
    checkpoint_kind,
    damaged_checkpoint,
    embedder_name,
    with_article,
)

__all__ = ["SetRouter"]

_CHECKPOINT_FORMAT = "orchestra.set_router/1"

# Words that join two requests in one utterance. Longest first, so "and then" wins over "and".
_CONNECTORS = re.compile(
    r"\s*(?:,\s*and then|\band then\b|\band also\b|\bthen\b|\balso\b|,\s*and\b|\band\b|,|;|\bplus\b)\s*",
    re.IGNORECASE,
)
# Joins that rarely sit inside a name or title: punctuation, "and then", "and also".
_STRONG_JOIN = re.compile(r"[,;]|\band (?:then|also)\b", re.IGNORECASE)
_MAX_CONNECTORS = 5
_MAX_PARTS = 3


def id_words(agent_id: str) -> str:
    """An id read as words: ``kitchen_and_dining:ingredients_list`` -> "kitchen and dining ingredients list"."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", agent_id)
    return " ".join(re.split(r"[^A-Za-z0-9]+", spaced)).strip().lower()


def description_pieces(card: AgentCard) -> list[str]:
    """The description's sentences (and the id words): finer texts than the whole description to match a
    short query against."""
    text = " ".join(card.description.split())
    sentences = [s.strip() for s in re.split(r"(?<=[.!?;])\s+", text) if len(s.strip()) > 3]
    return [id_words(card.id) or card.id, *sentences[:12]]


def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)  # type: ignore[no-any-return]  # numpy: Any on a bare ndarray


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]  # numpy: Any on a bare ndarray


@dataclass(frozen=True)
class _CardVectors(AgentVectors):
    """`AgentVectors` (kept in the same cache) with the card's description pieces."""

    pieces: np.ndarray  # (n_pieces, dim): id words first, then sentences


class _CardCache(AgentEmbeddingCache):
    """Card embeddings keyed by card content, as the embedding router keeps them, plus each card's description
    pieces (id words, sentences) that the zero-shot mix scores; only new or changed cards are embedded."""

    def vectors(self, cards: Sequence[AgentCard]) -> list[_CardVectors]:  # type: ignore[override]
        keys = [card_fingerprint(card) for card in cards]
        with self._lock:
            missing = {key: card for key, card in zip(keys, cards, strict=True) if key not in self._vectors}
        if missing:
            texts: list[str] = []
            spans = []
            for key, card in missing.items():
                pieces = description_pieces(card)
                start = len(texts)
                texts.append(card.routing_text())
                texts.extend(pieces)
                texts.extend(card.examples)
                spans.append((key, start, len(pieces), len(card.examples)))
            matrix = self.encode(texts)
            with self._lock:
                for key, start, n_pieces, n_examples in spans:
                    p0 = start + 1
                    e0 = p0 + n_pieces
                    self._vectors[key] = _CardVectors(
                        description=matrix[start], pieces=matrix[p0:e0], examples=matrix[e0 : e0 + n_examples]
                    )
        with self._lock:
            # this cache holds nothing but _CardVectors: the base's `vectors` is never called on it
            return [cast(_CardVectors, self._vectors[key]) for key in keys]


class _Featurizer:
    """Query features: the sentence embedding beside TF-IDF of character and word n-grams. The n-grams catch
    the surface cues (names, rare words) that a frozen sentence encoder blurs; weight ``ngram_weight``."""

    _CHAR = {"analyzer": "char_wb", "ngram_range": (2, 5), "sublinear_tf": True, "min_df": 2}
    _WORD = {"ngram_range": (1, 2), "sublinear_tf": True, "min_df": 1}

    def __init__(self, ngram_weight: float, char: Any = None, word: Any = None) -> None:
        self.ngram_weight = ngram_weight
        self.char = char
        self.word = word

    def fit(self, texts: Sequence[str]) -> _Featurizer:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if self.ngram_weight == 0:
            return self
        self.char = TfidfVectorizer(**self._CHAR).fit(texts)
        self.word = TfidfVectorizer(**self._WORD).fit(texts)
        return self

    def transform(self, texts: Sequence[str], embeddings: np.ndarray) -> Any:
        from scipy import sparse

        blocks = [sparse.csr_matrix(embeddings)]
        if self.ngram_weight > 0 and self.char is not None:
            blocks += [self.ngram_weight * self.char.transform(texts), self.ngram_weight * self.word.transform(texts)]
        return sparse.hstack(blocks, format="csr")

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if self.char is None:
            return {"ngram_weight": self.ngram_weight}, {}
        meta = {
            "ngram_weight": self.ngram_weight,
            "char_vocabulary": {k: int(v) for k, v in self.char.vocabulary_.items()},
            "word_vocabulary": {k: int(v) for k, v in self.word.vocabulary_.items()},
        }
        return meta, {"char_idf": self.char.idf_, "word_idf": self.word.idf_}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> _Featurizer:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if "char_vocabulary" not in meta:
            return cls(meta["ngram_weight"])
        char = TfidfVectorizer(**{**cls._CHAR, "min_df": 1}, vocabulary=meta["char_vocabulary"])
        char.idf_ = arrays["char_idf"]
        word = TfidfVectorizer(**cls._WORD, vocabulary=meta["word_vocabulary"])
        word.idf_ = arrays["word_idf"]
        return cls(meta["ngram_weight"], char, word)


@dataclass
class _Head:
    """The trained part: per-agent weights over query features, plus what imprinting new agents needs."""

    agent_ids: list[str]
    fingerprints: list[str]
    featurizer: _Featurizer
    weights: np.ndarray  # (n_agents, n_features)
    bias: np.ndarray  # (n_agents,)
    oos_weight: np.ndarray | None  # (n_features,) out-of-scope class, when trained with out-of-scope queries
    oos_bias: float
    imprint_scale: float  # norm given to an imprinted agent's weights
    imprint_bias: float  # bias given to an imprinted agent
    regime: str
    shots: int
    tuned_encoder: Any = None  # the fine-tuned `Embedder` when trained with ``finetune_epochs``, else None
    memory: np.ndarray | None = None  # (n, dim) unit embeddings of the training queries and card examples
    memory_labels: np.ndarray | None = None  # (n,) index into ``agent_ids`` of each memory row


@dataclass(frozen=True)
class _CardParameters:
    """The scorer and kNN memory laid out for one registry's cards, kept until the cards change."""

    head: _Head
    cards: tuple[AgentCard, ...]  # the card objects, for a cheap identity check
    fingerprints: tuple[str, ...]
    weights_t: np.ndarray  # (n_features, n_cards): a sparse query row multiplies it fast
    bias: np.ndarray  # (n_cards,)
    memory: np.ndarray  # (m, dim): rows of agents in the registry, then onboarded agents' examples
    memory_columns: np.ndarray  # (m,) the card each memory row votes for
    has_memory: np.ndarray  # (n_cards,) bool: the card has at least one memory row
    onboarded: np.ndarray  # (n_cards,) bool: the card's weights are imprinted (its bias lowered by imprint_offset)
    with_memory: bool  # whether the memory was laid out at all (only while ``knn_weight`` > 0)


class SetRouter(RecordsGivenOptions, BaseRouter):
    """Learned candidate-set router (see the module docstring).

    - ``k``: at most this many agents (the run policy's ``max_agents`` lowers it);
    - ``join_threshold``: an agent after the first joins while its probability clears this;
    - ``oos_threshold``: out of scope when the out-of-scope class's probability (trained from out-of-scope
      examples) clears this; ``None`` disables refusals. Untrained routers refuse when the best similarity
      falls under ``zero_shot_floor``;
    - ``segment``: split multi-request queries at conjunctions and route each part: a cut is kept when each
      part's best agent clears ``segment_min_prob`` and the parts' agents differ; cuts are tried only when the
      whole query's best probability is under ``segment_skip`` (1.0: whenever the query has a conjunction);
    - ``segment_strong_min_prob``: replaces ``segment_min_prob`` for a cut made only at strong joins (a comma
      or semicolon, "and then", "and also"): such a join rarely sits inside a name, as a bare "and" does
      ("saint vincent and the grenadines"), so a part after it is a request even when its agent is less
      certain (None: the same threshold for every join);
    - ``ngram_weight``: weight of the TF-IDF n-gram features beside the embedding;
    - ``example_weight``: share of the example centroid in an onboarded agent's prototype;
    - ``imprint_offset``: subtracted from an onboarded agent's bias. A prototype scores its own agent's queries
      more sharply than trained weights do theirs, so without it new agents take queries from the others
      (CLINC150 val, 20 agents onboarded into a 5-shot router, the others' 2,600 queries: set hit 96.38 at 1.0
      and 96.77 at 1.5, against 96.12 with all agents trained; the new agents' 98.0 and 97.0, both far above
      what onboarding must reach, so 1.5 keeps the others' margin);
    - ``c``: inverse regularisation of the logistic regression; ``few_shot_c`` and ``few_shot_join_threshold``
      replace ``c`` and ``join_threshold`` for a router trained in the few-shot regime;
    - ``finetune_epochs``: passes of encoder fine-tuning before the scorer is trained (0: the frozen encoder).
      About 3.5 minutes a pass over CLINC150's 15,000 training queries on 2 CPU cores;
    - ``knn_weight``: share of the nearest-neighbour expert in the in-scope distribution, (1 - a) log p_scorer
      + a log p_kNN, renormalised (0: the scorer alone). p_kNN weighs the ``knn_k`` most similar memory rows
      by exp(similarity / ``knn_temperature``), with a floor of 1e-4 per agent. The memory holds the training
      queries and every card's examples, so an onboarded agent gets votes from its examples at once; for an
      agent with no memory rows the kNN expert abstains (its scorer probability stands). The out-of-scope
      probability is the scorer's either way. Supervised on CLINC150 with the fine-tuned encoder, 0.2 (k = 50,
      temperature 0.02, ``join_threshold`` 0.0106, all chosen on val) gives set hit 99.07 at size 1.26 on test,
      against 98.84 at 1.29 without. With 5 examples per agent it loses (96.69 -> 95.78), hence off by default.
    """

    name = "set"
    checkpoint_format = _CHECKPOINT_FORMAT
    """What `save` writes and `load` reads (an .npz file, no pickles)."""

    def __init__(
        self,
        k: int = 3,
        *,
        join_threshold: float = 0.05,
        oos_threshold: float | None = 0.1,
        segment: bool = True,
        segment_min_prob: float = 0.6,
        segment_skip: float = 1.0,
        segment_strong_min_prob: float | None = None,
        zero_shot_temperature: float = 30.0,
        zero_shot_floor: float | None = None,
        ngram_weight: float = 0.5,
        example_weight: float = 0.7,
        c: float = 20.0,
        few_shot_c: float = 100.0,
        few_shot_join_threshold: float = 0.06,
        imprint_offset: float = 1.5,
        finetune_epochs: int = 0,
        knn_weight: float = 0.0,
        knn_k: int = 50,
        knn_temperature: float = 0.02,
        checkpoint: str | None = None,
        embedder: Any | None = None,
    ) -> None:
        if k < 1:
            raise PolicyError(f"SetRouter 'k' must be at least 1, got {k}")
        if not 0.0 < join_threshold < 1.0:
            raise PolicyError(f"SetRouter 'join_threshold' must be in (0, 1), got {join_threshold}")
        if oos_threshold is not None and not 0.0 < oos_threshold < 1.0:
            raise PolicyError(f"SetRouter 'oos_threshold' must be in (0, 1) or None, got {oos_threshold}")
        for option, value in (("segment_min_prob", segment_min_prob), ("segment_strong_min_prob", segment_strong_min_prob)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise PolicyError(f"SetRouter {option!r} must be in [0, 1], got {value}")
        if zero_shot_temperature <= 0:
            raise PolicyError("SetRouter 'zero_shot_temperature' must be positive")
        if ngram_weight < 0 or not 0.0 <= example_weight <= 1.0 or c <= 0:
            raise PolicyError("SetRouter: 'ngram_weight' >= 0, 'example_weight' in [0, 1] and 'c' > 0 are required")
        if few_shot_c <= 0 or not 0.0 < few_shot_join_threshold < 1.0:
            raise PolicyError("SetRouter: 'few_shot_c' > 0 and 'few_shot_join_threshold' in (0, 1) are required")
        check_whole_numbers("SetRouter", {"finetune_epochs": (finetune_epochs, 0), "knn_k": (knn_k, 1)})
        if not 0.0 <= knn_weight < 1.0:
            raise PolicyError(f"SetRouter 'knn_weight' must be in [0, 1), got {knn_weight}")
        if not knn_temperature > 0:
            raise PolicyError(f"SetRouter 'knn_temperature' must be positive, got {knn_temperature}")
        self.k = k
        self.join_threshold = join_threshold
        self.oos_threshold = oos_threshold
        self.segment = segment
        self.segment_min_prob = segment_min_prob
        self.segment_skip = segment_skip
        self.segment_strong_min_prob = segment_strong_min_prob
        self.zero_shot_temperature = zero_shot_temperature
        self.zero_shot_floor = zero_shot_floor
        self.ngram_weight = ngram_weight
        self.example_weight = example_weight
        self.c = c
        self.few_shot_c = few_shot_c
        self.few_shot_join_threshold = few_shot_join_threshold
        self.finetune_epochs = finetune_epochs
        self.imprint_offset = imprint_offset
        self.knn_weight = knn_weight
        self.knn_k = knn_k
        self.knn_temperature = knn_temperature
        self.head: _Head | None = None
        self._base_embedder = embedder
        self.cache = _CardCache(embedder)
        self._imprints: dict[str, tuple[np.ndarray, float]] = {}
        self._parameter_cache: _CardParameters | None = None
        self.checkpoint = checkpoint
        """The file this router was loaded from (``checkpoint=PATH`` builds it from a file `save` wrote, as the CLI's
        ``--option checkpoint=PATH`` does); described, so that an exact replay rebuilds it from the file."""
        if checkpoint:
            adopt_checkpoint(self, checkpoint, embedder)

    @property
    def embedder(self) -> Any:
        """The encoder that embeds queries and cards: the fine-tuned one once trained with ``finetune_epochs``."""
        return self.cache.embedder

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "k": self.k,
            "join_threshold": self.join_threshold,
            "oos_threshold": self.oos_threshold,
            "segment": self.segment,
            "segment_min_prob": self.segment_min_prob,
            "segment_skip": self.segment_skip,
            "segment_strong_min_prob": self.segment_strong_min_prob,
            "zero_shot_temperature": self.zero_shot_temperature,
            "zero_shot_floor": self.zero_shot_floor,
            "ngram_weight": self.ngram_weight,
            "example_weight": self.example_weight,
            "c": self.c,
            "few_shot_c": self.few_shot_c,
            "few_shot_join_threshold": self.few_shot_join_threshold,
            "imprint_offset": self.imprint_offset,
            "finetune_epochs": self.finetune_epochs,
            "knn_weight": self.knn_weight,
            "knn_k": self.knn_k,
            "knn_temperature": self.knn_temperature,
            "checkpoint": self.checkpoint,
            "trained": None if self.head is None else {"regime": self.head.regime, "agents": len(self.head.agent_ids)},
        }

    # ------------------------------------------------------------------ training

    def fit(
        self,
        agents: Sequence[AgentCard],
        train_rows: Sequence[Any],
        regime: str = "supervised",
        shots: int = 0,
        *,
        oos_rows: Sequence[Any] = (),
        seed: int = 0,
    ) -> SetRouter:
        """Train the scorer for ``agents`` on ``train_rows`` (objects with ``query`` and ``agents``).

        Zero-shot (no rows) trains nothing: decisions use card similarities only. Rows naming an agent not in
        ``agents`` raise `DataError`. ``oos_rows`` (queries with no agent) train an out-of-scope class.
        """
        from sklearn.linear_model import LogisticRegression

        from orchestra.bench.agents import Regime

        regime = Regime.parse(regime).value
        agents = list(agents)
        if not agents:
            raise DataError("SetRouter.fit needs at least one agent card")
        ids = [card.id for card in agents]
        check_unique_ids(ids, "SetRouter.fit")
        position = {agent_id: i for i, agent_id in enumerate(ids)}
        queries: list[str] = []
        labels: list[int] = []
        for number, row in enumerate(train_rows, start=1):
            for agent_id in row.agents:
                if agent_id not in position:
                    raise DataError(f"training row {number}: agent {agent_id!r} is not among the agents being trained")
                queries.append(row.query)
                labels.append(position[agent_id])
        self._imprints.clear()
        self._parameter_cache = None
        if self.head is not None and self.head.tuned_encoder is not None:
            self.cache = _CardCache(self._base_embedder)
        if regime == "zero-shot" or not queries:
            self.head = None
            return self
        # Card texts (description sentences, id words, examples) are extra examples of their agent: they
        # matter with few shots and do no harm with many. The kNN memory takes the queries and examples, not
        # the description sentences, which are no queries.
        seen = set(zip(queries, labels, strict=True))
        in_memory = [True] * len(queries)
        for card in agents:
            pieces = description_pieces(card)
            for number, text in enumerate([*pieces, *card.examples]):
                if (text, position[card.id]) not in seen:
                    queries.append(text)
                    labels.append(position[card.id])
                    in_memory.append(number >= len(pieces))
        # An out-of-scope class needs in-scope classes of comparable size: with a few shots per agent, a
        # hundred out-of-scope examples would swallow in-scope queries, so it is trained in supervised mode only.
        oos_queries = [row.query for row in oos_rows if not row.agents] if regime == "supervised" else []
        tuned = None
        if self.finetune_epochs:
            tuned = self.cache.embedder.fine_tuned(queries, labels, epochs=self.finetune_epochs, seed=seed)
            self.cache = _CardCache(tuned)
        texts = queries + oos_queries
        y = np.array(labels + [len(ids)] * len(oos_queries))
        # A tuned encoder already separates the agents the n-grams would help with, and n-grams beside it cost
        # accuracy (CLINC150 test top-1 95.6 with them, 96.6 without).
        featurizer = _Featurizer(0.0 if tuned is not None else self.ngram_weight).fit(texts)
        embeddings = self.cache.encode(texts)
        X = featurizer.transform(texts, embeddings)
        # With a few examples per agent a weaker penalty gives sharper, better-ranked probabilities (CLINC150
        # val, 5 shots: set hit 96.6 at size 1.45 with C=100 and join 0.06, against 96.2 at 1.51 with C=20).
        c = self.few_shot_c if regime == "few-shot" else self.c
        # Solved tightly: at scikit-learn's default tolerance the solution moves with float noise in the embeddings
        # (PyTorch against ONNX Runtime moved CLINC150's mean set size by 0.01), so results would depend on the backend.
        model = LogisticRegression(C=c, max_iter=3000, tol=1e-6, random_state=seed)
        model.fit(X, y)
        classes = [int(c) for c in model.classes_]
        W = np.zeros((len(ids), X.shape[1]), dtype=np.float32)
        b = np.full(len(ids), -30.0, dtype=np.float32)
        coef = model.coef_ if len(classes) > 2 else np.vstack([-model.coef_, model.coef_])
        intercept = model.intercept_ if len(classes) > 2 else np.array([-model.intercept_[0], model.intercept_[0]])
        for column, cls in enumerate(classes):
            if cls < len(ids):
                W[cls] = coef[column]
                b[cls] = intercept[column]
        oos_weight = None
        oos_bias = 0.0
        if len(ids) in classes:
            column = classes.index(len(ids))
            oos_weight = coef[column].astype(np.float32)
            oos_bias = float(intercept[column])
        trained = np.array([i in classes for i in range(len(ids))])
        norms = np.linalg.norm(W[trained], axis=1)
        self.head = _Head(
            agent_ids=ids,
            fingerprints=[card_fingerprint(card) for card in agents],
            featurizer=featurizer,
            weights=W,
            bias=b,
            oos_weight=oos_weight,
            oos_bias=oos_bias,
            imprint_scale=float(np.median(norms)) if len(norms) else 1.0,
            imprint_bias=float(np.median(b[trained])) if trained.any() else 0.0,
            regime=regime,
            shots=shots,
            tuned_encoder=tuned,
            memory=_normalise(embeddings[: len(queries)][np.array(in_memory)]).astype(np.float32),
            memory_labels=np.array(labels, dtype=np.int32)[np.array(in_memory)],
        )
        return self

    # ------------------------------------------------------------------ checkpoints

    def save(self, path: str | Path) -> Path:
        """Write the trained scorer (``.npz``, no pickles) with the ids and card fingerprints it was trained for;
        a fine-tuned encoder goes to the folder ``<path>.encoder`` beside it."""
        if self.head is None:
            raise CheckpointError("SetRouter.save: nothing to save, the router is not trained (call fit first)")
        head = self.head
        featurizer_meta, featurizer_arrays = head.featurizer.state()
        meta: dict[str, Any] = {
            "format": _CHECKPOINT_FORMAT,
            "agent_ids": head.agent_ids,
            "fingerprints": head.fingerprints,
            "featurizer": featurizer_meta,
            "oos_bias": head.oos_bias,
            "imprint_scale": head.imprint_scale,
            "imprint_bias": head.imprint_bias,
            "regime": head.regime,
            "shots": head.shots,
            "dim": int(self.cache.embedder.dim),
            # the embedder given (the tuned encoder is saved beside the file and comes back from there)
            "embedder": embedder_name(self._base_embedder),
            "encoder": None if head.tuned_encoder is None else Path(path).name + ".encoder",
            "config": {k: v for k, v in self.describe().items() if k not in ("name", "trained", "checkpoint")},
        }
        arrays = {"weights": head.weights, "bias": head.bias, **featurizer_arrays}
        if head.oos_weight is not None:
            arrays["oos_weight"] = head.oos_weight
        if head.memory is not None and head.memory_labels is not None:
            # Full precision, so a loaded router decides exactly as the trained one (CLINC150: 23 MB).
            arrays["memory"] = head.memory
            arrays["memory_labels"] = head.memory_labels
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # as the other routers' save does
        if head.tuned_encoder is not None:
            head.tuned_encoder.save_model(Path(path).with_name(meta["encoder"]))
        with Path(path).open("wb") as handle:
            # numpy's stubs type **kwds as savez's own keywords (allow_pickle): these are the arrays' names
            np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, *, agents: Sequence[AgentCard] | None = None, **options: Any) -> SetRouter:
        """A router with the scorer saved at ``path``. With ``agents`` (the registry's cards), the checkpoint
        must fit them: a trained agent missing from the registry, or one whose card changed since training,
        raises `CheckpointError` naming it. Agents the checkpoint does not know are fine: they are onboarded
        from their cards."""
        options.pop("checkpoint", None)  # this call is the loading: the router must not load the file again
        check_load_options(cls, options)
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {name: np.asarray(data[name]) for name in data.files if name != "meta"}
        except FileNotFoundError:
            raise CheckpointError(f"{path}: set-router checkpoint not found") from None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            kind = checkpoint_kind(path)
            if kind is not None:  # a checkpoint given to the wrong loader: say whose it is
                raise CheckpointError(f"{path}: {with_article(kind)} checkpoint, not a set-router one") from None
            why = "the file is empty" if isinstance(exc, EOFError) else "not an .npz file, or one cut short" if isinstance(exc, zipfile.BadZipFile) else exc
            raise CheckpointError(f"{path}: not a set-router checkpoint ({why})") from None
        if not isinstance(meta, dict) or meta.get("format") != _CHECKPOINT_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise CheckpointError(f"{path}: format {found!r}, expected {_CHECKPOINT_FORMAT!r}")
        try:
            return cls._from_saved(path, meta, arrays, agents, options)
        except OrchestraError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise damaged_checkpoint(path, "set-router", exc) from None

    @classmethod
    def _from_saved(
        cls, path: str | Path, meta: dict[str, Any], arrays: dict[str, np.ndarray], agents: Sequence[AgentCard] | None, options: dict[str, Any]
    ) -> SetRouter:
        embedder = checkpoint_embedder(meta.get("embedder"), options.get("embedder"), path, "set-router")
        router = cls(**{**meta.get("config", {}), **options, "embedder": embedder})
        tuned = None
        if meta.get("encoder"):
            from orchestra.embeddings import load_embedder
            from orchestra.errors import ConfigurationError

            try:
                tuned = load_embedder(Path(path).with_name(meta["encoder"]))
            except (ConfigurationError, OSError, ValueError) as exc:
                raise CheckpointError(f"{path}: its fine-tuned encoder {meta['encoder']!r} cannot be read ({exc})") from None
            router.cache = _CardCache(tuned)
        if int(meta["dim"]) != router.cache.embedder.dim:
            raise CheckpointError(f"{path}: trained on {meta['dim']}-dim embeddings, the embedder gives {router.cache.embedder.dim}")
        memory = memory_labels = None
        if "memory" in arrays or "memory_labels" in arrays:
            memory = _normalise(arrays.get("memory", np.zeros((0, 0))).astype(np.float32))
            memory_labels = arrays.get("memory_labels", np.zeros(0)).astype(np.int64)
            n_agents = len(meta["agent_ids"])
            if (
                memory.shape != (len(memory_labels), int(meta["dim"]))
                or (len(memory_labels) and not 0 <= memory_labels.min() <= memory_labels.max() < n_agents)
            ):
                raise CheckpointError(f"{path}: its kNN memory does not fit its {n_agents} agents and {meta['dim']}-dim embeddings")
        router.head = _Head(
            agent_ids=list(meta["agent_ids"]),
            fingerprints=list(meta["fingerprints"]),
            featurizer=_Featurizer.from_state(meta["featurizer"], arrays),
            weights=arrays["weights"].astype(np.float32),
            bias=arrays["bias"].astype(np.float32),
            oos_weight=arrays["oos_weight"].astype(np.float32) if "oos_weight" in arrays else None,
            oos_bias=float(meta["oos_bias"]),
            imprint_scale=float(meta["imprint_scale"]),
            imprint_bias=float(meta["imprint_bias"]),
            regime=str(meta["regime"]),
            shots=int(meta["shots"]),
            tuned_encoder=tuned,
            memory=memory,
            memory_labels=memory_labels,
        )
        if agents is not None:
            router.check_compatible(agents)
        # described, so that a replay rebuilds this router from the file: absolute, as a replay (or the UI) may run
        # from another folder than the one the path was given in
        router.checkpoint = os.path.abspath(Path(path).expanduser())
        return router

    def check_compatible(self, agents: Sequence[AgentCard]) -> None:
        """Raise `CheckpointError` when the trained scorer does not fit these cards (see `load`)."""
        if self.head is None:
            return
        by_id = {card.id: card for card in agents}
        missing = [agent_id for agent_id in self.head.agent_ids if agent_id not in by_id]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise CheckpointError(f"checkpoint was trained for agent(s) the registry does not hold: {missing[:5]}{more}")
        changed = [
            agent_id
            for agent_id, fingerprint in zip(self.head.agent_ids, self.head.fingerprints, strict=True)
            if card_fingerprint(by_id[agent_id]) != fingerprint
        ]
        if changed:
            raise CheckpointError(f"checkpoint was trained on other cards for agent(s): {changed[:5]}")

    # ------------------------------------------------------------------ scoring

    def _imprint(self, card: AgentCard, vectors: _CardVectors) -> tuple[np.ndarray, float]:
        """Weights of an agent the head was not trained on, from its card: the direction of its texts'
        features (examples weighted by ``example_weight``), scaled like the trained agents' weights."""
        key = card_fingerprint(card)
        if key in self._imprints:
            return self._imprints[key]
        assert self.head is not None
        pieces = description_pieces(card)
        texts = [card.routing_text(), *pieces, *card.examples]
        emb = np.vstack([vectors.description[None, :], vectors.pieces, vectors.examples])
        F = np.asarray(self.head.featurizer.transform(texts, emb).todense())
        n_text = 1 + len(pieces)
        text_dir = F[:n_text].mean(axis=0)
        text_dir /= max(np.linalg.norm(text_dir), 1e-12)
        if card.examples:
            example_dir = F[n_text:].mean(axis=0)
            example_dir /= max(np.linalg.norm(example_dir), 1e-12)
            direction = (1 - self.example_weight) * text_dir + self.example_weight * example_dir
        else:
            direction = text_dir
        direction /= max(np.linalg.norm(direction), 1e-12)
        result = (self.head.imprint_scale * direction).astype(np.float32), self.head.imprint_bias - self.imprint_offset
        self._imprints[key] = result
        return result

    def _parameters(self, cards: Sequence[AgentCard]) -> _CardParameters:
        """The scorer's weights and biases for ``cards`` (trained where the head knows the agent, imprinted
        otherwise) and the kNN memory's rows for them. Cached for the registry's current cards."""
        assert self.head is not None
        cached = self._parameter_cache
        # The memory (23 MB for CLINC150) is only laid out while the kNN vote is on.
        with_memory = self.knn_weight > 0
        reusable = cached if cached is not None and cached.head is self.head and cached.with_memory == with_memory else None
        # The registry hands the same card objects to decision after decision: checking identity first saves
        # hashing 150 cards (about 1.5 ms) per decision; a new or changed card falls through to the digests.
        if reusable is not None and len(reusable.cards) == len(cards) and all(a is b for a, b in zip(reusable.cards, cards)):
            return reusable
        fingerprints = tuple(card_fingerprint(card) for card in cards)
        if reusable is not None and reusable.fingerprints == fingerprints:
            self._parameter_cache = replace(reusable, cards=tuple(cards))
            return self._parameter_cache
        head = self.head
        index = {agent_id: i for i, agent_id in enumerate(head.agent_ids)}
        vectors = self.cache.vectors(cards)
        WT = np.empty((head.weights.shape[1], len(cards)), dtype=np.float32)
        b = np.empty(len(cards), dtype=np.float32)
        onboarded = np.zeros(len(cards), dtype=bool)
        # Memory rows vote for the card of their agent; rows of agents gone from the registry are dropped,
        # and an agent the head was not trained on brings its card's examples.
        column_of_trained = np.full(len(head.agent_ids), -1, dtype=np.int64)
        memory_blocks: list[np.ndarray] = []
        column_blocks: list[np.ndarray] = []
        for i, (card, vec) in enumerate(zip(cards, vectors, strict=True)):
            j = index.get(card.id)
            if j is not None:
                WT[:, i], b[i] = head.weights[j], head.bias[j]
                column_of_trained[j] = i
            else:
                WT[:, i], b[i] = self._imprint(card, vec)
                onboarded[i] = True
                if with_memory and len(vec.examples):
                    memory_blocks.append(_normalise(vec.examples).astype(np.float32))
                    column_blocks.append(np.full(len(vec.examples), i, dtype=np.int64))
        if with_memory and head.memory is not None and head.memory_labels is not None:
            columns = column_of_trained[head.memory_labels]
            kept = columns >= 0
            memory_blocks.insert(0, head.memory[kept])
            column_blocks.insert(0, columns[kept])
        dim = head.memory.shape[1] if head.memory is not None else (vectors[0].description.shape[0] if vectors else 0)
        memory = np.vstack(memory_blocks) if memory_blocks else np.zeros((0, dim), dtype=np.float32)
        memory_columns = np.concatenate(column_blocks) if column_blocks else np.zeros(0, dtype=np.int64)
        has_memory = np.zeros(len(cards), dtype=bool)
        has_memory[memory_columns] = True
        self._parameter_cache = _CardParameters(
            head=head, cards=tuple(cards), fingerprints=fingerprints, weights_t=WT, bias=b,
            memory=memory, memory_columns=memory_columns, has_memory=has_memory, onboarded=onboarded,
            with_memory=with_memory,
        )
        return self._parameter_cache

    def _knn_log_probabilities(self, Q: np.ndarray, parameters: _CardParameters) -> np.ndarray:
        """log p_kNN over the cards per query: the ``knn_k`` most similar memory rows, each weighted by
        exp((similarity - best) / temperature), summed per card over a floor of 1e-4, normalised."""
        n_cards = len(parameters.cards)
        similarities = _normalise(Q).astype(np.float32) @ parameters.memory.T
        k = min(self.knn_k, similarities.shape[1])
        nearest = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(similarities, nearest, axis=1)
        weights = np.exp((top - top.max(axis=1, keepdims=True)) / self.knn_temperature)
        votes = np.full((len(Q), n_cards), 1e-4)
        rows = np.repeat(np.arange(len(Q)), k)
        np.add.at(votes, (rows, parameters.memory_columns[nearest].ravel()), weights.ravel())
        return np.log(votes / votes.sum(axis=1, keepdims=True))  # type: ignore[no-any-return]  # numpy: Any on a bare ndarray

    def _zero_shot_logits(self, Q: np.ndarray, cards: Sequence[AgentCard]) -> np.ndarray:
        """Similarity of each query to each card: twice the whole card text, plus the best and the mean of
        its sentences and id words (and the best example when the card has examples), averaged."""
        vectors = self.cache.vectors(cards)
        logits = np.empty((len(Q), len(cards)), dtype=np.float32)
        for i, vec in enumerate(vectors):
            piece_sims = Q @ vec.pieces.T
            score = (2 * (Q @ vec.description) + piece_sims.max(axis=1) + piece_sims.mean(axis=1) + piece_sims[:, 0]) / 5
            if len(vec.examples):
                score = 0.5 * score + 0.5 * (Q @ vec.examples.T).max(axis=1)
            logits[:, i] = score
        return logits

    def probabilities(self, texts: Sequence[str], Q: np.ndarray, cards: Sequence[AgentCard]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per query text: probabilities over ``cards``, the out-of-scope probability (0 when the router is
        not trained for it) and the raw best score."""
        if self.head is None:
            sims = self._zero_shot_logits(Q, cards)
            return _softmax(self.zero_shot_temperature * sims), np.zeros(len(Q)), sims.max(axis=1)
        head = self.head
        parameters = self._parameters(cards)
        X = head.featurizer.transform(texts, Q)
        logits = np.asarray(X @ parameters.weights_t) + parameters.bias
        oos_probability = np.zeros(len(Q))
        if head.oos_weight is not None:
            oos = np.asarray(X @ head.oos_weight).ravel() + head.oos_bias
            # against the out-of-scope class an onboarded agent stands with its bias whole: the offset keeps it
            # from taking the trained agents' queries, it is no reason to refuse the agent's own
            standing = logits + self.imprint_offset * parameters.onboarded
            oos_probability = _softmax(np.concatenate([standing, oos[:, None]], axis=1))[:, -1]
        # Over the in-scope agents the scorer's distribution is the softmax of their logits, with or without
        # an out-of-scope class beside them.
        if not (self.knn_weight > 0 and len(parameters.memory)):
            return _softmax(logits), oos_probability, logits.max(axis=1)
        from scipy.special import log_softmax

        scorer_log = log_softmax(logits, axis=1)
        knn_log = self._knn_log_probabilities(Q, parameters)
        knn_log[:, ~parameters.has_memory] = scorer_log[:, ~parameters.has_memory]
        inside = _softmax((1 - self.knn_weight) * scorer_log + self.knn_weight * knn_log)
        return inside, oos_probability, logits.max(axis=1)

    # ------------------------------------------------------------------ deciding

    def _segmentations(self, query: str) -> list[tuple[list[str], bool]]:
        """Ways to cut the query into requests at connector words (the whole query first), each with whether
        every join it cuts at is a strong one (`_STRONG_JOIN`)."""
        matches = [m for m in _CONNECTORS.finditer(query) if 0 < m.start() and m.end() < len(query)]
        matches = matches[:_MAX_CONNECTORS]
        options: list[tuple[list[str], bool]] = [([query], False)]
        for size in range(1, min(len(matches), _MAX_PARTS - 1) + 1):
            for chosen in itertools.combinations(matches, size):
                parts = []
                start = 0
                for m in chosen:
                    parts.append(query[start : m.start()].strip())
                    start = m.end()
                parts.append(query[start:].strip())
                strong = all(_STRONG_JOIN.search(m.group(0)) for m in chosen)
                # A two-word piece after a bare "and" is mostly the tail of a name ("svalbard and jan mayen");
                # two-word requests are rare (0.3% of MixSNIPS's single requests), so weak cuts need three.
                if all(len(part.split()) >= (2 if strong else 3) for part in parts):
                    options.append((parts, strong))
        return options

    def decide(self, state: RouterState) -> Dispatch | Finish:
        checked = routable_query(state)
        if isinstance(checked, Finish):
            return checked
        query, facts = checked
        cards = list(state.agents)
        k = effective_k(self.k, state)
        # The whole query first; cutting it into parts is tried only when no agent is clearly right, which
        # keeps the common single-request decision to one embedding.
        texts = [query]
        Q = self.cache.encode(texts)
        probs, oos, best_raw = self.probabilities(texts, Q, cards)
        segmentations: list[tuple[list[str], bool]] = [([query], False)]
        if self.segment and probs[0].max() < self.segment_skip:
            segmentations = self._segmentations(query)
            parts = sorted({part for option, _ in segmentations for part in option} - {query})
            if parts:
                Qp = self.cache.encode(parts)
                p_parts, oos_parts, raw_parts = self.probabilities(parts, Qp, cards)
                texts = texts + parts
                probs = np.vstack([probs, p_parts])
                oos = np.concatenate([oos, oos_parts])
                best_raw = np.concatenate([best_raw, raw_parts])
        row = {text: i for i, text in enumerate(texts)}

        whole = row[query]
        order = np.argsort(-probs[whole], kind="stable")
        scores = tuple(CandidateScore(id=cards[i].id, score=round(float(probs[whole, i]), 6)) for i in order[: max(k, 10)])
        oos_meta = {"oos_probability": round(float(oos[whole]), 6), "best_probability": round(float(probs[whole, order[0]]), 6)}

        # Segmentation: a cut is kept when every part is confidently given to an agent of its own; among
        # those, the one with most parts wins (ties: higher mean log-probability). The whole query's own
        # confidence is no guide: a classifier trained on single requests is often sure of a joined one.
        best_parts = [query]
        best_key = (1, float(np.log(probs[whole].max() + 1e-9)))
        for parts, strong in segmentations[1:]:
            tops = [int(np.argmax(probs[row[p]])) for p in parts]
            confidences = [float(probs[row[p]].max()) for p in parts]
            min_prob = self.segment_min_prob
            if strong and self.segment_strong_min_prob is not None:
                min_prob = self.segment_strong_min_prob
            if len(set(tops)) != len(tops) or min(confidences) < min_prob:
                continue
            key = (len(parts), float(np.mean(np.log(np.array(confidences) + 1e-9))))
            if key > best_key:
                best_parts, best_key = parts, key

        if len(best_parts) > 1:
            picks = [(int(np.argmax(probs[row[part]])), part) for part in best_parts]
            # Best first, as in an unsegmented decision: by the whole query's probability, so the agent the
            # query as a whole points to leads when a cut was wrong.
            picks.sort(key=lambda pick: -probs[whole, pick[0]])
            # at most k agents here too; the parts left out are recorded, not silently lost
            beyond_k = {"beyond_k": [part for _, part in picks[k:]]} if len(picks) > k else {}
            calls = [Call(agent_id=cards[i].id, query=part, weight=round(float(probs[row[part], i]), 6)) for i, part in picks[:k]]
            kept = f"; the first {k} are answered (k = {k})" if beyond_k else ""
            return Dispatch(
                calls=tuple(calls),
                rationale=f"the query holds {len(best_parts)} requests; each part goes to its best agent{kept}",
                scores=scores,
                meta={"segments": best_parts, **beyond_k, **oos_meta, **facts},
            )

        if self.oos_threshold is not None and oos[whole] >= self.oos_threshold:
            return out_of_scope(
                f"no agent fits: out-of-scope probability {oos[whole]:.3f} >= {self.oos_threshold:g}",
                scores=scores, **oos_meta, **facts,
            )
        if self.head is None and self.zero_shot_floor is not None and best_raw[whole] < self.zero_shot_floor:
            return out_of_scope(
                f"no agent fits: best similarity {best_raw[whole]:.3f} < {self.zero_shot_floor:g}",
                scores=scores, **oos_meta, **facts,
            )
        join_threshold = self.join_threshold
        if self.head is not None and self.head.regime == "few-shot":
            join_threshold = self.few_shot_join_threshold
        chosen = [int(order[0])]
        for i in order[1:k]:
            if probs[whole, i] < join_threshold:
                break
            chosen.append(int(i))
        return Dispatch(
            calls=tuple(Call(agent_id=cards[i].id, query=state.query, weight=round(float(probs[whole, i]), 6)) for i in chosen),
            rationale=f"{len(chosen)} agent(s) with probability >= {join_threshold:g} (best first)",
            scores=scores,
            meta={**oos_meta, **facts},
        )
