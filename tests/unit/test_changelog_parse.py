"""patchpilot.tools.changelog.parse against real changelogs copied from a Debian 12 machine, plus
properties.

Fixtures (``tests/fixtures/changelog/*.gz``, byte for byte as shipped):

* ``openssl_3.0.19-1~deb12u2`` / ``libssl3``'s installed changelog and ``openssl_3.0.22-1~deb12u2``
  extracted from the candidate ``libssl3`` .deb downloaded from bookworm-security;
* ``expat_2.5.0-1+deb12u1`` (libexpat1), ``openssh_9.2p1-2+deb12u10`` (openssh-client, epoch 1),
  ``tzdata_2025b-0+deb12u2`` (no CVE at all), ``bash_5.2.15-2`` (installed binNMU 5.2.15-2+b8:
  the source changelog stops at the source version), ``apt_2.6.1`` (a native package's
  ``changelog.gz``).
"""

from __future__ import annotations

import gzip
import logging
import threading
from datetime import datetime, timedelta, timezone
from functools import cmp_to_key
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchpilot.core import versions
from patchpilot.core.errors import InvalidVersionError
from patchpilot.tools.changelog import (
    ChangelogEntry,
    ChangelogParseError,
    cves_between,
    extract_cves,
    parse_changelog,
    parse_changelog_with_source,
)
from patchpilot.tools.changelog.parse import count_between

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "changelog"


def load(name: str) -> list[ChangelogEntry]:
    return parse_changelog(gzip.decompress((FIXTURES / name).read_bytes()).decode("utf-8"))


OPENSSL_NEW = "openssl_3.0.22-1~deb12u2.changelog.Debian.gz"
OPENSSL_OLD = "openssl_3.0.19-1~deb12u2.changelog.Debian.gz"
EXPAT = "expat_2.5.0-1+deb12u1.changelog.Debian.gz"
OPENSSH = "openssh_9.2p1-2+deb12u10.changelog.Debian.gz"
TZDATA = "tzdata_2025b-0+deb12u2.changelog.Debian.gz"
BASH = "bash_5.2.15-2.changelog.Debian.gz"
APT = "apt_2.6.1.changelog.gz"

# The 21 CVEs of openssl 3.0.20-1~deb12u2, 3.0.22-1~deb12u1 and 3.0.22-1~deb12u2 (3.0.20-1~deb12u1
# is a point-release import with none), newest entry first, as read in the file.
OPENSSL_19_TO_22 = (
    "CVE-2026-84782",
    "CVE-2026-35189",
    "CVE-2026-54872",
    "CVE-2026-75805",
    "CVE-2026-75806",
    "CVE-2026-77696",
    "CVE-2026-42767",
    "CVE-2026-54874",
    "CVE-2026-63072",
    "CVE-2026-63074",
    "CVE-2026-63076",
    "CVE-2026-75803",
    "CVE-2026-7383",
    "CVE-2026-9076",
    "CVE-2026-34180",
    "CVE-2026-34182",
    "CVE-2026-42766",
    "CVE-2026-42770",
    "CVE-2026-45445",
    "CVE-2026-45446",
    "CVE-2026-45447",
)


# --------------------------------------------------------------------------- real changelogs


def test_openssl_candidate_changelog_entries() -> None:
    entries = load(OPENSSL_NEW)
    assert len(entries) == 55
    top = entries[0]
    assert top.version == "3.0.22-1~deb12u2"
    assert top.distributions == "bookworm-security"
    assert top.urgency == "high"
    assert top.date == datetime(2026, 10, 21, 16, 54, 24, tzinfo=timezone(timedelta(hours=7)))
    assert top.cves == OPENSSL_19_TO_22[:6]
    assert entries[-1].version == "1.1.1d-1"
    assert all(entry.date is not None for entry in entries)
    source, _ = parse_changelog_with_source(
        gzip.decompress((FIXTURES / OPENSSL_NEW).read_bytes()).decode()
    )
    assert source == "openssl"


