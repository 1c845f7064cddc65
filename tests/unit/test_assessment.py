"""Assessment against real DSA entries (read from ../shared) on synthetic hosts.

The advisories are built from the real ``DSA_list_2025-02-13.txt`` lines by a small parser
local to these tests (independent of patchpilot.tools.feeds); the hosts are synthetic, with
versions chosen
below or at the real fixes so that the real advisories match.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from patchpilot.agents.assessment import (
    AssessmentResult,
    VerdictCache,
    assess_host,
    canonical_kernel_source,
    findings_from_pending,
    fix_reachable,
    is_kernel_source,
    kernel_image_updates,
    pending_advisory_id,
    running_kernel_binaries,
)
from patchpilot.core import versions
from patchpilot.core.models import (
    Advisory,
    CommandResult,
    Ecosystem,
    Finding,
    FixState,
    FixStatus,
    HostFacts,
    InstalledPackage,
    OSFamily,
    OSInfo,
    PendingUpdate,
    Provenance,
    Severity,
)
from patchpilot.tools.facts import AptPendingUpdates, DpkgPackages
from tests.conftest import FIXTURES, SHARED

DSA_LIST = SHARED / "feeds" / "debian" / "DSA_list_2025-02-13.txt"
NOW = datetime(2025, 2, 14, 12, 0, tzinfo=UTC)

_HEADER = re.compile(r"^\[(?P<date>[^\]]+)\] (?P<id>DSA-\d+-\d+) (?P<pkg>\S+) ")
_RELEASE = re.compile(r"^\t\[(?P<rel>\w+)\] - (?P<pkg>\S+) (?P<version>\S+)")


@cache
def _dsa_blocks() -> dict[str, list[str]]:
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in DSA_LIST.read_text(encoding="utf-8").splitlines():
        header = _HEADER.match(line)
        if header:
            current = blocks.setdefault(header["id"], [line])
        elif current is not None:
            current.append(line)
    return blocks


def dsa(advisory_id: str, release: str = "bookworm") -> Advisory:
    """The real DSA entry's advisory for one release, parsed straight from the list."""
    lines = _dsa_blocks()[advisory_id]
    cves: tuple[str, ...] = ()
    for line in lines[1:]:
        if line.startswith("\t{"):
            cves = tuple(line.strip().strip("{}").split())
        match = _RELEASE.match(line)
        if match and match["rel"] == release:
            return Advisory(
                id=advisory_id,
                aliases=cves,
                ecosystem=Ecosystem.DEBIAN,
                release=release,
                source_package=match["pkg"],
                fix=FixState.fixed(match["version"]),
                feed="debian-dsa",
                provenance=Provenance(
                    feed="debian-dsa", source=str(DSA_LIST), record_id=advisory_id
                ),
            )
    raise LookupError(f"{advisory_id} has no {release} line")


def facts(kernel: str = "6.1.0-28-amd64", os_id: str = "debian") -> HostFacts:
    codename = "bookworm" if os_id == "debian" else "jammy"
    return HostFacts(
        host="h1",
        os=OSInfo(id=os_id, version_codename=codename, family=OSFamily.DEBIAN),
        kernel=kernel,
        reboot_required=False,
        package_count=0,
        source_package_count=0,
        ecosystem=Ecosystem.DEBIAN,
    )


def pkg(
    name: str,
    version: str,
    source: str | None = None,
    source_version: str | None = None,
    arch: str = "amd64",
) -> InstalledPackage:
    return InstalledPackage(
        name=name,
        version=version,
        arch=arch,
        source_name=source or name,
        source_version=source_version or version,
        ecosystem=Ecosystem.DEBIAN,
    )


def pending(
    name: str,
    candidate: str,
    installed: str | None = "0",
    arch: str = "amd64",
    origin: str = "Debian-Security:12/bookworm-security",
) -> PendingUpdate:
    return PendingUpdate(
        name=name,
        arch=arch,
        installed_version=installed,
        candidate_version=candidate,
        origins=(origin,),
        security=origin.endswith("-security"),
    )


def by_source(*advisories: Advisory) -> dict[str, list[Advisory]]:
    mapping: dict[str, list[Advisory]] = {}
    for advisory in advisories:
        mapping.setdefault(advisory.source_package, []).append(advisory)
    return mapping


def assess(
    packages: Sequence[InstalledPackage],
    *advisories: Advisory,
    pending_updates: Sequence[PendingUpdate] | None = None,
    host_facts: HostFacts | None = None,
) -> AssessmentResult:
    return assess_host(
        "h1",
        host_facts or facts(),
        packages,
        by_source(*advisories),
        pending_updates,
        now=NOW,
        cache=VerdictCache(),
    )


# --------------------------------------------------------------------------- real entries


def test_real_dsa_values_are_read_verbatim() -> None:
    openssh = dsa("DSA-5724-1")
    assert openssh.source_package == "openssh"
    assert openssh.fix.version == "1:9.2p1-2+deb12u3"
    assert openssh.cves == ("CVE-2024-6387",)
    assert dsa("DSA-5525-1").fix.version == "2:4.17.12+dfsg-0+deb12u1"
    assert dsa("DSA-5860-1").fix.version == "6.1.128-1"


