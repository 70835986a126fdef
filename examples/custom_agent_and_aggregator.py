"""An agent class and an aggregator of your own: an LLM-backed agent with its own prompt that calls the embedded local
model through its `AgentContext` (so the run traces, budgets, streams and replays its model calls), two tool agents
with a sync `run` and an async `arun` that decline what is not their job, and an aggregator that keeps one answer
instead of merging them: the most trusted agent's, or the one a judge model picks.

    .venv/bin/python examples/custom_agent_and_aggregator.py

Runs offline on SmolLM2-135M-Instruct, served by Orchestra's managed llama.cpp server (`local_model_card()`; the
server starts at the first call, about 3 seconds, and stops when the script ends). The team answers with `run`,
`arun` and `stream` (the ``answer`` events, joined, are the answer), a run's trace is drawn as `orchestra runs show`
draws it, that run is replayed exactly (given the aggregator, which Orchestra cannot rebuild as it rebuilds its own)
and with another router, and a run whose exchange-rate service was down is resumed once it is back. The trace goes
to a SQLite file (pass a URL as the first argument to use another store).

The example shows the wiring, not how well a 135M model explains or judges: its sentences can be wrong, and the
judge often picks the first answer it is shown. The trust the aggregator puts in the exact tools over the small
model is what keeps the answers right.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from orchestra import (
    AgentCard,
    AgentContext,
    AgentReply,
    Aggregated,
    CardError,
    ChatOptions,
    ChatResult,
    ConfigurationError,
    Message,
    ModelAccess,
    ModelError,
    Observation,
    Orchestra,
    PassThrough,
    RunTrace,
    replay,
    resume,
)
from orchestra.cli import render_trace
from orchestra.local import LOCAL_MODEL_ID, local_model_card

SERVICES: dict[str, Any] = {"rates_up": True, "calls": {"explainer": 0, "units": 0, "rates": 0}}
"""The outside world: whether the exchange-rate service is up, and how often each agent was really called (a
replay or a resume serves recorded answers instead of calling)."""


class Explainer:
    """An LLM-backed agent: one short, plain sentence, with a prompt of its own, on its card's model (or the one a
    model router chose for the call). Its model calls go through ``context.models``, so the run records them under
    the call, counts their tokens in its totals and budget, streams their words, and serves them in a replay."""

    SYSTEM = ("You explain things to a curious twelve-year-old. Answer in one short, plain sentence. "
              "If the question asks for a number, give your best estimate.")

    def __init__(self, max_tokens: int = 40) -> None:
        self.options = ChatOptions(temperature=0.0, max_tokens=max_tokens)  # small: a sentence, quickly, on 2 cores

    def messages(self, query: str, context: AgentContext) -> list[Message]:
        """The prompt: the agent's instructions, the session so far, the request."""
        history = [Message(role=turn.role, content=turn.content) for turn in context.history]
        return [Message(role="system", content=self.SYSTEM), *history, Message(role="user", content=query)]

    @staticmethod
    def model(context: AgentContext) -> str:
        """The model card to call: the one routed to this call, else the card's own."""
        model_id = context.model_id or context.card.model
        if not model_id:
            raise CardError(f"AgentCard {context.card.id!r}: field 'model' is empty and no model was routed", field="model")
        return model_id

    def run(self, query: str, context: AgentContext) -> AgentReply:
        """One sentence about ``query``."""
        SERVICES["calls"]["explainer"] += 1
        result = context.models.chat(self.model(context), self.messages(query, context), self.options, purpose="agent")
        return AgentReply.from_chat(result, finish_reason=result.finish_reason)

    async def arun(self, query: str, context: AgentContext) -> AgentReply:
        """The async twin of `run`."""
        SERVICES["calls"]["explainer"] += 1
        result = await context.models.achat(self.model(context), self.messages(query, context), self.options, purpose="agent")
        return AgentReply.from_chat(result, finish_reason=result.finish_reason)


