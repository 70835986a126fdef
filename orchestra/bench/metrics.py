"""Metrics of agent routing: each query has a gold set of agents (``[]`` = out of scope) and a predicted set.

Shared by ``orchestra bench agents`` and anyone rescoring a predictions file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["latency_summary", "oos_metrics", "set_metrics"]


def set_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float | int]:
    """Set-routing metrics over in-scope queries (gold set not empty); predictions are ordered, best first.

    - ``set_hit``: every gold agent is inside the predicted set (TCAR's accuracy for single-agent queries);
    - ``top1``: the first predicted agent is a gold agent;
    - ``exact_set``: predicted set equals gold set;
    - ``micro_f1``: F1 over (query, agent) pairs;
    - ``mean_set_size``: mean size of the predicted sets (an out-of-scope answer counts as 0);
    - ``rejected``: share of in-scope queries wrongly answered "out of scope".
    """
    if len(gold) != len(predicted):
        raise ValueError(f"gold has {len(gold)} rows but predicted has {len(predicted)}")
    pairs = [(set(g), list(p)) for g, p in zip(gold, predicted, strict=True) if g]
    n = len(pairs)
    if n == 0:
        return {"n": 0}
    hit = top1 = exact = rejected = 0
    true_pos = pred_total = gold_total = 0
    sizes = 0
    for g, p in pairs:
        ps = set(p)
        hit += g <= ps
        top1 += bool(p) and p[0] in g
        exact += g == ps
        rejected += not p
        true_pos += len(g & ps)
        pred_total += len(ps)
        gold_total += len(g)
        sizes += len(ps)
    precision = true_pos / pred_total if pred_total else 0.0
    recall = true_pos / gold_total if gold_total else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": n,
        "set_hit": hit / n,
        "top1": top1 / n,
        "exact_set": exact / n,
        "micro_f1": f1,
        "mean_set_size": sizes / n,
        "rejected": rejected / n,
    }


def oos_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float | int]:
    """Out-of-scope detection, with "out of scope" (empty set) as the positive class: precision and recall."""
    if len(gold) != len(predicted):
        raise ValueError(f"gold has {len(gold)} rows but predicted has {len(predicted)}")
    gold_oos = np.array([not g for g in gold], dtype=bool)
    pred_oos = np.array([not p for p in predicted], dtype=bool)
    true_pos = int((gold_oos & pred_oos).sum())
    precision = true_pos / int(pred_oos.sum()) if pred_oos.any() else 0.0
    recall = true_pos / int(gold_oos.sum()) if gold_oos.any() else 0.0
    return {"n_oos": int(gold_oos.sum()), "oos_precision": precision, "oos_recall": recall}


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50, p95 and mean of decision latencies in milliseconds."""
    if not latencies_ms:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "mean_ms": 0.0}
    values = np.asarray(latencies_ms, dtype=float)
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p95_ms": float(np.percentile(values, 95)),
        "mean_ms": float(values.mean()),
    }
