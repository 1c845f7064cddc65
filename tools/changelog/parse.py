"""Pure parsing of Debian changelogs: entries, the CVE ids they mention, and version ranges.

:func:`parse_changelog` reads a ``debian/changelog`` (as shipped in
``/usr/share/doc/<package>/changelog.Debian.gz``) with python-debian's lenient parser and returns
one :class:`ChangelogEntry` per block, newest first, each with the CVE ids its change lines
mention. :func:`cves_between` then answers the question Vuls' deep scan asks: which CVEs do the
entries after the installed version, up to the candidate version, mention?
:func:`urgency_between` gives the highest ``urgency=`` of the same entries (how urgently the
maintainers asked for the upload to reach users; Debian policy 5.6.17).

A CVE id in a changelog entry usually means the upload fixes it, but not always (a note may say
"not affected by" or "revert the fix for"); like Vuls, we report every id mentioned, so callers
should treat the result as "mentioned by the update", not as proof of a fix.

python-debian reports lines it cannot parse through stdlib :mod:`logging` (not
:mod:`warnings`); while this module parses, those records are captured per thread and logged once
at debug level through structlog, so they neither reach the console nor leak across threads.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Final

import structlog
from debian.changelog import Changelog
from pydantic import Field

from patchpilot.core import versions
from patchpilot.core.errors import InvalidVersionError
from patchpilot.core.models import ChangelogUrgency, Ecosystem, Record
from patchpilot.tools.changelog.errors import ChangelogParseError

__all__ = [
    "CVE_PATTERN",
    "ChangelogEntry",
    "count_between",
    "cves_between",
    "extract_cves",
    "parse_changelog",
    "parse_changelog_with_source",
    "parse_urgency",
    "urgency_between",
]

_log = structlog.get_logger(__name__)

CVE_PATTERN: Final = re.compile(r"CVE-[0-9]{4}-[0-9]{4,}", re.IGNORECASE | re.ASCII)
"""A CVE id as written in changelogs (any case; normalised to upper case when extracted)."""

_DEBIAN_CHANGELOG_LOGGER: Final = "debian.changelog"
_MAX_LOGGED_PROBLEMS: Final = 5


class ChangelogEntry(Record):
    """One block of a Debian changelog.

    Example (the header and trailer of the block)::

        openssl (3.0.22-1~deb12u1) bookworm-security; urgency=medium
         -- Sebastian Andrzej Siewior <sebastian@breakpoint.cc>  Sat, 24 Jan 2026 16:01:59 +0100
    """

    version: str = Field(description="the version exactly as written in the header")
    distributions: str = Field(description="e.g. 'bookworm-security' (space-separated if many)")
    urgency: str | None = Field(default=None, description="e.g. 'medium'; None when absent")
    date: datetime | None = Field(default=None, description="the trailer date; None if unparsable")
    cves: tuple[str, ...] = Field(
        default=(), description="CVE ids mentioned, upper case, deduplicated, in order of mention"
    )


class _CaptureProblems(logging.Filter):
    """Swallows python-debian's parse warnings while *this thread* is parsing, keeping the text.

    Installed once on the ``debian.changelog`` logger. Other threads, and this thread outside
    :func:`parse_changelog`, see the logger unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def start(self) -> list[str]:
        """Begin capturing in the calling thread; returns the list that receives messages."""
        sink: list[str] = []
        self._local.sink = sink
        return sink

    def stop(self) -> None:
        """Stop capturing in the calling thread."""
        self._local.sink = None

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep (and drop) the record when capturing in this thread; pass it through otherwise."""
        sink: list[str] | None = getattr(self._local, "sink", None)
        if sink is None:
            return True
        try:
            sink.append(record.getMessage())
        except Exception:  # a malformed record must not break parsing
            sink.append(str(record.msg))
        return False


_CAPTURE: Final = _CaptureProblems()
logging.getLogger(_DEBIAN_CHANGELOG_LOGGER).addFilter(_CAPTURE)


def extract_cves(lines: Iterable[str]) -> tuple[str, ...]:
    """Return the CVE ids mentioned in ``lines``: upper case, deduplicated, first mention first.

    Args:
        lines: text lines (e.g. one changelog entry's change lines).

    Returns:
        The ids, e.g. ``("CVE-2024-45490", "CVE-2024-45491")``.
    """
    found: dict[str, None] = {}
    for line in lines:
        for match in CVE_PATTERN.finditer(line):
            found.setdefault(match.group(0).upper(), None)
    return tuple(found)


def _parse_date(raw: str | None) -> datetime | None:
    """Parse an RFC 2822 trailer date; ``None`` when absent or malformed."""
    if not raw:
        return None
    try:
        return parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_changelog_with_source(text: str) -> tuple[str | None, list[ChangelogEntry]]:
    """Parse a Debian changelog and also return the source package named by its newest entry.

    Args:
        text: the whole changelog, decoded.

    Returns:
        ``(source package or None, entries newest first)``.

    Raises:
        ChangelogParseError: the text is not a string, or holds no entry with a version.
    """
    if not isinstance(text, str):
        raise ChangelogParseError(f"expected changelog text, got {type(text).__name__}")
    if not text.strip():
        raise ChangelogParseError("the changelog is empty")
    problems = _CAPTURE.start()
    try:
        changelog = Changelog(text, strict=False)
        blocks = list(changelog)
    except Exception as exc:  # python-debian raises assorted errors on odd input
        raise ChangelogParseError(f"python-debian could not parse the changelog: {exc}") from exc
    finally:
        _CAPTURE.stop()
    entries: list[ChangelogEntry] = []
    source: str | None = None
    for block in blocks:
        raw_version: str | None = block._raw_version
        if not raw_version:
            continue  # text before the first header, or a block python-debian could not head
        if source is None and block.package:
            source = str(block.package)
        changes: list[str] = list(block.changes() or ())
        entries.append(
            ChangelogEntry(
                version=raw_version,
                distributions=str(block.distributions or "").strip(),
                urgency=str(block.urgency) if block.urgency else None,
                date=_parse_date(block.date),
                cves=extract_cves(changes),
            )
        )
    if problems:
        _log.debug(
            "changelog.parse.problems",
            count=len(problems),
            first=problems[:_MAX_LOGGED_PROBLEMS],
        )
    if not entries:
        first = f" (first problem: {problems[0][:200]})" if problems else ""
        raise ChangelogParseError(f"no changelog entry found{first}")
    return source, entries


def parse_changelog(text: str) -> list[ChangelogEntry]:
    """Parse a Debian changelog into its entries, newest first.

    Lines python-debian cannot place are skipped (logged at debug); an entry's CVEs are the
    ``CVE-YYYY-NNNN…`` ids its change lines mention (any case, normalised to upper case,
    deduplicated in order).

    Args:
        text: the whole changelog, decoded (e.g. ``gzip.decompress(data).decode()``).

    Returns:
        The entries, in file order (newest first for a well-formed changelog).

    Raises:
        ChangelogParseError: the text holds no entry with a version (empty, or not a changelog).
    """
    return parse_changelog_with_source(text)[1]


def parse_urgency(value: str | None) -> ChangelogUrgency | None:
    """The urgency keyword of an ``urgency=`` value, or None when absent or not a known one.

    Debian policy 5.6.17: a single keyword (``low``, ``medium``, ``high``, ``emergency`` or
    ``critical``, not case-sensitive), optionally followed by a space and a comment, usually in
    parentheses.

    >>> parse_urgency("HIGH (security fixes)")
    <ChangelogUrgency.HIGH: 'high'>
    >>> parse_urgency("whenever") is None
    True
    """
    if not value:
        return None
    keyword = value.strip().split(" ", 1)[0].lower()
    try:
        return ChangelogUrgency(keyword)
    except ValueError:
        return None


def urgency_between(
    entries: Sequence[ChangelogEntry],
    installed_source_version: str,
    candidate_source_version: str,
) -> ChangelogUrgency | None:
    """The highest urgency of the entries with ``installed < version <= candidate``.

    Same range rules as :func:`cves_between`; entries without a known urgency keyword are
    skipped, so the result is None when no entry in range states one.

    Raises:
        InvalidVersionError: either bound is not a valid Debian version.
    """
    versions.validate(Ecosystem.DEBIAN, installed_source_version)
    versions.validate(Ecosystem.DEBIAN, candidate_source_version)
    found = [
        u
        for entry in _entries_between(entries, installed_source_version, candidate_source_version)
        if (u := parse_urgency(entry.urgency)) is not None
    ]
    return max(found, key=lambda u: u.rank, default=None)


def _valid(version: str) -> bool:
    return versions.is_valid(Ecosystem.DEBIAN, version)


def cves_between(
    entries: Sequence[ChangelogEntry],
    installed_source_version: str,
    candidate_source_version: str,
) -> tuple[str, ...]:
    """Return the CVEs of the entries with ``installed < version <= candidate`` (dpkg ordering).

    The range is decided by version ordering alone, so it also works when the installed version
    is not in the changelog (a local rebuild, a trimmed changelog). Entries whose version dpkg
    would not accept are skipped (logged at debug).

    Args:
        entries: the changelog's entries (any order).
        installed_source_version: the installed *source* version (exclusive lower bound).
        candidate_source_version: the candidate *source* version (inclusive upper bound).

    Returns:
        The CVE ids, deduplicated, in changelog order (newest entry first).

    Raises:
        InvalidVersionError: either bound is not a valid Debian version.
    """
    versions.validate(Ecosystem.DEBIAN, installed_source_version)
    versions.validate(Ecosystem.DEBIAN, candidate_source_version)
    found: dict[str, None] = {}
    for entry in _entries_between(entries, installed_source_version, candidate_source_version):
        for cve in entry.cves:
            found.setdefault(cve, None)
    return tuple(found)


def _entries_between(
    entries: Sequence[ChangelogEntry], installed: str, candidate: str
) -> list[ChangelogEntry]:
    """The entries with ``installed < version <= candidate``; bounds must be valid."""
    selected: list[ChangelogEntry] = []
    for entry in entries:
        if not _valid(entry.version):
            _log.debug("changelog.entry_skipped", version=entry.version, reason="invalid version")
            continue
        try:
            newer = versions.compare(Ecosystem.DEBIAN, entry.version, installed) > 0
            not_beyond = versions.compare(Ecosystem.DEBIAN, entry.version, candidate) <= 0
        except InvalidVersionError:  # pragma: no cover - _valid() checked the same rule
            continue
        if newer and not_beyond:
            selected.append(entry)
    return selected


def count_between(
    entries: Sequence[ChangelogEntry],
    installed_source_version: str,
    candidate_source_version: str,
) -> int:
    """How many entries lie in ``(installed, candidate]``; same rules as :func:`cves_between`."""
    versions.validate(Ecosystem.DEBIAN, installed_source_version)
    versions.validate(Ecosystem.DEBIAN, candidate_source_version)
    return len(_entries_between(entries, installed_source_version, candidate_source_version))
