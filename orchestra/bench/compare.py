"""Routers side by side: one table from the reports of ``orchestra bench models`` or ``orchestra bench agents``.

The reports are the JSON the benches write (``--json``), one router each, or the file a bench run over several
routers writes (``--router a,b,c``: ``{"comparison": ..., "reports": [...]}``). Reports are compared only on the
same test queries: the same set and the same number of test queries (and of out-of-scope ones), so a ``--limit``
run is never ranked beside a full one.

Model routers are compared on AIQ, GraphRouter's three scenario rewards, the cost at which each first reaches
the best single model's quality, and the cost at which it recovers half and four fifths of the quality gap
between the cheapest single model and the best one. That is RouteLLM's CPT(50%) and CPT(80%), which count the
share of calls sent to the strong model; with more than two models, the share of the best single model's cost
is the same measure and does not depend on which models the router mixes. Agent routers are compared on set
hit, top-1, exact set, micro-F1, mean set size, p50 latency and out-of-scope precision and recall.

The best value of each column is marked among the routers, leaving out upper bounds (the oracle reads the test
outcomes, so it is not a router to beat)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestra.bench import check_output, router_names, write_report
from orchestra.errors import ConfigurationError, DataError

__all__ = [
    "GAP_SHARES",
    "compare_command",
    "compare_reports",
    "gap_recovery_cost",
    "load_reports",
    "print_comparison",
    "several_routers",
    "write_comparison",
]

GAP_SHARES = (0.5, 0.8)
"""The shares of the cheapest-to-best quality gap whose cost is reported (RouteLLM's CPT(50%) and CPT(80%))."""

_BOUNDS = frozenset({"oracle"})  # routers that read the test outcomes: shown, never marked best


def number(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is not a number (a hand-edited or truncated report, a
    boolean): a comparison shows such a figure as missing rather than failing on it."""
    if isinstance(value, bool):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def is_model_report(item: Mapping[str, Any]) -> bool:
    """Whether ``item`` is a report of ``orchestra bench models`` (told by its content, not its file's name)."""
    return isinstance(item.get("points"), list) and isinstance(item.get("single_models"), list)


def is_agent_report(item: Mapping[str, Any]) -> bool:
    """Whether ``item`` is a report of ``orchestra bench agents``."""
    return isinstance(item.get("test"), Mapping) and "regime" in item and "router" in item


def _kind(report: Mapping[str, Any]) -> str | None:
    return "models" if is_model_report(report) else "agents" if is_agent_report(report) else None


def router_label(report: Mapping[str, Any]) -> str:
    """A model-routing report's router and what it held out: ``graph-router (held out: a, b; 50 observed)``."""
    label = str(report.get("router", "?"))
    holdout = report.get("holdout_models") or []
    if holdout:
        observed = f"; {report['holdout_observed']} observed" if report.get("holdout_observed") else ""
        label += f" (held out: {', '.join(map(str, holdout))}{observed})"
    return label


def file_variants(keys: Sequence[str], files: Sequence[str]) -> list[str]:
    """For reports that share a key (the same router, or router and regime), what tells their files apart: the
    end of each file's name past the name they share (``window256`` in
    ``models_routerbench_graph-router_window256.json``); empty for a key no other report has."""
    out = [""] * len(keys)
    for key in set(keys):
        indices = [i for i, k in enumerate(keys) if k == key]
        if len(indices) < 2:
            continue
        stems = [Path(files[i]).stem for i in indices]
        shared = os.path.commonprefix(stems)
        if not all(stem == shared or stem[len(shared)] == "_" for stem in stems):
            shared = shared[: shared.rfind("_") + 1]  # whole words: "finetuned", not "inetuned"
        for i, stem in zip(indices, stems, strict=True):
            out[i] = stem[len(shared):].strip("_")
    return out


def distinct_labels(labels: Sequence[str], files: Sequence[str]) -> list[str]:
    """``labels`` with what tells apart the files of reports that share one: ``graph-router [window256]``."""
    return [f"{label} [{variant}]" if variant else label
            for label, variant in zip(labels, file_variants(labels, files), strict=True)]


def load_reports(paths: Sequence[str | Path]) -> list[tuple[str, dict[str, Any]]]:
    """The reports in these files, each with the file it came from; a multi-router file gives each of its
    reports. `DataError` names a file that is missing, not JSON, or not a ``bench models``/``bench agents``
    report."""
    if not paths:
        raise DataError("no report to compare: name the JSON files that `orchestra bench models|agents --json` wrote")
    loaded: list[tuple[str, dict[str, Any]]] = []
    for path in paths:
        source = str(path)
        try:
            content = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{source}: file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{source}: cannot read: {exc}") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}: not valid JSON ({exc.msg})") from None
        reports = content.get("reports") if isinstance(content, dict) and "reports" in content else [content]
        if not isinstance(reports, list) or not reports:
            raise DataError(f"{source}: 'reports' must be a non-empty list of bench reports")
        for index, report in enumerate(reports):
            where = source if len(reports) == 1 else f"{source} (report {index + 1})"
            if not isinstance(report, dict) or _kind(report) is None:
                raise DataError(f"{where}: not a report of `orchestra bench models` or `orchestra bench agents` "
                                "(fusion and Router-R1 reports are not compared)")
            loaded.append((where, report))
    return loaded


def gap_recovery_cost(report: Mapping[str, Any], share: float) -> float | None:
    """The mean cost per query (USD) at which a model router's non-decreasing hull first recovers ``share`` of
    the quality gap between the cheapest single model and the best one (RouteLLM's CPT on a cost axis); None
    when it never does, when the cheapest model is already the best, or when the report's figures are not
    numbers."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")

    def figures(items: Any) -> list[tuple[float, float]]:
        pairs = [(number(item.get("cost_usd")), number(item.get("quality"))) for item in items or [] if isinstance(item, Mapping)]
        return [(cost, quality) for cost, quality in pairs if cost is not None and quality is not None]

    single, points = figures(report.get("single_models")), figures(report.get("points"))
    strong = number((report.get("best_single") or {}).get("quality"))
    if not single or not points or strong is None:
        return None
    weak = min(single, key=lambda pair: (pair[0], -pair[1]))[1]
    if not strong > weak:
        return None
    from orchestra.bench.models import hull_cost_reaching

    return hull_cost_reaching([cost for cost, _ in points], [quality for _, quality in points], weak + share * (strong - weak))


def _test_size(kind: str, report: Mapping[str, Any]) -> tuple[Any, ...]:
    if kind == "models":
        return (report["n_test"],)
    return (report["test"].get("n"), (report.get("oos") or {}).get("n_oos", 0))


def _scored(kind: str, report: Mapping[str, Any]) -> str:
    size = _test_size(kind, report)
    return f"{size[0]} test queries" + (f" and {size[1]} out-of-scope ones" if kind == "agents" else "")


def _set_name(kind: str, report: Mapping[str, Any]) -> str:
    return str(report["set"]) if kind == "models" else Path(str(report["data"])).name


def model_row(report: Mapping[str, Any]) -> dict[str, Any]:
    """A model-routing report's figures in a comparison: AIQ, scenario rewards, the cost (and w) at which it first
    reaches the best single model's quality, the cost of recovering each of `GAP_SHARES` of the quality gap, p50
    latency and fit time. A figure that is not a number in the report is None."""
    rewards = report.get("scenario_rewards") or {}
    best_cost = number((report.get("best_single") or {}).get("cost_usd"))
    reach = report.get("cheapest_point_reaching_best_single")
    reach = reach if isinstance(reach, Mapping) else {}
    recovery: dict[str, Any] = {}
    for share in GAP_SHARES:
        cost = gap_recovery_cost(report, share)
        recovery[f"{share:g}"] = None if cost is None else {
            "cost_usd": cost, "share_of_best_single_cost": cost / best_cost if best_cost else None}
    return {
        "router": router_label(report),
        "bound": report.get("router") in _BOUNDS,
        "aiq": number(report.get("aiq")),
        "performance_first": number(rewards.get("performance_first")),
        "balance": number(rewards.get("balance")),
        "cost_first": number(rewards.get("cost_first")),
        "cost_reaching_best_single": number(reach.get("cost_usd")),
        "w_reaching_best_single": number(reach.get("w")),
        "gap_recovery": recovery,
        "p50_ms": number((report.get("latency") or {}).get("decision_p50_ms_with_embedding")),
        "fit_seconds": number(report.get("fit_seconds")),
    }


def agent_row(report: Mapping[str, Any]) -> dict[str, Any]:
    """An agent-routing report's figures in a comparison: the regime (and shots), set hit, top-1, exact set,
    micro-F1 and mean set size on in-scope test queries, p50 latency, out-of-scope precision and recall, and set
    hit on onboarded agents' queries. A figure that is not a number in the report is None."""
    test = report.get("test") or {}
    oos = report.get("oos") or {}
    regime = str(report.get("regime"))
    if regime == "few-shot" and report.get("shots"):
        regime += f" {report['shots']}"
    return {
        "router": str(report.get("router")),
        "bound": report.get("router") in _BOUNDS,
        "regime": regime,
        "n": test.get("n"),
        **{key: number(test.get(key)) for key in ("set_hit", "top1", "exact_set", "micro_f1", "mean_set_size")},
        "p50_ms": number((report.get("latency") or {}).get("p50_ms")),
        "oos_precision": number(oos.get("oos_precision")),
        "oos_recall": number(oos.get("oos_recall")),
        "onboarded_set_hit": number((report.get("onboarded") or {}).get("set_hit")),
        "fit_seconds": number(report.get("fit_seconds")),
    }


# column, direction: +1 higher is better, -1 lower is better
_MODEL_COLUMNS = (("aiq", 1), ("performance_first", 1), ("balance", 1), ("cost_first", 1),
                  ("cost_reaching_best_single", -1), ("p50_ms", -1))
_AGENT_COLUMNS = (("set_hit", 1), ("top1", 1), ("exact_set", 1), ("micro_f1", 1), ("oos_recall", 1),
                  ("oos_precision", 1), ("p50_ms", -1))


def _name(row: Mapping[str, Any]) -> str:
    # what names a row in the comparison's "best": an agent router is named with its regime (one router may be
    # compared with itself trained otherwise)
    return f"{row['router']} ({row['regime']})" if "regime" in row else str(row["router"])


def _best(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, int]]) -> dict[str, list[str]]:
    best: dict[str, list[str]] = {}
    if sum(not row["bound"] for row in rows) < 2:
        return best  # one router is not a comparison
    for column, direction in columns:
        values = [(row[column], _name(row)) for row in rows if not row["bound"] and row.get(column) is not None]
        if not values:
            continue
        top = max(direction * value for value, _ in values)
        best[column] = [name for value, name in values if direction * value == top]
    if "gap_recovery" in (rows[0] if rows else {}):
        for share in GAP_SHARES:
            key = f"{share:g}"
            values = [(row["gap_recovery"][key]["cost_usd"], _name(row)) for row in rows
                      if not row["bound"] and row["gap_recovery"].get(key)]
            if values:
                low = min(value for value, _ in values)
                best[f"gap_recovery_{key}"] = [name for value, name in values if value == low]
    return best


