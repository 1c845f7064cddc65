"""The changelog's ``urgency=`` of a pending update: parsed per Debian policy 5.6.17, the
highest of the entries between the installed and the candidate version, kept on the update."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchpilot.core.errors import InvalidVersionError
from patchpilot.core.models import ChangelogUrgency, Ecosystem, InstalledPackage, PendingUpdate
from patchpilot.tools.changelog import (
    ChangelogFetcher,
    parse_changelog,
    parse_urgency,
    urgency_between,
)
from tests.fakes import FakeDebianHost


def changelog(source: str, *entries: tuple[str, str, str]) -> str:
    """A changelog, newest entry first: (version, urgency= value, change line)."""
    return "".join(
        f"{source} ({version}) bookworm-security; urgency={urgency}\n\n"
        f"  * {change}\n\n"
        f" -- Maintainer <m@example.org>  Mon, 0{i + 1} Jan 2024 00:00:00 +0000\n\n"
        for i, (version, urgency, change) in enumerate(entries)
    )


OPENSSL = changelog(
    "openssl",
    ("3.0.4-1", "medium", "Fix CVE-2024-0004."),
    ("3.0.3-1", "HIGH (remote code execution)", "Fix CVE-2024-0003, CVE-2024-0002."),
    ("3.0.2-1", "low", "Fix CVE-2024-0001."),
    ("3.0.1-1", "emergency", "Fix CVE-2023-0001."),
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("low", ChangelogUrgency.LOW),
        ("Medium", ChangelogUrgency.MEDIUM),
        ("HIGH (security fixes)", ChangelogUrgency.HIGH),
        ("emergency", ChangelogUrgency.EMERGENCY),
        ("critical", ChangelogUrgency.CRITICAL),
        (" critical ", ChangelogUrgency.CRITICAL),
        ("whenever", None),
        ("", None),
        (None, None),
    ],
)
def test_urgency_keywords(raw: str | None, expected: ChangelogUrgency | None) -> None:
    assert parse_urgency(raw) is expected


def test_the_highest_urgency_between_installed_and_candidate_counts() -> None:
    entries = parse_changelog(OPENSSL)
    # (3.0.1-1, 3.0.4-1]: medium, high, low -> high; the older emergency is already installed
    assert urgency_between(entries, "3.0.1-1", "3.0.4-1") is ChangelogUrgency.HIGH
    assert urgency_between(entries, "3.0.3-1", "3.0.4-1") is ChangelogUrgency.MEDIUM
    assert urgency_between(entries, "3.0.0-1", "3.0.4-1") is ChangelogUrgency.EMERGENCY
    assert urgency_between(entries, "3.0.4-1", "3.0.4-1") is None  # nothing in range
    with pytest.raises(InvalidVersionError):
        urgency_between(entries, "not a version!", "3.0.4-1")


def test_urgency_is_ordered_low_to_critical() -> None:
    assert [u.rank for u in ChangelogUrgency] == [0, 1, 2, 3, 4]
    assert max(ChangelogUrgency, key=lambda u: u.rank) is ChangelogUrgency.CRITICAL


def test_pending_updates_carry_the_changelog_urgency(tmp_path: Path) -> None:
    host = FakeDebianHost(
        "web-1",
        {"libssl3": "3.0.1-1"},
        {"libssl3": ["3.0.1-1", "3.0.4-1"]},
        changelogs={"libssl3": OPENSSL},
    )
    installed = [
        InstalledPackage(
            name="libssl3",
            version="3.0.1-1",
            arch="amd64",
            source_name="openssl",
            source_version="3.0.1-1",
            ecosystem=Ecosystem.DEBIAN,
        )
    ]
    update = PendingUpdate(
        name="libssl3",
        arch="amd64",
        installed_version="3.0.1-1",
        candidate_version="3.0.4-1",
        security=True,
    )
    assert update.urgency is None  # not read yet
    fetcher = ChangelogFetcher(tmp_path)
    found, warnings = fetcher.cves_for_many(host.transport(), [update], installed)
    assert warnings == []
    assert found[0].urgency is ChangelogUrgency.HIGH
    assert found[0].cves == ("CVE-2024-0004", "CVE-2024-0003", "CVE-2024-0002", "CVE-2024-0001")
    # the cached changelog gives the same urgency without a second fetch
    again, _ = fetcher.cves_for_many(host.transport(), [update], installed)
    assert again[0].urgency is ChangelogUrgency.HIGH
    assert fetcher.remote_fetches == 1
    # and it survives a JSON round trip (the store keeps pending updates as JSON)
    assert PendingUpdate.model_validate_json(found[0].model_dump_json()) == found[0]
    old = update.model_dump(mode="json")
    old.pop("urgency")
    assert PendingUpdate.model_validate(old).urgency is None  # older documents still load
