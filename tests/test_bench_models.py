"""The model-routing harness: set loading and its typed errors, AIQ, scenario rewards, the end-to-end run."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from orchestra.bench.models import (
    ASSUMED_COMPLETION_TOKENS,
    ModelQuery,
    aiq,
    load_model_set,
    nondecreasing_hull,
    outcome_matrix,
    parse_weights,
    run_model_bench,
    scenario_reward,
    split_train_val,
)
from orchestra.errors import DataError, PolicyError

CARDS = [
    {"id": "big", "description": "A large, expensive, accurate model.", "input_price_per_mtok": 10.0, "output_price_per_mtok": 30.0},
    {"id": "small", "description": "A small, cheap model good at arithmetic.", "input_price_per_mtok": 0.5, "output_price_per_mtok": 1.0},
]


def write_set(root: Path, cards=CARDS, train=None, test=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    def row(i, task, big, small, cost=True):
        return {"id": f"{task}-{i}", "query": f"{task} question number {i}?", "task": task, "outcomes": {
            "big": {"score": big, "cost": 0.01 if cost else None, "response": None},
            "small": {"score": small, "cost": 0.001 if cost else None, "response": "42" if not cost else None}}}
    train = train if train is not None else [row(i, t, 1.0, 1.0 if t == "math" else 0.0) for i in range(6) for t in ("math", "poem")]
    test = test if test is not None else [row(i, t, 1.0, 1.0 if t == "math" else 0.0) for i in range(6, 8) for t in ("math", "poem")]
    for name, items in (("models", cards), ("train", train), ("test", test)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items), encoding="utf-8")
    return root


# ---------------------------------------------------------------------------------------------- AIQ


def test_aiq_hull_extends_flat_after_the_best_point() -> None:
    # hull (1, .5) -> (2, .9), flat to 3: area 0.7 + 0.9 over a width of 2
    assert aiq([1, 2, 3], [0.5, 0.9, 0.7], (1, 3)) == pytest.approx(0.8)


def test_aiq_drops_points_under_the_hull() -> None:
    # (2, .6) lies under the chord from (1, .5) to (3, .9): area 1.4 over 2
    assert aiq([1, 2, 3], [0.5, 0.6, 0.9], (1, 3)) == pytest.approx(0.7)
    assert nondecreasing_hull([1, 2, 3], [0.5, 0.6, 0.9]).tolist() == [[1, 0.5], [3, 0.9]]


def test_aiq_counts_nothing_below_the_cheapest_point() -> None:
    assert aiq([2, 3], [0.8, 0.9], (1, 3)) == pytest.approx(0.85 / 2)


def test_hull_is_non_decreasing() -> None:
    hull = nondecreasing_hull([1, 2, 4], [0.6, 0.9, 0.8])
    assert hull.tolist() == [[1, 0.6], [2, 0.9]]
    assert aiq([1, 2, 4], [0.6, 0.9, 0.8], (1, 4)) == pytest.approx((0.75 + 2 * 0.9) / 3)


def test_scenario_reward_normalises_cost_within_each_task() -> None:
    scores = np.array([[1.0, 0.0], [1.0, 1.0]])
    costs = np.array([[10.0, 1.0], [0.2, 0.1]])
    # task a: costs 1..10, task b: 0.1..0.2; choose big for a (cost 1), small for b (cost 0)
    reward = scenario_reward([0, 1], scores, costs, ["a", "b"], alpha=0.5, beta=0.5)
    assert reward == pytest.approx(((0.5 - 0.5) + 0.5) / 2)


# ---------------------------------------------------------------------------------------------- loading


def test_load_model_set_reads_cards_and_outcomes(tmp_path: Path) -> None:
    s = load_model_set(write_set(tmp_path / "set"))
    assert s.model_ids == ["big", "small"] and len(s.train) == 12 and len(s.test) == 4
    scores, costs = outcome_matrix(s.test, s.model_ids)
    assert scores.shape == (4, 2) and not s.cost_estimated and costs[0, 0] == 0.01


@pytest.mark.filterwarnings("ignore:.*are in both train.jsonl and test.jsonl")  # a toy set scored on its training rows
def test_missing_costs_are_estimated_from_prices(tmp_path: Path) -> None:
    rows = [{"id": "q", "query": "x" * 40, "task": "t", "outcomes": {
        "big": {"score": 1.0, "cost": None, "response": None}, "small": {"score": 0.0, "cost": None, "response": "y" * 8}}}]
    s = load_model_set(write_set(tmp_path / "set", train=rows, test=rows))
    assert s.cost_estimated
    assert s.test[0].outcomes["big"].cost == pytest.approx((10 * 10 + 30 * ASSUMED_COMPLETION_TOKENS) / 1e6)
    assert s.test[0].outcomes["small"].cost == pytest.approx((0.5 * 10 + 1.0 * 2) / 1e6)


@pytest.mark.parametrize(
    ("card", "message"),
    [
        ({"id": "big", "description": "  "}, "no description"),
        ({"id": "big", "description": "ok", "input_price_per_mtok": -1.0}, "input_price_per_mtok"),
    ],
)
def test_bad_model_cards_raise_data_error(tmp_path: Path, card: dict, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        load_model_set(write_set(tmp_path / "set", cards=[card, CARDS[1]]))
    assert "models.jsonl:1" in str(info.value)


def test_query_without_outcomes_raises_data_error(tmp_path: Path) -> None:
    bad = [{"id": "lonely", "query": "hello", "task": "t", "outcomes": {}}]
    with pytest.raises(DataError, match="'lonely'.*no outcomes"):
        load_model_set(write_set(tmp_path / "set", train=bad))


def test_outcome_of_unknown_model_or_bad_score_raises(tmp_path: Path) -> None:
    unknown = [{"id": "q", "query": "hi", "outcomes": {"ghost": {"score": 1.0}}}]
    with pytest.raises(DataError, match="ghost"):
        load_model_set(write_set(tmp_path / "a", train=unknown))
    bad_score = [{"id": "q", "query": "hi", "outcomes": {"big": {"score": 1.5}}}]
    with pytest.raises(DataError, match="score"):
        load_model_set(write_set(tmp_path / "b", train=bad_score))


def test_a_test_query_needs_every_model_and_ids_are_unique(tmp_path: Path) -> None:
    partial = [{"id": "q", "query": "hi", "outcomes": {"big": {"score": 1.0, "cost": 0.01}}}]
    load_model_set(write_set(tmp_path / "train-ok", train=partial * 1 + [{**partial[0], "id": "q2"}]))  # train may be partial
    with pytest.raises(DataError, match=r"test\.jsonl:1 \(query 'q'\): no outcome for model\(s\) \['small'\]"):
        load_model_set(write_set(tmp_path / "partial", test=partial))
    full = {"id": "same", "query": "hi", "outcomes": {"big": {"score": 1.0, "cost": 0.01}, "small": {"score": 0.0, "cost": 0.001}}}
    with pytest.raises(DataError, match=r"test\.jsonl:2 .*'same' is already on line 1"):
        load_model_set(write_set(tmp_path / "dup", test=[full, full]))


def test_model_bench_options_are_checked_before_training(tmp_path: Path) -> None:
    from orchestra.errors import ConfigurationError

    folder = write_set(tmp_path / "set")
    before = (folder / "test.jsonl").read_bytes()
    for kwargs, error, match in [
        ({"limit": 0}, DataError, "--limit must be 1 or more"),
        ({"predictions": folder / "test.jsonl"}, ConfigurationError, "inside the data folder"),
        ({"predictions": tmp_path}, ConfigurationError, "is a directory"),
        ({"router_options": {"checkpoint": "saved.pt"}}, DataError, "does not evaluate a saved checkpoint"),
    ]:
        with pytest.raises(error, match=match):
            run_model_bench(folder, "knn", weights=(0.0,), **kwargs)
    assert (folder / "test.jsonl").read_bytes() == before
    with pytest.raises(ConfigurationError, match="router 'knn' option 'k'"):
        run_model_bench(folder, "knn", weights=(0.0,), router_options={"k": "many"})
    with pytest.raises(PolicyError, match="knn 'k' must be a whole number of at least 1"):
        run_model_bench(folder, "knn", weights=(0.0,), router_options={"k": 0})


@pytest.mark.parametrize("text", ["0,1.5", "-0.1", "abc", ""])
def test_weights_outside_unit_interval_raise_policy_error(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_weights(text)


def test_weights_are_parsed_sorted_and_unique() -> None:
    assert parse_weights("1,0,0.5,0.5") == (0.0, 0.5, 1.0)


def test_validation_split_is_seeded_and_disjoint() -> None:
    rows = [ModelQuery(id=str(i), query=f"q{i}", outcomes={}) for i in range(50)]
    a_train, a_val = split_train_val(rows, 0.2, seed=3)
    b_train, b_val = split_train_val(rows, 0.2, seed=3)
    assert [r.id for r in a_val] == [r.id for r in b_val] and len(a_val) == 10
    assert not {r.id for r in a_train} & {r.id for r in a_val}


# ---------------------------------------------------------------------------------------------- end to end


def test_run_model_bench_writes_predictions_and_metrics(tmp_path: Path) -> None:
    from orchestra.routers.model_routers import BestSingleRouter
    from orchestra.routing import register_router

    register_router("best-single-test", BestSingleRouter)
    folder = write_set(tmp_path / "set")
    out = tmp_path / "pred.jsonl"
    report = run_model_bench(folder, "best-single-test", weights=(0.0, 1.0), predictions=out, latency_queries=2)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    ws = sorted({line["w"] for line in lines})
    assert ws == [0.0, 0.5, 0.8, 1.0]  # the grid plus GraphRouter's scenarios
    assert len(lines) == 4 * len(ws) and set(lines[0]) == {"id", "w", "chosen", "latency_ms"}
    by_w = {p["w"]: p for p in report["points"]}
    # big is right everywhere on train: w=0 picks it; w=1 picks the cheaper small model
    assert by_w[0.0]["quality"] == 1.0 and by_w[0.0]["cost_usd"] == pytest.approx(0.01)
    assert by_w[1.0]["cost_usd"] == pytest.approx(0.001) and by_w[1.0]["quality"] == 0.5
    assert report["aiq"] == pytest.approx(report["aiq_single_models"])
    assert report["cost"] == "measured" and math.isfinite(report["scenario_rewards"]["balance"])


def test_holdout_models_are_onboarded_with_observed_outcomes(tmp_path: Path) -> None:
    from orchestra.routers.model_routers import BestSingleRouter
    from orchestra.routing import register_router

    class OnboardingRouter(BestSingleRouter):
        """Records what the harness onboards."""

        onboarded: dict[str, list[str]] = {}

        def add_model(self, card, observations=()):  # type: ignore[no-untyped-def]
            OnboardingRouter.onboarded[card.id] = [row.id for row in observations]

    register_router("onboarding-test", OnboardingRouter)
    folder = write_set(tmp_path / "set")
    report = run_model_bench(folder, "onboarding-test", weights=(0.0,), holdout_models=["small"], holdout_observed=4,
                             latency_queries=1)
    observed = OnboardingRouter.onboarded["small"]
    assert report["holdout_observed"] == 4 and len(observed) == 4 and len(set(observed)) == 4
    train_ids = {row.id for row in load_model_set(folder).train}
    assert set(observed) <= train_ids  # observations come from train, never from test
    with pytest.raises(DataError, match="needs --holdout-models"):
        run_model_bench(folder, "onboarding-test", holdout_observed=4)
    with pytest.raises(DataError, match=">= 0"):
        run_model_bench(folder, "onboarding-test", holdout_models=["small"], holdout_observed=-1)
    register_router("best-single-test", BestSingleRouter)
    with pytest.raises(DataError, match="cannot onboard"):
        run_model_bench(folder, "best-single-test", holdout_models=["small"], holdout_observed=4)


def test_embedding_routers_reuse_the_on_disk_cache(tmp_path: Path) -> None:
    from orchestra.embeddings import DiskCache, Embedder
    from orchestra.routers.model_routers import HashingEmbedder, KnnRouter
    from orchestra.routing import register_router

    class CountingModel:
        """A sentence-transformers stand-in that records what it is asked to encode."""

        def __init__(self) -> None:
            self.inner = HashingEmbedder(dim=64)
            self.encoded: list[str] = []

        def get_sentence_embedding_dimension(self) -> int:
            return 64

        def encode(self, texts, batch_size=64, **_):  # type: ignore[no-untyped-def]
            self.encoded.extend(texts)
            return self.inner.encode(list(texts))

    register_router("knn-test", lambda **options: KnnRouter(k=3, **options))
    folder = write_set(tmp_path / "set")
    disk_file = tmp_path / "home" / "cache" / "embeddings.sqlite"
    first = CountingModel()
    report = run_model_bench(folder, "knn-test", weights=(0.0, 1.0), latency_queries=2,
                             embedder=Embedder(first, disk_cache=DiskCache(disk_file, "counting")))
    by_w = {p["w"]: p for p in report["points"]}
    assert by_w[0.0]["quality"] == 1.0 and by_w[1.0]["cost_usd"] == pytest.approx(0.001)
    assert report["embedding_cache"]["path"] == str(disk_file) and report["embedding_cache"]["misses"] > 0
    assert {"math question number 6?", "poem question number 0?"} <= set(first.encoded)
    # a second process (a new embedder on the same file) embeds nothing again from the cache: only the timed
    # decisions meet the model, through the bare twin
    second = CountingModel()
    again = run_model_bench(folder, "knn-test", weights=(0.0, 1.0), latency_queries=2,
                            embedder=Embedder(second, disk_cache=DiskCache(disk_file, "counting")))
    assert again["embedding_cache"]["misses"] == 0 and again["points"] == report["points"]
    assert set(second.encoded) == {"math question number 6?", "poem question number 6?"}
    # without the cache every text meets the model
    third = CountingModel()
    bare = run_model_bench(folder, "knn-test", weights=(0.0, 1.0), latency_queries=2, cache=False,
                           embedder=Embedder(third, disk_cache=DiskCache(disk_file, "counting")))
    assert bare["embedding_cache"] is None and {"math question number 0?"} <= set(third.encoded)


def test_jsonl_lines_end_at_newline_only(tmp_path: Path) -> None:
    # U+2028 and U+0085 may stand raw inside a JSON string (the llmrouter set has them); they end no line
    from orchestra.bench import read_jsonl

    path = tmp_path / "rows.jsonl"
    path.write_text('{"query": "one\u2028two\u0085three"}\r\n\n{"query": "four"}\n', encoding="utf-8")
    assert read_jsonl(path) == [(1, {"query": "one\u2028two\u0085three"}), (3, {"query": "four"})]


def run_benchmark_script(name: str, *args: str) -> dict:
    """Run ``benchmarks/<name>`` with ``args`` (which end with ``--json OUT``); assert it succeeded; return OUT's JSON."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / name
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(Path(args[-1]).read_text())