def test_openssh_regresshion_matches_an_older_source() -> None:
    server = pkg("openssh-server", "1:9.2p1-2+deb12u2", "openssh")
    client = pkg("openssh-client", "1:9.2p1-2+deb12u2", "openssh")
    result = assess([server, client], dsa("DSA-5724-1"))
    (finding,) = result.findings
    assert finding.advisory_id == "DSA-5724-1"
    assert finding.source_package == "openssh"
    assert finding.installed_source_version == "1:9.2p1-2+deb12u2"
    assert finding.binary_packages == ("openssh-client", "openssh-server")
    assert finding.cves == ("CVE-2024-6387",)
    assert finding.fix == FixState.fixed("1:9.2p1-2+deb12u3")
    assert finding.provenance == (dsa("DSA-5724-1").provenance,)
    assert finding.first_seen == NOW
    assert finding.fix_reachable is None  # no pending data collected
    assert not finding.actionable
    assert result.counters.source_packages == 1
    assert result.counters.advisories_considered == 1
    assert result.errors == ()


def test_fixed_version_installed_is_not_a_finding() -> None:
    server = pkg("openssh-server", "1:9.2p1-2+deb12u3", "openssh")
    result = assess([server], dsa("DSA-5724-1"))
    assert result.findings == ()
    assert result.counters.already_fixed == 1


def test_newer_than_fix_without_epoch_trap() -> None:
    # 1:9.2p1-... beats any epoch-less version: an installed "9.9p1-1" is OLDER than the fix.
    server = pkg("openssh-server", "9.9p1-1", "openssh")
    result = assess([server], dsa("DSA-5724-1"))
    assert [f.advisory_id for f in result.findings] == ["DSA-5724-1"]


def test_binnmu_is_matched_on_its_source_version() -> None:
    # Binary 1:9.2p1-2+deb12u3+b1 is a binNMU of the FIXED source: not affected. A binary
    # 1:9.2p1-2+deb12u2+b9 is a rebuild of the vulnerable source: affected.
    fixed = pkg("openssh-client", "1:9.2p1-2+deb12u3+b1", "openssh", "1:9.2p1-2+deb12u3")
    assert assess([fixed], dsa("DSA-5724-1")).findings == ()
    old = pkg("openssh-client", "1:9.2p1-2+deb12u2+b9", "openssh", "1:9.2p1-2+deb12u2")
    (finding,) = assess([old], dsa("DSA-5724-1")).findings
    assert finding.installed_source_version == "1:9.2p1-2+deb12u2"


def test_samba_libldb2_epoch_trap() -> None:
    # wazuh#24306: libldb2's own version 2:2.6.2+samba4.17.12... is LOWER than samba's fix
    # 2:4.17.12+dfsg-0+deb12u1, yet it is built from the fixed samba upload.
    fixed_source = "2:4.17.12+dfsg-0+deb12u1"
    libldb2 = pkg("libldb2", "2:2.6.2+samba4.17.12+dfsg-0+deb12u1", "samba", fixed_source)
    samba = pkg("samba", fixed_source)
    assert versions.compare("debian", libldb2.version, dsa("DSA-5525-1").fix.version or "") < 0
    result = assess([libldb2, samba], dsa("DSA-5525-1"), dsa("DSA-5477-1"))
    assert result.findings == ()
    assert result.counters.already_fixed == 2


def test_samba_between_two_fixes_matches_only_the_newer() -> None:
    source = "2:4.17.10+dfsg-0+deb12u1"
    libldb2 = pkg("libldb2", "2:2.6.2+samba4.17.10+dfsg-0+deb12u1", "samba", source)
    samba = pkg("samba", source)
    result = assess([libldb2, samba], dsa("DSA-5525-1"), dsa("DSA-5477-1"))
    assert [f.advisory_id for f in result.findings] == ["DSA-5525-1"]
    assert result.findings[0].binary_packages == ("libldb2", "samba")
    assert result.counters.already_fixed == 1


# --------------------------------------------------------------------------- fix states


def _advisory(status: FixStatus, source: str = "openssh", release: str = "bookworm") -> Advisory:
    return Advisory(
        id=f"CVE-2099-{1000 + list(FixStatus).index(status)}",
        ecosystem=Ecosystem.DEBIAN,
        release=release,
        source_package=source,
        fix=FixState(status=status, vendor_state="synthetic"),
        severity=Severity.HIGH,
        feed="debian-json",
        provenance=Provenance(feed="debian-json", source="synthetic"),
    )


@pytest.mark.parametrize(
    "status",
    [FixStatus.NO_FIX_YET, FixStatus.DEFERRED, FixStatus.WILL_NOT_FIX, FixStatus.END_OF_LIFE],
)
def test_unfixed_states_are_visible_non_actionable_findings(status: FixStatus) -> None:
    server = pkg("openssh-server", "1:9.2p1-2+deb12u3", "openssh")
    result = assess([server], _advisory(status), pending_updates=[])
    (finding,) = result.findings
    assert finding.fix.status is status
    assert finding.fix_reachable is None
    assert finding.severity is Severity.HIGH
    assert not finding.actionable


@pytest.mark.parametrize("status", [FixStatus.NOT_AFFECTED, FixStatus.UNIMPORTANT])
def test_not_affected_and_unimportant_are_counted_not_reported(status: FixStatus) -> None:
    server = pkg("openssh-server", "1:9.2p1-2+deb12u1", "openssh")
    result = assess([server], _advisory(status))
    assert result.findings == ()
    assert result.counters.not_affected == 1
    assert result.counters.unimportant == (status is FixStatus.UNIMPORTANT)


def test_other_release_is_out_of_scope() -> None:
    server = pkg("openssh-server", "1:9.2p1-2+deb12u1", "openssh")
    bullseye = dsa("DSA-5723-1", "bullseye").model_copy(update={"source_package": "openssh"})
    result = assess([server], bullseye, dsa("DSA-5724-1"))
    assert [f.advisory_id for f in result.findings] == ["DSA-5724-1"]
    assert result.counters.out_of_scope == 1


