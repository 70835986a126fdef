"""Every example in examples/ runs offline, through its own main(), and does what it says."""

from __future__ import annotations

import runpy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = sorted(p for p in (Path(__file__).parents[1] / "examples").glob("*.py") if p.name != "__init__.py")


def check_onboard_and_replay(result: dict[str, Any]) -> None:
    assert result["first"] == "42 km = 26.098 miles"
    assert result["before"] is True  # no agent reverses text yet: out of scope
    assert result["after"] == "artsehcro" and result["after_agents"] == ["reverse"]
    assert result["replay"] == "artsehcro" and result["replay_status"] == "ok"
    assert result["counterfactual_agents"] == ["reverse", "units", "wordcount"]
    replayed = result["latest_runs"][0][1]
    assert result["latest_runs"] == [("counterfactual", replayed), ("exact", replayed)]


EXPECTATIONS: dict[str, Callable[[Any], None]] = {"onboard_and_replay": check_onboard_and_replay}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_and_behaves(path: Path) -> None:
    assert path.stem in EXPECTATIONS, f"add what {path.name} must do to EXPECTATIONS"
    namespace = runpy.run_path(str(path), run_name="example")
    EXPECTATIONS[path.stem](namespace["main"]())
