"""The `orchestra` command: onboarding from card files, runs and replay, typed errors with exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestra.cli import app
from orchestra.store import open_store
from orchestra.trace import RunRecord

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    # A function agent the CLI can import by path, as a user's package would provide.
    (tmp_path / "cli_agents.py").write_text(
        "def shout(query):\n    return query.upper() + '!'\n"
        "def brackets(query):\n    return '[/x] [bold]' + query\n"
        "def broken(query):\n    raise ValueError('bad [/y] input')\n"
        "def refuses(query):\n    from orchestra import AgentReply\n    return AgentReply(answer='Sorry, not mine.', declined=True)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"sqlite:///{tmp_path / 'cli.db'}"


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_onboard_chat_show_and_replay(db: str, tmp_path: Path) -> None:
    cards = tmp_path / "agents.yaml"
    cards.write_text("- id: shout\n  description: Repeats the request loudly.\n  backend: function\n  function: cli_agents:shout\n")
    code, out = invoke("agents", "add", str(cards), "--db", db)
    assert code == 0 and "added agent shout" in out
    code, out = invoke("agents", "list", "--json", "--db", db)
    assert [a["id"] for a in json.loads(out)] == ["shout"]

    code, out = invoke("chat", "hello there", "--router", "all", "--profile", "none", "--aggregator", "pass-through", "--db", db)
    assert code == 0 and "HELLO THERE!" in out and "agents: shout" in out
    run_id = out.split("run ")[1].split()[0]

    code, out = invoke("runs", "list", "--db", db)
    assert code == 0 and run_id in out  # whole, at any terminal width: it is what `runs show` takes
    code, out = invoke("runs", "show", run_id, "--db", db)
    assert code == 0 and "decision" in out and "HELLO THERE!" in out
    code, out = invoke("replay", run_id, "--profile", "none", "--db", db)
    assert code == 0 and "exact replay of" in out


def test_the_footer_tells_an_agent_that_declined_from_one_that_answered(db: str, tmp_path: Path) -> None:
    cards = tmp_path / "agents.yaml"
    cards.write_text("- id: shout\n  description: Repeats loudly.\n  backend: function\n  function: cli_agents:shout\n"
                     "- id: nope\n  description: Declines.\n  backend: function\n  function: cli_agents:refuses\n")
    assert invoke("agents", "add", str(cards), "--db", db)[0] == 0
    code, out = invoke("chat", "hello", "--router", "all", "--profile", "none", "--aggregator", "refine", "--db", db)
    assert code == 0 and out.startswith("HELLO!") and "agents: shout, nope (declined)" in out


def test_runs_show_and_replay_take_the_start_of_a_run_id(db: str, tmp_path: Path) -> None:
    cards = tmp_path / "agents.yaml"
    cards.write_text("- id: shout\n  description: Repeats the request loudly.\n  backend: function\n  function: cli_agents:shout\n")
    assert invoke("agents", "add", str(cards), "--db", db)[0] == 0
    ids = []
    for query in ("first", "second"):
        code, out = invoke("chat", query, "--router", "all", "--profile", "none", "--aggregator", "pass-through", "--db", db)
        ids.append(out.split("run ")[1].split()[0])
    first, second = ids
    common = next(n for n in range(33) if first[n] != second[n])  # length of the prefix both share
    short = first[: common + 1]
    code, out = invoke("runs", "show", short, "--db", db)
    assert code == 0 and first in out and "FIRST!" in out
    code, out = invoke("replay", short, "--profile", "none", "--db", db)
    assert code == 0 and f"exact replay of {first}" in " ".join(out.split())
    store = open_store(db)
    for run_id in ("feed" + "0" * 28, "feed" + "1" * 28):
        store.start_run(RunRecord(id=run_id, session_id="s", query="q", router="all"))
    code, out = invoke("runs", "show", "feed", "--db", db)
    assert code == 2 and "run id 'feed' is ambiguous" in out and "feed0000" in out and "feed1111" in out
    code, out = invoke("runs", "show", "feed1", "--db", db)
    assert code == 0 and "feed" + "1" * 28 in out
    code, out = invoke("runs", "show", first[:common + 1] + "zz", "--db", db)
    assert code == 2 and "no run with id" in out


def test_text_in_square_brackets_is_printed_as_it_is(db: str, tmp_path: Path) -> None:
    """Answers, queries, descriptions and error messages are text, not Rich markup: ``[/x]`` used to crash
    `runs show` and ``[bold]`` vanished."""
    cards = tmp_path / "agents.yaml"
    cards.write_text(
        "- id: brackets\n  description: Says [bold] things.\n  backend: function\n  function: cli_agents:brackets\n"
        "- id: broken\n  description: Fails.\n  backend: function\n  function: cli_agents:broken\n"
    )
    assert invoke("agents", "add", str(cards), "--db", db)[0] == 0
    code, out = invoke("agents", "list", "--db", db)
    assert code == 0 and "Says [bold] things." in out
    code, out = invoke("chat", "q [/z]", "--router", "all", "--profile", "none", "--aggregator", "pass-through", "--db", db)
    assert code == 0 and "[/x] [bold]q [/z]" in out and "broken (failed)" in out, out
    # why it failed is said on the spot, not only in `runs show`
    assert "agent broken failed: AgentError: agent 'broken' failed: ValueError: bad [/y] input" in out, out
    run_id = out.split("run ")[1].split()[0]
    code, out = invoke("runs", "list", "--db", db)
    assert code == 0 and "q [/z]" in out
    code, out = invoke("runs", "show", run_id, "--db", db)
    assert code == 0 and "query: q [/z]" in out and "[/x] [bold]q [/z]" in out and "ValueError: bad [/y]" in out, out


def test_bench_errors_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    """Every `orchestra bench` command reports bad input as the typed error in one line, never a traceback."""
    missing = str(tmp_path / "nowhere")
    for args, message in [
        (["bench", "models", "--data", missing], "DataError"),
        (["bench", "agents", "--data", missing], "DataError"),
        (["bench", "fusion", "--data", missing], "DataError"),
        (["bench", "models", "--data", str(tmp_path), "--weights", "0,2"], "PolicyError: cost weight 2.0 is outside [0, 1]"),
    ]:
        code, out = invoke(*args)
        assert code == 2 and message in out and "Traceback" not in out, (args, out)
        assert len(out.strip().splitlines()) == 1, out  # never wrapped, however long (stderr is no terminal here)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("- id: a\n  description: [unclosed\n")
    code, out = invoke("agents", "add", str(bad_yaml), "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 2 and out.startswith("CardError") and len(out.strip().splitlines()) == 1, out


def test_chat_and_replay_take_router_options(db: str, tmp_path: Path) -> None:
    cards = tmp_path / "agents.yaml"
    cards.write_text("- id: shout\n  description: Repeats the request loudly.\n  backend: function\n  function: cli_agents:shout\n")
    assert invoke("agents", "add", str(cards), "--db", db)[0] == 0
    base = ("--profile", "none", "--aggregator", "pass-through", "--db", db)
    code, out = invoke("chat", "hi", "--router", "fixed", *base)
    assert code == 2 and "router 'fixed' needs option 'agent_ids'" in out
    code, out = invoke("chat", "hi", "--router", "fixed", "--option", 'agent_ids=["shout"]', *base)
    assert code == 0 and "HI!" in out, out
    run_id = out.split("run ")[1].split()[0]
    code, out = invoke("replay", run_id, "--router", "embedding", "--option", "k=many", "--profile", "none", "--db", db)
    assert code == 2 and "router 'embedding' option 'k'" in out
    code, out = invoke("replay", run_id, "--option", "k=2", "--profile", "none", "--db", db)
    assert code == 2 and "an exact replay uses the recorded router" in out
    code, out = invoke("replay", run_id, "--router", "fixed", "--option", 'agent_ids=["shout"]', "--profile", "none", "--db", db)
    assert code == 0 and "counterfactual replay of" in out, out


def test_chat_takes_a_budget_and_names_a_wrong_one(db: str, tmp_path: Path) -> None:
    cards = tmp_path / "agents.yaml"
    cards.write_text("- id: shout\n  description: Loud.\n  backend: function\n  function: cli_agents:shout\n"
                     "- id: brackets\n  description: Brackets.\n  backend: function\n  function: cli_agents:brackets\n")
    assert invoke("agents", "add", str(cards), "--db", db)[0] == 0
    base = ("--router", "all", "--profile", "none", "--aggregator", "pass-through", "--db", db)
    code, out = invoke("chat", "hi", "--budget", "max_calls=1", *base)
    assert code == 1 and "BudgetExceeded: budget exceeded: max_calls allowed 1, 2 needed" in out
    run_id = out.split("run ")[1].split()[0]
    with open_store(db) as store:
        assert store.get_run(run_id).run.meta["budget"]["max_calls"] == 1
    code, out = invoke("runs", "show", run_id, "--db", db)
    assert code == 0 and "budget: max_rounds=4, max_calls=1" in out  # what the run ran into
    code, out = invoke("chat", "hi", "--budget", "max_calls=2", "--budget", "max_tokens=1000", *base)
    assert code == 0 and "HI!" in out
    code, out = invoke("chat", "hi", "--budget", "max_cost=1", *base)
    assert code == 2 and "PolicyError: Budget.max_cost: Extra inputs are not permitted" in out
    code, out = invoke("chat", "hi", "--budget", "max_tokens=0", *base)
    assert code == 2 and "Budget.max_tokens: Input should be greater than or equal to 1" in out
    code, out = invoke("chat", "hi", "--budget", "max_tokens", *base)
    assert code == 2 and "--budget expects key=value, got 'max_tokens'" in out
    code, out = invoke("chat", "hi", "--budget", "max_tokens=1", "--budget", "max_tokens=50000", *base)
    assert code == 2 and "--budget max_tokens is given twice" in out


def test_chat_refuses_an_unknown_session_and_runs_list_an_unknown_status(db: str) -> None:
    code, out = invoke("chat", "hi", "--session", "no-such-session", "--router", "all", "--profile", "none", "--db", db)
    assert code == 2 and "NotFoundError: no session with id 'no-such-session'" in out
    code, out = invoke("runs", "list", "--status", "bogus", "--db", db)
    assert code == 2 and "--status must be one of running, ok, error, interrupted" in out


def test_bad_card_is_refused_with_the_field_and_exit_code_2(db: str, tmp_path: Path) -> None:
    cards = tmp_path / "bad.json"
    cards.write_text(json.dumps([{"id": "ok", "description": "fine", "backend": "function", "function": "cli_agents:shout"}, {"id": "broken"}]))
    code, out = invoke("agents", "add", str(cards), "--db", db)
    assert code == 2 and "description" in out
    code, out = invoke("agents", "list", "--json", "--db", db)
    assert json.loads(out) == []  # all or nothing: the valid card was not added either


def test_duplicate_and_unknown_ids(db: str, tmp_path: Path) -> None:
    cards = tmp_path / "a.yaml"
    cards.write_text("id: shout\ndescription: loud\nbackend: function\nfunction: cli_agents:shout\n")
    assert invoke("agents", "add", str(cards), "--db", db)[0] == 0
    code, out = invoke("agents", "add", str(cards), "--db", db)
    assert code == 2 and "already registered" in out
    code, out = invoke("agents", "remove", "nobody", "--db", db)
    assert code == 2 and "nobody" in out
    code, out = invoke("runs", "show", "no-such-run", "--db", db)
    assert code == 2 and "no-such-run" in out
    code, out = invoke("chat", "hi", "--router", "no-such-router", "--profile", "none", "--db", db)
    assert code == 2 and "unknown router" in out


def test_store_commands_start_without_langgraph_and_still_mark_dead_runs(db: str, tmp_path: Path) -> None:
    """`agents`, `models` and `runs` only read or edit the store, so they skip LangGraph's second of imports;
    they still mark a dead process's run as interrupted, as opening an `Orchestra` does."""
    from orchestra.store import open_store
    from orchestra.trace import RunRecord

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    open_store(db).start_run(
        RunRecord(id="orphan", session_id="s", query="left behind", router="all", meta={"pid": dead.pid, "host": socket.gethostname()})
    )
    cards = tmp_path / "agents.yaml"
    cards.write_text("id: shout\ndescription: Repeats the request loudly.\nbackend: function\nfunction: cli_agents:shout\n")
    code = (
        "import sys, json; from typer.testing import CliRunner; from orchestra.cli import app;"
        "outs = [CliRunner().invoke(app, [*a.split('|'), '--db', sys.argv[1]]) for a in sys.argv[2:]];"
        "print(json.dumps([[r.exit_code, r.output] for r in outs] + ['langgraph' in sys.modules]))"
    )
    commands = [f"agents|add|{cards}", "agents|list", "models|list", "runs|list|--status|interrupted", "runs|show|orphan", "agents|remove|shout"]
    out = subprocess.run([sys.executable, "-c", code, db, *commands], capture_output=True, text=True, check=True, cwd=tmp_path)
    *results, langgraph_loaded = json.loads(out.stdout)
    assert [exit_code for exit_code, _ in results] == [0] * len(commands), results
    assert "added agent shout" in results[0][1] and "shout" in results[1][1] and "removed agent shout" in results[5][1]
    assert "orphan" in results[3][1] and "Interrupted" in results[4][1]
    assert langgraph_loaded is False


