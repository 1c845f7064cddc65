"""The compliance history (patchpilot/app/compliance.py) on a real SQLite store.

Synthetic scans and deployments are written to the store as the scan and run graphs write them
(runs, finding sets, risk, run_deployments); the history is then kept by
:func:`patchpilot.app.compliance.sync` with the clock passed in: first seen, due dates per
policy, a fix by a run confirmed by the next scan (Contract item 2), a fix outside patchpilot,
a risk acceptance, overdue by the clock and the breaches it raises, a failed scan, an item seen
again after its fix.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from patchpilot.app import compliance
from patchpilot.app.documents import validate_compliance
from patchpilot.app.notify import sla_breached_event
from patchpilot.core.acceptance import Acceptance, Acceptances
from patchpilot.core.feeds import FeedBatch, FeedKind
from patchpilot.core.models import (
    Exposure,
    Finding,
    FixState,
    FixStatus,
    Host,
    KEVEntry,
    RiskAssessment,
    Severity,
    SSVCOutcome,
    utcnow,
)
from patchpilot.core.policy import Policy, load_policy
from patchpilot.core.settings import Settings, load_settings
from patchpilot.core.sla import overdue_at
from patchpilot.core.store import Store, finding_key

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
T0 = NOW - timedelta(days=40)
_SEQ = itertools.count(1)


# --------------------------------------------------------------------------- helpers


def run_id(at: datetime) -> str:
    return f"{at:%Y%m%dT%H%M%SZ}-{next(_SEQ):06x}"


def finding(
    host: str,
    source: str = "openssl",
    *,
    advisory: str | None = None,
    cves: tuple[str, ...] = ("CVE-2026-1000",),
    severity: Severity = Severity.HIGH,
    first_seen: datetime = T0,
    binaries: tuple[str, ...] | None = None,
    fix: FixState | None = None,
    reachable: bool | None = True,
) -> Finding:
    return Finding(
        host=host,
        source_package=source,
        binary_packages=binaries or (f"lib{source}",),
        installed_source_version="1.0-1",
        advisory_id=advisory or f"DSA-{source}-1",
        cves=cves,
        fix=fix or FixState.fixed("1.0-2"),
        fix_reachable=reachable,
        severity=severity,
        first_seen=first_seen,
    )


def scan(
    store: Store,
    at: datetime,
    findings: Mapping[str, Sequence[Finding]],
    *,
    failed: Sequence[str] = (),
    risk: Mapping[str, tuple[SSVCOutcome, date | None]] | None = None,
    kind: str = "scan",
) -> str:
    """A finished scan at ``at``: each host's findings (``risk``: finding key -> (ssvc, due))."""
    rid = run_id(at)
    store.create_run(rid, kind=kind, target="all", params={}, started_at=at)
    for host, found in findings.items():
        store.replace_findings(rid, host, [f.model_copy(update={"first_seen": at}) for f in found])
    for host in failed:
        store.record_host_failure(rid, host, "HostUnreachableError", "no route to host")
    if risk:
        store.save_risk(
            rid,
            [
                RiskAssessment(
                    finding_key=key,
                    score=50.0,
                    factors=(),
                    ssvc=ssvc,
                    due_date=due,
                    rationale="test",
                )
                for key, (ssvc, due) in risk.items()
            ],
        )
    store.finish_run(rid, status="completed", summary={})
    return rid


def deploy(
    store: Store, at: datetime, host: str, packages: Mapping[str, str], *, status: str = "installed"
) -> str:
    """A patch run whose deployment on ``host`` finished at ``at`` ({binary: source})."""
    rid = run_id(at - timedelta(hours=1))
    store.create_run(rid, kind="run", target=host, params={}, started_at=at - timedelta(hours=1))
    items = [{"host": host, "package": b, "source_package": s} for b, s in packages.items()]
    store.deployment_started(rid, host, "canary", items, at=at - timedelta(minutes=30))
    result = {
        "host": host,
        "dry_run": False,
        "items": [{"package": b, "status": status} for b in packages],
    }
    store.deployment_finished(rid, host, "canary", result, at=at)
    return rid


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(home=tmp_path / "home")


