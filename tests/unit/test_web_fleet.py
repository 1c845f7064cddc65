"""The dashboard's fleet, findings and settings pages (issue 16) on a real store.

The store is filled the way scans fill it (runs, discovery snapshots and failures, finding
sets, risk, a KEV feed, an advisory feed); the app is the real one with the dashboard
installed, read with a viewer's bearer token through FastAPI's TestClient.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from patchpilot.app import users, views
from patchpilot.core.feeds import FeedBatch, FeedKind
from patchpilot.core.models import (
    Advisory,
    Ecosystem,
    Finding,
    FixState,
    FixStatus,
    HostFacts,
    KEVEntry,
    OSFamily,
    OSInfo,
    PendingUpdate,
    Provenance,
    RiskAssessment,
    RiskFactor,
    Severity,
    SSVCOutcome,
    utcnow,
)
from patchpilot.core.store import Store, finding_key
from patchpilot.web import install
from patchpilot.web.pages_fleet import chart
from tests.unit.test_api import World

NOW = utcnow()
TODAY = NOW.date()
RUN_A = "20260101T000000Z-aaaaaa"
RUN_B = "20260102T000000Z-bbbbbb"
SCRIPT = "<script>window.__pwned = 1</script>"
IMG = '<img src=x onerror="window.__pwned = 2">'
INVENTORY = {
    "canary-1": ["web", "staging", "canary"],
    "web-1": ["web", "prod"],
    "db-1": ["db", "prod"],
    "db-2": ["db"],
    "never-1": ["spare"],
}


def facts(host: str, *, reboot: bool = False) -> HostFacts:
    return HostFacts(
        host=host,
        os=OSInfo(
            id="debian",
            version_id="12",
            version_codename="bookworm",
            pretty_name="Debian GNU/Linux 12 (bookworm)",
            family=OSFamily.DEBIAN,
        ),
        kernel="6.1.0-21-amd64",
        reboot_required=reboot,
        package_count=3,
        source_package_count=2,
        ecosystem=Ecosystem.DEBIAN,
        collected_at=NOW,
    )


def pending(name: str, *, security: bool) -> PendingUpdate:
    suite = "Debian-Security:12/stable-security" if security else "Debian:12/stable"
    return PendingUpdate(
        name=name,
        arch="amd64",
        installed_version="1.0-1",
        candidate_version="1.0-2",
        origins=(suite,),
        security=security,
    )


def finding(
    host: str,
    advisory: str,
    package: str,
    severity: Severity,
    *,
    fixed: str | None = "1.0-2",
    cves: tuple[str, ...] = (),
) -> Finding:
    return Finding(
        host=host,
        source_package=package,
        binary_packages=(package, f"lib{package}3"),
        installed_source_version="1.0-1",
        advisory_id=advisory,
        cves=cves,
        fix=FixState.fixed(fixed) if fixed else FixState(status=FixStatus.NO_FIX_YET),
        fix_reachable=fixed is not None,
        severity=severity,
        first_seen=NOW - timedelta(days=3),
        provenance=(Provenance(feed="debian-dsa", source="test:dsa", record_id=advisory),),
    )


def risk(f: Finding, score: float, due: date | None, rationale: str = "") -> RiskAssessment:
    return RiskAssessment(
        finding_key=finding_key(f),
        score=score,
        factors=(
            RiskFactor(
                name="severity",
                value=f.severity.value,
                known=True,
                weight=1.0,
                contribution=score / 2,
            ),
            RiskFactor(
                name="exposure",
                value=f"internet {IMG}",
                known=True,
                weight=0.5,
                contribution=score / 4,
            ),
        ),
        ssvc=SSVCOutcome.ATTEND,
        due_date=due,
        rationale=rationale or f"{f.severity.value} severity",
    )


def _batch(kind: FeedKind, **items: object) -> FeedBatch:
    digest = hashlib.sha256(f"{kind}-{items}".encode()).hexdigest()
    return FeedBatch(kind=kind, source=f"test:{kind}", fetched_at=NOW, sha256=digest, **items)  # type: ignore[arg-type]


def fill(store: Store) -> None:
    """Two scans: web-1, db-1, db-2 and canary-1 discovered, then db-1 unreachable."""
    store.import_batch(
        _batch(
            FeedKind.KEV,
            kev=(("CVE-2026-1111", KEVEntry(date_added=TODAY, due_date=TODAY)),),
        )
    )
    hostile = f"DSA-9999-1 {SCRIPT}"
    store.import_batch(
        _batch(
            FeedKind.DEBIAN_DSA,
            advisories=(
                Advisory(
                    id=hostile,
                    ecosystem=Ecosystem.DEBIAN,
                    release="bookworm",
                    source_package="openssl",
                    fix=FixState.fixed("1.0-2"),
                    severity=Severity.HIGH,
                    summary=f"buffer overflow {SCRIPT} {IMG}",
                    feed="debian-dsa",
                    provenance=Provenance(feed="debian-dsa", source="test:dsa", record_id="x"),
                ),
            ),
        )
    )
    store.create_run(
        RUN_A, kind="scan", target="all", params={}, started_at=NOW - timedelta(days=2)
    )
    store.save_host_snapshot(
        RUN_A,
        facts("web-1"),
        [],
        [pending("openssl", security=True), pending("vim", security=False)],
    )
    store.save_host_snapshot(RUN_A, facts("db-1"), [], [])
    store.save_host_snapshot(RUN_A, facts("db-2", reboot=True), [], [])
    store.save_host_snapshot(RUN_A, facts("canary-1"), [], [])
    crit = finding("web-1", "DSA-1000-1", "curl", Severity.CRITICAL, cves=("CVE-2026-1111",))
    high = finding("web-1", hostile, "openssl", Severity.HIGH, cves=("CVE-2026-2222",))
    med = finding("db-1", "DSA-2000-1", "postgresql-15", Severity.MEDIUM)
    low = finding("db-2", "CVE-2026-3333", "zlib", Severity.LOW, fixed=None)
    store.replace_findings_bulk(
        RUN_A, {"web-1": [crit, high], "db-1": [med], "db-2": [low], "canary-1": []}
    )
    store.save_risk(
        RUN_A,
        [
            risk(crit, 90.0, TODAY - timedelta(days=1)),
            risk(high, 70.0, TODAY + timedelta(days=10), f"high severity {SCRIPT}"),
            risk(med, 40.0, TODAY + timedelta(days=5)),
            risk(low, 10.0, None),
        ],
    )
    store.finish_run(RUN_A, status="completed", summary={})
    store.create_run(
        RUN_B, kind="scan", target="db-1", params={}, started_at=NOW - timedelta(days=1)
    )
    store.record_host_failure(RUN_B, "db-1", "HostConnectError", "db-1: connection refused")
    store.finish_run(RUN_B, status="partial", summary={})


def write_inventory(world: World, hosts: dict[str, list[str]]) -> None:
    world.inventory_path.write_text(
        yaml.safe_dump(
            {
                "hosts": {
                    name: {"address": "127.0.0.1", "tags": tags} for name, tags in hosts.items()
                }
            }
        )
    )


class Pages:
    """The app with the dashboard, a viewer's client, the store filled."""

    def __init__(self, world: World) -> None:
        self.world = world
        install(world.app)
        write_inventory(world, INVENTORY)
        fill(world.store)
        self.client = TestClient(world.app, follow_redirects=False)

    def get(self, path: str) -> str:
        response = self.client.get(path, headers=self.world.auth("vera"))
        assert response.status_code == 200, response.text[:2000]
        return response.text


