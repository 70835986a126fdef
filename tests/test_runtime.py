"""The routed LangGraph workflow end to end, with scripted models and function routers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from orchestra import (
    AgentCard,
    AgentReply,
    AgentError,
    Budget,
    BudgetExceeded,
    Call,
    ConfigurationError,
    Dispatch,
    FallbackPolicy,
    Finish,
    ModelCard,
    ModelError,
    ModelTimeoutError,
    ModelUnavailableError,
    Orchestra,
    PassThrough,
    Refine,
    RouterState,
    RunCancelled,
    RunEvent,
    UnknownAgentError,
    WeightedVote,
)
from orchestra.model import ChatChunk, Message
from orchestra.testing import FunctionRouter, InMemoryStore, ScriptedModel, ScriptedModels


def dispatch_all(state: RouterState) -> Dispatch:
    return Dispatch(calls=tuple(Call(agent_id=card.id, query=state.query) for card in state.agents), rationale="every agent")


def make_app(*models: ScriptedModel, fallback: FallbackPolicy | None = None) -> Orchestra:
    app = Orchestra(store=InMemoryStore(), model_factory=ScriptedModels(list(models)), fallback=fallback)
    for model in models:
        app.registry.add_model(ModelCard(id=model.id, description=f"scripted model {model.id}", input_price_per_mtok=1.0, output_price_per_mtok=2.0))
    return app


def test_parallel_dispatch_refine_and_trace_tree() -> None:
    writer, refiner = ScriptedModel("writer", ["Paris is the capital."]), ScriptedModel("refiner", ["Paris; 42."])
    app = make_app(writer, refiner)
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    app.registry.add_agent(AgentCard(id="calc", description="Arithmetic.", backend="function", function="tests:calc"), implementation=lambda q: "42")
    result = app.workflow(FunctionRouter(dispatch_all), aggregator=Refine("refiner")).run("capital of France and 6*7?")

    assert result.status == "ok" and result.answer == "Paris; 42."
    assert sorted(obs.agent_id for obs in result.observations) == ["calc", "geo"]
    assert result.cost_usd is not None and result.cost_usd > 0
    trace = app.store.get_run(result.run_id)
    assert trace.run.status == "ok" and trace.run.answer == "Paris; 42."
    assert trace.tree() == [
        {
            "kind": "decision", "round": 0, "decision": "dispatch", "calls": ["geo", "calc"],
            "children": [
                {"kind": "call", "round": 0, "agent": "calc", "answer": "42"},
                {"kind": "call", "round": 0, "agent": "geo", "model": "writer", "answer": "Paris is the capital.",
                 "children": [{"kind": "model_call", "round": 0, "model": "writer"}]},
            ],
        },
        {"kind": "aggregate", "round": 1, "answer": "Paris; 42.", "children": [{"kind": "model_call", "round": 1, "model": "refiner"}]},
    ]
    # the refining agent saw both answers
    refine_prompt = refiner.calls[0][0][-1].content
    assert "Paris is the capital." in refine_prompt and "42" in refine_prompt


def test_a_failed_model_call_that_was_billed_keeps_what_it_cost_on_its_step() -> None:
    refused = ModelError("model 'writer' returned an empty answer", model_id="writer", prompt_tokens=7, completion_tokens=2, cost_usd=1.1e-5)
    app = make_app(ScriptedModel("writer", [refused]))
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    result = app.workflow(FunctionRouter(dispatch_all)).run("capital of France?")
    (model_call,) = [step for step in app.store.get_run(result.run_id).steps if step.kind == "model_call"]
    assert model_call.error is not None and model_call.error["type"] == "ModelError"
    assert (model_call.error["prompt_tokens"], model_call.error["completion_tokens"]) == (7, 2)
    assert model_call.error["cost_usd"] == pytest.approx(1.1e-5)


def test_what_failed_calls_were_billed_counts_in_the_run_its_budget_and_its_replay() -> None:
    """The run showed a known $0 while the refused calls were paid for, and a cost budget never saw them."""
    from orchestra import replay

    refused = ModelError("model 'writer' returned an empty answer", model_id="writer", prompt_tokens=7, completion_tokens=2, cost_usd=0.25)
    app = make_app(ScriptedModel("writer", [refused]), ScriptedModel("backup", ["Paris."]), fallback=FallbackPolicy(models=("backup",)))
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    result = app.workflow(FunctionRouter(dispatch_all)).run("capital of France?")
    steps = [step for step in app.store.get_run(result.run_id).steps if step.kind == "model_call"]
    failed, answered = steps
    assert (failed.prompt_tokens, failed.completion_tokens, failed.cost_usd) == (7, 2, 0.25)
    assert result.status == "ok" and result.prompt_tokens == 7 + answered.prompt_tokens
    assert result.cost_usd == pytest.approx(0.25 + answered.cost_usd)
    (observation,) = result.observations
    assert observation.cost_usd == pytest.approx(result.cost_usd)  # the agent's call paid for both
    again = replay(app, result.run_id)
    assert (again.prompt_tokens, again.completion_tokens) == (result.prompt_tokens, result.completion_tokens)
    assert again.cost_usd == pytest.approx(result.cost_usd)

    # an agent whose only model call failed, billed: its failed call shows what it cost
    alone = make_app(ScriptedModel("writer", [refused]))
    alone.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    failed_run = alone.workflow(FunctionRouter(dispatch_all)).run("capital of France?")
    (failed_call,) = failed_run.observations
    assert not failed_call.ok and (failed_call.prompt_tokens, failed_call.completion_tokens, failed_call.cost_usd) == (7, 2, 0.25)

    capped = make_app(ScriptedModel("writer", [refused, "never asked"]))
    capped.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    stopped = capped.workflow(FunctionRouter(dispatch_all, multi_round=True), budget=Budget(max_cost_usd=0.1, max_rounds=3)).run("q")
    assert isinstance(stopped.error, BudgetExceeded) and stopped.error.limit == "max_cost_usd"


@pytest.mark.parametrize("reply", ["Paris; 42.\nMerged answer:", "Merged answer: Paris; 42.", "Merged answer:\n\nParis; 42."])
def test_the_refiner_answer_loses_the_prompt_cue_a_small_model_echoes(reply: str) -> None:
    writer, refiner = ScriptedModel("writer", ["Paris is the capital."]), ScriptedModel("refiner", [reply])
    app = make_app(writer, refiner)
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    app.registry.add_agent(AgentCard(id="calc", description="Arithmetic."), implementation=lambda q: "42")
    result = app.workflow(FunctionRouter(dispatch_all), aggregator=Refine("refiner")).run("capital of France and 6*7?")
    assert result.answer == "Paris; 42."


@pytest.mark.parametrize("reply", ["Merged answer:", "  \n ", "\nMerged answer:\n\nMerged answer:"])
@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_refiner_that_writes_only_the_cue_or_blank_is_a_failed_refine_listing_the_answers(reply: str, asynchronous: bool) -> None:
    """The cue alone became the run's answer ("Merged answer:", or '') with status ok."""
    writer, refiner = ScriptedModel("writer", ["Paris is the capital."]), ScriptedModel("refiner", [reply])
    app = make_app(writer, refiner)
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    app.registry.add_agent(AgentCard(id="calc", description="Arithmetic."), implementation=lambda q: "42")
    workflow = app.workflow(FunctionRouter(dispatch_all), aggregator=Refine("refiner"))
    query = "capital of France and 6*7?"
    result = asyncio.run(workflow.arun(query)) if asynchronous else workflow.run(query)
    assert result.status == "ok" and result.answer == "**geo**: Paris is the capital.\n\n**calc**: 42"
    aggregate = next(step for step in app.store.get_run(result.run_id).steps if step.kind == "aggregate")
    failed = aggregate.response["meta"]["refine_failed"]
    assert failed["type"] == "ModelOutputError" and "'refiner' wrote" in failed["message"] and "no answer" in failed["message"]


def test_a_refiner_that_fails_keeps_the_agents_answers_and_its_replay_serves_the_failure() -> None:
    from orchestra import ModelOutputError, replay

    writer = ScriptedModel("writer", ["Paris is the capital."])
    refiner = ScriptedModel("refiner", [ModelOutputError("model 'refiner' streamed nothing", model_id="refiner")])
    app = make_app(writer, refiner)
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    app.registry.add_agent(AgentCard(id="calc", description="Arithmetic."), implementation=lambda q: "42")
    result = app.workflow(FunctionRouter(dispatch_all), aggregator=Refine("refiner")).run("capital of France and 6*7?")

    assert result.status == "ok" and result.answer == "**geo**: Paris is the capital.\n\n**calc**: 42"
    trace = app.store.get_run(result.run_id)
    aggregate = next(step for step in trace.steps if step.kind == "aggregate")
    assert aggregate.response["meta"]["refine_failed"]["type"] == "ModelOutputError"
    # the failed refiner call hangs off the aggregate step (it used to point at a step never recorded)
    assert trace.tree()[-1] == {"kind": "aggregate", "round": 1, "answer": result.answer,
                                "children": [{"kind": "model_call", "round": 1, "model": "refiner", "error": "ModelOutputError"}]}
    again = replay(app, result.run_id)
    assert again.status == "ok" and again.answer == result.answer
    assert app.store.get_run(again.run_id).tree() == trace.tree()


def test_an_aggregator_that_raises_is_recorded_as_a_failed_aggregate_step() -> None:
    class Broken:
        name = "broken"

        def aggregate(self, query, observations, models):  # type: ignore[no-untyped-def]
            raise AgentError("cannot merge")

        async def aaggregate(self, query, observations, models):  # type: ignore[no-untyped-def]
            raise AgentError("cannot merge")

    app = make_app()
    app.registry.add_agent(AgentCard(id="calc", description="Arithmetic."), implementation=lambda q: "42")
    result = app.workflow(FunctionRouter(dispatch_all), aggregator=Broken()).run("6*7?")
    assert result.status == "error" and isinstance(result.error, AgentError)
    steps = app.store.get_run(result.run_id).steps
    assert [(s.kind, s.error["message"]) for s in steps if s.kind == "aggregate"] == [("aggregate", "cannot merge")]


def test_what_a_failing_router_knew_is_stored_with_its_decision_error() -> None:
    """DecisionError.details (Router-R1 attaches its format violations and turns) reached no record."""
    from orchestra import DecisionError

    def gives_up(state: RouterState) -> Dispatch:
        raise DecisionError("no valid turn", details={"violations": ["no <answer>"], "turns": 3, "forced": True, "odd": {1, 2}})

    app = make_app()
    app.registry.add_agent(AgentCard(id="a", description="x"), implementation=lambda q: "ok")
    result = app.workflow(FunctionRouter(gives_up)).run("q")
    stored = app.store.get_run(result.run_id)
    decision = next(step for step in stored.steps if step.kind == "decision")
    for record in (decision.error, stored.run.error):
        assert record is not None
        assert record["details"] == {"violations": ["no <answer>"], "turns": 3, "forced": True, "odd": "{1, 2}"}
    assert "details" not in DecisionError("plain").to_record()


def test_an_aggregator_without_its_async_twin_is_refused_when_given() -> None:
    """It passed, worked in run, and failed every arun after all the agents had answered."""

    class SyncOnly:
        name = "sync-only"

        def aggregate(self, query, observations, models):  # type: ignore[no-untyped-def]
            raise AssertionError("never reached")

    app = make_app()
    with pytest.raises(ConfigurationError, match="SyncOnly has no aaggregate"):
        app.workflow(FunctionRouter(dispatch_all), aggregator=SyncOnly())


def test_a_router_or_aggregator_that_raises_fails_the_run_typed_instead_of_escaping() -> None:
    from orchestra import Aggregated, DecisionError

    app = make_app()
    app.registry.add_agent(AgentCard(id="a", description="first"), implementation=lambda q: "from a")
    result = app.workflow(FunctionRouter(lambda s: {}["x"])).run("q")
    assert result.status == "error" and isinstance(result.error, DecisionError) and "raised KeyError" in str(result.error)
    assert isinstance(result.error.__cause__, KeyError)  # the bug's own traceback is kept

    class Text:
        name = "text"

        def aggregate(self, query, observations, models):  # type: ignore[no-untyped-def]
            return "not an Aggregated"

        async def aaggregate(self, query, observations, models):  # type: ignore[no-untyped-def]
            raise ValueError("boom")

    workflow = app.workflow(FunctionRouter(dispatch_all), aggregator=Text())
    result = workflow.run("q")
    assert isinstance(result.error, AgentError) and "returned str, not Aggregated" in str(result.error)
    result = asyncio.run(workflow.arun("q"))
    assert isinstance(result.error, AgentError) and "raised ValueError: boom" in str(result.error)
    assert app.store.get_run(result.run_id).run.error["type"] == "AgentError"
    assert Aggregated("x").answer == "x"


def test_wrongly_typed_arguments_are_refused_when_given_not_at_the_first_run() -> None:
    from orchestra import RetryPolicy

    app = make_app()
    app.registry.add_agent(AgentCard(id="a", description="first"), implementation=lambda q: "from a")
    for options, name in [({"budget": {"max_rounds": 2}}, "budget"), ({"routing": {}}, "routing"), ({"aggregator": "refine"}, "aggregator")]:
        with pytest.raises(ConfigurationError, match=f"^{name} must be"):
            app.workflow("all", **options)
    with pytest.raises(ConfigurationError, match="^router must be"):
        app.workflow(object())  # type: ignore[arg-type]
    for options, name in [({"fallback": ("m",)}, "fallback"), ({"retry": {}}, "retry"), ({"store": 123}, "store")]:
        with pytest.raises(ConfigurationError, match=f"^{name} must be"):
            Orchestra(**{"store": InMemoryStore(), **options})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="^session_id must be"):
        app.workflow("all").run("q", session_id=123)  # type: ignore[arg-type]
    assert Orchestra(store=InMemoryStore(), retry=RetryPolicy(max_attempts=2)).retry.max_attempts == 2