def test_openssl_pending_security_update_range() -> None:
    entries = load(OPENSSL_NEW)
    assert cves_between(entries, "3.0.19-1~deb12u2", "3.0.22-1~deb12u2") == OPENSSL_19_TO_22
    assert count_between(entries, "3.0.19-1~deb12u2", "3.0.22-1~deb12u2") == 4
    # A narrower range: only the 3.0.22-1~deb12u1 upload.
    assert cves_between(entries, "3.0.20-1~deb12u2", "3.0.22-1~deb12u1") == OPENSSL_19_TO_22[6:12]


def test_installed_version_missing_from_changelog_still_uses_ordering() -> None:
    entries = load(OPENSSL_NEW)
    local_rebuild = "3.0.19-1~deb12u2+local1"
    assert all(entry.version != local_rebuild for entry in entries)
    assert cves_between(entries, local_rebuild, "3.0.22-1~deb12u2") == OPENSSL_19_TO_22
    # Older than the oldest entry: everything up to the candidate counts.
    everything = cves_between(entries, "0.9-1", "3.0.22-1~deb12u2")
    assert set(OPENSSL_19_TO_22) < set(everything)
    assert "CVE-2025-15467" in everything


def test_the_installed_changelog_has_nothing_newer_than_itself() -> None:
    entries = load(OPENSSL_OLD)
    assert entries[0].version == "3.0.19-1~deb12u2"
    assert cves_between(entries, "3.0.19-1~deb12u2", "3.0.19-1~deb12u2") == ()
    assert cves_between(entries, "3.0.19-1~deb12u1", "3.0.19-1~deb12u2") == (
        "CVE-2026-28387",
        "CVE-2026-28389",
        "CVE-2026-28390",
        "CVE-2026-31789",
        "CVE-2026-31790",
    )


def test_expat_ranges() -> None:
    entries = load(EXPAT)
    assert entries[0].version == "2.5.0-1+deb12u1"
    assert cves_between(entries, "2.5.0-1", "2.5.0-1+deb12u1") == (
        "CVE-2024-45490",
        "CVE-2024-45491",
        "CVE-2024-45492",
    )
    assert cves_between(entries, "2.4.8-2", "2.5.0-1") == ("CVE-2022-43680",)
    # Bounds are exclusive below, inclusive above.
    assert cves_between(entries, "2.4.8-1", "2.4.8-2") == ("CVE-2022-40674",)
    assert cves_between(entries, "2.4.8-2", "2.4.9-1") == ()


def test_openssh_epoch_versions() -> None:
    entries = load(OPENSSH)
    assert entries[0].version == "1:9.2p1-2+deb12u10"
    assert cves_between(entries, "1:9.2p1-2+deb12u8", "1:9.2p1-2+deb12u10") == (
        "CVE-2026-35386",
        "CVE-2026-35414",
        "CVE-2026-35385",
        "CVE-2026-35387",
        "CVE-2026-35388",
        "CVE-2026-3497",
    )
    # '[CVE-2023-48795]' in brackets is found too.
    assert cves_between(entries, "1:9.2p1-2+deb12u1", "1:9.2p1-2+deb12u2") == (
        "CVE-2023-28531",
        "CVE-2023-48795",
        "CVE-2023-51384",
        "CVE-2023-51385",
    )
    # Without the epoch every entry would be newer than 1:... ; with it none is.
    assert cves_between(entries, "1:9.2p1-2+deb12u10", "1:9.9-1") == ()


def test_tzdata_mentions_no_cve() -> None:
    entries = load(TZDATA)
    assert len(entries) == 45
    assert cves_between(entries, "2020a-1", "2025b-0+deb12u2") == ()


def test_binnmu_source_changelog_stops_at_the_source_version() -> None:
    entries = load(BASH)
    assert entries[0].version == "5.2.15-2"  # the installed binary is 5.2.15-2+b8
    assert cves_between(entries, "5.2.15-2", "5.2.15-2") == ()


def test_native_package_changelog() -> None:
    entries = load(APT)
    assert entries[0].version == "2.6.1"
    assert len(entries) == 68
    assert cves_between(entries, "2.1.12", "2.1.13") == ("CVE-2020-27350",)


# --------------------------------------------------------------------------- behaviour