@pytest.fixture
def pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pages]:
    import os

    for name in [k for k in os.environ if k.startswith("PATCHPILOT_")]:
        monkeypatch.delenv(name)
    users.forget_verified()
    world = World(tmp_path / "home")
    p = Pages(world)
    try:
        yield p
    finally:
        p.client.close()
        world.client.close()
        world.store.close()


def fleet_rows(page: str) -> list[str]:
    """The host names of the fleet table, in order."""
    return re.findall(r'<th scope="row"><a href="/findings\?host=[^"]*">([^<]*)</a>', page)


def row_of(page: str, host: str) -> str:
    """The fleet table's row of ``host`` (its HTML)."""
    for row in re.findall(r"<tr>(.*?)</tr>", page, flags=re.S):
        if f">{host}</a>" in row:
            return str(row)
    raise AssertionError(f"no row for {host}")


# --------------------------------------------------------------------------- fleet


def test_the_fleet_lists_every_inventory_host_even_never_scanned(pages: Pages) -> None:
    page = pages.get("/")
    assert fleet_rows(page) == ["canary-1", "db-1", "db-2", "never-1", "web-1"]
    assert "not scanned" in row_of(page, "never-1")
    web = row_of(page, "web-1")
    assert "Debian GNU/Linux 12 (bookworm)" in web
    assert "debian 12 (bookworm)" in web
    assert "reachable" in web
    assert "2 (1)" in web  # pending (security)
    assert "1 critical" in web
    assert "1 high" in web
    assert '<span class="kev">1</span>' in web
    assert (TODAY - timedelta(days=1)).isoformat() in web
    assert "overdue" in web
    db1 = row_of(page, "db-1")
    assert "unreachable" in db1
    assert "st-bad" in db1
    assert "1 medium" in db1  # its findings as last assessed
    assert "reboot needed" in row_of(page, "db-2")
    assert "clean" in row_of(page, "canary-1")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sort=name", ["canary-1", "db-1", "db-2", "never-1", "web-1"]),
        ("sort=findings", ["web-1", "db-1", "db-2", "canary-1", "never-1"]),
        ("sort=due", ["web-1", "db-1", "canary-1", "db-2", "never-1"]),
        ("sort=pending", ["web-1", "canary-1", "db-1", "db-2", "never-1"]),
        ("q=db", ["db-1", "db-2"]),
        ("q=PROD", ["db-1", "web-1"]),
        ("state=overdue", ["web-1"]),
        ("state=due", ["db-1"]),
        ("state=unreachable", ["db-1"]),
        ("state=not-scanned", ["never-1"]),
        ("state=reboot", ["db-2"]),
        ("state=kev", ["web-1"]),
        ("state=clean", ["canary-1"]),
        ("q=db&state=reboot&sort=findings", ["db-2"]),
        ("sort=bogus&state=bogus&page=x", ["canary-1", "db-1", "db-2", "never-1", "web-1"]),
    ],
)
def test_the_fleet_sorts_and_filters_server_side(
    pages: Pages, query: str, expected: list[str]
) -> None:
    assert fleet_rows(pages.get("/?" + query)) == expected