@pytest.fixture
def policy(settings: Settings) -> Policy:
    return load_policy(settings.policy_path)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings.store_path) as opened:
        yield opened


def doc(store: Store, policy: Policy | None, now: datetime = NOW, **kw: Any) -> dict[str, Any]:
    document = compliance.compliance_document(store, policy, now=now, **kw)
    validate_compliance(document)
    return document


def items_of(document: Mapping[str, Any], host: str) -> list[dict[str, Any]]:
    return [i for i in document["items"] if i["host"] == host]


def host_row(document: Mapping[str, Any], host: str) -> dict[str, Any]:
    [row] = [h for h in document["hosts"] if h["name"] == host]
    return row


# --------------------------------------------------------------------------- first seen, due


def test_first_seen_and_due_dates_follow_the_policy(store: Store, policy: Policy) -> None:
    high = finding("web-1", "openssl")
    critical = finding("web-1", "curl", severity=Severity.CRITICAL, cves=("CVE-2026-2000",))
    assessed = finding("db-1", "openssl")
    no_fix = finding(
        "db-1", "zlib", fix=FixState(status=FixStatus.NO_FIX_YET), cves=("CVE-2026-3000",)
    )
    unreachable = finding("db-1", "bash", reachable=False, cves=("CVE-2026-4000",))
    rid = scan(
        store,
        T0,
        {"web-1": [high, critical], "db-1": [assessed, no_fix, unreachable]},
        risk={finding_key(assessed): (SSVCOutcome.ACT, T0.date() + timedelta(days=2))},
    )
    document = doc(store, policy, now=T0 + timedelta(hours=1))
    web = {i["package"]: i for i in items_of(document, "web-1")}
    assert web["openssl"]["first_seen"] == T0.isoformat()
    assert web["openssl"]["due"] == (T0.date() + timedelta(days=30)).isoformat()  # high: 30 d
    assert web["openssl"]["sla"] == "severity high: 30 d"
    assert web["curl"]["due"] == (T0.date() + timedelta(days=7)).isoformat()  # critical: 7 d
    assert web["curl"]["state"] == web["openssl"]["state"] == "non_compliant"
    # the risk assessment's due date (SSVC act: 2 d) sets it; no fix / unreachable: no item
    [db] = items_of(document, "db-1")
    assert (db["package"], db["due"], db["ssvc"]) == (
        "openssl",
        (T0.date() + timedelta(days=2)).isoformat(),
        "act",
    )
    assert db["sla"] == "risk assessment (severity, SSVC, KEV)"
    assert host_row(document, "web-1") | {"last_scan": None} == {
        "name": "web-1",
        "host": "web-1",
        "state": "non_compliant",
        "open": 2,
        "overdue": 0,
        "accepted": 0,
        "due_soon": 1,
        "oldest_due": (T0.date() + timedelta(days=7)).isoformat(),
        "fixed": 0,
        "last_scan": None,
        "last_scan_ok": True,
    }
    assert [e.state for e in store.compliance_events()] == ["non_compliant"] * 3
    assert store.compliance_observed()["web-1"].run_id == rid