def test_llmrouter_noise_script_measures_the_per_task_rule(tmp_path: Path) -> None:
    """benchmarks/llmrouter_noise.py on a set where each task has its own best model: the per-task rule is
    perfect on test while the best single model is right half the time."""
    def row(i, task, big, small):
        return {"id": f"{task}-{i}", "query": f"{task} question {i}?", "task": task,
                "outcomes": {"big": {"score": big, "cost": 0.01}, "small": {"score": small, "cost": 0.001}}}

    train = [row(i, "math", 0.0, 1.0) for i in range(5)] + [row(i, "poem", 1.0, 0.0) for i in range(6)]
    test = [row(i, "math", 0.0, 1.0) for i in range(5, 9)] + [row(i, "poem", 1.0, 0.0) for i in range(6, 10)]
    data = write_set(tmp_path / "set", train=train, test=test)
    results = run_benchmark_script("llmrouter_noise.py", "--data", str(data), "--json", str(tmp_path / "noise.json"))
    assert results["best_single_test"] == 0.5 and results["per_task_best_on_train"] == 1.0
    assert results["by_task"]["math"]["picked"] == "small" and results["by_task"]["poem"]["picked"] == "big"
    assert results["oracle_test"] == 1.0 and 0.0 <= results["train_bootstrap"]["share_reaching_target"] <= 1.0


