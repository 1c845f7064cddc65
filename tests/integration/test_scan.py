"""The scan graph end to end on this machine: offline fallback, real feeds, crash + resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

CONTRACT_FIELDS = {
    "host",
    "package",
    "source_package",
    "installed_version",
    "fixed_version",
    "fix_state",
    "advisory",
    "cves",
    "risk",
}


def cli(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # These tests are about the graph, feeds and reports on this machine; reading the changelog
    # of every pending update here (tens of downloads) is tested on the lab instead.
    full = {
        **os.environ,
        "PATCHPILOT_HOME": str(home),
        "PATCHPILOT_DISCOVERY__CHANGELOGS": "none",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "patchpilot", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=600,
        check=False,
    )


def scan_json(home: Path, *extra: str, **env: str) -> dict[str, Any]:
    res = cli(
        "scan", "--target", "local", "--format", "json", "--offline", *extra, home=home, **env
    )
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def _pending_security_sources() -> set[str]:
    out = subprocess.run(
        ["apt-get", "-s", "-o", "Debug::NoLocking=1", "dist-upgrade"],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
        check=True,
    ).stdout
    names = {
        line.split()[1]
        for line in out.splitlines()
        if line.startswith("Inst ") and "-security" in line
    }
    query = subprocess.run(
        ["dpkg-query", "-W", "-f=${binary:Package}\t${source:Package}\n", *sorted(names)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {row.split("\t")[1] for row in query.splitlines() if "\t" in row}


def test_offline_without_feeds_reports_pending_security_updates(tmp_path: Path) -> None:
    home = tmp_path / "home"
    doc = scan_json(home)
    assert doc["schema"] == "patchpilot.report/v1"
    assert doc["data"]["mode"] == "repository-metadata"
    assert "patchpilot feeds import" in doc["data"]["hint"]
    expected = _pending_security_sources()
    got = {f["source_package"] for f in doc["findings"]}
    assert got == expected
    for f in doc["findings"]:
        assert set(f) >= CONTRACT_FIELDS
        assert f["provenance"][0]["confidence"] == "repository-metadata"
        assert f["fix_state"] == "fixed"
        assert f["actionable"] is True
        assert 0 <= f["risk"]["score"] <= 100

    # `patchpilot findings` filters over the same scan (was test_findings_filters)
    def findings(*args: str) -> list[dict[str, Any]]:
        res = cli("findings", "-f", "json", *args, home=home)
        assert res.returncode == 0, res.stderr
        found: list[dict[str, Any]] = json.loads(res.stdout)["findings"]
        return found

    everything = findings()
    assert everything, "this machine has no pending security update to find"
    assert findings("--actionable") == [f for f in everything if f["actionable"]]
    assert findings("--kev") == []
    assert findings("--fix-state", "no-fix-yet") == []
    assert findings("--host", "local") == everything
    assert findings("--host", "elsewhere") == []
    scores = [f["risk"]["score"] for f in everything]
    assert scores == sorted(scores, reverse=True)


def test_scan_with_imported_debian_lists(tmp_path: Path, shared_dir: Path) -> None:
    home = tmp_path / "home"
    for kind, name in (
        ("debian-dsa", "DSA_list_2025-02-13.txt"),
        ("debian-dla", "DLA_list_2025-02-13.txt"),
        ("kev", "../kev/known_exploited_vulnerabilities.json"),
    ):
        res = cli("feeds", "import", kind, str(shared_dir / "feeds" / "debian" / name), home=home)
        assert res.returncode == 0, res.stderr
    status = json.loads(cli("feeds", "status", "-f", "json", home=home).stdout)
    assert {f["kind"] for f in status["feeds"]} == {"debian-dsa", "debian-dla", "kev"}
    doc = scan_json(home)
    assert doc["data"]["mode"] == "advisories"
    # The 2025 lists are old by now: every report flags them as stale.
    assert "debian-dsa" in doc["data"]["stale_feeds"]
    from_advisories = {
        f["source_package"] for f in doc["findings"] if f["provenance"][0]["confidence"] == "exact"
    }
    for f in doc["findings"]:
        assert set(f) >= CONTRACT_FIELDS
        if f["provenance"][0]["confidence"] == "exact":
            assert f["advisory"].startswith(("DSA-", "DLA-"))
            assert f["cves"]
            assert all(c.startswith("CVE-") for c in f["cves"])
            assert f["provenance"][0]["feed"] in {"debian-dsa", "debian-dla"}
        else:
            # Pending -security updates the (old) lists do not explain are still reported.
            assert f["provenance"][0]["confidence"] == "repository-metadata"
            assert f["source_package"] not in from_advisories
    reported = {f["source_package"] for f in doc["findings"]}
    assert _pending_security_sources() <= reported
    # Reports in every format.
    for fmt in ("table", "csv", "markdown", "json"):
        res = cli("report", "--format", fmt, home=home)
        assert res.returncode == 0, res.stderr
    runs = json.loads(cli("runs", "-f", "json", home=home).stdout)["runs"]
    assert runs[0]["status"] == "completed"


def _finding_keys(doc: dict[str, Any]) -> set[tuple[str, str, str, str | None]]:
    return {
        (f["host"], f["source_package"], f["advisory"], f["fixed_version"]) for f in doc["findings"]
    }


def _pending_security_updates() -> int:
    """Security upgrades apt offers this machine, counted by apt itself (the oracle)."""
    out = subprocess.run(
        ["apt-get", "-s", "-o", "Debug::NoLocking=1", "dist-upgrade"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout
    return sum(1 for line in out.splitlines() if line.startswith("Inst ") and "-security" in line)


def test_fail_on_gates_with_exit_5(tmp_path: Path) -> None:
    """Issue 13: with no feeds every severity is unknown, and the gate fails closed."""
    home = tmp_path / "home"
    pending = _pending_security_updates()
    res = cli("scan", "--target", "local", "--offline", "--fail-on", "low", home=home)
    # Exit 5 exactly when apt offers this machine a security update (CI images have some).
    assert res.returncode == (5 if pending else 0), (pending, res.stderr)
    if pending:
        assert "unknown severity" in res.stderr
    res = cli(
        "scan",
        "--target",
        "local",
        "--offline",
        "--fail-on",
        "critical",
        "--unknown-severity",
        "ignore",
        home=home,
    )
    assert res.returncode == 0, res.stderr
    res = cli("scan", "--target", "local", "--offline", "--require-feeds", home=home)
    assert res.returncode == 9, res.stderr
    assert "no advisory feed imported" in res.stderr