# --------------------------------------------------------------------------- invalid data


def test_invalid_installed_version_is_an_error_not_a_pass() -> None:
    broken = pkg("openssh-server", "1:9.2p1 broken", "openssh")
    result = assess([broken], dsa("DSA-5724-1"))
    assert result.findings == ()
    ((source, reason),) = result.errors
    assert source == "openssh"
    assert "DSA-5724-1" in reason
    assert "unknown" in reason


def test_invalid_fixed_version_is_an_error_not_a_pass() -> None:
    advisory = dsa("DSA-5724-1").model_copy(update={"fix": FixState.fixed("1:9.2p1 oops")})
    result = assess([pkg("openssh-server", "1:9.2p1-2+deb12u2", "openssh")], advisory)
    assert result.findings == ()
    assert [source for source, _ in result.errors] == ["openssh"]


def test_invalid_version_still_reports_unfixed_states() -> None:
    broken = pkg("openssh-server", "not a version", "openssh")
    result = assess([broken], dsa("DSA-5724-1"), _advisory(FixStatus.NO_FIX_YET))
    assert [f.fix.status for f in result.findings] == [FixStatus.NO_FIX_YET]
    assert len(result.errors) == 1


def test_host_without_ecosystem_is_an_error() -> None:
    host_facts = HostFacts(
        host="h1",
        os=OSInfo(id="arch"),
        kernel="6.7.0-arch1-1",
        reboot_required=False,
        package_count=0,
        source_package_count=0,
    )
    result = assess_host("h1", host_facts, [], {}, now=NOW)
    assert result.findings == ()
    assert [source for source, _ in result.errors] == ["*"]


# --------------------------------------------------------------------------- kernel


KERNEL_PACKAGES = [
    # running 6.1.0-28 from linux 6.1.119-1 (DSA-5818-1's fix), signed image + headers
    pkg("linux-image-6.1.0-28-amd64", "6.1.119-1", "linux-signed-amd64", "6.1.119+1"),
    pkg("linux-headers-6.1.0-28-amd64", "6.1.119-1", "linux", "6.1.119-1"),
    pkg("linux-headers-6.1.0-28-common", "6.1.119-1", "linux", "6.1.119-1", "all"),
    pkg("linux-libc-dev", "6.1.119-1", "linux", "6.1.119-1"),
    pkg("linux-image-amd64", "6.1.119-1", "linux-signed-amd64", "6.1.119+1"),
    # an older kernel still installed (would match DSA-5818-1 and DSA-5782-1)
    pkg("linux-image-6.1.0-25-amd64", "6.1.106-3", "linux-signed-amd64", "6.1.106+3"),
    pkg("linux-headers-6.1.0-25-amd64", "6.1.106-3", "linux", "6.1.106-3"),
    pkg("linux-base", "4.9"),
]
KERNEL_DSAS = ("DSA-5860-1", "DSA-5818-1", "DSA-5782-1")


def test_only_the_running_kernel_counts() -> None:
    result = assess(KERNEL_PACKAGES, *(dsa(i) for i in KERNEL_DSAS))
    assert [f.advisory_id for f in result.findings] == ["DSA-5860-1"]
    (finding,) = result.findings
    assert finding.source_package == "linux"
    assert finding.installed_source_version == "6.1.119-1"
    assert finding.binary_packages == (
        "linux-headers-6.1.0-28-amd64",
        "linux-image-6.1.0-28-amd64",
    )
    assert result.running_kernel == ("linux", "6.1.119-1")
    assert result.counters.pruned_kernels == 2  # linux 6.1.106-3 + linux-signed-amd64 6.1.106+3
    assert result.counters.already_fixed == 2


def test_booted_into_the_old_kernel() -> None:
    result = assess(
        KERNEL_PACKAGES, *(dsa(i) for i in KERNEL_DSAS), host_facts=facts("6.1.0-25-amd64")
    )
    assert [f.advisory_id for f in result.findings] == ["DSA-5782-1", "DSA-5818-1", "DSA-5860-1"]
    assert {f.installed_source_version for f in result.findings} == {"6.1.106-3"}


def test_running_kernel_not_from_a_package_assesses_no_kernel() -> None:
    # e.g. this machine: a firecracker kernel; linux-libc-dev alone is not a running kernel
    result = assess(
        KERNEL_PACKAGES, *(dsa(i) for i in KERNEL_DSAS), host_facts=facts("6.18.44-fc-v782")
    )
    assert result.findings == ()
    assert result.running_kernel is None
    assert result.counters.pruned_kernels == 4


def test_kernel_fix_reachable_through_a_new_abi_package() -> None:
    new_image = pending("linux-image-6.1.0-31-amd64", "6.1.128-1", installed=None)
    result = assess(KERNEL_PACKAGES, dsa("DSA-5860-1"), pending_updates=[new_image])
    assert result.findings[0].fix_reachable is True
    other_flavour = pending("linux-image-6.1.0-31-cloud-amd64", "6.1.128-1", installed=None)
    result = assess(KERNEL_PACKAGES, dsa("DSA-5860-1"), pending_updates=[other_flavour])
    assert result.findings[0].fix_reachable is False


