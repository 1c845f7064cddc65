"""Debian security tracker feeds: the DSA and DLA lists and the tracker's JSON export.

**DSA / DLA lists** (``data/DSA/list``, ``data/DLA/list`` of the security-tracker repository)::

    [12 Feb 2025] DSA-5865-1 webkit2gtk - security update
        {CVE-2025-24143 CVE-2025-24150}
        [bookworm] - webkit2gtk 2.46.6-1~deb12u1
        [bullseye] - webkit2gtk <not-affected> (Vulnerable code not present)
        NOTE: fixed in testing at time of DSA

give one :class:`~patchpilot.models.Advisory` per (advisory id, release, source package). The
version (or ``<tag>``) on a release line decides the fix state; the lists carry no urgency, so
severity stays ``unknown``. A malformed version is a :class:`FeedError` naming the line, except
for the few historic typos listed in :data:`KNOWN_ERRATA`, which become an explicit
``no-fix-yet`` state recording the unreadable value (never a silent drop).

**Tracker JSON export** (``https://security-tracker.debian.org/tracker/data/json``)::

    {src_pkg: {CVE: {description, releases: {codename: {status, fixed_version, urgency,
                                                         nodsa, nodsa_reason, repositories}}}}}

gives one advisory per (CVE, release, source package). The export is ~60 MB: it is decoded one
source package at a time, so only one package's records are alive as Python objects at once.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from patchpilot.errors import InvalidVersionError
from patchpilot.models import (
    Advisory,
    Ecosystem,
    FixState,
    FixStatus,
    Provenance,
    Severity,
)
from tools import versions
from tools.feeds._common import clean_text, decode_utf8, sha256_hex, truncation_hint
from tools.feeds.errors import FeedError
from tools.feeds.types import FeedBatch, FeedKind

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


def parse_dsa(data: bytes, *, source: str, fetched_at: datetime) -> FeedBatch:
    """Parse the Debian Security Advisory list (``data/DSA/list``).

    Args:
        data: The raw list (UTF-8).
        source: URL or file path it was read from.
        fetched_at: When it was downloaded or imported.

    Returns:
        The batch, one advisory per (DSA, release, source package).

    Raises:
        FeedError: On any line that does not parse, naming the line number.
    """
    return parse_list(data, kind=FeedKind.DEBIAN_DSA, source=source, fetched_at=fetched_at)


def parse_dla(data: bytes, *, source: str, fetched_at: datetime) -> FeedBatch:
    """Parse the Debian LTS Advisory list (``data/DLA/list``).

    Args:
        data: The raw list (UTF-8).
        source: URL or file path it was read from.
        fetched_at: When it was downloaded or imported.

    Returns:
        The batch, one advisory per (DLA, release, source package).

    Raises:
        FeedError: On any line that does not parse, naming the line number.
    """
    return parse_list(data, kind=FeedKind.DEBIAN_DLA, source=source, fetched_at=fetched_at)


def parse_list(data: bytes, *, kind: FeedKind, source: str, fetched_at: datetime) -> FeedBatch:
    """Parse a DSA or DLA list.

    Args:
        data: The raw list (UTF-8).
        kind: ``FeedKind.DEBIAN_DSA`` or ``FeedKind.DEBIAN_DLA``; advisory ids must match it.
        source: URL or file path it was read from.
        fetched_at: When it was downloaded or imported.

    Returns:
        The batch; ``published_at`` is the newest advisory date.

    Raises:
        FeedError: On any line that does not parse (malformed header, date, version, unknown
            ``<tag>``, stray line), naming the line number.
    """
    prefix = _PREFIX.get(kind)
    if prefix is None:
        raise FeedError(f"{kind} is not a DSA/DLA list kind", source=source)
    text = decode_utf8(data, source=source)
    advisories: list[Advisory] = []
    entry: _Entry | None = None
    entries = empty_entries = 0
    newest: datetime | None = None

    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or _NOTE_RE.match(line):
            continue
        if not line[0].isspace():
            if entry is not None and not entry.keys:
                empty_entries += 1
            entry = _parse_header(line, number, prefix=prefix, source=source)
            entries += 1
            newest = entry.published if newest is None else max(newest, entry.published)
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
            advisories.append(advisory)
    if entry is not None and not entry.keys:
        empty_entries += 1

    _log.info(
        "feed_parsed",
        feed=kind.value,
        source=source,
        entries=entries,
        entries_without_packages=empty_entries,
        advisories=len(advisories),
    )
    return FeedBatch(
        kind=kind,
        source=source,
        fetched_at=fetched_at,
        published_at=newest,
        sha256=sha256_hex(data),
        advisories=tuple(advisories),
    )


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
            "duplicate_release_line",
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
            "feed_known_erratum",
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


_WS_RE: Final = re.compile(r"[ \t\n\r]*")
_URGENCY: Final[Mapping[str, Severity]] = {
    "unimportant": Severity.UNIMPORTANT,
    "low": Severity.LOW,
    "medium": Severity.MEDIUM,
    "high": Severity.HIGH,
    "not yet assigned": Severity.UNKNOWN,
    "end-of-life": Severity.UNKNOWN,
}


def parse_tracker_json(data: bytes, *, source: str, fetched_at: datetime) -> FeedBatch:
    """Parse the security tracker's JSON export.

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
        data: The raw export (UTF-8 JSON).
        source: URL or file path it was read from.
        fetched_at: When it was downloaded or imported.

    Returns:
        The batch, one advisory per (CVE or TEMP id, release, source package).

    Raises:
        FeedError: If the document is not JSON, is truncated, or does not have the export's
            shape; the message names the package, the CVE and the release at fault.
    """
    text = decode_utf8(data, source=source)
    advisories: list[Advisory] = []
    packages = 0
    for package, cves in _iter_object(text, source=source):
        packages += 1
        if not _PACKAGE_RE.match(package):
            raise FeedError(
                f"malformed source package name {package[:60]!r} (not the tracker's JSON export?)",
                source=source,
            )
        if not isinstance(cves, dict):
            raise FeedError(
                f"package {package[:60]!r} must map to an object of CVEs", source=source
            )
        for cve, record in cves.items():
            advisories.extend(
                _tracker_record(package, cve, record, source=source, fetched_at=fetched_at)
            )
    _log.info(
        "feed_parsed",
        feed=FeedKind.DEBIAN_JSON.value,
        source=source,
        packages=packages,
        advisories=len(advisories),
    )
    return FeedBatch(
        kind=FeedKind.DEBIAN_JSON,
        source=source,
        fetched_at=fetched_at,
        sha256=sha256_hex(data),
        advisories=tuple(advisories),
    )


def _json_error(text: str, pos: int, reason: str, *, source: str) -> FeedError:
    line = text.count("\n", 0, pos) + 1
    return FeedError(reason, source=source, line=line)


def _iter_object(text: str, *, source: str) -> Iterator[tuple[str, Any]]:
    """Yield the members of a top-level JSON object one at a time (bounded memory)."""
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if text[pos : pos + 1] != "{":
        raise _json_error(text, pos, "expected a JSON object of source packages", source=source)
    pos = _skip_ws(text, pos + 1)
    if text[pos : pos + 1] == "}":
        pos = pos + 1
    else:
        while True:
            key, pos = _decode_at(decoder, text, pos, source=source)
            if not isinstance(key, str):
                raise _json_error(text, pos, "expected a package name", source=source)
            pos = _skip_ws(text, pos)
            if text[pos : pos + 1] != ":":
                raise _json_error(text, pos, "expected ':' after a package name", source=source)
            value, pos = _decode_at(decoder, text, _skip_ws(text, pos + 1), source=source)
            yield key, value
            pos = _skip_ws(text, pos)
            char = text[pos : pos + 1]
            if char == ",":
                pos = _skip_ws(text, pos + 1)
                continue
            if char == "}":
                pos += 1
                break
            reason = "document is truncated" if not char else f"unexpected {char!r}"
            raise _json_error(text, pos, f"not valid JSON: {reason}", source=source)
    if _skip_ws(text, pos) != len(text):
        raise _json_error(text, pos, "not valid JSON: extra data after the object", source=source)


def _skip_ws(text: str, pos: int) -> int:
    match = _WS_RE.match(text, pos)
    return match.end() if match else pos


def _decode_at(decoder: json.JSONDecoder, text: str, pos: int, *, source: str) -> tuple[Any, int]:
    try:
        return decoder.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise FeedError(
            f"not valid JSON: {exc.msg}, column {exc.colno}{truncation_hint(exc, text)}",
            source=source,
            line=exc.lineno,
        ) from None
    except (ValueError, RecursionError) as exc:
        raise _json_error(text, pos, f"not valid JSON: {exc}", source=source) from None


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
        _log.debug("unknown_urgency", urgency=value[:40])
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
