"""A production app's bad days: a model endpoint that is down, rate-limited or hung, a run that goes over its
money, token, call or time budget, and how to go on afterwards, read back from what the trace store records.

    .venv/bin/python examples/budgets_and_fallbacks.py

Runs offline. The working model is SmolLM2-135M-Instruct, served by Orchestra's managed llama.cpp server
(`local_model_card()`), given a hosted model's prices ($2.50 / $10 per million tokens) so that every call has a
real cost to count. The failing models are real OpenAI-compatible endpoints on 127.0.0.1: a closed port (connection
refused) and small HTTP servers started below that answer 503, 429, or hang without answering. The app retries every
model call by its `RetryPolicy` (small backoffs here, so the example takes seconds) and falls back to SmolLM2 by its
`FallbackPolicy`; each run's `Budget` stops it with `BudgetExceeded`, and `resume` with a raised budget
(`RunRecord.budget(**changes)`) finishes it without calling again what succeeded. Then `RoutingPolicy` per request,
in Python and over HTTP, and the same budgets from `orchestra chat` and `orchestra resume`.

What it shows of the budget's rules (`Budget`'s docstring): a limit is checked before each decision, dispatch and
model call (a fallback's too), never before a call on what the call would cost, so calls started together (parallel
agents) take a run past its cost or token limit by what they cost, and the next model call stops it;
`max_parallel_calls=1` bounds that to one call. A dispatch over ``max_calls`` is refused before any call. At
``max_seconds`` an agent call under way is stopped: an async one is cancelled (its HTTP request closed), a sync one
is left to finish in its thread (its request, and the client's retries of it, go on; nothing it does is recorded or
counted), and the model call it had under way is recorded as stopped, of unknown cost, so the run's cost is unknown.
The trace goes to a SQLite file (pass a URL as the first argument to use another store).

The example shows the machinery, not how well a 135M model writes: its answers can be off, and its merged answer
may echo the refining prompt.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from orchestra import (
    AgentCard,
    AgentContext,
    AgentReply,
    Budget,
    ChatOptions,
    ConfigurationError,
    FallbackPolicy,
    Message,
    ModelCard,
    Orchestra,
    PassThrough,
    PolicyError,
    Refine,
    RetryPolicy,
    RoutingPolicy,
    RunResult,
    RunTrace,
    aresume,
    resume,
)
from orchestra.cli import app as orchestra_cli
from orchestra.local import local_model_card, server_for
from orchestra.routers.model_routers import HashingEmbedder
from orchestra.server import create_app

SMOL = "smol"
"""The working model's card id: SmolLM2 on this machine, priced as a hosted model."""

RETRY = RetryPolicy(max_attempts=2, initial_backoff_s=0.05, max_backoff_s=0.1, jitter_s=0.0, timeout_s=20.0)
"""The app's, for every model call: two attempts, 50 ms apart (the defaults: three, from 0.5 s), each cut at 20 s."""
DEADLINE_S = 0.6
"""``max_seconds`` of the runs that meet the hung model."""


class Writer:
    """An LLM agent that answers in a few words on its card's model. Its model calls go through ``context.models``,
    so the run records them, counts their cost and tokens against its budget, and falls back when the model fails."""

    options = ChatOptions(temperature=0.0, max_tokens=16)  # a few words: quick on 2 cores

    def messages(self, query: str, context: AgentContext) -> list[Message]:
        """The card's instructions, then the request."""
        return [Message(role="system", content=context.card.system_prompt), Message(role="user", content=query)]

    def run(self, query: str, context: AgentContext) -> AgentReply:
        """A few words about ``query``."""
        result = context.models.chat(context.card.model or SMOL, self.messages(query, context), self.options, purpose="agent")
        return AgentReply.from_chat(result)

    async def arun(self, query: str, context: AgentContext) -> AgentReply:
        """The async twin of `run`."""
        result = await context.models.achat(context.card.model or SMOL, self.messages(query, context), self.options, purpose="agent")
        return AgentReply.from_chat(result)


