"""Routers page: the benchmark reports ``orchestra bench`` writes, drawn. Model routers as cost-quality curves
(each router's points over the cost weight w, its non-decreasing convex hull, and the single models), agent
routers as tables per dataset. Reads whatever JSON reports are in the results folder; none is an error."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from orchestra.bench.compare import (
    agent_row,
    distinct_labels,
    file_variants,
    is_agent_report,
    is_model_report,
    model_row,
    number,
    router_label,
)

__all__ = ["agent_table", "checked_model_report", "find_reports", "model_frames", "model_table", "render", "results_dir"]

MODELS_HINT = (
    "orchestra bench models --data models/routerbench --router graph-router "
    "--json benchmarks/results/models_routerbench_graph-router.json"
)
AGENTS_HINT = (
    "orchestra bench agents --data agents/clinc150 --router set --regime supervised "
    "--json benchmarks/results/agents_clinc150_set.json"
)


def results_dir() -> Path:
    """``$ORCHESTRA_BENCH_RESULTS``; else ``benchmarks/results`` in the working directory; else the one of the
    checkout this UI was installed from."""
    configured = os.environ.get("ORCHESTRA_BENCH_RESULTS")
    if configured:
        return Path(configured).expanduser()
    here = Path.cwd() / "benchmarks" / "results"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _walk(value: Any, wanted: Callable[[dict[str, Any]], bool]) -> Iterator[dict[str, Any]]:
    # A file may hold one report, a list of them, or a summary that nests them: take every report inside.
    if isinstance(value, dict):
        if wanted(value):
            yield value
            return
        for item in value.values():
            yield from _walk(item, wanted)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, wanted)


def find_reports(folder: Path, wanted: Callable[[dict[str, Any]], bool]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every report of the kind ``wanted`` tells by its content in the JSON files of ``folder`` (each tagged with
    ``_file``), whatever the files are named (``agent_router_models_*.json`` holds model-routing reports too), and
    the problems met (unreadable files), in words. Files holding other results are passed over."""
    reports: list[dict[str, Any]] = []
    problems: list[str] = []
    for path in sorted(folder.glob("*.json")):
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{path.name}: not readable as JSON ({exc})")
            continue
        reports += [{**report, "_file": path.name} for report in _walk(content, wanted)]
    return reports, problems


def _figure(value: Any, spec: str) -> str:
    figure = number(value)
    return "?" if figure is None else format(figure, spec)


