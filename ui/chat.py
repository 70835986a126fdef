"""Chat page: a multi-turn conversation with the agents, the router and cost weight chosen in the sidebar, and
under each answer the routing panel (how it was reached) drawn from the stored run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import streamlit as st

from orchestra import ApprovalRequired, NotFoundError, Orchestra, OrchestraError, RunEvent, RunResult, RunTrace, stream_resume

from orchestra.ui.common import (
    RunSettings,
    as_typed,
    explain_error,
    format_cost,
    get_app,
    needs_checkpoint,
    settings_sidebar,
    show_error,
    workflow_for,
)
from orchestra.ui.panel import render_routing_panel

__all__ = ["render"]

MESSAGES = "chat_messages"
SESSION = "chat_session_id"


def _messages() -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = st.session_state.setdefault(MESSAGES, [])  # session state holds Any
    return messages


def _panel_label(trace: RunTrace) -> str:
    run = trace.run
    agents = sorted({s.agent_id for s in trace.steps if s.kind == "call" and s.agent_id})
    return (
        f"Routing: {run.router} → {', '.join(agents) or 'no agent'} · "
        f"{run.prompt_tokens + run.completion_tokens} tokens · {format_cost(run.cost_usd)} · {run.latency_ms:.0f} ms"
    )


def _show_panel(app: Orchestra, run_id: str, *, index: int) -> None:
    try:
        trace = app.store.get_run(run_id)
        label = _panel_label(trace)
    except NotFoundError:
        st.caption(f"(run {run_id} is no longer in the store)")
        return
    except OrchestraError as exc:
        show_error(exc)
        return
    with st.expander(label, expanded=False):
        render_routing_panel(trace, key=f"chat-{index}")
        st.caption("Open the **Runs** page to see this run as a tree and replay it, exactly or with another router.")


def _show_message(app: Orchestra, message: dict[str, Any], index: int) -> None:
    with st.chat_message(message["role"]):
        if message.get("error"):
            st.error(as_typed(message["error"]), icon=":material/error:")
        if message.get("awaiting"):
            agents = ", ".join(f"**{agent_id}**" for agent_id in message["awaiting"])
            st.warning(f"This answer waits for your approval: the router chose {agents}, whose card asks for it before "
                       "each call. Nothing has been called yet.", icon=":material/front_hand:")
            # each call approved on its own: one left unticked is not made (the others run, and are answered)
            approved = [agent_id for agent_id in message["awaiting"]
                        if st.checkbox(f"Approve the call to {agent_id}", value=True, key=f"chat_approve_{index}_{agent_id}")]
            if st.button("Approve and run", key=f"chat_approve_{index}", type="primary"):
                rejected = [agent_id for agent_id in message["awaiting"] if agent_id not in approved]
                _messages()[index] = _approved(app, message["run_id"], rejected)
                st.rerun()
        if message.get("content"):
            st.markdown(as_typed(message["content"]))
        if message.get("out_of_scope"):
            st.caption("No agent fits this request: the router answered that it is out of scope.")
        if message.get("run_id"):
            _show_panel(app, message["run_id"], index=index)


def _describe_event(event: RunEvent) -> str | None:
    data = event.data
    if event.kind == "decision":
        decision = data.get("decision", {})
        if decision.get("kind") == "finish":
            return f"Router finished{' (out of scope)' if decision.get('out_of_scope') else ''}: {decision.get('rationale', '')}"
        chosen = ", ".join(f"**{call['agent_id']}**" for call in decision.get("calls", []))
        rationale = decision.get("rationale", "")
        return f"Router chose {chosen}" + (f" — {as_typed(rationale)}" if rationale else "")
    if event.kind == "call":
        if data.get("error"):
            return f"**{data.get('agent_id')}** failed: {explain_error(data['error'])}"
        return f"**{data.get('agent_id')}** answered in {data.get('latency_ms', 0):.0f} ms"
    if event.kind == "aggregate":
        return "Answers merged."
    if event.kind == "error":
        return f"Problem: {explain_error(data.get('error'))}"
    return None


def _failure_text(result: RunResult) -> str:
    """Why a run failed, in words. When every agent failed because of its model, the model is the news."""
    failed = [obs.error for obs in result.observations if obs.error]
    model_failures = [error for error in failed if error.get("type", "").startswith("Model")]
    if failed and len(failed) == len(result.observations) and model_failures:
        return f"{explain_error(model_failures[0])} Every agent asked failed, so there is no answer."
    return explain_error(result.error)


def _reply(result: RunResult) -> dict[str, Any]:
    """The assistant message to keep for a finished run: its answer, why it failed, or what awaits approval."""
    if isinstance(result.error, ApprovalRequired):
        return {"role": "assistant", "content": "", "awaiting": list(result.error.agent_ids), "run_id": result.run_id}
    if result.status != "ok":
        return {"role": "assistant", "content": "", "error": _failure_text(result), "run_id": result.run_id}
    return {"role": "assistant", "content": result.answer or "", "run_id": result.run_id, "out_of_scope": result.out_of_scope}


def _approved(app: Orchestra, run_id: str, rejected: list[str]) -> dict[str, Any]:
    """The run paused for approval, resumed: approving it is resuming it (its decision served, its calls made but
    for the ``rejected`` agents'), shown as it goes like any run."""
    try:
        events = stream_resume(app, run_id, reject=rejected)
    except OrchestraError as exc:
        return {"role": "assistant", "content": "", "error": f"The approved run could not be resumed: {explain_error(exc)}",
                "run_id": run_id}
    return _follow(events, "Running the approved calls…")


def _answer(app: Orchestra, settings: RunSettings, query: str) -> dict[str, Any]:
    """Run the query, showing each step as it happens; returns the assistant message to keep."""
    if settings.router == "fixed" and not settings.options_json:  # the sidebar's box is where its agents are chosen
        return {"role": "assistant", "content": "",
                "error": "The fixed router has no agent to call: choose them in the sidebar, under "
                         "“Agents the fixed router always calls”."}
    if needs_checkpoint(settings):
        return {"role": "assistant", "content": "",
                "error": f"The {settings.router} router decides only once trained: give the file its save() wrote in the "
                         "sidebar, under “Checkpoint of the trained router”."}
    try:
        workflow = workflow_for(app, settings)
    except OrchestraError as exc:
        return {"role": "assistant", "content": "", "error": f"The router could not be prepared: {explain_error(exc)}"}
    return _follow(workflow.stream(query, session_id=st.session_state.get(SESSION), routing=settings.routing),
                   f"Routing with {settings.router}…")


def _follow(events: Iterator[RunEvent], label: str) -> dict[str, Any]:
    """Show a run's ``events`` as they come (each step under ``label``, the model writing, the answer as it is
    written); returns the assistant message to keep."""
    status = st.status(label, expanded=True)
    result: RunResult | None = None
    live = status.empty()  # the model answer being streamed, token by token
    streamed: dict[str, str] = {}
    answer_box = st.empty()  # the run's answer, under the steps, as it is written
    answer = ""
    try:
        for event in events:
            if event.kind == "run_finished":
                result = event.data["result"]
                continue
            if event.kind == "answer":
                answer = ("" if event.data.get("restart") else answer) + event.data.get("delta", "")
                answer_box.markdown(as_typed(answer))
                continue
            if event.kind == "token":
                step = event.data.get("step", "")
                so_far = "" if event.data.get("restart") else streamed.get(step, "")  # a fallback starts over
                streamed[step] = so_far + event.data.get("delta", "")
                live.markdown(f"_{event.data.get('purpose') or 'model'} is writing:_ {as_typed(streamed[step])}")
                continue
            line = _describe_event(event)
            if line:
                status.write(line)
    except OrchestraError as exc:
        status.update(label="The request could not be run", state="error")
        return {"role": "assistant", "content": "", "error": explain_error(exc)}
    except Exception as exc:  # noqa: BLE001 - a person sees a sentence, not a traceback; the run is recorded
        status.update(label="The request failed", state="error")
        return {"role": "assistant", "content": "", "error": f"Unexpected failure: {type(exc).__name__}: {exc}"}
    assert result is not None
    st.session_state[SESSION] = result.session_id
    if isinstance(result.error, ApprovalRequired):
        status.update(label="Waiting for your approval", state="complete", expanded=False)
    elif result.status != "ok":
        status.update(label="The run failed", state="error", expanded=False)
    else:
        answered = ", ".join(obs.agent_id for obs in result.observations if obs.ok) or "the router"
        status.update(label=f"Answered by {answered} in {result.latency_ms:.0f} ms", state="complete", expanded=False)
    return _reply(result)


def render() -> None:
    """The Chat page."""
    st.title("Chat")
    app = get_app()
    if app is None:
        st.stop()
    settings = settings_sidebar(app)
    if st.sidebar.button("New conversation", icon=":material/restart_alt:"):
        st.session_state[MESSAGES] = []
        st.session_state[SESSION] = None
    st.sidebar.caption(
        f"Registry v{app.registry.version}: {len(app.registry.agents())} agents, {len(app.registry.models())} models."
    )
    if not app.registry.agents():
        st.info("No agent is registered yet. Onboard one on the **Agents and models** page, then ask here.")

    messages = _messages()
    for index, message in enumerate(messages):
        _show_message(app, message, index)
        answered = index + 1 < len(messages) and messages[index + 1]["role"] == "assistant"
        if message["role"] == "user" and not answered:
            st.caption("No answer: this run was stopped before it finished (Stop pressed or the page left).")

    # while a run is under way the box is locked and its button stops the run: a second message would
    # otherwise interrupt the first one half-way
    query = st.chat_input("Ask the agents…", submit_mode="stop")
    if query is not None and not query.strip():
        st.warning("Type a question first: a message of spaces asks nothing.", icon=":material/edit:")
    elif query:
        user = {"role": "user", "content": query}
        messages.append(user)
        _show_message(app, user, len(messages) - 1)
        with st.chat_message("assistant"):
            reply = _answer(app, settings, query)
        messages.append(reply)
        st.rerun()  # draw the answer with its routing panel like every earlier one
