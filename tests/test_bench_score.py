"""`orchestra bench score`: a predictions file, ours or another tool's, rescored with the bench's own metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestra.bench.agents import run_agent_bench
from orchestra.bench.compare import compare_reports
from orchestra.bench.models import run_model_bench
from orchestra.bench.score import score_agent_predictions, score_model_predictions, score_predictions
from orchestra.cli import app
from orchestra.errors import DataError
from orchestra.routers.model_routers import BestSingleRouter
from orchestra.routers.set_router import SetRouter

from test_bench_agents import write_set as write_agent_set
from test_bench_models import write_set as write_model_set
from test_routers_basic import WordEmbedder


def _lines(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


def test_the_bench_predictions_rescore_to_the_bench_figures(tmp_path: Path) -> None:
    agents = write_agent_set(tmp_path / "tiny")
    report = run_agent_bench(agents, SetRouter(embedder=WordEmbedder(), oos_threshold=0.5), predictions=tmp_path / "a.jsonl")
    again = score_predictions(agents, tmp_path / "a.jsonl", router="set")
    assert again["test"] == report["test"] and again["oos"] == report["oos"] and again["latency"] == report["latency"]
    assert again["regime"] == "from predictions" and again["rescored_from"] == str(tmp_path / "a.jsonl")

    models = write_model_set(tmp_path / "set")
    report = run_model_bench(models, BestSingleRouter(), weights=(0.0, 1.0), predictions=tmp_path / "m.jsonl", latency_queries=None)
    again = score_predictions(models, tmp_path / "m.jsonl")
    for key in ("points", "aiq", "scenario_rewards", "single_models", "best_single", "cheapest_point_reaching_best_single", "n_test"):
        assert again[key] == report[key], key
    assert again["router"] == "m"  # named after the file when no name is given
    # the bench timed every query at w = 0 first; the rescored latency is the recorded one at the lowest w
    assert again["latency"]["n_timed_queries"] == 4


def test_another_tools_choices_are_scored_and_compared_with_a_bench_run(tmp_path: Path) -> None:
    models = write_model_set(tmp_path / "set")
    bench = run_model_bench(models, BestSingleRouter(), weights=(0.0, 1.0), latency_queries=1)
    # a router that sends math to the small model and poems to the big one, at two weights, with no latencies
    choices = [{"id": f"{task}-{i}", "w": w, "chosen": "small" if task == "math" else "big"}
               for w in (0.0, 0.3) for i in (6, 7) for task in ("math", "poem")]
    report = score_model_predictions(models, _lines(tmp_path / "theirs.jsonl", choices), router="theirs")
    assert [point["quality"] for point in report["points"]] == [1.0, 1.0]
    assert report["points"][0]["cost_usd"] == pytest.approx(0.0055)
    # Performance First reads w = 0, which was routed; Balance and Cost First read w = 0.5 and 0.8, which were not
    assert report["scenario_rewards"]["performance_first"] == 1.0 and report["scenario_rewards"]["balance"] is None
    assert report["latency"] == {}
    comparison = compare_reports([("bench", bench), ("theirs.jsonl", report)])
    assert comparison["best"]["cost_reaching_best_single"] == ["theirs"]  # quality 1.0 at $0.0055, the bench's at $0.01
    result = CliRunner().invoke(app, ["bench", "score", "--data", str(models), "--predictions", str(tmp_path / "theirs.jsonl"),
                                      "--json", str(tmp_path / "theirs.json")])
    assert result.exit_code == 0, result.output
    assert "balance n/a" in result.output and "not recorded in the predictions" in result.output
    assert json.loads((tmp_path / "theirs.json").read_text())["router"] == "theirs"


def test_a_subset_of_the_test_queries_is_scored_on_that_subset(tmp_path: Path) -> None:
    models = write_model_set(tmp_path / "set")
    lines = [{"id": "math-6", "w": 0.0, "chosen": "small"}, {"id": "poem-6", "w": 0.0, "chosen": "small"}]
    report = score_model_predictions(models, _lines(tmp_path / "p.jsonl", lines))
    assert report["n_test"] == 2 and report["points"][0]["quality"] == 0.5


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"id": "nope", "w": 0.0, "chosen": "big"}, "field 'id': 'nope' is not a query id of set's test split"),
        ({"id": "math-6", "w": True, "chosen": "big"}, "field 'w': True is not a cost weight in [0, 1]"),
        ({"id": "math-6", "w": 2, "chosen": "big"}, "field 'w': 2 is not a cost weight"),
        ({"id": "math-6", "w": 0.0, "chosen": "gpt-9"}, "field 'chosen': 'gpt-9' is not a model of the set (big, small)"),
        ({"id": "math-6", "w": 0.0, "chosen": "big"}, "query 'math-6' at w=0 is predicted twice (first on line 1)"),
        ({"id": "poem-6", "w": 0.5, "chosen": "big"}, "every cost weight must cover the same test queries; queries per weight: w=0: 1, w=0.5: 1"),
    ],
)
def test_a_model_prediction_that_cannot_be_scored_names_its_line_and_field(tmp_path: Path, line: dict, message: str) -> None:
    models = write_model_set(tmp_path / "set")
    path = _lines(tmp_path / "p.jsonl", [{"id": "math-6", "w": 0.0, "chosen": "big"}, line])
    with pytest.raises(DataError) as caught:
        score_model_predictions(models, path)
    assert message in str(caught.value)
    if "cover" not in message:
        assert f"{path}:2:" in str(caught.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"query": "what is love", "predicted": []}, "field 'query': 'what is love' is not a test or out-of-scope test query"),
        ({"query": "will it rain in lisbon", "predicted": "GetWeather"}, "field 'predicted': expected a list of agent ids"),
        ({"query": "will it rain in lisbon", "predicted": ["GetWheather"]}, "unknown agent id(s) ['GetWheather']"),
        ({"query": "will it rain in lisbon", "predicted": [], "gold": ["PlayMusic"]}, "were the predictions made on another set?"),
        ({"query": "play a song by the beatles", "predicted": ["PlayMusic"]}, "predicted more often than the set holds it"),
    ],
)
def test_an_agent_prediction_that_cannot_be_scored_names_its_line_and_field(tmp_path: Path, line: dict, message: str) -> None:
    agents = write_agent_set(tmp_path / "tiny")
    path = _lines(tmp_path / "p.jsonl", [{"query": "play a song by the beatles", "predicted": ["PlayMusic"]}, line])
    with pytest.raises(DataError) as caught:
        score_agent_predictions(agents, path)
    assert message in str(caught.value) and f"{path}:2:" in str(caught.value)


def test_an_empty_file_or_a_folder_that_is_no_set_is_refused(tmp_path: Path) -> None:
    models = write_model_set(tmp_path / "set")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="holds no predictions"):
        score_predictions(models, tmp_path / "empty.jsonl")
    (tmp_path / "plain").mkdir()
    result = CliRunner().invoke(app, ["bench", "score", "--data", str(tmp_path / "plain"), "--predictions", str(tmp_path / "empty.jsonl")])
    assert result.exit_code == 2 and "neither a model set (models.jsonl) nor an agent set (agents.jsonl)" in result.output
