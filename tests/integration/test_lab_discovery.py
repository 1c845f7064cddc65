"""Fleet discovery and vendor-repository sourcing on the real lab (Debian 12 + 13 over SSH).

The lab (``tests/integration/lab_fixtures.py``) is a set of debootstrapped hosts on loopback,
three bookworm and one trixie, each with its own dpkg database, apt sources (its release, its
release's -updates and -security, and the lab's local repository) and sshd; this file scans the
whole fleet (``full_inventory_path``). Everything below is compared with what the host itself
says when asked from inside (``lab.exec``), never with hard-coded Debian versions: the archive
moves, the comparison does not.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

LAB_CVE = "CVE-2024-99901"
"""The made-up CVE the lab's acme-web 1.1.0 changelog says it fixes."""


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATCHPILOT_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "patchpilot", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )


def scan(lab: Any, home: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    res = cli(
        "scan",
        "--inventory",
        str(lab.full_inventory_path),
        "--format",
        "json",
        "--offline",
        *extra,
        home=home,
    )
    assert res.stdout, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return res.returncode, doc


@pytest.fixture(scope="module")
def lab_scan(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One scan of the whole lab, shared by the read-only checks below."""
    home = tmp_path_factory.mktemp("lab-scan-home")
    code, doc = scan(lab, home)
    assert code == 0, doc
    return doc


def _hosts(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["name"]: h for h in doc["hosts"]}


_DEBIAN_VERSION = {"bookworm": "12", "trixie": "13"}


def test_every_lab_host_is_discovered_over_ssh(lab: Any, lab_scan: dict[str, Any]) -> None:
    hosts = _hosts(lab_scan)
    assert set(hosts) == {h.name for h in lab.all_hosts}
    assert {h.release for h in lab.all_hosts} == {"bookworm", "trixie"}
    for name, host in hosts.items():
        release = lab.host(name).release
        assert host["status"] == "ok", host
        assert host["error"] is None
        assert host["os_release"]["codename"] == release
        assert host["os"].startswith(f"Debian GNU/Linux {_DEBIAN_VERSION[release]}")
        kernel = lab.exec(name, ["uname", "-r"]).stdout.strip()
        assert host["kernel"] == kernel
        assert isinstance(host["reboot_required"], bool)
        # the lab's sshd listens on loopback; discovery sees it from inside the host
        ports = {s["port"] for s in host["listening"] or []}
        lab_host = lab.host(name)
        assert lab_host.port in ports, host["listening"]


def test_inventories_match_dpkg_query_inside_each_host(lab: Any, tmp_path: Path) -> None:
    res = cli(
        "facts",
        "all",
        "--inventory",
        str(lab.full_inventory_path),
        "--packages",
        "-f",
        "json",
        home=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert {h["host"] for h in doc["hosts"]} == {h.name for h in lab.all_hosts}
    for host in doc["hosts"]:
        inside = lab.exec(
            host["host"],
            ["dpkg-query", "-W", "-f", "${db:Status-Status}\t${Package}\t${Version}\n"],
        ).stdout
        expected = {
            (name, version)
            for status, name, version in (line.split("\t") for line in inside.splitlines())
            if status == "installed"
        }
        got = {(p["name"], p["version"]) for p in host["packages"]}
        assert got == expected, host["host"]


def _upgradable_inside(lab: Any, name: str) -> dict[str, tuple[str, bool]]:
    """``apt list --upgradable`` inside the host: package -> (candidate, from -security)."""
    out = lab.exec(name, ["env", "LC_ALL=C", "apt", "list", "--upgradable"]).stdout
    found: dict[str, tuple[str, bool]] = {}
    for line in out.splitlines():
        match = re.match(r"^([^/\s]+)/(\S+) (\S+) \S+ \[upgradable from", line)
        if match:
            suites = match[2].split(",")
            found[match[1]] = (match[3], any(s.endswith("-security") for s in suites))
    return found


def test_pending_security_updates_agree_with_apt_list_upgradable(
    lab: Any, lab_scan: dict[str, Any]
) -> None:
    checked = 0
    for name, host in _hosts(lab_scan).items():
        inside = _upgradable_inside(lab, name)
        want = {pkg: cand for pkg, (cand, security) in inside.items() if security}
        got = {u["package"]: u["candidate"] for u in host["pending_updates"] if u["security"]}
        assert got == want, name
        for update in host["pending_updates"]:
            if update["security"]:
                assert update["origin"] == "security", update
        checked += len(got)
    # A freshly built bookworm lab always lags its security suite; if this ever fails, the
    # mirror is not reachable or the lab base is older than the lists it carries.
    assert checked > 0, "no pending security update on any lab host"


def test_trixie_pending_updates_equal_apt_list_upgradable(
    lab: Any, lab_scan: dict[str, Any]
) -> None:
    """Every update the scan reports for the trixie host, and only those, with apt's candidate
    and security flag (trixie is "stable" now, so its suite shows as stable-security)."""
    hosts = _hosts(lab_scan)
    (trixie,) = lab.trixie_hosts
    host = hosts[trixie.name]
    assert host["os_release"]["codename"] == "trixie"
    inside = _upgradable_inside(lab, trixie.name)
    got = {u["package"]: (u["candidate"], u["security"]) for u in host["pending_updates"]}
    assert got == inside
    assert len(host["pending_updates"]) == len(inside)  # one row per package (arch all/amd64)
    # Built from trixie's point release: its security suite always has newer builds, and the
    # lab repository offers acme-web 1.3.0 (its newest) as on every host.
    assert any(security for _, security in inside.values()), inside
    assert inside["acme-web"] == ("1.3.0", False)
    # no bookworm build is ever offered to (or reported on) the trixie host
    assert not any("deb12" in candidate for candidate, _ in inside.values())


def test_changelog_cves_for_real_security_updates(lab_scan: dict[str, Any]) -> None:
    updates = [u for h in lab_scan["hosts"] for u in h["pending_updates"] if u["security"]]
    with_cves = [u for u in updates if u["cves"]]
    assert with_cves, [(u["package"], u["cves_from"]) for u in updates]
    for update in with_cves:
        assert update["cves_from"] == "changelog"
        assert all(re.match(r"^CVE-\d{4}-\d{4,}$", c) for c in update["cves"])
    # the findings carry the CVEs and say they are installable now
    findings = [f for f in lab_scan["findings"] if f["cves"]]
    assert findings
    assert all(f["installable"] for f in findings)


def test_local_repository_update_is_classified_with_its_changelog_cves(
    lab_scan: dict[str, Any],
) -> None:
    hosts = _hosts(lab_scan)
    acme = [
        (name, u)
        for name, h in hosts.items()
        for u in h["pending_updates"]
        if u["package"] == "acme-web"
    ]
    assert acme, "acme-web 1.0.0 is installed and 1.3.0 (the newest) offered by the lab repository"
    for _name, update in acme:
        assert update["installed"] == "1.0.0"
        assert update["candidate"] == "1.3.0"
        assert update["origin"] == "local"
        assert not update["security"]
        assert LAB_CVE in update["cves"]
    held = [name for name, h in hosts.items() if "acme-web" in (h["held_packages"] or [])]
    assert held == ["db-1"], "db-1 holds acme-web"
    for name in held:
        # a held package is never an installable pending upgrade: absent, or marked held
        assert all(u.get("held") is True for n, u in acme if n == name), name


def test_with_no_feeds_the_top_findings_differ_and_name_what_decides(
    lab_scan: dict[str, Any],
) -> None:
    """Issue 13: without any feed, the lab's top five findings have distinct scores, each with
    a rationale that names its deciding factor (changelog urgency, CVE count, loaded by a
    listening process, the host's exposure...), read from the hosts themselves."""
    assert lab_scan["data"]["mode"] == "repository-metadata"
    ranked = sorted(lab_scan["findings"], key=lambda f: -f["risk"]["score"])
    top = ranked[:5]
    assert len(top) == 5, [(f["host"], f["source_package"]) for f in ranked]
    scores = [f["risk"]["score"] for f in top]
    assert len(set(scores)) == 5, [(f["host"], f["source_package"], f["risk"]) for f in top]
    for finding in top:
        rationale = finding["risk"]["rationale"]
        assert rationale.startswith("deciding factor: "), rationale
        assert not rationale.startswith("deciding factor: none"), rationale
        factors = {f["name"]: f for f in finding["risk"]["factors"]}
        # the host signals were read on the host: known, not "unknown"
        assert factors["reachable"]["known"], finding["risk"]["factors"]
        assert factors["restart"]["known"], finding["risk"]["factors"]
    # the lab's sshd listens (on loopback): what it loads is reachable, and the fleet says so
    assert any("listening on 127.0.0.1:" in f["risk"]["rationale"] for f in ranked)
    urgencies = {u["urgency"] for h in lab_scan["hosts"] for u in h["pending_updates"] if u["cves"]}
    assert urgencies - {None}, "changelogs with CVEs state an urgency"