def test_holdout_pairs_script_scores_each_pair_against_the_full_router(tmp_path: Path) -> None:
    """benchmarks/holdout_pairs.py: one full run, one run per held-out pair, gaps measured against the full run.
    Holding out the two models the best single model never needed costs it nothing."""
    cards = [*CARDS, {"id": "poet", "description": "A small model that writes poems.", "input_price_per_mtok": 0.5,
                      "output_price_per_mtok": 1.0}]

    def row(i, task):
        return {"id": f"{task}-{i}", "query": f"{task} question {i}?", "task": task, "outcomes": {
            "big": {"score": 1.0, "cost": 0.01}, "small": {"score": float(task == "math"), "cost": 0.001},
            "poet": {"score": float(task == "poem"), "cost": 0.001}}}

    data = write_set(tmp_path / "set", cards=cards, train=[row(i, t) for i in range(6) for t in ("math", "poem")],
                     test=[row(i, t) for i in range(6, 9) for t in ("math", "poem")])
    results = run_benchmark_script("holdout_pairs.py", "--data", str(data), "--router", "best-single", "--pairs", "5",
                                   "--json", str(tmp_path / "pairs.json"))
    assert results["full"]["performance_first"] == 1.0
    assert sorted(tuple(sorted(r["holdout"])) for r in results["pairs"]) == [("big", "poet"), ("big", "small"), ("poet", "small")]
    (cheap_pair,) = [r for r in results["pairs"] if "big" not in r["holdout"]]
    assert cheap_pair["aiq_gap"] == pytest.approx(cheap_pair["aiq"] - results["full"]["aiq"])
    assert cheap_pair["performance_first_gap"] == 0.0
    assert 1 <= results["within_both"] <= 3


