"""What an acceptance does: the finding stays in every report, marked, and fails no gate until
the acceptance expires (a controllable clock moves time); changes are audit-logged; the CLI.

Real SQLite store and accept file under tmp_path; the CLI runs in-process (typer's CliRunner).
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from patchpilot.app import acceptances, scans
from patchpilot.app.documents import AcceptancesDocument, validate_report
from patchpilot.app.gates import gate
from patchpilot.app.report import render_csv, render_markdown
from patchpilot.core.audit import AUDIT_FILE
from patchpilot.core.errors import ConfigError, InvalidInputError
from patchpilot.core.models import (
    Finding,
    FixState,
    PendingUpdate,
    RiskAssessment,
    Severity,
    SSVCOutcome,
    UpdateOrigin,
)
from patchpilot.core.settings import Settings, load_settings
from patchpilot.core.store import Store, finding_key
from tests.unit.test_report_hosts import FACTS, UPDATE

RUN = "20260601T000000Z-abc123"
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
CURL = PendingUpdate(
    name="curl",
    arch="amd64",
    installed_version="7.88.1-10+deb12u5",
    candidate_version="7.88.1-10+deb12u8",
    security=True,
    origin=UpdateOrigin.SECURITY,
    source_name="curl",
)
"""A security update no finding covers (counted by the gate as of unknown severity)."""


class Clock:
    """A clock a test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [k for k in os.environ if k.startswith("PATCHPILOT_")]:
        monkeypatch.delenv(name)
    return load_settings(None, home=str(tmp_path / "home"))


def _finding(advisory: str, cves: tuple[str, ...], severity: Severity, package: str) -> Finding:
    return Finding(
        host="web-1",
        source_package=package,
        binary_packages=("libssl3",) if package == "openssl" else (package,),
        installed_source_version="3.0.1",
        advisory_id=advisory,
        cves=cves,
        fix=FixState.fixed("3.0.2"),
        fix_reachable=True,
        severity=severity,
        first_seen=T0,
    )


HIGH = _finding("DSA-5678-1", ("CVE-2026-0001",), Severity.HIGH, "openssl")
LOW = _finding("DLA-4000-1", ("CVE-2026-0002",), Severity.LOW, "zlib")


def _store(settings: Settings, pending: list[PendingUpdate] | None = None) -> Store:
    store = Store(settings.store_path)
    store.create_run(RUN, kind="scan", target="all", params={}, started_at=T0)
    store.save_host_snapshot(RUN, FACTS, [], pending if pending is not None else [UPDATE])
    store.replace_findings(RUN, "web-1", [HIGH, LOW])
    return store


def _risk(finding: Finding, score: float) -> RiskAssessment:
    return RiskAssessment(
        finding_key=finding_key(finding),
        score=score,
        factors=(),
        ssvc=SSVCOutcome.ATTEND,
        due_date=None,
        rationale="test",
    )


def _audit(settings: Settings) -> list[dict[str, object]]:
    path = settings.home / AUDIT_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --------------------------------------------------------------------------- the gate


def test_an_accepted_finding_fails_no_gate_until_the_acceptance_expires(
    settings: Settings,
) -> None:
    clock = Clock(T0)
    acceptances.add(
        settings,
        "dsa-5678-1",
        host="web-*",
        reason="compensating WAF rule (TICKET-42)",
        until="2026-06-10",
        actor="alice",
        clock=clock,
    )
    with _store(settings) as store:
        before = gate(store, RUN, fail_on=Severity.HIGH, fail_on_score=None)
        assert before.failed, "without the accept file loaded the finding counts"
        live = gate(
            store,
            RUN,
            fail_on=Severity.HIGH,
            fail_on_score=None,
            acceptances=acceptances.load(settings, clock=clock),
        )
        assert not live.failed
        assert (live.findings, live.accepted) == (0, 1)
        low = gate(
            store,
            RUN,
            fail_on=Severity.LOW,
            fail_on_score=None,
            acceptances=acceptances.load(settings, clock=clock),
        )
        assert low.failed, "the other finding still counts"
        assert low.findings == 1
        assert "1 accepted risk(s) not counted" in low.reason

        clock.advance(days=9, hours=15)  # 2026-06-10 23:00 UTC: the last day, still held
        assert not gate(
            store,
            RUN,
            fail_on=Severity.HIGH,
            fail_on_score=None,
            acceptances=acceptances.load(settings, clock=clock),
        ).failed
        clock.advance(hours=1)  # 2026-06-11 00:00 UTC: expired, back without a new scan
        expired = gate(
            store,
            RUN,
            fail_on=Severity.HIGH,
            fail_on_score=None,
            acceptances=acceptances.load(settings, clock=clock),
        )
        assert expired.failed
        assert (expired.findings, expired.accepted) == (1, 0)