def test_a_scripted_model_called_from_several_threads_serves_each_reply_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from orchestra import Message

    model = ScriptedModel("m", ["a", "b", "c", "d"], latency_s=0.05)
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: model.chat([Message(role="user", content="q")]).text, range(4)))
    assert sorted(replies) == ["a", "b", "c", "d"]  # all four got "d" when the reply was read after the sleep


def test_the_graph_invoked_without_a_run_says_how_to_run_it() -> None:
    app = make_app()
    app.registry.add_agent(AgentCard(id="a", description="first"), implementation=lambda q: "from a")
    workflow = app.workflow(FunctionRouter(dispatch_all))
    assert "route" in workflow.graph.get_graph().draw_mermaid()
    with pytest.raises(ConfigurationError, match="runs through Workflow.run"):
        workflow.graph.invoke({"query": "hi", "round": 0, "observations": []})  # was KeyError('orchestra_run')


def test_onboarding_mid_session_changes_the_next_decision_without_recompiling() -> None:
    app = make_app()
    app.registry.add_agent(AgentCard(id="a", description="first"), implementation=lambda q: "from a")
    workflow = app.workflow(FunctionRouter(dispatch_all))
    graph = workflow.graph
    first = workflow.run("hello", session_id="s1")
    app.registry.add_agent(AgentCard(id="b", description="second"), implementation=lambda q: "from b")
    second = workflow.run("hello again", session_id="s1")

    assert [o.agent_id for o in first.observations] == ["a"]
    assert sorted(o.agent_id for o in second.observations) == ["a", "b"]
    assert workflow.graph is graph
    versions = [app.store.get_run(r.run_id).steps[0].request["registry_version"] for r in (first, second)]
    assert versions[1] == versions[0] + 1
    # the second run saw the first exchange as history
    assert [t.content for t in app.history("s1")][:2] == ["hello", "from a"]


def test_one_failing_agent_does_not_fail_the_run() -> None:
    app = make_app()

    def broken(query: str) -> str:
        raise RuntimeError("disk on fire")

    app.registry.add_agent(AgentCard(id="ok", description="works"), implementation=lambda q: "fine")
    app.registry.add_agent(AgentCard(id="bad", description="breaks"), implementation=broken)
    result = app.workflow(FunctionRouter(dispatch_all)).run("q")

    assert result.status == "ok" and result.answer == "fine"
    failed = next(o for o in result.observations if o.agent_id == "bad")
    assert failed.error is not None and failed.error["type"] == "AgentError" and "disk on fire" in failed.error["message"]
    tree = app.store.get_run(result.run_id).tree()
    assert {"kind": "call", "round": 0, "agent": "bad", "error": "AgentError"} in tree[0]["children"]


def test_every_agent_failing_is_a_recorded_agent_error() -> None:
    writer = ScriptedModel("writer", [ModelTimeoutError("too slow", model_id="writer")])
    app = make_app(writer)
    app.registry.add_agent(AgentCard(id="llm", description="chat", model="writer"))
    result = app.workflow(FunctionRouter(dispatch_all)).run("q")

    assert result.status == "error" and isinstance(result.error, AgentError)
    assert result.observations[0].error["type"] == "ModelTimeoutError"
    stored = app.store.get_run(result.run_id)
    assert stored.run.status == "error" and stored.run.error["type"] == "AgentError"
    with pytest.raises(AgentError):
        result.raise_for_error()


def test_fallback_model_answers_and_both_attempts_are_recorded() -> None:
    primary = ScriptedModel("primary", [ModelUnavailableError("502 after retries", model_id="primary")])
    backup = ScriptedModel("backup", ["backup answer"])
    app = make_app(primary, backup, fallback=FallbackPolicy(models=("backup",)))
    app.registry.add_agent(AgentCard(id="llm", description="chat", model="primary"))
    result = app.workflow(FunctionRouter(dispatch_all)).run("q")

    assert result.answer == "backup answer" and result.observations[0].model_id == "backup"
    model_calls = [s for s in app.store.get_run(result.run_id).steps if s.kind == "model_call"]
    assert [(s.model_id, bool(s.error)) for s in model_calls] == [("primary", True), ("backup", False)]


def test_when_every_fallback_fails_the_primary_models_error_is_the_one_reported() -> None:
    primary = ScriptedModel("primary", [ModelTimeoutError("timed out after 60 s", model_id="primary")])
    app = make_app(primary, fallback=FallbackPolicy(models=("ghost",)))
    app.registry.add_agent(AgentCard(id="llm", description="chat", model="primary"))
    result = app.workflow(FunctionRouter(dispatch_all)).run("q")
    error = result.observations[0].error
    assert error is not None and error["type"] == "ModelTimeoutError"  # was the ghost's "no model with id"
    assert "timed out after 60 s" in error["message"] and "ghost: ModelUnavailableError" in error["message"]


def test_unknown_agent_in_a_decision_is_recorded_and_the_others_answer() -> None:
    app = make_app()
    app.registry.add_agent(AgentCard(id="real", description="exists"), implementation=lambda q: "real answer")
    router = FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="ghost", query=s.query), Call(agent_id="real", query=s.query))))
    result = app.workflow(router).run("q")
    assert result.answer == "real answer"
    errors = [s for s in app.store.get_run(result.run_id).steps if s.kind == "error"]
    assert errors[0].agent_id == "ghost" and errors[0].error["type"] == "UnknownAgentError"

    only_ghost = app.workflow(FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="ghost", query=s.query),)))).run("q")
    assert isinstance(only_ghost.error, UnknownAgentError) and "ghost" in str(only_ghost.error)


def test_budget_max_rounds_stops_a_looping_router() -> None:
    app = make_app()
    app.registry.add_agent(AgentCard(id="a", description="x"), implementation=lambda q: "more")
    never_finishes = FunctionRouter(dispatch_all, multi_round=True)
    result = app.workflow(never_finishes, budget=Budget(max_rounds=3)).run("loop")

    assert isinstance(result.error, BudgetExceeded) and result.error.limit == "max_rounds"
    stored = app.store.get_run(result.run_id)
    assert stored.run.status == "error" and stored.run.error["code"] == "budget_exceeded"
    assert sum(s.kind == "decision" for s in stored.steps) == 3  # what was done is kept
    assert str(result.error) == "budget exceeded: max_rounds allowed 3, 4 needed"  # a fourth round never ran


def test_budget_max_calls_refuses_a_dispatch_that_would_exceed_it() -> None:
    app = make_app()
    for agent in ("a", "b", "c"):
        app.registry.add_agent(AgentCard(id=agent, description="x"), implementation=lambda q: "ok")
    result = app.workflow(FunctionRouter(dispatch_all), budget=Budget(max_calls=1)).run("q")
    assert isinstance(result.error, BudgetExceeded) and result.error.limit == "max_calls"
    assert str(result.error) == "budget exceeded: max_calls allowed 1, 3 needed"  # not "used 3": none was called
    assert not any(s.kind == "call" for s in app.store.get_run(result.run_id).steps)


def test_budget_max_cost_stops_the_run() -> None:
    pricey = ScriptedModel("pricey", ["word " * 50])
    app = make_app(pricey)
    app.registry.add_model(ModelCard(id="gold", description="expensive", input_price_per_mtok=1e6, output_price_per_mtok=1e6))
    app.models.factory.models["gold"] = ScriptedModel("gold", ["word " * 50])  # type: ignore[attr-defined]
    app.registry.add_agent(AgentCard(id="llm", description="chat", model="gold"))
    result = app.workflow(FunctionRouter(dispatch_all, multi_round=True), budget=Budget(max_cost_usd=1.0, max_rounds=10)).run("q")
    assert isinstance(result.error, BudgetExceeded) and result.error.limit == "max_cost_usd"


def test_budget_max_tokens_stops_a_run_whose_models_have_no_price() -> None:
    """A local model has no price, so `max_cost_usd` cannot bound it (its calls count as $0): `max_tokens` does,
    over the model calls and the usage tools report."""
    app = Orchestra(store=InMemoryStore(), model_factory=ScriptedModels([ScriptedModel("local", ["word " * 50])]))
    app.registry.add_model(ModelCard(id="local", description="a local model, no price"))
    app.registry.add_agent(AgentCard(id="llm", description="chat", model="local"))
    unbounded = app.workflow(FunctionRouter(dispatch_all, multi_round=True), budget=Budget(max_cost_usd=0.01, max_rounds=3)).run("q")
    assert unbounded.cost_usd is None and isinstance(unbounded.error, BudgetExceeded)
    assert unbounded.error.limit == "max_rounds" and len(unbounded.observations) == 3  # the cost limit never bit
    per_call = unbounded.prompt_tokens // 3 + unbounded.completion_tokens // 3

    capped = app.workflow(FunctionRouter(dispatch_all, multi_round=True), budget=Budget(max_tokens=per_call + 1, max_rounds=3)).run("q")
    assert isinstance(capped.error, BudgetExceeded) and capped.error.limit == "max_tokens"
    assert str(capped.error) == f"budget exceeded: max_tokens allowed {per_call + 1}, used {2 * per_call}"
    assert len(capped.observations) == 2  # the second call started under the limit; the third never did

    app.registry.add_agent(AgentCard(id="tool", description="x"), implementation=lambda q: AgentReply(answer="ok", prompt_tokens=600))
    tool_run = app.workflow(FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="tool", query=s.query),)) if s.round < 2 else Finish(answer="done"),
                                           multi_round=True), budget=Budget(max_tokens=1000)).run("q")
    assert isinstance(tool_run.error, BudgetExceeded) and tool_run.error.limit == "max_tokens"


def test_usage_a_tool_reports_itself_counts_in_the_totals_the_budget_and_the_replay() -> None:
    """A tool that pays for its own API reports it in its AgentReply: the run's totals and cost budget count it (they
    showed $0 while $1.5 was reported), and the exact replay's totals are the original's."""
    from orchestra import replay

    app = make_app()
    app.registry.add_agent(AgentCard(id="paid", description="x"),
                           implementation=lambda q: AgentReply(answer="paid answer", prompt_tokens=1000, completion_tokens=10, cost_usd=0.5))
    once = app.workflow(FunctionRouter(dispatch_all)).run("q")
    assert (once.prompt_tokens, once.completion_tokens, once.cost_usd) == (1000, 10, 0.5)
    again = replay(app, once.run_id)
    assert again.status == "ok" and (again.prompt_tokens, again.completion_tokens, again.cost_usd) == (1000, 10, 0.5)

    capped = app.workflow(FunctionRouter(dispatch_all, multi_round=True), budget=Budget(max_cost_usd=0.1, max_rounds=3)).run("q")
    assert isinstance(capped.error, BudgetExceeded) and capped.error.limit == "max_cost_usd"
    assert len(capped.observations) == 1  # the second round never ran

    app.registry.add_agent(AgentCard(id="tokens-only", description="x"),
                           implementation=lambda q: AgentReply(answer="counted", prompt_tokens=5))
    unknown = app.workflow(FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="tokens-only", query=s.query),)))).run("q")
    assert unknown.cost_usd is None and unknown.prompt_tokens == 5  # tokens without a price: an unknown cost


@pytest.mark.parametrize(
    ("reply", "named"),
    [
        (lambda: AgentReply(answer=None), "AgentReply.answer must be a str, not NoneType"),  # type: ignore[arg-type]
        (lambda: AgentReply(answer=42), "AgentReply.answer must be a str, not int"),  # type: ignore[arg-type]
        (lambda: AgentReply(answer="x", prompt_tokens=-5), "AgentReply.prompt_tokens"),
        (lambda: AgentReply(answer="x", cost_usd=-1.0), "AgentReply.cost_usd"),
        (lambda: AgentReply(answer="x", cost_usd=float("nan")), "AgentReply.cost_usd"),
    ],
    ids=["none", "int", "negative-tokens", "negative-cost", "nan-cost"],
)
def test_a_malformed_agent_reply_fails_that_agent_not_the_run(reply: Any, named: str) -> None:
    """It failed the whole run with a pydantic traceback, and the other agent's answer was lost."""
    app = make_app()
    app.registry.add_agent(AgentCard(id="good", description="x"), implementation=lambda q: "fine")
    app.registry.add_agent(AgentCard(id="bad", description="x"), implementation=lambda q: reply())
    result = app.workflow(FunctionRouter(dispatch_all), aggregator=WeightedVote()).run("q")
    assert result.status == "ok" and result.answer == "fine"
    bad = next(o for o in result.observations if o.agent_id == "bad")
    assert bad.error is not None and bad.error["type"] == "AgentError" and named in bad.error["message"]


def test_multi_round_router_sees_observations_and_finishes() -> None:
    app = make_app()
    app.registry.add_agent(AgentCard(id="a", description="x"), implementation=lambda q: f"echo {q}")

    def two_rounds(state: RouterState) -> Dispatch | Finish:
        if not state.observations:
            return Dispatch(calls=(Call(agent_id="a", query="first"),))
        return Finish(answer=f"done after {state.observations[-1].answer}")

    result = app.workflow(FunctionRouter(two_rounds, multi_round=True)).run("q")
    assert result.answer == "done after echo first" and len(result.decisions) == 2


def test_out_of_scope_finish_is_an_ok_run_flagged_out_of_scope() -> None:
    app = make_app()
    result = app.workflow(FunctionRouter(lambda s: Finish(answer="Sorry, no agent handles that.", out_of_scope=True))).run("q")
    assert result.status == "ok" and result.out_of_scope and result.observations == ()


