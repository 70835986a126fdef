"""Define a team in Python, route with embeddings, onboard an agent at runtime, and replay a run exactly and
with another router.

    .venv/bin/python examples/onboard_and_replay.py

Runs offline: the agents are Python functions and the router embeds cards with the bundled all-MiniLM-L6-v2.
The trace goes to a SQLite file (pass a URL as the first argument to use another store).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from orchestra import AgentCard, Orchestra, PassThrough, replay


def convert_units(query: str) -> str:
    """Kilometres to miles and back, for numbers found in the query."""
    import re

    found = re.search(r"(\d+(?:\.\d+)?)\s*(km|kilomet\w*|mi\w*)", query.lower())
    if not found:
        return "Give me a distance with its unit to convert, e.g. '10 km in miles'."
    value, unit = float(found.group(1)), found.group(2)
    if unit.startswith("mi"):
        return f"{value:g} miles = {value * 1.609344:.3f} km"
    return f"{value:g} km = {value / 1.609344:.3f} miles"


def count_words(query: str) -> str:
    """How many words and characters the quoted text (or the whole query) has."""
    import re

    quoted = re.findall(r"['\"](.+?)['\"]", query)
    text = quoted[0] if quoted else query
    return f"{len(text.split())} words, {len(text)} characters"


def spell_backwards(query: str) -> str:
    import re

    quoted = re.findall(r"['\"](.+?)['\"]", query)
    return (quoted[0] if quoted else query)[::-1]


def main(store_url: str | None = None) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        app = Orchestra(store=store_url or f"sqlite:///{Path(tmp) / 'example.db'}")
        app.registry.add_agent(
            AgentCard(id="units", description="Converts distances between kilometres and miles.",
                      examples=("how many miles is 42 km", "convert 5 miles to kilometres"), backend="function",
                      function="examples.onboard_and_replay:convert_units"),
            implementation=convert_units,
        )
        app.registry.add_agent(
            AgentCard(id="wordcount", description="Counts the words and characters of a text.",
                      examples=("how many words are in 'to be or not to be'",), backend="function",
                      function="examples.onboard_and_replay:count_words"),
            implementation=count_words,
        )
        workflow = app.workflow("embedding", aggregator=PassThrough(), k=1, threshold=0.35)

        first = workflow.run("How many miles is a 42 km marathon?")
        print(f"1. {first.answer!r} (answered by {[o.agent_id for o in first.observations]})")

        before = workflow.run("spell 'orchestra' backwards")
        print(f"2. before onboarding: {before.answer!r} (out of scope: {before.out_of_scope})")

        # Onboard an agent at runtime: the same compiled workflow routes to it at its next decision.
        app.registry.add_agent(
            AgentCard(id="reverse", description="Spells a word or text backwards, reversing its letters.",
                      examples=("spell 'hello' backwards", "reverse the letters of 'banana'"), backend="function",
                      function="examples.onboard_and_replay:spell_backwards"),
            implementation=spell_backwards,
        )
        after = workflow.run("spell 'orchestra' backwards")
        print(f"3. after onboarding: {after.answer!r} (answered by {[o.agent_id for o in after.observations]})")

        again = replay(app, after.run_id)
        print(f"4. exact replay of run {after.run_id[:8]}: {again.answer!r}, status {again.status}")

        # Counterfactual: the same query, live, with another router (here every agent answers).
        other = replay(app, after.run_id, router="all")
        print(f"5. with router 'all': answered by {[o.agent_id for o in other.observations]}")
        for run in app.store.list_runs(limit=2):  # what `orchestra runs list` shows: the two replays, newest first
            print(f"   {run.id} {run.replay_mode} replay of {run.replay_of[:8] if run.replay_of else None}")
        return {
            "first": first.answer, "before": before.out_of_scope, "after": after.answer,
            "after_agents": [o.agent_id for o in after.observations], "replay": again.answer, "replay_status": again.status,
            "counterfactual_agents": sorted(o.agent_id for o in other.observations),
            "latest_runs": [(run.replay_mode, run.replay_of) for run in app.store.list_runs(limit=2)],
        }


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
