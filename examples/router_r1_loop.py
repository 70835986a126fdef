"""Router-R1's loop on the embedded local model: the router model thinks, consults RouterBench models, reads their
answers and answers itself, round after round; the trace holds every turn, and an exact replay of a run
reproduces it without calling any model.

    .venv/bin/python examples/router_r1_loop.py [ROUTERBENCH_FOLDER] [STORE_URL]

Runs offline. The router model is SmolLM2-135M-Instruct, served by Orchestra's managed llama.cpp server
(`local_model_card()`), each turn decoded under a JSON schema so every turn is in the protocol. The models it
consults answer from RouterBench's recorded responses, at their recorded cost (`RecordedPool`, the
``routerbench-recorded`` pool of `orchestra bench r1`), read from ``../shared/data/models/routerbench`` beside the
repository (or ROUTERBENCH_FOLDER). Every run goes to a SQLite file in a temporary folder (or to STORE_URL).

The example shows how the loop works, not how well a 135M model routes: its thinking is often beside the point,
its sub-questions are fragments and its final answer is not always an option letter. Over 50 RouterBench test
queries (`orchestra bench r1`: every model in the pool, 4 rounds) this router model keeps the format on every query
and is right on 10% of them (README, "Router-R1"); the paper's behaviour (more consultations on harder queries)
needs a capable router model, which is a model card away (`RouterR1(router_model=...)`).
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from orchestra import Budget, ChatModel, ChatOptions, ChatResult, Message, ModelCard, Orchestra, RetryPolicy, RunTrace, replay
from orchestra.bench.r1 import mc_letter
from orchestra.client import model_for_card
from orchestra.local import LOCAL_MODEL_ID, local_model_card
from orchestra.routers.recorded_pool import RecordedPool, recorded_text
from orchestra.routers.router_r1 import RouterR1

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "models" / "routerbench"
QUESTIONS = ("arc-challenge.test.564", "winogrande.dev.576")
"""RouterBench test rows: a science question every pool model got right, and a Winogrande one Mixtral got wrong."""
POOL = ("mistralai/mixtral-8x7b-chat", "gpt-3.5-turbo-1106", "gpt-4-1106-preview")
"""The models the router may consult: cheap, middling and the dearest (a short list keeps each turn's prompt short)."""
MAX_ROUNDS = 2
"""Consultations before the router must answer."""


class CountedModels:
    """A model factory (``Orchestra(model_factory=...)``): each card's model as Orchestra builds it, with every call
    counted by card id, to see that an exact replay calls none."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __call__(self, card: ModelCard, retry: RetryPolicy) -> CountedModel:
        return CountedModel(card.id, model_for_card(card, retry), self.calls)


class CountedModel:
    """One model whose calls are counted (chat and achat only: runs made with ``run`` do not stream)."""

    def __init__(self, model_id: str, model: ChatModel, calls: Counter[str]) -> None:
        self.id = model_id
        self.model = model
        self.calls = calls

    def chat(self, messages: list[Message], options: ChatOptions | None = None) -> ChatResult:
        self.calls[self.id] += 1
        return self.model.chat(messages, options)

    async def achat(self, messages: list[Message], options: ChatOptions | None = None) -> ChatResult:
        self.calls[self.id] += 1
        return await self.model.achat(messages, options)


def read_loop(trace: RunTrace) -> dict[str, Any]:
    """The loop as the trace store holds it: per decision, the router's think and its consultations (model, query,
    the information returned, its recorded cost and RouterBench score), then the final answer."""
    rounds = []
    for decision_step in (step for step in trace.steps if step.kind == "decision"):
        decision = decision_step.response["decision"]
        consultations = [
            {
                "model": step.model_id, "query": step.request.get("query"), "information": step.response.get("answer"),
                "cost_usd": step.cost_usd, "recorded_score": (step.response.get("meta") or {}).get("recorded_score"),
            }
            for step in trace.children(decision_step.id) if step.kind == "call"
        ]
        router_turns = [step for step in trace.children(decision_step.id) if step.kind == "model_call"]
        rounds.append({
            "kind": decision["kind"], "think": decision["rationale"], "consultations": consultations,
            "answer": decision.get("answer"), "meta": decision.get("meta") or {},
            "router_turns": len(router_turns),
            "router_tokens": sum(step.prompt_tokens + step.completion_tokens for step in router_turns),
        })
    return {
        "rounds": rounds,
        "pool_cost_usd": sum(c["cost_usd"] or 0.0 for r in rounds for c in r["consultations"]),
        "run_cost_usd": trace.run.cost_usd,
        "answer": trace.run.answer,
        "status": trace.run.status,
        "tree": trace.tree(),
    }


def main(data: str | Path | None = None, store_url: str | None = None) -> dict[str, Any]:
    pool = RecordedPool.from_data(data or DEFAULT_DATA)
    models = CountedModels()
    with tempfile.TemporaryDirectory() as tmp:
        app = Orchestra(store=store_url or f"sqlite:///{Path(tmp) / 'example.db'}", model_factory=models)
        app.registry.ensure_model(local_model_card())  # the router model, "local-smollm2"
        for card in pool.model_cards():  # RouterBench's 11 models, their mean recorded cost in the description
            app.registry.ensure_model(card)
        # The router's pool agent, answered from the recordings rather than by calling the models
        app.registry.ensure_agent(RouterR1.pool_agent_card(), implementation=pool)

        router = RouterR1(LOCAL_MODEL_ID, max_rounds=MAX_ROUNDS, pool=list(POOL), max_think_chars=200,
                          max_query_chars=200, max_answer_chars=40)
        # one decision per consultation, and the one that answers
        workflow = app.workflow(router, budget=Budget(max_rounds=MAX_ROUNDS + 1))

        runs = []
        for row_id in QUESTIONS:
            row = pool.rows[row_id]
            pool.bind("", row_id)  # runs go one at a time: their sub-questions are about this row
            calls_before = sum(models.calls.values())
            try:
                result = workflow.run(row.question)
            finally:
                pool.unbind("")
            loop = read_loop(app.store.get_run(result.run_id))
            right = sorted({mc_letter(recorded_text(o["response"]) or "", {}) or "?" for o in row.outcomes.values() if o.get("score")})
            print(f"{row_id}: {row.question.splitlines()[0]}")
            for number, turn in enumerate(loop["rounds"], 1):
                print(f"  decision {number} ({turn['router_turns']} router turn(s), {turn['router_tokens']} tokens): think {turn['think']!r}")
                for consulted in turn["consultations"]:
                    print(f"    <search>{consulted['model']}:{consulted['query']}</search> -> <information>{consulted['information']!r}</information> "
                          f"${consulted['cost_usd'] or 0:.6f}, RouterBench score {consulted['recorded_score']}")
                if turn["kind"] == "finish":
                    print(f"    <answer>{turn['answer']}</answer>")
            router_tokens = sum(turn["router_tokens"] for turn in loop["rounds"])
            print(f"  answer {loop['answer']!r} (letters RouterBench scored right: {right}); pool cost ${loop['pool_cost_usd']:.6f}, "
                  f"{router_tokens} router tokens, {result.latency_ms / 1000:.1f} s")

            # Exact replay: the router runs again, every model call and consultation is served from the record
            calls_during_run = sum(models.calls.values()) - calls_before
            again = replay(app, result.run_id)
            replayed = read_loop(app.store.get_run(again.run_id))
            calls_during_replay = sum(models.calls.values()) - calls_before - calls_during_run
            print(f"  exact replay {again.run_id[:8]}: {again.status}, answer {again.answer!r}, same trace: "
                  f"{replayed['tree'] == loop['tree']}, model calls {calls_during_replay} (the run made {calls_during_run})")
            runs.append({
                "row_id": row_id, "status": result.status, "answer": result.answer, "right_letters": right,
                "decisions": [d.kind for d in result.decisions],
                "observations": [(o.model_id, o.query, o.answer, o.cost_usd) for o in result.observations],
                "finish_meta": result.decisions[-1].meta if result.decisions else {}, "loop": loop,
                "model_calls": calls_during_run, "replay": {
                    "status": again.status, "answer": again.answer, "same_tree": replayed["tree"] == loop["tree"],
                    "model_calls": calls_during_replay, "cost_usd": replayed["run_cost_usd"],
                },
            })
        return {"runs": runs, "pool": list(POOL), "max_rounds": MAX_ROUNDS}


if __name__ == "__main__":
    main(*sys.argv[1:3])