def test_weighted_vote_uses_call_weights() -> None:
    app = make_app()
    for agent_id, answer in (("x", "Blue"), ("y", "red"), ("z", "Red.")):
        app.registry.add_agent(AgentCard(id=agent_id, description=agent_id), implementation=lambda q, a=answer: a)
    weights = {"x": 0.9, "y": 0.3, "z": 0.3}
    router = FunctionRouter(lambda s: Dispatch(calls=tuple(Call(agent_id=a, query=s.query, weight=w) for a, w in weights.items())))
    assert app.workflow(router, aggregator=WeightedVote()).run("colour?").answer == "Blue"
    weights["x"] = 0.5
    assert app.workflow(router, aggregator=WeightedVote()).run("colour?").answer == "red"


@pytest.mark.parametrize(
    ("query", "answers", "expected", "abstained"),
    [
        ("Is 7 a prime number? Answer yes or no.", ["Sorry, I can't calculate that.", "No.", "It is 4:05 pm.", "Yes, 7 is prime."],
         "Yes, 7 is prime.", ["a", "c"]),
        ("Is 7 a prime number? Answer yes or no.", ["Sorry, I can't.", "no", "No, it is not", "Yes"], "no", ["a"]),
        ("Which gas do plants take in?\nA) oxygen\nB) carbon dioxide\nAnswer:", ["I cannot say.", "(B)", "B) carbon dioxide", "A"], "(B)", ["a"]),
        ("How many legs has a spider? Answer with a number.", ["Spiders are arachnids.", "8", "It has 8 legs.", "6"], "8", ["a"]),
    ],
    ids=["refusal-abstains", "yes-no-forms", "options", "number"],
)
def test_weighted_vote_counts_only_answers_that_state_what_the_query_asks_for(
    query: str, answers: list[str], expected: str, abstained: list[str]
) -> None:
    """A refusal voted like an answer: in a 1-1-1-1 tie the calculator's "Sorry, I can't calculate that" won a
    yes-or-no question by coming first. An answer that states no option, yes/no or number now abstains."""
    app = make_app()
    agent_ids = ["a", "b", "c", "d"]
    for agent_id, answer in zip(agent_ids, answers, strict=True):
        app.registry.add_agent(AgentCard(id=agent_id, description=agent_id), implementation=lambda q, a=answer: a)
    weights = dict(zip(agent_ids, [1.0, 1.0, 1.0, 1.5], strict=True))
    router = FunctionRouter(lambda s: Dispatch(calls=tuple(Call(agent_id=a, query=s.query, weight=w) for a, w in weights.items())))
    result = app.workflow(router, aggregator=WeightedVote()).run(query)
    assert result.answer == expected
    aggregate = next(step for step in app.store.get_run(result.run_id).steps if step.kind == "aggregate")
    assert aggregate.response["meta"]["abstained"] == abstained


def test_an_agent_that_declines_is_never_merged_with_or_outvotes_the_one_that_answered() -> None:
    """The clock's "Sorry, I only answer date and time questions" beside the calculator's "21" made two answers, and
    the 135M refiner merged them into "3 times 7 is 24"; when every agent declines, their refusals are shown,
    not an answer a refiner made up."""
    from orchestra import replay

    refiner = ScriptedModel("refiner", ["3 times 7 is 24."])
    app = make_app(refiner)
    app.registry.add_agent(AgentCard(id="calculator", description="x"), implementation=lambda q: "21")
    app.registry.add_agent(AgentCard(id="clock", description="x"),
                           implementation=lambda q: AgentReply(answer="Sorry, I only answer date and time questions.", declined=True))
    result = app.workflow(FunctionRouter(dispatch_all), aggregator=Refine("refiner")).run("how much is 3 times 7?")
    assert result.answer == "21" and refiner.calls == []
    assert [o.declined for o in result.observations] == [False, True] and all(o.ok for o in result.observations)
    aggregate = next(step for step in app.store.get_run(result.run_id).steps if step.kind == "aggregate")
    assert aggregate.response["meta"]["declined"] == ["clock"]
    again = replay(app, result.run_id)
    assert again.answer == "21" and [o.declined for o in again.observations] == [False, True]

    voted = app.workflow(FunctionRouter(dispatch_all), aggregator=WeightedVote()).run("how much is 3 times 7?")
    assert voted.answer == "21"

    app.registry.remove_agent("calculator")
    nobody = app.workflow(FunctionRouter(dispatch_all), aggregator=Refine("refiner")).run("multiply that by 3")
    assert nobody.answer == "Sorry, I only answer date and time questions." and refiner.calls == []


def test_a_function_with_an_optional_context_parameter_gets_the_context() -> None:
    """fn(query, context=None) (the knowledge agent's signature) was never given it, so its model summary never ran."""
    seen: list[Any] = []

    def tool(query: str, context: Any = None) -> str:
        seen.append(context)
        return "ok"

    app = make_app()
    app.registry.add_agent(AgentCard(id="tool", description="x"), implementation=tool)
    app.workflow(FunctionRouter(dispatch_all)).run("q")
    assert seen and seen[0] is not None and seen[0].card.id == "tool"


async def test_async_run_and_stream_events() -> None:
    model = ScriptedModel("m", ["async answer"])
    app = make_app(model)
    app.registry.add_agent(AgentCard(id="llm", description="chat", model="m"))
    workflow = app.workflow(FunctionRouter(dispatch_all))
    result = await workflow.arun("q")
    assert result.answer == "async answer"

    events = list(workflow.stream("q"))
    # the one agent's answer is passed through: each of its tokens is followed by the answer it makes
    assert [e.kind for e in events] == ["run_started", "decision", "token", "answer", "token", "answer", "call", "aggregate", "run_finished"]
    assert "".join(e.data["delta"] for e in events if e.kind == "token") == "async answer"
    assert [e.data for e in events if e.kind == "answer"] == [{"delta": "async", "restart": False}, {"delta": " answer", "restart": False}]
    events = [event async for event in workflow.astream("q")]
    assert [e.data["delta"] for e in events if e.kind == "token"] == ["async", " answer"]
    assert events[-1].data["result"].answer == "async answer"


class _DiesMidStream(ScriptedModel):
    """Streams two words, then its connection drops."""

    def stream(self, messages: Any, options: Any = None) -> Any:
        yield from (ChatChunk(delta="The answer"), ChatChunk(delta=" is 4"))
        raise ModelUnavailableError("connection dropped", model_id=self.id)


def test_a_fallback_after_a_model_that_died_mid_stream_restarts_the_streamed_text() -> None:
    """The dead model's words were glued to the fallback's answer ('The answer is 4Paris is the capital')."""
    app = make_app(_DiesMidStream("flaky", []), ScriptedModel("backup", ["Paris is the capital"]), fallback=FallbackPolicy(models=("backup",)))
    app.registry.add_agent(AgentCard(id="llm", description="chat", model="flaky"))
    events = list(app.workflow(FunctionRouter(dispatch_all)).stream("q"))
    tokens = [event.data for event in events if event.kind == "token"]
    assert [(t["model_id"], t["restart"]) for t in tokens] == [("flaky", False), ("flaky", False), ("backup", True)] + [("backup", False)] * 3
    shown = ""
    for token in tokens:  # what a reader that honours `restart` shows (the UI does)
        shown = ("" if token["restart"] else shown) + token["delta"]
    result = events[-1].data["result"]
    assert shown == result.answer == "Paris is the capital"


def test_a_failed_model_call_records_how_long_it_took_and_its_attempts() -> None:
    """A primary that failed after its retries was recorded at 0 ms with no attempts."""
    import time as clock

    class Slow(ScriptedModel):
        def chat(self, messages: Any, options: Any = None) -> Any:
            clock.sleep(0.05)
            error = ModelTimeoutError("timed out", model_id=self.id)
            error.attempts = 3  # type: ignore[attr-defined]  # what the client's retry loop sets
            raise error

    app = make_app(Slow("slow", []), ScriptedModel("backup", ["fine"]), fallback=FallbackPolicy(models=("backup",)))
    app.registry.add_agent(AgentCard(id="llm", description="chat", model="slow"))
    result = app.workflow(FunctionRouter(dispatch_all)).run("q")
    failed = next(s for s in app.store.get_run(result.run_id).steps if s.kind == "model_call" and s.error)
    assert failed.latency_ms >= 50 and failed.response == {"attempts": 3}


def test_closing_a_stream_early_records_a_cancelled_run() -> None:
    app = make_app(ScriptedModel("m", ["x"]))
    app.registry.add_agent(AgentCard(id="llm", description="chat", model="m"))
    stream = app.workflow(FunctionRouter(dispatch_all)).stream("q")
    started = next(stream)
    next(stream)  # the decision
    stream.close()
    stored = app.store.get_run(started.run_id).run
    assert stored.status == "interrupted" and stored.error["code"] == "cancelled"


def test_function_agents_cost_nothing_and_llm_calls_are_summed_per_call() -> None:
    app = make_app(ScriptedModel("m", ["two words"]))
    app.registry.add_agent(AgentCard(id="llm", description="chat", model="m"))
    app.registry.add_agent(AgentCard(id="fn", description="tool"), implementation=lambda q: "tool")
    result = app.workflow(FunctionRouter(dispatch_all)).run("three word query")
    by_agent = {o.agent_id: o for o in result.observations}
    assert by_agent["fn"].cost_usd == 0.0
    assert by_agent["llm"].completion_tokens == 2 and by_agent["llm"].cost_usd == pytest.approx(result.cost_usd)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [({"routing": {"cost_weight": 0.5}}, "routing must be a RoutingPolicy"), ({"routing": 0.5}, "routing must be a RoutingPolicy"),
     ({"history": "abc"}, "history must be a sequence of Turn"), ({"history": [{"role": "user", "content": "hi"}]}, "history must be a sequence of Turn")],
)
def test_per_run_arguments_are_checked_in_every_way_to_run(arguments: dict[str, Any], named: str) -> None:
    """They failed with an AttributeError from inside the runtime; nothing is stored for a refused run."""
    app = make_app()
    app.registry.add_agent(AgentCard(id="a", description="x"), implementation=lambda q: "ok")
    workflow = app.workflow(FunctionRouter(dispatch_all))
    with pytest.raises(ConfigurationError, match=named):
        workflow.run("q", **arguments)
    with pytest.raises(ConfigurationError, match=named):
        asyncio.run(workflow.arun("q", **arguments))
    with pytest.raises(ConfigurationError, match=named):
        list(workflow.stream("q", **arguments))
    assert app.store.list_runs() == []
    with pytest.raises(TypeError):  # what a replay passes is not part of the public call
        workflow.run("q", replay_of="abc")  # type: ignore[call-arg]


def test_a_run_can_be_given_its_history() -> None:
    from orchestra import Turn

    seen: list[tuple[Turn, ...]] = []
    app = make_app()
    app.registry.add_agent(AgentCard(id="a", description="x"), implementation=lambda q: "ok")
    router = FunctionRouter(lambda state: seen.append(state.history) or dispatch_all(state))
    turns = (Turn(role="user", content="earlier"), Turn(role="assistant", content="answer"))
    app.workflow(router).run("q", history=turns)
    assert seen == [turns]


def test_a_router_brings_its_own_agents_which_the_team_never_sees() -> None:
    """Router-R1's model pool is part of the router: a run dispatches to it without anyone registering it (the
    CLI's router-r1 failed every run with 'unknown agent router-r1:pool'), other routers never route to it, and
    an agent of that id in the registry (say, a pool of recorded answers) is used instead."""
    from orchestra import BaseRouter, replay

    class WithHelper(BaseRouter):
        name = "with-helper"

        seen: list[list[str]] = []

        def decide(self, state: RouterState) -> Dispatch:
            self.seen.append([card.id for card in state.agents])
            return Dispatch(calls=(Call(agent_id="with-helper:pool", query=state.query), Call(agent_id="team", query=state.query)))

        def own_agents(self):  # type: ignore[no-untyped-def]
            return [(AgentCard(id="with-helper:pool", description="the router's helper"), lambda q: "from the router's own agent")]

    app = make_app()
    app.registry.add_agent(AgentCard(id="team", description="x"), implementation=lambda q: "from the team")
    result = app.workflow(WithHelper(), aggregator=PassThrough()).run("q")
    assert result.status == "ok" and sorted(o.answer for o in result.observations) == ["from the router's own agent", "from the team"]
    assert WithHelper.seen == [["team"]]  # its own agent is not among the team's
    assert replay(app, result.run_id, router=WithHelper(), aggregator=PassThrough()).status == "ok"
    assert [o.agent_id for o in app.workflow(FunctionRouter(dispatch_all)).run("q").observations] == ["team"]

    app.registry.add_agent(AgentCard(id="with-helper:pool", description="recorded"), implementation=lambda q: "recorded answer")
    again = app.workflow(WithHelper(), aggregator=PassThrough()).run("q")
    assert "recorded answer" in [o.answer for o in again.observations]


def test_empty_query_is_a_configuration_error() -> None:
    app = make_app()
    with pytest.raises(ConfigurationError):
        app.workflow(FunctionRouter(dispatch_all)).run("   ")


def test_model_access_outside_a_run_uses_the_registry_and_fallbacks() -> None:
    app = make_app(ScriptedModel("down", [ModelUnavailableError("refused", model_id="down")]), ScriptedModel("up", ["hello"]),
                   fallback=FallbackPolicy(models=("up",)))
    from orchestra import Message

    result = app.model_access().chat("down", [Message(role="user", content="hi")])
    assert result.text == "hello" and result.model_id == "up"
    assert app.store.list_runs() == []  # not traced


