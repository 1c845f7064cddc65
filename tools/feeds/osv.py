"""OSV records (https://ossf.github.io/osv-schema/): one record, a list, a directory or a zip.

Each ``affected[]`` entry of a supported ecosystem becomes one
:class:`~patchpilot.models.Advisory` per (record, ecosystem release, package):

* ``Debian:12`` (``Debian:<n>`` or a codename): debian, release ``bookworm`` (numbers are
  mapped to codenames, 7 wheezy … 14 forky);
* ``Alpine:v3.19``: alpine, release ``v3.19``;
* ``PyPI``: pypi, no release;
* ``Red Hat:<cpe suffix>``: rpm, release = the suffix (e.g. ``rhel_aus:8.6::appstream``);
* ``Rocky Linux:<rel>``, ``AlmaLinux:<rel>``: rpm, release = the suffix (e.g. ``9``).

Other ecosystems (Ubuntu, npm, …), and unscoped OS ecosystems (``Debian`` without a release,
which match far too much) are skipped and counted. The fix state comes from the ``ECOSYSTEM``
ranges: the highest ``fixed`` event gives fixed(version); only ``introduced`` (or an explicit
``versions`` list) gives no-fix-yet; ``last_affected`` without ``fixed`` gives no-fix-yet with
the last affected version as the vendor wording.

Records are validated loosely with pydantic against the OSV schema's shape (``id``,
``modified`` and ``affected`` required). One invalid record fails the whole import, naming the
file it came from.
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Final, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from patchpilot.errors import InvalidVersionError
from patchpilot.models import Advisory, Ecosystem, FixState, FixStatus, Provenance, Severity
from tools import versions
from tools.feeds._common import (
    DEFAULT_MAX_BYTES,
    clean_text,
    load_json,
    parse_timestamp,
    sha256_hex,
)
from tools.feeds.errors import FeedError
from tools.feeds.types import FeedBatch, FeedKind

__all__ = [
    "DEBIAN_CODENAMES",
    "OSV_DEBIAN_URL",
    "OSVStats",
    "map_ecosystem",
    "parse",
    "parse_documents",
]

_log = structlog.get_logger(__name__)

OSV_DEBIAN_URL: Final = "https://osv-vulnerabilities.storage.googleapis.com/Debian/all.zip"

DEBIAN_CODENAMES: Final[Mapping[str, str]] = {
    "7": "wheezy",
    "8": "jessie",
    "9": "stretch",
    "10": "buster",
    "11": "bullseye",
    "12": "bookworm",
    "13": "trixie",
    "14": "forky",
}
"""Debian release numbers (as in OSV ``Debian:<n>``) to the codenames advisories are keyed on."""

_ZIP_MAGIC: Final = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC: Final = b"PK\x05\x06"
_RPM_PREFIXES: Final = ("Red Hat", "Rocky Linux", "AlmaLinux")
_EVENT_KEYS: Final = frozenset({"introduced", "fixed", "last_affected", "limit"})
_TEXT_SEVERITY: Final[Mapping[str, Severity]] = {
    "negligible": Severity.UNIMPORTANT,
    "low": Severity.LOW,
    "medium": Severity.MEDIUM,
    "moderate": Severity.MEDIUM,
    "high": Severity.HIGH,
    "important": Severity.HIGH,
    "critical": Severity.CRITICAL,
}


# --------------------------------------------------------------------------- schema (loose)


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# Ids and names end up in reports and shell-free argv lists: no whitespace, no control chars.
_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,199}$"
_NAME_PATTERN: Final = r"^[^\s\x00-\x1f\x7f-\x9f]{1,200}$"


class _Package(_Loose):
    ecosystem: str = Field(min_length=1, max_length=200)
    name: str = Field(pattern=_NAME_PATTERN)


class _Range(_Loose):
    type: Literal["GIT", "SEMVER", "ECOSYSTEM"]
    repo: str | None = None
    events: list[dict[str, str]] = Field(min_length=1)

    @field_validator("events")
    @classmethod
    def _one_key_each(cls, events: list[dict[str, str]]) -> list[dict[str, str]]:
        for event in events:
            if len(event) != 1 or not set(event) <= _EVENT_KEYS:
                raise ValueError(f"an event must hold exactly one of {sorted(_EVENT_KEYS)}")
        if not any("introduced" in event for event in events):
            raise ValueError("a range needs an 'introduced' event")
        return events


class _Affected(_Loose):
    package: _Package | None = None
    ranges: list[_Range] = Field(default_factory=list)
    versions: list[str] = Field(default_factory=list)


class _SeverityEntry(_Loose):
    type: str
    score: str


class _Record(_Loose):
    id: str = Field(pattern=_ID_PATTERN)
    modified: str
    published: str | None = None
    withdrawn: str | None = None
    aliases: list[Annotated[str, Field(pattern=_ID_PATTERN)]] | None = None
    upstream: list[Annotated[str, Field(pattern=_ID_PATTERN)]] | None = None
    summary: str | None = None
    details: str | None = None
    severity: list[_SeverityEntry] | None = None
    affected: list[_Affected]


# --------------------------------------------------------------------------- parsing


@dataclass(slots=True)
class OSVStats:
    """What an OSV import skipped, and why (for logs and ``feeds status``)."""

    records: int = 0
    withdrawn: int = 0
    advisories: int = 0
    skipped_ecosystems: Counter[str] = field(default_factory=Counter)
    skipped_no_range: int = 0


def map_ecosystem(ecosystem: str) -> tuple[Ecosystem, str | None] | None:
    """Map an OSV ``package.ecosystem`` to patchpilot's (ecosystem, release).

    Args:
        ecosystem: E.g. ``"Debian:12"``, ``"Alpine:v3.19"``, ``"PyPI"``,
            ``"Red Hat:rhel_aus:8.6::appstream"``.

    Returns:
        The pair, or ``None`` when patchpilot does not support it (or it names no release
        where one is needed).
    """
    name, _, suffix = ecosystem.partition(":")
    if name == "PyPI" and not suffix:
        return Ecosystem.PYPI, None
    if name == "Debian":
        codename = DEBIAN_CODENAMES.get(suffix)
        if codename is None and suffix in (*DEBIAN_CODENAMES.values(), "sid"):
            codename = suffix
        return (Ecosystem.DEBIAN, codename) if codename else None
    if name == "Alpine":
        if suffix.startswith("v") and len(suffix) > 1:
            return Ecosystem.ALPINE, suffix
        return None
    if name in _RPM_PREFIXES and suffix:
        return Ecosystem.RPM, suffix
    return None


def parse(
    data: bytes, *, source: str, fetched_at: datetime, max_bytes: int = DEFAULT_MAX_BYTES
) -> FeedBatch:
    """Parse OSV data: a single record, a JSON list of records, or an ``all.zip`` export.

    Args:
        data: The raw document (UTF-8 JSON, or a zip of ``*.json`` records).
        source: URL or file path it was read from.
        fetched_at: When it was downloaded or imported.
        max_bytes: Largest total decompressed size accepted for a zip.

    Returns:
        The batch.

    Raises:
        FeedError: If any record is invalid (the whole import fails, naming the record's file).
    """
    if data.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)):
        documents: Iterable[tuple[str, bytes]] = _zip_members(
            data, source=source, max_bytes=max_bytes
        )
    else:
        documents = [(source, data)]
    batch, _ = parse_documents(
        documents, source=source, fetched_at=fetched_at, sha256=sha256_hex(data)
    )
    return batch


def parse_documents(
    documents: Iterable[tuple[str, bytes]],
    *,
    source: str,
    fetched_at: datetime,
    sha256: str,
) -> tuple[FeedBatch, OSVStats]:
    """Parse several OSV documents (files of a directory or members of a zip) as one import.

    Args:
        documents: ``(name, bytes)`` pairs; ``name`` is used in error messages.
        source: URL or path of the whole set.
        fetched_at: When it was downloaded or imported.
        sha256: Digest identifying the whole set.

    Returns:
        The batch and what was skipped.

    Raises:
        FeedError: On the first invalid document, naming it.
    """
    stats = OSVStats()
    advisories: list[Advisory] = []
    newest: datetime | None = None
    for name, data in documents:
        document = load_json(data, source=name)
        records = document if isinstance(document, list) else [document]
        for index, raw in enumerate(records):
            where = name if len(records) == 1 else f"{name}[{index}]"
            record = _validate(raw, where=where)
            stats.records += 1
            modified = parse_timestamp(record.modified, what="modified", source=where)
            newest = modified if newest is None else max(newest, modified)
            if record.withdrawn:
                stats.withdrawn += 1
                continue
            advisories.extend(
                _advisories(record, where=where, source=source, fetched_at=fetched_at, stats=stats)
            )
    stats.advisories = len(advisories)
    _log.info(
        "feed_parsed",
        feed=FeedKind.OSV.value,
        source=source,
        records=stats.records,
        withdrawn=stats.withdrawn,
        advisories=stats.advisories,
        skipped_ecosystems=dict(stats.skipped_ecosystems),
        skipped_no_range=stats.skipped_no_range,
    )
    batch = FeedBatch(
        kind=FeedKind.OSV,
        source=source,
        fetched_at=fetched_at,
        published_at=newest,
        sha256=sha256,
        advisories=tuple(advisories),
    )
    return batch, stats


def _zip_members(data: bytes, *, source: str, max_bytes: int) -> Iterator[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise FeedError(f"not a valid zip archive: {exc}", source=source) from None
    total = 0
    with archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if info.is_dir() or not info.filename.endswith(".json"):
                continue
            member = f"{source}!{info.filename}"
            if info.file_size > max_bytes - total:
                raise FeedError(
                    f"archive exceeds the size limit of {max_bytes} bytes", source=member
                )
            try:
                with archive.open(info) as handle:
                    content = handle.read(max_bytes - total + 1)
            except (
                zipfile.BadZipFile,
                OSError,
                ValueError,
                RuntimeError,
                NotImplementedError,
            ) as exc:
                raise FeedError(f"cannot read zip member: {exc}", source=member) from None
            total += len(content)
            if total > max_bytes:
                raise FeedError(
                    f"archive exceeds the size limit of {max_bytes} bytes", source=member
                )
            yield member, content


def _validate(raw: object, *, where: str) -> _Record:
    if not isinstance(raw, dict):
        raise FeedError("an OSV record must be a JSON object", source=where)
    try:
        return _Record.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'record'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        record_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        raise FeedError(
            f"not a valid OSV record ({problems})", source=where, record=record_id
        ) from None


def _advisories(
    record: _Record, *, where: str, source: str, fetched_at: datetime, stats: OSVStats
) -> Iterator[Advisory]:
    aliases = tuple(
        dict.fromkeys(
            a for a in (*(record.aliases or ()), *(record.upstream or ())) if a != record.id
        )
    )
    published = (
        parse_timestamp(record.published, what="published", source=where)
        if record.published
        else None
    )
    summary = clean_text(record.summary) or clean_text(record.details)
    severity = _severity(record.severity)
    provenance = Provenance(
        feed=FeedKind.OSV.value, source=source, record_id=record.id, fetched_at=fetched_at
    )
    merged: dict[tuple[Ecosystem, str | None, str], _Facts] = {}
    for affected in record.affected:
        if affected.package is None:
            stats.skipped_no_range += 1
            continue
        mapped = map_ecosystem(affected.package.ecosystem)
        if mapped is None:
            stats.skipped_ecosystems[affected.package.ecosystem.partition(":")[0]] += 1
            continue
        ecosystem, release = mapped
        facts = merged.setdefault((ecosystem, release, affected.package.name), _Facts())
        _collect(affected, ecosystem, facts, where=where, record_id=record.id)
    for (ecosystem, release, package), facts in merged.items():
        fix = facts.fix_state(ecosystem)
        if fix is None:
            stats.skipped_no_range += 1
            continue
        yield Advisory(
            id=record.id,
            aliases=aliases,
            ecosystem=ecosystem,
            release=release,
            source_package=package,
            fix=fix,
            severity=severity,
            published=published,
            summary=summary,
            feed=FeedKind.OSV.value,
            provenance=provenance,
        )


@dataclass(slots=True)
class _Facts:
    fixed: list[str] = field(default_factory=list)
    last_affected: list[str] = field(default_factory=list)
    affected: bool = False

    def fix_state(self, ecosystem: Ecosystem) -> FixState | None:
        if self.fixed:
            best = self.fixed[0]
            for version in self.fixed[1:]:
                if versions.compare(ecosystem, version, best) > 0:
                    best = version
            return FixState.fixed(best)
        if self.last_affected:
            newest = self.last_affected[0]
            for version in self.last_affected[1:]:
                if versions.compare(ecosystem, version, newest) > 0:
                    newest = version
            return FixState(status=FixStatus.NO_FIX_YET, vendor_state=f"last_affected {newest}")
        if self.affected:
            return FixState(status=FixStatus.NO_FIX_YET, vendor_state="affected, no fixed event")
        return None


def _collect(
    affected: _Affected, ecosystem: Ecosystem, facts: _Facts, *, where: str, record_id: str
) -> None:
    package = affected.package.name if affected.package else "?"
    for range_ in affected.ranges:
        if range_.type != "ECOSYSTEM":
            continue
        facts.affected = True
        for event in range_.events:
            ((kind, value),) = event.items()
            if kind == "limit" or (kind == "introduced" and value == "0"):
                continue
            _check_version(ecosystem, value, where=where, record_id=record_id, package=package)
            if kind == "fixed":
                facts.fixed.append(value)
            elif kind == "last_affected":
                facts.last_affected.append(value)
    if affected.versions:
        facts.affected = True


def _check_version(
    ecosystem: Ecosystem, version: str, *, where: str, record_id: str, package: str
) -> None:
    try:
        versions.validate(ecosystem, version)
    except InvalidVersionError as exc:
        raise FeedError(
            f"malformed {ecosystem.value} version {version[:60]!r} for {package}: {exc}",
            source=where,
            record=record_id,
        ) from None


def _severity(entries: list[_SeverityEntry] | None) -> Severity:
    for entry in entries or ():
        mapped = _TEXT_SEVERITY.get(entry.score.strip().lower())
        if mapped is not None:
            return mapped
    return Severity.UNKNOWN
