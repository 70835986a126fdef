"""Router-R1 rollouts for training: export trajectories as JSON lines with the ``<information>`` spans masked out
of the loss, and a GRPO training entry point on TRL.

Export (no GPU needed)::

    python -m orchestra.routers.r1_rollouts export PREDICTIONS.jsonl ROLLOUTS.jsonl --alpha 0.0

reads the per-query predictions that ``orchestra bench models --router router-r1 --predictions …`` (or
`orchestra.bench.r1.run_router_r1_bench`) writes and emits, per trajectory: the prompt, the completion text,
its tokens, the character and token spans of every ``<information>`` block (and of the environment's notes),
a per-token ``loss_mask`` (0 on those spans: the router did not write them, so they carry no gradient, as in
the paper) and the reward terms of `orchestra.routers.r1_rewards`.

Training (needs a CUDA GPU and ``pip install trl``; not run in CI)::

    python -m orchestra.routers.r1_rollouts train --data ../shared/data --qa nq --base-model Qwen/Qwen2.5-3B-Instruct \\
        --pool-cards pool.yaml --output runs/router-r1 --alpha 0.0 --max-rounds 4

runs TRL's ``GRPOTrainer`` with a ``rollout_func`` that plays the multi-round loop: the policy writes a turn,
searches are answered by the live pool (cards from ``--pool-cards``, reached through Orchestra's client), the
answers are appended as information blocks whose tokens get ``env_mask`` 0, and the reward is Router-R1's total
(format, exact match, cost). TRL's ``rollout_func`` interface is experimental and moves between releases; the
function here targets TRL ≥ 0.24 and is not exercised on this project's CPU-only machines.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from orchestra.routers.r1_rewards import CostNormalizer, FormatRules, score_trajectory, token_spans

__all__ = ["export_rollouts", "information_spans", "main", "rollout_record", "token_mask"]

Tokenizer = Callable[[str], tuple[list[Any], list[tuple[int, int]]]]
"""``text -> (tokens, character offsets)``; a Hugging Face fast tokenizer fits through `hf_tokenizer`."""


def approximate_tokenizer(text: str) -> tuple[list[Any], list[tuple[int, int]]]:
    """Words and punctuation marks as tokens (used when no real tokenizer is given)."""
    spans = token_spans(text)
    return [text[start:end] for start, end in spans], spans


def hf_tokenizer(name_or_path: str) -> Tokenizer:
    """A Hugging Face fast tokenizer as a `Tokenizer` (token ids with their character offsets)."""
    from transformers import AutoTokenizer  # optional: only for exports meant for a given model

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)

    def tokenize(text: str) -> tuple[list[Any], list[tuple[int, int]]]:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded["input_ids"]), [tuple(pair) for pair in encoded["offset_mapping"]]

    return tokenize


def information_spans(segments: Sequence[dict[str, str]]) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
    """The completion from the router's segments, with the character spans of its information blocks and of
    its notes (both written by the environment, not the router)."""
    completion, info, notes, position = [], [], [], 0
    for segment in segments:
        text = segment["text"]
        if segment["kind"] == "information":
            info.append((position, position + len(text)))
        elif segment["kind"] == "note":
            notes.append((position, position + len(text)))
        completion.append(text)
        position += len(text)
    return "".join(completion), info, notes


def token_mask(offsets: Sequence[tuple[int, int]], masked: Sequence[tuple[int, int]]) -> tuple[list[int], list[tuple[int, int]]]:
    """Per-token loss mask (0 for a token overlapping a masked character span) and the masked token spans
    ``[first, last + 1)`` per character span."""
    mask = [1] * len(offsets)
    token_spans_out = []
    for start, end in masked:
        inside = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
        for i in inside:
            mask[i] = 0
        token_spans_out.append((inside[0], inside[-1] + 1) if inside else (0, 0))
    return mask, token_spans_out


def rollout_record(
    prediction: dict[str, Any],
    pool_ids: Sequence[str],
    normalizer: CostNormalizer,
    *,
    alpha: float = 0.0,
    tokenizer: Tokenizer = approximate_tokenizer,
    rules: FormatRules | None = None,
) -> dict[str, Any] | None:
    """One rollout from one bench prediction (``segments``, ``prompt``, ``golds``, ``pool_cost_usd``), or
    ``None`` when the prediction kept no trajectory."""
    segments = prediction.get("segments")
    if not segments:
        return None
    completion, info, notes = information_spans(segments)
    tokens, offsets = tokenizer(completion)
    mask, info_tokens = token_mask(offsets, info)
    note_mask, note_tokens = token_mask(offsets, notes)
    loss_mask = [a & b for a, b in zip(mask, note_mask, strict=True)]
    golds = prediction.get("golds") or []
    reward = score_trajectory(
        completion, golds, pool_ids, cost_raw=float(prediction.get("pool_cost_usd") or 0.0),
        normalizer=normalizer, alpha=alpha, rules=rules,
    )
    return {
        "id": prediction.get("id") or prediction.get("question"),
        "prompt": prediction.get("prompt"),
        "completion": completion,
        "completion_tokens": tokens,
        "information_char_spans": info,
        "information_token_spans": info_tokens,
        "note_char_spans": notes,
        "note_token_spans": note_tokens,
        "loss_mask": loss_mask,
        "golds": golds,
        "reward": reward.model_dump(),
    }


def export_rollouts(
    predictions: Iterable[dict[str, Any]],
    out_path: str | Path,
    pool_ids: Sequence[str],
    *,
    alpha: float = 0.0,
    tokenizer: Tokenizer = approximate_tokenizer,
    window: int = 1000,
) -> int:
    """Write one rollout per prediction that kept its trajectory; returns how many were written. The cost
    reward's window runs over the predictions in order, as it would over a training stream."""
    normalizer = CostNormalizer(window=window)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with out.open("w", encoding="utf-8") as handle:
        for prediction in predictions:
            record = rollout_record(prediction, pool_ids, normalizer, alpha=alpha, tokenizer=tokenizer)
            if record is not None:
                handle.write(json.dumps(record) + "\n")
                written += 1
    return written