def test_model_access_outside_a_run_counts_a_plain_exception_as_a_failed_call() -> None:
    """A user's ChatModel with a bug fails like a model that is down, in a run or outside one: the fallback answers,
    and with none left the error is a ModelError naming the model, not the bare exception."""
    from orchestra import Message

    hi = [Message(role="user", content="hi")]
    app = make_app(ScriptedModel("buggy", [RuntimeError("bug"), RuntimeError("bug")]), ScriptedModel("up", ["hello", "again"]),
                   fallback=FallbackPolicy(models=("up",)))
    assert app.model_access().chat("buggy", hi).model_id == "up"
    assert asyncio.run(app.model_access().achat("buggy", hi)).text == "again"
    alone = make_app(ScriptedModel("buggy", [RuntimeError("bug")]))
    with pytest.raises(ModelError, match="'buggy' raised RuntimeError: bug"):
        alone.model_access().chat("buggy", hi)


def test_runtime_benchmark_script_compares_with_plain_langgraph_and_replays_without_model_calls(tmp_path: Path) -> None:
    """benchmarks/bench_runtime.py, a few rounds: it times all three contenders, replays the 101-step run (asserting
    inside that no model is called) and writes every figure the README's table shows. No figure is judged here."""
    import json
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_runtime.py"
    out = tmp_path / "runtime.json"
    done = subprocess.run([sys.executable, str(script), "--runs", "3", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert figures["runs"] == 3 and figures["replay_steps"] == 101
    for key in ("memory", "sqlite"):
        assert figures[f"orchestra_{key}_ratio"] == pytest.approx(figures[f"orchestra_{key}_p50_ms"] / figures["plain_langgraph_p50_ms"])
    assert "exact replay of a 101-step run" in done.stdout


def test_errors_cross_a_process_pool_intact() -> None:
    import pickle

    from orchestra import CardError, DuplicateIdError, NotFoundError

    for error in (BudgetExceeded("max_calls", 1, 3, spent=False), NotFoundError("run", "x"), DuplicateIdError("agent", "a"),
                  CardError("bad", field="id", value="x y"), ModelTimeoutError("slow", model_id="m")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error) and copy.__dict__ == error.__dict__


def test_a_scripted_model_charges_its_cards_new_price_after_an_update() -> None:
    model = ScriptedModel("m", ["four words of answer"], repeat_last=True)
    app = make_app(model)
    app.registry.add_agent(AgentCard(id="llm", description="chat", model="m"))
    workflow = app.workflow(FunctionRouter(dispatch_all))
    cheap = workflow.run("q").cost_usd
    app.registry.update_model(ModelCard(id="m", description="now dear", input_price_per_mtok=1000.0, output_price_per_mtok=2000.0))
    assert workflow.run("q").cost_usd == pytest.approx(cheap * 1000)  # both prices x1000


def test_an_async_function_agent_answers_a_sync_run_made_inside_an_event_loop() -> None:
    import asyncio

    async def slow_echo(query: str) -> str:
        await asyncio.sleep(0)
        return "echo " + query

    app = make_app()
    app.registry.add_agent(AgentCard(id="echo", description="Repeats."), implementation=slow_echo)
    workflow = app.workflow(FunctionRouter(dispatch_all))

    async def handler() -> str | None:  # as in a notebook cell or a web handler calling the sync API
        return workflow.run("hi").answer

    assert asyncio.run(handler()) == "echo hi"  # was "asyncio.run() cannot be called from a running event loop"


def test_fuse_votes_on_options_and_refines_free_text_and_pass_through_names_the_models() -> None:
    """Fuse follows the query: on lettered options "B", "(B)" and "B) Sarah" are one vote against a heavier "A";
    free text goes to the Refining Agent; one agent backed by several models is listed under each model."""
    from orchestra import Fuse, PassThrough
    from orchestra.routing import Observation

    def seen(answer: str, weight: float, model: str) -> Observation:
        return Observation(agent_id="assistant", query="q", answer=answer, weight=weight, model_id=model)

    options = "Who got the harder cases?\nA) Maria\nB) Sarah"
    votes = [seen("B", 0.3, "m1"), seen("(B)", 0.2, "m2"), seen("B) Sarah", 0.1, "m3"), seen("A", 0.4, "m4")]
    merged = Fuse(None).aggregate(options, votes, models=None)  # type: ignore[arg-type]
    assert merged.answer == "B" and merged.meta["fusion"] == "weighted-vote"
    listed = PassThrough().aggregate("q", votes[:2], models=None)  # type: ignore[arg-type]
    assert listed.answer == "**assistant @ m1**: B\n\n**assistant @ m2**: (B)"

    refiner = ScriptedModel("refiner", ["Paris; 42."])
    app = make_app(refiner)
    app.registry.add_agent(AgentCard(id="geo", description="Geography.", backend="function", function="t:geo"), implementation=lambda q: "Paris")
    app.registry.add_agent(AgentCard(id="calc", description="Arithmetic.", backend="function", function="t:calc"), implementation=lambda q: "42")
    result = app.workflow(FunctionRouter(dispatch_all), aggregator=Fuse("refiner")).run("capital of France and 6*7?")
    assert result.answer == "Paris; 42."
    (aggregate,) = [step for step in app.store.get_run(result.run_id).steps if step.kind == "aggregate"]
    assert aggregate.response["meta"]["fusion"] == "refine"


def test_a_model_that_raises_a_plain_exception_is_a_recorded_model_failure_and_the_run_version_is_fresh() -> None:
    """A user's ChatModel with a bug (RuntimeError) left no model_call step; the run's registry version was read
    before taking in another process's onboarding, so it disagreed with its own decision's."""
    class Broken(ScriptedModel):
        def chat(self, messages, options=None):  # type: ignore[no-untyped-def]
            raise RuntimeError("bug in the wrapper")

    store = InMemoryStore()
    app = Orchestra(store=store, model_factory=ScriptedModels([Broken("writer", [])]))
    app.registry.add_model(ModelCard(id="writer", description="scripted"))
    app.registry.add_agent(AgentCard(id="geo", description="Geography.", model="writer"))
    Orchestra(store=store).registry.add_agent(AgentCard(id="late", description="Onboarded elsewhere.", model="writer"))
    result = app.workflow(FunctionRouter(lambda state: Dispatch(calls=(Call(agent_id="geo", query=state.query),)))).run("capital of France?")
    trace = app.store.get_run(result.run_id)
    (model_call,) = [step for step in trace.steps if step.kind == "model_call"]
    assert model_call.error["type"] == "ModelError" and "RuntimeError: bug in the wrapper" in model_call.error["message"]
    (decision,) = [step for step in trace.steps if step.kind == "decision"]
    assert trace.run.registry_version == decision.request["registry_version"] == 3


async def test_a_model_call_the_caller_stopped_stays_in_the_trace_and_replays_as_stopped() -> None:
    """A run cancelled while a model call was under way left no trace of that call, though it was sent and may be
    billed: it is recorded as stopped, the run's cost is unknown, and the exact replay stops at the same call."""
    from orchestra import replay

    called = asyncio.Event()

    class Hanging(ScriptedModel):
        async def achat(self, messages: Any, options: Any = None) -> Any:
            called.set()
            await asyncio.sleep(60)

    app = make_app(Hanging("slow", []))
    app.registry.add_agent(AgentCard(id="llm", description="chat", model="slow"))
    task = asyncio.ensure_future(app.workflow(FunctionRouter(dispatch_all)).arun("q"))
    await asyncio.wait_for(called.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (run,) = app.store.list_runs()
    assert run.status == "interrupted" and run.cost_usd is None
    trace = app.store.get_run(run.id)
    (stopped,) = [step for step in trace.steps if step.kind == "model_call"]
    assert stopped.model_id == "slow" and stopped.error is not None and stopped.error["code"] == "cancelled"
    assert stopped.cost_usd is None and stopped.latency_ms > 0
    # under the agent's call, itself kept as stopped: the model call was stored under a call step never written
    (call,) = [step for step in trace.steps if step.kind == "call"]
    assert stopped.parent_id == call.id and call.agent_id == "llm" and call.error["code"] == "cancelled"
    assert [node["kind"] for node in trace.tree()] == ["decision", "error"] and trace.tree()[0]["children"][0]["kind"] == "call"
    again = replay(app, run.id)
    assert again.status == "interrupted" and isinstance(again.error, RunCancelled), (again.error, again.observations)
    assert again.cost_usd is None  # as the original's: the stopped call's cost is unknown
    assert [node["kind"] for node in app.store.get_run(again.run_id).tree()] == ["decision", "error"]


def test_a_call_its_budget_stopped_stays_in_the_trace_and_replays_to_the_same_stop() -> None:
    """An agent's model call refused by the budget stopped the run without a trace of that agent's call (its
    earlier model calls hung under a step never written)."""
    from orchestra import replay

    app = Orchestra(store=InMemoryStore(), model_factory=ScriptedModels([ScriptedModel("local", ["word " * 50])]))
    app.registry.add_model(ModelCard(id="local", description="a local model, no price"))
    app.registry.add_agent(AgentCard(id="llm", description="chat", model="local"))

    def twice(query: str, context: Any) -> AgentReply:  # a tool that asks the model two times
        first = context.models.chat("local", [Message(role="user", content=query)])
        second = context.models.chat("local", [Message(role="user", content=first.text)])
        return AgentReply(answer=second.text)

    app.registry.add_agent(AgentCard(id="twice", description="asks twice"), implementation=twice)
    router = FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="twice", query=s.query),)))
    stopped = app.workflow(router, budget=Budget(max_tokens=40)).run("q")
    assert isinstance(stopped.error, BudgetExceeded) and stopped.error.limit == "max_tokens"
    trace = app.store.get_run(stopped.run_id)
    (call,) = [step for step in trace.steps if step.kind == "call"]
    assert call.agent_id == "twice" and call.error["code"] == "budget_exceeded"
    assert [step.parent_id for step in trace.steps if step.kind == "model_call"] == [call.id]
    again = replay(app, stopped.run_id)
    assert isinstance(again.error, BudgetExceeded) and str(again.error) == str(stopped.error)


def test_a_run_stopped_by_a_failing_store_is_stored_as_failed_with_the_error_that_stopped_it() -> None:
    """A store that refused a step (a locked file, a dropped connection) often refuses the next write too: the run's
    error step was written before the run was finished, so its refusal kept finish_run from being tried. The run
    stayed ``running`` for ever, and its caller got the second failure instead of the one that stopped the run."""
    from orchestra import StoreError

    class RefusingSteps(InMemoryStore):
        refused = 0

        def append_step(self, step: Any) -> Any:
            if step.kind == "decision":
                return super().append_step(step)
            self.refused += 1
            raise StoreError(f"write {self.refused} refused")

    store = RefusingSteps()
    app = Orchestra(store=store, model_factory=ScriptedModels())
    app.registry.add_agent(AgentCard(id="tool", description="a tool"), implementation=lambda q: "answer")
    workflow = app.workflow(FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="tool", query=s.query),))))

    with pytest.raises(StoreError, match="write 1 refused"):
        workflow.run("q")

    (run,) = store.list_runs()
    assert run.status == "error" and run.error is not None and run.error["message"] == "write 1 refused"
    assert store.refused == 2  # the error step was tried, and its refusal did not stop the run being finished


def test_an_object_with_an_async_call_is_an_async_function_agent_in_sync_and_async_runs() -> None:
    """A tool written as a class whose __call__ is async (it holds its client) is no coroutine function itself: it
    was called as a sync one, returned an unawaited coroutine, and failed every call ("function agent returned
    coroutine"). A function card naming such a class (instantiated by the runtime) failed the same way."""
    import asyncio

    class Echo:
        async def __call__(self, query: str) -> str:
            await asyncio.sleep(0)
            return "echo " + query

    app = make_app()
    app.registry.add_agent(AgentCard(id="echo", description="Repeats."), implementation=Echo())
    workflow = app.workflow(FunctionRouter(dispatch_all))

    assert workflow.run("hi").answer == "echo hi"
    assert asyncio.run(workflow.arun("hi")).answer == "echo hi"


@pytest.mark.parametrize("model_id", [None, 42, "", "  "])
def test_refine_refuses_a_model_id_that_names_no_card_when_given(model_id: Any) -> None:
    """Refine(None) ran: each refine failed inside the run (an AttributeError kept in the step's meta, the answers
    listed instead) and its runs could not be replayed ("not one Orchestra ships"); Refine(42) failed every run after
    the agents had answered (and been paid)."""
    from orchestra import Fuse

    with pytest.raises(ConfigurationError, match="Refine model_id must be a model card's id"):
        Refine(model_id)
    if model_id:  # Fuse(None) and Fuse("") mean no refiner: the answers are listed
        with pytest.raises(ConfigurationError, match="model_id"):
            Fuse(model_id)


def test_router_options_beside_a_router_object_are_refused_not_dropped() -> None:
    """workflow(router_object, k=1) built the workflow and dropped k without a word: the run used the router as it
    was built. Options are for a router given by name."""
    app = make_app()
    router = FunctionRouter(dispatch_all)
    with pytest.raises(ConfigurationError, match=r"router options 'agent_ids', 'k' are for a router given by name; FunctionRouter"):
        app.workflow(router, agent_ids=["a"], k=1)
    assert app.workflow(router).router is router


