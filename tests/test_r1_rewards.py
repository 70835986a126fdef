"""Router-R1 rewards against hand-computed cases: every format violation, SQuAD EM/F1, the cost reward's
percentile scaling and the total formula."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestra.routers.r1_rewards import (
    CostNormalizer,
    FormatRules,
    answer_em,
    answer_f1,
    check_format,
    exact_match,
    extract_last_answer,
    f1_score,
    format_reward,
    normalize_answer,
    parse_search,
    score_trajectory,
    total_reward,
    trajectory_cost,
    truncate_tokens,
)

POOL = ["gpt-4", "mistral-7b", "ollama:llama3"]

VALID = (
    "<think>I need the founding year.</think>\n<search>mistral-7b:When was Citibank founded?</search>"
    "\n\n<information>1812</information>\n\n"
    "<think>1812: Madison was president.</think>\n<answer>James Madison</answer>"
)


def test_valid_trajectory_scores_zero() -> None:
    check = check_format(VALID, POOL)
    assert check.reward == 0.0 and check.valid and check.violations == ()


def test_answer_without_search_is_valid() -> None:
    assert format_reward("<think>Easy.</think><answer>Paris</answer>", POOL) == 0.0


@pytest.mark.parametrize(
    ("completion", "violation"),
    [
        ("Paris", "no_tags"),
        ("<think>a</think><answer>Paris</answer><think>", "unbalanced_tags"),
        ("<think>a <answer>x</answer></think><answer>Paris</answer>", "nested_tags"),
        ("<think></think><answer>Paris</answer>", "empty_think"),
        ("<think>...</think><answer>Paris</answer>", "empty_think"),
        ("<think>a</think><answer>Paris</answer><think>b</think><answer>Rome</answer>", "answer_count"),
        ("<think>a</think><search>gpt-4:capital?</search>", "answer_count"),
        ("<answer>Paris</answer>", "missing_think"),
        ("<think>a</think><search>gpt-4:capital of France?</search><answer>Paris</answer>", "search_information_mismatch"),
        ("<information>x</information><think>a</think><answer>Paris</answer>", "not_think_first"),
        ("<think>a</think><answer>Paris</answer> trailing", "not_answer_last"),
        ("<think>a</think><search>capital of France?</search><information>x</information><answer>P</answer>", "malformed_search"),
        ("<think>a</think><search>gpt-4:</search><information>x</information><answer>P</answer>", "malformed_search"),
        ("<think>a</think><search>LLM-Name:Your-Query</search><information>x</information><answer>P</answer>", "malformed_search"),
        ("<think>a</think><search>gpt-4:is gpt-4 good?</search><information>x</information><answer>P</answer>", "malformed_search"),
        ("<think>a</think><search>gpt4:capital?</search><information>x</information><answer>P</answer>", "unknown_model"),
        ("<think>a</think><search>GPT-4:capital?</search><information>x</information><answer>P</answer>", "unknown_model"),
    ],
)
def test_each_violation_gives_minus_one(completion: str, violation: str) -> None:
    check = check_format(completion, POOL)
    assert check.reward == -1.0
    assert violation in check.violations


def test_first_colon_split_keeps_later_colons() -> None:
    request = parse_search(" gpt-4: what is 2:3 as a ratio? ", POOL)
    assert request.ok and request.model == "gpt-4" and request.query == "what is 2:3 as a ratio?"
    completion = f"<think>a</think><search>{request.raw}</search><information>x</information><answer>2/3</answer>"
    assert format_reward(completion, POOL) == 0.0
    # the reference's rule refuses any second colon
    assert format_reward(completion, POOL, FormatRules(single_colon_only=True)) == -1.0


def test_model_id_with_colon_is_matched_exactly() -> None:
    request = parse_search("ollama:llama3:Who wrote Hamlet?", POOL)
    assert request.model == "ollama:llama3" and request.query == "Who wrote Hamlet?"
    assert parse_search("ollama:Who wrote Hamlet?", POOL).problem == "unknown_model"


def test_unknown_model_detail_names_the_pool() -> None:
    request = parse_search("gpt-5:capital?", POOL)
    assert request.problem == "unknown_model" and "gpt-5" in request.detail and "mistral-7b" in request.detail


def test_squad_normalisation_em_and_f1() -> None:
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("An apple, a day") == "apple day"
    assert exact_match("the Beatles.", ["Beatles"]) == 1.0
    assert exact_match("Beatles band", ["Beatles"]) == 0.0
    # precision 1/2, recall 1/1 -> F1 = 2/3
    assert f1_score("Beatles band", "the Beatles") == pytest.approx(2 / 3)
    # yes/no answers score only when equal
    assert f1_score("yes indeed", "yes") == 0.0
    assert f1_score("no", "no") == 1.0


def test_last_answer_is_scored() -> None:
    completion = "<answer>Rome</answer> then <answer>James Madison</answer>"
    assert extract_last_answer(completion) == "James Madison"
    assert answer_em(completion, ["james madison"]) == 1.0
    assert answer_f1("<answer>President James Madison</answer>", ["james madison"]) == pytest.approx(0.8)
    assert answer_em("no answer here", ["x"]) == 0.0


def test_trajectory_cost_uses_completion_tokens_times_output_price() -> None:
    # 100 tokens at $2/Mtok + 50 tokens at $10/Mtok + a recorded call of unknown price costing $0.001
    cost = trajectory_cost([(100, 2.0, None), (50, 10.0, 999.0), (7, None, 0.001), (9, None, None)])
    assert cost == pytest.approx(100 * 2e-6 + 50 * 10e-6 + 0.001)


def test_cost_reward_percentiles_by_hand() -> None:
    normalizer = CostNormalizer(window=1000)
    assert normalizer(4.0) == 0.5  # one cost: no spread
    # window sqrt costs [2, 1]: p5 = 1.05, p95 = 1.95; sqrt(1) = 1 is below p5 -> clipped -> reward 1
    assert normalizer(1.0) == 1.0
    # window [2, 1, 3]: p5 = 1.1, p95 = 2.9; sqrt(9) = 3 above p95 -> reward 0
    assert normalizer(9.0) == 0.0
    # window [2, 1, 3, 2]: p5 = 1.15, p95 = 2.85 -> 1 - (2 - 1.15) / 1.7 = 0.5
    assert normalizer(4.0) == pytest.approx(0.5)
    assert list(normalizer.window) == [2.0, 1.0, 3.0, 2.0]


def test_cost_reward_matches_numpy_percentiles_over_a_window() -> None:
    rng = np.random.default_rng(0)
    normalizer = CostNormalizer(window=20)
    costs = rng.uniform(0, 0.01, size=50)
    for cost in costs[:-1]:
        normalizer(float(cost))
    reward = normalizer(float(costs[-1]))
    window = np.sqrt(costs[-20:])
    lo, hi = np.percentile(window, 5), np.percentile(window, 95)
    expected = 1 - float(np.clip((math.sqrt(costs[-1]) - lo) / (hi - lo), 0, 1))
    assert reward == pytest.approx(expected)
    assert len(normalizer.window) == 20


def test_total_reward_formula() -> None:
    assert total_reward(-1.0, 1.0, 1.0, alpha=0.3) == -1.0  # format failure wins
    assert total_reward(0.0, 0.0, 1.0, alpha=0.3) == 0.0  # wrong answer: cost does not count
    assert total_reward(0.0, 1.0, 0.25, alpha=0.0) == 1.0
    assert total_reward(0.0, 1.0, 0.25, alpha=0.4) == pytest.approx(0.6 + 0.1)
    with pytest.raises(ValueError, match="alpha"):
        total_reward(0.0, 1.0, 0.5, alpha=1.5)


def test_score_trajectory_breakdown() -> None:
    normalizer = CostNormalizer()
    normalizer(0.0)
    result = score_trajectory(VALID, ["James Madison"], POOL, cost_raw=0.0, normalizer=normalizer, alpha=0.5)
    assert result.format == 0.0 and result.em == 1.0 and result.answer == "James Madison"
    assert result.cost_reward == 0.5  # no spread in the window
    assert result.total == pytest.approx(0.5 + 0.25)
    broken = score_trajectory("<answer>James Madison</answer>", ["James Madison"], POOL, cost_raw=0.0, normalizer=normalizer)
    assert broken.total == -1.0 and "missing_think" in broken.violations


def test_truncate_tokens() -> None:
    text, cut = truncate_tokens("one two, three four", 3)
    assert (text, cut) == ("one two,", True)
    assert truncate_tokens("short", 600) == ("short", False)
