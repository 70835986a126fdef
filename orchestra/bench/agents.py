"""``orchestra bench agents``: route every test query of an agent-routing set and score the decisions.

A set is a folder in the canonical format (see ``../shared/data/README.md``): ``agents.jsonl`` (one card a line,
``{"id", "description"}``), ``train.jsonl``, optional ``val.jsonl``, ``test.jsonl`` (``{"query", "agents": [ids]}``)
and optional ``oos_train.jsonl`` / ``oos_val.jsonl`` / ``oos_test.jsonl`` (out-of-scope queries, ``agents: []``).

The harness trains what the regime allows through the optional `TrainableRouter.fit` protocol (zero-shot:
descriptions only; few-shot: K examples per agent from train; supervised: all of train), routes every test query
through ``router.decide(RouterState(...))``, writes one JSON line per query in order and prints the metrics.
"""

from __future__ import annotations

import inspect
import json
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Protocol, cast, runtime_checkable

import typer
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from orchestra._typed import TypedErrorModel
from orchestra.cards import AgentCard
from orchestra.errors import CardError, ConfigurationError, DataError, RunError
from orchestra.routing import Dispatch, Finish, ModelAccess, Router, RouterState

from . import bench_router, check_limit, check_output, embedder_name, read_jsonl, refuse_checkpoint, router_source
from .metrics import latency_summary, oos_metrics, set_metrics

__all__ = [
    "AgentSet",
    "Regime",
    "RoutingExample",
    "TrainableRouter",
    "agents_command",
    "few_shot_sample",
    "load_agent_set",
    "predicted_ids",
    "print_report",
    "run_agent_bench",
    "score_records",
]


WARM_UP_QUERY = "warm-up request before timing: what can you do?"
"""The untimed decision made before the test queries (its result is discarded)."""
ROUTER_ERROR = "(router error)"
"""What a failed decision counts as in the metrics: an answer that matches no agent and is not out of scope."""


class Regime(str, Enum):
    """What a router may learn from."""

    zero_shot = "zero-shot"
    few_shot = "few-shot"
    supervised = "supervised"

    @classmethod
    def parse(cls, value: Regime | str) -> Regime:
        """The regime named ``value``; `DataError` listing the regimes for any other (a typo such as
        ``"fewshot"`` was taken by the routers' fit for the supervised settings)."""
        try:
            return cls(value)
        except ValueError:
            raise DataError(f"regime must be one of {', '.join(r.value for r in cls)}, got {value!r}") from None