_DISTANCE = re.compile(r"(\d+(?:\.\d+)?)\s*(km|kilomet(?:re|er)s?|miles?)\b", re.IGNORECASE)
KM_PER_MILE = 1.609344


class UnitConverter:
    """A tool agent: distances between kilometres and miles. It declines a request that names no distance, so the
    aggregators never count its refusal as an answer."""

    def run(self, query: str, context: AgentContext) -> AgentReply:
        """The first distance in ``query``, in the other unit."""
        SERVICES["calls"]["units"] += 1
        found = _DISTANCE.search(query)
        if not found:
            return AgentReply(answer="Sorry, I only convert distances between kilometres and miles.", declined=True)
        value = float(found.group(1))
        if found.group(2).lower().startswith("k"):
            return AgentReply(answer=f"{value:g} km = {value / KM_PER_MILE:.2f} miles", meta={"km_per_mile": KM_PER_MILE})
        return AgentReply(answer=f"{value:g} miles = {value * KM_PER_MILE:.2f} km", meta={"km_per_mile": KM_PER_MILE})

    async def arun(self, query: str, context: AgentContext) -> AgentReply:
        """The async twin of `run`: the conversion waits for nothing, so it runs on the event loop, not in a thread."""
        return self.run(query, context)


RATES = {"EUR": 1.0, "USD": 1.08, "GBP": 0.85, "JPY": 162.0}
"""Units of each currency per euro: the exchange-rate service's table."""
_CURRENCIES = {"euro": "EUR", "eur": "EUR", "dollar": "USD", "usd": "USD", "pound": "GBP", "gbp": "GBP", "yen": "JPY", "jpy": "JPY"}
_MENTION = re.compile(r"(?:(\d+(?:\.\d+)?)\s*)?\b(euros?|eur|dollars?|usd|pounds?|gbp|yen|jpy)\b", re.IGNORECASE)


class CurrencyConverter:
    """A tool agent backed by an exchange-rate service, which can be down: then it raises, the run records the
    failed call and goes on with the other agents, and the run can be resumed once the service is back. It declines,
    without asking the service, a request that names no amount and no currency to convert it to."""

    def _convert(self, query: str) -> AgentReply:
        SERVICES["calls"]["rates"] += 1
        mentions = [(amount, _CURRENCIES[word.lower().rstrip("s")]) for amount, word in _MENTION.findall(query)]
        amounts = [(float(amount), currency) for amount, currency in mentions if amount]
        targets = [currency for amount, currency in mentions if not amount]
        if not amounts or not targets:
            return AgentReply(answer="Sorry, I only convert an amount of money to another currency.", declined=True)
        if not SERVICES["rates_up"]:
            raise ConnectionError("exchange-rate service: 503 Service Unavailable")
        (value, source), target = amounts[0], targets[0]
        rate = RATES[target] / RATES[source]
        return AgentReply(answer=f"{value:g} {source} = {value * rate:,.2f} {target}", meta={"rate": rate})

    def run(self, query: str, context: AgentContext) -> AgentReply:
        """The first amount in ``query``, in the currency it asks for."""
        return self._convert(query)

    async def arun(self, query: str, context: AgentContext) -> AgentReply:
        """The async twin of `run` (an async HTTP client would be awaited here; the table answers at once)."""
        return self._convert(query)


