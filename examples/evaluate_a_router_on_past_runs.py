"""Before switching routers: what would another router have done on the traffic the trace store already holds?

    .venv/bin/python examples/evaluate_a_router_on_past_runs.py

1. **Traffic.** An app with a team (the shipped ``calculator``, ``clock`` and ``knowledge`` tools of
   `orchestra.agents`, the last never asked here, as its index of the docs takes seconds to build; the ``chat``
   agent on the embedded SmolLM2, priced here as a hosted model would be; and tools of our own: a paid web
   ``search``, a currency converter ``fx`` whose rates service is down for the currencies it does not keep, the
   ``weather`` and a ``refund`` that waits for a human's approval) answers 28 queries with the ``embedding``
   router: three conversations, single questions, failed runs, a run paused for approval and one its caller
   stopped. Then the team changes, as teams do: ``weather`` is decommissioned and ``search`` moves to another
   provider (another answer, another price).
2. **Evaluation**, later, in a fresh `Orchestra` on the same store: the past runs listed (`Store.list_runs`:
   by time, status, session, and ``replays=False`` for the traffic alone, not earlier replays), each replayed
   exactly (checked against its record: no tool called, every model call served), and twice with the candidate
   router (the zero-shot ``set`` router, built once for every replay): reusing the calls the original made
   (``reuse_calls=True``), so that what differs is the router's doing, and live, the default. Then the comparison
   table: agreement of the chosen agent sets, agents added and dropped, cost and token deltas, answers that differ.
3. **What a counterfactual replay does**, made visible (the README's "Replay a run" says the same):

   - it is a new run of the recorded query and history under the candidate, against the registry as it is *now*.
     Live (the default), every agent it dispatches is called again, whether the original called it or not: a paid
     tool is paid again, the LLM writes again, an agent changed since answers as it is now (the tools' call
     counters below show it). With ``reuse_calls=True`` a call made as the original made it, and that succeeded,
     is served from the record; what the candidate adds runs live, and so do its decision and the aggregation;
   - a failed run is run again whole: the failed call is made again, a tool still down fails again;
   - a run its caller stopped (interrupted) is run to its end; an exact replay stops where it stopped;
   - a run paused for approval: the candidate's replay pauses too when it dispatches to an agent that requires
     approval, calling nothing; an exact replay pauses where the original did, and its message names the original
     to resume (a resume of an exact replay is refused: approving through it would pay twice);
   - a later turn of a conversation runs on the history its original had (the turns before it as they were, not
     the session's history now), and no replay joins the session's history;
   - an agent removed since is no candidate (the candidate cannot pick it); one changed since answers as it is now
     unless its call is reused. An exact replay sees the registry as recorded and serves every answer, so it
     reproduces runs of agents that are gone.

4. **The command line**: ``orchestra runs list --no-replays --since ... --ids`` and one ``orchestra replay`` of
   several runs with ``--reuse-calls`` (the router loaded once, a table of each beside its original), and one run
   replayed exactly.

The verdict on ``set`` is the machinery's, not the router's: 28 queries, and a zero-shot router that reads the cards
alone (`orchestra bench compare` measures routers on real data). Runs offline in about 30 s on 2 cores, most of it
the traffic (MiniLM for both routers, the local model server's start, SmolLM2's answers); the 84 replays take about
3 s (a few tens of milliseconds each, more for a live one whose LLM agent writes again). The trace goes to a SQLite
file (pass a URL as the first argument to use another store that the command line can open too: SQLite or
PostgreSQL, not ``memory://``).
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from orchestra import AgentCard, AgentReply, ChatOptions, LLMAgent, ModelCard, Orchestra, PassThrough, RunTrace, load_router, replay
from orchestra.agents.team import CHAT_CARD, install_default_team
from orchestra.cli import app as orchestra_cli
from orchestra.embeddings import warm_up_embedder
from orchestra.local import local_model_card

CALLS: dict[str, int] = {"search": 0, "fx": 0, "weather": 0, "refund": 0}
"""How often each of our tools was called, in this process: a replay that calls an agent shows here."""

# -- the team ----------------------------------------------------------------------------------------------------

_PAGES = {
    "euro": "ECB keeps rates unchanged; the euro trades at 1.09 dollars (example-news.org).",
    "world cup": "Argentina won the 2022 FIFA World Cup, beating France on penalties (example-sports.org).",
    "lisbon": "Lisbon has about 545,000 inhabitants, 2.9 million in its metropolitan area (example-atlas.org).",
    "australia": "Canberra is the capital of Australia (example-atlas.org).",
}


def search(query: str) -> AgentReply:
    """The web search of the first provider: the best page of a small offline index, at $0.004 a query."""
    CALLS["search"] += 1
    hit = next((page for key, page in _PAGES.items() if key in query.lower()), None)
    if hit is None:
        return AgentReply(answer="No result found.", cost_usd=0.004, declined=True)
    return AgentReply(answer=hit, cost_usd=0.004)


def search_v2(query: str) -> AgentReply:
    """The provider ``search`` moved to later: cheaper, and it answers in its own words."""
    CALLS["search"] += 1
    hit = next((page for key, page in _PAGES.items() if key in query.lower()), None)
    if hit is None:
        return AgentReply(answer="Nothing relevant on the web.", cost_usd=0.0015, declined=True)
    return AgentReply(answer=f"Top result: {hit}", cost_usd=0.0015)


_TO_EUR = {"usd": Decimal("0.92"), "gbp": Decimal("1.17")}
_CURRENCY = re.compile(r"\b(dollars?|usd|pounds?|gbp|yen|jpy|rupees?|inr|francs?|chf)\b", re.IGNORECASE)
_CODE = {"dollar": "usd", "pound": "gbp", "yen": "jpy", "rupee": "inr", "franc": "chf"}


def convert_to_euros(query: str, context: Any = None) -> AgentReply:
    """An amount in dollars or pounds (in the query, or the previous answer when the query has none) in euros. Any
    other currency is asked of the rates service, which is down: the call raises, as a real client's would."""
    named = _CURRENCY.search(query)
    amounts = re.findall(r"\d+(?:\.\d+)?", query.replace(",", ""))
    last = next((turn.content for turn in reversed(getattr(context, "history", ()) or ()) if turn.role == "assistant"), "")
    if not amounts and re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", last):
        amounts = [last.strip()]
    if not amounts:
        return AgentReply(answer="Sorry, I see no amount to convert.", declined=True)
    CALLS["fx"] += 1
    word = named.group(1).lower().rstrip("s") if named else "usd"
    code = _CODE.get(word, word)
    if code not in _TO_EUR:
        raise ConnectionError(f"rates service: 503 Service Unavailable (no cached rate for {code.upper()})")
    amount = Decimal(amounts[0])
    return AgentReply(answer=f"{amount} {code.upper()} = {(amount * _TO_EUR[code]).quantize(Decimal('0.01'))} EUR")


