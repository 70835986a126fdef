"""``orchestra bench models``: model routing on a canonical set (``models.jsonl`` + ``train``/``test.jsonl``).

A model router predicts, for each query and model card, a quality in [0, 1] and a cost in USD, and picks the
model with the best utility ``(1 - w) * quality - w * normalised cost`` for a cost weight ``w``. The harness
trains a router on the set's train split (a seeded validation slice is carved from it), routes every test query
at every ``w`` of a grid, and scores the choices with the outcomes recorded in the set:

- per ``w``: realised quality and cost (means of the chosen model's recorded score and cost);
- **AIQ** (RouterBench, Hu et al. 2024): area under the non-decreasing convex hull of the router's (cost, quality)
  points, divided by the cost range of the single models (`aiq`);
- GraphRouter's three **scenario rewards** (Feng et al., ICLR 2025): mean over queries of
  ``alpha * effect - beta * cost`` for the chosen model, cost min-max normalised within each task, for
  Performance First (1, 0), Balance (0.5, 0.5) and Cost First (0.2, 0.8) — the choices at ``w`` = 0, 0.5, 0.8;
- the cheapest point reaching the best single model's quality.

Sets without measured cost (llmrouter) get an *estimated* cost from the card prices and a token count
approximated as ``len(text) / 4`` (tiktoken needs a download); when no response is recorded the completion is
assumed to be `ASSUMED_COMPLETION_TOKENS` tokens. A card with no prices but a ``mean_cost_per_query_usd`` costs
that mean on every query. The report labels such costs ``"estimated"``.

Query embeddings come from the project embedder, which keeps them on disk (``$ORCHESTRA_HOME/cache``;
``--no-cache`` runs without it); timed single decisions always embed their query with a bare twin of it.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestra.cards import ModelCard
from orchestra.errors import CardError, ConfigurationError, DataError, PolicyError

from . import bench_router, check_limit, check_output, embedder_name, read_jsonl, refuse_checkpoint, router_source

__all__ = [
    "ASSUMED_COMPLETION_TOKENS",
    "CHARS_PER_TOKEN",
    "DEFAULT_WEIGHTS",
    "SCENARIOS",
    "ModelOutcome",
    "ModelQuery",
    "ModelSet",
    "aiq",
    "check_cost_target",
    "cost_fields",
    "estimate_cost",
    "hull_cost_reaching",
    "load_model_set",
    "models_command",
    "nondecreasing_hull",
    "outcome_matrix",
    "parse_weights",
    "print_report",
    "run_model_bench",
    "scenario_reward",
    "score_choices",
    "split_train_val",
]

CHARS_PER_TOKEN = 4
"""Characters per token of the cost estimate (the usual English average; tiktoken is not available offline)."""
ASSUMED_COMPLETION_TOKENS = 256
"""Completion length assumed for a cost estimate when the set records no response."""
DEFAULT_WEIGHTS = tuple(sorted({round(i / 100, 2) for i in range(11)} | {0.15} | {round(i / 10, 1) for i in range(11)}))
"""The default cost-weight grid: steps of 0.01 up to 0.1, then 0.15, 0.2, 0.3, ..., 1. The knob acts mostly below
0.1 (by then most queries have left the dearest model), so a grid of 0.1 steps alone steps over most of the curve."""
SCENARIOS: dict[str, tuple[float, float]] = {
    "performance_first": (1.0, 0.0),
    "balance": (0.5, 0.5),
    "cost_first": (0.2, 0.8),
}
"""GraphRouter's scenarios as (alpha, beta); each is the cost weight ``w = beta``."""


class ModelOutcome(BaseModel):
    """What one model did on one query: its score, its cost and (where recorded) its response."""

    # strict: JSON true is not a score of 1 nor a cost of $1; finite: an infinite cost would make AIQ NaN
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    score: float = Field(ge=0.0, le=1.0, strict=True)
    cost: float | None = Field(default=None, ge=0.0, strict=True)
    """USD for this call; ``None`` when the set measured none (then estimated at load time when priced)."""
    response: str | None = None


