"""CI gates fail closed: unknown severities and uncovered security updates count; feed checks.

Real SQLite store; findings and host snapshots written the way a scan writes them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from patchpilot.app.gates import GateResult, UnknownSeverity, feeds_problem, gate
from patchpilot.core.feeds import FeedBatch, FeedKind
from patchpilot.core.models import Finding, FixState, PendingUpdate, Severity, UpdateOrigin
from patchpilot.core.store import Store
from tests.unit.test_report_hosts import FACTS, UPDATE

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RUN = "20260101T000000Z-abc123"

TOOL_UPDATE = PendingUpdate(
    name="curl",
    arch="amd64",
    installed_version="7.88.1-10+deb12u5",
    candidate_version="7.88.1-10+deb12u8",
    security=True,
    origin=UpdateOrigin.SECURITY,
    source_name="curl",
)
"""A security update with no CVE in its changelog and no advisory: no finding covers it."""


def _finding(severity: Severity, *, package: str = "openssl") -> Finding:
    return Finding(
        host="web-1",
        source_package=package,
        binary_packages=("libssl3", "openssl") if package == "openssl" else (package,),
        installed_source_version="3.0.1",
        advisory_id=f"debian-update:{package}",
        cves=("CVE-2026-0001",),
        fix=FixState.fixed("3.0.2"),
        fix_reachable=True,
        severity=severity,
        first_seen=T0,
    )


def _store(
    tmp_path: Path, findings: list[Finding], pending: list[PendingUpdate] | None = None
) -> Store:
    store = Store(tmp_path / "patchpilot.db")
    store.create_run(RUN, kind="scan", target="all", params={}, started_at=T0)
    store.save_host_snapshot(RUN, FACTS, [], pending if pending is not None else [UPDATE])
    store.replace_findings(RUN, "web-1", findings)
    return store


def test_no_threshold_never_fails(tmp_path: Path) -> None:
    with _store(tmp_path, [_finding(Severity.CRITICAL)]) as store:
        assert gate(store, RUN, fail_on=None, fail_on_score=None) == GateResult(failed=False)


def test_unknown_severity_fails_the_gate_by_default(tmp_path: Path) -> None:
    """Without feeds every severity is unknown: the gate must not pass exactly then."""
    with _store(tmp_path, [_finding(Severity.UNKNOWN)]) as store:
        result = gate(store, RUN, fail_on=Severity.LOW, fail_on_score=None)
        assert result.failed
        assert (result.findings, result.unknown_severity, result.security_updates) == (1, 1, 0)
        assert "unknown severity" in result.reason
        assert "--unknown-severity ignore" in result.reason
        high = gate(store, RUN, fail_on=Severity.CRITICAL, fail_on_score=None)
        assert high.failed, "unknown matches any threshold, critical included"


def test_unknown_severity_ignore_counts_only_known_severities(tmp_path: Path) -> None:
    with _store(tmp_path, [_finding(Severity.UNKNOWN)], pending=[UPDATE]) as store:
        result = gate(
            store,
            RUN,
            fail_on=Severity.LOW,
            fail_on_score=None,
            unknown_severity=UnknownSeverity.IGNORE,
        )
        assert not result.failed
        assert result.reason == "gate passed"
        explicit = gate(
            store,
            RUN,
            fail_on=Severity.UNKNOWN,
            fail_on_score=None,
            unknown_severity=UnknownSeverity.IGNORE,
        )
        assert explicit.failed, "--fail-on unknown asks for exactly these"


def test_known_severities_compare_by_rank(tmp_path: Path) -> None:
    with _store(tmp_path, [_finding(Severity.MEDIUM)]) as store:
        assert gate(store, RUN, fail_on=Severity.MEDIUM, fail_on_score=None).failed
        assert not gate(store, RUN, fail_on=Severity.HIGH, fail_on_score=None).failed


def test_a_security_update_no_finding_covers_fails_the_gate(tmp_path: Path) -> None:
    """UPDATE (libssl3 of openssl) is covered by the openssl finding; curl is not."""
    with _store(tmp_path, [_finding(Severity.LOW)], pending=[UPDATE, TOOL_UPDATE]) as store:
        result = gate(store, RUN, fail_on=Severity.HIGH, fail_on_score=None)
        assert result.failed
        assert (result.findings, result.security_updates) == (0, 1)
        assert "1 pending security update(s) of unknown severity" in result.reason
    with _store(tmp_path / "b", [], pending=[UPDATE, TOOL_UPDATE]) as store:
        result = gate(store, RUN, fail_on=Severity.LOW, fail_on_score=None)
        assert (result.findings, result.security_updates) == (0, 2)


def test_score_threshold_alone_ignores_unknown_severity(tmp_path: Path) -> None:
    with _store(tmp_path, [_finding(Severity.UNKNOWN)], pending=[TOOL_UPDATE]) as store:
        assert not gate(store, RUN, fail_on=None, fail_on_score=10.0).failed


def _import(store: Store, kind: FeedKind, published: datetime) -> None:
    store.import_batch(
        FeedBatch(
            kind=kind,
            source=f"test:{kind.value}",
            fetched_at=published,
            published_at=published,
            sha256=f"{published.timestamp():064.0f}"[-64:],
        )
    )


def test_feeds_problem_names_missing_and_stale_feeds(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    with Store(tmp_path / "patchpilot.db") as store:
        problem = feeds_problem(store)
        assert problem is not None
        assert "no advisory feed imported" in problem
        _import(store, FeedKind.KEV, now)
        problem = feeds_problem(store)
        assert problem is not None
        assert "no advisory feed imported" in problem
        _import(store, FeedKind.DEBIAN_DSA, now - timedelta(days=30))
        problem = feeds_problem(store)
        assert problem is not None
        assert "no advisory" not in problem
        assert "stale feeds: debian-dsa" in problem
        _import(store, FeedKind.DEBIAN_DSA, now)
        assert feeds_problem(store) is None


@pytest.mark.parametrize("severity", [s for s in Severity if s is not Severity.UNKNOWN])
def test_every_known_threshold_is_failed_by_an_unknown_finding(
    tmp_path: Path, severity: Severity
) -> None:
    with _store(tmp_path, [_finding(Severity.UNKNOWN)]) as store:
        assert gate(store, RUN, fail_on=severity, fail_on_score=None).failed
