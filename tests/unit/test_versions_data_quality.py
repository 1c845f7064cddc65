"""Unparseable versions met while matching: a data-quality warning with the record, never a crash
or a silent skip; malformed but orderable versions are matched like any other.

From :func:`~patchpilot.agents.assessment.assess_host` (``AssessmentResult.data_quality``)
through the scan graph (the run summary) to the report document (``data.data_quality``, valid
against the committed JSON Schema) and its Markdown rendering.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from patchpilot.agents.assessment import VerdictCache, assess_host
from patchpilot.agents.assessment.verdicts import DataQualityWarning
from patchpilot.app import scans
from patchpilot.app.documents import validate_report
from patchpilot.app.report import render_markdown
from patchpilot.core.feeds import FeedBatch, FeedKind
from patchpilot.core.models import (
    Advisory,
    Ecosystem,
    FixState,
    FixStatus,
    Host,
    HostFacts,
    InstalledPackage,
    OSFamily,
    OSInfo,
    Provenance,
)
from patchpilot.core.policy import load_policy
from patchpilot.core.settings import Settings
from patchpilot.core.store import Store
from patchpilot.graphs.scan import ScanContext, data_quality_summary, start_scan
from tests.fakes import FakeDebianHost, fleet_factory

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FACTS = HostFacts(
    host="h1",
    os=OSInfo(id="debian", version_codename="bookworm", family=OSFamily.DEBIAN),
    kernel="6.1.0-28-amd64",
    reboot_required=False,
    package_count=0,
    source_package_count=0,
    ecosystem=Ecosystem.DEBIAN,
)


def _pkg(name: str, version: str) -> InstalledPackage:
    return InstalledPackage(
        name=name,
        version=version,
        arch="amd64",
        source_name=name,
        source_version=version,
        ecosystem=Ecosystem.DEBIAN,
    )


def _advisory(advisory_id: str, package: str, fixed: str, feed: str = "debian-dsa") -> Advisory:
    return Advisory(
        id=advisory_id,
        aliases=(),
        ecosystem=Ecosystem.DEBIAN,
        release="bookworm",
        source_package=package,
        fix=FixState(status=FixStatus.FIXED, version=fixed),
        feed=feed,
        provenance=Provenance(feed=feed, source="synthetic", record_id=advisory_id),
    )


def test_unparseable_versions_become_data_quality_warnings_with_the_record() -> None:
    packages = [
        _pkg("acme", "1.0-"),  # installed: dpkg refuses it ("revision number is empty")
        _pkg("tool", "2.0-1"),
        _pkg("weird", "1.0~broken!"),  # malformed ("!"), but dpkg orders it: below 1.0-1
        _pkg("fine", "3.0-1"),
    ]
    advisories = {
        "acme": [_advisory("DSA-9001-1", "acme", "1.1-1")],
        "tool": [_advisory("CVE-2026-0002", "tool", "2.1\n-1", feed="osv")],  # fixed: bad
        "weird": [_advisory("DSA-9003-1", "weird", "1.0-1")],
        "fine": [_advisory("DSA-9004-1", "fine", "3.0-2")],
    }
    result = assess_host("h1", FACTS, packages, advisories, now=NOW, cache=VerdictCache())
    # The orderable ones are matched: a finding each, the malformed one included.
    assert sorted((f.source_package, f.advisory_id) for f in result.findings) == [
        ("fine", "DSA-9004-1"),
        ("weird", "DSA-9003-1"),
    ]
    # The others: no verdict, an error each (never "not vulnerable") and a warning with the
    # record it came from.
    assert sorted(source for source, _ in result.errors) == ["acme", "tool"]
    assert sorted(result.data_quality, key=lambda w: w.package) == [
        DataQualityWarning(
            source="host",
            record="DSA-9001-1",
            package="acme",
            version="1.0-",
            problem="revision number is empty",
            host="h1",
        ),
        DataQualityWarning(
            source="osv",
            record="CVE-2026-0002",
            package="tool",
            version="2.1\\n-1",  # escaped: the report stays printable
            problem="contains a control character (U+000A)",
            host="h1",
        ),
    ]


def test_the_shared_verdict_cache_still_names_each_host() -> None:
    cache = VerdictCache()
    packages = [_pkg("acme", "1.0-")]
    advisories = {"acme": [_advisory("DSA-9001-1", "acme", "1.1-1")]}
    first = assess_host("h1", FACTS, packages, advisories, now=NOW, cache=cache)
    second = assess_host("h2", FACTS, packages, advisories, now=NOW, cache=cache)
    assert [w.host for w in first.data_quality] == ["h1"]
    assert [w.host for w in second.data_quality] == ["h2"]
    assert cache.hits == 1  # the second host reused the first one's verdicts


def test_an_over_long_version_is_shortened_in_the_warning() -> None:
    long = "1." + "0" * 600
    result = assess_host(
        "h1",
        FACTS,
        [_pkg("acme", "1.0-1")],
        {"acme": [_advisory("DSA-9001-1", "acme", long)]},
        now=NOW,
        cache=VerdictCache(),
    )
    ((warning),) = result.data_quality
    assert warning.source == "debian-dsa"
    assert warning.version == long[:40] + "..."
    assert warning.problem == "longer than 512 characters"


def test_data_quality_summary_collapses_hosts_and_repeats() -> None:
    def warning(host: str, record: str = "DSA-1") -> DataQualityWarning:
        return DataQualityWarning(
            source="host", record=record, package="p", version="1.0-", problem="x", host=host
        )

    summary = data_quality_summary(
        [warning("b"), warning("a"), warning("b"), warning("a", "DSA-0")]
    )
    assert summary == [
        {
            "source": "host",
            "record": "DSA-0",
            "package": "p",
            "version": "1.0-",
            "problem": "x",
            "hosts": ["a"],
        },
        {
            "source": "host",
            "record": "DSA-1",
            "package": "p",
            "version": "1.0-",
            "problem": "x",
            "hosts": ["a", "b"],
        },
    ]
    assert data_quality_summary([]) == []


@pytest.fixture
def scanned(tmp_path: Path) -> tuple[Settings, str]:
    """A whole scan (real graph, store, checkpointer) of two scripted hosts, one of which has
    an installed version dpkg refuses; an advisory feed is imported so matching runs."""
    settings = Settings(home=tmp_path / "home")
    hosts = [
        Host(name="web-1", address="127.0.0.1", tags=["web"], criticality=3),
        Host(name="web-2", address="127.0.0.1", tags=["web"], criticality=3),
    ]
    fleet = {
        "web-1": FakeDebianHost(
            "web-1",
            {"acme-web": "1.0.0-", "openssl": "3.0.1-1"},
            {"acme-web": ["1.0.0-"], "openssl": ["3.0.1-1"]},
        ),
        "web-2": FakeDebianHost(
            "web-2",
            {"acme-web": "1.0.0-1", "openssl": "3.0.1-1"},
            {"acme-web": ["1.0.0-1"], "openssl": ["3.0.1-1"]},
        ),
    }
    with Store(settings.store_path) as store:
        store.import_batch(
            FeedBatch(
                kind=FeedKind.DEBIAN_DSA,
                source="synthetic",
                fetched_at=datetime.now(UTC),
                sha256="0" * 64,
                advisories=(
                    _advisory("DSA-9001-1", "acme-web", "1.1.0-1"),
                    _advisory("DSA-9002-1", "openssl", "3.0.2-1"),
                ),
            )
        )
        context = ScanContext(
            settings=settings,
            store=store,
            policy=load_policy(REPO / "configs" / "policy.yaml"),
            transport_factory=fleet_factory(fleet),
        )
        run_id, summary = start_scan(hosts, context, target="web", offline=True, run_id="scan-1")
    assert summary["mode"] == "advisories"
    return settings, run_id


def test_a_scan_report_carries_the_data_quality_warnings(scanned: tuple[Settings, str]) -> None:
    settings, run_id = scanned
    with Store(settings.store_path) as store:
        document = scans.report(store, run_id).document
    assert document["data"]["data_quality"] == [
        {
            "source": "host",
            "record": "DSA-9001-1",
            "package": "acme-web",
            "version": "1.0.0-",
            "problem": "revision number is empty",
            "hosts": ["web-1"],
        }
    ]
    # Both hosts were still matched: openssl everywhere, acme-web on web-2 only.
    found = sorted((f["host"], f["source_package"]) for f in document["findings"])
    assert found == [("web-1", "openssl"), ("web-2", "acme-web"), ("web-2", "openssl")]
    validate_report(json.loads(json.dumps(document)))
    markdown = render_markdown(document)
    assert "**Data quality:** 1 record(s) with a version that cannot be ordered" in markdown
    assert "DSA-9001-1 acme-web" in markdown


def test_a_report_without_a_run_has_no_data_quality(scanned: tuple[Settings, str]) -> None:
    settings, _ = scanned
    with Store(settings.store_path) as store:
        document = scans.findings(store).document
    assert document["data"]["data_quality"] == []
    validate_report(json.loads(json.dumps(document)))
