"""Train AgentRouter on RouterBench, let the three models it finds likeliest to be right answer each multiple-choice
question in parallel and fuse their answers by the router's weights, then onboard a model it was never trained on.

    .venv/bin/python examples/fused_answers.py [ROUTERBENCH_FOLDER] [STORE_URL]

ROUTERBENCH_FOLDER defaults to ``../shared/data/models/routerbench`` beside the repository. Runs offline: the
models "answer" with RouterBench's recorded responses at their recorded cost (`RecordedPool`, the pool behind
``orchestra bench r1``), served to the runtime as chat models, so every answer, cost and vote is a real run's in
the trace (a SQLite file in a temporary folder, or STORE_URL).

Trained with `AgentRouter.fit_models`, where models act as agents: the router's candidates are the registry's
model cards, and each of the top-k it dispatches is one call of an LLM agent backed by that model, weighted by
p(model | query, graph). `Fuse` votes by option letter on multiple-choice questions, each answer weighing its p.
A model onboarded later by its card (`registry.add_model`) is a candidate at the router's next decision, read by
its description (it has no learned vector until the router is retrained).

To stay a test, the router learns from 200 multiple-choice training queries (ARC-Challenge and Winogrande, 180 to
train and 20 to keep its best epoch; a small GNN, 5 epochs) over 10 of the 11 models, and answers 60 test questions
(30 of each task): about 40 seconds on 2 cores (over a minute while other jobs share them), a third of it loading
the embedder and embedding the training queries. As on the whole test set, the router's top-1 is mostly GPT-4, and a
vote of three can let two weaker models that agree outvote it (with p this flat the vote is a majority: the weights
choose only when the three answers all differ); 60 questions are too few to rank the two (one answer is 1.7 points).
The figures of the whole test set, with the router trained on the whole train split, are ``orchestra bench fusion
--data ../shared/data/models/routerbench --router agent-router --k 1,2,3`` (README: 0.9094 / 0.9094 / 0.8996 at k =
1 / 2 / 3, GPT-4 alone 0.909).
"""

from __future__ import annotations

import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from orchestra import AgentCard, Dispatch, Fuse, Orchestra
from orchestra.aggregate import extract_option, option_letters
from orchestra.bench.fusion import fuse_options, fuse_rows, load_fusion_set
from orchestra.bench.models import split_train_val
from orchestra.routers.agent_router import AgentRouter
from orchestra.routers.recorded_pool import RecordedPool

DEFAULT_SET = Path(__file__).resolve().parents[2] / "shared" / "data" / "models" / "routerbench"
TASKS = ("arc-challenge", "winogrande")
"""The multiple-choice tasks of RouterBench (its third, MBPP, asks for programs, which a vote cannot fuse)."""
TRAIN_QUERIES = 200
"""Training queries drawn from the train split, a tenth of them held out for early stopping."""
QUESTIONS_PER_TASK = 30
GPT4 = "gpt-4-1106-preview"
HELD_OUT = "claude-v2"
"""The model left out of training and onboarded by its card after the questions."""
ANSWERER = "answerer"
"""The LLM agent the router backs with the models it picks."""


def sample(rows: list, tasks: tuple[str, ...], per_task: int | None = None, total: int | None = None, seed: int = 0) -> list:
    """A seeded sample of ``rows`` of ``tasks``: ``per_task`` of each, or ``total`` of them all."""
    rng = random.Random(seed)
    if per_task is not None:
        return [row for task in tasks for row in rng.sample([r for r in rows if r.task == task], per_task)]
    return rng.sample([r for r in rows if r.task in tasks], total)


