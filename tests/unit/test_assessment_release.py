"""Per-release matching: a fix listed for one Debian release never decides another's package.

Advisories come from the real DSA list and tracker JSON excerpt under ``../shared`` (read in
place) through patchpilot's own parsers, plus one small synthetic DSA entry in the list's format
with ``[trixie]`` and ``[bookworm]`` lines (the shared list is from February 2025, before
trixie's release: it has no trixie line). Hosts are hermetic: their facts come from real
``/etc/os-release`` texts (Debian 11, 12 and 13, as the lab's bases have them) through the
:class:`~patchpilot.tools.facts.OsRelease` parser, the release key assessment scopes by.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from patchpilot.agents.assessment import AssessmentResult, VerdictCache, assess_host
from patchpilot.core import versions
from patchpilot.core.feeds import FeedBatch, FeedKind
from patchpilot.core.models import (
    Advisory,
    CommandResult,
    Ecosystem,
    FixStatus,
    HostFacts,
    InstalledPackage,
)
from patchpilot.core.store import Store
from patchpilot.tools.facts import OsRelease
from patchpilot.tools.feeds import parse_feed
from patchpilot.tools.feeds.debian import parse_dsa

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

# /etc/os-release of the lab's trixie base (debootstrap trixie, Debian 13.8).
TRIXIE_OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 13 (trixie)"
NAME="Debian GNU/Linux"
VERSION_ID="13"
VERSION="13 (trixie)"
VERSION_CODENAME=trixie
DEBIAN_VERSION_FULL=13.8
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"""
BOOKWORM_OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"""
BULLSEYE_OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"
NAME="Debian GNU/Linux"
VERSION_ID="11"
VERSION="11 (bullseye)"
VERSION_CODENAME=bullseye
ID=debian
"""
# No VERSION_ID, no VERSION_CODENAME: the release cannot be told.
UNKNOWN_OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux"\nNAME="Debian GNU/Linux"\nID=debian\n'

# Synthetic (ids 9xxx are not real DSAs), in the real list's format: one fix per release.
# The trixie fix (1.21.3-5+deb13u2) is the real pending trixie-security krb5 of the lab's
# trixie base; the bookworm one is lower in dpkg order than *every* trixie version.
SYNTHETIC_DSA = """\
[10 Nov 2026] DSA-9001-1 krb5 - security update
\t{CVE-2026-90001}
\t[trixie] - krb5 1.21.3-5+deb13u2
\t[bookworm] - krb5 1.20.1-2+deb12u4
[12 Nov 2026] DSA-9002-1 foo - security update
\t{CVE-2026-90002}
\t[bookworm] - foo 2.0-1+deb12u1
\t[trixie] - foo <not-affected> (Vulnerable code not present)
"""


def host_facts(os_release: str, name: str = "h1") -> HostFacts:
    """Facts of a hermetic host: its os-release parsed by the real fact parser."""
    os_info = OsRelease().parse(
        CommandResult(
            host=name, argv=("sh", "-c", "cat"), exit_code=0, stdout=os_release, stderr=""
        )
    )
    return HostFacts(
        host=name,
        os=os_info,
        kernel="6.12.48+deb13-amd64",
        reboot_required=False,
        package_count=0,
        source_package_count=0,
        ecosystem=Ecosystem.DEBIAN,
    )


def pkg(name: str, version: str, source: str | None = None) -> InstalledPackage:
    return InstalledPackage(
        name=name,
        version=version,
        arch="amd64",
        source_name=source or name,
        source_version=version,
        ecosystem=Ecosystem.DEBIAN,
    )


def index_of(advisories: Sequence[Advisory]) -> dict[str, list[Advisory]]:
    """Advisories by source package, every release mixed (not pre-scoped on purpose)."""
    index: dict[str, list[Advisory]] = {}
    for advisory in advisories:
        index.setdefault(advisory.source_package, []).append(advisory)
    return index


def assess(
    facts: HostFacts,
    packages: Sequence[InstalledPackage],
    advisories: Sequence[Advisory],
    cache: VerdictCache | None = None,
) -> AssessmentResult:
    return assess_host(
        facts.host, facts, packages, index_of(advisories), now=NOW, cache=cache or VerdictCache()
    )


@pytest.fixture(scope="module")
def dsa_batch(shared_dir: Path) -> FeedBatch:
    return parse_feed(
        FeedKind.DEBIAN_DSA, shared_dir / "feeds/debian/DSA_list_2025-02-13.txt", fetched_at=NOW
    )


@pytest.fixture(scope="module")
def synthetic() -> list[Advisory]:
    batch = parse_dsa(SYNTHETIC_DSA.encode(), source="synthetic", fetched_at=NOW)
    return list(batch.advisories)


def real(batch: FeedBatch, advisory_id: str) -> list[Advisory]:
    """Every release line of one real advisory, as patchpilot's parser gives them."""
    found = [a for a in batch.advisories if a.id == advisory_id]
    assert found, advisory_id
    return found