def test_empty_or_garbage_text_is_a_parse_error() -> None:
    for text in ("", "   \n", "hello world\n", "not (a changelog)\n"):
        with pytest.raises(ChangelogParseError):
            parse_changelog(text)


def test_unparsable_lines_are_skipped_and_do_not_leak_to_the_console(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = (
        "foo (1.0-2) unstable; urgency=high\n\n"
        "  * Fix CVE-2024-0001.\n"
        "this line is not indented\n\n"
        " -- A B <a@b.c>  Mon, 01 Jan 2024 00:00:00 +0000\n\n"
        "foo (1.0-1) unstable; urgency=low\n\n"
        "  * cve-2023-12345 lower case\n\n"
        " -- A B <a@b.c>  Sun, 31 Dec 2023 00:00:00 +0000\n"
    )
    with caplog.at_level(logging.DEBUG, logger="debian.changelog"):
        entries = parse_changelog(text)
        assert not [r for r in caplog.records if r.name == "debian.changelog"]
        # Outside our parse the library's logger works as before.
        logging.getLogger("debian.changelog").warning("outside")
    assert [r.getMessage() for r in caplog.records if r.name == "debian.changelog"] == ["outside"]
    assert [e.version for e in entries] == ["1.0-2", "1.0-1"]
    assert entries[0].cves == ("CVE-2024-0001",)
    assert entries[1].cves == ("CVE-2023-12345",)


def test_entry_without_trailer_or_date() -> None:
    entries = parse_changelog("foo (2.0-1) unstable; urgency=medium\n\n  * CVE-2024-1234\n")
    assert entries == [
        ChangelogEntry(
            version="2.0-1",
            distributions="unstable",
            urgency="medium",
            date=None,
            cves=("CVE-2024-1234",),
        )
    ]


def test_entries_with_invalid_versions_are_skipped() -> None:
    entries = [
        ChangelogEntry(version="2.0-1", distributions="u", cves=("CVE-2024-0002",)),
        ChangelogEntry(version="garbage!", distributions="u", cves=("CVE-2024-9999",)),
        ChangelogEntry(version="1.5-1", distributions="u", cves=("CVE-2024-0001",)),
    ]
    assert cves_between(entries, "1.0-1", "2.0-1") == ("CVE-2024-0002", "CVE-2024-0001")


def test_invalid_bounds_raise() -> None:
    entries = load(EXPAT)
    with pytest.raises(InvalidVersionError):
        cves_between(entries, "not a version", "2.5.0-1")
    with pytest.raises(InvalidVersionError):
        cves_between(entries, "2.5.0-1", "")


def test_range_is_empty_when_installed_is_not_older() -> None:
    entries = load(EXPAT)
    assert cves_between(entries, "2.5.0-1+deb12u1", "2.4.1-1") == ()


def test_cve_extraction_rules() -> None:
    lines = [
        "  * CVE-2024-45490, cve-2024-45490 and Cve-2021-46143",
        "  * CVE-2026-7383 (4 digits), CVE-2024-1234567 (7 digits)",
        "  * not ids: CVE-24-1234, CVE-2024-123, CVE-٢٠٢٤-١٢٣٤",
    ]
    assert extract_cves(lines) == (
        "CVE-2024-45490",
        "CVE-2021-46143",
        "CVE-2026-7383",
        "CVE-2024-1234567",
    )


def test_parsing_in_threads_keeps_results_apart() -> None:
    texts = {
        name: gzip.decompress((FIXTURES / name).read_bytes()).decode()
        for name in (OPENSSL_NEW, EXPAT, OPENSSH, TZDATA)
    }
    expected = {name: parse_changelog(text) for name, text in texts.items()}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            for _ in range(5):
                assert parse_changelog(texts[name]) == expected[name]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in texts for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


# --------------------------------------------------------------------------- properties

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_changelogish_lines = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda name, version, dist, urgency: f"{name} ({version}) {dist}; urgency={urgency}",
        st.from_regex(r"[a-z0-9][a-z0-9.+-]{0,10}", fullmatch=True),
        st.text(alphabet="0123456789.:-~+abc", min_size=1, max_size=12),
        st.sampled_from(["unstable", "bookworm-security", "x y", ""]),
        st.text(alphabet="abcdefghilmnoruwy =", max_size=10),
    ),
    st.builds(lambda body: "  * " + body, st.text(max_size=60)),
    st.just(" -- A B <a@b.c>  Mon, 01 Jan 2024 00:00:00 +0000"),
    st.builds(lambda junk: f" -- {junk}", st.text(max_size=40)),
    st.sampled_from(["", " ", "\t", "# comment", "/* c */", "Local variables:", "vim: set x"]),
)


