"""Rescore a router's predictions: ``orchestra bench score --data DIR --predictions FILE``.

Predictions are the evidence: the JSON lines ``orchestra bench models|agents --predictions`` wrote, or another
tool's in the same shape, are scored against the set's recorded outcomes (model sets) or gold agents (agent
sets) with the benches' own metrics (`score_choices`, `score_records`), into a report of the same shape, which
``orchestra bench compare`` sets beside any other. A router run elsewhere (RouteLLM, LLMRouter, a hosted
router) is compared with ours by writing its choices in this shape.

- Model sets: one line per (test query, cost weight), ``{"id", "w", "chosen"}`` (``latency_ms`` optional): the
  query's id in ``test.jsonl``, the cost weight in [0, 1] and the id of the model chosen. Every weight must
  cover the same queries; a subset of the test split (a ``--limit`` run) is scored on that subset.
- Agent sets: one line per routed query, ``{"query", "predicted"}`` (``latency_ms``, ``gold``, ``error``
  optional): the query's text as in ``test.jsonl`` or ``oos_test.jsonl`` and the agent ids chosen, best first
  (``[]`` for out of scope). A ``gold`` that is not the set's says the predictions were made on another set.

Any line that cannot be scored is a `DataError` naming the file, its line and the field."""

from __future__ import annotations

from collections import defaultdict, deque
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from orchestra.bench import check_output, data_dir, read_jsonl, write_report
from orchestra.bench.compare import number
from orchestra.bench.metrics import latency_summary
from orchestra.errors import DataError

__all__ = ["score_agent_predictions", "score_command", "score_model_predictions", "score_predictions"]


def _number(value: Any) -> float | None:
    # a prediction's figures are JSON numbers: a string "0.5" is refused here, though a report's would be read
    return number(value) if isinstance(value, (int, float)) else None


def score_model_predictions(folder: str | Path, predictions: str | Path, *, router: str | None = None) -> dict[str, Any]:
    """Score a model router's choices (``{"id", "w", "chosen"}`` lines) on a model set's test outcomes; returns a
    report of `run_model_bench`'s shape, its latency the recorded one (at the lowest cost weight) if any."""
    from orchestra.bench.models import cost_fields, load_model_set, score_choices

    model_set = load_model_set(folder)
    model_ids = model_set.model_ids
    index = {model_id: j for j, model_id in enumerate(model_ids)}
    test_ids = {row.id: row for row in model_set.test}
    path = Path(predictions)
    chosen: dict[float, dict[str, int]] = defaultdict(dict)
    seen: dict[tuple[str, float], int] = {}
    latencies: dict[float, list[float]] = defaultdict(list)
    rows = read_jsonl(path)
    if not rows:
        raise DataError(f"{path}: holds no predictions")
    for line_number, item in rows:
        where = f"{path}:{line_number}"
        query_id, w, model = item.get("id"), _number(item.get("w")), item.get("chosen")
        if not isinstance(query_id, str) or query_id not in test_ids:
            raise DataError(f"{where}: field 'id': {query_id!r} is not a query id of {model_set.name}'s test split")
        if w is None or not 0 <= w <= 1:
            raise DataError(f"{where}: field 'w': {item.get('w')!r} is not a cost weight in [0, 1]")
        if not isinstance(model, str) or model not in index:
            raise DataError(f"{where}: field 'chosen': {model!r} is not a model of the set ({', '.join(model_ids[:6])}"
                            f"{', ...' if len(model_ids) > 6 else ''})")
        if (query_id, w) in seen:
            raise DataError(f"{where}: query {query_id!r} at w={w:g} is predicted twice (first on line {seen[query_id, w]})")
        seen[query_id, w] = line_number
        chosen[w][query_id] = index[model]
        latency = _number(item.get("latency_ms"))
        if latency is not None:
            latencies[w].append(latency)
    covered = [set(by_id) for by_id in chosen.values()]
    if any(ids != covered[0] for ids in covered):
        sizes = ", ".join(f"w={w:g}: {len(by_id)}" for w, by_id in sorted(chosen.items()))
        raise DataError(f"{path}: every cost weight must cover the same test queries; queries per weight: {sizes}")
    test_rows = [row for row in model_set.test if row.id in covered[0]]  # in the set's order
    chosen_by_w = {w: np.asarray([by_id[row.id] for row in test_rows]) for w, by_id in chosen.items()}
    timed = latencies.get(min(chosen), [])
    spread = latency_summary(timed)
    return {
        "set": model_set.name,
        "router": router or path.stem,
        "rescored_from": str(path),
        "n_test": len(test_rows),
        "holdout_models": [],
        "holdout_observed": 0,
        **cost_fields(model_set),
        **score_choices(test_rows, model_ids, chosen_by_w),
        "fit_seconds": None,
        "trained_by_bench": False,
        "latency": {} if not timed else {
            "decision_p50_ms_with_embedding": spread["p50_ms"], "decision_p95_ms_with_embedding": spread["p95_ms"],
            "n_timed_queries": len(timed),
        },
    }


