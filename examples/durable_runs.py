"""Runs that survive failures: an agent retried by its card's policy, a failed run resumed once its cause is fixed
(what succeeded served from the trace, not done again), and a payment that waits for a human's approval.

    .venv/bin/python examples/durable_runs.py

Runs offline: the agents are Python functions standing for a flaky weather API, a ledger service that is down
until "fixed", and a payment tool with side effects. The trace goes to a SQLite file (pass a URL as the first
argument to use another store); `orchestra runs show RUN_ID --db URL` draws any of the runs it makes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from orchestra import AgentCard, ApprovalRequired, Orchestra, PassThrough, RetryPolicy, resume

SERVICES = {"weather_failures_left": 2, "ledger_up": False, "paid": [], "calls": {"weather": 0, "ledger": 0}}
"""What the outside world does: the weather API fails twice, the ledger is down, payments made."""


def weather(query: str) -> str:
    SERVICES["calls"]["weather"] += 1
    if SERVICES["weather_failures_left"]:
        SERVICES["weather_failures_left"] -= 1
        raise ConnectionError("weather API: connection reset by peer")
    return "Paris: 18 °C, light rain"


def ledger(query: str) -> str:
    SERVICES["calls"]["ledger"] += 1
    if not SERVICES["ledger_up"]:
        raise ConnectionError("ledger service: 503 Service Unavailable")
    return "Balance: 1,240.00 EUR"


def pay(query: str) -> str:
    SERVICES["paid"].append(query)
    return "Invoice 7 paid: 310.00 EUR"


def main(store_url: str | None = None) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        app = Orchestra(store=store_url or f"sqlite:///{Path(tmp) / 'example.db'}")
        quick = RetryPolicy(max_attempts=3, initial_backoff_s=0.05, max_backoff_s=0.2, jitter_s=0.0, timeout_s=5.0)
        app.registry.add_agent(AgentCard(id="weather", description="Current weather of a city.", backend="function",
                                         function="examples.durable_runs:weather", retry=quick), implementation=weather)
        app.registry.add_agent(AgentCard(id="ledger", description="The account's balance.", backend="function",
                                         function="examples.durable_runs:ledger"), implementation=ledger)
        app.registry.add_agent(AgentCard(id="pay", description="Pays an invoice.", backend="function",
                                         function="examples.durable_runs:pay", requires_approval=True), implementation=pay)

        # 1. The weather API fails twice; its card's RetryPolicy tries again. The ledger is down: the run ends ok
        #    with the weather only, the ledger's failure on its observation.
        both = app.workflow("fixed", aggregator=PassThrough(), agent_ids=["weather", "ledger"])
        first = both.run("Weather in Paris, and my balance?")
        attempts = len(next(s for s in app.store.get_run(first.run_id).steps if s.agent_id == "weather").response["retried"]) + 1
        failed = [o.agent_id for o in first.observations if not o.ok]
        print(f"1. {first.status}: {first.answer!r}; weather took {attempts} attempts; failed: {failed}")

        # 2. The ledger is back: resume the run. The weather answer is served from the trace (its API is not
        #    called again), the ledger is called live.
        SERVICES["ledger_up"] = True
        calls_before = dict(SERVICES["calls"])
        resumed = resume(app, first.run_id)
        print(f"2. resumed as {resumed.run_id[:8]}: {resumed.status}: {resumed.answer!r}")

        # 3. A payment waits for approval: the run pauses after its decision, nothing is paid until it is resumed.
        paying = app.workflow("fixed", aggregator=PassThrough(), agent_ids=["pay"])
        paused = paying.run("Pay invoice 7")
        assert isinstance(paused.error, ApprovalRequired)
        print(f"3. {paused.status}: {paused.error}; paid so far: {SERVICES['paid']}")
        approved = resume(app, paused.run_id)
        print(f"4. approved: {approved.answer!r}")
        return {
            "first_status": first.status, "weather_attempts": attempts, "first_failed": failed,
            "resumed_status": resumed.status, "resumed_answer": resumed.answer,
            "weather_calls_on_resume": SERVICES["calls"]["weather"] - calls_before["weather"],
            "ledger_calls_on_resume": SERVICES["calls"]["ledger"] - calls_before["ledger"],
            "paused_status": paused.status, "paused_agents": list(paused.error.agent_ids),
            "approved_status": approved.status, "paid": list(SERVICES["paid"]),
        }


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