@PROPS
@given(st.one_of(st.text(), st.lists(_changelogish_lines, max_size=30).map("\n".join)))
def test_random_text_only_ever_raises_our_parse_error(text: str) -> None:
    try:
        entries = parse_changelog(text)
    except ChangelogParseError:
        return
    assert entries
    for entry in entries:
        assert entry.version
        for cve in entry.cves:
            assert cve == cve.upper()
            assert cve.startswith("CVE-")


_cve_ids = st.builds(
    lambda year, number: f"CVE-{year}-{number}",
    st.integers(1999, 2099),
    st.integers(0, 10**7 - 1).map(lambda n: str(n).zfill(4)),
)
# No 'c', no digits: filler can never form (or extend) a CVE id.
_filler = st.text(alphabet="abdefghijklmnopqrstuvwxyz ,.;:()[]!", max_size=30)


def _random_case(value: str, flips: list[bool]) -> str:
    padded = (flips + [False] * len(value))[: len(value)]
    return "".join(ch.lower() if flip else ch for ch, flip in zip(value, padded, strict=True))


@PROPS
@given(
    st.lists(
        st.lists(st.tuples(_cve_ids, _filler, st.lists(st.booleans(), max_size=3)), max_size=6),
        min_size=1,
        max_size=4,
    )
)
def test_cve_extraction_finds_exactly_the_inserted_ids(
    blocks: list[list[tuple[str, str, list[bool]]]],
) -> None:
    parts: list[str] = []
    for number, block in enumerate(blocks):
        version = f"1.{len(blocks) - number}-1"
        parts.append(f"pkg ({version}) unstable; urgency=low\n")
        for cve, filler, flips in block:
            parts.append(f"  * {filler} {_random_case(cve, flips)} {filler}\n")
        parts.append("  * nothing here\n")
        parts.append("\n -- A B <a@b.c>  Mon, 01 Jan 2024 00:00:00 +0000\n\n")
    entries = parse_changelog("".join(parts))
    assert len(entries) == len(blocks)
    for entry, block in zip(entries, blocks, strict=True):
        assert entry.cves == tuple(dict.fromkeys(cve for cve, _, _ in block))


_debian_versions = st.builds(
    lambda epoch, major, minor, tilde, revision: (
        (f"{epoch}:" if epoch else "") + f"{major}.{minor}{'~rc1' if tilde else ''}-{revision}"
    ),
    st.sampled_from([0, 0, 0, 1]),
    st.integers(0, 5),
    st.integers(0, 5),
    st.booleans(),
    st.integers(1, 3),
)


def _version_cmp(a: str, b: str) -> int:
    return versions.compare("debian", a, b)


@PROPS
@given(
    st.lists(st.tuples(_debian_versions, st.lists(_cve_ids, max_size=3)), min_size=1, max_size=12),
    st.lists(_debian_versions, min_size=4, max_size=4),
)
def test_cves_between_is_monotonic(
    changelog: list[tuple[str, list[str]]], bounds: list[str]
) -> None:
    entries = [
        ChangelogEntry(version=version, distributions="unstable", cves=tuple(cves))
        for version, cves in changelog
    ]
    low, mid_low, mid_high, high = sorted(bounds, key=cmp_to_key(_version_cmp))
    wide = set(cves_between(entries, low, high))
    narrow = set(cves_between(entries, mid_low, mid_high))
    assert narrow <= wide
    assert count_between(entries, mid_low, mid_high) <= count_between(entries, low, high)
    # And every entry counted lies in the range.
    for entry in entries:
        inside = _version_cmp(entry.version, low) > 0 and _version_cmp(entry.version, high) <= 0
        if inside:
            assert set(entry.cves) <= wide
