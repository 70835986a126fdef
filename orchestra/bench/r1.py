"""Router-R1 benchmarks: the multi-round loop over RouterBench test queries with the recorded model pool
(offline, no API calls), and over the QA sets (``<data>/qa/*.jsonl``) with a live pool.

RouterBench: accuracy of the final answer (multiple choice: the option letter read from the answer, compared
with the letter of the responses RouterBench scored correct; MBPP: the score of the recorded response the answer
reproduces, else 0), mean pool cost (the recorded USD of every consulted response), mean decisions and
consultations per query, and format validity (every turn in protocol, no typed error).
QA: exact match and F1 after SQuAD normalisation, as Router-R1 reports them.

The router is found by name (``router-r1`` entry point) and the recorded pool through the ``orchestra.pools``
entry point ``routerbench-recorded``, so this core module imports neither; both can also be passed in.
"""

from __future__ import annotations

import json
import random
import re
import string
import time
from collections import Counter
from collections.abc import Callable, Sequence
from difflib import SequenceMatcher
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestra.cards import ModelCard, load_cards
from orchestra.errors import ConfigurationError, DataError, DecisionError
from orchestra.model import ChatModel
from orchestra.policies import Budget, RetryPolicy
from orchestra.routing import Finish, Router

from . import write_report

__all__ = [
    "POOL_ENTRY_POINT_GROUP",
    "exact_match",
    "f1_score",
    "mc_letter",
    "normalize_answer",
    "r1_command",
    "run_router_r1_bench",
    "run_router_r1_qa",
]

POOL_ENTRY_POINT_GROUP = "orchestra.pools"
"""Entry-point group of offline model pools; ``routerbench-recorded`` is RouterBench's recorded responses."""



# -- answer scoring --------------------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(char for char in text.lower() if char not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer."""
    normalised = normalize_answer(prediction)
    return 1.0 if any(normalize_answer(gold) == normalised for gold in golds) else 0.0


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    """Best token F1 over the gold answers (a yes/no/noanswer on one side only scores 0, HotpotQA's rule)."""
    best = 0.0
    pred = normalize_answer(prediction)
    for gold in golds:
        truth = normalize_answer(gold)
        if (pred in ("yes", "no", "noanswer") or truth in ("yes", "no", "noanswer")) and pred != truth:
            continue
        same = sum((Counter(pred.split()) & Counter(truth.split())).values())
        if same:
            precision, recall = same / len(pred.split()), same / len(truth.split())
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


_OPTION = re.compile(r"^\s*\(?([A-E])\)\s*(.+?)\s*$", re.MULTILINE)


def _options(question: str) -> dict[str, str]:
    return {letter: text for letter, text in _OPTION.findall(question)}


def mc_letter(answer: str, options: dict[str, str]) -> str | None:
    """The option letter an answer picks: a bare letter (``B``, ``(B)``, ``B)``, ``['B']``), "answer is B", a
    leading ``B.``/``B)``, or the text of exactly one option; ``None`` when it picks none or several."""
    letters = "".join(sorted(options)) or "ABCD"
    text = answer.strip().strip("[]'\"` ").strip()
    for pattern in (
        rf"^\(?([{letters}])\)?[.):]?$",
        rf"(?i:answer(?: is)?:?)\s*\(?([{letters}])\b",
        rf"^\(?([{letters}])[.):]\s",
    ):
        found = re.search(pattern, text)
        if found:
            return found.group(1)
    standalone: set[str] = set(re.findall(rf"(?<![\w'])([{letters}])(?![\w'])", text))
    if len(standalone) == 1:
        return standalone.pop()
    normalised = normalize_answer(text)
    matching = [letter for letter, option in options.items() if normalize_answer(option) and normalize_answer(option) in normalised]
    return matching[0] if len(matching) == 1 else None


def _gold_letter(question: str, outcomes: dict[str, dict[str, Any]], read: Callable[[str | None], str | None]) -> str | None:
    options = _options(question)
    letters = Counter(
        letter
        for outcome in outcomes.values()
        if (outcome.get("score") or 0) >= 0.5 and (letter := mc_letter(read(outcome.get("response")) or "", options))
    )
    return letters.most_common(1)[0][0] if letters else None


