"""``orchestra bench fusion``: fused accuracy of a model router whose top-k models answer together.

Models act as agents. The router is trained on the set's train split (as ``orchestra bench models`` does) and
gives each test query a weight per model: ``distribution()`` when the router has one (AgentRouter's
``p(model | query, graph)``), else its predicted qualities normalised to sum 1. The k models of highest weight
"answer" with their *recorded* responses, so fusion is measured with no model call:

- multiple-choice queries (lettered options in the query, e.g. RouterBench's ARC-Challenge and Winogrande):
  each response's option is extracted (`extract_option`) and the options are fused by a vote weighted by the
  router's weights (ties go to the higher-weighted model); the fused option is scored against the option of any
  response scored correct (none correct: the query cannot be answered right). A response with no extractable
  option casts no vote and is counted (``no_option``); a query where no dispatched response has one is counted
  (``no_answer``) and scored wrong;
- other queries (MBPP, free text): the top-1 model's recorded score (a fused program cannot be scored offline).

The report also gives, for comparison on the same queries: every single model, the oracle (some model is
right), and the static vote of the k models best on train weighted by their train accuracy.

Model cards with no description are accepted here (their id stands for it) and listed in the report, and so
are outcomes with no cost and no card prices to estimate it from: the cost of a query that dispatches such a
model is unknown (``None``), never 0, and so is the mean cost at that k.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from orchestra.aggregate import extract_option, option_letters
from orchestra.cards import ModelCard
from orchestra.errors import DataError

from . import check_limit, check_output, refuse_checkpoint

__all__ = [
    "extract_option",
    "fuse_options",
    "fuse_rows",
    "fusion_command",
    "load_fusion_set",
    "option_letters",
    "run_fusion_bench",
]

def fuse_options(options: Sequence[str | None], weights: Sequence[float]) -> tuple[str | None, dict[str, float]]:
    """Weighted vote: the option whose voters' weights add up most (ties: the first voter's, i.e. the
    higher-weighted model when voters come best first); ``None`` when nobody voted."""
    votes: dict[str, float] = {}
    for option, weight in zip(options, weights, strict=True):
        if option is not None:
            votes[option] = votes.get(option, 0.0) + float(weight)
    if not votes:
        return None, votes
    return max(votes, key=lambda key: votes[key]), votes


def load_fusion_set(root: str | Path) -> tuple[list[ModelCard], list[Any], list[Any], dict[str, Any]]:
    """A model set read leniently: cards with no description get their id as description (listed in the
    returned facts, ``undescribed``). Returns (cards, train rows, test rows, facts)."""
    from orchestra.bench.models import load_model_set

    data = load_model_set(root, lenient_descriptions=True, unknown_costs=True)
    facts = {"undescribed": list(data.undescribed), "card_costs": data.card_costs,
             "cost": "estimated" if data.cost_estimated else "measured"}
    return list(data.cards), list(data.train), list(data.test), facts


def _weights(router: Any, rows: Sequence[Any], cards: Sequence[ModelCard], name: str) -> np.ndarray:
    if hasattr(router, "distribution"):
        p = np.asarray(router.distribution(rows, cards)[0])[:, : len(cards)]
    else:
        p = np.clip(np.asarray(router.predict(rows, cards)[0], dtype=float), 0.0, None)
    if not np.isfinite(p).all():
        # equal weights would pass for the router's own: the cheapest and largest routers rank by price alone
        raise DataError(f"router {name!r} predicts no quality for some models, so it gives no weights to fuse "
                        "their answers by; use a router that learns quality (agent-router, graph-router, knn, ...)")
    totals = p.sum(axis=1, keepdims=True)
    return np.where(totals > 0, p / np.where(totals > 0, totals, 1.0), 1.0 / len(cards))


def fuse_rows(
    rows: Sequence[Any], model_ids: Sequence[str], weights: np.ndarray, k: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Fuse the top-k of each row by ``weights``; per-row records and the aggregate figures."""
    records = []
    for i, row in enumerate(rows):
        order = np.argsort(-weights[i], kind="stable")[:k]
        chosen = [model_ids[j] for j in order]
        w = [float(weights[i, j]) for j in order]
        letters = option_letters(row.query)
        costs = [row.outcomes[m].cost for m in chosen if m in row.outcomes]
        cost = None if None in costs else float(sum(costs))
        record: dict[str, Any] = {"id": row.id, "task": row.task, "chosen": chosen, "weights": [round(x, 4) for x in w], "cost": cost}
        if letters:
            options = [extract_option(row.outcomes[m].response if m in row.outcomes else None, letters) for m in chosen]
            gold = sorted({
                o for m, o in ((m, extract_option(out.response, letters)) for m, out in row.outcomes.items())
                if o is not None and row.outcomes[m].score >= 1.0
            })
            fused, votes = fuse_options(options, w)
            record.update({"kind": "vote", "options": options, "fused": fused, "gold": gold,
                           "correct": float(fused is not None and fused in gold),
                           "no_option": sum(o is None for o in options), "no_answer": fused is None})
        else:
            top = chosen[0]
            record.update({"kind": "top1", "correct": float(row.outcomes[top].score if top in row.outcomes else 0.0)})
        records.append(record)
    voted = [r for r in records if r["kind"] == "vote"]
    summary: dict[str, Any] = {
        "k": k,
        "n": len(records),
        "quality_all": float(np.mean([r["correct"] for r in records])) if records else 0.0,
        "cost_usd": (
            float(np.mean([r["cost"] for r in records]))
            if records and all(r["cost"] is not None for r in records) else None
        ),
        "n_vote": len(voted),
        "fused_accuracy_vote": float(np.mean([r["correct"] for r in voted])) if voted else None,
        "no_option_responses": int(sum(r["no_option"] for r in voted)),
        "no_answer_queries": int(sum(r["no_answer"] for r in voted)),
        "by_task": {},
    }
    for task in sorted({r["task"] for r in records}):
        mine = [r for r in records if r["task"] == task]
        summary["by_task"][task] = {"n": len(mine), "quality": float(np.mean([r["correct"] for r in mine])),
                                    "kind": mine[0]["kind"]}
    return records, summary


