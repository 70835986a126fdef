"""Router-R1: strict parsing, a scripted multi-round trajectory through the runtime and the recorded pool,
constrained turns, and the bounded failure paths (never answers, 10k-token think, loops, unknown models)."""

from __future__ import annotations

import json
import pickle
import re
from typing import Any
from pathlib import Path

import pytest

from orchestra.cards import ModelCard
from orchestra.errors import ConfigurationError, DecisionError, PolicyError
from orchestra.model import Message
from orchestra.policies import Budget
from orchestra.routers.r1_rewards import check_format
from orchestra.routers.recorded_pool import NO_RECORD, RecordedPool, final_question, recorded_text
from orchestra.routers.router_r1 import R1_POOL_AGENT_ID, POOL_SYSTEM_PROMPT, RouterR1, pool_agent_card, turn_schema
from orchestra.routing import Call, Dispatch, Finish, Observation, RouterState, load_router
from orchestra.runtime import Orchestra
from orchestra.testing import InMemoryStore, ScriptedModel

ROUTER = ModelCard(id="router-lm", description="the router model")
POOL_CARDS = [
    ModelCard(id="small-lm", description="A small cheap model.", output_price_per_mtok=0.2, typical_latency_ms=300),
    ModelCard(id="big-lm", description="A strong expensive model.", output_price_per_mtok=10.0),
]

PROMPT = (
    "Answer with a letter.\nWhat is 2+2?\nA) 3\nB) 4\nPrint only a single choice  from \"A\" or \"B\".\nAnswer:\nB"
    "\n\nWhich planet is called the red planet?\nA) Venus\nB) Mars\nC) Jupiter\nD) Saturn\n"
    "Print only a single choice  from \"A\" or \"B\" or \"C\" or \"D\" without explanation.\nAnswer:"
)
ROWS = [
    {
        "id": "arc.test.7",
        "query": PROMPT,
        "task": "arc-challenge",
        "outcomes": {
            "small-lm": {"score": 0.0, "cost": 0.0001, "response": "['A']"},
            "big-lm": {"score": 1.0, "cost": 0.004, "response": "['B']"},
        },
    },
    {
        "id": "wino.test.3",
        "query": "Sarah was a much better surgeon than Maria so _ always got the harder cases.\nA) Maria\nB) Sarah\nAnswer:",
        "task": "winogrande",
        "outcomes": {"small-lm": {"score": 1.0, "cost": 0.0002, "response": "['B']"}},
    },
]
MODELS = [{"id": "small-lm", "description": "A small cheap model.", "mean_cost_per_query_usd": 0.0001},
          {"id": "big-lm", "description": "A strong expensive model.", "mean_cost_per_query_usd": 0.004}]


@pytest.fixture(scope="module")
def pool() -> RecordedPool:
    return RecordedPool(ROWS, MODELS)


def _app(router_model: ScriptedModel, pool: RecordedPool) -> Orchestra:
    models = {ROUTER.id: router_model}
    app = Orchestra(store=InMemoryStore(), model_factory=lambda card, retry: models[card.id])
    app.registry.add_model(ROUTER)
    for card in POOL_CARDS:
        app.registry.add_model(card)
    app.registry.add_agent(pool_agent_card(), implementation=pool)
    return app


def _info_blocks(messages: list[Message]) -> list[str]:
    """Information blocks the router was shown (the opening prompt, which names the tags, excluded)."""
    shown = [m.content for m in messages if not m.content.lstrip().startswith("You answer the user's question")]
    return re.findall(r"<information>(.*?)</information>", "\n".join(shown), re.S)


# -- parsing ---------------------------------------------------------------------------------------------------


def _state(router_model: ScriptedModel, observations: tuple[Observation, ...] = (), **kw: object) -> RouterState:
    class Access:
        def chat(self, model_id, messages, options=None, *, purpose=""):  # noqa: ANN001, ANN202
            return router_model.chat(messages, options)

        async def achat(self, model_id, messages, options=None, *, purpose=""):  # noqa: ANN001, ANN202
            return router_model.chat(messages, options)

    return RouterState(
        query="What is 2:3 as a fraction?", agents=(pool_agent_card(),), models=(ROUTER, *POOL_CARDS),
        registry_version=1, observations=observations, model_access=Access(), run_id="run-1", **kw,  # type: ignore[arg-type]
    )


