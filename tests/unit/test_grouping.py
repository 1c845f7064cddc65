"""Findings grouped per host and fix; each stale feed listed once (issue 13, item 5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from patchpilot.agents.sourcing import ensure_feeds
from patchpilot.app.grouping import fix_groups
from patchpilot.app.report import report_document
from patchpilot.core.feeds import FeedBatch, FeedKind
from patchpilot.core.models import (
    Finding,
    FixState,
    FixStatus,
    Provenance,
    RiskAssessment,
    Severity,
    SSVCOutcome,
)
from patchpilot.core.store import FindingRecord, Store, finding_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _record(
    advisory: str,
    fixed: str | None,
    *,
    host: str = "web-1",
    source: str = "openjdk-17",
    cves: tuple[str, ...] = (),
    feed: str = "debian-dsa",
    severity: Severity = Severity.HIGH,
    score: float | None = None,
    status: FixStatus = FixStatus.FIXED,
) -> FindingRecord:
    fix = FixState.fixed(fixed) if fixed else FixState(status=status)
    if fixed and status is FixStatus.HELD:
        fix = fix.held()
    finding = Finding(
        host=host,
        source_package=source,
        binary_packages=(f"{source}-jre-headless",),
        installed_source_version="17.0.10+7-1~deb12u1",
        advisory_id=advisory,
        cves=cves,
        fix=fix,
        fix_reachable=True,
        severity=severity,
        first_seen=T0,
        provenance=(Provenance(feed=feed, source=f"test:{feed}", record_id=advisory),),
    )
    risk = (
        None
        if score is None
        else RiskAssessment(
            finding_key=finding_key(finding),
            score=score,
            factors=(),
            ssvc=SSVCOutcome.ATTEND,
            due_date=None,
            rationale=f"because {advisory}",
        )
    )
    return FindingRecord(finding=finding, risk=risk, kev=False)


def test_five_advisories_fixed_by_one_upgrade_are_one_group() -> None:
    records = [
        _record(f"DSA-58{i}0-1", f"17.0.1{i}+7-1~deb12u1", cves=(f"CVE-2025-000{i}",), score=s)
        for i, s in zip(range(1, 6), (40.0, 80.5, 60.0, 20.0, 10.0), strict=True)
    ]
    (group,) = fix_groups(records)
    assert group["advisories"] == [f"DSA-58{i}0-1" for i in range(1, 6)]
    assert group["cves"] == [f"CVE-2025-000{i}" for i in range(1, 6)]
    # the one upgrade: the highest fixed version, by dpkg's ordering
    assert group["fixed_version"] == "17.0.15+7-1~deb12u1"
    assert (group["score"], group["rationale"]) == (80.5, "because DSA-5820-1")
    assert group["actionable"] is True
    assert group["fix_state"] == "fixed"


def test_the_same_cve_from_two_feeds_is_one_group_with_both_sources() -> None:
    records = [
        _record("DSA-5900-1", "17.0.12+7-1~deb12u1", cves=("CVE-2025-1",), feed="debian-dsa"),
        _record("CVE-2025-1", "17.0.12+7-1~deb12u1", cves=("CVE-2025-1",), feed="osv"),
    ]
    (group,) = fix_groups(records)
    assert group["cves"] == ["CVE-2025-1"]
    assert [(p["feed"], p["record_id"]) for p in group["provenance"]] == [
        ("debian-dsa", "DSA-5900-1"),
        ("osv", "CVE-2025-1"),
    ]


def test_hosts_packages_and_unfixed_states_stay_apart() -> None:
    records = [
        _record("DSA-1", "17.0.12+7-1~deb12u1", score=50.0),
        _record("DSA-1", "17.0.12+7-1~deb12u1", host="web-2", score=70.0),
        _record("DSA-2", "3.0.2", source="openssl", score=90.0),
        _record("CVE-2025-9", None, status=FixStatus.NO_FIX_YET),
        _record("CVE-2025-8", None, status=FixStatus.NO_FIX_YET),
    ]
    groups = fix_groups(records)
    assert [(g["host"], g["source_package"], g["fix_state"]) for g in groups] == [
        ("web-1", "openssl", "fixed"),
        ("web-2", "openjdk-17", "fixed"),
        ("web-1", "openjdk-17", "fixed"),
        ("web-1", "openjdk-17", "no-fix-yet"),
    ]
    assert groups[-1]["advisories"] == ["CVE-2025-8", "CVE-2025-9"]
    assert groups[-1]["fixed_version"] is None
    assert groups[-1]["actionable"] is False


def test_a_held_group_is_visible_and_not_actionable() -> None:
    (group,) = fix_groups([_record("DSA-1", "17.0.12+7-1~deb12u1", status=FixStatus.HELD)])
    assert (group["fix_state"], group["fixed_version"], group["actionable"]) == (
        "held",
        "17.0.12+7-1~deb12u1",
        False,
    )


def test_the_report_carries_findings_and_their_groups() -> None:
    records = [_record(f"DSA-{i}", "17.0.12+7-1~deb12u1") for i in range(3)]
    doc = report_document(run=None, records=records, feeds=[])
    assert len(doc["findings"]) == 3
    assert len(doc["fixes"]) == 1
    assert doc["summary"]["fixes"] == 1


def test_each_stale_feed_is_listed_once(tmp_path: Path) -> None:
    """One OSV file per record imports as many feed rows; the summary names the feed once."""
    old = datetime.now(UTC) - timedelta(days=30)
    with Store(tmp_path / "patchpilot.db") as store:
        for i in range(3):
            store.import_batch(
                FeedBatch(
                    kind=FeedKind.OSV,
                    source=f"/feeds/osv/record-{i}.json",
                    fetched_at=old,
                    published_at=old,
                    sha256=f"{i:064d}",
                )
            )
        report = ensure_feeds(store, None)
        status = store.feed_status()
    assert report.stale == ("osv",)
    doc = report_document(run=None, records=[], feeds=status)
    assert doc["data"]["stale_feeds"] == ["osv"]


def test_a_group_says_how_many_of_its_findings_are_accepted() -> None:
    from datetime import date

    records = [_record(f"DSA-{i}", "17.0.12+7-1~deb12u1") for i in range(3)]
    (group,) = fix_groups(records, None, [date(2027, 3, 1), None, date(2027, 2, 1)])
    assert group["accepted"] == {"findings": 2, "of": 3, "until": "2027-02-01"}
    (group,) = fix_groups(records)
    assert group["accepted"] is None