def test_cascade_bound_script_escalates_only_when_the_cheap_models_disagree(tmp_path: Path) -> None:
    """benchmarks/cascade_bound.py: two cheap models, each right on 3 queries in 4, that agree exactly when
    both are right, reach the big model's quality for 0.007 a query when the big one answers only their disagreements;
    on the open-ended task (no options to compare) only single models are strategies."""
    cards = [*CARDS, {"id": "tiny", "description": "A tiny model.", "input_price_per_mtok": 0.1, "output_price_per_mtok": 0.2}]

    def choice_row(i):
        gold, other = ("A", "B") if i % 2 else ("B", "A")
        # both right, both right, only small right, only tiny right
        answers = {"big": gold, "small": gold if i % 4 != 3 else other, "tiny": gold if i % 4 != 2 else other}
        outcome = {m: {"score": float(a == gold), "cost": 0.01 if m == "big" else 0.001, "response": a}
                   for m, a in answers.items()}
        return {"id": f"mc-{i}", "query": f"Question {i}: which one?\n\nA) yes\nB) no", "task": "mc", "outcomes": outcome}

    def open_row(i):
        return {"id": f"open-{i}", "query": f"Write a poem number {i}.", "task": "poem", "outcomes": {
            "big": {"score": 1.0, "cost": 0.01, "response": "roses"}, "small": {"score": 0.0, "cost": 0.001, "response": "x"},
            "tiny": {"score": 0.0, "cost": 0.001, "response": "y"}}}

    data = write_set(tmp_path / "set", cards=cards, train=[choice_row(i) for i in range(8)] + [open_row(i) for i in range(8)],
                     test=[choice_row(i) for i in range(8, 16)] + [open_row(i) for i in range(8, 16)])
    results = run_benchmark_script("cascade_bound.py", "--data", str(data), "--budget", "0.006", "--json",
                                   str(tmp_path / "cascade.json"))
    assert results["best_model"] == "big" and results["best_model_test"]["quality"] == 1.0
    reaching = results["cheapest_reaching_best_on_train"]
    assert reaching["strategy"] == {"mc": "small + tiny, else big", "poem": "big"}
    # mc: 0.002 for the two cheap calls, 0.01 on the half they disagree; poem: 0.01
    assert reaching["test_quality"] == 1.0 and reaching["test_cost_usd"] == pytest.approx((0.007 + 0.01) / 2)
    # within $0.006 the cascade no longer fits beside the big model on poems: one cheap model on mc instead
    within = results["best_within_budget_on_train"]
    assert within["train_cost_usd"] <= 0.006 and within["test_quality"] == pytest.approx((0.75 + 1.0) / 2)
    assert within["strategy"]["poem"] == "big" and within["strategy"]["mc"] in ("small", "tiny")