def test_colon_inside_the_query_is_kept() -> None:
    model = ScriptedModel("router-lm", ["<think>Ask the big one.</think>\n<search>big-lm:What is 2:3 as a fraction? Use a:b notation.</search>"])
    decision = RouterR1("router-lm").decide(_state(model))
    assert isinstance(decision, Dispatch)
    (call,) = decision.calls
    assert call.agent_id == R1_POOL_AGENT_ID and call.model_id == "big-lm"
    assert call.query == "What is 2:3 as a fraction? Use a:b notation."
    assert decision.rationale == "Ask the big one."
    assert [s.id for s in decision.scores][0] == "big-lm"


def test_stop_string_dropped_by_server_is_restored_and_rest_cut() -> None:
    model = ScriptedModel("router-lm", ["<think>t</think><search>small-lm:q one"])
    decision = RouterR1("router-lm").decide(_state(model))
    assert isinstance(decision, Dispatch) and decision.calls[0].query == "q one"
    assert decision.meta["transcript"].endswith("</search>")
    _, options = model.calls[0]
    assert options.stop == ("</search>", "</answer>") and options.temperature == 0.0


def test_prompt_lists_the_pool_with_prices_and_the_question() -> None:
    model = ScriptedModel("router-lm", ["<think>easy</think><answer>2/3</answer>"])
    decision = RouterR1("router-lm").decide(_state(model))
    assert isinstance(decision, Finish) and decision.answer == "2/3"
    prompt = model.calls[0][0][0].content
    assert "small-lm: A small cheap model. ($0.2 per million output tokens; typical latency 300 ms)" in prompt
    assert "big-lm" in prompt and "router-lm:" not in prompt
    assert prompt.rstrip().endswith("Question: What is 2:3 as a fraction?")
    assert decision.meta["format_violations"] == []


def test_unknown_model_gets_information_and_is_recorded() -> None:
    model = ScriptedModel("router-lm", [
        "<think>Ask GPT.</think><search>gpt-9:What is 2:3?</search>",
        "<think>Use a real one.</think><search>small-lm:What is 2:3?</search>",
    ])
    decision = RouterR1("router-lm").decide(_state(model))
    assert isinstance(decision, Dispatch) and decision.calls[0].model_id == "small-lm"
    assert decision.meta["unknown_models"] == ["gpt-9"]
    assert any(v["problem"] == "unknown_model" for v in decision.meta["format_violations"])
    second_prompt = model.calls[1][0]
    assert "no model named 'gpt-9'" in _info_blocks(second_prompt)[0]


def test_nested_tags_are_a_recorded_violation() -> None:
    model = ScriptedModel("router-lm", ["<think>x</think><answer>see <think>y</think> 2/3</answer>"])
    decision = RouterR1("router-lm").decide(_state(model))
    assert isinstance(decision, Finish)
    assert decision.meta["format_valid"] is False
    assert "nested_tags" in decision.meta["trajectory_format"]


# -- a scripted trajectory through the runtime and the recorded pool --------------------------------------------


def test_multi_round_trajectory_through_runtime_and_recorded_pool(pool: RecordedPool) -> None:
    question = final_question(PROMPT)

    def script(messages: list[Message]) -> str:
        turns = sum(m.role == "assistant" for m in messages)
        if turns == 0:
            return f"<think>Cheap model first.</think>\n<search>small-lm:{question}</search>"
        if turns == 1:
            return "<think>It said A; I am unsure, ask the strong model.</think>\n<search>big-lm:Which planet is called the red planet? A) Venus B) Mars</search>"
        return "<think>The strong model says B, Mars.</think>\n<answer>B</answer>"

    router_model = ScriptedModel("router-lm", script)
    app = _app(router_model, pool)
    pool.bind("", "arc.test.7")
    try:
        result = app.workflow(RouterR1("router-lm"), budget=Budget(max_rounds=5)).run(question)
    finally:
        pool.unbind("")
    assert result.status == "ok" and result.answer == "B"
    assert [d.kind for d in result.decisions] == ["dispatch", "dispatch", "finish"]
    assert [(o.model_id, o.answer) for o in result.observations] == [("small-lm", "A"), ("big-lm", "B")]
    assert sum(o.cost_usd or 0 for o in result.observations) == pytest.approx(0.0041)
    finish = result.decisions[-1]
    assert finish.meta["format_valid"] is True and finish.meta["rounds"] == 2
    assert finish.meta["consulted"] == ["small-lm", "big-lm"]
    assert check_format(finish.meta["transcript"], ["small-lm", "big-lm"]).valid
    # the third router call saw both answers as information blocks
    assert _info_blocks(router_model.calls[2][0]) == ["A", "B"]