class ModelQuery(BaseModel):
    """One query of a model-routing set with every model's recorded outcome."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(pattern=r"\S")
    """Unique within its split, never empty."""
    query: str = Field(pattern=r"\S")
    """The prompt; it must hold more than white space (routers embed it)."""
    task: str = ""
    """The task (data set) the query comes from; GraphRouter embeds its description."""
    outcomes: dict[str, ModelOutcome] = Field(default_factory=dict)


@dataclass(frozen=True)
class ModelSet:
    """A model-routing set: model cards, train and test queries, and whether costs are estimated."""

    name: str
    root: Path
    cards: tuple[ModelCard, ...]
    train: tuple[ModelQuery, ...]
    test: tuple[ModelQuery, ...]
    card_costs: dict[str, float | None] = field(default_factory=dict)
    """Mean cost per query a card states (routerbench's ``mean_cost_per_query_usd``), by model id."""
    cost_estimated: bool = False
    """True when outcome costs were estimated from prices and token counts rather than measured."""
    undescribed: tuple[str, ...] = ()
    """Models whose card had no description, read leniently with their id as description."""

    @property
    def model_ids(self) -> list[str]:
        return [card.id for card in self.cards]

    def without_models(self, model_ids: Sequence[str]) -> ModelSet:
        """The same set with these models removed from the cards and from every outcome (train and test); a query
        left with no outcome (one only they answered) is dropped."""
        unknown = sorted(set(model_ids) - set(self.model_ids))
        if unknown:
            raise DataError(f"--holdout-models: unknown model id(s) {unknown}; the set has {self.model_ids}")
        repeated = sorted({model_id for model_id in model_ids if list(model_ids).count(model_id) > 1})
        if repeated:
            raise DataError(f"--holdout-models: {repeated} named more than once")
        drop = set(model_ids)
        if drop >= set(self.model_ids):
            raise DataError(f"--holdout-models: holding out all {len(drop)} models leaves none to train the router on")

        def strip(rows: tuple[ModelQuery, ...]) -> tuple[ModelQuery, ...]:
            stripped = (
                row.model_copy(update={"outcomes": {m: o for m, o in row.outcomes.items() if m not in drop}})
                for row in rows
            )
            # A training query that only held-out models answered (train may be partial) says nothing of the models
            # trained: left in with no outcome, training refused it as bad data ("training query 'x' has no outcomes")
            return tuple(row for row in stripped if row.outcomes)

        return replace(
            self,
            cards=tuple(card for card in self.cards if card.id not in drop),
            train=strip(self.train),
            test=strip(self.test),
        )


_CARD_FIELDS = set(ModelCard.model_fields)


def estimate_cost(card: ModelCard, query: str, response: str | None) -> float | None:
    """USD of one call estimated from the card's prices: ``len(text) / 4`` tokens for the prompt and the
    recorded response (`ASSUMED_COMPLETION_TOKENS` when none is recorded); ``None`` when the card has no prices."""
    prompt_tokens = math.ceil(len(query) / CHARS_PER_TOKEN)
    completion_tokens = math.ceil(len(response) / CHARS_PER_TOKEN) if response else ASSUMED_COMPLETION_TOKENS
    return card.cost_usd(prompt_tokens, completion_tokens)


def _load_cards(path: Path, lenient: bool) -> tuple[list[ModelCard], dict[str, float | None], list[str]]:
    cards: list[ModelCard] = []
    card_costs: dict[str, float | None] = {}
    undescribed: list[str] = []
    for number, item in read_jsonl(path):
        label = f"{path.name}:{number} (model {item.get('id')!r})"
        if not str(item.get("description") or "").strip():
            if not lenient:
                raise DataError(f"{label}: model card has no description; routers embed it to route to the model")
            undescribed.append(str(item.get("id")))
            item = {**item, "description": str(item.get("id"))}
        for price in ("input_price_per_mtok", "output_price_per_mtok", "mean_cost_per_query_usd"):
            value = item.get(price)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value < math.inf):
                raise DataError(f"{label}: {price} must be a non-negative number, got {value!r}")
        try:
            card = ModelCard.parse({key: value for key, value in item.items() if key in _CARD_FIELDS})
        except CardError as exc:
            raise DataError(f"{label}: {exc}") from None
        if card.id in card_costs:
            raise DataError(f"{label}: duplicate model id {card.id!r}")
        cards.append(card)
        card_costs[card.id] = item.get("mean_cost_per_query_usd")
    if not cards:
        raise DataError(f"{path}: no model cards")
    return cards, card_costs, undescribed


def _load_queries(
    path: Path,
    cards: Mapping[str, ModelCard],
    *,
    complete: bool = False,
    unknown_costs: bool = False,
    mean_costs: Mapping[str, float | None] | None = None,
) -> tuple[list[ModelQuery], bool]:
    # complete: every model's outcome is required (test queries: a router is scored by its choice's outcome)
    # mean_costs: each card's mean_cost_per_query_usd, the estimate of a missing cost when the card has no prices
    queries: list[ModelQuery] = []
    estimated = False
    seen: dict[Any, int] = {}
    for number, item in read_jsonl(path):
        label = f"{path.name}:{number} (query {item.get('id')!r})"
        outcomes = item.get("outcomes")
        if outcomes is not None and not isinstance(outcomes, dict):
            raise DataError(f"{label}: field 'outcomes' must be an object of model id -> outcome, got {type(outcomes).__name__}")
        if not outcomes:
            raise DataError(f"{label}: query has no outcomes; every query needs at least one model's score")
        if "task" in item and item["task"] is None:  # null: no task, as a missing field is
            item = {key: value for key, value in item.items() if key != "task"}
        unknown = sorted(set(outcomes) - set(cards))
        if unknown:
            raise DataError(f"{label}: outcomes name model(s) {unknown} that models.jsonl does not hold")
        missing = sorted(set(cards) - set(outcomes))
        if complete and missing:
            raise DataError(f"{label}: no outcome for model(s) {missing}; a test query needs every model's score")
        try:
            row = ModelQuery.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise DataError(f"{label}: field {where!r}: {first['msg']} (got {first.get('input')!r:.60})") from None
        if row.id in seen:
            raise DataError(f"{label}: id {row.id!r} is already on line {seen[row.id]}")
        seen[row.id] = number
        if any(outcome.cost is None for outcome in row.outcomes.values()):
            filled: dict[str, ModelOutcome] = {}
            for model_id, outcome in row.outcomes.items():
                if outcome.cost is None:
                    cost = estimate_cost(cards[model_id], row.query, outcome.response)
                    if cost is None:
                        # a set without per-call costs or token prices (RouteLLM's pairs) may still state what a
                        # query costs the model on average: refused, it could not be loaded at all
                        cost = (mean_costs or {}).get(model_id)
                    if cost is not None:
                        estimated = True
                        outcome = outcome.model_copy(update={"cost": cost})
                filled[model_id] = outcome
            row = row.model_copy(update={"outcomes": filled})
        unpriced = sorted(model_id for model_id, outcome in row.outcomes.items() if outcome.cost is None)
        if unpriced and not unknown_costs:
            # a cost left unknown would drop out of the means and the cost range and turn the rewards into NaN
            raise DataError(f"{label}: no cost for model(s) {unpriced}, and their cards have no input/output prices "
                            "nor mean_cost_per_query_usd to estimate one from; give each outcome a cost or each card "
                            "its prices or its mean cost per query")
        queries.append(row)
    return queries, estimated