def test_seed_spread_script_reports_each_seed_and_their_mean_prediction(tmp_path: Path) -> None:
    """benchmarks/seed_spread.py: a seed-free router (kNN) gives the same top-1 for every seed, so the spread is
    zero and averaging its predictions changes nothing; the target is the best single model plus 3 points."""
    data = write_set(tmp_path / "set")
    results = run_benchmark_script("seed_spread.py", "--data", str(data), "--router", "knn", "--seeds", "0,1",
                                   "--json", str(tmp_path / "spread.json"))
    assert results["best_single_test"] == 1.0 and results["target"] == pytest.approx(1.03)
    assert [row["seed"] for row in results["per_seed"]] == [0, 1]
    assert results["per_seed"][0]["top1"] == results["per_seed"][1]["top1"] == results["ensemble"][1]["top1"]
    assert results["single_sd"] == 0.0 and [row["seeds"] for row in results["ensemble"]] == [1, 2]


# ---------------------------------------------------------------------------------------------- bad sets (audit)


def _row(i: int, task: str = "math", **outcomes: dict) -> dict:
    return {"id": f"{task}-{i}", "query": f"{task} question number {i}?", "task": task, "outcomes": outcomes}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        # a model with no cost and no price used to drop out of the means and turn the rewards into NaN
        ({"cards": [CARDS[0], {"id": "small", "description": "A small model."}],
          "test": [_row(9, big={"score": 1.0, "cost": 0.01}, small={"score": 1.0})]}, r"no cost for model\(s\) \['small'\]"),
        ({"test": [_row(9, big={"score": 1.0, "cost": float("inf")}, small={"score": 1.0, "cost": 0.001})]}, "finite"),
        ({"test": [_row(9, big={"score": True, "cost": 0.01}, small={"score": 1.0, "cost": 0.001})]}, "score"),
        ({"test": [{**_row(9, big={"score": 1.0, "cost": 0.01}, small={"score": 1.0, "cost": 0.001}), "query": "  "}]}, "query"),
        ({"test": [{**_row(9, big={"score": 1.0, "cost": 0.01}, small={"score": 1.0, "cost": 0.001}), "id": ["x"]}]}, "'id'"),
        ({"cards": [{**CARDS[0], "input_price_per_mtok": True}, CARDS[1]]}, "input_price_per_mtok"),
    ],
)
def test_a_bad_value_in_a_model_set_is_a_data_error_naming_it(tmp_path: Path, change: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_model_set(write_set(tmp_path / "set", **change))


def test_holding_out_a_model_twice_or_every_model_is_refused(tmp_path: Path) -> None:
    data = write_set(tmp_path / "set")
    with pytest.raises(DataError, match="more than once"):
        run_model_bench(data, "best-single", holdout_models=["small", "small"])
    with pytest.raises(DataError, match="leaves none to train"):
        run_model_bench(data, "best-single", holdout_models=["small", "big"])


@pytest.mark.filterwarnings("ignore:.*are in both train.jsonl and test.jsonl")  # a toy set scored on its training rows
def test_single_models_of_one_price_leave_aiq_undefined_and_the_rest_of_the_report_whole(tmp_path: Path, capsys) -> None:
    from orchestra.bench.models import print_report

    same = [{"id": m, "description": f"model {m}", "input_price_per_mtok": 1.0, "output_price_per_mtok": 1.0} for m in ("a", "b")]
    rows = [_row(i, a={"score": float(i % 2), "cost": 0.001}, b={"score": 1.0, "cost": 0.001}) for i in range(6)]
    report = run_model_bench(write_set(tmp_path / "set", cards=same, train=rows, test=rows), "best-single", weights=(0.0,))
    assert report["aiq"] is None and report["aiq_single_models"] is None
    assert report["scenario_rewards"]["performance_first"] == 1.0
    print_report(report)
    assert "AIQ n/a" in capsys.readouterr().out


def test_the_oracle_takes_the_cheapest_right_model_whatever_the_card_order_and_tells_rows_apart_by_id(tmp_path: Path) -> None:
    """Two rows share a text but not their outcomes; the cards come dearest first."""
    dear_first = [CARDS[0], CARDS[1]]
    test = [
        {"id": "t0", "query": "same text?", "task": "math", "outcomes": {"big": {"score": 1.0, "cost": 0.01}, "small": {"score": 1.0, "cost": 0.001}}},
        {"id": "t1", "query": "same text?", "task": "math", "outcomes": {"big": {"score": 1.0, "cost": 0.01}, "small": {"score": 0.0, "cost": 0.001}}},
    ]
    report = run_model_bench(write_set(tmp_path / "set", cards=dear_first, test=test), "oracle", weights=(0.0,))
    (point,) = [p for p in report["points"] if p["w"] == 0.0]
    assert point["quality"] == 1.0 and point["cost_usd"] == pytest.approx((0.001 + 0.01) / 2)


def test_an_output_file_is_checked_for_writing_before_any_training(tmp_path: Path) -> None:
    from orchestra.bench import check_output
    from orchestra.errors import ConfigurationError

    data = write_set(tmp_path / "set")
    other_set = write_set(tmp_path / "another set")
    with pytest.raises(ConfigurationError, match="cannot write it"):
        check_output("/proc/self/orchestra-bench.jsonl", data=data, option="--predictions")
    with pytest.raises(ConfigurationError, match="inside the data folder"):  # a set other than the one benchmarked
        check_output(other_set / "test.jsonl", data=data, option="--predictions")
    with pytest.raises(ConfigurationError, match="also the other output"):
        check_output(tmp_path / "out.json", data=data, option="--json", beside=tmp_path / "out.json")
    existing = tmp_path / "kept.jsonl"
    existing.write_text("earlier predictions\n")
    check_output(existing, data=data, option="--predictions")
    assert existing.read_text() == "earlier predictions\n"  # checked, not truncated
    check_output(tmp_path / "new" / "p.jsonl", data=data, option="--predictions")
    assert not (tmp_path / "new" / "p.jsonl").exists()


def test_a_byte_order_mark_is_read_a_file_as_data_is_named_and_router_r1_refuses_the_sweeps_flags(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orchestra.bench import data_dir
    from orchestra.cli import app

    data = write_set(tmp_path / "set")
    (data / "models.jsonl").write_bytes(b"\xef\xbb\xbf" + (data / "models.jsonl").read_bytes())
    assert [card.id for card in load_model_set(data).cards] == ["big", "small"]
    with pytest.raises(DataError, match="is a file"):
        data_dir(data / "models.jsonl")
    result = CliRunner().invoke(app, ["bench", "models", "--data", str(data), "--router", "router-r1", "--weights", "0,1"])
    assert result.exit_code == 2 and "--weights do not apply" in result.output


def test_an_installed_package_has_no_default_data_folder_beside_site_packages(tmp_path: Path) -> None:
    """Installed from a wheel, orchestra/ sits in site-packages: "../shared/data beside the repository" would be
    a folder beside site-packages, which the error then named as if the user should create it."""
    import shutil
    import subprocess
    import sys

    import orchestra

    site = tmp_path / "lib" / "site-packages"
    shutil.copytree(Path(orchestra.__file__).parent, site / "orchestra", ignore=shutil.ignore_patterns("__pycache__"))
    code = "from orchestra.bench import data_dir\ntry:\n    data_dir()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)"
    env = {key: value for key, value in os.environ.items() if key != "ORCHESTRA_DATA_DIR"} | {"PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out.startswith("DataError") and "pass --data or set ORCHESTRA_DATA_DIR" in out and str(tmp_path) not in out


def test_router_r1_on_the_models_bench_takes_every_option_of_the_router_and_refuses_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import orchestra.bench.r1 as r1
    from orchestra.cli import app

    ran: list[dict[str, object]] = []
    monkeypatch.setattr(r1, "run_router_r1_bench", lambda *args, **kw: ran.append({"args": args, **kw}) or {})
    monkeypatch.setattr(r1, "_print", lambda report: None)
    data = write_set(tmp_path / "set")
    bench = ["bench", "models", "--data", str(data), "--router", "router-r1"]

    unknown = CliRunner().invoke(app, [*bench, "--option", "foo=1", "--option", "max_rounds=2"])
    assert unknown.exit_code == 2 and "'foo'" in unknown.output and not ran
    out_of_range = CliRunner().invoke(app, [*bench, "--option", "max_rounds=0"])
    assert out_of_range.exit_code == 2 and "RouterR1 'max_rounds'" in out_of_range.output and not ran

    given = ["max_rounds=2", "max_invalid_turns=3", "constrained=false", "temperature=0.5", "observation_tokens=300"]
    result = CliRunner().invoke(app, [*bench, *(item for option in given for item in ("--option", option))])
    assert result.exit_code == 0, result.output
    (call,) = ran
    router = call["router"]
    assert (router.max_rounds, router.max_invalid_turns, router.constrained, router.temperature, router.observation_tokens) == (2, 3, False, 0.5, 300)
    assert call["max_rounds"] == 2  # the run's budget is sized from the same bound


def test_a_router_trained_in_python_is_scored_as_given_with_the_benchs_figures(tmp_path: Path) -> None:
    """run_model_bench took only a name (an instance gave UnknownRouterError printing its repr)."""
    from orchestra.bench.models import DEFAULT_WEIGHTS
    from orchestra.routers.model_routers import HashingEmbedder, KnnRouter

    folder = write_set(tmp_path / "set")
    by_name = run_model_bench(folder, "knn", router_options={"k": 3}, embedder=HashingEmbedder(), latency_queries=1)
    full = load_model_set(folder)
    train, val = split_train_val(full.train, 0.1, 0)
    router = KnnRouter(k=3, embedder=HashingEmbedder()).fit(train, list(full.cards), val=val, weights=DEFAULT_WEIGHTS,
                                                            card_costs=full.card_costs)
    learnt = router._vectors
    given = run_model_bench(folder, router, train=False, latency_queries=1)
    assert router._vectors is learnt and given["fit_seconds"] == 0 and given["trained_by_bench"] is False
    for key in ("points", "aiq", "scenario_rewards", "single_models"):
        assert given[key] == by_name[key]
    with pytest.raises(DataError, match="object.*not a model router") as refused:
        run_model_bench(folder, object())
    assert "0x" not in str(refused.value)


def test_a_router_scored_as_given_must_know_the_sets_models_and_holds_none_out(tmp_path: Path) -> None:
    """A router trained on other models was scored without a word (it picked among models it never saw, from their
    cards), and holdout_models beside train=False reported a holdout that did not happen."""
    from orchestra.routers.model_routers import HashingEmbedder, KnnRouter

    folder = write_set(tmp_path / "set")
    full = load_model_set(folder)
    others = [card.with_changes(id=f"other-{card.id}") for card in full.cards]
    rows = [row.model_copy(update={"outcomes": {f"other-{m}": o for m, o in row.outcomes.items()}}) for row in full.train]
    stranger = KnnRouter(k=3, embedder=HashingEmbedder()).fit(rows, others)
    with pytest.raises(DataError, match="was trained for models .*score it on its own set"):
        run_model_bench(folder, stranger, train=False, latency_queries=1)
    own = KnnRouter(k=3, embedder=HashingEmbedder()).fit(list(full.train), list(full.cards))
    with pytest.raises(DataError, match="holdout_models needs the bench to train the router"):
        run_model_bench(folder, own, train=False, holdout_models=[full.cards[0].id], latency_queries=1)


@pytest.mark.filterwarnings("ignore:.*are in both train.jsonl and test.jsonl")  # a toy set scored on its training rows
def test_a_card_with_only_a_mean_cost_per_query_costs_that_mean_where_an_outcome_has_none(tmp_path: Path) -> None:
    """The data format allows null costs and null prices and gives cards a mean_cost_per_query_usd, yet a set with
    only that mean (RouteLLM's strong/weak pairs: scores, no per-call cost) was refused: "no cost for model(s)"."""
    cards = [{"id": "big", "description": "A large model.", "mean_cost_per_query_usd": 0.005},
             {"id": "small", "description": "A small model.", "mean_cost_per_query_usd": 0.0003}]
    rows = [_row(i, big={"score": 1.0}, small={"score": float(i % 2), "cost": 0.0001}) for i in range(4)]
    s = load_model_set(write_set(tmp_path / "set", cards=cards, train=rows, test=rows))
    assert s.cost_estimated and s.card_costs == {"big": 0.005, "small": 0.0003}
    assert [row.outcomes["big"].cost for row in s.test] == [0.005] * 4
    assert [row.outcomes["small"].cost for row in s.test] == [0.0001] * 4  # a recorded cost is kept as it is
    report = run_model_bench(tmp_path / "set", "best-single", weights=[0.0, 1.0], latency_queries=1)
    assert report["cost"] == "estimated" and "mean_cost_per_query_usd" in report["cost_note"]
    with pytest.raises(DataError, match="nor mean_cost_per_query_usd"):  # neither prices nor a mean: still refused
        load_model_set(write_set(tmp_path / "bare", cards=[{k: v for k, v in card.items() if k != "mean_cost_per_query_usd"} for card in cards],
                                 train=rows, test=rows))


def test_holding_out_a_model_drops_the_training_queries_only_it_answered(tmp_path: Path) -> None:
    """Train may be partial: a query that only the held-out model answered was kept with no outcome, and training
    refused the set ("training query 'only-small-0' has no outcomes") though every row of the file has one."""
    only_small = [{"id": f"only-small-{i}", "query": f"small question {i}?", "task": "math",
                   "outcomes": {"small": {"score": 1.0, "cost": 0.001}}} for i in range(2)]
    full = [_row(i, t, big={"score": 1.0, "cost": 0.01}, small={"score": 0.0, "cost": 0.001}) for i in range(6) for t in ("math", "poem")]
    folder = write_set(tmp_path / "set", train=full + only_small)
    held = load_model_set(folder).without_models(["small"])
    assert [row.id for row in held.train] == [row["id"] for row in full]
    assert all(set(row.outcomes) == {"big"} for row in (*held.train, *held.test))
    from orchestra.routers.model_routers import HashingEmbedder

    report = run_model_bench(folder, "knn", holdout_models=["small"], weights=[0.0, 1.0], latency_queries=1,
                             router_options={"k": 3, "embedder": HashingEmbedder()})
    assert report["n_train"] + report["n_val"] == len(full)


def test_the_bench_calibrates_a_cost_weight_on_validation_and_reports_it_on_test(tmp_path: Path) -> None:
    """`bench models --target-share MODEL=SHARE` / `--target-cost USD`: w calibrated on the validation split, its
    test figures reported apart, and the swept points (and AIQ) unchanged."""
    from orchestra.routers.model_routers import HashingEmbedder, KnnRouter
    from orchestra.routing import register_router

    register_router("knn-calibrated-test", lambda **options: KnnRouter(k=3, embedder=HashingEmbedder(64), **options))
    folder = write_set(tmp_path / "set")
    plain = run_model_bench(folder, "knn-calibrated-test", weights=(0.0, 1.0), latency_queries=0)
    report = run_model_bench(folder, "knn-calibrated-test", weights=(0.0, 1.0), latency_queries=0, target_cost=0.002)
    assert report["points"] == plain["points"] and plain["calibrated"] is None
    calibrated = report["calibrated"]
    assert calibrated["target"] == {"mean_cost_usd": 0.002} and calibrated["calibrated_on"].startswith("validation split")
    at_zero = next(p for p in plain["points"] if p["w"] == 0.0)
    assert 0 < calibrated["test"]["w"] <= 1 and calibrated["test"]["cost_usd"] < at_zero["cost_usd"]
    with pytest.raises(PolicyError, match="'nope', which is not among"):  # refused before anything is trained
        run_model_bench(folder, "knn-calibrated-test", target_share=("nope", 0.5))


def test_bench_models_saves_the_router_it_scored_for_chat_and_serve(tmp_path: Path) -> None:
    """LLMRouter's train-then-serve from the command line: `bench models --save PATH` writes the trained router, which
    `--option checkpoint=PATH` serves; a router that keeps no checkpoint, or a path in the data, is refused first."""
    from orchestra.errors import ConfigurationError
    from orchestra.routers.model_routers import HashingEmbedder, KnnRouter
    from orchestra.routing import load_router, register_router

    register_router("knn-saved-test", lambda **options: KnnRouter(k=3, embedder=HashingEmbedder(64), **options))
    folder = write_set(tmp_path / "set")
    path = tmp_path / "out" / "knn.pt"
    report = run_model_bench(folder, "knn-saved-test", weights=(0.0, 1.0), latency_queries=0, save=path)
    assert report["saved"] == str(path)
    served = load_router("knn", checkpoint=str(path))  # the hashing embedder comes back by name
    rows = load_model_set(folder).test
    cards = load_model_set(folder).cards
    for w in (0.0, 1.0):
        chosen = served.route_batch(rows, cards, w)[0]
        assert [p for p in report["points"] if p["w"] == w][0]["share"] == {
            cards[j].id: round(float(np.mean(chosen == j)), 4) for j in sorted(set(chosen.tolist()))}
    with pytest.raises(ConfigurationError, match="keeps no checkpoint"):
        run_model_bench(folder, "cheapest", save=tmp_path / "cheap.pt")
    with pytest.raises(ConfigurationError, match="inside the data folder"):
        run_model_bench(folder, "knn-saved-test", save=folder / "knn.pt")


def test_model_set_checks_ids_tasks_outcomes_and_leaks(tmp_path: Path) -> None:
    """An empty id passed, a null task was refused though a missing one is fine, outcomes given as a list read
    "query has no outcomes", and a query in both train and test was trained on and then scored without a word."""
    def row(i, **changes):
        base = {"id": f"q{i}", "query": f"question {i}?", "task": "t",
                "outcomes": {"big": {"score": 1.0, "cost": 0.01}, "small": {"score": 0.0, "cost": 0.001}}}
        return {**base, **changes}

    tests = [row(9), row(10)]
    with pytest.raises(DataError, match="train.jsonl:1 .*field 'id'"):
        load_model_set(write_set(tmp_path / "a", train=[row(1, id="")], test=tests))
    assert load_model_set(write_set(tmp_path / "b", train=[row(1, task=None)], test=tests)).train[0].task == ""
    with pytest.raises(DataError, match="field 'outcomes' must be an object of model id -> outcome, got list"):
        load_model_set(write_set(tmp_path / "c", train=[row(1, outcomes=[{"big": 1.0}])], test=tests))
    with pytest.warns(UserWarning, match=r"query id\(s\) \['q9'\] are in both train.jsonl and test.jsonl"):
        load_model_set(write_set(tmp_path / "d", train=[row(1), row(9)], test=tests))


def test_a_model_router_missing_route_one_is_refused_before_its_fit(tmp_path: Path) -> None:
    """The bench times single decisions with route_one: a router without it trained in full, then failed with an
    AttributeError."""
    fitted = []

    class BatchOnly:
        name = "batch-only"

        def fit(self, *args, **kwargs):
            fitted.append(True)
            return self

        def route_batch(self, queries, cards, w):
            return np.zeros(len(queries), dtype=int), None, None, None

    with pytest.raises(DataError, match=r"'batch-only' \(BatchOnly\) is not a model router \(it needs fit, route_batch, route_one"):
        run_model_bench(write_set(tmp_path / "set"), BatchOnly())
    assert fitted == []


def test_a_model_router_that_embeds_nothing_trains_without_an_embedder_and_the_report_names_none(tmp_path: Path) -> None:
    """ModelRouter fitted task centroids on embeddings of every training query even for a router that embeds
    nothing: minutes of MiniLM on routerbench, for centroids it never reads."""
    from orchestra.routers.model_routers import HashingEmbedder, ModelRouter

    class Refusing:
        def encode(self, texts, batch_size=64):
            raise AssertionError("this router embeds nothing")

    class PerTaskMean(ModelRouter):
        """A user's router of its own: each model's mean score on the query's task."""

        name = "per-task-mean"
        uses_embeddings = False

        def _fit_quality(self, train, val, cards, weights):
            self._by_task = {task: np.array([np.mean([r.outcomes[m].score for r in train if r.task == task]) for m in self.model_ids])
                             for task in {r.task for r in train}}

        def _quality(self, embeddings, tasks, texts):
            return np.stack([self._by_task.get(task, np.full(len(self.model_ids), 0.5)) for task in tasks])

    folder = write_set(tmp_path / "set")
    report = run_model_bench(folder, PerTaskMean(embedder=Refusing()), latency_queries=1)
    assert report["points"][0]["quality"] == 1.0 and report["embedder"] is None  # the task tells which model answers
    assert report["router_source"]["class"].endswith("<locals>.PerTaskMean") and report["router_source"]["options"] is None
    knn = run_model_bench(folder, "knn", router_options={"k": 3}, embedder=HashingEmbedder(64), latency_queries=1)
    assert knn["embedder"] == "hashing-64" and knn["router_source"]["options"] == {"k": 3}
    assert knn["router_source"]["class"] == "orchestra.routers.model_routers:KnnRouter"