def test_streamed_tokens_name_the_agent_writing_and_its_call_event_names_their_step() -> None:
    """Two LLM agents streaming at once: token events carried only a step id that no other event named, so a reader
    could not tell whose words these were (the chat UI wrote "agent is writing:" without a name)."""
    app = make_app(ScriptedModel("m", ["words of m"]), ScriptedModel("n", ["words of n"]))
    app.registry.add_agent(AgentCard(id="first", description="asks m", model="m"))
    app.registry.add_agent(AgentCard(id="second", description="asks n", model="n"))
    events = list(app.workflow(FunctionRouter(dispatch_all)).stream("q"))

    tokens = [event.data for event in events if event.kind == "token"]
    calls = {event.data["agent_id"]: event.data["step"] for event in events if event.kind == "call"}
    written = {agent: "".join(token["delta"] for token in tokens if token["agent_id"] == agent) for agent in calls}
    assert written == {"first": "words of m", "second": "words of n"}
    assert all(token["step"] == calls[token["agent_id"]] for token in tokens)
    (decision,) = [event.data for event in events if event.kind == "decision"]
    trace = app.store.get_run(events[-1].data["result"].run_id)
    assert decision["step"] == next(step.id for step in trace.steps if step.kind == "decision")


def test_a_run_lists_its_observations_in_the_order_they_were_dispatched() -> None:
    """Parallel calls finish in any order: the result listed them as they finished, not as they were dispatched and
    as the aggregator saw them, so a run and its exact replay could list the same observations differently."""
    import threading

    fast_done = threading.Event()

    def slow(query: str) -> str:
        fast_done.wait(timeout=2)
        return "slow answer"

    def fast(query: str) -> str:
        fast_done.set()
        return "fast answer"

    app = make_app()
    app.registry.add_agent(AgentCard(id="slow", description="finishes last"), implementation=slow)
    app.registry.add_agent(AgentCard(id="fast", description="finishes first"), implementation=fast)
    rounds = FunctionRouter(lambda s: Finish(answer="done") if s.round == 2 else Dispatch(calls=(Call(agent_id="slow", query=s.query),
                                                                                                 Call(agent_id="fast", query=s.query))), multi_round=True)
    result = app.workflow(rounds).run("q")

    assert [(obs.round, obs.agent_id) for obs in result.observations] == [(0, "slow"), (0, "fast"), (1, "slow"), (1, "fast")]


def test_runs_are_summarized_per_router_and_cost_weight() -> None:
    """After calibrating w a RouteLLM user checks the strong model's share of the calls and the cost: one call
    over the store, per router and cost weight."""
    from orchestra import RoutingPolicy
    from orchestra.trace import summarize_runs

    writer = ScriptedModel("writer", ["an answer"])
    app = make_app(writer)
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    app.registry.add_agent(AgentCard(id="calc", description="Arithmetic.", backend="function", function="tests:calc"), implementation=lambda q: "42")

    def by_weight(state: RouterState) -> Dispatch:
        chosen = "calc" if state.policy.cost_weight > 0.5 else "geo"
        return Dispatch(calls=(Call(agent_id=chosen, query=state.query),))

    workflow = app.workflow(FunctionRouter(by_weight, name="by-weight"))
    for w in (0.0, 0.0, 0.9):
        workflow.run("question", routing=RoutingPolicy(cost_weight=w))
    summary = summarize_runs(app.store)
    assert summary["runs"] == 3
    low, high = summary["groups"]
    assert (low["router"], low["cost_weight"], low["runs"], low["status"]) == ("by-weight", 0.0, 2, {"ok": 2})
    assert low["agents"] == {"geo": 1.0} and low["models"] == {"writer": 1.0} and low["cost_usd"] > 0
    assert low["mean_cost_usd"] == pytest.approx(low["cost_usd"] / 2)
    assert (high["cost_weight"], high["agents"], high["models"], high["cost_usd"]) == (0.9, {"calc": 1.0}, {}, 0.0)
    assert summarize_runs(app.store, router="nobody") == {"runs": 0, "groups": []}


@pytest.mark.parametrize("asynchronous", [False, True])
def test_an_agent_call_that_outlives_the_run_s_time_is_stopped_at_max_seconds(asynchronous: bool) -> None:
    """A hung tool held the run: max_seconds was checked only between steps, so a run with a 0.3 s limit waited
    for a 3 s agent and ended ok. The call is now stopped at the deadline, recorded, and the run stops with
    BudgetExceeded; what the left-behind call does later is neither recorded nor counted."""
    import threading
    import time as clock

    writer = ScriptedModel("writer", ["late words"], latency_s=0.0)
    app = make_app(writer)
    finished = threading.Event()

    def slow(query: str, context) -> str:  # noqa: ANN001 - asks a model once the run has moved on
        clock.sleep(1.0)
        try:
            context.models.chat("writer", [Message(role="user", content=query)])
        finally:
            finished.set()
        return "too late"

    async def aslow(query: str) -> str:
        await asyncio.sleep(3.0)
        return "too late"

    app.registry.add_agent(AgentCard(id="slow", description="Slow.", backend="function", function="tests:slow"),
                           implementation=aslow if asynchronous else slow)
    app.registry.add_agent(AgentCard(id="quick", description="Quick.", backend="function", function="tests:quick"), implementation=lambda q: "fast")
    workflow = app.workflow(FunctionRouter(dispatch_all), budget=Budget(max_seconds=0.3))
    started = clock.perf_counter()
    result = asyncio.run(workflow.arun("go")) if asynchronous else workflow.run("go")
    assert clock.perf_counter() - started < 0.9
    assert result.status == "error" and isinstance(result.error, BudgetExceeded) and result.error.limit == "max_seconds"
    trace = app.store.get_run(result.run_id)
    stopped = [step for step in trace.steps if step.kind == "call" and step.agent_id == "slow"]
    assert len(stopped) == 1 and stopped[0].error["type"] == "BudgetExceeded"
    if not asynchronous:
        assert finished.wait(3.0)  # the left-behind thread asked its model: refused, nothing recorded or counted
        clock.sleep(0.05)
        assert writer.calls == [] and not [step for step in app.store.get_run(result.run_id).steps if step.kind == "model_call"]


def test_a_model_call_under_way_at_the_deadline_is_recorded_as_stopped_and_its_late_reply_dropped() -> None:
    import time as clock

    writer = ScriptedModel("writer", ["late words"], latency_s=0.8)
    app = make_app(writer)
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    result = app.workflow(FunctionRouter(dispatch_all), budget=Budget(max_seconds=0.3)).run("capital of France?")
    assert result.status == "error" and result.error.limit == "max_seconds"
    assert result.cost_usd is None  # the provider may bill the call it was making: unknown, not $0
    clock.sleep(0.8)  # the model answers after the run ended: nothing more is recorded
    model_calls = [step for step in app.store.get_run(result.run_id).steps if step.kind == "model_call"]
    assert len(model_calls) == 1 and model_calls[0].error["type"] == "RunCancelled" and len(writer.calls) == 1


@pytest.mark.parametrize("asynchronous", [False, True])
def test_max_parallel_calls_bounds_the_agent_calls_under_way_at_once(asynchronous: bool) -> None:
    """A dispatch to many agents ran every call at once, whatever a provider's rate limit: Budget.max_parallel_calls
    (LangGraph's max_concurrency) runs the rest as earlier ones finish."""
    import threading
    import time as clock

    app = make_app()
    lock, running, most = threading.Lock(), [0], [0]

    def tool(query: str) -> str:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        clock.sleep(0.05)
        with lock:
            running[0] -= 1
        return "done"

    for name in "abcd":
        app.registry.add_agent(AgentCard(id=name, description=f"Tool {name}.", backend="function", function=f"tests:{name}"), implementation=tool)
    for limit, expected in ((2, 2), (1, 1)):
        workflow = app.workflow(FunctionRouter(dispatch_all), budget=Budget(max_parallel_calls=limit))
        most[0] = 0
        result = asyncio.run(workflow.arun("go")) if asynchronous else workflow.run("go")
        assert result.status == "ok" and len(result.observations) == 4 and most[0] == expected
    from orchestra import PolicyError

    with pytest.raises(PolicyError, match="max_parallel_calls"):
        Budget(max_parallel_calls=0)


_FAST_RETRY = {"initial_backoff_s": 0.0, "max_backoff_s": 0.0, "jitter_s": 0.0}


@pytest.mark.parametrize("asynchronous", [False, True])
def test_an_agent_s_retry_policy_tries_a_flaky_tool_again_and_records_the_failed_attempts(asynchronous: bool) -> None:
    """An agent had one attempt (only model calls were retried): a tool that fails now and then failed its call.
    Its card's RetryPolicy now retries it; the failed attempts are kept on the call's step, and an exact replay
    serves the answer without calling the tool."""
    from orchestra import RetryPolicy, replay

    app = make_app()
    tries: list[str] = []

    def flaky(query: str) -> str:
        tries.append(query)
        if len(tries) < 3:
            raise ConnectionError(f"reset by peer ({len(tries)})")
        return "sunny"

    async def aflaky(query: str) -> str:
        return flaky(query)

    card = AgentCard(id="weather", description="Weather.", backend="function", function="tests:weather",
                     retry=RetryPolicy(max_attempts=3, **_FAST_RETRY))
    app.registry.add_agent(card, implementation=aflaky if asynchronous else flaky)
    workflow = app.workflow(FunctionRouter(dispatch_all))
    result = asyncio.run(workflow.arun("weather?")) if asynchronous else workflow.run("weather?")

    assert result.status == "ok" and result.answer == "sunny" and len(tries) == 3
    step = next(s for s in app.store.get_run(result.run_id).steps if s.kind == "call")
    assert step.error is None and [(f["attempt"], f["type"]) for f in step.response["retried"]] == [(1, "AgentError"), (2, "AgentError")]
    assert "reset by peer (1)" in step.response["retried"][0]["message"]
    replayed = replay(app, result.run_id)
    assert replayed.status == "ok" and replayed.answer == "sunny" and len(tries) == 3
    assert next(s for s in app.store.get_run(replayed.run_id).steps if s.kind == "call").response["retried"] == step.response["retried"]


def test_an_agent_that_fails_every_attempt_is_a_failed_call_naming_its_last_error_and_the_run_goes_on() -> None:
    from orchestra import RetryPolicy

    app = make_app()
    tries: list[str] = []

    def broken(query: str) -> str:
        tries.append(query)
        raise RuntimeError(f"disk on fire ({len(tries)})")

    app.registry.add_agent(AgentCard(id="bad", description="Breaks.", retry=RetryPolicy(max_attempts=2, **_FAST_RETRY)), implementation=broken)
    app.registry.add_agent(AgentCard(id="ok", description="Works."), implementation=lambda q: "fine")
    result = app.workflow(FunctionRouter(dispatch_all)).run("q")

    assert result.status == "ok" and result.answer == "fine" and len(tries) == 2
    failed = next(o for o in result.observations if o.agent_id == "bad")
    assert failed.error["type"] == "AgentError" and "disk on fire (2)" in failed.error["message"]
    step = next(s for s in app.store.get_run(result.run_id).steps if s.kind == "call" and s.agent_id == "bad")
    assert [f["attempt"] for f in step.response["retried"]] == [1] and "disk on fire (1)" in step.response["retried"][0]["message"]


def test_without_a_retry_policy_an_agent_has_one_attempt() -> None:
    app = make_app()
    tries: list[str] = []

    def broken(query: str) -> str:
        tries.append(query)
        raise RuntimeError("once")

    app.registry.add_agent(AgentCard(id="bad", description="Breaks."), implementation=broken)
    result = app.workflow(FunctionRouter(dispatch_all)).run("q")
    assert result.status == "error" and len(tries) == 1
    assert "retried" not in next(s for s in app.store.get_run(result.run_id).steps if s.kind == "call").response


@pytest.mark.parametrize("asynchronous", [False, True])
def test_an_agent_attempt_past_its_timeout_is_left_behind_and_retried(asynchronous: bool) -> None:
    """A hung attempt is cut at the policy's timeout_s (the run has no deadline of its own) and the next one answers."""
    import time as clock

    from orchestra import RetryPolicy

    app = make_app()
    tries: list[str] = []

    def hangs_once(query: str) -> str:
        tries.append(query)
        if len(tries) == 1:
            clock.sleep(1.5)
            return "too late"
        return "on time"

    async def ahangs_once(query: str) -> str:
        tries.append(query)
        if len(tries) == 1:
            await asyncio.sleep(1.5)
            return "too late"
        return "on time"

    card = AgentCard(id="tool", description="Tool.", retry=RetryPolicy(max_attempts=2, timeout_s=0.2, **_FAST_RETRY))
    app.registry.add_agent(card, implementation=ahangs_once if asynchronous else hangs_once)
    workflow = app.workflow(FunctionRouter(dispatch_all))
    started = clock.perf_counter()
    result = asyncio.run(workflow.arun("q")) if asynchronous else workflow.run("q")

    assert clock.perf_counter() - started < 1.2 and result.status == "ok" and result.answer == "on time"
    step = next(s for s in app.store.get_run(result.run_id).steps if s.kind == "call")
    assert step.response["retried"][0]["type"] == "AgentError" and "timeout_s (0.2 s)" in step.response["retried"][0]["message"]


def test_an_agent_s_model_calls_over_its_attempts_are_all_recorded_and_counted() -> None:
    """An LLM agent whose model fails for good (after the app's retries) is tried again; the failed attempt's
    model call stays in the trace, and the call's usage is both attempts'."""
    from orchestra import RetryPolicy

    writer = ScriptedModel("writer", [ModelUnavailableError("502 after retries", model_id="writer"), "Paris."])
    app = make_app(writer)
    app.registry.add_agent(AgentCard(id="geo", description="Geography.", model="writer", retry=RetryPolicy(max_attempts=2, **_FAST_RETRY)))
    result = app.workflow(FunctionRouter(dispatch_all)).run("capital of France?")

    assert result.status == "ok" and result.answer == "Paris." and len(writer.calls) == 2
    trace = app.store.get_run(result.run_id)
    call = next(s for s in trace.steps if s.kind == "call")
    model_calls = [s for s in trace.steps if s.kind == "model_call"]
    assert [bool(s.error) for s in model_calls] == [True, False] and all(s.parent_id == call.id for s in model_calls)
    assert call.response["retried"][0]["type"] == "ModelUnavailableError"
    assert call.prompt_tokens == sum(s.prompt_tokens for s in model_calls) and result.cost_usd == pytest.approx(call.cost_usd)


