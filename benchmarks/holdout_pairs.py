"""Onboarding by card, over many held-out pairs: how close does a router come to the one trained with them?

    .venv/bin/python benchmarks/holdout_pairs.py [--data ../shared/data/models/routerbench] [--router graph-router]
        [--pairs 10] [--observed 0] [--seed 0]

The GraphRouter issue asks that two held-out models, onboarded by card at test time, leave the router within 2
points of the router trained with them. One pair says little: which two models are held out decides most of the
gap. This script trains the router once on every model, then once per pair drawn at random (seeded, without
repeats) without that pair, onboards the pair by card (``--observed N``: also with its outcomes on N training
queries) and scores each run exactly as ``orchestra bench models`` does (`orchestra.bench.models`). Prints a
row per pair (AIQ, Performance First quality, and their gaps to the full router) and writes
``benchmarks/results/holdout_pairs_<set>_<router>[_observedN].json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path
from typing import Any

from orchestra.bench import data_dir
from orchestra.bench.models import load_model_set, run_model_bench

WITHIN = 0.02
"""The issue's tolerance: 2 points."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="a model set folder (default: ../shared/data/models/routerbench)")
    parser.add_argument("--router", default="graph-router")
    parser.add_argument("--pairs", type=int, default=10, help="how many held-out pairs to draw")
    parser.add_argument("--observed", type=int, default=0, help="outcomes on this many training queries per onboarded model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    folder = Path(args.data) if args.data else data_dir() / "models" / "routerbench"
    model_ids = load_model_set(folder).model_ids
    all_pairs = list(itertools.combinations(model_ids, 2))
    pairs = random.Random(args.seed).sample(all_pairs, min(args.pairs, len(all_pairs)))

    def run(holdout: tuple[str, ...]) -> dict[str, Any]:
        report = run_model_bench(
            folder, args.router, holdout_models=holdout, holdout_observed=args.observed if holdout else 0,
            seed=args.seed, latency_queries=0,
        )
        return {"aiq": report["aiq"], "performance_first": report["scenario_rewards"]["performance_first"]}

    full = run(())
    print(f"trained with every model: AIQ {full['aiq']:.4f}, Performance First {full['performance_first']:.4f}")
    rows = []
    for pair in pairs:
        result = run(pair)
        row = {
            "holdout": list(pair),
            **result,
            "aiq_gap": result["aiq"] - full["aiq"],
            "performance_first_gap": result["performance_first"] - full["performance_first"],
        }
        rows.append(row)
        print(
            f"{pair[0]} + {pair[1]}: AIQ {row['aiq']:.4f} ({row['aiq_gap']:+.4f}), "
            f"Performance First {row['performance_first']:.4f} ({row['performance_first_gap']:+.4f})",
            flush=True,
        )
    within = sum(1 for row in rows if row["aiq_gap"] >= -WITHIN and row["performance_first_gap"] >= -WITHIN)
    mean_gap = sum(row["aiq_gap"] for row in rows) / len(rows) if rows else 0.0
    worst = min(rows, key=lambda row: row["aiq_gap"]) if rows else None
    print(f"{within} of {len(rows)} pairs within {WITHIN:.2f} on both; mean AIQ gap {mean_gap:+.4f}"
          + (f"; worst {worst['holdout']} {worst['aiq_gap']:+.4f}" if worst else ""))
    suffix = f"_observed{args.observed}" if args.observed else ""
    out = Path(args.json or f"benchmarks/results/holdout_pairs_{folder.name}_{args.router}{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "set": folder.name, "router": args.router, "observed": args.observed, "seed": args.seed, "full": full,
        "pairs": rows, "within_both": within, "mean_aiq_gap": mean_gap,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
