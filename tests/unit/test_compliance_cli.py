"""``patchpilot compliance`` (patchpilot/cli/compliance.py) in-process through typer's CliRunner,
on a real SQLite store under a temporary home: JSON with the Contract's field names, CSV, the
self-contained HTML written with ``-o``, the table and the filters."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from patchpilot.app.documents import validate_compliance
from patchpilot.core.models import utcnow
from patchpilot.core.settings import load_settings
from patchpilot.core.store import Store
from tests.unit.test_compliance_history import fill_fleet


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for name in [k for k in os.environ if k.startswith("PATCHPILOT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PATCHPILOT_HOME", str(tmp_path / "home"))
    settings = load_settings(None)
    with Store(settings.store_path) as store:
        yield fill_fleet(store, utcnow())


def run(*args: str) -> Any:
    from patchpilot.cli.main import app

    result = CliRunner().invoke(app, ["compliance", *args])
    return result


def as_json(*args: str) -> dict[str, Any]:
    result = run("--format", "json", *args)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    validate_compliance(document)
    return document


def test_json_has_the_contract_fields(home: dict[str, str]) -> None:
    document = as_json()
    assert document["schema"] == "patchpilot.compliance/v1"
    assert {h["name"]: h["state"] for h in document["hosts"]} == {
        "canary-1": "compliant",
        "db-1": "non_compliant",
        "web-1": "overdue",
    }
    for row in document["hosts"]:
        assert set(row) >= {"name", "state", "open", "overdue", "oldest_due"}
    assert set(document["sla"]) >= {"attainment", "mttr_days", "median_ttr_days"}
    assert document["sla"]["mttr_days"] == 2.0
    keys = {"host", "advisory", "cves", "first_seen", "due", "fixed_at", "state"}
    assert all(set(item) >= keys for item in document["items"])
    [canary] = [i for i in document["items"] if i["host"] == "canary-1"]
    assert canary["fixed_by"] == home["patch"]
    assert canary["state"] == "compliant"


def test_filters(home: dict[str, str]) -> None:
    only = as_json("--host", "db-1")
    assert [h["name"] for h in only["hosts"]] == ["db-1"]
    assert {i["host"] for i in only["items"]} == {"db-1"}
    overdue = as_json("--overdue")
    assert [(i["host"], i["state"]) for i in overdue["items"]] == [("web-1", "overdue")]
    soon = as_json("--due-within", "5")
    assert sorted(i["host"] for i in soon["items"]) == ["db-1", "web-1"]
    assert as_json("--due-within", "0")["items"] == overdue["items"]
    bad = run("--due-within", "-1")
    assert bad.exit_code == 2


def test_csv_html_and_table(home: dict[str, str], tmp_path: Path) -> None:
    result = run("--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {(r["host"], r["state"]) for r in rows} == {
        ("web-1", "overdue"),
        ("canary-1", "compliant"),
        ("db-1", "non_compliant"),
    }
    page = tmp_path / "compliance.html"
    written = run("--format", "html", "-o", str(page))
    assert written.exit_code == 0, written.output
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html
    assert html.count("<svg") == 2
    assert "web-1" in html
    assert oct(page.stat().st_mode & 0o777) == "0o600"
    table = run()
    assert table.exit_code == 0, table.output
    assert "web-1" in table.stdout
    assert "overdue" in table.stdout
    assert "SLA attainment" in table.stdout
    refused = run("-o", str(tmp_path / "x.txt"))
    assert refused.exit_code == 2
    assert not (tmp_path / "x.txt").exists()


def test_no_history_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("PATCHPILOT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PATCHPILOT_HOME", str(tmp_path / "empty"))
    document = as_json()
    assert document["hosts"] == []
    assert document["items"] == []
    assert document["sla"]["attainment"] is None
    assert document["survival"]["curve"] == []
    assert document["history"] == []
