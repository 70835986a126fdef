"""A user's program against Orchestra's public API, written the way the README uses it: `.ci/typecheck` checks it
with ``mypy --strict`` as a user's type checker would (Orchestra ships py.typed). It is never run.

An error here is an annotation bug of ours: a Protocol a correct user class fails to satisfy, a return typed ``Any``
or a union where the user needs the real type. ``assert_type`` pins what a user's checker must see; a line marked
``# type: ignore[code]`` must stay an error (the check warns of an ignore that is no longer needed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, assert_type

from orchestra import (
    AgentCard,
    AgentContext,
    AgentReply,
    Aggregated,
    BaseRouter,
    Budget,
    Call,
    CandidateScore,
    ChatChunk,
    ChatOptions,
    ChatResult,
    Dispatch,
    FallbackPolicy,
    Finish,
    Message,
    ModelAccess,
    ModelCard,
    Observation,
    Orchestra,
    PassThrough,
    Refine,
    RetryPolicy,
    Router,
    RouterState,
    RoutingPolicy,
    RunEvent,
    RunResult,
    WeightedVote,
    Workflow,
    astream_resume,
    load_cards,
    load_router,
    parse_cards,
    register_router,
    replay,
    resume,
    stream_resume,
)
from orchestra.testing import FunctionRouter, InMemoryStore, ScriptedModel, ScriptedModels, no_network


class LongestDescription(BaseRouter):
    """The README's router: a BaseRouter subclass naming itself with a class attribute."""

    name = "longest"

    def decide(self, state: RouterState) -> Dispatch | Finish:
        best = max(state.agents, key=lambda card: len(card.description))
        return Dispatch(calls=(Call(agent_id=best.id, query=state.query),), rationale="most detailed card")


class PlainRouter:
    """The Router protocol alone, no base class."""

    name = "plain"

    def decide(self, state: RouterState) -> Dispatch | Finish:
        if not state.agents:
            return Finish(answer="nobody can answer that", out_of_scope=True)
        scores = tuple(CandidateScore(id=card.id, score=1.0) for card in state.agents)
        return Dispatch(calls=(Call(agent_id=state.agents[0].id, query=state.query),), scores=scores)


class NamedPerInstance:
    """A router named when it is built."""

    def __init__(self, name: str) -> None:
        self.name = name

    def decide(self, state: RouterState) -> Dispatch | Finish:
        return Finish(answer=state.query)


@dataclass(frozen=True)
class FrozenRouter:
    """A frozen dataclass: its name cannot be set, which the protocol must not ask for."""

    name: str

    def decide(self, state: RouterState) -> Dispatch | Finish:
        return Finish(answer=self.name)


class FirstAnswer:
    """An aggregator of the user's own, with its description."""

    name = "first"

    def aggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        answered = [o.answer for o in observations if o.answered and o.answer is not None]
        return Aggregated(answer=answered[0] if answered else "no answer", meta={"of": len(observations)})

    async def aaggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        return await asyncio.to_thread(self.aggregate, query, observations, models)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class Explainer:
    """An agent class calling a model through its context, as examples/custom_agent_and_aggregator.py does."""

    def run(self, query: str, context: AgentContext) -> AgentReply:
        result = context.models.chat("gpt-4o-mini", [Message(role="user", content=query)], ChatOptions(max_tokens=64))
        return AgentReply.from_chat(result, source="explainer")

    async def arun(self, query: str, context: AgentContext) -> AgentReply:
        result = await context.models.achat("gpt-4o-mini", [Message(role="user", content=query)])
        return AgentReply(answer=result.text, model_id=result.model_id, declined=not result.text)


@dataclass(frozen=True)
class EchoModel:
    """A chat model of the user's own (for `Orchestra(model_factory=...)`), streaming too."""

    id: str

    def chat(self, messages: list[Message], options: ChatOptions | None = None) -> ChatResult:
        return ChatResult(text=messages[-1].content, model_id=self.id)

    async def achat(self, messages: list[Message], options: ChatOptions | None = None) -> ChatResult:
        return self.chat(messages, options)

    def stream(self, messages: list[Message], options: ChatOptions | None = None) -> Iterator[ChatChunk]:
        result = self.chat(messages, options)
        yield ChatChunk(delta=result.text)
        yield ChatChunk(delta="", result=result)

    async def astream(self, messages: list[Message], options: ChatOptions | None = None) -> AsyncIterator[ChatChunk]:
        for chunk in self.stream(messages, options):
            yield chunk


def convert_units(query: str) -> str:
    return query