def test_kev_bod_22_01_and_exposure_bounds(store: Store, policy: Policy) -> None:
    listed = datetime(2026, 4, 20, tzinfo=UTC)
    store.import_batch(
        FeedBatch(
            kind=FeedKind.KEV,
            source="kev.json",
            fetched_at=T0,
            sha256="a" * 64,
            kev=(
                (
                    "CVE-2026-9999",
                    KEVEntry(date_added=listed.date(), due_date=listed.date() + timedelta(21)),
                ),
            ),
        )
    )
    kev = finding("web-1", "openssl", cves=("CVE-2026-9999",), severity=Severity.LOW)
    exposed = finding("edge-1", "curl", severity=Severity.MEDIUM)
    vital = finding("core-1", "curl", severity=Severity.MEDIUM)
    scan(store, T0, {"web-1": [kev], "edge-1": [exposed], "core-1": [vital]})
    strict = policy.model_copy(
        update={
            "sla_days": policy.sla_days.model_copy(
                update={
                    "exposure": policy.sla_days.exposure.model_copy(update={"internet": 5}),
                    "criticality": {5: 10},
                }
            )
        }
    )
    hosts = {
        "edge-1": Host(name="edge-1", address="127.0.0.1", exposure=Exposure.INTERNET),
        "core-1": Host(name="core-1", address="127.0.0.1", criticality=5),
    }
    document = doc(store, strict, now=T0 + timedelta(hours=1), hosts=hosts)
    [web] = items_of(document, "web-1")
    # BOD 22-01: 14 days after it was listed, before CISA's own due date (21 days)
    assert web["due"] == (listed.date() + timedelta(days=14)).isoformat()
    assert web["sla"] == "KEV: 14 d after it was listed (BOD 22-01)"
    assert web["kev"] is True
    [edge] = items_of(document, "edge-1")
    assert edge["due"] == (T0.date() + timedelta(days=5)).isoformat()
    assert edge["sla"] == "internet exposure: 5 d"
    [core] = items_of(document, "core-1")
    assert (core["due"], core["sla"]) == (
        (T0.date() + timedelta(days=10)).isoformat(),
        "criticality 5: 10 d",
    )


# --------------------------------------------------------------------------- fixes


def test_a_run_fixes_an_item_once_the_next_scan_confirms_it(store: Store, policy: Policy) -> None:
    ssl = finding("canary-1", "openssl", binaries=("libssl3", "openssl"))
    curl = finding("canary-1", "curl", cves=("CVE-2026-2000",))
    scan(store, T0, {"canary-1": [ssl, curl]})
    installed = T0 + timedelta(days=2)
    patch_run = deploy(store, installed, "canary-1", {"libssl3": "openssl", "curl": "curl"})
    # no scan since the run: a candidate only, still open
    before = doc(store, policy, now=installed + timedelta(hours=1))
    assert {i["fix_candidate"] for i in items_of(before, "canary-1")} == {patch_run}
    assert {i["fixed_at"] for i in items_of(before, "canary-1")} == {None}
    assert host_row(before, "canary-1")["state"] == "non_compliant"

    confirm = scan(store, T0 + timedelta(days=3), {"canary-1": []})
    after = doc(store, policy, now=T0 + timedelta(days=3, hours=1))
    for item in items_of(after, "canary-1"):
        assert item["state"] == "compliant"
        assert item["fixed_at"] == installed.isoformat()
        assert item["fixed_by"] == patch_run
        assert item["confirmed_at"] == (T0 + timedelta(days=3)).isoformat()
    assert host_row(after, "canary-1") | {"last_scan": None} == {
        "name": "canary-1",
        "host": "canary-1",
        "state": "compliant",
        "open": 0,
        "overdue": 0,
        "accepted": 0,
        "due_soon": 0,
        "oldest_due": None,
        "fixed": 2,
        "last_scan": None,
        "last_scan_ok": True,
    }
    assert after["sla"]["mttr_days"] == after["sla"]["median_ttr_days"] == 2.0
    assert after["sla"]["attainment"] == 100.0
    assert after["sla"]["fixed_by_patchpilot"] == 2
    events = store.compliance_events(state="compliant")
    assert {e.run_id for e in events} == {confirm}


def test_an_item_gone_without_a_deployment_is_fixed_externally(
    store: Store, policy: Policy
) -> None:
    scan(store, T0, {"web-1": [finding("web-1", "openssl"), finding("web-1", "curl")]})
    # a deployment that installed another package does not explain the fix
    deploy(store, T0 + timedelta(days=1), "web-1", {"vim": "vim"})
    later = T0 + timedelta(days=5)
    scan(store, later, {"web-1": [finding("web-1", "curl")]})
    document = doc(store, policy, now=later + timedelta(hours=1))
    by_package = {i["package"]: i for i in items_of(document, "web-1")}
    assert by_package["openssl"]["fixed_by"] == "external"
    assert by_package["openssl"]["fixed_at"] == later.isoformat()
    assert by_package["openssl"]["state"] == "compliant"
    assert by_package["curl"]["state"] == "non_compliant"
    assert document["sla"]["fixed_external"] == 1
    assert document["sla"]["mttr_days"] == 5.0
    assert host_row(document, "web-1")["state"] == "non_compliant"


