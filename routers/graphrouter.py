"""GraphRouter (Feng et al., "GraphRouter: A Graph-based Router for LLM Selections", ICLR 2025) as a ModelRouter.

The method, as published and as its reference code (github.com/ulab-uiuc/GraphRouter, ``model/graph_nn.py`` and
``multi_task_graph_router.py``) implements it:

- **Graph.** Query nodes and LLM nodes, joined by query→LLM edges. The task enters as a *feature* of each query
  node, which joins a linear projection of the task-description embedding and a linear projection of the query
  embedding (``FeatureAlign``); an LLM node's feature is a linear projection (to the same width) of the
  embedding of the model's prose description. That is what makes a new LLM routable without retraining.
- **Edges** carry three features: the scenario utility ``alpha * effect - beta * cost``, the cost and the effect,
  passed through a linear layer and a ReLU (``edge_mlp``); cost is min-max normalised within each task.
  Scenarios: Performance First (1, 0), Balance (0.5, 0.5), Cost First (0.2, 0.8). Here a scenario is the cost
  weight ``w = beta`` with ``alpha = 1 - w``, so that GraphRouter sits on the same knob as the other routers.
- **Encoder.** Two ``GeneralConv`` layers with edge features, batch norm after each, ReLU between them.
- **Score.** ``sigmoid(mean(h0_query * h_llm))``: the query's *input* (projected) feature against the LLM node
  after message passing.
- **Training.** BCE against the best-utility LLM of each query (multi-hot on ties). Each epoch draws several
  random masks: a fraction (``mask_rate``) of training edges stays visible and carries messages, the others are
  the targets; their mean loss makes one AdamW step. The checkpoint with the best validation macro-F1 (argmax
  LLM against the best-utility LLM) is kept. At test time the visible edges are those of training and
  validation; test queries have no edges, only their features.
- **New LLM.** A node built from its description (and any observed edges for it); nothing is retrained.

Deviations, each deliberate:

- One network per scenario, as in the paper, but trained for every cost weight the router will be asked about
  (``weights`` passed to ``fit``; by default the three scenarios). A request at another ``w`` uses the nearest
  trained scenario. ``mode="knob"`` instead trains one network whose edge label is the *effect* (the recorded
  score) rather than the best-utility indicator, and applies the common ``(1 - w) * quality - w * normalised
  cost`` utility to its edge probabilities with the shared cost prediction: one network serves every ``w``
  (an option, not the paper's method; the graph, features, encoder and scorer are the same).
- ``select="loss"`` keeps the checkpoint of lowest validation BCE instead of the published best macro-F1;
  ``patience`` stops training after that many epochs without improvement (0: run every epoch).
- Training runs on one torch thread: the graph is small and thread hand-offs dominate on a shared CPU.
- Mean aggregation in ``GeneralConv`` (the reference uses PyG's default, sum): the reference trains with about
  half the training edges visible and tests with all of them (plus validation), so summed messages double in
  scale between training and test; the mean keeps them comparable. ``aggr="add"`` restores the reference.
- Inductive: only training and validation queries are graph nodes during training. The reference builds one
  transductive graph holding the test queries too (featured, without edges), so they enter batch-norm
  statistics; ours never sees test queries before routing them.
- Ties: the reference labels the single argmax LLM; we label every LLM within 1e-9 of the best utility (the
  brief asks for multi-hot on ties, which 0/1 scores make common), and validation F1 counts a prediction as
  correct when it is one of the tied best.
- Effect is the recorded score as is (already in [0, 1]); the reference also min-max normalises it.
- Fewer optimisation steps than the reference's 1000 epochs x 32 masks (CPU budget): ``epochs`` and
  ``masks_per_epoch`` are options, with best-F1 checkpointing as in the reference.
- Observed outcomes of a new LLM also *calibrate* its quality (not in the paper): the quality network's edge
  probabilities for it (knob mode's one network, or Performance First's) get a logit offset, overall and per
  task, fitted to those outcomes by maximum a posteriori (Gaussian priors of scale ``calibration_prior``
  overall and half that per task). The network tells LLMs apart mostly by their description embeddings, so a
  few edges hardly move a new node's state (routerbench: Yi-34B, held out, was predicted right on 43% of test
  queries from its card and 77% with 50 observed edges, against 92% real); the offsets carry what the
  observations say about its level.
- The trained LLMs are calibrated the same way on the training queries (``train_calibration``, the prior's
  scale; 0 turns it off; not in the paper). Early stopping on validation loss keeps the network from about
  epoch 45 on routerbench, before it has learnt a small task's levels: it predicted GPT-3.5 right on 55% of
  MBPP, against 69% real. One offset per LLM and per task, fitted to the training outcomes after training,
  moves those levels and leaves the query-level ranking to the network. Chosen on validation slices of both
  sets' train (90/10, seed 0; the README's model-routing section has the figures).
- Since only LLM nodes receive messages (edges point query→LLM), an LLM's state after message passing does not
  depend on the query being routed: it is computed once after training (and once per onboarded LLM) and batch
  scoring is a projection and a product. A query with no known task gets the training task whose query
  centroid is nearest to its embedding.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import numpy as np

from orchestra.bench.models import ModelQuery
from orchestra.cards import ModelCard
from orchestra.errors import DecisionError, PolicyError
from orchestra.routers.basic import check_whole_numbers
from orchestra.routers.model_routers import (
    DEFAULT_TEXT_WINDOW,
    ModelRouter,
    QueryLike,
    adopt_checkpoint,
    check_weight,
    torch_threads,
    utility,
)

if TYPE_CHECKING:
    import torch  # imported when a network is built or loaded: a model router's import stays light

__all__ = ["SCENARIO_WEIGHTS", "TASK_DESCRIPTIONS", "GraphRouter", "task_description"]

SCENARIO_WEIGHTS = (0.0, 0.5, 0.8)
"""Performance First, Balance, Cost First, as cost weights ``w = beta``."""

TASK_DESCRIPTIONS: dict[str, str] = {
    # routerbench
    "arc-challenge": "Grade-school science questions with four options (ARC Challenge), answered with one letter.",
    "mbpp": "Writing a short Python function from a natural-language specification and tests (MBPP).",
    "winogrande": "Commonsense pronoun and reference resolution: pick which of two options fills a blank (Winogrande).",
    # llmrouter
    "agentverse-logicgrid": "Logic grid puzzles: deduce who lives in which house from a list of clues.",
    "agentverse-mgsm": "Multilingual grade-school math word problems requiring multi-step arithmetic reasoning.",
    "commongen": "Generating a fluent everyday sentence that uses all of a given set of concepts.",
    "natural_qa": "Open-domain factual questions from real search queries (Natural Questions), short answers.",
    "trivia_qa": "Trivia questions needing broad world knowledge, answered with a short phrase.",
    "mmlu": "Multiple-choice exam questions across 57 academic subjects (MMLU).",
    "openbook_qa": "Elementary science multiple-choice questions that combine a core fact with common knowledge.",
    "arc_challenge": "Grade-school science questions with four options (ARC Challenge), answered with one letter.",
    "gpqa": "Graduate-level, expert-written multiple-choice questions in biology, physics and chemistry (GPQA).",
    "human_eval": "Completing a Python function from its signature and docstring so that unit tests pass (HumanEval).",
    "gsm8k": "Grade-school math word problems solved by multi-step arithmetic (GSM8K).",
    "commonsense_qa": "Multiple-choice questions about everyday commonsense knowledge (CommonsenseQA).",
    "math": "Competition mathematics problems (algebra, geometry, number theory) needing rigorous derivations.",
}
"""One line per task of the shipped sets; other tasks get `task_description`'s generic line."""

