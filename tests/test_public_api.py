"""The public namespace is curated: sorted, complete, and the core never imports routers, agents or the UI."""

from __future__ import annotations

import subprocess
import sys

import orchestra


def test_all_is_sorted_unique_and_resolvable() -> None:
    assert orchestra.__all__ == sorted(orchestra.__all__)
    assert len(set(orchestra.__all__)) == len(orchestra.__all__)
    for name in orchestra.__all__:
        assert getattr(orchestra, name) is not None


def test_every_error_is_exported() -> None:
    from orchestra import errors

    assert set(errors.__all__) <= set(orchestra.__all__)


def test_core_import_pulls_in_no_router_agent_or_ui_module() -> None:
    code = (
        "import sys, orchestra, orchestra.cli, orchestra.runtime, orchestra.replay;"
        "bad=[m for m in sys.modules if m.startswith(('orchestra.routers','orchestra.agents','orchestra.ui'))];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_the_package_and_the_cli_help_start_without_langgraph() -> None:
    """LangGraph (about a second to import) loads with the runtime's first use, not with ``import orchestra`` or
    ``orchestra --help``; the runtime's names still resolve from the package."""
    code = (
        "import sys, orchestra, orchestra.cli;"
        "from typer.testing import CliRunner;"
        "assert CliRunner().invoke(orchestra.cli.app, ['--help']).exit_code == 0;"
        "before='langgraph' in sys.modules;"
        "from orchestra import Orchestra, Workflow, replay;"
        "import orchestra.runtime;"
        "print(before, 'langgraph' in sys.modules, Orchestra is orchestra.runtime.Orchestra, callable(replay))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True", "True"]