def test_a_failed_install_keeps_the_item_open(store: Store, policy: Policy) -> None:
    scan(store, T0, {"web-1": [finding("web-1", "openssl")]})
    patch_run = deploy(store, T0 + timedelta(days=1), "web-1", {"libopenssl": "openssl"})
    doc(store, policy, now=T0 + timedelta(days=1, hours=1))  # marks the candidate
    scan(store, T0 + timedelta(days=2), {"web-1": [finding("web-1", "openssl")]})
    document = doc(store, policy, now=T0 + timedelta(days=2, hours=1))
    [item] = items_of(document, "web-1")
    assert (item["state"], item["fixed_at"], item["fix_candidate"]) == (
        "non_compliant",
        None,
        None,
    )
    details = [e.detail for e in store.compliance_events()]
    assert f"still present after run {patch_run} installed its fix" in details


def test_an_item_seen_again_after_its_fix_opens_a_new_episode(store: Store, policy: Policy) -> None:
    scan(store, T0, {"web-1": [finding("web-1", "openssl")]})
    scan(store, T0 + timedelta(days=1), {"web-1": []})
    again = T0 + timedelta(days=3)
    scan(store, again, {"web-1": [finding("web-1", "openssl")]})
    document = doc(store, policy, now=again + timedelta(hours=1))
    episodes = items_of(document, "web-1")
    assert [(i["state"], i["first_seen"]) for i in episodes] == [
        ("compliant", T0.isoformat()),
        ("non_compliant", again.isoformat()),
    ]
    assert episodes[1]["due"] == (again.date() + timedelta(days=30)).isoformat()


# --------------------------------------------------------------------------- clock, acceptance


def test_overdue_by_the_clock_raises_one_breach(store: Store, policy: Policy) -> None:
    critical = finding("web-1", "openssl", severity=Severity.CRITICAL)
    scan(store, NOW - timedelta(days=6), {"web-1": [critical]})
    due = (NOW - timedelta(days=6)).date() + timedelta(days=7)
    assert doc(store, policy)["hosts"][0]["state"] == "non_compliant"
    assert compliance.claim_breaches(store, now=NOW) == []

    late = overdue_at(due) + timedelta(hours=2)
    document = doc(store, policy, now=late)
    [item] = document["items"]
    assert (item["state"], item["days_overdue"]) == ("overdue", 1)
    assert host_row(document, "web-1")["state"] == "overdue"
    assert document["sla"]["attainment"] == 0.0  # one decided item, open and overdue
    [breach] = compliance.breaches_since(store, NOW, now=late)
    assert (breach.host, breach.package, breach.due, breach.at) == (
        "web-1",
        "openssl",
        due,
        overdue_at(due),
    )
    [claimed] = compliance.claim_breaches(store, now=late)
    assert claimed == breach
    assert compliance.claim_breaches(store, now=late + timedelta(hours=1)) == []
    event = sla_breached_event(breach, now=late)
    assert event.kind == "sla-breached"
    assert "web-1" in event.title
    assert due.isoformat() in event.title
    assert event.link == "/api/v1/compliance?host=web-1"


def test_a_rebuilt_history_does_not_announce_old_breaches(store: Store, policy: Policy) -> None:
    scan(store, T0, {"web-1": [finding("web-1", "openssl", severity=Severity.CRITICAL)]})
    document = doc(store, policy)  # first sync 40 days later: overdue since day 8
    assert document["items"][0]["state"] == "overdue"
    assert len(compliance.breaches_since(store, T0, now=NOW)) == 1
    assert compliance.claim_breaches(store, now=NOW) == []


