"""``--format sarif|cyclonedx`` and ``-o/--output FILE`` on ``report``, ``findings`` and ``scan``,
in process (typer's CliRunner) against a real store."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner, Result

from patchpilot.cli.main import app
from patchpilot.core.errors import ReportWriteError
from patchpilot.core.store import Store
from tests.unit.test_exports import RUN, assert_purl, cyclonedx_errors, fill, sarif_errors


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A home with one scan; the CLI's logging configuration is undone afterwards."""
    for name in [k for k in os.environ if k.startswith("PATCHPILOT_")]:
        monkeypatch.delenv(name)
    home = tmp_path / "home"
    with Store(home / "patchpilot.db") as store:
        fill(store)
    saved = structlog.get_config()
    yield home
    structlog.configure(**saved)


def cli(home: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["--home", str(home), *args])


@pytest.mark.parametrize("command", [("report", RUN), ("findings",)], ids=["report", "findings"])
def test_both_formats_to_a_file_and_to_stdout(home: Path, tmp_path: Path, command: Any) -> None:
    sarif = tmp_path / "out" / "patchpilot.sarif"
    sarif.parent.mkdir()
    result = cli(home, *command, "--format", "sarif", "-o", str(sarif))
    assert result.exit_code in (0, 3), result.output  # 3: the report's db-1 was unreachable
    assert "wrote the sarif report to" in result.stderr
    assert '"version": "2.1.0"' not in result.stdout  # the file has it, not the terminal
    log = json.loads(sarif.read_text(encoding="utf-8"))
    assert sarif_errors(log) == []
    assert len(log["runs"][0]["results"]) == 6
    assert oct(sarif.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in sarif.parent.iterdir()] == ["patchpilot.sarif"]  # no temp file left

    bom = tmp_path / "out" / "bom.cdx.json"
    result = cli(home, *command, "-f", "cyclonedx", "--output", str(bom))
    assert result.exit_code in (0, 3), result.output
    text = bom.read_text(encoding="utf-8")
    assert cyclonedx_errors(text) == []
    document = json.loads(text)
    for component in document["components"]:
        if "purl" in component:
            assert_purl(component["purl"])

    printed = cli(home, *command, "-f", "cyclonedx")
    assert printed.exit_code in (0, 3), printed.output
    assert cyclonedx_errors(printed.stdout) == []
    assert len(json.loads(printed.stdout)["vulnerabilities"]) == len(document["vulnerabilities"])


def test_json_to_a_file_is_what_stdout_prints_and_replaces_the_old_file(
    home: Path, tmp_path: Path
) -> None:
    target = tmp_path / "report.json"
    target.write_text("old", encoding="utf-8")
    printed = cli(home, "report", RUN, "-f", "json")
    written = cli(home, "report", RUN, "-f", "json", "-o", str(target))
    assert written.exit_code == printed.exit_code == 0
    on_disk = json.loads(target.read_text(encoding="utf-8"))
    on_stdout = json.loads(printed.stdout)
    on_disk.pop("generated_at")
    on_stdout.pop("generated_at")
    assert on_disk == on_stdout
    assert all(f["purl"] for f in on_disk["findings"])


def test_csv_and_markdown_to_files(home: Path, tmp_path: Path) -> None:
    for fmt, needle in (("csv", "host,package,source_package"), ("markdown", "# patchpilot")):
        target = tmp_path / f"report.{fmt}"
        result = cli(home, "findings", "-f", fmt, "-o", str(target))
        assert result.exit_code == 0, result.output
        assert target.read_text(encoding="utf-8").startswith(needle)


def test_the_table_is_refused_with_output_before_anything_runs(home: Path, tmp_path: Path) -> None:
    target = tmp_path / "table.txt"
    for args in (("findings",), ("report", RUN), ("scan", "--target", "local", "--offline")):
        result = cli(home, *args, "-o", str(target))
        assert result.exit_code == 2, result.output
        assert "the table is for a terminal" in result.output
        assert not target.exists()


def test_an_unwritable_target_is_an_actionable_error(home: Path, tmp_path: Path) -> None:
    result = cli(home, "findings", "-f", "sarif", "-o", str(tmp_path / "missing" / "x.sarif"))
    assert isinstance(result.exception, ReportWriteError)
    assert "check that the directory exists" in str(result.exception)
    assert not (tmp_path / "missing").exists()