class FailingEndpoint:
    """An OpenAI-compatible endpoint on 127.0.0.1 that fails: every request answers ``status`` (503, 429) with an
    OpenAI error body, or, with ``status=None``, is held without an answer until the client hangs up. Once
    `recover` is called it is a working provider again, passing requests on to a real server. It logs each request:
    what it did with it, and how long the client kept it open."""

    def __init__(self, status: int | None) -> None:
        self.status = status
        self.recovered_to: str | None = None
        self.requests: list[dict[str, Any]] = []
        self.open = 0
        """Requests under way."""
        self._lock = threading.Lock()
        self._closing = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                opened, target = time.perf_counter(), endpoint.recovered_to
                with endpoint._lock:
                    endpoint.open += 1
                if target is not None:
                    how = "answered"
                    reply = urllib.request.Request(target + self.path.removeprefix("/v1"), data=body, headers={"content-type": "application/json"})
                    with _NO_PROXY.open(reply) as answer:
                        self._send(answer.status, answer.read())
                elif endpoint.status is None:
                    how = "held"
                    endpoint._hold(self.connection)
                else:
                    how = f"answered {endpoint.status}"
                    self._send(endpoint.status, json.dumps({"error": {"message": f"upstream answered {endpoint.status}", "type": "server_error"}}).encode())
                with endpoint._lock:
                    endpoint.open -= 1
                    endpoint.requests.append({"how": how, "held_s": round(time.perf_counter() - opened, 2)})

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, name="failing-endpoint", daemon=True).start()

    def _hold(self, connection: socket.socket) -> None:
        """Answer nothing; return when the client closes the connection (it gave up, or its task was cancelled)."""
        while not self._closing.is_set():
            readable, _, _ = select.select([connection], [], [], 0.02)
            if readable and not connection.recv(1, socket.MSG_PEEK):
                return

    def open_after(self, seconds: float) -> int:
        """The requests still open after up to ``seconds`` waiting for them to close."""
        deadline = time.perf_counter() + seconds
        while self.open and time.perf_counter() < deadline:
            time.sleep(0.02)
        return self.open

    def recover(self, working_url: str) -> None:
        """The provider is back: from now on requests are answered by the OpenAI-compatible server at ``working_url``."""
        self.recovered_to = working_url

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Requests to 127.0.0.1 never go through an ``http_proxy`` from the environment."""


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: connecting is refused at once, as to a server that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def model_calls(trace: RunTrace) -> list[dict[str, Any]]:
    """The run's model calls as the store has them: which model, for what, how it failed, the client's attempts,
    how long it took (its retries and backoffs included), its tokens and cost."""
    return [{"model": step.model_id, "purpose": step.request.get("purpose"), "error": (step.error or {}).get("type"),
             "attempts": step.response.get("attempts"), "ms": round(step.latency_ms), "tokens": step.prompt_tokens + step.completion_tokens,
             "cost_usd": step.cost_usd} for step in trace.steps if step.kind == "model_call"]


def read_back(app: Orchestra, run_id: str) -> dict[str, Any]:
    """What the store holds of a run: its status and error, each agent call's answer (or error) and the model that
    answered, the model calls, the totals, and for a resume what was served and what ran live."""
    trace = app.store.get_run(run_id)
    run = trace.run
    calls = [step for step in trace.steps if step.kind == "call"]
    aggregate = next((step for step in trace.steps if step.kind == "aggregate"), None)
    served, live = trace.resumed_counts()
    return {
        "run_id": run.id, "status": run.status, "answer": run.answer, "error": run.error,
        "calls": {step.agent_id: {"model": step.model_id, "error": (step.error or {}).get("type"), "cost_usd": step.cost_usd,
                                  "resumed": step.response.get("resumed")} for step in calls},
        "aggregate_error": (aggregate.error or {}).get("type") if aggregate else None,
        "model_calls": model_calls(trace),
        "cost_usd": run.cost_usd, "tokens": run.prompt_tokens + run.completion_tokens, "seconds": round(run.latency_ms / 1000, 2),
        "budget": run.meta.get("budget"), "policy": run.meta.get("policy"), "served": served, "live": live,
        "replay_of": run.replay_of,
    }


def show(label: str, facts: dict[str, Any]) -> None:
    error = facts["error"]
    said = f"{error['type']}: {error['message']}" if error else repr(facts["answer"])
    cost = "unknown" if facts["cost_usd"] is None else f"${facts['cost_usd']:.6f}"
    resumed = f", {facts['served']} served / {facts['live']} live" if facts["replay_of"] else ""
    print(f"{label}: {facts['status']}: {said} ({cost}, {facts['tokens']} tokens, {facts['seconds']} s{resumed})")
    for call in facts["model_calls"]:
        failed = f" {call['error']} after {call['attempts']} attempt(s)" if call["error"] else ""
        print(f"      {call['purpose']:>6} {call['model']}{failed}, {call['ms']} ms, {call['tokens']} tokens")


def policy_error(make: Any) -> str:
    """The message of the typed error a bad policy value gets."""
    try:
        make()
    except (PolicyError, ConfigurationError) as exc:
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError("the bad value was accepted")


def main(store_url: str | None = None) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    busy, limited, stuck = FailingEndpoint(503), FailingEndpoint(429), FailingEndpoint(None)
    with tempfile.TemporaryDirectory() as tmp:
        url = store_url or f"sqlite:///{Path(tmp) / 'example.db'}"
        app = Orchestra(store=url, retry=RETRY, fallback=FallbackPolicy(models=(SMOL,)))
        smol = local_model_card(id=SMOL, description="SmolLM2-135M-Instruct on this machine, priced here as a hosted model.")
        app.registry.ensure_model(smol.with_changes(input_price_per_mtok=2.5, output_price_per_mtok=10.0))
        hosted = {"gpt-down": f"http://127.0.0.1:{closed_port()}/v1", "busy": busy.url, "limited": limited.url, "stuck": stuck.url}
        for model_id, base_url in hosted.items():
            app.registry.ensure_model(ModelCard(id=model_id, base_url=base_url, description=f"A hosted model ({model_id}).",
                                                input_price_per_mtok=5.0, output_price_per_mtok=15.0))
        team = {  # agent: (its model, what it does)
            "poet": ("gpt-down", "Writes a short poem about the sea, ships or sailors."),
            "historian": (SMOL, "Explains the history of ships, sailors, explorers and empires."),
            "chef": (SMOL, "Gives recipes and cooking tips."),
            "critic": ("busy", "Reviews a book or a film in one line."),
            "reviewer": ("limited", "Reviews a restaurant in one line."),
            "forecaster": ("stuck", "Forecasts the weather at sea."),
        }
        for agent_id, (model_id, description) in team.items():
            app.registry.ensure_agent(AgentCard(id=agent_id, description=description, model=model_id, backend="function",
                                                function="examples.budgets_and_fallbacks:Writer",
                                                system_prompt=f"{description} Answer in a few words."), implementation=Writer())

        # 1. The poet's model is down (connection refused). The app's RetryPolicy tries it twice, 50 ms apart; its
        #    FallbackPolicy then asks SmolLM2, which answers, at SmolLM2's price. The same in run, arun and stream.
        print("1. fallbacks")
        poet = app.workflow("fixed", agent_ids=["poet"])
        down = {
            "run": poet.run("A poem about a lighthouse."),
            "arun": asyncio.run(poet.arun("A poem about a lighthouse.")),
            "stream": list(poet.stream("A poem about a lighthouse."))[-1].data["result"],
        }
        facts["fallback"] = {mode: read_back(app, result.run_id) for mode, result in down.items()}
        for mode, read in facts["fallback"].items():
            show(f"   {mode}", read)
        # 503 and 429: retried (each endpoint sees RETRY.max_attempts requests), then the fallback answers.
        two = read_back(app, app.workflow("fixed", agent_ids=["critic", "reviewer"]).run("Review 'Moby Dick' and the Harbour Inn.").run_id)
        facts["http_failures"] = {"run": two, "requests": {"503": len(busy.requests), "429": len(limited.requests)}}
        show("   503 and 429", two)

        # 2a. A cost limit below what two agents spend together: they start at once (nothing is spent yet), so the
        #     run goes over by what they cost (the poet's fallback included), and the refiner's model call, the next
        #     one, is refused. The caller gets the typed error and both answers; the store has both.
        print("2. budgets")
        pair = ["poet", "historian"]
        refine = Refine(SMOL, always=True, options=ChatOptions(max_tokens=16))
        over = app.workflow("fixed", agent_ids=pair, aggregator=refine, budget=Budget(max_cost_usd=0.0001)).run("Ships, in a few words.")
        facts["cost"] = read_back(app, over.run_id) | {"result": {"status": over.status, "error": type(over.error).__name__,
                                                                 "limit": getattr(over.error, "limit", None), "answer": over.answer,
                                                                 "answered": sorted(obs.agent_id for obs in over.observations if obs.answered)}}
        show("   max_cost_usd=0.0001, two agents at once", facts["cost"])
        # Resumed with the limit raised: the decision and both answers are served from the record (not asked, not
        # paid again, but counted: the totals are the whole run's); only the refiner runs.
        raised = app.store.get_run(over.run_id).run.budget(max_cost_usd=0.01)
        facts["cost_resumed"] = read_back(app, resume(app, over.run_id, budget=raised, aggregator=refine).run_id)
        show("   resumed at max_cost_usd=0.01", facts["cost_resumed"])

        # 2b. Tokens, one call at a time, streamed: the first call uses more than max_tokens, so the second agent's
        #     model call is refused (the run overshoots by one call at most); the stream ends with run_finished
        #     carrying the typed error. Resumed (async) with more tokens: the first answer served, the second live.
        one_by_one = app.workflow("fixed", agent_ids=["historian", "chef"], budget=Budget(max_tokens=40, max_parallel_calls=1))
        events = list(one_by_one.stream("Sailors and soup."))
        streamed: RunResult = events[-1].data["result"]
        facts["tokens"] = read_back(app, streamed.run_id) | {"events": sorted({event.kind for event in events}),
                                                             "result_error": type(streamed.error).__name__}
        show("   max_tokens=40, max_parallel_calls=1, streamed", facts["tokens"])
        more = app.store.get_run(streamed.run_id).run.budget(max_tokens=2000)
        facts["tokens_resumed"] = read_back(app, asyncio.run(aresume(app, streamed.run_id, budget=more)).run_id)
        show("   resumed (aresume) at max_tokens=2000", facts["tokens_resumed"])

        # 2c. Calls: a dispatch to two agents under max_calls=1 is refused before any call: nothing is spent.
        capped = app.workflow("fixed", agent_ids=["historian", "chef"], budget=Budget(max_calls=1))
        facts["calls"] = read_back(app, capped.run("Sailors and soup.").run_id)
        show("   max_calls=1, two agents", facts["calls"])

        # 2d. Time: the forecaster's model hangs. At max_seconds the call is stopped and the run with it; the
        #     model call under way is recorded as stopped, its cost unknown (the provider may bill it). An async
        #     run's HTTP request is cancelled; a sync run's is left running in its thread after the run has ended,
        #     until the client's own timeout (RETRY.timeout_s), and is then retried; nothing it does is recorded.
        forecast = app.workflow("fixed", agent_ids=["forecaster"], budget=Budget(max_seconds=DEADLINE_S))
        started = time.perf_counter()
        hung_async = asyncio.run(forecast.arun("Wind at sea tomorrow?"))
        async_returned, async_open = time.perf_counter() - started, stuck.open_after(1.0)
        started = time.perf_counter()
        hung_sync = forecast.run("Wind at sea tomorrow?")
        sync_returned, sync_open = time.perf_counter() - started, stuck.open_after(0.2)
        facts["seconds"] = {"async": read_back(app, hung_async.run_id) | {"returned_s": async_returned, "requests_open": async_open},
                            "sync": read_back(app, hung_sync.run_id) | {"returned_s": sync_returned, "requests_open": sync_open}}
        show(f"   max_seconds={DEADLINE_S}, async (returned after {async_returned:.2f} s, requests still open: {async_open})",
             facts["seconds"]["async"])
        show(f"   max_seconds={DEADLINE_S}, sync (returned after {sync_returned:.2f} s, requests still open: {sync_open})",
             facts["seconds"]["sync"])
        # The provider is back (here: passing requests on to the local server); the run is resumed with more time.
        stuck.recover(server_for(smol).ensure())
        more_time = app.store.get_run(hung_sync.run_id).run.budget(max_seconds=30)
        facts["seconds_resumed"] = read_back(app, resume(app, hung_sync.run_id, budget=more_time).run_id)
        show("   the provider back, resumed at max_seconds=30", facts["seconds_resumed"])

        # 3. RoutingPolicy per request: the workflow's own, or the one given to a run. The embedding router reads
        #    max_agents and min_score (cost_weight is for model routers: it is recorded with the run).
        print("3. routing policy per request")
        routed = app.workflow("embedding", embedder=HashingEmbedder(), aggregator=PassThrough(), routing=RoutingPolicy(max_agents=2))
        query = "A poem about the sailors who first crossed the sea"
        narrowed = routed.run(query, routing=RoutingPolicy(max_agents=1, cost_weight=0.3))
        strict = routed.run(query, routing=RoutingPolicy(min_score=0.95))
        facts["routing"] = {
            "narrowed": read_back(app, narrowed.run_id) | {"scores": {s.id: s.score for s in narrowed.decisions[0].scores}},
            "strict": read_back(app, strict.run_id) | {"out_of_scope": strict.out_of_scope},
            "bad": [policy_error(lambda: RoutingPolicy(cost_weight=1.5)), policy_error(lambda: RoutingPolicy(max_agents=0)),
                    policy_error(lambda: RoutingPolicy(min_score=float("nan"))), policy_error(lambda: RoutingPolicy(max_agents=True)),
                    policy_error(lambda: routed.run(query, routing={"max_agents": 1})),  # type: ignore[arg-type]
                    policy_error(lambda: Budget(max_cost_usd=-1)), policy_error(lambda: Budget(max_tokens=0)),
                    policy_error(lambda: app.store.get_run(over.run_id).run.budget(max_cost=1.0))],
        }
        show("   max_agents=1, cost_weight=0.3", facts["routing"]["narrowed"])
        show("   min_score=0.95", facts["routing"]["strict"])
        for message in facts["routing"]["bad"]:
            print(f"   refused: {message}")

        # 4. The command line: a run stopped by --budget, resumed by `orchestra resume --budget` (the other limits
        #    as recorded), both with the app's policies as options: --fallback and --retry. Exit 1 for a run that
        #    failed, 2 for a bad option (nothing stored).
        print("4. the command line and the server")
        cli = CliRunner()
        policies = ["--db", url, "--profile", "none", "--fallback", SMOL, "--retry", "max_attempts=2", "--retry", "initial_backoff_s=0.05"]
        stopped = cli.invoke(orchestra_cli, ["chat", *policies, "--quiet", "--router", "fixed", "--option", 'agent_ids=["poet","chef"]',
                                             "--aggregator", "pass-through", "--budget", "max_calls=1", "Soup for sailors?"])
        cli_stopped = read_back(app, app.store.list_runs(limit=1)[0].id)
        resumed = cli.invoke(orchestra_cli, ["resume", cli_stopped["run_id"], *policies, "--budget", "max_calls=2"])
        cli_resumed = read_back(app, app.store.list_runs(limit=1)[0].id)
        bad = cli.invoke(orchestra_cli, ["chat", *policies, "--budget", "max_tokens=lots", "hello"])
        facts["cli"] = {
            "stopped": {"exit_code": stopped.exit_code, "output": stopped.output, **cli_stopped},
            "resumed": {"exit_code": resumed.exit_code, "output": resumed.output, **cli_resumed},
            "bad": {"exit_code": bad.exit_code, "output": bad.output.strip()},
        }
        show(f"   orchestra chat --budget max_calls=1 (exit {stopped.exit_code})", cli_stopped)
        show(f"   orchestra resume --budget max_calls=2 --fallback {SMOL} (exit {resumed.exit_code})", cli_resumed)
        print(f"   orchestra chat --budget max_tokens=lots: exit {bad.exit_code}: {facts['cli']['bad']['output']}")

        # Over HTTP: the server runs its workflow's budget; a request may set its own cost_weight, max_agents and
        # min_score (not a budget: its client could raise it). A run its budget stopped answers 500 with its run id,
        # and POST /orchestra/runs/RUN_ID/resume with {"budget": ...} finishes it.
        served_workflow = app.workflow("embedding", embedder=HashingEmbedder(), aggregator=PassThrough(), budget=Budget(max_calls=1))
        with TestClient(create_app(app, served_workflow)) as client:
            def ask(**extra: Any) -> Any:
                return client.post("/v1/chat/completions", json={"model": "orchestra", "messages": [{"role": "user", "content": query}], **extra})

            replies = {"over": ask(), "one": ask(max_agents=1, cost_weight=0.5), "strict": ask(min_score=0.95), "bad": ask(cost_weight=2)}
            run_id = replies["over"].json().get("orchestra", {}).get("run_id")
            resumed_http = client.post(f"/orchestra/runs/{run_id}/resume", json={"budget": {"max_calls": 2}})
        facts["http"] = {label: {"status": reply.status_code, **reply.json()} for label, reply in replies.items()}
        facts["http"]["resumed"] = read_back(app, resumed_http.json()["run"]["id"]) | {"http_status": resumed_http.status_code,
                                                                                      "resumed_from": resumed_http.json()["resumed_from"]}
        for label, extra in (("over", "max_calls=1"), ("one", "max_agents=1, cost_weight=0.5"), ("strict", "min_score=0.95"), ("bad", "cost_weight=2")):
            reply = facts["http"][label]
            said = reply["error"]["message"] if "error" in reply else f"agents {[obs['agent_id'] for obs in reply['orchestra']['observations']]}"
            print(f"   POST /v1/chat/completions ({extra}): {reply['status']}: {said}")
        show(f"   POST /orchestra/runs/{run_id[:8]}/resume {{\"budget\": {{\"max_calls\": 2}}}}: {resumed_http.status_code}", facts["http"]["resumed"])

    for endpoint in (busy, limited, stuck):
        endpoint.close()
    return facts


if __name__ == "__main__":
    # `orchestra` (section 4) builds the agents from their cards, importing examples.budgets_and_fallbacks:Writer:
    # the repository's root must be on the import path, as PYTHONPATH or an installed package puts it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(sys.argv[1] if len(sys.argv) > 1 else None)
