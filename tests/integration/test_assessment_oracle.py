"""Assessment verdicts on THIS machine's real inventory, checked against dpkg as an oracle.

The real DSA list from ``../shared`` is assessed against the real dpkg inventory collected
through :class:`LocalTransport`; every (installed source package, fixed advisory) verdict is
then re-decided independently with ``dpkg --compare-versions INSTALLED lt FIXED``. A second
test builds a synthetic host whose packages sit at the *oldest* fixed version of every source in
the list (so that many real advisories match) and checks it the same way.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from patchpilot.agents.assessment import (
    AssessmentResult,
    VerdictCache,
    assess_host,
    is_kernel_source,
)
from patchpilot.core.models import (
    Advisory,
    Ecosystem,
    FixState,
    FixStatus,
    HostFacts,
    InstalledPackage,
    OSFamily,
    OSInfo,
    Provenance,
)
from patchpilot.core.versions import sort_key
from tests.conftest import SHARED

log = structlog.get_logger(__name__)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg (the oracle)"),
]

DSA_LIST = SHARED / "feeds" / "debian" / "DSA_list_2025-02-13.txt"
NOW = datetime(2025, 2, 14, tzinfo=UTC)

_HEADER = re.compile(r"^\[[^\]]+\] (?P<id>DSA-\d+(?:-\d+)?) ")
_RELEASE = re.compile(r"^\t\[(?P<rel>[a-z]+)\] - (?P<pkg>\S+) (?P<state>\S+)")


def _local_parse(path: Path, release: str) -> list[Advisory]:
    """Minimal DSA list reader: (id, CVEs, fixed version) of one release's version lines."""
    advisories: list[Advisory] = []
    advisory_id = ""
    cves: tuple[str, ...] = ()
    for line in path.read_text(encoding="utf-8").splitlines():
        header = _HEADER.match(line)
        if header:
            advisory_id, cves = header["id"], ()
            continue
        if line.startswith("\t{"):
            cves = tuple(line.strip().strip("{}").split())
            continue
        match = _RELEASE.match(line)
        if match and match["rel"] == release and not match["state"].startswith("<"):
            advisories.append(
                Advisory(
                    id=advisory_id,
                    aliases=cves,
                    ecosystem=Ecosystem.DEBIAN,
                    release=release,
                    source_package=match["pkg"],
                    fix=FixState.fixed(match["state"]),
                    feed="debian-dsa",
                    provenance=Provenance(feed="debian-dsa", source=str(path)),
                )
            )
    return advisories


def _bookworm_advisories(release: str) -> dict[str, list[Advisory]]:
    try:  # the project's feed parser, when present
        from patchpilot.tools.feeds.debian import parse_dsa

        batch = parse_dsa(DSA_LIST.read_bytes(), source=str(DSA_LIST), fetched_at=NOW)
        advisories = [a for a in batch.advisories if a.release == release]
    except ImportError:  # pragma: no cover - written concurrently by someone else
        advisories = _local_parse(DSA_LIST, release)
    by_source: dict[str, list[Advisory]] = defaultdict(list)
    for advisory in advisories:
        by_source[advisory.source_package].append(advisory)
    return dict(by_source)