def test_the_pool_comes_with_the_router_and_no_other_router_sees_it() -> None:
    """Nothing registers the pool from the CLI or the UI: every router-r1 chat failed with 'unknown agent
    router-r1:pool'. The pool is the router's own agent, so a registry of the user's team is enough."""
    from orchestra import AgentCard, PassThrough

    def script(messages: list[Message]) -> str:
        if not any(m.role == "assistant" for m in messages):
            return "<think>Ask the small model.</think>\n<search>small-lm:Which planet is red?</search>"
        return "<think>It says Mars.</think>\n<answer>Mars</answer>"

    models = {"router-lm": ScriptedModel("router-lm", script), "small-lm": ScriptedModel("small-lm", ["Mars."])}
    app = Orchestra(store=InMemoryStore(), model_factory=lambda card, retry: models[card.id])
    for card in (ROUTER, *POOL_CARDS):
        app.registry.add_model(card)
    app.registry.add_agent(AgentCard(id="team", description="the user's agent"), implementation=lambda q: "team answer")
    result = app.workflow(RouterR1("router-lm"), budget=Budget(max_rounds=5)).run("Which planet is red?")
    assert result.status == "ok" and result.answer == "Mars"
    assert [(o.agent_id, o.model_id, o.answer) for o in result.observations] == [(R1_POOL_AGENT_ID, "small-lm", "Mars.")]
    everyone = app.workflow("all", aggregator=PassThrough()).run("hello")
    assert [o.agent_id for o in everyone.observations] == ["team"]


def test_trajectory_is_rebuilt_from_observations_for_a_fresh_router() -> None:
    observations = (Observation(agent_id=R1_POOL_AGENT_ID, query="What is 2:3?", answer="two thirds", round=0, model_id="small-lm"),)
    model = ScriptedModel("router-lm", ["<think>ok</think><answer>2/3</answer>"])
    decision = RouterR1("router-lm").decide(_state(model, observations, round=1))
    assert isinstance(decision, Finish) and decision.meta["rebuilt"] is True
    messages = model.calls[0][0]
    assert "<search>small-lm:What is 2:3?</search>" in messages[1].content
    assert _info_blocks(messages) == ["two thirds"]


def test_observations_are_cut_to_600_tokens() -> None:
    long = " ".join(f"w{i}" for i in range(2000))
    observations = (Observation(agent_id=R1_POOL_AGENT_ID, query="q", answer=long, round=0, model_id="small-lm"),)
    model = ScriptedModel("router-lm", ["<think>ok</think><answer>x</answer>"])
    RouterR1("router-lm").decide(_state(model, observations, round=1))
    (block,) = _info_blocks(model.calls[0][0])
    assert block.split()[-1] == "w599" and len(block.split()) == 600


# -- constrained turns -----------------------------------------------------------------------------------------


def test_constrained_turn_is_rendered_to_tags() -> None:
    turn = {"think": "Ask the small one.", "action": "search", "model": "small-lm", "query": "What is 2:3?", "answer": ""}
    model = ScriptedModel("router-lm", [json.dumps(turn)])
    decision = RouterR1("router-lm", constrained=True).decide(_state(model))
    assert isinstance(decision, Dispatch) and decision.calls[0].query == "What is 2:3?"
    assert decision.meta["transcript"] == "<think>Ask the small one.</think>\n<search>small-lm:What is 2:3?</search>"
    schema = model.calls[0][1].json_schema
    assert schema == turn_schema(["small-lm", "big-lm"])
    assert schema["properties"]["model"]["enum"] == ["small-lm", "big-lm"]
    think = re.compile(schema["properties"]["think"]["pattern"])
    assert think.search("Ask the small one.") and not think.search("x <search>y") and not think.search('a "quote"')
    assert model.calls[0][1].stop == ()


