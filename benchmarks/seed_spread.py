"""How much does a model router's top-1 quality move with its training seed, and what does averaging seeds buy?

    .venv/bin/python benchmarks/seed_spread.py [--data ../shared/data/models/llmrouter] [--router agent-router]
        [--seeds 0,1,2,3,4]

Prints a table and writes ``benchmarks/results/seed_spread_<set>_<router>.json``. The validation split is the
one ``orchestra bench models`` makes with ``--seed 0`` for every run, so only training moves. For each seed: the
test quality of the model with the highest predicted quality (the w = 0 choice, which is Performance First, and
AgentRouter's top-1). Then the same choice made from the mean of the first 1, 2, ... seeds' predicted qualities:
a seed ensemble, at that many times the training time. The AgentRouter issue's llmrouter target (best single
model + 3 points) is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

# the script beside this one keeps the margin and the quality of a pick per query
from llmrouter_noise import TARGET_MARGIN, quality

from orchestra.bench import data_dir
from orchestra.bench.models import load_model_set, outcome_matrix, split_train_val
from orchestra.routing import load_router


def top1_quality(scores: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recorded score of the model with the highest predicted quality, per query."""
    return quality(scores, predicted.argmax(axis=1))


def seed_spread(folder: str | Path, router_name: str, seeds: list[int], say: Any = print) -> dict[str, Any]:
    full = load_model_set(folder)
    train, val = split_train_val(full.train, 0.1, 0)
    test, cards = list(full.test), list(full.cards)
    scores, _ = outcome_matrix(test, [card.id for card in cards])
    best_single = float(np.nanmean(scores, axis=0).max())
    per_seed, ensemble, predictions = [], [], []
    for seed in seeds:
        started = time.perf_counter()
        router = load_router(router_name)
        router.fit(train, cards, val=val, weights=(0.0,), card_costs=full.card_costs, seed=seed)
        predicted, _ = router.predict(test, cards)
        predictions.append(np.asarray(predicted, dtype=float))
        per_seed.append({"seed": seed, "top1": top1_quality(scores, predictions[-1]),
                         "fit_seconds": round(time.perf_counter() - started, 1)})
        ensemble.append({"seeds": len(predictions), "top1": top1_quality(scores, np.mean(predictions, axis=0))})
        say(f"seed {seed}: top-1 {per_seed[-1]['top1']:.4f}; mean of {len(predictions)} seeds' predictions: "
            f"{ensemble[-1]['top1']:.4f} ({per_seed[-1]['fit_seconds']} s)")
    singles = [row["top1"] for row in per_seed]
    return {
        "set": Path(folder).name, "router": router_name, "n_test": len(test), "best_single_test": round(best_single, 4),
        "target": round(best_single + TARGET_MARGIN, 4), "per_seed": per_seed, "ensemble": ensemble,
        "single_mean": statistics.mean(singles), "single_sd": statistics.stdev(singles) if len(singles) > 1 else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="default: the shared llmrouter set")
    parser.add_argument("--router", default="agent-router")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--json", default=None, help="default: benchmarks/results/seed_spread_<set>_<router>.json")
    args = parser.parse_args()
    folder = args.data or data_dir() / "models" / "llmrouter"  # resolved only when needed: it may not exist
    results = seed_spread(folder, args.router, [int(s) for s in args.seeds.split(",")])
    print(f"{results['set']}, {results['router']}: single seeds {results['single_mean']:.4f} ± {results['single_sd']:.4f} "
          f"(mean ± sd); mean of all {len(results['ensemble'])} seeds' predictions {results['ensemble'][-1]['top1']:.4f}; "
          f"best single model {results['best_single_test']:.4f}, target {results['target']:.4f}")
    out = Path(args.json or Path(__file__).parent / "results" / f"seed_spread_{results['set']}_{results['router']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
