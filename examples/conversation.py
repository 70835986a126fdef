"""A conversation of several turns, where a follow-up ("and 10% of that?") is answered from the earlier ones: in
Python, through the OpenAI-compatible server and through ``orchestra chat --session``, with what the router and
each agent were given as history read back from the trace; then replays of a later turn (exactly, with the history
it had, and with another router), a failed turn resumed, two sessions interleaved, and how much history a long
session keeps.

    .venv/bin/python examples/conversation.py

The team is the shipped offline one (the ``calculator``, ``clock`` and ``knowledge`` function agents of
`orchestra.agents`, routed by the ``embedding`` router, each turn to its best agent) with two agents of our own
that read their context's history: ``recap`` lists what the user asked so far, and ``fx`` converts the previous
answer to euros with a rate from a service that is down at first.

In a session (``workflow.run(query, session_id=...)``, ``orchestra chat --session``) every run is given the
session's last `HISTORY_TURNS` exchanges that ended ok, as ``RouterState.history`` and ``AgentContext.history``
alike, and records them in its ``meta["history"]``, which this example reads back: a failed or stopped turn is no
exchange of it, a resumed turn is (in place of the run it resumed, as the session's latest), replays never are,
and a replay or resume runs on the history its original had. The server takes the history from the request's
messages instead, as an OpenAI model does: all of it, where a session keeps its last `HISTORY_TURNS` exchanges
(step 7). The embedding router itself routes on the query alone; a router of your own may read the history.

Runs offline in about 15 s (most of it loading MiniLM for the router); no model is called, so every answer is
exact. The trace goes to a SQLite file (pass a URL as the first argument to use another store that the command
line can open too: SQLite or PostgreSQL, not ``memory://``).
"""

from __future__ import annotations

import re
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from orchestra import AgentCard, AgentContext, AgentReply, Orchestra, PassThrough, replay, resume
from orchestra.agents.team import install_default_team
from orchestra.cli import app as orchestra_cli
from orchestra.embeddings import warm_up_embedder
from orchestra.runtime import HISTORY_TURNS
from orchestra.server import create_app

RATES = {"service_up": False, "usd_to_eur": Decimal("0.92"), "calls": 0}
"""The exchange-rate service the ``fx`` agent asks: down until the example brings it back."""

CONVERSATION = ("what is 17.5% of 2,480?", "and 10% of that?", "now divide it by 2")
"""Three turns, each on the previous answer: 434, 43.4, 21.7."""
POWER = "what is 2 to the power of 10?"
"""The other session's first turn."""
RECAP = "what have I asked so far?"
CONVERT = "convert that to euros"


def recap(query: str, context: AgentContext) -> AgentReply:
    """What the user asked so far in this session and the last answer, from the history the run was given."""
    asked = [turn.content for turn in context.history if turn.role == "user"]
    answers = [turn.content for turn in context.history if turn.role == "assistant"]
    seen = {"history_turns": len(context.history)}  # kept on the call's step: what this agent was given
    if not asked:
        return AgentReply(answer="Nothing yet: this is the first question of the conversation.", meta=seen)
    questions = ", ".join(repr(question) for question in asked)
    counted = f"{len(asked)} question{'s' if len(asked) > 1 else ''}"
    return AgentReply(answer=f"You asked {counted}: {questions}. The last answer was {answers[-1]!r}.", meta=seen)


def convert_to_euros(query: str, context: AgentContext) -> AgentReply:
    """US dollars to euros at the rate service's rate: the amount in the query, or else the previous answer's."""
    seen = {"history_turns": len(context.history)}
    given = re.findall(r"\d+(?:\.\d+)?", query.replace(",", ""))
    last = next((turn.content for turn in reversed(context.history) if turn.role == "assistant"), "")
    previous = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*", last)  # a previous answer that is one number
    if not given and previous is None:
        return AgentReply(answer="Sorry, I see no amount to convert, here or in the previous answer.", declined=True, meta=seen)
    RATES["calls"] += 1
    if not RATES["service_up"]:
        raise ConnectionError("rates service: 503 Service Unavailable")
    amount = Decimal(given[0] if given else previous.group(1))  # type: ignore[union-attr]
    euros = (amount * RATES["usd_to_eur"]).quantize(Decimal("0.01"))
    return AgentReply(answer=f"{amount} USD = {euros} EUR (at {RATES['usd_to_eur']} EUR per USD)", meta=seen)


RECAP_CARD = AgentCard(
    id="recap", name="Conversation recap", backend="function", function="examples.conversation:recap",
    description="Recaps this conversation: the questions the user asked so far in the session and the last answer.",
    examples=("what have I asked so far?", "recap our conversation", "what did I ask you before?"),
)
FX_CARD = AgentCard(
    id="fx", name="Currency converter", backend="function", function="examples.conversation:convert_to_euros",
    description="Converts an amount of US dollars, or the previous answer, to euros at today's exchange rate.",
    examples=("convert that to euros", "how much is 250 dollars in euros?", "and in EUR?"),
)