def test_a_constrained_turn_as_long_as_the_schema_allows_is_never_cut_off() -> None:
    """A 135M router model repeating digits filled its think to 400 characters, a token each, and was cut off at
    512 tokens before its JSON closed: a format violation the grammar was meant to rule out. By default a
    constrained turn may hold every field at its bound, at a token per character."""

    class TokenPerCharacter(ScriptedModel):
        def chat(self, messages: Any, options: Any = None) -> Any:
            result = super().chat(messages, options)
            cut = len(result.text) > options.max_tokens
            text = result.text[: options.max_tokens] if cut else result.text
            return result.model_copy(update={"text": text, "completion_tokens": len(text), "finish_reason": "length" if cut else "stop"})

    longest = {"think": "2019" * 100, "action": "search", "model": "small-lm", "query": "7" * 300, "answer": "8" * 200}
    model = TokenPerCharacter("router-lm", [json.dumps(longest)])
    decision = RouterR1("router-lm", constrained=True).decide(_state(model))
    assert isinstance(decision, Dispatch) and decision.calls[0].query == "7" * 300
    assert decision.meta["format_violations"] == []
    assert model.calls[0][1].max_tokens == 400 + 300 + 200 + len("small-lm") + 128
    free = ScriptedModel("router-lm", ["<think>t</think><answer>x</answer>"])
    RouterR1("router-lm", constrained=False).decide(_state(free))
    assert free.calls[0][1].max_tokens == 512  # free turns stop at their closing tag: 512 as before
    assert RouterR1("router-lm", max_turn_tokens=300).turn_tokens(["small-lm"], constrained=True) == 300  # given, kept


def test_null_fields_of_a_json_turn_are_format_violations_not_the_string_none() -> None:
    router = RouterR1("router-lm")
    answer = router._parse_json('{"think": null, "action": "answer", "answer": null}', ["small-lm"])
    assert answer.answer is None and "None" not in answer.text
    assert "field 'answer' is null, not a string" in answer.problems and "field 'think' is null, not a string" in answer.problems
    search = router._parse_json('{"think": "t", "action": "search", "model": null, "query": 7}', ["small-lm"])
    assert search.searches == [] and "None" not in search.text
    assert {"field 'model' is null, not a string", "field 'query' is int, not a string"} <= set(search.problems)
    # through a decision: an invalid turn, corrected, then the real answer
    model = ScriptedModel("router-lm", [
        json.dumps({"think": "t", "action": "answer", "model": "small-lm", "query": "", "answer": None}),
        json.dumps({"think": "t", "action": "answer", "model": "small-lm", "query": "", "answer": "2/3"}),
    ])
    decision = RouterR1("router-lm", constrained=True).decide(_state(model))
    assert isinstance(decision, Finish) and decision.answer == "2/3"
    assert "field 'answer' is null" in model.calls[1][0][-1].content


def test_forced_answer_turn_after_max_rounds() -> None:
    search = {"think": "again", "action": "search", "model": "small-lm", "query": "q", "answer": ""}
    answer = {"think": "done", "action": "answer", "model": "small-lm", "query": "", "answer": "2/3"}
    model = ScriptedModel("router-lm", [json.dumps(search), json.dumps(answer)])
    router = RouterR1("router-lm", constrained=True, max_rounds=1)
    first = router.decide(_state(model))
    assert isinstance(first, Dispatch)
    obs = (Observation(agent_id=R1_POOL_AGENT_ID, query="q", answer="maybe", round=0, model_id="small-lm"),)
    final = router.decide(_state(model, obs, round=1))
    assert isinstance(final, Finish) and final.meta["forced_answer"] is True
    assert model.calls[1][1].json_schema["properties"]["action"]["enum"] == ["answer"]
    assert "Give your final answer now" in model.calls[1][0][-1].content