def weather(query: str) -> str:
    """The current weather of the city named (a fixed table: the point is that this agent goes away)."""
    CALLS["weather"] += 1
    city = next((name for name in ("Lisbon", "Paris", "Tokyo") if name.lower() in query.lower()), "your city")
    return f"{city}: 18 °C, light wind"


def refund(query: str) -> str:
    """Refunds an order: a side effect, so its card asks for a human's approval before each call."""
    CALLS["refund"] += 1
    return f"Refunded: {query}"


MODULE = "examples.evaluate_a_router_on_past_runs"
TOOLS = [
    (AgentCard(id="search", name="Web search", backend="function", function=f"{MODULE}:search",
               description="Searches the web: news headlines, sports results, facts about people, places and countries.",
               examples=("latest headlines about the central bank", "who won the final last night?", "how many people live in Oslo?")),
     search),
    (AgentCard(id="fx", name="Currency converter", backend="function", function=f"{MODULE}:convert_to_euros",
               description="Converts an amount of money (dollars, pounds, yen, rupees, francs), or the previous answer, to euros.",
               examples=("how much is 40 dollars in euros?", "10 pounds in EUR", "what is that amount in euros?")),
     convert_to_euros),
    (AgentCard(id="weather", name="Weather", backend="function", function=f"{MODULE}:weather",
               description="The current weather and temperature in a city.", examples=("what's the weather in Paris?",)),
     weather),
    (AgentCard(id="refund", name="Refunds", backend="function", function=f"{MODULE}:refund", requires_approval=True,
               description="Refunds a customer's order (a payment: each call waits for a human's approval).",
               examples=("refund order 1234",)),
     refund),
]
SEARCH_V2 = TOOLS[0][0].model_copy(update={"function": f"{MODULE}:search_v2"})
"""``search``'s card once it moved provider: the same agent, another function behind it."""

PRICE = {"input_price_per_mtok": 0.15, "output_price_per_mtok": 0.60}
"""What a hosted small model costs per million tokens: the local SmolLM2 priced so, for the cost columns to mean
something (it runs free here)."""