def test_a_live_acceptance_makes_an_item_accepted_until_it_expires(
    store: Store, policy: Policy
) -> None:
    critical = finding("web-1", "openssl", severity=Severity.CRITICAL, advisory="DSA-5001-1")
    scan(store, T0, {"web-1": [critical]})
    acceptance = Acceptance(
        id="DSA-5001-1",
        host="web-1",
        reason="compensating control: TLS terminated at the proxy",
        until=(NOW + timedelta(days=10)).date(),
        by="alice",
        created=T0 + timedelta(hours=1),
    )
    live = Acceptances(entries=(acceptance,), today=NOW.date())
    document = doc(store, policy, acceptances=live)
    [item] = document["items"]
    assert item["state"] == "accepted"
    assert item["accepted"]["by"] == "alice"
    assert host_row(document, "web-1")["state"] == "accepted"
    # accepted before it was due: no breach while the acceptance holds
    assert [e.state for e in store.compliance_events()] == ["non_compliant", "accepted"]
    assert compliance.breaches_since(store, T0, now=NOW) == []
    # without acceptances at hand (the executor's clock), an accepted item stays accepted
    assert compliance.breaches_since(store, T0, now=NOW + timedelta(hours=1)) == []

    expired_day = NOW + timedelta(days=11)
    expired = Acceptances(entries=(acceptance,), today=expired_day.date())
    after = doc(store, policy, acceptances=expired, now=expired_day)
    assert after["items"][0]["state"] == "overdue"
    assert after["items"][0]["accepted"] is None
    [breach] = compliance.claim_breaches(store, now=expired_day)
    assert breach.at == expired_day  # overdue from the moment the acceptance ended
    assert [e.state for e in store.compliance_events()][-2:] == ["non_compliant", "overdue"]


def test_a_failed_scan_makes_open_items_unknown(store: Store, policy: Policy) -> None:
    scan(store, T0, {"web-1": [finding("web-1", "openssl")], "db-1": []})
    scan(store, T0 + timedelta(days=1), {}, failed=["web-1", "db-1"])
    document = doc(store, policy, now=T0 + timedelta(days=1, hours=1))
    assert document["items"][0]["state"] == "unknown"
    assert host_row(document, "web-1")["state"] == "unknown"
    assert host_row(document, "db-1")["state"] == "unknown"
    assert host_row(document, "web-1")["last_scan_ok"] is False
    scan(store, T0 + timedelta(days=2), {"web-1": [finding("web-1", "openssl")], "db-1": []})
    back = doc(store, policy, now=T0 + timedelta(days=2, hours=1))
    assert back["items"][0]["state"] == "non_compliant"
    assert host_row(back, "db-1")["state"] == "compliant"
    assert [e.state for e in store.compliance_events()] == [
        "non_compliant",
        "unknown",
        "non_compliant",
    ]


# --------------------------------------------------------------------------- the document


def test_sync_is_idempotent_and_pending_scans_wait_for_their_risk(
    store: Store, policy: Policy
) -> None:
    rid = run_id(T0)
    store.create_run(rid, kind="scan", target="all", params={}, started_at=T0)
    store.replace_findings(rid, "web-1", [finding("web-1")])
    # assessed but neither prioritized nor finished: not taken in yet
    assert compliance.sync(store, policy, now=NOW).observations == 0
    store.finish_run(rid, status="completed", summary={})
    first = compliance.sync(store, policy, now=NOW)
    assert (first.observations, first.opened) == (1, 1)
    again = compliance.sync(store, policy, now=NOW)
    assert (again.observations, again.opened, again.events) == (0, 0, 0)
    assert len(store.compliance_items()) == 1
    # no policy: observations wait, the clock still runs
    scan(store, T0 + timedelta(days=1), {"web-1": []})
    assert compliance.sync(store, None, now=NOW).observations == 0
    assert compliance.sync(store, policy, now=NOW).fixed == 1


