"""Debian security tracker feeds: the DSA and DLA lists and the tracker's JSON export.

**DSA / DLA lists** (``data/DSA/list``, ``data/DLA/list`` of the security-tracker repository)::

    [12 Feb 2025] DSA-5865-1 webkit2gtk - security update
        {CVE-2025-24143 CVE-2025-24150}
        [bookworm] - webkit2gtk 2.46.6-1~deb12u1
        [bullseye] - webkit2gtk <not-affected> (Vulnerable code not present)
        NOTE: fixed in testing at time of DSA

give one :class:`~patchpilot.core.models.Advisory` per (advisory id, release, source package). The
version (or ``<tag>``) on a release line decides the fix state; the lists carry no urgency, so
severity stays ``unknown``. A malformed version is a :class:`FeedError` naming the line, except
for the few historic typos listed in :data:`KNOWN_ERRATA`, which become an explicit
``no-fix-yet`` state recording the unreadable value (never a silent drop).

**Tracker JSON export** (``https://security-tracker.debian.org/tracker/data/json``)::

    {src_pkg: {CVE: {description, releases: {codename: {status, fixed_version, urgency,
                                                         nodsa, nodsa_reason, repositories}}}}}

gives one advisory per (CVE, release, source package).

**Bounded memory.** Both are streamed, never read whole: the lists line by line, the export one
source package at a time (``ijson``). A document with more than
:data:`~patchpilot.tools.feeds._stream.KEEP_IN_MEMORY` advisories is validated in a first pass and
its
advisories are parsed again, one at a time, while the store imports them (see
:func:`patchpilot.tools.feeds._stream.gather`). An empty list (no advisory header at all) is
refused: it
is a failed download, not a list without advisories.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import structlog

from patchpilot.core import versions
from patchpilot.core.errors import FeedError, InvalidVersionError
from patchpilot.core.feeds import FeedBatch, FeedKind, RecordStream
from patchpilot.core.models import (
    Advisory,
    Ecosystem,
    FixState,
    FixStatus,
    Provenance,
    Severity,
)
from patchpilot.tools.feeds._common import DEFAULT_MAX_BYTES, clean_text
from patchpilot.tools.feeds._stream import (
    Document,
    PassInfo,
    gather,
    iter_lines,
    json_kvitems,
    reading,
    wrong_json_start,
)

__all__ = [
    "DLA_LIST_URL",
    "DSA_LIST_URL",
    "KNOWN_ERRATA",
    "TRACKER_JSON_URL",
    "parse_dla",
    "parse_dsa",
    "parse_list",
    "parse_tracker_json",
]

_log = structlog.get_logger(__name__)

DSA_LIST_URL: Final = (
    "https://salsa.debian.org/security-tracker-team/security-tracker/-/raw/master/data/DSA/list"
)
DLA_LIST_URL: Final = (
    "https://salsa.debian.org/security-tracker-team/security-tracker/-/raw/master/data/DLA/list"
)
TRACKER_JSON_URL: Final = "https://security-tracker.debian.org/tracker/data/json"

_PREFIX: Final[Mapping[FeedKind, str]] = {FeedKind.DEBIAN_DSA: "DSA", FeedKind.DEBIAN_DLA: "DLA"}

_MONTHS: Final[Mapping[str, int]] = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}

_HEADER_RE: Final = re.compile(r"^\[(?P<date>[^\]]*)\]\s*(?P<id>\S+)\s*(?P<rest>.*?)\s*$")
_ID_RE: Final = re.compile(r"^(?P<prefix>[A-Z]+)-\d+(?:-\d+)?$")
_DATE_RE: Final = re.compile(r"^(?P<day>\d{1,2}) (?P<month>[A-Z][a-z]{2}) (?P<year>\d{4})$")
_IDS_RE: Final = re.compile(r"^\s+\{(?P<ids>[^{}]*)\}\s*$")
_ALIAS_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9._:-]*$")
_RELEASE_RE: Final = re.compile(
    r"^\s+\[(?P<release>[^\]\s]*)\]\s+-\s+(?P<package>\S+)"
    r"(?:\s+(?P<state>[^\s(]+))?(?:\s+\((?P<note>.*)\))?\s*$"
)
_CODENAME_RE: Final = re.compile(r"^[a-z][a-z0-9-]*$")
_RECORD_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
_PACKAGE_RE: Final = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_NOTE_RE: Final = re.compile(r"^\s+(?:NOTE|TODO):")
_NOTE_MAX_CHARS: Final = 200

_TAG_STATES: Final[Mapping[str, FixStatus]] = {
    "not-affected": FixStatus.NOT_AFFECTED,
    "unfixed": FixStatus.NO_FIX_YET,
    "undetermined": FixStatus.NO_FIX_YET,
    "end-of-life": FixStatus.END_OF_LIFE,
    # The release stops being updated for the package: assume affected, like end-of-life.
    "removed": FixStatus.END_OF_LIFE,
    "no-dsa": FixStatus.DEFERRED,
    "postponed": FixStatus.DEFERRED,
    "ignored": FixStatus.WILL_NOT_FIX,
    "unimportant": FixStatus.UNIMPORTANT,
}

KNOWN_ERRATA: Final[Mapping[tuple[str, str, str, str], str]] = {
    # The 2004 entry repeats the package name where the fixed version belongs.
    ("DSA-423", "woody", "kernel-image-2.4.17-ia64", "kernel-image-2.4.17-ia64"): (
        "package name given instead of the fixed version"
    ),
}
"""Historic release lines whose "version" is known to be unreadable in the published list.