def test_only_turns_that_consulted_count_as_rounds_and_consulted() -> None:
    # a refused search (unknown model) uses up no round: with one allowed, the next search is still dispatched
    model = ScriptedModel("router-lm", [
        "<think>Ask GPT.</think><search>gpt-9:What is 2:3?</search>",
        "<think>Use a real one.</think><search>small-lm:What is 2:3?</search>",
        "<think>Again.</think><search>big-lm:What is 2:3 really?</search>",
        "<think>Done.</think><answer>2/3</answer>",
    ])
    router = RouterR1("router-lm", max_rounds=1)
    first = router.decide(_state(model))
    assert isinstance(first, Dispatch) and first.calls[0].model_id == "small-lm"
    assert first.meta["rounds"] == 1 and first.meta["consulted"] == ["small-lm"]
    # a search on the forced round is refused: it consulted nobody, and the notice counts the one real round
    obs = (Observation(agent_id=R1_POOL_AGENT_ID, query="What is 2:3?", answer="two thirds", round=0, model_id="small-lm"),)
    final = router.decide(_state(model, obs, round=1))
    assert isinstance(final, Finish) and final.answer == "2/3"
    assert final.meta["rounds"] == 1 and final.meta["consulted"] == ["small-lm"]
    assert "consulted models 1 times" in model.calls[3][0][-1].content


# -- bounded failures ------------------------------------------------------------------------------------------


def test_router_that_never_answers_is_a_typed_error_and_the_run_is_kept(pool: RecordedPool) -> None:
    loop = ScriptedModel("router-lm", ["<think>ask again</think><search>small-lm:Which planet is red?</search>"])
    app = _app(loop, pool)
    result = app.workflow(RouterR1("router-lm", max_rounds=2, max_invalid_turns=1), budget=Budget(max_rounds=6)).run("Which planet is red?")
    assert result.status == "error" and isinstance(result.error, DecisionError)
    assert "max_invalid_turns" in str(result.error)
    assert len(result.observations) == 2  # two consultations, then only forced-answer turns that searched again
    assert app.store.get_run(result.run_id).run.status == "error"
    trajectory = result.error.trajectory  # type: ignore[attr-defined]
    assert trajectory["forced_answer"] is True and trajectory["format_valid"] is False


def test_the_decision_error_carries_a_json_summary_of_the_trajectory_in_details(pool: RecordedPool) -> None:
    loop = ScriptedModel("router-lm", ["<think>ask again</think><search>small-lm:Which planet is red?</search>"])
    result = _app(loop, pool).workflow(RouterR1("router-lm", max_rounds=1, max_invalid_turns=1), budget=Budget(max_rounds=4)).run("Which planet is red?")
    assert isinstance(result.error, DecisionError)
    details = result.error.details  # type: ignore[attr-defined]
    assert json.loads(json.dumps(details)) == details
    assert details["forced"] is True and details["turns"] == 3 and details["consulted"] == ["small-lm"]
    assert [v["problem"] for v in details["violations"]] == ["searched after the last allowed round"] * 2
    assert pickle.loads(pickle.dumps(result.error)).details == details  # it crosses process pools too


def test_ten_thousand_token_think_is_bounded() -> None:
    def endless(messages: list[Message]) -> str:
        return "<think>" + "hmm " * 10_000

    model = ScriptedModel("router-lm", endless)
    with pytest.raises(DecisionError, match="without a valid search or answer") as caught:
        RouterR1("router-lm", max_invalid_turns=2).decide(_state(model))
    assert len(model.calls) == 3
    assert all(options.max_tokens == 512 for _, options in model.calls)
    assert caught.value.trajectory["format_violations"]  # type: ignore[attr-defined]


def test_only_unknown_models_is_bounded() -> None:
    model = ScriptedModel("router-lm", ["<think>t</think><search>nobody:q</search>"])
    with pytest.raises(DecisionError) as caught:
        RouterR1("router-lm", max_invalid_turns=3).decide(_state(model))
    assert caught.value.trajectory["unknown_models"] == ["nobody"] * 4  # type: ignore[attr-defined]


def test_runtime_budget_forces_the_answer() -> None:
    model = ScriptedModel("router-lm", ["<think>t</think><answer>x</answer>"])
    RouterR1("router-lm").decide(_state(model, budget_left={"rounds": 1}))
    assert "Give your final answer" not in model.calls[0][0][-1].content  # no earlier turn to attach the notice to
    model2 = ScriptedModel("router-lm", ["<think>t</think><search>small-lm:q</search>", "<think>t</think><answer>x</answer>"])
    decision = RouterR1("router-lm", max_invalid_turns=1).decide(_state(model2, budget_left={"rounds": 1}))
    assert isinstance(decision, Finish) and decision.meta["forced_answer"] is True