class RoutingExample(BaseModel, metaclass=TypedErrorModel):
    """One labelled query: the agents it needs (``()`` = out of scope). Built in Python, a bad field raises
    `DataError` naming it (as a row read by `load_agent_set` does), not pydantic's ValidationError."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    query: str
    agents: tuple[str, ...]
    """Required: a misspelt field must not pass for ``[]``, the out-of-scope label."""

    @field_validator("query")
    @classmethod
    def _has_words(cls, query: str) -> str:
        # a blank query is no query (said so: the pattern that refused it read "should match pattern '\S'")
        if not query.strip():
            raise ValueError("query must not be blank")
        return query

    @field_validator("agents")
    @classmethod
    def _each_agent_once(cls, agents: tuple[str, ...]) -> tuple[str, ...]:
        twice = sorted({agent for agent in agents if agents.count(agent) > 1})
        if twice:
            raise ValueError(f"names {twice} more than once")
        return agents

    @classmethod
    def _typed_error(cls, exc: ValidationError) -> DataError:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "row"
        return DataError(f"RoutingExample: field {where!r}: {first['msg']} (got {first.get('input')!r:.80})")


@runtime_checkable
class TrainableRouter(Protocol):
    """Routers that learn implement ``fit``; the harness calls it when present, others are used as they are.

    ``agents`` are the cards the router is trained for (with their example queries in few-shot and supervised
    regimes), ``train_rows`` what the regime allows, ``oos_rows`` labelled out-of-scope queries (may be empty).
    """

    def fit(
        self,
        agents: Sequence[AgentCard],
        train_rows: Sequence[RoutingExample],
        regime: str,
        shots: int,
        *,
        oos_rows: Sequence[RoutingExample] = (),
        seed: int = 0,
    ) -> Any: ...


@dataclass
class AgentSet:
    """A loaded agent-routing set."""

    root: Path
    cards: list[AgentCard]
    splits: dict[str, list[RoutingExample]] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)
    """Agent labels of the data that are not valid card ids, and the card id each became (in cards and rows)."""

    def split(self, name: str) -> list[RoutingExample]:
        return self.splits.get(name, [])


_SPLITS = ("train", "val", "test", "oos_train", "oos_val", "oos_test")
# Characters a card id may not hold (see `orchestra.cards`), and those it may not start or end with here.
_NOT_IN_ID = re.compile(r"[^A-Za-z0-9_.:/@+\-]+")
_ID_EDGES = "_.:/@+-"


def _card_id(label: str) -> str:
    """A data set's agent label as a card id: banking77's ``reverted_card_payment?`` -> ``reverted_card_payment``."""
    return _NOT_IN_ID.sub("_", label).strip(_ID_EDGES)[:128]


def load_agent_set(root: str | Path) -> AgentSet:
    """Read a set folder; any problem is a `DataError` naming the file and line."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (expected agents.jsonl, train.jsonl, test.jsonl inside)")
    cards: list[AgentCard] = []
    seen: dict[str, int] = {}
    renamed: dict[str, str] = {}
    agents_path = root / "agents.jsonl"
    for number, item in read_jsonl(agents_path):
        label = item.get("id")
        card_id = _card_id(label) if isinstance(label, str) else None
        if card_id and isinstance(label, str) and card_id != label:
            renamed[label] = card_id
            item = {**item, "id": card_id}
        try:
            card = AgentCard.parse(item)
        except CardError as exc:
            raise DataError(f"{agents_path}:{number}: {exc}") from None
        if card.id in seen:
            # the file's words, not the registry's ("already registered"): nothing was registered
            raise DataError(f"{agents_path}:{number}: field 'id': agent id {card.id!r} is given twice (first on line {seen[card.id]})")
        seen[card.id] = number
        cards.append(card)
    if not cards:
        raise DataError(f"{agents_path}: holds no agent cards")
    splits: dict[str, list[RoutingExample]] = {}
    for name in _SPLITS:
        path = root / f"{name}.jsonl"
        if not path.exists():
            if name == "test":
                raise DataError(f"{path}: file not found (an agent set needs its test split; train.jsonl and the others are optional)")
            continue
        rows = []
        for number, item in read_jsonl(path):
            if renamed and isinstance(item.get("agents"), list):
                item = {**item, "agents": [renamed.get(agent, agent) for agent in item["agents"]]}
            try:
                row = RoutingExample.model_validate(item)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                raise DataError(f"{path}:{number}: field {where!r}: {first['msg']}") from None
            unknown = [agent for agent in row.agents if agent not in seen]
            if unknown:
                raise DataError(f"{path}:{number}: field 'agents': unknown agent id(s) {unknown} (not in agents.jsonl)")
            if name.startswith("oos_") and row.agents:
                raise DataError(f"{path}:{number}: an out-of-scope file holds a query for agents {list(row.agents)}; "
                                "its rows need \"agents\": []")
            rows.append(row)
        if name == "test" and not rows:
            raise DataError(f"{path}: holds no queries")
        splits[name] = rows
    return AgentSet(root=root, cards=cards, splits=splits, renamed=renamed)


def few_shot_sample(rows: Sequence[RoutingExample], agent_ids: Sequence[str], shots: int, seed: int) -> list[RoutingExample]:
    """``shots`` single-agent training rows per agent, drawn with ``seed`` (fewer when the agent has fewer)."""
    by_agent: dict[str, list[RoutingExample]] = {agent_id: [] for agent_id in agent_ids}
    for row in rows:
        if len(row.agents) == 1 and row.agents[0] in by_agent:
            by_agent[row.agents[0]].append(row)
    rng = random.Random(seed)
    sample: list[RoutingExample] = []
    for agent_id in agent_ids:
        pool = by_agent[agent_id]
        sample.extend(rng.sample(pool, min(shots, len(pool))))
    return sample


def predicted_ids(decision: Dispatch | Finish) -> list[str]:
    """The agents a decision dispatches, in order, each once (``[]`` for a finish)."""
    if isinstance(decision, Finish):
        return []
    ordered: list[str] = []
    for call in decision.calls:
        if call.agent_id not in ordered:
            ordered.append(call.agent_id)
    return ordered


def _signature_text(function: Callable[..., Any]) -> str:
    try:
        return str(inspect.signature(function))
    except (TypeError, ValueError):  # a builtin or C callable
        return "(...)"


def _with_examples(card: AgentCard, examples: Sequence[str]) -> AgentCard:
    return card.with_changes(examples=tuple(examples)) if examples else card


