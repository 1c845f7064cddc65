"""The discovery facts of issue "fleet-scale discovery" through the real LocalTransport.

The apt checks need only a Debian-family machine with apt; the /proc checks depend on this
machine's processes and on running as root (or password-less sudo), so they are marked
``integration``.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from patchpilot.core.models import UpdateOrigin
from patchpilot.tools.facts import (
    AptCandidatePolicy,
    AptHolds,
    AptPendingUpdates,
    AptPolicy,
    DeletedLibraries,
    ListeningSockets,
    NeedrestartAvailable,
    classify_updates,
    gather,
    restart_facts,
)
from patchpilot.tools.transport.local import LocalTransport

pytestmark = pytest.mark.skipif(
    shutil.which("apt-cache") is None or shutil.which("dpkg-query") is None,
    reason="needs a Debian-family machine with apt",
)

_root_or_sudo = pytest.mark.skipif(
    os.geteuid() != 0
    and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode != 0,
    reason="needs root or password-less sudo",
)


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


@pytest.mark.integration
@_root_or_sudo
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


@pytest.mark.integration
@_root_or_sudo
def test_local_deleted_libraries_and_restart_facts() -> None:
    with LocalTransport("localhost") as transport:
        users = gather(transport, DeletedLibraries())
        present = gather(transport, NeedrestartAvailable())
        status = restart_facts(transport)
    assert present is (shutil.which("needrestart", path="/usr/sbin:/sbin:/usr/bin") is not None)
    assert status.source == ("needrestart" if present else "proc-maps")
    assert all(u.libraries for u in users)
    assert [u.pid for u in users] == sorted(u.pid for u in users)