def run_fusion_bench(
    folder: str | Path,
    router_name: str = "agent-router",
    *,
    ks: Sequence[int] = (1, 2, 3),
    router_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    limit: int | None = None,
    predictions: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train the named model router on the set's train split and measure fused accuracy at each k."""
    from orchestra.bench.models import split_train_val
    from orchestra.routing import load_router

    say = progress or (lambda message: None)
    if not ks or any(int(k) < 1 for k in ks):
        raise DataError(f"--k: every k must be at least 1, got {list(ks)}")
    check_limit(limit)
    check_output(predictions, data=Path(folder), option="--predictions")
    refuse_checkpoint(router_options, "fusion")
    cards, train, test, facts = load_fusion_set(folder)
    if max(ks) > len(cards):
        raise DataError(f"--k: the set has {len(cards)} models, so k can be at most {len(cards)}, got {max(ks)}")
    test = test[:limit] if limit else test
    model_ids = [card.id for card in cards]
    # a model router (fit, predict), which the Router protocol does not describe: checked by the bind below
    router: Any = load_router(router_name, **dict(router_options or {}))
    train_rows, val_rows = split_train_val(train, 0.1, seed)
    try:
        inspect.signature(router.fit).bind(train_rows, cards, val=val_rows, weights=(0.0,), card_costs={}, seed=seed)
    except (AttributeError, TypeError):
        raise DataError(f"router {router_name!r} cannot be trained on model outcomes (it is not a model router)") from None
    say(f"training {router_name} on {len(train_rows)} queries ({len(val_rows)} for validation)")
    started = time.perf_counter()
    router.fit(train_rows, cards, val=val_rows, weights=(0.0,), card_costs=facts["card_costs"], seed=seed)
    fit_seconds = time.perf_counter() - started
    say(f"weighting {len(test)} test queries")
    started = time.perf_counter()
    weights = _weights(router, test, cards, router_name)
    weight_seconds = time.perf_counter() - started

    results, all_records = [], {}
    for k in sorted({int(k) for k in ks}):
        records, summary = fuse_rows(test, model_ids, weights, min(k, len(cards)))
        results.append(summary)
        all_records[k] = records

    # the same queries fused without a router: each single model, the static vote, the oracle
    train_acc = np.array([np.mean([r.outcomes[m].score for r in train if m in r.outcomes] or [0.0]) for m in model_ids])
    static = np.tile(train_acc / max(train_acc.sum(), 1e-12), (len(test), 1))
    singles = {}
    for j, model_id in enumerate(model_ids):
        one = np.zeros((len(test), len(model_ids)))
        one[:, j] = 1.0
        singles[model_id] = fuse_rows(test, model_ids, one, 1)[1]["fused_accuracy_vote"]
    static_runs = {k: fuse_rows(test, model_ids, static, min(k, len(cards)))[1] for k in sorted({int(k) for k in ks})}
    voted_rows = [r for r in test if option_letters(r.query)]
    oracle = float(np.mean([max(o.score for o in r.outcomes.values()) for r in voted_rows])) if voted_rows else None

    if predictions:
        out = Path(predictions)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as handle:
            for k, records in all_records.items():
                for record in records:
                    handle.write(json.dumps({"k": k, **record}) + "\n")
    return {
        "set": Path(folder).name,
        "router": router_name,
        "router_config": router.describe() if hasattr(router, "describe") else {"name": router_name},
        "seed": seed,
        "n_train": len(train_rows),
        "n_val": len(val_rows),
        "n_test": len(test),
        "weights_from": "distribution" if hasattr(router, "distribution") else "predicted quality, normalised",
        "cost": facts["cost"],
        "undescribed_models": facts["undescribed"],
        "fused": results,
        "single_models_vote_accuracy": singles,
        "static_vote_by_train_accuracy": {str(k): v["fused_accuracy_vote"] for k, v in static_runs.items()},
        "oracle_vote_accuracy": oracle,
        "fit_seconds": round(fit_seconds, 2),
        "weighting_seconds": round(weight_seconds, 2),
        "training": getattr(router, "training_log", {}),
    }


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    label = " (estimated cost)" if report["cost"] == "estimated" else ""
    table = Table(title=f"{report['router']} fused on {report['set']} test ({report['n_test']} queries){label}")
    for column in ("k", "multiple-choice fused acc", "all tasks quality", "cost $/query", "no-option responses", "no answer"):
        table.add_column(column, justify="right")
    for row in report["fused"]:
        acc = row["fused_accuracy_vote"]
        table.add_row(str(row["k"]), "-" if acc is None else f"{acc:.4f}", f"{row['quality_all']:.4f}",
                      "unknown" if row["cost_usd"] is None else f"{row['cost_usd']:.6f}",
                      str(row["no_option_responses"]), str(row["no_answer_queries"]))
    console.print(table)
    singles = {m: a for m, a in report["single_models_vote_accuracy"].items() if a is not None}
    if singles:
        best = max(singles, key=lambda m: singles[m])
        console.print(f"best single model on these queries: {best} {singles[best]:.4f}; oracle "
                      f"{report['oracle_vote_accuracy']:.4f}; static vote by train accuracy "
                      + ", ".join(f"k={k} {v:.4f}" for k, v in report["static_vote_by_train_accuracy"].items() if v is not None))
    if report["undescribed_models"]:
        console.print(f"models with no description (id used instead): {', '.join(report['undescribed_models'])}")


def fusion_command(
    data: Annotated[str, typer.Option("--data", help="Model set folder (models.jsonl, train.jsonl, test.jsonl).")],
    router: Annotated[str, typer.Option("--router", help="Model router giving the weights.")] = "agent-router",
    k: Annotated[str, typer.Option("--k", help="Numbers of models fused, comma-separated.")] = "1,2,3",
    predictions: Annotated[str | None, typer.Option("--predictions", help="Write one JSON line per (k, query).")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="Write the report here as JSON.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the validation split and of training.")] = 0,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N test queries.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="Router option key=value (repeatable).")] = None,
) -> None:
    """Fused accuracy of a router's top-k models: weighted vote of their recorded answers on multiple-choice
    queries, top-1 score elsewhere; with single models, the oracle and a static vote for comparison."""
    from orchestra.bench import data_dir, parse_options, write_report

    try:
        ks = [int(part) for part in k.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"--k expects integers such as 1,2,3, got {k!r}") from None
    options = parse_options(option)  # a bad item is a ConfigurationError: one line, exit 2
    check_output(json_out, data=data_dir(data), option="--json", beside=predictions)
    report = run_fusion_bench(data_dir(data), router, ks=ks, router_options=options, seed=seed, limit=limit,
                              predictions=predictions, progress=lambda message: typer.echo(message, err=True))
    _print_report(report)
    if json_out:
        write_report(report, json_out)