def _score_routerbench(answer: str, question: str, task: str, outcomes: dict[str, Any], read: Callable[[str | None], str | None]) -> tuple[float, dict[str, Any]]:
    if task == "mbpp":
        # No test harness here: an answer that reproduces a recorded response takes that response's score.
        best_id, best = None, 0.0
        for model_id, outcome in outcomes.items():
            recorded = read(outcome.get("response")) or ""
            ratio = SequenceMatcher(None, " ".join(answer.split()), " ".join(recorded.split())).ratio() if recorded else 0.0
            if ratio > best:
                best_id, best = model_id, ratio
        if best_id is not None and best >= 0.9:
            return float(outcomes[best_id].get("score") or 0.0), {"matched_response_of": best_id, "similarity": round(best, 3)}
        return 0.0, {"matched_response_of": None, "similarity": round(best, 3)}
    gold = _gold_letter(question, outcomes, read)
    picked = mc_letter(answer, _options(question))
    return (1.0 if gold is not None and picked == gold else 0.0), {"gold_letter": gold, "picked_letter": picked}


# -- plumbing --------------------------------------------------------------------------------------------------


def _entry_point(group: str, name: str) -> Any:
    found = {ep.name: ep for ep in entry_points(group=group)}.get(name)
    if found is None:
        raise ConfigurationError(
            f"no {group!r} entry point named {name!r}; install orchestra with its routers package "
            f"(pyproject: [project.entry-points.\"{group}\"] {name} = ...)"
        )
    return found.load()


def _router_card(router_model: str, cards: Sequence[ModelCard]) -> ModelCard:
    for card in cards:
        if card.id == router_model:
            return card
    if router_model in ("local", "smollm2", "smollm2-local"):
        from orchestra.local import local_model_card  # the embedded SmolLM2 server

        return local_model_card()
    raise ConfigurationError(
        f"router model {router_model!r} is neither 'local' nor a card in --models ({', '.join(c.id for c in cards) or 'none'})"
    )


def _app(router_card: ModelCard, router_chat: ChatModel | None, pool_cards: Sequence[ModelCard], extra: dict[str, ChatModel]) -> Any:
    from orchestra.runtime import Orchestra
    from orchestra.testing import InMemoryStore

    def factory(card: ModelCard, retry: RetryPolicy) -> ChatModel:
        if card.id == router_card.id and router_chat is not None:
            return router_chat
        if card.id in extra:
            return extra[card.id]
        from orchestra.client import model_for_card

        return model_for_card(card, retry)

    app = Orchestra(store=InMemoryStore(), model_factory=factory)
    app.registry.add_model(router_card)
    for card in pool_cards:
        if card.id != router_card.id:
            app.registry.add_model(card)
    return app


def _trajectory_facts(result: Any) -> dict[str, Any]:
    finish = next((d for d in reversed(result.decisions) if isinstance(d, Finish)), None)
    meta = finish.meta if finish is not None else dict(getattr(result.error, "trajectory", None) or {})
    consulted = [obs.model_id for obs in result.observations]
    pool_cost = sum(obs.cost_usd or 0.0 for obs in result.observations)
    return {
        "answer": result.answer,
        "error": result.error.to_record() if result.error is not None else None,
        "decisions": len(result.decisions),
        "consultations": len(consulted),
        "consulted": consulted,
        "pool_cost_usd": pool_cost,
        "router_cost_usd": None if result.cost_usd is None else max(result.cost_usd - pool_cost, 0.0),
        "format_valid": bool(finish is not None and meta.get("format_valid")),
        "format_violations": meta.get("format_violations"),
        "unknown_models": meta.get("unknown_models"),
        "forced_answer": meta.get("forced_answer"),
        "transcript": meta.get("transcript"),
        "prompt": meta.get("prompt"),
        "segments": meta.get("segments"),
        "latency_ms": result.latency_ms,
    }


