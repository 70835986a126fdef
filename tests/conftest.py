"""Tests run offline: every connection except loopback is refused (see `orchestra.testing.no_network`)."""

from __future__ import annotations

import os

import pytest

from orchestra.testing import no_network

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _refuse_network(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    # Each test gets its own ORCHESTRA_HOME, so nothing touches the user's ~/.orchestra.
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path_factory.mktemp("orchestra-home")))
    with no_network():
        yield