# -- training --------------------------------------------------------------------------------------------------


def _refuse(message: str) -> None:
    print(f"r1_rollouts train: {message}", file=sys.stderr)
    raise SystemExit(2)


def train(args: argparse.Namespace) -> None:  # pragma: no cover - needs a GPU and TRL
    """GRPO on the multi-round loop with TRL (see the module docstring)."""
    try:
        import torch
    except ImportError:
        _refuse("PyTorch is not installed")
    if not torch.cuda.is_available():
        _refuse("no CUDA GPU here; GRPO on a language model needs one (export rollouts instead, or run on a GPU host)")
    try:
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer
    except ImportError:
        _refuse("TRL is not installed: pip install trl datasets")

    from orchestra.cards import ModelCard, load_cards
    from orchestra.client import model_for_card
    from orchestra.model import ChatOptions, Message
    from orchestra.routers.r1_rewards import parse_search, tag_pairs, truncate_tokens
    from orchestra.routers.router_r1 import POOL_SYSTEM_PROMPT, RouterR1
    from orchestra.routing import RouterState

    cards = list(load_cards(args.pool_cards, ModelCard))
    pool = {card.id: model_for_card(card) for card in cards}
    pool_ids = list(pool)
    rows = [json.loads(line) for line in (Path(args.data) / "qa" / f"{args.qa}.jsonl").open()][: args.limit]
    router = RouterR1("policy", max_rounds=args.max_rounds)
    prompts = [
        router.prompt(RouterState(query=row["question"], agents=(), models=tuple(cards), registry_version=0), cards, False)
        for row in rows
    ]
    golds = {prompt: row["answers"] for prompt, row in zip(prompts, rows, strict=True)}
    normalizer = CostNormalizer()

    def consult(text: str) -> tuple[str, float]:
        blocks, cost = [], 0.0
        for tag, content in tag_pairs(text):
            if tag != "search":
                continue
            request = parse_search(content, pool_ids)
            if not request.ok or request.model is None:  # a request that is ok names its model
                blocks.append(request.detail)
                continue
            result = pool[request.model].chat(
                [Message(role="system", content=POOL_SYSTEM_PROMPT), Message(role="user", content=request.query)],
                ChatOptions(temperature=0.0, max_tokens=256),
            )
            cost += result.completion_tokens * (cards[pool_ids.index(request.model)].output_price_per_mtok or 0.0) / 1e6
            blocks.append(truncate_tokens(result.text, 600)[0])
        return "".join(f"\n\n<information>{b}</information>\n\n" for b in blocks), cost

    def rollout_func(batch_prompts: list[str], trainer: Any) -> dict[str, Any]:
        tokenizer = trainer.processing_class
        model = trainer.model
        out: dict[str, list[Any]] = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "env_mask": [], "cost": []}
        for prompt in batch_prompts:
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            completion_ids: list[int] = []
            env_mask: list[int] = []
            cost = 0.0
            for _ in range(args.max_rounds + 1):
                context = torch.tensor([prompt_ids + completion_ids], device=model.device)
                generated = model.generate(context, max_new_tokens=args.max_turn_tokens, do_sample=True, stop_strings=["</search>", "</answer>"], tokenizer=tokenizer)
                turn_ids = generated[0, context.shape[1]:].tolist()
                completion_ids += turn_ids
                env_mask += [1] * len(turn_ids)
                text = tokenizer.decode(turn_ids, skip_special_tokens=True)
                if "</answer>" in text or "</search>" not in text:
                    break
                information, spent = consult(text)
                cost += spent
                info_ids = tokenizer(information, add_special_tokens=False)["input_ids"]
                completion_ids += info_ids
                env_mask += [0] * len(info_ids)
            out["prompt_ids"].append(prompt_ids)
            out["completion_ids"].append(completion_ids)
            out["logprobs"].append([0.0] * len(completion_ids))
            out["env_mask"].append(env_mask)
            out["cost"].append(cost)
        return out

    def reward(prompts: list[str], completions: list[str], cost: list[float], **_: Any) -> list[float]:
        return [
            score_trajectory(c, golds[p], pool_ids, cost_raw=k, normalizer=normalizer, alpha=args.alpha).total
            for p, c, k in zip(prompts, completions, cost, strict=True)
        ]

    config = GRPOConfig(output_dir=args.output, num_generations=args.group_size, max_completion_length=args.max_completion_tokens, learning_rate=args.learning_rate, num_train_epochs=args.epochs, logging_steps=5)
    trainer = GRPOTrainer(model=args.base_model, reward_funcs=reward, args=config, train_dataset=Dataset.from_dict({"prompt": prompts}), rollout_func=rollout_func)
    trainer.train()
    trainer.save_model(args.output)