def compare_reports(reports: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """One comparison of bench reports (``(source, report)`` pairs, as `load_reports` gives): a row per report,
    and per column the routers with the best value. `DataError` names the reports that cannot stand side by
    side: model reports beside agent reports, or reports on another set or another number of test queries."""
    if not reports:
        raise DataError("no report to compare")
    kinds = {source: _kind(report) for source, report in reports}
    if None in kinds.values():
        source = next(source for source, kind in kinds.items() if kind is None)
        raise DataError(f"{source}: not a report of `orchestra bench models` or `orchestra bench agents`")
    first_source, first = reports[0]
    kind = str(kinds[first_source])
    for source, report in reports[1:]:
        if kinds[source] != kind:
            raise DataError(f"{source} is a bench {kinds[source]} report and {first_source} a bench {kind} one: "
                            "compare model routers and agent routers apart")
        if _set_name(kind, report) != _set_name(kind, first):
            raise DataError(f"{source} is on the set {_set_name(kind, report)!r} and {first_source} on "
                            f"{_set_name(kind, first)!r}: compare routers on the same set")
        if _test_size(kind, report) != _test_size(kind, first):
            raise DataError(f"{source} scored {_scored(kind, report)} and {first_source} {_scored(kind, first)}: "
                            "routers are compared on the same test queries (a --limit run only with one of the same limit)")
    rows = [(model_row if kind == "models" else agent_row)(report) for _, report in reports]
    keys = [_name(row) for row in rows]
    # the same router twice (other options, another run) is told apart by its file's name
    files = [source.split(" (report ")[0] for source, _ in reports]
    for row, (source, _), label, key in zip(rows, reports, distinct_labels(keys, files), keys, strict=True):
        row["source"] = source
        row["router"] += label[len(key):]
    names = [_name(row) for row in rows]
    if len(set(names)) < len(rows):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise DataError(f"the same report is given twice: {', '.join(repeated)}")
    comparison: dict[str, Any] = {
        "kind": kind,
        "set": _set_name(kind, first),
        "n_test": _test_size(kind, first)[0],
        "rows": rows,
        "best": _best(rows, _MODEL_COLUMNS if kind == "models" else _AGENT_COLUMNS),
    }
    if kind == "models":
        single = first["single_models"]
        weak = min(single, key=lambda s: (s["cost_usd"], -s["quality"]))
        comparison["best_single"] = first["best_single"]
        comparison["cheapest_single"] = weak
        comparison["cost"] = first.get("cost")
    return comparison


def _cell(value: Any, text: str, marked: bool) -> str:
    if value is None:
        return "-"
    # a star as well as bold: a table written to a file or pasted into a README loses its styles
    return f"[bold]{text}*[/]" if marked else text


def print_comparison(comparison: Mapping[str, Any]) -> None:
    """Print a comparison as a table, the best value of each column in bold."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # written to a file or a pipe: as wide as the table, not folded at 80 columns
        console.width = max(console.width, 180)
    best = comparison["best"]
    rows = comparison["rows"]
    title = f"{len(rows)} routers on {comparison['set']} test ({comparison['n_test']} queries)"

    def marked(column: str, row: Mapping[str, Any]) -> bool:
        return _name(row) in best.get(column, ())

    if comparison["kind"] == "models":
        if comparison.get("cost") == "estimated":
            title += ", estimated cost"
        table = Table(title=title)
        shares = [f"{share:g}" for share in GAP_SHARES]
        for column in ("router", "AIQ", "perf. first", "balance", "cost first", "best single's quality at",
                       *(f"CPT({float(s):.0%})" for s in shares), "p50 ms", "fit s"):
            table.add_column(column, justify="left" if column == "router" else "right")
        for row in rows:
            reach = row["cost_reaching_best_single"]
            cells = [
                escape(row["router"]) + (" (bound)" if row["bound"] else ""),
                _cell(row["aiq"], f"{row['aiq']:.4f}" if row["aiq"] is not None else "", marked("aiq", row)),
                *(
                    _cell(row[key], f"{row[key]:.4f}" if row[key] is not None else "", marked(key, row))
                    for key in ("performance_first", "balance", "cost_first")
                ),
                _cell(reach, f"${reach:.5f} (w={row['w_reaching_best_single']:g})" if reach is not None else "",
                      marked("cost_reaching_best_single", row)) if reach is not None else "not reached",
            ]
            for share in shares:
                recovery = row["gap_recovery"].get(share)
                cells.append(
                    "not reached" if recovery is None else _cell(
                        recovery, f"{recovery['share_of_best_single_cost']:.1%}",
                        marked(f"gap_recovery_{share}", row))
                )
            cells.append(_cell(row["p50_ms"], f"{row['p50_ms']:.1f}" if row["p50_ms"] is not None else "", marked("p50_ms", row)))
            cells.append("-" if row["fit_seconds"] is None else f"{row['fit_seconds']:.1f}")
            table.add_row(*cells)
        console.print(table)
        strong, weak = comparison["best_single"], comparison["cheapest_single"]
        console.print(
            f"best single model {escape(strong['model'])} {strong['quality']:.3f} at ${strong['cost_usd']:.5f}; cheapest "
            f"{escape(weak['model'])} {weak['quality']:.3f} at ${weak['cost_usd']:.5f}. CPT(x): the cost at which a router first "
            "recovers x of the quality gap between the two, as a share of the best single model's cost. "
            "* best among the routers (bounds left out)."
        )
        return
    table = Table(title=title)
    has_oos = any(row["oos_recall"] is not None for row in rows)
    has_onboarded = any(row["onboarded_set_hit"] is not None for row in rows)
    columns = ["router", "regime", "set hit", "top-1", "exact set", "micro-F1", "mean set size", "p50 ms"]
    columns += ["oos recall", "oos precision"] if has_oos else []
    columns += ["onboarded set hit"] if has_onboarded else []
    for column in columns:
        table.add_column(column, justify="left" if column in ("router", "regime") else "right")
    for row in rows:
        cells = [escape(row["router"]) + (" (bound)" if row["bound"] else ""), escape(row["regime"])]
        for key in ("set_hit", "top1", "exact_set", "micro_f1"):
            cells.append(_cell(row[key], f"{100 * row[key]:.2f}" if row[key] is not None else "", marked(key, row)))
        cells.append("-" if row["mean_set_size"] is None else f"{row['mean_set_size']:.2f}")
        cells.append(_cell(row["p50_ms"], f"{row['p50_ms']:.1f}" if row["p50_ms"] is not None else "", marked("p50_ms", row)))
        if has_oos:
            for key in ("oos_recall", "oos_precision"):
                cells.append(_cell(row[key], f"{row[key]:.3f}" if row[key] is not None else "", marked(key, row)))
        if has_onboarded:
            value = row.get("onboarded_set_hit")
            cells.append("-" if value is None else f"{100 * value:.2f}")
        table.add_row(*cells)
    console.print(table)
    if best:
        console.print("* best among the routers (bounds left out)")


def several_routers(
    text: str, options: Mapping[str, Any], *, predictions: str | None, save: str | None
) -> dict[str, dict[str, Any]]:
    """The routers a bench command runs (``--router a,b,c``) with their options (see `router_names`). With several,
    ``--predictions`` and ``--save`` (one router's output each) are refused, and every router is built once
    first, so that a misspelt name or option is refused before the first of them trains."""
    routers = router_names(text, options)
    if len(routers) > 1:
        for flag, given in (("--predictions", predictions), ("--save", save)):
            if given is not None:
                raise ConfigurationError(f"{flag} writes one router's output; with several routers (--router {text}) "
                                         "leave it out, or run that router alone")
        from orchestra.routing import load_router

        for name, chosen in routers.items():
            load_router(name, **chosen)
    return routers


def write_comparison(reports: Sequence[Mapping[str, Any]], json_out: str | None) -> None:
    """After a bench run: one router's report written as it is (``--json``); several routers' compared side by
    side, printed, and written as ``{"comparison": ..., "reports": [...]}``, which `load_reports` reads back."""
    if len(reports) > 1:
        comparison = compare_reports([(str(report["router"]), report) for report in reports])
        print_comparison(comparison)
        content: Mapping[str, Any] = {"comparison": comparison, "reports": list(reports)}
    else:
        content = reports[0]
    if json_out:
        write_report(dict(content), json_out)


def compare_command(
    reports: Annotated[list[str], typer.Argument(help="Report files that `orchestra bench models|agents --json` wrote.")],
    json_out: Annotated[str | None, typer.Option("--json", help="Write the comparison here as JSON.")] = None,
) -> None:
    """Print routers side by side from their bench reports: AIQ, scenario rewards and the cost of recovering the
    quality gap (model routers), or set hit, top-1, exact set, latency and out-of-scope figures (agent routers)."""
    loaded = load_reports(reports)
    comparison = compare_reports(loaded)
    if json_out:
        resolved = Path(json_out).expanduser().resolve()
        if any(Path(path).expanduser().resolve() == resolved for path in reports):
            raise DataError(f"--json {json_out!r} is one of the reports compared; write the comparison elsewhere")
        check_output(json_out, data=None, option="--json")
    print_comparison(comparison)
    if json_out:
        write_report(comparison, json_out)
