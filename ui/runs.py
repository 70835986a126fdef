"""Runs page: browse and filter the stored runs, open one as its decision tree, replay it exactly (recorded
outputs served back, no model called) or with another router, resume one that failed or was stopped (what
succeeded served from the record, the rest run live; its budget raised first if it ran out), and read the two side
by side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from orchestra import (
    Budget,
    ConfigurationError,
    NotFoundError,
    Orchestra,
    OrchestraError,
    PolicyError,
    RunRecord,
    RunTrace,
    StepRecord,
    available_routers,
    replay,
    resume,
)

from orchestra.ui.common import BUDGET_LIMITS, as_typed, explain_error, format_cost, get_app, router_options, routers, show_error
from orchestra.ui.graph import CUT_OFF, cut_off
from orchestra.ui.panel import asked_note, render_graph, run_summary, step_rows

__all__ = ["render", "run_rows", "tree_markdown"]

STATUSES = ("any", "ok", "error", "running", "interrupted")
QUERY_SHOWN = 400
"""Characters of a query the decision tree shows."""
REPLAYS = "runs_replays"
"""session state: original run id -> the run ids of its replays and resumes made on this page, newest last."""
ANSWER_SHOWN = 300
"""Characters of a resumed run's answer its verdict quotes (the panel below shows it whole)."""


