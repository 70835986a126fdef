"""The routing panel: everything a stored run says about how its answer was reached, drawn from the trace.

Used under each chat answer and on the Runs page, so a live answer and a replayed one read the same way.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from orchestra import RunTrace, StepRecord

from orchestra.ui.common import as_typed, explain_error, format_cost
from orchestra.ui.graph import CUT_OFF, chosen_ids, cut_off, plain_text, to_dot, trace_graph

__all__ = ["render_graph", "render_routing_panel", "run_summary", "step_rows"]


def run_summary(trace: RunTrace) -> dict[str, Any]:
    """The run's headline facts: router, status, answer, agents that answered, totals."""
    run = trace.run
    calls = [step for step in trace.steps if step.kind == "call"]
    return {
        "run": run.id,
        "router": run.router,
        "status": run.status_label(),
        "answer": run.answer,
        "agents": ", ".join(f"{s.agent_id}{' (failed)' if s.error else ''}" for s in calls) or "none",
        "decisions": sum(step.kind == "decision" for step in trace.steps),
        "tokens": f"{run.prompt_tokens}+{run.completion_tokens}",
        "cost": format_cost(run.cost_usd),
        "latency_ms": round(run.latency_ms, 1),
    }


def step_rows(trace: RunTrace) -> list[dict[str, Any]]:
    """One row per step, in order: what it was, who did it, and its tokens, cost and latency."""
    rows = []
    for step in trace.steps:
        rows.append({
            "step": step.kind,
            "round": step.round,
            "agent": step.agent_id or "",
            "model": step.model_id or "",
            "prompt tokens": step.prompt_tokens,
            "completion tokens": step.completion_tokens,
            "cost": _step_cost(step),
            "latency ms": round(step.latency_ms, 1),
            "what": plain_text(_step_text(step)),  # last: the widest column, so it never pushes the figures out of view
        })
    return rows


def _step_cost(step: StepRecord) -> str:
    # a function agent or a router that called no model has no price: a dash, not "unknown"; a failed call that
    # was billed all the same has its cost
    if not step.cost_usd and (step.kind not in ("call", "model_call")
                                  or (not step.model_id and not step.prompt_tokens + step.completion_tokens)):
        return "—"
    return format_cost(step.cost_usd)


def _step_text(step: StepRecord) -> str:
    retried = step.response.get("retried") or []
    if retried:  # its agent's RetryPolicy tried it again: say how often, and what failed first
        return f"after {len(retried) + 1} attempts (first: {explain_error(retried[0])}) " + _outcome_text(step)
    return _outcome_text(step)


def _outcome_text(step: StepRecord) -> str:
    if step.error:
        return explain_error(step.error)
    if step.kind == "decision":
        decision = step.response.get("decision", {})
        if decision.get("kind") == "finish":
            return ("out of scope: " if decision.get("out_of_scope") else "finish: ") + str(decision.get("answer", ""))[:120]
        return "dispatch " + ", ".join(c["agent_id"] for c in decision.get("calls", []))
    if step.kind == "call":
        return str(step.response.get("answer", ""))[:160]
    if step.kind == "model_call":
        note = f" ({CUT_OFF})" if cut_off(step) else ""
        return f"{step.request.get('purpose', '')}{note}: {str(step.response.get('text', ''))[:120]}"
    if step.kind == "aggregate":
        return str(step.response.get("answer", ""))[:160]
    return ""


def _aggregate_heading(step: StepRecord) -> tuple[str, str]:
    """What the aggregate step did, read from its meta: its Markdown heading (a refined answer only when a model
    merged the answers) and how it got there (the fusion a `Fuse` picked, the votes), in words."""
    meta = step.response.get("meta", {})
    name = f"`{step.request.get('aggregator', 'aggregate')}`"
    fusion = meta.get("fusion")
    how = [f"fusion: {fusion}" + (" (a short or categorical answer: the agents' weights vote)"
                                  if fusion == "weighted-vote" else " (free text)")] if fusion else []
    if step.error:
        return f"**Aggregated answer** ({name})", "; ".join(how)
    if "votes" in meta:
        votes = sorted(meta["votes"].items(), key=lambda kv: -kv[1])
        how.append("votes: " + (", ".join(f"“{k}” {v:g}" for k, v in votes) or "none (no agent answered)"))
        return f"**Voted answer** ({name})", "; ".join(how)
    if meta.get("model"):
        return f"**Refined answer** ({name} on `{meta['model']}`)", "; ".join(how)
    if meta.get("refine_failed"):
        return f"**Answers as they came** ({name}: the refiner failed)", "; ".join(how)
    answered = meta.get("answered")
    if meta.get("from"):
        how.append(f"only `{meta['from']}` answered: its answer, passed through as it came")
    elif answered == 0:
        how.append("no agent answered")
    elif answered:
        how.append(f"the {answered} answers, listed as they came")
    return f"**Answer passed through** ({name})", "; ".join(how)


def _warn_cut_off(trace: RunTrace, step: StepRecord, whose: str) -> None:
    # the answer reads as complete; only the model call under the step says the rest was never written
    for model_call in (s for s in trace.steps if s.parent_id == step.id and cut_off(s)):
        limit = model_call.request.get("options", {}).get("max_tokens")
        st.warning(f"{whose} was {CUT_OFF} (`{model_call.model_id}`"
                   + (f", max_tokens {limit}" if limit else "") + "): the end is missing.", icon=":material/content_cut:")