@pytest.mark.parametrize(
    ("name", "ubuntu", "expected"),
    [
        ("linux", False, True),
        ("linux-signed-amd64", False, True),
        ("linux-signed-arm64", False, True),
        ("linux-latest", False, True),
        ("linux-5.10", False, True),
        ("linux-signed-5.10-amd64", False, True),
        ("linux-grsec", False, True),
        ("linux-base", False, False),
        ("linux-atm", False, False),
        ("linux-firmware-nonfree", False, False),
        ("linux-aws", True, True),
        ("linux-hwe-6.5", True, True),
        ("linux-signed-hwe-6.5", True, True),
        ("linux-meta-hwe-6.5", True, True),
        ("linux-lowlatency-hwe-5.15", True, True),
        ("linux-azure-fde-5.15", True, True),
        ("linux-aws-edge", True, True),
        ("linux-firmware", True, False),
        ("linux-aws", False, False),
        ("linuxlogo", False, False),
    ],
)
def test_kernel_source_names(name: str, ubuntu: bool, expected: bool) -> None:
    assert is_kernel_source(name, ubuntu=ubuntu) is expected


def test_kernel_source_renames() -> None:
    assert canonical_kernel_source("linux-signed-amd64") == "linux"
    assert canonical_kernel_source("linux-signed-5.10-amd64") == "linux-5.10"
    assert canonical_kernel_source("linux-signed-hwe-6.5", ubuntu=True) == "linux-hwe-6.5"
    assert canonical_kernel_source("openssl") == "openssl"


def test_running_kernel_binaries() -> None:
    names = running_kernel_binaries("5.15.0-91-generic")
    assert {"linux-image-5.15.0-91-generic", "linux-modules-extra-5.15.0-91-generic"} <= names
    assert "linux-image-generic" not in names


def test_ubuntu_signed_kernel_is_assessed_as_its_flavour() -> None:
    ubuntu = facts("6.5.0-14-generic", os_id="ubuntu")
    packages = [
        pkg(
            "linux-image-6.5.0-14-generic",
            "6.5.0-14.14~22.04.1",
            "linux-signed-hwe-6.5",
            "6.5.0-14.14~22.04.1",
        ),
        pkg("linux-modules-6.5.0-14-generic", "6.5.0-14.14~22.04.1", "linux-hwe-6.5"),
        pkg("linux-image-generic-hwe-22.04", "6.5.0.14.14~22.04.7", "linux-meta-hwe-6.5"),
    ]
    advisory = Advisory(
        id="USN-6549-1",
        ecosystem=Ecosystem.DEBIAN,
        release="jammy",
        source_package="linux-hwe-6.5",
        fix=FixState.fixed("6.5.0-15.15~22.04.1"),
        feed="ubuntu",
        provenance=Provenance(feed="ubuntu", source="synthetic"),
    )
    result = assess(packages, advisory, host_facts=ubuntu)
    (finding,) = result.findings
    assert finding.source_package == "linux-hwe-6.5"
    assert finding.binary_packages == (
        "linux-image-6.5.0-14-generic",
        "linux-modules-6.5.0-14-generic",
    )
    assert result.counters.pruned_kernels == 1  # the meta package


def test_kernel_image_updates_pattern() -> None:
    updates = [
        pending("linux-image-6.1.0-31-amd64", "6.1.128-1", installed=None),
        pending("linux-image-6.1.0-31-rt-amd64", "6.1.128-1", installed=None),
        pending("linux-image-amd64", "6.1.128-1"),
    ]
    found = kernel_image_updates("6.1.0-28-amd64", updates)
    assert [u.name for u in found] == ["linux-image-6.1.0-31-amd64"]
    assert kernel_image_updates("6.18.44-fc-v782", None) == []


# --------------------------------------------------------------------------- reachability


OPENSSH_OLD = [
    pkg("openssh-server", "1:9.2p1-2+deb12u2", "openssh"),
    pkg("openssh-client", "1:9.2p1-2+deb12u2", "openssh"),
]


@pytest.mark.parametrize(
    ("updates", "expected"),
    [
        (None, None),
        ([], False),
        ([pending("openssh-server", "1:9.2p1-2+deb12u3")], True),
        ([pending("openssh-server", "1:9.2p1-2+deb12u3+b1")], True),
        ([pending("openssh-client", "1:9.2p1-2+deb12u5")], True),
        ([pending("openssh-server", "1:9.2p1-2+deb12u2+b1")], False),  # rebuild, no fix
        ([pending("openssh-server", "1:9.2p1-2+deb12u3", arch="arm64")], False),
        ([pending("unrelated", "9:9")], False),
    ],
)
def test_fix_reachability(updates: list[PendingUpdate] | None, expected: bool | None) -> None:
    result = assess(OPENSSH_OLD, dsa("DSA-5724-1"), pending_updates=updates)
    (finding,) = result.findings
    assert finding.fix_reachable is expected
    assert finding.actionable is (expected is True)


def test_binnmu_binary_candidate_is_compared() -> None:
    binnmu = [pkg("openssh-client", "1:9.2p1-2+deb12u2+b1", "openssh", "1:9.2p1-2+deb12u2")]
    fix = "1:9.2p1-2+deb12u3"
    index = {"openssh-client": [pending("openssh-client", "1:9.2p1-2+deb12u2+b2")]}
    assert fix_reachable(binnmu, fix, index, Ecosystem.DEBIAN) is False
    index = {"openssh-client": [pending("openssh-client", "1:9.2p1-2+deb12u3+b1")]}
    assert fix_reachable(binnmu, fix, index, Ecosystem.DEBIAN) is True


