"""The wheel users install: every module and data file the package reads at run time is inside it, under
``orchestra`` only (agents/, routers/ and ui/ ship as orchestra.agents, orchestra.routers and orchestra.ui)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"orchestra": "orchestra", "agents": "orchestra/agents", "routers": "orchestra/routers", "ui": "orchestra/ui"}


def test_the_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    # Built from a copy: setuptools keeps a build/ folder beside the sources, whose stale files (a module since
    # deleted) a later wheel would ship, and which the checkout should not gain from running its tests.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    for folder in SOURCES:
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # no build isolation: the installed setuptools builds it, offline, in about 2 s
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True, timeout=120)
    (wheel,) = tmp_path.glob("orchestra_routing-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{target}/{path.relative_to(ROOT / source).as_posix()}"
        for source, target in SOURCES.items()
        for path in (ROOT / source).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert not expected - shipped, f"missing from the wheel: {sorted(expected - shipped)}"
    assert {name.split("/")[0] for name in shipped if not name.startswith("orchestra_routing-")} == {"orchestra"}
    # PEP 561: without py.typed, mypy and pyright treat an installed orchestra as untyped (every Orchestra,
    # Workflow and RunResult was Any in the user's editor)
    assert "orchestra/py.typed" in shipped
    # the metadata says Apache-2.0: the license's text ships with it
    (license_file,) = [name for name in shipped if name.startswith("orchestra_routing-") and name.endswith("/LICENSE")]
    assert "Apache License" in zipfile.ZipFile(wheel).read(license_file).decode()