def test_a_budget_or_bad_configuration_is_never_retried() -> None:
    from orchestra import RetryPolicy

    app = make_app()
    tries: list[str] = []

    def slow(query: str) -> str:
        import time as clock

        tries.append(query)
        clock.sleep(0.5)
        return "late"

    app.registry.add_agent(AgentCard(id="slow", description="Slow.", retry=RetryPolicy(max_attempts=3, timeout_s=5.0, **_FAST_RETRY)), implementation=slow)
    result = app.workflow(FunctionRouter(dispatch_all), budget=Budget(max_seconds=0.2)).run("q")
    assert result.status == "error" and isinstance(result.error, BudgetExceeded) and len(tries) == 1


def test_an_agent_retry_policy_out_of_range_is_a_card_error_naming_the_field_and_cards_keep_it() -> None:
    from orchestra import CardError, RetryPolicy

    with pytest.raises(CardError, match=r"retry\.max_attempts"):
        AgentCard.parse({"id": "a", "description": "x", "retry": {"max_attempts": 0}})
    with pytest.raises(CardError, match=r"retry\.timeout_s"):
        AgentCard.parse({"id": "a", "description": "x", "retry": {"timeout_s": "soon"}})
    app = make_app()
    card = AgentCard.parse({"id": "a", "description": "x", "retry": {"max_attempts": 4}})
    app.registry.add_agent(card, implementation=lambda q: "ok")
    assert Orchestra(store=app.store).registry.agent("a").retry == RetryPolicy(max_attempts=4)


def test_a_retried_agent_s_next_attempt_restarts_the_text_its_failed_attempt_had_streamed() -> None:
    """Streamed tokens of a failed attempt were followed by the retry's, glued into one text for the reader."""
    from orchestra import RetryPolicy

    writer = ScriptedModel("writer", ["first draft", "second draft"])
    app = make_app(writer)
    tries: list[str] = []

    class Checker:
        def run(self, query: str, context) -> AgentReply:  # noqa: ANN001
            text = context.models.chat("writer", [Message(role="user", content=query)]).text
            tries.append(text)
            if len(tries) == 1:
                raise ValueError("draft refused by the checker")
            return AgentReply(answer=text)

        async def arun(self, query: str, context) -> AgentReply:  # noqa: ANN001
            return self.run(query, context)

    app.registry.add_agent(AgentCard(id="checked", description="Checked.", retry=RetryPolicy(max_attempts=2, **_FAST_RETRY)),
                           implementation=Checker())
    events = list(app.workflow(FunctionRouter(dispatch_all)).stream("q"))
    tokens = [event.data for event in events if event.kind == "token"]
    restarts = [token for token in tokens if token["restart"]]
    assert len(restarts) == 1 and restarts[0]["delta"].strip() == "second"
    text = ""
    for token in tokens:
        text = token["delta"] if token["restart"] else text + token["delta"]
    assert text.strip() == "second draft" and events[-1].data["result"].answer == "second draft"


def _inside_a_node(workflow: Any, asynchronous: bool = False, checkpointer: Any = None) -> Any:
    """A user's own LangGraph graph whose one node, ``orchestra``, answers ``question`` with ``workflow`` (``run``, or
    ``arun`` from an async node), compiled with ``checkpointer``."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class Outer(TypedDict):
        question: str
        answer: str

    def ask(state: Outer) -> dict[str, str]:
        return {"answer": workflow.run(state["question"]).answer}

    async def aask(state: Outer) -> dict[str, str]:
        return {"answer": (await workflow.arun(state["question"])).answer}

    builder = StateGraph(Outer).add_node("orchestra", aask if asynchronous else ask)
    return builder.add_edge(START, "orchestra").add_edge("orchestra", END).compile(checkpointer=checkpointer)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_workflow_run_inside_a_node_of_the_user_s_own_langgraph_graph_streams_its_events_as_a_subgraph(asynchronous: bool) -> None:
    """A LangGraph user embeds a workflow in a graph of their own (with its checkpointer): the run is stored as
    usual, and the parent's stream with ``subgraphs=True`` carries the run's events under the node's namespace."""
    from langgraph.checkpoint.memory import MemorySaver

    app = make_app()
    app.registry.add_agent(AgentCard(id="calc", description="Arithmetic."), implementation=lambda q: "42")
    outer = _inside_a_node(app.workflow(FunctionRouter(dispatch_all)), asynchronous, MemorySaver())
    config = {"configurable": {"thread_id": "t"}}

    async def collect() -> list[Any]:
        return [chunk async for chunk in outer.astream({"question": "6*7?"}, config, stream_mode=["custom", "updates"], subgraphs=True)]

    chunks = asyncio.run(collect()) if asynchronous else list(outer.stream({"question": "6*7?"}, config, stream_mode=["custom", "updates"], subgraphs=True))
    events = [(namespace, chunk) for namespace, mode, chunk in chunks if mode == "custom"]
    assert [event.kind for _, event in events] == ["decision", "call", "aggregate"]
    assert all(namespace and namespace[0].startswith("orchestra:") for namespace, _ in events)
    assert chunks[-1] == ((), "updates", {"orchestra": {"answer": "42"}})
    run = app.store.get_run(events[0][1].run_id).run
    assert run.status == "ok" and run.answer == "42" and outer.get_state(config).values["answer"] == "42"


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_run_passes_the_caller_s_callbacks_tags_and_metadata_to_langgraph(asynchronous: bool) -> None:
    """A LangSmith or Langfuse tracer is a LangChain callback handler: a run took no config, so none saw its nodes.
    The caller's callbacks, tags and metadata now reach every node, with the run's id in the metadata."""
    from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler

    app = make_app()
    app.registry.add_agent(AgentCard(id="calc", description="Arithmetic."), implementation=lambda q: "42")
    seen: list[tuple[str, list[str], dict[str, Any]]] = []

    class Tracer(BaseCallbackHandler):
        def on_chain_start(self, serialized, inputs, *, tags=None, metadata=None, **kwargs) -> None:  # noqa: ANN001
            seen.append((kwargs.get("name") or "", list(tags or []), dict(metadata or {})))

    class AsyncTracer(AsyncCallbackHandler):
        async def on_chain_start(self, serialized, inputs, *, tags=None, metadata=None, **kwargs) -> None:  # noqa: ANN001
            seen.append((kwargs.get("name") or "", list(tags or []), dict(metadata or {})))

    workflow = app.workflow(FunctionRouter(dispatch_all))
    config = {"callbacks": [AsyncTracer() if asynchronous else Tracer()], "tags": ["nightly"], "metadata": {"user": "ada"}, "run_name": "ask"}
    result = asyncio.run(workflow.arun("6*7?", config=config)) if asynchronous else workflow.run("6*7?", config=config)

    assert result.status == "ok" and result.answer == "42"
    names = [name for name, _, _ in seen]
    assert names[0] == "ask" and {"router", "call", "aggregate"} <= set(names)
    assert all("nightly" in tags and metadata.get("user") == "ada" and metadata.get("orchestra_run_id") == result.run_id
               for _, tags, metadata in seen)


@pytest.mark.parametrize(("config", "named"), [
    ({"recursion_limit": 5}, "Budget.max_rounds"),
    ({"max_concurrency": 2}, "Budget.max_parallel_calls"),
    ({"configurable": {"thread_id": "t"}}, "configurable"),
    ({"callback": []}, "'callback'"),
    ({"tags": "nightly"}, "tags"),
    ({"metadata": ["user"]}, "metadata"),
    ("callbacks", "mapping"),
])
def test_a_run_config_the_workflow_does_not_pass_is_refused_naming_it_and_nothing_is_stored(config: Any, named: str) -> None:
    app = make_app()
    app.registry.add_agent(AgentCard(id="calc", description="Arithmetic."), implementation=lambda q: "42")
    with pytest.raises(ConfigurationError, match=named):
        app.workflow(FunctionRouter(dispatch_all)).run("6*7?", config=config)
    assert app.store.list_runs() == []


# -- the answer as it is written -----------------------------------------------------------------------------------


def _read_answer(events: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """What a reader of the ``answer`` events shows at the end (starting over at a restart), and the events."""
    answers = [event.data for event in events if event.kind == "answer"]
    shown = ""
    for answer in answers:
        shown = ("" if answer["restart"] else shown) + answer["delta"]
    return shown, answers


class _WritesThenDies(ScriptedModel):
    """The refiner writes half an answer, then its connection drops (no fallback: the answers are listed)."""

    def stream(self, messages: Any, options: Any = None) -> Any:
        yield from (ChatChunk(delta="Paris is"), ChatChunk(delta=" the"))
        raise ModelUnavailableError("connection dropped", model_id=self.id)


@pytest.mark.parametrize(
    ("case", "written_as_it_goes", "restarts"),
    [
        ("refined", True, 0),  # the refiner's words as it writes them, its echoed cue left out
        ("lone answer under Refine", True, 0),  # one agent: its answer passes through, so its words are the answer's
        ("the one of two that answers", True, 0),  # the other declined at once: the one left writing is the answer
        ("vote", False, 0),  # a vote has no writer: the answer comes whole at the end
        ("refiner died part way", True, 1),  # what was sent is not the answer (the answers are listed): sent over again
        ("agent died, fallback rewrote it", True, 1),
    ],
)
def test_answer_events_join_into_the_run_s_answer_and_come_as_it_is_written(case: str, written_as_it_goes: bool, restarts: int) -> None:
    writer = ScriptedModel("writer", ["Paris is the capital.", "Paris, on the Seine."] * 2)
    refiner: ScriptedModel = ScriptedModel("refiner", ["Merged answer: Paris is the capital of France,\non the Seine.\n\nMerged answer:"])
    fallback = None
    if case == "refiner died part way":
        refiner = _WritesThenDies("refiner", [])
    if case == "agent died, fallback rewrote it":
        writer, fallback = _DiesMidStream("writer", []), FallbackPolicy(models=("backup",))
    app = make_app(writer, refiner, ScriptedModel("backup", ["Paris is the capital"]), fallback=fallback)
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    app.registry.add_agent(AgentCard(id="history", description="History answers.", model="writer"))
    if case == "the one of two that answers":
        class Slow(ScriptedModel):  # writes as a model does, word after word, while the other agent has long ended
            def stream(self, messages: Any, options: Any = None) -> Any:
                for chunk in super().stream(messages, options):
                    time.sleep(0.05)
                    yield chunk

        import time

        app = make_app(Slow("writer", ["Paris is the capital."]), refiner)
        app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
        app.registry.add_agent(AgentCard(id="clock", description="Tells the time."), implementation=lambda q: AgentReply(answer="Not mine.", declined=True))
    both = case in ("refined", "vote", "refiner died part way", "the one of two that answers")
    router = FunctionRouter(dispatch_all) if both else FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="geo", query=s.query),)))
    aggregator = WeightedVote() if case == "vote" else Refine("refiner")
    events = list(app.workflow(router, aggregator=aggregator).stream("Capital of France?"))
    result = events[-1].data["result"]
    shown, answers = _read_answer(events)
    assert result.status == "ok" and shown == result.answer and result.answer
    finished = [e.kind for e in events].index("aggregate")  # the answer events before it came while the answer was written
    assert (sum(1 for e in events[:finished] if e.kind == "answer") > 1) is written_as_it_goes, [e.kind for e in events]
    assert sum(1 for answer in answers if answer["restart"]) == restarts
    if case == "refined":
        assert result.answer == "Paris is the capital of France,\non the Seine." and not any("Merged" in a["delta"] for a in answers)


def test_a_router_that_finishes_itself_sends_its_answer_whole_and_a_failed_run_sends_none() -> None:
    app = make_app(ScriptedModel("writer", ["Paris is the capital."]))
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))

    def ask_then_finish(state: RouterState) -> Dispatch | Finish:
        if not state.observations:
            return Dispatch(calls=(Call(agent_id="geo", query=state.query),))
        return Finish(answer=f"It says: {state.observations[0].answer}")

    events = list(app.workflow(FunctionRouter(ask_then_finish, multi_round=True)).stream("Capital?"))
    assert _read_answer(events) == ("It says: Paris is the capital.", [{"delta": "It says: Paris is the capital.", "restart": False}])
    assert [e.kind for e in events][-2:] == ["answer", "run_finished"]

    def broken(state: RouterState) -> Dispatch:
        raise RuntimeError("router bug")

    failing = list(app.workflow(FunctionRouter(broken)).stream("Capital?"))
    assert failing[-1].data["result"].status == "error" and _read_answer(failing)[1] == []


