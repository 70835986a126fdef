"""Fused evaluation: option extraction from recorded responses, the weighted vote, scoring against the options of
correct responses, lenient loading of model sets, and the real RouterBench responses when the data is there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from orchestra.bench.fusion import extract_option, fuse_options, fuse_rows, load_fusion_set, option_letters
from orchestra.bench.models import ModelOutcome, ModelQuery

# the toy sets here score routers on their training rows, on purpose
pytestmark = pytest.mark.filterwarnings("ignore:.*are in both train.jsonl and test.jsonl")

ARC = "Which gas do plants take in?\nA) oxygen\nB) carbon dioxide\nC) helium\nD) neon\nPrint only a single choice.\nAnswer:"
WINO = "Sarah was a better surgeon than Maria so _ got the harder cases.\nA) Maria\nB) Sarah\nAnswer:"


def test_option_letters_detect_multiple_choice_in_the_last_block() -> None:
    assert option_letters("Example?\nA) x\nB) y\nAnswer: A\n\n" + ARC) == "ABCD"
    assert option_letters(WINO) == "AB"
    assert option_letters("Write a python function to identify non-prime numbers.") == ""


@pytest.mark.parametrize(
    ("response", "letters", "expected"),
    [
        ("['B']", "ABCD", "B"),
        ("['A\\n']", "AB", "A"),
        ("['A)']", "AB", "A"),
        ("(C) helium", "ABCD", "C"),
        ("The answer is D.", "ABCD", "D"),
        ("['I do']", "ABCD", None),
        ("['Unfortunately I']", "ABCD", None),
        ("['C']", "AB", None),  # not an option of a two-option question
        ("", "AB", None),
        (None, "AB", None),
        ("Both A) and B) fit", "AB", None),
    ],
)
def test_extract_option(response: str | None, letters: str, expected: str | None) -> None:
    assert extract_option(response, letters) == expected


def test_weighted_vote_sums_weights_and_breaks_ties_by_order() -> None:
    assert fuse_options(["A", "B", "B"], [0.5, 0.3, 0.3]) == ("B", {"A": 0.5, "B": 0.6})
    assert fuse_options(["A", "B"], [0.4, 0.4])[0] == "A"
    assert fuse_options(["A", None, None], [0.1, 0.5, 0.4])[0] == "A"
    assert fuse_options([None, None], [0.5, 0.5]) == (None, {})


def _row(query: str, responses: dict[str, tuple[str, float]], task: str = "t") -> ModelQuery:
    outcomes = {m: ModelOutcome(score=s, cost=0.001, response=r) for m, (r, s) in responses.items()}
    return ModelQuery(id=query[:10], query=query, task=task, outcomes=outcomes)


def test_fuse_rows_scores_votes_against_correct_responses_and_top1_elsewhere() -> None:
    models = ["strong", "mid", "weak"]
    rows = [
        _row(ARC, {"strong": ("['A']", 0.0), "mid": ("['B']", 1.0), "weak": ("['B']", 1.0)}),
        _row(WINO, {"strong": ("['I do']", 0.0), "mid": ("['I do']", 0.0), "weak": ("['B']", 1.0)}),
        _row("Write a python function.", {"strong": ("def f(): ...", 1.0), "mid": ("x", 0.0), "weak": ("y", 0.0)}, "mbpp"),
    ]
    weights = np.array([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    records, summary = fuse_rows(rows, models, weights, 3)
    assert records[0]["fused"] == "A" and records[0]["correct"] == 0.0  # A 0.5 against B 0.3 + 0.2: a tie goes to the first
    assert records[1]["fused"] == "B" and records[1]["no_option"] == 2 and records[1]["correct"] == 1.0
    assert records[2]["kind"] == "top1" and records[2]["chosen"][0] == "mid" and records[2]["correct"] == 0.0
    assert summary["n_vote"] == 2 and summary["fused_accuracy_vote"] == 0.5 and summary["no_option_responses"] == 2
    _, top1 = fuse_rows(rows, models, weights, 1)
    assert top1["no_answer_queries"] == 1  # the strong model's "I do" casts no vote
    shifted = np.array([[0.4, 0.35, 0.25], [0.6, 0.3, 0.1], [0.6, 0.3, 0.1]])
    assert fuse_rows(rows, models, shifted, 3)[0][0]["fused"] == "B"
    assert fuse_rows(rows, models, shifted, 3)[1]["quality_all"] == 1.0


def test_lenient_loading_records_models_without_description(tmp_path: Path) -> None:
    (tmp_path / "models.jsonl").write_text(
        json.dumps({"id": "a", "description": "model a"}) + "\n" + json.dumps({"id": "b", "description": ""}) + "\n"
    )
    row = {"id": "1", "query": WINO, "task": "winogrande",
           "outcomes": {"a": {"score": 1, "cost": 0.1, "response": "B"}, "b": {"score": 0, "response": "A"}}}
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text(json.dumps(row) + "\n")
    cards, train, test, facts = load_fusion_set(tmp_path)
    assert facts["undescribed"] == ["b"] and cards[1].description == "b"
    assert test[0].outcomes["b"].cost is None  # no price, nothing measured: unknown, never 0


def test_fusion_bench_refuses_bad_options_before_training(tmp_path: Path) -> None:
    from orchestra.bench.fusion import run_fusion_bench
    from orchestra.errors import ConfigurationError, DataError

    (tmp_path / "models.jsonl").write_text("".join(json.dumps({"id": m, "description": f"model {m}"}) + "\n" for m in "ab"))
    row = {"id": "1", "query": WINO, "task": "winogrande",
           "outcomes": {"a": {"score": 1, "cost": 0.1, "response": "B"}, "b": {"score": 0, "cost": 0.1, "response": "A"}}}
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text(json.dumps(row) + "\n")
    for kwargs, error, match in [
        ({"ks": (1, 3)}, DataError, "the set has 2 models, so k can be at most 2"),
        ({"limit": -1}, DataError, "--limit must be 1 or more"),
        ({"predictions": tmp_path / "test.jsonl"}, ConfigurationError, "inside the data folder"),
        ({"router_name": "set", "ks": (1,)}, DataError, "not a model router"),
    ]:
        with pytest.raises(error, match=match):
            run_fusion_bench(tmp_path, **kwargs)


DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "models" / "routerbench" / "test.jsonl"


@pytest.mark.skipif(not DATA.exists(), reason="RouterBench data not present")
def test_every_correct_routerbench_response_has_an_extractable_option() -> None:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    checked = 0
    for row in rows:
        letters = option_letters(row["query"])
        if row["task"] == "mbpp":
            assert letters == ""
            continue
        assert letters == ("AB" if row["task"] == "winogrande" else "ABCD"[: len(letters)])
        for outcome in row["outcomes"].values():
            if outcome["score"] >= 1.0:
                assert extract_option(outcome["response"], letters) is not None, outcome["response"]
                checked += 1
    assert checked > 5000


def test_unknown_costs_stay_unknown_in_the_fused_report_and_a_price_only_router_is_refused(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich would fold the table's title
    from orchestra.bench.fusion import _print_report, run_fusion_bench
    from orchestra.errors import DataError

    (tmp_path / "models.jsonl").write_text(
        json.dumps({"id": "a", "description": "model a", "input_price_per_mtok": 1.0, "output_price_per_mtok": 1.0})
        + "\n" + json.dumps({"id": "b", "description": "model b"}) + "\n"
    )
    rows = [{"id": str(i), "query": WINO, "task": "winogrande", "outcomes": {
        "a": {"score": float(i % 2), "response": "B" if i % 2 else "A"}, "b": {"score": 1.0, "response": "B"}}} for i in range(8)]
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = run_fusion_bench(tmp_path, "best-single", ks=(1, 2))
    by_k = {row["k"]: row for row in report["fused"]}
    assert by_k[2]["cost_usd"] is None  # b's cost is unknown: never counted as $0
    assert report["cost"] == "estimated"  # a's costs come from its prices
    _print_report(report)
    out = capsys.readouterr().out
    assert "unknown" in out and "estimated cost" in out
    with pytest.raises(DataError, match="predicts no quality"):
        run_fusion_bench(tmp_path, "largest", ks=(1,))
