"""Choose the model behind an LLM agent per query with GraphRouter, under a cost weight set per request; onboard a
model the router never saw by its card; read each decision back from the trace.

    .venv/bin/python examples/model_routing.py [SET_FOLDER] [STORE_URL]

What a RouteLLM or LLMRouter user knows as "the router picks the model" is, in Orchestra, a model router (here
GraphRouter) serving an LLM agent: at each query it predicts every registered model's quality and cost, picks the
best ``(1 - w) * quality - w * normalised cost``, and the agent is called on that model through the registry. w
is the request's `RoutingPolicy(cost_weight=...)`; the decision, its predicted quality and cost and every other
candidate's score go to the trace store with the run.

SET_FOLDER is a model-routing set in the canonical format (default: ``../shared/data/models/routerbench`` beside
the repository). The router is trained on its train split without Yi-34B, which is onboarded later by its card.
The models are RouterBench's *recorded* ones (`RecordedPool`): a model the router chooses is really called through
the registry, and answers with what it answered in RouterBench, at the cost RouterBench measured. The questions
are test questions, so quality is the recorded score of the model chosen for each. From its card alone the router
predicts Yi-34B poorly (it is right on most questions); `GraphRouter.add_model(card, observations=...)` with its
outcomes on a few dozen queries calibrates it (the README's model-routing section has the figures).

Built for speed (about 40 seconds on 2 cores, most of it importing torch): the router learns from 600 of the
2,205 training queries (60 of them for validation), for 60 epochs of 4 masks (the bench: all of them, up to 400
epochs of 8), on hashed bags of words (`HashingEmbedder`) instead of the all-MiniLM-L6-v2 embeddings the bench
uses, which take minutes to compute here; and 30 questions make noisy means. So its figures are this example's,
not GraphRouter's: on all 945 test queries this quick router's AIQ is 0.832 (among its ten models), where
``.venv/bin/orchestra bench models --data ../shared/data/models/routerbench --router graph-router`` gives 0.856
(``--holdout-models zero-one-ai/Yi-34B-Chat`` to hold a model out there too), and ``EMBEDDER = None`` below
trains on MiniLM as the bench does. Every run goes to a SQLite file in a temporary folder (or to STORE_URL).
"""

from __future__ import annotations

import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

from orchestra import AgentCard, Orchestra, RoutingPolicy
from orchestra.bench.models import load_model_set, split_train_val
from orchestra.routers.graphrouter import GraphRouter
from orchestra.routers.model_routers import HashingEmbedder
from orchestra.routers.recorded_pool import RecordedPool

DEFAULT_SET = Path(__file__).resolve().parents[2] / "shared" / "data" / "models" / "routerbench"
HELD_OUT = "zero-one-ai/Yi-34B-Chat"
"""Left out of training, onboarded at runtime from its card alone (the router is not retrained)."""
STRONG = "gpt-4-1106-preview"
"""The model the agent's card names: what it answers with when nothing routes it (the baseline), and the model
whose share RouteLLM's threshold calibration targets."""
TRAIN_QUERIES = 600
"""Training queries drawn (a tenth of them for validation): the bench trains on all 2,205."""
QUESTIONS = 30
"""Test questions asked at each cost weight."""
EMBEDDER = HashingEmbedder()
"""What the router embeds queries and cards with; ``None``: the project's MiniLM, as ``orchestra bench models``."""


