"""How far can a vote over recorded answers go on routerbench's multiple-choice tasks (ARC-Challenge, Winogrande)?

    .venv/bin/python benchmarks/fusion_ceiling.py [--data ../shared/data/models/routerbench]

Prints a table and writes ``benchmarks/results/fusion_ceiling.json``. No router is trained: these are bounds and
static votes that any router fusing k <= 3 recorded answers is measured against (the AgentRouter issue asks 0.93):

- each model alone (accuracy on train and test);
- the best static triple with the most accurate model, weighted by each model's train log-odds;
- a log-odds vote of all models;
- the three most accurate models with a perfect override: the vote follows the other two against the best model
  exactly when they agree and are right (the most any weighted vote of these three can gain over the best model,
  short of a weight that lets one weaker model outvote it alone, which is routing to that model top-1);
- any of those three right (the oracle over their answers).

Options are extracted and scored exactly as ``orchestra bench fusion`` does (`orchestra.bench.fusion`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path
from typing import Any

from orchestra.bench import data_dir
from orchestra.bench.fusion import extract_option, fuse_options, load_fusion_set, option_letters

Row = tuple[str, dict[str, str | None], set[str]]


def _answers(rows: list[Any]) -> list[Row]:
    """(task, option per model, options scored correct) of each multiple-choice row."""
    table = []
    for row in rows:
        letters = option_letters(row.query)
        if not letters:
            continue
        options = {m: extract_option(out.response, letters) for m, out in row.outcomes.items()}
        gold = {options[m] for m, out in row.outcomes.items() if out.score >= 1.0 and options[m] is not None}
        table.append((row.task, options, gold))
    return table


def _accuracy(rows: list[Row], decide: Any) -> float:
    return sum(decide(options) in gold for _, options, gold in rows) / len(rows)


def _vote(models: list[str], weights: list[float]) -> Any:
    return lambda options: fuse_options([options.get(m) for m in models], weights)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="routerbench folder (default: <data>/models/routerbench)")
    parser.add_argument("--json", default="benchmarks/results/fusion_ceiling.json")
    args = parser.parse_args()
    folder = Path(args.data) if args.data else data_dir() / "models" / "routerbench"
    cards, train_rows, test_rows, _ = load_fusion_set(folder)
    train, test = _answers(train_rows), _answers(test_rows)
    ids = [card.id for card in cards]

    single = {m: (_accuracy(train, lambda o, m=m: o.get(m)), _accuracy(test, lambda o, m=m: o.get(m))) for m in ids}
    ranked = sorted(ids, key=lambda m: -single[m][0])
    best, second, third = ranked[:3]

    def log_odds(m: str) -> float:
        a = min(max(single[m][0], 0.01), 0.99)
        return math.log(a / (1 - a))

    triples = []
    for a, b in itertools.combinations(ranked[1:], 2):
        models = [best, a, b]
        decide = _vote(models, [log_odds(m) for m in models])
        triples.append((_accuracy(train, decide), _accuracy(test, decide), a, b))
    triple = max(triples, key=lambda t: t[0])
    everyone = _vote(ids, [log_odds(m) for m in ids])

    def perfect_override(options: dict[str, str | None], gold: set[str]) -> bool:
        pair = options.get(second)
        return options.get(best) in gold or (pair is not None and pair == options.get(third) and pair in gold)

    top3 = [best, second, third]
    against = [(o, g) for _, o, g in train if o.get(second) and o[second] == o.get(third) and o[second] != o.get(best)]
    results: dict[str, Any] = {
        "set": folder.name,
        "n_train": len(train),
        "n_test": len(test),
        "single": {m: {"train": round(single[m][0], 4), "test": round(single[m][1], 4)} for m in ranked},
        "best_static_triple": {"models": [best, triple[2], triple[3]], "train": round(triple[0], 4), "test": round(triple[1], 4)},
        "log_odds_vote_all": {"train": round(_accuracy(train, everyone), 4), "test": round(_accuracy(test, everyone), 4)},
        "top3_perfect_override": {
            "models": top3,
            "train": round(sum(perfect_override(o, g) for _, o, g in train) / len(train), 4),
            "test": round(sum(perfect_override(o, g) for _, o, g in test) / len(test), 4),
        },
        "top3_any_right": {
            "train": round(sum(any(o.get(m) in g for m in top3) for _, o, g in train) / len(train), 4),
            "test": round(sum(any(o.get(m) in g for m in top3) for _, o, g in test) / len(test), 4),
        },
        "train_two_agree_against_best": {
            "queries": len(against),
            "best_right": sum(o.get(best) in g for o, g in against),
            "pair_right": sum(o[second] in g for o, g in against),
        },
        "target": 0.93,
    }
    print(f"routerbench ARC-Challenge + Winogrande: {len(train)} train, {len(test)} test queries")
    print(f"{'what':60s} {'train':>7s} {'test':>7s}")
    for m in ranked:
        print(f"{'  ' + m:60s} {single[m][0]:7.4f} {single[m][1]:7.4f}")
    rows = [
        (f"best static triple ({best} + {triple[2]} + {triple[3]}), log-odds", results["best_static_triple"]),
        ("log-odds vote of all models", results["log_odds_vote_all"]),
        ("top 3, perfect override of the best by the other two", results["top3_perfect_override"]),
        ("top 3, any of them right (oracle over their answers)", results["top3_any_right"]),
    ]
    for label, figures in rows:
        print(f"{label[:60]:60s} {figures['train']:7.4f} {figures['test']:7.4f}")
    agree = results["train_two_agree_against_best"]
    print(f"train: the other two agree against {best} on {agree['queries']} queries; "
          f"it is right on {agree['best_right']}, they are on {agree['pair_right']}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
