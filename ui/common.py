"""What every page of the UI shares: the application (one `Orchestra` per store URL, cached for the process),
the sidebar's choices, workflows built from them, and errors told in plain words.

Configuration comes from the environment, so ``orchestra ui`` and ``streamlit run`` behave alike:

- ``ORCHESTRA_DB_URL``: the store (default: SQLite under ``~/.orchestra``, as everywhere in Orchestra);
- ``ORCHESTRA_UI_PROFILE``: the team registered at start (``default``: the offline team; ``none``: nothing);
- ``ORCHESTRA_UI_ROUTER`` / ``ORCHESTRA_UI_AGGREGATOR``: the sidebar's initial router and aggregator;
- ``ORCHESTRA_BENCH_RESULTS``: the folder of ``orchestra bench`` JSON reports the Routers page draws.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from typing import Any

import streamlit as st

from orchestra import (
    Aggregator,
    Budget,
    ConfigurationError,
    Orchestra,
    OrchestraError,
    RoutingPolicy,
    StoreError,
    Workflow,
    available_routers,
    load_router,
    router_answers_itself,
    router_loads_checkpoint,
    router_needs_training,
)
from orchestra.aggregate import AGGREGATOR_NAMES, named_aggregator

__all__ = [
    "AGGREGATORS",
    "BUDGET_LIMITS",
    "RunSettings",
    "aggregator_for",
    "as_typed",
    "explain_error",
    "format_cost",
    "get_app",
    "profile_name",
    "router_options",
    "show_error",
    "store_url",
    "workflow_for",
]

AGGREGATORS = AGGREGATOR_NAMES
"""How answers merge: the Refining Agent on a model, a weighted vote, or the answers as they are."""

DEFAULT_ROUTER = "embedding"


def store_url() -> str | None:
    """``$ORCHESTRA_DB_URL``, or ``None`` for Orchestra's default SQLite file."""
    return os.environ.get("ORCHESTRA_DB_URL") or None


def profile_name() -> str:
    """``$ORCHESTRA_UI_PROFILE`` (``default`` unless set; ``none`` registers nothing)."""
    return os.environ.get("ORCHESTRA_UI_PROFILE", "default").strip() or "default"


@st.cache_resource(show_spinner="Opening the store and registering the agents…")
def _open_app(url: str | None, profile: str) -> tuple[Orchestra, tuple[str, ...]]:
    # One Orchestra per (store, profile) for the whole server: the registry it holds is what every session's
    # next message routes over, so an agent onboarded on one page is used by the next chat message.
    app = Orchestra(store=url)
    notes: list[str] = []
    if profile != "none":
        _warm_up_embedder()
    try:
        from orchestra.cli import install_profile  # the CLI's own profile loader, so both register the same team

        notes += install_profile(app, profile)
    except OrchestraError as exc:
        notes.append(f"The {profile!r} team of agents could not be registered: {exc}")
    except ImportError as exc:  # a profile whose module is missing or broken should not take the UI down
        notes.append(f"The {profile!r} team of agents could not be loaded ({exc}); onboard agents on the Agents page.")
    return app, tuple(notes)


def _warm_up_embedder() -> None:
    # The embedding routers' first decision loads the sentence encoder (seconds on a small CPU); loading it
    # while the person reads the page makes their first answer come sooner. Best effort: routing loads it anyway.
    from orchestra.embeddings import warm_up_embedder

    threading.Thread(target=warm_up_embedder, name="orchestra-ui-warm-up", daemon=True).start()


def get_app() -> Orchestra | None:
    """The application for this server's store, or ``None`` after telling the user, in words, why not."""
    url = store_url()
    try:
        app, notes = _open_app(url, profile_name())
    except StoreError as exc:
        st.error(
            f"The trace store could not be opened: {exc}\n\n"
            "Check `ORCHESTRA_DB_URL` (for example `sqlite:///orchestra.db` or "
            "`postgresql+psycopg://user:password@host/orchestra`) and that the database is running, then reload."
        )
        return None
    except OrchestraError as exc:
        st.error(f"Orchestra could not start: {explain_error(exc)}")
        return None
    for note in notes:
        st.sidebar.warning(note)
    try:
        app.registry.refresh()  # take in changes the CLI or another server made to the shared store
    except Exception as exc:  # noqa: BLE001 - a store that went away must read as a message, not a traceback
        st.error(f"The trace store stopped answering: {type(exc).__name__}: {exc}")
        return None
    return app


