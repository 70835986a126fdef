"""Runtime overhead: Orchestra against a plain LangGraph graph making the same calls, and exact replay time.

    .venv/bin/python benchmarks/bench_runtime.py [--runs 200]

Zero-latency scripted models, so what is measured is the runtime itself: routing state, registry lookup at call
time, parallel dispatch, trace writes, aggregation. Prints a table and writes benchmarks/results/runtime.json.
Targets (issue "Core runtime"): overhead ≤ 1.5x plain LangGraph and ≤ 2 ms per agent call; exact replay of a
100-step run < 100 ms.
"""

from __future__ import annotations

import argparse
import json
import operator
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from orchestra import AgentCard, Call, Dispatch, Finish, Message, ModelCard, Orchestra, RouterState, replay
from orchestra.store import SqlStore
from orchestra.testing import FunctionRouter, InMemoryStore, ScriptedModel, ScriptedModels

AGENTS = 4


class State(TypedDict, total=False):
    query: str
    answers: Annotated[list[str], operator.add]
    answer: str


def plain_langgraph(models: list[ScriptedModel]) -> Any:
    """The same work without Orchestra: route to every agent, call its model in parallel, join the answers."""

    def route(state: State) -> dict[str, Any]:
        return {}

    def fan_out(state: State) -> list[Send]:
        return [Send("call", {"query": state["query"], "index": i}) for i in range(len(models))]

    def call(payload: dict[str, Any]) -> dict[str, Any]:
        result = models[payload["index"]].chat([Message(role="user", content=payload["query"])])
        return {"answers": [result.text]}

    def aggregate(state: State) -> dict[str, Any]:
        return {"answer": "\n".join(state["answers"])}

    graph = StateGraph(State)
    graph.add_node("router", route)
    graph.add_node("call", call)
    graph.add_node("aggregate", aggregate)
    graph.add_edge(START, "router")
    graph.add_conditional_edges("router", fan_out, ["call"])
    graph.add_edge("call", "aggregate")
    graph.add_edge("aggregate", END)
    return graph.compile()


def orchestra_app(store: Any, models: list[ScriptedModel]) -> Orchestra:
    app = Orchestra(store=store, model_factory=ScriptedModels(models))
    for i, model in enumerate(models):
        app.registry.add_model(ModelCard(id=model.id, description="scripted", input_price_per_mtok=0.0, output_price_per_mtok=0.0))
        app.registry.add_agent(AgentCard(id=f"agent-{i}", description=f"agent {i}", model=model.id))
    return app


def timed(fns: dict[str, Any], runs: int) -> dict[str, list[float]]:
    """Milliseconds per call of each function, interleaved: one call of each per round, so a slow spell of a shared
    machine falls on every contender alike instead of on whichever was running then."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for round in range(runs + 5):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            if round >= 5:  # warm-up rounds
                samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "runtime.json"))
    args = parser.parse_args()

    models = [ScriptedModel(f"m{i}", ["an answer of a few words"]) for i in range(AGENTS)]
    plain = plain_langgraph(models)
    dispatch_all = FunctionRouter(lambda s: Dispatch(calls=tuple(Call(agent_id=a.id, query=s.query) for a in s.agents)))
    with tempfile.TemporaryDirectory() as tmp:
        memory = orchestra_app(InMemoryStore(), models).workflow(dispatch_all)
        sqlite = orchestra_app(SqlStore(f"sqlite:///{tmp}/bench.db"), models).workflow(dispatch_all)
        samples = timed(
            {
                "plain": lambda: plain.invoke({"query": "what is the answer?", "answers": []}),
                "memory": lambda: memory.run("what is the answer?"),
                "sqlite": lambda: sqlite.run("what is the answer?"),
            },
            args.runs,
        )
        plain_p50 = statistics.median(samples["plain"])
        results: dict[str, Any] = {"agents_per_run": AGENTS, "runs": args.runs, "plain_langgraph_p50_ms": plain_p50}
        rows = [("plain LangGraph", plain_p50, 1.0)]
        for key, label in (("memory", "Orchestra, in-memory store"), ("sqlite", "Orchestra, SQLite store (WAL)")):
            p50 = statistics.median(samples[key])
            rows.append((label, p50, p50 / plain_p50))
            results[f"orchestra_{key}_p50_ms"] = p50
            results[f"orchestra_{key}_ratio"] = p50 / plain_p50
            results[f"orchestra_{key}_overhead_per_call_ms"] = (p50 - plain_p50) / AGENTS

        # exact replay of a 100-step run: 20 rounds of (decision + 2 agent calls each with one model call)
        store = SqlStore(f"sqlite:///{tmp}/replay.db")
        app = orchestra_app(store, models)

        def twenty_rounds(state: RouterState) -> Dispatch | Finish:
            if state.round >= 20:
                return Finish(answer="done")
            return Dispatch(calls=(Call(agent_id="agent-0", query=f"q{state.round}"), Call(agent_id="agent-1", query=f"q{state.round}")))

        from orchestra import Budget

        original = app.workflow(FunctionRouter(twenty_rounds, multi_round=True), budget=Budget(max_rounds=21, max_calls=100)).run("long run")
        steps = len(store.get_run(original.run_id).steps)
        calls_before = sum(len(m.calls) for m in models)
        replay_ms = timed({"replay": lambda: replay(app, original.run_id)}, min(args.runs, 20))["replay"]
        assert sum(len(m.calls) for m in models) == calls_before, "exact replay made model calls"
        results.update({"replay_steps": steps, "replay_p50_ms": statistics.median(replay_ms)})

    print(f"{'what':34} {'p50 ms/run':>11} {'x plain':>8}")
    for label, p50, ratio in rows:
        print(f"{label:34} {p50:11.2f} {ratio:8.2f}")
    for key in ("memory", "sqlite"):
        print(f"overhead per agent call ({key}): {results[f'orchestra_{key}_overhead_per_call_ms']:.2f} ms (target <= 2 ms)")
    print(f"exact replay of a {results['replay_steps']}-step run: {results['replay_p50_ms']:.1f} ms p50 (target < 100 ms)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