def cards_and_policies() -> None:
    card = AgentCard(id="writer", model="gpt-4o-mini", description="Explains facts.", examples=("Why?", "Where from?"))
    assert_type(card, AgentCard)
    assert_type(AgentCard.parse({"id": "units", "description": "Converts units."}), AgentCard)
    assert_type(ModelCard(id="gpt-4o-mini", description="Fast.", input_price_per_mtok=0.15), ModelCard)
    assert_type(load_cards("agents.yaml", AgentCard), list[AgentCard])
    assert_type(load_cards("models.jsonl", ModelCard), list[ModelCard])
    assert_type(parse_cards("id: a\ndescription: b", AgentCard), list[AgentCard])
    assert_type(RetryPolicy(max_attempts=2), RetryPolicy)
    assert_type(Budget(max_cost_usd=0.01, max_rounds=3), Budget)
    # the constructors check their fields, as pydantic models' do
    AgentCard(id="x", description="y", colour="red")  # type: ignore[call-arg]
    ModelCard(id=7, description="y")  # type: ignore[arg-type]
    RoutingPolicy(max_agents="2")  # type: ignore[arg-type]


def build() -> Orchestra:
    models = ScriptedModels([ScriptedModel("gpt-4o-mini", ["hello"])])
    store = InMemoryStore()
    assert_type(store, InMemoryStore)
    app = Orchestra(store=store, model_factory=models, retry=RetryPolicy(max_attempts=2),
                    fallback=FallbackPolicy(models=("gpt-4o-mini",)))
    own = Orchestra(store="sqlite:///:memory:", model_factory=lambda card, retry: EchoModel(card.id))
    print(own.registry.version)
    model = app.registry.ensure_model(ModelCard(id="gpt-4o-mini", description="Fast, cheap general model.",
                                                api_key_env="OPENAI_API_KEY", input_price_per_mtok=0.15,
                                                output_price_per_mtok=0.60))
    assert_type(model, ModelCard)
    agent = app.registry.ensure_agent(AgentCard(id="explainer", description="Explains.", backend="function",
                                                function="mypkg.agents:Explainer"), implementation=Explainer())
    assert_type(agent, AgentCard)
    app.registry.add_agent(AgentCard(id="units", description="Converts between units of distance.", backend="function",
                                     function="mypkg.tools:convert_units"), implementation=convert_units)
    assert_type(app.registry.add_agents(load_cards("agents.yaml", AgentCard)), list[AgentCard])
    assert_type(app.registry.add_models(load_cards("models.yaml", ModelCard), update=True), list[ModelCard])
    return app


def routers() -> None:
    register_router("longest", LongestDescription)
    register_router("plain", PlainRouter)
    register_router("named", NamedPerInstance)
    register_router("frozen", FrozenRouter)
    assert_type(load_router("longest"), Router)
    mine: list[Router] = [LongestDescription(), PlainRouter(), NamedPerInstance("x"), FrozenRouter("y"),
                          FunctionRouter(lambda state: Finish(answer=state.query), name="fn")]
    print([router.name for router in mine])


def run(app: Orchestra) -> None:
    workflow = app.workflow("embedding", aggregator=Refine("gpt-4o-mini"), budget=Budget(max_cost_usd=0.01),
                            routing=RoutingPolicy(max_agents=2))
    assert_type(workflow, Workflow)
    print(workflow.graph.get_graph().draw_mermaid())
    result = workflow.run("How far is a marathon in miles?", session_id="s1")
    assert_type(result, RunResult)
    assert_type(result.raise_for_error(), RunResult)
    print(result.status, result.answer, result.cost_usd)
    for observation in result.observations:
        print(observation.agent_id, observation.answer if observation.ok else observation.error)
    for other in (app.workflow(PlainRouter(), aggregator=FirstAnswer()), app.workflow(LongestDescription(), aggregator=WeightedVote()),
                  app.workflow(FunctionRouter(lambda state: Finish(answer="x")), aggregator=PassThrough())):
        print(other.run("hi").answer)

    # closing a stream stops its run, stored as interrupted: the streams are generators a user may close
    events = workflow.stream("hello", history=app.history("s1"))
    with contextlib.closing(events):
        answer = "".join(str(event.data["delta"]) for event in events if event.kind == "answer")
    events.close()
    assert_type(replay(app, result.run_id), RunResult)
    assert_type(resume(app, result.run_id), RunResult)
    with contextlib.closing(stream_resume(app, result.run_id)) as resumed:
        for event in resumed:
            assert_type(event, RunEvent)
    print(answer)


async def run_async(app: Orchestra, workflow: Workflow, run_id: str) -> None:
    assert_type(await workflow.arun("hello"), RunResult)
    async with contextlib.aclosing(workflow.astream("hello")) as events:
        async for event in events:
            assert_type(event, RunEvent)
    async with contextlib.aclosing(astream_resume(app, run_id)) as resumed:
        async for event in resumed:
            print(event.kind)


def offline() -> None:
    cards_and_policies()
    routers()
    with no_network():
        app = build()
        run(app)
        asyncio.run(run_async(app, app.workflow("longest"), "some-run"))