def test_score_gates_skip_accepted_findings_too(settings: Settings) -> None:
    clock = Clock(T0)
    acceptances.add(settings, "CVE-2026-0001", reason="r", until="5d", actor="alice", clock=clock)
    with _store(settings) as store:
        store.save_risk(RUN, [_risk(HIGH, 90.0), _risk(LOW, 10.0)])
        loaded = acceptances.load(settings, clock=clock)
        high = gate(store, RUN, fail_on=None, fail_on_score=50.0, acceptances=loaded)
        assert not high.failed
        assert high.accepted == 1
        low = gate(store, RUN, fail_on=None, fail_on_score=5.0, acceptances=loaded)
        assert low.failed
        assert (low.findings, low.accepted) == (1, 1)


def test_an_uncovered_security_update_is_accepted_by_its_update_id(settings: Settings) -> None:
    clock = Clock(T0)
    with _store(settings, pending=[UPDATE, CURL]) as store:
        store.replace_findings(RUN, "web-1", [])
        assert gate(store, RUN, fail_on=Severity.HIGH, fail_on_score=None).security_updates == 2
        acceptances.add(
            settings,
            "debian-security-update:curl",
            reason="curl is not used on this host",
            until="30d",
            actor="alice",
            clock=clock,
        )
        verdict = gate(
            store,
            RUN,
            fail_on=Severity.HIGH,
            fail_on_score=None,
            acceptances=acceptances.load(settings, clock=clock),
        )
        assert (verdict.security_updates, verdict.accepted) == (1, 1)
        acceptances.add(
            settings, "CVE-2026-0001", reason="r", until="30d", actor="alice", clock=clock
        )
        verdict = gate(
            store,
            RUN,
            fail_on=Severity.HIGH,
            fail_on_score=None,
            acceptances=acceptances.load(settings, clock=clock),
        )
        assert not verdict.failed, "libssl3's only CVE is accepted too"


# --------------------------------------------------------------------------- reports


def test_accepted_findings_stay_visible_in_json_csv_and_markdown(settings: Settings) -> None:
    clock = Clock(T0)
    acceptances.add(
        settings,
        "DSA-5678-1",
        reason="=cmd|' /C calc'!A0 is not a formula here",
        until="2026-06-10",
        actor="alice",
        clock=clock,
    )
    loaded = acceptances.load(settings, clock=clock)
    with _store(settings) as store:
        report = scans.report(store, RUN, acceptances=loaded)
        listing = scans.findings(store, acceptances=loaded)
    doc = report.document
    validate_report(doc)
    validate_report(listing.document)
    by_advisory = {f["advisory"]: f for f in doc["findings"]}
    assert set(by_advisory) == {"DSA-5678-1", "DLA-4000-1"}, "accepted findings stay listed"
    accepted = by_advisory["DSA-5678-1"]["accepted"]
    assert accepted["by"] == "alice"
    assert accepted["until"] == "2026-06-10"
    assert accepted["id"] == "DSA-5678-1"
    assert accepted["reason"].startswith("=cmd")
    assert by_advisory["DLA-4000-1"]["accepted"] is None
    assert doc["summary"]["accepted"] == 1
    assert listing.document["summary"]["accepted"] == 1

    rows = {
        r["advisory"]: r for r in csv.DictReader(io.StringIO(render_csv(report.records, loaded)))
    }
    assert rows["DSA-5678-1"]["accepted_until"] == "2026-06-10"
    assert rows["DSA-5678-1"]["accepted_by"] == "alice"
    assert rows["DSA-5678-1"]["accepted_reason"].startswith("'=cmd"), "no spreadsheet formula"
    assert rows["DLA-4000-1"]["accepted_until"] == ""

    markdown = render_markdown(doc)
    assert "| accepted |" in markdown
    assert "1 accepted" in markdown
    assert "until 2026-06-10 by alice" in markdown
    assert "=cmd\\|' /C calc'" in markdown, "a | in the reason cannot open a new column"

    clock.advance(days=10)
    after = scans.report(
        Store(settings.store_path), RUN, acceptances=acceptances.load(settings, clock=clock)
    )
    assert all(f["accepted"] is None for f in after.document["findings"])
    assert after.document["summary"]["accepted"] == 0
    assert "| accepted |" not in render_markdown(after.document)


