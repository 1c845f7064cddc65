"""Strings from outside never drive the terminal and never vanish into rich markup (issue 11).

Hostile values (escape sequences, ``$(…)``, rich markup, bidirectional overrides, spreadsheet
formulas) are either refused at the boundary with a clear error, or printed inert by every
output of the real CLI (subprocesses, a real store under a real ``PATCHPILOT_HOME``).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from patchpilot.app.report import csv_cell, render_markdown
from patchpilot.core.errors import UnsafeArgumentError
from patchpilot.core.inventory import validate_address, validate_host_name
from patchpilot.core.models import Finding, FixState, RiskAssessment, Severity, SSVCOutcome
from patchpilot.core.store import Store, finding_key
from patchpilot.core.validate import validate_hostname

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "configs" / "inventory.example.yaml"
ESC = "\x1b"
HOSTILE_ZONE = "fe80::1%\x1b[31m$(id)"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def run_cli(*args: str, home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATCHPILOT_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "patchpilot", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


# --------------------------------------------------------------------------- host validation


@pytest.mark.parametrize(
    "value",
    [HOSTILE_ZONE, "fe80::1%eth0;id", "fe80::1%a b", "fe80::1%\u202eeth0", "fe80::1%x\ny"],
)
def test_ipv6_zone_with_anything_but_a_name_is_refused(value: str) -> None:
    for validate in (validate_hostname, validate_address, validate_host_name):
        with pytest.raises(UnsafeArgumentError, match="zone index") as info:
            validate(value)
        assert ESC not in str(info.value)  # the refusal itself is printable (repr)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["fe80::1%", "::1%x%y", "fe80::1%" + "e" * 16])
def test_malformed_ipv6_zone_is_refused(value: str) -> None:
    for validate in (validate_hostname, validate_address, validate_host_name):
        with pytest.raises(UnsafeArgumentError):
            validate(value)


@pytest.mark.parametrize("value", ["fe80::1%eth0", "fe80::1%br-lan", "fe80::1%2", "fe80::1%en0.5"])
def test_ipv6_zone_names_and_numbers_are_accepted(value: str) -> None:
    assert validate_hostname(value) == value
    assert validate_address(value) == value
    assert validate_host_name(value) == value


def test_hostile_zone_in_an_inventory_is_refused_by_the_cli(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text(
        'hosts:\n  web-1:\n    address: "fe80::1%\\e[31m$(id)"\n',
        encoding="utf-8",
    )
    res = run_cli("inventory", "-i", str(inv), home=tmp_path / "home")
    assert res.returncode == 2, res.stderr
    assert ESC not in res.stderr + res.stdout
    assert "zone index" in res.stderr
    assert "\\x1b" in res.stderr  # shown, visibly escaped
    assert "Traceback" not in res.stderr


def test_hostile_zone_as_an_ansible_host_name_is_refused(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text("[web]\nfe80::1%$(reboot)\n", encoding="utf-8")
    res = run_cli("inventory", "-i", str(inv), home=tmp_path / "home")
    assert res.returncode == 2, res.stderr
    assert "zone index" in res.stderr


def test_owner_with_bidi_override_is_refused_and_markup_prints_literally(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text('hosts:\n  web-1: {address: 10.0.0.1, owner: "team\\u202egnp.exe"}\n')
    res = run_cli("inventory", "-i", str(bad), home=tmp_path / "home")
    assert res.returncode == 2
    assert "owner" in res.stderr
    good = tmp_path / "good.yaml"
    good.write_text('hosts:\n  web-1: {address: 10.0.0.1, owner: "[red]team[/red] :smile:"}\n')
    res = run_cli("inventory", "-i", str(good), home=tmp_path / "home")
    assert res.returncode == 0, res.stderr
    assert "[red]team[/red] :smile:" in res.stdout  # no markup, no emoji: the text itself


# --------------------------------------------------------------------------- error messages


def test_markup_in_an_error_message_is_printed_not_eaten(tmp_path: Path) -> None:
    res = run_cli("inventory", "-i", str(EXAMPLE), "--limit", "zz[a-z0-9]", home=tmp_path / "home")
    assert res.returncode == 2, res.stderr
    assert "zz[a-z0-9]" in res.stderr.replace("\n", "")


def test_wrong_log_level_names_the_option(tmp_path: Path) -> None:
    res = run_cli("--log-level", "verbose", "runs", home=tmp_path / "home")
    assert res.returncode == 2
    assert "--log-level" in res.stderr
    assert "PATCHPILOT_LOG_LEVEL" not in res.stderr


# --------------------------------------------------------------------------- stored data


HOSTILE_TARGET = "web-[bold]1[/bold]\x1b]0;pwned\x07"
HOSTILE_MESSAGE = "cannot connect: \x1b[2J\x1b[31m[blink]boom[/blink] $(id)"
HOSTILE_ADVISORY = '=HYPERLINK("http://x")\x1b[31m'
HOSTILE_PACKAGE = "[link=http://evil]openssl[/link]"


@pytest.fixture
def hostile_home(tmp_path: Path) -> tuple[Path, str]:
    """A real store holding a run whose target, host error and finding are hostile."""
    home = tmp_path / "home"
    run_id = "20260101T000000Z-abc123"
    with Store(home / "patchpilot.db") as store:
        store.create_run(run_id, kind="scan", target=HOSTILE_TARGET, params={}, started_at=T0)
        store.record_host_failure(run_id, "db-1", "HostConnectError", HOSTILE_MESSAGE)
        finding = Finding(
            host="web-1",
            source_package=HOSTILE_PACKAGE,
            binary_packages=("openssl",),
            installed_source_version="1.0-1",
            advisory_id=HOSTILE_ADVISORY,
            cves=("CVE-2026-0001",),
            fix=FixState.fixed("1.0-2"),
            fix_reachable=True,
            severity=Severity.HIGH,
            first_seen=T0,
        )
        store.replace_findings(run_id, "web-1", [finding])
        store.save_risk(
            run_id,
            [
                RiskAssessment(
                    finding_key=finding_key(finding),
                    score=50.0,
                    factors=(),
                    ssvc=SSVCOutcome.ATTEND,
                    due_date=date(2026, 2, 1),
                    rationale="-2+3 [i]why[/i]\x1b[0m",
                )
            ],
        )
        store.finish_run(run_id, status="completed", summary={"findings": 1})
    return home, run_id


def test_table_report_renders_stored_strings_inert(hostile_home: tuple[Path, str]) -> None:
    home, run_id = hostile_home
    res = run_cli("report", run_id, home=home)
    assert res.returncode == 0, res.stderr
    both = res.stdout + res.stderr
    assert ESC not in both
    assert "\x07" not in both
    flat = both.replace("\n", "")
    assert "[blink]boom[/blink]" in flat  # markup shown as text, not applied
    assert "\\x1b[2J" in flat
    assert HOSTILE_PACKAGE in res.stdout  # a rich link tag shown as text, not a hyperlink
    assert "[i]why[/i]\\x1b[0m" in res.stdout
    runs = run_cli("runs", home=home)
    assert runs.returncode == 0, runs.stderr
    assert ESC not in runs.stdout
    assert "\x07" not in runs.stdout
    assert "[bold]1[/bold]" in runs.stdout.replace("\n", "")


def test_findings_table_renders_stored_strings_inert(hostile_home: tuple[Path, str]) -> None:
    home, run_id = hostile_home
    res = run_cli("findings", "--run", run_id, home=home)
    assert res.returncode == 0, res.stderr
    assert ESC not in res.stdout + res.stderr
    assert '=HYPERLINK("http://x")\\x1b[31m' in res.stdout
    assert HOSTILE_PACKAGE in res.stdout


def test_csv_cells_are_inert_and_never_formulas(hostile_home: tuple[Path, str]) -> None:
    home, run_id = hostile_home
    res = run_cli("report", run_id, "--format", "csv", home=home)
    assert ESC not in res.stdout
    (row,) = list(csv.DictReader(io.StringIO(res.stdout)))
    assert row["advisory"].startswith("'=HYPERLINK(")  # a spreadsheet shows text, runs nothing
    assert row["advisory"].endswith("\\x1b[31m")
    assert row["rationale"].startswith("'-2+3")
    assert row["score"] == "50.0"  # numbers stay numbers
    assert row["host"] == "web-1"


def test_markdown_cells_cannot_become_links_html_or_columns(
    hostile_home: tuple[Path, str],
) -> None:
    home, run_id = hostile_home
    res = run_cli("report", run_id, "--format", "markdown", home=home)
    assert ESC not in res.stdout
    assert "\x07" not in res.stdout
    row = next(line for line in res.stdout.splitlines() if "web-1" in line and "|" in line)
    assert row.count(" | ") == 8  # nine columns, no injected ones
    assert "\\[link=http://evil\\]openssl\\[/link\\]" in row
    assert "<" not in res.stdout


def test_markdown_escapes_html_and_pipes() -> None:
    document: dict[str, Any] = {
        "run": None,
        "data": {"mode": None, "hint": None, "stale_feeds": []},
        "summary": {"findings": 1, "actionable": 0, "kev": 0, "hosts_with_findings": 1},
        "findings": [
            {
                "risk": None,
                "host": "web-1",
                "source_package": "<img src=x onerror=alert(1)>",
                "installed_version": "1|2",
                "fixed_version": None,
                "fix_state": "no-fix-yet",
                "advisory": "`code` *b* ~s~",
                "cves": [],
            }
        ],
    }
    text = render_markdown(document)
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "1\\|2" in text
    assert "\\`code\\` \\*b\\* \\~s\\~" in text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("openssl", "openssl"),
        ("a\x1bb", "a\\x1bb"),
        (3.5, 3.5),
        (None, None),
        (True, True),
    ],
)
def test_csv_cell(value: object, expected: object) -> None:
    assert csv_cell(value) == expected