Keyed by (advisory id, release, source package, raw value). Such a line becomes a
``no-fix-yet`` state whose ``vendor_state`` records the raw value, so a host on that release is
still reported as affected; any other malformed version fails the import.
"""


# --------------------------------------------------------------------------- DSA / DLA lists


@dataclass(slots=True)
class _Entry:
    advisory_id: str
    line: int
    published: datetime
    summary: str | None
    aliases: list[str] = field(default_factory=list)
    keys: set[tuple[str, str]] = field(default_factory=set)


def parse_dsa(
    data: bytes | Path | Document,
    *,
    source: str,
    fetched_at: datetime,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FeedBatch:
    """Parse the Debian Security Advisory list (``data/DSA/list``): :func:`parse_list`."""
    return parse_list(
        data, kind=FeedKind.DEBIAN_DSA, source=source, fetched_at=fetched_at, max_bytes=max_bytes
    )


def parse_dla(
    data: bytes | Path | Document,
    *,
    source: str,
    fetched_at: datetime,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FeedBatch:
    """Parse the Debian LTS Advisory list (``data/DLA/list``): :func:`parse_list`."""
    return parse_list(
        data, kind=FeedKind.DEBIAN_DLA, source=source, fetched_at=fetched_at, max_bytes=max_bytes
    )


def parse_list(
    data: bytes | Path | Document,
    *,
    kind: FeedKind,
    source: str,
    fetched_at: datetime,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FeedBatch:
    """Parse a DSA or DLA list, line by line.

    Args:
        data: The raw list (UTF-8), or the file holding it (streamed).
        kind: ``FeedKind.DEBIAN_DSA`` or ``FeedKind.DEBIAN_DLA``; advisory ids must match it.
        source: URL or file path it was read from.
        fetched_at: When it was downloaded or imported.
        max_bytes: Largest document accepted.

    Returns:
        The batch; ``published_at`` is the newest advisory date.

    Raises:
        FeedError: On any line that does not parse (malformed header, date, version, unknown
            ``<tag>``, stray line, invalid UTF-8), naming the line number; on a list with no
            advisory header at all (an empty file), naming the file.
    """
    prefix = _PREFIX.get(kind)
    if prefix is None:
        raise FeedError(f"{kind} is not a DSA/DLA list kind", source=source)
    document = Document.of(data, source)

    def one_pass(info: PassInfo) -> Iterator[Advisory]:
        return _list_pass(
            document, info, kind=kind, prefix=prefix, fetched_at=fetched_at, max_bytes=max_bytes
        )

    advisories, info = gather(one_pass, source=source)
    _log.info(
        "feed.parsed",
        feed=kind.value,
        source=source,
        entries=info.counts["entries"],
        entries_without_packages=info.counts["entries_without_packages"],
        advisories=len(advisories),
        streamed=isinstance(advisories, RecordStream),
    )
    return FeedBatch(
        kind=kind,
        source=source,
        fetched_at=fetched_at,
        published_at=info.newest,
        sha256=info.sha256,
        advisories=advisories,
    )


def _list_pass(
    document: Document,
    info: PassInfo,
    *,
    kind: FeedKind,
    prefix: str,
    fetched_at: datetime,
    max_bytes: int,
) -> Iterator[Advisory]:
    """One pass over a list: yields its advisories, fills ``info``."""
    source = document.source
    entry: _Entry | None = None
    with reading(document, max_bytes=max_bytes) as reader:
        for number, line in iter_lines(reader.stream, source=source):
            if not line.strip() or _NOTE_RE.match(line):
                continue
            if not line[0].isspace():
                if entry is not None and not entry.keys:
                    info.counts["entries_without_packages"] += 1
                entry = _parse_header(line, number, prefix=prefix, source=source)
                info.counts["entries"] += 1
                info.saw(entry.published)
                continue
            if entry is None:
                raise FeedError(
                    f"{line.strip()[:60]!r} comes before any advisory header",
                    source=source,
                    line=number,
                )
            ids = _IDS_RE.match(line)
            if ids:
                entry.aliases.extend(_parse_ids(ids["ids"], number, source=source))
                continue
            release = _RELEASE_RE.match(line)
            if release is None:
                raise FeedError(
                    f"unrecognised line {line.strip()[:80]!r} in {entry.advisory_id}",
                    source=source,
                    line=number,
                )
            advisory = _release_advisory(
                release, entry, number, kind=kind, source=source, fetched_at=fetched_at
            )
            if advisory is not None:
                yield advisory
        if entry is None:
            raise FeedError(
                f"no {prefix} advisory in the document: it is empty or holds no "
                f"'[DD Mon YYYY] {prefix}-NNNN-N' header (an empty or failed download?)",
                source=source,
            )
        if not entry.keys:
            info.counts["entries_without_packages"] += 1
        info.sha256 = reader.sha256()


def _parse_header(line: str, number: int, *, prefix: str, source: str) -> _Entry:
    header = _HEADER_RE.match(line)
    if header is None:
        raise FeedError(f"malformed advisory header {line[:80]!r}", source=source, line=number)
    advisory_id = header["id"]
    ident = _ID_RE.match(advisory_id)
    if ident is None:
        raise FeedError(f"malformed advisory id {advisory_id[:40]!r}", source=source, line=number)
    if ident["prefix"] != prefix:
        raise FeedError(
            f"{advisory_id} in a {prefix} list (wrong feed kind for this file?)",
            source=source,
            line=number,
        )
    return _Entry(
        advisory_id=advisory_id,
        line=number,
        published=_parse_list_date(header["date"], number, source=source),
        summary=clean_text(header["rest"]),
    )


def _parse_list_date(value: str, number: int, *, source: str) -> datetime:
    match = _DATE_RE.match(value.strip())
    month = _MONTHS.get(match["month"]) if match else None
    if match is None or month is None:
        raise FeedError(f"malformed advisory date {value[:30]!r}", source=source, line=number)
    try:
        return datetime(int(match["year"]), month, int(match["day"]), tzinfo=UTC)
    except ValueError:
        raise FeedError(f"impossible advisory date {value!r}", source=source, line=number) from None


def _parse_ids(ids: str, number: int, *, source: str) -> list[str]:
    tokens = ids.split()
    for token in tokens:
        if not _ALIAS_RE.match(token):
            raise FeedError(f"malformed CVE/alias id {token[:40]!r}", source=source, line=number)
    return tokens


def _release_advisory(
    match: re.Match[str],
    entry: _Entry,
    number: int,
    *,
    kind: FeedKind,
    source: str,
    fetched_at: datetime,
) -> Advisory | None:
    release, package, state = match["release"], match["package"], match["state"]
    note = clean_text(match["note"], limit=_NOTE_MAX_CHARS) if match["note"] else None
    if not _CODENAME_RE.match(release):
        raise FeedError(f"malformed release name {release[:30]!r}", source=source, line=number)
    if not _PACKAGE_RE.match(package):
        raise FeedError(
            f"malformed source package name {package[:60]!r}", source=source, line=number
        )
    if state is None:
        raise FeedError(
            f"no fixed version or <state> for {package} in [{release}]", source=source, line=number
        )
    if state.startswith("<"):
        fix = _tag_state(state, note, number, source=source)
    else:
        fix = _fixed_state(entry.advisory_id, release, package, state, note, number, source=source)
    key = (release, package)
    if key in entry.keys:
        _log.warning(
            "feed.debian.duplicate_release_line",
            source=source,
            line=number,
            advisory=entry.advisory_id,
            release=release,
            package=package,
        )
        return None
    entry.keys.add(key)
    return Advisory(
        id=entry.advisory_id,
        aliases=tuple(dict.fromkeys(entry.aliases)),
        ecosystem=Ecosystem.DEBIAN,
        release=release,
        source_package=package,
        fix=fix,
        severity=Severity.UNKNOWN,
        published=entry.published,
        summary=entry.summary,
        feed=kind.value,
        provenance=Provenance(
            feed=kind.value, source=source, record_id=entry.advisory_id, fetched_at=fetched_at
        ),
    )


def _tag_state(tag: str, note: str | None, number: int, *, source: str) -> FixState:
    if not tag.endswith(">"):
        raise FeedError(f"malformed state {tag[:40]!r}", source=source, line=number)
    status = _TAG_STATES.get(tag[1:-1])
    if status is None:
        raise FeedError(f"unknown state {tag[:40]!r}", source=source, line=number)
    return FixState(status=status, vendor_state=f"{tag} ({note})" if note else tag)


def _fixed_state(
    advisory_id: str,
    release: str,
    package: str,
    version: str,
    note: str | None,
    number: int,
    *,
    source: str,
) -> FixState:
    try:
        versions.validate(Ecosystem.DEBIAN, version)
    except InvalidVersionError as exc:
        erratum = KNOWN_ERRATA.get((advisory_id, release, package, version))
        if erratum is None:
            raise FeedError(
                f"malformed Debian version {version[:60]!r} for {package} in [{release}] of "
                f"{advisory_id}: {exc}",
                source=source,
                line=number,
            ) from None
        # Known historic typos are expected in every import: info, not a warning.
        _log.info(
            "feed.debian.known_erratum",
            source=source,
            line=number,
            advisory=advisory_id,
            release=release,
            package=package,
            value=version,
            reason=erratum,
        )
        return FixState(
            status=FixStatus.NO_FIX_YET,
            vendor_state=f"unreadable fixed version {version!r} in the feed ({erratum})",
        )
    return FixState.fixed(version, vendor_state=note)


# --------------------------------------------------------------------------- tracker JSON


_URGENCY: Final[Mapping[str, Severity]] = {
    "unimportant": Severity.UNIMPORTANT,
    "low": Severity.LOW,
    "medium": Severity.MEDIUM,
    "high": Severity.HIGH,
    "not yet assigned": Severity.UNKNOWN,
    "end-of-life": Severity.UNKNOWN,
}


def parse_tracker_json(
    data: bytes | Path | Document,
    *,
    source: str,
    fetched_at: datetime,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FeedBatch:
    """Parse the security tracker's JSON export, one source package at a time.

    Mapping of a release entry to a fix state:

    * ``resolved`` with ``fixed_version`` ``"0"``: not-affected (never vulnerable there);
    * ``resolved`` with a version: fixed(version);
    * ``open``: no-fix-yet, or deferred when ``nodsa`` is set (``nodsa_reason`` "postponed" or
      a plain no-dsa), or will-not-fix when ``nodsa_reason`` is "ignored";
    * ``undetermined``: no-fix-yet with vendor_state "undetermined";
    * an urgency of ``end-of-life`` on an unresolved entry: end-of-life.

    Urgency gives the severity (``unimportant``, ``low``, ``medium``, ``high``, with or
    without the tracker's ``*``/``**`` marks; "not yet assigned" is unknown).

    Args:
        data: The raw export (UTF-8 JSON), or the file holding it (streamed).
        source: URL or file path it was read from.
        fetched_at: When it was downloaded or imported.
        max_bytes: Largest document accepted.

    Returns:
        The batch, one advisory per (CVE or TEMP id, release, source package).

    Raises:
        FeedError: If the document is not JSON, is truncated, or does not have the export's
            shape; the message names the package, the CVE and the release at fault.
    """
    document = Document.of(data, source)

    def one_pass(info: PassInfo) -> Iterator[Advisory]:
        return _tracker_pass(document, info, fetched_at=fetched_at, max_bytes=max_bytes)

    advisories, info = gather(one_pass, source=source)
    _log.info(
        "feed.parsed",
        feed=FeedKind.DEBIAN_JSON.value,
        source=source,
        packages=info.counts["packages"],
        advisories=len(advisories),
        streamed=isinstance(advisories, RecordStream),
    )
    return FeedBatch(
        kind=FeedKind.DEBIAN_JSON,
        source=source,
        fetched_at=fetched_at,
        sha256=info.sha256,
        advisories=advisories,
    )


def _tracker_pass(
    document: Document, info: PassInfo, *, fetched_at: datetime, max_bytes: int
) -> Iterator[Advisory]:
    """One pass over the export: yields its advisories, fills ``info``."""
    source = document.source
    with reading(document, max_bytes=max_bytes) as reader:
        first = reader.first_json_byte()
        if first != b"{":
            raise wrong_json_start(document, first, "expected a JSON object of source packages")
        for package, cves in json_kvitems(document, reader):
            info.counts["packages"] += 1
            if not _PACKAGE_RE.match(package):
                raise FeedError(
                    f"malformed source package name {package[:60]!r} "
                    "(not the tracker's JSON export?)",
                    source=source,
                )
            if not isinstance(cves, dict):
                raise FeedError(
                    f"package {package[:60]!r} must map to an object of CVEs", source=source
                )
            for cve, record in cves.items():
                yield from _tracker_record(
                    package, cve, record, source=source, fetched_at=fetched_at
                )
        info.sha256 = reader.sha256()


def _tracker_record(
    package: str, cve: str, record: object, *, source: str, fetched_at: datetime
) -> Iterator[Advisory]:
    where = f"{package}/{cve[:40]!r}"
    if not _RECORD_ID_RE.match(cve):
        raise FeedError("malformed CVE / TEMP id", source=source, record=where)
    where = f"{package}/{cve}"
    if not isinstance(record, dict):
        raise FeedError("a CVE entry must be an object", source=source, record=where)
    releases = record.get("releases")
    if not isinstance(releases, dict):
        raise FeedError("a CVE entry needs a 'releases' object", source=source, record=where)
    summary = clean_text(record.get("description"))
    provenance = Provenance(
        feed=FeedKind.DEBIAN_JSON.value, source=source, record_id=cve, fetched_at=fetched_at
    )
    for release, entry in releases.items():
        at = f"{where}/{release}"
        if not _CODENAME_RE.match(release):
            raise FeedError(f"malformed release name {release[:30]!r}", source=source, record=at)
        if not isinstance(entry, dict):
            raise FeedError("a release entry must be an object", source=source, record=at)
        severity, end_of_life = _urgency(entry.get("urgency"))
        yield Advisory(
            id=cve,
            ecosystem=Ecosystem.DEBIAN,
            release=release,
            source_package=package,
            fix=_tracker_fix(entry, end_of_life, source=source, record=at),
            severity=severity,
            summary=summary,
            feed=FeedKind.DEBIAN_JSON.value,
            provenance=provenance,
        )


def _urgency(value: object) -> tuple[Severity, bool]:
    if not isinstance(value, str):
        return Severity.UNKNOWN, False
    key = value.strip().lower().rstrip("*").strip()
    severity = _URGENCY.get(key)
    if severity is None:
        _log.debug("feed.unknown_urgency", urgency=value[:40])
        return Severity.UNKNOWN, False
    return severity, key == "end-of-life"


def _tracker_fix(entry: dict[str, Any], end_of_life: bool, *, source: str, record: str) -> FixState:
    status = entry.get("status")
    if status == "resolved":
        version = entry.get("fixed_version")
        if not isinstance(version, str) or not version:
            raise FeedError("a resolved entry needs a fixed_version", source=source, record=record)
        if version == "0":
            return _state(FixStatus.NOT_AFFECTED, "resolved (fixed_version 0)")
        try:
            return _resolved(version)
        except InvalidVersionError as exc:
            raise FeedError(
                f"malformed Debian version {version[:60]!r}: {exc}", source=source, record=record
            ) from None
    if status not in ("open", "undetermined"):
        raise FeedError(f"unknown status {str(status)[:30]!r}", source=source, record=record)
    if end_of_life:
        return _state(FixStatus.END_OF_LIFE, f"{status} (end-of-life)")
    if status == "undetermined":
        return _state(FixStatus.NO_FIX_YET, "undetermined")
    nodsa = clean_text(entry.get("nodsa"), limit=_NOTE_MAX_CHARS)
    reason = entry.get("nodsa_reason")
    reason = reason.strip().lower() if isinstance(reason, str) else ""
    if reason == "ignored":
        return _state(FixStatus.WILL_NOT_FIX, _nodsa_wording(reason, nodsa))
    if reason == "postponed" or nodsa is not None:
        return _state(FixStatus.DEFERRED, _nodsa_wording(reason, nodsa))
    return _state(FixStatus.NO_FIX_YET, "open")


# The export repeats the same few states and fixed versions hundreds of thousands of times;
# FixState is frozen, so identical states are shared instead of rebuilt (time and memory).
@functools.lru_cache(maxsize=4096)
def _state(status: FixStatus, vendor_state: str) -> FixState:
    return FixState(status=status, vendor_state=vendor_state)


@functools.lru_cache(maxsize=65536)
def _resolved(version: str) -> FixState:
    versions.validate(Ecosystem.DEBIAN, version)
    return FixState.fixed(version, vendor_state="resolved")


def _nodsa_wording(reason: str, nodsa: str | None) -> str:
    parts = ["open", f"no-dsa: {reason}" if reason else "no-dsa"]
    if nodsa:
        parts.append(nodsa)
    return "; ".join(parts)