def test_a_report_without_acceptances_marks_nothing(settings: Settings) -> None:
    with _store(settings) as store:
        doc = scans.report(store, RUN).document
    assert [f["accepted"] for f in doc["findings"]] == [None, None]
    assert doc["summary"]["accepted"] == 0


# --------------------------------------------------------------------------- use cases, audit


def test_add_and_remove_are_audit_logged_with_the_actor(settings: Settings) -> None:
    clock = Clock(T0)
    added = acceptances.add(
        settings,
        "DSA-5678-1",
        host="web-*",
        reason="r1",
        until="2026-06-10",
        actor="alice",
        clock=clock,
    )
    assert added.replaced is None
    renewed = acceptances.add(
        settings,
        "dsa-5678-1",
        host="web-*",
        reason="r2",
        until="2026-07-10",
        actor="bob",
        clock=clock,
    )
    assert renewed.replaced is not None
    assert renewed.replaced.by == "alice"
    removed = acceptances.remove(settings, "DSA-5678-1", host="web-*", actor="carol", clock=clock)
    assert [e.by for e in removed] == ["bob"]
    events = _audit(settings)
    assert [(e["action"], e["actor"]) for e in events] == [
        ("acceptance.added", "alice"),
        ("acceptance.added", "bob"),
        ("acceptance.removed", "carol"),
    ]
    first, second, third = (e["details"] for e in events)
    assert first == {
        "id": "DSA-5678-1",
        "host_pattern": "web-*",
        "until": "2026-06-10",
        "reason": "r1",
        "renewed": None,
        "file": str(settings.acceptances_path),
    }
    assert isinstance(second, dict)
    assert second["renewed"]["by"] == "alice"
    assert isinstance(third, dict)
    assert third["accepted_by"] == "bob"
    with pytest.raises(InvalidInputError, match="no acceptance of DSA-5678-1"):
        acceptances.remove(settings, "DSA-5678-1", actor="carol", clock=clock)
    assert len(_audit(settings)) == 3, "nothing removed, nothing logged"


def test_refused_input_writes_nothing(settings: Settings) -> None:
    clock = Clock(T0)
    for kwargs in (
        {"until": "2026-05-31"},
        {"until": "2027-06-02"},
        {"reason": "\x1b[31mred"},
        {"host": "web[0]"},
    ):
        args = {"host": "all", "reason": "r", "until": "10d", **kwargs}
        with pytest.raises(InvalidInputError):
            acceptances.add(settings, "DSA-1-1", actor="alice", clock=clock, **args)
    assert not settings.acceptances_path.exists()
    assert _audit(settings) == []


def test_the_horizon_and_the_file_come_from_the_settings(tmp_path: Path) -> None:
    custom = load_settings(
        None,
        home=str(tmp_path / "home"),
        acceptances={"file": str(tmp_path / "risk" / "accepted.yaml"), "max_days": 30},
    )
    clock = Clock(T0)
    with pytest.raises(InvalidInputError, match="more than 30 days"):
        acceptances.add(custom, "DSA-1-1", reason="r", until="31d", actor="a", clock=clock)
    acceptances.add(custom, "DSA-1-1", reason="r", until="30d", actor="a", clock=clock)
    assert (tmp_path / "risk" / "accepted.yaml").is_file()
    assert [e.id for e in acceptances.load(custom, clock=clock).entries] == ["DSA-1-1"]


