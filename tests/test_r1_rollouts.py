"""Rollout export: the loss mask covers exactly the information blocks (and environment notes), rewards come
with each rollout, and training refuses clearly where it cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestra.cards import ModelCard
from orchestra.routers.r1_rewards import CostNormalizer
from orchestra.routers.r1_rollouts import export_rollouts, information_spans, main, rollout_record, token_mask
from orchestra.routers.router_r1 import R1_POOL_AGENT_ID, RouterR1, pool_agent_card
from orchestra.routing import Observation, RouterState
from orchestra.testing import ScriptedModel

POOL = ["small-lm", "big-lm"]
ROUTER = ModelCard(id="router-lm", description="the router model")
POOL_CARDS = [ModelCard(id=m, description=f"pool model {m}") for m in POOL]


def _trajectory_meta() -> dict:
    """A real two-decision trajectory of the router (search, then answer), as its Finish meta."""
    model = ScriptedModel("router-lm", [
        "<think>Ask the small model.</think>\n<search>small-lm:Who wrote Hamlet?</search>",
        "<think>It said Shakespeare.</think>\n<answer>William Shakespeare</answer>",
    ])

    class Access:
        def chat(self, model_id, messages, options=None, *, purpose=""):  # noqa: ANN001, ANN202
            return model.chat(messages, options)

        async def achat(self, model_id, messages, options=None, *, purpose=""):  # noqa: ANN001, ANN202
            return model.chat(messages, options)

    router = RouterR1("router-lm")
    base = dict(query="Who wrote Hamlet?", agents=(pool_agent_card(),), models=(ROUTER, *POOL_CARDS), registry_version=1, model_access=Access(), run_id="r")
    router.decide(RouterState(**base))
    obs = (Observation(agent_id=R1_POOL_AGENT_ID, query="Who wrote Hamlet?", answer="Shakespeare, around 1600.", round=0, model_id="small-lm"),)
    finish = router.decide(RouterState(**base, observations=obs, round=1))
    return finish.meta


def test_spans_mask_exactly_the_information_blocks() -> None:
    meta = _trajectory_meta()
    prediction = {"id": "q1", "segments": meta["segments"], "prompt": meta["prompt"], "golds": ["William Shakespeare"], "pool_cost_usd": 0.001}
    record = rollout_record(prediction, POOL, CostNormalizer())
    assert record is not None
    completion = record["completion"]
    assert completion == meta["transcript"]
    (span,) = record["information_char_spans"]
    assert completion[span[0]:span[1]] == "\n\n<information>Shakespeare, around 1600.</information>\n\n"
    tokens, mask = record["completion_tokens"], record["loss_mask"]
    masked = [tok for tok, keep in zip(tokens, mask, strict=True) if not keep]
    assert "".join(masked) == "".join("<information>Shakespeare, around 1600.</information>".split())
    start, end = record["information_token_spans"][0]
    assert all(mask[i] == 0 for i in range(start, end)) and sum(mask) == len(mask) - (end - start)
    # the router's own text stays in the loss
    kept = "".join(tok for tok, keep in zip(tokens, mask, strict=True) if keep)
    assert kept == "<think>Askthesmallmodel.</think><search>small-lm:WhowroteHamlet?</search><think>ItsaidShakespeare.</think><answer>WilliamShakespeare</answer>"
    assert record["reward"]["em"] == 1.0 and record["reward"]["format"] == 0.0 and record["reward"]["total"] == 1.0


def test_notes_are_masked_too() -> None:
    segments = [
        {"kind": "turn", "text": "<think>hm</think>"},
        {"kind": "note", "text": "\n\nYour last turn was not in the required format.\n\n"},
        {"kind": "turn", "text": "<think>ok</think><answer>x</answer>"},
    ]
    completion, info, notes = information_spans(segments)
    assert info == [] and completion[notes[0][0]:notes[0][1]] == segments[1]["text"]
    record = rollout_record({"segments": segments, "golds": ["x"]}, POOL, CostNormalizer())
    assert record is not None
    kept = [t for t, keep in zip(record["completion_tokens"], record["loss_mask"], strict=True) if keep]
    assert "format" not in kept and "ok" in kept


def test_token_mask_with_real_offsets() -> None:
    # offsets as a BPE tokenizer would give: a token straddling the span start is masked
    mask, spans = token_mask([(0, 3), (3, 8), (8, 12), (12, 15)], [(5, 12)])
    assert mask == [1, 0, 0, 1] and spans == [(1, 3)]


def test_export_cli_writes_jsonl(tmp_path: Path) -> None:
    meta = _trajectory_meta()
    predictions = tmp_path / "pred.jsonl"
    rows = [
        {"id": "q1", "segments": meta["segments"], "prompt": meta["prompt"], "golds": ["William Shakespeare"], "pool_cost_usd": 0.001, "consulted": ["small-lm"]},
        {"id": "q2", "segments": None, "error": {"type": "DecisionError"}},
    ]
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "rollouts.jsonl"
    main(["export", str(predictions), str(out), "--pool", "small-lm,big-lm", "--alpha", "0.3"])
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["id"] == "q1" and record["reward"]["alpha"] == 0.3
    # one trajectory in the window: cost reward 0.5 -> 0.7 * 1 + 0.3 * 0.5
    assert record["reward"]["total"] == pytest.approx(0.85)
    assert export_rollouts([], tmp_path / "empty.jsonl", POOL) == 0


def test_train_refuses_without_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit) as caught:
        main(["train", "--data", ".", "--base-model", "m", "--pool-cards", "p.yaml", "--output", "o"])
    assert caught.value.code == 2