def main(data: str | Path | None = None, store_url: str | None = None) -> dict[str, object]:
    """Train, route the test questions at each cost weight, onboard the held-out model and read a decision back;
    returns what it measured (per setting: models chosen, quality, cost per run) and what the trace holds."""
    # 1. Train as `orchestra bench models --holdout-models` does: the same loader, the held-out model removed from
    #    the cards and every outcome, a seeded validation slice for early stopping, each card's mean cost per query.
    model_set = load_model_set(data or DEFAULT_SET)
    trained_on = model_set.without_models([HELD_OUT])
    sample = random.Random(0).sample(list(trained_on.train), min(TRAIN_QUERIES, len(trained_on.train)))
    train, val = split_train_val(sample, 0.1, seed=0)
    router = GraphRouter(agent_id="answerer", epochs=60, masks_per_epoch=4, embedder=EMBEDDER)
    router.fit(train, list(trained_on.cards), val=val, card_costs=model_set.card_costs, seed=0)
    # RouteLLM's threshold calibration: the smallest w that sends at most half of the validation queries to GPT-4
    calibrated = round(router.calibrate_cost_weight(val, list(trained_on.cards), share=(STRONG, 0.5)), 4)
    print(f"GraphRouter trained on {len(train)} queries for {len(trained_on.cards)} models "
          f"(validation loss {router.validation_loss[0.0]:.3f}); w for GPT-4 on half the queries: {calibrated}")

    with tempfile.TemporaryDirectory() as tmp:
        # 2. The registry: the set's model cards, each served by its RouterBench recordings. A model factory builds
        #    the chat model behind a card; it is asked again for a card onboarded later, so Yi-34B answers too.
        pool = RecordedPool.from_data(model_set.root, splits=("test",))
        app = Orchestra(store=store_url or f"sqlite:///{Path(tmp) / 'model_routing.db'}",
                        model_factory=lambda card, retry: pool.chat_model(card.id))
        app.registry.add_models(trained_on.cards)
        app.registry.add_agent(AgentCard(id="answerer", description="Answers the user's question.", model=STRONG))

        # 3. The agent's model chosen per query, at the cost weight of each request; GPT-4 alone (the agent's own
        #    model, dispatched by the fixed router) on the same questions as the baseline.
        routed = app.workflow(router)
        alone = app.workflow("fixed", agent_ids=["answerer"])
        questions = random.Random(1).sample(list(model_set.test), QUESTIONS)
        middle = f"w = {calibrated:g}"
        settings = [("w = 0", routed, 0.0), (middle, routed, calibrated), ("w = 0.8", routed, 0.8), ("GPT-4 alone", alone, 0.0)]
        runs = {label: [(row, workflow.run(row.query, routing=RoutingPolicy(cost_weight=w)).run_id) for row in questions]
                for label, workflow, w in settings}

        # What each run did, read from the store: the model its call went to, what it answered, what it cost.
        print(f"\n{QUESTIONS} RouterBench test questions per setting, read back from the stored runs:")
        print(f"  {'':13} {'quality':>7} {'$/run':>9}  models chosen")
        by_setting: dict[str, dict[str, object]] = {}
        answered = 0
        for label, done in runs.items():
            chosen, scores, costs, recorded_costs, from_record = [], [], [], [], 0
            for row, run_id in done:
                trace = app.store.get_run(run_id)
                call = next(step for step in trace.steps if step.kind == "call")
                chosen.append(call.model_id)
                scores.append(row.outcomes[call.model_id].score)
                costs.append(trace.run.cost_usd)
                recorded_costs.append(row.outcomes[call.model_id].cost)
                from_record += trace.run.answer == pool.rows[row.id].answer_of(call.model_id)
            answered += from_record
            counts = Counter(chosen)
            by_setting[label] = {
                "choices": dict(counts), "quality": sum(scores) / len(scores), "mean_cost_usd": sum(costs) / len(costs),
                "recorded_cost_usd": sum(recorded_costs) / len(recorded_costs), "answered_from_record": from_record,
            }
            shares = ", ".join(f"{model.split('/')[-1]} {n}" for model, n in counts.most_common())
            print(f"  {label:13} {by_setting[label]['quality']:7.3f} {by_setting[label]['mean_cost_usd']:9.6f}  {shares}")
        print(f"  each run's answer is its model's RouterBench response in {answered} of {len(settings) * QUESTIONS} runs")

        # 4. Onboard the held-out model by its card: the router (not retrained) gives it a node from its description
        #    and prices it at the card's measured mean cost per query, from the next decision on.
        question = questions[0]
        before_ids = [score.id for score in app.store.get_run(runs[middle][0][1]).decisions()[0].scores]
        app.registry.add_model(next(card for card in model_set.cards if card.id == HELD_OUT))
        after = routed.run(question.query, routing=RoutingPolicy(cost_weight=calibrated))
        onboarded = next(score for score in after.decisions[0].scores if score.id == HELD_OUT)
        print(f"\nonboarded {HELD_OUT} by its card: among {len(after.decisions[0].scores)} candidates (was "
              f"{len(before_ids)}), predicted quality {onboarded.detail['quality']:.3f} at ${onboarded.detail['cost_usd']:.6f}")

        # 5. That run as the store keeps it: the decision (typed, as the router made it), and the call it made.
        trace = app.store.get_run(after.run_id)
        (decision,) = trace.decisions()
        call = next(step for step in trace.steps if step.kind == "call")
        print(f"\nrun {trace.run.id[:8]} at w = {trace.run.meta['policy']['cost_weight']:g}: {decision.rationale}")
        print(f"  chosen {decision.calls[0].model_id}: predicted quality {decision.meta['predicted_quality']:.3f}, "
              f"cost ${decision.meta['predicted_cost_usd']:.6f}; called {call.model_id}, which cost ${call.cost_usd:.6f}")
        for candidate in decision.scores:
            print(f"  {candidate.id:34} utility {candidate.score:+.3f}  quality {candidate.detail['quality']:.3f}  "
                  f"${candidate.detail['cost_usd']:.6f}")
        return {
            "trained_models": len(trained_on.cards), "trained_queries": len(train), "calibrated_w": calibrated,
            "settings": by_setting, "questions": QUESTIONS,
            "before_candidates": before_ids, "after_candidates": [score.id for score in after.decisions[0].scores],
            "onboarded": {"quality": onboarded.detail["quality"], "cost_usd": onboarded.detail["cost_usd"]},
            "onboarded_card_cost": model_set.card_costs[HELD_OUT],
            "trace": {"chosen": decision.calls[0].model_id, "called": call.model_id, "meta": decision.meta,
                      "scores": [score.model_dump() for score in decision.scores], "status": trace.run.status},
        }


if __name__ == "__main__":
    main(*sys.argv[1:3])
