"""Facts through the real LocalTransport on this machine (a Debian-family machine with apt,
as root or with password-less sudo: what scripts/setup and the lab need anyway).

These read this machine's packages, sources and processes, so they are integration tests:
they fail, never skip, on a machine that does not qualify (moved here from tests/unit).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from patchpilot.core.models import Ecosystem, OSFamily, UpdateOrigin
from patchpilot.tools.facts import (
    AptCandidatePolicy,
    AptHolds,
    AptPendingUpdates,
    AptPolicy,
    DeletedLibraries,
    DpkgPackages,
    KernelRelease,
    ListeningSockets,
    NeedrestartAvailable,
    OsRelease,
    classify_updates,
    collect_host_facts,
    gather,
    is_security_origin,
    restart_facts,
)
from patchpilot.tools.transport.local import LocalTransport

pytestmark = pytest.mark.integration


def test_this_machine_qualifies() -> None:
    """What every test here needs; a failure names it (nothing here skips silently)."""
    for tool in ("dpkg-query", "apt-cache", "apt-get", "apt-mark"):
        assert shutil.which(tool), f"needs {tool} (a Debian-family machine)"
    root_or_sudo = (
        os.geteuid() == 0
        or subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0
    )
    assert root_or_sudo, "needs root or password-less sudo"


# Current states DpkgPackages keeps (installed, triggers-pending, triggers-awaited).
_KEPT = {"installed", "triggers-pending", "triggers-awaited"}


def _installed_count() -> int:
    """Count installed rows independently: dpkg-query's long status names, not the abbrev."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\\t${db:Status-Status}\\n"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout
    return sum(1 for line in out.splitlines() if line.split("\t")[1] in _KEPT)


def test_local_debian_inventory_matches_dpkg_query() -> None:
    with LocalTransport("localhost") as transport:
        os_info = gather(transport, OsRelease())
        assert os_info.family is OSFamily.DEBIAN, f"not a Debian-family host: {os_info.id}"
        packages = gather(transport, DpkgPackages())
        kernel = gather(transport, KernelRelease())
    assert packages
    assert len(packages) == _installed_count()
    assert kernel
    names = {p.name for p in packages}
    assert {"dpkg", "base-files"} <= names
    assert all(p.ecosystem is Ecosystem.DEBIAN for p in packages)


def test_local_collect_host_facts() -> None:
    with LocalTransport("localhost") as transport:
        facts, packages = collect_host_facts(transport)
    assert facts.os.family is OSFamily.DEBIAN, f"not a Debian-family host: {facts.os.id}"
    assert facts.host == "localhost"
    assert facts.package_count == len(packages) > 0
    assert 0 < facts.source_package_count <= facts.package_count
    assert facts.ecosystem is Ecosystem.DEBIAN


def _dpkg_version(package: str) -> str:
    return subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout


def _is_debian() -> bool:
    try:
        with open("/etc/os-release", encoding="utf-8") as handle:
            return any(line.strip() in ("ID=debian", 'ID="debian"') for line in handle)
    except OSError:
        return False


def test_local_apt_policy_lists_classified_sources() -> None:
    with LocalTransport("localhost") as transport:
        sources = gather(transport, AptPolicy())
    assert all(s.kind is not UpdateOrigin.UNKNOWN for s in sources)
    assert all(s.uri != "/var/lib/dpkg/status" for s in sources)
    if _is_debian() and any("debian-security" in s.uri for s in sources):
        security = [s for s in sources if "debian-security" in s.uri]
        assert all(s.kind is UpdateOrigin.SECURITY for s in security)


def test_local_candidate_policy_installed_version_matches_dpkg() -> None:
    with LocalTransport("localhost") as transport:
        policies = gather(transport, AptCandidatePolicy(["bash", "no-such-package-pp"]))
    assert set(policies) == {"bash"}
    bash = policies["bash"]
    assert bash.installed == _dpkg_version("bash")
    assert [v.version for v in bash.versions if v.installed] == [bash.installed]
    assert bash.candidate is not None


def test_local_pending_updates_are_classified() -> None:
    with LocalTransport("localhost") as transport:
        updates = gather(transport, AptPendingUpdates())
        sources = gather(transport, AptPolicy())
        names = sorted({u.name for u in updates})[:50]
        policies = gather(transport, AptCandidatePolicy(names)) if names else {}
    classified = classify_updates(updates, policies, sources)
    for update in classified:
        if update.security:
            assert update.origin is UpdateOrigin.SECURITY
        assert update.origin is not UpdateOrigin.UNKNOWN or update.name not in policies


def test_local_apt_holds_are_package_names() -> None:
    with LocalTransport("localhost") as transport:
        holds = gather(transport, AptHolds())
    assert holds == sorted(set(holds))
    shown = subprocess.run(
        ["apt-mark", "showhold"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert holds == sorted(set(shown)), "the same answer as apt-mark showhold"


def test_local_listening_sockets_are_sane() -> None:
    with LocalTransport("localhost") as transport:
        sockets = gather(transport, ListeningSockets())
    keys = [(s.protocol, s.address, s.port) for s in sockets]
    assert len(keys) == len(set(keys))
    assert all(0 <= s.port <= 65535 for s in sockets)
    assert all(s.process is None or s.pid is not None for s in sockets)
    if shutil.which("ss"):
        out = subprocess.run(
            ["ss", "-Htln"], check=True, capture_output=True, text=True
        ).stdout.split()
        ports = {
            int(word.rsplit(":", 1)[1])
            for word in out
            if ":" in word and word.rsplit(":", 1)[1].isdigit()
        }
        tcp_ports = {s.port for s in sockets if s.protocol == "tcp"}
        # ss prints local and peer address columns; every tcp listener we find is in there
        assert tcp_ports <= ports


def test_local_deleted_libraries_and_restart_facts() -> None:
    with LocalTransport("localhost") as transport:
        users = gather(transport, DeletedLibraries())
        present = gather(transport, NeedrestartAvailable())
        status = restart_facts(transport)
    assert present is (shutil.which("needrestart", path="/usr/sbin:/sbin:/usr/bin") is not None)
    assert status.source == ("needrestart" if present else "proc-maps")
    assert all(u.libraries for u in users)
    assert [u.pid for u in users] == sorted(u.pid for u in users)


def test_this_machines_pending_updates_are_classified_by_origin() -> None:
    """(was tests/unit/test_facts_apt.py::test_this_machine)"""
    with LocalTransport("localhost") as transport:
        updates = gather(transport, AptPendingUpdates())
    assert all(u.candidate_version for u in updates)
    assert all(u.security == any(is_security_origin(o) for o in u.origins) for u in updates)
