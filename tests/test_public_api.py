"""The public namespace is curated: sorted, complete, and the core never imports routers, agents or the UI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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


def _room_of_import(module: str) -> str | None:
    """The room (DESIGN.md) an absolute import enters, or None for third-party modules."""
    for package, room in (("orchestra.routers", "routers"), ("orchestra.agents", "agents"), ("orchestra.ui", "ui")):
        if module == package or module.startswith(package + "."):
            return room
    return "core" if module == "orchestra" or module.startswith("orchestra.") else None


def test_every_import_respects_the_rooms_of_the_design() -> None:
    """Read statically, so a lazy import inside a function counts too: the core never imports routers, agents or
    the UI; routers and agents never import each other or the UI; nothing outside the core reaches for a private
    name of it."""
    project = Path(__file__).resolve().parents[1]
    forbidden = {"core": {"routers", "agents", "ui"}, "routers": {"agents", "ui"}, "agents": {"routers", "ui"}}
    rooms = {"orchestra": "core", "routers": "routers", "agents": "agents", "ui": "ui", "benchmarks": "benchmarks",
             "examples": "examples"}
    breaches = []
    for folder, room in rooms.items():
        for path in sorted((project / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    imports = [(alias.name, []) for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imports = [(node.module, [alias.name for alias in node.names])]
                else:
                    continue  # relative imports stay inside their own room
                for module, names in imports:
                    entered = _room_of_import(module)
                    private = room != "core" and entered == "core" and (
                        any(part.startswith("_") for part in module.split("."))
                        or any(name.startswith("_") for name in names)
                    )
                    if entered in forbidden.get(room, set()) or private:
                        breaches.append(f"{path.relative_to(project)}:{node.lineno} imports {module} {names}")
    assert breaches == []


def test_the_router_protocol_takes_a_name_given_on_the_class_or_the_instance() -> None:
    """Router declared ``name: str``, an instance variable: type checkers then refused BaseRouter's ClassVar name, so
    the shipped FunctionRouter (and RecordedRouter, in Orchestra's own replay) was "incompatible" where a Router is
    expected. A read-only property is met by a class attribute, a ClassVar and an instance attribute alike."""
    import inspect

    from orchestra.routing import BaseRouter, Finish, Router
    from orchestra.testing import FunctionRouter

    assert isinstance(inspect.getattr_static(Router, "name", None), property)
    assert isinstance(FunctionRouter(lambda state: Finish(answer="done")), Router)
    assert isinstance(type("Named", (BaseRouter,), {"name": "named"})(), Router)


def test_resume_is_exported_beside_replay_and_loads_no_langgraph() -> None:
    """`resume` (and its async twin) come from the package like `replay`, and importing them does not load the
    runtime: LangGraph comes with the first resume."""
    assert {"resume", "aresume"} <= set(orchestra.__all__)
    assert orchestra.resume is sys.modules["orchestra.replay"].resume
    assert orchestra.aresume is sys.modules["orchestra.replay"].aresume
    code = "import sys; from orchestra import resume, aresume; print('langgraph' in sys.modules, callable(resume), callable(aresume))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True"]