_TIE = 1e-9
GRAPH_AGGREGATIONS = ("mean", "add", "sum", "max", "min", "mul")
"""Message aggregations of ``GeneralConv`` that GraphRouter accepts (``aggr``): those torch-geometric builds
without arguments."""


def task_description(task: str) -> str:
    """The prose description of a task that GraphRouter embeds as part of each query node's feature."""
    return TASK_DESCRIPTIONS.get(task) or f"Queries of the task {task or 'general requests'}."


def _network(query_dim: int, task_dim: int, llm_dim: int, hidden: int, aggr: str) -> Any:
    import torch
    from torch import nn
    from torch_geometric.nn import GeneralConv

    class GraphRouterNet(nn.Module):
        """FeatureAlign + two GeneralConv layers with edge features + the edge scorer."""

        def __init__(self) -> None:
            super().__init__()
            self.task_projection = nn.Linear(task_dim, hidden)
            self.query_projection = nn.Linear(query_dim, hidden)
            self.llm_projection = nn.Linear(llm_dim, 2 * hidden)
            self.edge_mlp = nn.Linear(3, 3)
            self.conv1 = GeneralConv(2 * hidden, 2 * hidden, in_edge_channels=3, aggr=aggr)
            self.conv2 = GeneralConv(2 * hidden, 2 * hidden, in_edge_channels=3, aggr=aggr)
            self.norm1 = nn.BatchNorm1d(2 * hidden)
            self.norm2 = nn.BatchNorm1d(2 * hidden)

        def query_features(self, task: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.task_projection(task), self.query_projection(query)], dim=1)

        def encode(self, x0: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
            edges = torch.relu(self.edge_mlp(edge_attr))
            x = torch.relu(self.norm1(self.conv1(x0, edge_index, edge_attr=edges)))
            return self.norm2(self.conv2(x, edge_index, edge_attr=edges))  # type: ignore[no-any-return]  # torch: a Module call is Any

        @staticmethod
        def score(query_x0: torch.Tensor, llm_h: torch.Tensor) -> torch.Tensor:
            """(n, d) queries against (m, d) LLM states -> (n, m) edge probabilities."""
            return torch.sigmoid(query_x0 @ llm_h.T / query_x0.shape[1])

    return GraphRouterNet()


class GraphRouter(ModelRouter):
    """GraphRouter on the common cost-quality knob; see the module docstring for the method and deviations."""

    name: ClassVar[str] = "graph-router"
    checkpoint_format: ClassVar[str | None] = "orchestra.graph-router/2"
    """Version 1 was an unsafe pickle (numpy objects): `load` refuses it and says to retrain and save again."""

    def __init__(
        self,
        agent_id: str | None = None,
        *,
        hidden: int = 32,
        epochs: int = 400,
        masks_per_epoch: int = 8,
        mask_rate: float = 0.5,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        mode: Literal["scenario", "knob"] = "knob",
        select: Literal["f1", "loss"] = "loss",
        patience: int = 60,
        aggr: str = "mean",
        calibration_prior: float = 2.0,
        train_calibration: float = 1.0,
        text_window: int = DEFAULT_TEXT_WINDOW,
        seed: int = 0,
        embedder: Any = None,
        checkpoint: str | None = None,
    ) -> None:
        super().__init__(agent_id, text_window=text_window, seed=seed, embedder=embedder)
        # checked here: a bad size or aggregation failed at fit with a raw torch error, and epochs=0 or a
        # mask_rate outside (0, 1) trained nothing (no step, or no edge to learn from) yet passed for trained
        check_whole_numbers("graph-router", {
            "hidden": (hidden, 1), "epochs": (epochs, 1), "masks_per_epoch": (masks_per_epoch, 1), "patience": (patience, 0),
        })
        if not 0 < mask_rate < 1:
            raise PolicyError(f"graph-router: mask_rate (the share of training edges visible) must lie in (0, 1), got {mask_rate!r}")
        if aggr not in GRAPH_AGGREGATIONS:
            raise PolicyError(f"graph-router: aggr must be one of {', '.join(GRAPH_AGGREGATIONS)}, got {aggr!r}")
        if not lr > 0 or not weight_decay >= 0:
            raise PolicyError(f"graph-router: lr > 0 and weight_decay >= 0 are required, got {lr!r} and {weight_decay!r}")
        if mode not in ("scenario", "knob"):
            raise PolicyError(f"graph-router: mode must be 'scenario' or 'knob', got {mode!r}")
        self.hidden, self.epochs, self.masks_per_epoch = int(hidden), int(epochs), int(masks_per_epoch)
        self.mask_rate, self.lr, self.weight_decay = float(mask_rate), float(lr), float(weight_decay)
        if select not in ("f1", "loss"):
            raise PolicyError(f"graph-router: select must be 'f1' or 'loss', got {select!r}")
        self.mode, self.aggr, self.select, self.patience = mode, aggr, select, int(patience)
        if not calibration_prior > 0:
            raise PolicyError(f"graph-router: calibration_prior must be positive, got {calibration_prior!r}")
        self.calibration_prior = float(calibration_prior)
        if not train_calibration >= 0:
            raise PolicyError(f"graph-router: train_calibration must be 0 (off) or positive, got {train_calibration!r}")
        self.train_calibration = float(train_calibration)
        """Prior scale of the trained LLMs' logit offsets fitted on the training outcomes after training; 0: none."""
        self.epochs_run: dict[float, int] = {}
        self.validation_loss: dict[float, float] = {}
        self.anchors: list[float] = []
        self._nets: dict[float, Any] = {}
        self._llm_states: dict[float, dict[tuple[str, str], Any]] = {}
        """Per scenario: (LLM id, its description) -> its state after message passing."""
        self._observed: dict[str, list[ModelQuery]] = {}
        self._trained_text: dict[str, str] = {}
        """The card text each trained LLM's node state was learnt with, by id."""
        self._calibration: dict[str, tuple[float, dict[str, float]]] = {}
        """LLM id -> logit offset of its quality, overall and per task: an onboarded LLM's from its observed
        outcomes, a trained one's from the training outcomes (``train_calibration``)."""
        self._task_vectors: dict[str, np.ndarray] = {}
        self._task_cost_range: dict[str, tuple[float, float]] = {}
        self.validation_f1: dict[float, float] = {}
        self._dims: tuple[int, int, int] = (0, 0, 0)
        if checkpoint:
            adopt_checkpoint(self, checkpoint, embedder)

    # ------------------------------------------------------------------------------------------ features
    def _task_matrix(self, tasks: Sequence[str]) -> np.ndarray:
        missing = sorted({t for t in tasks if t not in self._task_vectors})
        if missing:
            vectors = self.encode([task_description(t) for t in missing])
            self._task_vectors.update(zip(missing, vectors, strict=True))
        return np.stack([self._task_vectors[t] for t in tasks]) if tasks else np.zeros((0, 384), np.float32)

    def _normalised_cost(self, task: str, cost: float) -> float:
        low, high = self._task_cost_range.get(task, self._task_cost_range.get("", (0.0, 1.0)))
        return (cost - low) / (high - low) if high > low else 0.0

    def _edges(self, rows: Sequence[ModelQuery], model_ids: Sequence[str], w: float, offset: int) -> dict[str, Any]:
        """Query→LLM edges of ``rows`` (node ids from ``offset``), their features and labels for scenario ``w``:
        ``best`` marks the tied best-utility LLMs; ``label`` is ``best`` (scenario mode) or the effect (knob
        mode, whose network predicts each LLM's effect for the common utility formula)."""
        src, dst, attrs, labels, bests = [], [], [], [], []
        alpha, beta = 1.0 - w, w
        for i, row in enumerate(rows):
            present = [(j, row.outcomes[m]) for j, m in enumerate(model_ids) if m in row.outcomes]
            values = []
            for j, outcome in present:
                cost = self._normalised_cost(row.task, outcome.cost if outcome.cost is not None else 0.0)
                values.append((j, alpha * outcome.score - beta * cost, cost, outcome.score))
            best = max(v[1] for v in values)
            for j, value, cost, effect in values:
                src.append(i)
                dst.append(offset + j)
                attrs.append((value, cost, effect))
                bests.append(1.0 if value >= best - _TIE else 0.0)
                labels.append(effect if self.mode == "knob" else bests[-1])
        return {"src": src, "dst": dst, "attr": attrs, "label": labels, "best": bests}

    # ------------------------------------------------------------------------------------------ training
    def _fit_quality(
        self, train: list[ModelQuery], val: list[ModelQuery], cards: list[ModelCard], weights: list[float]
    ) -> None:
        import torch

        if not val:
            cut = max(1, len(train) // 10)
            train, val = train[cut:], train[:cut]
        by_task: dict[str, list[float]] = {}
        for row in list(train) + list(val):
            costs = [o.cost for o in row.outcomes.values() if o.cost is not None]
            by_task.setdefault(row.task, []).extend(costs)
            by_task.setdefault("", []).extend(costs)
        self._task_cost_range = {t: (min(c), max(c)) for t, c in by_task.items() if c}
        if self.mode == "knob":
            self.anchors = [0.0]
        else:
            self.anchors = sorted({check_weight(w) for w in weights} or set(SCENARIO_WEIGHTS))
        rows = list(train) + list(val)
        query_x = torch.from_numpy(self.embed_queries(rows))
        task_x = torch.from_numpy(self._task_matrix([row.task for row in rows]))
        llm_x = torch.from_numpy(self.card_vectors(cards))
        self._dims = (query_x.shape[1], task_x.shape[1], llm_x.shape[1])
        self._nets, self._llm_states, self.validation_f1 = {}, {}, {}
        with torch_threads(1):
            for k, w in enumerate(self.anchors):
                self._train_scenario(w, k, rows, len(train), query_x, task_x, llm_x, cards)
        self._calibration = {}
        if self.train_calibration:
            self.fitted = True  # scoring below needs it; fit() sets it again
            (predicted,), _ = self._scores(train, cards, [self._nearest_anchor(0.0)])
            tasks = [row.task for row in train]
            for j, card in enumerate(cards):
                seen = [i for i, row in enumerate(train) if card.id in row.outcomes]
                outcomes = np.array([train[i].outcomes[card.id].score for i in seen], dtype=float)
                self._calibration[card.id] = self._fit_calibration(predicted[seen, j], outcomes, [tasks[i] for i in seen], self.train_calibration)

    def _train_scenario(
        self, w: float, k: int, rows: list[ModelQuery], n_train: int, query_x: torch.Tensor, task_x: torch.Tensor,
        llm_x: torch.Tensor, cards: list[ModelCard],
    ) -> None:
        import torch
        from sklearn.metrics import f1_score

        torch.manual_seed(self.seed * 1000 + k)
        generator = torch.Generator().manual_seed(self.seed * 1000 + k)
        n_queries = len(rows)
        edges = self._edges(rows, self.model_ids, w, offset=n_queries)
        src = torch.tensor(edges["src"])
        edge_index = torch.stack([src, torch.tensor(edges["dst"])])
        edge_attr = torch.tensor(edges["attr"], dtype=torch.float32)
        label = torch.tensor(edges["label"], dtype=torch.float32)
        best_edge = torch.tensor(edges["best"], dtype=torch.float32)
        is_train = src < n_train
        val_edges = ~is_train
        net = _network(*self._dims, self.hidden, self.aggr)
        optimiser = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.BCELoss()
        # validation ground truth: the tied-best LLMs of each validation query
        val_rows = range(n_train, n_queries)
        val_dst = edge_index[1, val_edges] - n_queries
        val_src = src[val_edges] - n_train
        best_sets: list[set[int]] = [set() for _ in val_rows]
        for s, d, lab in zip(val_src.tolist(), val_dst.tolist(), best_edge[val_edges].tolist(), strict=True):
            if lab > 0:
                best_sets[s].add(d)
        best_f1, best_loss, best_state, waited, epochs_run = -1.0, math.inf, copy.deepcopy(net.state_dict()), 0, 0
        val_index = edge_index[:, val_edges]
        for _ in range(self.epochs):
            epochs_run += 1
            net.train()
            optimiser.zero_grad()
            total = torch.zeros(())
            for _ in range(self.masks_per_epoch):
                visible = is_train & (torch.rand(len(src), generator=generator) < self.mask_rate)
                target = is_train & ~visible
                x0 = torch.cat([net.query_features(task_x, query_x), net.llm_projection(llm_x)])
                h = net.encode(x0, edge_index[:, visible], edge_attr[visible])
                t_src, t_dst = edge_index[0, target], edge_index[1, target]
                predicted = torch.sigmoid((x0[t_src] * h[t_dst]).mean(dim=-1))
                total = total + loss_fn(predicted, label[target])
            (total / self.masks_per_epoch).backward()
            optimiser.step()
            net.eval()
            with torch.no_grad():
                x0 = torch.cat([net.query_features(task_x, query_x), net.llm_projection(llm_x)])
                h = net.encode(x0, edge_index[:, is_train], edge_attr[is_train])
                scores = net.score(x0[n_train:n_queries], h[n_queries:])
                val_loss = float(loss_fn(scores[val_index[0] - n_train, val_index[1] - n_queries], label[val_edges]))
            predicted_idx = scores.argmax(dim=1).tolist()
            truth = [p if p in best else (min(best) if best else p) for p, best in zip(predicted_idx, best_sets, strict=True)]
            f1 = float(f1_score(truth, predicted_idx, average="macro", zero_division=0))
            improved = f1 > best_f1 if self.select == "f1" else val_loss < best_loss - 1e-6
            if improved:
                best_f1, best_loss, best_state, waited = f1, val_loss, copy.deepcopy(net.state_dict()), 0
            else:
                waited += 1
                if self.patience and waited >= self.patience:
                    break
        self.epochs_run[w] = epochs_run
        self.validation_loss[w] = best_loss
        net.load_state_dict(best_state)
        net.eval()
        with torch.no_grad():  # test-time graph: every training and validation edge is visible
            x0 = torch.cat([net.query_features(task_x, query_x), net.llm_projection(llm_x)])
            h = net.encode(x0, edge_index, edge_attr)
        self._nets[w] = net
        self.validation_f1[w] = best_f1
        self._llm_states[w] = {
            (card.id, card.routing_text()): h[n_queries + j].clone() for j, card in enumerate(cards)
        }
        self._trained_text = {card.id: card.routing_text() for card in cards}

    # ------------------------------------------------------------------------------------------ onboarding
    def add_model(self, card: ModelCard, observations: Sequence[ModelQuery] = ()) -> None:
        """Make a new LLM routable from its card (and any queries with its observed outcome): a new node whose
        state is computed by the trained network, with no retraining."""
        if not self.fitted:
            raise DecisionError("graph-router: train or load the router before adding models")
        self._observed[card.id] = [row for row in observations if card.id in row.outcomes]
        self._calibration.pop(card.id, None)
        self._trained_text.pop(card.id, None)  # onboarded anew: its card and observations place it now
        for states in self._llm_states.values():
            states.pop((card.id, card.routing_text()), None)
        self._states_for([card], self.anchors)
        rows = self._observed[card.id]
        if rows:
            (predicted,), _ = self._scores(rows, [card], [self._nearest_anchor(0.0)])
            outcomes = np.array([row.outcomes[card.id].score for row in rows], dtype=float)
            self._calibration[card.id] = self._fit_calibration(predicted[:, 0], outcomes, [row.task for row in rows])

    def _fit_calibration(
        self, predicted: np.ndarray, outcomes: np.ndarray, tasks: Sequence[str], scale: float | None = None
    ) -> tuple[float, dict[str, float]]:
        """Logit offsets (overall, per task) that bring ``predicted`` to ``outcomes``: the MAP estimate under
        the Bernoulli likelihood (scores in [0, 1] as soft labels) and Gaussian priors on the offsets."""
        from scipy.optimize import minimize
        from scipy.special import expit, logit

        names = sorted(set(tasks))
        column = np.array([names.index(t) for t in tasks])
        logits = logit(np.clip(predicted, 1e-6, 1 - 1e-6))
        scale = self.calibration_prior if scale is None else scale
        prior = np.array([scale] + [scale / 2] * len(names))

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            z = logits + theta[0] + theta[1:][column]
            p = expit(z)
            value = float(np.sum(np.logaddexp(0.0, z) - outcomes * z) + np.sum(theta**2 / (2 * prior**2)))
            residual = p - outcomes
            grad = np.concatenate([[residual.sum()], np.bincount(column, residual, len(names))]) + theta / prior**2
            return value, grad

        theta = minimize(loss, np.zeros(1 + len(names)), jac=True, method="L-BFGS-B").x
        return float(theta[0]), {name: float(theta[1 + i]) for i, name in enumerate(names)}

    def _calibrated(self, scores: np.ndarray, model_cards: Sequence[ModelCard], tasks: Sequence[str]) -> np.ndarray:
        """Quality scores with the LLMs' calibration offsets applied (`add_model`, ``train_calibration``)."""
        columns = [(j, self._calibration[card.id]) for j, card in enumerate(model_cards) if card.id in self._calibration]
        if not columns:
            return scores
        from scipy.special import expit, logit

        scores = scores.copy()
        for j, (overall, by_task) in columns:
            offsets = overall + np.array([by_task.get(t, 0.0) for t in tasks])
            scores[:, j] = expit(logit(np.clip(scores[:, j], 1e-6, 1 - 1e-6)) + offsets)
        return scores

    def _states_for(self, cards: Sequence[ModelCard], anchors: Sequence[float]) -> dict[float, Any]:
        import torch

        out: dict[float, Any] = {}
        for w in anchors:
            states = self._llm_states[w]
            missing = [c for c in cards if self._state_key(c, states) not in states]
            for card in missing:
                net = self._nets[w]
                rows = self._observed.get(card.id, [])
                with torch.no_grad():
                    llm_x0 = net.llm_projection(torch.from_numpy(self.card_vectors([card])))
                    if rows:
                        query_x0 = net.query_features(
                            torch.from_numpy(self._task_matrix([r.task for r in rows])),
                            torch.from_numpy(self.embed_queries(rows)),
                        )
                        edges = self._edges(rows, [card.id], w, offset=len(rows))
                        edge_index = torch.tensor([edges["src"], edges["dst"]])
                        edge_attr = torch.tensor(edges["attr"], dtype=torch.float32)
                    else:
                        query_x0 = llm_x0[:0]
                        edge_index = torch.zeros((2, 0), dtype=torch.long)
                        edge_attr = torch.zeros((0, 3))
                    h = net.encode(torch.cat([query_x0, llm_x0]), edge_index, edge_attr)
                states[(card.id, card.routing_text())] = h[-1].clone()
            out[w] = torch.stack([states[self._state_key(c, states)] for c in cards])
        return out

    def _state_key(self, card: ModelCard, states: Mapping[tuple[str, str], Any]) -> tuple[str, str]:
        """Where an LLM's node state is kept. A trained LLM keeps the state it was trained with when its card's
        description is edited: that state carries its thousands of training edges, which a new node computed
        from the edited text alone would lose (one added sentence took GPT-4 from 0.94 to 0.01)."""
        key = (card.id, card.routing_text())
        trained = self._trained_text.get(card.id)
        return key if key in states or trained is None else (card.id, trained)

    # ------------------------------------------------------------------------------------------ scoring
    def _nearest_anchor(self, w: float) -> float:
        if not self.fitted or not self.anchors:
            raise self._not_trained()
        return min(self.anchors, key=lambda a: (abs(a - w), a))

    def edge_scores(
        self, queries: Sequence[QueryLike], model_cards: Sequence[ModelCard], w: float
    ) -> np.ndarray:
        """GraphRouter's edge probabilities (n, m) from the scenario network nearest to ``w``."""
        return self._scores(queries, model_cards, [self._nearest_anchor(check_weight(w))])[0][0]

    def _scores(
        self, queries: Sequence[QueryLike], model_cards: Sequence[ModelCard], anchors: Sequence[float]
    ) -> tuple[list[np.ndarray], tuple[list[str], list[str]]]:
        """Edge scores per anchor, and the query texts and tasks they were read from (returned, not kept on the
        router: decisions run concurrently, and one query's task costed another's)."""
        import torch

        if not self.fitted:
            raise self._not_trained()
        if not model_cards:
            raise DecisionError("graph-router: no model cards to choose from")
        texts, given = self._texts_and_tasks(queries)
        embeddings = self.embed_queries(queries)
        tasks = self.infer_tasks(embeddings, given)
        task_x = torch.from_numpy(self._task_matrix(tasks))
        query_x = torch.from_numpy(np.ascontiguousarray(embeddings))
        states = self._states_for(model_cards, anchors)
        results = []
        quality_anchor = self._nearest_anchor(0.0)
        with torch.no_grad():
            for w in anchors:
                net = self._nets[w]
                scores = net.score(net.query_features(task_x, query_x), states[w]).numpy()
                results.append(self._calibrated(scores, model_cards, tasks) if w == quality_anchor else scores)
        return results, (texts, tasks)

    def predict(self, queries: Sequence[QueryLike], model_cards: Sequence[ModelCard]) -> tuple[np.ndarray, np.ndarray]:
        """Quality = the Performance First network's edge probability; cost as for every model router."""
        (quality,), (texts, tasks) = self._scores(queries, model_cards, [self._nearest_anchor(0.0)])
        return quality, self._costs(texts, tasks, model_cards)

    def utilities(
        self, queries: Sequence[QueryLike], model_cards: Sequence[ModelCard], w: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scenario mode: the utility is the edge probability of the network trained for the nearest scenario.
        Knob mode: the common ``(1 - w) * quality - w * normalised cost`` on the Performance First network."""
        check_weight(w)
        zero, near = self._nearest_anchor(0.0), self._nearest_anchor(w)
        anchors = [zero] if self.mode == "knob" or near == zero else [zero, near]
        scores, (texts, tasks) = self._scores(queries, model_cards, anchors)
        costs = self._costs(texts, tasks, model_cards)
        if self.mode == "knob":
            return utility(scores[0], costs, w), scores[0], costs
        return scores[-1], scores[0], costs

    # ------------------------------------------------------------------------------------------ checkpoints
    def _checkpoint_state(self) -> dict[str, Any]:
        """The networks, LLM states, task tables and calibrations, for `ModelRouter.save`."""
        return {
            "anchors": self.anchors,
            "dims": [int(d) for d in self._dims],
            "nets": {w: net.state_dict() for w, net in self._nets.items()},
            "llm_states": {w: {f"{k[0]}\x00{k[1]}": v for k, v in s.items()} for w, s in self._llm_states.items()},
            "task_vectors": self._task_vectors,
            "task_cost_range": self._task_cost_range,
            "validation_f1": self.validation_f1,
            "validation_loss": self.validation_loss,
            "epochs_run": self.epochs_run,
            "calibration": self._calibration,
        }

    def _restore_state(self, state: Mapping[str, Any]) -> None:
        self.anchors, self._dims = list(state["anchors"]), tuple(state["dims"])
        for w, weights in state["nets"].items():
            net = _network(*self._dims, self.hidden, self.aggr)
            net.load_state_dict(weights)
            net.eval()
            self._nets[w] = net
        self._llm_states = {
            w: {cast(tuple[str, str], tuple(k.split("\x00", 1))): v for k, v in s.items()}  # saved as "id\x00text"
            for w, s in state["llm_states"].items()
        }
        first_states = next(iter(self._llm_states.values()), {})
        for model_id, text in first_states:  # the trained LLMs' entries come first, in training order
            if model_id in self.model_ids and model_id not in self._trained_text:
                self._trained_text[model_id] = text
        self._task_vectors = {task: vector.numpy() for task, vector in state["task_vectors"].items()}
        self._task_cost_range = {task: tuple(bounds) for task, bounds in state["task_cost_range"].items()}
        self.validation_f1 = dict(state["validation_f1"])
        self.validation_loss, self.epochs_run = dict(state["validation_loss"]), dict(state["epochs_run"])
        self._calibration = dict(state["calibration"])

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "hidden": self.hidden,
            "epochs": self.epochs,
            "masks_per_epoch": self.masks_per_epoch,
            "mask_rate": self.mask_rate,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "mode": self.mode,
            "select": self.select,
            "patience": self.patience,
            "aggr": self.aggr,
            "calibration_prior": self.calibration_prior,
            "train_calibration": self.train_calibration,
            # what training gave sits under "trained", not beside the options: a replay rebuilds the router
            # from the options (and its checkpoint), and the constructor takes none of these
            "trained": self.fitted and {
                "anchors": self.anchors,
                "validation_f1": {str(w): round(f, 4) for w, f in self.validation_f1.items()},
                "validation_loss": {str(w): round(f, 4) for w, f in self.validation_loss.items()},
                "epochs_run": {str(w): n for w, n in self.epochs_run.items()},
            },
        }