def turn_facts(app: Orchestra, run_id: str) -> dict[str, Any]:
    """One stored run as the trace has it: its query, answer and agents, the history its router and agents were
    given (``meta["history"]``: the same turns go to ``RouterState.history`` and every ``AgentContext``), and how
    many turns each of our agents reports having read."""
    trace = app.store.get_run(run_id)
    run = trace.run
    calls = [step for step in trace.steps if step.kind == "call"]
    return {
        "run_id": run.id, "session_id": run.session_id, "query": run.query, "status": run.status, "answer": run.answer,
        "replay_mode": run.replay_mode, "replay_of": run.replay_of,
        "agents": [step.agent_id for step in calls],
        "history": [(turn["role"], turn["content"]) for turn in run.meta["history"]],
        "agents_read": {step.agent_id: step.response["meta"]["history_turns"] for step in calls
                        if "history_turns" in (step.response.get("meta") or {})},
        "error": (run.error or {}).get("type"),
    }


def history_of(app: Orchestra, session_id: str) -> list[str]:
    """The session's history as the next run would be given it, one ``role: content`` line per turn."""
    return [f"{turn.role}: {turn.content}" for turn in app.history(session_id)]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show(label: str, facts: dict[str, Any]) -> None:
    """One run on one line: what it answered and what history its router and agents were given."""
    given = facts["history"]
    last = f", the last {_cut(repr(given[-1][1]), 60)}" if given else ""
    outcome = _cut(repr(facts["answer"]), 120) if facts["status"] == "ok" else f"({facts['error']})"
    print(f"   {label} {facts['query']!r} -> {facts['status']} {outcome} by {facts['agents']}; "
          f"given {len(given)} turns of history{last}; agents read {facts['agents_read'] or '-'}")


