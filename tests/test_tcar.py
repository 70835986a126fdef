"""TCAR LLM-prompted router with scripted router models: valid answers, unknown ids, garbage, empty sets."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from orchestra.cards import AgentCard, ModelCard
from orchestra import Orchestra, PassThrough
from orchestra.errors import DecisionError, ModelOutputError, ModelTimeoutError, ModelUnavailableError, PolicyError
from orchestra.model import ChatOptions, ChatResult, Message
from orchestra.routing import Dispatch, Finish, RouterState, load_router, register_router
from orchestra.routers.tcar import TCARRouter, build_prompt, parse_answer, routing_schema
from orchestra.testing import InMemoryStore, ScriptedModel, ScriptedModels

from test_routers_basic import CARDS, WordEmbedder

ROUTER_MODEL = ModelCard(id="router-model", description="A small instruction model that routes.")


class DirectAccess:
    """Model access that calls one scripted model directly (the runtime's access adds retries and records)."""

    def __init__(self, model: ScriptedModel) -> None:
        self.model = model

    def chat(self, model_id: str, messages: list[Message], options: ChatOptions | None = None, *, purpose: str = "") -> ChatResult:
        assert model_id == ROUTER_MODEL.id
        return self.model.chat(messages, options)

    async def achat(self, model_id: str, messages: list[Message], options: ChatOptions | None = None, *, purpose: str = "") -> ChatResult:
        return await self.model.achat(messages, options)


def answer(agents, reasoning="the user asks about it", out=False) -> str:
    return json.dumps({"reasoning": reasoning, "agents": agents, "out_of_scope": out})


def run(script, query="will it rain in paris", cards=CARDS, router=None):
    model = ScriptedModel(id=ROUTER_MODEL.id, script=script)
    state = RouterState(query=query, agents=tuple(cards), models=(ROUTER_MODEL,), registry_version=3, model_access=DirectAccess(model))
    router = router or TCARRouter(embedder=WordEmbedder())
    return router.decide(state), model


def test_valid_answer_dispatches_named_agents_in_order_with_constrained_schema():
    decision, model = run([answer(["weather", "music"])])
    assert isinstance(decision, Dispatch)
    assert [c.agent_id for c in decision.calls] == ["weather", "music"]
    assert decision.rationale == "the user asks about it"
    messages, options = model.calls[0]
    schema = options.json_schema
    assert schema["properties"]["agents"]["items"]["enum"] == ["weather", "music", "bank"]
    assert schema["properties"]["agents"]["maxItems"] == 3
    assert list(schema["required"]) == ["reasoning", "agents", "out_of_scope"]
    assert options.max_tokens and options.max_tokens <= 512
    assert "- weather:" in messages[1].content and "will it rain in paris" in messages[1].content


def test_the_chosen_agents_get_the_query_as_typed():
    """TCAR reads the query cleaned, but dispatched it cleaned too: line breaks gone, cut at 2,000 characters."""
    query = "will it rain in paris\n\n| day | rain |\n|---|---|\n" + "x" * 3000
    decision, _ = run([answer(["weather"])], query=query)
    assert isinstance(decision, Dispatch) and [c.query for c in decision.calls] == [query]


def test_unknown_ids_are_dropped_and_recorded_never_guessed():
    decision, _ = run([answer(["Weather", "weather ", "bank", "nonexistent"])])
    assert isinstance(decision, Dispatch)
    assert [c.agent_id for c in decision.calls] == ["bank"]
    assert decision.meta["dropped"] == ["Weather", "weather ", "nonexistent"]


def test_only_unknown_ids_is_a_recorded_out_of_scope():
    decision, _ = run([answer(["ghost"])])
    assert isinstance(decision, Finish) and decision.out_of_scope
    assert decision.meta["dropped"] == ["ghost"]


@pytest.mark.parametrize("text", ["I think weather", "", "{not json", "[\"weather\"]", '{"agents": 5}'])
def test_garbage_is_a_recorded_out_of_scope(text):
    decision, _ = run([text])
    assert isinstance(decision, Finish) and decision.out_of_scope
    assert decision.meta["raw"] == text


def test_json_inside_prose_is_read():
    decision, _ = run(["Sure! ```json\n" + answer(["music"]) + "\n``` done"])
    assert isinstance(decision, Dispatch) and [c.agent_id for c in decision.calls] == ["music"]


def test_empty_set_and_out_of_scope_flag():
    decision, _ = run([answer([], out=True)])
    assert isinstance(decision, Finish) and decision.out_of_scope
    assert "out of scope" in decision.rationale


def test_more_than_k_is_cut_and_recorded():
    router = TCARRouter(k=1, embedder=WordEmbedder())
    decision, _ = run([answer(["music", "weather"])], router=router)
    assert [c.agent_id for c in decision.calls] == ["music"]
    assert decision.meta["beyond_k"] == ["weather"]


def test_an_unreadable_answer_is_a_recorded_out_of_scope():
    decision, _ = run([ModelOutputError("bad json", model_id="router-model")])
    assert isinstance(decision, Finish) and decision.out_of_scope
    assert decision.meta["error"]["type"] == "ModelOutputError"


@pytest.mark.parametrize("error", [ModelTimeoutError("slow", model_id="router-model"), ModelUnavailableError("refused", model_id="router-model")])
def test_a_router_model_that_cannot_answer_fails_the_run_typed(error):
    """An outage is not "no agent can help": the run fails with the model's error, recorded."""
    with pytest.raises(type(error)):
        run([error])
    app = Orchestra(store=InMemoryStore(), model_factory=ScriptedModels([ScriptedModel(id="router-model", script=[error] * 5)]))
    app.registry.add_model(ROUTER_MODEL)
    for card in CARDS:
        app.registry.add_agent(card, implementation=lambda query: "answered")
    result = app.workflow(TCARRouter(embedder=WordEmbedder()), aggregator=PassThrough()).run("will it rain in paris")
    assert result.status == "error" and isinstance(result.error, type(error)) and not result.out_of_scope
    stored = app.store.get_run(result.run_id).run
    assert stored.status == "error" and stored.error["type"] == type(error).__name__


def test_prompt_reads_the_registry_at_decision_time():
    taxi = AgentCard(id="taxi", description="Books taxis. Long second sentence that is not shown.")
    decision, model = run([answer(["taxi"])], cards=(*CARDS, taxi))
    assert isinstance(decision, Dispatch) and decision.calls[0].agent_id == "taxi"
    prompt = model.calls[0][0][1].content
    assert "- taxi: Books taxis." in prompt and "Long second sentence" not in prompt


def test_shortlist_prefilters_many_agents_and_says_so():
    many = tuple(AgentCard(id=f"agent{i}", description=f"Handles topic number {i} and item{i}.") for i in range(30))
    router = TCARRouter(shortlist=5, embedder=WordEmbedder())
    decision, model = run([answer(["agent7"])], query="topic item7", cards=many, router=router)
    assert isinstance(decision, Dispatch) and decision.calls[0].agent_id == "agent7"
    enum = model.calls[0][1].json_schema["properties"]["agents"]["items"]["enum"]
    assert len(enum) == 5 and "agent7" in enum
    assert "shortlist" in decision.meta["prefilter"]


def test_empty_query_and_missing_model_access_do_not_call_the_model():
    decision, model = run([answer(["weather"])], query="   ")
    assert isinstance(decision, Finish) and decision.out_of_scope and not model.calls
    # no router model is a failure, never a pass for "no agent can help"
    state = RouterState(query="rain", agents=CARDS, models=(ROUTER_MODEL,), registry_version=1)
    with pytest.raises(DecisionError, match="no model access"):
        TCARRouter(embedder=WordEmbedder()).decide(state)
    with pytest.raises(DecisionError, match="no router model"):
        TCARRouter(embedder=WordEmbedder()).decide(dataclasses.replace(state, models=()))


async def test_async_decide():
    model = ScriptedModel(id=ROUTER_MODEL.id, script=[answer(["bank"])])
    state = RouterState(query="my balance", agents=CARDS, models=(ROUTER_MODEL,), registry_version=1, model_access=DirectAccess(model))
    decision = await TCARRouter(embedder=WordEmbedder()).adecide(state)
    assert isinstance(decision, Dispatch) and decision.calls[0].agent_id == "bank"


def test_helpers_and_configuration():
    assert parse_answer(answer(["a", "a", "b"]), ["a", "b"], 3)["agents"] == ["a", "b"]
    assert routing_schema(["x"], 2, 100)["properties"]["reasoning"]["maxLength"] == 100
    assert len(build_prompt("q" * 5000, CARDS, 3, 80)[1].content) < 1200
    with pytest.raises(PolicyError):
        TCARRouter(k=0)
    register_router("tcar-test", TCARRouter)
    assert isinstance(load_router("tcar-test", embedder=WordEmbedder()), TCARRouter)


def test_a_raw_line_break_in_the_reasoning_keeps_the_named_agents():
    # what llama.cpp's grammar let through: a raw line break inside the JSON reasoning string
    raw = '{"reasoning": "The user asks about the weather. The answer is:\n" ,"agents": ["weather", "music"], "out_of_scope": false}'
    parsed = parse_answer(raw, ["weather", "music", "bank"], 3)
    assert parsed["ok"] and parsed["agents"] == ["weather", "music"] and parsed["reasoning"].endswith("is:\n")
    decision, _ = run(["Sure! " + raw])  # inside prose too
    assert isinstance(decision, Dispatch) and [c.agent_id for c in decision.calls] == ["weather", "music"]
    # and constrained decoding is asked for one line without quotes or backslashes, within the bound
    pattern = routing_schema(["x"], 2, 20)["properties"]["reasoning"]["pattern"]
    assert pattern.startswith("^") and pattern.endswith("$")
    whole = re.compile(pattern[1:-1])  # fullmatch: Python's $ would also match before a final line break
    assert whole.fullmatch("The user asks: rain.")
    assert not any(whole.fullmatch(text) for text in ("is:\n", "a\rb", 'a "quote"', "back\\slash", "x" * 21))


def test_an_agent_named_twice_joins_once_and_the_repeat_is_recorded():
    """Small models often write ["units", "units"]: the set holds the agent once, and the decision's meta says the
    model repeated it, since the set is then smaller than the list the model wrote."""
    parsed = parse_answer(answer(["weather", "weather", "music", "weather"]), ["weather", "music", "bank"], 3)
    assert parsed["agents"] == ["weather", "music"] and parsed["repeated"] == ["weather", "weather"]
    decision, _ = run([answer(["bank", "bank"])])
    assert isinstance(decision, Dispatch) and [c.agent_id for c in decision.calls] == ["bank"]
    assert decision.meta["repeated"] == ["bank"]
    decision, _ = run([answer(["bank"])])
    assert "repeated" not in decision.meta