class TrustedPick:
    """An aggregator that keeps one answer instead of merging several: of the agents that answered (failed and
    declined calls left out), the one whose router weight times the trust put in it is highest (ties: the longer
    answer). With ``judge``, a model card id, that model picks among two answers or more instead, its reply
    constrained to their numbers; its failure leaves the trusted pick standing, kept in ``meta["judge_failed"]``.
    When no agent answered, the refusals and failures are shown as `PassThrough` shows them."""

    name = "trusted-pick"

    def __init__(self, trust: Mapping[str, float] | None = None, *, default_trust: float = 0.5, judge: str | None = None) -> None:
        self.trust = dict(trust or {})
        self.default_trust = default_trust
        self.judge = judge

    def describe(self) -> dict[str, Any]:
        """Its name and options, as each run records them: an exact replay checks the aggregator it is given
        against them."""
        return {"name": self.name, "trust": self.trust, "default_trust": self.default_trust, "judge": self.judge}

    def score(self, observation: Observation) -> float:
        """How much an answer is trusted: the router's weight for the call times the trust put in its agent."""
        return observation.weight * self.trust.get(observation.agent_id, self.default_trust)

    def ranked(self, observations: Sequence[Observation]) -> list[Observation]:
        """The answers to choose from, most trusted first."""
        answered = [obs for obs in observations if obs.answered]
        return sorted(answered, key=lambda obs: (-self.score(obs), -len(obs.answer or "")))

    @staticmethod
    def judge_request(query: str, answers: Sequence[Observation]) -> tuple[list[Message], ChatOptions]:
        """The judge's prompt, and options whose JSON schema lets it name only one of the answers' numbers."""
        listing = "\n".join(f"{number}. {obs.answer}" for number, obs in enumerate(answers, 1))
        schema = {"type": "object", "properties": {"best": {"type": "integer", "enum": list(range(1, len(answers) + 1))}},
                  "required": ["best"], "additionalProperties": False}
        messages = [
            Message(role="system", content="You judge answers. Reply with the number of the answer that answers the question best."),
            Message(role="user", content=f"Question: {query}\n\nAnswers:\n{listing}\n\nThe best answer's number:"),
        ]
        return messages, ChatOptions(temperature=0.0, max_tokens=16, json_schema=schema)

    def picked(self, query: str, observations: Sequence[Observation], models: ModelAccess, answers: list[Observation],
               judged: ChatResult | ModelError | None) -> Aggregated:
        """The answer kept, and how it was chosen, for the aggregate step's meta."""
        if not answers:
            return PassThrough().aggregate(query, observations, models)
        meta: dict[str, Any] = {
            "scores": {obs.agent_id: self.score(obs) for obs in answers},
            "declined": [obs.agent_id for obs in observations if obs.ok and obs.declined],
            "failed": [obs.agent_id for obs in observations if not obs.ok],
        }
        chosen, by = answers[0], "trust"
        if isinstance(judged, ModelError):
            meta["judge_failed"] = judged.to_record()
        elif judged is not None:
            chosen, by = answers[json.loads(judged.text)["best"] - 1], "judge"  # the client checked it against the schema
            meta["judge_said"] = judged.text
        return Aggregated(chosen.answer or "", {**meta, "picked": chosen.agent_id, "by": by})

    def aggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        """One answer of ``observations``; the judge, when there is one, is called through ``models`` (traced under
        the aggregate step, served in an exact replay)."""
        answers = self.ranked(observations)
        judged: ChatResult | ModelError | None = None
        if self.judge and len(answers) > 1:
            try:
                judged = models.chat(self.judge, *self.judge_request(query, answers), purpose="judge")
            except ModelError as exc:
                judged = exc
        return self.picked(query, observations, models, answers, judged)

    async def aaggregate(self, query: str, observations: Sequence[Observation], models: ModelAccess) -> Aggregated:
        """The async twin of `aggregate`."""
        answers = self.ranked(observations)
        judged: ChatResult | ModelError | None = None
        if self.judge and len(answers) > 1:
            try:
                judged = await models.achat(self.judge, *self.judge_request(query, answers), purpose="judge")
            except ModelError as exc:
                judged = exc
        return self.picked(query, observations, models, answers, judged)