def main(data: str | Path | None = None, store_url: str | None = None) -> dict[str, object]:
    folder = Path(data or DEFAULT_SET)
    cards, train, test, facts = load_fusion_set(folder)  # what `orchestra bench fusion` reads
    trained_cards = [card for card in cards if card.id != HELD_OUT]
    model_ids = [card.id for card in trained_cards]

    # use_task=False: the bench tells the router each query's task (a TASK entity in its graph), a live run does
    # not, so a router trained with it would meet graphs at serving time unlike every one it learnt from
    router = AgentRouter(k=3, agent_id=ANSWERER, hidden=32, epochs=5, use_task=False)
    fit_rows, val_rows = split_train_val(sample(list(train), TASKS, total=TRAIN_QUERIES), 0.1, seed=0)
    router.fit_models(fit_rows, trained_cards, val=val_rows, card_costs=facts["card_costs"])
    log = router.training_log
    print(f"trained on {log['rows']} queries ({log['val_rows']} for validation) over {len(model_ids)} models: "
          f"{log['epochs']} epochs, {log['seconds']:.0f} s")

    questions = sample(list(test), TASKS, per_task=QUESTIONS_PER_TASK, seed=1)
    pool = RecordedPool.from_data(folder, splits=("test",))
    with tempfile.TemporaryDirectory() as tmp:
        # every model card is served by its recorded answers: the pool's per-model ChatModel, as `bench r1` wires it
        app = Orchestra(store=store_url or f"sqlite:///{Path(tmp) / 'fused.db'}",
                        model_factory=lambda card, retry: pool.chat_model(card.id))
        app.registry.add_models(trained_cards)
        app.registry.add_agent(AgentCard(id=ANSWERER, description="Answers questions with the model it is given.",
                                         backend="model"))
        workflow = app.workflow(router, aggregator=Fuse(None))  # no refining model: votes only

        runs = []
        for row in questions:
            result = workflow.run(row.query)
            decision = result.decisions[0]
            assert isinstance(decision, Dispatch), f"{row.id}: the router refused ({decision.rationale})"
            p = {score.id: score.score for score in decision.scores}
            weights = np.array([[p[model_id] for model_id in model_ids]])
            letters = option_letters(row.query)
            # the observations best first, so that a tie goes to the likelier model as in the vote itself
            observed = sorted(result.observations, key=lambda obs: -obs.weight)
            options = [extract_option(obs.answer, letters) for obs in observed]
            runs.append({
                "row": row, "result": result, "p": p, "observed": observed, "options": options,
                "fused": extract_option(result.answer, letters),
                "vote": fuse_options(options, [obs.weight for obs in observed])[0],
                # scored as `bench fusion` scores it: the option against those of responses scored correct
                "bench": fuse_rows([row], model_ids, weights, 3)[0][0],
                "top1": fuse_rows([row], model_ids, weights, 1)[0][0],
            })

        n = len(runs)
        fused_accuracy = sum(run["fused"] in run["bench"]["gold"] for run in runs) / n
        top1_accuracy = sum(run["top1"]["correct"] for run in runs) / n
        single = {model_id: fuse_rows(questions, model_ids, np.eye(len(model_ids))[[j] * n], 1)[1]["fused_accuracy_vote"]
                  for j, model_id in enumerate(model_ids)}
        # routing that did nothing: three models drawn at random per question, voting with equal weights
        drawn = np.zeros((n, len(model_ids)))
        rng = np.random.default_rng(0)
        for i in range(n):
            drawn[i, rng.choice(len(model_ids), 3, replace=False)] = 1 / 3
        random_three = fuse_rows(questions, model_ids, drawn, 3)[1]
        top1_models = Counter(run["observed"][0].model_id for run in runs)
        overridden = [run for run in runs if run["fused"] != run["options"][0]]
        # three answers, three options: no majority, so the weights alone choose; elsewhere two that agree outweigh
        # the third unless its p exceeds theirs together, which a p as flat as this router's does not give
        split = [run for run in runs if len({o for o in run["options"] if o is not None}) == 3]
        # one of the three dispatched models taken at random: what the vote adds over its own voters
        voters_accuracy = float(np.mean([np.mean([o in run["bench"]["gold"] for o in run["options"]]) for run in runs]))
        mean_single = float(np.mean(list(single.values())))
        print(f"{n} questions ({', '.join(TASKS)}), fused accuracy {fused_accuracy:.3f}; the router's top-1 model alone "
              f"{top1_accuracy:.3f}; GPT-4 alone {single[GPT4]:.3f}; a single model on average {mean_single:.3f}; "
              f"three random models voting {random_three['fused_accuracy_vote']:.3f}; one of the three dispatched at random "
              f"{voters_accuracy:.3f}")
        print("the router's top-1: " + ", ".join(f"{model_id} on {count}" for model_id, count in top1_models.most_common()))
        print(f"the vote overrode the top-1 model on {len(overridden)} questions, rightly on "
              f"{sum(run['fused'] in run['bench']['gold'] for run in overridden)}; the three answers split three ways on "
              f"{len(split)}, where the weights chose")
        print(f"mean cost per question ${np.mean([run['result'].cost_usd for run in runs]):.6f} (GPT-4 alone "
              f"${np.mean([row.outcomes[GPT4].cost for row in questions]):.6f})")

        shown = overridden[0] if overridden else runs[0]
        steps = app.store.get_run(shown["result"].run_id).steps
        fused_step = next(step for step in steps if step.kind == "aggregate")
        question = shown["row"].query.split("\n\n")[-1].splitlines()[0]
        print(f"\nquestion {shown['row'].id}: {question[:100]}")
        print("  p(model | query, graph): " + ", ".join(f"{model_id} {share:.3f}" for model_id, share in shown["p"].items()))
        for obs, option in zip(shown["observed"], shown["options"], strict=True):
            print(f"  {obs.model_id:<32} answered {option}  weight {obs.weight:.3f}")
        print(f"  fused ({fused_step.response['meta']['fusion']}): {shown['fused']}, votes "
              f"{ {k: round(v, 3) for k, v in fused_step.response['meta']['votes'].items()} }; "
              f"correct: {shown['bench']['gold']}")

        # Onboard the held-out model by its card: the same workflow and router (not retrained) route to it.
        before = len(shown["p"])
        app.registry.add_model(next(card for card in cards if card.id == HELD_OUT))
        after = workflow.run(shown["row"].query)
        decision = after.decisions[0]
        onboarded = next(score for score in decision.scores if score.id == HELD_OUT)
        rank = [score.id for score in decision.scores].index(HELD_OUT) + 1
        print(f"\nonboarded {HELD_OUT}: candidates {before} -> {len(decision.scores)}, its p {onboarded.score:.3f} "
              f"(rank {rank}, seen in training: {onboarded.detail['seen_in_training']}); the router still has "
              f"{log['epochs']} epochs of training behind it, on {len(router.known_ids)} models")
        return {
            "questions": n, "tasks": sorted({run["row"].task for run in runs}),
            "fused_accuracy": fused_accuracy, "top1_accuracy": top1_accuracy, "gpt4_accuracy": single[GPT4],
            "mean_single_accuracy": mean_single, "random_three_accuracy": random_three["fused_accuracy_vote"],
            "voters_accuracy": voters_accuracy, "top1_models": dict(top1_models),
            "overridden": len(overridden), "split_three_ways": len(split),
            "dispatched": sorted({len({obs.model_id for obs in run["observed"]}) for run in runs}),
            "weights_sum_to_one": all(abs(sum(obs.weight for obs in run["observed"]) - 1.0) < 1e-6 for run in runs),
            "fused_is_weighted_vote": all(run["fused"] == run["vote"] for run in runs),
            "fused_as_bench": all(run["fused"] == run["bench"]["fused"] for run in runs),
            "cost_as_recorded": all(
                abs(run["result"].cost_usd - sum(run["row"].outcomes[obs.model_id].cost for obs in run["observed"])) < 1e-9
                for run in runs
            ),
            "fusion": fused_step.response["meta"]["fusion"],
            "candidates_before": before, "candidates_after": len(decision.scores),
            "onboarded_p": onboarded.score, "onboarded_seen": onboarded.detail["seen_in_training"],
            "onboarded_meta": decision.meta["onboarded"], "known_after": list(router.known_ids),
            "onboarded_status": after.status,
        }


if __name__ == "__main__":
    main(*sys.argv[1:3])
