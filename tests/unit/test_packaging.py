"""One installed name: the wheel puts only ``patchpilot`` into site-packages (issue 12).

The repository keeps the folders ``agents/ tools/ graphs/ prompts/ configs/`` at its top level;
``patchpilot/agents`` etc. are links to them, so they are installed as sub-packages of
``patchpilot`` and nothing else lands in site-packages (``agents`` is also the import name of the
OpenAI Agents SDK: installing both must break neither).

The wheel is built from this checkout (no build isolation: the dev environment has the build
backend) and installed without dependencies into a throwaway venv that borrows the dev venv's
dependencies through a path entry (so nothing is downloaded); the dev venv's editable finder is
not loaded there, so ``patchpilot`` is the wheel's copy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (built,) = out.glob("patchpilot-*.whl")
    return built


def test_the_wheel_installs_only_patchpilot(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/", 1)[0] for name in names if not name.startswith("patchpilot-")}
    assert tops == {"patchpilot"}
    for sub in ("agents", "tools", "graphs", "prompts", "configs", "core", "app", "cli", "lab"):
        assert f"patchpilot/{sub}/__init__.py" in names, sub
    assert "patchpilot/configs/policy.yaml" in names
    assert "patchpilot/prompts/intake.md" in names
    assert "patchpilot/lab/assets/lab-init" in names
    # the web dashboard's templates and static files (package data)
    for name in ("templates/base.html", "templates/fleet.html", "static/app.css", "static/app.js"):
        assert f"patchpilot/web/{name}" in names, name


def test_the_installed_wheel_runs_and_leaves_the_agents_name_free(
    wheel: Path, tmp_path: Path
) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        env=CLEAN_ENV,
    )
    # Then the dependencies come from the dev venv as a plain path entry (its .pth files, the
    # editable finder among them, are not processed there).
    Path(purelib, "dev-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    found_at = subprocess.run(
        [str(python), "-c", "import patchpilot; print(patchpilot.__file__)"],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=CLEAN_ENV,
    )
    assert found_at.returncode == 0, found_at.stderr[-2000:]
    where = found_at.stdout.strip()
    assert where.startswith(purelib), where  # the wheel's copy, not this checkout
    version = subprocess.run(
        [str(env_dir / "bin" / "patchpilot"), "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=CLEAN_ENV,
        check=False,
    )
    assert version.returncode == 0, version.stderr[-2000:]
    assert version.stdout.startswith("patchpilot ")
    for name in ("agents", "tools", "graphs", "prompts", "configs"):
        found = subprocess.run(
            [str(python), "-c", f"import {name}"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=CLEAN_ENV,
            check=False,
        )
        assert found.returncode != 0, f"`import {name}` works: it must not be installed"
        assert "ModuleNotFoundError" in found.stderr
