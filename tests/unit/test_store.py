"""The SQLite store: schema, feeds and enrichment, runs, host snapshots, findings, threads.

The advisory merge rule, idempotence and rollback are in ``test_store_merge.py``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from patchpilot.core.feeds import FeedBatch, FeedKind
from patchpilot.core.models import (
    CVSS,
    EPSS,
    Advisory,
    Ecosystem,
    Finding,
    FixState,
    FixStatus,
    HostFacts,
    InstalledPackage,
    KEVEntry,
    OSFamily,
    OSInfo,
    PendingUpdate,
    Provenance,
    RiskAssessment,
    Severity,
    SSVCOutcome,
)
from patchpilot.core.store import (
    SCHEMA_VERSION,
    HostResult,
    Store,
    StoreError,
    finding_key,
)
from patchpilot.core.store import schema as store_schema

T0 = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
_SHA = itertools.count()


# --------------------------------------------------------------------------- factories


def adv(
    advisory_id: str = "CVE-2024-6387",
    package: str = "openssh",
    version: str | None = "1:9.2p1-2+deb12u3",
    *,
    status: FixStatus | None = None,
    feed: str = "debian-json",
    release: str | None = "bookworm",
    ecosystem: Ecosystem = Ecosystem.DEBIAN,
    aliases: tuple[str, ...] = (),
    severity: Severity = Severity.HIGH,
    source: str = "https://security-tracker.debian.org/tracker/data/json",
    summary: str | None = None,
) -> Advisory:
    """An advisory record; ``version=None`` (or a non-fixed status) makes it unfixed."""
    if status is None:
        status = FixStatus.FIXED if version else FixStatus.NO_FIX_YET
    fix = FixState(status=status, version=version if status is FixStatus.FIXED else None)
    return Advisory(
        id=advisory_id,
        aliases=aliases,
        ecosystem=ecosystem,
        release=release,
        source_package=package,
        fix=fix,
        severity=severity,
        summary=summary,
        feed=feed,
        provenance=Provenance(feed=feed, source=source, record_id=advisory_id),
    )


def batch(
    *advisories: Advisory,
    kind: FeedKind = FeedKind.DEBIAN_JSON,
    fetched_at: datetime = T0,
    source: str = "https://security-tracker.debian.org/tracker/data/json",
    sha256: str | None = None,
    cvss: Sequence[tuple[str, CVSS]] = (),
    epss: Sequence[tuple[str, EPSS]] = (),
    kev: Sequence[tuple[str, KEVEntry]] = (),
    etag: str | None = None,
    last_modified: str | None = None,
    published_at: datetime | None = None,
) -> FeedBatch:
    """A feed batch; a fresh sha256 unless given."""
    digest = sha256 or hashlib.sha256(f"doc-{next(_SHA)}".encode()).hexdigest()
    return FeedBatch(
        kind=kind,
        source=source,
        fetched_at=fetched_at,
        published_at=published_at,
        sha256=digest,
        advisories=tuple(advisories),
        cvss=tuple(cvss),
        epss=tuple(epss),
        kev=tuple(kev),
        etag=etag,
        last_modified=last_modified,
    )


def facts(host: str, package_count: int = 2) -> HostFacts:
    """Facts of a Debian 12 host."""
    return HostFacts(
        host=host,
        os=OSInfo(
            id="debian",
            version_id="12",
            version_codename="bookworm",
            family=OSFamily.DEBIAN,
        ),
        kernel="6.1.0-21-amd64",
        reboot_required=False,
        package_count=package_count,
        source_package_count=1,
        ecosystem=Ecosystem.DEBIAN,
        collected_at=T0,
    )


PACKAGES = (
    InstalledPackage(
        name="openssh-server",
        version="1:9.2p1-2+deb12u2",
        arch="amd64",
        source_name="openssh",
        source_version="1:9.2p1-2+deb12u2",
        ecosystem=Ecosystem.DEBIAN,
    ),
    InstalledPackage(
        name="openssh-client",
        version="1:9.2p1-2+deb12u2",
        arch="amd64",
        source_name="openssh",
        source_version="1:9.2p1-2+deb12u2",
        ecosystem=Ecosystem.DEBIAN,
        epoch=1,
    ),
)
PENDING = (
    PendingUpdate(
        name="openssh-server",
        arch="amd64",
        installed_version="1:9.2p1-2+deb12u2",
        candidate_version="1:9.2p1-2+deb12u3",
        origins=("Debian-Security:12/stable-security",),
        security=True,
    ),
)


def finding(
    host: str,
    advisory_id: str = "CVE-2024-6387",
    package: str = "openssh",
    *,
    severity: Severity = Severity.HIGH,
    fix: FixState | None = None,
    reachable: bool | None = True,
    cves: tuple[str, ...] = (),
    first_seen: datetime = T0,
) -> Finding:
    """A finding of ``host``."""
    return Finding(
        host=host,
        source_package=package,
        binary_packages=(f"{package}-bin",),
        installed_source_version="1.0-1",
        advisory_id=advisory_id,
        cves=cves,
        fix=fix or FixState.fixed("1.0-2"),
        fix_reachable=reachable,
        severity=severity,
        first_seen=first_seen,
    )


def risk(f: Finding, score: float) -> RiskAssessment:
    """A risk assessment of ``f``."""
    return RiskAssessment(
        finding_key=finding_key(f),
        score=score,
        factors=(),
        ssvc=SSVCOutcome.ATTEND,
        due_date=date(2024, 8, 1),
        rationale="test",
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store in a temp dir (in a subdirectory that does not exist yet)."""
    with Store(tmp_path / "sub" / "dir" / "patchpilot.db") as s:
        yield s