def asked_note(call: StepRecord, query: str) -> str:
    """``, asked “…”`` when the router gave this call its own sub-query (a search, a segment of the query), else
    ``""``: for the lines that show a call in the panel and the Runs tree."""
    asked = str(call.request.get("query") or "")
    if not asked or " ".join(asked.split()) == " ".join(query.split()):
        return ""
    return f", asked “{as_typed(' '.join(asked.split()))}”"


def render_graph(trace: RunTrace) -> None:
    """The decision graph, drawn by the browser from DOT text (no network, no graphviz binary)."""
    st.graphviz_chart(to_dot(trace_graph(trace)), width="stretch")


def render_routing_panel(trace: RunTrace, *, key: str) -> None:
    """Router, rationale, candidates and scores, the agents that answered (with their answers) and those that
    failed, how the answers became one, tokens, cost and latency per step, and the decision graph."""
    run = trace.run
    router_config = run.meta.get("router", {})
    aggregator = run.meta.get("aggregator", {})
    policy = run.meta.get("policy", {})
    # None: a multi-round router, which writes the answer itself
    merged_by = "answered by the router" if aggregator is None else f"aggregator `{aggregator.get('name', '?')}`"
    st.markdown(
        f"**Router** `{run.router}` · {merged_by} · cost weight "
        f"{policy.get('cost_weight', 0):g} · registry v{run.registry_version} · run `{run.id}`"
    )
    options = {k: v for k, v in router_config.items() if k != "name"}
    if options:
        st.caption("Router options: " + ", ".join(f"{k}={v}" for k, v in options.items()))
    limits = {name: value for name, value in run.meta.get("budget", {}).items() if value is not None}
    if limits:
        st.caption("Budget: " + ", ".join(f"{name}={value:g}" for name, value in limits.items()))

    for step in (s for s in trace.steps if s.kind == "decision"):
        decision = step.response.get("decision", {})
        title = f"Decision, round {step.round}"
        st.markdown(f"**{title}**: {as_typed(decision.get('rationale') or '(no rationale given)')}")
        if decision.get("kind") == "finish":
            verb = "Out of scope" if decision.get("out_of_scope") else "Finished"
            st.caption(f"{verb}: {as_typed(decision.get('answer', ''))}")
        _warn_cut_off(trace, step, "The router's model answer")
        chosen = chosen_ids(decision)
        scores = decision.get("scores", [])
        rows = [
            {
                "candidate": score["id"],
                "score": score["score"],
                "chosen": score["id"] in chosen,
                **{k: v for k, v in (score.get("detail") or {}).items()},
            }
            for score in scores
        ]
        listed = {score["id"] for score in scores}
        for call in decision.get("calls", []):  # a call no score stands for (a router that scores nothing)
            if not {call["agent_id"], call.get("model_id")} & listed:
                rows.append({"candidate": call["agent_id"], "score": None, "chosen": True})
                listed.add(call["agent_id"])
        if rows:
            st.dataframe(rows, hide_index=True, key=f"{key}-cand-{step.id}")

    calls = [s for s in trace.steps if s.kind == "call"]
    for failed, heading in ((False, "Agents that answered"), (True, "Agents that failed")):
        group = [call for call in calls if bool(call.error) == failed]
        if group:
            st.markdown(f"**{heading}**")
        for call in group:
            model = f" on `{call.model_id}`" if call.model_id else ""
            usage = (
                f"{call.prompt_tokens}+{call.completion_tokens} tok · {_step_cost(call)} · {call.latency_ms:.0f} ms"
            )
            model += asked_note(call, run.query)
            if call.error:
                st.markdown(f"- `{call.agent_id}`{model} ({usage})")
                st.error(as_typed(explain_error(call.error)))
            else:
                answer = str(call.response.get("answer", ""))
                # indented, every line of the answer stays inside its agent's list item (a list it wrote nests there)
                st.markdown(f"- `{call.agent_id}`{model} ({usage}): " + as_typed(answer).replace("\n", "\n  "))
                _warn_cut_off(trace, call, f"`{call.agent_id}`'s answer")

    for aggregate in (s for s in trace.steps if s.kind == "aggregate"):
        meta = aggregate.response.get("meta", {})
        heading, how = _aggregate_heading(aggregate)
        if aggregate.error:
            st.markdown(f"{heading}: none")
            st.error(as_typed(explain_error(aggregate.error)))
            continue
        st.markdown(f"{heading}: {as_typed(aggregate.response.get('answer', ''))}")
        if how:
            st.caption(how)
        _warn_cut_off(trace, aggregate, "The merged answer")
        if meta.get("refine_failed"):
            st.warning("The refiner could not merge the answers, so they are shown as they came. "
                       + explain_error(meta["refine_failed"]), icon=":material/warning:")

    errors = [s for s in trace.steps if s.kind == "error" and s.parent_id is None]
    for step in errors:
        st.error(as_typed(explain_error(step.error)))

    cost = format_cost(run.cost_usd)
    st.markdown(
        f"**Totals**: {run.prompt_tokens}+{run.completion_tokens} tokens · {cost} · {run.latency_ms:.0f} ms"
    )
    st.dataframe(step_rows(trace), hide_index=True, key=f"{key}-steps")
    render_graph(trace)