def read_back(trace: RunTrace) -> dict[str, Any]:
    """What the trace store holds of one run: each agent's answer (or failure), the aggregation's meta, the model
    calls under each step, and the tokens the run counted."""
    calls = [step for step in trace.steps if step.kind == "call"]
    aggregate = next((step for step in trace.steps if step.kind == "aggregate"), None)
    model_calls = [step for step in trace.steps if step.kind == "model_call"]
    return {
        "run_id": trace.run.id,
        "status": trace.run.status,
        "answer": trace.run.answer,
        "aggregator": trace.run.meta.get("aggregator"),
        "replay_mode": trace.run.replay_mode,
        "replay_of": trace.run.replay_of,
        "answers": {step.agent_id: step.response.get("answer") for step in calls if not step.error},
        "failed": sorted(step.agent_id or "" for step in calls if step.error),
        "declined": sorted(step.agent_id or "" for step in calls if step.response.get("declined")),
        "meta": aggregate.response.get("meta", {}) if aggregate else {},
        "model_calls": {parent.agent_id or parent.kind: [(step.model_id, step.request.get("purpose")) for step in trace.children(parent.id)
                                                         if step.kind == "model_call"]
                        for parent in [*calls, *([aggregate] if aggregate else [])]},
        "model_call_tokens": sum(step.prompt_tokens + step.completion_tokens for step in model_calls),
        "model_call_latencies_ms": [step.latency_ms for step in model_calls],
        "run_tokens": trace.run.prompt_tokens + trace.run.completion_tokens,
        "resumed": {step.agent_id or step.kind: step.response["resumed"] for step in trace.steps if "resumed" in step.response},
        "tree": trace.tree(),
    }


def streamed(events: list[Any]) -> dict[str, Any]:
    """What a reader of `Workflow.stream` saw: the answer joined from its ``answer`` events (starting over at a
    restart), how many there were and whether any came before the aggregation, and who streamed tokens."""
    kinds = [event.kind for event in events]
    shown = ""
    for event in events:
        if event.kind == "answer":
            shown = ("" if event.data["restart"] else shown) + event.data["delta"]
    answer_events = [event for event in events if event.kind == "answer"]
    result = events[-1].data["result"]  # the last event is run_finished, with the RunResult
    return {
        "run_id": result.run_id,
        "shown": shown,
        "shown_is_the_answer": shown == result.answer,
        "answer_events": len(answer_events),
        "restarts": sum(1 for event in answer_events if event.data["restart"]),
        "answer_before_aggregate": "answer" in kinds[: kinds.index("aggregate")] if "aggregate" in kinds else None,
        "token_writers": sorted({f"{event.data['purpose']}:{event.data['agent_id'] or '-'}" for event in events if event.kind == "token"}),
    }


