"""Facts through the real LocalTransport on this (Debian) machine."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from patchpilot.core.models import Ecosystem, OSFamily
from patchpilot.tools.facts import (
    DpkgPackages,
    KernelRelease,
    OsRelease,
    collect_host_facts,
    gather,
)

try:
    from patchpilot.tools.transport.local import LocalTransport
except ImportError:  # pragma: no cover - written concurrently by another engineer
    pytest.skip("patchpilot.tools.transport.local is not available", allow_module_level=True)

pytestmark = pytest.mark.skipif(
    shutil.which("dpkg-query") is None, reason="needs a Debian-family machine (dpkg-query)"
)

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
        if os_info.family is not OSFamily.DEBIAN:
            pytest.skip(f"not a Debian-family host: {os_info.id}")
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
    if facts.os.family is not OSFamily.DEBIAN:
        pytest.skip(f"not a Debian-family host: {facts.os.id}")
    assert facts.host == "localhost"
    assert facts.package_count == len(packages) > 0
    assert 0 < facts.source_package_count <= facts.package_count
    assert facts.ecosystem is Ecosystem.DEBIAN