def install_team(app: Orchestra, *, changed: bool = False) -> None:
    """What the app does at its start, in each process: the shipped tools, the chat agent on the (priced) local model
    and our tools, each with its implementation. ``changed``: the team as it is later (no ``weather``, ``search``
    moved); the registry is in the store, so the later process finds the change made and attaches what lives here."""
    install_default_team(app.registry, local_model=False)  # calculator, clock, knowledge
    app.registry.ensure_model(ModelCard(**(local_model_card().model_dump() | PRICE)))
    chat = LLMAgent(ChatOptions(temperature=0.0, max_tokens=40))
    app.registry.ensure_agent(CHAT_CARD, implementation=chat)
    for card, function in TOOLS:
        if changed and card.id == "weather":
            continue
        if changed and card.id == "search":
            card, function = SEARCH_V2, search_v2
        app.registry.ensure_agent(card, implementation=function)


# -- the traffic -------------------------------------------------------------------------------------------------

CONVERSATIONS = {
    "budget": ("what is 17.5% of 2,480?", "and 10% of that?", "now divide it by 2", "convert that to euros"),
    "trip": ("what's the weather in Lisbon?", "how much is 250 dollars in euros?", "and 30000 yen in euros?",
             "what day of the week is 2025-06-14?"),
    "order": ("what is 1,200 times 3?", "and 15% off that?"),
}
SINGLE = (
    "please refund order 5521, the parcel never arrived",
    "tell me a joke about databases",
    "latest news about the euro",
    "who won the 2022 world cup?",
    "what is 2 to the power of 10?",
    "how many days between 2025-01-01 and 2025-12-25?",
    "what's the weather in Paris, and the latest news about the euro?",
    "convert 100 pounds to euros",
    "square root of 2,025",
    "search the web for the population of Lisbon",
    "hi there, how is your day going?",
    "what is 15% off 80?",
    "convert 5000 rupees to euros",
    "what is the capital of Australia?",
    "write a short poem about autumn",
    "what's the weather in Tokyo?",
    "how many weeks are there between 2025-03-01 and 2025-09-01?",
)
STOPPED = "what is 12% of 1,250?"
"""Asked through `Workflow.stream`, whose caller stops reading at the decision: stored as interrupted, no agent called."""


def make_traffic(app: Orchestra) -> dict[str, str]:
    """Route the traffic with the ``embedding`` router (each query to its agents whose cosine clears 0.35, at most
    2, their answers passed through); returns the sessions' ids by name."""
    workflow = app.workflow("embedding", aggregator=PassThrough(), k=2, threshold=0.35)
    sessions: dict[str, str] = {}
    turns = {name: list(queries) for name, queries in CONVERSATIONS.items()}
    singles = list(SINGLE)
    while any(turns.values()) or singles:  # conversations interleaved with single questions, as traffic comes
        for name, queries in turns.items():
            if queries:
                result = workflow.run(queries.pop(0), session_id=sessions.get(name))
                sessions.setdefault(name, result.session_id)
        for _ in range(3):
            if singles:
                workflow.run(singles.pop(0))
    events = workflow.stream(STOPPED)
    for event in events:  # the caller reads the decision, then goes away: the run stops, stored as interrupted
        if event.kind == "decision":
            break
    events.close()
    return sessions


# -- comparing two runs of one query -----------------------------------------------------------------------------


def agents_of(trace: RunTrace) -> list[str]:
    """The agents a run's decisions dispatched to (the agent set two routers are compared on)."""
    return sorted({call.agent_id for decision in trace.decisions() if decision.kind == "dispatch" for call in decision.calls})


def error_type(trace: RunTrace) -> str | None:
    return (trace.run.error or {}).get("type")


def reproduces(original: RunTrace, exact: RunTrace) -> bool:
    """The exact replay reproduces the record: the same status and error, decisions and answer, and every model call
    served (copied from the record: a served call took no time, a live one would have)."""
    served = all(step.latency_ms == 0.0 for step in exact.steps if step.kind == "model_call")
    return (exact.run.status, error_type(exact), exact.decisions(), exact.run.answer) == (
        original.run.status, error_type(original), original.decisions(), original.run.answer) and served


def served_calls(trace: RunTrace) -> tuple[int, int]:
    """How many of a replay's agent calls were served from its original's record, and how many were made live."""
    marks = [step.response.get("reused") for step in trace.steps if step.kind == "call"]
    return marks.count("served"), len(marks) - marks.count("served")