# --------------------------------------------------------------------------- os-release


def test_release_keys_come_from_os_release() -> None:
    assert host_facts(TRIXIE_OS_RELEASE).os.release == "trixie"
    assert host_facts(BOOKWORM_OS_RELEASE).os.release == "bookworm"
    assert host_facts(UNKNOWN_OS_RELEASE).os.release is None


# --------------------------------------------------------------------------- bookworm -> trixie


def test_a_bookworm_fix_never_decides_a_trixie_package(dsa_batch: FeedBatch) -> None:
    (openssh,) = real(dsa_batch, "DSA-5724-1")  # regreSSHion: a [bookworm] line only
    assert (openssh.release, openssh.fix.version) == ("bookworm", "1:9.2p1-2+deb12u3")
    # The same installed version, below the bookworm fix, on a host of each release.
    server = pkg("openssh-server", "1:9.2p1-2", "openssh")

    on_bookworm = assess(host_facts(BOOKWORM_OS_RELEASE), [server], [openssh])
    (finding,) = on_bookworm.findings
    assert (finding.advisory_id, finding.cves) == ("DSA-5724-1", ("CVE-2024-6387",))
    assert finding.fix.version == "1:9.2p1-2+deb12u3"

    on_trixie = assess(host_facts(TRIXIE_OS_RELEASE), [server], [openssh])
    assert on_trixie.findings == ()
    assert on_trixie.errors == ()
    assert on_trixie.counters.out_of_scope == 1
    assert on_trixie.counters.advisories_considered == 0


def test_a_release_without_an_entry_gets_no_verdict(shared_dir: Path) -> None:
    """The tracker export lists the releases that ship the package (here bullseye and sid)."""
    batch = parse_feed(
        FeedKind.DEBIAN_JSON,
        shared_dir / "feeds/debian/tracker-json-export-excerpt.json",
        fetched_at=NOW,
    )
    ds389 = [a for a in batch.advisories if a.source_package == "389-ds-base"]
    assert {a.release for a in ds389} == {"bullseye", "sid"}
    server = pkg("389-ds", "1.4.4.11-2", "389-ds-base")

    on_trixie = assess(host_facts(TRIXIE_OS_RELEASE), [server], ds389)
    assert on_trixie.findings == ()
    assert on_trixie.errors == ()
    assert on_trixie.counters.out_of_scope == len(ds389)

    # bullseye has its own entries: each decides by its own state.
    on_bullseye = assess(host_facts(BULLSEYE_OS_RELEASE), [server], ds389)
    assert {f.advisory_id: f.fix.status for f in on_bullseye.findings} == {
        "CVE-2016-5416": FixStatus.WILL_NOT_FIX  # open, nodsa_reason ignored
    }
    assert on_bullseye.counters.already_fixed == 1  # CVE-2016-5405, fixed in 1.3.5.15-1
    assert on_bullseye.counters.not_affected == 1  # CVE-2012-0833, fixed_version 0
    assert on_bullseye.counters.out_of_scope == 3  # the sid entries


# --------------------------------------------------------------------------- trixie -> bookworm


def test_each_release_is_decided_by_its_own_line(synthetic: list[Advisory]) -> None:
    krb5 = [a for a in synthetic if a.source_package == "krb5"]
    assert {a.release: a.fix.version for a in krb5} == {
        "trixie": "1.21.3-5+deb13u2",
        "bookworm": "1.20.1-2+deb12u4",
    }
    trixie, bookworm = host_facts(TRIXIE_OS_RELEASE), host_facts(BOOKWORM_OS_RELEASE)
    # trixie's own build, above the bookworm fix in dpkg order: the bookworm line would call it
    # fixed; trixie's line says it is not.
    installed_trixie = "1.21.3-5+deb13u1"
    assert versions.compare(Ecosystem.DEBIAN, installed_trixie, "1.20.1-2+deb12u4") > 0
    result = assess(trixie, [pkg("libkrb5-3", installed_trixie, "krb5")], krb5)
    (finding,) = result.findings
    assert finding.fix.version == "1.21.3-5+deb13u2"
    assert result.counters.out_of_scope == 1
    assert result.counters.already_fixed == 0

    # bookworm's fixed build, below the trixie fix: the trixie line would call it affected.
    fixed_bookworm = "1.20.1-2+deb12u4"
    assert versions.compare(Ecosystem.DEBIAN, fixed_bookworm, "1.21.3-5+deb13u2") < 0
    result = assess(bookworm, [pkg("libkrb5-3", fixed_bookworm, "krb5")], krb5)
    assert result.findings == ()
    assert (result.counters.already_fixed, result.counters.out_of_scope) == (1, 1)

    result = assess(bookworm, [pkg("libkrb5-3", "1.20.1-2+deb12u3", "krb5")], krb5)
    (finding,) = result.findings
    assert finding.fix.version == "1.20.1-2+deb12u4"