def checked_model_report(report: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """``report`` with its malformed points and single models left out, and what was left out, in words, one line
    for the file (one bad figure used to take the whole page down with a traceback); ``None`` when no point is
    left to draw."""
    left_out: list[str] = []

    def kept(items: list[Any], what: Callable[[dict[str, Any]], str]) -> list[dict[str, Any]]:
        good = []
        for item in items:
            if not isinstance(item, dict):
                left_out.append(f"{json.dumps(item)[:40]} (not an object)")
                continue
            bad = [f"{field} {item.get(field)!r}" for field in ("cost_usd", "quality") if number(item.get(field)) is None]
            if bad:
                left_out.append(f"{what(item)} ({', '.join(bad)}: not a number)")
                continue
            good.append({**item, "cost_usd": number(item["cost_usd"]), "quality": number(item["quality"])})
        return good

    points = kept(report["points"], lambda point: f"the point at w={point.get('w')}")
    singles = kept(report["single_models"], lambda single: f"single model {single.get('model')!r}")
    problems = [f"{report['_file']} ({router_label(report)}): left out " + "; ".join(left_out)] if left_out else []
    if not points:
        return None, [*problems, f"{report['_file']} ({router_label(report)}): no point left to draw"]
    return {**report, "points": points, "single_models": singles}, problems


def _labels(reports: list[dict[str, Any]]) -> list[str]:
    """One distinct label per model-routing report of a set: the router, what was held out, and the variant."""
    return distinct_labels([router_label(report) for report in reports], [report["_file"] for report in reports])


def model_frames(reports: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """For one set: the routers' points (router, w, cost, quality), their hulls (router, order, cost,
    quality) and the single models (model, cost, quality). The reports are those `checked_model_report` kept."""
    from orchestra.bench.models import nondecreasing_hull  # the same hull the AIQ figure is computed on

    points, hulls, singles = [], [], {}
    for report, router in zip(reports, _labels(reports), strict=True):
        costs = [float(p["cost_usd"]) for p in report["points"]]
        qualities = [float(p["quality"]) for p in report["points"]]
        for p in report["points"]:
            share = p.get("share") if isinstance(p.get("share"), dict) else {}
            top = max(share, key=lambda model: number(share[model]) or 0.0) if share else ""
            points.append({"router": router, "w": p.get("w"), "cost_usd": float(p["cost_usd"]),
                           "quality": float(p["quality"]), "most chosen": top})
        for order, (cost, quality) in enumerate(nondecreasing_hull(costs, qualities)):
            hulls.append({"router": router, "order": order, "cost_usd": float(cost), "quality": float(quality)})
        for single in report["single_models"]:
            singles[single["model"]] = {"model": single["model"], "cost_usd": float(single["cost_usd"]),
                                        "quality": float(single["quality"])}
    return pd.DataFrame(points), pd.DataFrame(hulls), pd.DataFrame(list(singles.values()))


def _cost_quality_chart(points: pd.DataFrame, hulls: pd.DataFrame, singles: pd.DataFrame, log_cost: bool) -> alt.LayerChart | alt.FacetChart:
    scale = alt.Scale(type="log") if log_cost else alt.Scale(zero=False)
    x = alt.X("cost_usd:Q", title="cost per query (USD)", scale=scale)
    y = alt.Y("quality:Q", title="quality", scale=alt.Scale(zero=False))
    layers = []
    if not hulls.empty:
        layers.append(alt.Chart(hulls).mark_line(strokeWidth=2).encode(
            x=x, y=y, color=alt.Color("router:N", title="router"), order="order:Q",
            tooltip=["router", alt.Tooltip("cost_usd:Q", format=".6f"), alt.Tooltip("quality:Q", format=".3f")],
        ))
    if not points.empty:
        layers.append(alt.Chart(points).mark_point(filled=True, size=60).encode(
            x=x, y=y, color=alt.Color("router:N", title="router"),
            tooltip=["router", "w", alt.Tooltip("cost_usd:Q", format=".6f"), alt.Tooltip("quality:Q", format=".3f"),
                     "most chosen"],
        ))
    if not singles.empty:
        layers.append(alt.Chart(singles).mark_square(size=70, color="black").encode(
            x=x, y=y, tooltip=["model", alt.Tooltip("cost_usd:Q", format=".6f"), alt.Tooltip("quality:Q", format=".3f")],
        ))
        layers.append(alt.Chart(singles).mark_text(align="left", dx=7, dy=-7, fontSize=10, color="#333").encode(
            x=x, y=y, text="model:N",
        ))
    return alt.layer(*layers).properties(height=420)


def model_table(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model-routing report: the figures `orchestra bench compare` prints (AIQ, GraphRouter's
    scenario rewards, the cheapest point reaching the best single model, the cost of recovering half and four
    fifths of the quality gap, latency), with the best single model and the report's file."""
    rows = []
    for report, label in zip(reports, _labels(reports), strict=True):
        row = model_row(report)
        best = report.get("best_single") or {}
        reach = row["cost_reaching_best_single"]
        recovery = {share: (value or {}).get("share_of_best_single_cost") for share, value in row["gap_recovery"].items()}
        rows.append({
            "router": label,
            "AIQ": row["aiq"],
            "AIQ single models": number(report.get("aiq_single_models")),
            "performance first": row["performance_first"],
            "balance": row["balance"],
            "cost first": row["cost_first"],
            "best single": f"{best.get('model', '?')} {_figure(best.get('quality'), '.3f')}" if best else "",
            "reaches it at": f"w={_figure(row['w_reaching_best_single'], 'g')} ${reach:.5f}" if reach is not None else "never",
            # RouteLLM's CPT on a cost axis (see orchestra.bench.compare), as a share of the best single model's cost
            **{f"CPT({float(share):.0%})": value for share, value in recovery.items()},
            "decision p50 ms": row["p50_ms"],
            "test queries": report.get("n_test"),
            "cost": report.get("cost", ""),
            "file": report["_file"],
        })
    return rows


def agent_table(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per agent-routing report (router × regime): the figures `orchestra bench compare` prints, set
    metrics in percent, and the report's file."""

    def pct(value: float | None) -> float | None:
        return None if value is None else round(100 * value, 2)

    rows = []
    figures = [agent_row(report) for report in reports]
    keys = [f"{row['router']}/{row['regime']}" for row in figures]
    for report, row, variant in zip(reports, figures, file_variants(keys, [r["_file"] for r in reports]), strict=True):
        rows.append({
            "router": row["router"],
            "regime": row["regime"],
            "variant": variant,
            "queries": row["n"],
            "set hit %": pct(row["set_hit"]),
            "top-1 %": pct(row["top1"]),
            "exact set %": pct(row["exact_set"]),
            "micro-F1 %": pct(row["micro_f1"]),
            "mean set size": row["mean_set_size"],
            "onboarded set hit %": pct(row["onboarded_set_hit"]),
            "OOS precision": row["oos_precision"],
            "OOS recall": row["oos_recall"],
            "p50 ms": row["p50_ms"],
            "fit s": row["fit_seconds"],
            "file": report["_file"],
        })
    return rows


def _models_section(folder: Path) -> None:
    st.header("Model routers: quality against cost")
    found, problems = find_reports(folder, is_model_report)
    reports = []
    for report in found:
        checked, left_out = checked_model_report(report)
        problems += left_out
        if checked is not None:
            reports.append(checked)
    for problem in problems:
        st.warning(problem)
    if not reports:
        st.info(f"No model-routing results in `{folder}`. Make one with:\n\n```\n{MODELS_HINT}\n```")
        return
    log_cost = st.toggle("Logarithmic cost axis", value=True, key="routers_log_cost")
    by_set: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        by_set.setdefault(str(report.get("set", "?")), []).append(report)
    for name, group in sorted(by_set.items()):
        st.subheader(f"{name}")
        estimated = any(r.get("cost") == "estimated" for r in group)
        if estimated:
            st.caption("Costs are estimated: " + next(r.get("cost_note", "") for r in group if r.get("cost") == "estimated"))
        points, hulls, singles = model_frames(group)
        if log_cost and ((not points.empty and (points["cost_usd"] <= 0).any()) or (not singles.empty and (singles["cost_usd"] <= 0).any())):
            st.caption("Some costs are 0: drawn on a linear axis.")
            chart = _cost_quality_chart(points, hulls, singles, False)
        else:
            chart = _cost_quality_chart(points, hulls, singles, log_cost)
        st.altair_chart(chart, width="stretch")
        st.caption("Dots: a router at each cost weight w; lines: its non-decreasing convex hull (the AIQ area); "
                   "black squares: each single model.")
        st.dataframe(model_table(group), hide_index=True, key=f"models-{name}")
        with st.expander("Points per cost weight"):
            st.dataframe(points, hide_index=True, key=f"points-{name}")


def _agents_section(folder: Path) -> None:
    st.header("Agent routers: which agents answer")
    reports, _ = find_reports(folder, is_agent_report)  # an unreadable file was reported by the models' section
    if not reports:
        st.info(f"No agent-routing results in `{folder}`. Make one with:\n\n```\n{AGENTS_HINT}\n```")
        return
    by_set: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        by_set.setdefault(Path(str(report.get("data", "?"))).name, []).append(report)
    for name, group in sorted(by_set.items()):
        st.subheader(name)
        st.dataframe(agent_table(group), hide_index=True, key=f"agents-{name}")


def render() -> None:
    """The Routers page."""
    st.title("Routers")
    default = str(results_dir())
    folder = Path(st.text_input("Results folder", value=default, key="routers_folder",
                                help="Where `orchestra bench … --json` wrote its reports.")).expanduser()
    if not folder.is_dir():
        st.warning(f"`{folder}` is not a folder. Benchmarks write their JSON reports with `--json`, e.g.\n\n"
                   f"```\n{MODELS_HINT}\n```")
        return
    _models_section(folder)
    _agents_section(folder)