def _dpkg_lt(installed: str, fixed: str) -> bool | None:
    """The oracle: ``dpkg --compare-versions a lt b`` (None when dpkg rejects a version)."""
    run = subprocess.run(
        ["dpkg", "--compare-versions", installed, "lt", fixed],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode not in (0, 1) or run.stderr.strip():
        return None
    return run.returncode == 0


def _check_against_oracle(
    result: AssessmentResult,
    sources: dict[tuple[str, str], list[InstalledPackage]],
    advisories: dict[str, list[Advisory]],
) -> tuple[int, int]:
    """Compare every fixed verdict with dpkg; return (checked pairs, affected pairs)."""
    found = {(f.source_package, f.advisory_id) for f in result.findings}
    errors = {source for source, _ in result.errors}
    checked = affected = 0
    for (name, version), _binaries in sorted(sources.items()):
        for advisory in advisories.get(name, ()):
            if advisory.fix.status is not FixStatus.FIXED:
                continue
            expected = _dpkg_lt(version, advisory.fix.version or "")
            checked += 1
            if expected is None:
                assert name in errors, f"{name} {version}: dpkg refused, no error recorded"
                continue
            affected += expected
            assert ((name, advisory.id) in found) is expected, (
                f"{name} {version} vs {advisory.id} fixed in {advisory.fix.version}: "
                f"dpkg says {'affected' if expected else 'not affected'}"
            )
    return checked, affected


def test_this_machine_against_dpkg() -> None:
    from patchpilot.tools.facts import collect_host_facts
    from patchpilot.tools.transport.local import LocalTransport

    with LocalTransport("localhost") as transport:
        facts, packages = collect_host_facts(transport)
    if facts.os.family is not OSFamily.DEBIAN or facts.os.release is None:
        pytest.skip(f"not a Debian-family host: {facts.os.id}")
    advisories = _bookworm_advisories(facts.os.release)
    if not advisories:
        pytest.skip(f"the DSA list has no {facts.os.release} entries")
    result = assess_host("localhost", facts, packages, advisories, now=NOW, cache=VerdictCache())
    ubuntu = facts.os.id == "ubuntu" or "ubuntu" in facts.os.id_like
    sources: dict[tuple[str, str], list[InstalledPackage]] = defaultdict(list)
    for package in packages:
        if not is_kernel_source(package.source_name, ubuntu=ubuntu):
            sources[(package.source_name, package.source_version)].append(package)
    checked, affected = _check_against_oracle(result, sources, advisories)
    log.info("oracle_this_machine", checked=checked, affected=affected)
    assert checked > 0, "no installed source package has a fixed advisory: oracle not exercised"
    # Kernel: only the running kernel's source may produce findings.
    kernel_findings = [
        f for f in result.findings if is_kernel_source(f.source_package, ubuntu=ubuntu)
    ]
    if result.running_kernel is None:
        assert kernel_findings == []
    else:
        _, version = result.running_kernel
        for finding in kernel_findings:
            assert finding.installed_source_version == version
            assert _dpkg_lt(version, finding.fix.version or "") is True
    assert result.counters.source_packages == len(sources) + (result.running_kernel is not None)


def test_oldest_fixed_versions_against_dpkg() -> None:
    advisories = _bookworm_advisories("bookworm")
    kernel_release = "6.1.0-99-amd64"
    packages: list[InstalledPackage] = []
    sources: dict[tuple[str, str], list[InstalledPackage]] = {}
    for name, items in sorted(advisories.items()):
        fixed = sorted((a.fix.version for a in items if a.fix.version), key=_version_key)
        if not fixed:
            continue
        oldest = fixed[0]
        if is_kernel_source(name):
            # the running kernel's image, built by the signed template (own source version)
            image = InstalledPackage(
                name=f"linux-image-{kernel_release}",
                version=oldest,
                arch="amd64",
                source_name=f"{name}-signed-amd64" if name == "linux" else name,
                source_version=oldest.replace("-", "+", 1),
                ecosystem=Ecosystem.DEBIAN,
            )
            packages.append(image)
            sources[(name, oldest)] = [image]
            continue
        package = InstalledPackage(
            name=name,
            version=oldest,
            arch="amd64",
            source_name=name,
            source_version=oldest,
            ecosystem=Ecosystem.DEBIAN,
        )
        packages.append(package)
        sources[(name, oldest)] = [package]
    facts = HostFacts(
        host="historic",
        os=OSInfo(id="debian", version_codename="bookworm", family=OSFamily.DEBIAN),
        kernel=kernel_release,
        reboot_required=False,
        package_count=len(packages),
        source_package_count=len(sources),
        ecosystem=Ecosystem.DEBIAN,
    )
    result = assess_host("historic", facts, packages, advisories, now=NOW, cache=VerdictCache())
    checked, affected = _check_against_oracle(result, sources, advisories)
    log.info("oracle_historic", checked=checked, affected=affected)
    assert checked > 300
    assert affected > 50, "the synthetic host should match many real advisories"
    assert len(result.findings) == affected
    assert result.errors == ()
    if "linux" in advisories:
        assert result.running_kernel is not None
        assert result.running_kernel[0] == "linux"


def _version_key(version: str) -> Any:
    """Sort key of the project's comparator (dpkg checks the verdicts, not this sort)."""
    return sort_key("debian", version)