def _summary(rows: list[dict[str, Any]], metric_keys: Sequence[str]) -> dict[str, Any]:
    n = len(rows)
    if n == 0:
        return {"n": 0}
    summary: dict[str, Any] = {"n": n}
    for key in metric_keys:
        summary[key] = sum(row[key] for row in rows) / n
    summary["mean_pool_cost_usd"] = sum(row["pool_cost_usd"] for row in rows) / n
    summary["mean_decisions"] = sum(row["decisions"] for row in rows) / n
    summary["mean_consultations"] = sum(row["consultations"] for row in rows) / n
    summary["format_valid"] = sum(row["format_valid"] for row in rows) / n
    summary["errors"] = sum(row["error"] is not None for row in rows)
    summary["consulted"] = dict(Counter(m for row in rows for m in row["consulted"]).most_common())
    summary["mean_latency_s"] = sum(row["latency_ms"] for row in rows) / n / 1000
    return summary


def _write(rows: list[dict[str, Any]], report: dict[str, Any], predictions: str | Path | None, json_out: str | Path | None) -> None:
    if predictions:
        path = Path(predictions)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    if json_out:
        write_report(report, json_out)


# -- the benchmarks --------------------------------------------------------------------------------------------


def run_router_r1_bench(
    data_dir: str | Path,
    router_model_id: str = "local",
    limit: int | None = 50,
    *,
    seed: int = 0,
    max_rounds: int = 4,
    router: Router | None = None,
    router_options: dict[str, Any] | None = None,
    router_chat_model: ChatModel | None = None,
    router_cards: Sequence[ModelCard] = (),
    pool: Any = None,
    predictions: str | Path | None = None,
    json_out: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run Router-R1 over ``limit`` RouterBench test queries (a seeded sample across tasks) with the recorded
    pool; returns the report: accuracy (overall and per task), mean pool cost, decisions, consultations and
    format validity. ``router_model_id``: ``"local"`` (the embedded SmolLM2) or a card id of ``router_cards``;
    ``router_chat_model`` replaces the model behind that card (tests use a `ScriptedModel`)."""
    say = progress or (lambda message: None)
    folder = Path(data_dir)
    folder = folder if (folder / "test.jsonl").exists() else folder / "models" / "routerbench"
    if not (folder / "test.jsonl").exists():
        raise DataError(f"no RouterBench test split under {str(data_dir)!r}")
    if pool is None:
        pool = _entry_point(POOL_ENTRY_POINT_GROUP, "routerbench-recorded").from_data(folder)
    with (folder / "test.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    router_card = _router_card(router_model_id, router_cards)
    options = {"router_model": router_card.id, "max_rounds": max_rounds, **(router_options or {})}
    if router is None:
        from orchestra.routing import load_router

        router = load_router("router-r1", **options)
    pool_cards = pool.model_cards()
    app = _app(router_card, router_chat_model, pool_cards, {card.id: pool.chat_model(card.id) for card in pool_cards})
    app.registry.add_agent(_pool_agent_card(router), implementation=pool)
    # One decision per consultation plus the answering one.
    workflow = app.workflow(router, budget=Budget(max_rounds=max_rounds + 1, max_calls=4 * (max_rounds + 1)))

    out: list[dict[str, Any]] = []
    started = time.perf_counter()
    for number, row in enumerate(rows, 1):
        recorded = pool.rows[row["id"]]
        pool.bind("", row["id"])  # runs go one at a time: every sub-question of this run is about this row
        result = workflow.run(recorded.question)
        facts = _trajectory_facts(result)
        score, detail = _score_routerbench(result.answer or "", recorded.question, row["task"], row["outcomes"], _read(pool))
        golds = [detail["gold_letter"]] if detail.get("gold_letter") else []
        out.append({"id": row["id"], "task": row["task"], "accuracy": score, "golds": golds, **detail, **facts})
        if number % 10 == 0 or number == len(rows):
            say(f"{number}/{len(rows)} queries, accuracy so far {sum(r['accuracy'] for r in out) / len(out):.3f}")
    pool.unbind("")
    by_task = {task: _summary([r for r in out if r["task"] == task], ["accuracy"]) for task in sorted({r["task"] for r in out})}
    report = {
        "bench": "router-r1/routerbench",
        "router": router.describe() if hasattr(router, "describe") else {"name": getattr(router, "name", "")},
        "router_model": router_card.id,
        "limit": limit,
        "seed": seed,
        "overall": _summary(out, ["accuracy"]),
        "by_task": {task: {k: v for k, v in s.items() if k != "consulted"} for task, s in by_task.items()},
        "seconds": time.perf_counter() - started,
        "notes": [
            "pool answers are RouterBench's recorded responses and costs (no API calls)",
            "multiple choice: option letter of the final answer vs the letter of responses scored correct",
            "mbpp: score of the recorded response the answer reproduces (similarity >= 0.9), else 0",
            "router model cost is not in mean_pool_cost_usd",
        ],
    }
    _write(out, report, predictions, json_out)
    return report


def _pool_agent_card(router: Any, model_id: str | None = None) -> Any:
    make = getattr(router, "pool_agent_card", None)
    if make is None:
        raise ConfigurationError(f"router {getattr(router, 'name', router)!r} has no pool_agent_card() for its model pool")
    return make(model_id)


def _read(pool: Any) -> Callable[[str | None], str | None]:
    return getattr(pool, "read_response", lambda response: response)


def run_router_r1_qa(
    data_dir: str | Path,
    qa_set: str,
    router_model_id: str,
    pool_cards: Sequence[ModelCard],
    limit: int | None = 100,
    *,
    max_rounds: int = 4,
    router: Router | None = None,
    router_options: dict[str, Any] | None = None,
    chat_models: dict[str, ChatModel] | None = None,
    predictions: str | Path | None = None,
    json_out: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run Router-R1 on ``<data>/qa/<qa_set>.jsonl`` against a live pool (``pool_cards``, reached through the
    OpenAI-compatible client unless ``chat_models`` gives a model per card id); reports EM and F1."""
    from orchestra.routing import load_router

    say = progress or (lambda message: None)
    path = Path(data_dir) / "qa" / f"{qa_set}.jsonl"
    if not path.exists():
        raise DataError(f"no QA set {qa_set!r}: {str(path)!r} does not exist")
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()][: limit or None]
    router_card = _router_card(router_model_id, pool_cards)
    pool = [card for card in pool_cards if card.id != router_card.id]
    if router is None:
        router = load_router("router-r1", router_model=router_card.id, max_rounds=max_rounds, **(router_options or {}))
    models = dict(chat_models or {})
    app = _app(router_card, models.get(router_card.id), pool, models)
    app.registry.add_agent(_pool_agent_card(router, pool[0].id if pool else None), implementation=router.pool_agent())  # type: ignore[attr-defined]
    workflow = app.workflow(router, budget=Budget(max_rounds=max_rounds + 1, max_calls=4 * (max_rounds + 1)))
    out: list[dict[str, Any]] = []
    started = time.perf_counter()
    for number, row in enumerate(rows, 1):
        result = workflow.run(row["question"])
        facts = _trajectory_facts(result)
        answer = result.answer or ""
        out.append({"question": row["question"], "golds": row["answers"], "em": exact_match(answer, row["answers"]), "f1": f1_score(answer, row["answers"]), **facts})
        if number % 10 == 0:
            say(f"{number}/{len(rows)} questions")
    report = {
        "bench": f"router-r1/qa/{qa_set}",
        "router_model": router_card.id,
        "pool": [card.id for card in pool],
        "overall": _summary(out, ["em", "f1"]),
        "seconds": time.perf_counter() - started,
    }
    _write(out, report, predictions, json_out)
    return report