# --------------------------------------------------------------------------- schema


def test_new_store_creates_dirs_schema_and_pragmas(store: Store) -> None:
    assert store.path.is_file()
    assert store.schema_version == SCHEMA_VERSION >= 1
    raw = sqlite3.connect(store.path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()
    conn = store._conn()
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000


def test_reopen_keeps_data_and_does_not_remigrate(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with Store(path) as s:
        s.import_batch(batch(adv()))
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s.has_advisories(Ecosystem.DEBIAN)


def test_forward_migration_runs_only_new_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.db"
    with Store(path) as s:
        s.create_run("r1", kind="scan", target="all", params={})
    step = ("CREATE TABLE extra (x INTEGER)", "INSERT INTO extra (x) SELECT count(*) FROM runs")
    monkeypatch.setattr(store_schema, "MIGRATIONS", (*store_schema.MIGRATIONS, step))
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION + 1
        assert s._conn().execute("SELECT x FROM extra").fetchone()[0] == 1
        assert s.get_run("r1") is not None


def test_failed_migration_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.db"
    Store(path).close()
    bad = ("CREATE TABLE extra (x INTEGER)", "INSERT INTO nowhere VALUES (1)")
    monkeypatch.setattr(store_schema, "MIGRATIONS", (*store_schema.MIGRATIONS, bad))
    with pytest.raises(StoreError, match="rolled back"):
        Store(path)
    monkeypatch.undo()
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        tables = {r[0] for r in s._conn().execute("SELECT name FROM sqlite_master")}
        assert "extra" not in tables


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    Store(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    raw.close()
    with pytest.raises(StoreError, match="newer than this patchpilot"):
        Store(path)


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        Store(path)


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    s = Store(tmp_path / "p.db")
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.has_advisories()


# --------------------------------------------------------------------------- feeds


def test_feed_status_staleness_per_kind(store: Store) -> None:
    now = T0 + timedelta(days=3)
    store.import_batch(batch(adv(), kind=FeedKind.DEBIAN_JSON, fetched_at=T0))
    store.import_batch(
        batch(
            kind=FeedKind.KEV,
            source="kev.json",
            fetched_at=T0,
            published_at=T0 - timedelta(days=1),
            kev=[
                ("CVE-2024-6387", KEVEntry(date_added=date(2024, 7, 1), due_date=date(2024, 7, 22)))
            ],
        )
    )
    statuses = {s.kind: s for s in store.feed_status(now=now)}
    assert statuses[FeedKind.DEBIAN_JSON].stale  # 3 days > 2 days
    assert statuses[FeedKind.DEBIAN_JSON].max_age_days == 2
    assert statuses[FeedKind.DEBIAN_JSON].records == 1
    assert not statuses[FeedKind.KEV].stale  # 3 days <= 7 days
    assert statuses[FeedKind.KEV].published_at == T0 - timedelta(days=1)
    assert FeedKind.EPSS not in statuses
    assert all(not s.stale for s in store.feed_status(now=T0 + timedelta(days=1)))


def test_feed_status_reports_newest_import_per_source(store: Store) -> None:
    store.import_batch(batch(adv(), fetched_at=T0))
    store.import_batch(batch(adv(version="1:9.2p1-2+deb12u4"), fetched_at=T0 + timedelta(days=2)))
    store.import_batch(batch(adv(), source="/tmp/mirror.json", fetched_at=T0))
    statuses = store.feed_status(now=T0 + timedelta(days=3))
    assert [(s.source, s.stale) for s in statuses] == [
        ("/tmp/mirror.json", True),
        ("https://security-tracker.debian.org/tracker/data/json", False),
    ]


def test_reimporting_unchanged_document_refreshes_freshness(store: Store) -> None:
    first = batch(adv(), fetched_at=T0, etag='"a"')
    store.import_batch(first)
    later = first.model_copy(update={"fetched_at": T0 + timedelta(days=5), "etag": '"b"'})
    stats = store.import_batch(later)
    assert stats.duplicate
    assert stats.created == stats.changed == 0
    (status,) = store.feed_status(now=T0 + timedelta(days=6))
    assert status.fetched_at == T0 + timedelta(days=5)
    assert not status.stale
    assert store.feed_validators(FeedKind.DEBIAN_JSON, first.source) == ('"b"', None)
    # An older copy never moves freshness back.
    store.import_batch(first)
    (status,) = store.feed_status(now=T0 + timedelta(days=6))
    assert status.fetched_at == T0 + timedelta(days=5)


def test_feed_validators(store: Store) -> None:
    assert store.feed_validators(FeedKind.KEV, "https://x/kev.json") is None
    store.import_batch(
        batch(kind=FeedKind.KEV, source="https://x/kev.json", etag='"v1"', last_modified="Mon")
    )
    store.import_batch(
        batch(
            kind=FeedKind.KEV,
            source="https://x/kev.json",
            fetched_at=T0 + timedelta(hours=1),
            etag='"v2"',
            last_modified="Tue",
        )
    )
    assert store.feed_validators(FeedKind.KEV, "https://x/kev.json") == ('"v2"', "Tue")
    assert store.feed_validators(FeedKind.EPSS, "https://x/kev.json") is None


def test_has_advisories(store: Store) -> None:
    assert not store.has_advisories()
    store.import_batch(batch(adv()))
    assert store.has_advisories()
    assert store.has_advisories(Ecosystem.DEBIAN)
    assert not store.has_advisories(Ecosystem.ALPINE)


def test_advisory_index_and_release_scoping(store: Store) -> None:
    store.import_batch(
        batch(
            adv("CVE-2024-0001", "openssl", "3.0.13-1~deb12u1"),
            adv("CVE-2024-0002", "openssl", None),
            adv("CVE-2024-0003", "zlib", "1:1.2.13.dfsg-1+deb12u1"),
            adv("CVE-2024-0001", "openssl", "1.1.1w-0+deb11u1", release="bullseye"),
            adv("PYSEC-2024-1", "requests", "2.32.0", ecosystem=Ecosystem.PYPI, release=None),
        )
    )
    index = store.advisory_index(Ecosystem.DEBIAN, "bookworm")
    assert sorted(index) == ["openssl", "zlib"]
    assert [a.id for a in index["openssl"]] == ["CVE-2024-0001", "CVE-2024-0002"]
    unfixed = index["openssl"][1]
    assert unfixed.fix.status is FixStatus.NO_FIX_YET
    assert unfixed.fix.version is None
    assert store.advisories_for(Ecosystem.DEBIAN, "bullseye", "openssl")[0].fix.version == (
        "1.1.1w-0+deb11u1"
    )
    assert store.advisories_for(Ecosystem.DEBIAN, None, "openssl") == []
    assert [a.id for a in store.advisories_for(Ecosystem.PYPI, None, "requests")] == [
        "PYSEC-2024-1"
    ]
    assert store.advisory_index(Ecosystem.PYPI, None)["requests"][0].release is None


# --------------------------------------------------------------------------- enrichment


def _cvss(score: float, version: str = "3.1", source: str | None = "nvd@nist.gov") -> CVSS:
    return CVSS(version=version, vector=f"CVSS:{version}/AV:N", base_score=score, source=source)


def test_enrichment_combines_tables(store: Store) -> None:
    store.import_batch(
        batch(
            kind=FeedKind.NVD,
            source="nvd",
            cvss=[("CVE-2024-0001", _cvss(9.8)), ("CVE-2024-0001", _cvss(9.3, "4.0"))],
        )
    )
    store.import_batch(
        batch(
            kind=FeedKind.EPSS,
            source="epss.csv",
            epss=[
                (
                    "CVE-2024-0001",
                    EPSS(probability=0.9, percentile=0.99, score_date=date(2024, 7, 1)),
                ),
                (
                    "CVE-2024-0002",
                    EPSS(probability=0.1, percentile=0.5, score_date=date(2024, 7, 1)),
                ),
            ],
        )
    )
    entry = KEVEntry(
        date_added=date(2024, 7, 1), due_date=date(2024, 7, 22), known_ransomware_use=True
    )
    store.import_batch(batch(kind=FeedKind.KEV, source="kev.json", kev=[("CVE-2024-0001", entry)]))
    result = store.enrichment(
        ["CVE-2024-0001", "CVE-2024-0002", "CVE-2024-0003", "DSA-1-1", "CVE-2024-0001"]
    )
    assert set(result) == {"CVE-2024-0001", "CVE-2024-0002"}
    one = result["CVE-2024-0001"]
    assert {c.version for c in one.cvss} == {"3.1", "4.0"}
    assert one.best_cvss is not None
    assert one.best_cvss.base_score == 9.3
    assert one.epss is not None
    assert one.epss.probability == 0.9
    assert one.kev == entry
    two = result["CVE-2024-0002"]
    assert two.cvss == ()
    assert two.kev is None
    assert store.enrichment([]) == {}


def test_epss_newer_score_date_wins(store: Store) -> None:
    def epss_batch(p: float, day: int, fetched: datetime) -> FeedBatch:
        score = EPSS(probability=p, percentile=p, score_date=date(2024, 7, day))
        return batch(
            kind=FeedKind.EPSS, source="epss", fetched_at=fetched, epss=[("CVE-2024-0001", score)]
        )

    store.import_batch(epss_batch(0.2, 2, T0))
    # Fetched later, but scored earlier: ignored.
    stats = store.import_batch(epss_batch(0.5, 1, T0 + timedelta(days=1)))
    assert (stats.epss, stats.enrichment_skipped) == (0, 1)
    assert store.enrichment(["CVE-2024-0001"])["CVE-2024-0001"].epss.probability == 0.2  # type: ignore[union-attr]
    stats = store.import_batch(epss_batch(0.7, 3, T0 - timedelta(days=1)))
    assert stats.epss == 1
    assert store.enrichment(["CVE-2024-0001"])["CVE-2024-0001"].epss.probability == 0.7  # type: ignore[union-attr]


def test_kev_and_cvss_newer_import_replaces(store: Store) -> None:
    old = KEVEntry(date_added=date(2024, 7, 1), due_date=date(2024, 7, 22))
    new = KEVEntry(
        date_added=date(2024, 7, 1), due_date=date(2024, 7, 29), known_ransomware_use=False
    )
    store.import_batch(
        batch(kind=FeedKind.KEV, source="k", fetched_at=T0, kev=[("CVE-2024-0001", old)])
    )
    store.import_batch(
        batch(
            kind=FeedKind.KEV,
            source="k",
            fetched_at=T0 + timedelta(days=1),
            kev=[("CVE-2024-0001", new)],
        )
    )
    stats = store.import_batch(
        batch(
            kind=FeedKind.KEV,
            source="k",
            fetched_at=T0 - timedelta(days=1),
            kev=[("CVE-2024-0001", old)],
        )
    )
    assert stats.enrichment_skipped == 1
    assert store.enrichment(["CVE-2024-0001"])["CVE-2024-0001"].kev == new

    store.import_batch(
        batch(
            kind=FeedKind.NVD,
            source="n",
            fetched_at=T0,
            cvss=[("CVE-2024-0001", _cvss(5.0)), ("CVE-2024-0001", _cvss(6.0, "4.0"))],
        )
    )
    store.import_batch(
        batch(
            kind=FeedKind.OSV,
            source="o",
            fetched_at=T0,
            cvss=[("CVE-2024-0001", _cvss(4.0, source="osv"))],
        )
    )
    # A newer NVD document drops the 4.0 score: NVD's set is replaced, OSV's kept.
    store.import_batch(
        batch(
            kind=FeedKind.NVD,
            source="n",
            fetched_at=T0 + timedelta(days=1),
            cvss=[("CVE-2024-0001", _cvss(7.5))],
        )
    )
    scores = sorted(c.base_score for c in store.enrichment(["CVE-2024-0001"])["CVE-2024-0001"].cvss)
    assert scores == [4.0, 7.5]
    stats = store.import_batch(
        batch(kind=FeedKind.NVD, source="n", fetched_at=T0, cvss=[("CVE-2024-0001", _cvss(1.0))])
    )
    assert stats.enrichment_skipped == 1


def test_malformed_cve_id_rejects_batch(store: Store) -> None:
    entry = KEVEntry(date_added=date(2024, 7, 1), due_date=date(2024, 7, 22))
    with pytest.raises(StoreError, match="not a CVE id"):
        store.import_batch(
            batch(kind=FeedKind.KEV, source="k", kev=[("CVE-2024-0001", entry), ("GHSA-x", entry)])
        )
    assert store.enrichment(["CVE-2024-0001"]) == {}
    assert store.feed_status() == []


def test_advisory_cves_join(store: Store) -> None:
    store.import_batch(
        batch(
            adv("DSA-5724-1", aliases=("CVE-2024-6387", "CVE-2024-6409"), feed="debian-dsa"),
            adv("CVE-2024-6387"),
            kind=FeedKind.DEBIAN_DSA,
        )
    )
    assert [a.id for a in store.advisories_by_cve("CVE-2024-6387")] == [
        "CVE-2024-6387",
        "DSA-5724-1",
    ]
    assert [a.id for a in store.advisories_by_cve("CVE-2024-6409")] == ["DSA-5724-1"]
    assert store.advisories_by_cve("CVE-1999-0001") == []


# --------------------------------------------------------------------------- runs


def test_runs_lifecycle(store: Store) -> None:
    store.create_run(
        "r1", kind="scan", target="web", params={"limit": ["web-*"], "at": T0}, started_at=T0
    )
    store.create_run("r2", kind="plan", target="all", params={}, started_at=T0 + timedelta(hours=1))
    run = store.get_run("r1")
    assert run is not None
    assert (run.kind, run.target, run.status) == ("scan", "web", "running")
    assert run.params == {"limit": ["web-*"], "at": "2024-07-01T12:00:00Z"}
    assert run.started_at == T0
    assert run.finished_at is None
    assert run.summary is None
    store.finish_run("r1", status="succeeded", summary={"hosts": 3})
    run = store.get_run("r1")
    assert run is not None
    assert run.status == "succeeded"
    assert run.summary == {"hosts": 3}
    assert run.finished_at is not None
    assert [r.run_id for r in store.list_runs()] == ["r2", "r1"]
    assert [r.run_id for r in store.list_runs(limit=1)] == ["r2"]
    assert store.get_run("nope") is None


def test_create_run_is_idempotent_but_refuses_conflicts(store: Store) -> None:
    store.create_run("r1", kind="scan", target="web", params={"a": 1})
    store.create_run("r1", kind="scan", target="web", params={"a": 1})
    assert len(store.list_runs()) == 1
    with pytest.raises(StoreError, match="exists already"):
        store.create_run("r1", kind="deploy", target="web", params={})


def test_finish_unknown_run(store: Store) -> None:
    with pytest.raises(StoreError, match="unknown run"):
        store.finish_run("ghost", status="failed", summary={})


# --------------------------------------------------------------------------- snapshots


def test_host_snapshot_roundtrip_and_replace(store: Store) -> None:
    store.create_run("r1", kind="scan", target="all", params={})
    store.save_host_snapshot("r1", facts("web-1"), PACKAGES, PENDING)
    snap = store.load_host_snapshot("r1", "web-1")
    assert snap is not None
    assert snap.facts == facts("web-1")
    assert snap.packages == PACKAGES
    assert snap.pending == PENDING
    # Saving again replaces (no duplicated packages).
    store.save_host_snapshot("r1", facts("web-1", 1), PACKAGES[:1], ())
    snap = store.load_host_snapshot("r1", "web-1")
    assert snap is not None
    assert snap.packages == PACKAGES[:1]
    assert snap.pending == ()
    assert store.load_host_snapshot("r1", "web-2") is None
    assert store.load_host_snapshot("r2", "web-1") is None


def test_host_failures_and_results(store: Store) -> None:
    store.create_run("r1", kind="scan", target="all", params={})
    store.save_host_snapshot("r1", facts("web-1"), PACKAGES, PENDING)
    store.save_host_snapshot("r1", facts("web-2"), PACKAGES, ())
    store.record_host_failure("r1", "db-1", "HostKeyError", "db-1: host key changed")
    store.record_host_failure("r1", "web-2", "HostConnectError", "web-2: timed out")
    assert store.host_results("r1") == [
        HostResult(
            host="db-1", ok=False, error_type="HostKeyError", message="db-1: host key changed"
        ),
        HostResult(host="web-1", ok=True, package_count=2),
        HostResult(
            host="web-2", ok=False, error_type="HostConnectError", message="web-2: timed out"
        ),
    ]
    assert store.load_host_snapshot("r1", "web-2") is None
    count = (
        store._conn()
        .execute("SELECT count(*) FROM host_packages WHERE run_id = 'r1' AND host = 'web-2'")
        .fetchone()[0]
    )
    assert count == 0  # cascaded away with the snapshot


def test_snapshot_of_unknown_run_is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="unknown run"):
        store.save_host_snapshot("ghost", facts("web-1"), PACKAGES, ())
    with pytest.raises(StoreError, match="unknown run"):
        store.record_host_failure("ghost", "web-1", "X", "y")
    with pytest.raises(StoreError, match="unknown run"):
        store.replace_findings("ghost", "web-1", [])
    with pytest.raises(StoreError, match="unknown run"):
        store.save_risk("ghost", [])


def test_ten_threads_write_snapshots_concurrently(store: Store) -> None:
    store.create_run("r1", kind="scan", target="all", params={})
    errors: list[BaseException] = []
    barrier = threading.Barrier(10)

    def work(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(5):
                store.save_host_snapshot("r1", facts(f"host-{i}"), PACKAGES, PENDING)
                store.replace_findings("r1", f"host-{i}", [finding(f"host-{i}")])
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    results = store.host_results("r1")
    assert [r.host for r in results] == sorted(f"host-{i}" for i in range(10))
    assert all(r.ok and r.package_count == 2 for r in results)
    assert len(store.findings(run_id="r1")) == 10
    assert len(store._connections) == 11  # one per thread plus the main thread's


# --------------------------------------------------------------------------- findings


def test_findings_roundtrip_with_risk_and_kev(store: Store) -> None:
    store.create_run("r1", kind="scan", target="all", params={})
    f1 = finding("web-1", "CVE-2024-0001", "openssl", severity=Severity.CRITICAL)
    f2 = finding("web-1", "DSA-1-1", "zlib", cves=("CVE-2024-0002",), severity=Severity.LOW)
    f3 = finding(
        "web-2", "CVE-2024-0003", "curl", fix=FixState(status=FixStatus.NO_FIX_YET), reachable=None
    )
    store.replace_findings("r1", "web-1", [f1, f2])
    store.replace_findings("r1", "web-2", [f3])
    store.save_risk("r1", [risk(f1, 50.0), risk(f2, 80.0)])
    entry = KEVEntry(date_added=date(2024, 7, 1), due_date=date(2024, 7, 22))
    store.import_batch(batch(kind=FeedKind.KEV, source="k", kev=[("CVE-2024-0002", entry)]))
    records = store.findings(run_id="r1")
    assert [r.finding for r in records] == [f2, f1, f3]  # by score desc, unscored last
    assert [r.kev for r in records] == [True, False, False]
    assert records[0].risk == risk(f2, 80.0)
    assert records[2].risk is None
    # save_risk replaces by key
    store.save_risk("r1", [risk(f1, 90.0)])
    assert [r.finding.advisory_id for r in store.findings(run_id="r1")] == [
        "CVE-2024-0001",
        "DSA-1-1",
        "CVE-2024-0003",
    ]


def test_findings_filters(store: Store) -> None:
    store.create_run("r1", kind="scan", target="all", params={})
    crit = finding("a", "CVE-2024-0001", "p1", severity=Severity.CRITICAL)
    low = finding("a", "CVE-2024-0002", "p2", severity=Severity.LOW, reachable=False)
    unknown = finding("a", "CVE-2024-0003", "p3", severity=Severity.UNKNOWN, reachable=None)
    unfixed = finding(
        "b",
        "CVE-2024-0004",
        "p4",
        severity=Severity.HIGH,
        fix=FixState(status=FixStatus.WILL_NOT_FIX),
        reachable=None,
    )
    store.replace_findings("r1", "a", [crit, low, unknown])
    store.replace_findings("r1", "b", [unfixed])
    store.save_risk("r1", [risk(crit, 90), risk(low, 10), risk(unfixed, 40)])
    entry = KEVEntry(date_added=date(2024, 7, 1), due_date=date(2024, 7, 22))
    store.import_batch(batch(kind=FeedKind.KEV, source="k", kev=[("CVE-2024-0002", entry)]))

    def ids(**kwargs: object) -> list[str]:
        return [r.finding.advisory_id for r in store.findings(run_id="r1", **kwargs)]  # type: ignore[arg-type]

    assert ids(host="b") == ["CVE-2024-0004"]
    assert ids(min_severity=Severity.HIGH) == ["CVE-2024-0001", "CVE-2024-0004", "CVE-2024-0003"]
    assert ids(min_severity=Severity.HIGH, include_unknown_severity=False) == [
        "CVE-2024-0001",
        "CVE-2024-0004",
    ]
    assert ids(min_score=40) == ["CVE-2024-0001", "CVE-2024-0004"]
    assert ids(kev=True) == ["CVE-2024-0002"]
    assert ids(kev=False) == ["CVE-2024-0001", "CVE-2024-0004", "CVE-2024-0003"]
    assert ids(fix_status=FixStatus.WILL_NOT_FIX) == ["CVE-2024-0004"]
    assert ids(actionable=True) == ["CVE-2024-0001"]
    assert ids(actionable=False) == ["CVE-2024-0004", "CVE-2024-0002", "CVE-2024-0003"]
    assert ids(host="a", min_severity=Severity.LOW, actionable=False, kev=True) == ["CVE-2024-0002"]
    assert all(r.finding.actionable for r in store.findings(run_id="r1", actionable=True))


def test_findings_latest_successful_run_per_host(store: Store) -> None:
    store.create_run("r1", kind="scan", target="all", params={}, started_at=T0)
    store.create_run("r2", kind="scan", target="all", params={}, started_at=T0 + timedelta(days=1))
    store.create_run("r3", kind="scan", target="all", params={}, started_at=T0 + timedelta(days=2))
    for host in ("a", "b", "c", "d"):
        store.replace_findings("r1", host, [finding(host, "CVE-2024-0001")])
    store.replace_findings("r2", "a", [finding("a", "CVE-2024-0002")])  # a: newer run wins
    store.replace_findings("r2", "b", [])  # b: patched, zero findings hides r1's
    store.replace_findings("r2", "c", [finding("c", "CVE-2024-0009")])  # c: failed in r2 -> r1
    store.record_host_failure("r2", "c", "HostConnectError", "c: timed out")
    store.record_host_failure("r3", "d", "HostConnectError", "d: timed out")  # d: r1
    latest = {(r.finding.host, r.finding.advisory_id) for r in store.findings()}
    assert latest == {("a", "CVE-2024-0002"), ("c", "CVE-2024-0001"), ("d", "CVE-2024-0001")}
    assert [r.finding.advisory_id for r in store.findings(host="a")] == ["CVE-2024-0002"]
    assert store.findings(host="b") == []
    assert {r.finding.host for r in store.findings(run_id="r1")} == {"a", "b", "c", "d"}


def test_first_seen_preserved_across_runs(store: Store) -> None:
    store.create_run("r1", kind="scan", target="all", params={}, started_at=T0)
    store.create_run("r2", kind="scan", target="all", params={}, started_at=T0 + timedelta(days=1))
    day1, day2 = T0, T0 + timedelta(days=1)
    store.replace_findings("r1", "a", [finding("a", "CVE-2024-0001", first_seen=day1)])
    store.replace_findings(
        "r2",
        "a",
        [
            finding("a", "CVE-2024-0001", first_seen=day2),
            finding("a", "CVE-2024-0002", first_seen=day2),
        ],
    )
    by_id = {r.finding.advisory_id: r.finding for r in store.findings(run_id="r2")}
    assert by_id["CVE-2024-0001"].first_seen == day1
    assert by_id["CVE-2024-0002"].first_seen == day2
    assert store.first_seen_map("a") == {
        ("openssh", "CVE-2024-0001"): day1,
        ("openssh", "CVE-2024-0002"): day2,
    }
    assert store.first_seen_map("b") == {}
    # Replacing the same (run, host) again is idempotent and keeps first_seen.
    store.replace_findings("r2", "a", [finding("a", "CVE-2024-0001", first_seen=day2)])
    (only,) = store.findings(run_id="r2")
    assert only.finding.first_seen == day1


def _reference_write(
    conn: sqlite3.Connection, run_id: str, host: str, findings: Sequence[Finding]
) -> None:
    """The straightforward per-finding write (one RETURNING upsert each) bulk writes must match."""
    conn.execute("DELETE FROM finding_sets WHERE run_id = ? AND host = ?", (run_id, host))
    conn.execute(
        "INSERT INTO finding_sets (run_id, host, recorded_at) VALUES (?, ?, ?)",
        (run_id, host, "t"),
    )
    for f in findings:
        first_seen = store_schema.to_db_time(f.first_seen)
        (earliest,) = conn.execute(
            "INSERT INTO finding_first_seen (host, source_package, advisory_id, first_seen)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (host, source_package, advisory_id) DO UPDATE"
            " SET first_seen = min(finding_first_seen.first_seen, excluded.first_seen)"
            " RETURNING first_seen",
            (host, f.source_package, f.advisory_id, first_seen),
        ).fetchone()
        stored = f
        if earliest != first_seen:
            stored = f.model_copy(update={"first_seen": store_schema.from_db_time(earliest)})
        cves = [f.advisory_id, *f.cves] if f.advisory_id.startswith("CVE-") else list(f.cves)
        conn.execute(
            "INSERT INTO findings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                host,
                f.source_package,
                f.advisory_id,
                finding_key(f),
                f.severity.rank,
                int(f.severity is Severity.UNKNOWN),
                f.fix.status.value,
                None if f.fix_reachable is None else int(f.fix_reachable),
                json.dumps(list(dict.fromkeys(cves))),
                stored.model_dump_json(),
            ),
        )


def test_bulk_writes_match_per_finding_writes(store: Store, tmp_path: Path) -> None:
    plus2 = timezone(timedelta(hours=2))
    rounds = [
        {
            "a": [
                finding("a", "CVE-2024-0001", cves=("CVE-2024-0001", "CVE-2024-0009")),
                finding("a", "DSA-1-1", "zlib", cves=("CVE-2024-0002",), reachable=None),
            ],
            "b": [
                finding("b", "DSA-2-1", severity=Severity.UNKNOWN, first_seen=T0.astimezone(plus2))
            ],
            "c": [],
        },
        {
            "a": [
                finding("a", "CVE-2024-0001", first_seen=T0 - timedelta(days=3)),  # earlier
                finding("a", "DSA-1-1", "zlib", first_seen=T0 + timedelta(days=3)),  # later
                finding("a", "DSA-3-1", "curl", fix=FixState(status=FixStatus.NO_FIX_YET)),
            ],
            "b": [finding("b", "DSA-2-1", first_seen=(T0 + timedelta(hours=1)).astimezone(plus2))],
            "d": [finding("d", reachable=False, first_seen=T0.replace(tzinfo=None))],
        },
    ]
    reference = Store(tmp_path / "reference.db")
    for run_id in ("r1", "r2"):
        store.create_run(run_id, kind="scan", target="all", params={}, started_at=T0)
        reference.create_run(run_id, kind="scan", target="all", params={}, started_at=T0)
    for run_id, by_host in zip(("r1", "r2"), rounds, strict=True):
        store.replace_findings_bulk(run_id, by_host)
        with reference._transaction("reference") as conn:
            for host, findings in by_host.items():
                _reference_write(conn, run_id, host, findings)
    reference.close()

    def rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
        conn = sqlite3.connect(path)
        try:
            return {
                table: sorted(conn.execute(f"SELECT {columns} FROM {table}").fetchall())
                for table, columns in (
                    ("findings", "*"),
                    ("finding_first_seen", "*"),
                    ("finding_sets", "run_id, host"),
                )
            }
        finally:
            conn.close()

    assert rows(store.path) == rows(tmp_path / "reference.db")
    assert store.first_seen_map("a")[("openssh", "CVE-2024-0001")] == T0 - timedelta(days=3)
    assert store.first_seen_map("a")[("zlib", "DSA-1-1")] == T0


def test_replace_findings_validates_input(store: Store) -> None:
    store.create_run("r1", kind="scan", target="all", params={})
    store.replace_findings("r1", "a", [finding("a", "CVE-2024-0001")])
    with pytest.raises(StoreError, match="not of host"):
        store.replace_findings("r1", "a", [finding("b")])
    with pytest.raises(StoreError, match="duplicate finding"):
        store.replace_findings("r1", "a", [finding("a"), finding("a")])
    assert [r.finding.advisory_id for r in store.findings(run_id="r1")] == ["CVE-2024-0001"]


def test_finding_key() -> None:
    assert finding_key(finding("web-1", "DSA-5724-1", "openssh")) == "web-1|openssh|DSA-5724-1"


def test_concurrent_imports_serialise(store: Store) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            advisories = [adv(f"CVE-2024-{i:02d}{j:02d}", f"pkg{j}", "1.0-1") for j in range(50)]
            store.import_batch(batch(*advisories, source=f"feed-{i}"))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    index = store.advisory_index(Ecosystem.DEBIAN, "bookworm")
    assert sum(len(v) for v in index.values()) == 300
    assert len(store.feed_status(now=T0)) == 6


def test_unknown_advisory_has_no_provenance(store: Store) -> None:
    assert store.advisory_provenance(Ecosystem.DEBIAN, "bookworm", "nope", "CVE-2024-0001") == []


def test_host_results_with_details_and_warnings(store: Store) -> None:
    store.create_run("r1", kind="scan", target="all", params={})
    store.save_host_snapshot(
        "r1", facts("web-1"), PACKAGES, PENDING, warnings=("listening sockets not collected: x",)
    )
    store.record_host_failure("r1", "db-1", "HostConnectError", "db-1: refused")
    plain = store.host_results("r1")
    assert plain[1].facts is None
    assert plain[1].pending == ()
    assert plain[1].warnings == ("listening sockets not collected: x",)
    assert plain[1].message is None  # warnings are not an error message
    db, web = store.host_results("r1", details=True)
    assert db.facts is None
    assert db.pending == ()
    assert db.message == "db-1: refused"
    assert web.facts == facts("web-1")
    assert web.pending == PENDING
    assert web.warnings == ("listening sockets not collected: x",)