def test_what_is_sent_of_a_refiner_s_text_is_always_how_its_answer_starts() -> None:
    """`refined_so_far` on every prefix of texts mixing answers, blank lines and the cue echoed before, after or
    inside them: what it lets out is always the start of the answer `Refine` makes of the whole text."""
    import random

    from orchestra.aggregate import _without_cue, refined_so_far

    pieces = ["Merged answer:", "merged answer: ", "MERGED ANSWER:", "Merged", "Paris", " is the capital.", "\n", "\n\n", "  ",
              "answer", ":", "::", "Merge", "42", " merged answer ", "Merged answer::"]
    rng = random.Random(7)
    for _ in range(1000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        final = _without_cue(text)
        for cut in range(len(text) + 1):
            assert final.startswith(refined_so_far(text[:cut])), (text, cut)
        assert refined_so_far(text + "\nmore") .startswith(refined_so_far(text)) or not refined_so_far(text)


def test_a_stream_closed_at_its_first_event_stores_the_run_as_interrupted_and_call_events_name_their_model() -> None:
    app = make_app(ScriptedModel("writer", ["Paris."]))
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    workflow = app.workflow(FunctionRouter(dispatch_all))
    events = workflow.stream("Capital?")
    first = next(events)
    events.close()  # Ctrl-C, or a client gone, right after the run started: it was left "running" in the store
    assert first.kind == "run_started" and app.store.get_run(first.run_id).run.status == "interrupted"
    calls = [event.data for event in workflow.stream("Capital?") if event.kind == "call"]
    assert [(call["agent_id"], call["model_id"]) for call in calls] == [("geo", "writer")]


def test_cancel_stops_a_run_under_way_at_its_model_s_next_token_and_it_ends_interrupted() -> None:
    """`Orchestra.cancel` from another thread: the model writing stops at its next token (the rest is never read),
    no fallback is tried, the run ends interrupted with the model call kept as stopped, and it can be resumed."""
    import threading
    import time

    from orchestra import resume

    read: list[str] = []

    class Slow(ScriptedModel):
        def stream(self, messages: Any, options: Any = None) -> Any:
            for index in range(40):
                time.sleep(0.05)
                read.append(str(index))
                yield ChatChunk(delta=f" w{index}")
            yield ChatChunk(delta="", result=self.chat(messages, options))

    app = make_app(Slow("writer", ["never read"]), ScriptedModel("backup", ["backup answer"]), fallback=FallbackPolicy(models=("backup",)))
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    workflow = app.workflow(FunctionRouter(dispatch_all))
    assert app.cancel("no-such-run") is False
    events: list[Any] = []
    started = threading.Event()

    def follow() -> None:
        for event in workflow.stream("Capital?"):
            events.append(event)
            if event.kind == "token":
                started.set()

    worker = threading.Thread(target=follow)
    worker.start()
    assert started.wait(timeout=5)
    begun = time.perf_counter()
    assert app.cancel(events[0].run_id) is True
    worker.join(timeout=5)
    assert not worker.is_alive() and time.perf_counter() - begun < 1.0 and len(read) < 10  # not the 40 tokens' 2 s
    result = events[-1].data["result"]
    assert result.status == "interrupted" and isinstance(result.error, RunCancelled)
    trace = app.store.get_run(result.run_id)
    model_calls = [step for step in trace.steps if step.kind == "model_call"]
    assert [(step.model_id, step.error["type"]) for step in model_calls] == [("writer", "RunCancelled")]  # no fallback tried
    assert app.cancel(result.run_id) is False  # it is no longer under way

    resumed = resume(app, result.run_id)  # the stopped call runs again, to its end
    assert resumed.status == "ok" and resumed.answer == "never read"


def test_a_multi_round_router_is_given_no_aggregator_and_its_runs_record_none() -> None:
    """A multi-round router's graph has no aggregation: an aggregator given for it would never run, so it is
    refused when the workflow is built (it used to be accepted and silently ignored, and recorded on every run as
    if it had merged the answer)."""
    app = Orchestra(store=InMemoryStore())
    app.registry.add_agent(AgentCard(id="echo", description="echoes"), implementation=lambda query: query)

    def loop(state: RouterState) -> Dispatch | Finish:
        if not state.observations:
            return Dispatch(calls=(Call(agent_id="echo", query=state.query),))
        return Finish(answer=f"the echo said {state.observations[-1].answer}")

    looping = FunctionRouter(loop, multi_round=True, name="loop")
    with pytest.raises(ConfigurationError, match="router 'loop' is multi-round.*aggregator 'weighted-vote' would never run"):
        app.workflow(looping, aggregator=WeightedVote())
    result = app.workflow(looping).run("ping")
    assert result.status == "ok" and result.answer == "the echo said ping", result.error
    meta = app.store.get_run(result.run_id).run.meta
    assert meta["aggregator"] is None and meta["multi_round"] is True
    single = app.workflow(FunctionRouter(lambda state: Dispatch(calls=(Call(agent_id="echo", query=state.query),)))).run("ping")
    assert app.store.get_run(single.run_id).run.meta["aggregator"] == {"name": "pass-through"}


def test_a_stored_run_gives_back_its_decisions_typed_as_the_run_result_had_them() -> None:
    """`RunTrace.decisions()`: what a user reading a past run wants (chosen agents, scores, rationale, meta) as the
    Dispatch and Finish the router returned, not the step's JSON; a decision that failed has none."""
    from orchestra import CandidateScore

    app = Orchestra(store=InMemoryStore())
    app.registry.add_agent(AgentCard(id="echo", description="echoes"), implementation=lambda query: query)

    def loop(state: RouterState) -> Dispatch | Finish:
        if not state.observations:
            return Dispatch(calls=(Call(agent_id="echo", query=state.query),), rationale="echo first",
                            scores=(CandidateScore(id="echo", score=0.9, detail={"why": "only one"}),), meta={"round": 0})
        return Finish(answer="done")

    result = app.workflow(FunctionRouter(loop, multi_round=True)).run("ping")
    decisions = app.store.get_run(result.run_id).decisions()
    assert decisions == list(result.decisions) and [type(d).__name__ for d in decisions] == ["Dispatch", "Finish"]
    assert decisions[0].scores[0].detail == {"why": "only one"} and decisions[0].meta == {"round": 0}

    def broken(state: RouterState) -> Dispatch:
        raise RuntimeError("router down")

    failed = app.workflow(FunctionRouter(broken)).run("ping")
    assert failed.status == "error" and app.store.get_run(failed.run_id).decisions() == []


# -- a workflow inside a graph of the user's own ----------------------------------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_workflow_run_inside_a_node_streams_its_model_answers_as_token_events_under_the_node_s_namespace(asynchronous: bool) -> None:
    """The README promises a parent graph's ``stream(..., stream_mode="custom", subgraphs=True)`` the run's token
    events beside its decision, call and aggregate ones. Only `Workflow.stream` streamed model answers, so a run
    started with `run` or `arun` from a node sent none: a user's graph could not show an agent writing."""
    app = make_app(ScriptedModel("writer", ["Paris is the capital."]))
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    workflow = app.workflow(FunctionRouter(dispatch_all))
    outer = _inside_a_node(workflow, asynchronous)

    async def collect() -> list[Any]:
        return [chunk async for chunk in outer.astream({"question": "capital?"}, stream_mode="custom", subgraphs=True)]

    chunks = asyncio.run(collect()) if asynchronous else list(outer.stream({"question": "capital?"}, stream_mode="custom", subgraphs=True))
    assert [event.kind for _, event in chunks] == ["decision", "token", "token", "token", "token", "call", "aggregate"]
    assert all(namespace[0].startswith("orchestra:") for namespace, _ in chunks)
    tokens = [event.data for _, event in chunks if event.kind == "token"]
    assert "".join(token["delta"] for token in tokens) == "Paris is the capital." and {token["agent_id"] for token in tokens} == {"geo"}
    # the same run alone, with no graph around it, still calls its model whole (nobody reads its tokens)
    assert workflow.run("capital?").answer == "Paris is the capital."


def test_a_workflow_run_inside_a_checkpointed_graph_runs_anew_when_its_node_runs_again_after_an_interrupt() -> None:
    """A node that runs a workflow and then asks a human (LangGraph's ``interrupt``) runs again from its start when
    the graph is resumed. The workflow's graph took the parent's checkpointer, so the second run found the first
    one's final checkpoint under the same task and ran nothing: no decision, no call, yet stored ``ok`` with the
    first run's answer and no step. The trace store is the workflow's record; its graph keeps no checkpoint."""
    from typing import TypedDict

    from langgraph.checkpoint.memory import MemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, interrupt

    app = make_app()
    asked: list[str] = []

    def answer(query: str) -> str:
        asked.append(query)
        return f"draft {len(asked)}"

    app.registry.add_agent(AgentCard(id="drafts", description="Drafts."), implementation=answer)
    workflow = app.workflow(FunctionRouter(dispatch_all))

    class Outer(TypedDict):
        question: str
        answer: str

    def draft_then_ask_a_human(state: Outer) -> dict[str, str]:
        result = workflow.run(state["question"])
        verdict = interrupt({"draft": result.answer, "run_id": result.run_id})
        return {"answer": f"{result.answer} ({verdict}, run {result.run_id})"}

    saver = MemorySaver()
    outer = (StateGraph(Outer).add_node("orchestra", draft_then_ask_a_human).add_edge(START, "orchestra")
             .add_edge("orchestra", END).compile(checkpointer=saver))
    config = {"configurable": {"thread_id": "t"}}
    paused = outer.invoke({"question": "write it"}, config)
    assert paused["__interrupt__"][0].value["draft"] == "draft 1"
    resumed = outer.invoke(Command(resume="approved"), config)

    assert asked == ["write it", "write it"]  # the node ran again, and so did its workflow
    runs = app.store.list_runs()
    assert len(runs) == 2 and resumed["answer"] == f"draft 2 (approved, run {runs[0].id})"
    for run in runs:
        assert [step.kind for step in app.store.get_run(run.id).steps] == ["decision", "call", "aggregate"]
    assert {saved.config["configurable"]["checkpoint_ns"] for saved in saver.list(config)} == {""}  # only the user's graph checkpointed


def test_a_run_from_a_node_keeps_its_own_concurrency_whatever_the_outer_graph_s_max_concurrency() -> None:
    """Budget sets the run's concurrency: with max_parallel_calls unset a dispatch's calls run all at once, even
    from a node of a graph run with max_concurrency=1 (it used to take the outer graph's, and ran them one by one).
    Three agents wait for one another at a barrier: run one at a time, the first would wait in vain."""
    import threading

    barrier = threading.Barrier(3, timeout=5)

    def meet(query: str) -> str:
        barrier.wait()  # BrokenBarrierError (a failed call) unless the three run at once
        return "met"

    app = Orchestra(store=InMemoryStore())
    for agent_id in ("a", "b", "c"):
        app.registry.add_agent(AgentCard(id=agent_id, description="meets the others"), implementation=meet)
    final = _inside_a_node(app.workflow("all")).invoke({"question": "meet", "answer": ""}, {"max_concurrency": 1})
    assert final["answer"].count("met") == 3, final
    (run,) = app.store.list_runs()
    assert run.status == "ok" and run.meta["budget"]["max_parallel_calls"] is None


@pytest.mark.parametrize("how", ["run", "stream", "arun", "astream"])
def test_one_call_at_a_time_holds_in_every_way_of_running_and_a_stream_of_it_ends(how: str) -> None:
    """Budget(max_parallel_calls=1) made LangGraph's max_concurrency 1, and LangGraph's sync stream runs its event
    waiter in that same pool of one: `stream` (orchestra chat, the server's sync callers, the UI) hung for ever
    before the first call. The limit is now the run's own, and holds: no two calls are ever under way at once."""
    import threading
    import time

    under_way, most, lock = [0], [0], threading.Lock()

    def one_at_a_time(query: str) -> str:
        with lock:
            under_way[0] += 1
            most[0] = max(most[0], under_way[0])
        time.sleep(0.05)  # long enough for a second call to start, were it allowed
        with lock:
            under_way[0] -= 1
        return "done"

    app = Orchestra(store=InMemoryStore())
    for agent_id in ("a", "b", "c"):
        app.registry.add_agent(AgentCard(id=agent_id, description="waits its turn"), implementation=one_at_a_time)
    workflow = app.workflow("all", budget=Budget(max_parallel_calls=1))

    async def events() -> list[Any]:
        return [event async for event in workflow.astream("go")]

    if how == "run":
        result = workflow.run("go")
    elif how == "arun":
        result = asyncio.run(workflow.arun("go"))
    else:
        streamed = list(workflow.stream("go")) if how == "stream" else asyncio.run(events())
        result = streamed[-1].data["result"]
    assert result.status == "ok" and [obs.answer for obs in result.observations] == ["done"] * 3, result.error
    assert most[0] == 1


class _Judge:
    """An aggregator of a user's own that asks a model which answer is best and passes that answer on: the model
    writes a number, not the answer."""

    name = "judge"

    def __init__(self, purpose: str) -> None:
        self.purpose = purpose

    def aggregate(self, query: str, observations: Any, models: Any) -> Any:
        from orchestra import Aggregated

        answered = [obs for obs in observations if obs.answered]
        listing = "\n".join(f"{number}. {obs.answer}" for number, obs in enumerate(answered, 1))
        said = models.chat("judge", [Message(role="user", content=f"{query}\n{listing}\nBest:")], purpose=self.purpose)
        return Aggregated(answered[int(said.text[0]) - 1].answer or "", {"judge": said.text})

    async def aaggregate(self, query: str, observations: Any, models: Any) -> Any:
        return self.aggregate(query, observations, models)


class _Shouting(PassThrough):
    """A subclass of a shipped aggregator that makes its own answer of a lone one."""

    name = "shouting"

    def aggregate(self, query: str, observations: Any, models: Any) -> Any:
        from orchestra import Aggregated

        return Aggregated(super().aggregate(query, observations, models).answer.upper())


@pytest.mark.parametrize("aggregator", [_Judge("refine"), _Judge("judge"), _Shouting()], ids=["judge-refine", "judge", "passthrough-subclass"])
def test_an_aggregator_of_your_own_gets_its_answer_events_whole_never_a_model_s_words_taken_back(aggregator: Any) -> None:
    """The answer events guessed from the aggregator's type: a judge calling its model with purpose "refine" had
    its "2 because..." sent as the answer, and a PassThrough subclass the lone agent's words, each then taken
    back with a restart. Only the shipped aggregators' models write the answer as it streams."""
    writer = ScriptedModel("writer", ["Paris is the capital.", "Paris, on the Seine."])
    app = make_app(writer, ScriptedModel("judge", ["2 because it says more"]))
    app.registry.add_agent(AgentCard(id="geo", description="Geography answers.", model="writer"))
    if not isinstance(aggregator, PassThrough):
        app.registry.add_agent(AgentCard(id="history", description="History answers.", model="writer"))
    events = list(app.workflow(FunctionRouter(dispatch_all), aggregator=aggregator).stream("Capital of France?"))

    result = events[-1].data["result"]
    answers = [event.data for event in events if event.kind == "answer"]
    assert result.status == "ok" and result.answer in ("Paris, on the Seine.", "PARIS IS THE CAPITAL.")
    assert answers == [{"delta": result.answer, "restart": False}]
    assert any(event.kind == "token" for event in events)  # the models did stream: their words were not taken for the answer's


def test_an_aggregator_without_a_name_is_refused_when_given() -> None:
    """Its run read the name only once every agent had answered, and raised an AttributeError out of run()."""

    class Nameless:
        def aggregate(self, query, observations, models):  # type: ignore[no-untyped-def]
            raise AssertionError("never reached")

        async def aaggregate(self, query, observations, models):  # type: ignore[no-untyped-def]
            raise AssertionError("never reached")

    app = make_app()
    with pytest.raises(ConfigurationError, match="Nameless has no name"):
        app.workflow(FunctionRouter(dispatch_all), aggregator=Nameless())


class _Picker:
    """An aggregator of a user's own that can ask a judge model which answer to keep; ``skip_judge`` stands for its
    code changed since the original run (same description, no judge asked)."""

    name = "picker"

    def __init__(self, judge: str | None = None, *, skip_judge: bool = False) -> None:
        self.judge, self.skip_judge = judge, skip_judge

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "judge": self.judge}

    def aggregate(self, query: str, observations: Any, models: Any) -> Any:
        from orchestra import Aggregated

        answered = [obs for obs in observations if obs.answered]
        number = 1
        if self.judge and not self.skip_judge:
            number = int(models.chat(self.judge, [Message(role="user", content=query)], purpose="judge").text)
        return Aggregated(answered[number - 1].answer or "")

    async def aaggregate(self, query: str, observations: Any, models: Any) -> Any:
        return self.aggregate(query, observations, models)