def _searches_until_forced(messages: list[Message]) -> str:
    """A router model that consults the small model every turn until it is told to answer."""
    if "final answer now" in messages[-1].content:
        return "<think>Told to answer.</think><answer>A</answer>"
    return "<think>Ask again.</think><search>small-lm:Which planet is called the red planet?</search>"


@pytest.mark.parametrize(
    ("budget", "consultations"),
    [
        (Budget(max_rounds=6, max_calls=2), 2),  # no call left for a third consultation
        # a round costs about $0.0003 (a router turn of ~200 words at $1/M, $0.0001 per consultation): after two,
        # $0.0003 is left, less than a search turn, its consultation and the answer turn would take
        (Budget(max_rounds=6, max_cost_usd=0.0009), 2),
        # the same in tokens (router turns of about 200, consultations of 9): after two rounds (391) 309 are left,
        # less than the ~400 another round would take; the answer turn (~230) still fits
        (Budget(max_rounds=6, max_tokens=700), 2),
    ],
)
def test_the_runs_budget_forces_the_answer_while_it_can_be_paid(pool: RecordedPool, budget: Budget, consultations: int) -> None:
    router_model = ScriptedModel("router-lm", _searches_until_forced, input_price_per_mtok=1.0, output_price_per_mtok=1.0)
    app = _app(router_model, pool)
    pool.bind("", "arc.test.7")
    try:
        result = app.workflow(RouterR1("router-lm", max_rounds=4), budget=budget).run("Which planet is called the red planet?")
    finally:
        pool.unbind("")
    assert result.status == "ok" and result.answer == "A", result.error
    assert len(result.observations) == consultations
    finish = result.decisions[-1]
    assert finish.meta["forced_answer"] is True and finish.meta["rounds"] == consultations
    assert "budget leaves no room" in router_model.calls[-1][0][-1].content
    if budget.max_cost_usd is not None:
        assert result.cost_usd is not None and result.cost_usd <= budget.max_cost_usd
    if budget.max_tokens is not None:
        assert result.prompt_tokens + result.completion_tokens <= budget.max_tokens


def test_time_left_below_a_rounds_estimate_forces_the_answer() -> None:
    # the last consultation took 2 s: with 1.5 s left another round would not fit
    observations = (Observation(agent_id=R1_POOL_AGENT_ID, query="q", answer="a", round=0, model_id="small-lm", latency_ms=2000),)
    model = ScriptedModel("router-lm", ["<think>t</think><search>big-lm:q2</search>", "<think>t</think><answer>x</answer>"])
    decision = RouterR1("router-lm", max_invalid_turns=1).decide(_state(model, observations, round=1, budget_left={"seconds": 1.5}))
    assert isinstance(decision, Finish) and decision.meta["forced_answer"] is True
    assert model.calls[0][1].stop and "budget leaves no room" in model.calls[0][0][-1].content
    roomy = ScriptedModel("router-lm", ["<think>t</think><search>big-lm:q2</search>"])
    assert isinstance(RouterR1("router-lm").decide(_state(roomy, observations, round=1, budget_left={"seconds": 30.0})), Dispatch)


def test_no_pool_is_a_decision_error() -> None:
    with pytest.raises(DecisionError, match="no model to consult"):
        RouterR1("router-lm", pool=["absent"]).decide(_state(ScriptedModel("router-lm")))


def test_with_no_other_model_the_router_consults_its_own() -> None:
    """The default team has one model: router-r1 on it said 'no model to consult' at every message."""
    state = RouterState(query="q", agents=(), models=(ROUTER,), registry_version=1)
    assert [card.id for card in RouterR1("router-lm").pool(state)] == ["router-lm"]
    both = RouterState(query="q", agents=(), models=(ROUTER, *POOL_CARDS), registry_version=1)
    assert "router-lm" not in [card.id for card in RouterR1("router-lm").pool(both)]


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_rounds", 0), ("temperature", -3), ("temperature", float("nan")), ("max_turn_tokens", 0),
     ("max_invalid_turns", -1), ("observation_tokens", -5), ("max_think_chars", 1), ("max_query_chars", 0),
     ("max_answer_chars", 0), ("pool", []), ("pool", "small-lm"), ("format_rules", {"strict": True})],
)
def test_options_out_of_range_are_refused_when_built(option: str, value: object) -> None:
    with pytest.raises(PolicyError, match=f"RouterR1 '{option}'") as caught:
        RouterR1("router-lm", **{option: value})  # type: ignore[arg-type]
    assert repr(value) in str(caught.value) or option == "format_rules"
    # refused by name too, as the CLI and replay build it (a string pool already by the option's type check)
    with pytest.raises(ConfigurationError, match=f"'{option}'"):
        load_router("router-r1", router_model="router-lm", **{option: value})