def test_a_group_name_as_host_pattern_is_refused_with_its_hosts(
    tmp_path: Path, settings: Settings
) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "hosts:\n  web-1: {address: 127.0.0.2}\n  web-2: {address: 127.0.0.3}\n"
        "groups:\n  webservers: {hosts: [web-1, web-2]}\n"
    )
    with_inventory = settings.model_copy(update={"inventory": inventory})
    with pytest.raises(InvalidInputError, match="'web-1,web-2'"):
        acceptances.add(
            with_inventory, "DSA-1-1", host="webservers", reason="r", until="5d", actor="a"
        )
    acceptances.add(
        with_inventory, "DSA-1-1", host="web-1,web-2", reason="r", until="5d", actor="a"
    )


def test_a_broken_accept_file_is_a_config_error(settings: Settings) -> None:
    settings.home.mkdir(parents=True)
    settings.acceptances_path.write_text("acceptances:\n- {id: DSA-1, reason: r}\n")
    with pytest.raises(ConfigError, match=r"entry 1 \('DSA-1'\)"):
        acceptances.load(settings)


def test_the_listing_document_matches_its_schema(settings: Settings) -> None:
    clock = Clock(T0)
    acceptances.add(settings, "DSA-1-1", reason="r", until="2026-06-01", actor="a", clock=clock)
    acceptances.add(settings, "DSA-2-1", reason="r", until="2026-06-03", actor="a", clock=clock)
    clock.advance(days=1)
    doc = acceptances.acceptances_document(acceptances.load(settings, clock=clock))
    AcceptancesDocument.model_validate(doc)
    assert [(e["id"], e["state"], e["days_left"]) for e in doc["acceptances"]] == [
        ("DSA-1-1", "expired", 0),
        ("DSA-2-1", "live", 2),
    ]


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr("patchpilot.core.audit.current_actor", lambda: "alice")
    return CliRunner()


def test_cli_accept_list_report_unaccept(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from patchpilot.cli.main import app

    home = tmp_path / "home"
    monkeypatch.setenv("PATCHPILOT_HOME", str(home))
    settings = load_settings(None)
    _store(settings).close()

    added = cli.invoke(
        app,
        [
            "accept",
            "DSA-5678-1",
            "--host",
            "web-*",
            "--reason",
            "WAF (TICKET-42)",
            "--until",
            "30d",
        ],
    )
    assert added.exit_code == 0, added.output
    assert "accepted DSA-5678-1 on hosts web-*" in added.stdout
    assert "(by alice)" in added.stdout

    listed = cli.invoke(app, ["accept", "--list", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    doc = json.loads(listed.stdout)
    AcceptancesDocument.model_validate(doc)
    (entry,) = doc["acceptances"]
    assert (entry["id"], entry["host"], entry["by"], entry["state"]) == (
        "DSA-5678-1",
        "web-*",
        "alice",
        "live",
    )
    table = cli.invoke(app, ["accept", "--list"])
    assert "WAF (TICKET-42)" in table.stdout

    report = cli.invoke(app, ["report", RUN, "--format", "json"])
    assert report.exit_code == 0, report.output
    findings = {f["advisory"]: f for f in json.loads(report.stdout)["findings"]}
    assert findings["DSA-5678-1"]["accepted"]["reason"] == "WAF (TICKET-42)"
    shown = cli.invoke(app, ["findings"])
    assert shown.exit_code == 0, shown.output
    assert "accepted until" in shown.stdout
    assert "1 accepted" in shown.stdout

    bad = cli.invoke(app, ["accept", "CVE-2024-1", "--reason", "r", "--until", "5d"])
    assert isinstance(bad.exception, InvalidInputError)
    missing = cli.invoke(app, ["accept", "DSA-1-1", "--until", "5d"])
    assert missing.exit_code == 2
    assert "--reason" in missing.output

    gone = cli.invoke(app, ["unaccept", "dsa-5678-1"])
    assert gone.exit_code == 0, gone.output
    assert "no longer accepted: DSA-5678-1" in gone.stdout
    after = cli.invoke(app, ["report", RUN, "--format", "json"])
    assert all(f["accepted"] is None for f in json.loads(after.stdout)["findings"])
    actions = [e["action"] for e in _audit(settings)]
    assert actions == ["acceptance.added", "acceptance.removed"]