def test_own_version_scheme_binary_update_is_taken_as_reaching() -> None:
    source = "2:4.17.10+dfsg-0+deb12u1"
    libldb2 = pkg("libldb2", "2:2.6.2+samba4.17.10+dfsg-0+deb12u1", "samba", source)
    update = pending("libldb2", "2:2.6.2+samba4.17.12+dfsg-0+deb12u1")
    result = assess([libldb2], dsa("DSA-5525-1"), pending_updates=[update])
    assert result.findings[0].fix_reachable is True


def test_unparsable_candidate_is_unknown_not_false() -> None:
    index = {"openssh-server": [pending("openssh-server", "1:9.2p1-2+deb12u2")]}
    index["openssh-server"].append(
        pending("openssh-server", "1:9.2p1-2+deb12u2").model_copy(
            update={"candidate_version": "bad version"}
        )
    )
    assert fix_reachable(OPENSSH_OLD, "1:9.2p1-2+deb12u3", index, Ecosystem.DEBIAN) is None


# --------------------------------------------------------------------------- API shape & cache


def test_callable_and_mapping_advisories_agree() -> None:
    mapping = by_source(dsa("DSA-5724-1"), dsa("DSA-5525-1"))
    packages = [*OPENSSH_OLD, pkg("samba", "2:4.17.10+dfsg-0+deb12u1")]
    from_mapping = assess_host("h1", facts(), packages, mapping, now=NOW)
    from_callable = assess_host(
        "h1", facts(), packages, lambda name: mapping.get(name, []), now=NOW
    )
    assert from_mapping == from_callable
    assert len(from_mapping.findings) == 2


def test_first_seen_is_carried_over() -> None:
    earlier = datetime(2024, 7, 2, tzinfo=UTC)
    result = assess_host(
        "h1",
        facts(),
        OPENSSH_OLD,
        by_source(dsa("DSA-5724-1")),
        first_seen={("openssh", "DSA-5724-1"): earlier},
        now=NOW,
    )
    assert result.findings[0].first_seen == earlier


def test_findings_validate_as_models() -> None:
    result = assess(OPENSSH_OLD, dsa("DSA-5724-1"), pending_updates=[])
    for finding in result.findings:
        assert type(finding).model_validate(finding.model_dump()) == finding


def test_cache_is_reused_across_hosts_and_invalidated_by_new_advisories() -> None:
    verdicts = VerdictCache()
    mapping = by_source(dsa("DSA-5724-1"))
    for host in ("a", "b", "c"):
        result = assess_host(host, facts(), OPENSSH_OLD, mapping, now=NOW, cache=verdicts)
        assert len(result.findings) == 1
    assert (verdicts.misses, verdicts.hits) == (1, 2)
    # new feed data (new sequence objects) is never answered from a stale entry
    newer = dsa("DSA-5724-1").model_copy(update={"fix": FixState.fixed("1:9.2p1-2+deb12u1")})
    result = assess_host("d", facts(), OPENSSH_OLD, by_source(newer), now=NOW, cache=verdicts)
    assert result.findings == ()
    assert verdicts.misses == 2


def test_cache_bounded() -> None:
    verdicts = VerdictCache(max_entries=2)
    for i in range(5):
        verdicts.compare(Ecosystem.DEBIAN, f"1.{i}", "1.0")
    assert len(verdicts) <= 2


# --------------------------------------------------------------------------- no-feeds fallback


def _real_pending() -> tuple[list[InstalledPackage], list[PendingUpdate]]:
    folder = FIXTURES / "facts" / "AptPendingUpdates"
    data = json.loads((folder / "debian12_bookworm_oldstable.json").read_text(encoding="utf-8"))
    fact = AptPendingUpdates()
    updates = fact.parse(
        CommandResult(
            host="h1", argv=tuple(data["command"]), exit_code=0, stdout=data["stdout"], stderr=""
        )
    )
    rows = (folder / "debian12_bookworm_oldstable.dpkg-query.tsv").read_text(encoding="utf-8")
    dpkg = DpkgPackages()
    packages = dpkg.parse(
        CommandResult(host="h1", argv=tuple(dpkg.command()), exit_code=0, stdout=rows, stderr="")
    )
    return packages, updates


def test_findings_from_pending_on_the_real_fixture() -> None:
    packages, updates = _real_pending()
    findings = findings_from_pending("h1", packages, updates, now=NOW)
    by_source_name = {f.source_package: f for f in findings}
    assert set(by_source_name) == {
        "apt",
        "expat",
        "gnutls28",
        "libgcrypt20",
        "linux",
        "nss",
        "openssl",
        "perl",
        "postgresql-common",
        "python3.11",
        "tzdata",
        "xz-utils",
    }
    # non-security upgrades (bash binNMU, systemd point release...) are not findings
    assert not {"bash", "systemd", "pam", "base-files", "curl"} & set(by_source_name)
    openssl = by_source_name["openssl"]
    assert openssl.advisory_id == "debian-security-update:openssl"
    assert openssl.advisory_id == pending_advisory_id(Ecosystem.DEBIAN, "openssl")
    assert openssl.binary_packages == ("libssl3", "openssl")
    assert openssl.installed_source_version == "3.0.19-1~deb12u2"
    assert openssl.fix == FixState.fixed("3.0.22-1~deb12u2")
    assert openssl.fix_reachable is True
    assert openssl.actionable
    assert openssl.severity is Severity.UNKNOWN
    assert openssl.cves == ()
    (provenance,) = openssl.provenance
    assert provenance.feed == "apt"
    assert provenance.source == "Debian-Security:12/oldstable-security"
    assert provenance.confidence == "repository-metadata"
    assert by_source_name["nss"].fix.version == "2:3.87.1-1+deb12u4"
    assert by_source_name["perl"].binary_packages == (
        "libperl5.36",
        "perl-base",
        "perl-modules-5.36",
    )


