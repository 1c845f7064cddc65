"""The ``hosts`` list of the report contract (README: Report JSON contract)."""

from __future__ import annotations

from patchpilot.app.report import host_json, report_document
from patchpilot.core.models import (
    AptSource,
    DeletedLibraryUse,
    HostFacts,
    ListeningSocket,
    OSFamily,
    OSInfo,
    PendingUpdate,
    UpdateOrigin,
)
from patchpilot.core.store import HostResult

FACTS = HostFacts(
    host="web-1",
    os=OSInfo(
        id="debian",
        pretty_name="Debian GNU/Linux 12 (bookworm)",
        version_id="12",
        version_codename="bookworm",
        family=OSFamily.DEBIAN,
    ),
    kernel="6.1.0-28-amd64",
    reboot_required=True,
    reboot_required_pkgs=("libssl3",),
    package_count=2,
    source_package_count=2,
    held_packages=("acme-web",),
    deleted_library_users=(
        DeletedLibraryUse(pid=42, command="sshd", libraries=("/usr/lib/libssl.so.3",)),
    ),
    listening=(ListeningSocket(protocol="tcp", address="127.0.0.1", port=22, process="sshd"),),
    apt_sources=(
        AptSource(
            priority=500,
            uri="http://deb.debian.org/debian-security",
            dist="bookworm-security",
            component="main",
            kind=UpdateOrigin.SECURITY,
        ),
    ),
)
UPDATE = PendingUpdate(
    name="libssl3",
    arch="amd64",
    installed_version="3.0.1",
    candidate_version="3.0.2",
    origins=("Debian-Security:12/oldstable-security",),
    security=True,
    origin=UpdateOrigin.SECURITY,
    source_name="openssl",
    cves=("CVE-2026-0001",),
    cves_from="changelog",
)


def test_reachable_host_has_the_contract_fields() -> None:
    doc = host_json(
        HostResult(host="web-1", ok=True, package_count=2, facts=FACTS, pending=(UPDATE,))
    )
    assert doc["name"] == "web-1"
    assert doc["status"] == "ok"
    assert doc["error"] is None
    assert doc["os"] == "Debian GNU/Linux 12 (bookworm)"
    assert doc["kernel"] == "6.1.0-28-amd64"
    assert doc["reboot_required"] is True
    assert doc["reboot_required_pkgs"] == ["libssl3"]
    assert doc["held_packages"] == ["acme-web"]
    assert doc["needs_restart"][0]["command"] == "sshd"
    assert doc["listening"][0]["port"] == 22
    assert doc["apt_sources"][0]["kind"] == "security"
    (update,) = doc["pending_updates"]
    assert update == {
        "package": "libssl3",
        "arch": "amd64",
        "source_package": "openssl",
        "installed": "3.0.1",
        "candidate": "3.0.2",
        "origin": "security",
        "origins": ["Debian-Security:12/oldstable-security"],
        "security": True,
        "cves": ["CVE-2026-0001"],
        "cves_from": "changelog",
        "held": False,
        "urgency": None,
    }
    # the first version's fields are still there
    assert doc["host"] == "web-1"
    assert doc["ok"] is True
    assert doc["package_count"] == 2


def test_unreachable_and_failed_hosts() -> None:
    unreachable = host_json(
        HostResult(host="db-1", ok=False, error_type="HostConnectError", message="db-1: refused")
    )
    assert unreachable["status"] == "unreachable"
    assert unreachable["error"] == "db-1: refused"
    assert unreachable["os"] is None
    assert unreachable["kernel"] is None
    assert unreachable["reboot_required"] is None
    assert unreachable["pending_updates"] == []
    failed = host_json(
        HostResult(host="db-2", ok=False, error_type="HostKeyError", message="db-2: key changed")
    )
    assert failed["status"] == "failed"


def test_facts_not_collected_are_null_not_empty() -> None:
    bare = FACTS.model_copy(
        update={
            "held_packages": None,
            "deleted_library_users": None,
            "listening": None,
            "apt_sources": None,
        }
    )
    doc = host_json(HostResult(host="web-1", ok=True, facts=bare))
    assert doc["held_packages"] is None
    assert doc["needs_restart"] is None
    assert doc["listening"] is None
    assert doc["apt_sources"] is None


def test_report_document_lists_hosts() -> None:
    doc = report_document(
        run=None,
        records=[],
        feeds=[],
        hosts=[HostResult(host="web-1", ok=True, facts=FACTS, pending=(UPDATE,))],
    )
    assert [h["name"] for h in doc["hosts"]] == ["web-1"]