def score_agent_predictions(folder: str | Path, predictions: str | Path, *, router: str | None = None) -> dict[str, Any]:
    """Score an agent router's sets (``{"query", "predicted"}`` lines) on an agent set's test and out-of-scope test
    queries, matched by text (a query that occurs twice is matched in order); returns a report of
    `run_agent_bench`'s shape."""
    from orchestra.bench.agents import load_agent_set, score_records

    dataset = load_agent_set(folder)
    known = {card.id for card in dataset.cards}
    gold: dict[str, deque[tuple[str, list[str]]]] = defaultdict(deque)
    for split in ("test", "oos_test"):
        for row in dataset.split(split):
            gold[row.query].append(("test" if row.agents else "oos_test", list(row.agents)))
    path = Path(predictions)
    rows = read_jsonl(path)
    if not rows:
        raise DataError(f"{path}: holds no predictions")
    records: list[dict[str, Any]] = []
    for line_number, item in rows:
        where = f"{path}:{line_number}"
        query, predicted = item.get("query"), item.get("predicted")
        if not isinstance(query, str) or not gold.get(query):
            shown = query[:60] if isinstance(query, str) else query
            raise DataError(f"{where}: field 'query': {shown!r} is not a test or out-of-scope test query of the set"
                            + (" (or it is predicted more often than the set holds it)" if isinstance(query, str) and query in gold else ""))
        if not isinstance(predicted, list) or not all(isinstance(agent, str) for agent in predicted):
            raise DataError(f"{where}: field 'predicted': expected a list of agent ids (best first; [] for out of scope), got {predicted!r}")
        predicted = [dataset.renamed.get(agent, agent) for agent in predicted]  # a label the set renamed, as the data has it
        unknown = [agent for agent in predicted if agent not in known]
        if unknown:
            raise DataError(f"{where}: field 'predicted': unknown agent id(s) {unknown} (not in agents.jsonl)")
        split, agents = gold[query].popleft()
        stated = item.get("gold")
        if stated is not None and sorted(dataset.renamed.get(a, a) for a in stated if isinstance(a, str)) != sorted(agents):
            raise DataError(f"{where}: field 'gold': {stated!r}, but the set's gold for this query is {agents!r}: "
                            "were the predictions made on another set?")
        record: dict[str, Any] = {"query": query, "predicted": predicted, "gold": agents, "split": split}
        for field in ("latency_ms", "cpu_ms"):
            if _number(item.get(field)) is not None:
                record[field] = float(item[field])
        for field in ("error", "finish_reason", "dropped"):
            if field in item:
                record[field] = item[field]
        records.append(record)
    return {
        "data": str(dataset.root),
        "router": router or path.stem,
        "rescored_from": str(path),
        "regime": "from predictions",
        "shots": None,
        "n_agents": len(dataset.cards),
        "renamed_agents": dataset.renamed,
        "fit_seconds": None,
        "trained_by_bench": False,
        **score_records(records),
    }


def score_predictions(folder: str | Path, predictions: str | Path, *, router: str | None = None) -> dict[str, Any]:
    """Score a predictions file on the set in ``folder``: a model set (``models.jsonl``) or an agent set
    (``agents.jsonl``), told by the files it holds."""
    root = Path(folder)
    if (root / "models.jsonl").is_file():
        return score_model_predictions(root, predictions, router=router)
    if (root / "agents.jsonl").is_file():
        return score_agent_predictions(root, predictions, router=router)
    raise DataError(f"{root}: neither a model set (models.jsonl) nor an agent set (agents.jsonl)")


def score_command(
    data: Annotated[str, typer.Option("--data", help="Set folder: a model set (models.jsonl) or an agent set (agents.jsonl).")],
    predictions: Annotated[str, typer.Option("--predictions", help="The predictions to score, JSON lines (see `orchestra bench models|agents --predictions`).")],
    router: Annotated[str | None, typer.Option("--router", help="The router's name in the report (default: the file's name).")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="Write the report here, for `orchestra bench compare`.")] = None,
) -> None:
    """Score a router's predictions (ours or another tool's, in the same JSON lines) with the bench's metrics."""
    folder = data_dir(data)
    check_output(json_out, data=folder, option="--json", beside=predictions)
    report = score_predictions(folder, predictions, router=router)
    if "points" in report:
        from orchestra.bench.models import print_report
    else:
        from orchestra.bench.agents import print_report
    print_report(report)
    if json_out:
        write_report(report, json_out)