# -- the recorded pool -----------------------------------------------------------------------------------------


def test_recorded_pool_answers_by_question_and_refuses_honestly(pool: RecordedPool) -> None:
    reply = pool.answer("big-lm", "Which planet is called the red planet? A) Venus B) Mars C) Jupiter")
    assert reply.answer == "B" and reply.cost_usd == 0.004 and reply.meta["row_id"] == "arc.test.7"
    missing = pool.answer("big-lm", "Sarah was a much better surgeon than Maria so _ always got the harder cases.")
    assert missing.answer == NO_RECORD and missing.meta["recorded"] is False
    unrelated = pool.answer("small-lm", "How tall is Mount Everest?")
    assert unrelated.meta["recorded"] is False and unrelated.cost_usd == 0.0
    assert recorded_text("['A\\n']") == "A" and recorded_text("not a list") == "not a list"
    assert "Costs about $0.00400 per query." in pool.model_cards()[1].description
    assert POOL_SYSTEM_PROMPT and pool_agent_card().system_prompt == POOL_SYSTEM_PROMPT


DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "models" / "routerbench"


@pytest.mark.skipif(not (DATA / "test.jsonl").exists(), reason="RouterBench data not present")
def test_bench_with_scripted_router_reproduces_recorded_scores() -> None:
    from orchestra.bench.r1 import run_router_r1_bench

    real = RecordedPool.from_data(DATA, splits=("test",))

    def one_model(messages: list[Message]) -> str:
        if not any(m.role == "assistant" for m in messages):
            return "<think>Ask Mixtral.</think><search>mistralai/mixtral-8x7b-chat:" + messages[0].content.split("Question: ", 1)[1].strip() + "</search>"
        (info,) = _info_blocks(messages[-1:])
        return f"<think>Mixtral answered.</think><answer>{info}</answer>"

    report = run_router_r1_bench(
        DATA, "router-lm", 12, router=RouterR1("router-lm"), router_chat_model=ScriptedModel("router-lm", one_model),
        router_cards=[ROUTER], pool=real,
    )
    rows = {json.loads(line)["id"]: json.loads(line) for line in (DATA / "test.jsonl").open()}
    sample_ids = [r["id"] for r in __import__("random").Random(0).sample(list(rows.values()), 12)]
    expected = sum(rows[i]["outcomes"]["mistralai/mixtral-8x7b-chat"]["score"] for i in sample_ids) / 12
    assert report["overall"]["accuracy"] == pytest.approx(expected)
    assert report["overall"]["format_valid"] == 1.0 and report["overall"]["mean_consultations"] == 1.0


# -- replay ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"max_invalid_turns": 3, "max_think_chars": 50, "temperature": 0.5, "seed": 7}])
def test_a_run_with_the_default_pool_replays_exactly(pool: RecordedPool, options: dict[str, object]) -> None:
    from orchestra import replay

    def script(messages: list[Message]) -> str:
        turns = sum(m.role == "assistant" for m in messages)
        return [
            "I think I should ask someone.",  # out of format: a correction, then the next turn
            "<think>Ask the cheap one.</think><search>small-lm:Which planet is called the red planet?</search>",
            "<think>It said A.</think><answer>A</answer>",
        ][min(turns, 2)]

    router_model = ScriptedModel("router-lm", script, input_price_per_mtok=1.0, output_price_per_mtok=2.0)
    app = _app(router_model, pool)
    router = RouterR1("router-lm", **options)  # type: ignore[arg-type]
    described = router.describe()
    assert described["pool"] is None
    assert RouterR1(**{k: v for k, v in described.items() if k != "name"}).describe() == described
    pool.bind("", "arc.test.7")
    try:
        original = app.workflow(router, budget=Budget(max_rounds=5)).run("Which planet is called the red planet?")
    finally:
        pool.unbind("")
    assert original.status == "ok" and original.answer == "A"
    calls_before = len(router_model.calls)

    again = replay(app, original.run_id)

    assert again.status == "ok" and again.answer == "A" and len(router_model.calls) == calls_before
    first, second = app.store.get_run(original.run_id), app.store.get_run(again.run_id)
    assert second.run.meta["router"] == described  # rebuilt from its description, not served from the record
    assert second.tree() == first.tree()
    totals = lambda run: (run.prompt_tokens, run.completion_tokens, run.cost_usd)  # noqa: E731
    assert totals(second.run) == totals(first.run) and first.run.cost_usd