def test_findings_from_pending_first_seen_and_unknown_package() -> None:
    earlier = datetime(2025, 1, 1, tzinfo=UTC)
    update = pending("ghost", "1.1", installed="1.0")
    (finding,) = findings_from_pending(
        "h1", [], [update], first_seen={("ghost", "debian-security-update:ghost"): earlier}
    )
    assert finding.source_package == "ghost"
    assert finding.installed_source_version == "1.0"
    assert finding.first_seen == earlier


def test_findings_from_pending_skips_new_installs() -> None:
    update = pending("linux-image-6.1.0-31-amd64", "6.1.128-1", installed=None)
    assert findings_from_pending("h1", [], [update], now=NOW) == []


def test_shared_feed_file_exists() -> None:
    assert Path(DSA_LIST).is_file(), "the real DSA list is read from ../shared"


def test_two_installed_versions_of_one_source_give_one_finding() -> None:
    # multi-arch skew: one finding per host|source|advisory, at the lowest installed version
    skew = [
        pkg("openssh-client", "1:9.2p1-2+deb12u2", "openssh"),
        pkg("openssh-client", "1:9.2p1-2+deb12u1", "openssh", arch="i386"),
    ]
    updates = [pending("openssh-client", "1:9.2p1-2+deb12u3")]
    result = assess(skew, dsa("DSA-5724-1"), pending_updates=updates)
    (finding,) = result.findings
    assert finding.installed_source_version == "1:9.2p1-2+deb12u1"
    assert finding.fix_reachable is False  # the i386 copy has no pending upgrade
    assert result.counters.source_packages == 2


# --------------------------------------------------------------------------- fleet equivalence
#
# The fleet path (shared VerdictCache with prebuilt finding templates, memoised prioritisation,
# bulk store writes) must give exactly what the straightforward per-finding path gave. The
# digest below was computed with that earlier implementation (validated Finding/RiskAssessment
# per finding, one first_seen upsert per finding) on this synthetic fleet; the other checks
# compare against uncached computations of the current code.

_FLEET_GOLDEN = "6fbd7364b4a090900858704f5618b6fdd2accbb34434456001b91affe1cfb69f"
_FLEET_NOW = datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
_FLEET_RELEASE = "bookworm"


def _fleet_advisory(
    advisory_id: str,
    source: str,
    fix: FixState,
    *,
    aliases: tuple[str, ...] = (),
    severity: Severity = Severity.UNKNOWN,
    release: str | None = _FLEET_RELEASE,
) -> Advisory:
    return Advisory(
        id=advisory_id,
        aliases=aliases,
        ecosystem=Ecosystem.DEBIAN,
        release=release,
        source_package=source,
        fix=fix,
        severity=severity,
        feed="debian-dsa",
        provenance=Provenance(
            feed="debian-dsa",
            source="synthetic",
            record_id=advisory_id,
            fetched_at=datetime(2025, 2, 13, tzinfo=UTC),
        ),
    )


def _fleet_index() -> dict[str, tuple[Advisory, ...]]:
    fixed = FixState.fixed
    advisories = [
        _fleet_advisory(
            "DSA-1001-1", "openssl", fixed("3.0.15-1~deb12u1"), aliases=("CVE-2024-0001",)
        ),
        _fleet_advisory(
            "DSA-1002-1",
            "openssl",
            fixed("3.0.11-1~deb12u2"),
            aliases=("CVE-2023-0002", "CVE-2023-0003"),
            severity=Severity.HIGH,
        ),
        _fleet_advisory(
            "CVE-2024-0004",
            "bash",
            FixState(status=FixStatus.NO_FIX_YET),
            severity=Severity.LOW,
        ),
        _fleet_advisory("CVE-2024-0005", "curl", FixState(status=FixStatus.NOT_AFFECTED)),
        _fleet_advisory("CVE-2024-0006", "curl", FixState(status=FixStatus.UNIMPORTANT)),
        _fleet_advisory(
            "CVE-2024-0007",
            "curl",
            FixState(status=FixStatus.WILL_NOT_FIX, vendor_state="ignored"),
            severity=Severity.MEDIUM,
        ),
        _fleet_advisory("DSA-1008-1", "badver", fixed("1:1.0-1"), aliases=("CVE-2024-0008",)),
        _fleet_advisory(
            "DSA-1009-1",
            "zlib",
            fixed("1:1.2.13.dfsg-1"),
            aliases=("CVE-2024-0009",),
            release="bullseye",
        ),
        _fleet_advisory(
            "DSA-1010-1",
            "linux",
            fixed("6.1.119-1"),
            aliases=("CVE-2024-0010",),
            severity=Severity.CRITICAL,
        ),
        _fleet_advisory("DSA-1011-1", "linux", fixed("6.1.128-1"), aliases=("CVE-2025-0011",)),
        _fleet_advisory(
            "DSA-1012-1", "samba", fixed("2:4.17.12+dfsg-0+deb12u1"), aliases=("CVE-2023-0012",)
        ),
        _fleet_advisory("DLA-1013-1", "tzdata", fixed("2025a-0+deb12u1")),
    ]
    index: dict[str, list[Advisory]] = {}
    for advisory in advisories:
        index.setdefault(advisory.source_package, []).append(advisory)
    return {source: tuple(items) for source, items in index.items()}