def test_a_release_marked_not_affected_stays_so(synthetic: list[Advisory]) -> None:
    foo = [a for a in synthetic if a.source_package == "foo"]
    old = pkg("foo", "1.0-1")
    on_trixie = assess(host_facts(TRIXIE_OS_RELEASE), [old], foo)
    assert on_trixie.findings == ()
    assert on_trixie.counters.not_affected == 1
    on_bookworm = assess(host_facts(BOOKWORM_OS_RELEASE), [old], foo)
    assert [f.advisory_id for f in on_bookworm.findings] == ["DSA-9002-1"]


def test_real_bullseye_and_bookworm_lines_stay_apart(dsa_batch: FeedBatch) -> None:
    thunderbird = real(dsa_batch, "DSA-5744-1")
    fixes = {a.release: a.fix.version for a in thunderbird}
    assert fixes == {"bullseye": "1:115.14.0-1~deb11u1", "bookworm": "1:115.14.0-1~deb12u1"}
    # bullseye's fixed build sorts below bookworm's fix: only its own line may decide it.
    installed = pkg("thunderbird", fixes["bullseye"])
    assert versions.compare(Ecosystem.DEBIAN, fixes["bullseye"], fixes["bookworm"]) < 0
    result = assess(host_facts(BULLSEYE_OS_RELEASE), [installed], thunderbird)
    assert result.findings == ()
    assert (result.counters.already_fixed, result.counters.out_of_scope) == (1, 1)


def test_one_verdict_cache_for_a_mixed_fleet_keeps_releases_apart(
    synthetic: list[Advisory],
) -> None:
    """The same source at the same version on both releases: two verdicts, not one reused."""
    shared = VerdictCache()
    same = [pkg("libkrb5-3", "1.20.1-2+deb12u4", "krb5")]
    bookworm = assess(host_facts(BOOKWORM_OS_RELEASE, "b"), same, synthetic, shared)
    trixie = assess(host_facts(TRIXIE_OS_RELEASE, "t"), same, synthetic, shared)
    assert bookworm.findings == ()
    assert [(f.host, f.fix.version) for f in trixie.findings] == [("t", "1.21.3-5+deb13u2")]


# --------------------------------------------------------------------------- unknown release


def test_a_host_of_unknown_release_is_an_error_never_a_pass(dsa_batch: FeedBatch) -> None:
    (openssh,) = real(dsa_batch, "DSA-5724-1")
    unknown = host_facts(UNKNOWN_OS_RELEASE)
    result = assess(unknown, [pkg("openssh-server", "1:9.2p1-2", "openssh")], [openssh])
    assert result.findings == ()
    ((source, reason),) = result.errors
    assert source == "openssh"
    assert "DSA-5724-1" in reason
    assert "release is unknown" in reason
    assert result.counters.out_of_scope == 0


# --------------------------------------------------------------------------- the store's index


def test_the_store_index_of_a_release_holds_only_that_release(
    tmp_path: Path, dsa_batch: FeedBatch
) -> None:
    """As the scan graph does: each host is matched against its own release's index."""
    synthetic_batch = parse_dsa(SYNTHETIC_DSA.encode(), source="synthetic", fetched_at=NOW)
    with Store(tmp_path / "patchpilot.db") as store:
        store.import_batch(dsa_batch)
        store.import_batch(synthetic_batch)
        by_release = {r: store.advisory_index(Ecosystem.DEBIAN, r) for r in ("bookworm", "trixie")}
    assert {a.release for items in by_release["trixie"].values() for a in items} == {"trixie"}
    assert {a.release for items in by_release["bookworm"].values() for a in items} == {"bookworm"}
    assert [a.id for a in by_release["trixie"]["krb5"]] == ["DSA-9001-1"]
    assert "openssh" not in by_release["trixie"]  # the shared list has no trixie line
    packages = [
        pkg("openssh-server", "1:9.2p1-2", "openssh"),
        pkg("libkrb5-3", "1.21.3-5+deb13u1", "krb5"),
    ]
    cache = VerdictCache()
    results = {}
    for release, text in (("bookworm", BOOKWORM_OS_RELEASE), ("trixie", TRIXIE_OS_RELEASE)):
        facts = host_facts(text, release)
        index = by_release[facts.os.release or ""]
        results[release] = assess_host(release, facts, packages, index, now=NOW, cache=cache)
    assert {(f.advisory_id, f.fix.version) for f in results["trixie"].findings} == {
        ("DSA-9001-1", "1.21.3-5+deb13u2")
    }
    bookworm_ids = {f.advisory_id for f in results["bookworm"].findings}
    assert "DSA-5724-1" in bookworm_ids
    assert "DSA-9001-1" not in bookworm_ids  # 1.21.3-5+deb13u1 >= the bookworm fix