def main(store_url: str | None = None) -> dict[str, Any]:
    """Hold the conversations above on ``store_url`` (a temporary SQLite file by default) and return every run's
    facts as the trace has them (`turn_facts`), with the sessions' histories and what the CLI printed."""
    RATES.update(service_up=False, calls=0)
    with tempfile.TemporaryDirectory() as tmp:
        url = store_url or f"sqlite:///{Path(tmp) / 'conversation.db'}"
        app = Orchestra(store=url)
        # the router's encoder loaded and warmed here, as `orchestra serve` does: `orchestra chat` warms it in a
        # thread of its own, which must not be left building it when this process ends (ONNX Runtime aborts)
        warm_up_embedder()
        install_default_team(app.registry, local_model=False)  # calculator, clock, knowledge; no model
        app.registry.ensure_agent(RECAP_CARD, implementation=recap)
        app.registry.ensure_agent(FX_CARD, implementation=convert_to_euros)
        # k=1: each turn goes to its best agent alone. With three, "convert that to euros" reaches the calculator
        # too, whose refusal is an answer (a declined one): the run ends ok with it while fx fails, and is a turn
        workflow = app.workflow("embedding", aggregator=PassThrough(), k=1)

        # 1. Two sessions, interleaved: each follow-up is answered from its own session's last answer.
        print("1. two sessions, interleaved")
        a1 = workflow.run(CONVERSATION[0])  # no session given: a new one
        b1 = workflow.run(POWER)
        session_a, session_b = a1.session_id, b1.session_id
        a2 = workflow.run(CONVERSATION[1], session_id=session_a)
        b2 = workflow.run(CONVERSATION[1], session_id=session_b)
        a3 = workflow.run(CONVERSATION[2], session_id=session_a)
        python_turns = [turn_facts(app, result.run_id) for result in (a1, a2, a3)]
        other_turns = [turn_facts(app, result.run_id) for result in (b1, b2)]
        for facts in python_turns:
            show("A", facts)
        for facts in other_turns:
            show("B", facts)

        # 2. A turn fails (the rates service is down): it is stored, but it is no turn of the session's history,
        #    so the recap after it leaves it out.
        print("2. a failed turn, and the recap after it")
        failed = turn_facts(app, workflow.run(CONVERT, session_id=session_a).run_id)
        show("A", failed)
        recap_after_failure = turn_facts(app, workflow.run(RECAP, session_id=session_a).run_id)
        show("A", recap_after_failure)

        # 3. The service is back: the failed turn is resumed, on the history it had when it was asked (three turns,
        #    not the recap since), and the resumed run takes its place in the session's history, as its last turn.
        print("3. the failed turn resumed")
        RATES["service_up"] = True
        resumed = turn_facts(app, resume(app, failed["run_id"]).run_id)
        show("A", resumed)
        recap_after_resume = turn_facts(app, workflow.run(RECAP, session_id=session_a).run_id)
        show("A", recap_after_resume)
        session_now = history_of(app, session_a)

        # 4. Replays of the second turn ("and 10% of that?"), which had one exchange of history when it was asked:
        #    exactly (the recorded answers served, the decision checked), and with another router, whose agents run
        #    live on that same history, not on the session's history now. Neither joins the session's history.
        print("4. replays of turn 2")
        second = python_turns[1]
        exact = turn_facts(app, replay(app, second["run_id"]).run_id)
        show("exact replay of", exact)
        counterfactual = turn_facts(app, replay(app, second["run_id"], router="fixed", agent_ids=["calculator", "recap"]).run_id)
        show("counterfactual replay of", counterfactual)
        history_after_replays = history_of(app, session_a)
        runs_in_session = sorted(run.replay_mode or "turn" for run in app.store.list_runs(session_id=session_a))
        # the same question in the session now: "that" is its last answer
        workflow.run("what is 15% of 300?", session_id=session_a)
        asked_now = turn_facts(app, workflow.run(CONVERSATION[1], session_id=session_a).run_id)
        show("asked in the session now:", asked_now)

        # 5. The same conversation from an OpenAI client: the history is the request's messages (each request a
        #    run of its own session, as the protocol names no conversation).
        print("5. the same conversation through the OpenAI-compatible server")
        server_turns = []
        messages: list[dict[str, str]] = []
        with TestClient(create_app(app, workflow)) as client:
            for query in (*CONVERSATION, RECAP):
                messages.append({"role": "user", "content": query})
                reply = client.post("/v1/chat/completions", json={"model": "orchestra", "messages": messages})
                reply.raise_for_status()
                messages.append({"role": "assistant", "content": reply.json()["choices"][0]["message"]["content"]})
                server_turns.append(turn_facts(app, reply.json()["orchestra"]["run_id"]))
        for facts in server_turns:
            show("server", facts)

        # 6. The same conversation on the command line: asked once, then continued with --session, a line a turn.
        print("6. the same conversation through orchestra chat --session")
        cli = CliRunner()
        common = ["--db", url, "--profile", "none", "--option", "k=1", "--aggregator", "pass-through", "--quiet"]
        opened = cli.invoke(orchestra_cli, ["chat", *common, CONVERSATION[0]])
        cli_session = app.store.list_runs(limit=1)[0].session_id
        continued = cli.invoke(orchestra_cli, ["chat", *common, "--session", cli_session], input="\n".join(CONVERSATION[1:]) + "\n\n")
        cli_turns = [turn_facts(app, run.id) for run in reversed(app.store.list_runs(session_id=cli_session))]
        for facts in cli_turns:
            show("cli", facts)
        # stdin is no terminal, so each answer follows its prompt on the prompt's line
        printed = [answer for answer in re.findall(r"^you> (.*)$", continued.stdout, re.MULTILINE) if answer]
        print(f"   exit codes {opened.exit_code}, {continued.exit_code}; the REPL printed the answers {printed}")

        # 7. A long session keeps its last HISTORY_TURNS exchanges; the server gives what the client sent.
        print(f"7. a long session: {HISTORY_TURNS + 1} questions, then the recap")
        start = workflow.run(POWER)
        long_messages = [{"role": "user", "content": POWER}, {"role": "assistant", "content": start.answer}]
        for _ in range(HISTORY_TURNS):  # 1024 halved ten times
            half = workflow.run(CONVERSATION[2], session_id=start.session_id)
            long_messages += [{"role": "user", "content": CONVERSATION[2]}, {"role": "assistant", "content": half.answer}]
        long_python = turn_facts(app, workflow.run(RECAP, session_id=start.session_id).run_id)
        with TestClient(create_app(app, workflow)) as client:
            reply = client.post("/v1/chat/completions",
                                json={"model": "orchestra", "messages": [*long_messages, {"role": "user", "content": RECAP}]})
        long_server = turn_facts(app, reply.json()["orchestra"]["run_id"])
        show("python", long_python)
        show("server", long_server)

        return {
            "python": python_turns, "other_session": other_turns, "failed": failed,
            "recap_after_failure": recap_after_failure, "resumed": resumed, "recap_after_resume": recap_after_resume,
            "session_history": session_now, "exact": exact, "counterfactual": counterfactual, "asked_now": asked_now,
            "session_history_after_replays": history_after_replays, "runs_in_session": runs_in_session,
            "rates_calls": RATES["calls"], "server": server_turns,
            "server_sessions": len({facts["session_id"] for facts in server_turns}),
            "cli": {"exit_codes": [opened.exit_code, continued.exit_code], "printed": printed, "turns": cli_turns,
                    "session_id": cli_session},
            "long_python": long_python, "long_server": long_server, "history_turns": HISTORY_TURNS,
        }


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