def _print(report: dict[str, Any]) -> None:
    overall = report["overall"]
    metric = "accuracy" if "accuracy" in overall else "em"
    typer.echo(f"{report['bench']}  router model {report['router_model']}  n={overall.get('n', 0)}")
    header = f"{'slice':<16}{'n':>5}{metric:>10}{'f1' if metric == 'em' else '':>8}{'$/query':>12}{'decisions':>11}{'consults':>10}{'format ok':>11}"
    typer.echo(header)
    slices = {"overall": overall, **report.get("by_task", {})}
    for name, s in slices.items():
        if not s.get("n"):
            continue
        f1 = f"{s['f1']:.3f}" if "f1" in s else ""
        typer.echo(
            f"{name:<16}{s['n']:>5}{s[metric]:>10.3f}{f1:>8}{s['mean_pool_cost_usd']:>12.6f}"
            f"{s['mean_decisions']:>11.2f}{s['mean_consultations']:>10.2f}{s['format_valid']:>11.1%}"
        )
    if overall.get("consulted"):
        typer.echo("consulted: " + ", ".join(f"{m} x{c}" for m, c in overall["consulted"].items()))
    typer.echo(f"typed errors: {overall.get('errors', 0)}")


def r1_command(
    data: Annotated[str | None, typer.Option("--data", help="Data folder (default: $ORCHESTRA_DATA_DIR or ../shared/data).")] = None,
    router_model: Annotated[str, typer.Option("--router-model", help="'local' (embedded SmolLM2) or a card id from --models.")] = "local",
    models: Annotated[str | None, typer.Option("--models", help="Model cards file (YAML/JSON): the router model and, for --qa, the live pool.")] = None,
    qa: Annotated[str | None, typer.Option("--qa", help="Run on <data>/qa/<set>.jsonl (nq, hotpot, bamboogle) with a live pool instead of RouterBench.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Queries to run.")] = 50,
    max_rounds: Annotated[int, typer.Option("--max-rounds", help="Consultations at most before the answer is forced.")] = 4,
    constrained: Annotated[bool | None, typer.Option("--constrained/--free", help="JSON-schema turns (default: when the router card supports them).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the query sample.")] = 0,
    predictions: Annotated[str | None, typer.Option("--predictions", help="Per-query JSON lines here.")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="The report as JSON here.")] = None,
) -> None:
    """Router-R1's multi-round loop: RouterBench test queries with the recorded pool (offline), or a QA set with
    a live pool; prints accuracy (or EM/F1), cost, decisions, consultations and format validity."""
    cards = list(load_cards(models, ModelCard)) if models else []
    options = {} if constrained is None else {"constrained": constrained}
    run_and_print(data, router_model, limit, seed=seed, max_rounds=max_rounds, router_options=options, router_cards=cards,
                  qa=qa, predictions=predictions, json_out=json_out)