def test_the_fleet_links_keep_the_filters(pages: Pages) -> None:
    page = pages.get("/?q=db&state=reboot")
    assert 'href="/?q=db&amp;state=reboot&amp;sort=findings"' in page
    assert 'value="db"' in page
    assert '<option value="reboot" selected>' in page


def test_the_fleet_paginates_200_hosts_a_page(pages: Pages) -> None:
    hosts = {f"node-{i:04d}": ["bulk"] for i in range(450)}
    write_inventory(pages.world, hosts)
    first = fleet_rows(pages.get("/"))
    assert first == [f"node-{i:04d}" for i in range(200)]
    page_text = pages.get("/?page=3&sort=name")
    assert fleet_rows(page_text) == [f"node-{i:04d}" for i in range(400, 450)]
    assert "page 3 of 3" in page_text
    assert 'href="/?sort=name&amp;page=2"' in page_text  # previous page, filters kept
    assert fleet_rows(pages.get("/?page=99")) == fleet_rows(page_text)  # past the end: last


def test_the_fleet_chart_is_an_svg_with_a_table_of_its_figures(pages: Pages) -> None:
    page = pages.get("/")
    assert '<svg class="chart"' in page
    assert 'role="img"' in page
    assert "<polyline" in page
    table = page[page.index("The chart's figures as a table") :]
    # the day of RUN_A: 4 hosts assessed, all within SLA then (web-1's critical was due later)
    day_a = (NOW - timedelta(days=2)).date().isoformat()
    row = r'<td class="num">4</td><td class="num">{}</td><td class="num">4</td>'
    assert re.search(rf"<td>{day_a}</td>" + row.format(r"4 \(100%\)"), table)
    # today: web-1's critical is past its due date now
    assert re.search(rf"<td>{TODAY.isoformat()}</td>" + row.format(r"3 \(75%\)"), table)


def test_the_fleet_history_carries_each_hosts_latest_state_forward(pages: Pages) -> None:
    store = pages.world.store
    points = views.fleet_history(store, TODAY)
    assert [(p.hosts, p.compliant, p.findings) for p in points] == [(4, 4, 4)]
    run = "20260103T000000Z-cccccc"  # a later scan of web-1 alone: it has one finding now
    store.create_run(run, kind="scan", target="web-1", params={}, started_at=NOW)
    store.replace_findings(run, "web-1", [finding("web-1", "DSA-1-1", "vim", Severity.LOW)])
    points = views.fleet_history(store, TODAY, now=store.findings_overview())
    assert [(p.day, p.hosts, p.findings) for p in points] == [
        ((NOW - timedelta(days=2)).date(), 4, 4),
        (TODAY, 4, 3),
    ]
    assert points[-1].run_id is None
    geometry = chart(points)
    assert geometry is not None
    assert geometry["marks"][0]["yc"] < geometry["bottom"]
    assert chart([]) is None