# -- errors -----------------------------------------------------------------------------------------------------

_PLAIN_WORDS = {
    "ModelUnavailableError": "The model could not be reached: its server is down or refused the connection.",
    "ModelTimeoutError": "The model took too long to answer.",
    "ModelOutputError": "The model answered, but not in the form that was needed.",
    "ModelError": "A model call failed after its retries and fallbacks.",
    "AgentError": "An agent failed while answering.",
    "UnknownAgentError": "The router chose an agent that is not in the registry.",
    "DecisionError": "The router could not reach a decision.",
    "BudgetExceeded": "The run's budget ran out before an answer was reached.",
    "ApprovalRequired": "The run waits for your approval before calling an agent that requires it: Resume it on the Runs page to approve.",
    "ReplayMismatch": "The replay did not follow the recording.",
    "StoreError": "The trace store could not be reached.",
    "UnknownRouterError": "There is no router by that name.",
    "LocalRuntimeMissing": "The embedded local model is not installed.",
    "CardError": "A card has a missing or malformed field.",
    "PolicyError": "A setting is out of range.",
}


_CLI_OPTION = re.compile(r" \(`--option (\w+)=\.\.\.` on the command line, workflow\(.*\) in Python\)")


def explain_error(error: BaseException | dict[str, Any] | None) -> str:
    """One plain sentence for the kind of failure, then Orchestra's own message (which names what is at fault)."""
    if error is None:
        return "unknown error"
    if isinstance(error, dict):
        kind, message = str(error.get("type", "")), str(error.get("message", ""))
    else:
        kind, message = type(error).__name__, str(error)
    if kind == "RunError" and message.startswith("GeneratorExit"):
        # the script that ran it was stopped (Stop pressed, another page opened): the run was cut short
        return "The run was stopped before it finished (Stop was pressed or the page was left)."
    # the core tells a missing router option the command line's way; here it is given in the options box
    message = _CLI_OPTION.sub(lambda m: f" (give it in the router options box as JSON, e.g. {{\"{m[1]}\": ...}})", message)
    lead = _PLAIN_WORDS.get(kind)
    return f"{lead} ({kind}: {message})" if lead else f"{kind}: {message}"


def show_error(error: BaseException | dict[str, Any] | None, *, where: Any = st) -> None:
    """`st.error` with `explain_error`: never a traceback."""
    where.error(explain_error(error), icon=":material/error:")


def format_cost(cost: float | None) -> str:
    """USD with enough digits for sub-cent calls; ``unknown`` when any price was unknown (never a false 0)."""
    return "unknown" if cost is None else f"${cost:.6f}"


# -- text as typed ---------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
# a code span is left as it is (a backslash in it would show); an escaped dollar stays escaped; a bare one is escaped
_DOLLAR = re.compile(r"(`+).*?\1|\\\$|\$")


def as_typed(text: str) -> str:
    """Stored text (a query, an answer, a rationale) as Markdown that shows as it was typed: ``$`` escaped (else
    ``$5 and then $10`` is drawn as LaTeX), single line breaks kept as hard breaks (else a haiku reads as one line).
    The Markdown a model wrote (lists, bold, code) still renders, and HTML stays escaped as in any `st.markdown`."""
    lines = str(text).split("\n")
    out: list[str] = []
    fenced = False
    for index, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
            out.append(line)
            continue
        if fenced:  # code is shown verbatim: no escapes, its line breaks are already kept
            out.append(line)
            continue
        line = _DOLLAR.sub(lambda m: "\\$" if m.group(0) == "$" else m.group(0), line)
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if line.strip() and following.strip() and not _FENCE.match(following) and not line.endswith(("  ", "\\")):
            line += "  "  # two trailing spaces: Markdown's hard line break
        out.append(line)
    return "\n".join(out)


# -- sidebar choices and workflows ------------------------------------------------------------------------------