def total_cost(trace: RunTrace) -> float:
    return trace.run.cost_usd or 0.0


def tokens(trace: RunTrace) -> int:
    return trace.run.prompt_tokens + trace.run.completion_tokens


@dataclass
class Row:
    """One past run beside its replays: exact, with the candidate reusing the original's calls, with it live."""

    original: RunTrace
    exact: RunTrace
    reused: RunTrace
    live: RunTrace

    @property
    def query(self) -> str:
        return self.original.run.query

    @property
    def agents(self) -> tuple[list[str], list[str]]:
        return agents_of(self.original), agents_of(self.reused)

    @property
    def agree(self) -> bool:
        return self.agents[0] == self.agents[1]

    @property
    def added(self) -> list[str]:
        return sorted(set(self.agents[1]) - set(self.agents[0]))

    @property
    def dropped(self) -> list[str]:
        return sorted(set(self.agents[0]) - set(self.agents[1]))

    @property
    def reproduced(self) -> bool:
        return reproduces(self.original, self.exact)

    def facts(self) -> dict[str, Any]:
        """What the tests check of this row, in plain values."""
        original, reused, live = self.original.run, self.reused.run, self.live.run
        return {
            "query": self.query, "status": (original.status, reused.status, live.status),
            "error": (error_type(self.original), error_type(self.reused), error_type(self.live)),
            "agents": self.agents, "live_agents": agents_of(self.live), "agree": self.agree, "reproduced": self.reproduced,
            "answers": (original.answer, reused.answer, live.answer), "cost": (total_cost(self.original), total_cost(self.reused), total_cost(self.live)),
            "tokens": (tokens(self.original), tokens(self.reused), tokens(self.live)), "served": served_calls(self.reused),
            "history": tuple(len(run.meta["history"]) // 2 for run in (original, reused, live)),
            "exact_error": str((self.exact.run.error or {}).get("message") or ""),
            "modes": (self.exact.run.replay_mode, reused.replay_mode, live.replay_mode),
            "replay_of": {self.exact.run.replay_of, reused.replay_of, live.replay_of} == {original.id},
            "sessions": {self.exact.run.session_id, reused.session_id, live.session_id} == {original.session_id},
        }


def _cut(text: str | None, limit: int) -> str:
    text = " ".join((text or "-").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_table(rows: list[Row]) -> None:
    """One line a past run: its status and agents under each router, the cost and token deltas and whether the answer
    differs, with the candidate reusing the original's calls (what differs is the router's doing)."""
    print(f"   {'run':8} {'query':36} {'status':15} {'embedding':16} {'set':16} {'Δ cost $':>9} {'Δ tok':>6} answer")
    for row in rows:
        before, after = row.original.run.status, row.reused.run.status
        status = before if before == after else f"{before}→{after}"
        answer = "same" if row.original.run.answer == row.reused.run.answer else "differs"
        print(f"   {row.original.run.id[:8]} {_cut(row.query, 36):36} {status:15} {','.join(row.agents[0]) or '-':16} "
              f"{','.join(row.agents[1]) or '-':16} {total_cost(row.reused) - total_cost(row.original):>+9.4f} "
              f"{tokens(row.reused) - tokens(row.original):>+6} {answer}")


def summary(rows: list[Row]) -> dict[str, Any]:
    """What the table adds up to: agreement, agents added and dropped, cost and tokens each way, answers that differ,
    calls served and made live; and what the live replays (the default) did instead."""
    added: dict[str, int] = {}
    dropped: dict[str, int] = {}
    for row in rows:
        for agent in row.added:
            added[agent] = added.get(agent, 0) + 1
        for agent in row.dropped:
            dropped[agent] = dropped.get(agent, 0) + 1
    differ = lambda row, replayed: row.original.run.answer != replayed.run.answer  # noqa: E731
    # an answer the original gave (a run that ended ok), another with the same agents: not the router's doing
    unexplained = lambda row, replayed: (row.original.run.status == "ok" and differ(row, replayed)  # noqa: E731
                                         and agents_of(replayed) == row.agents[0])
    return {
        "runs": len(rows),
        "agreement": sum(row.agree for row in rows) / len(rows),
        "jaccard": sum(len(set(a) & set(b)) / len(set(a) | set(b)) if (a or b) else 1.0 for a, b in (row.agents for row in rows)) / len(rows),
        "added": added, "dropped": dropped,
        "cost": tuple(round(sum(total_cost(getattr(row, which)) for row in rows), 6) for which in ("original", "reused", "live")),
        "tokens": tuple(sum(tokens(getattr(row, which)) for row in rows) for which in ("original", "reused", "live")),
        "answers_differ": sum(differ(row, row.reused) for row in rows),
        "answers_differ_same_agents": sum(unexplained(row, row.reused) for row in rows),
        "live_answers_differ_same_agents": sum(unexplained(row, row.live) for row in rows),
        "served": sum(served_calls(row.reused)[0] for row in rows), "made_live": sum(served_calls(row.reused)[1] for row in rows),
        "status_changed": sum(row.original.run.status != row.reused.run.status for row in rows),
        "reproduced": sum(row.reproduced for row in rows),
    }


def main(store_url: str | None = None) -> dict[str, Any]:
    """Make the traffic on ``store_url`` (a temporary SQLite file by default), evaluate the ``set`` router on it from a
    fresh `Orchestra` and from the command line, and return what each replay did (`Row.facts`) and the summary."""
    # The command line (step 4) imports our tools by their cards' dotted names: this file is examples.evaluate_...
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    for name in CALLS:
        CALLS[name] = 0
    with tempfile.TemporaryDirectory() as tmp:
        url = store_url or f"sqlite:///{Path(tmp) / 'production.db'}"

        # 1. Production traffic, routed by embeddings; then the team changes.
        began = datetime.now(UTC)
        production = Orchestra(store=url)
        warm_up_embedder()
        install_team(production)
        sessions = make_traffic(production)
        production.registry.remove_agent("weather")  # decommissioned
        production.registry.update_agent(SEARCH_V2, implementation=search_v2)  # another provider
        traffic_calls = dict(CALLS)
        print(f"1. traffic: {len(production.store.list_runs(limit=1000))} runs with the embedding router, tools called "
              f"{traffic_calls}; then 'weather' removed and 'search' moved provider")

        # 2. Later, in a fresh Orchestra on the same store (another process would do the same): the traffic listed,
        #    each run replayed exactly, with the candidate reusing the original's calls, and with it live.
        app = Orchestra(store=url)
        install_team(app, changed=True)
        past = app.store.list_runs(replays=False, since=began, limit=1000)[::-1]  # the traffic, oldest first
        by_status = {status: len(app.store.list_runs(status=status, replays=False, since=began, limit=1000))  # type: ignore[arg-type]
                     for status in ("ok", "error", "interrupted")}
        budget_turns = [run.query for run in app.store.list_runs(session_id=sessions["budget"])[::-1]]
        print(f"2. {len(past)} past runs since {began:%H:%M:%S} UTC: {by_status}; the 'budget' session: {budget_turns}")
        candidate = load_router("set", k=2)  # built once, for every replay (zero-shot: routed on the cards alone)
        rows: list[Row] = []
        called: dict[str, dict[str, int]] = {"exact": {}, "reused": {}, "live": {}}
        seconds = {"exact": 0.0, "reused": 0.0, "live": 0.0}
        for run in past:
            replayed = {}
            for how, options in (("exact", {}), ("reused", {"router": candidate, "reuse_calls": True}), ("live", {"router": candidate})):
                before, started = dict(CALLS), time.perf_counter()
                replayed[how] = app.store.get_run(replay(app, run.id, **options).run_id)
                seconds[how] += time.perf_counter() - started
                for tool, count in CALLS.items():
                    called[how][tool] = called[how].get(tool, 0) + count - before[tool]
            rows.append(Row(app.store.get_run(run.id), replayed["exact"], replayed["reused"], replayed["live"]))
        print_table(rows)
        total = summary(rows)
        print(f"   the set router agrees on {total['agreement']:.0%} of the runs (mean Jaccard {total['jaccard']:.2f}); it adds "
              f"{total['added']} and drops {total['dropped']}; {total['answers_differ']} answers differ, "
              f"{total['answers_differ_same_agents']} of those the original answered with the same agents; cost ${total['cost'][0]:.4f} → "
              f"${total['cost'][1]:.4f}, tokens {total['tokens'][0]} → {total['tokens'][1]}")
        print(f"   reuse_calls: {total['served']} calls served from the record, {total['made_live']} made live (tools called "
              f"{called['reused']}). Live (the default), the same replays called {called['live']}, cost "
              f"${total['cost'][2]:.4f} and tokens {total['tokens'][2]}, and {total['live_answers_differ_same_agents']} "
              "answers the original gave differ with the same agents: the agents as they are now")
        print(f"   exact: {total['reproduced']}/{len(rows)} reproduce their record, tools called {called['exact']}; mean ms per "
              "replay: " + ", ".join(f"{how} {1000 * spent / len(rows):.0f}" for how, spent in seconds.items()))

        # 3. What the replays did with each kind of run, read back from the rows.
        facts = {row.query: row.facts() for row in rows}
        paused, stopped = facts["please refund order 5521, the parcel never arrived"], facts[STOPPED]
        third, failed = facts["now divide it by 2"], facts["and 30000 yen in euros?"]
        gone, moved = facts["what's the weather in Tokyo?"], facts["who won the 2022 world cup?"]
        print("3. what the replays did")
        print(f"   paused for approval: the exact replay says {_cut(paused['exact_error'], 100)!r}; the set router's replays: "
              f"{paused['status'][1:]} with {paused['agents'][1]}; refunds made: {CALLS['refund']}")
        print(f"   stopped by its caller ({stopped['status'][0]}): exact replay reproduces it: {stopped['reproduced']}; the set "
              f"router's replays ran to their end: {stopped['status'][1:]} {stopped['answers'][1]!r}")
        print(f"   failed ({failed['error'][0]}): the set router's replays {failed['status'][1:]} ({failed['error'][1]}): the "
              "failed call made again, the rates service still down")
        print(f"   turn 3 of 'budget' was given {third['history'][0]} exchanges; its replays {third['history'][1:]} (the session "
              f"has {len(app.history(sessions['budget'])) // 2} now): {third['answers'][0]!r} → {third['answers'][1:]}")
        print(f"   'weather' removed since: the exact replay served its answer ({gone['reproduced']}); the set router had "
              f"{gone['agents'][1]} to pick → {_cut(gone['answers'][1], 60)!r}")
        print(f"   'search' changed since: reused {_cut(moved['answers'][1], 45)!r} (${moved['cost'][1]}), live "
              f"{_cut(moved['answers'][2], 45)!r} (${moved['cost'][2]})")
        listed_all, listed_traffic = len(app.store.list_runs(limit=1000)), len(app.store.list_runs(replays=False, limit=1000))
        histories = {name: [turn.content for turn in app.history(session_id)] for name, session_id in sessions.items()}
        print(f"   the store now lists {listed_all} runs, {listed_traffic} of them the traffic (replays=False); the sessions' "
              f"histories hold {[len(turns) // 2 for turns in histories.values()]} exchanges, replays none")

        # 4. The same from the command line: the traffic's ids listed, two runs replayed with the candidate in one
        #    process, one exactly.
        cli = CliRunner()
        common = ["--db", url]
        ids = cli.invoke(orchestra_cli, ["runs", "list", "--no-replays", "--status", "ok", "--since", began.isoformat(), "--ids",
                                         "--limit", "2", *common])
        chosen = ids.stdout.split()
        batch = cli.invoke(orchestra_cli, ["replay", *chosen, "--router", "set", "--option", "k=2", "--reuse-calls", "--profile", "none",
                                           *common], env={"COLUMNS": "120"})
        single = cli.invoke(orchestra_cli, ["replay", chosen[0][:8], "--profile", "none", *common], env={"COLUMNS": "200"})
        print(f"4. orchestra runs list --no-replays --status ok --since {began:%Y-%m-%dT%H:%M:%S} --ids --limit 2: "
              f"{[run_id[:8] for run_id in chosen]}")
        print(f"   orchestra replay {' '.join(run_id[:8] for run_id in chosen)} --router set --option k=2 --reuse-calls "
              f"(exit {batch.exit_code}):")
        print("\n".join("   " + line for line in batch.stdout.rstrip().splitlines()))
        print(f"   orchestra replay {chosen[0][:8]} (exact, exit {single.exit_code}): {single.stdout.splitlines()[0]}")

        return {
            "rows": [row.facts() for row in rows], "summary": total, "by_status": by_status, "budget_turns": budget_turns,
            "traffic_calls": traffic_calls, "called": called, "calls": dict(CALLS), "listed_all": listed_all,
            "listed_traffic": listed_traffic, "histories": histories, "sessions": sessions, "past": [run.id for run in past],
            "cli": {"ids": chosen, "ids_exit": ids.exit_code, "batch_exit": batch.exit_code, "batch": batch.stdout,
                    "single_exit": single.exit_code, "single": single.stdout,
                    "replays_of": sorted(run.replay_of or "" for run in app.store.list_runs(replays=True, limit=1000)
                                         if run.replay_of in chosen)},
        }


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
