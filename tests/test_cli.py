"""The `orchestra` command: onboarding from card files, runs and replay, typed errors with exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestra.cli import app

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    # A function agent the CLI can import by path, as a user's package would provide.
    (tmp_path / "cli_agents.py").write_text("def shout(query):\n    return query.upper() + '!'\n")
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
    assert code == 0 and run_id[:8] in out
    code, out = invoke("runs", "show", run_id, "--db", db)
    assert code == 0 and "decision" in out and "HELLO THERE!" in out
    code, out = invoke("replay", run_id, "--profile", "none", "--db", db)
    assert code == 0 and "exact replay of" in out


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