# -- the trajectory across instances -------------------------------------------------------------------------------


def test_a_fresh_router_takes_the_trajectory_with_its_reasoning_from_the_run_s_recorded_decisions() -> None:
    """Another instance made the first decision (a resumed run serves it from the record): the reasoning it recorded
    is what the router model sees again, not a placeholder rebuilt from the observations."""
    first_model = ScriptedModel("router-lm", [
        "<think>No tags here.</think>",  # out of format: a note follows it, and it must come back too
        "<think>Ask the big one: fractions are its strength.</think>\n<search>big-lm:What is 2:3?</search>",
    ])
    first = RouterR1("router-lm").decide(_state(first_model))
    assert isinstance(first, Dispatch)
    observations = (Observation(agent_id=R1_POOL_AGENT_ID, query="What is 2:3?", answer="two thirds", round=0, model_id="big-lm"),)

    model = ScriptedModel("router-lm", ["<think>It says two thirds.</think><answer>2/3</answer>"])
    decision = RouterR1("router-lm").decide(_state(model, observations, round=1, decisions=(first,)))
    assert isinstance(decision, Finish) and decision.answer == "2/3" and decision.meta["rebuilt"] is False
    shown = model.calls[0][0]
    assert [m.content for m in shown[1:4:2]] == [first_model.calls[1][0][1].content, "<think>Ask the big one: fractions are its strength.</think>\n<search>big-lm:What is 2:3?</search>"]
    assert _info_blocks(shown) == ["two thirds"] and "not kept" not in str([m.content for m in shown])
    # the whole transcript reads as the one router that made both decisions would have written it
    assert decision.meta["transcript"].startswith(first.meta["transcript"])

    # decisions that carry no trajectory (another router's) or that do not match the observations: rebuilt as before
    for decisions in ((Dispatch(calls=(Call(agent_id=R1_POOL_AGENT_ID, query="What is 2:3?", model_id="big-lm"),)),),
                      (first.model_copy(update={"meta": {**first.meta, "segments": first.meta["segments"][:1]}}),)):
        model = ScriptedModel("router-lm", ["<think>ok</think><answer>2/3</answer>"])
        again = RouterR1("router-lm").decide(_state(model, observations, round=1, decisions=decisions))
        assert again.meta["rebuilt"] is True and "not kept" in model.calls[0][0][1].content


def test_a_resumed_run_s_live_decision_sees_the_reasoning_of_the_decision_served_from_the_record(pool: RecordedPool) -> None:
    from orchestra import ModelTimeoutError, resume

    turns = ["<think>The small one is cheap; ask it first.</think>\n<search>small-lm:" + ROWS[0]["query"] + "</search>",
             ModelTimeoutError("router-lm timed out", model_id="router-lm"),
             "<think>It said A.</think>\n<answer>A</answer>"]
    router_model = ScriptedModel(ROUTER.id, turns)
    app = _app(router_model, pool)
    failed = app.workflow(RouterR1(ROUTER.id), budget=Budget(max_rounds=4)).run(ROWS[0]["query"])
    assert failed.status == "error" and isinstance(failed.error, ModelTimeoutError)

    resumed = resume(app, failed.run_id)
    assert resumed.status == "ok" and resumed.answer == "A", resumed.error
    live = router_model.calls[-1][0]
    assert "The small one is cheap; ask it first." in live[1].content and "not kept" not in live[1].content
    assert resumed.decisions[-1].meta["rebuilt"] is False