def run_agent_bench(
    data: str | Path,
    router: Router | str,
    *,
    train: bool = True,
    regime: Regime | str = Regime.supervised,
    shots: int = 5,
    predictions: str | Path | None = None,
    holdout_agents: int = 0,
    limit: int | None = None,
    seed: int = 0,
    model_access: ModelAccess | None = None,
    models: Sequence[Any] = (),
    router_options: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    save: str | Path | None = None,
) -> dict[str, Any]:
    """Train (when the router can), route the test (and out-of-scope test) queries, score them.

    ``router`` is a router or the name of one, built with ``router_options`` (options with a router instance are
    an error: it is already built). A router that can learn is trained on what ``regime`` allows, an instance
    too, which replaces what it learnt before; ``train=False`` scores the router as it is (one trained in
    Python or loaded from a checkpoint): nothing is fitted (``fit_seconds`` is 0, ``trained_by_bench`` false) and
    the metrics are computed as for a router the bench trained. Returns the report: metrics over all in-scope test queries, over onboarded
    (held-out) agents' queries and over the others when ``holdout_agents`` > 0, out-of-scope precision/recall,
    latencies and timings.

    ``save`` writes the router the bench trained to that checkpoint file, which ``orchestra chat --router NAME
    --option checkpoint=PATH``, ``orchestra serve`` and the UI serve (agents it was not trained on join by card).
    """
    regime = Regime.parse(regime)
    if shots < 1 and regime is not Regime.zero_shot:
        raise DataError(f"--shots must be at least 1 in the {regime.value} regime, got {shots}")
    check_limit(limit)
    refuse_checkpoint(router_options, "agent")
    dataset = load_agent_set(data)
    check_output(predictions, data=dataset.root, option="--predictions")
    check_output(save, data=dataset.root, option="--save", beside=predictions)
    # a router built here by name records its options; one given built, none (its describe() may say them)
    options_given = dict(router_options or {}) if isinstance(router, str) else None
    router, router_name = cast(tuple[Router, str], bench_router(router, router_options))
    if save is not None and not (train and isinstance(router, TrainableRouter) and callable(getattr(router, "save", None))):
        raise ConfigurationError(f"router {router_name!r} keeps no trained checkpoint here, so --save has nothing to write"
                                 + ("" if train else " (train=False: the router was not trained by the bench)"))
    if not callable(getattr(router, "decide", None)):
        # named by its type, not its repr: an object's repr says nothing of what is missing
        raise DataError(f"{type(router).__name__} is not a router (it has no decide); pass a router or a router's name")
    if getattr(router, "calls_models", False) and model_access is None:
        raise ConfigurationError(f"router {router_name!r} asks a model to decide: pass --model (local-smollm2 runs on "
                                 "this machine, or a model card id from `orchestra models add`)")
    all_ids = [card.id for card in dataset.cards]
    # a row labelled [] is out of scope wherever it stands (the format allows it in any split), not only in the
    # oos_* files: it trains the refusal and is scored as an out-of-scope query
    labelled = [row for row in dataset.split("train") if row.agents]
    if regime is not Regime.zero_shot and not labelled:
        raise DataError(
            f"{dataset.root / 'train.jsonl'}: no labelled queries, which the {regime.value} regime learns from; "
            "use --regime zero-shot to route by the cards alone"
        )
    if holdout_agents < 0 or holdout_agents >= len(all_ids):
        raise DataError(f"--holdout-agents must be in [0, {len(all_ids) - 1}], got {holdout_agents}")
    held_out = set(random.Random(seed).sample(all_ids, holdout_agents)) if holdout_agents else set()

    # Example queries a card carries: K per agent in few-shot and supervised regimes (onboarded agents arrive
    # with them too), none in zero-shot.
    examples: dict[str, list[str]] = {agent_id: [] for agent_id in all_ids}
    if regime is not Regime.zero_shot and labelled:
        for row in few_shot_sample(labelled, all_ids, shots, seed):
            examples[row.agents[0]].append(row.query)
    cards = [_with_examples(card, examples[card.id]) for card in dataset.cards]
    known_cards = [card for card in cards if card.id not in held_out]
    if regime is Regime.zero_shot:
        train_rows: list[RoutingExample] = []
    elif regime is Regime.few_shot:
        train_rows = few_shot_sample(labelled, [card.id for card in known_cards], shots, seed)
    else:
        train_rows = [row for row in labelled if not held_out.intersection(row.agents)]
    oos_rows = [row for name in ("train", "val", "oos_train", "oos_val") for row in dataset.split(name) if not row.agents]

    fit_seconds = 0.0
    if train and isinstance(router, TrainableRouter):
        try:
            inspect.signature(router.fit).bind(known_cards, train_rows, regime.value, shots, oos_rows=oos_rows, seed=seed)
        except TypeError:
            # said with the signature the bench calls: a user's agent router whose fit learns from cards alone read
            # only that model routers belong to `bench models`, which it is not
            raise DataError(
                f"router {router_name!r} has a fit the agent bench cannot call: it calls fit(agents, train_rows, regime, "
                f"shots, *, oos_rows=(), seed=0) (see TrainableRouter), and {type(router).__name__}.fit"
                f"{_signature_text(router.fit)} takes other arguments. A model router is benchmarked with "
                "`orchestra bench models`; a router trained otherwise is scored as it is with train=False (Python)"
            ) from None
        started = time.perf_counter()
        router.fit(known_cards, train_rows, regime.value, shots, oos_rows=oos_rows, seed=seed)
        fit_seconds = time.perf_counter() - started
        if save is not None:
            save = str(router.save(save))  # type: ignore[attr-defined]  # checked callable above, before training

    test = dataset.split("test")[:limit] if limit else dataset.split("test")
    oos_test = dataset.split("oos_test")[:limit] if limit else dataset.split("oos_test")
    rows = [("test" if row.agents else "oos_test", row) for row in test] + [("oos_test", row) for row in oos_test]
    agents = tuple(cards)
    model_cards = tuple(models)
    # one untimed decision first, so no query's latency holds the one-off loading of an encoder or a model
    # server; its text is no test query's, so no test query's embedding is cached by it
    warm_up = RouterState(query=WARM_UP_QUERY, agents=agents, models=model_cards, registry_version=1, model_access=model_access)
    try:
        router.decide(warm_up)
    except RunError:
        pass  # a failing router fails on the test queries too, where it is counted
    records: list[dict[str, Any]] = []
    for index, (split, row) in enumerate(rows):
        state = RouterState(
            query=row.query, agents=agents, models=model_cards, registry_version=1, model_access=model_access
        )
        started = time.perf_counter()
        cpu_started = time.process_time()
        try:
            decision: Dispatch | Finish | None = router.decide(state)
            error = None
        except RunError as exc:  # a router model that times out or is down: scored as wrong, counted, not fatal
            decision, error = None, exc.to_record()
        latency_ms = (time.perf_counter() - started) * 1000
        # CPU time of the process (all its threads) during the decision: on a loaded machine the wall time
        # includes waiting for a core, this does not.
        cpu_ms = (time.process_time() - cpu_started) * 1000
        record = {
            "query": row.query,
            "predicted": [] if decision is None else predicted_ids(decision),
            "latency_ms": round(latency_ms, 3),
            "cpu_ms": round(cpu_ms, 3),
            "gold": list(row.agents),
            "split": split,
        }
        if error is not None:
            record["error"] = error
        if isinstance(decision, Finish):
            record["finish_reason"] = decision.rationale
        if isinstance(decision, Dispatch) and decision.meta.get("dropped"):
            record["dropped"] = decision.meta["dropped"]
        records.append(record)
        if progress:
            progress(index + 1, len(rows))

    if predictions:
        out = Path(predictions)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    report: dict[str, Any] = {
        "data": str(dataset.root),
        "router": router_name,
        "router_config": router.describe() if hasattr(router, "describe") else {"name": router_name},
        "router_source": router_source(router, options_given),
        # a router scored as given was trained elsewhere: the bench's regime and shots say nothing of it
        "regime": regime.value if train else "as given",
        "shots": (shots if regime in (Regime.few_shot, Regime.supervised) else 0) if train else None,
        "seed": seed,
        "n_agents": len(all_ids),
        "renamed_agents": dataset.renamed,
        "n_train_rows": len(train_rows),
        "fit_seconds": round(fit_seconds, 3),
        "saved": None if save is None else str(save),
        "trained_by_bench": train and isinstance(router, TrainableRouter),
        # what embedded the queries (see orchestra.embeddings), for routers that embed them: which encoder, on which
        # backend (an embedder given in Python, e.g. a hashing one, gives other figures under the same router name)
        "embedder": embedder_name(getattr(router, "embedder", None)),
        "embedding_backend": getattr(getattr(router, "embedder", None), "backend", None),
        **score_records(records, held_out),
    }
    return report