BUDGET_LIMITS: dict[str, tuple[str, float | int]] = {
    "max_calls": ("Agent calls (max_calls)", 1),
    "max_rounds": ("Router decisions (max_rounds)", 1),
    "max_parallel_calls": ("Calls at once (max_parallel_calls, 0: all at once)", 1),
    "max_cost_usd": ("Cost in USD (max_cost_usd, 0: none)", 0.01),
    "max_tokens": ("Tokens (max_tokens, 0: none)", 1000),
    "max_seconds": ("Seconds (max_seconds, 0: none)", 10.0),
}
"""The limits of a `Budget` as the pages offer them (the Chat sidebar some, the Runs page's Resume all): label (it
names the field, as errors and ``orchestra resume --budget`` do) and step; a float step makes a float input. The
limits that may be ``None`` read 0 as none."""


@dataclass(frozen=True)
class RunSettings:
    """What the sidebar chose: the router (with its options), the aggregator, the cost weight and the budget."""

    router: str
    options_json: str
    aggregator: str
    cost_weight: float
    budget: Budget = Budget()

    @property
    def routing(self) -> RoutingPolicy:
        return RoutingPolicy(cost_weight=self.cost_weight)


def router_options(options_json: str) -> dict[str, Any]:
    """The router's constructor options from the sidebar's JSON text; `ConfigurationError` when it is not a
    JSON object."""
    text = options_json.strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"router options must be a JSON object, e.g. {{\"k\": 2}}: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ConfigurationError(f"router options must be a JSON object, got {type(value).__name__}")
    return value


def aggregator_for(app: Orchestra, name: str) -> Aggregator:
    """The aggregator named in the sidebar, as the CLI builds it (`named_aggregator`)."""
    return named_aggregator(name, app.registry.models())


@st.cache_resource(show_spinner="Preparing the router…", max_entries=16)
def _cached_workflow(
    _app: Orchestra, app_key: str, router: str, options_json: str, aggregator: str, refiner: str, budget_json: str
) -> Workflow:
    # Keyed by what changes the graph: routers keep caches (card embeddings, trained weights) that should
    # survive from one message to the next. The registry is read at each decision, so onboarding needs no rebuild.
    built = load_router(router, **router_options(options_json))
    # a multi-round router writes the answer itself: the sidebar's aggregator would never run
    chosen = None if getattr(built, "multi_round", False) else aggregator_for(_app, aggregator)
    return _app.workflow(built, aggregator=chosen, budget=Budget.model_validate_json(budget_json))


def workflow_for(app: Orchestra, settings: RunSettings) -> Workflow:
    """The workflow for the sidebar's choices (built once per choice and store, then reused)."""
    refiner = ",".join(sorted(m.id for m in app.registry.models())) if settings.aggregator == "refine" else ""
    return _cached_workflow(app, str(id(app)), settings.router, settings.options_json, settings.aggregator, refiner,
                            settings.budget.model_dump_json())


def routers() -> list[str]:
    """Router names the UI can run a query with: every one `load_router` can build, but those that decide only once
    trained on a data set and cannot be built from a saved file (built by name they would fail every message).
    Those that can (`router_loads_checkpoint`) are offered with a box for the file."""
    return [name for name in available_routers() if not router_needs_training(name) or router_loads_checkpoint(name)]


def untrained_routers() -> list[str]:
    """The routers `routers` leaves out."""
    return [name for name in available_routers() if name not in routers()]


def needs_checkpoint(settings: RunSettings) -> bool:
    """The chosen router decides only once trained and no checkpoint file is given for it."""
    return router_needs_training(settings.router) and "checkpoint" not in router_options(settings.options_json)


def initial_router(names: list[str]) -> int:
    """Index of the sidebar's first router: ``$ORCHESTRA_UI_ROUTER``, else ``embedding``, else the first."""
    wanted = os.environ.get("ORCHESTRA_UI_ROUTER", DEFAULT_ROUTER)
    return names.index(wanted) if wanted in names else 0


def initial_aggregator() -> int:
    wanted = os.environ.get("ORCHESTRA_UI_AGGREGATOR", "refine")
    return AGGREGATORS.index(wanted) if wanted in AGGREGATORS else 0


