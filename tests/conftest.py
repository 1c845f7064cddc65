"""Shared test fixtures: paths to ../shared and a clean environment for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.integration.lab_fixtures", "tests.receivers", "tests.browser"]
"""The ``lab`` fixture: real Debian 12 hosts on loopback (see tests/integration/lab_fixtures.py)."""

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder beside the checkout (CI lays it there too)."""
    if not SHARED.is_dir():
        pytest.fail(
            f"../shared not found at {SHARED}; tests read shared vectors and feeds in place"
        )
    return SHARED


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Drop PATCHPILOT_* / OPENAI_* variables and point PATCHPILOT_HOME at a temp dir."""
    for key in list(os.environ):
        if key.startswith(("PATCHPILOT_", "OPENAI_")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PATCHPILOT_HOME", str(tmp_path / "home"))