# --------------------------------------------------------------------------- findings


def finding_hosts(page: str) -> list[tuple[str, str]]:
    """(host, source package) of each findings row, in order."""
    return re.findall(
        r'<th scope="row"><a href="/findings\?host=[^"]*">([^<]*)</a></th>\s*'
        r'<td><span class="mono">([^<]*)</span>',
        page,
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "",
            [("web-1", "curl"), ("web-1", "openssl"), ("db-1", "postgresql-15"), ("db-2", "zlib")],
        ),
        ("host=db-1", [("db-1", "postgresql-15")]),
        ("severity=high", [("web-1", "curl"), ("web-1", "openssl")]),
        ("kev=yes", [("web-1", "curl")]),
        ("kev=no&host=web-1", [("web-1", "openssl")]),
        ("fix_state=no-fix-yet", [("db-2", "zlib")]),
        (f"due_before={TODAY.isoformat()}", [("web-1", "curl")]),
        ("package=LIBOPENSSL", [("web-1", "openssl")]),
        (
            "severity=bogus&kev=maybe&due_before=never",
            [("web-1", "curl"), ("web-1", "openssl"), ("db-1", "postgresql-15"), ("db-2", "zlib")],
        ),
    ],
)
def test_findings_filters(pages: Pages, query: str, expected: list[tuple[str, str]]) -> None:
    assert finding_hosts(pages.get("/findings?" + query)) == expected


def test_an_upgrade_closing_several_advisories_is_one_row(pages: Pages) -> None:
    store = pages.world.store
    run = "20260103T000000Z-cccccc"
    store.create_run(run, kind="scan", target="web-1", params={}, started_at=NOW)
    fixes = [
        finding("web-1", f"DSA-58{i}0-1", "openjdk-17", Severity.HIGH, fixed=f"1.0-{i + 2}")
        for i in range(3)
    ]
    store.replace_findings(run, "web-1", fixes)
    page = pages.get("/findings?host=web-1")
    assert finding_hosts(page) == [("web-1", "openjdk-17")]
    assert "DSA-5800-1, DSA-5810-1, DSA-5820-1" in page
    assert "1.0-4" in page  # the one upgrade: the highest fixed version


def test_each_finding_has_its_risk_rationale(pages: Pages) -> None:
    page = pages.get("/findings?host=web-1&kev=yes")
    details = page[page.index("<details>") : page.index("</details>")]
    for text in (
        "attend",
        (TODAY - timedelta(days=1)).isoformat(),
        "critical severity",
        "severity",
        "exposure",
        "45.0",
        "debian-dsa",
        "DSA-1000-1",
        "test:dsa",
    ):
        assert text in details, text


def test_untrusted_text_renders_inert(pages: Pages) -> None:
    page = pages.get("/findings?package=openssl")
    assert "<script>window" not in page
    assert "<img src=x" not in page
    assert html.escape(SCRIPT, quote=False) in page  # the advisory id, the rationale, the text
    assert "buffer overflow &lt;script&gt;" in page  # the advisory's feed summary
    assert "&lt;img src=x onerror=" in page  # a risk factor's value
    fleet = pages.get("/")
    assert "<script>window" not in fleet


# --------------------------------------------------------------------------- settings


def test_settings_show_feeds_policy_and_service(pages: Pages) -> None:
    page = pages.get("/settings")
    assert "kev" in page
    assert "debian-dsa" in page
    assert "fresh" in page
    assert "Rings" in page
    assert "Health checks" in page
    assert "acme-web" in page  # the World's health check
    assert "session_ttl" in page
    assert "28800" in page
    assert "api_key" not in page


def test_settings_show_a_stale_feed_as_stale(pages: Pages) -> None:
    old = datetime(2020, 1, 1, tzinfo=UTC)
    pages.world.store.import_batch(
        FeedBatch(kind=FeedKind.EPSS, source="test:epss", fetched_at=old, sha256="e" * 64)
    )
    page = pages.get("/settings")
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", page, flags=re.S) if ">epss<" in r)
    assert "st-warn" in row
    assert "stale" in row