def settings_sidebar(app: Orchestra, *, key: str = "chat") -> RunSettings:
    """Router, options, aggregator and cost weight, chosen in the sidebar."""
    sidebar = st.sidebar
    sidebar.header("Routing")
    names = routers()
    router = sidebar.selectbox(
        "Router", names, index=initial_router(names), key=f"{key}_router",
        help="Agent routers choose which agents answer. Routers that learn from a data set answer from the file "
        "their save() wrote; not listed, as they keep no such file: " + ", ".join(untrained_routers()) + ".",
    )
    options_json = ""
    if router == "fixed":
        agent_ids = [card.id for card in app.registry.agents()]
        picked, gone_key = f"{key}_fixed", f"{key}_fixed_gone"
        # an agent removed meanwhile (another page, another process) would drop out of the box without a word
        gone = [agent for agent in st.session_state.get(picked) or [] if agent not in agent_ids]
        if gone:
            st.session_state[picked] = [agent for agent in st.session_state[picked] if agent in agent_ids]
            st.session_state[gone_key] = gone
        chosen = sidebar.multiselect(
            "Agents the fixed router always calls", agent_ids, key=picked,
            default=None if picked in st.session_state else agent_ids[:1],  # a default beside a set value is refused
            on_change=lambda: st.session_state.pop(gone_key, None),  # said until the person chooses again
        )
        if st.session_state.get(gone_key):
            sidebar.warning(
                f"Removed from the registry since it was chosen: {', '.join(st.session_state[gone_key])}."
                + ("" if chosen else " Choose the agents the fixed router calls."), icon=":material/person_remove:")
        elif not chosen:
            sidebar.warning("Choose the agents the fixed router calls.", icon=":material/group_add:")
        options_json = json.dumps({"agent_ids": chosen}) if chosen else ""
    if router_needs_training(router):
        path = sidebar.text_input(
            "Checkpoint of the trained router", key=f"{key}_checkpoint", placeholder="/path/to/router.pt",
            help="The file the router's save() wrote after training (in Python: fit, then save).",
        ).strip()
        if path:
            options_json = json.dumps({"checkpoint": path})
        else:
            sidebar.warning(f"{router} decides only once trained: give the file its save() wrote.", icon=":material/model_training:")
    with sidebar.expander("Router options (JSON)"):
        extra = st.text_input(
            "Options", value="", key=f"{key}_options", placeholder='{"k": 2, "threshold": 0.35}',
            help="Keyword arguments of the router's constructor.",
        )
        if extra.strip():
            try:
                options_json = json.dumps({**router_options(options_json), **router_options(extra)}, sort_keys=True)
            except ConfigurationError as exc:
                st.error(f"Ignored: {exc}")
    cost_weight = sidebar.slider(
        "Cost weight w", 0.0, 1.0, 0.0, 0.01, key=f"{key}_w",
        help="0: best answer whatever it costs; 1: cheapest. Model routers trade quality against cost with it.",
    )
    answers_itself = router_answers_itself(router)
    aggregator = sidebar.selectbox(
        "Aggregator", AGGREGATORS, index=initial_aggregator(), key=f"{key}_aggregator", disabled=answers_itself,
        help=f"{router} is multi-round: it writes the answer itself, so no aggregator runs." if answers_itself else
        "How the answers of several agents become one: refine (a model merges them), weighted vote, or pass-through.",
    )
    with sidebar.expander("Budget of each run"):
        # 0 means no limit: a number input cannot be left empty
        label, step = BUDGET_LIMITS["max_cost_usd"]
        max_cost = st.number_input(label, min_value=0.0, value=0.0, step=step, format="%.4f", key=f"{key}_max_cost",
                                   help="No model call starts once the run has spent this much. Models without a price count as $0: bound them by tokens.")
        label, step = BUDGET_LIMITS["max_tokens"]
        max_tokens = st.number_input(label, min_value=0, value=0, step=step, key=f"{key}_max_tokens",
                                     help="Prompt and completion tokens over all the run's model calls.")
        label, step = BUDGET_LIMITS["max_seconds"]
        max_seconds = st.number_input(label, min_value=0.0, value=0.0, step=step, key=f"{key}_max_seconds")
    budget = Budget(max_cost_usd=float(max_cost) or None, max_tokens=int(max_tokens) or None, max_seconds=float(max_seconds) or None)
    return RunSettings(router=router, options_json=options_json, aggregator=aggregator, cost_weight=cost_weight, budget=budget)
