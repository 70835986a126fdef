"""A run's decision graph: query → decision → agent calls (→ their model calls) → aggregation → answer.

Built as a networkx ``DiGraph`` (nodes carry ``label``, ``kind`` and drawing hints) and written as Graphviz DOT
text, which Streamlit draws in the browser (`st.graphviz_chart`) with no extra package and no network.
"""

from __future__ import annotations

import re
from typing import Any

import networkx as nx

from orchestra import RunTrace, StepRecord

__all__ = ["CUT_OFF", "MAX_UNCHOSEN", "chosen_ids", "cut_off", "plain_text", "to_dot", "trace_graph"]

MAX_UNCHOSEN = 4
"""Candidates a decision considered but did not choose, drawn (dashed) per decision: enough to see the
runners-up without burying the chosen path in a registry of fifty agents."""

CUT_OFF = "cut off at the token limit"
"""How a model answer that ran into ``max_tokens`` is flagged wherever a run is drawn."""


def cut_off(step: StepRecord) -> bool:
    """Whether ``step`` is a model call whose answer stopped at the token limit (``finish_reason`` ``length``):
    the text after it is missing, which its answer alone does not show."""
    return step.kind == "model_call" and step.response.get("finish_reason") == "length"


_STYLE: dict[str, dict[str, str]] = {
    "query": {"shape": "box", "style": "rounded,filled", "fillcolor": "#e8eef9"},
    "decision": {"shape": "diamond", "style": "filled", "fillcolor": "#fff4d6"},
    "candidate": {"shape": "box", "style": "dashed,rounded", "color": "#9a9a9a", "fontcolor": "#7a7a7a"},
    "call": {"shape": "box", "style": "rounded,filled", "fillcolor": "#e3f4e1"},
    "model_call": {"shape": "note", "style": "filled", "fillcolor": "#f1f1f1"},
    "aggregate": {"shape": "hexagon", "style": "filled", "fillcolor": "#efe3f7"},
    "answer": {"shape": "box", "style": "rounded,filled,bold", "fillcolor": "#d9f2e6"},
    "error": {"shape": "octagon", "style": "filled", "fillcolor": "#fbe0e0", "color": "#c0392b"},
}


_EMPHASIS = re.compile(r"\*\*|__|`")


def plain_text(text: Any) -> str:
    """``text`` without the Markdown emphasis and code marks a model or `PassThrough` wrote (``**poet**: …``), for
    places that show text as it is: graph labels, table cells."""
    return _EMPHASIS.sub("", str(text or ""))


