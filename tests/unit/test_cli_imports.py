"""The CLI imports heavy libraries only in the commands that use them (issue 12).

``patchpilot --version`` and ``patchpilot inventory`` must import none of langgraph, chromadb,
paramiko or openai (checked with ``-X importtime``, which lists every module a process
imports); reading stored findings needs no graph, memory, transport or LLM either.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "configs" / "inventory.example.yaml"
HEAVY = frozenset({"langgraph", "chromadb", "paramiko", "openai", "fastapi", "uvicorn"})


def imported_by(*args: str, home: Path) -> set[str]:
    """Top-level names of every module ``python -m patchpilot ARGS`` imports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHPILOT_")}
    env["PATCHPILOT_HOME"] = str(home)
    # A user's ~/.ssh/config is resolved with paramiko when the inventory loads; this probe
    # measures the CLI itself, so it runs with a HOME that has none.
    env["HOME"] = str(home)
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "patchpilot", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    names = set()
    for line in res.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            module = line.rsplit("|", 1)[1].strip()
            if module != "imported package":
                names.add(module.split(".")[0])
    assert "patchpilot" in names  # the probe sees the CLI's own imports
    return names


@pytest.mark.parametrize(
    "args",
    [
        ("--version",),
        ("inventory", "-i", str(EXAMPLE)),
        ("inventory", "-i", str(EXAMPLE), "-f", "json"),
    ],
    ids=["version", "inventory", "inventory-json"],
)
def test_version_and_inventory_import_no_heavy_library(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    heavy = imported_by(*args, home=tmp_path / "home") & HEAVY
    assert not heavy, f"`patchpilot {' '.join(args)}` imported {sorted(heavy)}"


def test_findings_imports_no_heavy_library(tmp_path: Path) -> None:
    heavy = imported_by("findings", "-f", "json", home=tmp_path / "home") & HEAVY
    assert not heavy, f"`patchpilot findings` imported {sorted(heavy)}"


def test_the_probe_sees_heavy_imports(tmp_path: Path) -> None:
    """A command that needs the run graph does import langgraph (the probe is not blind)."""
    assert "langgraph" in imported_by("approvals", "-f", "json", home=tmp_path / "home")


def test_every_command_is_registered_once_in_main() -> None:
    import typer

    from patchpilot.cli.main import app

    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    assert set(group.commands) == {
        "inventory",
        "facts",
        "feeds",
        "lab",
        "scan",
        "findings",
        "report",
        "runs",
        "resume",
        "accept",
        "unaccept",
        "compliance",
        "analytics",
        "forecast",
        "run",
        "approve",
        "reject",
        "approvals",
        "cancel",
        "baseline",
        "ask",
        "chat",
        "memory",
        "serve",
        "schedules",
        "users",
    }
    source = (REPO / "patchpilot" / "cli").glob("*.py")
    registering = [p.name for p in source if "@app.command" in p.read_text(encoding="utf-8")]
    assert registering == [], "commands are registered in cli/main.py only"