def run_and_print(
    data: str | None,
    router_model: str,
    limit: int,
    *,
    seed: int,
    max_rounds: int | None,
    router_options: dict[str, Any],
    router_cards: Sequence[ModelCard] = (),
    qa: str | None = None,
    predictions: str | None = None,
    json_out: str | None = None,
) -> None:
    """What `orchestra bench r1` and `orchestra bench models --router router-r1` do: check the limit and the output
    paths, build the router from its options before any data is read (an option RouterR1 does not take is a
    `ConfigurationError` naming it, one out of range a `PolicyError`), run and print the report. ``max_rounds``
    ``None``: the router's own (or ``router_options``')."""
    from orchestra.bench import check_limit, check_output, data_dir
    from orchestra.routing import load_router

    check_limit(limit)
    folder = data_dir(data)
    check_output(predictions, data=folder, option="--predictions")
    check_output(json_out, data=folder, option="--json", beside=predictions)
    card = _router_card(router_model, router_cards)
    rounds = {} if max_rounds is None else {"max_rounds": max_rounds}
    router = load_router("router-r1", router_model=card.id, **rounds, **router_options)
    max_rounds = router.max_rounds  # type: ignore[attr-defined]
    say = lambda message: typer.echo(message, err=True)  # noqa: E731
    try:
        if qa:
            report = run_router_r1_qa(folder, qa, router_model, router_cards, limit, max_rounds=max_rounds, router=router,
                                      predictions=predictions, json_out=json_out, progress=say)
        else:
            report = run_router_r1_bench(folder, card.id, limit, seed=seed, max_rounds=max_rounds, router=router, router_cards=[card],
                                         predictions=predictions, json_out=json_out, progress=say)
    except DecisionError as exc:  # pragma: no cover - runs keep their errors; this is a misconfigured router
        raise typer.BadParameter(str(exc)) from None
    _print(report)