def load_model_set(root: str | Path, *, lenient_descriptions: bool = False, unknown_costs: bool = False) -> ModelSet:
    """Read a model-routing set folder: ``models.jsonl``, ``train.jsonl``, ``test.jsonl``.

    Raises `DataError` naming the file, line and problem: a card with no description (unless
    ``lenient_descriptions``: its id stands in and the set lists it in ``undescribed``) or a negative price, a
    query with no outcomes or with outcomes of unknown models, a score outside [0, 1], an empty query, an outcome
    with no cost whose card has no prices to estimate one (unless ``unknown_costs``: the cost stays ``None``).
    A missing cost is estimated from the card's prices, else taken as its ``mean_cost_per_query_usd``; either
    way the set's costs are ``cost_estimated``.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(f"model set folder {str(folder)!r} does not exist")
    cards, card_costs, undescribed = _load_cards(folder / "models.jsonl", lenient_descriptions)
    by_id = {card.id: card for card in cards}
    train, estimated_train = _load_queries(folder / "train.jsonl", by_id, unknown_costs=unknown_costs, mean_costs=card_costs)
    test, estimated_test = _load_queries(
        folder / "test.jsonl", by_id, complete=True, unknown_costs=unknown_costs, mean_costs=card_costs
    )
    if not train or not test:
        raise DataError(f"{folder}: train.jsonl and test.jsonl must both hold queries")
    leaked = sorted({row.id for row in train} & {row.id for row in test})
    if leaked:  # trained on and then scored, the test figures are not a test's; said, not refused (a toy set may mean it)
        warnings.warn(f"{folder}: query id(s) {leaked[:5]} are in both train.jsonl and test.jsonl"
                      + (f" ({len(leaked)} in all)" if len(leaked) > 5 else "") + ": test figures on them are not held out",
                      stacklevel=2)
    return ModelSet(
        name=folder.name,
        root=folder,
        cards=tuple(cards),
        train=tuple(train),
        test=tuple(test),
        card_costs=card_costs,
        cost_estimated=estimated_train or estimated_test,
        undescribed=tuple(undescribed),
    )


def check_cost_target(router: str, model_ids: Sequence[str], *, mean_cost: float | None = None, share: tuple[str, float] | None = None) -> int | None:
    """Check a cost-weight calibration target (`ModelRouter.calibrate_cost_weight`) before anything is trained:
    `PolicyError` for no target or two, a negative cost, or a share outside [0, 1] or of a model not among
    ``model_ids``. Returns the share's model column (``None`` for a cost target)."""
    if (mean_cost is None) == (share is None):
        raise PolicyError(f"{router}: give one target, a mean cost or a model's share, to calibrate the cost weight")
    if share is None:
        if isinstance(mean_cost, bool) or not isinstance(mean_cost, (int, float)) or not mean_cost >= 0:
            raise PolicyError(f"{router}: the target mean cost must be a cost in USD (>= 0), got {mean_cost!r}")
        return None
    model_id, target = share
    if model_id not in model_ids:
        raise PolicyError(f"{router}: a share of {model_id!r}, which is not among the models {list(model_ids)[:8]}")
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 <= target <= 1:
        raise PolicyError(f"{router}: the share of {model_id!r} must lie in [0, 1], got {target!r}")
    return list(model_ids).index(model_id)


def parse_weights(text: str | Sequence[float]) -> tuple[float, ...]:
    """Cost weights from ``"0,0.1,1"`` (or a sequence); each must lie in [0, 1] (`PolicyError` otherwise)."""
    items = [part.strip() for part in text.split(",") if part.strip()] if isinstance(text, str) else list(text)
    if not items:
        raise PolicyError("cost weights: none given; expected values in [0, 1] such as 0,0.5,1")
    weights: list[float] = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise PolicyError(f"cost weight {item!r} is not a number; expected values in [0, 1]") from None
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise PolicyError(f"cost weight {value!r} is outside [0, 1]")
        weights.append(value)
    return tuple(sorted(set(weights)))


def split_train_val(
    rows: Sequence[ModelQuery], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[ModelQuery], list[ModelQuery]]:
    """A seeded random validation slice carved from the training rows (the sets ship no val split)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_val = max(1, int(round(len(rows) * val_fraction))) if len(rows) > 1 else 0
    val_ids = set(order[:n_val])
    return [r for i, r in enumerate(rows) if i not in val_ids], [r for i, r in enumerate(rows) if i in val_ids]


def outcome_matrix(rows: Sequence[ModelQuery], model_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Recorded (score, cost) matrices of shape (queries, models); NaN where an outcome or cost is missing."""
    scores = np.full((len(rows), len(model_ids)), np.nan)
    costs = np.full((len(rows), len(model_ids)), np.nan)
    for i, row in enumerate(rows):
        for j, model_id in enumerate(model_ids):
            outcome = row.outcomes.get(model_id)
            if outcome is not None:
                scores[i, j] = outcome.score
                costs[i, j] = np.nan if outcome.cost is None else outcome.cost
    return scores, costs