def run_rows(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """Runs as table rows, newest first."""
    return [
        {
            "run": run.id,
            "started": run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            "router": run.router,
            "status": run.status_label(),
            "query": run.query,
            "answer": run.answer or (run.error or {}).get("type", ""),
            "tokens": run.prompt_tokens + run.completion_tokens,
            "cost": format_cost(run.cost_usd),
            "latency ms": round(run.latency_ms, 1),
            "session": run.session_id,
        }
        for run in runs
    ]


def _step_line(step: StepRecord, *, cause_below: bool = False, query: str = "") -> str:
    usage = f" · {step.prompt_tokens}+{step.completion_tokens} tok · {step.latency_ms:.0f} ms"
    if step.error:
        # the error is told once, where it happened: a call that failed because its model call did says so
        what = "failed (the cause is below)" if cause_below else explain_error(step.error)
        spent = usage if step.kind in ("call", "model_call") else ""  # a failed call took time and may be billed
        return f":material/error: **{step.kind}** {step.agent_id or step.model_id or ''}: {what}{spent}"
    if step.kind == "decision":
        decision = step.response.get("decision", {})
        scores = ", ".join(f"{s['id']} {s['score']:.3f}" for s in decision.get("scores", [])[:5])
        if decision.get("kind") == "finish":
            head = "out of scope" if decision.get("out_of_scope") else "finish"
        else:
            head = "dispatch " + ", ".join(
                f"{c['agent_id']} (w {c['weight']:.2f}{', ' + c['model_id'] if c.get('model_id') else ''})"
                for c in decision.get("calls", [])
            )
        rationale = decision.get("rationale", "")
        return (f"**decision** r{step.round}: {head}" + (f" — _{as_typed(rationale)}_" if rationale else "")
                + (f" · scores {scores}" if scores else "") + f" · registry v{step.request.get('registry_version')}")
    if step.kind == "call":
        model = f" @ {step.model_id}" if step.model_id else ""
        model += asked_note(step, query) if query else ""
        return f"**call** {step.agent_id}{model}: {as_typed(str(step.response.get('answer', ''))[:200])}{usage}"
    if step.kind == "model_call":
        note = f" · :material/content_cut: **{CUT_OFF}**" if cut_off(step) else ""
        return f"model {step.model_id} ({step.request.get('purpose', '')}): {as_typed(str(step.response.get('text', ''))[:120])}{usage}{note}"
    if step.kind == "aggregate":
        failed = step.response.get("meta", {}).get("refine_failed")
        note = f" (refine failed: {failed.get('type', '')}; the answers as they came)" if failed else ""
        return f"**aggregate** ({step.request.get('aggregator')}){note}: {as_typed(str(step.response.get('answer', ''))[:200])}"
    return step.kind


def tree_markdown(trace: RunTrace) -> str:
    """The run as a nested Markdown list: decisions with their calls and model calls, then the aggregation
    (the same tree ``orchestra runs show`` prints)."""
    run = trace.run

    def one_line(text: str) -> str:  # a line break inside an item would end the list: the tree falls apart
        return " ".join(text.split())

    query = one_line(as_typed(run.query))
    if len(query) > QUERY_SHOWN:  # a pasted document would bury the tree under it
        query = f"{query[:QUERY_SHOWN]}… ({len(run.query):,} characters)"
    lines = [f"- query: {query}"]

    def add(parent_id: str | None, depth: int) -> None:
        for step in trace.children(parent_id):
            cause_below = bool(step.error) and any(child.error == step.error for child in trace.children(step.id))
            lines.append("  " * depth + "- " + one_line(_step_line(step, cause_below=cause_below, query=run.query)))
            add(step.id, depth + 1)

    add(None, 0)
    if run.answer is not None:
        lines.append(f"- **answer**: {one_line(as_typed(run.answer))}")
    if run.error and not any(step.error == run.error for step in trace.steps):  # else the tree says it already
        lines.append(f"- :material/error: {explain_error(run.error)}")
    return "\n".join(lines)


def _label(run: RunRecord) -> str:
    query = run.query if len(run.query) <= 60 else run.query[:59] + "…"
    # the short id keeps labels apart (two replays or resumes of one run in the same second would read alike, and the
    # box, which sends back the label chosen, would open the first of them)
    return f"{run.started_at:%m-%d %H:%M:%S} · {run.id[:8]} · {run.router} · {run.status_label()} · {query}"


def _filters(app: Orchestra) -> list[RunRecord]:
    cols = st.columns([1, 1, 2, 2, 1])
    status = cols[0].selectbox("Status", STATUSES, key="runs_status")
    router = cols[1].selectbox("Router", ["any", *available_routers()], key="runs_router")
    session = cols[2].text_input("Session id", key="runs_session").strip()
    contains = cols[3].text_input("Query contains", key="runs_contains").strip().lower()
    limit = cols[4].number_input("Show", min_value=5, max_value=1000, value=50, step=25, key="runs_limit")
    runs = app.store.list_runs(
        session_id=session or None,
        status=None if status == "any" else status,  # type: ignore[arg-type]
        router=None if router == "any" else router,
        limit=int(limit),
    )
    return [run for run in runs if contains in run.query.lower()] if contains else runs


def _side(trace: RunTrace, title: str, *, key: str) -> None:
    st.markdown(f"#### {title}")
    summary = run_summary(trace)
    if trace.run.status == "ok":
        st.success(as_typed(summary["answer"]) or "(empty answer)")
    else:
        st.error(as_typed(explain_error(trace.run.error)))
    # one fact a row: two runs side by side stay readable in half the page's width
    st.table({"": [k for k in summary if k != "answer"], "value": [str(v) for k, v in summary.items() if k != "answer"]})
    render_graph(trace)
    with st.expander("Steps"):
        st.dataframe(step_rows(trace), hide_index=True, key=f"{key}-steps")


def _chosen_agents(trace: RunTrace) -> list[list[str]]:
    """The agents each decision dispatched, in order (rationales differ between routers; the choice is what counts)."""
    return [
        sorted(call["agent_id"] for call in s.response.get("decision", {}).get("calls", []))
        for s in trace.steps if s.kind == "decision"
    ]


def _agents_text(chosen: list[list[str]]) -> str:
    return " then ".join(", ".join(ids) or "none" for ids in chosen) or "none"


def _compare(app: Orchestra, original: RunTrace, replayed_id: str) -> None:
    try:
        replayed = app.store.get_run(replayed_id)
    except OrchestraError as exc:
        show_error(exc)
        return
    mode = replayed.run.replay_mode or "replay"
    same_answer = replayed.run.answer == original.run.answer
    chosen = [_chosen_agents(t) for t in (original, replayed)]
    same_failure = (original.run.status == replayed.run.status == "error"
                    and (original.run.error or {}).get("type") == (replayed.run.error or {}).get("type"))
    if mode == "resume":
        _resume_verdict(replayed)
    elif mode == "exact":
        if replayed.run.status == "ok":
            st.success("Exact replay: same decisions and same answer; every output was served from the recording.")
        elif same_failure:
            st.success(f"Exact replay: the same failure, reproduced from the recording ({explain_error(replayed.run.error)}).")
        else:
            st.error(as_typed(f"The exact replay diverged: {explain_error(replayed.run.error)}"))
    elif replayed.run.status != "ok":
        st.error(as_typed(f"Counterfactual replay with `{replayed.run.router}` failed: {explain_error(replayed.run.error)}"))
    else:
        verdict = "the same answer" if same_answer else "a different answer"
        choice = (
            f"the same agents ({_agents_text(chosen[0])})" if chosen[0] == chosen[1]
            else f"other agents ({_agents_text(chosen[1])} instead of {_agents_text(chosen[0])})"
        )
        st.info(f"Counterfactual replay with `{replayed.run.router}`: {choice}, {verdict}.")
    left, right = st.columns(2)
    with left:
        _side(original, f"Original · {original.run.router}", key=f"orig-{original.run.id}")
    with right:
        title = "Resume" if mode == "resume" else f"{mode.capitalize()} replay"
        _side(replayed, f"{title} · {replayed.run.router}", key=f"replay-{replayed.run.id}")


def _counts_text(trace: RunTrace) -> str:
    served, live = trace.resumed_counts()
    return f"{served} step{'' if served == 1 else 's'} served from the record, {live} run live"


def _resume_verdict(resumed: RunTrace) -> None:
    run = resumed.run
    head = f"Resume: {_counts_text(resumed)}"
    if run.status != "ok":
        ended = "was stopped" if run.status == "interrupted" else "failed"
        st.error(as_typed(f"{head}; the resumed run {ended}: {explain_error(run.error)}"))
        return
    answer = run.answer or "(empty answer)"
    if len(answer) > ANSWER_SHOWN:
        answer = answer[:ANSWER_SHOWN - 1] + "…"
    # a step that failed live again (the fix not made yet): ok, but not the whole answer; it can be resumed again
    names = {"decision": "the router's decision", "aggregate": "the aggregation"}
    failed = list(dict.fromkeys(step.agent_id or names.get(step.kind, step.kind) for step in resumed.steps
                                if step.kind in ("decision", "call", "aggregate") and step.failed))
    if failed:
        st.warning(as_typed(f"{head}; the resumed run is ok, but {', '.join(failed)} failed again (resume it once "
                            f"that is fixed). Its answer: {answer}"), icon=":material/warning:")
    else:
        st.success(as_typed(f"{head}; the resumed run is ok. Its answer: {answer}"))


def _resumable(trace: RunTrace) -> bool:
    """Whether to offer Resume: the run did not end ok, or a step of it failed (`resume` has the last word); never for
    an exact replay, which `resume` refuses (its original is the run to resume)."""
    if trace.run.replay_mode == "exact":
        return False
    return trace.run.status != "ok" or any(step.failed for step in trace.steps)


def _run_again(run_id: str, make: Callable[[], Any], error_key: str, refused: str | None = None) -> None:
    """Make a replay or a resume of ``run_id`` (``make()``), then draw the page again with the new run beside it. A
    failure is told in words under ``error_key``; with ``refused``, a `ConfigurationError` (the run is not one this
    can be done to) reads ``refused: why``."""
    try:
        result = make()
    except OrchestraError as exc:
        plain_refusal = refused and isinstance(exc, ConfigurationError) and not isinstance(exc, NotFoundError)
        st.session_state[error_key] = f"{refused}: {exc}" if plain_refusal else explain_error(exc)
        return
    except Exception as exc:  # noqa: BLE001 - told in words; the new run (if any) is in the store
        st.session_state[error_key] = f"Unexpected failure: {type(exc).__name__}: {exc}"
        return
    st.session_state.setdefault(REPLAYS, {}).setdefault(run_id, []).append(result.run_id)
    st.rerun()  # the table above was drawn before the new run: draw the page again with it


def _budget_controls(trace: RunTrace) -> dict[str, Any]:
    """The budget of the run's resume, in an expander: one number input per limit, prefilled with the run's recorded
    budget; open, naming the limit, when the run stopped because its budget ran out (resumed on the same budget it
    would stop there again). Returns the limits the user changed (``None`` for one set to no limit), ``{}`` for
    none."""
    run = trace.run
    # a run recorded before a limit existed ran with that limit's default
    recorded = run.budget().model_dump()
    error = run.error or {}
    ran_out = error.get("limit") if error.get("type") == "BudgetExceeded" else None
    changed: dict[str, Any] = {}
    with st.expander("Budget of the resumed run", expanded=ran_out is not None):
        if ran_out:
            label = BUDGET_LIMITS[ran_out][0] if ran_out in BUDGET_LIMITS else ran_out
            st.warning(f"This run stopped because its **{ran_out}** limit ran out ({error.get('message', '')}): raise "
                       f"*{label}* below before resuming.", icon=":material/speed:")
        st.caption("The run's recorded budget; a limit changed here replaces the recorded one, the others stay. The "
                   "steps served from the record count against it (their calls, tokens and cost are the resumed "
                   "run's too), so a cost or token limit must leave room beyond what they spent.")
        columns = st.columns(3)
        for index, (name, (label, step)) in enumerate(BUDGET_LIMITS.items()):
            kind = type(step)
            no_limit = Budget.model_fields[name].default is None  # 0 reads as none, as in the Chat sidebar
            shown = kind(recorded[name] or 0)  # None (no limit) shows as 0
            # keyed by run: another run opened shows its own budget, not the values typed for this one
            value = columns[index % 3].number_input(label, min_value=kind(0 if no_limit else 1), value=shown, step=step,
                                                    format="%.4f" if name == "max_cost_usd" else None,
                                                    key=f"runs_resume_{name}_{run.id}")
            if value != shown:  # compared with what was shown: a recorded limit 0 would otherwise read as changed to none
                changed[name] = (value or None) if no_limit else value
    return changed


def _resume_controls(app: Orchestra, trace: RunTrace) -> None:
    """The Resume section of a run that can be resumed: what a resume does, the budget it runs on, the button."""
    if not _resumable(trace):
        return
    st.subheader("Resume")
    st.caption("A new run on the same query, router and aggregator: what succeeded here is served from the record "
               "(no model call, nothing paid again), what failed or never ran runs live against the agents and "
               "models as they are now. This run stays as it is.")
    changed = _budget_controls(trace)
    if st.button("Resume this run", key="runs_resume", type="primary"):
        try:
            # as `orchestra resume --budget` and the server: the limits changed replace the recorded ones, the others
            # stay; nothing changed keeps the original's budget as it was recorded
            budget = trace.run.budget(**changed) if changed else None
        except PolicyError as exc:  # refused before anything runs: nothing is stored
            st.session_state["runs_resume_error"] = f"The budget of the resumed run is not valid: {explain_error(exc)}"
        else:
            with st.spinner("Resuming…"):
                _run_again(trace.run.id, lambda: resume(app, trace.run.id, budget=budget), "runs_resume_error",
                           "This run cannot be resumed")
    problem = st.session_state.pop("runs_resume_error", None)
    if problem:
        st.error(as_typed(problem), icon=":material/error:")


def _replay_controls(app: Orchestra, trace: RunTrace) -> None:
    run = trace.run
    st.subheader("Replay")
    left, right = st.columns(2)
    with left:
        st.caption("Exactly: the recorded outputs of every call are served back (no model is called) and the "
                   "decisions must match the recording.")
        if st.button("Replay exactly", key="runs_replay_exact", type="primary"):
            with st.spinner("Replaying…"):
                _run_again(run.id, lambda: replay(app, run.id), "runs_replay_error")
    with right:
        names = routers()
        # "all" (every agent answers) is the plainest contrast; else the first router that is not the run's own
        others = [n for n in names if n != run.router]
        default = "all" if "all" in others else (others[0] if others else names[0])
        other = st.selectbox("Another router", names, key="runs_replay_router", index=names.index(default))
        options_text = st.text_input("Its options (JSON)", key="runs_replay_options", placeholder='{"k": 2}')
        if st.button("Replay with this router", key="runs_replay_other"):
            try:
                options = router_options(options_text)
            except OrchestraError as exc:
                st.session_state["runs_replay_error"] = explain_error(exc)
            else:
                with st.spinner(f"Running the query again with {other}…"):
                    _run_again(run.id, lambda: replay(app, run.id, router=other, **options), "runs_replay_error")
    problem = st.session_state.pop("runs_replay_error", None)
    if problem:
        st.error(problem, icon=":material/error:")


def render() -> None:
    """The Runs page."""
    st.title("Runs")
    app = get_app()
    if app is None:
        st.stop()
    try:
        # the UI stays up while other processes come and go: a run one of them left running when it died shows as
        # interrupted (and can be resumed) here too, not only in a process that opened the store after it died
        app.store.mark_interrupted()
        runs = _filters(app)
    except OrchestraError as exc:
        show_error(exc)
        st.stop()
    if not runs:
        st.info("No run matches. Ask something on the **Chat** page (or `orchestra chat`) and it appears here.")
        return
    st.dataframe(run_rows(runs), hide_index=True, key="runs_table")

    by_id = {run.id: run for run in runs}
    selected = st.selectbox("Open run", list(by_id), format_func=lambda rid: _label(by_id[rid]), key="runs_selected")
    try:
        trace = app.store.get_run(selected)
    except NotFoundError:
        st.warning(f"Run {selected} is no longer in the store.")
        return
    except OrchestraError as exc:
        show_error(exc)
        return

    run = trace.run
    st.subheader(f"Run {run.id}")
    summary = run_summary(trace)
    cols = st.columns(5)
    cols[0].metric("Status", summary["status"])
    cols[1].metric("Router", run.router)
    cols[2].metric("Tokens", summary["tokens"])
    cols[3].metric("Cost", summary["cost"])
    cols[4].metric("Latency", f"{run.latency_ms:.0f} ms")
    if run.answer is not None:
        st.markdown(f"**Answer:** {as_typed(run.answer)}")
    if run.error:
        show_error(run.error)
    if run.replay_mode == "resume":
        st.caption(f"Resume of run `{run.replay_of}`: {_counts_text(trace)}.")
    elif run.replay_of:
        st.caption(f"{(run.replay_mode or '').capitalize()} replay of run `{run.replay_of}`.")
    render_graph(trace)
    with st.expander("Decision tree", expanded=True):
        st.markdown(tree_markdown(trace))
    with st.expander("Steps: tokens, cost and latency"):
        st.dataframe(step_rows(trace), hide_index=True, key="runs_steps")

    _resume_controls(app, trace)
    _replay_controls(app, trace)
    replays = st.session_state.get(REPLAYS, {}).get(run.id, [])
    if replays:
        _compare(app, trace, replays[-1])
    elif run.replay_of:
        try:
            original = app.store.get_run(run.replay_of)
        except OrchestraError:
            return
        st.subheader("Beside its original")
        _compare(app, original, run.id)
