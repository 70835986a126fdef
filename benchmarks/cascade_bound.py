"""How cheaply can the best model's quality be reached if a router may call more than one model?

    .venv/bin/python benchmarks/cascade_bound.py [--data ../shared/data/models/routerbench] [--budget 0.0025]

The GraphRouter issue asks for a cost weight that reaches GPT-4's accuracy on routerbench (0.879) at a mean cost of
$0.0025 per query, half of GPT-4's. Every router on `orchestra bench models` calls one model per query; the best
of them first reaches that accuracy at $0.00357 (MF). This script measures what calling more than one model
could buy, with each query's task known (the routers infer it from the query, nearly always right):

- per task, one strategy: a single model, or an *agreement cascade*: call two or three cheaper models, keep their
  answer when the options they pick agree, and call the best model when they do not or an option cannot be read
  (multiple-choice tasks only; the cost is every call made);
- strategies combined over tasks, chosen on train: the cheapest combination whose train quality reaches the best
  model's, and the best train quality within ``--budget``; each then scored on test;
- the best combination within the budget chosen on test itself (a bound no router can be held to).

No model is called: options are read from the recorded responses exactly as ``orchestra bench fusion`` does
(`orchestra.bench.fusion`), and a cascade's kept answer scores as its first model's recorded score. Prints a table
and writes ``benchmarks/results/cascade_bound.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from orchestra.bench import data_dir
from orchestra.bench.fusion import extract_option, option_letters
from orchestra.bench.models import load_model_set

Strategy = tuple[tuple[str, ...], bool]
"""(models called first, whether the best model is called when they disagree)."""


def _figures(rows: list[Any], options: list[dict[str, str | None]], strategy: Strategy, best: str) -> tuple[float, float]:
    """Mean quality and mean cost (USD) of ``strategy`` over ``rows``."""
    first, escalates = strategy
    quality = cost = 0.0
    for row, picked in zip(rows, options, strict=True):
        cost += sum(row.outcomes[m].cost or 0.0 for m in first)
        answers = [picked.get(m) for m in first]
        agree = answers[0] is not None and all(a == answers[0] for a in answers)
        if not escalates or agree:
            quality += row.outcomes[first[0]].score
        else:
            quality += row.outcomes[best].score
            cost += row.outcomes[best].cost or 0.0
    return quality / len(rows), cost / len(rows)


def _pareto(points: list[tuple[float, float, Strategy]]) -> list[tuple[float, float, Strategy]]:
    """The (quality, cost, strategy) points no other point beats on both (cheapest first)."""
    kept: list[tuple[float, float, Strategy]] = []
    for point in sorted(points, key=lambda p: (p[1], -p[0])):
        if not kept or point[0] > kept[-1][0]:
            kept.append(point)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="a model set folder (default: <data>/models/routerbench)")
    parser.add_argument("--budget", type=float, default=0.0025, help="mean USD per query (the issue's $0.0025)")
    parser.add_argument("--max-first", type=int, default=3, help="at most this many models called first")
    parser.add_argument("--json", default="benchmarks/results/cascade_bound.json")
    args = parser.parse_args()
    folder = Path(args.data) if args.data else data_dir() / "models" / "routerbench"
    full = load_model_set(folder)
    ids = [card.id for card in full.cards]
    splits = {"train": list(full.train), "test": list(full.test)}

    def mean(split: str, model: str, field: str) -> float:
        return float(np.mean([getattr(row.outcomes[model], field) or 0.0 for row in splits[split]]))

    best = max(ids, key=lambda m: (mean("train", m, "score"), -mean("train", m, "cost")))
    cheaper = [m for m in ids if mean("train", m, "cost") < mean("train", best, "cost")]
    by_task: dict[str, dict[str, list[Any]]] = {}
    for split, rows in splits.items():
        for row in rows:
            by_task.setdefault(row.task or "", {"train": [], "test": []})[split].append(row)
    tasks = sorted(by_task)
    options = {
        task: {
            split: [
                {m: extract_option(out.response, letters) for m, out in row.outcomes.items()}
                if (letters := option_letters(row.query)) else {}
                for row in rows
            ]
            for split, rows in parts.items()
        }
        for task, parts in by_task.items()
    }

    # each task's strategies; a cascade keeps the answer of its model most accurate on train
    strategies: dict[str, list[Strategy]] = {}
    for task in tasks:
        train_rows = by_task[task]["train"]
        strategies[task] = [((m,), False) for m in ids]
        if any(options[task]["train"]):
            accuracy = {m: float(np.mean([row.outcomes[m].score for row in train_rows])) for m in cheaper}
            for size in range(2, args.max_first + 1):
                for group in itertools.combinations(cheaper, size):
                    strategies[task].append((tuple(sorted(group, key=lambda m: -accuracy[m])), True))

    @cache
    def figures(task: str, split: str, strategy: Strategy) -> tuple[float, float]:
        # every combination of tasks' strategies reads the same per-task figures: compute each once
        return _figures(by_task[task][split], options[task][split], strategy, best)

    def frontier(split: str) -> dict[str, list[tuple[float, float, Strategy]]]:
        return {task: _pareto([(*figures(task, split, s), s) for s in strategies[task]]) for task in tasks}

    counts = {split: Counter(row.task or "" for row in rows) for split, rows in splits.items()}

    def combine(choice: tuple[Strategy, ...], split: str) -> tuple[float, float]:
        total = sum(counts[split].values())
        quality = cost = 0.0
        for task, strategy in zip(tasks, choice, strict=True):
            q, c = figures(task, split, strategy)
            quality += q * counts[split][task] / total
            cost += c * counts[split][task] / total
        return quality, cost

    on_train = frontier("train")
    combos = [tuple(p[2] for p in picked) for picked in itertools.product(*(on_train[t] for t in tasks))]
    scored = [(combine(c, "train"), combine(c, "test"), c) for c in combos]
    target_train = mean("train", best, "score")
    reaching = [s for s in scored if s[0][0] >= target_train - 1e-12]
    within = [s for s in scored if s[0][1] <= args.budget]
    # the bound picked on test searches test's own frontier of the same strategies
    on_test = frontier("test")
    test_combos = [tuple(p[2] for p in picked) for picked in itertools.product(*(on_test[t] for t in tasks))]
    test_within = [(combine(c, "test"), c) for c in test_combos]
    test_within = [s for s in test_within if s[0][1] <= args.budget]

    def describe(choice: tuple[Strategy, ...]) -> dict[str, str]:
        return {
            task: " + ".join(first) + (f", else {best}" if escalates else "")
            for task, (first, escalates) in zip(tasks, choice, strict=True)
        }

    def entry(train: tuple[float, float] | None, test: tuple[float, float], choice: tuple[Strategy, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {"test_quality": round(test[0], 4), "test_cost_usd": round(test[1], 6)}
        if train is not None:
            out.update(train_quality=round(train[0], 4), train_cost_usd=round(train[1], 6))
        out["strategy"] = describe(choice)
        return out

    results: dict[str, Any] = {
        "set": full.name,
        "budget_usd": args.budget,
        "best_model": best,
        "best_model_train": {"quality": round(target_train, 4), "cost_usd": round(mean("train", best, "cost"), 6)},
        "best_model_test": {"quality": round(mean("test", best, "score"), 4), "cost_usd": round(mean("test", best, "cost"), 6)},
        "tasks": {task: {"train": counts["train"][task], "test": counts["test"][task]} for task in tasks},
    }
    if reaching:
        train, test, choice = min(reaching, key=lambda s: s[0][1])
        results["cheapest_reaching_best_on_train"] = entry(train, test, choice)
    if within:
        train, test, choice = max(within, key=lambda s: (s[0][0], -s[0][1]))
        results["best_within_budget_on_train"] = entry(train, test, choice)
    if test_within:
        test, choice = max(test_within, key=lambda s: (s[0][0], -s[0][1]))
        results["best_within_budget_on_test"] = entry(None, test, choice)

    print(f"{full.name}: best model {best}, test quality {results['best_model_test']['quality']:.4f} at "
          f"${results['best_model_test']['cost_usd']:.5f}; budget ${args.budget:.5f}")
    print(f"{'chosen':44s} {'train q':>8s} {'train $':>9s} {'test q':>8s} {'test $':>9s}")
    for key, label in (
        ("cheapest_reaching_best_on_train", "cheapest reaching the best model (train)"),
        ("best_within_budget_on_train", "best within the budget (train)"),
        ("best_within_budget_on_test", "best within the budget (picked on test)"),
    ):
        if key not in results:
            print(f"{label:44s} none")
            continue
        r = results[key]
        train_q = f"{r['train_quality']:8.4f}" if "train_quality" in r else f"{'':8s}"
        train_c = f"{r['train_cost_usd']:9.5f}" if "train_cost_usd" in r else f"{'':9s}"
        print(f"{label:44s} {train_q} {train_c} {r['test_quality']:8.4f} {r['test_cost_usd']:9.5f}")
        for task, text in r["strategy"].items():
            print(f"    {task}: {text}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