def _fleet_hosts() -> list[tuple[Any, HostFacts, list[InstalledPackage], Any, Any]]:
    """(Host, facts, packages, pending or None, first_seen or None) of 36 synthetic hosts."""
    from patchpilot.core.models import Exposure, Host

    rng = random.Random(11)
    openssl = ("3.0.9-1", "3.0.11-1~deb12u2", "3.0.15-1~deb12u1", "3.0.16-1~deb12u1")
    hosts = []
    for i in range(36):
        version = openssl[rng.randrange(len(openssl))]
        packages = [
            pkg("libssl3", version, "openssl"),
            pkg("openssl", version),
            pkg("bash", "5.2.15-2+b7", "bash", "5.2.15-2"),
            pkg("curl", "7.88.1-10+deb12u8"),
            pkg("libcurl4", "7.88.1-10+deb12u8", "curl"),
            # unparseable (dpkg refuses embedded spaces): a data-quality warning, no verdict
            pkg("badver", "!! broken" if i % 9 == 0 else "1:1.0-1"),
            pkg("zlib1g", "1:1.2.13.dfsg-1", "zlib"),
            pkg("tzdata", rng.choice(("2024a-0+deb12u1", "2025a-0+deb12u1"))),
            pkg(
                "libldb2",
                "2:2.6.2+samba4.17.10+dfsg-0+deb12u1",
                "samba",
                "2:4.17.10+dfsg-0+deb12u1",
            ),
            pkg("linux-base", "4.9"),
        ]
        if i % 4 == 0:  # multi-arch skew: two installed versions of one source
            packages.append(pkg("libssl3", "3.0.9-1", "openssl", arch="i386"))
        if i % 3 == 0:  # running kernel, plus an older installed one (pruned)
            running = rng.choice(("6.1.106-3", "6.1.119-1", "6.1.128-1"))
            packages += [
                pkg("linux-image-6.1.0-28-amd64", running, "linux-signed-amd64", "6.1.119+1"),
                pkg("linux-image-6.1.0-18-amd64", "6.1.76-1", "linux-signed-amd64", "6.1.76+1"),
            ]
        rng.shuffle(packages)
        pending_updates = None
        if i % 2 == 0:
            pending_updates = [
                pending("libssl3", "3.0.15-1~deb12u1", version),
                pending("libldb2", "2:2.6.2+samba4.17.12+dfsg-0+deb12u1"),
            ][: rng.randrange(3)]
            if i % 6 == 0:
                pending_updates.append(pending("linux-image-6.1.0-30-amd64", "6.1.128-1", None))
        first_seen = None
        if i % 5 == 1:
            first_seen = {("openssl", "DSA-1001-1"): datetime(2024, 11, 2, 7, tzinfo=UTC)}
        host = Host(
            name=f"web-{i:02d}",
            address=f"10.0.0.{i}",
            criticality=1 + i % 5,
            exposure=list(Exposure)[i % 3],
        )
        host_facts = facts().model_copy(update={"host": host.name})
        hosts.append((host, host_facts, packages, pending_updates, first_seen))
    return hosts


def _fleet_enrichment() -> dict[str, Any]:
    from patchpilot.core.models import CVSS, EPSS, Enrichment, KEVEntry

    network = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
    local = "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N"
    day = datetime(2025, 2, 1, tzinfo=UTC).date()
    return {
        "CVE-2024-0001": Enrichment(
            cve="CVE-2024-0001",
            cvss=(CVSS(version="3.1", vector=network, base_score=9.8),),
            epss=EPSS(probability=0.42, percentile=0.97, score_date=day),
            kev=KEVEntry(date_added=day, due_date=day, known_ransomware_use=True),
        ),
        "CVE-2023-0002": Enrichment(
            cve="CVE-2023-0002",
            cvss=(CVSS(version="3.1", vector=local, base_score=5.5),),
            epss=EPSS(probability=0.004, percentile=0.4, score_date=day),
        ),
        "CVE-2023-0003": Enrichment(
            cve="CVE-2023-0003", epss=EPSS(probability=0.2, percentile=0.9, score_date=day)
        ),
        "CVE-2024-0010": Enrichment(
            cve="CVE-2024-0010",
            kev=KEVEntry(date_added=day, due_date=day, known_ransomware_use=None),
        ),
    }


def _fleet_run(store_path: Path) -> tuple[list[str], list[str]]:
    """Assess, prioritise and store the fleet; (result and risk JSON lines, store rows)."""
    import sqlite3

    from patchpilot.agents.prioritization import prioritize
    from patchpilot.core.policy import load_policy
    from patchpilot.core.store import Store

    policy = load_policy(Path(__file__).resolve().parents[2] / "configs" / "policy.yaml")
    index = _fleet_index()
    enrichment = _fleet_enrichment()
    cache = VerdictCache()
    today = datetime(2025, 3, 10, tzinfo=UTC).date()
    lines: list[str] = []
    by_host: dict[str, list[Any]] = {}
    risks = []
    for n, (host, host_facts, packages, pending_updates, first_seen) in enumerate(_fleet_hosts()):
        result = assess_host(
            host.name,
            host_facts,
            packages,
            index,
            pending_updates,
            first_seen,
            now=_FLEET_NOW,
            cache=cache,
        )
        lines.append(result.model_dump_json())
        by_host[host.name] = list(result.findings)
        for finding in result.findings:
            known = [enrichment[c] for c in finding.cves if c in enrichment]
            risk = prioritize(finding, known, host, policy, today=today, kev_feed_loaded=n % 4 != 0)
            lines.append(risk.model_dump_json())
            risks.append(risk)
    with Store(store_path) as store:
        for run_id in ("r1", "r2"):
            store.create_run(run_id, kind="scan", target="fleet", params={})
        hosts = list(by_host)
        store.replace_findings_bulk("r1", {h: by_host[h] for h in hosts[:20]})
        for h in hosts[20:]:
            store.replace_findings("r1", h, by_host[h])
        store.save_risk("r1", risks)
        # A later scan: some first-seen times earlier, some later, one host without findings.
        later = {
            h: [
                f.model_copy(update={"first_seen": f.first_seen + timedelta(days=j % 3 - 1)})
                for j, f in enumerate(by_host[h])
            ]
            for h in hosts
        }
        later[hosts[0]] = []
        store.replace_findings_bulk("r2", later)
        store.save_risk("r2", risks[::2])
        lines += [r.model_dump_json() for r in store.findings()]
    conn = sqlite3.connect(store_path)
    rows = [
        repr(row)
        for table, columns in (
            ("findings", "*"),
            ("finding_first_seen", "*"),
            ("risk", "*"),
            ("finding_sets", "run_id, host"),
        )
        for row in sorted(conn.execute(f"SELECT {columns} FROM {table}").fetchall())
    ]
    conn.close()
    return lines, rows