def nondecreasing_hull(costs: Sequence[float], qualities: Sequence[float]) -> np.ndarray:
    """RouterBench's non-decreasing convex hull of (cost, quality) points: the upper convex hull from the
    cheapest point up to the best-quality point (mixing two routers at random reaches every point between
    them; spending more for less is never worth it). Returns the hull's vertices, shape (k, 2), by cost."""
    points = np.asarray(sorted(zip(costs, qualities, strict=True), key=lambda p: (p[0], -p[1])), dtype=float)
    if len(points) == 0:
        return points.reshape(0, 2)
    # of points sharing a cost only the best matters
    keep = [0] + [i for i in range(1, len(points)) if points[i, 0] != points[i - 1, 0]]
    points = points[keep]
    hull: list[np.ndarray] = []
    for point in points:  # Andrew's monotone chain, upper half
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (point[1] - y1) - (y2 - y1) * (point[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(point)
    vertices = np.asarray(hull)
    best = int(np.argmax(vertices[:, 1]))
    return vertices[: best + 1]


def hull_cost_reaching(costs: Sequence[float], qualities: Sequence[float], quality: float) -> float | None:
    """The least mean cost at which the non-decreasing hull of these (cost, quality) points reaches ``quality``
    (mixing two points at random reaches every point between them); None when no point reaches it."""
    hull = nondecreasing_hull(costs, qualities)
    if not len(hull) or hull[-1, 1] < quality:
        return None
    # the hull's qualities rise with its cost, and below its cheapest point np.interp answers that point's cost
    return float(np.interp(quality, hull[:, 1], hull[:, 0]))


def aiq(costs: Sequence[float], qualities: Sequence[float], cost_range: tuple[float, float]) -> float:
    """Average Improvement in Quality (RouterBench): the area under the non-decreasing convex hull of the
    (cost, quality) points over ``cost_range`` (the single models' cost range), divided by its width.

    Beyond its most expensive point the hull stays flat (a router can match its best point at any higher
    budget); below its cheapest point it contributes nothing (the router cannot operate there)."""
    low, high = cost_range
    if not high > low:
        raise ValueError(f"cost range must be increasing, got {cost_range}")
    hull = nondecreasing_hull(costs, qualities)
    if len(hull) == 0:
        return 0.0
    xs = list(hull[:, 0])
    ys = list(hull[:, 1])
    if xs[-1] < high:
        xs.append(high)
        ys.append(ys[-1])
    grid_x = np.asarray(xs)
    grid_y = np.asarray(ys)
    # clip the curve to [low, high]: interpolate at the bounds, drop what lies outside
    inside = (grid_x > low) & (grid_x < high)
    start = max(low, grid_x[0])
    if start >= high:
        return 0.0
    xs_clip = np.concatenate([[start], grid_x[inside & (grid_x > start)], [high]])
    ys_clip = np.interp(xs_clip, grid_x, grid_y)
    area = float(np.sum((xs_clip[1:] - xs_clip[:-1]) * (ys_clip[1:] + ys_clip[:-1]) / 2))
    return area / (high - low)


def scenario_reward(
    chosen: Sequence[int] | np.ndarray, scores: np.ndarray, costs: np.ndarray, tasks: Sequence[str], alpha: float, beta: float
) -> float:
    """GraphRouter's reward: mean over queries of ``alpha * effect - beta * cost`` of the chosen model, with
    cost min-max normalised within each task over all models and queries of that task in ``costs``."""
    tasks_arr = np.asarray(tasks)
    normalised = np.zeros_like(costs, dtype=float)
    for task in np.unique(tasks_arr):
        rows = tasks_arr == task
        block = costs[rows]
        low, high = np.nanmin(block), np.nanmax(block)
        normalised[rows] = (block - low) / (high - low) if high > low else 0.0
    picked = np.arange(len(chosen)), np.asarray(chosen)
    return float(np.mean(alpha * scores[picked] - beta * normalised[picked]))


# ---------------------------------------------------------------------------------------------- the harness


def _torch_threads() -> int | None:
    """Threads torch computes with in this process (single decisions are timed with them, as served)."""
    try:
        import torch
    except ImportError:
        return None
    return int(torch.get_num_threads())


def _uncached(embedder: Any) -> Any:
    """The same model without the project embedder's memory and disk caches (other embedders as given)."""
    try:
        from orchestra.embeddings import Embedder
    except ImportError:  # pragma: no cover - the core always ships it
        return embedder
    if isinstance(embedder, Embedder):
        return embedder.uncached()
    return embedder


def _onboard_with_observations(
    router: Any, full: ModelSet, holdout_models: Sequence[str], n: int, seed: int, say: Callable[[str], None]
) -> None:
    """Onboard each held-out model with its card and its recorded outcomes on ``n`` training queries (drawn
    with ``seed``): what an operator has after running a new model on a small calibration set. The router's
    trained weights are not touched; only a router with ``add_model(card, observations)`` can use them."""
    cards = {card.id: card for card in full.cards}
    rng = random.Random(seed)
    for model_id in holdout_models:
        seen = [row for row in full.train if model_id in row.outcomes]
        sample = rng.sample(seen, min(n, len(seen)))
        say(f"onboarding {model_id} with its outcomes on {len(sample)} training queries")
        router.add_model(cards[model_id], observations=sample)


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else 0.0


def cost_fields(model_set: ModelSet) -> dict[str, str]:
    """A report's ``cost`` (measured or estimated) and ``cost_note`` (how an estimate was made) for this set."""
    return {
        "cost": "estimated" if model_set.cost_estimated else "measured",
        "cost_note": (
            f"estimated from card prices with len(text)/{CHARS_PER_TOKEN} tokens; completion "
            f"{ASSUMED_COMPLETION_TOKENS} tokens when no response is recorded; a card with no prices costs its "
            "mean_cost_per_query_usd"
            if model_set.cost_estimated else "measured (recorded USD per call)"
        ),
    }


def score_choices(test_rows: Sequence[ModelQuery], model_ids: Sequence[str], chosen_by_w: Mapping[float, Sequence[int] | np.ndarray]) -> dict[str, Any]:
    """Score the models chosen for each test query at each cost weight (``chosen_by_w``: w -> one model index per
    query, into ``model_ids``) on the recorded outcomes: the (cost, quality) point and model shares per w, AIQ
    over the single models' cost range, the single models, the best one and the cheapest point reaching it, and
    GraphRouter's scenario rewards (None for a scenario whose w was not routed). What `run_model_bench` reports
    and `orchestra bench score` recomputes from a predictions file."""
    scores, costs = outcome_matrix(test_rows, model_ids)
    picked = np.arange(len(test_rows))

    def point(w: float, idx: np.ndarray) -> dict[str, Any]:
        counts = np.bincount(idx, minlength=len(model_ids))
        return {
            "w": w,
            "quality": float(np.nanmean(scores[picked, idx])),
            "cost_usd": float(np.nanmean(costs[picked, idx])),
            "share": {model_ids[int(j)]: round(float(counts[j]) / len(idx), 4) for j in np.nonzero(counts)[0]},
        }

    chosen = {w: np.asarray(idx, dtype=int) for w, idx in sorted(chosen_by_w.items())}
    points = [point(w, idx) for w, idx in chosen.items()]
    single: list[dict[str, Any]] = [
        {"model": m, "quality": float(np.nanmean(scores[:, j])), "cost_usd": float(np.nanmean(costs[:, j]))}
        for j, m in enumerate(model_ids)
    ]
    cost_range = (min(s["cost_usd"] for s in single), max(s["cost_usd"] for s in single))
    router_aiq = single_aiq = None  # AIQ is an area over the single models' cost range: none when they cost alike
    if cost_range[1] > cost_range[0]:
        router_aiq = aiq([p["cost_usd"] for p in points], [p["quality"] for p in points], cost_range)
        single_aiq = aiq([s["cost_usd"] for s in single], [s["quality"] for s in single], cost_range)
    best_single = max(single, key=lambda s: (s["quality"], -s["cost_usd"]))
    reaching = [p for p in points if p["quality"] >= best_single["quality"] - 1e-12]
    cheapest_reaching = min(reaching, key=lambda p: p["cost_usd"]) if reaching else None
    hull_cost_at_best = hull_cost_reaching([p["cost_usd"] for p in points], [p["quality"] for p in points], best_single["quality"])
    tasks = [row.task for row in test_rows]
    rewards = {
        name: scenario_reward(chosen[beta], scores, costs, tasks, alpha, beta) if beta in chosen else None
        for name, (alpha, beta) in SCENARIOS.items()
    }
    return {
        "points": points,
        "aiq": router_aiq,
        "aiq_single_models": single_aiq,
        "cost_range": list(cost_range),
        "single_models": single,
        "best_single": best_single,
        "cheapest_point_reaching_best_single": cheapest_reaching,
        "hull_cost_reaching_best_single": hull_cost_at_best,
        "scenario_rewards": rewards,
    }


def run_model_bench(
    folder: str | Path,
    router: Any,
    *,
    train: bool = True,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    holdout_models: Sequence[str] = (),
    holdout_observed: int = 0,
    predictions: str | Path | None = None,
    seed: int = 0,
    limit: int | None = None,
    router_options: Mapping[str, Any] | None = None,
    latency_queries: int | None = 200,
    progress: Callable[[str], None] | None = None,
    embedder: Any = None,
    cache: bool = True,
    target_cost: float | None = None,
    target_share: tuple[str, float] | None = None,
    save: str | Path | None = None,
) -> dict[str, Any]:
    """Train the router on the set's train split, route every test query at every cost weight and score the
    choices; returns the report (also what ``--json`` writes).

    ``router`` is a router name (built with ``router_options``) or a model-router instance. ``train=False``
    scores the instance as it is, e.g. one trained in Python or loaded from a checkpoint: nothing is fitted
    (``fit_seconds`` is 0, ``trained_by_bench`` false) and every metric is computed as for a router the bench
    trained, so the figures match the CLI's for the same trained router.

    ``holdout_models`` are removed before training and routed by card at test time; with ``holdout_observed``
    each is also given its recorded outcomes on that many training queries (the router's ``add_model``).

    ``embedder`` replaces the project's MiniLM for routers that embed queries (used as given). The project's
    embedder reads and keeps embeddings in its disk cache; ``cache=False`` runs it without. Single decisions are
    timed with a bare twin of the embedder (each timed query embedded afresh), never from a cache.

    ``target_cost`` (USD per query) or ``target_share`` (a model id and its share of the queries) calibrates a
    cost weight on the validation split, as RouteLLM calibrates its threshold (`calibrate_cost_weight`), and
    reports what that w gives on test under ``"calibrated"`` (apart from the swept points and their AIQ).

    ``save`` writes the router as scored (trained, with any held-out models onboarded) to that checkpoint file,
    which ``orchestra chat --router NAME --option checkpoint=PATH``, ``orchestra serve`` and the UI serve."""
    say = progress or (lambda message: None)
    weights = parse_weights(list(weights))
    scenario_ws = sorted({beta for _, beta in SCENARIOS.values()})
    evaluated = tuple(sorted(set(weights) | set(scenario_ws)))
    check_limit(limit)
    check_output(predictions, data=Path(folder), option="--predictions")
    check_output(save, data=Path(folder), option="--save", beside=predictions)
    refuse_checkpoint(router_options, "model")
    full = load_model_set(folder)
    trained_on = full.without_models(holdout_models) if holdout_models else full
    train_rows, val_rows = split_train_val(trained_on.train, 0.1, seed)
    test_rows = list(full.test[:limit] if limit else full.test)
    cards = list(full.cards)
    model_ids = [card.id for card in cards]
    calibrating = target_cost is not None or target_share is not None
    if calibrating:  # a bad target is refused before the fit, not after it
        check_cost_target("bench models", model_ids, mean_cost=target_cost, share=target_share)

    # a router built here by name records its options; one given built, none (its describe() may say them)
    options_given = dict(router_options or {}) if isinstance(router, str) else None
    router, router_name = bench_router(router, router_options)
    # route_one times single decisions: a router without it failed with an AttributeError after its whole fit
    needed = ("fit", "route_batch", "route_one") if train else ("route_batch", "route_one")
    if not all(callable(getattr(router, attribute, None)) for attribute in needed):
        # named by its type, not its repr: an object's repr says nothing of what is missing
        raise DataError(f"router {router_name!r} ({type(router).__name__}) is not a model router (it needs "
                        f"{', '.join(needed)}: subclass orchestra.routers.model_routers.ModelRouter for them); pass a "
                        "model router, its name, or a trained one with train=False")
    if save is not None and getattr(router, "checkpoint_format", None) is None:
        raise ConfigurationError(f"router {router_name!r} keeps no checkpoint, so --save has nothing to write")
    if calibrating and not callable(getattr(router, "calibrate_cost_weight", None)):
        raise DataError(f"router {router_name!r} ({type(router).__name__}) cannot calibrate a cost weight (no calibrate_cost_weight)")
    if not train:
        if holdout_models:
            # the router was trained elsewhere, on whatever models it was: nothing here is held out of its training
            raise DataError("holdout_models needs the bench to train the router (train=True); a router scored as it "
                            "is was trained elsewhere, with or without those models")
        trained_ids = getattr(router, "model_ids", None)
        if trained_ids and set(trained_ids) != set(model_ids):
            # scored on models it never learnt, it would pick among them from their cards alone, and its figures
            # would pass for the trained router's
            raise DataError(
                f"router {router_name!r} was trained for models {sorted(trained_ids)[:6]}, the set holds "
                f"{sorted(model_ids)[:6]} (not trained on: {sorted(set(model_ids) - set(trained_ids))[:6]}; "
                f"not in the set: {sorted(set(trained_ids) - set(model_ids))[:6]}): score it on its own set"
            )
    if holdout_observed < 0:
        raise DataError(f"--holdout-observed must be >= 0, got {holdout_observed}")
    if holdout_observed and not holdout_models:
        raise DataError("--holdout-observed needs --holdout-models")
    if holdout_observed and not hasattr(router, "add_model"):
        raise DataError(f"router {router_name!r} cannot onboard a model with observations (it has no add_model)")
    embeds = bool(getattr(router, "uses_embeddings", False)) and hasattr(router, "embedder")
    live_embedder: Any = None
    cache_path: Path | None = None
    if embeds:
        live_embedder = embedder if embedder is not None else router.embedder
        if live_embedder is None:
            from orchestra.embeddings import get_embedder

            live_embedder = get_embedder()
        if not cache:
            live_embedder = _uncached(live_embedder)
        cache_path = getattr(live_embedder, "cache_path", None)
        if cache_path is not None:
            say(f"embedding cache {cache_path}")
        router.embedder = live_embedder
    counts_before = (getattr(live_embedder, "hits", 0), getattr(live_embedder, "misses", 0))
    fit_seconds = 0.0
    if train:
        say(f"training {router_name} on {len(train_rows)} queries ({len(val_rows)} for validation)")
        started = time.perf_counter()
        router.fit(
            train_rows, list(trained_on.cards), val=val_rows, weights=evaluated, card_costs=full.card_costs, seed=seed
        )
        fit_seconds = time.perf_counter() - started
    else:
        say(f"scoring {router_name} as given (train=False: not trained on this set's train split)")
    if hasattr(router, "reveal"):  # the oracle reads the test outcomes: it is an upper bound, not a router
        router.reveal(test_rows)
    if holdout_observed:
        _onboard_with_observations(router, full, holdout_models, holdout_observed, seed, say)
    if save is not None:
        say(f"saving the router to {save}")
        saved_to = str(router.save(save))

    say(f"routing {len(test_rows)} test queries at {len(evaluated)} cost weights")
    # single-decision latency first, so that the first decision of each timed query embeds it afresh (the
    # embedder caches by text); later weights reuse the embedding, as a live router would within a request
    n_latency = len(test_rows) if latency_queries is None else min(latency_queries, len(test_rows))
    latencies: dict[tuple[int, float], float] = {}
    cpu_first: list[float] = []
    if embeds:
        # timed decisions embed their query, as a live request would: never from a cache (the project
        # embedder keeps its own in memory and on disk, so time a bare twin of it)
        router.embedder = _uncached(live_embedder)
    for i, row in enumerate(test_rows[:n_latency]):
        for k, w in enumerate(evaluated):
            t0, c0 = time.perf_counter(), time.process_time()
            router.route_one(row.query, cards, w, task=row.task or None)
            latencies[(i, w)] = (time.perf_counter() - t0) * 1000
            if k == 0:
                cpu_first.append((time.process_time() - c0) * 1000)
    if embeds:
        router.embedder = live_embedder
    first_decisions = [latencies[(i, evaluated[0])] for i in range(n_latency)]
    # batch throughput: embeddings of the rest, then pure scoring of every query at every weight
    misses_before = getattr(live_embedder, "misses", None)
    started = time.perf_counter()
    if embeds:
        router.embed_queries(test_rows)
    embed_seconds = time.perf_counter() - started
    if misses_before is not None:
        n_embedded = live_embedder.misses - misses_before
    else:
        n_embedded = len(test_rows) if embeds else 0
    chosen_by_w: dict[float, np.ndarray] = {}
    started = time.perf_counter()
    for w in evaluated:
        chosen, _, _, _ = router.route_batch(test_rows, cards, w)
        chosen_by_w[w] = chosen
    scoring_seconds = time.perf_counter() - started
    queries_per_second = len(test_rows) * len(evaluated) / scoring_seconds if scoring_seconds else float("inf")

    if predictions:
        out = Path(predictions)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as handle:
            for w in evaluated:
                for i, row in enumerate(test_rows):
                    line = {"id": row.id, "w": w, "chosen": model_ids[int(chosen_by_w[w][i])],
                            "latency_ms": round(latencies[(i, w)], 3) if (i, w) in latencies else None}
                    handle.write(json.dumps(line) + "\n")

    scored = score_choices(test_rows, model_ids, chosen_by_w)
    calibrated = None
    if calibrating:
        on = val_rows or train_rows
        say(f"calibrating the cost weight on {len(on)} {'validation' if val_rows else 'training'} queries")
        w_star = router.calibrate_cost_weight(on, cards, mean_cost=target_cost, share=target_share)
        calibrated = {
            # check_cost_target let exactly one of the two through
            "target": {"mean_cost_usd": target_cost} if target_share is None else {"share": {target_share[0]: target_share[1]}},
            "calibrated_on": f"{'validation' if val_rows else 'training'} split, {len(on)} queries",
            "test": score_choices(test_rows, model_ids, {w_star: router.route_batch(test_rows, cards, w_star)[0]})["points"][0],
        }
    report: dict[str, Any] = {
        "set": full.name,
        "router": router_name,
        "router_config": router.describe() if callable(getattr(router, "describe", None)) else {"name": router_name},
        "router_source": router_source(router, options_given),
        # which encoder embedded the queries: knn on the hashing embedder and on MiniLM share a name, not figures
        "embedder": embedder_name(live_embedder) if embeds else None,
        "n_train": len(train_rows),
        "n_val": len(val_rows),
        "n_test": len(test_rows),
        "holdout_models": list(holdout_models),
        "holdout_observed": holdout_observed,
        "seed": seed,
        **cost_fields(full),
        **scored,
        "calibrated": calibrated,
        "saved": saved_to if save is not None else None,
        "fit_seconds": fit_seconds,
        "trained_by_bench": train,
        "latency": {
            "decision_p50_ms_with_embedding": _percentile(first_decisions, 50),
            "decision_p95_ms_with_embedding": _percentile(first_decisions, 95),
            "decision_p50_cpu_ms_with_embedding": _percentile(cpu_first, 50),
            "decision_p50_ms_all": _percentile(list(latencies.values()), 50),
            "n_timed_queries": n_latency,
            "torch_threads": _torch_threads(),
            "embedding_backend": getattr(live_embedder, "backend", None),
            "load_average_1min": os.getloadavg()[0],
            "batch_scoring_queries_per_s": queries_per_second,
            "batch_embedding_queries_per_s": n_embedded / embed_seconds if embed_seconds and n_embedded else None,
        },
        "embedding_cache": (
            {
                "path": str(cache_path),
                "hits": live_embedder.hits - counts_before[0],
                "misses": live_embedder.misses - counts_before[1],
            }
            if cache_path is not None
            else None
        ),
    }
    return report


def print_report(report: dict[str, Any]) -> None:
    """Print a bench report as the command does: a table and its figures in lines."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    label = f" ({report['cost']} cost)" if report["cost"] == "estimated" else ""
    table = Table(title=f"{report['router']} on {report['set']} test ({report['n_test']} queries){label}")
    for column in ("w", "quality", "cost $/query", "most chosen"):
        table.add_column(column, justify="right" if column != "most chosen" else "left")
    for point in report["points"]:
        top = max(point["share"].items(), key=lambda kv: kv[1])
        table.add_row(f"{point['w']:.2f}", f"{point['quality']:.3f}", f"{point['cost_usd']:.6f}",
                      f"{top[0]} {top[1]:.0%}")
    console.print(table)
    rewards = report["scenario_rewards"]
    aiq_text = (
        f"AIQ {report['aiq']:.3f} (single models' hull {report['aiq_single_models']:.3f})"
        if report["aiq"] is not None
        else "AIQ n/a (every single model has the same mean cost, so there is no cost range to integrate over)"
    )

    def reward(name: str) -> str:  # a scenario whose w was not routed (a rescored predictions file) has none
        return "n/a" if rewards.get(name) is None else f"{rewards[name]:.4f}"

    console.print(f"{aiq_text}; rewards: performance first {reward('performance_first')}, balance {reward('balance')}, "
                  f"cost first {reward('cost_first')}")
    best = report["best_single"]
    reach = report["cheapest_point_reaching_best_single"]
    reach_text = f"w={reach['w']} at ${reach['cost_usd']:.5f}/query" if reach else "no w reaches it"
    console.print(f"best single model {best['model']} {best['quality']:.3f} at ${best['cost_usd']:.5f}: {reach_text}")
    lat = report["latency"]
    if "batch_scoring_queries_per_s" not in lat:  # rescored from predictions: only what they recorded
        p50 = lat.get("decision_p50_ms_with_embedding")
        console.print("decision latency: not recorded in the predictions" if p50 is None
                      else f"decision p50 {p50:.1f} ms, as recorded in the predictions")
        return
    console.print(
        f"decision p50 {lat['decision_p50_ms_with_embedding']:.1f} ms with embedding"
        f"{' on ' + lat['embedding_backend'] if lat.get('embedding_backend') else ''} "
        f"({lat['decision_p50_cpu_ms_with_embedding']:.1f} ms CPU); batch scoring "
        f"{lat['batch_scoring_queries_per_s']:.0f} queries/s; fit {report['fit_seconds']:.1f} s"
    )
    if report.get("saved"):
        console.print(f"saved to {report['saved']}: serve it with --router {report['router']} --option checkpoint={report['saved']}")
    calibrated = report.get("calibrated")
    if calibrated:
        target = calibrated["target"]
        wanted = (f"mean cost ${target['mean_cost_usd']:g}" if "mean_cost_usd" in target
                  else ", ".join(f"share {share:g} of {model}" for model, share in target["share"].items()))
        test = calibrated["test"]
        console.print(
            f"calibrated for {wanted} on the {calibrated['calibrated_on']}: w={test['w']:.6f}; on test quality "
            f"{test['quality']:.3f} at ${test['cost_usd']:.5f}/query, shares "
            + ", ".join(f"{model} {share:.0%}" for model, share in sorted(test["share"].items(), key=lambda kv: -kv[1]))
        )


def _option(*names: str, help: str) -> Any:
    return typer.Option(*names, help=help)


WEIGHTS_HELP = (
    "Cost weights w in [0, 1], comma-separated. The default is fine below 0.1, where the knob acts most (by then "
    "most queries have left the dearest model). The scenario rewards' weights 0, 0.5 and 0.8 are always added."
)


def models_command(
    data: Annotated[str, _option("--data", help="Set folder (models.jsonl, train.jsonl, test.jsonl).")],
    router: Annotated[str, _option("--router", help="Model router name: graph-router, knn, mlp, mf, ..., or one of your own as package.module:Class; several, comma-separated, are run in turn and compared side by side.")] = "graph-router",
    weights: Annotated[str, _option("--weights", help=WEIGHTS_HELP)] = ",".join(map(str, DEFAULT_WEIGHTS)),
    holdout_models: Annotated[
        str, _option("--holdout-models", help="Train without these models (A,B); onboard them by card at test time.")
    ] = "",
    holdout_observed: Annotated[
        int,
        _option(
            "--holdout-observed",
            help="Onboard each held-out model with its recorded outcomes on this many training queries (0: card only).",
        ),
    ] = 0,
    predictions: Annotated[
        str | None, _option("--predictions", help="Write one JSON line per (test query, w) here.")
    ] = None,
    json_out: Annotated[str | None, _option("--json", help="Write the metrics here as JSON.")] = None,
    seed: Annotated[int, _option("--seed", help="Seed of the validation split and of training.")] = 0,
    limit: Annotated[int | None, _option("--limit", help="Route only the first N test queries.")] = None,
    option: Annotated[
        list[str] | None, _option("--option", help="Router option key=value (repeatable), e.g. k=50; ROUTER:key=value for one of several routers.")
    ] = None,
    cache: Annotated[
        bool, _option("--cache/--no-cache", help="Read and keep query embeddings in the embedder's disk cache under $ORCHESTRA_HOME/cache.")
    ] = True,
    target_cost: Annotated[
        float | None, _option("--target-cost", help="Calibrate w on the validation split for this mean cost (USD per query); report it on test.")
    ] = None,
    target_share: Annotated[
        str | None, _option("--target-share", help="Calibrate w on the validation split for this share of a model, MODEL=SHARE (e.g. gpt-4=0.5).")
    ] = None,
    save: Annotated[
        str | None, _option("--save", help="Write the trained router here, to serve with --option checkpoint=PATH.")
    ] = None,
) -> None:
    """Train a model router on a set's train split, route its test queries over a grid of cost weights, and
    print realised quality and cost per w, AIQ, GraphRouter's scenario rewards and latency."""
    from orchestra.bench import data_dir, parse_options
    from orchestra.bench.compare import several_routers, write_comparison

    router_options = parse_options(option)  # a bad item is a ConfigurationError: one line, exit 2
    routers = several_routers(router, router_options, predictions=predictions, save=save)
    check_output(json_out, data=data_dir(data), option="--json", beside=predictions)
    check_output(save, data=data_dir(data), option="--save", beside=json_out)
    if "router-r1" in routers and len(routers) > 1:
        raise ConfigurationError("router-r1 runs its own multi-round loop, not the cost-weight sweep: run it alone, not beside "
                                 + ", ".join(name for name in routers if name != "router-r1"))
    if router == "router-r1":
        # Router-R1 is multi-round: it consults models and answers itself, so it runs on its own loop with the
        # recorded pool (accuracy, cost, turns, format validity) rather than per cost weight.
        from orchestra.bench.r1 import run_and_print

        ignored = [flag for flag, given in (("--weights", weights != ",".join(str(w) for w in DEFAULT_WEIGHTS)),
                                            ("--holdout-models", bool(holdout_models)),
                                            ("--holdout-observed", bool(holdout_observed)),
                                            ("--target-cost", target_cost is not None), ("--target-share", target_share is not None),
                                            ("--save", save is not None)) if given]
        if ignored:
            raise ConfigurationError(f"router-r1 runs its own multi-round loop, not the cost-weight sweep: "
                                     f"{', '.join(ignored)} do not apply to it")

        # Every --option is the router's (router_model names its card: 'local' is the embedded SmolLM2); the
        # router is built from them before any data is read. (They used to be dropped but for router_model and
        # constrained.)
        options = dict(routers["router-r1"])
        router_model = str(options.pop("router_model", "local"))
        run_and_print(data, router_model, limit or 50, seed=seed, max_rounds=None, router_options=options,
                      predictions=predictions, json_out=json_out)
        return
    holdout = [m.strip() for m in holdout_models.split(",") if m.strip()]
    share = None
    if target_share is not None:
        model_id, sep, value = target_share.rpartition("=")
        try:
            share = (model_id.strip(), float(value))
        except ValueError:
            share = None
        if not sep or not model_id.strip() or share is None:
            raise ConfigurationError(f"--target-share takes MODEL=SHARE, e.g. gpt-4=0.5; got {target_share!r}")
    reports = []
    for name, options in routers.items():
        report = run_model_bench(
            data_dir(data),
            name,
            weights=parse_weights(weights),
            holdout_models=holdout,
            holdout_observed=holdout_observed,
            predictions=predictions,
            seed=seed,
            limit=limit,
            router_options=options,
            progress=lambda message: typer.echo(message, err=True),
            cache=cache,
            target_cost=target_cost,
            target_share=share,
            save=save,
        )
        print_report(report)
        reports.append(report)
    write_comparison(reports, json_out)