def _short(text: Any, limit: int = 48) -> str:
    line = " ".join(plain_text(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _usage(step: StepRecord) -> str:
    tokens = step.prompt_tokens + step.completion_tokens
    parts = [f"{step.latency_ms:.0f} ms"]
    if tokens:
        parts.insert(0, f"{tokens} tok")
    return " · ".join(parts)


def chosen_ids(decision: dict[str, Any]) -> set[str]:
    """The candidates a stored decision chose: the agents it called and the models it called them on (a model
    router's candidates are model ids; its call names the agent and, in ``model_id``, the model chosen)."""
    calls = decision.get("calls", [])
    return {call["agent_id"] for call in calls} | {call["model_id"] for call in calls if call.get("model_id")}


def _decision_label(step: StepRecord, router: str) -> str:
    decision = step.response.get("decision", {})
    if step.error:  # the router failed: no decision, its error
        head = f"failed: {step.error.get('type', 'error')}"
    elif decision.get("kind") == "finish":
        head = "out of scope" if decision.get("out_of_scope") else "finish"
    else:
        head = f"dispatch {len(decision.get('calls', []))}"
    return f"{router} r{step.round}\n{head}\n{_short(decision.get('rationale'), 36)}"


def trace_graph(trace: RunTrace) -> nx.DiGraph:
    """The run as a directed graph. Node attributes: ``label`` (text drawn), ``kind`` (query, decision,
    candidate, call, model_call, aggregate, answer, error) and, for steps, ``step_id``."""
    graph: nx.DiGraph[str] = nx.DiGraph()
    run = trace.run
    graph.add_node("query", kind="query", label=f"query\n{_short(run.query)}")
    by_round: dict[int, list[str]] = {}
    last_decision: str | None = None
    for step in trace.steps:
        node = f"step:{step.id}"
        if step.kind == "decision":
            graph.add_node(node, kind="decision", step_id=step.id, label=_decision_label(step, run.router))
            # the first decision reads the query; later ones read the answers of the round before
            sources = by_round.get(step.round - 1) or ([last_decision] if last_decision else ["query"])
            for source in sources:
                graph.add_edge(source, node)
            last_decision = node
            decision = step.response.get("decision", {})
            chosen = chosen_ids(decision)
            unchosen = [s for s in decision.get("scores", []) if s["id"] not in chosen][:MAX_UNCHOSEN]
            for score in unchosen:
                candidate = f"{node}:cand:{score['id']}"
                graph.add_node(candidate, kind="candidate", label=f"{score['id']}\nscore {score['score']:.3f}")
                graph.add_edge(node, candidate, label="not chosen", style="dashed")
            if decision.get("kind") == "finish":
                graph.add_node("answer", kind="answer", label=f"answer\n{_short(decision.get('answer'), 60)}")
                graph.add_edge(node, "answer")
        elif step.kind == "call":
            answer = step.response.get("answer")
            text = f"error: {step.error.get('type')}" if step.error else _short(answer, 40)
            model = f" @ {step.model_id}" if step.model_id else ""
            graph.add_node(
                node, kind="error" if step.error else "call", step_id=step.id,
                label=f"{step.agent_id}{model}\n{text}\n{_usage(step)}",
            )
            weight = step.request.get("weight")
            graph.add_edge(f"step:{step.parent_id}" if step.parent_id else "query", node,
                           label=f"w {weight:.2f}" if isinstance(weight, (int, float)) else "")
            by_round.setdefault(step.round, []).append(node)
        elif step.kind == "model_call":
            purpose = step.request.get("purpose") or "model"
            graph.add_node(
                node, kind="error" if step.error else "model_call", step_id=step.id,
                label=f"{purpose}: {step.model_id}\n{_usage(step)}" + (f"\n{CUT_OFF}" if cut_off(step) else ""),
            )
            graph.add_edge(f"step:{step.parent_id}" if step.parent_id else "query", node, style="dotted")
        elif step.kind == "aggregate":
            graph.add_node(
                node, kind="aggregate", step_id=step.id,
                label=f"{step.request.get('aggregator', 'aggregate')}\n{_short(step.response.get('answer'), 40)}",
            )
            for source in by_round.get(step.round - 1) or [n for nodes in by_round.values() for n in nodes] or ["query"]:
                graph.add_edge(source, node)
            if step.response.get("answer") is not None:
                graph.add_node("answer", kind="answer", label=f"answer\n{_short(step.response.get('answer'), 60)}")
                graph.add_edge(node, "answer")
        elif step.kind == "error":
            label = f"{step.error.get('type') if step.error else 'error'}\n{_short(step.error.get('message') if step.error else '', 50)}"
            graph.add_node(node, kind="error", step_id=step.id, label=label)
            parent = f"step:{step.parent_id}" if step.parent_id and graph.has_node(f"step:{step.parent_id}") else (last_decision or "query")
            graph.add_edge(parent, node, style="dashed", label=step.agent_id or "")
    # model calls may be appended before their agent call's own step (the call is recorded when it ends): any
    # edge to a parent that was not yet drawn as a step gets that step's attributes now
    # networkx's stubs type nodes(data=True) as yielding bare nodes, not (node, data) pairs
    for node, data in list(graph.nodes(data=True)):  # type: ignore[str-unpack]
        if "kind" not in data:
            graph.nodes[node].update(kind="call", label=node.removeprefix("step:")[:8])
    return graph


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: nx.DiGraph, *, rankdir: str = "LR") -> str:
    """Graphviz DOT text for a graph made by `trace_graph` (node ids are quoted, labels escaped)."""
    lines = [
        "digraph run {",
        f"  rankdir={rankdir};",
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9, color="#555555"];',
    ]
    for node, data in graph.nodes(data=True):
        attrs = {"label": data.get("label", node), **_STYLE.get(data.get("kind", ""), {})}
        lines.append(f"  {_quote(node)} [" + ", ".join(f"{k}={_quote(v)}" for k, v in attrs.items()) + "];")
    for source, target, data in graph.edges(data=True):
        attrs = {k: v for k, v in data.items() if k in ("label", "style") and v}
        suffix = " [" + ", ".join(f"{k}={_quote(str(v))}" for k, v in attrs.items()) + "]" if attrs else ""
        lines.append(f"  {_quote(source)} -> {_quote(target)}{suffix};")
    lines.append("}")
    return "\n".join(lines)
