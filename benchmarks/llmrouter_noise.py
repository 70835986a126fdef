"""How much of llmrouter's top-1 target can a query-level router claim, and how much is the test set's noise?

    .venv/bin/python benchmarks/llmrouter_noise.py [--data ../shared/data/models/llmrouter]

Prints a table and writes ``benchmarks/results/llmrouter_noise.json``. No router is trained. The AgentRouter
issue asks top-1 quality 3 points above the best single model (0.597 + 0.03 on 381 test queries). This script
measures the rule every router that knows the query's task can fall back on, the best model of each task on
train, and two kinds of noise around it:

- the rule on all of train, and on 500 bootstrap resamples of train (how much the choice itself moves);
- the standard deviation of the rule's test quality over 2,000 bootstrap resamples of test (how much the
  381 test queries move any fixed router's figure);
- per task, the model the rule picks and what the best model of that task gets on test.

Scores, tasks and models are read exactly as ``orchestra bench models`` reads them (`orchestra.bench.models`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from orchestra.bench import data_dir
from orchestra.bench.models import load_model_set, outcome_matrix

TARGET_MARGIN = 0.03
"""The issue's margin over the best single model."""


def per_task_choice(scores: np.ndarray, tasks: np.ndarray) -> dict[str, int]:
    """The model with the best mean score of each task in ``tasks``."""
    return {str(task): int(np.nanmean(scores[tasks == task], axis=0).argmax()) for task in np.unique(tasks)}


def quality(scores: np.ndarray, picks: np.ndarray) -> float:
    return float(scores[np.arange(len(scores)), picks].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="a model set folder (default: ../shared/data/models/llmrouter)")
    parser.add_argument("--json", default="benchmarks/results/llmrouter_noise.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = Path(args.data) if args.data else data_dir() / "models" / "llmrouter"
    model_set = load_model_set(folder)
    ids = model_set.model_ids
    train_scores = np.nan_to_num(outcome_matrix(model_set.train, ids)[0])
    test_scores = np.nan_to_num(outcome_matrix(model_set.test, ids)[0])
    train_tasks = np.array([row.task or "" for row in model_set.train])
    test_tasks = np.array([row.task or "" for row in model_set.test])
    best_single = int(train_scores.mean(axis=0).argmax())
    best_single_test = float(test_scores.mean(axis=0).max())

    def rule_on_test(scores: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        # a test task missing from ``tasks`` (a resample can drop one) falls back to the best single model
        choice = per_task_choice(scores, tasks)
        return np.array([choice.get(task, best_single) for task in test_tasks])

    picks = rule_on_test(train_scores, train_tasks)
    rng = np.random.default_rng(args.seed)
    resampled = []
    for _ in range(500):
        rows = rng.integers(0, len(train_scores), len(train_scores))
        resampled.append(quality(test_scores, rule_on_test(train_scores[rows], train_tasks[rows])))
    per_query = test_scores[np.arange(len(test_scores)), picks]
    test_sd = float(np.std([per_query[rng.integers(0, len(per_query), len(per_query))].mean() for _ in range(2000)]))
    target = best_single_test + TARGET_MARGIN
    by_task = {}
    for task in np.unique(test_tasks):
        rows = test_tasks == task
        by_task[str(task)] = {
            "n_test": int(rows.sum()),
            "picked": ids[int(picks[rows][0])],
            "picked_test_quality": round(float(test_scores[rows, picks[rows][0]].mean()), 4),
            "best_test_model": ids[int(test_scores[rows].mean(axis=0).argmax())],
            "best_test_quality": round(float(test_scores[rows].mean(axis=0).max()), 4),
        }
    results: dict[str, Any] = {
        "set": folder.name,
        "n_train": len(train_scores),
        "n_test": len(test_scores),
        "best_single_test": round(best_single_test, 4),
        "target": round(target, 4),
        "oracle_test": round(float(test_scores.max(axis=1).mean()), 4),
        "per_task_best_on_train": round(quality(test_scores, picks), 4),
        "per_task_best_of_test_itself": round(quality(test_scores, rule_on_test(test_scores, test_tasks)), 4),
        "train_bootstrap": {
            "mean": round(float(np.mean(resampled)), 4),
            "p5": round(float(np.percentile(resampled, 5)), 4),
            "p95": round(float(np.percentile(resampled, 95)), 4),
            "share_reaching_target": round(float(np.mean(np.array(resampled) >= target)), 3),
        },
        "test_bootstrap_sd": round(test_sd, 4),
        "by_task": by_task,
    }
    rows = [
        ("best single model (test)", results["best_single_test"]),
        ("target (best single + 0.03)", results["target"]),
        ("best model per task, chosen on train", results["per_task_best_on_train"]),
        (
            "same, train resampled (mean, 5th-95th percentile)",
            f"{results['train_bootstrap']['mean']:.4f} ({results['train_bootstrap']['p5']:.4f}-{results['train_bootstrap']['p95']:.4f})",
        ),
        ("share of those resamples reaching the target", results["train_bootstrap"]["share_reaching_target"]),
        ("best model per task, chosen on test itself", results["per_task_best_of_test_itself"]),
        ("standard deviation of a fixed rule over test resamples", results["test_bootstrap_sd"]),
        ("oracle", results["oracle_test"]),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}")
    for task, info in by_task.items():
        print(f"  {task:<22} n={info['n_test']:<3} picked {info['picked']} {info['picked_test_quality']:.3f}; best {info['best_test_model']} {info['best_test_quality']:.3f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