def test_a_card_file_is_added_all_or_nothing(db: str, tmp_path: Path) -> None:
    """A later card that clashes with the registry, repeats an id or names a function that does not import
    leaves the registry as it was: the cards before it are not added either."""
    first = tmp_path / "first.yaml"
    first.write_text("id: shout\ndescription: loud\nbackend: function\nfunction: cli_agents:shout\n")
    assert invoke("agents", "add", str(first), "--db", db)[0] == 0
    card = "- id: {id}\n  description: d\n  backend: function\n  function: {function}\n"
    cases = {
        "clash": (card.format(id="new1", function="cli_agents:shout") + card.format(id="shout", function="cli_agents:shout"), "--update"),
        "twice": (card.format(id="new2", function="cli_agents:shout") * 2, "twice"),
        "typo": (card.format(id="new3", function="cli_agents:shout") + card.format(id="new4", function="cli_agents:nope"), "'new4': field 'function': cannot import"),
        "module": (card.format(id="new5", function="no_such_module:f"), "ModuleNotFoundError"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        code, out = invoke("agents", "add", str(path), "--db", db)
        assert code == 2 and message in out, (name, out)
        code, out = invoke("agents", "list", "--json", "--db", db)
        assert [a["id"] for a in json.loads(out)] == ["shout"], name
    models = tmp_path / "models.yaml"
    models.write_text("- id: m1\n  description: d\n  base_url: http://127.0.0.1:9/v1\n- id: m1\n  description: again\n  base_url: http://127.0.0.1:9/v1\n")
    code, out = invoke("models", "add", str(models), "--db", db)
    assert code == 2 and "twice" in out
    code, out = invoke("models", "list", "--json", "--db", db)
    assert code == 0 and json.loads(out) == []
    models.write_text("- id: m1\n  description: d\n  base_url: http://127.0.0.1:9/v1\n")
    assert invoke("models", "add", str(models), "--db", db)[0] == 0
    code, out = invoke("models", "list", "--json", "--db", db)
    assert [(m["id"], m["base_url"]) for m in json.loads(out)] == [("m1", "http://127.0.0.1:9/v1")]
    code, out = invoke("agents", "add", str(first), "--update", "--db", db)
    assert code == 0 and "updated agent shout" in out


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    code, out = invoke("--version")
    assert code == 0 and out.strip() == f"orchestra {version('orchestra-routing')}"


def test_ui_without_streamlit_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel installed without the ``ui`` extra still holds orchestra.ui: `orchestra ui` must say which extra
    to install instead of starting `python -m streamlit` into "No module named streamlit"."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "streamlit" else real(name, *a))
    started: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: started.append(argv))
    code, out = invoke("ui")
    assert code == 2 and "orchestra-routing[ui]" in out and started == []


def test_a_router_whose_extra_is_missing_names_the_extra_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph routers import torch_geometric only when they train: installed without the ``graph`` extra,
    `orchestra bench models --router graph-router` must name the extra, not end in a ModuleNotFoundError
    traceback."""
    from orchestra.routers.model_routers import BestSingleRouter
    from orchestra.routing import register_router

    class NeedsGraph(BestSingleRouter):
        def _fit_tasks(self, train):  # type: ignore[no-untyped-def]
            from torch_geometric.nn import GeneralConv  # noqa: F401

    for name in [name for name in sys.modules if name.partition(".")[0] == "torch_geometric"] + ["torch_geometric"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    register_router("needs-graph-test", NeedsGraph)
    cards = [{"id": m, "description": f"Model {m}.", "input_price_per_mtok": p, "output_price_per_mtok": p} for m, p in (("big", 10.0), ("small", 1.0))]
    rows = [{"id": f"q{i}", "query": f"question {i}?", "task": "math",
             "outcomes": {m: {"score": 1.0, "cost": 0.01} for m in ("big", "small")}} for i in range(8)]
    for name, items in (("models", cards), ("train", rows[:6]), ("test", rows[6:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    code, out = invoke("bench", "models", "--data", str(tmp_path), "--router", "needs-graph-test")
    assert code == 2 and "torch_geometric is not installed; pip install 'orchestra-routing[graph]'" in out
    assert "Traceback" not in out


def test_ui_stops_with_the_process_that_started_it(tmp_path: Path) -> None:
    """`orchestra ui` becomes the Streamlit server: SIGTERM to the pid a user (or a service manager) started
    stops the server, rather than leaving it serving behind a dead parent."""
    import signal
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).parent / "orchestra"), "ui", "--port", str(port)]
    env = {**os.environ, "ORCHESTRA_HOME": str(tmp_path)}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    assert response.status == 200
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the UI did not start"
                time.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)  # the whole group: a server left behind must not outlive the test
        server.wait()


def test_runs_show_details_each_decision_and_markup_in_stored_values_breaks_no_listing(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A router name and a hallucinated agent id holding "[/]" used to make `runs list` and `runs show` fail
    (rich read them as markup); the decision's reasons, scores with their figures, each agent's part of the query
    and the router's notes are shown under it."""
    from orchestra import Orchestra, PassThrough, cli

    monkeypatch.setattr(cli.console, "width", 240)  # lines read whole, whatever the terminal of the test run
    from orchestra.routing import CandidateScore, Call, Dispatch
    from orchestra.testing import FunctionRouter

    orch = Orchestra(store=db)
    orch.registry.add_agent({"id": "shout", "description": "Repeats loudly.", "backend": "function", "function": "cli_agents:shout"})

    def decide(state):
        return Dispatch(
            calls=(Call(agent_id="shout", query="the weather part"), Call(agent_id="[/INST] echo", query=state.query)),
            rationale="two requests, " + "long reasoning " * 20 + "THE END",
            scores=(CandidateScore(id="shout", score=0.9, detail={"quality": 0.81, "cost_usd": 0.0004}),),
            meta={"dropped": ["weather[/]"], "segments": ["the weather part", "the rest"]},
        )

    result = orch.workflow(FunctionRouter(decide, name="odd[/]router"), aggregator=PassThrough()).run("the weather part and the rest")
    code, out = invoke("runs", "list", "--db", db)
    assert code == 0 and "odd[/]router" in out
    code, out = invoke("runs", "show", result.run_id, "--db", db)
    assert code == 0, out
    assert "[/INST] echo" in out and "UnknownAgentError" in out
    assert "quality 0.81" in out and "cost_usd 0.0004" in out
    assert "shout gets the weather part" in out
    assert 'dropped ["weather[/]"]' in out and "segments" in out
    assert "…" in out  # the long rationale is cut, not dropped


def test_sigterm_ends_the_cli_through_python_so_its_exit_hooks_run(tmp_path: Path) -> None:
    """Killed by SIGTERM (a service manager's stop), the process died without its exit hooks and left the local
    model server running; now it exits with 143 through Python's exit path (a signal death reads -15)."""
    import signal
    import time

    env = {**os.environ, "ORCHESTRA_HOME": str(tmp_path)}
    chat = subprocess.Popen(
        [sys.executable, "-c", "from orchestra.cli import main; main()", "chat", "--profile", "none", "--router", "all",
         "--db", "memory://"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert chat.stdout is not None
    assert "Orchestra chat" in chat.stdout.readline()  # the REPL waits for a line
    time.sleep(0.2)
    chat.send_signal(signal.SIGTERM)
    assert chat.wait(30) == 143


def test_replay_at_another_cost_weight_keeps_the_rest_of_the_runs_policy(db: str, tmp_path: Path) -> None:
    """`orchestra replay RUN --cost-weight 0.9`: the same router under the run's policy at another w, a
    counterfactual run; a w outside [0, 1] is refused naming it."""
    from orchestra.store import open_store

    cards = tmp_path / "agents.yaml"
    cards.write_text("- id: shout\n  description: Repeats the request loudly.\n  backend: function\n  function: cli_agents:shout\n")
    assert invoke("agents", "add", str(cards), "--db", db)[0] == 0
    code, out = invoke("chat", "hi", "--router", "fixed", "--option", 'agent_ids=["shout"]', "--profile", "none",
                       "--aggregator", "pass-through", "--cost-weight", "0.2", "--db", db)
    assert code == 0, out
    run_id = out.split("run ")[1].split()[0]
    code, out = invoke("replay", run_id, "--cost-weight", "0.9", "--profile", "none", "--db", db)
    assert code == 0 and "counterfactual replay of" in out, out
    replayed = [run for run in open_store(db).list_runs(limit=5) if run.replay_of == run_id]
    assert len(replayed) == 1 and replayed[0].meta["policy"]["cost_weight"] == 0.9 and replayed[0].router == "fixed"
    code, out = invoke("replay", run_id, "--cost-weight", "1.5", "--profile", "none", "--db", db)
    assert code == 2 and "cost_weight" in out, out


def test_runs_stats_prints_each_router_and_cost_weight(db: str, tmp_path: Path) -> None:
    cards = tmp_path / "agents.yaml"
    cards.write_text("- id: shout\n  description: Repeats the request loudly.\n  backend: function\n  function: cli_agents:shout\n")
    assert invoke("agents", "add", str(cards), "--db", db)[0] == 0
    for w in ("0", "0.3"):
        code, out = invoke("chat", "hi", "--router", "fixed", "--option", 'agent_ids=["shout"]', "--profile", "none",
                           "--aggregator", "pass-through", "--cost-weight", w, "--db", db)
        assert code == 0, out
    code, out = invoke("runs", "stats", "--db", db, "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["runs"] == 2 and [(g["router"], g["cost_weight"], g["agents"]) for g in summary["groups"]] == [
        ("fixed", 0.0, {"shout": 1.0}), ("fixed", 0.3, {"shout": 1.0})]
    code, out = invoke("runs", "stats", "--db", db)
    assert code == 0 and "agents shout" in out and "100%" in out and "0.3" in out, out


def _onboard(db: str, tmp_path: Path, cards: str, module: str = "", source: str = "") -> None:
    """Function agents from the YAML ``cards`` added with the CLI, their functions in ``module`` written beside the
    test (a name of its own per test: Python keeps the first module of a name it imports for the whole session)."""
    if module:
        (tmp_path / f"{module}.py").write_text("from pathlib import Path\nHERE = Path(__file__).parent\n" + source)
    (tmp_path / "agents.yaml").write_text(cards)
    assert invoke("agents", "add", str(tmp_path / "agents.yaml"), "--db", db)[0] == 0


def test_resume_serves_what_succeeded_and_takes_a_larger_budget(db: str, tmp_path: Path) -> None:
    _onboard(db, tmp_path,
             "- id: counted\n  description: Counts its calls.\n  backend: function\n  function: cli_resume_agents:counted\n"
             "- id: flaky\n  description: Down until fixed.\n  backend: function\n  function: cli_resume_agents:flaky\n",
             "cli_resume_agents",
             "def counted(query):\n    with open(HERE / 'counted.log', 'a') as log:\n        log.write('x')\n    return 'counted ' + query\n"
             "def flaky(query):\n    if not (HERE / 'fixed').exists():\n        raise ConnectionError('service down')\n    return 'flaky ' + query\n")
    base = ("--router", "all", "--profile", "none", "--aggregator", "pass-through", "--db", db)
    code, out = invoke("chat", "hi", *base)
    assert code == 0 and "agent flaky failed" in out and "counted hi" in out, out
    run_id = out.split("run ")[1].split()[0]
    (tmp_path / "fixed").write_text("")

    code, out = invoke("resume", run_id[:12], "--profile", "none", "--db", db)
    assert code == 0, out
    flat = " ".join(out.split())
    assert f"resume of {run_id}" in flat and "counted hi" in flat and "flaky hi" in flat
    assert f"resumed run {run_id}: 2 steps served from the record, 2 live" in flat and "(served)" in flat
    assert (tmp_path / "counted.log").read_text() == "x"  # the agent that answered was not called again
    with open_store(db) as store:
        resumed = next(run for run in store.list_runs(limit=5) if run.replay_of == run_id)
    assert resumed.replay_mode == "resume" and resumed.status == "ok"
    code, out = invoke("resume", resumed.id, "--profile", "none", "--db", db)
    assert code == 2 and "nothing to resume" in out, out
    code, out = invoke("resume", "no-such-run", "--profile", "none", "--db", db)
    assert code == 2 and "NotFoundError" in out, out

    code, out = invoke("chat", "hi", "--budget", "max_calls=1", "--budget", "max_rounds=2", *base)
    assert code == 1 and "BudgetExceeded" in out
    # chat says how to go on, as it does for a run waiting for approval
    assert " --budget max_calls=2" in out and f"orchestra resume {out.split('run ')[1].split()[0]} --budget max_calls=2" in " ".join(out.split())
    stopped = out.split("run ")[1].split()[0]
    code, out = invoke("resume", stopped, "--budget", "max_calls=0", "--profile", "none", "--db", db)
    assert code == 2 and "Budget.max_calls" in out, out
    code, out = invoke("resume", stopped, "--budget", "max_calls=2", "--profile", "none", "--db", db)
    assert code == 0 and "counted hi" in out and "flaky hi" in out, out
    with open_store(db) as store:
        again = next(run for run in store.list_runs(limit=8) if run.replay_of == stopped)
    assert again.meta["budget"]["max_calls"] == 2 and again.meta["budget"]["max_rounds"] == 2  # the others as recorded


def test_a_card_file_gives_an_agent_its_retry_policy_and_runs_show_counts_the_attempts(db: str, tmp_path: Path) -> None:
    _onboard(db, tmp_path, "- id: broken\n  description: Always fails.\n  backend: function\n  function: cli_agents:broken\n"
             "  retry: {max_attempts: 3, initial_backoff_s: 0, max_backoff_s: 0, jitter_s: 0}\n"
             "- id: shout\n  description: Repeats loudly.\n  backend: function\n  function: cli_agents:shout\n")
    code, out = invoke("chat", "hello", "--router", "all", "--profile", "none", "--aggregator", "pass-through", "--db", db)
    assert code == 0 and "HELLO!" in out
    run_id = out.split("run ")[1].split()[0]
    code, out = invoke("runs", "show", run_id, "--db", db)
    assert code == 0 and "(3 attempts; first failed: AgentError)" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("- id: flaky\n  description: x\n  retry: {max_attempts: 0}\n")
    code, out = invoke("agents", "add", str(bad), "--db", db)
    assert code == 2 and "retry.max_attempts" in out


def invoke_streams(*args: str) -> tuple[int, str, str, str]:
    """Exit code, stdout, stderr, and both as a terminal shows them (in the order they were written)."""
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr, result.output


def test_chat_shows_each_decision_and_call_on_stderr_as_they_happen_and_the_answer_alone_on_stdout(db: str, tmp_path: Path) -> None:
    """The run's steps go to stderr before the answer (a terminal shows them; --progress shows them anywhere);
    stdout holds what it held before they were shown: the answer and the summary line."""
    _onboard(db, tmp_path, "- id: shout\n  description: Repeats loudly.\n  backend: function\n  function: cli_agents:shout\n"
             "- id: nope\n  description: Declines.\n  backend: function\n  function: cli_agents:refuses\n")
    base = ("--router", "all", "--profile", "none", "--aggregator", "refine", "--db", db)
    code, plain_out, plain_err, _ = invoke_streams("chat", "hello", *base)
    assert code == 0 and plain_err == ""  # stderr is no terminal here: nothing shown unless asked
    code, out, err, both = invoke_streams("chat", "hello", "--progress", *base)
    assert code == 0, both
    first, *calls, last = err.splitlines()
    assert first == "decision r0 · all → shout 1.000, nope 1.000 · why every agent (2)" and last == "aggregate (refine)", err
    # the two calls end in either order, each with its latency
    assert sorted(call.split(" · ")[0] for call in calls) == ["call nope: declined", "call shout: ok"], err
    assert both.index("call shout: ok") < both.index("HELLO!")  # as it happened, not after the answer

    def without_ids(text: str) -> str:  # each run has its own ids and latency
        return " ".join(word for word in text.split() if len(word) != 32 and not word.isdigit())

    assert out.startswith("HELLO!") and without_ids(out) == without_ids(plain_out), (out, plain_out)
    # in a session too: each question's steps, then its answer
    result = runner.invoke(app, ["chat", "--progress", *base], input="hello\nagain\n\n")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("decision r0 · all →") == 2 and "HELLO!" in result.stdout and "AGAIN!" in result.stdout
    assert "decision" not in result.stdout


def test_chat_quiet_shows_no_step(db: str, tmp_path: Path) -> None:
    _onboard(db, tmp_path, "- id: shout\n  description: Repeats loudly.\n  backend: function\n  function: cli_agents:shout\n")
    for quiet in ("--quiet", "-q"):  # it wins over --progress
        code, out, err, _ = invoke_streams("chat", "hello", quiet, "--progress", "--router", "all", "--profile", "none", "--db", db)
        assert code == 0 and out.startswith("HELLO!") and err == "", err


def test_chat_shows_a_failed_call_and_a_failed_step_as_they_happen_and_exits_as_before(db: str, tmp_path: Path) -> None:
    """A failed call names its error's type on the spot (why, in full, comes with the answer as before); an agent
    the registry does not hold is a failed step; the exit code is the run's, as without the steps shown."""
    _onboard(db, tmp_path, "- id: shout\n  description: Repeats loudly.\n  backend: function\n  function: cli_agents:shout\n"
             "- id: broken\n  description: Fails.\n  backend: function\n  function: cli_agents:broken\n")
    base = ("--profile", "none", "--aggregator", "pass-through", "--progress", "--db", db)
    code, out, err, _ = invoke_streams("chat", "q [/z]", "--router", "all", *base)
    assert code == 0 and out.startswith("Q [/Z]!"), out  # the run went on without it
    assert "call broken: failed (AgentError) · " in err and "call shout: ok · " in err, err
    assert "agent broken failed: AgentError: agent 'broken' failed: ValueError: bad [/y] input" in err

    code, out, err, both = invoke_streams("chat", "hi", "--router", "fixed", "--option", 'agent_ids=["broken", "ghost"]', *base)
    assert code == 1 and out.startswith("run "), both  # no answer, the summary line still on stdout
    lines = err.splitlines()
    assert lines[0] == "decision r0 · fixed → broken 1.000, ghost 1.000 · why fixed agents: broken, ghost", err
    assert lines[1] == "error r0: UnknownAgentError: unknown agent 'ghost': the registry holds no agent with that id", err
    assert lines[2].startswith("call broken: failed (AgentError) · "), err
    assert lines[3].startswith("AgentError: every dispatched agent failed"), err


def test_chat_stopped_by_ctrl_c_says_so_in_one_line_and_the_run_is_stored_interrupted(db: str, tmp_path: Path) -> None:
    """Ctrl-C mid-run: no traceback, the run recorded as the runtime records a stopped run, exit code 130 as typer
    gives any command Ctrl-C stops; in a session, the next question is asked in the same session."""
    (tmp_path / "cli_stop_agents.py").write_text("def stop(query):\n    raise KeyboardInterrupt  # as Ctrl-C lands mid-call\n")
    _onboard(db, tmp_path, "- id: stop\n  description: Stopped by the user.\n  backend: function\n  function: cli_stop_agents:stop\n"
             "- id: shout\n  description: Repeats loudly.\n  backend: function\n  function: cli_agents:shout\n")
    base = ("--profile", "none", "--aggregator", "pass-through", "--db", db)
    result = runner.invoke(app, ["chat", "hi", "--router", "fixed", "--option", 'agent_ids=["stop"]', *base])
    assert result.exit_code == 130 and "Traceback" not in result.output, result.output
    with open_store(db) as store:
        (run,) = store.list_runs(limit=5)
    assert run.status == "interrupted" and result.stderr.strip() == f"interrupted: run {run.id} stopped"

    result = runner.invoke(app, ["chat", "--router", "all", *base], input="hi\n\n")  # stop and shout, in a session
    assert result.exit_code == 0 and "interrupted: run " in result.stderr, result.output
    with open_store(db) as store:
        stopped = store.list_runs(limit=5)[0]
    assert stopped.status == "interrupted" and stopped.id in result.stderr


def test_chat_writes_the_answer_to_a_terminal_as_it_is_written_and_the_steps_that_came_meanwhile_after_it(monkeypatch) -> None:
    """stdout a terminal: the answer's words as they come (not again at the end), a step line that came while they
    were written (the aggregate, after the refiner's words) under them rather than inside them; a restart shows the
    whole answer under what was written."""
    import io

    from rich.console import Console

    import orchestra.cli as cli
    from orchestra import RunEvent

    screen = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=screen, width=200))
    monkeypatch.setattr(cli, "err_console", Console(file=screen, width=200, soft_wrap=True))
    dispatch = {"kind": "dispatch", "calls": [{"agent_id": "geo"}, {"agent_id": "history"}], "scores": [], "rationale": "every agent"}
    events = [RunEvent("decision", "r", {"decision": dispatch, "round": 0}),
              RunEvent("call", "r", {"agent_id": "geo", "latency_ms": 3}), RunEvent("call", "r", {"agent_id": "history", "latency_ms": 4}),
              RunEvent("token", "r", {"purpose": "refine", "delta": "Paris is", "step": "s"}), RunEvent("answer", "r", {"delta": "Paris is", "restart": False}),
              RunEvent("token", "r", {"purpose": "refine", "delta": " the capital.", "step": "s"}),
              RunEvent("aggregate", "r", {}), RunEvent("answer", "r", {"delta": " the capital.", "restart": False})]
    with cli._RunProgress("all", "refine", lines=True, status=False, answer=True) as progress:
        for event in events:
            progress.show(event)
    assert progress.answer_shown
    lines = screen.getvalue().splitlines()
    assert lines[0].startswith("decision r0 · all → geo, history") and lines[1:3] == ["call geo: ok · 3 ms", "call history: ok · 4 ms"]
    assert lines[3:] == ["Paris is the capital.", "aggregate (refine)"]

    screen.seek(0), screen.truncate()
    with cli._RunProgress("all", "refine", lines=False, status=False, answer=True) as progress:
        for event in (RunEvent("answer", "r", {"delta": "The answer", "restart": False}), RunEvent("answer", "r", {"delta": "Paris", "restart": True})):
            progress.show(event)
    assert screen.getvalue().splitlines() == ["The answer", "(the model writing the answer failed part way; the answer:)", "Paris"]

    screen.seek(0), screen.truncate()
    with cli._RunProgress("all", "refine", lines=False, status=False, answer=False) as progress:  # stdout is a script's
        progress.show(RunEvent("answer", "r", {"delta": "Paris", "restart": False}))
    assert screen.getvalue() == "" and not progress.answer_shown


def test_chat_to_a_terminal_prints_the_answer_once(db: str, tmp_path: Path, monkeypatch) -> None:
    import orchestra.cli as cli

    _onboard(db, tmp_path, "- id: shout\n  description: Repeats loudly.\n  backend: function\n  function: cli_agents:shout\n")
    monkeypatch.setattr(cli, "_stdout_is_a_terminal", lambda: True)
    code, out, _, _ = invoke_streams("chat", "hello", "--router", "all", "--profile", "none", "--db", db)
    assert code == 0 and out.startswith("HELLO!\nrun ") and out.count("HELLO!") == 1, out


def test_resume_shows_its_steps_as_they_happen_where_a_person_watches(db: str, tmp_path: Path, monkeypatch) -> None:
    import orchestra.cli as cli

    _onboard(db, tmp_path,
             "- id: shout\n  description: Repeats loudly.\n  backend: function\n  function: cli_agents:shout\n"
             "- id: flaky\n  description: Down until fixed.\n  backend: function\n  function: cli_watch_agents:flaky\n",
             "cli_watch_agents",
             "def flaky(query):\n    if not (HERE / 'fixed').exists():\n        raise ConnectionError('service down')\n    return 'flaky ' + query\n")
    code, out = invoke("chat", "hi", "--router", "all", "--profile", "none", "--aggregator", "pass-through", "--db", db)
    run_id = out.split("run ")[1].split()[0]
    (tmp_path / "fixed").write_text("")
    monkeypatch.setattr(cli, "_stderr_is_a_terminal", lambda: True)
    code, out, err, both = invoke_streams("resume", run_id, "--profile", "none", "--db", db)
    assert code == 0, both
    assert err.startswith("decision r0 · all → ") and "call flaky: ok" in err and "aggregate (pass-through)" in err, err
    assert both.index("call flaky: ok") < both.index(f"resume of {run_id}")  # as it happened, then the tree


def test_ctrl_c_cancels_the_run_before_stopping_so_its_models_stop_writing(monkeypatch) -> None:
    """Ctrl-C lands while the run waits for its calls: the run is cancelled first (its models stop at their next
    token, so that wait is short), then the run stops in one line; the terminal's own Ctrl-C handler is back after."""
    import os
    import signal as signals

    import orchestra.cli as cli
    from orchestra import RunEvent

    cancelled: list[str] = []

    class App:
        def cancel(self, run_id: str) -> bool:
            cancelled.append(run_id)
            return True

    def events():  # noqa: ANN202
        yield RunEvent("run_started", "run-1", {"session_id": "s"})
        os.kill(os.getpid(), signals.SIGINT)  # the key pressed while the calls are under way
        yield RunEvent("decision", "run-1", {"decision": {"kind": "dispatch", "calls": []}, "round": 0})

    before = signals.getsignal(signals.SIGINT)
    progress = cli._RunProgress("all", "refine", lines=False, status=False)
    assert cli._follow(events(), progress, App()) is None  # type: ignore[arg-type]
    assert cancelled == ["run-1"] and signals.getsignal(signals.SIGINT) is before


def test_resume_approves_a_waiting_run_but_for_the_agents_rejected(db: str, tmp_path: Path) -> None:
    _onboard(db, tmp_path,
             "- id: shout\n  description: Repeats loudly.\n  backend: function\n  function: cli_agents:shout\n"
             "- id: pay\n  description: Pays.\n  backend: function\n  function: cli_approval_agents:pay\n  requires_approval: true\n",
             "cli_approval_agents",
             "def pay(query):\n    (HERE / 'paid.log').write_text(query)\n    return 'paid ' + query\n")
    code, out = invoke("chat", "invoice 7", "--router", "all", "--profile", "none", "--aggregator", "pass-through", "--db", db)
    assert code == 1 and "ApprovalRequired" in out, out
    run_id = out.split("run ")[-1].split()[0]
    code, out = invoke("resume", run_id, "--reject", "shout", "--profile", "none", "--db", db)
    assert code == 2 and "'shout' is not an agent run" in out, out  # it did not wait for approval
    code, out = invoke("resume", run_id, "--reject", "pay", "--profile", "none", "--db", db)
    assert code == 0 and "INVOICE 7!" in out and "did not approve" in " ".join(out.split()), out
    assert not (tmp_path / "paid.log").exists()


def test_a_multi_round_router_chats_with_no_aggregator_and_refuses_one_given(db: str) -> None:
    """chat's aggregator defaults to refine, which a multi-round router (router-r1) never runs: it is left out for
    one, and naming one with --aggregator is refused in one line, before anything is stored."""
    from orchestra import Finish, register_router
    from orchestra.testing import FunctionRouter

    register_router("cli-loop-test", lambda: FunctionRouter(lambda state: Finish(answer="looped"), multi_round=True, name="cli-loop-test"))
    code, out = invoke("chat", "hi", "--router", "cli-loop-test", "--aggregator", "weighted-vote", "--profile", "none", "--db", db)
    assert code == 2 and "--aggregator weighted-vote: router 'cli-loop-test' is multi-round" in out and "Traceback" not in out
    with open_store(db) as store:
        assert store.list_runs() == []
    code, out = invoke("chat", "hi", "--router", "cli-loop-test", "--profile", "none", "--db", db)
    assert code == 0 and "looped" in out, out
    with open_store(db) as store:
        (run,) = store.list_runs()
    assert run.answer == "looped" and run.meta["aggregator"] is None


def test_chat_serve_resume_and_replay_take_the_model_calls_fallback_and_retry_policies(db: str, tmp_path: Path) -> None:
    """`FallbackPolicy` and the app's `RetryPolicy` could be set from Python only: `orchestra chat`, `serve`, `resume`
    and `replay` ran every model call with three attempts of up to 60 s and no fallback, so a provider that was down
    failed each agent of a served workflow after its retries."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Backup(BaseHTTPRequestHandler):  # a provider that answers every chat completion
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            streamed = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0))).get("stream")
            usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
            if streamed:  # `chat` streams its runs: one delta, then the finish and the usage
                chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "backup"}
                events = [chunk | {"choices": [{"index": 0, "delta": {"content": "backup answer"}, "finish_reason": "stop"}]},
                          chunk | {"choices": [], "usage": usage}]
                body = "".join(f"data: {json.dumps(event)}\n\n" for event in events).encode() + b"data: [DONE]\n\n"
            else:
                body = json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "backup", "usage": usage,
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "backup answer"}, "finish_reason": "stop"}]}).encode()
            self.send_response(200)
            self.send_header("content-type", "text/event-stream" if streamed else "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    backup = ThreadingHTTPServer(("127.0.0.1", 0), Backup)
    threading.Thread(target=backup.serve_forever, daemon=True).start()
    with socket.socket() as probe:  # a port nothing listens on: the primary provider is down
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    try:
        (tmp_path / "models.yaml").write_text(f"- id: down\n  description: d\n  base_url: http://127.0.0.1:{closed}/v1\n"
                                              f"- id: backup\n  description: b\n  base_url: http://127.0.0.1:{backup.server_address[1]}/v1\n")
        assert invoke("models", "add", str(tmp_path / "models.yaml"), "--db", db)[0] == 0
        (tmp_path / "agents.yaml").write_text("- id: writer\n  description: Writes.\n  model: down\n")
        assert invoke("agents", "add", str(tmp_path / "agents.yaml"), "--db", db)[0] == 0
        base = ("--router", "all", "--profile", "none", "--aggregator", "pass-through", "--db", db)
        code, out = invoke("chat", "hi", *base, "--retry", "max_attempts=1")
        assert code == 1 and "ModelUnavailableError" in out, out  # no fallback: the agent failed
        failed = out.split("run ")[1].split()[0]
        started = time.perf_counter()
        code, out = invoke("chat", "hi", *base, "--fallback", "backup", "--retry", "max_attempts=2", "--retry", "initial_backoff_s=0.01")
        assert code == 0 and "backup answer" in out, out
        assert time.perf_counter() - started < 20
        with open_store(db) as store:
            answered = store.list_runs(limit=1)[0]
            calls = [(step.model_id, bool(step.error), step.response.get("attempts")) for step in store.get_run(answered.id).steps if step.kind == "model_call"]
        assert calls == [("down", True, 2), ("backup", False, 1)]  # the second attempt of --retry, then the fallback
        code, out = invoke("resume", failed, "--profile", "none", "--db", db, "--fallback", "backup", "--retry", "max_attempts=1")
        assert code == 0 and "backup answer" in out, out
        code, out = invoke("replay", failed, "--router", "all", "--profile", "none", "--db", db, "--fallback", "backup", "--retry", "max_attempts=1")
        assert code == 0 and "backup answer" in out, out
        code, out = invoke("chat", "hi", *base, "--fallback", "ghost")
        assert code == 2 and "--fallback ghost: the registry holds no model card with that id" in out, out
        code, out = invoke("chat", "hi", *base, "--fallback", "backup", "--fallback", "backup")
        assert code == 2 and "FallbackPolicy.models: Value error, model 'backup' is given twice" in out, out
        code, out = invoke("serve", "--profile", "none", "--db", db, "--retry", "timeout_s=0")
        assert code == 2 and "RetryPolicy.timeout_s: Input should be greater than 0" in out, out
        with open_store(db) as store:
            assert len(store.list_runs(limit=10)) == 4  # the refused commands stored nothing
    finally:
        backup.shutdown()
        backup.server_close()


def test_replay_takes_several_runs_and_runs_list_gives_the_traffic_ids_to_replay(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluating a router on past runs from the command line took a shell loop of `orchestra replay`, each loading
    the router (and its encoder) again, over ids cut out of a table that also listed the replays of the last loop:
    `runs list --no-replays --since ... --ids` gives the traffic's ids, one `replay` takes them all (the router
    built once, every id checked before any replay), and `runs stats --no-replays` leaves the replays out."""
    import orchestra.cli as cli_module

    cards = tmp_path / "agents.yaml"
    cards.write_text("- id: shout\n  description: Repeats the request loudly.\n  backend: function\n  function: cli_agents:shout\n"
                     "- id: brackets\n  description: Brackets the request.\n  backend: function\n  function: cli_agents:brackets\n")
    assert invoke("agents", "add", str(cards), "--db", db)[0] == 0
    base = ("--profile", "none", "--aggregator", "pass-through", "--db", db)
    for query in ("one", "two"):
        code, out = invoke("chat", query, "--router", "fixed", "--option", 'agent_ids=["shout"]', *base)
        assert code == 0, out
    code, out = invoke("runs", "list", "--no-replays", "--since", "2000-01-01", "--ids", "--db", db)
    traffic = out.split()
    assert code == 0 and len(traffic) == 2 and all(len(run_id) == 32 for run_id in traffic), out

    built = []
    monkeypatch.setattr(cli_module, "load_router", lambda name, **options: built.append(name) or load_router(name, **options))
    from orchestra.routing import load_router

    code, out = invoke("replay", *traffic, "--router", "fixed", "--option", 'agent_ids=["shout", "brackets"]', "--profile", "none",
                       "--db", db)
    assert code == 0 and built == ["fixed"], out  # one router for both replays
    assert "2 counterfactual replays with fixed" in out and out.count("shout → brackets, shout") == 2, out
    assert all(run_id[:8] in out for run_id in traffic) and out.count("differs") == 2
    code, out = invoke("replay", *traffic, "--profile", "none", "--db", db)
    assert code == 0 and "2 exact replays" in out and out.count("same") == 2 and out.count("│ shout ") == 2, out

    code, out = invoke("runs", "list", "--no-replays", "--ids", "--db", db)
    assert out.split() == traffic  # the four replays are not the traffic
    code, out = invoke("runs", "list", "--replays", "--ids", "--db", db)
    assert code == 0 and len(out.split()) == 4 and not set(out.split()) & set(traffic)
    assert invoke("runs", "list", "--since", "2999-01-01", "--ids", "--db", db) == (0, "")
    assert invoke("runs", "list", "--until", "2000-01-01T00:00+02:00", "--ids", "--db", db) == (0, "")
    code, out = invoke("runs", "stats", "--no-replays", "--json", "--db", db)
    assert code == 0 and json.loads(out)["runs"] == 2
    code, out = invoke("runs", "stats", "--json", "--db", db)
    assert code == 0 and json.loads(out)["runs"] == 6

    before = len(open_store(db).list_runs(limit=100))
    code, out = invoke("replay", traffic[0], "nothing-like-it", "--profile", "none", "--db", db)
    assert code == 2 and "no run with id 'nothing-like-it'" in out
    assert len(open_store(db).list_runs(limit=100)) == before  # refused before the first replay
    code, out = invoke("runs", "list", "--since", "last tuesday", "--db", db)
    assert code == 2 and "--since must be an ISO date or time" in out


def test_replay_reuse_calls_serves_the_calls_the_original_made(db: str, tmp_path: Path) -> None:
    cards = tmp_path / "agents.yaml"
    cards.write_text("- id: shout\n  description: Repeats the request loudly.\n  backend: function\n  function: cli_agents:shout\n"
                     "- id: brackets\n  description: Brackets the request.\n  backend: function\n  function: cli_agents:brackets\n")
    assert invoke("agents", "add", str(cards), "--db", db)[0] == 0
    code, out = invoke("chat", "one", "--router", "fixed", "--option", 'agent_ids=["shout"]', "--profile", "none", "--aggregator",
                       "pass-through", "--db", db)
    run_id = out.split("run ")[1].split()[0]
    code, out = invoke("replay", run_id, "--router", "fixed", "--option", 'agent_ids=["shout", "brackets"]', "--reuse-calls",
                       "--profile", "none", "--db", db)
    assert code == 0 and "counterfactual replay of" in out, out
    lines = out.splitlines()
    assert any("call shout" in line and "(served)" in line for line in lines), out
    assert any("call brackets" in line and "(served)" not in line for line in lines), out
    code, out = invoke("replay", run_id, "--reuse-calls", "--profile", "none", "--db", db)
    assert code == 2 and "--reuse-calls is for a counterfactual replay" in out


def test_runs_list_ids_says_when_the_page_cut_the_window(db: str, tmp_path: Path) -> None:
    """`runs list --ids` fed to `orchestra replay` as the traffic of a window was cut at --limit (20) without a word."""
    cards = tmp_path / "agents.yaml"
    cards.write_text("- id: shout\n  description: Loud.\n  backend: function\n  function: cli_agents:shout\n")
    assert invoke("agents", "add", str(cards), "--db", db)[0] == 0
    for query in ("one", "two"):
        assert invoke("chat", query, "--router", "all", "--profile", "none", "--aggregator", "pass-through", "--db", db)[0] == 0
    code, out = invoke("runs", "list", "--ids", "--limit", "1", "--db", db)
    assert code == 0 and len(out.split()[0]) == 32 and "the newest 1 runs only: more may match (raise --limit)" in out
    code, out = invoke("runs", "list", "--ids", "--limit", "3", "--db", db)
    assert code == 0 and len(out.split()) == 2  # the whole window: nothing said
