"""Agents and models page: the registry as tables, forms to onboard an agent or a model (each problem shown
beside its field), a YAML/JSON card box, and removal. A change is used by the next chat message: the runtime
looks agents up in the registry at every decision, so nothing restarts."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import streamlit as st
from pydantic import ValidationError

from orchestra import (
    AgentCard, CardError, DuplicateIdError, ModelCard, NotFoundError, Orchestra, OrchestraError, parse_cards,
)
from orchestra.agent import check_function, check_functions

from orchestra.ui.common import explain_error, get_app

__all__ = ["agent_rows", "model_rows", "render", "validate_card"]

FORM_ERROR = "_form"
"""Key of problems that belong to the card as a whole rather than to one field."""

AGENT_FIELDS = ("id", "name", "description", "skills", "examples", "backend", "model", "system_prompt", "function", "endpoint")
MODEL_FIELDS = (
    "id", "model", "base_url", "api_key_env", "description", "input_price_per_mtok", "output_price_per_mtok",
    "context_window", "local", "gguf_path",
)


def agent_rows(app: Orchestra) -> list[dict[str, Any]]:
    """The registry's agents as table rows."""
    return [
        {
            "id": card.id,
            "name": card.name,
            "backend": card.backend,
            "model / function / endpoint": card.model or card.function or card.endpoint or "",
            "skills": ", ".join(card.skills),
            "examples": len(card.examples),
            "description": card.description,
        }
        for card in app.registry.agents()
    ]


def model_rows(app: Orchestra) -> list[dict[str, Any]]:
    """The registry's models as table rows (unknown prices stay unknown, never 0)."""

    def price(value: float | None) -> str:
        return "unknown" if value is None else f"{value:g}"

    return [
        {
            "id": card.id,
            "model": card.model,
            "endpoint": "local (embedded)" if card.local else (card.base_url or "OpenAI"),
            "$/Mtok in": price(card.input_price_per_mtok),
            "$/Mtok out": price(card.output_price_per_mtok),
            "context": card.context_window or "",
            "description": card.description,
        }
        for card in app.registry.models()
    ]


def _field_of(error: Mapping[str, Any], fields: tuple[str, ...]) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    if loc and loc[0] in fields:
        return loc[0]
    # checks across fields ("backend 'function' needs field 'function'") name the field in their message
    named = re.findall(r"field '(\w+)'", str(error.get("msg", "")))
    return next((name for name in named if name in fields), FORM_ERROR)


_FRIENDLY = {
    ("id", "string_pattern_mismatch"): "Use letters, digits and _ . : / @ + - only, no spaces, starting with a letter "
                                       "or digit (at most 128 characters).",
    ("id", "string_type"): "An id is required.",
    ("description", "string_too_short"): "A description is required: routers read it to decide when to call this.",
    ("api_key_env", "string_pattern_mismatch"): "The name of an environment variable, in capitals (OPENAI_API_KEY), "
                                                "not the key itself.",
}


def validate_card(kind: type[AgentCard] | type[ModelCard], data: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """The card, or every problem found, keyed by the field at fault (`FORM_ERROR` for the card as a whole)."""
    fields = AGENT_FIELDS if kind is AgentCard else MODEL_FIELDS
    try:
        return kind.model_validate(data), {}
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors():
            field = _field_of(error, fields)
            message = _FRIENDLY.get((field, error.get("type", "")), str(error["msg"]).removeprefix("Value error, "))
            errors.setdefault(field, message)
        return None, errors


def _check_function(path: str) -> str | None:
    # The registry imports a function agent at its first call; checking now tells the person while they type.
    try:
        check_function(path)
    except CardError as exc:
        return str(exc).removeprefix("field 'function': ")
    return None


def _errors(kind: str) -> dict[str, str]:
    errors: dict[str, str] = st.session_state.setdefault(f"{kind}_form_errors", {})  # session state holds Any
    return errors


def _field_error(kind: str, field: str) -> None:
    message = _errors(kind).get(field)
    if message:
        st.error(message, icon=":material/error:")


def _text(key: str) -> str:
    return str(st.session_state.get(key) or "").strip()


def _agent_data() -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": _text("agent_id"),
        "description": _text("agent_description"),
        "backend": st.session_state.get("agent_backend", "model"),
        "skills": [s.strip() for s in _text("agent_skills").split(",") if s.strip()],
        "examples": [line.strip() for line in _text("agent_examples").splitlines() if line.strip()],
    }
    for field in ("name", "system_prompt", "function", "endpoint"):
        if _text(f"agent_{field}"):
            data[field] = _text(f"agent_{field}")
    model = st.session_state.get("agent_model")
    if model:
        data["model"] = model
    return data