def main(argv: Sequence[str] | None = None) -> None:
    """``export`` or ``train`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m orchestra.routers.r1_rollouts", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="bench predictions -> rollouts JSONL with information spans masked")
    export.add_argument("predictions")
    export.add_argument("output")
    export.add_argument("--pool", help="Comma-separated pool model ids (default: every model seen consulted or listed)")
    export.add_argument("--alpha", type=float, default=0.0)
    export.add_argument("--tokenizer", help="Hugging Face tokenizer name or path (default: approximate word tokens)")
    fit = commands.add_parser("train", help="GRPO with TRL (needs a CUDA GPU)")
    fit.add_argument("--data", required=True)
    fit.add_argument("--qa", default="nq")
    fit.add_argument("--limit", type=int, default=2000)
    fit.add_argument("--base-model", required=True)
    fit.add_argument("--pool-cards", required=True)
    fit.add_argument("--output", required=True)
    fit.add_argument("--alpha", type=float, default=0.0)
    fit.add_argument("--max-rounds", type=int, default=4)
    fit.add_argument("--max-turn-tokens", type=int, default=512)
    fit.add_argument("--max-completion-tokens", type=int, default=4096)
    fit.add_argument("--group-size", type=int, default=5)
    fit.add_argument("--learning-rate", type=float, default=1e-6)
    fit.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args)
        return
    predictions = [json.loads(line) for line in Path(args.predictions).open(encoding="utf-8") if line.strip()]
    pool_ids = args.pool.split(",") if args.pool else sorted({m for p in predictions for m in p.get("consulted") or []})
    tokenizer = hf_tokenizer(args.tokenizer) if args.tokenizer else approximate_tokenizer
    written = export_rollouts(predictions, args.output, pool_ids, alpha=args.alpha, tokenizer=tokenizer)
    print(f"wrote {written} rollouts to {args.output}")


if __name__ == "__main__":
    main()