@pytest.mark.parametrize(("given", "mismatch"), [
    (_Picker("judge"), None),
    (_Picker(), "describes itself as {'name': 'picker', 'judge': None}, the original run's as {'name': 'picker', 'judge': 'judge'} (differs in judge)"),
    (_Picker("judge", skip_judge=True), "made 1 model call(s) fewer than the original's aggregation"),
], ids=["as-recorded", "configured-otherwise", "skips-its-model-call"])
def test_an_exact_replay_checks_the_aggregator_given_against_the_record_not_only_the_answer(given: Any, mismatch: str | None) -> None:
    """The judge picked the first answer, which the aggregator without a judge also keeps: a replay given that one
    (or one that no longer asks its judge) was an "exact" replay, status ok, with the judge's recorded call unasked."""
    from orchestra import ReplayMismatch, replay

    app = make_app(ScriptedModel("judge", ["1"]))
    app.registry.add_agent(AgentCard(id="a", description="first"), implementation=lambda q: "from a")
    app.registry.add_agent(AgentCard(id="b", description="second"), implementation=lambda q: "from b")
    original = app.workflow(FunctionRouter(dispatch_all), aggregator=_Picker("judge")).run("which?")
    assert original.answer == "from a"

    again = replay(app, original.run_id, aggregator=given)

    if mismatch is None:
        assert again.status == "ok" and again.answer == original.answer
        assert app.store.get_run(again.run_id).tree() == app.store.get_run(original.run_id).tree()
    else:
        assert again.status == "error" and isinstance(again.error, ReplayMismatch) and mismatch in str(again.error), again.error


def test_a_streamed_run_keeps_its_budget_s_concurrency_and_a_one_call_budget_does_not_hang_it() -> None:
    """LangGraph's sync stream takes one of max_concurrency's slots for itself: a streamed run with
    max_parallel_calls=2 ran its calls one at a time (the two agents below wait for each other at a barrier, in
    vain), and one with max_calls=1 (max_concurrency 1) never ran its router and hung. Run in a thread, so that a
    hang fails the test instead of the suite."""
    import threading

    barrier = threading.Barrier(2, timeout=5)

    def meet(query: str) -> str:
        barrier.wait()  # BrokenBarrierError (a failed call) unless the two run at once
        return "met"

    app = Orchestra(store=InMemoryStore())
    for agent_id in ("a", "b"):
        app.registry.add_agent(AgentCard(id=agent_id, description="meets the other"), implementation=meet)
    results: dict[str, Any] = {}

    def stream(label: str, budget: Budget) -> None:
        results[label] = list(app.workflow("all", budget=budget).stream("meet"))[-1].data["result"]

    for label, budget in (("parallel", Budget(max_parallel_calls=2)), ("one call", Budget(max_calls=1))):
        worker = threading.Thread(target=stream, args=(label, budget), daemon=True)
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), f"the {label} stream hung"
    assert results["parallel"].status == "ok" and results["parallel"].answer.count("met") == 2, results["parallel"]
    assert isinstance(results["one call"].error, BudgetExceeded) and "max_calls allowed 1, 2 needed" in str(results["one call"].error)


def test_an_aggregator_reads_what_each_agent_reported_beside_its_answer_live_and_in_a_replay() -> None:
    """`Observation.meta` carries `AgentReply.meta` (a confidence, sources) to the aggregator: it was stored on the
    call step but never reached it, so an aggregator weighing the agents' own confidence could not be written."""
    from orchestra import Aggregated, replay

    class MostConfident:
        name = "most-confident"

        def aggregate(self, query: str, observations: Any, models: Any) -> Aggregated:
            best = max((obs for obs in observations if obs.answered), key=lambda obs: obs.meta["confidence"])
            return Aggregated(best.answer or "", meta={"confidence": best.meta["confidence"]})

        async def aaggregate(self, query: str, observations: Any, models: Any) -> Aggregated:
            return self.aggregate(query, observations, models)

    app = Orchestra(store=InMemoryStore())
    app.registry.add_agent(AgentCard(id="sure", description="sure"), implementation=lambda q: AgentReply(answer="yes", meta={"confidence": 0.9}))
    app.registry.add_agent(AgentCard(id="unsure", description="unsure"), implementation=lambda q: AgentReply(answer="no", meta={"confidence": 0.2}))
    result = app.workflow(FunctionRouter(dispatch_all), aggregator=MostConfident()).run("well?")
    assert result.status == "ok" and result.answer == "yes", result.error
    assert {obs.agent_id: obs.meta for obs in result.observations} == {"sure": {"confidence": 0.9}, "unsure": {"confidence": 0.2}}
    again = replay(app, result.run_id, aggregator=MostConfident())  # served calls carry their recorded meta too
    assert again.status == "ok" and again.answer == "yes" and [obs.meta for obs in again.observations] == [obs.meta for obs in result.observations]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["run", "arun"])
def test_a_fallback_model_is_called_only_within_the_budget_the_failed_model_left(asynchronous: bool) -> None:
    """The budget was checked once, before the first model of a call's fallback chain: a primary that used up the
    run's time (its retries, their timeouts) or was billed past the cost limit for an answer it then had refused
    still had its fallback called, and the run ended ok 10 s past a ``max_seconds`` of 2. The exact replay stops
    where the original stopped, though it does not take the time again."""
    from orchestra import replay

    slow = ScriptedModel("slow", [ModelTimeoutError("timed out", model_id="slow")], latency_s=0.3)
    refused = ModelError("empty answer", model_id="billed", prompt_tokens=900, completion_tokens=100, cost_usd=0.5)
    billed, backup = ScriptedModel("billed", [refused]), ScriptedModel("backup", ["merged"])
    app = make_app(slow, billed, backup, fallback=FallbackPolicy(models=("backup",)))
    app.registry.add_agent(AgentCard(id="tool", description="x"), implementation=lambda q: "42")

    def run(budget: Budget, refiner: str) -> Any:
        workflow = app.workflow(FunctionRouter(dispatch_all), aggregator=Refine(refiner, always=True), budget=budget)
        return asyncio.run(workflow.arun("q")) if asynchronous else workflow.run("q")

    for budget, refiner, failure, limit in ((Budget(max_seconds=0.2), "slow", "ModelTimeoutError", "max_seconds"),
                                            (Budget(max_cost_usd=0.1), "billed", "ModelError", "max_cost_usd"),
                                            (Budget(max_tokens=500), "billed", "ModelError", "max_tokens")):
        result = run(budget, refiner)
        assert isinstance(result.error, BudgetExceeded) and result.error.limit == limit, result
        model_calls = [step for step in app.store.get_run(result.run_id).steps if step.kind == "model_call"]
        assert [(step.model_id, step.error["type"]) for step in model_calls] == [(refiner, failure)]  # no fallback after it
        again = replay(app, result.run_id)
        assert isinstance(again.error, BudgetExceeded) and str(again.error) == str(result.error), again
    assert backup.calls == []
    unbounded = run(Budget(), "slow")  # within its budget the fallback answers, as before
    assert unbounded.status == "ok" and unbounded.answer == "merged" and len(backup.calls) == 1


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_stream_sends_every_call_the_run_stored_when_a_budget_stops_it(asynchronous: bool) -> None:
    """A call that ended after a sibling had failed the run (one call at a time: the next one, refused by the budget,
    is stored once the graph has raised) wrote its event into a stream that had stopped: the stored trace had three
    calls and the stream two, about one run in two. Five runs, so a dropped event shows."""
    model = ScriptedModel("m", ["word " * 400], latency_s=0.02)
    app = make_app(model)
    for index in range(3):
        app.registry.add_agent(AgentCard(id=f"agent{index}", description="x", model="m"))
    workflow = app.workflow(FunctionRouter(dispatch_all), aggregator=PassThrough(), budget=Budget(max_tokens=300, max_parallel_calls=1))

    async def collect() -> list[RunEvent]:
        return [event async for event in workflow.astream("q")]

    for _ in range(5):
        events = asyncio.run(collect()) if asynchronous else list(workflow.stream("q"))
        result = events[-1].data["result"]
        assert isinstance(result.error, BudgetExceeded), result
        stored = {step.id for step in app.store.get_run(result.run_id).steps if step.kind == "call"}
        sent = [event.data["step"] for event in events if event.kind == "call"]
        assert len(stored) == 3 and sorted(sent) == sorted(stored), (sent, stored)


@pytest.mark.parametrize("mode", ["run", "arun"])
def test_an_agent_another_process_removed_between_the_decision_and_its_call_is_not_called(mode: str) -> None:
    """A server's run called an agent that `orchestra agents remove` (another process on the same store) had removed
    after the decision: the call read the server's registry as it last refreshed it, at the decision. Removed in the
    same process the call was refused; now it is refused alike (UnknownAgentError on its observation) and the
    agents still registered answer."""
    from orchestra.registry import Registry

    store = InMemoryStore()
    app = Orchestra(store=store)
    called: list[str] = []
    app.registry.add_agent(AgentCard(id="kept", description="Stays registered."), implementation=lambda q: "kept's answer")
    app.registry.add_agent(AgentCard(id="gone", description="Removed meanwhile."), implementation=lambda q: called.append(q) or "stale answer")
    cli = Registry(store)  # another process on the same store

    def decide(state: RouterState) -> Dispatch:
        cli.remove_agent("gone")  # after the decision's view of the registry was taken, before the calls
        return dispatch_all(state)

    workflow = app.workflow(FunctionRouter(decide))
    result = workflow.run("q") if mode == "run" else asyncio.run(workflow.arun("q"))
    assert result.status == "ok" and result.answer == "kept's answer" and called == []
    errors = {obs.agent_id: obs.error["type"] for obs in result.observations if not obs.ok}
    assert errors == {"gone": "UnknownAgentError"}
    (decision,) = [step for step in store.get_run(result.run_id).steps if step.kind == "decision"]
    assert decision.request["agents"] == ["kept", "gone"] and decision.request["registry_version"] == 2


def test_a_store_written_before_list_runs_had_its_time_and_replay_filters_still_summarises() -> None:
    """`summarize_runs` passed ``replays``, ``since`` and ``until`` to every store, so a user's store written to the
    Store protocol before those filters raised TypeError; they are passed only when given."""
    from orchestra.trace import summarize_runs

    class EarlierStore(InMemoryStore):
        def list_runs(self, *, session_id: str | None = None, status: Any = None, router: str | None = None,  # type: ignore[override]
                      id_prefix: str | None = None, limit: int = 50, offset: int = 0) -> list[Any]:
            return super().list_runs(session_id=session_id, status=status, router=router, id_prefix=id_prefix, limit=limit, offset=offset)

    app = Orchestra(store=EarlierStore())
    app.registry.add_agent(AgentCard(id="echo", description="Echoes."), implementation=lambda q: q)
    app.workflow(FunctionRouter(dispatch_all)).run("q")
    assert summarize_runs(app.store)["runs"] == 1
    with pytest.raises(TypeError):  # asked for, a filter the store does not have is still an error
        summarize_runs(app.store, replays=False)