def _model_data() -> dict[str, Any]:
    data: dict[str, Any] = {"id": _text("model_id"), "description": _text("model_description"),
                            "local": bool(st.session_state.get("model_local"))}
    for field in ("model", "base_url", "api_key_env", "input_price_per_mtok", "output_price_per_mtok", "context_window", "gguf_path"):
        if _text(f"model_{field}"):
            data[field] = _text(f"model_{field}")
    return data


_EMPTY: dict[str, Any] = {"agent_backend": "model", "model_local": False}
"""The form widgets whose empty value is not the empty string."""


def _commit(kind: str, fields: tuple[str, ...], add: Callable[[], Any], label: str) -> bool:
    errors = _errors(kind)
    try:
        add()
    except DuplicateIdError as exc:
        errors["id"] = f"{kind} id {exc.id!r} is already registered: pick another id, or remove the existing {kind} first."
    except CardError as exc:
        errors[exc.field if exc.field in fields else FORM_ERROR] = str(exc)
    except OrchestraError as exc:
        errors[FORM_ERROR] = explain_error(exc)
    else:
        st.session_state[f"{kind}_notice"] = label
        for field in fields:
            # An empty form for the next card. Set, not deleted: a deleted key leaves a form's widgets showing
            # what the browser holds, so the next press re-sent the same card (a duplicate-id error).
            st.session_state[f"{kind}_{field}"] = _EMPTY.get(f"{kind}_{field}", "")
        return True
    return False


def _onboard_agent(app: Orchestra) -> None:
    card, errors = validate_card(AgentCard, _agent_data())
    if card is not None and card.backend == "function" and card.function:
        problem = _check_function(card.function)
        if problem:
            errors["function"] = problem
    st.session_state["agent_form_errors"] = errors
    if errors:
        return
    _commit(
        "agent", AGENT_FIELDS, lambda: app.registry.add_agent(card),
        f"Agent **{card.id}** onboarded (registry v{app.registry.version + 1}): the next chat message can route to it.",
    )


def _onboard_model(app: Orchestra) -> None:
    card, errors = validate_card(ModelCard, _model_data())
    st.session_state["model_form_errors"] = errors
    if errors:
        return
    _commit("model", MODEL_FIELDS, lambda: app.registry.add_model(card),
            f"Model **{card.id}** added (registry v{app.registry.version + 1}).")


def _onboard_yaml(app: Orchestra) -> None:
    kind = st.session_state.get("yaml_kind", "agent")
    errors: dict[str, str] = {}
    st.session_state["yaml_form_errors"] = errors
    # All or nothing, as `orchestra agents add FILE`: every card is read and checked before any is added.
    try:
        if kind == "agent":
            agents: list[AgentCard] = parse_cards(_text("yaml_text") or "", AgentCard)
            check_functions(agents)
            cards: list[AgentCard] | list[ModelCard] = app.registry.add_agents(agents)
        else:
            cards = app.registry.add_models(parse_cards(_text("yaml_text") or "", ModelCard))
    except DuplicateIdError as exc:  # its hint names Python calls; here the way out is another id or removal
        errors["text"] = f"{kind} id {exc.id!r} is already registered: pick another id, or remove the existing {kind} first. Nothing was added."
        return
    except OrchestraError as exc:
        errors["text"] = f"{explain_error(exc)} Nothing was added."
        return
    st.session_state["yaml_notice"] = f"Added {kind}s: {', '.join(card.id for card in cards)} (registry v{app.registry.version})."
    st.session_state.pop("yaml_text", None)


def _remove(app: Orchestra, kind: str) -> None:
    target = st.session_state.get(f"remove_{kind}")
    if not target:
        return
    try:
        (app.registry.remove_agent if kind == "agent" else app.registry.remove_model)(target)
    except (NotFoundError, OrchestraError) as exc:
        st.session_state["remove_notice"] = ("error", explain_error(exc))
    else:
        st.session_state["remove_notice"] = ("ok", f"Removed {kind} **{target}** (registry v{app.registry.version}).")


def _notice(key: str) -> None:
    message = st.session_state.pop(key, None)
    if message:
        st.success(message, icon=":material/check_circle:")


def _agent_form(app: Orchestra) -> None:
    _notice("agent_notice")
    model_ids = [""] + [card.id for card in app.registry.models()]
    with st.form("onboard_agent", clear_on_submit=False):
        st.text_input("Id", key="agent_id", placeholder="weather", help="Letters, digits and _.:/@+- (max 128).")
        _field_error("agent", "id")
        st.text_input("Name (optional)", key="agent_name")
        _field_error("agent", "name")
        st.text_area("Description", key="agent_description",
                     help="What the agent does, in prose. Routers read it: this is how the agent joins routing.")
        _field_error("agent", "description")
        st.text_input("Skills (comma-separated)", key="agent_skills", placeholder="forecasts, temperature")
        _field_error("agent", "skills")
        st.text_area("Example queries (one per line)", key="agent_examples")
        _field_error("agent", "examples")
        st.selectbox("Backend", ["model", "function", "endpoint"], key="agent_backend",
                     help="model: a system prompt on a model card; function: a Python callable; endpoint: an "
                          "OpenAI-compatible HTTP agent.")
        _field_error("agent", "backend")
        st.selectbox("Model (backend model)", model_ids, key="agent_model",
                     format_func=lambda m: m or "(the router's or refiner's choice)")
        _field_error("agent", "model")
        st.text_area("System prompt (backend model)", key="agent_system_prompt")
        _field_error("agent", "system_prompt")
        st.text_input("Function (backend function)", key="agent_function", placeholder="package.module:callable")
        _field_error("agent", "function")
        st.text_input("Endpoint URL (backend endpoint)", key="agent_endpoint", placeholder="http://127.0.0.1:9000/v1")
        _field_error("agent", "endpoint")
        _field_error("agent", FORM_ERROR)
        st.form_submit_button("Onboard agent", type="primary", on_click=_onboard_agent, args=(app,))