def score_records(records: Sequence[Mapping[str, Any]], held_out: Iterable[str] = ()) -> dict[str, Any]:
    """Score routed queries, each a record as ``--predictions`` writes it (``predicted`` best first, ``gold``,
    ``split`` ``"test"`` or ``"oos_test"``; ``latency_ms``, ``cpu_ms``, ``error``, ``finish_reason`` and
    ``dropped`` when known): set metrics over in-scope queries, apart for ``held_out`` agents' queries and the
    others when some are held out, latency, out-of-scope precision and recall. What `run_agent_bench` reports and
    `orchestra bench score` recomputes from a predictions file."""
    held = set(held_out)

    def scored(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
        # a decision that failed is wrong in every metric: not a hit, and not an out-of-scope answer either
        return [[ROUTER_ERROR] if "error" in r else list(r["predicted"]) for r in rows]

    in_scope = [r for r in records if r["split"] == "test"]
    report: dict[str, Any] = {"test": set_metrics([r["gold"] for r in in_scope], scored(in_scope))}
    # a predictions file without latencies (another tool's) has none to report
    for recorded, key in (("latency_ms", "latency"), ("cpu_ms", "cpu_time")):
        if all(r.get(recorded) is not None for r in in_scope):
            report[key] = latency_summary([r[recorded] for r in in_scope])
    finish_reasons: dict[str, int] = {}
    for record in records:
        if "finish_reason" in record:
            # the reason's head ("router model answer unreadable", "no agent fits", ...), not its details
            head = str(record["finish_reason"]).split(":")[0]
            finish_reasons[head] = finish_reasons.get(head, 0) + 1
    report["finish_reasons"] = finish_reasons
    report["router_errors"] = sum("error" in record for record in records)
    report["dropped_ids"] = sum(len(record.get("dropped", [])) for record in records)
    if held:
        onboarded = [r for r in in_scope if held.intersection(r["gold"])]
        others = [r for r in in_scope if not held.intersection(r["gold"])]
        report["holdout_agents"] = sorted(held)
        report["onboarded"] = set_metrics([r["gold"] for r in onboarded], scored(onboarded))
        report["known"] = set_metrics([r["gold"] for r in others], scored(others))
    if any(r["split"] == "oos_test" for r in records):
        report["oos"] = oos_metrics([r["gold"] for r in records], scored(records))
    return report


def print_report(report: dict[str, Any]) -> None:
    """Print a bench report as the command does: a table and its figures in lines."""
    from rich.console import Console
    from rich.table import Table

    title = f"{report['router']} on {Path(report['data']).name} ({report['regime']}"
    title += f", {report['shots']} shots)" if report["regime"] == "few-shot" else ")"
    table = Table(title=title)
    table.add_column("queries")
    for column in ("n", "set hit", "top-1", "exact set", "micro-F1", "mean set size"):
        table.add_column(column, justify="right")
    groups = [("all in-scope", report["test"])]
    if "onboarded" in report:
        groups += [("onboarded agents", report["onboarded"]), ("known agents", report["known"])]
    for label, m in groups:
        if not m.get("n"):
            table.add_row(label, "0", *["-"] * 5)
            continue
        table.add_row(
            label,
            str(m["n"]),
            f"{100 * m['set_hit']:.2f}",
            f"{100 * m['top1']:.2f}",
            f"{100 * m['exact_set']:.2f}",
            f"{100 * m['micro_f1']:.2f}",
            f"{m['mean_set_size']:.2f}",
        )
    console = Console()
    console.print(table)
    if report.get("router_errors"):
        console.print(f"[red]{report['router_errors']} decisions failed (the router's model timed out or was down); each counts as wrong[/]")
    if report.get("renamed_agents"):
        renamed = report["renamed_agents"]
        shown = ", ".join(f"{label!r} -> {card_id!r}" for label, card_id in list(renamed.items())[:3])
        more = f" and {len(renamed) - 3} more" if len(renamed) > 3 else ""
        console.print(f"agent labels that are not card ids, renamed in cards and predictions: {shown}{more}")
    lat = report.get("latency")
    backend = f" (embedding on {report['embedding_backend']})" if report.get("embedding_backend") else ""
    fit = f"; fit {report['fit_seconds']:.1f} s" if report.get("fit_seconds") is not None else ""
    if lat is None:  # rescored from predictions that carry no latencies
        console.print("decision latency: not recorded in the predictions")
    elif report["test"].get("n"):
        console.print(f"decision latency: p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms{backend}{fit}")
    else:  # latency is timed on in-scope test queries: a set whose test is all out of scope has none (not 0.0 ms)
        console.print(f"decision latency: no in-scope test query to time{fit}")
    if "cpu_time" in report and report["test"].get("n"):
        cpu = report["cpu_time"]
        console.print(f"CPU time per decision (all threads): p50 {cpu['p50_ms']:.1f} ms, p95 {cpu['p95_ms']:.1f} ms")
    if "oos" in report:
        oos = report["oos"]
        console.print(
            f"out of scope ({oos['n_oos']} queries): precision {oos['oos_precision']:.3f}, recall {oos['oos_recall']:.3f}"
        )


def _typer_option(*names: str, help: str) -> Any:
    return typer.Option(*names, help=help)


def _model_access(model_id: str | None) -> tuple[ModelAccess | None, tuple[Any, ...]]:
    """Model access for an LLM router: ``local-smollm2`` is registered in an in-memory registry (served by the
    embedded llama.cpp server); any other id is read from the default registry (``orchestra models add``)."""
    if model_id is None:
        return None, ()
    from orchestra.local import LOCAL_MODEL_ID, local_model_card
    from orchestra.runtime import Orchestra

    if model_id == LOCAL_MODEL_ID:
        app = Orchestra(store="memory://")
        card = app.registry.add_model(local_model_card())
    else:
        app = Orchestra()
        card = app.registry.model(model_id)
    return app.model_access(), (card,)


def agents_command(
    data: Annotated[str, _typer_option("--data", help="Set folder (agents.jsonl, train/test.jsonl, ...).")],
    router: Annotated[
        str,
        _typer_option("--router", help="Router name (entry point), e.g. set, tcar, embedding, or a router of your own as package.module:Class; several, comma-separated, are run in turn and compared side by side."),
    ] = "set",
    regime: Annotated[Regime, _typer_option("--regime", help="What the router may learn from.")] = Regime.supervised,
    shots: Annotated[int, _typer_option("--shots", help="Examples per agent (few-shot; onboarded agents' examples).")] = 5,
    predictions: Annotated[
        str | None, _typer_option("--predictions", help="Write one JSON line per routed query here.")
    ] = None,
    holdout_agents: Annotated[
        int, _typer_option("--holdout-agents", help="Train without N agents, onboard them at run time by card.")
    ] = 0,
    limit: Annotated[int | None, _typer_option("--limit", help="Route only the first N test queries (and the first N of oos_test.jsonl).")] = None,
    seed: Annotated[int, _typer_option("--seed", help="Seed of example sampling and held-out agents.")] = 0,
    json_out: Annotated[str | None, _typer_option("--json", help="Write the metrics here as JSON.")] = None,
    model: Annotated[
        str | None,
        _typer_option("--model", help="Router model card id for LLM routers (tcar); local-smollm2 runs on this machine."),
    ] = None,
    option: Annotated[
        list[str] | None,
        _typer_option("--option", help="Router option key=value (repeatable), e.g. finetune_epochs=2; ROUTER:key=value for one of several routers."),
    ] = None,
    save: Annotated[
        str | None, _typer_option("--save", help="Write the trained router here, to serve with --option checkpoint=PATH.")
    ] = None,
) -> None:
    """Route every test query of an agent-routing set and print set hit, top-1, exact set, micro-F1, mean set
    size, latency and out-of-scope precision/recall."""
    from rich.progress import Progress

    from orchestra.bench import data_dir, parse_options
    from orchestra.bench.compare import several_routers, write_comparison

    router_options = parse_options(option)  # a bad item is a ConfigurationError: one line, exit 2
    routers = several_routers(router, router_options, predictions=predictions, save=save)
    folder = data_dir(data)
    check_output(json_out, data=folder, option="--json", beside=predictions)
    check_output(save, data=folder, option="--save", beside=json_out)
    model_access, model_cards = _model_access(model)
    reports = []
    for name, options in routers.items():
        with Progress(transient=True) as bar:
            task = bar.add_task(f"routing ({name})", total=None)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = run_agent_bench(
                folder,
                name,
                regime=regime,
                shots=shots,
                predictions=predictions,
                holdout_agents=holdout_agents,
                limit=limit,
                seed=seed,
                model_access=model_access,
                models=model_cards,
                router_options=options,
                progress=advance,
                save=save,
            )
        print_report(report)
        if report.get("saved"):
            typer.echo(f"saved to {report['saved']}: serve it with --router {name} --option checkpoint={report['saved']}")
        reports.append(report)
    write_comparison(reports, json_out)