def main(store_url: str | None = None) -> dict[str, Any]:
    console = Console(width=120, soft_wrap=False)
    with tempfile.TemporaryDirectory() as tmp:
        app = Orchestra(store=store_url or f"sqlite:///{Path(tmp) / 'example.db'}")
        app.registry.ensure_model(local_model_card())  # SmolLM2-135M-Instruct, card id "local-smollm2"
        # The cards name the classes too, so another process (`orchestra replay`, a server) builds the same agents.
        app.registry.ensure_agent(AgentCard(
            id="explainer", description="Explains anything in one short, plain sentence.", model=LOCAL_MODEL_ID,
            backend="function", function="examples.custom_agent_and_aggregator:Explainer"), implementation=Explainer())
        app.registry.ensure_agent(AgentCard(
            id="units", description="Converts distances between kilometres and miles.",
            backend="function", function="examples.custom_agent_and_aggregator:UnitConverter"), implementation=UnitConverter())
        app.registry.ensure_agent(AgentCard(
            id="rates", description="Converts an amount of money to another currency at today's exchange rate.",
            backend="function", function="examples.custom_agent_and_aggregator:CurrencyConverter"), implementation=CurrencyConverter())

        # Every agent answers each request; the aggregator keeps the exact tools' answer over the small model's guess.
        trust = {"units": 1.0, "rates": 1.0}
        team = app.workflow("all", aggregator=TrustedPick(trust))
        facts: dict[str, Any] = {}

        def show(label: str, trace: RunTrace) -> dict[str, Any]:
            read = read_back(trace)
            meta = read["meta"]
            print(f"{label}: {read['status']}: {read['answer']!r} (picked {meta.get('picked')} by {meta.get('by')}; "
                  f"declined {read['declined']}, failed {read['failed']}; {read['run_tokens']} tokens)")
            return read

        first = team.run("How many miles is a 42 km marathon?")
        facts["run"] = show("1. run", app.store.get_run(first.run_id))

        second = asyncio.run(team.arun("How many US dollars is 250 euros?"))
        facts["arun"] = show("2. arun", app.store.get_run(second.run_id))

        # Both tools decline: the explainer's sentence is the lone answer. An aggregator of your own may do anything
        # with it, so the answer events bring it whole once it is made, never the model's words as it writes them.
        lone = streamed(list(team.stream("Why do marathon runners drink water during the race?")))
        facts["stream"] = show("3. stream", app.store.get_run(lone["run_id"])) | {"events": lone}
        print(f"   {lone['answer_events']} answer event(s), joined equal to the answer: {lone['shown_is_the_answer']}; "
              f"tokens from {lone['token_writers']}")

        # A judge model picks between the two answers: its tokens stream as token events (purpose "judge"), the
        # answer is the answer it picked.
        judge = TrustedPick(trust, judge=LOCAL_MODEL_ID)
        judged_events = streamed(list(app.workflow("all", aggregator=judge).stream("How many miles is a 42 km marathon?")))
        judged_trace = app.store.get_run(judged_events["run_id"])
        facts["judged"] = show("4. judged", judged_trace) | {"events": judged_events}
        print(f"   the judge said {facts['judged']['meta'].get('judge_said')!r}; {judged_events['answer_events']} answer event(s), "
              f"joined equal to the answer: {judged_events['shown_is_the_answer']}; tokens from {judged_events['token_writers']}")
        console.print(render_trace(judged_trace))  # what `orchestra runs show RUN_ID` draws, from the store

        # Exact replay: Orchestra rebuilds its own aggregators from the record; yours is given, and checked against
        # the description the run recorded. The agents' answers and every model call (the judge's too) are served.
        calls_before = dict(SERVICES["calls"])
        try:
            replay(app, judged_trace.run.id)
        except ConfigurationError as exc:
            facts["replay_refused"] = str(exc)
            print(f"5. replay without the aggregator: ConfigurationError: {exc}")
        again = replay(app, judged_trace.run.id, aggregator=TrustedPick(trust, judge=LOCAL_MODEL_ID))
        facts["exact"] = show(f"   exact replay {again.run_id[:8]}", app.store.get_run(again.run_id))
        facts["exact"]["agent_calls"] = {agent: SERVICES["calls"][agent] - calls_before[agent] for agent in calls_before}
        otherwise = replay(app, judged_trace.run.id, aggregator=TrustedPick(trust))  # no judge: not the aggregator that ran
        facts["otherwise"] = {"status": otherwise.status, "error": type(otherwise.error).__name__, "message": str(otherwise.error)}
        print(f"   replay given the pick without its judge: {otherwise.status}: {type(otherwise.error).__name__}")

        # Counterfactual replay: the same request, live, with another router (the small model alone).
        other = replay(app, judged_trace.run.id, router="fixed", agent_ids=["explainer"], aggregator=judge)
        facts["counterfactual"] = show("6. with the explainer alone", app.store.get_run(other.run_id))

        # The exchange-rate service is down: the run ends ok on the explainer's guess, the failed call recorded.
        SERVICES["rates_up"] = False
        failed = team.run("How many yen is 20 euros?")
        facts["failed"] = show("7. rates down", app.store.get_run(failed.run_id))
        SERVICES["rates_up"] = True
        calls_before = dict(SERVICES["calls"])
        resumed = resume(app, failed.run_id, aggregator=TrustedPick(trust))  # what succeeded is served, the rest live
        facts["resumed"] = show(f"   resumed as {resumed.run_id[:8]}", app.store.get_run(resumed.run_id))
        facts["resumed"]["agent_calls"] = {agent: SERVICES["calls"][agent] - calls_before[agent] for agent in calls_before}
        print(f"   served or live: {facts['resumed']['resumed']}")
        return facts


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