def _model_form(app: Orchestra) -> None:
    _notice("model_notice")
    with st.form("add_model", clear_on_submit=False):
        st.text_input("Id", key="model_id", placeholder="gpt-4o-mini")
        _field_error("model", "id")
        st.text_input("Model name at the endpoint (default: the id)", key="model_model")
        _field_error("model", "model")
        st.text_input("Base URL (empty: the OpenAI API)", key="model_base_url", placeholder="http://127.0.0.1:8080/v1")
        _field_error("model", "base_url")
        st.text_input("API key environment variable", key="model_api_key_env", placeholder="OPENAI_API_KEY",
                      help="The name of the variable only: the key itself is never stored.")
        _field_error("model", "api_key_env")
        st.text_area("Description", key="model_description", help="Size, strengths, price class: model routers read it.")
        _field_error("model", "description")
        left, right = st.columns(2)
        with left:
            st.text_input("USD per million prompt tokens (empty: unknown)", key="model_input_price_per_mtok")
            _field_error("model", "input_price_per_mtok")
        with right:
            st.text_input("USD per million completion tokens (empty: unknown)", key="model_output_price_per_mtok")
            _field_error("model", "output_price_per_mtok")
        st.text_input("Context window (tokens)", key="model_context_window")
        _field_error("model", "context_window")
        st.checkbox("Served by the embedded local llama.cpp server", key="model_local")
        st.text_input("GGUF file (local models)", key="model_gguf_path")
        _field_error("model", "gguf_path")
        _field_error("model", FORM_ERROR)
        st.form_submit_button("Add model", type="primary", on_click=_onboard_model, args=(app,))


def _yaml_form(app: Orchestra) -> None:
    _notice("yaml_notice")
    with st.form("yaml_cards"):
        st.radio("Cards of", ["agent", "model"], key="yaml_kind", horizontal=True)
        st.text_area("One card or a list, in YAML or JSON", key="yaml_text", height=200,
                     placeholder="id: shouter\ndescription: Repeats the request in capitals.\nbackend: function\n"
                                 "function: mypkg.agents:shout")
        _field_error("yaml", "text")
        st.form_submit_button("Add cards", on_click=_onboard_yaml, args=(app,))


def _remove_forms(app: Orchestra) -> None:
    notice = st.session_state.pop("remove_notice", None)
    if notice:
        (st.success if notice[0] == "ok" else st.error)(notice[1])
    left, right = st.columns(2)
    with left:
        agents = [card.id for card in app.registry.agents()]
        st.selectbox("Agent", agents, key="remove_agent", index=None, placeholder="choose an agent")
        st.button("Remove agent", on_click=_remove, args=(app, "agent"), disabled=not agents)
    with right:
        models = [card.id for card in app.registry.models()]
        st.selectbox("Model", models, key="remove_model", index=None, placeholder="choose a model")
        st.button("Remove model", on_click=_remove, args=(app, "model"), disabled=not models)


def render() -> None:
    """The Agents and models page."""
    st.title("Agents and models")
    app = get_app()
    if app is None:
        st.stop()
    st.caption(
        f"Registry v{app.registry.version}. Changes apply at the next routing decision of every chat: no restart."
    )
    st.subheader(f"Agents ({len(app.registry.agents())})")
    rows = agent_rows(app)
    if rows:
        st.dataframe(rows, hide_index=True, key="agents_table")
    else:
        st.info("No agents yet: onboard one below.")
    st.subheader(f"Models ({len(app.registry.models())})")
    rows = model_rows(app)
    if rows:
        st.dataframe(rows, hide_index=True, key="models_table")
    else:
        st.info("No models yet. Agents with the model backend need one; function agents do not.")
    tabs = st.tabs(["Onboard an agent", "Add a model", "Cards from YAML/JSON", "Remove"])
    with tabs[0]:
        _agent_form(app)
    with tabs[1]:
        _model_form(app)
    with tabs[2]:
        _yaml_form(app)
    with tabs[3]:
        _remove_forms(app)