def test_filters_capacity_survival_and_history(store: Store, policy: Policy) -> None:
    start = NOW - timedelta(days=20)
    scan(
        store,
        start,
        {
            "web-1": [finding("web-1", "openssl", severity=Severity.CRITICAL)],
            "db-1": [finding("db-1", "curl"), finding("db-1", "zlib", cves=("CVE-2026-5",))],
        },
    )
    scan(store, start + timedelta(days=4), {"web-1": [finding("web-1", "openssl")], "db-1": []})
    full = doc(store, policy, inventory_hosts=["new-1"])
    assert [h["name"] for h in full["hosts"]] == ["db-1", "new-1", "web-1"]
    assert host_row(full, "new-1")["state"] == "unknown"  # in the inventory, never scanned
    assert full["total"] == 3
    survival = full["survival"]
    assert (survival["items"], survival["fixed"], survival["censored"]) == (3, 2, 1)
    assert survival["curve"][0] == {
        "days": 0.0,
        "open": 1.0,
        "at_risk": 3,
        "fixed": 0,
        "censored": 0,
    }
    assert survival["curve"][1]["days"] == 4.0
    assert survival["curve"][1]["fixed"] == 2
    assert survival["median_days"] == 4.0
    assert full["capacity"]["cyentia"] == {"low": 6.6, "median": 15.2, "high": 27.1}
    assert full["capacity"]["rate"] is not None
    history = full["history"]
    assert history[0] == {"date": start.date().isoformat(), "open": 3, "overdue": 0}
    assert history[-1]["date"] == NOW.date().isoformat()
    assert history[-1] == {"date": NOW.date().isoformat(), "open": 1, "overdue": 1}

    only_web = doc(store, policy, host="web-1")
    assert [h["name"] for h in only_web["hosts"]] == ["web-1"]
    assert {i["host"] for i in only_web["items"]} == {"web-1"}
    assert only_web["survival"]["items"] == 1
    overdue = doc(store, policy, overdue_only=True)
    assert [(i["host"], i["state"]) for i in overdue["items"]] == [("web-1", "overdue")]
    assert [h["name"] for h in overdue["hosts"]] == ["web-1"]
    assert doc(store, policy, due_within=0)["items"] == overdue["items"]


def test_the_html_is_self_contained_and_escaped(store: Store, policy: Policy) -> None:
    hostile = '<script>alert("x")</script>'
    scan(store, T0, {"web-1": [finding("web-1", "openssl", advisory=hostile)]})
    acceptance = Acceptance(
        id="CVE-2026-1000",
        host="web-1",
        reason="<img src=x onerror=alert(1)>",
        until=(NOW + timedelta(days=3)).date(),
        by="alice",
    )
    document = doc(store, policy, acceptances=Acceptances((acceptance,), NOW.date()))
    page = compliance.render_html(document)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page
    assert "<img" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert page.count("<svg") == 2
    assert "<polyline" in page
    assert "http://" not in page
    assert "https://" not in page
    assert "<link" not in page
    [row] = csv.DictReader(io.StringIO(compliance.render_csv(document)))
    assert tuple(row) == compliance.CSV_COLUMNS
    assert row["advisory"] == hostile  # CSV is data: kept as it is
    assert (row["state"], row["accepted_by"], row["cves"]) == ("accepted", "alice", "CVE-2026-1000")


# --------------------------------------------------------------------------- a small fleet


def fill_fleet(store: Store, now: datetime) -> dict[str, str]:
    """Shared with the CLI and API tests: web-1 with an overdue critical item, canary-1 fixed
    by a patch run that a later scan confirmed, db-1 with an item due within a week."""
    start = now - timedelta(days=10)
    first = scan(
        store,
        start,
        {
            "web-1": [finding("web-1", "openssl", severity=Severity.CRITICAL)],
            "canary-1": [finding("canary-1", "openssl", binaries=("libssl3",))],
            "db-1": [finding("db-1", "curl", severity=Severity.MEDIUM)],
        },
        risk={
            "db-1|curl|DSA-curl-1": (SSVCOutcome.TRACK, (now + timedelta(days=3)).date()),
        },
    )
    patch_run = deploy(store, now - timedelta(days=8), "canary-1", {"libssl3": "openssl"})
    confirm = scan(
        store,
        now - timedelta(days=7),
        {
            "web-1": [finding("web-1", "openssl", severity=Severity.CRITICAL)],
            "canary-1": [],
            "db-1": [finding("db-1", "curl", severity=Severity.MEDIUM)],
        },
    )
    return {"first": first, "patch": patch_run, "confirm": confirm}