def _fleet_digest(store_path: Path) -> str:
    lines, rows = _fleet_run(store_path)
    return hashlib.sha256("\n".join([*lines, *rows]).encode()).hexdigest()


def test_fleet_outputs_match_the_straightforward_implementation(tmp_path: Path) -> None:
    assert _fleet_digest(tmp_path / "fleet.db") == _FLEET_GOLDEN


def test_fleet_findings_match_uncached_assessment(tmp_path: Path) -> None:
    index = _fleet_index()
    shared = VerdictCache()
    errors = kernels = merged = 0
    reachable: set[bool | None] = set()
    for host, host_facts, packages, pending_updates, first_seen in _fleet_hosts():
        args = (host.name, host_facts, packages, index, pending_updates, first_seen, _FLEET_NOW)
        cached = assess_host(*args, cache=shared)
        fresh = assess_host(*args, cache=VerdictCache())
        assert cached == fresh
        assert cached.model_dump_json() == fresh.model_dump_json()
        for finding in cached.findings:
            # what validation builds from the same fields
            assert Finding.model_validate(finding.model_dump()) == finding
            assert finding.model_fields_set == set(Finding.model_fields)
            reachable.add(finding.fix_reachable)
        errors += bool(cached.errors)
        kernels += cached.running_kernel is not None
        skewed = {p.source_version for p in packages if p.source_name == "openssl"}
        merged += len(skewed) > 1 and any(f.source_package == "openssl" for f in cached.findings)
    # the fleet exercises every path
    assert errors
    assert kernels
    assert merged
    assert reachable == {True, False, None}
    assert shared.hits > shared.misses


def test_fleet_risk_matches_unmemoised_prioritisation() -> None:
    from patchpilot.agents import prioritization
    from patchpilot.core.policy import load_policy

    policy = load_policy(Path(__file__).resolve().parents[2] / "configs" / "policy.yaml")
    index = _fleet_index()
    enrichment = _fleet_enrichment()
    today = datetime(2025, 3, 10, tzinfo=UTC).date()
    for host, host_facts, packages, pending_updates, first_seen in _fleet_hosts():
        result = assess_host(host.name, host_facts, packages, index, pending_updates, first_seen)
        for finding in result.findings:
            known = [enrichment[c] for c in finding.cves if c in enrichment]
            memoised = prioritization.prioritize(
                finding, known, host, policy, today=today, kev_feed_loaded=True
            )
            prioritization._PARTS.clear()
            prioritization._RISK_FACTORS.clear()
            fresh = prioritization.prioritize(
                finding, known, host, policy, today=today, kev_feed_loaded=True
            )
            assert memoised == fresh
            assert memoised.model_dump_json() == fresh.model_dump_json()
            assert memoised.model_fields_set == fresh.model_fields_set


def test_findings_from_pending_carry_changelog_cves_and_non_security_origins() -> None:
    installed = [pkg("libssl3", "3.0.1", "openssl"), pkg("acme-web", "1.0.0"), pkg("bash", "5.2")]
    updates = [
        pending("libssl3", "3.0.2", installed="3.0.1").model_copy(
            update={"cves": ("CVE-2026-0001", "CVE-2026-0002"), "cves_from": "changelog"}
        ),
        # a local repository's update whose changelog names a CVE is a finding too
        pending("acme-web", "1.2.0", installed="1.0.0", origin="localhost").model_copy(
            update={
                "security": False,
                "cves": ("CVE-2024-99901",),
                "cves_from": "changelog",
            }
        ),
        # a plain non-security update without CVEs is not
        pending("bash", "5.2-1", installed="5.2", origin="Debian:12.9/oldstable").model_copy(
            update={"security": False}
        ),
    ]
    by_source = {f.source_package: f for f in findings_from_pending("h1", installed, updates)}
    assert set(by_source) == {"openssl", "acme-web"}
    openssl = by_source["openssl"]
    assert openssl.cves == ("CVE-2026-0001", "CVE-2026-0002")
    assert openssl.advisory_id == "debian-security-update:openssl"
    assert [p.feed for p in openssl.provenance] == ["apt", "changelog"]
    acme = by_source["acme-web"]
    assert acme.advisory_id == "debian-update:acme-web"
    assert acme.advisory_id == pending_advisory_id(Ecosystem.DEBIAN, "acme-web", security=False)
    assert acme.cves == ("CVE-2024-99901",)
    assert acme.provenance[0].source == "localhost"
    assert acme.fix == FixState.fixed("1.2.0")
    assert acme.actionable