def test_the_contract_fields(store: Store, policy: Policy) -> None:
    runs = fill_fleet(store, NOW)
    document = doc(store, policy)
    assert {"hosts", "sla", "items"} <= set(document)
    for row in document["hosts"]:
        assert {"name", "state", "open", "overdue", "oldest_due"} <= set(row)
    assert {"attainment", "mttr_days", "median_ttr_days"} <= set(document["sla"])
    for item in document["items"]:
        assert {"host", "advisory", "cves", "first_seen", "due", "fixed_at", "state"} <= set(item)
    states = {h["name"]: h["state"] for h in document["hosts"]}
    assert states == {"canary-1": "compliant", "db-1": "non_compliant", "web-1": "overdue"}
    [canary] = items_of(document, "canary-1")
    assert canary["fixed_by"] == runs["patch"]
    assert canary["fixed_at"] == (NOW - timedelta(days=8)).isoformat()
    assert document["sla"]["mttr_days"] == 2.0
    assert [i["host"] for i in document["due_soon"]] == ["db-1"]


# --------------------------------------------------------------------------- the real graphs


def test_real_scan_run_and_scan_make_the_host_compliant(settings: Settings, policy: Policy) -> None:
    """Contract item 2 through the real scan and run graphs over scripted Debian hosts:
    canary-1's security update installed by a run and confirmed by the next scan; web-1's
    installed by hand (outside patchpilot) and recognised at the next scan."""
    from patchpilot.core.audit import AuditLog
    from patchpilot.graphs.run import RunContext, start_run
    from patchpilot.graphs.scan import ScanContext, start_scan
    from tests.fakes import FakeDebianHost, fleet_factory

    hosts = [
        Host(name="canary-1", address="127.0.0.1", tags=frozenset({"canary", "staging"})),
        Host(name="web-1", address="127.0.0.1", tags=frozenset({"prod"})),
    ]
    fleet = {
        h.name: FakeDebianHost(
            h.name,
            {"acme-web": "1.0.0", "openssl": "3.0.1-1"},
            {"acme-web": ["1.0.0", "1.1.0"], "openssl": ["3.0.1-1", "3.0.2-1"]},
            security=frozenset({"openssl"}),
        )
        for h in hosts
    }
    with Store(settings.store_path) as store:

        def scan_fleet() -> str:
            context = ScanContext(
                settings=settings,
                store=store,
                policy=policy,
                transport_factory=fleet_factory(fleet),
            )
            return start_scan(hosts, context, target="all", offline=True)[0]

        scan_fleet()
        first = doc(store, policy, now=utcnow())
        assert {h["name"]: h["state"] for h in first["hosts"]} == {
            "canary-1": "non_compliant",
            "web-1": "non_compliant",
        }
        assert all(i["due"] is not None for i in first["items"])
        run = start_run(
            hosts[:1],
            RunContext(
                settings=settings,
                store=store,
                policy=policy,
                transport_factory=fleet_factory(fleet),
                audit=AuditLog.for_settings(settings, actor="test"),
            ),
            target="canary-1",
            policy=policy,
            offline=True,
            security_only=True,
        )
        assert fleet["canary-1"].installed["openssl"] == "3.0.2-1"
        pending = {i["host"]: i for i in doc(store, policy, now=utcnow())["items"]}
        assert pending["canary-1"]["fix_candidate"] == run.run_id
        assert pending["canary-1"]["fixed_at"] is None
        fleet["web-1"].installed["openssl"] = "3.0.2-1"  # apt on the host by hand
        confirm = scan_fleet()
        final = doc(store, policy, now=utcnow())
        assert {h["name"]: h["state"] for h in final["hosts"]} == {
            "canary-1": "compliant",
            "web-1": "compliant",
        }
        items = {i["host"]: i for i in final["items"]}
        assert items["canary-1"]["fixed_by"] == run.run_id
        deployed = store.deployments(run.run_id)[0].finished_at
        assert items["canary-1"]["fixed_at"] == deployed.isoformat()
        assert items["web-1"]["fixed_by"] == "external"
        assert items["web-1"]["fixed_at"] == store.get_run(confirm).started_at.isoformat()
        assert final["sla"]["fixed_by_patchpilot"] == final["sla"]["fixed_external"] == 1
        assert final["sla"]["attainment"] == 100.0
